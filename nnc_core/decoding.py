"""The decoding process (ISO/IEC 15938-17 clause 8 in our notes' numbering:
entropy decoding of NDU payloads and reconstruction of tensors).

:func:`decode_bitstream` turns a whole NNR bitstream into named numpy arrays:

* NNR_PT_INT: the decoded integers (int32);
* NNR_PT_FLOAT / NNR_PT_BLOCK members, uniform: ``float32(step) * float32(t)``
  where ``t`` is the stored integer (the reconstruction index under dependent
  quantization) and ``step`` follows from the tensor's QP;
* codebook tensors: ``codebook[t + CbZeroOffset] * step`` in float64, as the
  reference decoder returns them;
* NNR_PT_RAW_FLOAT: the transmitted float32 values.

Incremental streams keep per-tensor state between calls in a
:class:`DecoderState` (TCA base and HDSP history).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from nnc_core.bitstream.units import (
    CompressedDataUnit,
    LayerParameterSet,
    ModelParameterSet,
    NduHeader,
    ParameterTypes,
    PayloadType,
    StartUnit,
    Unit,
    read_units,
)
from nnc_core.deepcabac import Decoder, TensorCoding
from nnc_core.errors import BitstreamError

__all__ = ["quantization_step", "DecodedTensor", "DecoderState", "decode_bitstream", "decode"]


def quantization_step(qp: int, qp_density: int) -> np.float32:
    """Step size of a QP (clause 9): ``(k + qp mod k) * 2**(qp // k - d)``, k = 2**d."""
    k = 1 << qp_density
    mul = k + (qp & (k - 1))
    shift = qp >> qp_density
    # Computed in double and rounded to float32 like the reference decoder,
    # including overflow to infinity for absurd QPs (e.g. corrupted streams).
    with np.errstate(over="ignore", under="ignore"):
        return np.float32(np.ldexp(np.float64(mul), shift - qp_density))


@dataclass
class DecodedTensor:
    name: str
    values: np.ndarray
    stored: np.ndarray | None  # integers before reconstruction (None for raw floats)
    qp: int | None
    unit_index: int


@dataclass
class DecoderState:
    """Per-tensor state an incremental sequence of bitstreams carries."""

    base: dict[str, np.ndarray] = field(default_factory=dict)  # stored integers, for TCA
    history: dict[str, np.ndarray] = field(default_factory=dict)  # ever non-zero, for HDSP
    put_node_depth: dict[str, int] = field(default_factory=dict)


# Member order of an NNR_PT_BLOCK: in the header's id list, and inside the payload.
_LIST_ORDER = ("weight", "ls", "bn.beta", "bn.gamma", "bn.mean", "bn.var", "bias")
_CODING_ORDER = ("ls", "bias", "bn.beta", "bn.gamma", "bn.mean", "bn.var", "weight")


def _block_members(h: NduHeader, unit_index: int, offset: int) -> list[tuple[str, str, tuple[int, ...], int]]:
    """(role, name, shape, codebook index or -1) of each member, in coding order."""
    cpt = ParameterTypes(h.compressed_parameter_types)
    dims = tuple(h.tensor_dimensions)
    if not dims:
        raise BitstreamError("block NDU without tensor dimensions", unit_index=unit_index, byte_offset=offset)
    roles: list[str] = []
    if cpt & ParameterTypes.NNR_CPT_DC:
        roles += ["G", "H"]
    else:
        roles.append("weight")
    if cpt & ParameterTypes.NNR_CPT_LS:
        roles.append("ls")
    if cpt & ParameterTypes.NNR_CPT_BN:
        roles += ["bn.beta", "bn.gamma", "bn.mean", "bn.var"]
    if cpt & ParameterTypes.NNR_CPT_BI:
        roles.append("bias")
    if len(roles) != len(h.element_ids):
        raise BitstreamError(
            f"block with compressed_parameter_types {int(cpt)} has {len(roles)} members but {len(h.element_ids)} ids",
            unit_index=unit_index,
            byte_offset=offset,
        )
    names = dict(zip(roles, h.element_ids))
    members = []
    for role in _CODING_ORDER:
        if role == "weight" and cpt & ParameterTypes.NNR_CPT_DC:
            rank, rows = h.decomposition_rank or 0, h.g_number_of_rows or 0
            total = int(np.prod(dims))
            if rows == 0 or total % rows:
                raise BitstreamError(f"g_number_of_rows {rows} does not divide the weight", unit_index=unit_index, byte_offset=offset)
            members.append(("G", str(names["G"]), (rows, rank), 0 if h.codebooks else -1))
            members.append(("H", str(names["H"]), (rank, total // rows), 1 if len(h.codebooks) > 1 else -1))
        elif role in names:
            shape = dims if role == "weight" else (dims[0],)
            members.append((role, str(names[role]), shape, 0 if role == "weight" and h.codebooks else -1))
    return members


#: Largest tensor (in elements) the decoder allocates unless told otherwise.
DEFAULT_MAX_ELEMENTS = 1 << 31


def decode_bitstream(
    data: bytes | bytearray | memoryview,
    state: DecoderState | None = None,
    *,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
) -> list[DecodedTensor]:
    """Decode every tensor of an NNR bitstream, in stream order.

    ``max_elements`` bounds the size a header may declare for one tensor, so
    that a hostile header cannot make the decoder allocate without limit.
    """
    units = read_units(data)
    out: list[DecodedTensor] = []
    profile = 1
    mps: ModelParameterSet | None = None
    lps: LayerParameterSet | None = None
    for index, unit in enumerate(units):
        if isinstance(unit, StartUnit):
            profile = unit.general_profile_idc
            mps, lps = None, None
        elif isinstance(unit, ModelParameterSet):
            mps = unit
        elif isinstance(unit, LayerParameterSet):
            lps = unit
        elif isinstance(unit, CompressedDataUnit):
            out.extend(_decode_ndu(unit, index, profile, mps, lps, state, max_elements))
    return out


def _qp_base(mps: ModelParameterSet | None, lps: LayerParameterSet | None) -> tuple[int, int]:
    if lps is not None and lps.lps_qp_density is not None:
        return lps.lps_qp_density, lps.lps_quantization_parameter or 0
    if mps is not None and mps.mps_qp_density is not None:
        return mps.mps_qp_density, mps.mps_quantization_parameter or 0
    return 2, 0


def _decode_ndu(
    unit: CompressedDataUnit,
    index: int,
    profile: int,
    mps: ModelParameterSet | None,
    lps: LayerParameterSet | None,
    state: DecoderState | None,
    max_elements: int,
) -> list[DecodedTensor]:
    h = unit.header
    at = unit.payload_offset
    if mps is None:
        raise BitstreamError("compressed data unit before any model parameter set", unit_index=index, byte_offset=unit.offset)
    if h.payload_type == PayloadType.NNR_PT_RAW_FLOAT:
        dims = tuple(h.tensor_dimensions) or (1,)
        count = int(np.prod(dims, dtype=object))
        if len(unit.payload) != 4 * count:  # also bounds the allocation by the input
            raise BitstreamError(
                f"raw float payload has {len(unit.payload)} bytes, shape {dims} needs {4 * count}", unit_index=index, byte_offset=at
            )
        values = np.frombuffer(unit.payload, "<f4").astype(np.float32).reshape(dims)
        return [DecodedTensor(str(h.element_ids[0]), values, None, None, index)]

    if h.payload_type == PayloadType.NNR_PT_BLOCK:
        members = _block_members(h, index, unit.offset)
    else:
        dims = tuple(h.tensor_dimensions) or (1,)
        members = [("tensor", str(h.element_ids[0]), dims, 0 if h.codebooks else -1)]

    qp_density, base_qp = _qp_base(mps, lps)
    has_qp = h.payload_type != PayloadType.NNR_PT_INT
    results = []
    name = str(members[0][1])
    try:
        dec = Decoder(unit.payload)
        for role, name, shape, cb_index in members:
            if int(np.prod(shape, dtype=object)) > max_elements:
                raise BitstreamError(
                    f"tensor {name!r} of shape {list(shape)} is larger than the limit of {max_elements} elements",
                    unit_index=index,
                    byte_offset=unit.offset,
                )
            qp = None
            if has_qp:
                qp = base_qp + dec.decode_bypass(6 + qp_density, signed=True)
            codebook = h.codebooks[cb_index] if cb_index >= 0 else None
            coding = TensorCoding(
                dq_flag=h.dq_flag,
                scan_order=h.scan_order if len(shape) > 1 else 0,
                cabac_unary_length_minus1=h.cabac_unary_length_minus1,
                general_profile_idc=profile,
                parent_node_id_present_flag=h.parent_node_id_present_flag,
                codebook_size=len(codebook.values) if codebook else 0,
                codebook_zero_offset=codebook.zero_offset if codebook else 0,
            )
            base = history = None
            if state is not None:
                if h.temporal_context_modeling_flag and profile == 1:
                    base = state.base.get(name)
                    if base is None or base.size != int(np.prod(shape)):
                        raise BitstreamError(
                            f"tensor {name!r} uses temporal context adaptation but no parent of its size was decoded",
                            unit_index=index,
                            byte_offset=at,
                        )
                history = state.history.get(name)
                if history is not None and history.size != int(np.prod(shape)):
                    history = None
            decoded = dec.decode_tensor(shape, coding, base=base, history=history)
            stored = decoded.values
            values = _reconstruct(stored, h.payload_type, qp, qp_density, codebook)
            results.append(DecodedTensor(name, values, stored, qp, index))
        dec.finish()
    except BitstreamError as e:
        if e.unit_index is None:  # from the entropy decoder: say where
            raise BitstreamError(f"tensor {name!r}: {e}", unit_index=index, byte_offset=at) from e
        raise
    if state is not None:
        for r in results:
            state.base[r.name] = r.stored
            seen = r.stored != 0
            prev = state.history.get(r.name)
            state.history[r.name] = seen if prev is None or prev.shape != seen.shape else (prev | seen)
            if h.put_node_depth is not None:
                state.put_node_depth[r.name] = h.put_node_depth
    return results


def _reconstruct(stored: np.ndarray, payload_type: int, qp: int | None, qp_density: int, codebook) -> np.ndarray:
    if payload_type == PayloadType.NNR_PT_INT:
        return stored.astype(np.int32)
    step = quantization_step(qp or 0, qp_density)
    if codebook is not None:
        table = np.asarray(codebook.values, dtype=np.int64)
        idx = stored.astype(np.int64) + codebook.zero_offset
        return table[idx].astype(np.float64) * np.float64(step)
    with np.errstate(over="ignore", invalid="ignore"):
        return (step * stored.astype(np.float32)).astype(np.float32)


def decode(
    data: bytes | bytearray | memoryview,
    /,
    *,
    state: DecoderState | None = None,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
) -> dict[str, np.ndarray]:
    """Decode an NNR bitstream into ``{tensor name: array}`` in stream order.

    Pass the same ``state`` to decode the bitstreams of an incremental
    sequence in order (the decoded arrays of an update are the update itself).
    """
    return {t.name: t.values for t in decode_bitstream(data, state, max_elements=max_elements)}
