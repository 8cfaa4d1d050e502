"""A model as NNR sees it: named tensors, their block grouping and a topology.

This is what framework plugins produce when they read a model and consume
when they write one back (see :mod:`nnc_core.plugins`), and what
:func:`encode_model` / :func:`decode_model` code.  It holds numpy arrays and
bytes only: no framework object ever reaches the codec.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nnc_core.bitstream.units import TopologyStorageFormat, TopologyUnit, UnitType, flatten_units, read_units
from nnc_core.errors import BitstreamError, ConfigError

__all__ = ["Topology", "NNRModel", "encode_model", "decode_model", "topology_of", "TOPOLOGY_DEFLATE", "MAX_TOPOLOGY_BYTES"]

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
    def from_unit(cls, unit: TopologyUnit, *, max_bytes: int = MAX_TOPOLOGY_BYTES, where: dict | None = None) -> Topology:
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


def _inflate(data: bytes, max_bytes: int, where: dict) -> bytes:
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


@dataclass
class NNRModel:
    """Named tensors with what NNR signals about them.

    Attributes:
        tensors: NNR tensor name -> array, in model order and in the layout
            they are coded in (the plugin has already transposed where its
            framework's output channels are not the first dimension).
        blocks: block id -> {role: tensor name}, as :func:`nnc_core.encode`
            takes them (weight, bias, ls, bn.gamma/beta/mean/var).
        topology: the NNR_TPL payload, or ``None`` for an unrecognised one.
        dimension_shift: tensor name -> ``first_tensor_dimension_shift``.
        framework: name of the plugin that produced the model.
        metadata: free-form, for the plugin that writes the model back
            (never coded).
    """

    tensors: dict[str, np.ndarray]
    blocks: dict[str, dict[str, str]] = field(default_factory=dict)
    topology: Topology | None = None
    dimension_shift: dict[str, int] = field(default_factory=dict)
    framework: str = "numpy"
    metadata: dict[str, Any] = field(default_factory=dict)


def encode_model(model: NNRModel, /, **options: Any) -> bytes:
    """Encode an :class:`NNRModel`; ``options`` are those of :func:`nnc_core.encode`."""
    from nnc_core.encoding import encode

    for key in ("blocks", "topology", "dimension_shift"):
        if key in options:
            raise ConfigError(f"{key} comes from the model; do not pass it as an option")
    return encode(
        model.tensors,
        blocks=model.blocks or None,
        topology=model.topology,
        dimension_shift=model.dimension_shift or None,
        **options,
    )


def decode_model(data: bytes | bytearray | memoryview, /, **options: Any) -> NNRModel:
    """Decode a bitstream into an :class:`NNRModel`: tensors and topology.

    ``options`` are those of :func:`nnc_core.decode`.
    """
    from nnc_core.decoding import decode

    return NNRModel(decode(data, **options), topology=topology_of(data))


def topology_of(data: bytes | bytearray | memoryview | list, /) -> Topology | None:
    """The topology a bitstream (or its parsed units) carries: its last NNR_TPL
    unit (headers only, no payload decoding)."""
    topology = None
    units = data if isinstance(data, list) else read_units(data)
    for index, inner, unit in flatten_units(units):
        if isinstance(unit, TopologyUnit):
            where = dict(unit_index=index, aggregated_index=inner, byte_offset=unit.offset)
            topology = Topology.from_unit(unit, where=where)
    return topology


def as_tensor_mapping(tensors: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Plain ``{str: ndarray}`` from any mapping of array-likes."""
    return {str(name): np.asarray(value) for name, value in tensors.items()}
