"""A model as NNR sees it: named tensors, their block grouping and a topology.

This is what framework plugins produce when they read a model and consume
when they write one back (see :mod:`nnc_core.plugins`), and what
:func:`encode_model` / :func:`decode_model` code.  It holds numpy arrays and
bytes only: no framework object ever reaches the codec.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nnc_core import api
from nnc_core.bitstream.units import TopologyStorageFormat, TopologyUnit, flatten_units, read_units
from nnc_core.errors import ConfigError
from nnc_core.topology import (
    MAX_TOPOLOGY_BYTES,
    TOPOLOGY_DEFLATE,
    TOPOLOGY_RAW,
    Topology,
)

__all__ = [
    "Topology",
    "NNRModel",
    "encode_model",
    "decode_model",
    "topology_of",
    "TOPOLOGY_RAW",
    "TOPOLOGY_DEFLATE",
    "MAX_TOPOLOGY_BYTES",
]


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
    for key in ("blocks", "topology", "dimension_shift"):
        if key in options:
            raise ConfigError(f"{key} comes from the model; do not pass it as an option")
    return api.encode(
        model.tensors,
        blocks=model.blocks or None,
        topology=model.topology,
        dimension_shift=model.dimension_shift or None,
        **options,
    )


def decode_model(data: bytes | bytearray | memoryview, /, **options: Any) -> NNRModel:
    """Decode a bitstream into an :class:`NNRModel`: tensors and topology.

    ``options`` are those of :func:`nnc_core.decode`.  The headers are
    parsed once, for the tensors and the topology alike (except for an
    update, whose base is decoded first).
    """
    if options.get("base") is not None or options.get("state") is not None:
        return NNRModel(api.decode(data, **options), topology=topology_of(data))
    with api.open(data, **{k: v for k, v in options.items() if k not in ("base", "state")}) as reader:
        return NNRModel(dict(reader.items()), topology=topology_of(reader.units))


def topology_of(data: bytes | bytearray | memoryview | list[Any], /) -> Topology | None:
    """The topology a bitstream (or its parsed units) carries: its last NNR_TPL
    unit (headers only, no payload decoding).  An NNR_TPL_REFLIST unit is no
    topology: it lists the names indexed references resolve to (read_units
    gives NDUs those names)."""
    topology = None
    units = data if isinstance(data, list) else read_units(data)
    for index, inner, unit in flatten_units(units):
        if isinstance(unit, TopologyUnit) and unit.topology_storage_format != TopologyStorageFormat.NNR_TPL_REFLIST:
            where = dict(unit_index=index, aggregated_index=inner, byte_offset=unit.offset)
            topology = Topology.from_unit(unit, where=where)
    return topology


def as_tensor_mapping(tensors: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Plain ``{str: ndarray}`` from any mapping of array-likes."""
    return {str(name): np.asarray(value) for name, value in tensors.items()}


def items_as_decoded(tensors: Mapping[str, np.ndarray]) -> Iterator[tuple[str, np.ndarray]]:
    """A model's ``(name, array)`` pairs for a writer whose format takes its
    entries in any order: a decoding mapping's (``nnc decode``) each as soon as
    it is decoded, in an order the threads decide; any other mapping's in its
    own order."""
    as_decoded = getattr(tensors, "items_as_decoded", None)
    return iter(as_decoded() if as_decoded is not None else tensors.items())
