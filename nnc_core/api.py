"""The one-shot API: :func:`encode`, :func:`decode`, :func:`open` and their
streaming forms, a thin façade over the encoder (:mod:`nnc_core.encoding`),
the decoder (:mod:`nnc_core.decoding`, :mod:`nnc_core.reader`) and
incremental coding (:mod:`nnc_core.incremental`).  This is the only module
that chooses between them; the layers below never import it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any, BinaryIO

import numpy as np

from nnc_core import reduction
from nnc_core.bitstream.units import read_units
from nnc_core.config import EncoderConfig
from nnc_core.decoding import DecoderState, decode_steps, plan_bitstream
from nnc_core.dtypes import float_dtype, is_integer
from nnc_core.encoding import write_stream
from nnc_core.errors import ConfigError
from nnc_core.files import write_atomically
from nnc_core.incremental import decode_update, encode_update
from nnc_core.parallel import check_workers
from nnc_core.reader import NNRReader, open
from nnc_core.topology import Topology

__all__ = ["encode", "encode_to", "decode", "iter_decode", "open", "NNRReader", "EncoderConfig"]


def encode(
    tensors: Mapping[str, np.ndarray],
    /,
    config: EncoderConfig | None = None,
    *,
    topology: Topology | None = None,
    progress: Callable[[int, int, str], None] | None = None,
    base: Any = None,
    **options: Any,
) -> bytes:
    """Encode named tensors into one NNR bitstream, returned whole.

    Args:
        tensors: name -> array; float arrays are quantized, integer arrays
            (up to 32 bits) coded losslessly.  Values are read when their
            tensor's turn comes (a lazy mapping is never read whole).
        config: the settings (:class:`~nnc_core.config.EncoderConfig`, whose
            fields are documented there; default: NNCodec's defaults);
            ``options`` change single fields of it, e.g.
            ``encode(tensors, qp=-32, use_dq=False)``.
        topology: the NNR_TPL unit's payload (:class:`~nnc_core.model.Topology`,
            e.g. a framework's graph); by default an unrecognised, empty one
            as the reference encoder writes.
        progress: called as ``progress(done, total, name)`` after each NDU,
            ``done`` counting input tensors.
        base: code ``tensors`` as an incremental update of this base model:
            a mapping of arrays, an NNR bitstream, or a sequence of
            bitstreams (a base and its earlier updates), coded with the
            defaults of :class:`nnc_core.incremental.UpdateEncoder` (TCA,
            HDSP and row skipping on) where the settings do not say
            otherwise.  Decode with ``decode(data, base=...)`` and the same base.

    For models that do not fit in memory twice over, :func:`encode_to`
    writes a file as the units are ready.

    Raises:
        EncodeError: a tensor holds NaN or infinity (and is not raw), an
            unsupported dtype, or values its step cannot represent in int32.
        ConfigError: invalid settings, each named.
    """
    config = EncoderConfig.of(config, **options)
    if base is not None:
        # the settings given: an update session has its own defaults (row
        # skipping on), which only an explicit value overrides
        return encode_update(tensors, base, progress=progress, topology=topology, **config.changed())
    parts: list[bytes] = []
    write_stream(parts.append, tensors, config, topology=topology, progress=progress)
    return b"".join(parts)


def encode_to(
    destination: str | os.PathLike[str] | BinaryIO,
    tensors: Mapping[str, np.ndarray],
    /,
    config: EncoderConfig | None = None,
    *,
    topology: Topology | None = None,
    progress: Callable[[int, int, str], None] | None = None,
    **options: Any,
) -> int:
    """Encode named tensors into a file, unit by unit; returns its size in bytes.

    ``destination`` is a path, written atomically (the file appears whole
    or not at all, see :func:`nnc_core.files.write_atomically`), or a
    binary file object.  ``tensors`` may be a lazy mapping (an ``.npz``
    archive, a safetensors file): each tensor is read when its turn comes
    and dropped once coded, so memory holds the tensors in flight, not the
    model.  The other arguments are those of :func:`encode`.
    """
    config = EncoderConfig.of(config, **options)
    size = 0

    def into(f: BinaryIO) -> None:
        nonlocal size

        def write(unit: bytes) -> None:
            nonlocal size
            f.write(unit)
            size += len(unit)

        write_stream(write, tensors, config, topology=topology, progress=progress)

    if isinstance(destination, (str, os.PathLike)):
        write_atomically(destination, into)
    else:
        into(destination)
    return size


def decode(
    data: bytes | bytearray | memoryview,
    /,
    *,
    state: DecoderState | None = None,
    max_elements: int | None = None,
    base: object = None,
    recompose: bool = True,
    apply_local_scaling: bool = False,
    unprune: bool = False,
    workers: int | None = None,
    dtype: Any = None,
) -> dict[str, np.ndarray]:
    """Decode an NNR bitstream into ``{tensor name: array}`` in stream order.

    Pass the same ``state`` to decode the bitstreams of an incremental
    sequence in order (the decoded arrays of an update are the update itself).
    With ``base`` (arrays, or the bitstream(s) it was sent in) the bitstream
    is an update of that model and the result is the updated model; an update
    of another base is refused (:class:`~nnc_core.errors.BaseMismatchError`,
    see :mod:`nnc_core.incremental`).

    Parameter reduction (clause 8, :mod:`nnc_core.reduction`): a decomposed
    weight (NNR_CPT_DC) comes back as ``G @ H`` in the weight's shape unless
    ``recompose`` is False (then as its factors ``<weight>_G``, ``<weight>_H``);
    ``apply_local_scaling`` multiplies each block weight's rows by its local
    scaling factors and drops them; ``unprune`` returns pruned tensors in
    their original shapes (zeros where pruned) from the stream's NNR_TPL_PRUN
    topology, otherwise they keep the pruned shapes their NDUs signal.

    Every tensor comes back in its own shape and dtype as the stream signals
    them (``nnr_decompressed_data_format``, see :mod:`nnc_core.dtypes`;
    float32 and int32 where a stream signals none, as NNCodec's do); ``dtype``
    returns the float tensors in that dtype instead.

    ``max_elements``: see :func:`decode_bitstream` (default: proportional to
    the input size).  ``workers``: threads decoding at once (default: the
    CPUs available to the process; see :func:`iter_decode`).
    """
    if base is not None:
        if state is not None:
            raise ConfigError("give either a decoder state or a base")
        if not recompose or apply_local_scaling or unprune:  # updates carry none of these tools
            raise ConfigError("recompose, apply_local_scaling and unprune do not apply to an update (base=)")
        out = decode_update(data, base, max_elements=max_elements, workers=workers)
        return out if dtype is None else {n: _as_dtype(v, float_dtype(dtype)) for n, v in out.items()}
    return dict(
        iter_decode(
            data,
            state=state,
            max_elements=max_elements,
            recompose=recompose,
            apply_local_scaling=apply_local_scaling,
            unprune=unprune,
            workers=workers,
            dtype=dtype,
        )
    )


def iter_decode(
    data: bytes | bytearray | memoryview,
    /,
    *,
    state: DecoderState | None = None,
    max_elements: int | None = None,
    recompose: bool = True,
    apply_local_scaling: bool = False,
    unprune: bool = False,
    workers: int | None = None,
    dtype: Any = None,
) -> Iterator[tuple[str, np.ndarray]]:
    """``(name, array)`` of every tensor of a bitstream in stream order, each
    as soon as it is decoded: a consumer that writes them out holds only the
    tensors in flight, never the model.

    Options as in :func:`decode`.  NDUs decode on ``workers`` threads
    (default: the CPUs available to the process) in a bounded window (see
    :func:`nnc_core.parallel.ordered_map`); the results do not depend on the
    number, nor on the decoder ``state`` of incremental streams (see
    :func:`nnc_core.decoding.decode_steps`).
    """
    units = read_units(data)
    workers = check_workers(workers)
    pruning = reduction.read_pruning_topology(units) if unprune else {}
    steps = plan_bitstream(units, data_size=len(data), max_elements=max_elements)
    for group in decode_steps(
        steps, state, keep_stored=state is not None, workers=workers, float_dtype=float_dtype(dtype)
    ):
        out = reduction.reconstruct(group, recompose=recompose, apply_local_scaling=apply_local_scaling)
        if pruning:
            out = reduction.unprune(out, pruning)
        yield from out.items()


def _as_dtype(value: np.ndarray, dtype: np.dtype | None) -> np.ndarray:
    """Float tensors in ``dtype``; integer and bool ones as they are."""
    return value.astype(dtype) if dtype is not None and not is_integer(value.dtype) else value
