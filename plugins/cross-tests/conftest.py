"""PyTorch <-> ONNX conversion tests (tox -e cross-pytorch-onnx): they reuse the
PyTorch plugin's CREPE helpers."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "nnc-pytorch" / "tests"))
