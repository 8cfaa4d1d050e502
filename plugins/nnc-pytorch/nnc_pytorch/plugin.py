"""Hook implementations of the PyTorch plugin.  Imports no torch."""

from collections.abc import Iterator

from nnc_core.plugins import FrameworkPlugin, TopologyConverter, TopologyStorageFormat, hookimpl

# .safetensors files belong to the nnc-safetensors plugin (a dependency), which reads them without torch
SUFFIXES = (".pt", ".pth", ".pt2")


@hookimpl
def nnc_frameworks() -> Iterator[FrameworkPlugin]:
    yield FrameworkPlugin(
        name="pytorch",
        adapter="nnc_pytorch.adapter:TorchAdapter",
        framework="torch",
        suffixes=SUFFIXES,
        object_types=(
            "torch.nn.modules.module.Module",
            "builtins.dict",
            "collections.OrderedDict",
            "torch.export.exported_program.ExportedProgram",
        ),
        topology_format=TopologyStorageFormat.NNR_TPL_PYT,
        annex="C",
        description="nn.Module, state dicts, .pt/.pth (weights_only), .pt2 (torch.export)",
    )


@hookimpl
def nnc_topology_converters() -> Iterator[TopologyConverter]:
    yield TopologyConverter(
        "pytorch", "onnx", "nnc_pytorch.convert:to_onnx", requires=("torch", "onnx"), description="torch.onnx.export"
    )
