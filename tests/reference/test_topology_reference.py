"""Topology-indexed references against NNCodec 2.1.3.  Its encoder cannot write
them (it asserts "topology indexed not implemented yet!") and its decoder stops
at an NNR_TPL_REFLIST unit (NotImplementedError), but its syntax coder writes
and reads both: an NNR_TPL_REFLIST payload is ``topology_elements_ids_list(0)``
(names) and an NDU under ``mps_topology_indexed_reference_flag`` carries
``topology_elem_id_index``.  A stream NNCodec compressed, rewritten by its
syntax coder with indexed references, is our writer's stream byte for byte and
decodes with ours to the tensors NNCodec decodes from the original."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

import nnc_core
import nncodec_syntax
from nnc_core.bitstream.units import (
    CompressedDataUnit,
    ModelParameterSet,
    ParseState,
    StartUnit,
    TopologyStorageFormat,
    TopologyUnit,
    UnitType,
    read_units,
    write_unit,
)
from nnc_core.testing import reference

pytestmark = pytest.mark.reference


def _params(rng):
    return {
        "enc.weight": rng.normal(0, 0.1, (24, 40)).astype(np.float32),
        "enc.bias": rng.normal(0, 0.1, (24,)).astype(np.float32),
        "dec.weight": rng.normal(0, 0.1, (40, 24)).astype(np.float32),
        "dec.bias": rng.normal(0, 0.1, (40,)).astype(np.float32),
    }


def _nncodec_indexed(stream: bytes, names: list[str]) -> bytes:
    """``stream`` with its units rewritten by NNCodec's syntax coder: the MPS with
    ``mps_topology_indexed_reference_flag`` 1, an NNR_TPL_REFLIST of ``names`` in
    place of the topology unit, every NDU's ``topology_elem_id`` replaced by its
    index in ``names``."""
    out, state = [], {}
    for unit in read_units(stream):
        raw = stream[unit.offset : unit.offset + unit.size]
        if unit.unit_type == UnitType.NNR_STR:
            fields, _ = nncodec_syntax.parse(raw, {})
            state["general_profile_idc"] = fields["general_profile_idc"]
            out.append(raw)
        elif unit.unit_type == UnitType.NNR_MPS:
            fields, _ = nncodec_syntax.parse(raw, state)
            fields["mps_topology_indexed_reference_flag"] = 1
            state["mps_parent_signalling_enabled_flag"] = fields.get("mps_parent_signalling_enabled_flag", 0)
            out.append(nncodec_syntax.write(fields))
        elif unit.unit_type == UnitType.NNR_TPL:
            fields = {
                "nnr_unit_type": UnitType.NNR_TPL,
                "independently_decodable_flag": 1,
                "partial_data_counter_present_flag": 0,
                "topology_storage_format": TopologyStorageFormat.NNR_TPL_REFLIST,
                "topology_compression_format": 0,
                "count_topology_elements_minus2": len(names) - 2,
                "topology_elem_id_list": names,
            }
            out.append(nncodec_syntax.write(fields))
        else:
            assert unit.unit_type == UnitType.NNR_NDU
            fields, header = nncodec_syntax.parse(raw, {**state, "mps_topology_indexed_reference_flag": 0})
            fields["mps_topology_indexed_reference_flag"] = 1
            fields["topology_elem_id_index"] = names.index(fields.pop("topology_elem_id"))
            out.append(nncodec_syntax.write(fields, raw[header:]))
    return b"".join(out)


def _ours_indexed(stream: bytes, names: list[str]) -> bytes:
    """The same rewrite by our unit writer: NDUs keep their names, the writer codes
    their indices in the REFLIST."""
    state, out = ParseState(), []
    for unit in read_units(stream):
        if isinstance(unit, ModelParameterSet):
            unit.mps_topology_indexed_reference_flag = True
        elif isinstance(unit, TopologyUnit):
            unit = TopologyUnit(
                UnitType.NNR_TPL, topology_storage_format=TopologyStorageFormat.NNR_TPL_REFLIST, element_ids=names
            )
        out.append(write_unit(unit, state))
    return b"".join(out)


def test_indexed_references_as_nncodecs_syntax_coder_writes_them(rng):
    params = _params(rng)
    nnc = reference.nncodec_compression()
    with contextlib.redirect_stdout(io.StringIO()):
        plain = bytes(nnc.compress(params, bitstream_path=None, return_bitstream=True, verbose=False))
        decoded_there = nnc.decompress(bytearray(plain))
    names = ["dec.bias", "enc.bias", "dec.weight", "enc.weight", "unused"]  # not the order of the NDUs
    theirs = _nncodec_indexed(plain, names)

    # NNCodec's syntax, our bytes
    assert _ours_indexed(plain, names) == theirs
    assert _ours_indexed(nnc_core.encode(params), names) == theirs

    # our reading: the REFLIST's names, each NDU's index resolved
    units = read_units(theirs)
    (tpl,) = [u for u in units if isinstance(u, TopologyUnit)]
    assert tpl.element_ids == names
    ndus = [u for u in units if isinstance(u, CompressedDataUnit)]
    assert [(u.header.element_id_indices, u.header.element_ids) for u in ndus] == [
        ([names.index(n)], [n]) for n in params
    ]
    decoded = nnc_core.decode(theirs)
    assert list(decoded) == list(decoded_there)
    for name, value in decoded_there.items():
        assert decoded[name].tobytes() == np.asarray(value).tobytes(), name

    # NNCodec's syntax reader on our units, field for field
    fields, _ = nncodec_syntax.parse(theirs[tpl.offset : tpl.offset + tpl.size], {})
    assert (fields["topology_storage_format"], fields["count_topology_elements_minus2"]) == (6, len(names) - 2)
    assert list(fields["topology_elem_id_list"]) == names
    profile = next(u for u in units if isinstance(u, StartUnit)).general_profile_idc
    for u in ndus:
        state = {
            "general_profile_idc": profile,
            "mps_topology_indexed_reference_flag": 1,
            "mps_parent_signalling_enabled_flag": 0,
        }
        fields, _ = nncodec_syntax.parse(theirs[u.offset : u.offset + u.size], state)
        assert fields["topology_elem_id_index"] == u.header.element_id_indices[0]

    # NNCodec's decoder does not go past the REFLIST unit
    with contextlib.redirect_stdout(io.StringIO()), pytest.raises(NotImplementedError, match="REFLIST"):
        nnc.decompress(bytearray(theirs))
