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

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "nnc-pytorch" / "tests"))

from nnc_core.testing import pretrained  # noqa: E402


@pytest.fixture(scope="session")
def fer_h5():
    return pretrained.path("fer-emotion")


@pytest.fixture(scope="session")
def nude_onnx():
    return pretrained.path("nudenet-320n")


def run_onnx(path, *xs):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {i.name: x for i, x in zip(session.get_inputs(), xs)})[0]


def run_nnef(folder, x, tmp_path):
    """Outputs of an NNEF folder: nnef-tools converts it to ONNX, onnxruntime runs it."""
    from nnc_nnef.convert import to_onnx

    onnx_file = tmp_path / f"{Path(folder).name}.onnx"
    to_onnx(folder, onnx_file)
    return run_onnx(onnx_file, x)


def float_names(source) -> list[str]:
    from nnc_core.plugins import read_model

    return [n for n, v in read_model(source).tensors.items() if v.dtype.kind == "f"]
