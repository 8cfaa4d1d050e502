/* C prelude of the cffi module nnc_core._deepcabac. */
#include "deepcabac.h"
