"""The built-in plugin: numpy archives (``.npz``) and mappings of arrays.

It goes through the same hook as every framework plugin, so the command line
and the API have one path for all formats.  NNR carriage in an ``.npz``: the
bitstream is stored as the uint8 array ``__nnr__``.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from nnc_core.bitstream.units import TopologyStorageFormat
from nnc_core.errors import ModelError
from nnc_core.files import write_atomically
from nnc_core.model import NNRModel, as_tensor_mapping
from nnc_core.plugins.hookspecs import hookimpl
from nnc_core.plugins.types import FrameworkPlugin, Source

CARRIAGE_KEY = "__nnr__"


@hookimpl
def nnc_frameworks():  # type: ignore[no-untyped-def]
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
        try:
            with open(str(source), "rb") as f, np.load(f, allow_pickle=False) as archive:
                tensors = {name: archive[name] for name in archive.files if name != CARRIAGE_KEY}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise ModelError(f"{source}: not a readable .npz archive: {e}") from e
        return NNRModel(tensors)

    def write(self, model: NNRModel, destination: Path, /, *, template: Source | None = None) -> None:
        write_atomically(destination, lambda f: np.savez(f, **model.tensors))

    def embed(self, bitstream: bytes, destination: Path, /, *, template: Source | None = None) -> None:
        payload = np.frombuffer(bitstream, dtype=np.uint8)
        write_atomically(destination, lambda f: np.savez(f, **{CARRIAGE_KEY: payload}))

    def extract(self, source: Path, /) -> bytes | None:
        with np.load(str(source), allow_pickle=False) as archive:
            if CARRIAGE_KEY not in archive.files:
                return None
            return archive[CARRIAGE_KEY].tobytes()
