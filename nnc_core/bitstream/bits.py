"""Bit-level reading and writing of NNR high-level syntax (clause 6.2 descriptors).

Fields are packed most significant bit first.  Descriptors:

* ``u(n)`` / ``i(n)``: unsigned / two's complement integer of n bits;
* ``ue(k)`` / ``ie(k)``: k-th order Exp-Golomb code, unsigned / signed;
* ``flt(32)``: IEEE-754 binary32, its four little-endian bytes in order
  (reference-software byte order; the ISO text is not available to confirm);
* ``st(v)``: UTF-8 string ended by a NUL byte, byte-aligned;
* ``byte_alignment()``: a one bit, then zero bits up to the byte boundary.

The reader never reads past the end of its buffer: it raises
:class:`~nnc_core.errors.BitstreamError` with the byte offset instead.
"""

from __future__ import annotations

import builtins
import struct

import numpy as np

from nnc_core.errors import BitstreamError

__all__ = ["BitReader", "BitWriter", "ue_lengths"]

# Exp-Golomb prefixes longer than this cannot belong to a sane header field
# (values would exceed 2**40); refuse them instead of looping on zero bits.
_MAX_EXP_GOLOMB_PREFIX = 40


class BitReader:
    """Reads HLS fields from ``data[start:end]``; ``offset`` base for messages."""

    def __init__(
        self,
        data: bytes | memoryview,
        start: int = 0,
        end: int | None = None,
        *,
        unit_index: int | None = None,
        aggregated_index: int | None = None,
    ):
        self._data = memoryview(data)
        self._pos = start * 8  # bit position
        self._end = (len(data) if end is None else end) * 8
        self.unit_index = unit_index
        self.aggregated_index = aggregated_index

    @property
    def bit_position(self) -> int:
        return self._pos

    @property
    def byte_position(self) -> int:
        """Byte offset of the next unread bit (rounded down)."""
        return self._pos >> 3

    @property
    def byte_aligned(self) -> bool:
        return self._pos % 8 == 0

    def bits_left(self) -> int:
        return self._end - self._pos

    def error(self, message: str) -> BitstreamError:
        return BitstreamError(
            message, unit_index=self.unit_index, byte_offset=self._pos >> 3, aggregated_index=self.aggregated_index
        )

    def u(self, n: int, what: str = "field") -> int:
        """Unsigned integer of n bits."""
        if n == 0:
            return 0
        if self._pos + n > self._end:
            raise self.error(f"{what} needs {n} bits, only {self._end - self._pos} left")
        value = 0
        pos = self._pos
        remaining = n
        while remaining:
            byte = self._data[pos >> 3]
            bit_in_byte = pos & 7
            take = min(8 - bit_in_byte, remaining)
            chunk = (byte >> (8 - bit_in_byte - take)) & ((1 << take) - 1)
            value = (value << take) | chunk
            pos += take
            remaining -= take
        self._pos = pos
        return value

    def flag(self, what: str = "flag") -> bool:
        return bool(self.u(1, what))

    def i(self, n: int, what: str = "field") -> int:
        """Two's complement integer of n bits."""
        v = self.u(n, what)
        return v - (1 << n) if n and v >= 1 << (n - 1) else v

    def ue(self, k: int, what: str = "field") -> int:
        """k-th order Exp-Golomb code (NNR flavour: p zeros, a one, then k + p
        bits; the value is (2**p - 1) * 2**k plus those bits)."""
        # Fast path: the whole code within the next 72 bits, its prefix counted
        # at once (a codebook of a bit-pattern tensor holds thousands of codes).
        pos = self._pos
        first = pos >> 3
        chunk = self._data[first : min(first + 9, (self._end + 7) >> 3)]
        available = min(len(chunk) * 8 - (pos & 7), self._end - pos)
        if available > 0:
            window = (int.from_bytes(chunk, "big") >> (len(chunk) * 8 - (pos & 7) - available)) & ((1 << available) - 1)
            prefix = available - window.bit_length()
            length = 2 * prefix + 1 + k
            if window and length <= available:
                self._pos = pos + length
                return (((1 << prefix) - 1) << k) + ((window >> (available - length)) & ((1 << (k + prefix)) - 1))
        value = 0
        prefix = 0
        while self.u(1, what) == 0:
            value += 1 << k
            k += 1
            prefix += 1
            if prefix > _MAX_EXP_GOLOMB_PREFIX:
                raise self.error(f"{what}: Exp-Golomb prefix longer than {_MAX_EXP_GOLOMB_PREFIX} bits")
        return value + self.u(k, what)

    def ie(self, k: int, what: str = "field") -> int:
        """Signed Exp-Golomb: odd codes are positive, even ones zero or negative."""
        x = self.ue(k, what)
        return (x + 1) >> 1 if x & 1 else -(x >> 1)

    def flt(self, what: str = "field") -> float:
        raw = bytes(self.u(8, what) for _ in range(4))
        value: float = struct.unpack("<f", raw)[0]
        return value

    def st(self, what: str = "string") -> str:
        if not self.byte_aligned:
            raise self.error(f"{what} does not start on a byte boundary")
        start = self._pos >> 3
        end = self._end >> 3
        # searched a page at a time: the unit's payload follows the string, and
        # a whole payload copied (or, memory-mapped, read in) per name costs
        # time and resident memory
        nul, at = -1, start
        while nul < 0 and at < end:
            found = bytes(self._data[at : min(at + 4096, end)]).find(b"\x00")
            nul = -1 if found < 0 else at + found - start
            at += 4096
        if nul < 0:
            raise self.error(f"{what} has no terminating NUL before the end of the unit")
        raw = bytes(self._data[start : start + nul])
        self._pos = (start + nul + 1) * 8
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise self.error(f"{what} is not valid UTF-8") from e

    def byte_alignment(self) -> None:
        if self.u(1, "byte_alignment") != 1:
            raise self.error("byte_alignment() does not start with a one bit")
        pad = (-self._pos) % 8
        if pad:
            if self.u(pad, "byte_alignment") != 0:
                raise self.error("byte_alignment() padding bits are not zero")

    def bytes(self, n: int, what: str = "data") -> bytes:
        if not self.byte_aligned:
            raise self.error(f"{what} does not start on a byte boundary")
        if self._pos + 8 * n > self._end:
            raise self.error(f"{what} needs {n} bytes, only {(self._end - self._pos) >> 3} left")
        start = self._pos >> 3
        self._pos += 8 * n
        return bytes(self._data[start : start + n])


class BitWriter:
    """Collects HLS fields into bytes, most significant bit first."""

    def __init__(self) -> None:
        self._out = bytearray()
        self._acc = 0
        self._nbits = 0  # bits pending in _acc (< 8)

    @property
    def byte_aligned(self) -> bool:
        return self._nbits == 0

    @property
    def bit_length(self) -> int:
        return 8 * len(self._out) + self._nbits

    def u(self, n: int, value: int) -> None:
        if n == 0:
            return
        if not 0 <= value < (1 << n):
            raise ValueError(f"{value} does not fit u({n})")
        self._acc = (self._acc << n) | value
        self._nbits += n
        while self._nbits >= 8:
            self._nbits -= 8
            self._out.append((self._acc >> self._nbits) & 0xFF)
        self._acc &= (1 << self._nbits) - 1

    def flag(self, value: bool) -> None:
        self.u(1, 1 if value else 0)

    def i(self, n: int, value: int) -> None:
        if not -(1 << (n - 1)) <= value < (1 << (n - 1)):
            raise ValueError(f"{value} does not fit i({n})")
        self.u(n, value & ((1 << n) - 1))

    def ue(self, k: int, value: int) -> None:
        if value < 0:
            raise ValueError(f"ue({k}) cannot code negative {value}")
        while value >= (1 << k):
            self.u(1, 0)
            value -= 1 << k
            k += 1
        self.u(1, 1)
        self.u(k, value)

    def ie(self, k: int, value: int) -> None:
        self.ue(k, 2 * value - 1 if value > 0 else -2 * value)

    def flt(self, value: float) -> None:
        for b in struct.pack("<f", value):
            self.u(8, b)

    def st(self, text: str) -> None:
        if not self.byte_aligned:
            raise ValueError("st(v) must start byte-aligned")
        raw = text.encode("utf-8")
        if b"\x00" in raw:
            raise ValueError("strings cannot contain NUL")
        self._out += raw + b"\x00"

    def byte_alignment(self) -> None:
        self.u(1, 1)
        if self._nbits:
            self.u(8 - self._nbits, 0)

    def bytes(self, data: builtins.bytes | memoryview) -> None:
        if not self.byte_aligned:
            raise ValueError("raw bytes must start byte-aligned")
        self._out += data

    # builtins.bytes: below its definition in the class body, `bytes` names the method above
    def getvalue(self) -> builtins.bytes:
        if not self.byte_aligned:
            raise ValueError("bit writer is not byte-aligned")
        return bytes(self._out)


def ue_lengths(values: np.ndarray, k: int) -> np.ndarray:
    """Lengths in bits of the ``ue(k)`` codes of non-negative integer ``values``
    (what :meth:`BitWriter.ue` writes): n zeros, a one, then k + n bits, where
    n = floor(log2(v / 2**k + 1)), so 2n + 1 + k bits."""
    n = np.floor(np.log2((np.asarray(values, dtype=np.int64) >> k) + 1.0)).astype(np.int64)
    return 2 * n + 1 + k
