"""The built-in plugin: numpy archives (``.npz``) and mappings of arrays.

It goes through the same hook as every framework plugin, so the command line
and the API have one path for all formats.  NNR carriage in an ``.npz``: the
bitstream is stored as the uint8 array ``__nnr__``.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import BinaryIO

import numpy as np

from nnc_core.bitstream.units import TopologyStorageFormat
from nnc_core.errors import ModelError
from nnc_core.files import write_atomically
from nnc_core.model import NNRModel, as_tensor_mapping, items_as_decoded
from nnc_core.plugins.hookspecs import hookimpl
from nnc_core.plugins.types import FrameworkPlugin, Source

CARRIAGE_KEY = "__nnr__"


@hookimpl
def nnc_frameworks() -> Iterator[FrameworkPlugin]:
    yield FrameworkPlugin(
        name="numpy",
        adapter="nnc_core.plugins.npz:NpzAdapter",
        framework="numpy",
        suffixes=(".npz",),
        object_types=("builtins.dict", "collections.OrderedDict"),
        topology_format=TopologyStorageFormat.NNR_TPL_UNREC,
        description="numpy .npz archives and dicts of arrays (built in)",
    )


class NpzAdapter:
    """Reads and writes ``.npz`` archives and ``{name: ndarray}`` mappings."""

    def can_read(self, source: Source, /) -> bool:
        if isinstance(source, Mapping):
            return all(isinstance(v, np.ndarray) for v in source.values())
        return Path(str(source)).suffix.lower() == ".npz"

    def read(self, source: Source, /) -> NNRModel:
        if isinstance(source, Mapping):
            return NNRModel(as_tensor_mapping(source))
        return NNRModel(NpzTensors(Path(str(source))))  # type: ignore[arg-type]  # a read-only mapping

    def write(self, model: NNRModel, destination: Path, /, *, template: Source | None = None) -> None:
        # the archive's directory keeps the model's order, whatever order the tensors come in
        tensors = model.tensors
        write_atomically(destination, lambda f: write_npz(f, items_as_decoded(tensors), order=list(tensors)))

    def embed(self, bitstream: bytes, destination: Path, /, *, template: Source | None = None) -> None:
        payload = np.frombuffer(bitstream, dtype=np.uint8)
        write_atomically(destination, lambda f: np.savez(f, **{CARRIAGE_KEY: payload}))  # type: ignore[arg-type]  # numpy's stub: **kwds might hold allow_pickle

    def extract(self, source: Path, /) -> bytes | None:
        with np.load(str(source), allow_pickle=False) as archive:
            if CARRIAGE_KEY not in archive.files:
                return None
            return archive[CARRIAGE_KEY].tobytes()


class NpzTensors(Mapping[str, np.ndarray]):
    """The arrays of an ``.npz`` archive, each read from the file when asked
    for: the encoder reads a model larger than memory one tensor at a time.

    The archive's directory is read (and checked) when this is made; an
    array that cannot be read raises a :class:`ModelError` naming it.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._archive = np.load(str(path), allow_pickle=False)
            if not isinstance(self._archive, np.lib.npyio.NpzFile):
                raise ValueError("a single .npy array, not an archive")
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise ModelError(f"{path}: not a readable .npz archive: {e}") from e
        self._names = [name for name in self._archive.files if name != CARRIAGE_KEY]
        self._known = set(self._names)

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._known:
            raise KeyError(name)
        try:
            return self._archive[name]
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise ModelError(f"{self.path}: array {name!r} cannot be read: {e}") from e

    def shape_of(self, name: str) -> tuple[int, ...]:
        """An array's shape from its ``.npy`` header, without reading the array."""
        return self._header(name)[0]

    def dtype_of(self, name: str) -> np.dtype:
        """An array's dtype from its ``.npy`` header, without reading the array."""
        return self._header(name)[1]

    def _header(self, name: str) -> tuple[tuple[int, ...], np.dtype]:
        if name not in self._known:
            raise KeyError(name)
        try:
            with self._archive.zip.open(name + ".npy") as f:
                version = np.lib.format.read_magic(f)
                header = (
                    np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                )
                shape, _, dtype = header(f)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
            raise ModelError(f"{self.path}: array {name!r} cannot be read: {e}") from e
        return tuple(int(d) for d in shape), np.dtype(dtype)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._known

    def close(self) -> None:
        """Closes the archive; arrays already read stay valid."""
        self._archive.close()

    def __enter__(self) -> NpzTensors:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_npz(f: BinaryIO, arrays: Iterable[tuple[str, np.ndarray]], *, order: Iterable[str] | None = None) -> None:
    """An ``.npz`` archive (as :func:`numpy.savez` writes one) from
    ``(name, array)`` pairs, each written as it comes: an iterator of decoded
    tensors is never held whole.

    ``order``: the names in the order the archive lists them
    (:func:`numpy.load`'s ``files``), whatever order the arrays come in; the
    zip format's central directory, written last, gives the order, and the
    entries themselves may lie in the file in any.  Names not in ``order``
    follow, as they came.
    """
    with zipfile.ZipFile(f, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, value in arrays:
            value = np.asanyarray(value)
            with archive.open(str(name) + ".npy", mode="w", force_zip64=True) as member:
                np.lib.format.write_array(member, value, allow_pickle=False)
        if order is not None:
            rank = {str(name) + ".npy": i for i, name in enumerate(order)}
            # infolist() is the list the directory is written from on close
            archive.infolist().sort(key=lambda info: rank.get(info.filename, len(rank)))
