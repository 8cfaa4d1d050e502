"""Writing decoded tensors back as a ``.safetensors`` file or a model folder.

The layout comes first: each file's header is decided from the tensors'
dtypes and shapes (which a bitstream reader knows before decoding), the
original header text where nothing changed, so that a lossless round trip
writes the same bytes.  Then the tensors are written at their offsets as
they are decoded, in stream order, one at a time.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from nnc_core.plugins import ModelError, atomic_path, items_as_decoded
from nnc_safetensors.folder import Checkpoint
from nnc_safetensors.layout import Entry, FileWriter, SafetensorsFile, code_of, header_text, packed

__all__ = ["write_file", "write_folder"]


def _spec(tensors: Mapping[str, np.ndarray], name: str) -> tuple[np.dtype, tuple[int, ...]]:
    """A tensor's dtype and shape, from the mapping's headers where it has them
    (a bitstream reader: nothing decoded), else from the array."""
    dtype_of, shape_of = getattr(tensors, "dtype_of", None), getattr(tensors, "shape_of", None)
    if dtype_of is not None and shape_of is not None:
        return np.dtype(dtype_of(name)), tuple(shape_of(name))
    value = np.asarray(tensors[name])
    return value.dtype, tuple(value.shape)


def _layout(
    original: SafetensorsFile | None, names: list[tuple[str, str]], tensors: Mapping[str, np.ndarray], where: str
) -> tuple[str, dict[str, Entry]]:
    """The header text a file gets and its entries by NNR name: the original
    ones when every tensor keeps its dtype and shape, else new ones in the
    original order.  ``names``: (name in the file, NNR name) pairs."""
    specs = []
    for local, name in names:
        dtype, shape = _spec(tensors, name)
        specs.append((local, code_of(dtype, where=f"{where}: tensor {local!r}"), shape))
    if original is not None and [(e.name, e.dtype, e.shape) for e in original.entries] == specs:
        entries = list(original.entries)
        header = original.header
    else:
        entries = packed(specs)
        header = header_text(entries, original.metadata if original is not None else None)
    return header, {name: entry for (_, name), entry in zip(names, entries)}


def _write_tensors(tensors: Mapping[str, np.ndarray], targets: dict[str, tuple[FileWriter, Entry]]) -> None:
    """Each tensor into its file as it is decoded (the entries' places are laid
    out already, so in whatever order a decoding mapping hands them on); all
    of them, once."""
    written: set[str] = set()
    for name, value in items_as_decoded(tensors):
        target = targets.get(name)
        if target is None:
            continue
        writer, entry = target
        value = np.asarray(value)
        if tuple(value.shape) != entry.shape:
            raise ModelError(f"{writer.path}: tensor {name!r} has shape {value.shape}, expected {entry.shape}")
        writer.write(entry, value)
        written.add(name)
    missing = sorted(set(targets) - written)
    if missing:
        raise ModelError(f"tensor {missing[0]!r} was not among the decoded tensors")


def write_file(tensors: Mapping[str, np.ndarray], destination: Path, checkpoint: Checkpoint | None) -> None:
    """All of ``tensors`` as one ``.safetensors`` file: a single-file
    checkpoint's own header when nothing changed, else a new one (in the
    checkpoint's order, with its first file's ``__metadata__``)."""
    original: SafetensorsFile | None = None
    names = [(name, name) for name in tensors]
    if checkpoint is not None and checkpoint.files:
        order = [pair for path in checkpoint.files for pair in checkpoint.names(path)]
        if len(checkpoint.files) == 1 and sorted(n for _, n in order) == sorted(tensors):
            original, names = next(iter(checkpoint.files.values())), order
        else:  # a selection, or several files in one: NNR names, the checkpoint's order
            rank = {name: i for i, (_, name) in enumerate(order)}
            names.sort(key=lambda pair: rank.get(pair[1], len(rank)))
            original = SafetensorsFile("", next(iter(checkpoint.files.values())).metadata, ())
    header, entries = _layout(original, names, tensors, str(destination))
    with atomic_path(destination) as staged:
        writer = FileWriter(staged, header, max((e.end for e in entries.values()), default=0))
        try:
            _write_tensors(tensors, {name: (writer, e) for name, e in entries.items()})
        finally:
            writer.close()


def write_folder(tensors: Mapping[str, np.ndarray], destination: Path, checkpoint: Checkpoint | None) -> None:
    """A model folder: every weight file of ``checkpoint`` (or one
    ``model.safetensors`` for a bitstream that carries none), its index and
    its other files.  A checkpoint read from a single file is restored as a
    folder holding that file."""
    files: dict[str, tuple[SafetensorsFile | None, list[tuple[str, str]]]]
    if checkpoint is None:  # a bitstream that carries no checkpoint: its tensors as one file
        checkpoint = Checkpoint(True, {})
        files = {"model.safetensors": (None, [(name, name) for name in tensors])}
    else:
        files = {path: (layout, checkpoint.names(path)) for path, layout in checkpoint.files.items()}
    owner = {name: path for path, (_, names) in files.items() for _, name in names}
    present = set(tensors)
    missing = sorted(set(owner) - present)
    if missing:
        raise ModelError(
            f"{destination}: a model folder needs all of its {len(owner)} tensors; "
            f"{len(missing)} are not decoded (first: {missing[0]!r}). Write a .safetensors file instead"
        )
    unknown = sorted(present - set(owner))
    if unknown:
        raise ModelError(f"{destination}: tensor {unknown[0]!r} belongs to no file of the checkpoint")
    layouts = {
        path: _layout(original, names, tensors, f"{destination}/{path}") for path, (original, names) in files.items()
    }
    changed = any(
        original is None or header != original.header
        for (original, _), (header, _) in zip(files.values(), layouts.values())
    )
    with atomic_path(destination, directory=True) as staged:
        staged.mkdir()
        for path, data in checkpoint.carried.items():
            if path == checkpoint.index and changed:
                data = _index(data, layouts, destination / path)
            target = staged / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        writers, targets = [], {}
        try:
            for path, (header, entries) in layouts.items():
                target = staged / path
                target.parent.mkdir(parents=True, exist_ok=True)
                writer = FileWriter(target, header, max((e.end for e in entries.values()), default=0))
                writers.append(writer)
                targets.update({name: (writer, e) for name, e in entries.items()})
            _write_tensors(tensors, targets)
        finally:
            for writer in writers:
                writer.close()


def _index(data: bytes, layouts: dict[str, tuple[str, dict[str, Entry]]], where: Path) -> bytes:
    """The shard index with ``total_size`` of the files as written (tensors
    whose dtype changed change it), as transformers writes one."""
    try:
        index = json.loads(data)
        index.setdefault("metadata", {})["total_size"] = sum(
            e.nbytes for _, entries in layouts.values() for e in entries.values()
        )
    except (ValueError, AttributeError) as e:
        raise ModelError(f"{where}: the carried shard index is not JSON: {e}") from e
    return (json.dumps(index, indent=2, sort_keys=True) + "\n").encode("utf-8")
