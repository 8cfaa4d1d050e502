"""annex_examples/tensorflow/example.py runs and shows what it says."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_annex_d_example(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("annex_d", ROOT / "annex_examples" / "tensorflow" / "example.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.main(tmp_path)
    assert result["tensors"] == 80 and result["parameters"] == 58423
    assert result["nnr_bytes"] < result["h5_bytes"] / 8
    assert 0 < result["max_abs_output_difference"] <= 0.03 and result["same_predictions"]
    assert "bits_per_parameter" in capsys.readouterr().out
