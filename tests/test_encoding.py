"""Encoding named tensors into NNR bitstreams: byte-identical to the
reference software's streams of the conformance vectors, round trips, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import nnc_core
from nnc_core import ConfigError, EncodeError
from nnc_core.cli import main
from nnc_core.decoding import decode_bitstream, quantization_step
from nnc_core.encoding import uniform_quantize

ROOT = Path(__file__).parent / "vectors"
MANIFEST = json.loads((ROOT / "manifest.json").read_text())
SUPPORTED = {"qp", "qp_density", "nonweight_qp", "use_dq", "codebook_mode", "scan_order", "cabac_unary_length_minus1", "param_opt", "row_skipping"}
ENCODABLE = [v for v in MANIFEST["vectors"] if "stream" in v and set(v["compress_args"]) <= SUPPORTED]


def _inputs(vector):
    return {name: np.load(ROOT / info["file"]) for name, info in vector["inputs"].items()}


@pytest.mark.parametrize("vector", ENCODABLE, ids=[v["id"] for v in ENCODABLE])
def test_stream_equals_reference(vector):
    assert nnc_core.encode(_inputs(vector), **vector["compress_args"]) == (ROOT / vector["stream"]).read_bytes()


def test_encodable_vectors_cover_the_settings():
    assert len(ENCODABLE) == 17  # blocks, RDO and int_quant_bw come with the next encoder tools


@pytest.mark.parametrize("use_dq", [True, False])
@pytest.mark.parametrize("scan_order", [0, 3])
def test_round_trip_real_weights(minilm, use_dq, scan_order):
    tensors = {n: v for n, v in minilm.items() if n.startswith("encoder.layer.1.")}
    tensors["embeddings.position_ids"] = minilm["embeddings.position_ids"].astype(np.int32)
    data = nnc_core.encode(tensors, use_dq=use_dq, scan_order=scan_order, row_skipping=True)
    decoded = decode_bitstream(data)
    assert [t.name for t in decoded] == list(tensors)
    for t in decoded:
        original = tensors[t.name]
        if original.dtype.kind == "i":
            assert t.values.dtype == np.int32 and np.array_equal(t.values, original)
            continue
        step = quantization_step(-38 if original.ndim > 1 else -75, 2)
        assert t.values.dtype == np.float32 and t.values.shape == original.shape
        # the reconstruction stays within one step (uniform) or two (DQ) of the weight
        assert np.max(np.abs(t.values - original)) <= (2 if use_dq else 0.5) * step * 1.0001
    assert 8 * len(data) / sum(v.size for v in tensors.values()) < 8


def test_uniform_quantizer_rounds_half_away_from_zero():
    step = np.float32(0.5)
    assert uniform_quantize(np.array([0.25, -0.25, 0.75, -0.75, 0.2499], np.float32), step).tolist() == [1, -1, 2, -2, 0]


def test_non_finite_weights_are_refused():
    with pytest.raises(EncodeError, match=r"tensor 'w': non-finite value nan at flat index 3"):
        nnc_core.encode({"w": np.array([[0.1, 0.2], [0.3, np.nan]], np.float32)})


def test_unsupported_dtype_is_refused():
    with pytest.raises(EncodeError, match=r"tensor 'c': dtype complex64 is not supported"):
        nnc_core.encode({"c": np.zeros(3, np.complex64)})
    with pytest.raises(EncodeError, match=r"tensor 'big': integer values outside int32"):
        nnc_core.encode({"big": np.array([2**40], np.int64)})


def test_settings_are_checked():
    with pytest.raises(ConfigError, match=r"tensor 'w': qp -200 is outside -128..127"):
        nnc_core.encode({"w": np.ones((2, 2), np.float32)}, qp=-200)
    with pytest.raises(ConfigError, match=r"qp_per_tensor names tensors that are not in the model: \['x'\]"):
        nnc_core.encode({"w": np.ones((2, 2), np.float32)}, qp_per_tensor={"x": -30})
    with pytest.raises(ConfigError, match="qp_density 8"):
        nnc_core.encode({"w": np.ones((2, 2), np.float32)}, qp_density=8)


def test_progress_is_reported():
    seen = []
    nnc_core.encode({"a": np.ones(3, np.float32), "b": np.ones((2, 2), np.float32)}, progress=lambda *a: seen.append(a))
    assert seen == [(1, 2, "a"), (2, 2, "b")]


def test_cli_encode_matches_the_api(tmp_path):
    vector = next(v for v in MANIFEST["vectors"] if v["id"] == "v09_multi_tensor")
    npz = tmp_path / "model.npz"
    np.savez(npz, **_inputs(vector))
    out = tmp_path / "model.nnr"
    assert main(["encode", str(npz), "-o", str(out), "-q"]) == 0
    assert out.read_bytes() == (ROOT / vector["stream"]).read_bytes()
    assert main(["encode", str(npz), "-o", str(out), "--no-dq", "--qp", "-44", "-q"]) == 0
    assert out.read_bytes() == nnc_core.encode(_inputs(vector), use_dq=False, qp=-44)
    assert main(["encode", str(npz), "-o", str(out), "--codebook", "-q"]) == 0
    assert out.read_bytes() == nnc_core.encode(_inputs(vector), codebook_mode=1)
