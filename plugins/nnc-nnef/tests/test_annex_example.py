"""annex_examples/nnef/example.py runs and shows what it says."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_annex_a_example(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("annex_a", ROOT / "annex_examples" / "nnef" / "example.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.main(tmp_path)
    assert result["tensors"] == 129 and result["parameters"] == 3015458
    assert result["bits_per_parameter"] < 8 and result["carried_bytes"] < result["nnef_bytes"] / 3
    # default QP: within 3 % of the largest box coordinate (measured 0.026), as in test_nnef.py
    assert 0 < result["max_abs_output_difference"] <= 0.03 * result["max_abs_output"]
    assert result["carriage_round_trip"]
    assert "bits_per_parameter" in capsys.readouterr().out
