"""Entry point of the NNEF plugin: declarations only."""

from collections.abc import Iterator

from nnc_core.plugins import FrameworkPlugin, TopologyConverter, TopologyStorageFormat, hookimpl


@hookimpl
def nnc_frameworks() -> Iterator[FrameworkPlugin]:
    yield FrameworkPlugin(
        name="nnef",
        adapter="nnc_nnef.adapter:NnefAdapter",
        framework="nnef",
        suffixes=(".nnef",),
        topology_format=TopologyStorageFormat.NNR_TPL_NNEF,
        annex="A",
        description="NNEF folders: graph.nnef and .dat tensor files",
        directories=True,
    )


@hookimpl
def nnc_topology_converters() -> Iterator[TopologyConverter]:
    yield TopologyConverter(
        "onnx",
        "nnef",
        "nnc_nnef.convert:from_onnx",
        requires=("onnx", "nnef_tools"),
        description="nnef-tools ONNX -> NNEF",
    )
    yield TopologyConverter(
        "nnef",
        "onnx",
        "nnc_nnef.convert:to_onnx",
        requires=("onnx", "nnef_tools"),
        description="nnef-tools NNEF -> ONNX",
    )
