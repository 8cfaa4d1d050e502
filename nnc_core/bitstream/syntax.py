"""NNR unit records and the syntax shared by reading and writing
(ISO/IEC 15938-17 clause 7.3/7.4): unit and payload types, the records of
every unit and of the NDU header, the parse state that carries from unit to
unit, and the counts both directions derive from a header.

Field names follow the standard's syntax as documented in our notes
(``shared/spec/01-units-and-high-level-syntax.md``).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "UnitType",
    "AggregateUnitType",
    "PayloadType",
    "ParameterTypes",
    "TopologyStorageFormat",
    "ICNN_NDU_ID",
    "ICNN_NDU_PL_SHA256",
    "ICNN_NDU_PL_SHA512",
    "Unit",
    "StartUnit",
    "ModelParameterSet",
    "LayerParameterSet",
    "TopologyUnit",
    "QuantizationUnit",
    "IntegerCodebook",
    "EntryPoint",
    "TensorDimensionMapping",
    "NduHeader",
    "CompressedDataUnit",
    "AggregateUnit",
    "ParseState",
    "quantization_base",
    "block_rows_minus1",
    "dimension_mapping_problem",
    "coded_rows",
    "num_entry_points",
    "AGG_ENTRY_BITS",
    "AGG_UNIT_BITS",
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
    """``nnr_aggregate_unit_type`` (clause 7.4.3; values UNVERIFIED, see docs/decisions.md)."""

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
    performance_maps: dict[str, Any] = field(default_factory=dict)
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
    performance_maps: dict[str, Any] = field(default_factory=dict)


@dataclass
class TopologyUnit(Unit):
    topology_storage_format: int = 0
    topology_compression_format: int = 0
    topology_data: bytes = b""
    # NNR_TPL_REFLIST: topology_elements_ids_list(0), the names that NDUs of an
    # MPS with mps_topology_indexed_reference_flag refer to by index
    element_ids: list[str] = field(default_factory=list)


@dataclass
class QuantizationUnit(Unit):
    quantization_storage_format: int = 0
    quantization_compression_format: int = 0
    quantization_data: bytes = b""


@dataclass
class IntegerCodebook:
    """``integer_codebook()``: strictly increasing integers and the index of zero.

    A parsed codebook holds its values as an ``array('q')`` (8 bytes each, not
    a Python int each: a reader keeps every header of a stream, and the
    codebooks of bit-pattern tensors hold thousands of entries)."""

    egk: int
    values: Sequence[int]
    zero_offset: int  # CbZeroOffset


@dataclass
class EntryPoint:
    """One entry of ``entry_point_list()``: bit distance, CABAC value, DQ state."""

    bit_offset_delta: int
    value: int
    dq_state: int


@dataclass
class TensorDimensionMapping:
    """``topology_tensor_dimension_mapping()`` (syntax UNVERIFIED, see docs/decisions.md).

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
    # Names of the topology elements.  Under mps_topology_indexed_reference_flag
    # the header signals indices into the NNR_TPL_REFLIST in force: reading keeps
    # them in element_id_indices and resolves element_ids to the list's names;
    # writing codes element_id_indices, or the names' indices in the list if None.
    element_ids: list[Any] = field(default_factory=list)
    element_id_indices: list[int] | None = None
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
    """NNR_AGG: several complete NNR units carried as one (syntax UNVERIFIED, see docs/decisions.md).

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
    # names of the last NNR_TPL_REFLIST unit since the start unit (indexed references)
    element_id_list: list[str] | None = None

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
# counts both directions derive from a header


def block_rows_minus1(rows: int, scan_order: int) -> int:
    """Entry points a tensor with ``rows`` first-dimension rows needs (clause 7.4)."""
    block = 4 << scan_order
    return max((rows + block - 1) // block - 1, 0)


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


def num_entry_points(h: NduHeader) -> int:
    if h.compressed_parameter_types & ParameterTypes.NNR_CPT_DC:
        if h.payload_type == PayloadType.NNR_PT_BLOCK:
            return block_rows_minus1(h.g_number_of_rows or 0, h.scan_order) + block_rows_minus1(
                h.decomposition_rank or 0, h.scan_order
            )
    return block_rows_minus1(coded_rows(h), h.scan_order)


# Bits per contained unit in nnr_aggregate_unit_header(): nnr_unit_type and
# nnr_unit_entry_point (when present), quant_bitdepth and ctu_scan_order.
AGG_ENTRY_BITS = 6 + 34
AGG_UNIT_BITS = 5 + 1
