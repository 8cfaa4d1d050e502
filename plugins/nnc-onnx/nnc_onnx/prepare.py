"""Preparing an ONNX graph before it goes to a converter (onnx2torch, onnx2keras).

Exported graphs often hold what a converter does not expect although the
function is plain: weights in ``Constant`` nodes (PaddlePaddle's exports;
onnx2torch looks weights up among initializers only), initializers listed as
graph inputs, ``If`` nodes whose condition is a constant, shape computations
on dynamic inputs, operators a converter has no converter for (onnx2keras has
neither ``HardSigmoid`` nor ``HardSwish``).  :func:`prepare` rewrites the
graph into an equivalent one with well-kept tools (onnx-ir passes, the
onnxscript constant folder and pattern rewriter), never a hand-written node
translation:

===================================  =========================================================
step                                 tool
===================================  =========================================================
static input shapes                  onnx-ir: the shapes the user gives (``--input-shape``)
constant folding                     onnxscript.optimizer.fold_constants (``If`` with a
                                     constant condition inlined, shape chains folded)
operators rewritten                  onnxscript.rewriter pattern rules, only for the
                                     operators the converter lacks: ``HardSigmoid`` as
                                     ``Clip(Add(Mul(x, alpha), beta), 0, 1)``, ``HardSwish``
                                     as ``Mul(x, HardSigmoid(x))`` decomposed alike,
                                     ``Neg`` as ``Mul(x, -1)``, ``Reciprocal`` as
                                     ``Div(1, x)``, ``GlobalMaxPool`` as ``ReduceMax``
unused nodes removed                 onnx-ir RemoveUnusedNodesPass
Constant weights to initializers     onnx-ir LiftConstantsToInitializersPass (every
                                     Constant; the initializer keeps the Constant's output
                                     name) and LiftSubgraphInitializersToMainGraphPass
initializers removed from inputs     onnx-ir RemoveInitializersFromInputsPass
===================================  =========================================================

:func:`rewrite_operators` applies the rules alone, to a graph a simplifier has
changed after :func:`prepare`: an ``Unsqueeze`` of several axes as single-axis
ones (onnxsim fuses consecutive Unsqueezes), a ``Slice`` with its ends clamped
to the dimensions and whole-axis entries dropped.

Weights: the folding computes a new tensor only where an operator's inputs
are all constant (a ``Reshape`` of a weight, an ``If`` branch's constants);
a weight that only moves (a Constant lifted to an initializer) keeps its
name and its bytes.  ``nnc convert`` prepares the *decoded* source (the
source rewritten with the NNR-decoded weights), so the moved weights in the
destination equal the decoded ones bit for bit and are matched to them; the
folded ones are computed from decoded weights and reported as derived by the
converter.  The bitstream codes the source as the user gave it, not the
prepared graph.
"""

from __future__ import annotations

import importlib.util
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from nnc_core.plugins import ConversionStep, ModelError, PluginError

__all__ = [
    "STEPS",
    "prepare",
    "rewrite_operators",
    "planned_steps",
    "REWRITABLE",
    "lacking_operators",
    "describe_nodes",
    "given_shapes",
    "raw_initializers",
    "failing_node",
    "converter_error",
]

# (name, tool) of each step, in the order they run; --explain prints them
STEPS: tuple[tuple[str, str], ...] = (
    ("static input shapes", "onnx-ir"),
    ("constant folding (If with a constant condition, shape chains)", "onnxscript.optimizer"),
    ("operators the converter lacks rewritten", "onnxscript.rewriter"),
    ("unused nodes removed", "onnx-ir"),
    ("Constant weights to initializers", "onnx-ir"),
    ("initializers removed from graph inputs", "onnx-ir"),
    ("initializer data as raw bytes", "onnx.numpy_helper"),
)

# operators with an exact rewrite into others (by the rules below), and into what
REWRITABLE = {
    "HardSigmoid": "Mul, Add, Clip",
    "HardSwish": "Mul, Add, Clip, Mul",
    "GlobalMaxPool": "ReduceMax",
    "Neg": "Mul by -1",
    "Reciprocal": "Div of 1",
    "Unsqueeze": "a chain of single-axis Unsqueeze",
    "Slice": "Slice with its ends clamped to the dimensions and whole-axis entries dropped",
    "ReduceMean": "ReduceMean with its default keepdims=1 written out",
    "ReduceMax": "ReduceMax with its default keepdims=1 written out",
}


def _onnxscript() -> Any:
    if importlib.util.find_spec("onnxscript") is None:
        raise PluginError("preparing an ONNX graph for conversion needs onnxscript: pip install 'onnxscript>=0.7,<0.8'")
    import onnxscript

    return onnxscript


def _opset(model: onnx.ModelProto, domain: str = "") -> int:
    for entry in model.opset_import:
        if entry.domain in (domain, "ai.onnx" if domain == "" else domain):
            return int(entry.version)
    return 1


def describe_nodes(model: onnx.ModelProto, ops: Iterable[str], *, limit: int = 3) -> str:
    """``'HardSigmoid' (opset 11) at nodes 'a', 'b' … (N nodes)`` for each of ``ops``, for messages."""
    parts = []
    for op in ops:
        names = [n.name or f"#{i}" for i, n in enumerate(model.graph.node) if n.op_type == op]
        shown = ", ".join(repr(n) for n in names[:limit]) + (" …" if len(names) > limit else "")
        parts.append(
            f"{op} (opset {_opset(model)}) at node{'s' if len(names) > 1 else ''} {shown} "
            f"({len(names)} node{'s' if len(names) != 1 else ''})"
        )
    return "; ".join(parts)


def lacking_operators(model: onnx.ModelProto, has: Callable[[str, str, int], bool]) -> list[str]:
    """Operator types of the main graph (in order of appearance) for which
    ``has(domain, op_type, opset)`` is false."""
    seen: dict[str, None] = {}
    for node in model.graph.node:
        if node.op_type not in seen and not has(node.domain or "", node.op_type, _opset(model, node.domain or "")):
            seen[node.op_type] = None
    return list(seen)


def _rules(ops: set[str], opset: int) -> list[Any]:
    """onnxscript pattern rules rewriting ``ops`` (a subset of REWRITABLE) into
    exact equivalents; Clip takes its bounds as inputs, so opset 11 or later."""
    import onnx_ir as ir
    from onnxscript.rewriter import pattern

    def scalar(op: Any, x: Any, value: float) -> Any:
        # a constant of x's element type, so the Mul/Add/Clip stay in x's precision
        dtype = x.dtype.numpy() if x.dtype is not None else np.float32
        return op.Constant(value=ir.tensor(np.array(value, dtype=dtype)))

    def clip(op: Any, x: Any, alpha: float, beta: float) -> Any:
        # ONNX HardSigmoid: y = max(0, min(1, alpha * x + beta)), the same operations in the same order
        return op.Clip(
            op.Add(op.Mul(x, scalar(op, x, alpha)), scalar(op, x, beta)), scalar(op, x, 0.0), scalar(op, x, 1.0)
        )

    def hard_sigmoid(op: Any, x: Any, out: Any) -> Any:
        attributes = out.producer().attributes  # the matched node: its alpha and beta, else ONNX's defaults
        return clip(op, x, attributes.get_float("alpha", 0.2), attributes.get_float("beta", 0.5))

    rules = []
    if "HardSigmoid" in ops:
        rules.append(
            pattern.RewriteRule(
                lambda op, x: op.HardSigmoid(x, _allow_other_attributes=True, _outputs=["out"]),
                hard_sigmoid,
                name="HardSigmoid as Clip(x*alpha+beta, 0, 1)",
            )
        )
    if "HardSwish" in ops:
        # ONNX HardSwish: y = x * max(0, min(1, x / 6 + 0.5)), x times the HardSigmoid of alpha 1/6, beta 0.5
        rules.append(
            pattern.RewriteRule(
                lambda op, x: op.HardSwish(x),
                lambda op, x: op.Mul(x, clip(op, x, 1 / 6, 0.5)),
                name="HardSwish as x*Clip(x/6+0.5, 0, 1)",
            )
        )
    if "GlobalMaxPool" in ops:
        # ONNX GlobalMaxPool: the maximum over every spatial axis (2 …), kept as size-1 dimensions;
        # ReduceMax takes its axes as an attribute before opset 18 and as an input from 18 on
        def global_max(op: Any, x: Any) -> Any:
            axes = list(range(2, len(x.shape)))
            if opset >= 18:
                return op.ReduceMax(x, op.Constant(value=ir.tensor(np.array(axes, np.int64))), keepdims=1)
            return op.ReduceMax(x, axes=axes, keepdims=1)

        rules.append(
            pattern.RewriteRule(
                lambda op, x: op.GlobalMaxPool(x),
                global_max,
                lambda context, x: x.shape is not None and len(x.shape) >= 3,  # the rank must be known
                name="GlobalMaxPool as ReduceMax over the spatial axes",
            )
        )
    if "Neg" in ops:
        # -x and x * -1 are the same IEEE operation (a sign flip, exact, signed zeros and NaNs kept);
        # 0 - x is not (0 - 0 = +0, -0 = -0)
        rules.append(
            pattern.RewriteRule(
                lambda op, x: op.Neg(x),
                lambda op, x: op.Mul(x, scalar(op, x, -1.0)),
                lambda context, x: x.dtype is not None and x.dtype.is_floating_point(),
                name="Neg as x*-1",
            )
        )
    if "Reciprocal" in ops:
        # ONNX Reciprocal is 1/x, one correctly rounded IEEE division either way
        rules.append(
            pattern.RewriteRule(
                lambda op, x: op.Reciprocal(x),
                lambda op, x: op.Div(scalar(op, x, 1.0), x),
                lambda context, x: x.dtype is not None and x.dtype.is_floating_point(),
                name="Reciprocal as 1/x",
            )
        )
    if "Unsqueeze" in ops and opset >= 13:
        # Unsqueeze with several axes (an input from opset 13 on; axes index the output): inserting the
        # axes one by one in ascending order of their non-negative value gives the same shape and data
        def several_axes(context: Any, x: Any, axes: Any) -> bool:
            value = axes.const_value
            if value is None or value.numpy().size < 2:
                return False
            return bool((value.numpy() >= 0).all()) or (x.shape is not None)

        def chain(op: Any, x: Any, axes: Any) -> Any:
            given = [int(a) for a in axes.const_value.numpy().reshape(-1)]
            rank = (len(x.shape) if x.shape is not None else 0) + len(given)
            out = x
            for a in sorted(a % rank if a < 0 else a for a in given):
                out = op.Unsqueeze(out, op.Constant(value=ir.tensor(np.array([a], np.int64))))
            return out

        rules.append(
            pattern.RewriteRule(
                lambda op, x, axes: op.Unsqueeze(x, axes),
                chain,
                several_axes,
                name="Unsqueeze of several axes as single-axis Unsqueezes",
            )
        )
    if "Slice" in ops and opset >= 10:
        # ONNX clamps a Slice's end to the dimension (for a positive step), and an entry taking a whole
        # axis (start 0, step 1, end at least the dimension) leaves it as it is: ends clamped and
        # whole-axis entries dropped is the same Slice (onnx2keras's multi-axis Slice casts an int64-maximum
        # end to int32, -1, and so cuts keras2onnx's croppings short or empties their batch axis)
        def entries(x: Any, starts: Any, ends: Any, axes: Any, steps: Any) -> list[tuple[int, int, int, int]] | None:
            values = [v.const_value for v in (starts, ends, axes, steps)]
            if any(v is None for v in values) or x.shape is None:
                return None
            s, e, a, t = (v.numpy().reshape(-1).astype(np.int64) for v in values)
            if any(int(i) < 0 or not isinstance(x.shape[int(i)], int) for i in a):
                return None  # the dimensions must be known
            return [(int(a_), int(s_), int(e_), int(t_)) for s_, e_, a_, t_ in zip(s, e, a, t)]

        def normalized(x: Any, given: list[tuple[int, int, int, int]]) -> list[tuple[int, int, int, int]]:
            out = []
            for axis, start, end, step in given:
                dim = x.shape[axis]
                if step > 0 and end > dim:
                    end = dim
                if not (start == 0 and step == 1 and end == dim):
                    out.append((axis, start, end, step))
            return out

        def changes(context: Any, x: Any, starts: Any, ends: Any, axes: Any, steps: Any) -> bool:
            given = entries(x, starts, ends, axes, steps)
            return bool(given) and 0 < len(normalized(x, given or [])) and normalized(x, given or []) != given

        def normal_slice(op: Any, x: Any, starts: Any, ends: Any, axes: Any, steps: Any) -> Any:
            kept = normalized(x, entries(x, starts, ends, axes, steps) or [])

            def const(i: int) -> Any:
                return op.Constant(value=ir.tensor(np.array([g[i] for g in kept], np.int64)))

            return op.Slice(x, const(1), const(2), const(0), const(3))

        rules.append(
            pattern.RewriteRule(
                lambda op, x, starts, ends, axes, steps: op.Slice(x, starts, ends, axes, steps),
                normal_slice,
                changes,
                name="Slice with its ends clamped and whole-axis entries dropped",
            )
        )
    for reduce in ("ReduceMean", "ReduceMax"):
        if reduce in ops:
            rules.extend(_keepdims_rules(reduce))
    return rules


def _keepdims_rules(name: str) -> list[Any]:
    """Rules writing out a reduction's default keepdims (1, in every opset): the
    same node with the attribute given (onnx2keras reads it and fails where it
    is absent).  Axes stay as they are: an attribute before opset 18, an input
    from 18 on.  (A rule's pattern takes every parameter after ``op`` as a
    value of the graph, hence one function per operator.)"""
    from onnxscript.rewriter import pattern

    def unset(out: Any) -> bool:
        return out.producer().attributes.get("keepdims") is None

    def explicit(op: Any, *inputs: Any, out: Any) -> Any:
        given = {key: attr.value for key, attr in out.producer().attributes.items()}
        return getattr(op, name)(*inputs, keepdims=1, **given)

    return [
        pattern.RewriteRule(
            lambda op, x: getattr(op, name)(x, _allow_other_attributes=True, _outputs=["out"]),
            lambda op, x, out: explicit(op, x, out=out),
            lambda context, x, out: unset(out),
            name=f"{name} with keepdims=1 written out",
        ),
        pattern.RewriteRule(
            lambda op, x, axes: getattr(op, name)(x, axes, _allow_other_attributes=True, _outputs=["out"]),
            lambda op, x, axes, out: explicit(op, x, axes, out=out),
            lambda context, x, axes, out: unset(out),
            name=f"{name} with keepdims=1 written out (axes an input)",
        ),
    ]


def _counts(graph: Any) -> Counter[str]:
    import onnx_ir as ir

    return Counter(node.op_type for node in ir.traversal.RecursiveGraphIterator(graph))


def _changes(before: Counter[str], after: Counter[str]) -> str:
    diff = []
    for op in sorted(set(before) | set(after)):
        d = after[op] - before[op]
        if d:
            diff.append(f"{op} {d:+d}")
    return ", ".join(diff) if diff else "no change"


def planned_steps(input_shapes: dict[str, list[int]] | None, rewrite: Iterable[str]) -> list[ConversionStep]:
    """The steps :func:`prepare` would run, with their availability (for ``--explain``)."""
    missing = importlib.util.find_spec("onnxscript") is None
    rewrite = [op for op in rewrite if op in REWRITABLE]
    steps = []
    for name, tool in STEPS:
        if missing:
            status = "missing package onnxscript (pip install 'onnxscript>=0.7,<0.8')"
        elif name == "static input shapes" and not input_shapes:
            status = "skipped: no input shape given"
        elif name.startswith("operators") and not rewrite:
            status = "skipped: the converter has every operator of the graph, or none has a rewrite"
        else:
            status = "available"
        steps.append(ConversionStep(name, tool, status))
    return steps


def prepare(
    model: onnx.ModelProto,
    *,
    input_shapes: dict[str, list[int]] | None = None,
    rewrite: Iterable[str] = (),
    origin: str = "ONNX model",
) -> tuple[onnx.ModelProto, list[ConversionStep]]:
    """``model`` prepared for a converter (a new ModelProto; ``model`` is left
    as it is), and what each step did.

    ``input_shapes``: static shapes of graph inputs by name (dimensions the
    graph leaves dynamic get fixed, so shape computations fold).
    ``rewrite``: operator types the converter lacks; those in
    :data:`REWRITABLE` are rewritten into exact equivalents.
    """
    _onnxscript()
    import onnx_ir as ir
    import onnx_ir.passes.common as passes
    from onnxscript import optimizer
    from onnxscript.rewriter import RewritePass

    graph_ir = ir.serde.deserialize_model(model)
    done: list[ConversionStep] = []

    def step(name: str, run: Callable[[], str]) -> None:
        tool = dict(STEPS)[name]
        before = _counts(graph_ir.graph)
        try:
            note = run()
        except (ModelError, PluginError):
            raise
        except Exception as e:
            raise ModelError(
                f"{origin}: preparing the graph for the converter failed at step {name!r} ({tool}): "
                f"{type(e).__name__}: {str(e)[:300]}"
            ) from e
        after = _counts(graph_ir.graph)
        done.append(ConversionStep(name, tool, "done", note or _changes(before, after)))

    def shapes() -> str:
        if not input_shapes:
            return "none given: dynamic dimensions stay"
        inputs = {value.name: value for value in graph_ir.graph.inputs}
        for name, shape in input_shapes.items():
            if name not in inputs:
                raise ModelError(
                    f"{origin}: input shape given for {name!r}, which is no input of the graph ({', '.join(inputs)})"
                )
            value = inputs[name]
            if value.shape is not None and len(value.shape) != len(shape):
                raise ModelError(
                    f"{origin}: input {name!r} has {len(value.shape)} dimensions, "
                    f"the shape given {list(shape)} has {len(shape)}"
                )
            value.shape = ir.Shape([int(d) for d in shape])
        return ", ".join(f"{n} {list(s)}" for n, s in input_shapes.items())

    def fold() -> str:
        optimizer.fold_constants_ir(graph_ir, onnx_shape_inference=True)
        return ""

    wanted = {op for op in rewrite if op in REWRITABLE}

    def rewrite_ops() -> str:
        present = _counts(graph_ir.graph)
        ops = sorted(op for op in wanted if present[op])
        if not ops:
            return "none needed"
        if graph_ir.opset_imports.get("", 1) < 11:
            return f"kept {', '.join(ops)}: the graph's opset is below 11, where Clip takes no bound inputs"
        RewritePass(_rules(set(ops), graph_ir.opset_imports.get("", 1)))(graph_ir)
        left = _counts(graph_ir.graph)
        kept = [op for op in ops if left[op] and op != "Unsqueeze"]  # single-axis Unsqueezes stay
        if kept:  # not matched: the converter's error will name them
            return f"rewrote {', '.join(f'{op} x{present[op] - left[op]}' for op in ops)}; kept {', '.join(kept)}"
        return f"rewrote {', '.join(f'{op} x{present[op]} into {REWRITABLE[op]}' for op in ops)}"

    def unused() -> str:
        passes.RemoveUnusedNodesPass()(graph_ir)
        return ""

    def lift() -> str:
        constants = _counts(graph_ir.graph)["Constant"]
        passes.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0)(graph_ir)
        passes.LiftSubgraphInitializersToMainGraphPass()(graph_ir)
        left = _counts(graph_ir.graph)["Constant"]
        return f"{constants - left} Constant nodes lifted" + (f", {left} kept (graph outputs)" if left else "")

    def inputs() -> str:
        listed = sum(1 for v in graph_ir.graph.inputs if v.is_initializer())
        passes.RemoveInitializersFromInputsPass()(graph_ir)
        return f"{listed} removed"

    for name, run in zip((n for n, _ in STEPS), (shapes, fold, rewrite_ops, unused, lift, inputs)):
        step(name, run)
    prepared = ir.serde.serialize_model(graph_ir)
    typed = raw_initializers(prepared)
    done.append(ConversionStep(STEPS[-1][0], STEPS[-1][1], "done", f"{typed} initializers rewritten"))
    try:
        onnx.checker.check_model(prepared)
    except Exception as e:
        raise ModelError(
            f"{origin}: the prepared graph does not pass onnx.checker ({type(e).__name__}: {str(e)[:300]})"
        ) from e
    return prepared, done


def rewrite_operators(model: onnx.ModelProto, ops: Iterable[str], *, origin: str = "ONNX model") -> onnx.ModelProto:
    """``model`` with only the rewrite rules for ``ops`` (of :data:`REWRITABLE`)
    applied, nothing folded or moved: for a graph a simplifier has changed after
    :func:`prepare` (onnxsim fuses consecutive single-axis Unsqueezes back into one)."""
    _onnxscript()
    import onnx_ir as ir
    from onnxscript.rewriter import RewritePass

    graph_ir = ir.serde.deserialize_model(model)
    wanted = {op for op in ops if op in REWRITABLE}
    rules = _rules(wanted, graph_ir.opset_imports.get("", 1)) if graph_ir.opset_imports.get("", 1) >= 11 else []
    if not rules:  # none for these operators at this opset (Unsqueeze has its axes as an attribute before 13)
        return model
    try:
        RewritePass(rules)(graph_ir)
    except Exception as e:
        raise ModelError(
            f"{origin}: rewriting {', '.join(sorted(wanted))} failed (onnxscript.rewriter): "
            f"{type(e).__name__}: {str(e)[:300]}"
        ) from e
    rewritten = ir.serde.serialize_model(graph_ir)
    raw_initializers(rewritten)
    return rewritten


def raw_initializers(model: onnx.ModelProto) -> int:
    """Store every initializer of the main graph as ``raw_data`` (in place);
    returns how many were stored otherwise.  Paddle's exports and onnxsim keep
    values in ``float_data``; onnx2keras finds an initializer's name by the
    position of the proto's fields, which a ``float_data`` field shifts."""
    typed = [i for i, t in enumerate(model.graph.initializer) if not t.HasField("raw_data") and not t.external_data]
    for i in typed:
        tensor = model.graph.initializer[i]
        tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor), tensor.name))
    return len(typed)


def given_shapes(model: onnx.ModelProto, example_inputs: Any) -> dict[str, list[int]] | None:
    """Static input shapes from ``example_inputs``: an array or tensor, a shape
    (tuple of ints, ``--input-shape``), a sequence of either (one per graph
    input, in order) or a dict of either by input name; None when not given."""
    if example_inputs is None:
        return None
    initializers = {i.name for i in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in initializers]
    if isinstance(example_inputs, dict):
        given = dict(example_inputs)
    elif isinstance(example_inputs, (tuple, list)) and example_inputs and not isinstance(example_inputs[0], int):
        given = dict(zip(names, example_inputs))
    else:
        given = {names[0]: example_inputs}
    shapes = {}
    for name, value in given.items():
        if name not in names:
            raise ModelError(f"example input {name!r} is no input of the ONNX model ({', '.join(names)})")
        shapes[name] = [int(d) for d in (value if isinstance(value, (tuple, list)) else tuple(value.shape))]
    return shapes


def failing_node(error: BaseException, package: str) -> onnx.NodeProto | None:
    """The ONNX node a converter (``package``: onnx2torch, onnx2keras) was
    converting when it raised ``error``: the innermost of its frames holding
    a node (onnx2torch's ``OnnxNode`` wraps the proto) in a local variable.
    Converters raise bare KeyErrors and IndexErrors; the node is what a user
    can act on."""
    found = None
    tb = error.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_globals.get("__name__", "").split(".")[0] == package:
            for value in frame.f_locals.values():
                proto = getattr(value, "proto", value)
                if isinstance(proto, onnx.NodeProto):
                    found = proto
                    break
        tb = tb.tb_next
    return found


def converter_error(origin: str, converter: str, error: BaseException, unblock: str) -> ModelError:
    """A :class:`ModelError` naming the converter, the node and operator it
    failed on (when it can be told) and what would unblock the conversion."""
    node = failing_node(error, converter)
    where = f" on node {node.name or node.output[0]!r} (operator {node.op_type})" if node is not None else ""
    return ModelError(f"{origin}: {converter} fails{where}: {type(error).__name__}: {str(error)[:300]}; {unblock}")
