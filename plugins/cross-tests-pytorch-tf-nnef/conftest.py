"""Conversions between PyTorch and TensorFlow/NNEF, which no single converter
does: ``nnc convert`` chains the declared ones through ONNX.  Run by the tox
environment ``cross-pytorch-tensorflow-nnef``, which installs every plugin;
torch and TensorFlow are imported in the same process (they coexist with
torch 2.13.0 and tensorflow-cpu 2.21).  The PyTorch plugin's CREPE helpers
are reused."""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "nnc-pytorch" / "tests"))

from nnc_core.testing.fixtures import faces, fer_h5, image, nude_onnx  # noqa: E402, F401
