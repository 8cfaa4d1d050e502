"""The core's annex examples (annex_examples/carriage, performance_metrics) run and do what they say."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _load(folder: str):
    spec = importlib.util.spec_from_file_location(f"annex_{folder}", ROOT / "annex_examples" / folder / "example.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_annex_e_carriage(tmp_path, capsys):
    result = _load("carriage").main(tmp_path)
    assert result["tensors"] == 44
    assert result["npz_round_trip"] and result["safetensors_round_trip"] and result["sidecar_round_trip"]
    assert result["safetensors_bytes"] > result["nnr_bytes"] * 4 / 3  # base64 in JSON
    assert "safetensors_round_trip" in capsys.readouterr().out


def test_annex_f_performance_metrics(capsys):
    result = _load("performance_metrics").main()
    for r in result.values():
        name, value = r["stated"]
        assert name == "psnr@weights" and value == np.float32(r["measured"]).item()
    assert 10 < result[-38]["measured"] - result[-30]["measured"] < 14  # step x4: ~12 dB
    assert result[-38]["bytes"] > result[-30]["bytes"]
    assert "MPS states ('psnr@weights'" in capsys.readouterr().out
