"""Converting a model between frameworks with its weights carried as NNR.

The topology travels through an established converter that a plugin
declares (:class:`~nnc_core.plugins.TopologyConverter`: ``torch.onnx``,
onnx2tf, nnef-tools …); the weights travel as an NNR bitstream.  Steps:

1. the source plugin maps the source model to NNR; it is encoded and decoded;
2. a source file is written again in its own format with the decoded weights
   (the original as template), so that the converter starts from exactly
   what a receiver of the bitstream has;
3. the converter writes the destination model from it;
4. the destination plugin reads that model, and each of its tensors is
   matched to the decoded tensor it came from: by name where the converter
   kept names and values, otherwise by identical content (both plugins
   present tensors in NNR's layout, output channels first, so a weight the
   converter renamed is still bit-identical to its source);
5. the matched tensors are set to the NNR-decoded ones (for a source file
   they already are) and the destination plugin writes the result.

Tensors the converter derived (batch norms folded into convolutions, merged
or reshaped kernels) match no source tensor; :class:`ConversionReport` lists
them.  From a source file they are computed from the decoded weights.  An
in-memory source (an ``nn.Module`` or ``keras.Model`` object) goes to the
converter as it is, so its derived tensors keep the values the converter
computed from the original weights (``ConversionReport.from_decoded`` is
False).

When no plugin declares a converter from the source framework straight to the
destination's, the shortest chain of declared converters is used (PyTorch ->
ONNX -> NNEF, NNEF -> ONNX -> TensorFlow …): each step writes its model into a
temporary folder, the last one the destination, and the weights are matched
from the source model to the final destination as above.
:attr:`ConversionReport.route` names the frameworks passed through.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nnc_core.errors import FrameworkUnavailableError, ModelError, PluginError
from nnc_core.files import atomic_path
from nnc_core.model import NNRModel, decode_model, encode_model
from nnc_core.plugins import PluginManager, get_plugin_manager, load_object, read_model
from nnc_core.plugins.types import ConversionStep, Source, TopologyConverter

__all__ = ["ConversionReport", "Explanation", "convert", "explain", "match_tensors"]


@dataclass
class ConversionReport:
    """What :func:`convert` did."""

    source_framework: str
    target_framework: str
    bitstream_bytes: int
    parameters: int
    matched: dict[str, str] = field(default_factory=dict)  # destination name -> source name
    unmatched: list[str] = field(default_factory=list)  # destination tensors left as converted
    route: list[str] = field(default_factory=list)  # frameworks from source to target, intermediates included
    # whether the converters ran on the source rewritten with the decoded
    # weights (a source file), so unmatched tensors too derive from them
    from_decoded: bool = False

    @property
    def bits_per_parameter(self) -> float:
        return 8 * self.bitstream_bytes / max(self.parameters, 1)


def _key(a: np.ndarray) -> tuple[str, tuple[int, ...], str]:
    a = np.ascontiguousarray(a)
    return (str(a.dtype), a.shape, hashlib.sha256(a.tobytes()).hexdigest())


def match_tensors(source: NNRModel, destination: NNRModel) -> dict[str, str]:
    """destination name -> source name for tensors with equal content.

    Names that exist in both with equal content match first; the others by
    content alone (dtype, shape and bytes).
    """
    by_content: dict[tuple[Any, ...], list[str]] = {}
    for name, value in source.tensors.items():
        by_content.setdefault(_key(value), []).append(name)
    matched: dict[str, str] = {}
    for name, value in destination.tensors.items():
        key = _key(value)
        candidates = by_content.get(key, [])
        if name in candidates:
            matched[name] = name
        elif candidates:
            matched[name] = candidates[0]
    return matched


def convert(
    source: Source,
    destination: str | Path,
    /,
    *,
    target: str | None = None,
    example_inputs: Any = None,
    progress: Callable[[int, int, str], None] | None = None,
    **options: Any,
) -> ConversionReport:
    """Convert ``source`` to the format of ``destination`` (or plugin ``target``).

    ``options`` are those of :func:`nnc_core.encode` (lossless settings give
    exactly the source's weights).  ``example_inputs`` is passed to the
    first converter: inputs to trace the model with (``torch.onnx.export``)
    or the input shapes of a graph with dynamic ones (nnef-tools, onnx2keras,
    onnx2torch): one shape, or a dict by input name of shapes and of Python
    numbers, each of which fixes a scalar ONNX input (``{"input": (1, 512),
    "sr": 16000}``: the input leaves the converted model).
    """
    pm = get_plugin_manager()
    destination = Path(destination)
    src_name = pm.plugin_for_source(source).name
    dst_record = pm.framework(target) if target else pm.plugin_for_destination(destination, directory=True)
    dst_name = dst_record.name
    src_adapter, dst_adapter = pm.adapter(src_name), pm.adapter(dst_name)
    steps = [] if src_name == dst_name else _route(pm, src_name, dst_name)  # before any coding
    route = [src_name] + [c.target_framework for c in steps] if steps else [src_name, dst_name]
    functions = [load_object(c.function) for c in steps]

    original = read_model(source, framework=src_name)
    bitstream = encode_model(original, progress=progress, **options)
    # the whole model back: local scaling applied, pruned tensors at full size
    decoded = decode_model(bitstream, apply_local_scaling=True, unprune=True)
    parameters = sum(int(v.size) for v in original.tensors.values())
    if not steps:
        decoded.topology = original.topology
        dst_adapter.write(decoded, destination, template=source)
        names = {n: n for n in decoded.tensors}
        return ConversionReport(src_name, dst_name, len(bitstream), parameters, names, [], route)

    with (
        atomic_path(destination, directory=dst_record.directories and not destination.suffix) as staged,
        tempfile.TemporaryDirectory(prefix="nnc-convert-") as work,
    ):
        # the decoded weights in the source's dtypes: what the rewritten source
        # holds, and what the converters' output is matched against
        reference = NNRModel(
            {
                n: v.astype(original.tensors[n].dtype, copy=False) if n in original.tensors else v
                for n, v in decoded.tensors.items()
            },
            blocks=original.blocks,
            topology=original.topology,
            dimension_shift=original.dimension_shift,
            framework=original.framework,
            metadata=original.metadata,
        )
        rewritten = Path(work) / f"source{Path(source).suffix}" if isinstance(source, (str, os.PathLike)) else None
        try:
            current = _decoded_source(src_adapter, source, reference, rewritten)
            from_decoded = current is not source
            if not from_decoded:
                reference = original
            for i, (step, function) in enumerate(zip(steps, functions)):
                last = i == len(steps) - 1
                out = staged if last else Path(work) / f"step{i + 1}{_intermediate_suffix(pm, step.target_framework)}"
                # example inputs feed the first converter; later ones read the static
                # input shapes the intermediate model carries
                function(current, out, example_inputs=example_inputs if i == 0 else None)
                current = out
        except (ModelError, PluginError) as e:
            if rewritten is not None and str(rewritten) in str(e):  # name the user's model, not its rewritten copy
                raise type(e)(str(e).replace(str(rewritten), str(source))) from e
            raise
        converted = dst_adapter.read(staged)
        matched = match_tensors(reference, converted)
        if not from_decoded:  # the converters saw the original weights: put the decoded ones in
            converted.tensors = dict(converted.tensors)  # a plugin may read tensors lazily (read-only)
            for dst_tensor, src_tensor in matched.items():
                converted.tensors[dst_tensor] = decoded.tensors[src_tensor].astype(
                    converted.tensors[dst_tensor].dtype, copy=False
                )
            dst_adapter.write(converted, staged, template=staged)
    unmatched = [n for n in converted.tensors if n not in matched]
    return ConversionReport(src_name, dst_name, len(bitstream), parameters, matched, unmatched, route, from_decoded)


@dataclass
class Explanation:
    """What :func:`convert` would do, found without writing anything
    (``nnc convert --explain``): the route and each step's status."""

    source: str
    destination: str
    source_framework: str
    target_framework: str
    route: list[str]  # frameworks from source to target
    steps: list[tuple[int, ConversionStep]]  # (depth: 0 a step of the route, 1 a converter's own step, step)

    @property
    def ok(self) -> bool:
        return all(step.ok for _, step in self.steps)

    def lines(self) -> list[str]:
        out = [
            f"route: {self.source} ({self.source_framework}) -> {self.destination} ({self.target_framework})"
            + (f", via {', '.join(self.route[1:-1])}" if len(self.route) > 2 else "")
        ]
        number = [0, 0]
        for depth, step in self.steps:
            number[depth] += 1
            if depth == 0:
                number[1] = 0
            label = f"{number[0]}." if depth == 0 else f"{number[0]}.{number[1]}"
            out.append(
                f"{'  ' * (depth + 1)}{label} {step.name} [{step.tool}]: {step.status}"
                + (f" ({step.detail})" if step.detail else "")
            )
        out.append("would convert" if self.ok else "would fail: see the steps marked 'fails' or 'missing'")
        return out


def explain(
    source: Source, destination: str | Path, /, *, target: str | None = None, example_inputs: Any = None
) -> Explanation:
    """The route :func:`convert` would take from ``source`` to ``destination``
    and the status of each step, without writing anything.

    Each step of the route is checked for its packages; the first converter,
    when its plugin declares an ``explain`` function, also reports its own
    steps (graph preparation, the converter) run in memory on ``source``.  A
    later converter of a chain works on an intermediate model that exists
    only once the earlier ones ran, so only its packages are checked.
    """
    pm = get_plugin_manager()
    label = str(source) if isinstance(source, (str, os.PathLike)) else type(source).__name__
    src_record = pm.plugin_for_source(source)
    dst_record = pm.framework(target) if target else pm.plugin_for_destination(Path(destination), directory=True)
    steps: list[tuple[int, ConversionStep]] = []

    def adapter_status(name: str) -> str:
        try:
            pm.adapter(name)
        except (FrameworkUnavailableError, PluginError) as e:
            return f"missing: {e}"
        return "available"

    steps.append((0, ConversionStep(f"read {label}", f"{src_record.name} plugin", adapter_status(src_record.name))))
    steps.append(
        (
            0,
            ConversionStep(
                "weights encoded as NNR and decoded",
                "nnc_core",
                "available",
                "a source file is written again with the decoded weights for the converter",
            ),
        )
    )
    route = [src_record.name, dst_record.name]
    if src_record.name != dst_record.name:
        declared = pm.converters()
        chain = _shortest([c for c in declared if not _missing(c)], src_record.name, dst_record.name) or _shortest(
            declared, src_record.name, dst_record.name
        )
        if chain is None:
            pairs = ", ".join(f"{c.source_framework}->{c.target_framework}" for c in declared) or "none"
            steps.append(
                (
                    0,
                    ConversionStep(
                        f"{src_record.name} -> {dst_record.name}",
                        "topology converter",
                        f"fails: no converter declared (available: {pairs})",
                    ),
                )
            )
        else:
            route = [src_record.name] + [c.target_framework for c in chain]
            for i, step in enumerate(chain):
                missing = _missing(step)
                status = f"missing package {', '.join(missing)}" if missing else "available"
                if not missing and i > 0:
                    status = "available (runs on the intermediate model; checked when converting)"
                steps.append(
                    (
                        0,
                        ConversionStep(
                            f"{step.source_framework} -> {step.target_framework}",
                            step.description or step.function,
                            status,
                        ),
                    )
                )
                if i == 0 and step.explain and not missing:
                    try:
                        own = load_object(step.explain)(source, example_inputs=example_inputs)
                    except (ModelError, PluginError) as e:
                        own = [ConversionStep("converter's own steps", step.function, f"fails: {e}")]
                    steps.extend((1, s) for s in own)
    steps.append(
        (
            0,
            ConversionStep(
                f"write {destination}",
                f"{dst_record.name} plugin",
                adapter_status(dst_record.name),
                "the converted model's weights replaced by the NNR-decoded ones",
            ),
        )
    )
    return Explanation(label, str(destination), src_record.name, dst_record.name, route, steps)


def _decoded_source(adapter: Any, source: Source, decoded: NNRModel, target: Path | None) -> Source:
    """The source model with its NNR-decoded weights (``decoded``), written to
    ``target`` in its own format (the original as template), for the
    converters to start from: tensors a converter derives (batch norms folded
    into convolutions, merged or transposed kernels) then come from the
    decoded weights too.  An in-memory source (a module object, ``target``
    None) is returned as it is: the converters take it with its original
    weights, and only the tensors matched afterwards carry the decoded ones.
    """
    if target is None:
        return source
    adapter.write(decoded, target, template=source)
    return target


def _missing(converter: TopologyConverter) -> list[str]:
    return [m for m in converter.requires if importlib.util.find_spec(m) is None]


def _shortest(converters: list[TopologyConverter], source: str, target: str) -> list[TopologyConverter] | None:
    """The shortest chain of ``converters`` from ``source`` to ``target`` (breadth
    first, in declaration order on ties), or None."""
    came: dict[str, TopologyConverter | None] = {source: None}
    queue = deque([source])
    while queue:
        here = queue.popleft()
        if here == target:
            chain: list[TopologyConverter] = []
            while (step := came[here]) is not None:
                chain.append(step)
                here = step.source_framework
            return chain[::-1]
        for c in converters:
            if c.source_framework == here and c.target_framework not in came:
                came[c.target_framework] = c
                queue.append(c.target_framework)
    return None


def _route(pm: PluginManager, source: str, target: str) -> list[TopologyConverter]:
    """The shortest chain of declared converters from ``source`` to ``target``
    (a direct one has length 1) whose modules are all installed.  A route that
    exists only with missing modules names the first converter lacking them."""
    declared = pm.converters()
    chain = _shortest([c for c in declared if not _missing(c)], source, target)
    if chain is not None:
        return chain
    chain = _shortest(declared, source, target)
    if chain is None:
        pairs = ", ".join(f"{c.source_framework}->{c.target_framework}" for c in declared) or "none"
        raise PluginError(f"no topology converter from {source} to {target} is installed (available: {pairs})")
    step = next(c for c in chain if _missing(c))
    raise FrameworkUnavailableError(
        f"the {step.source_framework} -> {step.target_framework} converter needs {', '.join(_missing(step))}, not installed"
    )


def _intermediate_suffix(pm: PluginManager, framework: str) -> str:
    """How an intermediate model of ``framework`` is named: its plugin's first
    suffix (``.onnx``, ``.nnef``), or none for a folder format without one."""
    record = pm.framework(framework)
    return record.suffixes[0] if record.suffixes else ""
