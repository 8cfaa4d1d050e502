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
input values fixed                   onnx-ir: a scalar input the user fixes
                                     (``--input-value sr=16000``) becomes a constant
constant folding                     onnxscript.optimizer.fold_constants (``If`` with a
                                     constant condition inlined, shape chains folded)
If and shapes folded                 onnxsim, only when an ``If`` is left, or an operator
                                     to rewrite lacks its input's shape or (an RNN)
                                     constant weights, and every input shape is static:
                                     its shape inference and folding finish what
                                     onnxscript's folder leaves (a dimension read through
                                     ``Shape`` of a convolution's output, opset-12 shape
                                     chains, a ``Concat`` of weights over the folder's
                                     input-size limit)
operators rewritten                  onnxscript.rewriter pattern rules, only for the
                                     operators the converter lacks (``rewrite``) or gets
                                     wrong in some forms (``rewrite_forms``): ``HardSigmoid``
                                     as ``Clip(Add(Mul(x, alpha), beta), 0, 1)``,
                                     ``HardSwish`` as ``Mul(x, HardSigmoid(x))`` decomposed
                                     alike, ``Neg`` as ``Mul(x, -1)``, ``Reciprocal`` as
                                     ``Div(1, x)``, ``GlobalMaxPool`` as ``ReduceMax``,
                                     ``LSTM`` and ``GRU`` unrolled
                                     (:mod:`nnc_onnx.recurrent`), a grouped linear
                                     ``Einsum`` as one ``MatMul`` per group, a reflect
                                     ``Pad`` of 1 to 3 axes as a 4-D one, a 1-D ``Conv`` as
                                     a 2-D one, a one-index ``Gather`` as ``Slice``
                                     (the full list: :data:`REWRITABLE`)
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
    "all_nodes",
    "given_inputs",
    "is_input_value",
    "raw_initializers",
    "failing_node",
    "converter_error",
]

# (name, tool) of each step, in the order they run; --explain prints them
STEPS: tuple[tuple[str, str], ...] = (
    ("static input shapes", "onnx-ir"),
    ("input values fixed", "onnx-ir"),
    ("constant folding (If with a constant condition, shape chains)", "onnxscript.optimizer"),
    ("If and shapes folded on static input shapes", "onnxsim"),
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
    "LSTM": "MatMul, Add, Mul, Sigmoid, Tanh unrolled over its static sequence length",
    "GRU": "MatMul, Add, Mul, Sub, Sigmoid, Tanh unrolled over its static sequence length",
    "Pad": "a 4-D reflect Pad between Reshapes (reflect mode, 1- to 3-D tensors)",
    "Conv": "a 2-D Conv over a height-1 view (1-D convolutions)",
    "Gather": "Slice and Squeeze (one constant index)",
    "Einsum": "one MatMul per group (a grouped linear layer, ...gi,gih->...gh)",
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


def all_nodes(graph: onnx.GraphProto) -> Iterable[onnx.NodeProto]:
    """The nodes of ``graph`` and of its subgraphs (``If`` branches, ``Loop`` bodies), depth first."""
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            for sub in [attribute.g] if attribute.HasField("g") else list(attribute.graphs):
                yield from all_nodes(sub)


def lacking_operators(model: onnx.ModelProto, has: Callable[[str, str, int], bool]) -> list[str]:
    """Operator types of the graph and its subgraphs (in order of appearance)
    for which ``has(domain, op_type, opset)`` is false: an operator inside an
    ``If`` branch is met once the branch is inlined."""
    seen: dict[str, None] = {}
    for node in all_nodes(model.graph):
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
    if ops & {"LSTM", "GRU"}:
        from nnc_onnx.recurrent import recurrent_rules

        rules.extend(recurrent_rules(ops, opset))
    if "Pad" in ops and opset >= 11:
        rules.extend(_reflect_pad_rules())
    if "Conv" in ops and opset >= 13:
        rules.append(_conv1d_rule())
    if "Gather" in ops and opset >= 13:
        rules.append(_gather_rule())
    if "Einsum" in ops and opset >= 12:
        rules.append(_grouped_linear_rule(opset))
    return rules


def _grouped_linear_rule(opset: int) -> Any:
    """A rule taking the ``Einsum`` of a grouped linear layer, ``…gi,gih->…gh``
    with a constant weight (DeepFilterNet's), as one ``MatMul`` per group: the
    input split along its group axis, each part multiplied by its group's
    weight, the products concatenated (the same sums)."""
    import onnx_ir as ir
    from onnxscript.rewriter import pattern

    def groups(x: Any, w: Any, out: Any) -> int | None:
        # the number of groups, or None when the rule does not apply
        equation = out.producer().attributes.get_string("equation", "").replace(" ", "")
        operands, _, result = equation.partition("->")
        left, _, right = operands.partition(",")
        if w.const_value is None or len(w.const_value.shape) != 3 or not left or len(left) < 2:
            return None
        lead, g, i = left[:-2], left[-2], left[-1]
        h = right[-1:] if len(right) == 3 else ""
        if right != g + i + h or result != lead + g + h or len(set(left + h)) != len(left) + 1:
            return None
        if x.shape is None or len(x.shape) != len(left) or x.shape[-2] != w.const_value.shape[0]:
            return None
        return int(w.const_value.shape[0])

    def per_group(op: Any, x: Any, w: Any, out: Any) -> Any:
        count, rank = groups(x, w, out) or 1, len(x.shape)
        weight = w.const_value.numpy()
        group_axis = op.Constant(value=ir.tensor(np.array([rank - 2], np.int64))) if opset >= 13 else None
        # the parts' sizes given (nnef-tools cannot work out Split's default)
        if count == 1:
            split = [x]
        elif opset >= 13:
            sizes = op.Constant(value=ir.tensor(np.ones(count, np.int64)))
            split = op.Split(x, sizes, axis=rank - 2, _outputs=count)
        else:
            split = op.Split(x, axis=rank - 2, split=[1] * count, _outputs=count)
        parts = []
        for k in range(count):
            # Squeeze/Unsqueeze take their axes as an input from opset 13 on (one constant, shared)
            if group_axis is not None:
                alone = op.Squeeze(split[k], group_axis)
            else:
                alone = op.Squeeze(split[k], axes=[rank - 2])
            product = op.MatMul(alone, op.Constant(value=ir.tensor(np.ascontiguousarray(weight[k]))))
            parts.append(
                op.Unsqueeze(product, group_axis) if group_axis is not None else op.Unsqueeze(product, axes=[rank - 2])
            )
        return parts[0] if count == 1 else op.Concat(*parts, axis=rank - 2)

    return pattern.RewriteRule(
        lambda op, x, w: op.Einsum(x, w, _allow_other_attributes=True, _outputs=["out"]),
        per_group,
        lambda context, x, w, out: groups(x, w, out) is not None,
        name="Einsum of a grouped linear layer as one MatMul per group",
    )


def _gather_rule() -> Any:
    """A rule taking a ``Gather`` of one constant index (a scalar: the axis
    goes) from a tensor that is not a constant as the ``Slice`` of that entry
    and the ``Squeeze`` of its axis (onnx2keras gathers from constants only; a
    constant is left to the constant folder)."""
    import onnx_ir as ir
    from onnxscript.rewriter import pattern

    def entry(x: Any, index: Any, out: Any) -> tuple[int, int] | None:
        # (axis, non-negative index), or None when the rule does not apply
        if x.const_value is not None or x.shape is None or index.const_value is None:
            return None
        value = index.const_value.numpy()
        if value.shape != ():
            return None
        axis = out.producer().attributes.get_int("axis", 0) % len(x.shape)
        i = int(value)
        if i < 0:
            if not isinstance(x.shape[axis], int):
                return None  # counted from an end that is not known
            i += x.shape[axis]
        return axis, i

    def sliced(op: Any, x: Any, index: Any, out: Any) -> Any:
        axis, i = entry(x, index, out) or (0, 0)

        def ints(value: int) -> Any:
            return op.Constant(value=ir.tensor(np.array([value], np.int64)))

        return op.Squeeze(op.Slice(x, ints(i), ints(i + 1), ints(axis)), ints(axis))

    return pattern.RewriteRule(
        lambda op, x, index: op.Gather(x, index, _allow_other_attributes=True, _outputs=["out"]),
        sliced,
        lambda context, x, index, out: entry(x, index, out) is not None,
        name="Gather of one constant index as Slice and Squeeze",
    )


def _conv1d_rule() -> Any:
    """A rule taking a ``Conv`` over one spatial axis (a 3-D input, a constant
    kernel) as the ``Conv`` over two of a height-1 view: ``Unsqueeze`` the
    input and the kernel at axis 2, the same pads, strides, dilations and
    groups with a height of 1, ``Squeeze`` the output: the same sums
    (onnx2keras 0.0.25 converts a 1-D ``Conv`` with ``SAME`` padding whatever
    its pads, and without its bias)."""
    import onnx_ir as ir
    from onnxscript.rewriter import pattern

    def one_d(x: Any, w: Any, out: Any) -> bool:
        a = out.producer().attributes
        return (
            w.const_value is not None
            and len(w.const_value.shape) == 3
            and a.get_string("auto_pad", "NOTSET") == "NOTSET"
            and (x.shape is None or len(x.shape) == 3)
        )

    def as_2d(op: Any, x: Any, w: Any, out: Any) -> Any:
        a = out.producer().attributes
        bias = out.producer().inputs[2] if len(out.producer().inputs) > 2 else None
        kernel = w.const_value.numpy()
        axis = op.Constant(value=ir.tensor(np.array([2], np.int64)))
        begin, end = a.get_ints("pads", [0, 0])
        inputs = [op.Unsqueeze(x, axis), op.Constant(value=ir.tensor(kernel[:, :, None, :].copy()))]
        if bias is not None:
            inputs.append(bias)
        conv = op.Conv(
            *inputs,
            kernel_shape=[1, int(kernel.shape[2])],
            pads=[0, int(begin), 0, int(end)],
            strides=[1, int(a.get_ints("strides", [1])[0])],
            dilations=[1, int(a.get_ints("dilations", [1])[0])],
            group=a.get_int("group", 1),
        )
        return op.Squeeze(conv, axis)

    return pattern.RewriteRule(
        lambda op, x, w: op.Conv(x, w, _allow_other_inputs=True, _allow_other_attributes=True, _outputs=["out"]),
        as_2d,
        lambda context, x, w, out: one_d(x, w, out),
        name="1-D Conv as a 2-D Conv over a height-1 view",
    )


def _reflect_pad_rules() -> list[Any]:
    """Rules taking a reflect-mode ``Pad`` of a tensor of 1 to 3 dimensions,
    padded along its last two axes at most (constant pads, known dimensions),
    as the same ``Pad`` of a 4-D view: ``Reshape`` to ``[1, …, h, w]``, the pads
    on the last two axes, ``Reshape`` back.  The same elements, moved (torch
    pads in reflect mode only the last axis of a 3-D tensor and the last two of
    a 4-D one; onnx2keras's reflect ``Pad`` takes 4-D tensors only)."""
    import onnx_ir as ir
    from onnxscript.rewriter import pattern

    def axes_of(out: Any) -> Any:
        # Pad's inputs: data, pads, constant_value (unused in reflect mode), axes (from opset 18)
        inputs = out.producer().inputs
        return inputs[3] if len(inputs) > 3 else None

    def view(x: Any, pads: Any, out: Any) -> tuple[list[int], list[int]] | None:
        # the 4-D view's shape and its 8 pads, or None when the rule does not apply
        if out.producer().attributes.get_string("mode", "constant") != "reflect":
            return None
        axes = axes_of(out)
        if x.shape is None or pads.const_value is None or (axes is not None and axes.const_value is None):
            return None
        rank = len(x.shape)
        if not 1 <= rank <= 3 or not all(isinstance(d, int) for d in x.shape):
            return None
        given = pads.const_value.numpy().reshape(-1).astype(np.int64)
        on = axes.const_value.numpy().reshape(-1).astype(np.int64) % rank if axes is not None else np.arange(rank)
        if len(given) != 2 * len(on) or (given < 0).any():
            return None
        shape = [1] * (4 - rank) + [int(d) for d in x.shape]
        before, after = [0] * 4, [0] * 4
        for k, axis in enumerate(on):
            if given[k] or given[k + len(on)]:
                if axis < rank - 2:
                    return None  # padded along an axis the view does not keep last
                before[int(axis) + 4 - rank], after[int(axis) + 4 - rank] = int(given[k]), int(given[k + len(on)])
        return shape, before + after

    def as_4d(op: Any, x: Any, pads: Any, out: Any) -> Any:
        shape, pads4 = view(x, pads, out) or ([], [])

        def ints(values: list[int]) -> Any:
            return op.Constant(value=ir.tensor(np.array(values, np.int64)))

        padded = op.Pad(op.Reshape(x, ints(shape)), ints(pads4), mode="reflect")
        rank = len(x.shape)
        back = [d + pads4[a + 4 - rank] + pads4[a + 8 - rank] for a, d in enumerate(x.shape)]
        return op.Reshape(padded, ints(back))

    return [
        pattern.RewriteRule(
            lambda op, x, pads: op.Pad(
                x, pads, _allow_other_inputs=True, _allow_other_attributes=True, _outputs=["out"]
            ),
            as_4d,
            lambda context, x, pads, out: view(x, pads, out) is not None,
            name="reflect Pad of a 1- to 3-D tensor as the Pad of a 4-D view",
        )
    ]


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


def _unresolved(node: Any) -> bool:
    """Whether a node to rewrite lacks what its rule reads: its first input's
    shape, or (LSTM, GRU) constant weights."""
    inputs = list(node.inputs)
    if inputs and inputs[0] is not None and inputs[0].shape is None:
        return True
    weights = inputs[1:4] if node.op_type in ("LSTM", "GRU") else []
    return any(v is not None and v.const_value is None for v in weights)


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


def planned_steps(
    input_shapes: dict[str, list[int]] | None, rewrite: Iterable[str], input_values: dict[str, Any] | None = None
) -> list[ConversionStep]:
    """The steps :func:`prepare` would run, with their availability (for ``--explain``)."""
    missing = importlib.util.find_spec("onnxscript") is None
    rewrite = [op for op in rewrite if op in REWRITABLE]
    steps = []
    for name, tool in STEPS:
        if missing:
            status = "missing package onnxscript (pip install 'onnxscript>=0.7,<0.8')"
        elif name == "static input shapes" and not input_shapes:
            status = "skipped: no input shape given"
        elif name == "input values fixed" and not input_values:
            status = "skipped: no input value given"
        elif name.startswith("If and shapes") and importlib.util.find_spec("onnxsim") is None:
            status = "skipped when needed: onnxsim is not installed (pip install onnxsim)"
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
    input_values: dict[str, Any] | None = None,
    rewrite: Iterable[str] = (),
    rewrite_forms: Iterable[str] = (),
    origin: str = "ONNX model",
) -> tuple[onnx.ModelProto, list[ConversionStep]]:
    """``model`` prepared for a converter (a new ModelProto; ``model`` is left
    as it is), and what each step did.

    ``input_shapes``: static shapes of graph inputs by name (dimensions the
    graph leaves dynamic get fixed, so shape computations fold).
    ``input_values``: scalar graph inputs fixed at a value, by name (a sample
    rate: the branches it selects fold, and the input leaves the graph).
    ``rewrite``: operator types the converter lacks; those in
    :data:`REWRITABLE` are rewritten into exact equivalents.
    ``rewrite_forms``: operator types the converter has but gets wrong in some
    forms (a reflect ``Pad`` of fewer than four axes, a 1-D ``Conv``, a
    ``Gather`` from a tensor): those forms are rewritten, the others stay
    without being reported as kept.
    """
    _onnxscript()
    import onnx_ir as ir
    import onnx_ir.passes.common as passes
    from onnxscript import optimizer
    from onnxscript.rewriter import RewritePass

    graph_ir = ir.serde.deserialize_model(model)
    done: list[ConversionStep] = []
    lacking = {op for op in rewrite if op in REWRITABLE}
    wanted = lacking | {op for op in rewrite_forms if op in REWRITABLE}

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

    def graph_input(name: str, given: str) -> Any:
        inputs = {value.name: value for value in graph_ir.graph.inputs}
        if name not in inputs:
            raise ModelError(
                f"{origin}: {given} given for {name!r}, which is no input of the graph ({', '.join(inputs)})"
            )
        return inputs[name]

    def shapes() -> str:
        if not input_shapes:
            return "none given: dynamic dimensions stay"
        for name, shape in input_shapes.items():
            value = graph_input(name, "input shape")
            if value.shape is not None and len(value.shape) != len(shape):
                raise ModelError(
                    f"{origin}: input {name!r} has {len(value.shape)} dimensions, "
                    f"the shape given {list(shape)} has {len(shape)}"
                )
            value.shape = ir.Shape([int(d) for d in shape])
        return ", ".join(f"{n} {list(s)}" for n, s in input_shapes.items())

    def values() -> str:
        if not input_values:
            return "none given"
        for name, given in input_values.items():
            value = graph_input(name, "input value")
            if value.shape is None or len(value.shape) != 0 or value.dtype is None:
                raise ModelError(
                    f"{origin}: input {name!r} is not a scalar of a known type; only scalar inputs can be fixed"
                )
            dtype = value.dtype.numpy()
            try:
                array = np.array(given).astype(dtype)
            except (TypeError, ValueError):
                raise ModelError(f"{origin}: input {name!r} takes one {dtype}, not {given!r}") from None
            if array.shape != () or array != np.array(given):
                raise ModelError(f"{origin}: input {name!r} takes one {dtype}, not {given!r}")
            graph_ir.graph.inputs.remove(value)
            value.const_value = ir.tensor(array, name=name)
            graph_ir.graph.register_initializer(value)
        return ", ".join(f"{n} = {v}" for n, v in input_values.items())

    def fold() -> str:
        optimizer.fold_constants_ir(graph_ir, onnx_shape_inference=True)
        return ""

    def fold_shapes() -> str:
        nonlocal graph_ir
        ifs = sum(1 for node in graph_ir.graph if node.op_type == "If")
        # an operator to rewrite whose first input's shape the folder did not find (opset-12 shape chains),
        # or an RNN whose weights it left computed (it folds no input over 8192 elements: Paddle's
        # bidirectional weights come as a Concat of the two directions')
        shapeless = sorted({node.op_type for node in graph_ir.graph if node.op_type in wanted and _unresolved(node)})
        if not ifs and not shapeless:
            return "none needed"
        needs = ", ".join(
            ([f"{ifs} If"] if ifs else []) + ([f"the input shapes of {', '.join(shapeless)}"] if shapeless else [])
        )
        static = all(
            value.shape is not None and all(isinstance(d, int) for d in value.shape) for value in graph_ir.graph.inputs
        )
        if not static:
            return f"kept {needs}: an input shape is dynamic (give it with --input-shape)"
        if importlib.util.find_spec("onnxsim") is None:
            return f"kept {needs}: onnxsim is not installed"
        import onnxsim

        # batch norms stay apart: fused into the convolutions they would be new tensors, not the decoded ones
        simplified, ok = onnxsim.simplify(ir.serde.serialize_model(graph_ir), skip_fuse_bn=True)
        if not ok:
            raise ModelError(f"{origin}: onnxsim's simplified graph does not check")
        graph_ir = ir.serde.deserialize_model(simplified)
        kept = sum(1 for node in graph_ir.graph if node.op_type == "If")
        done = ([f"{ifs - kept} If folded" + (f", {kept} kept" if kept else "")] if ifs else []) + (
            [f"shapes and constants inferred for {', '.join(shapeless)}"] if shapeless else []
        )
        return "; ".join(done)

    def rewrite_ops() -> str:
        present = _counts(graph_ir.graph)
        ops = sorted(op for op in wanted if present[op])
        if not ops:
            return "none needed"
        if graph_ir.opset_imports.get("", 1) < 11:
            return f"kept {', '.join(ops)}: the graph's opset is below 11, where Clip takes no bound inputs"
        # the nodes themselves, not their counts: a rule may write the operator it matched (Pad, Slice)
        opset = graph_ir.opset_imports.get("", 1)
        rules = _rules(set(ops), opset)
        if not rules:
            return f"kept {', '.join(ops)}: no rewrite for them at opset {opset}"
        originals = [n for n in ir.traversal.RecursiveGraphIterator(graph_ir.graph) if n.op_type in ops]
        RewritePass(rules)(graph_ir)
        still = {id(n) for n in ir.traversal.RecursiveGraphIterator(graph_ir.graph)}
        left = Counter(n.op_type for n in originals if id(n) in still)
        done = [op for op in ops if op in lacking or left[op] < present[op]]
        kept = [op for op in done if left[op] and op in lacking and op != "Unsqueeze"]  # single-axis ones stay
        if kept:  # not matched: the converter's error will name them
            return f"rewrote {', '.join(f'{op} x{present[op] - left[op]}' for op in done)}; kept {', '.join(kept)}"
        if not done:
            return "none needed"
        return f"rewrote {', '.join(f'{op} x{present[op] - left[op]} into {REWRITABLE[op]}' for op in done)}"

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

    runs = (shapes, values, fold, fold_shapes, rewrite_ops, unused, lift, inputs)
    for name, run in zip((n for n, _ in STEPS), runs):
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


def is_input_value(value: Any) -> bool:
    """Whether an ``example_inputs`` entry fixes its input's value (a Python
    number) rather than giving its shape (a shape, an array, a tensor)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def given_inputs(
    model: onnx.ModelProto, example_inputs: Any, *, every_input: bool = False
) -> tuple[dict[str, list[int]], dict[str, int | float]]:
    """The static input shapes and the fixed input values ``example_inputs`` gives.

    ``example_inputs``: an array or tensor, a shape (tuple of ints,
    ``--input-shape``), a sequence of either (one per graph input, in order),
    or a dict by input name of either or of a Python number, which fixes that
    scalar input at the number (``--input-value sr=16000``: the input leaves
    the graph, the branches it selects fold).  ``every_input``: the inputs not
    given get the graph's shape with dynamic dimensions 1 (converters that
    need every shape static); otherwise only the given ones are returned."""
    initializers = {i.name for i in model.graph.initializer}
    graph_inputs = [i for i in model.graph.input if i.name not in initializers]
    names = [i.name for i in graph_inputs]
    if example_inputs is None:
        given: dict[str, Any] = {}
    elif isinstance(example_inputs, dict):
        given = dict(example_inputs)
    elif isinstance(example_inputs, (tuple, list)) and example_inputs and not isinstance(example_inputs[0], int):
        given = dict(zip(names, example_inputs))
    else:
        given = {names[0]: example_inputs}
    shapes: dict[str, list[int]] = {}
    values: dict[str, int | float] = {}
    for name, value in given.items():
        if name not in names:
            raise ModelError(f"example input {name!r} is no input of the ONNX model ({', '.join(names)})")
        if is_input_value(value):
            values[name] = value
        else:
            shapes[name] = [int(d) for d in (value if isinstance(value, (tuple, list)) else tuple(value.shape))]
    if every_input:
        for value in graph_inputs:
            if value.name not in shapes and value.name not in values:
                shapes[value.name] = [
                    d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1
                    for d in value.type.tensor_type.shape.dim
                ]
        shapes = {n: shapes[n] for n in names if n in shapes}  # in the graph's order
    return shapes, values


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
