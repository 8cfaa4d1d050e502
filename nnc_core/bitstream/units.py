"""NNR units and their high-level syntax (ISO/IEC 15938-17 clause 7.3/7.4).

A bitstream is a concatenation of NNR units, each ``nnr_unit_size()``,
``nnr_unit_header()`` and ``nnr_unit_payload()``.  This module holds the
unit records and the parser: :func:`read_units` walks a bitstream and returns
the units with their byte offsets; the NDU payload (a DeepCABAC codeword or
raw floats) is kept as bytes for the decoding process.  An aggregate unit
(NNR_AGG) is returned as one :class:`AggregateUnit` holding its units;
:func:`flatten_units` walks them in decoding order.

Field names follow the standard's syntax as documented in our notes
(``shared/spec/01-units-and-high-level-syntax.md``).  Parsing state that
carries from unit to unit (``general_profile_idc`` of the start unit and the
MPS flags an NDU header depends on) is kept in :class:`ParseState`.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from nnc_core.bitstream.bits import BitReader, BitWriter
from nnc_core.errors import BitstreamError

__all__ = [
    "UnitType",
    "AggregateUnitType",
    "PayloadType",
    "ParameterTypes",
    "TopologyStorageFormat",
    "Unit",
    "StartUnit",
    "ModelParameterSet",
    "LayerParameterSet",
    "TopologyUnit",
    "QuantizationUnit",
    "IntegerCodebook",
    "EntryPoint",
    "NduHeader",
    "CompressedDataUnit",
    "AggregateUnit",
    "TensorDimensionMapping",
    "ParseState",
    "quantization_base",
    "read_units",
    "flatten_units",
    "write_unit",
    "write_units",
    "aggregate_unit",
    "write_integer_codebook",
]


class UnitType(enum.IntEnum):
    """``nnr_unit_type`` (clause 7.4.2)."""

    NNR_STR = 0
    NNR_MPS = 1
    NNR_LPS = 2
    NNR_TPL = 3
    NNR_QNT = 4
    NNR_NDU = 5
    NNR_AGG = 6


class AggregateUnitType(enum.IntEnum):
    """``nnr_aggregate_unit_type`` (clause 7.4.3; values UNVERIFIED, see README)."""

    NNR_AGG_GEN = 0  # a set of NNR units
    NNR_AGG_SLF = 1  # self-contained: decodable with only the NNR_STR and NNR_MPS before it


class PayloadType(enum.IntEnum):
    """``nnr_compressed_data_unit_payload_type``."""

    NNR_PT_INT = 0
    NNR_PT_FLOAT = 1
    NNR_PT_RAW_FLOAT = 2
    NNR_PT_BLOCK = 3


class ParameterTypes(enum.IntFlag):
    """``compressed_parameter_types``: members of an NNR_PT_BLOCK besides the weight."""

    NONE = 0
    NNR_CPT_DC = 0x01  # weight decomposed into G and H
    NNR_CPT_LS = 0x02  # local scaling vector
    NNR_CPT_BN = 0x04  # batch-norm beta, gamma, mean, var
    NNR_CPT_BI = 0x08  # bias


class TopologyStorageFormat(enum.IntEnum):
    """``topology_storage_format`` of an NNR_TPL unit."""

    NNR_TPL_UNREC = 0
    NNR_TPL_NNEF = 1
    NNR_TPL_ONNX = 2
    NNR_TPL_PYT = 3
    NNR_TPL_TEF = 4
    NNR_TPL_PRUN = 5
    NNR_TPL_REFLIST = 6


ICNN_NDU_ID = 0
ICNN_NDU_PL_SHA256 = 1
ICNN_NDU_PL_SHA512 = 2


@dataclass
class Unit:
    """Common part of every NNR unit: where it is and its header flags."""

    unit_type: int
    offset: int = 0  # byte offset of the unit in the bitstream (when read)
    size: int = 0  # nnr_unit_size: whole unit including the size field (when read)
    independently_decodable_flag: bool = True
    partial_data_counter: int | None = None
    nnr_unit_size_flag: bool | None = None  # long size field; None: the shortest that fits


@dataclass
class StartUnit(Unit):
    general_profile_idc: int = 1


@dataclass
class ModelParameterSet(Unit):
    topology_carriage_flag: bool = False
    mps_sparsification_flag: bool = False
    mps_pruning_flag: bool = False
    mps_unification_flag: bool = False
    mps_decomposition_performance_map_flag: bool = False
    mps_quantization_method_flags: int = 0
    mps_topology_indexed_reference_flag: bool = False
    base_model_id_present_flag: bool = False
    validation_set_performance_present_flag: bool = False
    metric_type_performance_map_valid_flag: bool = False
    mps_parent_signalling_enabled_flag: bool = False
    nnr_pre_flag: bool = False
    base_model_id: str | None = None
    performance_metric_type: str | None = None
    mps_qp_density: int | None = None
    mps_quantization_parameter: int | None = None
    performance_maps: dict = field(default_factory=dict)
    validation_set_performance: float | None = None


@dataclass
class LayerParameterSet(Unit):
    lps_self_contained_flag: bool = False
    lps_sparsification_flag: bool = False
    lps_pruning_flag: bool = False
    lps_unification_flag: bool = False
    lps_quantization_method_flags: int = 0
    lps_qp_density: int | None = None
    lps_quantization_parameter: int | None = None
    performance_maps: dict = field(default_factory=dict)


@dataclass
class TopologyUnit(Unit):
    topology_storage_format: int = 0
    topology_compression_format: int = 0
    topology_data: bytes = b""
    element_ids: list = field(default_factory=list)  # NNR_TPL_REFLIST


@dataclass
class QuantizationUnit(Unit):
    quantization_storage_format: int = 0
    quantization_compression_format: int = 0
    quantization_data: bytes = b""


@dataclass
class IntegerCodebook:
    """``integer_codebook()``: strictly increasing integers and the index of zero."""

    egk: int
    values: list[int]
    zero_offset: int  # CbZeroOffset


@dataclass
class EntryPoint:
    """One entry of ``entry_point_list()``: bit distance, CABAC value, DQ state."""

    bit_offset_delta: int
    value: int
    dq_state: int


@dataclass
class TensorDimensionMapping:
    """``topology_tensor_dimension_mapping()`` (syntax UNVERIFIED, see README).

    The tensor of a non-block NDU naming several topology elements is the
    concatenation of those elements along ``concatenation_axis_index``;
    element ``j`` is the slice ``[split_index[j-1], split_index[j])`` along
    that axis (with ``split_index[-1] = 0`` and a last bound of the axis size).
    """

    concatenation_axis_index: int = 0
    split_index: list[int] = field(default_factory=list)


@dataclass
class NduHeader:
    payload_type: int = PayloadType.NNR_PT_FLOAT
    multiple_topology_elements_present_flag: bool = False
    decompressed_data_format_present_flag: bool = False
    input_parameters_present_flag: bool = True
    element_ids: list = field(default_factory=list)  # names (str) or indices (int)
    node_id_present_flag: bool = False
    device_id: int = 0
    parameter_id: int | None = None
    put_node_depth: int | None = None
    parent_node_id_present_flag: bool = False
    parent_node_id_type: int | None = None
    temporal_context_modeling_flag: bool = False
    parent_device_id: int | None = None
    parent_node_payload_hash: bytes | None = None
    codebook_present_flag: bool = False
    codebooks: list[IntegerCodebook] = field(default_factory=list)
    dq_flag: bool = False
    decompressed_data_format: int | None = None
    tensor_dimensions_flag: bool = False
    cabac_unary_length_flag: bool = False
    compressed_parameter_types: int = 0
    decomposition_rank: int | None = None
    g_number_of_rows: int | None = None
    tensor_dimensions: list[int] = field(default_factory=list)
    tensor_dimension_mapping: TensorDimensionMapping | None = None
    cabac_unary_length_minus1: int = 10
    first_tensor_dimension_shift: int = 0
    scan_order: int = 0
    entry_points: list[EntryPoint] = field(default_factory=list)


@dataclass
class CompressedDataUnit(Unit):
    header: NduHeader = field(default_factory=NduHeader)
    payload_offset: int = 0  # byte offset of the payload in the bitstream
    payload: bytes | memoryview = b""  # read: a view into the bitstream


@dataclass
class AggregateUnit(Unit):
    """NNR_AGG: several complete NNR units carried as one (syntax UNVERIFIED, see README).

    ``units`` are decoded as if they appeared in the bitstream in place of
    the aggregate unit.  ``quant_bitdepth`` and ``ctu_scan_order`` hold one
    informational entry per contained unit (zeros when empty on writing);
    ``entry_points`` are the byte offsets of the contained units from the
    start of the aggregate unit, as read (the writer computes them).
    """

    aggregate_unit_type: int = AggregateUnitType.NNR_AGG_GEN
    entry_points_present_flag: bool = True
    units: list[Unit] = field(default_factory=list)
    quant_bitdepth: list[int] = field(default_factory=list)
    ctu_scan_order: list[int] = field(default_factory=list)
    entry_points: list[int] = field(default_factory=list)


@dataclass
class ParseState:
    """What unit syntax and decoding depend on from earlier units."""

    general_profile_idc: int | None = None
    mps: ModelParameterSet | None = None
    lps: LayerParameterSet | None = None  # the layer parameter set in force

    def quantization_base(self) -> tuple[int, int]:
        """``(qp_density, quantization_parameter)`` NDUs code their QP against."""
        return quantization_base(self.mps, self.lps)


def quantization_base(mps: ModelParameterSet | None, lps: LayerParameterSet | None) -> tuple[int, int]:
    """``(qp_density, quantization_parameter)`` in force for an NDU (clause 7.4.3).

    An NNR_LPS carrying quantization parameters overrides those of the
    NNR_MPS for the NDUs that follow it, until the next NNR_LPS, NNR_MPS or
    NNR_STR; an LPS without them (``lps_quantization_method_flags & 3 == 0``)
    leaves the MPS values in force.  Without either: density 2, QP 0 (the
    reference decoder's defaults).
    """
    if lps is not None and lps.lps_qp_density is not None:
        return lps.lps_qp_density, lps.lps_quantization_parameter or 0
    if mps is not None and mps.mps_qp_density is not None:
        return mps.mps_qp_density, mps.mps_quantization_parameter or 0
    return 2, 0


# ---------------------------------------------------------------------------
# clause 7.3.x syntax


def _performance_maps(r: BitReader, flags: dict[str, bool]) -> dict:
    """Performance maps of an MPS/LPS (metadata only; layout as NNCodec reads them)."""
    maps: dict = {}
    if flags.get("sparsification"):
        count = r.u(8, "spm_count_thresholds")
        entries = []
        for _ in range(max(count - 1, 0)):
            e = {"threshold": r.flt(), "non_zero_ratio": r.flt(), "accuracy": r.flt()}
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
            e: dict = {"reshaped_tensor_dimensions": [r.ue(7) for _ in range(max(dims - 1, 0))]}
            r.byte_alignment()
            n = r.u(8)
            e["super_block_dimensions"] = [r.u(8) for _ in range(max(n - 1, 0))]
            n = r.u(8)
            e["block_dimensions"] = [r.u(8) for _ in range(max(n - 1, 0))]
            e["threshold"] = r.flt()
            e["accuracy"] = r.flt()
            classes = r.u(8, "upm_count_classes")
            e["class_bitmask"] = r.ue(7)
            e["class_accuracy"] = [r.flt() for _ in range(classes)]
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


def _read_element_ids(r: BitReader, indexed: bool) -> list:
    count = r.ue(7, "count_topology_elements_minus2") + 2
    if count > r.bits_left():
        raise r.error(f"topology element list of {count} entries cannot fit the unit")
    if not indexed:
        r.byte_alignment()
        return [r.st("topology_elem_id_list") for _ in range(count)]
    ids = [r.ue(7, "topology_elem_id_index_list") for _ in range(count)]
    r.byte_alignment()
    return ids


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
    values = [0] * size
    values[zero] = r.ie(7, "codebook_zero_value")
    for j in range(zero - 1, -1, -1):
        values[j] = values[j + 1] - r.ue(egk, "codebook_delta_left") - 1
    for j in range(zero + 1, size):
        values[j] = values[j - 1] + r.ue(egk, "codebook_delta_right") + 1
    return IntegerCodebook(egk, values, zero)


def block_rows_minus1(rows: int, scan_order: int) -> int:
    """Entry points a tensor with ``rows`` first-dimension rows needs (clause 7.4)."""
    block = 4 << scan_order
    return max((rows + block - 1) // block - 1, 0)


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
    if h.multiple_topology_elements_present_flag:
        h.element_ids = _read_element_ids(r, indexed)
    elif not indexed:
        h.element_ids = [r.st("topology_elem_id")]
    else:
        h.element_ids = [r.ue(7, "topology_elem_id_index")]
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
    if pt == PayloadType.NNR_PT_BLOCK and h.compressed_parameter_types & ParameterTypes.NNR_CPT_DC and h.codebook_present_flag:
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
            n = _num_entry_points(h)
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


def dimension_mapping_problem(m: TensorDimensionMapping, dims: list[int] | tuple[int, ...]) -> str | None:
    """Why a dimension mapping cannot split a tensor of shape ``dims`` (None: it can)."""
    axis = m.concatenation_axis_index
    if axis >= len(dims):
        return f"concatenation_axis_index {axis} names no dimension of a {len(dims)}-D tensor"
    bounds = [0, *m.split_index, dims[axis]]
    if any(a >= b for a, b in zip(bounds, bounds[1:])):
        return f"split_index {m.split_index} does not cut dimension {axis} of size {dims[axis]} into non-empty parts"
    return None


def coded_rows(h: NduHeader) -> int:
    """First dimension of the coded (2-D view) tensor: ``tensor_dimensions[first_tensor_dimension_shift]``."""
    return h.tensor_dimensions[h.first_tensor_dimension_shift]


def _num_entry_points(h: NduHeader) -> int:
    if h.compressed_parameter_types & ParameterTypes.NNR_CPT_DC:
        if h.payload_type == PayloadType.NNR_PT_BLOCK:
            return block_rows_minus1(h.g_number_of_rows or 0, h.scan_order) + block_rows_minus1(
                h.decomposition_rank or 0, h.scan_order
            )
    return block_rows_minus1(coded_rows(h), h.scan_order)


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
    where = dict(unit_index=index, aggregated_index=aggregated_index)
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
    common = dict(
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
        unit: Unit = StartUnit(**common, general_profile_idc=r.u(8, "general_profile_idc"))
        if unit.general_profile_idc not in (0, 1):
            raise r.error(f"general_profile_idc {unit.general_profile_idc} is not supported")
        state.general_profile_idc = unit.general_profile_idc
        state.mps = None
        state.lps = None
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
            tpl.element_ids = _read_element_ids(r, True)
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


# Bits per contained unit in nnr_aggregate_unit_header(): nnr_unit_type and
# nnr_unit_entry_point (when present), quant_bitdepth and ctu_scan_order.
_AGG_ENTRY_BITS = 6 + 34
_AGG_UNIT_BITS = 5 + 1


def _read_aggregate(r: BitReader, buf: memoryview, agg: AggregateUnit, index: int, state: ParseState) -> None:
    """``nnr_aggregate_unit_header()`` and the units of the payload."""
    agg.aggregate_unit_type = r.u(8, "nnr_aggregate_unit_type")
    if agg.aggregate_unit_type > AggregateUnitType.NNR_AGG_SLF:
        raise r.error(f"nnr_aggregate_unit_type {agg.aggregate_unit_type} is reserved")
    agg.entry_points_present_flag = r.flag()
    count = r.u(16, "num_of_nnr_units_minus2") + 2
    if count * (_AGG_UNIT_BITS + _AGG_ENTRY_BITS * agg.entry_points_present_flag) > r.bits_left():
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


# ---------------------------------------------------------------------------
# writing (the same syntax, in the other direction)


def _write_performance_maps(w: BitWriter, maps: dict, kinds: tuple[str, ...]) -> None:
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


def _write_element_ids(w: BitWriter, ids: list, indexed: bool) -> None:
    w.ue(7, len(ids) - 2)
    if not indexed:
        w.byte_alignment()
        for name in ids:
            w.st(str(name))
    else:
        for i in ids:
            w.ue(7, int(i))
        w.byte_alignment()


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
    if h.multiple_topology_elements_present_flag:
        _write_element_ids(w, h.element_ids, indexed)
    elif not indexed:
        w.st(str(h.element_ids[0]))
    else:
        w.ue(7, int(h.element_ids[0]))
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
                raise ValueError(f"an NDU of {len(h.element_ids)} topology elements needs a tensor dimension mapping with {len(h.element_ids) - 1} split indices")
            w.u(8, m.concatenation_axis_index)
            for j in m.split_index:
                w.ue(7, j)
        if h.cabac_unary_length_flag:
            w.u(8, h.cabac_unary_length_minus1)
    if pt == PayloadType.NNR_PT_BLOCK and h.compressed_parameter_types & ParameterTypes.NNR_CPT_DC and h.codebook_present_flag:
        write_integer_codebook(w, h.codebooks[1])
    if len(h.tensor_dimensions) > 1:
        if not 0 <= h.first_tensor_dimension_shift < len(h.tensor_dimensions):
            raise ValueError(f"first_tensor_dimension_shift {h.first_tensor_dimension_shift} names no dimension of {h.tensor_dimensions}")
        if profile == 1:
            w.ue(1, h.first_tensor_dimension_shift)
        elif h.first_tensor_dimension_shift:
            raise ValueError("first_tensor_dimension_shift needs general_profile_idc 1")
        w.u(4, h.scan_order)
        if h.scan_order > 0:
            if len(h.entry_points) != _num_entry_points(h):
                raise ValueError(f"NDU needs {_num_entry_points(h)} entry points, has {len(h.entry_points)}")
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
            _write_element_ids(w, unit.element_ids, True)
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
    """Wrap serialised NNR units into one NNR_AGG unit (syntax UNVERIFIED, see README).

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
