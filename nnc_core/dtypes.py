"""Tensor dtypes as NNR carries them: ``nnr_decompressed_data_format``.

NNR codes integers as NNR_PT_INT (int32 levels) and floats as quantized
levels or raw float32, so a tensor's own dtype travels in the NDU header's
``nnr_decompressed_data_format`` (u(7), present when its flag is set) and
the decoder returns the tensor in it.  Values 0..9 are NNCodec 2.1.3's
enumeration (``DecompressedDataFormat``; UNVERIFIED against the standard's
text); NNCodec writes none and reads the field without using it, so a stream
carrying it stays decodable by NNCodec, in float32 and int32.

Decision (docs/decisions.md): dtypes the enumeration lacks take values from
64 up, clear of those the standard may assign next: 64 bfloat16, 65 uint8,
66 uint16, 67 uint32, 68 bool, 69 float8_e4m3fn, 70 float8_e5m2, 71 uint64.  A decoder
that does not know a value decodes in float32 or int32 (as NNCodec does); so
does ours.  int32 and float32 are not signalled (the stream is then the one
NNCodec writes).  bfloat16 and float8 need the ``ml_dtypes`` package, read
only when such a tensor is met.

Integers whose values leave int32 (int64, uint64, uint32) travel as two
int32 planes, the high and the low 32 bits of each value, along a last axis
of 2 (``(*shape, 2)``; split tensors split along the first axis as ever),
signalled by 72 int64, 73 uint64, 74 uint32 (:data:`WIDE_FORMATS`).  A
decoder that does not know these values decodes the planes, as int32.

Exact (lossless) floats other than float32, which NNR_PT_RAW_FLOAT carries:
float64 travels as the two int32 planes of its bits (75, in
:data:`WIDE_FORMATS`); the narrow floats as NNR_PT_FLOAT with a codebook of
their bit patterns at QP 0 (step 1), signalled by 76 bfloat16, 77 float16,
78 float8_e4m3fn, 79 float8_e5m2 (:data:`PATTERN_FORMATS`).  A pattern is
mapped to an integer that keeps the values' order (``p`` for a cleared
sign bit, ``-1 - (p & magnitude mask)`` for a set one), so that the
codebook's indices are small where the values are near zero and DeepCABAC
codes them in fewer bits than the patterns (about 3/4 of a bf16 tensor's
bytes on real weights).  A decoder that does not know these values decodes
the planes as int32 and the pattern codebooks as their integers, in float64.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nnc_core.errors import ConfigError

__all__ = [
    "DATA_FORMATS",
    "WIDE_FORMATS",
    "format_of",
    "dtype_of",
    "float_dtype",
    "is_float",
    "is_integer",
    "as_float32",
    "to_planes",
    "from_planes",
    "PATTERN_FORMATS",
    "to_patterns",
    "pattern_codebook",
    "from_patterns",
]

#: nnr_decompressed_data_format value -> dtype name
DATA_FORMATS: dict[int, str] = {
    0: "int32",
    1: "float32",
    5: "int8",
    6: "int16",
    7: "int64",
    8: "float16",
    9: "float64",
    64: "bfloat16",
    65: "uint8",
    66: "uint16",
    67: "uint32",
    68: "bool",
    69: "float8_e4m3fn",
    70: "float8_e5m2",
    71: "uint64",
    72: "int64",
    73: "uint64",
    74: "uint32",
    75: "float64",
    76: "bfloat16",
    77: "float16",
    78: "float8_e4m3fn",
    79: "float8_e5m2",
}
#: values signalling integers (and float64 bits) sent as two int32 planes (high, low 32 bits)
WIDE_FORMATS = (72, 73, 74, 75)
#: values signalling narrow floats sent exactly, as a codebook of their bit patterns
PATTERN_FORMATS = (76, 77, 78, 79)
_BY_NAME = {
    name: value for value, name in DATA_FORMATS.items() if value not in WIDE_FORMATS and value not in PATTERN_FORMATS
}
_WIDE_BY_NAME = {DATA_FORMATS[value]: value for value in WIDE_FORMATS}
_PATTERN_BY_NAME = {DATA_FORMATS[value]: value for value in PATTERN_FORMATS}
_ML_DTYPES = ("bfloat16", "float8_e4m3fn", "float8_e5m2")


def format_of(dtype: np.dtype) -> int | None:
    """The value signalling ``dtype``; None for int32 and float32 (not signalled)."""
    value = _BY_NAME.get(np.dtype(dtype).name)
    return None if value in (0, 1) else value


def dtype_of(value: int) -> np.dtype | None:
    """The dtype a format value names, or None for one this decoder does not know."""
    name = DATA_FORMATS.get(value)
    if name is None:
        return None
    if name in _ML_DTYPES:
        try:
            import ml_dtypes
        except ImportError:
            raise ConfigError(
                f"the bitstream holds {name} tensors; decoding them in {name} needs the ml_dtypes package "
                "(pip install ml_dtypes), or choose another output dtype"
            ) from None
        return np.dtype(getattr(ml_dtypes, name))
    return np.dtype(name)


def is_float(dtype: np.dtype) -> bool:
    """IEEE floats of numpy and the ml_dtypes floats (bfloat16, float8)."""
    dtype = np.dtype(dtype)
    return dtype.kind == "f" or dtype.name in _ML_DTYPES


def is_integer(dtype: np.dtype) -> bool:
    return np.dtype(dtype).kind in "iub"


def as_float32(values: np.ndarray) -> np.ndarray:
    """Float values as float32 for quantization (exact for float16, bfloat16 and float8)."""
    return values.astype(np.float32)


def float_dtype(dtype: Any) -> np.dtype | None:
    """A decoder's ``dtype`` option checked: None, or a float dtype (by name, e.g.
    ``"float16"``, ``"bfloat16"``, or a numpy dtype)."""
    if dtype is None:
        return None
    name = str(np.dtype(dtype).name) if not isinstance(dtype, str) else dtype
    value = _BY_NAME.get(name)
    if value is None or not is_float(dtype_of(value) or np.dtype("int32")):
        floats = sorted(n for n in _BY_NAME if n.startswith(("float", "bfloat")))
        raise ConfigError(f"dtype {dtype!r} is not a float dtype the decoder can return; one of {floats}")
    return dtype_of(value)


def to_planes(values: np.ndarray) -> tuple[np.ndarray, int]:
    """Integers that leave int32 as int32 planes ``(*shape, 2)``: the high 32
    bits (signed: the value's own sign for int64, the bit pattern for the
    unsigned ones) and the low 32 bits' pattern; with their format value."""
    value = _WIDE_BY_NAME.get(values.dtype.name)
    if value is None:
        raise ConfigError(f"dtype {values.dtype} is not sent as int32 planes (int64, uint64, uint32 and float64 are)")
    bits = values.astype(np.int64) if values.dtype.kind in "iu" and values.dtype != np.uint64 else values.view(np.int64)
    planes = np.empty((*values.shape, 2), np.int32)
    planes[..., 0] = bits >> 32
    planes[..., 1] = (bits & 0xFFFFFFFF).astype(np.uint32).view(np.int32)
    return planes, value


def from_planes(planes: np.ndarray, value: int) -> np.ndarray:
    """The integers :func:`to_planes` sent, in the dtype ``value`` signals.
    Raises ValueError when the planes are not ``(*shape, 2)`` or a value does
    not fit that dtype."""
    if planes.ndim == 0 or planes.shape[-1] != 2:
        raise ValueError(f"int32 planes of shape {list(planes.shape)}, not [..., 2]")
    bits = (planes[..., 0].astype(np.int64) << 32) | (planes[..., 1].astype(np.int64) & 0xFFFFFFFF)
    name = DATA_FORMATS[value]
    if name in ("uint64", "float64"):
        return bits.view(name)
    if name == "uint32" and bits.size and (int(bits.min()) < 0 or int(bits.max()) > 0xFFFFFFFF):
        raise ValueError("values outside uint32")
    return bits.astype(name)


def to_patterns(values: np.ndarray) -> tuple[np.ndarray, int]:
    """A narrow float tensor's bit patterns as order-keeping int32 values (see
    the module's text), with the format value that signals them."""
    value = _PATTERN_BY_NAME.get(values.dtype.name)
    if value is None:
        raise ConfigError(f"dtype {values.dtype} is not sent as bit patterns (bfloat16, float16 and float8 are)")
    bits = 8 * values.dtype.itemsize
    p = values.view(f"uint{bits}").astype(np.int32)
    magnitude = p & ((1 << (bits - 1)) - 1)
    return np.where(p >> (bits - 1), -1 - magnitude, magnitude).astype(np.int32), value


def pattern_codebook(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """A narrow float tensor as a codebook of its distinct patterns' integers
    (:func:`to_patterns`) in increasing order and each element's position in
    it (int32), with the format value.  Counted over the dtype's 2**bits
    patterns, not sorted: linear time, 4 bytes per element."""
    bits = 8 * values.dtype.itemsize
    every = np.arange(1 << bits, dtype=f"uint{bits}").view(values.dtype)
    integers, value = to_patterns(every)  # (raises for a dtype without patterns)
    flat = values.reshape(-1).view(f"uint{bits}")
    present = np.flatnonzero(np.bincount(flat, minlength=1 << bits))  # patterns in the tensor
    order = np.argsort(integers[present], kind="stable")
    position = np.zeros(1 << bits, np.int32)
    position[present[order]] = np.arange(len(present), dtype=np.int32)
    return integers[present[order]].astype(np.int64), position[flat].reshape(values.shape), value


def from_patterns(integers: np.ndarray, value: int) -> np.ndarray:
    """The floats whose patterns :func:`to_patterns` made ``integers`` (decoded
    values: floats of a codebook times a step of 1).  Raises ValueError when
    one is no integer of the pattern's range."""
    dtype = dtype_of(value)
    assert dtype is not None
    bits = 8 * dtype.itemsize
    limit = 1 << (bits - 1)
    ints = np.asarray(integers)
    if ints.size and (
        not np.all(np.isfinite(ints))
        or float(ints.min()) < -limit
        or float(ints.max()) > limit - 1
        or not np.all(ints == np.rint(ints))
    ):
        raise ValueError(f"values that are no {bits}-bit patterns ({-limit}..{limit - 1})")
    i = ints.astype(np.int32)
    return np.where(i < 0, (-1 - i) | limit, i).astype(f"uint{bits}").view(dtype)
