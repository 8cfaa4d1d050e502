"""Writing NNR units (clause 7.3): :func:`write_unit` serialises one unit
record (:mod:`nnc_core.bitstream.syntax`), :func:`aggregate_unit` wraps
serialised units in an NNR_AGG unit, :func:`write_units` joins a stream.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from nnc_core.bitstream.bits import BitWriter
from nnc_core.bitstream.syntax import (
    ICNN_NDU_ID,
    ICNN_NDU_PL_SHA256,
    ICNN_NDU_PL_SHA512,
    AggregateUnit,
    AggregateUnitType,
    CompressedDataUnit,
    IntegerCodebook,
    LayerParameterSet,
    ModelParameterSet,
    NduHeader,
    ParameterTypes,
    ParseState,
    PayloadType,
    QuantizationUnit,
    StartUnit,
    TopologyStorageFormat,
    TopologyUnit,
    Unit,
    UnitType,
    num_entry_points,
)

__all__ = ["write_unit", "write_units", "aggregate_unit", "write_integer_codebook"]


def _write_performance_maps(w: BitWriter, maps: dict[str, Any], kinds: tuple[str, ...]) -> None:
    for kind in kinds:
        if kind not in maps:
            continue
        entries = maps[kind]
        if kind == "decomposition":
            w.u(8, len(entries) + 1)
            for e in entries:
                for key in ("mse_threshold", "accuracy", "reduction_ratio"):
                    w.flt(e[key])
                w.u(16, len(e["class_accuracy"]))
                for a in e["class_accuracy"]:
                    w.flt(a)
            continue
        w.u(8, len(entries) + 1)
        for e in entries:
            if kind == "sparsification":
                for key in ("threshold", "non_zero_ratio", "accuracy"):
                    w.flt(e[key])
            elif kind == "pruning":
                for key in ("pruning_ratio", "accuracy"):
                    w.flt(e[key])
            else:  # unification
                w.ue(1, len(e["reshaped_tensor_dimensions"]) + 1)
                for d in e["reshaped_tensor_dimensions"]:
                    w.ue(7, d)
                w.byte_alignment()
                for key in ("super_block_dimensions", "block_dimensions"):
                    w.u(8, len(e[key]) + 1)
                    for d in e[key]:
                        w.u(8, d)
                for key in ("threshold", "accuracy"):
                    w.flt(e[key])
                # NNCodec's syntax: as many class accuracies as upm_class_bitmask
                # says (its value), upm_count_classes on its own (notes 01 §4.1)
                if len(e["class_accuracy"]) != e["class_bitmask"]:
                    raise ValueError(
                        f"a unification map entry with class_bitmask {e['class_bitmask']} carries that many "
                        f"class accuracies, not {len(e['class_accuracy'])}"
                    )
                w.u(8, e.get("count_classes", len(e["class_accuracy"])))
                w.ue(7, e["class_bitmask"])
                for a in e["class_accuracy"]:
                    w.flt(a)
                continue
            w.u(8, len(e["class_accuracy"]))
            w.ue(7, e["class_bitmask"])
            for a in e["class_accuracy"]:
                w.flt(a)


def _write_mps(w: BitWriter, u: ModelParameterSet, profile: int) -> None:
    for flag in (
        u.topology_carriage_flag,
        u.mps_sparsification_flag,
        u.mps_pruning_flag,
        u.mps_unification_flag,
        u.mps_decomposition_performance_map_flag,
    ):
        w.flag(flag)
    w.u(3, u.mps_quantization_method_flags)
    w.flag(u.mps_topology_indexed_reference_flag)
    if profile == 1:
        w.flag(u.base_model_id_present_flag)
        w.flag(u.validation_set_performance_present_flag)
        w.flag(u.metric_type_performance_map_valid_flag)
        w.flag(u.mps_parent_signalling_enabled_flag)
        w.flag(u.nnr_pre_flag if u.mps_parent_signalling_enabled_flag else False)
        w.u(2, 0)
        if u.base_model_id_present_flag:
            w.st(u.base_model_id or "")
        if u.validation_set_performance_present_flag or u.metric_type_performance_map_valid_flag:
            w.st(u.performance_metric_type or "")
    else:
        w.u(7, 0)
    if u.mps_quantization_method_flags & 3:
        w.u(3, u.mps_qp_density or 0)
        w.i(13, u.mps_quantization_parameter or 0)
    _write_performance_maps(w, u.performance_maps, ("sparsification", "pruning", "unification", "decomposition"))
    if profile == 1 and u.validation_set_performance_present_flag:
        w.flt(u.validation_set_performance or 0.0)
    w.byte_alignment()


def _write_lps(w: BitWriter, u: LayerParameterSet) -> None:
    w.flag(u.lps_self_contained_flag)
    w.u(7, 0)
    w.u(1, 0)
    w.flag(u.lps_sparsification_flag)
    w.flag(u.lps_pruning_flag)
    w.flag(u.lps_unification_flag)
    w.u(3, u.lps_quantization_method_flags)
    w.u(1, 0)
    if u.lps_quantization_method_flags & 3:
        w.u(3, u.lps_qp_density or 0)
        w.i(13, u.lps_quantization_parameter or 0)
    _write_performance_maps(w, u.performance_maps, ("sparsification", "pruning", "unification"))
    w.byte_alignment()


def _write_element_ids(w: BitWriter, ids: list[Any], indexed: bool) -> None:
    w.ue(7, len(ids) - 2)
    if not indexed:
        w.byte_alignment()
        for name in ids:
            w.st(str(name))
    else:
        for i in ids:
            w.ue(7, int(i))
        w.byte_alignment()


def _element_indices(h: NduHeader, state: ParseState) -> list[int]:
    """What an NDU under ``mps_topology_indexed_reference_flag`` codes: its
    ``element_id_indices``, or the indices of its names in the NNR_TPL_REFLIST."""
    if h.element_id_indices is not None:
        return h.element_id_indices
    names = state.element_id_list
    if names is None:
        raise ValueError("an NDU with indexed topology references needs an NNR_TPL_REFLIST unit before it")
    missing = [str(e) for e in h.element_ids if e not in names]
    if missing:
        raise ValueError(f"topology elements {missing} are not in the NNR_TPL_REFLIST")
    return [names.index(e) for e in h.element_ids]


def write_integer_codebook(w: BitWriter, cb: IntegerCodebook) -> None:
    size = len(cb.values)
    w.u(4, cb.egk)
    w.ue(2, size)
    w.ie(2, cb.zero_offset - (size >> 1))
    w.ie(7, cb.values[cb.zero_offset])
    for j in range(cb.zero_offset - 1, -1, -1):
        w.ue(cb.egk, cb.values[j + 1] - cb.values[j] - 1)
    for j in range(cb.zero_offset + 1, size):
        w.ue(cb.egk, cb.values[j] - cb.values[j - 1] - 1)


def _write_ndu_header(w: BitWriter, h: NduHeader, state: ParseState) -> None:
    profile = state.general_profile_idc
    mps = state.mps
    indexed = bool(mps and mps.mps_topology_indexed_reference_flag)
    w.u(5, int(h.payload_type))
    w.flag(h.multiple_topology_elements_present_flag)
    w.flag(h.decompressed_data_format_present_flag)
    w.flag(h.input_parameters_present_flag)
    ids = _element_indices(h, state) if indexed else h.element_ids
    if h.multiple_topology_elements_present_flag:
        _write_element_ids(w, ids, indexed)
    elif not indexed:
        w.st(str(ids[0]))
    else:
        w.ue(7, int(ids[0]))
    if profile == 1:
        w.flag(h.node_id_present_flag)
        if h.node_id_present_flag:
            w.ue(1, h.device_id)
            w.ue(5, h.parameter_id or 0)
            w.ue(4, h.put_node_depth or 0)
        if mps and mps.mps_parent_signalling_enabled_flag:
            w.flag(h.parent_node_id_present_flag)
            if h.parent_node_id_present_flag:
                w.u(2, h.parent_node_id_type or 0)
                w.flag(h.temporal_context_modeling_flag)
                if h.parent_node_id_type == ICNN_NDU_ID:
                    w.ue(1, h.parent_device_id or 0)
                    if not h.node_id_present_flag:
                        w.ue(5, h.parameter_id or 0)
                        w.ue(4, h.put_node_depth or 0)
                elif h.parent_node_id_type in (ICNN_NDU_PL_SHA256, ICNN_NDU_PL_SHA512):
                    for b in h.parent_node_payload_hash or b"":
                        w.u(8, b)
    pt = h.payload_type
    if pt in (PayloadType.NNR_PT_FLOAT, PayloadType.NNR_PT_BLOCK):
        w.flag(h.codebook_present_flag)
        if h.codebook_present_flag:
            write_integer_codebook(w, h.codebooks[0])
    if pt in (PayloadType.NNR_PT_INT, PayloadType.NNR_PT_FLOAT, PayloadType.NNR_PT_BLOCK):
        w.flag(h.dq_flag)
    if h.decompressed_data_format_present_flag:
        w.u(7, h.decompressed_data_format or 0)
    if h.input_parameters_present_flag:
        w.flag(h.tensor_dimensions_flag)
        w.flag(h.cabac_unary_length_flag)
        w.u(4, h.compressed_parameter_types)
        if h.compressed_parameter_types & ParameterTypes.NNR_CPT_DC:
            w.ue(3, h.decomposition_rank or 0)
            w.ue(3, h.g_number_of_rows or 0)
        if h.tensor_dimensions_flag:
            w.ue(1, len(h.tensor_dimensions))
            for d in h.tensor_dimensions:
                w.ue(7, d)
        if pt != PayloadType.NNR_PT_BLOCK and h.multiple_topology_elements_present_flag:
            m = h.tensor_dimension_mapping
            if m is None or len(m.split_index) != len(h.element_ids) - 1:
                raise ValueError(
                    f"an NDU of {len(h.element_ids)} topology elements needs a tensor dimension mapping with {len(h.element_ids) - 1} split indices"
                )
            w.u(8, m.concatenation_axis_index)
            for j in m.split_index:
                w.ue(7, j)
        if h.cabac_unary_length_flag:
            w.u(8, h.cabac_unary_length_minus1)
    if (
        pt == PayloadType.NNR_PT_BLOCK
        and h.compressed_parameter_types & ParameterTypes.NNR_CPT_DC
        and h.codebook_present_flag
    ):
        write_integer_codebook(w, h.codebooks[1])
    if len(h.tensor_dimensions) > 1:
        if not 0 <= h.first_tensor_dimension_shift < len(h.tensor_dimensions):
            raise ValueError(
                f"first_tensor_dimension_shift {h.first_tensor_dimension_shift} names no dimension of {h.tensor_dimensions}"
            )
        if profile == 1:
            w.ue(1, h.first_tensor_dimension_shift)
        elif h.first_tensor_dimension_shift:
            raise ValueError("first_tensor_dimension_shift needs general_profile_idc 1")
        w.u(4, h.scan_order)
        if h.scan_order > 0:
            if len(h.entry_points) != num_entry_points(h):
                raise ValueError(f"NDU needs {num_entry_points(h)} entry points, has {len(h.entry_points)}")
            previous = 0
            for j, ep in enumerate(h.entry_points):
                w.u(8, ep.value)
                if h.dq_flag:
                    w.u(3, ep.dq_state)
                if j == 0:
                    w.ue(11, ep.bit_offset_delta)
                else:
                    w.ie(7, ep.bit_offset_delta - previous)
                previous = ep.bit_offset_delta
    w.byte_alignment()


def write_unit(unit: Unit, state: ParseState) -> bytes:
    """Serialise one NNR unit; ``state`` carries the profile and parameter sets as for reading."""
    if isinstance(unit, AggregateUnit):
        return aggregate_unit(
            [write_unit(u, state) for u in unit.units],
            aggregate_unit_type=unit.aggregate_unit_type,
            entry_points_present_flag=unit.entry_points_present_flag,
            quant_bitdepth=unit.quant_bitdepth or None,
            ctu_scan_order=unit.ctu_scan_order or None,
            independently_decodable_flag=unit.independently_decodable_flag,
            partial_data_counter=unit.partial_data_counter,
            nnr_unit_size_flag=unit.nnr_unit_size_flag,
        )
    w = BitWriter()
    _write_unit_header(w, unit.unit_type, unit.independently_decodable_flag, unit.partial_data_counter)
    if isinstance(unit, StartUnit):
        w.u(8, unit.general_profile_idc)
        state.general_profile_idc = unit.general_profile_idc
        state.mps = None
        state.lps = None
        state.element_id_list = None
    elif state.general_profile_idc is None:
        raise ValueError("a start unit must come first")
    elif isinstance(unit, ModelParameterSet):
        _write_mps(w, unit, state.general_profile_idc)
        state.mps = unit
        state.lps = None
    elif isinstance(unit, LayerParameterSet):
        _write_lps(w, unit)
        state.lps = unit
    elif isinstance(unit, TopologyUnit):
        w.u(8, unit.topology_storage_format)
        w.u(8, unit.topology_compression_format)
        if unit.topology_storage_format == TopologyStorageFormat.NNR_TPL_REFLIST:
            _write_element_ids(w, unit.element_ids, False)  # names (notes 01 §6, NNCodec)
            state.element_id_list = list(unit.element_ids)
        else:
            w.bytes(unit.topology_data)
    elif isinstance(unit, QuantizationUnit):
        w.u(8, unit.quantization_storage_format)
        w.u(8, unit.quantization_compression_format)
        w.bytes(unit.quantization_data)
    elif isinstance(unit, CompressedDataUnit):
        _write_ndu_header(w, unit.header, state)
        w.bytes(unit.payload)
    else:
        raise ValueError(f"cannot write unit type {unit.unit_type}")
    return _with_size(w.getvalue(), unit.nnr_unit_size_flag)


def _write_unit_header(w: BitWriter, unit_type: int, independent: bool, partial_data_counter: int | None) -> None:
    w.u(6, unit_type)
    w.flag(independent)
    w.flag(partial_data_counter is not None)
    if partial_data_counter is not None:
        w.u(8, partial_data_counter)


def _size_field_bytes(body_len: int, long_form: bool | None) -> int:
    """2 (short form) or 4 (long form): the shortest that fits unless ``long_form`` says."""
    if long_form is None:
        long_form = body_len + 2 > 0x7FFF
    if not long_form:
        if body_len + 2 > 0x7FFF:
            raise ValueError(f"unit of {body_len + 2} bytes needs the long size field")
        return 2
    if body_len + 4 > 0x7FFFFFFF:
        raise ValueError(f"unit of {body_len + 4} bytes is larger than nnr_unit_size allows")
    return 4


def _with_size(body: bytes, long_form: bool | None) -> bytes:
    """Prefix ``nnr_unit_size()`` (clause 7.3.2): the whole unit's length, size field included."""
    n = _size_field_bytes(len(body), long_form)
    if n == 2:
        return (len(body) + 2).to_bytes(2, "big") + body
    return (0x80000000 | (len(body) + 4)).to_bytes(4, "big") + body


def _unit_type_of(unit: bytes) -> int:
    """``nnr_unit_type`` of one serialised unit, checking that it is exactly one unit."""
    if len(unit) < 3:
        raise ValueError(f"{len(unit)} bytes are not an NNR unit")
    long_form = unit[0] >> 7
    size = int.from_bytes(unit[: 2 + 2 * long_form], "big") & (0x7FFFFFFF if long_form else 0x7FFF)
    if size != len(unit) or len(unit) < 3 + 2 * long_form:
        raise ValueError(f"a unit of {len(unit)} bytes declares nnr_unit_size {size}")
    return unit[2 + 2 * long_form] >> 2


def aggregate_unit(
    units: Sequence[bytes],
    *,
    aggregate_unit_type: int = AggregateUnitType.NNR_AGG_GEN,
    entry_points_present_flag: bool = True,
    quant_bitdepth: Sequence[int] | None = None,
    ctu_scan_order: Sequence[int] | None = None,
    independently_decodable_flag: bool = True,
    partial_data_counter: int | None = None,
    nnr_unit_size_flag: bool | None = None,
) -> bytes:
    """Wrap serialised NNR units into one NNR_AGG unit (syntax UNVERIFIED, see docs/decisions.md).

    ``units`` are complete units as :func:`write_unit` returns them (at
    least 2, at most 65537; no NNR_STR and no other NNR_AGG).  They must have
    been written with the parse state of their position in the bitstream:
    an aggregate unit does not change how its units are parsed.  The entry
    points are computed here.  ``quant_bitdepth`` / ``ctu_scan_order`` give
    one informational value per unit (default 0).  ``partial_data_counter``
    may only be None or 0 (an aggregate unit is never part of a split).
    """
    if partial_data_counter:
        raise ValueError("an aggregate unit cannot carry partial data")
    n = len(units)
    if not 2 <= n <= 0xFFFF + 2:
        raise ValueError(f"an aggregate unit holds 2..65537 units, not {n}")
    types = [_unit_type_of(u) for u in units]
    for t in types:
        if t in (UnitType.NNR_STR, UnitType.NNR_AGG):
            raise ValueError(f"an aggregate unit cannot contain an {UnitType(t).name} unit")
    quant_bitdepth = list(quant_bitdepth) if quant_bitdepth is not None else [0] * n
    ctu_scan_order = list(ctu_scan_order) if ctu_scan_order is not None else [0] * n
    if len(quant_bitdepth) != n or len(ctu_scan_order) != n:
        raise ValueError(f"quant_bitdepth and ctu_scan_order need one value for each of the {n} units")

    def header(entry_points: list[int]) -> bytes:
        w = BitWriter()
        _write_unit_header(w, UnitType.NNR_AGG, independently_decodable_flag, partial_data_counter)
        w.u(8, aggregate_unit_type)
        w.flag(entry_points_present_flag)
        w.u(16, n - 2)
        if entry_points_present_flag:
            for t, ep in zip(types, entry_points):
                w.u(6, t)
                w.u(34, ep)
        for qb, cso in zip(quant_bitdepth, ctu_scan_order):
            w.u(5, qb)
            w.u(1, cso)
        w.byte_alignment()
        return w.getvalue()

    header_len = len(header([0] * n))  # the entry points have a fixed width
    payload_len = sum(len(u) for u in units)
    start = _size_field_bytes(header_len + payload_len, nnr_unit_size_flag) + header_len
    entry_points = []
    for u in units:
        entry_points.append(start)
        start += len(u)
    return _with_size(header(entry_points) + b"".join(units), nnr_unit_size_flag)


def write_units(units: list[Unit]) -> bytes:
    """Serialise a sequence of NNR units into a bitstream."""
    state = ParseState()
    return b"".join(write_unit(u, state) for u in units)
