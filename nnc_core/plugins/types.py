"""The records plugins declare and the adapter protocol they implement.

A plugin module imports no framework.  It declares :class:`FrameworkPlugin`
records through the ``nnc_frameworks`` hook; each names its adapter class as
``"module:Class"``, imported only when the framework is actually used, so that
``nnc plugins`` and format detection work without loading torch or
tensorflow, and a missing framework disables one plugin, not the host.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from nnc_core.model import NNRModel

__all__ = ["FrameworkPlugin", "TopologyConverter", "ConversionStep", "FrameworkAdapter", "Source"]

# What a plugin reads: a path (file or directory) or an in-memory model object.
Source = object


@dataclass(frozen=True)
class FrameworkPlugin:
    """A framework mapping (one annex of ISO/IEC 15938-17) that a plugin provides.

    Attributes:
        name: short unique name, e.g. ``"pytorch"``, ``"onnx"``.
        adapter: ``"module:Class"`` of its :class:`FrameworkAdapter`; the
            module may import the framework, the plugin module must not.
        framework: import name of the framework (``"torch"``), checked with
            :func:`importlib.util.find_spec` before the adapter is imported.
        framework_distribution: distribution whose version ``nnc plugins``
            shows (``"torch"``, ``"tensorflow-cpu"`` …); defaults to
            ``framework``.
        suffixes: file suffixes the adapter reads and writes (lower case,
            with the dot: ``(".pt", ".pth", ".safetensors")``).
        object_types: fully qualified base classes of in-memory models the
            adapter reads (``"torch.nn.modules.module.Module"``); matched
            against already-imported modules only, never by importing.
        topology_format: the ``topology_storage_format`` it writes
            (:class:`~nnc_core.bitstream.units.TopologyStorageFormat`).
        annex: the annex of the standard it implements (``"C"``).
        description: one line for ``nnc plugins``.
        directories: whether it reads models stored as folders (SavedModel,
            NNEF graphs); such folders are offered to it by their contents.
        topology_magic: the first bytes of the ``topology_data`` it writes
            under a storage format it shares with others (NNR_TPL_UNREC):
            a decoded model whose topology starts so is written by this
            plugin when the output's suffix does not decide.
        hook_api: the :data:`~nnc_core.plugins.HOOK_API_VERSION` the plugin
            needs; on an older host it is disabled with a warning.

    .. versionadded:: 0.1
    """

    name: str
    adapter: str
    framework: str
    suffixes: tuple[str, ...] = ()
    object_types: tuple[str, ...] = ()
    topology_format: int = 0
    framework_distribution: str | None = None
    annex: str = ""
    description: str = ""
    directories: bool = False
    topology_magic: bytes = b""
    hook_api: int = 1


@dataclass(frozen=True)
class TopologyConverter:
    """A conversion of a model's topology between two frameworks.

    ``function`` is ``"module:function"`` called as
    ``function(source, destination, *, example_inputs=None) -> None``: it
    reads the model at ``source`` (path) in framework ``source_framework`` and
    writes the equivalent model in ``target_framework`` to ``destination``,
    using an established converter (``torch.onnx.export``, onnx2tf, nnef-tools
    …), never a home-made graph translation.  ``nnc convert`` then replaces
    the destination's weights by those decoded from NNR.

    ``explain``, when given, is ``"module:function"`` called as
    ``explain(source, *, example_inputs=None) -> list[ConversionStep]``: the
    converter's own steps (graph preparation, the converter itself) and
    whether each would work on ``source``, found without writing anything
    (``nnc convert --explain``).

    .. versionadded:: 0.1
    """

    source_framework: str
    target_framework: str
    function: str
    requires: tuple[str, ...] = field(default=())  # import names that must be present
    description: str = ""
    explain: str = ""


@dataclass(frozen=True)
class ConversionStep:
    """One step of a conversion as ``nnc convert --explain`` shows it.

    ``status`` starts with ``available``, ``done``, ``skipped``, ``missing``
    (a package is not installed) or ``fails`` (what fails, on which node or
    operator, and what would unblock it); ``detail`` says more.

    .. versionadded:: 0.1
    """

    name: str
    tool: str
    status: str
    detail: str = ""

    @property
    def ok(self) -> bool:
        return not self.status.startswith(("missing", "fails"))


@runtime_checkable
class FrameworkAdapter(Protocol):
    """What a framework plugin does; one instance per :class:`FrameworkPlugin`.

    .. versionadded:: 0.1
    """

    def can_read(self, source: Source, /) -> bool:
        """Whether ``source`` (a path or a model object) is a model of this framework.

        Called only for sources whose suffix or type the plugin declared;
        inspect contents here when a suffix is ambiguous.
        """
        ...

    def read(self, source: Source, /) -> NNRModel:
        """Map a model to NNR: tensor names, arrays in coding layout, block
        grouping of weight/bias/batch-norm, dimension shifts and topology.

        Raises :class:`~nnc_core.errors.ModelError` naming the tensor or
        layer for a model it cannot map.
        """
        ...

    def write(self, model: NNRModel, destination: Path, /, *, template: Source | None = None) -> None:
        """Write ``model`` (decoded tensors and topology) as a model file or folder.

        ``template`` is an original model, where the framework needs one to
        rebuild what NNR does not carry.  Write atomically: on failure the
        destination is left as it was.
        """
        ...

    def embed(self, bitstream: bytes, destination: Path, /, *, template: Source | None = None) -> None:
        """Carry an NNR bitstream inside (or beside) this framework's container (Annex E)."""
        ...

    def extract(self, source: Path, /) -> bytes | None:
        """The NNR bitstream carried by a container written by :meth:`embed`, or ``None``."""
        ...
