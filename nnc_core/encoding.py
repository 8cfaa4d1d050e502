"""Encoding a model (named tensors) into an NNR bitstream.

This is the encoder counterpart of :mod:`nnc_core.decoding`: quantization
(clause 9: uniform reconstruction quantization, or dependent scalar
quantization with the trellis of :func:`nnc_core.deepcabac.dq_quantize`),
DeepCABAC coding of each tensor into its own NNR_NDU, and the high-level
syntax around it (NNR_STR, NNR_MPS, NNR_TPL).

With the same settings the bitstream is byte-identical to the one the
reference software (NNCodec 2.1.3) writes for a plain dictionary of tensors:
float tensors with more than one dimension are weights coded at ``qp``, the
others at ``nonweight_qp``; integer tensors are coded losslessly as
NNR_PT_INT.  Work goes tensor by tensor, so memory stays near one model's size.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from nnc_core.bitstream.bits import BitWriter
from nnc_core.bitstream.units import (
    CompressedDataUnit,
    IntegerCodebook,
    EntryPoint,
    ModelParameterSet,
    NduHeader,
    ParseState,
    PayloadType,
    StartUnit,
    TopologyStorageFormat,
    TopologyUnit,
    UnitType,
    write_integer_codebook,
    write_unit,
)
from nnc_core.decoding import quantization_step
from nnc_core.deepcabac import Decoder, Encoder, TensorCoding, dq_quantize, encode_tensor
from nnc_core.errors import ConfigError, EncodeError

__all__ = ["encode", "uniform_quantize"]

_INT_KINDS = "iu"


def uniform_quantize(weights: np.ndarray, step: np.float32) -> np.ndarray:
    """Uniform reconstruction quantization: ``round(float32(1/step) * w)``,
    rounding halves away from zero (the reference encoder's arithmetic)."""
    inv = np.float32(1.0) / np.float32(step)
    scaled = (inv * np.asarray(weights, dtype=np.float32)).astype(np.float64)
    levels = np.sign(scaled) * np.floor(np.abs(scaled) + 0.5)
    if levels.size and (levels.max() > 2**31 - 1 or levels.min() < -(2**31)):
        raise EncodeError(f"weights too large for step {float(step)}: levels exceed int32")
    return levels.astype(np.int32)


def _overflowing(w: np.ndarray, step: np.float32, dq: bool) -> bool:
    """Would quantizing at this step leave the int32 range (reference encoder's test)?"""
    if not w.size:
        return False
    scaled = ((np.float32(1.0) / step) * w).astype(np.float64)  # float32 product
    top = np.floor(float(scaled.max()) + 0.5)
    bottom = -np.floor(-float(scaled.min()) + 0.5)
    if dq:
        return top > 2**31 - 3 or bottom < -(2**31 - 2)
    return top > 2**31 - 1 or bottom < -(2**31)


def _overflow_qp(w: np.ndarray, qp_density: int) -> int:
    """The QP the reference encoder falls back to when levels would overflow int32:
    the smallest step that keeps max|w| within 2**31 - 3 steps."""
    k = 1 << qp_density
    min_step = float(np.max(np.abs(w))) / float((1 << 31) - 3)
    base = float(np.float32(np.floor(np.log2(min_step)) * k))
    return int(np.ceil(np.float32(base + ((min_step * k) / 2.0 ** (base / k) - k))))


def _quantize(name: str, w: np.ndarray, qp: int, qp_density: int, dq: bool, scan_order: int) -> tuple[np.ndarray, int]:
    """Stored integers of a float tensor and the QP they use."""
    step = quantization_step(qp, qp_density)
    if _overflowing(w, step, dq):
        qp = _overflow_qp(w, qp_density)
        step = quantization_step(qp, qp_density)
    try:
        stored = dq_quantize(w, step, scan_order=scan_order) if dq else uniform_quantize(w, step)
    except EncodeError as e:
        raise EncodeError(f"tensor {name!r}: {e}") from e
    return stored, qp


def _codebook_bits(values: list[int], zero_offset: int, egk: int) -> int:
    w = BitWriter()
    write_integer_codebook(w, IntegerCodebook(egk, values, zero_offset))
    return w.bit_length


def _codebook_quantize(
    name: str, w: np.ndarray, qp: int, qp_density: int, use_dq: bool, mode: int, scan_order: int, unary: int, param_opt: bool
) -> tuple[np.ndarray, int, IntegerCodebook | None]:
    """Codebook quantization (clause 9.2.3 signalling), with the reference encoder's choices.

    Levels of uniform quantization (at a step halved when DQ was asked for,
    to compensate for not using it) become indices into their sorted unique
    values; the zero offset is the one that codes the indices in the fewest
    bytes, and ``codebook_egk`` the one that codes the codebook in the fewest
    bits.  Mode 2 keeps uniform quantization when that codes smaller.
    Returns stored integers, QP and codebook (None: uniform).
    """
    if unary < 1:
        raise ConfigError("codebooks need cabac_unary_length_minus1 >= 1 (their search codes with that many flags)")
    levels, cb_qp = _quantize(name, w, qp - (1 << qp_density) if use_dq else qp, qp_density, False, scan_order)
    values, inverse = np.unique(levels, return_inverse=True)
    indices = inverse.reshape(levels.shape).astype(np.int32)
    # The reference encoder's search codes with cabac_unary_length_minus1 flags
    # (not + 1) and profile-0 binarization; reproduced for identical choices.
    search = TensorCoding(cabac_unary_length_minus1=unary - 1, general_profile_idc=0, param_opt=True)
    best_zero, best_bytes = 0, None
    for zero in range(len(values)):
        size = len(encode_tensor(indices - zero, search))
        if best_bytes is None or size < best_bytes:
            best_zero, best_bytes = zero, size
    codebook_values = [int(v) for v in values]
    bits = [_codebook_bits(codebook_values, best_zero, egk) for egk in range(16)]
    codebook = IntegerCodebook(int(np.argmin(bits)), codebook_values, best_zero)
    indices = (indices - best_zero).astype(np.int32)
    if mode == 1:
        return indices, cb_qp, codebook
    uniform, uni_qp = _quantize(name, w, qp, qp_density, True, scan_order) if use_dq else (levels, cb_qp)
    cost = TensorCoding(dq_flag=use_dq, scan_order=scan_order, cabac_unary_length_minus1=unary - 1, param_opt=param_opt)
    bytes_uniform = len(encode_tensor(uniform, cost))
    cost = TensorCoding(scan_order=scan_order, cabac_unary_length_minus1=unary - 1, param_opt=param_opt)
    # (the reference adds the codebook's size in bits to a size in bytes)
    bytes_codebook = len(encode_tensor(indices, cost)) + bits[codebook.egk]
    if bytes_codebook < bytes_uniform:
        return indices, cb_qp, codebook
    return uniform, uni_qp, None


def _check_qp(name: str, qp: int, base_qp: int, qp_density: int) -> None:
    bits = 6 + qp_density
    offset = qp - base_qp
    if not -(1 << (bits - 1)) <= offset < (1 << (bits - 1)):
        raise ConfigError(
            f"tensor {name!r}: qp {qp} is outside {-(1 << (bits - 1)) + base_qp}..{(1 << (bits - 1)) - 1 + base_qp}, "
            f"the range qp_density {qp_density} can signal"
        )


def _entry_points(payload: bytes, shape: tuple[int, ...], coding: TensorCoding, qp_bits: int | None) -> list[EntryPoint]:
    """Entry points of a block-scanned tensor, read back from its payload."""
    dec = Decoder(payload)
    if qp_bits is not None:
        dec.decode_bypass(qp_bits)
    eps = dec.decode_tensor(shape, coding).entry_points
    return [
        EntryPoint(int(eps[r]["bit_position"]) - int(eps[r - 1]["bit_position"]), int(eps[r]["value"]), int(eps[r]["dq_state"]))
        for r in range(1, len(eps))
    ]


def encode(
    tensors: Mapping[str, np.ndarray],
    /,
    *,
    qp: int = -38,
    qp_density: int = 2,
    nonweight_qp: int = -75,
    qp_per_tensor: Mapping[str, int] | None = None,
    use_dq: bool = True,
    codebook_mode: int = 0,
    scan_order: int = 0,
    cabac_unary_length_minus1: int = 10,
    param_opt: bool = True,
    row_skipping: bool = False,
    progress: Callable[[int, int, str], None] | None = None,
) -> bytes:
    """Encode named tensors into one NNR bitstream.

    Args:
        tensors: name -> array; float arrays are quantized, integer arrays
            (up to 32 bits) coded losslessly.
        qp, qp_density: quantization parameter of weights (tensors with more
            than one dimension); the step size is ``2**(qp / 2**qp_density)``
            up to the density's resolution.
        nonweight_qp: QP of the other float tensors (biases, norms).
            A tensor whose levels would overflow int32 at its QP gets the
            smallest larger QP that fits, as the reference encoder does.
        qp_per_tensor: QP overrides by tensor name.
        use_dq: dependent scalar quantization (trellis) instead of uniform.
        codebook_mode: 0 none; 1 every float tensor coded as indices into an
            integer codebook; 2 a codebook where it codes smaller.
        scan_order: 0 row-major, 1..4 block scans with entry points.
        cabac_unary_length_minus1, param_opt, row_skipping: entropy coding
            options (see :class:`nnc_core.deepcabac.TensorCoding`).
        progress: called as ``progress(done, total, name)`` after each tensor.

    Raises:
        EncodeError: a tensor holds NaN or infinity, an unsupported dtype, or
            values its step cannot represent in int32.
        ConfigError: invalid settings.
    """
    if not 0 <= qp_density <= 7:
        raise ConfigError(f"qp_density {qp_density} outside 0..7")
    if not 0 <= scan_order <= 4:
        raise ConfigError(f"scan_order {scan_order} outside 0..4")
    if codebook_mode not in (0, 1, 2):
        raise ConfigError(f"codebook_mode {codebook_mode} is not 0, 1 or 2")
    qp_per_tensor = dict(qp_per_tensor or {})
    unknown = set(qp_per_tensor) - set(tensors)
    if unknown:
        raise ConfigError(f"qp_per_tensor names tensors that are not in the model: {sorted(unknown)}")

    state = ParseState()
    profile = 1
    mps = ModelParameterSet(
        UnitType.NNR_MPS,
        topology_carriage_flag=True,
        mps_quantization_method_flags=1,
        mps_qp_density=qp_density,
        mps_quantization_parameter=0,
    )
    parts = [
        write_unit(StartUnit(UnitType.NNR_STR, general_profile_idc=profile), state),
        write_unit(mps, state),
        write_unit(TopologyUnit(UnitType.NNR_TPL, topology_storage_format=TopologyStorageFormat.NNR_TPL_UNREC, topology_data=b"\x00"), state),
    ]
    total = len(tensors)
    for index, (name, value) in enumerate(tensors.items()):
        parts.append(
            _encode_tensor(
                str(name), np.asarray(value), index, state,
                qp=qp_per_tensor.get(name), weight_qp=qp, nonweight_qp=nonweight_qp, qp_density=qp_density,
                use_dq=use_dq, codebook_mode=codebook_mode, scan_order=scan_order, unary=cabac_unary_length_minus1,
                param_opt=param_opt, row_skipping=row_skipping,
            )
        )
        if progress is not None:
            progress(index + 1, total, str(name))
    return b"".join(parts)


def _encode_tensor(
    name: str,
    value: np.ndarray,
    index: int,
    state: ParseState,
    *,
    qp: int | None,
    weight_qp: int,
    nonweight_qp: int,
    qp_density: int,
    use_dq: bool,
    codebook_mode: int,
    scan_order: int,
    unary: int,
    param_opt: bool,
    row_skipping: bool,
) -> bytes:
    if value.ndim == 0:
        value = value.reshape(1)
    shape = tuple(int(d) for d in value.shape)
    kind = value.dtype.kind
    if kind in _INT_KINDS:
        if value.size and (value.min() < -(2**31) or value.max() > 2**31 - 1):
            raise EncodeError(f"tensor {name!r}: integer values outside int32")
        stored = value.astype(np.int32)
        payload_type, dq, tensor_qp, codebook = PayloadType.NNR_PT_INT, False, None, None
    elif kind == "f":
        w = value.astype(np.float32)
        if not np.all(np.isfinite(w)):
            bad = int(np.flatnonzero(~np.isfinite(w.reshape(-1)))[0])
            raise EncodeError(f"tensor {name!r}: non-finite value {w.reshape(-1)[bad]} at flat index {bad}")
        requested = qp if qp is not None else (weight_qp if value.ndim > 1 else nonweight_qp)
        _check_qp(name, requested, 0, qp_density)
        tensor_scan = scan_order if len(shape) > 1 else 0
        if codebook_mode:
            stored, tensor_qp, codebook = _codebook_quantize(
                name, w, requested, qp_density, use_dq, codebook_mode, tensor_scan, unary, param_opt
            )
            dq = use_dq and codebook is None
        else:
            dq, codebook = use_dq, None
            stored, tensor_qp = _quantize(name, w, requested, qp_density, dq, tensor_scan)
        _check_qp(name, tensor_qp, 0, qp_density)
        payload_type = PayloadType.NNR_PT_FLOAT
    else:
        raise EncodeError(f"tensor {name!r}: dtype {value.dtype} is not supported (integers up to 32 bits or floats)")

    coding = TensorCoding(
        dq_flag=dq,
        scan_order=scan_order if len(shape) > 1 else 0,
        cabac_unary_length_minus1=unary,
        general_profile_idc=1,
        row_skip_flag=row_skipping,
        param_opt=param_opt,
        codebook_size=len(codebook.values) if codebook else 0,
        codebook_zero_offset=codebook.zero_offset if codebook else 0,
    )
    enc = Encoder()
    qp_bits = None
    if tensor_qp is not None:
        qp_bits = 6 + qp_density
        enc.encode_bypass(tensor_qp, qp_bits)
    try:
        enc.encode_tensor(stored, coding)
    except EncodeError as e:
        raise EncodeError(f"tensor {name!r}: {e}") from e
    payload = enc.finish()

    header = NduHeader(
        payload_type=payload_type,
        element_ids=[name],
        node_id_present_flag=True,
        device_id=0,
        parameter_id=index,
        put_node_depth=0,
        codebook_present_flag=codebook is not None,
        codebooks=[codebook] if codebook else [],
        dq_flag=dq,
        tensor_dimensions_flag=True,
        cabac_unary_length_flag=True,
        tensor_dimensions=list(shape),
        cabac_unary_length_minus1=unary,
        scan_order=coding.scan_order,
    )
    if len(shape) > 1 and coding.scan_order > 0:
        header.entry_points = _entry_points(payload, shape, coding, qp_bits)
    return write_unit(CompressedDataUnit(UnitType.NNR_NDU, header=header, payload=payload), state)

