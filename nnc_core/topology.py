"""The NNR_TPL unit's payload: a model's topology in a framework's format."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

from nnc_core.bitstream.units import TopologyStorageFormat, TopologyUnit, UnitType
from nnc_core.errors import BitstreamError, ConfigError

__all__ = ["Topology", "TOPOLOGY_RAW", "TOPOLOGY_DEFLATE", "MAX_TOPOLOGY_BYTES"]

# topology_compression_format values (clause 6.4): 0 raw, 1 deflate.
TOPOLOGY_RAW = 0
TOPOLOGY_DEFLATE = 1

# Decompressed topology is bounded so that a deflate bomb in a hostile
# bitstream cannot exhaust memory; a caller with a larger graph raises it.
MAX_TOPOLOGY_BYTES = 1 << 30


@dataclass
class Topology:
    """The payload of an NNR_TPL unit (clause 6.4.2.4).

    ``storage_format`` is a ``topology_storage_format`` value
    (:class:`~nnc_core.bitstream.units.TopologyStorageFormat`: NNEF, ONNX,
    PyTorch, TensorFlow …) and ``data`` the topology in that format,
    uncompressed.  ``deflate`` asks the encoder to carry it compressed
    (``topology_compression_format`` 1, RFC 1951 raw deflate: UNVERIFIED
    whether the standard means raw deflate or a zlib wrapper; raw deflate is
    what the name says, and the decoder accepts both).
    """

    storage_format: int = TopologyStorageFormat.NNR_TPL_UNREC
    data: bytes = b""
    deflate: bool = False

    def to_unit(self) -> TopologyUnit:
        if not 0 <= int(self.storage_format) <= 255:
            raise ConfigError(f"topology_storage_format {self.storage_format} outside 0..255")
        if self.storage_format == TopologyStorageFormat.NNR_TPL_REFLIST:
            raise ConfigError("NNR_TPL_REFLIST topologies carry element ids, not data; not supported here")
        data = bytes(self.data)
        if self.deflate:
            packer = zlib.compressobj(9, zlib.DEFLATED, -15)
            data = packer.compress(data) + packer.flush()
        elif not data:
            data = b"\x00"  # an empty string, as the reference software writes it
        return TopologyUnit(
            UnitType.NNR_TPL,
            topology_storage_format=int(self.storage_format),
            topology_compression_format=TOPOLOGY_DEFLATE if self.deflate else TOPOLOGY_RAW,
            topology_data=data,
        )

    @classmethod
    def from_unit(
        cls, unit: TopologyUnit, *, max_bytes: int = MAX_TOPOLOGY_BYTES, where: dict[str, Any] | None = None
    ) -> Topology:
        where = where or {}
        data = bytes(unit.topology_data)
        if unit.topology_compression_format == TOPOLOGY_DEFLATE:
            data = _inflate(data, max_bytes, where)
            return cls(unit.topology_storage_format, data, deflate=True)
        if unit.topology_compression_format != TOPOLOGY_RAW:
            raise BitstreamError(f"unknown topology_compression_format {unit.topology_compression_format}", **where)
        if data == b"\x00":
            data = b""
        return cls(unit.topology_storage_format, data)


def _inflate(data: bytes, max_bytes: int, where: dict[str, Any]) -> bytes:
    # Raw deflate first; a zlib-wrapped stream (header 0x78) is accepted too.
    for wbits in (-15, 15):
        unpacker = zlib.decompressobj(wbits)
        try:
            out = unpacker.decompress(data, max_bytes)
        except zlib.error:
            continue
        if unpacker.unconsumed_tail:
            raise BitstreamError(f"deflated topology inflates beyond {max_bytes} bytes", **where)
        if unpacker.eof:
            return out
    raise BitstreamError("topology_data is not a complete deflate stream", **where)
