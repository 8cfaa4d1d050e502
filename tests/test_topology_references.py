"""Topology-indexed references: an NNR_TPL unit of storage format
NNR_TPL_REFLIST carries ``topology_elements_ids_list(0)`` (a count, a
byte_alignment(), then NUL-terminated names, as NNCodec parses it; notes 01
§6, §7.2), and under ``mps_topology_indexed_reference_flag`` an NDU names
its tensors by ``topology_elem_id_index`` (``ue(7)``, 0-based) into that list.
Streams are built here unit by unit; the bytes, the resolved names and the
errors are pinned (docs/decisions.md, row 28 of the UNVERIFIED table)."""

from __future__ import annotations

import numpy as np
import pytest

import nnc_core
import streams
from nnc_core import BitstreamError
from nnc_core.bitstream.layout import build_ndu
from nnc_core.bitstream.units import (
    CompressedDataUnit,
    NduHeader,
    ParameterTypes,
    ParseState,
    PayloadType,
    StartUnit,
    TopologyStorageFormat,
    TopologyUnit,
    UnitType,
    read_units,
    write_unit,
    write_units,
)
from nnc_core.decoding import decode_bitstream
from nnc_core.deepcabac import Encoder, TensorCoding
from nnc_core.model import decode_model, encode_model
from streams import expected_values, stored_for

NAMES = ["fc.weight", "fc.bias", "conv.weight"]


def reflist(names: list[str]) -> TopologyUnit:
    return TopologyUnit(
        UnitType.NNR_TPL, topology_storage_format=TopologyStorageFormat.NNR_TPL_REFLIST, element_ids=list(names)
    )


def start(*, indexed: bool = True, topology: TopologyUnit | None = None) -> tuple[list[bytes], ParseState]:
    """STR, an MPS with ``mps_topology_indexed_reference_flag`` = ``indexed`` and a
    topology unit (the REFLIST of NAMES unless given)."""
    return streams.start(indexed=indexed, topology=topology if topology is not None else reflist(NAMES))


def block_ndu(state: ParseState, weight: np.ndarray, bias: np.ndarray, **header: object) -> bytes:
    """NNR_PT_BLOCK of fc.weight and fc.bias (coding order: bias, weight), QPs -75 and -38."""
    density, base = state.quantization_base()
    enc = Encoder()
    enc.encode_bypass(-75 - base, 6 + density)
    enc.encode_tensor(bias, TensorCoding())
    enc.encode_bypass(-38 - base, 6 + density)
    enc.encode_tensor(weight, TensorCoding())
    h = NduHeader(
        payload_type=PayloadType.NNR_PT_BLOCK,
        multiple_topology_elements_present_flag=True,
        element_ids=["fc.weight", "fc.bias"],
        tensor_dimensions_flag=True,
        cabac_unary_length_flag=True,
        compressed_parameter_types=ParameterTypes.NNR_CPT_BI,
        tensor_dimensions=list(weight.shape),
        **header,  # type: ignore[arg-type]
    )
    return write_unit(CompressedDataUnit(UnitType.NNR_NDU, header=h, payload=enc.finish()), state)


def indexed_stream(rng: np.random.Generator) -> tuple[bytes, dict[str, np.ndarray]]:
    parts, state = start()
    stored = {
        "conv.weight": stored_for(rng, (4, 6), dq=False, scan_order=0, shift=0),
        "fc.weight": stored_for(rng, (3, 5), dq=False, scan_order=0, shift=0),
        "fc.bias": stored_for(rng, (3,), dq=False, scan_order=0, shift=0),
    }
    ndu = build_ndu(stored["conv.weight"], ["conv.weight"], qp=-38, quantization_base=state.quantization_base())
    parts.append(write_unit(ndu, state))  # the writer codes the name's index in the REFLIST: 2
    parts.append(block_ndu(state, stored["fc.weight"], stored["fc.bias"]))  # indices 0, 1
    return b"".join(parts), stored


def test_reflist_unit_carries_names_byte_by_byte():
    """The REFLIST payload in NNCodec's form: count_topology_elements_minus2 ue(7),
    byte_alignment(), then the names; read back field for field."""
    unit = write_unit(reflist(NAMES), ParseState(general_profile_idc=1))
    body = bytes([0x0E, 0x06, 0x00, 0b1_0000001, 0b1_0000000]) + b"fc.weight\0fc.bias\0conv.weight\0"
    assert unit == (len(body) + 2).to_bytes(2, "big") + body
    parts, _ = start()
    stream = b"".join(parts)
    tpl = read_units(stream)[2]
    assert isinstance(tpl, TopologyUnit)
    assert (tpl.topology_storage_format, tpl.element_ids) == (TopologyStorageFormat.NNR_TPL_REFLIST, NAMES)
    assert write_units(read_units(stream)) == stream


def test_reflist_is_names_whatever_the_indexed_flag_says():
    parts, _ = start(indexed=False)
    assert read_units(b"".join(parts))[2].element_ids == NAMES  # type: ignore[attr-defined]


def test_indexed_references_decode_under_the_reflist_names(rng):
    stream, stored = indexed_stream(rng)
    units = read_units(stream)
    single, block = units[3], units[4]
    assert isinstance(single, CompressedDataUnit) and isinstance(block, CompressedDataUnit)
    # topology_elem_id_index 2 right after the first header byte: ue(7) = 1 0000010
    assert stream[single.offset + 4] == 0b1_0000010
    # a block: count_topology_elements_minus2 0, indices 0 and 1 (ue(7) each), byte_alignment()
    assert stream[block.offset + 4 : block.offset + 8] == bytes([0b1_0000000, 0b1_0000000, 0b1_0000001, 0b1_0000000])
    assert (single.header.element_id_indices, single.header.element_ids) == ([2], ["conv.weight"])
    assert (block.header.element_id_indices, block.header.element_ids) == ([0, 1], ["fc.weight", "fc.bias"])
    assert write_units(units) == stream

    tensors = decode_bitstream(stream)
    assert [t.name for t in tensors] == ["conv.weight", "fc.bias", "fc.weight"]
    qps = {"conv.weight": -38, "fc.weight": -38, "fc.bias": -75}
    for t in tensors:
        assert np.array_equal(t.stored, stored[t.name])
        assert t.values.tobytes() == expected_values(stored[t.name], qps[t.name], 2).tobytes()
    decoded = nnc_core.decode(stream)
    assert sorted(decoded) == sorted(NAMES)
    with nnc_core.open(stream) as reader:
        assert sorted(reader.keys()) == sorted(NAMES)
        assert np.array_equal(reader["conv.weight"], decoded["conv.weight"])
    # the REFLIST is no topology: a decoded model re-encodes (with names)
    model = decode_model(stream)
    assert model.topology is None
    assert nnc_core.decode(encode_model(model)).keys() == decoded.keys()


def test_signalled_indices_are_written_as_given(rng):
    """``element_id_indices`` are coded as they are; reading resolves them again."""
    parts, state = start(topology=reflist(["a", "b", "a"]))
    w = stored_for(rng, (2, 3), dq=False, scan_order=0, shift=0)
    ndu = build_ndu(w, ["a"], qp=-38, quantization_base=state.quantization_base())
    ndu.header.element_id_indices = [2]
    parts.append(write_unit(ndu, state))
    (t,) = decode_bitstream(b"".join(parts))
    assert t.name == "a" and read_units(b"".join(parts))[3].header.element_id_indices == [2]  # type: ignore[attr-defined]


def test_index_outside_the_reflist_is_named(rng):
    parts, state = start()
    w = stored_for(rng, (2, 3), dq=False, scan_order=0, shift=0)
    ndu = build_ndu(w, ["x"], qp=-38, quantization_base=state.quantization_base())
    ndu.header.element_id_indices = [3]
    offset = sum(len(p) for p in parts)
    parts.append(write_unit(ndu, state))
    with pytest.raises(BitstreamError, match="topology_elem_id_index 3 is outside the NNR_TPL_REFLIST of 3 names") as e:
        read_units(b"".join(parts))
    assert (e.value.unit_index, e.value.byte_offset) == (3, offset + 4)
    with pytest.raises(BitstreamError, match=r"unit 3, byte offset"):
        nnc_core.decode(b"".join(parts))


def test_block_index_outside_the_reflist_is_named(rng):
    parts, state = start()
    weight = stored_for(rng, (3, 5), dq=False, scan_order=0, shift=0)
    bias = stored_for(rng, (3,), dq=False, scan_order=0, shift=0)
    offset = sum(len(p) for p in parts)
    parts.append(block_ndu(state, weight, bias, element_id_indices=[0, 7]))
    with pytest.raises(BitstreamError, match="topology_elem_id_index 7 is outside") as e:
        read_units(b"".join(parts))
    assert (e.value.unit_index, e.value.byte_offset) == (3, offset + 4)


def test_indexed_reference_without_a_reflist_is_refused(rng):
    parts, state = start(topology=TopologyUnit(UnitType.NNR_TPL, topology_data=b"\x00"))
    w = stored_for(rng, (2, 3), dq=False, scan_order=0, shift=0)
    ndu = build_ndu(w, ["x"], qp=-38, quantization_base=state.quantization_base())
    with pytest.raises(ValueError, match="needs an NNR_TPL_REFLIST unit before it"):
        write_unit(ndu, state)
    ndu.header.element_id_indices = [0]
    offset = sum(len(p) for p in parts)
    parts.append(write_unit(ndu, state))
    with pytest.raises(BitstreamError, match="no NNR_TPL_REFLIST unit precedes it") as e:
        read_units(b"".join(parts))
    assert (e.value.unit_index, e.value.byte_offset) == (3, offset + 4)


def test_a_start_unit_ends_the_reflist(rng):
    parts, state = start()
    parts.append(write_unit(StartUnit(UnitType.NNR_STR, general_profile_idc=1), state))
    parts.append(write_unit(read_units(b"".join(parts[:2]))[1], state))  # the indexed MPS again, no REFLIST
    w = stored_for(rng, (2, 3), dq=False, scan_order=0, shift=0)
    ndu = build_ndu(w, ["x"], qp=-38, quantization_base=state.quantization_base())
    ndu.header.element_id_indices = [0]
    parts.append(write_unit(ndu, state))
    with pytest.raises(BitstreamError, match="no NNR_TPL_REFLIST unit precedes it"):
        read_units(b"".join(parts))


def test_writer_refuses_a_name_missing_from_the_reflist(rng):
    parts, state = start()
    w = stored_for(rng, (2, 3), dq=False, scan_order=0, shift=0)
    with pytest.raises(ValueError, match=r"\['other'\] are not in the NNR_TPL_REFLIST"):
        write_unit(build_ndu(w, ["other"], qp=-38, quantization_base=state.quantization_base()), state)
