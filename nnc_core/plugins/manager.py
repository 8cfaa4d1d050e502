"""Finding, loading and choosing plugins.

Plugins are distributions with an entry point in the group ``nnc``.  Loading
is guarded: a plugin that fails to import, declares a duplicate name or needs
a newer hook API is reported (a :class:`PluginWarning` and its state in
``nnc plugins``) and left out; the host keeps working.

Environment:
    NNC_LOAD_PLUGINS   comma-separated entry-point names to load (an empty
                       value loads none); unset loads all.
    NNC_TRACE_PLUGINS  set to trace every hook call on stderr.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import importlib.util
import os
import sys
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pluggy

from nnc_core.errors import FrameworkUnavailableError, PluginError
from nnc_core.plugins.hookspecs import HOOK_API_VERSION, PROJECT, NncSpecs
from nnc_core.plugins.types import (
    FrameworkAdapter,
    FrameworkPlugin,
    Source,
    TopologyConverter,
)

__all__ = ["PluginManager", "PluginStatus", "PluginWarning", "get_plugin_manager", "ENTRY_POINT_GROUP"]

ENTRY_POINT_GROUP = PROJECT
BUILTIN_PLUGINS = {"numpy": "nnc_core.plugins.npz"}


class PluginWarning(UserWarning):
    """A plugin could not be loaded or is disabled; the host goes on without it."""


@dataclass(frozen=True)
class PluginStatus:
    """One line of ``nnc plugins``."""

    name: str
    distribution: str
    version: str
    framework: str
    framework_version: str | None
    annex: str
    suffixes: tuple[str, ...]
    state: str  # "ok", or why the plugin cannot be used


@dataclass(frozen=True)
class _Declared:
    record: FrameworkPlugin
    distribution: str
    version: str


class PluginManager(pluggy.PluginManager):
    """pluggy's manager with guarded loading and the lookups nnc needs."""

    def __init__(self) -> None:
        super().__init__(PROJECT)
        self.add_hookspecs(NncSpecs)
        self._distributions: dict[str, tuple[str, str]] = {}  # plugin name -> (distribution, version)
        self.failures: list[PluginStatus] = []
        self._adapters: dict[str, FrameworkAdapter] = {}
        self._declared: dict[str, _Declared] | None = None
        self._converters: list[TopologyConverter] | None = None

    # -- loading ---------------------------------------------------------

    def load_plugins(self) -> None:
        """Register the built-in plugins and every allowed entry point."""
        allowed = _allow_list()
        from nnc_core.version import __version__

        for name, module in BUILTIN_PLUGINS.items():
            self.register(importlib.import_module(module), name=name)
            self._distributions[name] = ("nnc-core", __version__)
        seen: set[str] = set()
        for dist in importlib.metadata.distributions():
            for ep in dist.entry_points:
                if ep.group != ENTRY_POINT_GROUP or ep.name in seen:
                    continue
                seen.add(ep.name)
                if allowed is not None and ep.name not in allowed:
                    continue
                dist_name = dist.metadata["Name"] or "?"
                if self.get_plugin(ep.name) is not None:
                    self._fail(ep.name, dist_name, dist.version, f"duplicate plugin name {ep.name!r}")
                    continue
                try:
                    module = ep.load()
                    self.register(module, name=ep.name)
                except Exception as e:  # a broken plugin must not take the host down
                    self._fail(ep.name, dist_name, dist.version, f"failed to load: {type(e).__name__}: {e}")
                    continue
                self._distributions[ep.name] = (dist_name, dist.version)
        self.check_pending()
        if os.environ.get("NNC_TRACE_PLUGINS"):
            self.trace.root.setwriter(lambda message: print(message, end="", file=sys.stderr))
            self.enable_tracing()

    def _fail(self, name: str, distribution: str, version: str, why: str) -> None:
        warnings.warn(f"nnc plugin {name!r} from {distribution} {version}: {why}", PluginWarning, stacklevel=3)
        self.failures.append(PluginStatus(name, distribution, version, "?", None, "", (), why))

    # -- declared records --------------------------------------------------

    def _collect(self) -> dict[str, _Declared]:
        if self._declared is not None:
            return self._declared
        declared: dict[str, _Declared] = {}
        for impl in self.hook.nnc_frameworks.get_hookimpls():  # registration order: built-ins first
            dist, version = self._distributions.get(impl.plugin_name, ("?", "?"))
            try:
                # pluggy types a hook implementation's result as object; the hookspec says an iterable
                records = list(cast("Iterable[object]", impl.function()))
            except Exception as e:
                self._fail(impl.plugin_name, dist, version, f"nnc_frameworks failed: {type(e).__name__}: {e}")
                continue
            for record in records:
                if not isinstance(record, FrameworkPlugin):
                    self._fail(
                        impl.plugin_name,
                        dist,
                        version,
                        f"nnc_frameworks yielded {type(record).__name__}, not FrameworkPlugin",
                    )
                elif record.name in declared:
                    other = declared[record.name]
                    self._fail(
                        record.name,
                        dist,
                        version,
                        f"duplicate framework name {record.name!r}, also declared by {other.distribution}",
                    )
                elif record.hook_api > HOOK_API_VERSION:
                    self._fail(
                        record.name,
                        dist,
                        version,
                        f"needs hook API {record.hook_api}, this nnc-core has {HOOK_API_VERSION}",
                    )
                else:
                    declared[record.name] = _Declared(record, dist, version)
        self._declared = declared
        return declared

    def frameworks(self) -> dict[str, FrameworkPlugin]:
        """Every usable declared framework, by name."""
        return {name: d.record for name, d in self._collect().items()}

    def converters(self) -> list[TopologyConverter]:
        if self._converters is not None:
            return self._converters
        out: list[TopologyConverter] = []
        for impl in self.hook.nnc_topology_converters.get_hookimpls():
            try:
                out.extend(r for r in cast("Iterable[object]", impl.function()) if isinstance(r, TopologyConverter))
            except Exception as e:
                dist, version = self._distributions.get(impl.plugin_name, ("?", "?"))
                self._fail(impl.plugin_name, dist, version, f"nnc_topology_converters failed: {type(e).__name__}: {e}")
        self._converters = out
        return out

    def status(self, *, import_adapters: bool = False) -> list[PluginStatus]:
        """Each plugin's versions and state; ``import_adapters`` also imports
        each adapter (and so its framework) to prove it loads."""
        out = []
        for name, d in sorted(self._collect().items()):
            r = d.record
            state = "ok"
            if importlib.util.find_spec(r.framework) is None:
                state = f"framework {r.framework!r} not installed"
            elif import_adapters:
                try:
                    self.adapter(name)
                except Exception as e:
                    state = f"broken: {type(e).__name__}: {e}"
            out.append(
                PluginStatus(
                    name,
                    d.distribution,
                    d.version,
                    r.framework,
                    _version(r.framework_distribution or r.framework),
                    r.annex,
                    r.suffixes,
                    state,
                )
            )
        return out + list(self.failures)

    # -- adapters ----------------------------------------------------------

    def framework(self, name: str) -> FrameworkPlugin:
        """The declared framework plugin ``name``."""
        record = self.frameworks().get(name)
        if record is None:
            raise PluginError(
                f"no framework plugin named {name!r}; installed: {', '.join(sorted(self.frameworks())) or 'none'}"
            )
        return record

    def adapter(self, name: str) -> FrameworkAdapter:
        """The adapter of framework plugin ``name``, imported on first use."""
        if name in self._adapters:
            return self._adapters[name]
        record = self.framework(name)
        if importlib.util.find_spec(record.framework) is None:
            raise FrameworkUnavailableError(
                f"plugin {name!r} needs the {record.framework!r} module, which is not installed"
            )
        module_name, _, class_name = record.adapter.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            raise FrameworkUnavailableError(f"plugin {name!r}: cannot import {module_name}: {e}") from e
        try:
            adapter = getattr(module, class_name)()
        except Exception as e:
            raise PluginError(f"plugin {name!r}: cannot create adapter {record.adapter}: {e}") from e
        self._adapters[name] = adapter
        return adapter

    def plugin_for_source(self, source: Source) -> FrameworkPlugin:
        """The framework plugin that reads ``source`` (path or model object)."""
        frameworks = self.frameworks()
        if isinstance(source, (str, os.PathLike)):
            path = Path(source)
            if not path.exists():
                raise FileNotFoundError(f"{path}: no such file or directory")
            if path.is_dir():
                candidates = [r for r in frameworks.values() if r.directories]
                what = "folders"
            else:
                candidates = [r for r in frameworks.values() if path.suffix.lower() in r.suffixes]
                what = f"{path.suffix or 'suffix-less'} files"
        else:
            types = {f"{c.__module__}.{c.__qualname__}" for c in type(source).__mro__}
            candidates = [r for r in frameworks.values() if types & set(r.object_types)]
            what = f"{type(source).__module__}.{type(source).__qualname__} objects"
        if len(candidates) == 1 and isinstance(source, (str, os.PathLike)) and Path(source).is_file():
            return candidates[0]  # the suffix decides; reading it will check the contents
        for record in candidates:
            try:
                if self.adapter(record.name).can_read(source):
                    return record
            except FrameworkUnavailableError:
                continue
        raise PluginError(f"no installed plugin reads {what} ({source!s:.80}); {self._known()}")

    def plugin_for_destination(
        self, path: str | os.PathLike[str], *, directory: bool = False, prefer: str | None = None
    ) -> FrameworkPlugin:
        """The framework plugin that writes files (or folders) like ``path``.

        A suffix-less ``path`` with ``directory=True`` is a folder: several
        plugins may write folders (SavedModel, NNEF), so ``prefer`` (the
        model's own framework) decides, or the only one installed; otherwise
        the choice is refused rather than guessed.
        """
        path = Path(path)
        suffix = path.suffix.lower()
        for record in self.frameworks().values():
            if suffix and suffix in record.suffixes:
                return record
        if directory and not suffix:
            folders = {name: r for name, r in self.frameworks().items() if r.directories}
            if prefer in folders:
                return folders[prefer]
            if len(folders) == 1:
                return next(iter(folders.values()))
            if folders:
                raise PluginError(
                    f"{path}: several plugins write model folders ({', '.join(folders)}): name one (--framework)"
                )
        raise PluginError(f"no installed plugin writes {suffix or 'suffix-less'} outputs ({path}); {self._known()}")

    def _known(self) -> str:
        known = [f"{r.name} ({', '.join(r.suffixes) or 'folders'})" for r in self.frameworks().values()]
        return "installed plugins: " + ", ".join(known)


def _allow_list() -> set[str] | None:
    value = os.environ.get("NNC_LOAD_PLUGINS")
    if value is None:
        return None
    return {name.strip() for name in value.split(",") if name.strip()}


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.cache
def get_plugin_manager() -> PluginManager:
    """The process's plugin manager, loaded on first use (``cache_clear()`` resets it)."""
    pm = PluginManager()
    pm.load_plugins()
    return pm


def load_object(spec: str) -> Any:
    """Import ``"module:attribute"``."""
    module_name, _, attribute = spec.partition(":")
    return getattr(importlib.import_module(module_name), attribute)
