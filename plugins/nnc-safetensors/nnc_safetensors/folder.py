"""A checkpoint's layout and its other files, carried in the bitstream.

A Hugging Face model folder is more than tensors: shard files with their
headers and ``__metadata__`` (transformers refuses a file without
``format``), the index that maps tensors to shards, and the files a client
needs to load it (``config.json``, tokenizer, generation config, README).
Decision (docs/decisions.md): all of it travels in one NNR_TPL unit, as

* ``topology_storage_format`` NNR_TPL_UNREC (0): the standard defines no
  format for it, and 0 is the value that says so; no reserved value is used;
* ``topology_compression_format`` NNR_PT_RAW (0), ``topology_data`` a UTF-8
  JSON document ending in one NUL byte: NNCodec reads ``topology_data`` as a
  NUL-terminated string (``st(v)``), so it decodes such a stream's tensors
  and ignores the document; binary or deflated data would stop it.  Each
  carried file is raw-deflated and base64-encoded inside the document;
* the document starts with ``{"format":"nnc-safetensors/1"`` (the plugin's
  ``topology_magic``), which is how ``nnc decode`` knows a folder is to be
  restored; any decoder sees a topology it does not recognise and the
  tensors by name.

The document lists each weight file with its exact header text (so that a
lossless round trip writes the same bytes), the index file's path and every
other file with its size and SHA-256 (checked when restored).  Paths are
relative, POSIX, without ``..``: a hostile document cannot write outside the
destination folder.
"""

from __future__ import annotations

import base64
import hashlib
import json
import warnings
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from nnc_core.plugins import BitstreamError, ModelError, Topology
from nnc_safetensors.layout import SafetensorsFile, parse_header, read_file
from nnc_safetensors.plugin import TOPOLOGY_MAGIC

__all__ = ["Checkpoint", "scan", "to_topology", "from_topology", "ALTERNATIVE_WEIGHTS"]

FORMAT = "nnc-safetensors/1"

#: files of a model folder that hold the same weights in another format;
#: they are left out (with a warning), not carried byte for byte
ALTERNATIVE_WEIGHTS = (
    ".bin",
    ".pt",
    ".pth",
    ".h5",
    ".msgpack",
    ".onnx",
    ".onnx_data",
    ".ckpt",
    ".gguf",
    ".tflite",
    ".pb",
    ".ot",
    ".mlmodel",
    ".npz",
)

#: the other files a bitstream carries are bounded, as the topology unit is
MAX_CARRIED_BYTES = 256 << 20

INDEX_SUFFIX = ".safetensors.index.json"


@dataclass
class Checkpoint:
    """What a safetensors model is besides its tensors.

    Attributes:
        folder: whether it was read from a folder (restored as one) or a file.
        files: relative path -> header of each weight file, in coding order.
        index: relative path of the shard index, if the folder has one.
        carried: relative path -> bytes of every other file (read when the
            topology is made; restored byte-identical).
    """

    folder: bool
    files: dict[str, SafetensorsFile]
    index: str | None = None
    carried: dict[str, bytes] = field(default_factory=dict)

    @property
    def prefixed(self) -> bool:
        """Whether NNR names tensors ``"<file>:<name>"``: in a folder of several
        weight files without a shard index (variants of a model, say, whose
        names repeat), a name alone does not say which file it is in."""
        return self.folder and self.index is None and len(self.files) > 1

    def names(self, path: str) -> list[tuple[str, str]]:
        """(name in the file, NNR name) of each tensor of a weight file, in data order."""
        layout = self.files[path]
        return [(e.name, f"{path}:{e.name}" if self.prefixed else e.name) for e in layout.entries]


def scan(source: Path) -> Checkpoint:
    """The layout of a ``.safetensors`` file or of a model folder (every
    ``*.safetensors`` file in it, with the index's weight map checked)."""
    if source.is_file():
        return Checkpoint(False, {source.name: read_file(source)})
    weights = sorted(p for p in _files(source) if p.name.endswith(".safetensors"))
    if not weights:
        raise ModelError(f"{source}: a folder without .safetensors files")
    files = {p.relative_to(source).as_posix(): read_file(p) for p in weights}
    indexes = sorted(p for p in _files(source) if p.name.endswith(INDEX_SUFFIX))
    if len(indexes) > 1:
        raise ModelError(
            f"{source}: several shard indexes ({', '.join(p.name for p in indexes)}); one model per folder"
        )
    checkpoint = Checkpoint(True, files, indexes[0].relative_to(source).as_posix() if indexes else None)
    owner: dict[str, str] = {}
    for path in files:
        for _, name in checkpoint.names(path):
            if name in owner:
                raise ModelError(
                    f"{source}: tensor {name!r} is in both {owner[name]} and {path}; NNR names tensors uniquely"
                )
            owner[name] = path
    if checkpoint.index is not None:
        _check_index(source / checkpoint.index, owner, source)
    skipped, total = [], 0
    for p in sorted(_files(source)):
        relative = p.relative_to(source).as_posix()
        if relative in files:
            continue
        if p.name.lower().endswith(ALTERNATIVE_WEIGHTS):
            skipped.append(relative)
            continue
        data = p.read_bytes()
        total += len(data)
        if total > MAX_CARRIED_BYTES:
            raise ModelError(
                f"{source}: the files besides the weights exceed {MAX_CARRIED_BYTES >> 20} MiB "
                f"(at {relative}); move large ones out of the folder"
            )
        checkpoint.carried[relative] = data
    if skipped:
        warnings.warn(f"{source}: not carried (weights in another format): {', '.join(skipped)}", stacklevel=3)
    return checkpoint


def _files(folder: Path) -> Iterator[Path]:
    """Regular files under ``folder`` (symbolic links followed, as a Hugging
    Face cache snapshot has them), hidden folders such as ``.cache`` left out."""
    for p in folder.iterdir():
        if p.is_dir():
            if not p.name.startswith("."):
                yield from _files(p)
        elif p.is_file():
            yield p


def _check_index(path: Path, owner: Mapping[str, str], source: Path) -> None:
    try:
        weight_map = json.loads(path.read_text("utf-8"))["weight_map"]
    except (ValueError, KeyError, TypeError) as e:
        raise ModelError(f"{path}: not a shard index (no weight_map: {e})") from e
    parent = PurePosixPath(path.relative_to(source).as_posix()).parent
    for name, shard in weight_map.items():
        where = (parent / shard).as_posix()
        if owner.get(name) != where:
            raise ModelError(
                f"{path}: tensor {name!r} is mapped to {shard}, but "
                + (f"it is in {owner[name]}" if name in owner else "no shard holds it")
            )
    extra = sorted(set(owner) - set(weight_map))
    if extra:
        raise ModelError(f"{path}: tensor {extra[0]!r} ({owner[extra[0]]}) is missing from the weight map")


# -- the topology document -------------------------------------------------------


def to_topology(checkpoint: Checkpoint) -> Topology:
    document = {
        "format": FORMAT,
        "folder": checkpoint.folder,
        "files": [{"path": path, "header": layout.header} for path, layout in checkpoint.files.items()],
        "index": checkpoint.index,
        "carried": [
            {
                "path": path,
                "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
                "deflate": base64.b64encode(_deflate(data)).decode("ascii"),
            }
            for path, data in checkpoint.carried.items()
        ],
    }
    data = json.dumps(document, separators=(",", ":"), ensure_ascii=True).encode("ascii") + b"\x00"
    assert data.startswith(TOPOLOGY_MAGIC)
    return Topology(0, data)


def is_ours(topology: Topology | None) -> bool:
    return topology is not None and bytes(topology.data).startswith(TOPOLOGY_MAGIC)


def from_topology(topology: Topology) -> Checkpoint:
    """The checkpoint a bitstream's topology describes; a :class:`BitstreamError`
    names what is wrong in a damaged or hostile document."""
    data = bytes(topology.data)
    try:
        document = json.loads(data.rstrip(b"\x00").decode("ascii"))
        if document.get("format") != FORMAT:
            raise ValueError(f"format {document.get('format')!r}, not {FORMAT}")
        files: dict[str, SafetensorsFile] = {}
        for record in document["files"]:
            path = _safe_path(record["path"])
            files[path] = parse_header(record["header"], where=path)
        index = document["index"]
        if index is not None:
            index = _safe_path(index)
        carried: dict[str, bytes] = {}
        for record in document["carried"]:
            path = _safe_path(record["path"])
            content = _inflate(base64.b64decode(record["deflate"], validate=True), int(record["size"]))
            if len(content) != record["size"] or hashlib.sha256(content).hexdigest() != record["sha256"]:
                raise ValueError(f"{path}: content does not match its size and SHA-256")
            carried[path] = content
        paths = list(files) + list(carried)
        if len({p.lower() for p in paths}) != len(paths):
            raise ValueError("a path is listed twice")
        return Checkpoint(bool(document["folder"]), files, index, carried)
    except (ModelError, ValueError, KeyError, TypeError, zlib.error, UnicodeDecodeError, AttributeError) as e:
        raise BitstreamError(f"the safetensors folder document in the topology unit is damaged: {e}") from e


def _safe_path(path: object) -> str:
    """A relative POSIX path that stays inside the destination folder."""
    if not isinstance(path, str) or not path or "\x00" in path or "\\" in path:
        raise ValueError(f"bad path {path!r}")
    parts = PurePosixPath(path).parts
    if PurePosixPath(path).is_absolute() or any(p in ("..", ".", "") for p in parts) or path.endswith("/"):
        raise ValueError(f"path {path!r} leaves the destination folder")
    return path


def _deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    return packer.compress(data) + packer.flush()


def _inflate(data: bytes, size: int) -> bytes:
    unpacker = zlib.decompressobj(-15)
    out = unpacker.decompress(data, size + 1)  # bounded: a deflate bomb stops at the stated size
    if len(out) > size or not unpacker.eof:
        raise ValueError("deflated content does not end at its stated size")
    return out
