"""ONNX models as NNR sees them (ISO/IEC 15938-17 Annex B).

Weights: every floating-point tensor of the model, wherever ONNX keeps it:
graph initializers, the ``value`` of ``Constant`` nodes, in the main graph and
in subgraphs (``If``/``Loop``/``Scan`` bodies), with their data inline or in
external data files.  Integer and bool tensors (shapes, axes, indices) are
graph structure, and single-element float tensors are operator parameters
(a ``Pow`` exponent, an epsilon, where an approximation would change the
function, e.g. ``x ** 1.9999`` is NaN for negative x): both stay in the
topology, exactly, and so do the float inputs that set shapes (``Resize``
roi and scales, ``Upsample`` scales: a scale of 1.9999 instead of 2 gives
another output size).  Each NNR tensor is named by its
ONNX tensor name (the initializer name or the Constant's output), which is how
the NNR bitstream references the ONNX graph; a name used twice (in different
subgraphs) gets ``#2``, ``#3`` … appended in traversal order.

Layout: ONNX ``Conv`` weights are ``(M, C/group, *kernel)``, output channels
first, as NNR codes them; ``Gemm`` with ``transB=1`` likewise; other matrices
are coded as stored.  Blocks (NNR_PT_BLOCK) come from the graph: a ``Conv``
(or ``Gemm`` with ``transB=1``) with its weight and bias initializers, and a
``BatchNormalization`` fed by it directly or through element-wise
activations, its scale, B, mean and var joining the block.

Topology (NNR_TPL, ``topology_storage_format`` NNR_TPL_ONNX, deflated): the
ModelProto itself with every carried tensor reduced to a stub (name, data
type and dims, no data).  The bitstream is so a complete compressed ONNX
model: ``nnc decode model.nnr -o model.onnx`` needs no template.

Carriage (Annex E; UNVERIFIED: our notes hold no text of Annex E): see
:meth:`OnnxAdapter.embed`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from nnc_core.plugins import (
    CARRIAGE_KEY,
    ModelError,
    NNRModel,
    Topology,
    TopologyStorageFormat,
    topology_of,
    write_atomically,
)

__all__ = ["OnnxAdapter", "load", "CARRIAGE_NAME", "FLOAT_TYPES"]

CARRIAGE_NAME = CARRIAGE_KEY  # uint8 initializer holding an NNR bitstream (embed/extract), named as in .npz carriage
FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16}
_INTEGER_TYPES = {
    TensorProto.INT8,
    TensorProto.INT16,
    TensorProto.INT32,
    TensorProto.INT64,
    TensorProto.UINT8,
    TensorProto.UINT16,
    TensorProto.UINT32,
    TensorProto.UINT64,
    TensorProto.BOOL,
    TensorProto.STRING,
}
_ELEMENTWISE = {
    "Relu",
    "LeakyRelu",
    "Sigmoid",
    "Tanh",
    "Clip",
    "Elu",
    "Selu",
    "HardSigmoid",
    "HardSwish",
    "Softplus",
    "Gelu",
    "Identity",
    "Dropout",
}
_EXTERNAL_THRESHOLD = 1_800_000_000  # protobuf cannot serialize 2 GiB: larger models get external data


@dataclass
class _Slot:
    """Where one carried tensor lives in the ModelProto."""

    key: str  # NNR tensor name
    proto: TensorProto  # the initializer or the Constant's value, modified in place on write
    where: str  # for error messages: "initializer 'x' of graph 'g'" …


def _type_name(data_type: int) -> str:
    try:
        return TensorProto.DataType.Name(data_type)
    except ValueError:
        return str(data_type)


# Inputs (by position) whose float values determine output shapes: structure, never quantized.
_SHAPE_INPUTS = {"Resize": (1, 2, 3), "Upsample": (1,)}


def _shape_setting_names(model: onnx.ModelProto) -> set[str]:
    """Names of the tensors fed to shape-setting inputs anywhere in the model."""
    return {
        node.input[i]
        for graph in _subgraphs(model.graph)
        for node in graph.node
        if node.domain in ("", "ai.onnx")
        for i in _SHAPE_INPUTS.get(node.op_type, ())
        if i < len(node.input)
    }


def _slots(model: onnx.ModelProto, origin: str) -> list[_Slot]:
    """The carried tensors of ``model`` in traversal order (the order the topology stub keeps)."""
    slots: list[_Slot] = []
    used: dict[str, int] = {}
    shape_setting = _shape_setting_names(model)

    def add(proto: TensorProto, name: str, where: str) -> None:
        if proto.data_type in _INTEGER_TYPES or int(np.prod(proto.dims)) <= 1 or name in shape_setting:
            return  # structure (shapes, axes, scales) and op parameters (exponents, epsilons) stay in the topology
        if proto.data_type not in FLOAT_TYPES:
            raise ModelError(
                f"{origin}: {where} has data type {_type_name(proto.data_type)}, which NNR does not carry "
                "(supported: FLOAT, DOUBLE, FLOAT16, BFLOAT16; integer tensors stay in the topology)"
            )
        used[name] = used.get(name, 0) + 1
        key = name if used[name] == 1 else f"{name}#{used[name]}"
        slots.append(_Slot(key, proto, where))

    def walk(graph: onnx.GraphProto, path: str) -> None:
        if len(graph.sparse_initializer):
            name = graph.sparse_initializer[0].values.name
            raise ModelError(f"{origin}: sparse initializer {name!r} of graph {path!r} is not supported (densify it)")
        for init in graph.initializer:
            add(init, init.name, f"initializer {init.name!r} of graph {path!r}")
        for index, node in enumerate(graph.node):
            label = node.name or f"#{index}"
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                for attr in node.attribute:
                    if attr.name == "value":
                        add(attr.t, node.output[0], f"Constant node {label!r} of graph {path!r}")
                    elif attr.name == "sparse_value":
                        raise ModelError(
                            f"{origin}: Constant node {label!r} of graph {path!r} holds a sparse "
                            "tensor, which is not supported (densify it)"
                        )
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    walk(attr.g, f"{path}/{label}.{attr.name}")
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    for i, g in enumerate(attr.graphs):
                        walk(g, f"{path}/{label}.{attr.name}[{i}]")

    walk(model.graph, model.graph.name or "main")
    return slots


def _subgraphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _subgraphs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _subgraphs(g)


def _blocks(model: onnx.ModelProto, slots: list[_Slot]) -> dict[str, dict[str, str]]:
    """Conv/Gemm blocks with their batch norm, from the nodes of every (sub)graph.

    Only tensors whose name is unique in the model are grouped (a name used in
    two subgraphs has two NNR names, see :func:`_slots`)."""
    carried = {s.key: s for s in slots}
    blocks: dict[str, dict[str, str]] = {}
    grouped: set[str] = set()
    for graph in _subgraphs(model.graph):
        producers = {out: node for node in graph.node for out in node.output}
        consumers: dict[str, int] = {}
        for node in graph.node:
            for name in node.input:
                consumers[name] = consumers.get(name, 0) + 1
        block_of_output: dict[str, str] = {}
        for node in graph.node:
            attrs = {a.name: a.i for a in node.attribute}
            if not (
                node.op_type == "Conv"
                or (node.op_type == "Gemm" and attrs.get("transB") == 1 and not attrs.get("transA"))
            ):
                continue
            if (
                len(node.input) < 2
                or node.input[1] not in carried
                or node.input[1] in grouped
                or f"{node.input[1]}#2" in carried
            ):
                continue
            members = {"weight": node.input[1]}
            if len(node.input) > 2 and node.input[2] in carried and node.input[2] not in grouped:
                members["bias"] = node.input[2]
            blocks[node.input[1]] = members
            grouped.update(members.values())
            block_of_output[node.output[0]] = node.input[1]
        for node in graph.node:
            if node.op_type != "BatchNormalization" or len(node.input) != 5:
                continue
            if not all(n in carried and n not in grouped for n in node.input[1:]):
                continue
            current = node.input[0]
            while (
                current not in block_of_output
                and consumers.get(current) == 1
                and current in producers
                and producers[current].op_type in _ELEMENTWISE
            ):
                current = producers[current].input[0]
            block = block_of_output.get(current)
            if block is None or consumers.get(current) != 1 or "bn.gamma" in blocks[block]:
                continue
            if list(carried[node.input[1]].proto.dims) != [carried[block].proto.dims[0]]:
                continue
            blocks[block].update(zip(("bn.gamma", "bn.beta", "bn.mean", "bn.var"), node.input[1:]))
            grouped.update(node.input[1:])
    return {weight.removesuffix(".weight"): members for weight, members in blocks.items()}


def load(source: Any) -> tuple[onnx.ModelProto, str]:
    """A ModelProto with its external data loaded, and a label for messages."""
    return _load(source)[:2]


def _load(source: Any) -> tuple[onnx.ModelProto, str, bool]:
    if isinstance(source, onnx.ModelProto):
        return source, "ONNX model", False
    path = Path(source)
    if not path.is_file():
        raise ModelError(f"{path}: no such file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise ModelError(f"{path}: not a readable ONNX model ({type(e).__name__}: {str(e)[:200]})") from e
    if not len(model.graph.node) and not len(model.graph.initializer) and not model.opset_import:
        raise ModelError(f"{path}: not an ONNX model (no graph, no opset)")
    external = False
    for tensor in onnx.external_data_helper._get_all_tensors(model):
        if onnx.external_data_helper.uses_external_data(tensor):
            external = True
            info = onnx.external_data_helper.ExternalDataInfo(tensor)
            data_file = path.parent / info.location
            if not data_file.is_file():
                raise ModelError(
                    f"{path}: tensor {tensor.name!r} refers to external data {info.location!r}, "
                    f"which does not exist ({data_file})"
                )
    try:
        onnx.load_external_data_for_model(model, str(path.parent))
    except Exception as e:
        raise ModelError(f"{path}: cannot read its external data ({type(e).__name__}: {str(e)[:200]})") from e
    return model, str(path), external


def _array(slot: _Slot, origin: str) -> np.ndarray:
    try:
        value = numpy_helper.to_array(slot.proto)
    except Exception as e:
        raise ModelError(f"{origin}: {slot.where}: corrupt tensor data ({type(e).__name__}: {e})") from e
    if slot.proto.data_type == TensorProto.BFLOAT16:
        value = value.astype(np.float32)  # exact; restored to bfloat16 on write
    return np.ascontiguousarray(value)


def _stub(model: onnx.ModelProto, origin: str) -> bytes:
    """The model with every carried tensor reduced to name, data type and dims."""
    stub = onnx.ModelProto()
    stub.CopyFrom(model)
    for slot in _slots(stub, origin):
        bare = TensorProto(name=slot.proto.name, data_type=slot.proto.data_type, dims=list(slot.proto.dims))
        slot.proto.CopyFrom(bare)
    return stub.SerializeToString()


def _topology_model(topology: Topology | None, where: str) -> onnx.ModelProto:
    if topology is None or topology.storage_format != TopologyStorageFormat.NNR_TPL_ONNX or not topology.data:
        raise ModelError(
            f"{where}: the bitstream carries no ONNX topology; give the original model as template "
            "(nnc decode --template ORIGINAL.onnx)"
        )
    model = onnx.ModelProto()
    try:
        model.ParseFromString(topology.data)
    except Exception as e:
        raise ModelError(f"{where}: the bitstream's ONNX topology does not parse ({type(e).__name__}: {e})") from e
    return model


class OnnxAdapter:
    """The :class:`~nnc_core.plugins.FrameworkAdapter` of the ``onnx`` plugin."""

    def can_read(self, source: Any, /) -> bool:
        if isinstance(source, onnx.ModelProto):
            return True
        return isinstance(source, (str, os.PathLike)) and Path(source).suffix.lower() == ".onnx"

    def read(self, source: Any, /) -> NNRModel:
        model, origin, external = _load(source)
        slots = _slots(model, origin)
        tensors = {slot.key: _array(slot, origin) for slot in slots}
        topology = Topology(TopologyStorageFormat.NNR_TPL_ONNX, _stub(model, origin), deflate=True)
        return NNRModel(
            tensors,
            blocks=_blocks(model, slots),
            topology=topology,
            framework="onnx",
            metadata={"external_data": external},
        )

    def write(self, model: NNRModel, destination: Path, /, *, template: Any = None) -> None:
        destination = Path(destination)
        if destination.suffix.lower() != ".onnx":
            raise ModelError(f"{destination}: the onnx plugin writes .onnx files")
        external = bool(model.metadata.get("external_data"))
        if template is not None:
            base, what, template_external = _load(template)
            external = external or template_external
            if base is template:  # the caller's ModelProto: the weights go into a copy
                base = onnx.ModelProto()
                base.CopyFrom(template)
            what = f"template {what}"
        else:
            base, what = _topology_model(model.topology, str(destination)), "the bitstream's ONNX topology"
        slots = _slots(base, what)
        keys = {slot.key for slot in slots}
        missing = [slot.key for slot in slots if slot.key not in model.tensors]
        if missing:
            raise ModelError(f"{destination}: missing weight {missing[0]!r} of {what} ({len(missing)} missing)")
        extra = [name for name in model.tensors if name not in keys]
        if extra:
            raise ModelError(f"{destination}: tensor {extra[0]!r} is not in {what} ({len(extra)} unexpected)")
        for slot in slots:
            value = np.asarray(model.tensors[slot.key])
            shape = [int(d) for d in slot.proto.dims]
            if list(value.shape) != shape and not (shape == [] and value.shape == (1,)):
                raise ModelError(
                    f"{destination}: tensor {slot.key!r} has shape {list(value.shape)}, "
                    f"{slot.where} in {what} has {shape}"
                )
            dtype = onnx.helper.tensor_dtype_to_np_dtype(slot.proto.data_type)
            replacement = numpy_helper.from_array(
                np.array(value.reshape(shape), dtype=dtype, order="C"), slot.proto.name
            )
            slot.proto.CopyFrom(replacement)
        _save(base, destination, external or base.ByteSize() > _EXTERNAL_THRESHOLD)

    def embed(self, bitstream: bytes, destination: Path, /, *, template: Any = None) -> None:
        """Carry ``bitstream`` inside an ONNX file: the graph (from ``template``,
        else from the bitstream's own NNR_TPL unit) with every carried tensor as
        a data-less stub, plus the uint8 initializer ``__nnr__`` holding the
        bitstream bytes (``raw_data``: no base64 inflation) and the metadata
        entry ``nnr_bitstream = __nnr__``.  Such a file is a container, not a
        runnable model: :meth:`extract` gives the bitstream back and
        ``nnc decode`` the model."""
        if template is not None:
            base, origin = load(template)
            graph_model = onnx.ModelProto()
            graph_model.ParseFromString(_stub(base, origin))
        else:
            graph_model = _topology_model(topology_of(bitstream), str(destination))
        carrier = TensorProto(
            name=CARRIAGE_NAME, data_type=TensorProto.UINT8, dims=[len(bitstream)], raw_data=bytes(bitstream)
        )
        graph_model.graph.initializer.append(carrier)
        entry = graph_model.metadata_props.add()
        entry.key, entry.value = "nnr_bitstream", CARRIAGE_NAME
        write_atomically(destination, lambda f: f.write(graph_model.SerializeToString()))

    def extract(self, source: Path, /) -> bytes | None:
        model, _ = load(source)
        for init in model.graph.initializer:
            if init.name == CARRIAGE_NAME and init.data_type == TensorProto.UINT8:
                return bytes(init.raw_data)
        return None


def _save(model: onnx.ModelProto, destination: Path, external: bool) -> None:
    if not external:
        write_atomically(destination, lambda f: f.write(model.SerializeToString()))
        return
    # Model and its external data file, both written in a temporary folder and moved in place.
    location = f"{destination.name}.data"
    with tempfile.TemporaryDirectory(prefix=f".{destination.name}.", dir=destination.parent) as tmp:
        staged = Path(tmp) / destination.name
        try:
            onnx.save_model(
                model,
                str(staged),
                save_as_external_data=True,
                all_tensors_to_one_file=True,
                location=location,
                size_threshold=1024,
            )
        except Exception as e:
            raise ModelError(f"{destination}: cannot write the model ({type(e).__name__}: {e})") from e
        if (Path(tmp) / location).exists():
            os.replace(Path(tmp) / location, destination.parent / location)
        os.replace(staged, destination)
