"""NNEF models as NNR models (ISO/IEC 15938-17 Annex A).

An NNEF model is a folder (conventionally ``name.nnef``) with the textual
graph ``graph.nnef`` and one binary tensor file ``<label>.dat`` per
``variable`` (Khronos NNEF 1.0, clause "Tensor File Format"): a 128-byte
header (magic ``4E EF``, version, data length, rank, 8 dimensions, bits per
item, item type, 19 reserved words) followed by the data.  It is read and
written with the Khronos ``nnef`` package (parser, ``read_tensor``,
``write_tensor``); ``nnef-tools`` converts such folders from and to ONNX,
TensorFlow and TFLite.

Names and layout: a tensor is named by its variable's ``label`` (the path of
its .dat file without the suffix).  NNEF already stores filters with output
channels first (``conv`` ``[out, in/groups, kh, kw]``, ``linear`` ``[out,
in]``), so no transposition is needed.  Per-channel vectors — the bias of
``conv``/``deconv``/``linear`` and the four inputs of
``batch_normalization`` — are ``[1, C]`` in NNEF; they are coded as 1-D
``[C]`` (their layout in ONNX, PyTorch and TensorFlow, and what NNR treats as
a non-weight with ``nonweight_qp``) and get their ``[1, C]`` shape back from
the graph on writing.  Each ``conv``/``deconv``/``linear`` with a variable
bias forms a block ``{weight: filter, bias: bias}``, and a
``batch_normalization`` joins the block of the ``conv``/``linear`` feeding
it, directly or through element-wise activations used by nothing else
(found from the graph, never from labels).

Topology (Annex A): the NNR_TPL unit carries ``topology_storage_format``
NNR_TPL_NNEF with the text of ``graph.nnef``, deflated
(``topology_compression_format`` 1) unless ``model.topology.deflate`` is set
to False before encoding.

Carriage of compressed tensors in NNEF tensor files
(:meth:`NnefAdapter.embed`): each ``.dat`` keeps the NNEF header (shape of
the tensor) with the item type :data:`NNR_ITEM_TYPE` and, as data, the NNR
units that carry the tensor; the first tensor file (in graph order) also
carries the stream's header units (NNR_STR, NNR_MPS, NNR_TPL …), so it is a
complete NNR bitstream, and the concatenation of all files in graph order is
the original bitstream.  A tensor coded inside another tensor's block has an
empty payload.  **UNVERIFIED**: the item-type code Annex A assigns to NNR
data; :data:`NNR_ITEM_TYPE` is the one constant to change when checked
against the standard.  :meth:`NnefAdapter.read` decodes such folders
transparently; :meth:`NnefAdapter.write` always writes plain float tensors,
which nnef-tools reads and converts.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import nnef
import numpy as np

from nnc_core.plugins import (
    BitstreamError,
    CompressedDataUnit,
    ModelError,
    NNRModel,
    Topology,
    TopologyStorageFormat,
    atomic_path,
    read_units,
    topology_of,
)

__all__ = ["NnefAdapter", "NNR_ITEM_TYPE", "GRAPH_FILE"]

GRAPH_FILE = "graph.nnef"
NNR_ITEM_TYPE = 0x4E4E52  # UNVERIFIED: item-type code of NNR-coded data in an NNEF tensor file (Annex A)
HEADER_BYTES = 128
MAX_RANK = 8
_BIASED_OPS = {"conv": ("filter", "bias"), "deconv": ("filter", "bias"), "linear": ("filter", "bias")}
_VECTOR_INPUTS = {"batch_normalization": ("mean", "variance", "offset", "scale")}
_BN_MEMBERS = (("bn.gamma", "scale"), ("bn.beta", "offset"), ("bn.mean", "mean"), ("bn.var", "variance"))
# ops that act element by element: a batch norm after them still scales the producer's output channels
_ELEMENTWISE = {"relu", "sigmoid", "tanh", "elu", "leaky_relu", "softplus", "gelu", "silu", "copy"}


def _header(path: Path) -> tuple[int, tuple[int, ...], int, int]:
    """(data length, shape, bits per item, item type) of an NNEF tensor file."""
    with open(path, "rb") as f:
        raw = f.read(HEADER_BYTES)
    if len(raw) < HEADER_BYTES or raw[:2] != b"\x4e\xef":
        raise ModelError(f"{path}: not an NNEF tensor file (bad magic or short header)")
    length, rank = struct.unpack_from("<II", raw, 4)
    if rank > MAX_RANK:
        raise ModelError(f"{path}: tensor rank {rank} exceeds {MAX_RANK}")
    dims = struct.unpack_from("<8I", raw, 12)[:rank]
    bits, item_type = struct.unpack_from("<II", raw, 44)
    return length, tuple(dims), bits, item_type


def _nnr_header(shape: tuple[int, ...], length: int) -> bytes:
    dims = list(shape) + [0] * (MAX_RANK - len(shape))
    return (
        b"\x4e\xef\x01\x00"
        + struct.pack("<II", length, len(shape))
        + struct.pack("<8I", *dims)
        + struct.pack("<II", 8, NNR_ITEM_TYPE)
        + bytes(4 * 19)
    )


class _Graph:
    """The parsed graph: variables (label, shape, dtype) and op roles."""

    def __init__(self, text: str, where: str):
        try:
            self.graph = nnef.parse_string(text)
        except Exception as e:  # nnef.Error and friends
            raise ModelError(f"{where}: not a valid NNEF graph: {str(e).strip()[:300]}") from e
        self.variables: dict[str, tuple[str, tuple[int, ...], str]] = {}  # output tensor -> (label, shape, dtype)
        for op in self.graph.operations:
            if op.name == "variable":
                out = op.outputs["output"]
                label = op.attribs["label"]
                if label in {v[0] for v in self.variables.values()}:
                    raise ModelError(f"{where}: two variables share the label {label!r}")
                self.variables[out] = (label, tuple(op.attribs["shape"]), op.dtype)
        self.vectors: set[str] = set()  # labels coded as 1-D
        self.blocks: dict[str, dict[str, str]] = {}
        for op in self.graph.operations:
            roles = _BIASED_OPS.get(op.name)
            if roles:
                filt, bias = (op.inputs.get(r) for r in roles)
                if isinstance(bias, str) and bias in self.variables:
                    self.vectors.add(self.variables[bias][0])
                    if isinstance(filt, str) and filt in self.variables:
                        self.blocks.setdefault(
                            self.variables[filt][0],
                            {"weight": self.variables[filt][0], "bias": self.variables[bias][0]},
                        )
            for role in _VECTOR_INPUTS.get(op.name, ()):
                name = op.inputs.get(role)
                if isinstance(name, str) and name in self.variables:
                    self.vectors.add(self.variables[name][0])
        self._batch_norms()

    def _batch_norms(self) -> None:
        """Join each ``batch_normalization`` to the block of the ``conv``/``linear`` feeding it."""
        producer: dict[str, Any] = {}  # nnef operations (nnef is untyped)
        uses: dict[str, int] = {}
        for op in self.graph.operations:
            for name in op.outputs.values():
                if isinstance(name, str):
                    producer[name] = op
            for name in op.inputs.values():
                for n in name if isinstance(name, list) else [name]:
                    if isinstance(n, str):
                        uses[n] = uses.get(n, 0) + 1
        grouped = {label for members in self.blocks.values() for label in members.values()}
        for op in self.graph.operations:
            if op.name != "batch_normalization":
                continue
            roles = {key: op.inputs.get(role) for key, role in _BN_MEMBERS}
            if not all(isinstance(t, str) and t in self.variables for t in roles.values()):
                continue
            current = op.inputs.get("input")
            while (
                isinstance(current, str)
                and uses.get(current) == 1
                and current in producer
                and producer[current].name in _ELEMENTWISE
            ):
                current = producer[current].inputs.get("x")
            source = producer.get(current) if isinstance(current, str) and uses.get(current) == 1 else None
            if source is None or source.name not in ("conv", "linear"):
                continue
            filt = source.inputs.get("filter")
            if not (isinstance(filt, str) and filt in self.variables):
                continue
            label, shape, _ = self.variables[filt]
            labels = {key: self.variables[t][0] for key, t in roles.items()}
            members = self.blocks.get(label, {"weight": label})
            if "bn.gamma" in members or any(v in grouped for v in labels.values()):
                continue
            if any(self.coded_shape(self.variables[t][0], self.variables[t][1]) != (shape[0],) for t in roles.values()):
                continue
            members.update(labels)
            self.blocks[label] = members
            grouped.update(labels.values())

    def coded_shape(self, label: str, shape: tuple[int, ...]) -> tuple[int, ...]:
        if label in self.vectors and len(shape) == 2 and shape[0] == 1:
            return (shape[1],)
        if not shape:  # a scalar variable travels as one element (NNR tensors have a dimension)
            return (1,)
        return shape

    def labels(self) -> list[tuple[str, tuple[int, ...], str]]:
        return list(self.variables.values())


def _dat(folder: Path, label: str) -> Path:
    path = (folder / f"{label}.dat").resolve()
    if folder.resolve() not in path.parents:
        raise ModelError(f"{folder}: variable label {label!r} points outside the model folder")
    return path


class NnefAdapter:
    """Reads and writes NNEF folders."""

    def can_read(self, source: object, /) -> bool:
        path = Path(str(source))
        return path.is_dir() and (path / GRAPH_FILE).is_file()

    def read(self, source: object, /) -> NNRModel:
        folder = Path(str(source))
        if not (folder / GRAPH_FILE).is_file():
            raise ModelError(f"{folder}: no {GRAPH_FILE}: not an NNEF model folder")
        text = (folder / GRAPH_FILE).read_text()
        graph = _Graph(text, str(folder))
        carried = self.extract(folder)
        if carried is not None:
            import nnc_core

            try:
                decoded = nnc_core.decode(carried)
            except BitstreamError as e:
                raise ModelError(f"{folder}: the NNR data in its tensor files does not decode: {e}") from e
        tensors: dict[str, np.ndarray] = {}
        for label, shape, _dtype in graph.labels():
            path = _dat(folder, label)
            if carried is not None:
                if label not in decoded:
                    raise ModelError(f"{folder}: variable {label!r} is missing from the NNR data of its tensor files")
                value = np.asarray(decoded[label])
            else:
                if not path.is_file():
                    raise ModelError(f"{folder}: variable {label!r} has no tensor file {path.name}")
                try:
                    with open(path, "rb") as f:
                        value = nnef.read_tensor(f)
                except (ValueError, TypeError, OSError) as e:
                    raise ModelError(f"{path}: corrupt NNEF tensor file for variable {label!r}: {e}") from e
                if tuple(value.shape) != shape:
                    raise ModelError(
                        f"{path}: variable {label!r} holds shape {tuple(value.shape)}, the graph declares {list(shape)}"
                    )
                if value.dtype == np.bool_:
                    value = value.astype(np.int32)
                elif value.dtype.kind in "iu":
                    pass  # in the file's own width: the core carries every one (beyond int32 as int32 planes)
                elif value.dtype.kind != "f":
                    raise ModelError(f"{path}: variable {label!r} has dtype {value.dtype}, which NNR cannot code")
            tensors[label] = value.reshape(graph.coded_shape(label, shape))
        topology = Topology(TopologyStorageFormat.NNR_TPL_NNEF, text.encode(), deflate=True)
        return NNRModel(tensors, blocks=dict(graph.blocks), topology=topology, framework="nnef")

    # -- writing -------------------------------------------------------------

    def _graph_text(self, model: NNRModel | None, template: object | None) -> str:
        if template is not None:
            path = Path(str(template))
            graph_file = path / GRAPH_FILE if path.is_dir() else path
            if not graph_file.is_file():
                raise ModelError(f"{template}: no NNEF graph to use as template")
            return graph_file.read_text()
        topology = model.topology if model is not None else None
        if topology is None or topology.storage_format != TopologyStorageFormat.NNR_TPL_NNEF or not topology.data:
            raise ModelError(
                "the bitstream carries no NNEF topology (NNR_TPL_NNEF): pass the original folder as template"
            )
        return topology.data.decode()

    def write(self, model: NNRModel, destination: Path, /, *, template: object | None = None) -> None:
        destination = Path(destination)
        text = self._graph_text(model, template)
        graph = _Graph(text, "topology")
        arrays = []
        missing = [label for label, _, _ in graph.labels() if label not in model.tensors]
        if missing:
            raise ModelError(f"the decoded model lacks {len(missing)} variable(s) of the NNEF graph: {missing[:5]}")
        for label, shape, dtype in graph.labels():
            value = np.asarray(model.tensors[label])
            if int(np.prod(shape, dtype=np.int64)) != value.size or graph.coded_shape(label, shape) != value.shape:
                raise ModelError(
                    f"variable {label!r}: decoded shape {value.shape} does not match the graph's {list(shape)}"
                )
            if dtype == "scalar":
                value = value.astype(np.float32, copy=False)
            elif dtype == "integer" and value.dtype.kind not in "iu":
                value = value.astype(np.int32)  # a decoder that returned another dtype: NNEF's default width
            elif dtype == "logical":
                value = value.astype(np.bool_)
            arrays.append((label, value.reshape(shape)))
        with atomic_path(destination, directory=True) as staged:
            staged.mkdir()
            (staged / GRAPH_FILE).write_text(text)
            for label, value in arrays:
                path = _dat(staged, label)
                path.parent.mkdir(parents=True, exist_ok=True)
                with open(path, "wb") as f:
                    nnef.write_tensor(f, np.require(value, requirements="C"))  # (ascontiguousarray makes 0-d 1-d)

    # -- carriage of NNR data in NNEF tensor files (Annex A) ------------------

    def embed(self, bitstream: bytes, destination: Path, /, *, template: object | None = None) -> None:
        data = bytes(bitstream)
        # the graph comes from the stream's topology unit: no payload is decoded
        text = self._graph_text(NNRModel({}, topology=topology_of(data)) if template is None else None, template)
        graph = _Graph(text, "topology")
        try:
            units = read_units(data)
        except BitstreamError as e:
            raise ModelError(f"not an NNR bitstream: {e}") from e
        header = b""
        by_label: dict[str, bytes] = {}
        labels = {label for label, _, _ in graph.labels()}
        for unit in units:
            piece = data[unit.offset : unit.offset + unit.size]
            if isinstance(unit, CompressedDataUnit):
                name = str(unit.header.element_ids[0]) if unit.header.element_ids else ""
                if name not in labels:
                    raise ModelError(f"the bitstream codes tensor {name!r}, which is no variable of the NNEF graph")
                by_label[name] = by_label.get(name, b"") + piece
            elif by_label:
                raise ModelError(
                    f"unit {type(unit).__name__} after the first NDU: this stream cannot be split into tensor files"
                )
            elif type(unit).__name__ == "AggregateUnit":
                raise ModelError("aggregated (NNR_AGG) bitstreams cannot be split into NNEF tensor files")
            else:
                header += piece
        with atomic_path(destination, directory=True) as staged:
            staged.mkdir()
            (staged / GRAPH_FILE).write_text(text)
            for i, (label, shape, _) in enumerate(graph.labels()):
                payload = (header if i == 0 else b"") + by_label.get(label, b"")
                path = _dat(staged, label)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(_nnr_header(shape, len(payload)) + payload)

    def extract(self, source: Path, /) -> bytes | None:
        folder = Path(str(source))
        graph = _Graph((folder / GRAPH_FILE).read_text(), str(folder))
        parts, kinds = [], set()
        for label, _shape, _ in graph.labels():
            path = _dat(folder, label)
            if not path.is_file():
                raise ModelError(f"{folder}: variable {label!r} has no tensor file {path.name}")
            length, _, _, item_type = _header(path)
            kinds.add(item_type == NNR_ITEM_TYPE)
            if item_type == NNR_ITEM_TYPE:
                raw = path.read_bytes()
                if len(raw) != HEADER_BYTES + length:
                    raise ModelError(
                        f"{path}: NNR tensor file of {len(raw)} bytes, its header says {HEADER_BYTES + length}"
                    )
                parts.append(raw[HEADER_BYTES:])
        if kinds == {True}:
            return b"".join(parts)
        if True in kinds:
            raise ModelError(f"{folder}: mixes NNR-coded and plain tensor files")
        return None
