"""An NNR bitstream as a read-only mapping: every header parsed once, each
tensor decoded when asked for.

:func:`open` memory-maps a file (or takes bytes), reads every unit header
(no payload is decoded) and plans the NDUs as the full decoder does, so that
``reader[name]`` decodes the NDUs carrying that tensor alone (a block's NDU,
every part of a split tensor, both factors of a decomposition) and
iteration decodes in stream order, on several threads, holding only the
tensors in flight.
"""

from __future__ import annotations

import builtins
import itertools
import mmap
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from nnc_core import reduction
from nnc_core.bitstream.units import (
    NduHeader,
    PayloadType,
    Unit,
    flatten_units,
    read_units,
)
from nnc_core.decoding import (
    DecodedTensor,
    DecoderState,
    _Failure,
    _NduStep,
    decode_steps,
    plan_bitstream,
    wide_integers,
)
from nnc_core.dtypes import DATA_FORMATS, dtype_of, float_dtype
from nnc_core.errors import ConfigError
from nnc_core.parallel import check_workers

__all__ = ["open", "NNRReader", "TensorInfo"]


@dataclass(frozen=True)
class TensorInfo:
    """What the headers say of a tensor, without decoding it."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype | str  # a name where the dtype needs ml_dtypes and it is not installed
    payload_type: str  # NNR_PT_INT, NNR_PT_FLOAT, NNR_PT_RAW_FLOAT or NNR_PT_BLOCK (the NDU's)
    units: tuple[tuple[int, int | None], ...]  # (unit index, index inside an aggregate unit) of the NDUs carrying it
    bytes: int  # size of those NDUs (shared with the tensors they also carry)


def open(  # noqa: A001 - nnc_core.open, as io.open and tarfile.open
    source: str | os.PathLike[str] | bytes | bytearray | memoryview,
    /,
    *,
    max_elements: int | None = None,
    recompose: bool = True,
    apply_local_scaling: bool = False,
    unprune: bool = False,
    workers: int | None = None,
    state: DecoderState | None = None,
    dtype: Any = None,
) -> NNRReader:
    """Open an NNR bitstream (a path, memory-mapped, or bytes) as a read-only
    mapping from tensor name to array.

    Options as in :func:`nnc_core.decode`.  ``state``: the decoder state of
    the incremental streams before this one; it is read, never changed.
    Raises :class:`~nnc_core.errors.BitstreamError` for any problem the
    headers show (the payloads are checked as each tensor is decoded).
    """
    return NNRReader(
        source,
        max_elements=max_elements,
        recompose=recompose,
        apply_local_scaling=apply_local_scaling,
        unprune=unprune,
        workers=workers,
        state=state,
        dtype=dtype,
    )


class NNRReader(Mapping[str, np.ndarray]):
    """See :func:`open`.  Use as a context manager, or :meth:`close` it, to
    unmap the file at once."""

    def __init__(
        self,
        source: str | os.PathLike[str] | bytes | bytearray | memoryview,
        *,
        max_elements: int | None,
        recompose: bool,
        apply_local_scaling: bool,
        unprune: bool,
        workers: int | None,
        state: DecoderState | None,
        dtype: Any = None,
    ) -> None:
        self._map: mmap.mmap | None = None
        if isinstance(source, (bytes, bytearray, memoryview)):
            data: Any = source
        else:
            with builtins.open(source, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
            self._map = data if size else None
        self.closed = False
        try:
            self._index(data, max_elements, recompose, apply_local_scaling, unprune, workers, dtype, state)
        except BaseException:
            self.close()  # a refused stream leaves no mapping behind
            raise

    def _index(
        self,
        data: Any,
        max_elements: int | None,
        recompose: bool,
        apply_local_scaling: bool,
        unprune: bool,
        workers: int | None,
        dtype: Any,
        state: DecoderState | None,
    ) -> None:
        """Parse every header once and plan every NDU; index the tensors by name."""
        self._workers = check_workers(workers)
        self._float_dtype = float_dtype(dtype)
        self._options = dict(recompose=recompose, apply_local_scaling=apply_local_scaling)
        self._state = state
        self.units: list[Unit] = read_units(data)
        self.size = len(data)
        self._pruning = reduction.read_pruning_topology(self.units) if unprune else {}
        self._groups: list[list[_NduStep]] = []
        for step in plan_bitstream(self.units, data_size=self.size, max_elements=max_elements):
            if isinstance(step, _Failure):
                raise step.error
            if step.group == len(self._groups):
                self._groups.append([])
            self._groups[step.group].append(step)
        sizes = {(i, j): u.size for i, j, u in flatten_units(self.units)}
        unit_end = [u.offset + u.size for u in self.units]
        self._group_at = {
            (step.where["unit_index"], step.where["aggregated_index"]): g
            for g, steps in enumerate(self._groups)
            for step in steps
        }
        self._group_end = list(
            itertools.accumulate((max(unit_end[s.where["unit_index"]] for s in steps) for steps in self._groups), max)
        )
        self._info: dict[str, TensorInfo] = {}
        self._group_of: dict[str, int] = {}
        self._repeated: dict[str, tuple[int, int]] = {}  # name -> units of its first and last NDU
        for g, steps in enumerate(self._groups):
            for info in _group_info(steps, sizes, recompose, apply_local_scaling, self._pruning, self._float_dtype):
                if info.name in self._info:  # e.g. bitstreams concatenated: a later one updates an earlier one
                    self._repeated[info.name] = (self._info[info.name].units[0][0], info.units[0][0])
                self._info[info.name] = info
                self._group_of[info.name] = g
        # Reading the headers faulted in the pages around each (the kernel maps
        # neighbouring cached pages with each fault): most of a stream of
        # small tensors.  Decoding reads each payload again when it comes.
        self._release(0, self.size)

    # -- the mapping --------------------------------------------------------

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError("this NNRReader is closed")

    def __getitem__(self, name: str) -> np.ndarray:
        self._check_open()
        group = self._group_of[name]  # KeyError for an unknown name, as a dict
        if name in self._repeated:
            first, last = self._repeated[name]
            raise ConfigError(
                f"tensor {name!r} is carried more than once (units {first} and {last}, e.g. bitstreams concatenated): "
                "it has no value of its own; iterate over items() (every occurrence in stream order) or decode each "
                "bitstream alone"
            )
        return self._decode_group(self._groups[group], workers=self._workers)[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._info)

    def __len__(self) -> int:
        return len(self._info)

    def __contains__(self, name: object) -> bool:
        return name in self._info

    def items(self) -> Iterator[tuple[str, np.ndarray]]:  # type: ignore[override]  # a generator (decoding in order), not an ItemsView
        """Every tensor in stream order, decoded on the reader's threads as the
        iteration goes (only the tensors in flight are held).  A tensor the
        stream carries more than once comes once per occurrence."""
        return self._items(ordered=True)

    def items_as_decoded(self) -> Iterator[tuple[str, np.ndarray]]:
        """Every tensor as :meth:`items` gives them, but each as soon as it is
        decoded: a writer whose format takes entries in any order (an
        ``.npz``) stores the small tensors while a large one before them is
        still decoding.  The order depends on the threads' timing (with
        ``workers=1``, and for an incremental stream, it is stream order)."""
        return self._items(ordered=False)

    def _items(self, *, ordered: bool) -> Iterator[tuple[str, np.ndarray]]:
        self._check_open()
        steps = (step for group in self._groups for step in group)
        state = None if self._state is None else _read_only(self._state)
        done = [False] * len(self._groups)
        passed = 0  # groups before this one are all decoded
        released = 0
        for decoded in decode_steps(
            steps,
            state,
            keep_stored=state is not None,
            workers=self._workers,
            float_dtype=self._float_dtype,
            ordered=ordered,
        ):
            yield from self._finish(decoded).items()
            for t in decoded[:1]:  # a group's tensors share its first NDU
                done[self._group_at[t.carried_by[0]]] = True
            while passed < len(done) and done[passed]:
                passed += 1
            # the mapped pages of every group passed (not of a group decoded early)
            released = self._release(released, self._group_end[passed - 1] if passed else 0)

    def values(self) -> Iterator[np.ndarray]:  # type: ignore[override]  # a generator (decoding in order), not a ValuesView
        return (value for _, value in self.items())

    def info(self, name: str) -> TensorInfo:
        """Shape, dtype, payload type and size of a tensor, from the headers alone."""
        self._check_open()
        return self._info[name]

    # -- resources ----------------------------------------------------------

    def close(self) -> None:
        """Unmap the file; the reader cannot decode afterwards.  (An array still
        viewing the mapping, such as a raw-float payload a caller kept, keeps it
        mapped until it goes.)"""
        self.closed = True
        self._groups = []
        self.units = []
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:  # an array still viewing it: unmapped when that goes
                pass
            self._map = None

    def __enter__(self) -> NNRReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- decoding -----------------------------------------------------------

    def _release(self, start: int, end: int) -> int:
        """Drop the mapped pages from ``start`` to ``end`` (page-aligned down), which
        the iteration has passed; returns where the next release starts.

        A file mapping's pages stay resident once read, so a decode of a
        stream larger than memory (raw floats of a lossless stream) would
        grow to the stream's size.  Dropping them is safe even while arrays
        still view them (raw-float payloads): the kernel reads them again
        from the file on the next access.
        """
        end -= end % mmap.PAGESIZE
        advice = getattr(mmap, "MADV_DONTNEED", None)  # not on Windows, which has no madvise
        if self._map is None or advice is None or end <= start:
            return start
        self._map.madvise(advice, start, end - start)
        return end

    def _decode_group(self, steps: list[_NduStep], workers: int) -> dict[str, np.ndarray]:
        state = None if self._state is None else _read_only(self._state)
        out: dict[str, np.ndarray] = {}
        for decoded in decode_steps(
            iter(steps), state, keep_stored=state is not None, workers=workers, float_dtype=self._float_dtype
        ):
            out.update(self._finish(decoded))
        return out

    def _finish(self, decoded: list[DecodedTensor]) -> dict[str, np.ndarray]:
        out = reduction.reconstruct(decoded, **self._options)
        return reduction.unprune(out, self._pruning) if self._pruning else out


def _read_only(state: DecoderState) -> DecoderState:
    """A state the decoding can update without changing the caller's."""
    return DecoderState(dict(state.base), dict(state.history), dict(state.put_node_depth))


def _group_info(
    steps: list[_NduStep],
    sizes: dict[tuple[int, int | None], int],
    recompose: bool,
    apply_local_scaling: bool,
    pruning: Mapping[str, reduction.PrunedElement],
    float_dtype: np.dtype | None,
) -> list[TensorInfo]:
    """The tensors a group of NDUs yields after reconstruction, in its order."""
    units = tuple((s.where["unit_index"], s.where["aggregated_index"]) for s in steps)
    nbytes = sum(sizes[u] for u in units)
    first = steps[0].unit.header
    payload = PayloadType(first.payload_type).name
    shapes: dict[str, tuple[int, ...]] = {}
    dtypes: dict[str, np.dtype | str] = {}
    roles: dict[str, str] = {}
    for step in steps:
        h = step.unit.header
        axis_of = h.first_tensor_dimension_shift
        mapping = h.tensor_dimension_mapping if h.payload_type != PayloadType.NNR_PT_BLOCK else None
        if h.payload_type == PayloadType.NNR_PT_RAW_FLOAT:
            members = [("tensor", str(h.element_ids[0]), tuple(h.tensor_dimensions) or (1,), -1)]
        else:
            members = step.members
        for role, name, shape, cb in members:
            if mapping is not None:
                axis = mapping.concatenation_axis_index
                bounds = [0, *mapping.split_index, shape[axis]]
                for element, a, b in zip(h.element_ids, bounds, bounds[1:]):
                    part = tuple(b - a if i == axis else d for i, d in enumerate(shape))
                    shapes[str(element)] = part
                    dtypes[str(element)] = _dtype(h, cb, float_dtype)
                    roles[str(element)] = role
                continue
            if name in shapes and step.split is not None:  # a further part: joined along the coded first dimension
                axis = axis_of if len(shape) > 1 else 0
                prev = shapes[name]
                shape = tuple(prev[i] + shape[i] if i == axis else d for i, d in enumerate(shape))
            if not h.tensor_dimensions and h.tensor_dimensions_flag and role == "tensor":
                shape = ()  # a scalar
            if wide_integers(h) and role == "tensor":
                shape = tuple(shape)[:-1]  # integers beyond int32: the int32 planes' axis goes
            shapes[name] = tuple(shape)
            dtypes[name] = _dtype(h, cb, float_dtype)
            roles[name] = role
    by_role = {role: name for name, role in roles.items()}
    if apply_local_scaling and "ls" in by_role and first.payload_type != PayloadType.NNR_PT_INT:
        shapes.pop(by_role["ls"])
    if recompose and "G" in by_role and "H" in by_role:
        g, h_name = by_role["G"], by_role["H"]
        weight = reduction.recomposed_name(g)
        shapes = {
            (weight if n == g else n): (tuple(first.tensor_dimensions) if n == g else s)
            for n, s in shapes.items()
            if n != h_name
        }
        dtypes[weight] = dtypes[g]  # G @ H in G's dtype
    out = []
    for name, shape in shapes.items():
        element = pruning.get(name)
        if element is not None and tuple(shape) == element.shape:
            shape = element.original_shape
        out.append(TensorInfo(name, tuple(shape), dtypes[name], payload, units, nbytes))
    return out


def _dtype(h: NduHeader, codebook_index: int, float_dtype: np.dtype | None) -> np.dtype | str:
    """What decoding returns; the dtype's name where ml_dtypes is missing (decoding then says so)."""
    floats = h.payload_type != PayloadType.NNR_PT_INT
    if floats and float_dtype is not None:
        return float_dtype
    if h.decompressed_data_format_present_flag and h.decompressed_data_format in DATA_FORMATS:
        try:
            return dtype_of(h.decompressed_data_format) or np.dtype(np.float32)
        except ConfigError:
            return DATA_FORMATS[h.decompressed_data_format]
    if not floats:
        return np.dtype(np.int32)
    if codebook_index >= 0:
        return np.dtype(np.float64)  # codebook values times the step, as the reference decoder returns them
    return np.dtype(np.float32)
