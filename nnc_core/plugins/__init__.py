"""The plugin API: how framework plugins meet the codec.

A plugin is a distribution with an entry point in the group ``nnc`` naming a
module that implements the hooks of :class:`~nnc_core.plugins.hookspecs.NncSpecs`
with :data:`hookimpl`.  See docs/plugins.md.

Everything a plugin needs from the core is importable from here (and the
codec itself from ``nnc_core``): plugins import nothing else of the core, so
that its internals can change without breaking them (tests/test_plugins.py
checks the plugins in this repository).
"""

from pathlib import Path

from nnc_core.bitstream.units import CompressedDataUnit, TopologyStorageFormat, read_units
from nnc_core.errors import BitstreamError, FrameworkUnavailableError, ModelError, PluginError
from nnc_core.files import atomic_path, write_atomically
from nnc_core.model import NNRModel, items_as_decoded, topology_of
from nnc_core.plugins.hookspecs import HOOK_API_VERSION, NncSpecs, hookimpl, hookspec
from nnc_core.plugins.manager import (
    ENTRY_POINT_GROUP,
    PluginManager,
    PluginStatus,
    PluginWarning,
    get_plugin_manager,
    load_object,
)
from nnc_core.plugins.npz import CARRIAGE_KEY
from nnc_core.plugins.types import (
    ConversionStep,
    FrameworkAdapter,
    FrameworkPlugin,
    Source,
    TopologyConverter,
)
from nnc_core.topology import Topology

__all__ = [
    "HOOK_API_VERSION",
    "ENTRY_POINT_GROUP",
    "NncSpecs",
    "hookimpl",
    "hookspec",
    "FrameworkPlugin",
    "FrameworkAdapter",
    "TopologyConverter",
    "ConversionStep",
    "Source",
    "PluginManager",
    "PluginStatus",
    "PluginWarning",
    "get_plugin_manager",
    "load_object",
    "read_model",
    "write_model",
    # what adapters and converters use
    "NNRModel",
    "Topology",
    "TopologyStorageFormat",
    "topology_of",
    "items_as_decoded",
    "read_units",
    "CompressedDataUnit",
    "CARRIAGE_KEY",
    "write_atomically",
    "atomic_path",
    "ModelError",
    "PluginError",
    "BitstreamError",
    "FrameworkUnavailableError",
]


def read_model(source: Source, /, *, framework: str | None = None) -> NNRModel:
    """Read a model (path or object) with the plugin that recognises it (or ``framework``)."""
    pm = get_plugin_manager()
    name = framework or pm.plugin_for_source(source).name
    model = pm.adapter(name).read(source)
    model.framework = name
    return model


def write_model(
    model: NNRModel, destination: str | Path, /, *, framework: str | None = None, template: Source | None = None
) -> None:
    """Write an :class:`~nnc_core.model.NNRModel` with the plugin for ``destination``'s format.

    A suffix-less ``destination`` is a model folder, written by the plugin
    whose topology the model carries (a decoded bitstream's NNR_TPL unit), or
    else by the plugin that read it.
    """
    pm = get_plugin_manager()
    if framework is None:
        own = model.framework
        topology = model.topology
        if topology is not None and topology.storage_format != TopologyStorageFormat.NNR_TPL_UNREC:
            carried = (r.name for r in pm.frameworks().values() if r.topology_format == topology.storage_format)
            own = next(carried, own)
        elif topology is not None:  # NNR_TPL_UNREC names no format: a plugin may know its data by its start
            data = bytes(topology.data[:64])
            marked = (
                r.name for r in pm.frameworks().values() if r.topology_magic and data.startswith(r.topology_magic)
            )
            own = next(marked, own)
        framework = pm.plugin_for_destination(destination, directory=True, prefer=own).name
    pm.adapter(framework).write(model, Path(destination), template=template)
