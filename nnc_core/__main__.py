"""``python -m nnc_core``: the ``nnc`` command."""

import sys

from nnc_core.cli import main

sys.exit(main())
