"""Hook implementations of the ONNX plugin.  Imports no onnx."""

from collections.abc import Iterator

from nnc_core.plugins import FrameworkPlugin, TopologyConverter, TopologyStorageFormat, hookimpl


@hookimpl
def nnc_frameworks() -> Iterator[FrameworkPlugin]:
    yield FrameworkPlugin(
        name="onnx",
        adapter="nnc_onnx.adapter:OnnxAdapter",
        framework="onnx",
        suffixes=(".onnx",),
        object_types=("onnx.onnx_ml_pb2.ModelProto",),
        topology_format=TopologyStorageFormat.NNR_TPL_ONNX,
        annex="B",
        description="ONNX models: initializers, Constant nodes, subgraphs, external data",
    )


@hookimpl
def nnc_topology_converters() -> Iterator[TopologyConverter]:
    yield TopologyConverter(
        "onnx",
        "pytorch",
        "nnc_onnx.convert:to_torch",
        requires=("onnx", "onnxscript", "torch", "onnx2torch"),
        description="graph prepared (onnxscript), onnx2torch, saved as TorchScript or torch.export",
        explain="nnc_onnx.convert:explain_torch",
    )
