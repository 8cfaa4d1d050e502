"""Encoding named tensors into NNR bitstreams: byte-identical to the
reference software's streams of the conformance vectors, round trips, errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

import nnc_core
from nnc_core import ConfigError, EncodeError
from nnc_core.cli import main
from nnc_core.decoding import DecoderState, decode_bitstream, quantization_step
from nnc_core.encoding import blocks_from_parameter_types, uniform_quantize

ROOT = Path(__file__).parent / "vectors"
MANIFEST = json.loads((ROOT / "manifest.json").read_text())
SUPPORTED = {
    "qp",
    "qp_density",
    "nonweight_qp",
    "use_dq",
    "codebook_mode",
    "scan_order",
    "cabac_unary_length_minus1",
    "param_opt",
    "row_skipping",
    "int_quant_bw",
    "block_id_and_param_type",
    "bnf",
    "lambda_scale",
}
ENCODABLE = [v for v in MANIFEST["vectors"] if "stream" in v and set(v["compress_args"]) <= SUPPORTED]


def _encode_args(compress_args):
    """Our encode() arguments for the reference software's compress() arguments."""
    args = dict(compress_args)
    blocks = args.pop("block_id_and_param_type", None)
    if blocks is not None:
        args["blocks"] = blocks_from_parameter_types(blocks["block_identifier"], blocks["parameter_type"])
    if args.pop("bnf", False):
        args["fold_batch_norm"] = True
    return args


def _inputs(vector):
    return {name: np.load(ROOT / info["file"]) for name, info in vector["inputs"].items()}


@pytest.mark.parametrize("vector", ENCODABLE, ids=[v["id"] for v in ENCODABLE])
def test_stream_equals_reference(vector):
    assert (
        nnc_core.encode(_inputs(vector), **_encode_args(vector["compress_args"]))
        == (ROOT / vector["stream"]).read_bytes()
    )


def test_encodable_vectors_cover_the_settings():
    assert len(ENCODABLE) == 23  # all but the incremental v30/v31


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
    assert uniform_quantize(np.array([0.25, -0.25, 0.75, -0.75, 0.2499], np.float32), step).tolist() == [
        1,
        -1,
        2,
        -2,
        0,
    ]


def test_non_finite_weights_are_refused():
    with pytest.raises(EncodeError, match=r"tensor 'w': non-finite value nan at flat index 3"):
        nnc_core.encode({"w": np.array([[0.1, 0.2], [0.3, np.nan]], np.float32)})


def test_unsupported_dtype_is_refused():
    with pytest.raises(EncodeError, match=r"tensor 'c': dtype complex64 is not supported"):
        nnc_core.encode({"c": np.zeros(3, np.complex64)})
    with pytest.raises(EncodeError, match=r"tensor 'c': dtype complex128 is not supported"):
        nnc_core.encode({"big": np.array([2**40], np.int64), "c": np.zeros(2, np.complex128)})


def test_settings_are_checked():
    # a tensor that keeps an unsignalable QP (no overflow makes the encoder raise it)
    with pytest.raises(ConfigError, match=r"tensor 'w': qp -200 is outside -128..127"):
        nnc_core.encode({"w": np.zeros((2, 2), np.float32)}, qp=-200)
    with pytest.raises(ConfigError, match=r"qp_per_tensor names tensors that are not in the model: \['x'\]"):
        nnc_core.encode({"w": np.ones((2, 2), np.float32)}, qp_per_tensor={"x": -30})
    with pytest.raises(ConfigError, match="qp_density 8"):
        nnc_core.encode({"w": np.ones((2, 2), np.float32)}, qp_density=8)


def test_an_unsignalable_requested_qp_is_replaced_where_levels_would_overflow(crepe_tiny):
    """As NNCodec does: at qp_density 1 the default nonweight_qp -75 is outside
    -64..63, but every CREPE tensor it would overflow takes the fallback QP,
    which fits; only the QPs a stream carries must be signalable.  A fallback
    below the range is raised to its lowest QP; a tensor that keeps an
    unsignalable QP it was given is refused."""
    floats = {n: v for n, v in crepe_tiny.items() if v.dtype.kind == "f"}
    decoded = decode_bitstream(nnc_core.encode(floats, qp=-20, qp_density=1, use_dq=False))
    for t in decoded:
        assert -64 <= t.qp <= 63, t.name
        step = float(quantization_step(t.qp, 1))
        w = floats[t.name]  # half a step, up to float32 rounding of the product
        assert np.all(np.abs(t.values - w) <= step / 2 * (1 + 1e-6) + 2 * np.spacing(np.abs(w))), t.name
    assert {t.qp for t in decoded if t.values.ndim == 1} - {-75, -20}  # the non-weights took fallback QPs
    tiny = np.array([1e-3, -1e-3, 5e-4], np.float32)  # its fallback at density 0 is below -32
    (t,) = decode_bitstream(nnc_core.encode({"tiny": tiny}, qp_density=0, use_dq=False))
    assert t.qp == -32 and np.max(np.abs(t.values - tiny)) <= float(quantization_step(-32, 0)) / 2
    with pytest.raises(ConfigError, match=r"tensor 'zeros': qp -75 is outside -64..63"):
        nnc_core.encode({"zeros": np.zeros(4, np.float32)}, qp_density=1)


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


def _conv_bn(rng, channels=6):
    return {
        "conv.weight": (0.2 * rng.standard_normal((channels, 3, 3, 3))).astype(np.float32),
        "conv.bias": (0.05 * rng.standard_normal(channels)).astype(np.float32),
        "bn.weight": (1 + 0.1 * rng.standard_normal(channels)).astype(np.float32),
        "bn.bias": (0.1 * rng.standard_normal(channels)).astype(np.float32),
        "bn.running_mean": (0.1 * rng.standard_normal(channels)).astype(np.float32),
        "bn.running_var": (1 + rng.random(channels)).astype(np.float32),
        "head.weight": (0.1 * rng.standard_normal((4, channels))).astype(np.float32),
    }


CONV_BN_BLOCK = {
    "c": {
        "weight": "conv.weight",
        "bias": "conv.bias",
        "bn.gamma": "bn.weight",
        "bn.beta": "bn.bias",
        "bn.mean": "bn.running_mean",
        "bn.var": "bn.running_var",
    }
}


@pytest.mark.parametrize("use_dq", [True, False])
def test_block_round_trip(rng, use_dq):
    """A block NDU carries its members in coding order and restores each at its QP."""
    tensors = _conv_bn(rng)
    data = nnc_core.encode(tensors, blocks=CONV_BN_BLOCK, use_dq=use_dq, scan_order=1)
    decoded = decode_bitstream(data)
    assert [t.name for t in decoded] == [
        "conv.bias",
        "bn.bias",
        "bn.weight",
        "bn.running_mean",
        "bn.running_var",
        "conv.weight",
        "head.weight",
    ]
    assert len({t.unit_index for t in decoded}) == 2  # one block NDU, one plain NDU
    for t in decoded:
        step = quantization_step(-38 if t.name.endswith("conv.weight") or t.name == "head.weight" else -75, 2)
        assert np.max(np.abs(t.values - tensors[t.name])) <= (2 if use_dq else 0.5) * step * 1.0001


def test_batch_norm_folding_reconstructs_the_folded_layer(rng):
    tensors = _conv_bn(rng)
    data = nnc_core.encode(tensors, blocks=CONV_BN_BLOCK, fold_batch_norm=True, use_dq=False, qp=-60, nonweight_qp=-90)
    out = nnc_core.decode(data)
    assert list(out) == ["conv.weight_scaling", "conv.bias", "conv.weight", "head.weight"]
    g = tensors["bn.weight"] / np.sqrt(tensors["bn.running_var"] + np.float32(1e-5))
    folded_bias = (tensors["conv.bias"] - tensors["bn.running_mean"]) * g + tensors["bn.bias"]
    np.testing.assert_allclose(out["conv.weight_scaling"], g, atol=quantization_step(-90, 2))
    np.testing.assert_allclose(out["conv.bias"], folded_bias, atol=quantization_step(-90, 2))


def test_block_without_bias_gets_one_when_folded(rng):
    tensors = _conv_bn(rng)
    del tensors["conv.bias"]
    blocks = {"c": {k: v for k, v in CONV_BN_BLOCK["c"].items() if k != "bias"}}
    out = nnc_core.decode(nnc_core.encode(tensors, blocks=blocks, fold_batch_norm=True))
    assert list(out)[:3] == ["conv.weight_scaling", "conv.weight.bias", "conv.weight"]


def test_block_with_integer_member_is_split(rng):
    """Blocks carry quantized floats only: other members get NDUs of their own,
    in block coding order, with the block's parameter types in each header."""
    from nnc_core.bitstream.units import CompressedDataUnit, read_units

    tensors = {"fc.weight": rng.standard_normal((5, 4)).astype(np.float32), "fc.bias": np.arange(5, dtype=np.int32)}
    data = nnc_core.encode(tensors, blocks={"fc": {"weight": "fc.weight", "bias": "fc.bias"}})
    ndus = [u for u in read_units(data) if isinstance(u, CompressedDataUnit)]
    assert [(u.header.element_ids, u.header.payload_type, u.header.compressed_parameter_types) for u in ndus] == [
        (["fc.bias"], 0, 8),
        (["fc.weight"], 1, 8),
    ]
    assert np.array_equal(nnc_core.decode(data)["fc.bias"], tensors["fc.bias"])


@pytest.mark.parametrize(
    ("blocks", "message"),
    [
        ({"b": {"bias": "fc.bias"}}, "block 'b' has no weight"),
        ({"b": {"weight": "fc.weight", "scale": "fc.bias"}}, "unknown roles ['scale']"),
        ({"b": {"weight": "fc.weight", "bias": "nope"}}, "bias 'nope' is not a tensor of the model"),
        ({"b": {"weight": "fc.weight", "bias": "other"}}, "bias 'other' has shape [3], a block member needs shape [5]"),
        ({"b": {"weight": "fc.weight", "bn.gamma": "fc.bias"}}, "batch norm needs all of"),
        (
            {"a": {"weight": "fc.weight", "bias": "fc.bias"}, "b": {"weight": "fc.bias"}},
            "tensor 'fc.bias' is in blocks 'a' and 'b'",
        ),
    ],
)
def test_block_errors(rng, blocks, message):
    tensors = {
        "fc.weight": np.ones((5, 4), np.float32),
        "fc.bias": np.ones(5, np.float32),
        "other": np.ones(3, np.float32),
    }
    with pytest.raises(ConfigError, match=re.escape(message)):
        nnc_core.encode(tensors, blocks=blocks)


def test_blocks_from_parameter_types_rejects_unknown_types():
    with pytest.raises(ConfigError, match="has parameter type 'gamma'"):
        blocks_from_parameter_types({"a": "b1", "b": "b1"}, {"a": "weight", "b": "gamma"})


def test_raw_float_is_lossless_with_nan_and_inf(rng):
    w = rng.standard_normal((4, 6)).astype(np.float32)
    w[0, 0], w[1, 1], w[2, 2] = np.nan, np.inf, -np.inf
    tensors = {"w": w, "b": rng.standard_normal(4).astype(np.float32)}
    out = nnc_core.decode(nnc_core.encode(tensors, raw_float=["w"]))
    assert out["w"].dtype == np.float32 and out["w"].tobytes() == w.tobytes()
    with pytest.raises(EncodeError, match=r"tensor 'w': non-finite value nan at flat index 0 \(send it with raw_float"):
        nnc_core.encode(tensors)


@pytest.mark.parametrize("use_dq", [True, False])
def test_int_quant_bw_keeps_integers_in_bit_depth(minilm, use_dq):
    tensors = {n: v for n, v in minilm.items() if n.startswith("encoder.layer.2.attention.self")}
    decoded = decode_bitstream(nnc_core.encode(tensors, int_quant_bw=6, use_dq=use_dq))
    for t in decoded:
        signed = np.any(tensors[t.name] < 0)
        bits = 6 if tensors[t.name].ndim > 1 else 8
        low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
        # DQ: a clipped index that its state cannot reconstruct decodes to a neighbour
        slack = 1 if use_dq else 0
        assert low - slack <= t.stored.min() and t.stored.max() <= high + slack, t.name


def test_int_quant_bw_excludes_per_tensor_qps():
    with pytest.raises(ConfigError, match="int_quant_bw chooses every tensor's QP"):
        nnc_core.encode({"w": np.ones((2, 2), np.float32)}, int_quant_bw=8, qp_per_tensor={"w": -30})


@pytest.mark.parametrize("shape", [(9, 1), (1, 9), (1, 3, 3), (5, 1, 1)])
def test_block_scan_falls_back_to_row_major_for_single_row_or_column(rng, shape):
    """A 2-D view with one row or one column has no block rows: scan order 0 is signalled."""
    w = rng.standard_normal(shape).astype(np.float32)
    data = nnc_core.encode({"w": w}, scan_order=1)
    (t,) = decode_bitstream(data)
    assert t.values.shape == shape
    assert np.max(np.abs(t.values - w)) <= 2 * quantization_step(-38, 2)


def test_split_tensors_decode_like_whole_ones(minilm):
    """Parts (partial_data_counter) of uniformly quantized tensors reconstruct
    exactly what the whole tensors do; with DQ each part has its own trellis."""
    from nnc_core.bitstream.units import CompressedDataUnit, read_units

    tensors = {n: v for n, v in minilm.items() if n.startswith("encoder.layer.3.attention.self")}
    whole = nnc_core.decode(nnc_core.encode(tensors, use_dq=False, scan_order=2))
    data = nnc_core.encode(tensors, use_dq=False, scan_order=2, max_part_elements=40_000)
    counters = [u.partial_data_counter for u in read_units(data) if isinstance(u, CompressedDataUnit)]
    assert list(tensors)[:2] == ["encoder.layer.3.attention.self.key.bias", "encoder.layer.3.attention.self.key.weight"]
    assert counters[:5] == [None, 4, 3, 2, 1]  # the bias whole, the 384 x 384 weight in parts of 104 rows and less
    split = nnc_core.decode(data)
    assert list(split) == list(whole)
    for name in whole:
        assert split[name].tobytes() == whole[name].tobytes(), name
    dq = nnc_core.decode(nnc_core.encode(tensors, max_part_elements=40_000))
    for name in tensors:
        assert np.max(np.abs(dq[name] - tensors[name])) <= 2 * quantization_step(
            -38 if tensors[name].ndim > 1 else -75, 2
        )


def test_dimension_shift_codes_output_channels_as_rows(rng):
    """A [kh, kw, in, out] kernel with shift 3 (output channels as rows) in a
    block with its per-output-channel bias, row skipping on zero output channels."""
    kernel = rng.standard_normal((3, 3, 4, 8)).astype(np.float32)
    kernel[..., [1, 5]] = 0
    tensors = {"k": kernel, "b": rng.standard_normal(8).astype(np.float32)}
    data = nnc_core.encode(
        tensors,
        blocks={"l": {"weight": "k", "bias": "b"}},
        dimension_shift={"k": 3},
        row_skipping=True,
        scan_order=1,
        use_dq=False,
    )
    out = nnc_core.decode(data)
    reference = nnc_core.decode(nnc_core.encode(tensors, use_dq=False))  # the same values without shift
    assert out["k"].shape == kernel.shape and out["k"].tobytes() == reference["k"].tobytes()
    assert out["b"].tobytes() == reference["b"].tobytes()
    with pytest.raises(
        ConfigError, match=re.escape("a block member needs shape [3] (the weight's coded first dimension)")
    ):
        nnc_core.encode(tensors, blocks={"l": {"weight": "k", "bias": "b"}})


def test_aggregate_unit_carries_the_stream(rng):
    from nnc_core.bitstream.units import AggregateUnit, read_units

    tensors = _conv_bn(rng)
    plain = nnc_core.encode(tensors, blocks=CONV_BN_BLOCK)
    data = nnc_core.encode(tensors, blocks=CONV_BN_BLOCK, aggregate=True)
    units = read_units(data)
    assert [type(u).__name__ for u in units] == ["StartUnit", "AggregateUnit"]
    assert isinstance(units[1], AggregateUnit)
    assert {k: v.tobytes() for k, v in nnc_core.decode(data).items()} == {
        k: v.tobytes() for k, v in nnc_core.decode(plain).items()
    }


@pytest.mark.parametrize(
    "args",
    [
        {"use_dq": True, "row_skipping": True},
        {"use_dq": False, "scan_order": 2},
        {"codebook_mode": 1, "use_dq": False},
        {"blocks": {"l": {"weight": "k", "bias": "b"}}, "dimension_shift": {"k": 3}, "use_dq": False, "scan_order": 1},
    ],
)
def test_decoding_without_the_stored_integers_gives_the_same_values(rng, args):
    """decode() drops the stored integers (keep_stored=False): the same
    values, bytes and dtypes, for every payload type and layout."""
    tensors = {
        "k": (rng.standard_normal((3, 3, 4, 8)) * 0.1).astype(np.float32),
        "b": rng.standard_normal(8).astype(np.float32),
        "w": (rng.standard_normal((40, 70)) * 0.05).astype(np.float32),
        "ids": np.arange(-5, 60, dtype=np.int32),
    }
    if "blocks" not in args:
        tensors["k"] = tensors["k"].reshape(36, 8)
    data = nnc_core.encode(tensors, **args)
    kept = decode_bitstream(data)
    dropped = decode_bitstream(data, keep_stored=False)
    assert [t.name for t in dropped] == [t.name for t in kept] and set(tensors) == {t.name for t in kept}
    for a, b in zip(kept, dropped):
        assert a.values.dtype == b.values.dtype and a.values.shape == b.values.shape
        assert a.values.tobytes() == b.values.tobytes(), a.name
        assert a.stored is not None and b.stored is None, a.name
    decoded = nnc_core.decode(data)
    assert {n: v.tobytes() for n, v in decoded.items()} == {t.name: t.values.tobytes() for t in kept}
    with pytest.raises(ConfigError, match="a decoder state needs the stored integers"):
        decode_bitstream(data, DecoderState(), keep_stored=False)
