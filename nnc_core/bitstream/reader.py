"""Reading NNR units (clause 7.3): :func:`read_units` walks a bitstream and
returns the unit records (:mod:`nnc_core.bitstream.syntax`) with their byte
offsets; an NDU's payload (a DeepCABAC codeword or raw floats) is kept as a
view into the bitstream for the decoding process.  An aggregate unit (NNR_AGG)
is returned as one :class:`~nnc_core.bitstream.syntax.AggregateUnit` holding
its units; :func:`flatten_units` walks them in decoding order.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from typing import Any

from nnc_core.bitstream.bits import BitReader
from nnc_core.bitstream.syntax import (
    AGG_ENTRY_BITS,
    AGG_UNIT_BITS,
    ICNN_NDU_ID,
    ICNN_NDU_PL_SHA256,
    ICNN_NDU_PL_SHA512,
    AggregateUnit,
    AggregateUnitType,
    CompressedDataUnit,
    EntryPoint,
    IntegerCodebook,
    LayerParameterSet,
    ModelParameterSet,
    NduHeader,
    ParameterTypes,
    ParseState,
    PayloadType,
    QuantizationUnit,
    StartUnit,
    TensorDimensionMapping,
    TopologyStorageFormat,
    TopologyUnit,
    Unit,
    UnitType,
    dimension_mapping_problem,
    num_entry_points,
)
from nnc_core.errors import BitstreamError

__all__ = ["read_units", "flatten_units"]


# ---------------------------------------------------------------------------
# clause 7.3.x syntax


def _performance_maps(r: BitReader, flags: dict[str, bool]) -> dict[str, Any]:
    """Performance maps of an MPS/LPS (metadata only; layout as NNCodec reads them)."""
    maps: dict[str, Any] = {}
    if flags.get("sparsification"):
        count = r.u(8, "spm_count_thresholds")
        entries: list[dict[str, Any]] = []
        for _ in range(max(count - 1, 0)):
            e: dict[str, Any] = {"threshold": r.flt(), "non_zero_ratio": r.flt(), "accuracy": r.flt()}
            classes = r.u(8, "spm_count_classes")
            e["class_bitmask"] = r.ue(7)
            e["class_accuracy"] = [r.flt() for _ in range(classes)]
            entries.append(e)
        maps["sparsification"] = entries
    if flags.get("pruning"):
        count = r.u(8, "ppm_count_pruning_ratios")
        entries = []
        for _ in range(max(count - 1, 0)):
            e = {"pruning_ratio": r.flt(), "accuracy": r.flt()}
            classes = r.u(8, "ppm_count_classes")
            e["class_bitmask"] = r.ue(7)
            e["class_accuracy"] = [r.flt() for _ in range(classes)]
            entries.append(e)
        maps["pruning"] = entries
    if flags.get("unification"):
        count = r.u(8, "upm_count_thresholds")
        entries = []
        for _ in range(max(count - 1, 0)):
            dims = r.ue(1)
            e = {"reshaped_tensor_dimensions": [r.ue(7) for _ in range(max(dims - 1, 0))]}
            r.byte_alignment()
            n = r.u(8)
            e["super_block_dimensions"] = [r.u(8) for _ in range(max(n - 1, 0))]
            n = r.u(8)
            e["block_dimensions"] = [r.u(8) for _ in range(max(n - 1, 0))]
            e["threshold"] = r.flt()
            e["accuracy"] = r.flt()
            # NNCodec's syntax: upm_class_bitmask, read as a number, counts the
            # class accuracies that follow; upm_count_classes counts none (notes 01 §4.1)
            e["count_classes"] = r.u(8, "upm_count_classes")
            e["class_bitmask"] = bitmask = r.ue(7, "upm_class_bitmask")
            if 32 * bitmask > r.bits_left():
                raise r.error(f"upm_class_bitmask {bitmask}: {bitmask} class accuracies cannot fit the unit")
            e["class_accuracy"] = [r.flt("upm_nn_class_accuracy") for _ in range(bitmask)]
            entries.append(e)
        maps["unification"] = entries
    if flags.get("decomposition"):
        count = r.u(8, "dpm_count_thresholds")
        entries = []
        for _ in range(max(count - 1, 0)):
            e = {"mse_threshold": r.flt(), "accuracy": r.flt(), "reduction_ratio": r.flt()}
            classes = r.u(16, "dpm_count_classes")
            e["class_accuracy"] = [r.flt() for _ in range(classes)]
            entries.append(e)
        maps["decomposition"] = entries
    return maps


def _read_mps(r: BitReader, unit: ModelParameterSet, profile: int) -> None:
    unit.topology_carriage_flag = r.flag()
    unit.mps_sparsification_flag = r.flag()
    unit.mps_pruning_flag = r.flag()
    unit.mps_unification_flag = r.flag()
    unit.mps_decomposition_performance_map_flag = r.flag()
    unit.mps_quantization_method_flags = r.u(3)
    unit.mps_topology_indexed_reference_flag = r.flag()
    if profile == 1:
        unit.base_model_id_present_flag = r.flag()
        unit.validation_set_performance_present_flag = r.flag()
        unit.metric_type_performance_map_valid_flag = r.flag()
        unit.mps_parent_signalling_enabled_flag = r.flag()
        if unit.mps_parent_signalling_enabled_flag:
            unit.nnr_pre_flag = r.flag()
        else:
            r.u(1, "nnr_reserved_zero_1bit")
        r.u(2, "nnr_reserved_zero_2bits")
        if unit.base_model_id_present_flag:
            unit.base_model_id = r.st("base_model_id")
        if unit.validation_set_performance_present_flag or unit.metric_type_performance_map_valid_flag:
            unit.performance_metric_type = r.st("performance_metric_type")
    else:
        r.u(7, "nnr_reserved_zero_7bits")
    if unit.mps_quantization_method_flags & 3:
        unit.mps_qp_density = r.u(3, "mps_qp_density")
        unit.mps_quantization_parameter = r.i(13, "mps_quantization_parameter")
    unit.performance_maps = _performance_maps(
        r,
        {
            "sparsification": unit.mps_sparsification_flag,
            "pruning": unit.mps_pruning_flag,
            "unification": unit.mps_unification_flag,
            "decomposition": unit.mps_decomposition_performance_map_flag,
        },
    )
    if profile == 1 and unit.validation_set_performance_present_flag:
        unit.validation_set_performance = r.flt()
    r.byte_alignment()


def _read_lps(r: BitReader, unit: LayerParameterSet) -> None:
    unit.lps_self_contained_flag = r.flag()
    r.u(7, "nnr_reserved_zero_7bits")
    r.u(1, "nnr_reserved_zero_1_bits")
    unit.lps_sparsification_flag = r.flag()
    unit.lps_pruning_flag = r.flag()
    unit.lps_unification_flag = r.flag()
    unit.lps_quantization_method_flags = r.u(3)
    r.u(1, "nnr_reserved_zero_1bit")
    if unit.lps_quantization_method_flags & 3:
        unit.lps_qp_density = r.u(3, "lps_qp_density")
        unit.lps_quantization_parameter = r.i(13, "lps_quantization_parameter")
    unit.performance_maps = _performance_maps(
        r,
        {
            "sparsification": unit.lps_sparsification_flag,
            "pruning": unit.lps_pruning_flag,
            "unification": unit.lps_unification_flag,
        },
    )
    r.byte_alignment()


def _read_element_ids(r: BitReader, indexed: bool) -> list[Any]:
    """``topology_elements_ids_list(indexed)``: names (str) or indices (int)."""
    count = r.ue(7, "count_topology_elements_minus2") + 2
    if count > r.bits_left():
        raise r.error(f"topology element list of {count} entries cannot fit the unit")
    if not indexed:
        r.byte_alignment()
        return [r.st("topology_elem_id_list") for _ in range(count)]
    ids = [r.ue(7, "topology_elem_id_index_list") for _ in range(count)]
    r.byte_alignment()
    return ids


def _resolve_indices(r: BitReader, indices: list[int], state: ParseState, byte_offset: int) -> list[str]:
    """The names an indexed NDU refers to: entries of the NNR_TPL_REFLIST in force
    (0-based, as NNCodec looks them up in its ``topology_elem_id_list``)."""
    names = state.element_id_list
    problem = None
    if names is None:
        problem = "an NDU refers to its topology elements by index, but no NNR_TPL_REFLIST unit precedes it"
    else:
        bad = [i for i in indices if i >= len(names)]
        if bad:
            problem = f"topology_elem_id_index {bad[0]} is outside the NNR_TPL_REFLIST of {len(names)} names"
    if problem:
        raise BitstreamError(
            problem, unit_index=r.unit_index, aggregated_index=r.aggregated_index, byte_offset=byte_offset
        )
    assert names is not None
    return [names[i] for i in indices]


def _read_codebook(r: BitReader) -> IntegerCodebook:
    egk = r.u(4, "codebook_egk")
    size = r.ue(2, "codebook_size")
    if size == 0:
        raise r.error("codebook_size is 0")
    if size > r.bits_left():
        raise r.error(f"codebook of {size} entries cannot fit the unit")
    zero = (size >> 1) + r.ie(2, "codebook_centre_offset")
    if not 0 <= zero < size:
        raise r.error(f"codebook zero offset {zero} outside a codebook of {size} entries")
    values = array("q", bytes(8 * size))
    try:
        values[zero] = r.ie(7, "codebook_zero_value")
        for j in range(zero - 1, -1, -1):
            values[j] = values[j + 1] - r.ue(egk, "codebook_delta_left") - 1
        for j in range(zero + 1, size):
            values[j] = values[j - 1] + r.ue(egk, "codebook_delta_right") + 1
    except OverflowError:
        raise r.error("codebook values beyond 64-bit integers") from None
    return IntegerCodebook(egk, values, zero)


def _read_ndu_header(r: BitReader, h: NduHeader, state: ParseState) -> None:
    profile = state.general_profile_idc
    mps = state.mps
    indexed = bool(mps and mps.mps_topology_indexed_reference_flag)
    parent_signalling = bool(mps and mps.mps_parent_signalling_enabled_flag)
    h.payload_type = r.u(5, "nnr_compressed_data_unit_payload_type")
    if h.payload_type > PayloadType.NNR_PT_BLOCK:
        raise r.error(f"unknown NDU payload type {h.payload_type}")
    h.multiple_topology_elements_present_flag = r.flag()
    h.decompressed_data_format_present_flag = r.flag()
    h.input_parameters_present_flag = r.flag()
    ids_offset = r.byte_position
    if h.multiple_topology_elements_present_flag:
        h.element_ids = _read_element_ids(r, indexed)
    elif not indexed:
        h.element_ids = [r.st("topology_elem_id")]
    else:
        h.element_ids = [r.ue(7, "topology_elem_id_index")]
    if indexed:
        h.element_id_indices = h.element_ids
        h.element_ids = _resolve_indices(r, h.element_id_indices, state, ids_offset)
    if profile == 1:
        h.node_id_present_flag = r.flag()
        if h.node_id_present_flag:
            h.device_id = r.ue(1, "device_id")
            h.parameter_id = r.ue(5, "parameter_id")
            h.put_node_depth = r.ue(4, "put_node_depth")
        if parent_signalling:
            h.parent_node_id_present_flag = r.flag()
            if h.parent_node_id_present_flag:
                h.parent_node_id_type = r.u(2, "parent_node_id_type")
                h.temporal_context_modeling_flag = r.flag()
                if h.parent_node_id_type == ICNN_NDU_ID:
                    h.parent_device_id = r.ue(1, "parent_device_id")
                    if not h.node_id_present_flag:
                        h.parameter_id = r.ue(5, "parameter_id")
                        h.put_node_depth = r.ue(4, "put_node_depth")
                elif h.parent_node_id_type == ICNN_NDU_PL_SHA256:
                    h.parent_node_payload_hash = bytes(r.u(8) for _ in range(32))
                elif h.parent_node_id_type == ICNN_NDU_PL_SHA512:
                    h.parent_node_payload_hash = bytes(r.u(8) for _ in range(64))
    pt = h.payload_type
    if pt in (PayloadType.NNR_PT_FLOAT, PayloadType.NNR_PT_BLOCK):
        h.codebook_present_flag = r.flag()
        if h.codebook_present_flag:
            h.codebooks.append(_read_codebook(r))
    if pt in (PayloadType.NNR_PT_INT, PayloadType.NNR_PT_FLOAT, PayloadType.NNR_PT_BLOCK):
        h.dq_flag = r.flag()
    if h.decompressed_data_format_present_flag:
        h.decompressed_data_format = r.u(7, "nnr_decompressed_data_format")
    if h.input_parameters_present_flag:
        h.tensor_dimensions_flag = r.flag()
        h.cabac_unary_length_flag = r.flag()
        h.compressed_parameter_types = r.u(4, "compressed_parameter_types")
        if h.compressed_parameter_types & ParameterTypes.NNR_CPT_DC:
            h.decomposition_rank = r.ue(3, "decomposition_rank")
            h.g_number_of_rows = r.ue(3, "g_number_of_rows")
        if h.tensor_dimensions_flag:
            count = r.ue(1, "count_tensor_dimensions")
            if count > r.bits_left():
                raise r.error(f"{count} tensor dimensions cannot fit the unit")
            h.tensor_dimensions = [r.ue(7, "tensor_dimensions") for _ in range(count)]
        if pt != PayloadType.NNR_PT_BLOCK and h.multiple_topology_elements_present_flag:
            h.tensor_dimension_mapping = _read_dimension_mapping(r, h)
        if h.cabac_unary_length_flag:
            h.cabac_unary_length_minus1 = r.u(8, "cabac_unary_length_minus1")
        else:
            h.cabac_unary_length_minus1 = 9  # reference decoder's default when absent
    if (
        pt == PayloadType.NNR_PT_BLOCK
        and h.compressed_parameter_types & ParameterTypes.NNR_CPT_DC
        and h.codebook_present_flag
    ):
        h.codebooks.append(_read_codebook(r))
    if len(h.tensor_dimensions) > 1:
        if profile == 1:
            h.first_tensor_dimension_shift = r.ue(1, "first_tensor_dimension_shift")
            if h.first_tensor_dimension_shift >= len(h.tensor_dimensions):
                raise r.error(
                    f"first_tensor_dimension_shift {h.first_tensor_dimension_shift} names no dimension "
                    f"of a {len(h.tensor_dimensions)}-D tensor"
                )
        h.scan_order = r.u(4, "scan_order")
        if h.scan_order > 4:
            raise r.error(f"scan_order {h.scan_order} is reserved")
        if h.scan_order > 0:
            n = num_entry_points(h)
            if n > r.bits_left():
                raise r.error(f"entry point list of {n} entries cannot fit the unit")
            delta = 0
            for j in range(n):
                value = r.u(8, "entry point value")
                dq_state = r.u(3, "entry point dq state") if h.dq_flag else 0
                if j == 0:
                    delta = r.ue(11, "entry point bit offset")
                else:
                    delta = delta + r.ie(7, "entry point bit offset change")
                h.entry_points.append(EntryPoint(delta, value, dq_state))
    r.byte_alignment()


def _read_dimension_mapping(r: BitReader, h: NduHeader) -> TensorDimensionMapping:
    """``topology_tensor_dimension_mapping()``: concatenation axis and split points."""
    m = TensorDimensionMapping()
    m.concatenation_axis_index = r.u(8, "concatenation_axis_index")
    m.split_index = [r.ue(7, "split_index") for _ in range(len(h.element_ids) - 1)]
    if h.tensor_dimensions_flag:
        problem = dimension_mapping_problem(m, h.tensor_dimensions)
        if problem:
            raise r.error(problem)
    return m


def read_units(data: bytes | bytearray | memoryview) -> list[Unit]:
    """Parse every NNR unit of a bitstream (clause 7.3).

    Raises BitstreamError naming the unit index and byte offset of the first
    problem: a size field running past the end, an unknown unit type, a header
    field out of range, or units in an order the decoding process cannot use.
    Inside an aggregate unit the error also names the contained unit's index.
    """
    buf = memoryview(data)
    units: list[Unit] = []
    state = ParseState()
    offset = 0
    index = 0
    while offset < len(buf):
        units.append(_read_unit(buf, offset, index, state, len(buf)))
        offset += units[-1].size
        index += 1
    return units


def flatten_units(units: list[Unit]) -> Iterator[tuple[int, int | None, Unit]]:
    """``(unit index, index inside its aggregate unit or None, unit)`` in decoding order.

    The units of an NNR_AGG take the place of the aggregate unit itself.
    """
    for index, unit in enumerate(units):
        if isinstance(unit, AggregateUnit):
            for inner, contained in enumerate(unit.units):
                yield index, inner, contained
        else:
            yield index, None, unit


def _read_unit(
    buf: memoryview, offset: int, index: int, state: ParseState, end: int, aggregated_index: int | None = None
) -> Unit:
    where: dict[str, Any] = dict(unit_index=index, aggregated_index=aggregated_index)
    container = "bitstream" if aggregated_index is None else "aggregate unit"
    r = BitReader(buf, offset, end, **where)
    long_size = r.u(1, "nnr_unit_size_flag")
    size = r.u(15 + 16 * long_size, "nnr_unit_size")
    header_min = 2 + 2 * long_size + 1
    if size < header_min:
        raise BitstreamError(f"nnr_unit_size {size} is smaller than its own fields", byte_offset=offset, **where)
    if offset + size > end:
        raise BitstreamError(
            f"nnr_unit_size {size} runs past the end of the {container} ({end - offset} bytes left)",
            byte_offset=offset,
            **where,
        )
    r = BitReader(buf, offset + 2 + 2 * long_size, offset + size, **where)
    type_offset = r.byte_position
    unit_type = r.u(6, "nnr_unit_type")
    independent = r.flag()
    partial_present = r.flag()
    partial = r.u(8, "partial_data_counter") if partial_present else None
    common: dict[str, Any] = dict(
        unit_type=unit_type,
        offset=offset,
        size=size,
        independently_decodable_flag=independent,
        partial_data_counter=partial,
        nnr_unit_size_flag=bool(long_size),
    )
    if index == 0 and aggregated_index is None and unit_type != UnitType.NNR_STR:
        raise r.error(f"the first unit must be a start unit (NNR_STR), found type {unit_type}")
    if unit_type > UnitType.NNR_AGG:
        raise BitstreamError(f"unsupported NNR unit type {unit_type}", byte_offset=type_offset, **where)
    if aggregated_index is not None and unit_type in (UnitType.NNR_AGG, UnitType.NNR_STR):
        raise BitstreamError(
            f"an aggregate unit cannot contain an {UnitType(unit_type).name} unit", byte_offset=type_offset, **where
        )
    if partial and unit_type != UnitType.NNR_NDU:
        raise BitstreamError(
            f"partial_data_counter {partial} on a unit of type {unit_type}: only compressed data units can be split",
            byte_offset=type_offset,
            **where,
        )

    if unit_type == UnitType.NNR_STR:
        unit = StartUnit(**common, general_profile_idc=r.u(8, "general_profile_idc"))
        if unit.general_profile_idc not in (0, 1):
            raise r.error(f"general_profile_idc {unit.general_profile_idc} is not supported")
        state.general_profile_idc = unit.general_profile_idc
        state.mps = None
        state.lps = None
        state.element_id_list = None
        return unit
    if state.general_profile_idc is None:
        raise r.error("unit before the start unit")
    if unit_type == UnitType.NNR_MPS:
        mps = ModelParameterSet(**common)
        _read_mps(r, mps, state.general_profile_idc)
        state.mps = mps
        state.lps = None
        return mps
    if unit_type == UnitType.NNR_LPS:
        lps = LayerParameterSet(**common)
        _read_lps(r, lps)
        state.lps = lps
        return lps
    if unit_type == UnitType.NNR_TPL:
        tpl = TopologyUnit(**common)
        tpl.topology_storage_format = r.u(8, "topology_storage_format")
        tpl.topology_compression_format = r.u(8, "topology_compression_format")
        if tpl.topology_storage_format == TopologyStorageFormat.NNR_TPL_REFLIST:
            # names, whatever mps_topology_indexed_reference_flag says (notes 01 §6, NNCodec)
            tpl.element_ids = _read_element_ids(r, False)
            state.element_id_list = tpl.element_ids
        elif tpl.topology_storage_format == TopologyStorageFormat.NNR_TPL_PRUN:
            tpl.topology_data = r.bytes(r.bits_left() // 8, "nnr_pruning_topology_container")
        else:
            tpl.topology_data = r.bytes(r.bits_left() // 8, "topology_data")
        return tpl
    if unit_type == UnitType.NNR_QNT:
        qnt = QuantizationUnit(**common)
        qnt.quantization_storage_format = r.u(8)
        qnt.quantization_compression_format = r.u(8)
        qnt.quantization_data = r.bytes(r.bits_left() // 8, "quantization_data")
        return qnt
    if unit_type == UnitType.NNR_NDU:
        ndu = CompressedDataUnit(**common)
        _read_ndu_header(r, ndu.header, state)
        ndu.payload_offset = r.byte_position
        ndu.payload = buf[r.byte_position : offset + size]  # a view: parsing copies no payload
        return ndu
    agg = AggregateUnit(**common)  # NNR_AGG, the last type
    _read_aggregate(r, buf, agg, index, state)
    return agg


def _read_aggregate(r: BitReader, buf: memoryview, agg: AggregateUnit, index: int, state: ParseState) -> None:
    """``nnr_aggregate_unit_header()`` and the units of the payload."""
    agg.aggregate_unit_type = r.u(8, "nnr_aggregate_unit_type")
    if agg.aggregate_unit_type > AggregateUnitType.NNR_AGG_SLF:
        raise r.error(f"nnr_aggregate_unit_type {agg.aggregate_unit_type} is reserved")
    agg.entry_points_present_flag = r.flag()
    count = r.u(16, "num_of_nnr_units_minus2") + 2
    if count * (AGG_UNIT_BITS + AGG_ENTRY_BITS * agg.entry_points_present_flag) > r.bits_left():
        raise r.error(f"an aggregate unit of {count} units cannot fit {agg.size} bytes")
    types = []
    if agg.entry_points_present_flag:
        for _ in range(count):
            types.append(r.u(6, "nnr_unit_type"))
            agg.entry_points.append(r.u(34, "nnr_unit_entry_point"))
    for _ in range(count):
        agg.quant_bitdepth.append(r.u(5, "quant_bitdepth"))
        agg.ctu_scan_order.append(r.u(1, "ctu_scan_order"))
    r.byte_alignment()
    end = agg.offset + agg.size
    pos = r.byte_position
    for i in range(count):
        if pos >= end:
            raise BitstreamError(
                f"aggregate unit ends after {i} of its {count} units", unit_index=index, byte_offset=pos
            )
        unit = _read_unit(buf, pos, index, state, end, aggregated_index=i)
        if agg.entry_points_present_flag:
            if types[i] != unit.unit_type:
                raise BitstreamError(
                    f"nnr_unit_type[{i}] {types[i]} of the aggregate unit header does not match the unit's type {unit.unit_type}",
                    unit_index=index,
                    aggregated_index=i,
                    byte_offset=pos,
                )
            if agg.entry_points[i] != pos - agg.offset:
                raise BitstreamError(
                    f"nnr_unit_entry_point[{i}] {agg.entry_points[i]} does not match the unit's position {pos - agg.offset}",
                    unit_index=index,
                    aggregated_index=i,
                    byte_offset=pos,
                )
        agg.units.append(unit)
        pos += unit.size
    if pos != end:
        raise BitstreamError(
            f"{end - pos} bytes after the {count} units of the aggregate unit", unit_index=index, byte_offset=pos
        )
