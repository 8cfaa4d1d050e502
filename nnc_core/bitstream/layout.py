"""Building blocks for stream structure beyond one NDU per tensor.

The reference encoder writes ``STR, MPS, TPL, NDU, NDU, ...``.  The standard
also allows layer parameter sets (NNR_LPS), aggregate units (NNR_AGG),
tensors split over several NDUs (``partial_data_counter``), NDUs carrying the
concatenation of several topology elements
(``topology_tensor_dimension_mapping()``) and tensors coded with another
dimension as rows (``first_tensor_dimension_shift``).  Where the reference
software is silent, the syntax and semantics are the decisions listed in
docs/decisions.md; the decoding side is in
:mod:`nnc_core.decoding`.

These functions are for an encoder: they cut and reshape tensors and build
NDUs from stored integers; :func:`nnc_core.bitstream.units.aggregate_unit`
wraps serialised units into an aggregate unit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from nnc_core.bitstream.units import (
    CompressedDataUnit,
    EntryPoint,
    IntegerCodebook,
    NduHeader,
    PayloadType,
    TensorDimensionMapping,
    UnitType,
)
from nnc_core.deepcabac import Encoder, TensorCoding, resolve_entry_points
from nnc_core.errors import ConfigError, EncodeError

__all__ = [
    "coded_view",
    "decoded_view",
    "coded_shape",
    "TensorPart",
    "split_tensor",
    "part_header",
    "concatenate_elements",
    "coded_scan_order",
    "code_payload",
    "build_ndu",
]


def coded_view(tensor: np.ndarray, first_tensor_dimension_shift: int) -> np.ndarray:
    """The tensor as coded: dimension ``first_tensor_dimension_shift`` moved to the front.

    Its first dimension gives the rows of the 2-D view that scans, row
    skipping and entry points work on (semantics UNVERIFIED, see docs/decisions.md).
    """
    if first_tensor_dimension_shift == 0:
        return tensor
    return np.ascontiguousarray(np.moveaxis(tensor, first_tensor_dimension_shift, 0))


def decoded_view(coded: np.ndarray, first_tensor_dimension_shift: int) -> np.ndarray:
    """Inverse of :func:`coded_view`: the first dimension moved back to its place."""
    if first_tensor_dimension_shift == 0:
        return coded
    return np.ascontiguousarray(np.moveaxis(coded, 0, first_tensor_dimension_shift))


def coded_shape(shape: Sequence[int], first_tensor_dimension_shift: int) -> tuple[int, ...]:
    """Shape of :func:`coded_view` of a tensor of ``shape``."""
    s = first_tensor_dimension_shift
    shape = tuple(int(d) for d in shape)
    return shape if s == 0 else (shape[s], *shape[:s], *shape[s + 1 :])


@dataclass(frozen=True)
class TensorPart:
    """One part of a split tensor: the NDU with ``partial_data_counter`` carries ``values``.

    ``start``/``stop`` locate the part along the joining axis (the coded first
    dimension, ``first_tensor_dimension_shift``).
    """

    partial_data_counter: int
    start: int
    stop: int
    values: np.ndarray


def split_tensor(
    tensor: np.ndarray, parts: int | Sequence[int], *, first_tensor_dimension_shift: int = 0
) -> list[TensorPart]:
    """Cut a tensor into parts for consecutive NDUs (``partial_data_counter`` P..1).

    The cut is along dimension ``first_tensor_dimension_shift`` (the rows of
    the coded view; 0 for 1-D tensors).  ``parts`` is either a number of parts
    of nearly equal size (the first ones one row larger) or the list of the
    parts' row counts.  Each part is then coded as a tensor of its own, with
    the same ``first_tensor_dimension_shift``.
    """
    tensor = np.asarray(tensor)
    if tensor.ndim == 0:
        tensor = tensor.reshape(1)
    axis = first_tensor_dimension_shift if tensor.ndim > 1 else 0
    if not 0 <= axis < tensor.ndim:
        raise ConfigError(
            f"first_tensor_dimension_shift {first_tensor_dimension_shift} names no dimension of shape {tensor.shape}"
        )
    rows = tensor.shape[axis]
    if isinstance(parts, int):
        if not 1 <= parts <= min(rows, 255):
            raise ConfigError(f"cannot cut {rows} rows into {parts} parts (1..{min(rows, 255)})")
        sizes = [rows // parts + (1 if i < rows % parts else 0) for i in range(parts)]
    else:
        sizes = [int(n) for n in parts]
        if not 1 <= len(sizes) <= 255 or sum(sizes) != rows or min(sizes) < 1:
            raise ConfigError(f"part sizes {sizes} do not cut {rows} rows into 1..255 non-empty parts")
    out = []
    start = 0
    for i, n in enumerate(sizes):
        cut = (slice(None),) * axis + (slice(start, start + n),)
        out.append(TensorPart(len(sizes) - i, start, start + n, np.ascontiguousarray(tensor[cut])))
        start += n
    return out


def part_header(header: NduHeader, part: TensorPart) -> NduHeader:
    """The NDU header of one part, from the header the whole tensor would have.

    Only the tensor dimensions change; entry points (if any) belong to the
    part's own payload and are cleared here.
    """
    return dataclasses.replace(header, tensor_dimensions=list(part.values.shape), entry_points=[])


def concatenate_elements(
    elements: Mapping[str, np.ndarray], axis: int = 0
) -> tuple[np.ndarray, list[str], TensorDimensionMapping]:
    """Join several topology elements into the tensor of one non-block NDU.

    Returns the tensor, the ``topology_elem_id_list`` and the
    ``topology_tensor_dimension_mapping()`` that splits it again.  All
    elements need the same number of dimensions and equal sizes except along
    ``axis``, and at least one row each along it.
    """
    if len(elements) < 2:
        raise ConfigError("a multi-element NDU needs at least two topology elements")
    arrays = [np.asarray(a) for a in elements.values()]
    ndim = arrays[0].ndim
    if not 0 <= axis < ndim:
        raise ConfigError(f"concatenation axis {axis} names no dimension of {ndim}-D tensors")
    for name, a in zip(elements, arrays):
        if (
            a.ndim != ndim
            or any(a.shape[i] != arrays[0].shape[i] for i in range(ndim) if i != axis)
            or a.shape[axis] < 1
        ):
            raise ConfigError(
                f"element {name!r} of shape {a.shape} does not join {arrays[0].shape} along dimension {axis}"
            )
    split = list(np.cumsum([a.shape[axis] for a in arrays[:-1]]).tolist())
    return np.concatenate(arrays, axis=axis), [str(n) for n in elements], TensorDimensionMapping(axis, split)


def coded_scan_order(coded: Sequence[int], scan_order: int) -> int:
    """The scan order a tensor is coded with, given the shape of its coded view:
    block scans need a 2-D view (first dimension x the others) with more than
    one row and column; otherwise the header would need entry points that the
    payload does not have (the reference encoder fails on such tensors)."""
    if len(coded) < 2 or coded[0] <= 1 or int(np.prod(coded[1:])) <= 1:
        return 0
    return scan_order


def code_payload(
    tensors: Sequence[tuple[str, np.ndarray, int | None, TensorCoding]],
    qp_bits: int,
    *,
    bases: Sequence[np.ndarray | None] | None = None,
    histories: Sequence[np.ndarray | None] | None = None,
) -> tuple[bytes, list[EntryPoint]]:
    """DeepCABAC payload of an NDU (clause 7.3.9): for each tensor
    ``(name, integers in coded view, QP offset or None for NNR_PT_INT, coding)``
    in coding order, its QP offset in ``qp_bits`` bypass bins and its integers;
    then the ``entry_point_list()`` of its block-scanned tensors (concatenated
    in coding order), the ones the decoder meets: the encoder records them
    and resolves their windows from the finished payload.  ``bases`` and
    ``histories`` (per tensor, coded view) are the TCA base and HDSP history
    of an incremental update."""
    bases = bases or [None] * len(tensors)
    histories = histories or [None] * len(tensors)
    enc = Encoder()
    recorded: list[np.ndarray] = []
    for (name, stored, qp_offset, coding), base, history in zip(tensors, bases, histories):
        if qp_offset is not None:
            enc.encode_bypass(qp_offset, qp_bits)
        try:
            enc.encode_tensor(stored, coding, base=base, history=history)
        except EncodeError as e:
            raise EncodeError(f"tensor {name!r}: {e}") from e
        recorded.append(enc.entry_points())
    payload = enc.finish()
    entry_points: list[EntryPoint] = []
    for eps in recorded:
        eps = resolve_entry_points(payload, eps)
        entry_points += [
            EntryPoint(
                int(eps[r]["bit_position"]) - int(eps[r - 1]["bit_position"]),
                int(eps[r]["value"]),
                int(eps[r]["dq_state"]),
            )
            for r in range(1, len(eps))
        ]
    return payload, entry_points


def build_ndu(
    stored: np.ndarray,
    element_ids: Sequence[str | int],
    *,
    qp: int | None = None,
    quantization_base: tuple[int, int] = (2, 0),
    dq_flag: bool = False,
    codebook: IntegerCodebook | None = None,
    scan_order: int = 0,
    cabac_unary_length_minus1: int = 10,
    general_profile_idc: int = 1,
    first_tensor_dimension_shift: int = 0,
    tensor_dimension_mapping: TensorDimensionMapping | None = None,
    partial_data_counter: int | None = None,
    parameter_id: int = 0,
    row_skip_flag: bool = False,
    param_opt: bool = True,
) -> CompressedDataUnit:
    """A non-block NDU carrying one tensor of stored integers.

    ``qp`` None makes an NNR_PT_INT unit (the integers are the values);
    otherwise NNR_PT_FLOAT, its QP coded against ``quantization_base`` =
    ``(qp_density, quantization_parameter)`` of the parameter set in force
    (:meth:`~nnc_core.bitstream.units.ParseState.quantization_base`).
    ``stored`` has the tensor's own shape; it is coded in its
    :func:`coded_view`.  Several ``element_ids`` need a
    ``tensor_dimension_mapping`` (see :func:`concatenate_elements`).
    A block scan is only signalled when the coded view has more than one row
    and column: otherwise it scans like row-major order but the header would
    need entry points that the payload does not have (the reference encoder
    fails on such tensors), so ``scan_order`` 0 is written.
    """
    stored = np.asarray(stored)
    if stored.ndim == 0:
        stored = stored.reshape(1)
    shape = tuple(int(d) for d in stored.shape)
    shift = first_tensor_dimension_shift if len(shape) > 1 else 0
    if first_tensor_dimension_shift and len(shape) < 2:
        raise ConfigError("first_tensor_dimension_shift needs a tensor of two or more dimensions")
    if not 0 <= shift < len(shape):
        raise ConfigError(f"first_tensor_dimension_shift {shift} names no dimension of shape {shape}")
    if shift and general_profile_idc != 1:
        raise ConfigError("first_tensor_dimension_shift needs general_profile_idc 1")
    if (len(element_ids) > 1) != (tensor_dimension_mapping is not None):
        raise ConfigError("several topology elements go with a tensor dimension mapping, one element without")
    coded = coded_view(stored, shift)
    coding = TensorCoding(
        dq_flag=dq_flag,
        scan_order=coded_scan_order(coded.shape, scan_order),
        cabac_unary_length_minus1=cabac_unary_length_minus1,
        general_profile_idc=general_profile_idc,
        row_skip_flag=row_skip_flag,
        param_opt=param_opt,
        codebook_size=len(codebook.values) if codebook else 0,
        codebook_zero_offset=codebook.zero_offset if codebook else 0,
    )
    density, base = quantization_base
    qp_bits = 6 + density
    offset = None
    if qp is not None:
        offset = qp - base
        if not -(1 << (qp_bits - 1)) <= offset < 1 << (qp_bits - 1):
            raise ConfigError(
                f"qp {qp} is {offset} away from the base QP {base}: more than qp_density {density} can signal"
            )
    payload, entry_points = code_payload(
        [(str(element_ids[0]), coded.astype(np.int32, copy=False), offset, coding)], qp_bits
    )
    header = NduHeader(
        payload_type=PayloadType.NNR_PT_INT if qp is None else PayloadType.NNR_PT_FLOAT,
        multiple_topology_elements_present_flag=len(element_ids) > 1,
        element_ids=list(element_ids),
        node_id_present_flag=general_profile_idc == 1,
        device_id=0,
        parameter_id=parameter_id,
        put_node_depth=0,
        codebook_present_flag=codebook is not None,
        codebooks=[codebook] if codebook else [],
        dq_flag=dq_flag,
        tensor_dimensions_flag=True,
        cabac_unary_length_flag=True,
        tensor_dimensions=list(shape),
        tensor_dimension_mapping=tensor_dimension_mapping,
        cabac_unary_length_minus1=cabac_unary_length_minus1,
        first_tensor_dimension_shift=shift,
        scan_order=coding.scan_order,
        entry_points=entry_points,
    )
    return CompressedDataUnit(
        UnitType.NNR_NDU, header=header, payload=payload, partial_data_counter=partial_data_counter
    )
