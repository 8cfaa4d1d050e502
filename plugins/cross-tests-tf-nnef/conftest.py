"""Cross-framework conversion tests (``nnc convert``): fixtures shared by the
pairs.  Each tox ``cross-*`` environment installs the plugins of its pair and
runs the matching ``test_<a>_<b>.py`` here."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from nnc_core.testing import pretrained  # noqa: E402


@pytest.fixture(scope="session")
def fer_h5():
    return pretrained.path("fer-emotion")


@pytest.fixture(scope="session")
def nude_onnx():
    return pretrained.path("nudenet-320n")


@pytest.fixture(scope="session")
def faces():
    rng = np.random.default_rng(2024)
    x = rng.random((1, 8, 8, 1), dtype=np.float32)
    return np.repeat(np.repeat(x, 8, axis=1), 8, axis=2).astype(np.float32)


@pytest.fixture(scope="session")
def nude_nnef(nude_onnx, tmp_path_factory):
    """nudenet's YOLOv8n as an NNEF folder (nnef-tools, as a user with the ONNX file would)."""
    from nnc_nnef.convert import from_onnx

    folder = tmp_path_factory.mktemp("nnef") / "nudenet.nnef"
    from_onnx(nude_onnx, folder, example_inputs=(1, 3, 320, 320))
    return folder


@pytest.fixture(scope="session")
def image():
    return np.random.default_rng(7).random((1, 3, 320, 320), dtype=np.float32)
