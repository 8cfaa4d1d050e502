"""EncoderConfig: one frozen, validated object for every encoder setting; the
keyword form of nnc_core.encode is the same object made on the fly."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import nnc_core
from nnc_core import ConfigError, EncoderConfig


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(qp_density=8), "qp_density 8 outside 0..7"),
        (dict(qp="-38"), "qp '-38' must be an integer"),
        (dict(qp=True), "qp True must be an integer"),
        (dict(scan_order=5), "scan_order 5 outside 0..4"),
        (dict(codebook_mode=3), "codebook_mode 3 is not 0, 1 or 2"),
        (dict(lambda_scale=float("nan")), "lambda_scale nan must be a finite number >= 0"),
        (dict(lambda_scale=-1.0), "lambda_scale -1.0 must be a finite number >= 0"),
        (dict(int_quant_bw=32), "int_quant_bw 32 outside 1..31"),
        (dict(int_quant_bw=8, codebook_mode=1), "int_quant_bw chooses every tensor's QP"),
        (dict(max_part_elements=0), "max_part_elements 0 must be at least 1"),
        (dict(use_dq=1), "use_dq 1 must be True or False"),
        (dict(row_skipping="yes"), "row_skipping 'yes' must be True, False or None"),
        (dict(raw_float="w"), "raw_float 'w' must be a collection of tensor names, not one string"),
        (
            dict(performance_metric_type="accuracy"),
            "performance_metric_type and validation_set_performance go together",
        ),
        (dict(workers=0), "workers 0 must be a positive integer"),
        (dict(cabac_unary_length_minus1=40), "cabac_unary_length_minus1 40 outside 0..31"),
        (dict(lossless=1), "lossless 1 must be True or False"),
        (dict(lossless=True, sparsity=0.5), "lossless codes every value exactly: it excludes sparsity"),
        (dict(lossless=True, fold_batch_norm=True), "lossless codes every value exactly: it excludes fold_batch_norm"),
        (dict(lossless=True, int_quant_bw=8), "lossless codes every value exactly: it excludes int_quant_bw"),
    ],
)
def test_each_invalid_field_is_named(fields, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("+", r"\+")):
        EncoderConfig(**fields)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("+", r"\+")):
        nnc_core.encode({"w": np.ones((2, 2), np.float32)}, **fields)


def test_unknown_options_are_refused_by_name():
    with pytest.raises(ConfigError, match="unknown encoder option 'qpp'"):
        nnc_core.encode({"w": np.ones((2, 2), np.float32)}, qpp=-30)
    with pytest.raises(ConfigError, match="config must be an EncoderConfig, not dict"):
        nnc_core.encode({"w": np.ones((2, 2), np.float32)}, {"qp": -30})


def test_config_is_frozen_and_numpy_integers_are_integers():
    config = EncoderConfig(qp=np.int64(-30), qp_density=np.int32(3))
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.qp = -20  # type: ignore[misc]  # the point: a frozen dataclass refuses it
    assert config.replace(qp=-20).qp == -20 and config.qp == -30
    assert config.changed() == {"qp": -30, "qp_density": 3}


def test_a_config_and_its_keywords_give_the_same_bytes(crepe_tiny):
    floats = {n: v for n, v in crepe_tiny.items() if v.dtype.kind == "f"}
    config = EncoderConfig(qp=-32, use_dq=False, scan_order=2, row_skipping=True)
    data = nnc_core.encode(floats, config)
    assert data == nnc_core.encode(floats, qp=-32, use_dq=False, scan_order=2, row_skipping=True)
    assert data == nnc_core.encode(floats, config=config, workers=1)  # workers change no byte
    assert nnc_core.encode(floats, config, qp=-40) == nnc_core.encode(floats, config.replace(qp=-40))
    assert config == config.replace(workers=3)


def test_update_sessions_take_a_config(crepe_tiny):
    floats = {n: v for n, v in crepe_tiny.items() if v.dtype.kind == "f"}
    changed = {n: v + np.float32(0.01) for n, v in floats.items()}
    by_config = nnc_core.UpdateEncoder(floats, config=EncoderConfig(qp=-36)).encode(changed)
    by_keywords = nnc_core.UpdateEncoder(floats, qp=-36).encode(changed)
    assert by_config == by_keywords
    assert by_config == nnc_core.encode(changed, EncoderConfig(qp=-36), base=floats)
