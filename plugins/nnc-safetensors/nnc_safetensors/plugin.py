"""Hook implementations of the safetensors plugin.  Imports no framework."""

from collections.abc import Iterator

from nnc_core.plugins import FrameworkPlugin, hookimpl

#: the start of the topology this plugin writes (see nnc_safetensors.folder)
TOPOLOGY_MAGIC = b'{"format":"nnc-safetensors/1"'


@hookimpl
def nnc_frameworks() -> Iterator[FrameworkPlugin]:
    yield FrameworkPlugin(
        name="safetensors",
        adapter="nnc_safetensors.adapter:SafetensorsAdapter",
        framework="safetensors",
        suffixes=(".safetensors",),
        directories=True,
        topology_magic=TOPOLOGY_MAGIC,
        description=".safetensors files and Hugging Face model folders (sharded, with their other files), any dtype",
        hook_api=2,
    )
