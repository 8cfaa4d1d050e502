"""The hooks a plugin implements: the plugin API of nnc_core.

Every hook returns records (:mod:`nnc_core.plugins.types`) instead of doing
work itself, so that loading a plugin never imports its framework.  Hooks are
called with keyword arguments; a plugin may implement a hook with fewer
parameters than specified here (pluggy's opt-in arguments), which is how
parameters are added without breaking existing plugins.

Versioning: :data:`HOOK_API_VERSION` is raised when a hook or a record gains
something; a :class:`FrameworkPlugin` states the version it needs in
``hook_api`` and is disabled with a warning on an older host.
"""

from __future__ import annotations

from collections.abc import Iterable

import pluggy

from nnc_core.plugins.types import FrameworkPlugin, TopologyConverter

PROJECT = "nnc"
HOOK_API_VERSION = 2  # 2: FrameworkPlugin.topology_magic

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class NncSpecs:
    """Hook specifications of the ``nnc`` project (entry-point group ``nnc``)."""

    @hookspec
    def nnc_frameworks(self) -> Iterable[FrameworkPlugin]:
        """Declare the framework mappings this plugin provides.

        :return: :class:`~nnc_core.plugins.FrameworkPlugin` records; each
            name must be unique among all installed plugins.

        Example, the whole ``plugin.py`` of a PyTorch plugin::

            from nnc_core.plugins import FrameworkPlugin, hookimpl

            @hookimpl
            def nnc_frameworks():
                yield FrameworkPlugin(
                    name="pytorch",
                    adapter="nnc_pytorch.adapter:TorchAdapter",
                    framework="torch",
                    suffixes=(".pt", ".pth", ".safetensors"),
                    object_types=("torch.nn.modules.module.Module",),
                    topology_format=TopologyStorageFormat.NNR_TPL_PYT,
                    annex="C",
                )

        and in its ``pyproject.toml``::

            [project.entry-points.nnc]
            pytorch = "nnc_pytorch.plugin"

        .. versionadded:: 0.1
        """
        raise NotImplementedError

    @hookspec
    def nnc_topology_converters(self) -> Iterable[TopologyConverter]:
        """Declare topology conversions between frameworks for ``nnc convert``.

        :return: :class:`~nnc_core.plugins.TopologyConverter` records, each
            wrapping an established converter.

        Example::

            @hookimpl
            def nnc_topology_converters():
                yield TopologyConverter("pytorch", "onnx", "nnc_pytorch.convert:to_onnx",
                                        requires=("torch", "onnx"))

        .. versionadded:: 0.1
        """
        raise NotImplementedError
