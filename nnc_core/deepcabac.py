"""DeepCABAC entropy coding (ISO/IEC 15938-17 clause 10) for numpy arrays.

This module is the only one that touches the compiled extension
``nnc_core._deepcabac``.  It offers:

* :class:`TensorCoding`: the entropy-coding parameters of one tensor;
* :class:`Encoder` and :class:`Decoder`: one NDU payload (one arithmetic
  codeword holding one or more tensors);
* :func:`encode_tensor` / :func:`decode_tensor`: a payload of a single tensor;
* :func:`dq_quantize` / :func:`urq_quantize`: the encoder's quantizers.

Values are *stored integers*: plain levels, or with dependent quantization
the reconstruction indices (the integers a decoder multiplies by the step
size).  Arrays cross into C without copies when they are C-contiguous int32
(values, TCA base) or uint8/bool (HDSP history).

The C calls release the GIL, so separate Encoder/Decoder objects can work on
several threads at once.  One object must not be shared by threads at the
same time; doing so raises :class:`~nnc_core.errors.CoderStateError`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from nnc_core._deepcabac import ffi, lib
from nnc_core.errors import (
    BitstreamError,
    CoderStateError,
    ConfigError,
    EncodeError,
    NncError,
    NncMemoryError,
    QuantizationOverflowError,
)

if TYPE_CHECKING:  # typing.Self is Python 3.11+: for the type checker only (typeshed has typing_extensions)
    from typing_extensions import Self

__all__ = [
    "TensorCoding",
    "DecodedLevels",
    "Encoder",
    "Decoder",
    "encode_tensor",
    "decode_tensor",
    "ENTRY_POINT_DTYPE",
    "resolve_entry_points",
    "num_entry_points",
    "scan_positions",
    "dq_quantize",
    "urq_quantize",
]

_ABI_VERSION = 4
if lib.dcabac_abi_version() != _ABI_VERSION:  # pragma: no cover - broken install
    raise ImportError(
        f"nnc_core._deepcabac has ABI version {lib.dcabac_abi_version()}, this nnc_core expects "
        f"{_ABI_VERSION}: the compiled extension is stale, reinstall nnc-core"
    )

#: One entry point per block row of a block scan (clause 10.5).
ENTRY_POINT_DTYPE = np.dtype([("bit_position", "<u8"), ("value", "<u4"), ("dq_state", "<u4")])

_STATUS_ERRORS: dict[int, type[NncError]] = {
    lib.DCABAC_E_NOMEM: NncMemoryError,
    lib.DCABAC_E_ARG: ConfigError,
    lib.DCABAC_E_STATE: CoderStateError,
    lib.DCABAC_E_RANGE: EncodeError,
    lib.DCABAC_E_TRUNCATED: BitstreamError,
    lib.DCABAC_E_CORRUPT: BitstreamError,
    lib.DCABAC_E_TRAILING: BitstreamError,
    lib.DCABAC_E_OVERFLOW: QuantizationOverflowError,
}


def _check(status: int, detail: Any) -> None:
    """Turn a C status code into the matching exception."""
    if status == lib.DCABAC_OK:
        return
    message = ffi.string(lib.dcabac_strerror(status)).decode()
    text = ffi.string(detail).decode(errors="replace")
    if text:
        message = f"{message}: {text}"
    raise _STATUS_ERRORS.get(status, NncError)(message)


@dataclass(frozen=True)
class TensorCoding:
    """Entropy-coding parameters of one tensor.

    Attributes:
        dq_flag: values are dependent-quantization reconstruction indices.
        scan_order: 0 row-major, 1..4 block scan with blocks of ``4 << scan_order``.
        cabac_unary_length_minus1: number of greater-than flags minus one (0..255).
        general_profile_idc: 0 (first-edition syntax) or 1.
        parent_node_id_present_flag: the NDU carries a parent reference, which
            makes the HDSP flag present.
        hdsp_flag: encoder only: use history-dependent significance contexts
            (needs ``history``).
        row_skip_flag: encoder only: signal all-zero rows and skip them.
        param_opt: encoder only: choose context initialisation sets by cost
            estimation (as the reference encoder does by default).
        codebook_size: entries of the integer codebook (0 = none).
        codebook_zero_offset: ``CbZeroOffset``: index of the codebook's zero point.
        dq_any_index: encoder only, with ``dq_flag``: accept integers that are
            not reconstruction indices of their DQ state and code them as the
            reference encoder does, as level ``floor((t + sgn(t)*(s & 1)) / 2)``
            (decoding returns that level's index, a neighbour of ``t``).  Only
            for reproducing the reference's integer-aligned mode.
    """

    dq_flag: bool = False
    scan_order: int = 0
    cabac_unary_length_minus1: int = 10
    general_profile_idc: int = 1
    parent_node_id_present_flag: bool = False
    hdsp_flag: bool = False
    row_skip_flag: bool = False
    param_opt: bool = True
    codebook_size: int = 0
    codebook_zero_offset: int = 0
    dq_any_index: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.scan_order <= 4:
            raise ConfigError(f"scan_order {self.scan_order} outside 0..4")
        if not 0 <= self.cabac_unary_length_minus1 <= 255:
            raise ConfigError(f"cabac_unary_length_minus1 {self.cabac_unary_length_minus1} outside 0..255")
        if self.general_profile_idc not in (0, 1):
            raise ConfigError(f"general_profile_idc {self.general_profile_idc} is not 0 or 1")
        if self.codebook_size < 0 or self.codebook_size >= 1 << 32:
            raise ConfigError(f"codebook_size {self.codebook_size} out of range")
        if self.codebook_size and not 0 <= self.codebook_zero_offset < self.codebook_size:
            raise ConfigError(
                f"codebook_zero_offset {self.codebook_zero_offset} outside a codebook of {self.codebook_size} entries"
            )
        if self.hdsp_flag and not self.parent_node_id_present_flag:
            raise ConfigError("hdsp_flag needs parent_node_id_present_flag")


@dataclass(frozen=True)
class DecodedLevels:
    """A decoded tensor's stored integers and the per-tensor flags read with them."""

    values: np.ndarray
    hdsp_flag: bool
    row_skip_flag: bool
    entry_points: np.ndarray  # ENTRY_POINT_DTYPE, one per block row (empty without block scan)


def _matrix_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """The H x W matrix view of a tensor: first dimension by the rest."""
    if len(shape) == 0:
        return 1, 1
    width = 1
    for d in shape[1:]:
        width *= int(d)
    return int(shape[0]), width


def _c_output(shape: tuple[int, ...]) -> np.ndarray:
    """A fresh int32 array for C to fill (decoded or quantized levels).

    np.zeros, not np.empty: numpy asks the kernel for transparent huge pages
    for large np.empty arrays, and where free ones are scarce the C code's
    first writes stall on memory compaction (up to 150 ms per 64 MiB seen);
    calloc'd memory gets 4 KiB pages, which fault in steadily (about 25 ms
    per 64 MiB), and costs no writes of its own.
    """
    return np.zeros(shape, dtype=np.int32)


def _c_params(
    shape: tuple[int, ...],
    coding: TensorCoding,
    base: np.ndarray | None,
    history: np.ndarray | None,
    keep: list[object],
) -> Any:
    if not isinstance(coding, TensorCoding):
        raise ConfigError(f"coding must be a TensorCoding, not {type(coding).__name__}")
    height, width = _matrix_shape(shape)
    p = ffi.new("dcabac_tensor *")
    p.height = height
    p.width = width
    p.scan_order = coding.scan_order
    p.num_gt_flags = coding.cabac_unary_length_minus1 + 1
    p.dq_flag = bool(coding.dq_flag)
    p.general_profile_idc = coding.general_profile_idc
    p.parent_flag = bool(coding.parent_node_id_present_flag)
    p.hdsp_flag = bool(coding.hdsp_flag)
    p.row_skip_flag = bool(coding.row_skip_flag)
    p.param_opt = bool(coding.param_opt)
    p.dq_any_index = bool(coding.dq_any_index)
    p.codebook_size = coding.codebook_size
    p.codebook_zero = coding.codebook_zero_offset
    n = height * width
    if base is not None:
        b = _as_c_array(base, np.int32, n, "base")
        keep.append(b)
        p.base = ffi.from_buffer("int32_t[]", b)
    if history is not None:
        h = _as_c_array(history, np.uint8, n, "history")
        keep.append(h)
        p.history = ffi.from_buffer("uint8_t[]", h)
    return p


def _as_c_array(a: Any, dtype: type, size: int, what: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.dtype == np.bool_ and dtype is np.uint8:
        arr = arr.view(np.uint8)
    if arr.dtype.kind not in "iub":
        raise ConfigError(f"{what} must hold integers, got dtype {arr.dtype}")
    if arr.size != size:
        raise ConfigError(f"{what} has {arr.size} elements, the tensor has {size}")
    if arr.dtype != dtype:
        converted: np.ndarray = arr.astype(dtype)
        if not np.array_equal(converted, arr):
            raise ConfigError(f"{what} values do not fit {np.dtype(dtype).name}")
        arr = converted
    return np.ascontiguousarray(arr)


class _Handle:
    """Owns a C handle and guards it against concurrent use."""

    _new: Any
    _free: Any
    _message: Any

    def __init__(self) -> None:
        handle = self._new()
        if handle == ffi.NULL:
            raise NncMemoryError("cannot allocate a DeepCABAC coder")
        self._h = ffi.gc(handle, self._free)
        self._lock = threading.Lock()

    def _call(self, fn: Any, *args: Any) -> None:
        if self._h is None:
            raise CoderStateError(f"this {type(self).__name__} is closed")
        if not self._lock.acquire(blocking=False):
            raise CoderStateError(f"{type(self).__name__} objects must not be used by several threads at once")
        try:
            _check(fn(self._h, *args), self._message(self._h))
        finally:
            self._lock.release()

    def close(self) -> None:
        """Free the C handle now rather than at garbage collection."""
        if self._h is not None:
            ffi.release(self._h)
            self._h = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Encoder(_Handle):
    """Encodes one NDU payload: tensors in coding order, then :meth:`finish`.

    >>> enc = Encoder()
    >>> enc.encode_tensor(np.array([[1, 0, -2, 3], [0, 0, 1, -1]], dtype=np.int32), TensorCoding())
    >>> enc.finish().hex()
    '4680105cb4c380'
    """

    _new = lib.dcabac_encoder_new
    _free = lib.dcabac_encoder_free
    _message = lib.dcabac_encoder_message

    def __init__(self, *, simd: bool = True) -> None:
        """``simd=False`` forces the portable estimation pass (same bytes, slower)."""
        super().__init__()
        self.simd = bool(lib.dcabac_encoder_set_simd(self._h, simd))
        self._call(lib.dcabac_enc_begin)

    def encode_bypass(self, value: int, nbits: int) -> None:
        """Code ``value`` as ``nbits`` bypass bins (two's complement if negative)."""
        if not 0 <= nbits <= 32:
            raise ConfigError(f"bypass bit count {nbits} outside 0..32")
        if nbits and not -(1 << (nbits - 1)) <= value < (1 << nbits):
            raise EncodeError(f"value {value} does not fit in {nbits} bits")
        self._call(lib.dcabac_enc_bypass, value & 0xFFFFFFFF, nbits)

    def encode_tensor(
        self,
        values: np.ndarray,
        coding: TensorCoding,
        /,
        *,
        base: np.ndarray | None = None,
        history: np.ndarray | None = None,
    ) -> None:
        """Code one tensor's stored integers.

        Args:
            values: integer array; its shape gives the matrix view (first
                dimension = rows).  Must fit int32.
            coding: the tensor's entropy-coding parameters.
            base: TCA: the parent tensor's stored integers (same size).
            history: HDSP: non-zero where an earlier version was non-zero.
        """
        arr = np.asarray(values)
        keep: list[object] = []
        params = _c_params(arr.shape, coding, base, history, keep)
        data = _as_c_array(arr, np.int32, arr.size, "values")
        self._call(lib.dcabac_enc_tensor, params, ffi.from_buffer("int32_t[]", data))

    def entry_points(self) -> np.ndarray:
        """Entry points (clause 10.5) of the last tensor coded, as
        :meth:`Decoder.decode_tensor` reports them, but ``value`` is not yet
        the decoder's window: pass the finished payload and these to
        :func:`resolve_entry_points`."""
        count = ffi.new("size_t *")
        self._call(lib.dcabac_enc_entry_points, ffi.NULL, 0, count)
        eps = np.zeros(count[0], dtype=ENTRY_POINT_DTYPE)
        if count[0]:
            self._call(
                lib.dcabac_enc_entry_points, ffi.cast("dcabac_entry_point *", ffi.from_buffer(eps)), count[0], count
            )
        return eps

    def finish(self) -> bytes:
        """Terminate the codeword and return the payload; the encoder restarts empty."""
        data = ffi.new("const uint8_t **")
        size = ffi.new("size_t *")
        self._call(lib.dcabac_enc_finish, data, size)
        payload = bytes(ffi.buffer(data[0], size[0]))
        self._call(lib.dcabac_enc_begin)
        return payload


def resolve_entry_points(payload: bytes, eps: np.ndarray) -> np.ndarray:
    """Entry points of :meth:`Encoder.entry_points` with the decoder's window
    as ``value``: the decoder's arithmetic value is the codeword minus the
    encoder's interval base (clause 10.3), so its 9-bit window at bit
    position b is payload bits b..b+8 (zero past the end) minus the base's
    low 9 bits, modulo 512."""
    out = eps.copy()
    if not len(out):
        return out
    pos = out["bit_position"].astype(np.int64)
    padded = np.frombuffer(bytes(payload) + bytes(3), dtype=np.uint8).astype(np.uint32)
    first = np.minimum(pos >> 3, len(payload))
    word = (padded[first] << 16) | (padded[first + 1] << 8) | padded[first + 2]
    window = (word >> (15 - (pos & 7)).astype(np.uint32)) & 511
    out["value"] = (window - out["value"]) & 511
    return out


class Decoder(_Handle):
    """Decodes one NDU payload: tensors in coding order, then :meth:`finish`."""

    _new = lib.dcabac_decoder_new
    _free = lib.dcabac_decoder_free
    _message = lib.dcabac_decoder_message

    def __init__(self, payload: bytes | bytearray | memoryview | np.ndarray) -> None:
        super().__init__()
        self._payload = payload  # the C decoder reads it in place
        self._buf = ffi.from_buffer("uint8_t[]", payload)
        self._call(lib.dcabac_dec_begin, self._buf, len(self._buf))

    def close(self) -> None:
        """Free the C handle and let go of the payload's buffer now.

        A payload that is a view into a larger bitstream must be released
        before the garbage collector meets it in a reference cycle (an
        exception's traceback): CPython clears a memoryview's underlying
        buffer in a cycle even while it is exported.
        """
        super().close()
        if self._buf is not None:
            ffi.release(self._buf)
            self._buf = None

    def decode_bypass(self, nbits: int, *, signed: bool = False) -> int:
        """Read ``nbits`` bypass bins; ``signed`` reads two's complement."""
        out = ffi.new("uint32_t *")
        self._call(lib.dcabac_dec_bypass, nbits, out)
        value = int(out[0])
        if signed and nbits and value >= 1 << (nbits - 1):
            value -= 1 << nbits
        return value

    def decode_tensor(
        self,
        shape: tuple[int, ...],
        coding: TensorCoding,
        /,
        *,
        base: np.ndarray | None = None,
        history: np.ndarray | None = None,
    ) -> DecodedLevels:
        """Decode one tensor of the given shape; returns its stored integers and flags."""
        shape = tuple(int(d) for d in shape)
        if any(d < 0 for d in shape):
            raise ConfigError(f"negative dimension in shape {shape}")
        keep: list[object] = []
        params = _c_params(shape, coding, base, history, keep)
        n_eps = lib.dcabac_num_entry_points(params)
        if n_eps < 0:
            raise ConfigError(f"invalid tensor shape {shape}")
        out = _c_output(shape)
        eps = np.zeros(n_eps, dtype=ENTRY_POINT_DTYPE)
        eps_ptr = ffi.cast("dcabac_entry_point *", ffi.from_buffer(eps)) if n_eps else ffi.NULL
        self._call(lib.dcabac_dec_tensor, params, ffi.from_buffer("int32_t[]", out), eps_ptr, n_eps)
        return DecodedLevels(out, bool(params.hdsp_flag), bool(params.row_skip_flag), eps)

    def decode_tensor_rows(
        self,
        shape: tuple[int, ...],
        coding: TensorCoding,
        /,
        *,
        entry_points: Sequence[tuple[int, int, int]],
        pieces: int,
        run: Callable[[list[Callable[[], None]]], object] | None = None,
        base: np.ndarray | None = None,
        history: np.ndarray | None = None,
    ) -> DecodedLevels:
        """:meth:`decode_tensor` of a block-scanned tensor, its block rows
        decoded in ``pieces`` ranges, each started at the stream's entry point
        (clause 10.5), by ``run`` (which calls every callable of its list,
        on several threads if it likes; default: one after another).

        ``entry_points``: for block rows 1, 2, ..., the stream's entry points
        as ``(bit position minus block row 0's, value, DQ state)``.  Every
        range but the first must start where the one before it ends, which
        is checked: the result is exactly :meth:`decode_tensor`'s, or a
        :class:`~nnc_core.errors.BitstreamError` names the entry point that
        disagrees with the payload (or lies outside it, or before the one
        before it).
        """
        shape = tuple(int(d) for d in shape)
        keep: list[object] = []
        params = _c_params(shape, coding, base, history, keep)
        rows = int(lib.dcabac_num_entry_points(params))
        if rows < 2 or len(entry_points) != rows - 1:
            raise ConfigError(
                f"a tensor of shape {shape} has {max(rows - 1, 0)} entry points, {len(entry_points)} given"
            )
        out = _c_output(shape)
        out_ptr = ffi.from_buffer("int32_t[]", out)
        first = ffi.new("dcabac_entry_point *")
        self._call(lib.dcabac_dec_tensor_begin, params, first)
        size_bits = 8 * len(self._buf)
        eps = np.zeros(rows, dtype=ENTRY_POINT_DTYPE)
        eps[0] = (first.bit_position, first.value, first.dq_state)
        for r, (offset, value, dq_state) in enumerate(entry_points, 1):
            position = int(first.bit_position) + int(offset)
            if position < int(eps[r - 1]["bit_position"]):
                raise BitstreamError(
                    f"entry point of block row {r} at bit {position} comes before block row {r - 1}'s "
                    f"at bit {int(eps[r - 1]['bit_position'])}"
                )
            if position + 9 > size_bits:
                raise BitstreamError(
                    f"entry point of block row {r} at bit {position} lies past the payload's {size_bits // 8} bytes"
                )
            eps[r] = (position, value, dq_state)
        count = max(1, min(int(pieces), rows))
        bounds = [rows * i // count for i in range(count + 1)]
        src = self._h

        def piece(i: int) -> None:
            row_begin, row_end = bounds[i], bounds[i + 1]
            e = eps[row_begin]
            start = ffi.new(
                "dcabac_entry_point *",
                {"bit_position": int(e[0]), "value": int(e[1]), "dq_state": int(e[2])},
            )
            met = np.zeros(row_end - row_begin, dtype=ENTRY_POINT_DTYPE)
            met_ptr = ffi.cast("dcabac_entry_point *", ffi.from_buffer(met))
            if row_end == rows:  # the last rows on this decoder, which then goes on after the tensor
                self._call(lib.dcabac_dec_rows, src, params, out_ptr, start, row_begin, row_end, met_ptr)
                met = met[:-1]
            else:
                worker = ffi.gc(lib.dcabac_decoder_new(), lib.dcabac_decoder_free)
                if worker == ffi.NULL:
                    raise NncMemoryError("cannot allocate a DeepCABAC coder")
                try:
                    _check(
                        lib.dcabac_dec_rows(worker, src, params, out_ptr, start, row_begin, row_end, met_ptr),
                        lib.dcabac_decoder_message(worker),
                    )
                finally:
                    ffi.release(worker)
            # every entry point inside the range too, as a sequential decode checks them
            want = eps[row_begin + 1 : row_begin + 1 + len(met)]
            for r in np.flatnonzero(met != want)[:1]:
                w, m = want[r], met[r]
                raise BitstreamError(
                    f"entry point of block row {row_begin + 1 + r} (bit {int(w[0])}, value {int(w[1])}, "
                    f"DQ state {int(w[2])}) disagrees with the payload, where block row {row_begin + r} "
                    f"ends at bit {int(m[0])}, value {int(m[1])}, DQ state {int(m[2])}"
                )

        jobs: list[Callable[[], None]] = [lambda i=i: piece(i) for i in range(count)]  # type: ignore[misc]
        if run is None:
            for job in jobs:
                job()
        else:
            run(jobs)
        return DecodedLevels(out, bool(params.hdsp_flag), bool(params.row_skip_flag), eps)

    def finish(self) -> int:
        """Read the terminating bin; checks that the whole payload was used.

        Returns the number of payload bytes consumed.
        """
        consumed = ffi.new("size_t *")
        self._call(lib.dcabac_dec_finish, consumed)
        return int(consumed[0])


def num_entry_points(shape: tuple[int, ...], coding: TensorCoding) -> int:
    """Entry points :meth:`Decoder.decode_tensor` reports for a tensor: one
    per block row of a block scan with more than one, else 0."""
    n = int(lib.dcabac_num_entry_points(_c_params(tuple(int(d) for d in shape), coding, None, None, [])))
    if n < 0:
        raise ConfigError(f"invalid tensor shape {shape}")
    return n


def encode_tensor(values: np.ndarray, coding: TensorCoding = TensorCoding(), /, **kwargs: Any) -> bytes:
    """Payload holding a single tensor (``base``/``history`` as in :meth:`Encoder.encode_tensor`)."""
    with Encoder() as enc:
        enc.encode_tensor(values, coding, **kwargs)
        return enc.finish()


def decode_tensor(
    payload: bytes | bytearray | memoryview,
    shape: tuple[int, ...],
    coding: TensorCoding = TensorCoding(),
    /,
    **kwargs: Any,
) -> np.ndarray:
    """Stored integers of a payload holding a single tensor."""
    with Decoder(payload) as dec:
        result = dec.decode_tensor(shape, coding, **kwargs)
        dec.finish()
        return result.values


def scan_positions(shape: tuple[int, ...], scan_order: int) -> np.ndarray | None:
    """Flat positions of a tensor in coding order (None for row-major order)."""
    height, width = _matrix_shape(shape)
    if scan_order == 0 or height <= 1 or width <= 1:
        return None
    block = 4 << scan_order
    # blocks in raster order, each in raster order: one block row of `rows`
    # rows is a template of flat positions (full blocks, then the narrower
    # last block); the block rows are the template plus their first position
    order = np.empty(height * width, dtype=np.int64)
    full_rows = height // block * block
    if full_rows:
        template = _block_row_order(block, width, block)
        starts = np.arange(0, full_rows * width, block * width, dtype=np.int64)
        np.add(starts[:, None], template, out=order[: full_rows * width].reshape(len(starts), block * width))
    if full_rows < height:
        np.add(_block_row_order(height - full_rows, width, block), full_rows * width, out=order[full_rows * width :])
    return order


def _block_row_order(rows: int, width: int, block: int) -> np.ndarray:
    """Flat positions of a block row of ``rows`` rows (starting at position 0)
    in coding order: ``block``-wide blocks left to right, each in raster order."""
    cells = np.arange(rows * width, dtype=np.int64).reshape(rows, width)
    full = width // block * block
    inner = cells[:, :full].reshape(rows, width // block, block).transpose(1, 0, 2).ravel()
    return np.concatenate([inner, cells[:, full:].ravel()])


def _quantize(
    fn: Any,
    weights: np.ndarray,
    step: float | np.floating[Any],
    scan_order: int,
    lambda_scale: float,
    cabac_unary_length_minus1: int,
) -> np.ndarray:
    """Validate the arguments, run a C quantizer, map its status to exceptions."""
    w = np.ascontiguousarray(weights, dtype=np.float32)
    step32 = np.float32(step)
    if not (np.isfinite(step32) and step32 > 0):
        raise ConfigError(f"step size {step} must be positive and finite (as float32)")
    if not 0 <= scan_order <= 4:
        raise ConfigError(f"scan_order {scan_order} outside 0..4")
    if not 0 <= cabac_unary_length_minus1 <= 255:
        raise ConfigError(f"cabac_unary_length_minus1 {cabac_unary_length_minus1} outside 0..255")
    # The reference encoder receives lambda_scale as a float32.
    with np.errstate(over="ignore"):
        lam = np.float32(lambda_scale)
    if not (np.isfinite(lam) and lam >= 0):
        raise ConfigError(f"lambda_scale {lambda_scale} must be finite and >= 0")
    order = scan_positions(w.shape, scan_order)
    out = _c_output(w.shape)
    status = fn(
        ffi.from_buffer("float[]", w),
        w.size,
        ffi.NULL if order is None else ffi.from_buffer("int64_t[]", order),
        float(step32),
        float(lam),
        cabac_unary_length_minus1,
        ffi.from_buffer("int32_t[]", out),
    )
    if status == lib.DCABAC_E_OVERFLOW:
        raise QuantizationOverflowError(
            f"quantized weights would leave the int32 range at step {step32}: a coarser QP is needed"
        )
    if status == lib.DCABAC_E_RANGE:
        raise EncodeError("weights must be finite, and their quantized values fit int32")
    _check(status, ffi.new("char[]", b""))
    return out


def dq_quantize(
    weights: np.ndarray,
    step: float | np.floating[Any],
    /,
    *,
    scan_order: int = 0,
    lambda_scale: float = 0.0,
    cabac_unary_length_minus1: int = 10,
) -> np.ndarray:
    """Dependent scalar quantization: the reconstruction indices the reference
    encoder (NNCodec 2.1.3) chooses for the same weights.

    Clause 9.3 defines the decoder side (two quantizers, an 8-state machine
    driven by level parity); the encoder searches the 8-state trellis in
    coding order (notes 03 §6) for the path minimising squared error, or with
    ``lambda_scale > 0`` squared error plus lambda times the rate estimated
    by one DeepCABAC context model per trellis state (03 §6 "RDO variant",
    02 §4.4).

    Args:
        weights: float array (converted to float32); its shape gives the
            H x W matrix view of the scan.
        step: quantization step size (used as float32).
        scan_order: the tensor's scan order (0..4), which sets the coding order.
        lambda_scale: rate weight (rounded to float32 like the reference);
            0 = squared error only.
        cabac_unary_length_minus1: the stream's value; the rate model uses it
            as its number of greater-than flags (the reference's choice, one
            fewer than the coder).  Ignored when ``lambda_scale`` is 0.

    Returns:
        int32 reconstruction indices (stored integers for ``dq_flag = 1``),
        shaped like ``weights``.

    Raises:
        QuantizationOverflowError: a scaled weight rounds outside
            [-(2**31 - 2), 2**31 - 3]; the reference then uses a coarser QP.
        EncodeError: a weight is not finite (or, at the very edge of the
            guard, a reconstruction index would not fit int32).
        ConfigError: invalid arguments.
    """
    return _quantize(lib.dcabac_dq_quantize_rd, weights, step, scan_order, lambda_scale, cabac_unary_length_minus1)


def urq_quantize(
    weights: np.ndarray,
    step: float | np.floating[Any],
    /,
    *,
    scan_order: int = 0,
    lambda_scale: float,
    cabac_unary_length_minus1: int = 10,
) -> np.ndarray:
    """Uniform reconstruction quantization as the reference encoder does it.

    Clause 9.3 reconstructs ``t * step``; the encoder (notes 03 §5) rounds
    ``float32(1/step) * w`` half away from zero when ``lambda_scale`` is 0,
    and otherwise walks the tensor in coding order choosing, per weight, the
    magnitude among 0, ``m - 1`` (if at least 1) and ``m`` (``m`` =
    ``|w|/step`` rounded) that minimises squared error plus lambda times the
    rate estimated by a DeepCABAC context model (02 §4.4) that follows the
    chosen levels.  (A weight of exactly ``-2**31`` steps gets 0 there, as in
    the reference on x86, whose int32 conversion of ``m`` overflows.)

    Args:
        weights: float array (converted to float32).
        step: quantization step size (used as float32).
        scan_order: the tensor's scan order (0..4), the order of the decisions.
        lambda_scale: rate weight (rounded to float32 like the reference), >= 0.
        cabac_unary_length_minus1: the stream's value; the rate model uses it
            as its number of greater-than flags (one fewer than the coder).

    Returns:
        int32 levels (stored integers for ``dq_flag = 0``), shaped like ``weights``.

    Raises:
        QuantizationOverflowError: a scaled weight rounds outside the int32
            range (tested on ``float32(1/step) * w`` for lambda 0, on
            ``w / step`` in double otherwise); the reference then uses a
            coarser QP.
        EncodeError: a weight is not finite.
        ConfigError: invalid arguments.
    """
    return _quantize(lib.dcabac_urq_quantize, weights, step, scan_order, lambda_scale, cabac_unary_length_minus1)
