/* Status codes and version of the DeepCABAC library. */
#include "deepcabac.h"

int dcabac_abi_version(void) { return DCABAC_ABI_VERSION; }

const char *dcabac_strerror(int status)
{
    switch (status) {
    case DCABAC_OK: return "success";
    case DCABAC_E_NOMEM: return "out of memory";
    case DCABAC_E_ARG: return "invalid argument";
    case DCABAC_E_STATE: return "call out of order";
    case DCABAC_E_RANGE: return "value cannot be coded";
    case DCABAC_E_TRUNCATED: return "payload truncated";
    case DCABAC_E_CORRUPT: return "corrupt payload";
    case DCABAC_E_TRAILING: return "trailing bytes after the payload";
    case DCABAC_E_OVERFLOW: return "quantized values would overflow int32 at this step size";
    default: return "unknown status";
    }
}
