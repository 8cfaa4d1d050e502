"""Cross-framework conversion tests (``nnc convert``): fixtures shared by the
pairs.  Each tox ``cross-*`` environment installs the plugins of its pair and
runs the matching ``test_<a>_<b>.py`` here."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from nnc_core.testing.fixtures import faces, fer_h5, image, nude_nnef, nude_onnx  # noqa: E402, F401
