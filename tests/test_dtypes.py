"""Tensors come back in their own dtype and shape: the dtype travels in
nnr_decompressed_data_format (nnc_core.dtypes), a scalar as a tensor
without dimensions; float32 and int32 tensors are not signalled, so those
streams are the ones NNCodec writes."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import nnc_core
from nnc_core import BitstreamError, ConfigError
from nnc_core.bitstream.units import CompressedDataUnit, ParseState, PayloadType, read_units, write_unit
from nnc_core.cli import main
from nnc_core.decoding import quantization_step
from nnc_core.dtypes import DATA_FORMATS, PATTERN_FORMATS, WIDE_FORMATS, format_of, to_patterns, to_planes

INTEGERS = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "bool"]
FLOATS = ["float16", "float32", "float64", ml_dtypes.bfloat16, ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e5m2]


def _headers(data: bytes) -> dict[str, object]:
    return {str(u.header.element_ids[0]): u.header for u in read_units(data) if hasattr(u, "header")}


@pytest.mark.parametrize("dtype", INTEGERS)
def test_integers_round_trip_exactly_in_their_dtype(rng, dtype):
    info = np.iinfo(dtype) if dtype != "bool" else None
    low, high = (0, 2) if info is None else (max(info.min, -(2**31)), min(info.max, 2**31 - 1) + 1)
    value = rng.integers(low, high, (7, 5), dtype=np.int64).astype(dtype)
    data = nnc_core.encode({"t": value})
    out = nnc_core.decode(data)["t"]
    assert out.dtype == np.dtype(dtype) and out.shape == value.shape and np.array_equal(out, value)
    header = _headers(data)["t"]
    assert header.decompressed_data_format_present_flag == (dtype != "int32")


@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: np.dtype(d).name)
def test_floats_come_back_in_their_dtype(rng, dtype):
    value = rng.normal(0, 0.5, (16, 12)).astype(np.float32).astype(dtype)
    exact = nnc_core.decode(nnc_core.encode({"w": value}, raw_float=["w"]))["w"]
    assert exact.dtype == np.dtype(dtype) and np.array_equal(exact.view(np.uint8), value.view(np.uint8))
    data = nnc_core.encode({"w": value}, qp=-40, use_dq=False)
    out = nnc_core.decode(data)["w"]
    assert out.dtype == np.dtype(dtype) and out.shape == value.shape
    # the quantized values, rounded (to nearest even) into the dtype
    (t,) = [t for t in nnc_core.decoding.decode_bitstream(data) if t.name == "w"]
    expected = (t.stored.astype(np.float32) * quantization_step(t.qp, 2)).astype(dtype)
    assert np.array_equal(out.view(np.uint8), expected.view(np.uint8))
    assert np.array_equal(
        nnc_core.decode(data, dtype="float32")["w"], t.stored.astype(np.float32) * quantization_step(t.qp, 2)
    )


def test_scalars_and_their_dtypes_round_trip(rng):
    model = {"step": np.array(7, np.int64), "scale": np.array(0.125, np.float16), "temperature": np.float64(0.5)}
    data = nnc_core.encode(model, raw_float=["scale", "temperature"])
    out = nnc_core.decode(data)
    for name, value in model.items():
        assert out[name].shape == () and out[name].dtype == np.asarray(value).dtype and out[name] == value, name
    assert all(h.tensor_dimensions == [] for h in _headers(data).values())
    with nnc_core.open(data) as reader:
        assert {n: (reader.info(n).shape, reader.info(n).dtype) for n in reader} == {
            n: ((), np.asarray(v).dtype) for n, v in model.items()
        }


def test_blocks_carry_their_weight_dtype(rng):
    tensors = {
        "fc.weight": rng.normal(0, 0.1, (8, 6)).astype(np.float16),
        "fc.bias": rng.normal(0, 0.1, 8).astype(np.float16),
    }
    data = nnc_core.encode(tensors, blocks={"fc": {"weight": "fc.weight", "bias": "fc.bias"}})
    out = nnc_core.decode(data)
    assert {n: v.dtype for n, v in out.items()} == {n: np.dtype("float16") for n in tensors}
    low_rank = nnc_core.decode(
        nnc_core.encode({"w": rng.normal(0, 0.1, (32, 32)).astype(ml_dtypes.bfloat16)}, low_rank=4)
    )
    assert low_rank["w"].dtype == np.dtype(ml_dtypes.bfloat16) and low_rank["w"].shape == (32, 32)


def test_integers_beyond_int32_travel_as_int32_planes(rng):
    """int64, uint64 and uint32 values outside int32 are sent as two int32
    planes (high, low 32 bits) along a last axis of 2, signalled 72/73/74:
    every value comes back, in its dtype and shape, whole, split into parts,
    by random access; the headers give the tensor's own shape.  Values that
    fit int32 are sent as before (int64: format 7)."""
    tensors = {
        "ids": np.array([0, -1, 2**63 - 1, -(2**63), 2**31, -(2**31) - 1], np.int64),
        "hashes": rng.integers(0, 2**64 - 1, (40, 30), dtype=np.uint64, endpoint=True),
        "counts": np.array([[0, 2**32 - 1], [2**31, 7]], np.uint32),
        "step": np.array(2**40, np.int64),
        "none": np.zeros((0, 3), np.int64),
        "small": np.arange(-3, 3, dtype=np.int64),
    }
    for options in ({}, {"max_part_elements": 300}, {"workers": 1}):
        data = nnc_core.encode(tensors, **options)
        out = nnc_core.decode(data)
        assert list(out) == list(tensors)
        for name, value in tensors.items():
            assert out[name].dtype == value.dtype and out[name].shape == value.shape, name
            assert np.array_equal(out[name], value), name
        with nnc_core.open(data) as reader:
            for name, value in tensors.items():
                info = reader.info(name)
                assert (info.shape, info.dtype) == (value.shape, value.dtype), name
                assert np.array_equal(reader[name], value)
    formats = {
        u.header.element_ids[0]: (u.header.decompressed_data_format, list(u.header.tensor_dimensions))
        for u in read_units(nnc_core.encode(tensors))
        if isinstance(u, CompressedDataUnit)
    }
    assert formats == {
        "counts": (74, [2, 2, 2]),
        "hashes": (73, [40, 30, 2]),
        "ids": (72, [6, 2]),
        "none": (7, [0, 3]),
        "small": (7, [6]),
        "step": (72, [2]),
    }


def test_planes_of_the_wrong_shape_or_range_are_a_stream_error():
    """A header that signals int32 planes over a tensor without the planes'
    axis of 2, or uint32 planes holding a larger value, is a BitstreamError."""
    bad_axis = _with_format(nnc_core.encode({"n": np.arange(3, dtype=np.int32)}), "n", 72)
    with pytest.raises(BitstreamError, match=r"tensor 'n': int32 planes of shape \[3\], not \[\.\.\., 2\]"):
        nnc_core.decode(bad_axis)
    too_large = _with_format(nnc_core.encode({"n": np.array([[1, 0]], np.int32)}), "n", 74)
    with pytest.raises(BitstreamError, match=r"tensor 'n': values outside uint32"):
        nnc_core.decode(too_large)


def test_unknown_dtypes_are_refused():
    with pytest.raises(nnc_core.EncodeError, match=r"tensor 's': dtype <U1 is not supported"):
        nnc_core.encode({"s": np.array(["a"])})
    with pytest.raises(ConfigError, match=r"dtype 'int8' is not a float dtype"):
        nnc_core.decode(nnc_core.encode({"w": np.ones((2, 2), np.float32)}), dtype="int8")


def _with_format(data: bytes, name: str, value: int) -> bytes:
    """The stream with one NDU's nnr_decompressed_data_format set to ``value``."""
    state, out = ParseState(), []
    for unit in read_units(data):
        if hasattr(unit, "header") and str(unit.header.element_ids[0]) == name:
            unit.header.decompressed_data_format_present_flag, unit.header.decompressed_data_format = True, value
            unit.nnr_unit_size_flag = None
        out.append(write_unit(unit, state))
    return b"".join(out)


def test_a_stream_lying_about_an_integer_dtype_is_refused():
    data = nnc_core.encode({"n": np.array([300, -5], np.int32)})
    units = read_units(data)
    lying = _with_format(data, "n", 65)  # uint8
    with pytest.raises(BitstreamError, match=r"tensor 'n': decoded integers outside uint8 \(0..255\)") as e:
        nnc_core.decode(lying)
    assert e.value.unit_index == len(units) - 1


def test_unknown_format_values_decode_in_float32_as_nncodec_does():
    assert 100 not in DATA_FORMATS
    data = _with_format(nnc_core.encode({"w": np.ones((4, 4), np.float32)}), "w", 100)
    assert nnc_core.decode(data)["w"].dtype == np.float32


def test_npz_round_trip_keeps_dtypes_and_shapes(tmp_path, rng):
    model = {
        "u8": rng.integers(0, 256, (3, 4)).astype(np.uint8),
        "h": rng.normal(0, 1, (5, 5)).astype(np.float16),
        "d": rng.normal(0, 1, (5, 5)),
        "b": np.array([True, False]),
        "s": np.array(3, np.int16),
    }
    np.savez(tmp_path / "m.npz", **model)
    assert main(["encode", str(tmp_path / "m.npz"), "-o", str(tmp_path / "m.nnr"), "-q"]) == 0
    assert main(["decode", str(tmp_path / "m.nnr"), "-o", str(tmp_path / "out.npz"), "-q"]) == 0
    with np.load(tmp_path / "out.npz") as out:
        assert {n: (out[n].dtype, out[n].shape) for n in out.files} == {n: (v.dtype, v.shape) for n, v in model.items()}
        for n in ("u8", "b", "s"):
            assert np.array_equal(out[n], model[n])
    assert main(["decode", str(tmp_path / "m.nnr"), "-o", str(tmp_path / "f32.npz"), "--dtype", "float32", "-q"]) == 0
    with np.load(tmp_path / "f32.npz") as out:
        assert out["h"].dtype == out["d"].dtype == np.float32 and out["u8"].dtype == np.uint8


def test_every_signalled_format_names_a_dtype():
    for value, name in DATA_FORMATS.items():
        dtype = (
            np.dtype(getattr(ml_dtypes, name))
            if hasattr(ml_dtypes, name) and name not in ("float16",)
            else np.dtype(name)
        )
        if value in WIDE_FORMATS:  # the int32 planes of integers beyond int32 and of float64 bits
            assert to_planes(np.zeros(1, dtype))[1] == value
            continue
        if value in PATTERN_FORMATS:  # a codebook of narrow floats' bit patterns
            assert to_patterns(np.zeros(1, dtype))[1] == value
            continue
        assert format_of(dtype) == (None if name in ("int32", "float32") else value)


def _specials(dtype: object) -> np.ndarray:
    """Every kind of value a float dtype has: zeros of both signs, the
    smallest subnormal, the largest finite values, and NaN and infinities
    where the dtype has them."""
    info = ml_dtypes.finfo(dtype)
    values = [0.0, -0.0, float(info.smallest_subnormal), -float(info.max), float(info.max), 1.0, -0.5]
    values += [np.nan] + ([np.inf, -np.inf] if np.dtype(dtype).name != "float8_e4m3fn" else [])
    return np.array(values, np.float64).astype(dtype)


@pytest.mark.parametrize("dtype", FLOATS, ids=lambda d: np.dtype(d).name)
def test_lossless_codes_every_float_exactly(rng, dtype):
    """``lossless=True``: every float tensor decodes to its own bits (NaN,
    signed zeros, subnormals included), whole, split into parts, on one or two
    threads and by random access; float32 as raw floats (NNCodec's), float64
    as int32 planes of its bits, the narrow floats as a codebook of their bit
    patterns at QP 0, each signalled by its format value."""
    tensors = {
        "w": rng.normal(0, 0.05, (64, 48)).astype(dtype),
        "specials": _specials(dtype),
        "scalar": np.array(-0.0, dtype),
        "empty": np.zeros((0, 4), dtype),
        "ids": np.arange(5, dtype=np.int64),
    }
    if np.dtype(dtype) == np.float64:
        tensors["w"] += 1e-12  # values no float32 holds
    for options in ({}, {"max_part_elements": 1000}, {"workers": 1}):
        data = nnc_core.encode(tensors, lossless=True, **options)
        out = nnc_core.decode(data, workers=2)
        with nnc_core.open(data) as reader:
            for name, value in tensors.items():
                assert out[name].dtype == value.dtype and out[name].shape == value.shape, name
                assert out[name].tobytes() == value.tobytes(), name
                assert (reader.info(name).shape, np.dtype(reader.info(name).dtype)) == (value.shape, value.dtype)
                assert reader[name].tobytes() == value.tobytes(), name
    headers = _headers(nnc_core.encode(tensors, lossless=True))
    name = np.dtype(dtype).name
    if name == "float32":
        assert headers["w"].payload_type == PayloadType.NNR_PT_RAW_FLOAT
    elif name == "float64":
        assert (headers["w"].payload_type, headers["w"].decompressed_data_format) == (PayloadType.NNR_PT_INT, 75)
        assert headers["w"].tensor_dimensions == [64, 48, 2]
    else:
        h = headers["w"]
        assert h.payload_type == PayloadType.NNR_PT_FLOAT and h.codebook_present_flag
        assert DATA_FORMATS[h.decompressed_data_format] == name and h.decompressed_data_format in PATTERN_FORMATS
        patterns, _ = to_patterns(tensors["w"])
        assert list(h.codebooks[0].values) == sorted(set(patterns.ravel().tolist()))


def test_lossless_bf16_weights_code_in_three_quarters_of_their_bytes(minilm):
    """On real weights (all-MiniLM-L6-v2 in bf16) the codebook of bit
    patterns codes the model exactly in less than 3/4 of its bytes (raw
    floats would take twice them)."""
    bf16 = {n: v.astype(ml_dtypes.bfloat16) for n, v in minilm.items() if v.dtype == np.float32}
    data = nnc_core.encode(bf16, lossless=True)
    assert len(data) < 0.75 * sum(v.nbytes for v in bf16.values())
    out = nnc_core.decode(data)
    assert all(out[n].dtype == v.dtype and out[n].tobytes() == v.tobytes() for n, v in bf16.items())


def test_lossless_blocks_and_raw_float_choices(rng):
    """A block of bf16 tensors sent exactly travels as one NDU per member (a
    block's members are mapped by role, not by their patterns); a tensor in
    ``raw_float`` stays a raw float32, as NNCodec decodes it."""
    tensors = {
        "fc.weight": rng.normal(0, 0.1, (8, 6)).astype(ml_dtypes.bfloat16),
        "fc.bias": rng.normal(0, 0.1, 8).astype(ml_dtypes.bfloat16),
        "norm": rng.normal(1, 0.1, 8).astype(ml_dtypes.bfloat16),
    }
    data = nnc_core.encode(
        tensors, lossless=True, raw_float=["norm"], blocks={"fc": {"weight": "fc.weight", "bias": "fc.bias"}}
    )
    out = nnc_core.decode(data)
    assert all(out[n].dtype == v.dtype and out[n].tobytes() == v.tobytes() for n, v in tensors.items())
    headers = _headers(data)
    assert sorted(headers) == sorted(tensors)
    assert headers["norm"].payload_type == PayloadType.NNR_PT_RAW_FLOAT
    assert headers["fc.bias"].decompressed_data_format == 76


def test_bit_patterns_that_are_no_patterns_are_a_stream_error():
    """A header signalling bit patterns over a codebook whose values are no
    integers (a QP other than 0) or leave the pattern range is a BitstreamError."""
    values = np.array([0.5, -1.25, 3.0], np.float32)
    not_integers = _with_format(nnc_core.encode({"w": values}, codebook_mode=1, qp=-8), "w", 76)
    with pytest.raises(
        BitstreamError, match=r"tensor 'w': its codebook holds values that are no 16-bit patterns \(-32768\.\.32767\)"
    ):
        nnc_core.decode(not_integers)
    too_large = _with_format(nnc_core.encode({"w": np.array([200.0, -3.0])}, codebook_mode=1, qp=0), "w", 78)
    with pytest.raises(
        BitstreamError, match=r"tensor 'w': its codebook holds values that are no 8-bit patterns \(-128\.\.127\)"
    ):
        nnc_core.decode(too_large)
    # without a codebook the value only names the dtype (bfloat16), as for any quantized tensor
    plain = _with_format(nnc_core.encode({"w": values}, qp=-8), "w", 76)
    assert nnc_core.decode(plain)["w"].dtype == np.dtype(ml_dtypes.bfloat16)


def test_lossless_command_line_round_trip_is_exact(tmp_path, rng):
    """`nnc encode model.npz --lossless` and `nnc decode -o back.npz`: every
    array back with its bits, float64 and float16 included (numpy's .npz holds
    no bfloat16)."""
    model = {
        "d": rng.normal(0, 1, (9, 7)),
        "h": rng.normal(0, 1, (9, 7)).astype(np.float16),
        "f": rng.normal(0, 1, 5).astype(np.float32),
        "n": np.array([np.nan, -0.0], np.float64),
    }
    np.savez(tmp_path / "m.npz", **model)
    assert main(["encode", str(tmp_path / "m.npz"), "-o", str(tmp_path / "m.nnr"), "--lossless", "-q"]) == 0
    assert main(["decode", str(tmp_path / "m.nnr"), "-o", str(tmp_path / "back.npz"), "-q"]) == 0
    with np.load(tmp_path / "back.npz") as out:
        for name, value in model.items():
            assert out[name].dtype == value.dtype and out[name].tobytes() == value.tobytes(), name


def test_planes_take_no_dimension_shift():
    """int32 planes add a last axis, which a shifted first dimension would
    move: such a tensor is refused by name, whether int64 or float64 sent exactly."""
    for value, options in ((np.full((2, 3), 2**40, np.int64), {}), (np.ones((2, 3)), {"lossless": True})):
        with pytest.raises(
            nnc_core.EncodeError,
            match=r"tensor 'w': \w+ values travel as int32 planes, which are not sent with a shifted dimension",
        ):
            nnc_core.encode({"w": value}, dimension_shift={"w": 1}, **options)
