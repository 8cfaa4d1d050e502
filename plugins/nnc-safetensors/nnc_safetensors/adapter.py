"""``.safetensors`` files and Hugging Face model folders as NNR sees them.

Read: one file, or a folder with every ``*.safetensors`` file in it (a
sharded checkpoint with its ``model.safetensors.index.json``, checked
against the shards).  Each tensor is read from its file when the encoder
reaches it, into an array of its own in its own dtype (bf16, fp16, fp8 …
with ``ml_dtypes``; no torch), and freed when the encoder is done with it:
a checkpoint larger than memory is encoded a few tensors at a time.  NNR
names them by their safetensors names, in file order and, within a file,
in data order.

Written: the same file, or the same folder (shards, index, ``__metadata__``,
the other files byte for byte; see :mod:`nnc_safetensors.folder`), each
tensor in the dtype the bitstream signals (its own, unless the decoder was
asked for another).  NNR carriage (Annex E): the bitstream as the uint8
tensor ``__nnr__`` of a ``.safetensors`` file.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from nnc_core.plugins import ModelError, NNRModel, Source, write_atomically
from nnc_safetensors import folder
from nnc_safetensors.folder import Checkpoint
from nnc_safetensors.layout import DTYPES, Entry, TensorFile
from nnc_safetensors.restore import write_file, write_folder

__all__ = ["SafetensorsAdapter", "SafetensorsTensors", "CARRIAGE_KEY"]

CARRIAGE_KEY = "__nnr__"


class SafetensorsTensors(Mapping[str, np.ndarray]):
    """The tensors of a checkpoint's files, each read from its file when
    asked for (see :class:`~nnc_safetensors.layout.TensorFile`).  ``shape_of`` and ``dtype_of`` answer from the headers."""

    def __init__(self, root: Path, checkpoint: Checkpoint) -> None:
        base = root if checkpoint.folder else root.parent
        self._entries: dict[str, tuple[TensorFile, Entry]] = {}
        self._files = [TensorFile(base / path, layout) for path, layout in checkpoint.files.items()]
        for path, file in zip(checkpoint.files, self._files):
            for entry, (_, name) in zip(file.layout.entries, checkpoint.names(path)):
                self._entries[name] = (file, entry)

    def __getitem__(self, name: str) -> np.ndarray:
        file, entry = self._entries[name]
        return file.tensor(entry)

    def shape_of(self, name: str) -> tuple[int, ...]:
        return self._entries[name][1].shape

    def dtype_of(self, name: str) -> np.dtype:
        return DTYPES[self._entries[name][1].dtype]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def close(self) -> None:
        for file in self._files:
            file.close()


class SafetensorsAdapter:
    """Reads and writes ``.safetensors`` files and model folders."""

    def can_read(self, source: Source, /) -> bool:
        if not isinstance(source, (str, Path)):
            return False
        path = Path(source)
        if path.is_dir():
            return any(p.suffix == ".safetensors" for p in path.iterdir())
        return path.suffix.lower() == ".safetensors"

    def read(self, source: Source, /) -> NNRModel:
        path = Path(str(source))
        if not path.exists():
            raise ModelError(f"{path}: no such file or folder")
        checkpoint = folder.scan(path)
        tensors = SafetensorsTensors(path, checkpoint)
        if CARRIAGE_KEY in tensors:
            raise ModelError(f"{path}: holds an NNR bitstream ({CARRIAGE_KEY}), not a model: nnc decode it")
        return NNRModel(tensors, topology=folder.to_topology(checkpoint), framework="safetensors")  # type: ignore[arg-type]  # a read-only mapping

    def write(self, model: NNRModel, destination: Path, /, *, template: Source | None = None) -> None:
        checkpoint = (
            folder.from_topology(model.topology)
            if model.topology is not None and folder.is_ours(model.topology)
            else None
        )
        if template is not None and checkpoint is None:
            checkpoint = folder.scan(Path(str(template)))
        destination = Path(destination)
        if destination.suffix.lower() == ".safetensors":
            write_file(model.tensors, destination, checkpoint)
        elif not destination.suffix:
            write_folder(model.tensors, destination, checkpoint)
        else:
            raise ModelError(
                f"{destination}: the safetensors plugin writes .safetensors files and model folders "
                f"(no suffix), not {destination.suffix} files"
            )

    def embed(self, bitstream: bytes, destination: Path, /, *, template: Source | None = None) -> None:
        from safetensors.numpy import save

        if Path(destination).suffix.lower() != ".safetensors":
            raise ModelError(f"{destination}: NNR carriage is in .safetensors files here")
        payload = {CARRIAGE_KEY: np.frombuffer(bitstream, dtype=np.uint8)}
        write_atomically(destination, lambda f: f.write(save(payload)))

    def extract(self, source: Path, /) -> bytes | None:
        checkpoint = folder.scan(Path(source))
        tensors = SafetensorsTensors(Path(source), checkpoint)
        try:
            if CARRIAGE_KEY not in tensors:
                return None
            return tensors[CARRIAGE_KEY].tobytes()
        finally:
            tensors.close()
