"""Stream structure the reference software cannot produce: aggregate units
(NNR_AGG), layer parameter sets (NNR_LPS), tensors split over NDUs
(partial_data_counter), multi-element NDUs (topology_tensor_dimension_mapping)
and first_tensor_dimension_shift.  Syntax and semantics are the decisions of
docs/decisions.md; these tests pin the exact bytes, the decoded values and the errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from nnc_core import BitstreamError, ConfigError
from nnc_core.bitstream.bits import BitReader, BitWriter, ue_lengths
from nnc_core.bitstream.layout import (
    build_ndu,
    coded_view,
    concatenate_elements,
    decoded_view,
    part_header,
    split_tensor,
)
from nnc_core.bitstream.reader import _read_codebook
from nnc_core.bitstream.syntax import IntegerCodebook
from nnc_core.bitstream.units import (
    AggregateUnit,
    AggregateUnitType,
    CompressedDataUnit,
    LayerParameterSet,
    NduHeader,
    ParameterTypes,
    ParseState,
    PayloadType,
    UnitType,
    aggregate_unit,
    block_rows_minus1,
    read_units,
    write_unit,
    write_units,
)
from nnc_core.bitstream.writer import write_integer_codebook
from nnc_core.decoding import DecoderState, decode_bitstream
from nnc_core.deepcabac import Encoder, TensorCoding
from streams import expected_values, lps, start, stored_for, structured_stream, unit_bytes, vector

TPL = bytes.fromhex("00060e000000")  # the reference encoder's topology unit


def bits(*fields: tuple[int, int]) -> str:
    """Fields (value, width) as a bit string, most significant bit first."""
    return "".join(format(v, f"0{n}b") for v, n in fields)


def to_bytes(bitstring: str) -> bytes:
    assert len(bitstring) % 8 == 0
    return int(bitstring, 2).to_bytes(len(bitstring) // 8, "big") if bitstring else b""


def raw_agg(
    units: list[bytes],
    *,
    count: int | None = None,
    types: list[int] | None = None,
    entries: list[int] | None = None,
    agg_type: int = 0,
    cut: int = 0,
    trailing: bytes = b"",
    declared: int | None = None,
) -> bytes:
    """An aggregate unit written field by field (short size field), possibly malformed:
    ``count`` units in the header, ``declared`` (default count) in num_of_nnr_units_minus2."""
    count = len(units) if count is None else count
    declared = count if declared is None else declared
    types = types or [u[2] >> 2 for u in units] + [5] * (count - len(units))
    header_bits = 8 + 8 + 1 + 16 + count * 40 + count * 6
    header_len = (header_bits + 1 + 7) // 8  # byte_alignment(): at least one bit
    if entries is None:
        entries, at = [], 2 + header_len
        for u in units:
            entries.append(at)
            at += len(u)
        entries += [0] * (count - len(units))
    header = bits((6, 6), (1, 1), (0, 1), (agg_type, 8), (1, 1), (declared - 2, 16))
    header += "".join(bits((t, 6), (e, 34)) for t, e in zip(types, entries))
    header += "0" * (6 * count) + "1"
    header += "0" * (-len(header) % 8)
    body = to_bytes(header) + b"".join(units) + trailing
    body = body[: len(body) - cut]
    return (len(body) + 2).to_bytes(2, "big") + body


def names_values(tensors) -> list[tuple[str, bytes, bytes | None]]:
    return [(t.name, t.values.tobytes(), None if t.stored is None else t.stored.tobytes()) for t in tensors]


# ---------------------------------------------------------------------------
# NNR_AGG


def test_aggregate_unit_bytes_field_by_field():
    lps_unit = write_unit(lps(4, -100), ParseState(general_profile_idc=1))
    assert lps_unit == bytes.fromhex("00080a00029f9c80")
    agg = aggregate_unit([TPL, lps_unit])
    header = bits((6, 6), (1, 1), (0, 1), (0, 8), (1, 1), (0, 16), (3, 6), (18, 34), (2, 6), (24, 34), (0, 12)) + "100"
    assert agg == (32).to_bytes(2, "big") + to_bytes(header) + TPL + lps_unit
    informative = aggregate_unit(
        [TPL, lps_unit],
        aggregate_unit_type=AggregateUnitType.NNR_AGG_SLF,
        entry_points_present_flag=False,
        quant_bitdepth=[8, 31],
        ctu_scan_order=[1, 0],
    )
    header = bits((6, 6), (1, 1), (0, 1), (1, 8), (0, 1), (0, 16), (8, 5), (1, 1), (31, 5), (0, 1)) + "100"
    assert informative == (22).to_bytes(2, "big") + to_bytes(header) + TPL + lps_unit


def test_aggregate_unit_fields_round_trip():
    head, _ = start()
    stream = b"".join(head[:2]) + aggregate_unit(
        [TPL, write_unit(lps(3, 7), ParseState(general_profile_idc=1))],
        aggregate_unit_type=AggregateUnitType.NNR_AGG_SLF,
        quant_bitdepth=[8, 31],
        ctu_scan_order=[1, 0],
    )
    agg = read_units(stream)[2]
    assert isinstance(agg, AggregateUnit)
    assert (agg.aggregate_unit_type, agg.entry_points_present_flag) == (AggregateUnitType.NNR_AGG_SLF, True)
    assert (agg.quant_bitdepth, agg.ctu_scan_order, agg.entry_points) == ([8, 31], [1, 0], [18, 24])
    assert [u.offset for u in agg.units] == [12 + 18, 12 + 24]
    assert isinstance(agg.units[1], LayerParameterSet) and agg.units[1].lps_quantization_parameter == 7
    assert write_units(read_units(stream)) == stream


@pytest.mark.parametrize(
    "vector_id", ["v09_multi_tensor", "v10_block_weight_bias", "v13_scan16_entry_points", "v08_int32"]
)
def test_units_in_an_aggregate_decode_as_in_sequence(vector_id):
    stream = vector(vector_id)
    units = unit_bytes(stream)
    for first in (2, 3):  # with and without the topology unit inside
        if len(units) - first < 2:
            continue
        wrapped = b"".join(units[:first]) + aggregate_unit(units[first:])
        assert names_values(decode_bitstream(wrapped)) == names_values(decode_bitstream(stream))
        assert write_units(read_units(wrapped)) == wrapped
        tensors = decode_bitstream(wrapped)
        assert {(t.unit_index, t.aggregated_index) for t in tensors} <= {(first, i) for i in range(len(units) - first)}


def test_aggregate_unit_with_long_size_field():
    stream = vector("v13_scan16_entry_points")
    units = unit_bytes(stream)
    wrapped = b"".join(units[:2]) + aggregate_unit(units[2:], nnr_unit_size_flag=True)
    agg = read_units(wrapped)[2]
    assert agg.nnr_unit_size_flag and agg.entry_points == [4 + 16, 4 + 16 + 6]
    assert names_values(decode_bitstream(wrapped)) == names_values(decode_bitstream(stream))


def test_aggregate_writer_refuses_what_the_reader_refuses():
    units = unit_bytes(vector("v09_multi_tensor"))
    with pytest.raises(ValueError, match="holds 2..65537 units, not 1"):
        aggregate_unit(units[3:4])
    with pytest.raises(ValueError, match="cannot contain an NNR_STR unit"):
        aggregate_unit(units[:2])
    with pytest.raises(ValueError, match="cannot contain an NNR_AGG unit"):
        aggregate_unit([aggregate_unit(units[3:5]), units[5]])
    with pytest.raises(ValueError, match="declares nnr_unit_size"):
        aggregate_unit([units[3] + b"\x00", units[4]])


def _malformed(agg: bytes) -> bytes:
    return b"".join(unit_bytes(vector("v09_multi_tensor"))[:3]) + agg


def test_malformed_aggregate_units_are_named():
    units = unit_bytes(vector("v09_multi_tensor"))
    ndus = units[3:]
    at = 18  # the aggregate unit follows STR, MPS and TPL

    def fails(agg: bytes, message: str) -> None:
        with pytest.raises(BitstreamError) as e:
            decode_bitstream(_malformed(agg))
        assert str(e.value) == message

    inner = aggregate_unit(ndus[:2])
    nested = raw_agg([inner, ndus[2]])
    fails(
        nested,
        f"an aggregate unit cannot contain an NNR_AGG unit (unit 3, aggregated unit 0, byte offset {at + 18 + 2})",
    )
    fails(
        raw_agg([units[0], ndus[0]]),
        f"an aggregate unit cannot contain an NNR_STR unit (unit 3, aggregated unit 0, byte offset {at + 18 + 2})",
    )
    short = raw_agg(ndus[:2], count=3)
    fails(short, f"aggregate unit ends after 2 of its 3 units (unit 3, byte offset {at + len(short)})")
    header = 2 + 16  # size field; two units: 8 + 8 + 1 + 16 + 2 * 46 = 125 bits and the alignment
    extra = raw_agg(ndus[:2], trailing=ndus[2])
    fails(
        extra,
        f"{len(ndus[2])} bytes after the 2 units of the aggregate unit (unit 3, byte offset {at + header + len(ndus[0]) + len(ndus[1])})",
    )
    cut = raw_agg(ndus[:2], cut=1)
    fails(
        cut,
        f"nnr_unit_size {len(ndus[1])} runs past the end of the aggregate unit ({len(ndus[1]) - 1} bytes left) "
        f"(unit 3, aggregated unit 1, byte offset {at + header + len(ndus[0])})",
    )
    moved = raw_agg(ndus[:2], entries=[header, 99])
    fails(
        moved,
        f"nnr_unit_entry_point[1] 99 does not match the unit's position {header + len(ndus[0])} "
        f"(unit 3, aggregated unit 1, byte offset {at + header + len(ndus[0])})",
    )
    retyped = raw_agg(ndus[:2], types=[5, 2])
    fails(
        retyped,
        "nnr_unit_type[1] 2 of the aggregate unit header does not match the unit's type 5 "
        f"(unit 3, aggregated unit 1, byte offset {at + header + len(ndus[0])})",
    )
    fails(raw_agg(ndus[:2], agg_type=2), f"nnr_aggregate_unit_type 2 is reserved (unit 3, byte offset {at + 4})")
    huge = raw_agg(ndus[:2], declared=1000)
    fails(huge, f"an aggregate unit of 1000 units cannot fit {len(huge)} bytes (unit 3, byte offset {at + 6})")


def test_corrupt_payload_inside_an_aggregate_is_located():
    units = unit_bytes(vector("v09_multi_tensor"))
    agg = bytearray(aggregate_unit(units[3:]))
    ndu = read_units(b"".join(units[:3]) + bytes(agg))[3].units[1]
    agg[ndu.payload_offset - 18 + 1] ^= 0x5A  # a byte of fc1.bias's payload
    with pytest.raises(
        BitstreamError, match=rf"tensor 'fc1.bias': .* \(unit 3, aggregated unit 1, byte offset {ndu.payload_offset}\)"
    ):
        decode_bitstream(b"".join(units[:3]) + bytes(agg))
    weight = read_units(b"".join(units[:3]) + bytes(agg))[3].units[0]
    with pytest.raises(
        BitstreamError,
        match=rf"^tensor 'fc1.weight' of shape \[24, 16\] is larger than the limit of 100 elements \(unit 3, aggregated unit 0, byte offset {weight.offset}\)$",
    ):
        decode_bitstream(b"".join(units[:3]) + bytes(agg), max_elements=100)


# ---------------------------------------------------------------------------
# NNR_LPS


def _tensor_ndu(state: ParseState, name: str, stored: np.ndarray, qp: int) -> bytes:
    return write_unit(build_ndu(stored, [name], qp=qp, quantization_base=state.quantization_base()), state)


def test_layer_parameter_set_overrides_the_model_parameters_until_the_next_one(rng):
    parts, state = start(qp_density=2, qp=0)
    stored = {n: stored_for(rng, (4, 6), dq=False, scan_order=0, shift=0) for n in "abcdef"}
    parts.append(_tensor_ndu(state, "a", stored["a"], -38))  # MPS: density 2, base 0
    parts.append(write_unit(lps(4, -100), state))
    parts.append(_tensor_ndu(state, "b", stored["b"], -90))  # LPS: density 4, base -100 (offset 10)
    parts.append(_tensor_ndu(state, "c", stored["c"], -611))  # offset -511, the smallest 10 bits hold
    parts.append(write_unit(LayerParameterSet(UnitType.NNR_LPS), state))  # no quantization fields: MPS again
    parts.append(_tensor_ndu(state, "d", stored["d"], -31))
    parts.append(write_unit(lps(0, 50), state))
    parts.append(_tensor_ndu(state, "e", stored["e"], 80))  # density 0: offset 30 in 6 bits
    parts.append(write_unit(dataclasses.replace(read_units(b"".join(parts))[1], offset=0, size=0), state))  # a new MPS
    parts.append(_tensor_ndu(state, "f", stored["f"], -20))
    stream = b"".join(parts)
    expected = {"a": (-38, 2), "b": (-90, 4), "c": (-611, 4), "d": (-31, 2), "e": (80, 0), "f": (-20, 2)}
    tensors = decode_bitstream(stream)
    assert [t.name for t in tensors] == list("abcdef")
    for t in tensors:
        qp, density = expected[t.name]
        assert t.qp == qp
        assert np.array_equal(t.stored, stored[t.name])
        assert t.values.tobytes() == expected_values(stored[t.name], qp, density).tobytes()
    assert write_units(read_units(stream)) == stream


def test_lps_offsets_are_coded_against_the_layer_parameter_set(rng):
    """The QP offset of an NDU under an LPS is coded in 6 + lps_qp_density bits against its base."""
    parts, state = start(qp_density=2, qp=0)
    parts.append(write_unit(lps(4, -100), state))
    stored = stored_for(rng, (3, 5), dq=False, scan_order=0, shift=0)
    ndu = build_ndu(stored, ["w"], qp=-90, quantization_base=state.quantization_base())
    enc = Encoder()
    enc.encode_bypass(10, 10)
    enc.encode_tensor(stored, TensorCoding())
    assert ndu.payload == enc.finish()
    with pytest.raises(ConfigError, match="qp -700 is -600 away from the base QP -100"):
        build_ndu(stored, ["w"], qp=-700, quantization_base=state.quantization_base())


def test_layer_parameter_set_inside_an_aggregate_stays_in_force(rng):
    parts, state = start()
    a = stored_for(rng, (2, 3), dq=False, scan_order=0, shift=0)
    b = stored_for(rng, (4,), dq=False, scan_order=0, shift=0)
    inner = [write_unit(lps(3, -60), state), _tensor_ndu(state, "a", a, -57)]
    parts.append(aggregate_unit(inner))
    parts.append(_tensor_ndu(state, "b", b, -64))
    tensors = decode_bitstream(b"".join(parts))
    assert [(t.name, t.qp) for t in tensors] == [("a", -57), ("b", -64)]
    assert tensors[1].values.tobytes() == expected_values(b, -64, 3).tobytes()


def test_layer_parameter_set_before_the_model_parameter_set_is_refused():
    units = unit_bytes(vector("v21_tiny_float_dq"))
    stream = units[0] + write_unit(lps(3, 0), ParseState(general_profile_idc=1)) + b"".join(units[1:])
    with pytest.raises(
        BitstreamError, match=r"^layer parameter set before any model parameter set \(unit 1, byte offset 4\)$"
    ):
        decode_bitstream(stream)


# ---------------------------------------------------------------------------
# tensors split over NDUs (partial_data_counter)


def _split_stream(rng, shape, sizes, *, shift=0, qps=None, dq=True, scan_order=1):
    parts, state = start()
    whole = []
    for i, part in enumerate(split_tensor(np.zeros(shape, np.int32), sizes, first_tensor_dimension_shift=shift)):
        stored = stored_for(rng, part.values.shape, dq=dq, scan_order=scan_order, shift=shift)
        whole.append(stored)
        qp = qps[i] if qps else -38
        ndu = build_ndu(
            stored,
            ["w"],
            qp=qp,
            quantization_base=state.quantization_base(),
            dq_flag=dq,
            scan_order=scan_order,
            first_tensor_dimension_shift=shift,
            partial_data_counter=part.partial_data_counter,
        )
        parts.append(write_unit(ndu, state))
    axis = shift if len(shape) > 1 else 0
    return parts, np.concatenate(whole, axis=axis)


@pytest.mark.parametrize(
    "shape,sizes,shift", [((20, 9), 3, 0), ((4, 3, 30), [7, 16, 7], 2), ((31,), 4, 0), ((5, 17, 2), [17], 1)]
)
def test_split_tensor_is_reassembled(rng, shape, sizes, shift):
    parts, stored = _split_stream(rng, shape, sizes, shift=shift)
    stream = b"".join(parts)
    (t,) = decode_bitstream(stream)
    assert t.name == "w" and t.values.shape == shape and t.qp == -38
    assert np.array_equal(t.stored, stored)
    assert t.values.tobytes() == expected_values(stored, -38, 2).tobytes()
    assert t.carried_by == tuple((i, None) for i in range(3, len(parts)))
    counters = [u.partial_data_counter for u in read_units(stream)[3:]]
    assert counters == list(range(len(parts) - 3, 0, -1))
    assert write_units(read_units(stream)) == stream


def test_parts_may_have_their_own_qp(rng):
    parts, stored = _split_stream(rng, (12, 5), [4, 4, 4], qps=[-30, -38, -46], dq=False)
    (t,) = decode_bitstream(b"".join(parts))
    assert t.qp is None  # no single QP
    expected = np.concatenate(
        [expected_values(stored[4 * i : 4 * i + 4], qp, 2) for i, qp in enumerate([-30, -38, -46])]
    )
    assert t.values.tobytes() == expected.tobytes()


def _block_part(state, weight, bias, *, shift=0, counter=None, qp=(-38, -75)):
    """NNR_PT_BLOCK of a weight and its bias (coding order: bias, weight)."""
    density, base = state.quantization_base()
    enc = Encoder()
    enc.encode_bypass(qp[1] - base, 6 + density)
    enc.encode_tensor(bias, TensorCoding())
    enc.encode_bypass(qp[0] - base, 6 + density)
    enc.encode_tensor(coded_view(weight, shift), TensorCoding())
    header = NduHeader(
        payload_type=PayloadType.NNR_PT_BLOCK,
        multiple_topology_elements_present_flag=True,
        element_ids=["conv.weight", "conv.bias"],
        tensor_dimensions_flag=True,
        cabac_unary_length_flag=True,
        compressed_parameter_types=ParameterTypes.NNR_CPT_BI,
        tensor_dimensions=list(weight.shape),
        first_tensor_dimension_shift=shift,
    )
    return write_unit(
        CompressedDataUnit(UnitType.NNR_NDU, header=header, payload=enc.finish(), partial_data_counter=counter), state
    )


def test_block_split_by_output_channels_with_a_shifted_kernel(rng):
    """A TensorFlow-layout kernel [kh, kw, in, out] coded with out as rows; its bias has `out` entries."""
    parts, state = start()
    weights, biases = [], []
    for counter, out in ((2, 6), (1, 4)):
        w = stored_for(rng, (3, 3, 2, out), dq=False, scan_order=0, shift=3)
        b = stored_for(rng, (out,), dq=False, scan_order=0, shift=0)
        weights.append(w)
        biases.append(b)
        parts.append(_block_part(state, w, b, shift=3, counter=counter))
    tensors = decode_bitstream(b"".join(parts))
    assert [(t.name, t.values.shape) for t in tensors] == [("conv.bias", (10,)), ("conv.weight", (3, 3, 2, 10))]
    assert np.array_equal(tensors[0].stored, np.concatenate(biases))
    assert np.array_equal(tensors[1].stored, np.concatenate(weights, axis=3))
    assert tensors[1].values.tobytes() == expected_values(np.concatenate(weights, axis=3), -38, 2).tobytes()


def _fails(stream: bytes, pattern: str) -> None:
    with pytest.raises(BitstreamError, match=pattern):
        decode_bitstream(stream)


def test_inconsistent_parts_are_refused(rng):
    parts, _ = _split_stream(rng, (12, 5), 3, dq=False, scan_order=0)
    head, body = parts[:3], parts[3:]
    offsets = [u.offset for u in read_units(b"".join(parts))]
    # a missing part: 3, 1
    _fails(
        b"".join(head + [body[0], body[2]]),
        rf"^tensor 'w': part 2 is missing \(partial_data_counter 1 where 2 was due\) \(unit 4, byte offset {offsets[4]}\)$",
    )
    four, _ = _split_stream(rng, (12, 5), 4, dq=False, scan_order=0)
    _fails(
        b"".join(four[:4] + four[6:]),
        r"^tensor 'w': parts 3..2 are missing \(partial_data_counter 1 where 3 was due\) \(unit 4",
    )
    # a repeated (overlapping) part: 3, 2, 2
    _fails(
        b"".join(head + [body[0], body[1], body[1]]),
        rf"tensor 'w': partial_data_counter 2 repeats a part already received \(overlapping parts; part 1 was due\) \(unit 5, byte offset {offsets[5]}\)",
    )
    # the bitstream ends early
    _fails(
        b"".join(head + body[:2]),
        rf"tensor 'w' is incomplete: the bitstream ends before the part with partial_data_counter 1 \(unit 5, byte offset {sum(map(len, head + body[:2]))}\)",
    )
    # another tensor in between
    other = write_unit(build_ndu(np.ones((2, 2), np.int32), ["v"]), start()[1])
    _fails(
        b"".join(head + [body[0], other, body[1], body[2]]),
        rf"^tensor 'w' is incomplete: the part with partial_data_counter 2 is missing before an NDU of 'v' \(unit 4, byte offset {offsets[4]}\)$",
    )
    whole = write_unit(build_ndu(np.ones((2, 2), np.int32), ["w"]), start()[1])
    _fails(
        b"".join(head + [body[0], whole]),
        rf"^tensor 'w' is incomplete: an NDU without partial_data_counter comes where part 2 was due \(unit 4, byte offset {offsets[4]}\)$",
    )
    # a new model parameter set in between
    _fails(
        b"".join(head + [body[0], head[1], body[1], body[2]]),
        r"tensor 'w' is incomplete: the part with partial_data_counter 2 is missing \(unit 4",
    )


def test_parts_of_different_shape_or_type_are_refused(rng):
    parts, state = start()
    parts.append(write_unit(build_ndu(np.zeros((4, 5), np.int32), ["w"], qp=-38, partial_data_counter=2), state))
    wrong_width = write_unit(build_ndu(np.zeros((4, 6), np.int32), ["w"], qp=-38, partial_data_counter=1), state)
    _fails(
        b"".join(parts + [wrong_width]),
        r"part 1 of 'w' has shape \[4, 6\] \(float32\), which does not join the first part's \[4, 5\] \(float32\) along dimension 0 \(unit 4",
    )
    wrong_rank = write_unit(build_ndu(np.zeros((4, 5, 1), np.int32), ["w"], qp=-38, partial_data_counter=1), state)
    _fails(b"".join(parts + [wrong_rank]), r"part 1 of 'w' has shape \[4, 5, 1\]")
    as_int = write_unit(build_ndu(np.zeros((4, 5), np.int32), ["w"], partial_data_counter=1), state)
    _fails(b"".join(parts + [as_int]), r"tensor 'w': part 1 has payload_type 0, the first part 1 \(unit 4")
    shifted = write_unit(
        build_ndu(np.zeros((4, 5), np.int32), ["w"], qp=-38, first_tensor_dimension_shift=1, partial_data_counter=1),
        state,
    )
    _fails(b"".join(parts + [shifted]), r"tensor 'w': part 1 has first_tensor_dimension_shift 1, the first part 0")


def test_partial_data_counter_only_on_compressed_data_units():
    units = unit_bytes(vector("v21_tiny_float_dq"))
    tpl = bytes.fromhex("00070f05000000")  # the topology unit with partial_data_counter 5
    _fails(
        units[0] + units[1] + tpl + units[3],
        r"^partial_data_counter 5 on a unit of type 3: only compressed data units can be split \(unit 2, byte offset 14\)$",
    )
    zero = bytes.fromhex("00070f00000000")  # counter present and 0: a complete unit
    assert names_values(decode_bitstream(units[0] + units[1] + zero + units[3])) == names_values(
        decode_bitstream(b"".join(units))
    )


def test_split_parts_use_the_co_located_parent_for_temporal_contexts(rng):
    """Incremental update: a split tensor with TCA takes each part's context base from
    the rows of the parent the part covers."""
    shape, sizes = (14, 6), [5, 9]
    parts, state = start(parent_signalling=True)
    base = stored_for(rng, shape, dq=False, scan_order=0, shift=0)
    ndu = build_ndu(base, ["w"], qp=-38)
    ndu.header.parent_node_id_present_flag = True
    ndu.header.parent_node_id_type = 0
    ndu.header.parent_device_id = 0
    ndu.payload = _payload(base, -38, TensorCoding(parent_node_id_present_flag=True))
    base_stream = b"".join(parts + [write_unit(ndu, state)])

    update = stored_for(rng, shape, dq=False, scan_order=0, shift=0)
    update[base == 0] = 0  # correlated with the parent, as TCA assumes
    step_parts = parts[:]
    for part in split_tensor(update, sizes):
        rows = slice(part.start, part.stop)
        ndu = build_ndu(part.values, ["w"], qp=-38, partial_data_counter=part.partial_data_counter)
        ndu.header.parent_node_id_present_flag = True
        ndu.header.parent_node_id_type = 0
        ndu.header.temporal_context_modeling_flag = True
        ndu.header.parent_device_id = 0
        ndu.payload = _payload(part.values, -38, TensorCoding(parent_node_id_present_flag=True), base=base[rows])
        step_parts.append(write_unit(ndu, state))
    update_stream = b"".join(step_parts)

    decoder = DecoderState()
    (t0,) = decode_bitstream(base_stream, decoder)
    (t1,) = decode_bitstream(update_stream, decoder)
    assert np.array_equal(t0.stored, base) and np.array_equal(t1.stored, update)
    assert np.array_equal(decoder.base["w"], update)
    # decoded against another parent, the same bytes give other integers (or fail)
    other = DecoderState(base={"w": np.roll(base, 1, axis=0)}, history={"w": np.roll(base, 1, axis=0) != 0})
    try:
        (t2,) = decode_bitstream(update_stream, other)
        assert not np.array_equal(t2.stored, update)
    except BitstreamError:
        pass
    with pytest.raises(BitstreamError, match="tensor 'w' uses temporal context adaptation but no parent of its size"):
        decode_bitstream(update_stream, DecoderState(base={"w": base[:10]}))


def _payload(stored, qp, coding, *, base=None):
    enc = Encoder()
    enc.encode_bypass(qp, 8)
    enc.encode_tensor(stored, coding, base=base)
    return enc.finish()


def test_split_helpers():
    t = np.arange(2 * 3 * 10).reshape(2, 3, 10)
    parts = split_tensor(t, 3, first_tensor_dimension_shift=2)
    assert [(p.partial_data_counter, p.start, p.stop, p.values.shape) for p in parts] == [
        (3, 0, 4, (2, 3, 4)),
        (2, 4, 7, (2, 3, 3)),
        (1, 7, 10, (2, 3, 3)),
    ]
    assert np.array_equal(np.concatenate([p.values for p in parts], axis=2), t)
    header = build_ndu(t, ["t"], qp=-38).header
    assert part_header(header, parts[1]).tensor_dimensions == [2, 3, 3]
    with pytest.raises(ConfigError, match="cannot cut 10 rows into 11 parts"):
        split_tensor(t, 11, first_tensor_dimension_shift=2)
    with pytest.raises(ConfigError, match=r"part sizes \[5, 4\] do not cut 10 rows"):
        split_tensor(t, [5, 4], first_tensor_dimension_shift=2)


# ---------------------------------------------------------------------------
# several topology elements in one NDU (topology_tensor_dimension_mapping)


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("integer", [False, True])
def test_multi_element_ndu_is_split_into_its_elements(rng, axis, integer):
    shapes = {"a": [3, 4, 5], "b": [3, 4, 5], "c": [3, 4, 5]}
    for i, name in enumerate(shapes):
        shapes[name][axis] += i  # different extents along the axis
    elements = {n: stored_for(rng, tuple(s), dq=False, scan_order=0, shift=0) for n, s in shapes.items()}
    tensor, ids, mapping = concatenate_elements(elements, axis)
    assert mapping.concatenation_axis_index == axis
    extents = [s[axis] for s in shapes.values()]
    assert mapping.split_index == [extents[0], extents[0] + extents[1]]
    parts, state = start()
    parts.append(
        write_unit(
            build_ndu(
                tensor,
                ids,
                qp=None if integer else -40,
                quantization_base=state.quantization_base(),
                tensor_dimension_mapping=mapping,
                scan_order=1,
            ),
            state,
        )
    )
    stream = b"".join(parts)
    tensors = decode_bitstream(stream)
    assert [t.name for t in tensors] == ["a", "b", "c"]
    for t in tensors:
        assert np.array_equal(t.stored, elements[t.name])
        expected = elements[t.name] if integer else expected_values(elements[t.name], -40, 2)
        assert t.values.tobytes() == expected.astype(t.values.dtype).tobytes() and t.values.dtype == (
            np.int32 if integer else np.float32
        )
    assert write_units(read_units(stream)) == stream


def test_raw_float_multi_element_ndu_with_shift():
    a = np.arange(12, dtype=np.float32).reshape(2, 6) / 7
    b = -np.arange(4, dtype=np.float32).reshape(2, 2)
    tensor, ids, mapping = concatenate_elements({"a": a, "b": b}, axis=1)
    header = NduHeader(
        payload_type=PayloadType.NNR_PT_RAW_FLOAT,
        multiple_topology_elements_present_flag=True,
        element_ids=ids,
        tensor_dimensions_flag=True,
        cabac_unary_length_flag=True,
        tensor_dimensions=[2, 8],
        tensor_dimension_mapping=mapping,
        first_tensor_dimension_shift=1,
    )
    parts, state = start()
    # the payload holds the coded view: columns first
    parts.append(
        write_unit(
            CompressedDataUnit(UnitType.NNR_NDU, header=header, payload=coded_view(tensor, 1).astype("<f4").tobytes()),
            state,
        )
    )
    tensors = decode_bitstream(b"".join(parts))
    assert [(t.name, t.values.tobytes()) for t in tensors] == [("a", a.tobytes()), ("b", b.tobytes())]


def test_bad_dimension_mappings_are_refused():
    tensor, ids, mapping = concatenate_elements({"a": np.zeros((2, 3)), "b": np.zeros((2, 4))}, axis=1)
    parts, state = start()
    for m, message in (
        (
            dataclasses.replace(mapping, split_index=[7]),
            r"split_index \[7\] does not cut dimension 1 of size 7 into non-empty parts",
        ),
        (dataclasses.replace(mapping, split_index=[0]), r"split_index \[0\] does not cut .*"),
        (
            dataclasses.replace(mapping, concatenation_axis_index=2),
            "concatenation_axis_index 2 names no dimension of a 2-D tensor",
        ),
    ):
        ndu = build_ndu(tensor.astype(np.int32), ids, tensor_dimension_mapping=m)
        stream = b"".join(parts) + write_unit(ndu, state)
        with pytest.raises(BitstreamError, match=message + r" \(unit 3, byte offset \d+\)") as e:
            read_units(stream)
        assert 18 + 3 < e.value.byte_offset < len(stream) - len(ndu.payload)  # in the header
    with pytest.raises(ConfigError, match="does not join"):
        concatenate_elements({"a": np.zeros((2, 3)), "b": np.zeros((3, 4))}, axis=1)
    ndu = build_ndu(tensor.astype(np.int32), ids, tensor_dimension_mapping=mapping)
    ndu.header.tensor_dimension_mapping = None
    with pytest.raises(ValueError, match="needs a tensor dimension mapping with 1 split indices"):
        write_unit(ndu, state)


def test_split_multi_element_ndus_are_refused():
    tensor, ids, mapping = concatenate_elements(
        {"a": np.zeros((2, 3), np.int32), "b": np.zeros((2, 4), np.int32)}, axis=1
    )
    parts, state = start()
    parts.append(write_unit(build_ndu(tensor, ids, tensor_dimension_mapping=mapping, partial_data_counter=2), state))
    _fails(
        b"".join(parts),
        r"^an NDU with a tensor dimension mapping cannot be split into parts \(unit 3, tensor 'a', byte offset 18\)$",
    )


# ---------------------------------------------------------------------------
# first_tensor_dimension_shift


@pytest.mark.parametrize("shift", [0, 1, 2, 3])
def test_tensor_coded_with_a_shifted_first_dimension(rng, shift):
    shape = (3, 17, 2, 9)
    stored = stored_for(rng, shape, dq=True, scan_order=1, shift=shift, row_skip=True)
    parts, state = start()
    ndu = build_ndu(
        stored,
        ["w"],
        qp=-38,
        quantization_base=state.quantization_base(),
        dq_flag=True,
        scan_order=1,
        first_tensor_dimension_shift=shift,
        row_skip_flag=True,
    )
    # the payload is the tensor with dimension `shift` moved to the front, coded as usual
    coded = np.moveaxis(stored, shift, 0)
    enc = Encoder()
    enc.encode_bypass(-38, 8)
    enc.encode_tensor(np.ascontiguousarray(coded), TensorCoding(dq_flag=True, scan_order=1, row_skip_flag=True))
    assert ndu.payload == enc.finish()
    assert len(ndu.header.entry_points) == block_rows_minus1(shape[shift], 1)
    parts.append(write_unit(ndu, state))
    stream = b"".join(parts)
    assert read_units(stream)[3].header.first_tensor_dimension_shift == shift
    (t,) = decode_bitstream(stream)
    assert t.values.shape == shape and t.values.flags.c_contiguous
    assert np.array_equal(t.stored, stored)
    assert t.values.tobytes() == expected_values(stored, -38, 2).tobytes()
    assert write_units(read_units(stream)) == stream


def test_shift_syntax():
    """The header field written by hand (profile 1, INT tensor 'w' of shape [2, 4], as in the
    notes' annotated example) but with first_tensor_dimension_shift = 2: no such dimension."""

    def ndu(shift_bits: str) -> bytes:
        fields = (
            "1" + "10" + "100000" + "10000" + "0" + "1" + "1" + "0000" + "0100" + "10000010" + "10000100" + "00001010"
        )
        fields += shift_bits + "0000" + "1"  # first_tensor_dimension_shift ue(1), scan_order 0, byte_alignment()
        fields += "0" * (-len(fields) % 8)
        body = bytes([5 << 2 | 2, 0x01]) + b"w\x00" + to_bytes(fields) + b"\x00"
        return (len(body) + 2).to_bytes(2, "big") + body

    head = b"".join(unit_bytes(vector("v20_tiny_int"))[:3])
    with pytest.raises(
        BitstreamError,
        match=r"^first_tensor_dimension_shift 2 names no dimension of a 2-D tensor \(unit 3, byte offset 30\)$",
    ):
        read_units(head + ndu("0100"))
    assert read_units(head + ndu("11"))[3].header.first_tensor_dimension_shift == 1
    parts, state = start()
    shifted = build_ndu(np.zeros((2, 3), np.int32), ["w"], first_tensor_dimension_shift=1)
    with pytest.raises(ValueError, match="first_tensor_dimension_shift needs general_profile_idc 1"):
        write_unit(shifted, ParseState(general_profile_idc=0, mps=state.mps))
    with pytest.raises(ConfigError, match="needs a tensor of two or more dimensions"):
        build_ndu(np.zeros(4, np.int32), ["v"], first_tensor_dimension_shift=1)
    assert np.array_equal(
        decoded_view(coded_view(np.arange(24).reshape(2, 3, 4), 2), 2), np.arange(24).reshape(2, 3, 4)
    )


# ---------------------------------------------------------------------------
# all together


def test_structured_stream_decodes_exactly(rng):
    stream, expected = structured_stream(rng)
    tensors = decode_bitstream(stream)
    assert [t.name for t in tensors] == list(expected)
    for t in tensors:
        stored, qp, density = expected[t.name]
        assert np.array_equal(t.stored, stored), t.name
        assert t.qp == qp
        want = stored if qp is None else expected_values(stored, qp, density)
        assert t.values.tobytes() == want.tobytes(), t.name
    assert write_units(read_units(stream)) == stream


def test_block_scan_is_not_signalled_for_a_single_row_or_column():
    """A [9, 1] tensor scans like row-major order and has no entry points: scan_order 0 is written."""
    parts, state = start()
    for shape, shift in (((9, 1), 0), ((1, 9), 0), ((1, 12, 1), 1)):
        stored = np.arange(int(np.prod(shape)), dtype=np.int32).reshape(shape) - 4
        ndu = build_ndu(stored, ["w"], qp=-38, scan_order=1, first_tensor_dimension_shift=shift)
        assert (ndu.header.scan_order, ndu.header.entry_points) == (0, [])
        stream = b"".join(parts) + write_unit(ndu, dataclasses.replace(state))
        (t,) = decode_bitstream(stream)
        assert np.array_equal(t.stored, stored)
    wide = build_ndu(np.ones((2, 40), np.int32), ["w"], qp=-38, scan_order=1, first_tensor_dimension_shift=1)
    assert wide.header.scan_order == 1 and len(wide.header.entry_points) == block_rows_minus1(40, 1) == 4


@pytest.mark.parametrize("length", [0, 1, 4095, 4096, 4097, 10_000])
def test_strings_of_any_length_are_read_up_to_their_nul(length):
    """A string field ends at its NUL wherever that falls (the reader searches
    a page at a time, not the whole rest of the unit); without one before the
    unit's end it is refused."""
    text = "n" * length
    writer = BitWriter()
    writer.st(text)
    writer.st("next")
    data = writer.getvalue() + bytes(20_000)
    reader = BitReader(data, unit_index=3)
    assert reader.st("name") == text and reader.st("name") == "next"
    with pytest.raises(BitstreamError, match="name has no terminating NUL before the end of the unit"):
        BitReader(data[:length], unit_index=3).st("name")


@pytest.mark.parametrize("k", [0, 1, 4, 15])
def test_ue_lengths_are_what_the_writer_writes(k):
    """ue_lengths (the encoder's count for choosing codebook_egk) gives, value
    by value, the number of bits BitWriter.ue writes, around every prefix step."""
    values = np.concatenate([np.arange(3000), (1 << np.arange(k, 40)) - 1, 1 << np.arange(k, 40), [2**40 - 1]])
    lengths = []
    for v in values.tolist():
        writer = BitWriter()
        writer.ue(k, v)
        lengths.append(writer.bit_length)
    np.testing.assert_array_equal(ue_lengths(values, k), lengths)


@pytest.mark.parametrize("k", [0, 2, 7, 15])
def test_exp_golomb_codes_read_back_at_every_bit_offset(k):
    """ue(k) and ie(k) codes, short ones (read from a 72-bit window) and long
    ones (prefixes of up to 40 zeros, read bit by bit), at every bit offset,
    the last one ending anywhere up to the unit's last bit; a code cut by the
    unit's end is refused."""
    rng = np.random.default_rng(k)
    values = [0, 1, 2, 3, (1 << k) - 1, 1 << k, 2**20, 2**32 - 1, 2**40, *rng.integers(0, 2**16, 40).tolist()]
    signed = [0, 1, -1, 2**30, -(2**30)]
    for lead in range(8):
        writer = BitWriter()
        writer.u(lead, 0)
        for v in values:
            writer.ue(k, v)
        for v in signed:
            writer.ie(k, v)
        writer.u(-writer.bit_length % 8, 0)  # 0 to 7 bits after the last code, by the lead
        data = writer.getvalue()
        reader = BitReader(data)
        reader.u(lead)
        assert [reader.ue(k) for _ in values] == values and [reader.ie(k) for _ in signed] == signed
        before = BitWriter()  # where the seventh code (2**20) starts and ends
        before.u(lead, 0)
        for v in values[:6]:
            before.ue(k, v)
        start = before.bit_length
        before.ue(k, values[6])
        cut = BitReader(data[: (before.bit_length - 1) // 8])  # the seventh code cut short
        cut.u(lead)
        assert [cut.ue(k) for _ in values[:6]] == values[:6] and cut.bit_position == start
        with pytest.raises(BitstreamError, match="delta needs"):
            cut.ue(k, "delta")


def test_codebook_values_beyond_64_bits_are_refused():
    """A parsed codebook is held as 64-bit integers: one whose gaps add up
    beyond them (each gap within the longest Exp-Golomb code) is a
    BitstreamError naming where, not an OverflowError."""
    writer = BitWriter()
    write_integer_codebook(writer, IntegerCodebook(15, [i * 2**55 for i in range(300)], 0))
    writer.u(-writer.bit_length % 8, 0)
    with pytest.raises(BitstreamError, match="codebook values beyond 64-bit integers") as e:
        _read_codebook(BitReader(writer.getvalue(), unit_index=2))
    assert e.value.unit_index == 2 and e.value.byte_offset is not None
    fits = IntegerCodebook(15, [i * 2**55 for i in range(200)], 0)
    writer = BitWriter()
    write_integer_codebook(writer, fits)
    writer.u(-writer.bit_length % 8, 0)
    assert list(_read_codebook(BitReader(writer.getvalue())).values) == fits.values
