"""One ``.safetensors`` file: its header, where each tensor lies, and writing one.

The format (https://github.com/huggingface/safetensors): an 8-byte
little-endian header length N, N bytes of JSON (``{name: {"dtype", "shape",
"data_offsets": [start, end]}, "__metadata__": {str: str}}``, padded with
spaces), then the tensors' bytes, little-endian, each at its offsets.

Reading validates the header with the ``safetensors`` library itself (its
checks of offsets, sizes and dtypes are the format's authority); each tensor
is then read by position into an array of its own, in its own dtype, only
when the encoder asks for it, and freed with it.  Writing streams: the header is known
before any tensor is decoded (dtypes and shapes come from the bitstream's
headers), so each tensor is written at its place as soon as it is decoded,
in whatever order, and none is held.
"""

from __future__ import annotations

import io
import json
import os
import struct
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnc_core.plugins import ModelError

__all__ = [
    "DTYPES",
    "Entry",
    "SafetensorsFile",
    "read_file",
    "parse_header",
    "header_text",
    "packed",
    "code_of",
    "TensorFile",
    "FileWriter",
]

# The codes NNR can carry (F8_E8M0, F4, F6 and complex tensors have no NNR
# coding and are refused by name), with numpy's dtype names.
_NAMES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U64": "uint64",
    "U32": "uint32",
    "U16": "uint16",
    "U8": "uint8",
    "BOOL": "bool",
}
_ML_DTYPES = ("BF16", "F8_E4M3", "F8_E5M2")


class _Dtypes(Mapping[str, np.dtype]):
    """safetensors dtype code -> numpy dtype.  The bfloat16 and float8 dtypes
    come from ml_dtypes, imported when a file first has one: ml_dtypes 0.7
    takes 0.6 s to import, which a float32 checkpoint need not wait for."""

    def __getitem__(self, code: str) -> np.dtype:
        name = _NAMES[code]  # KeyError for a code NNR cannot carry
        if code in _ML_DTYPES:
            import ml_dtypes

            return np.dtype(getattr(ml_dtypes, name))
        return np.dtype(name)

    def __iter__(self) -> Iterator[str]:
        return iter(_NAMES)

    def __len__(self) -> int:
        return len(_NAMES)

    def __contains__(self, code: object) -> bool:
        return code in _NAMES


#: safetensors dtype code -> numpy dtype
DTYPES: Mapping[str, np.dtype] = _Dtypes()
_CODES = {name: code for code, name in _NAMES.items()}

# The format caps the header at 100 MB; the library refuses larger ones too.
MAX_HEADER_BYTES = 100_000_000


def code_of(dtype: np.dtype, *, where: str) -> str:
    """The safetensors code of a numpy dtype."""
    code = _CODES.get(np.dtype(dtype).name)
    if code is None:
        raise ModelError(f"{where}: dtype {np.dtype(dtype).name} has no safetensors code")
    return code


@dataclass(frozen=True)
class Entry:
    """A tensor of a file: its name, dtype code, shape and byte range in the data section."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class SafetensorsFile:
    """A file's header: the exact JSON text (kept to write the same bytes
    back), its ``__metadata__`` and its tensors in data order."""

    header: str
    metadata: dict[str, str] | None
    entries: tuple[Entry, ...]

    @property
    def data_size(self) -> int:
        return max((e.end for e in self.entries), default=0)


def read_file(path: Path) -> SafetensorsFile:
    """The header of ``path``, validated; a :class:`ModelError` names the file and what is wrong."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:  # the library's validation of the whole header
            f.keys()
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelError(f"{path}: not a valid safetensors file ({e})") from e
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        text = f.read(size).decode("utf-8")
    return parse_header(text, where=str(path))


def parse_header(text: str, *, where: str) -> SafetensorsFile:
    """A header's tensors and metadata, each tensor's dtype, shape and offsets checked."""
    try:
        document = json.loads(text)
        metadata = document.pop("__metadata__", None)
        if metadata is not None and not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise ValueError("__metadata__ is not a map of strings")
        entries = []
        for name, record in document.items():
            code = record["dtype"]
            if code not in DTYPES:
                raise ModelError(
                    f"{where}: tensor {name!r} has dtype {code}, which NNR cannot carry "
                    f"(supported: {', '.join(DTYPES)})"
                )
            start, end = (int(x) for x in record["data_offsets"])
            shape = tuple(int(d) for d in record["shape"])
            if (
                min(shape, default=0) < 0
                or not 0 <= start <= end
                or end - start != int(np.prod(shape, dtype=np.int64)) * DTYPES[code].itemsize
            ):
                raise ValueError(f"tensor {name!r} has offsets {start}..{end} for shape {shape} of {code}")
            entries.append(Entry(name, code, shape, start, end))
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ModelError(f"{where}: bad safetensors header ({e})") from e
    entries.sort(key=lambda e: (e.start, e.end))
    return SafetensorsFile(text, metadata, tuple(entries))


def header_text(entries: list[Entry], metadata: Mapping[str, str] | None) -> str:
    """A header for ``entries`` (their offsets as given), padded with spaces to
    a multiple of 8 bytes as the reference writer does (so the data is aligned)."""
    document: dict[str, object] = {}
    if metadata is not None:
        document["__metadata__"] = dict(metadata)
    for e in entries:
        document[e.name] = {"dtype": e.dtype, "shape": list(e.shape), "data_offsets": [e.start, e.end]}
    text = json.dumps(document, separators=(",", ":"))
    size = len(text.encode("utf-8"))
    return text + " " * (-(8 + size) % 8)


def packed(entries: list[tuple[str, str, tuple[int, ...]]]) -> list[Entry]:
    """Entries laid out one after another, in the order given."""
    out, offset = [], 0
    for name, code, shape in entries:
        size = int(np.prod(shape, dtype=np.int64)) * DTYPES[code].itemsize
        out.append(Entry(name, code, shape, offset, offset + size))
        offset += size
    return out


class TensorFile:
    """A safetensors file whose ``tensor(entry)`` reads that tensor into a fresh, read-only array.

    Not a memory map, on purpose: the pages of a mapped file that have been
    read count in the process's resident set for as long as the mapping
    lives, so coding a checkpoint through one mapping per shard made peak
    memory grow with the shards (a 320 MB checkpoint: 370 MB resident, above
    the streaming bound), not with the tensors in flight.  A positioned read
    costs one copy into memory the array owns, returned when the encoder
    drops it; the file's pages stay in the page cache, which is not the
    process's.  ``os.preadv`` has no shared file offset, so worker threads
    read at once; where it is missing, reads take turns on one file.
    """

    def __init__(self, path: Path, layout: SafetensorsFile) -> None:
        self.path, self.layout = path, layout
        self.start = 8 + len(layout.header.encode("utf-8"))
        self._file: io.FileIO | None = None
        self._lock = threading.Lock()

    def _opened(self) -> io.FileIO:
        with self._lock:
            if self._file is None:
                self._file = io.FileIO(self.path, "r")  # closed by close()
            return self._file

    def tensor(self, entry: Entry) -> np.ndarray:
        out = np.empty(entry.nbytes, np.uint8)
        if entry.nbytes:
            file, view, done = self._opened(), out.data, 0
            while done < entry.nbytes:  # a read may return less than asked (Linux caps one at 2 GiB)
                offset = self.start + entry.start + done
                if hasattr(os, "preadv"):
                    n = os.preadv(file.fileno(), [view[done:]], offset)
                else:
                    with self._lock:
                        file.seek(offset)
                        n = file.readinto(view[done:]) or 0
                if n == 0:
                    raise ModelError(
                        f"{self.path}: tensor {entry.name!r} ends at byte {self.start + entry.end}, "
                        f"past the end of the file ({os.fstat(file.fileno()).st_size} bytes): "
                        "was it truncated?"
                    )
                done += n
        value = out.view(DTYPES[entry.dtype].newbyteorder("<")).reshape(entry.shape)
        value.flags.writeable = False  # the checkpoint's values: nothing downstream may change them in place
        return value

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


class FileWriter:
    """A safetensors file written by position: header first, then each tensor
    at its offsets as it comes."""

    def __init__(self, path: Path, header: str, data_size: int) -> None:
        encoded = header.encode("utf-8")
        self.path, self.start = path, 8 + len(encoded)
        self.file = open(path, "wb")  # noqa: SIM115 - closed by close(), after every tensor is in
        try:
            self.file.write(struct.pack("<Q", len(encoded)) + encoded)
            self.file.truncate(self.start + data_size)
        except BaseException:
            self.file.close()
            raise

    def write(self, entry: Entry, value: np.ndarray) -> None:
        data = np.ascontiguousarray(value, dtype=DTYPES[entry.dtype].newbyteorder("<"))
        view = data.reshape(-1).view(np.uint8).data
        if view.nbytes != entry.nbytes:
            raise ModelError(
                f"{self.path}: tensor {entry.name!r} has {view.nbytes} bytes, its header says {entry.nbytes}"
            )
        self.file.seek(self.start + entry.start)
        self.file.write(view)

    def close(self) -> None:
        self.file.close()
