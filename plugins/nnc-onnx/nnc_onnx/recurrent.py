"""ONNX ``LSTM`` and ``GRU`` unrolled into their step equations, for converters
that have no recurrent operator (onnx2torch, onnx2keras) or convert it wrongly
(nnef-tools' LSTM swaps two gates).

An RNN node whose sequence length is static and whose weights are constants
becomes, per direction and step, the equations the ONNX operator defines, in
``MatMul``, ``Add``, ``Mul``, ``Sub``, ``Sigmoid`` and ``Tanh``: the same
function, its float sums grouped otherwise than in a fused kernel (as any
converter's).  With the weights split into gates, the biases summed
(``Wb + Rb``) where the operator adds both::

    LSTM (gates i, o, f, c)                 GRU (gates z, r, h)
    i = σ(x·Wiᵀ + bi + h·Riᵀ + Pi⊙c)        z = σ(x·Wzᵀ + bz + h·Rzᵀ)
    f = σ(x·Wfᵀ + bf + h·Rfᵀ + Pf⊙c)        r = σ(x·Wrᵀ + br + h·Rrᵀ)
    c' = f⊙c + i⊙tanh(x·Wcᵀ + bc + h·Rcᵀ)   n = tanh(x·Whᵀ + Wbh + r⊙(h·Rhᵀ + Rbh))
    o = σ(x·Woᵀ + bo + h·Roᵀ + Po⊙c')            (linear_before_reset = 1), or
    h' = o⊙tanh(c')                         n = tanh(x·Whᵀ + Wbh + (r⊙h)·Rhᵀ + Rbh)
                                            h' = n + z⊙(h − n)

The input's share ``x·Wᵀ`` of every gate is one ``MatMul`` for all steps; per
step, ``h·Rᵀ`` with the bias is one product with a constant bias (a
simplifier's ``Gemm``, a converter's dense layer; never a ``Gemm`` whose bias is
a tensor, which onnx2keras cannot take), and the gates are ``Split`` from the
sum: about fifteen nodes per step and direction.  Only the operators' defaults are taken: layout 0
([T, B, I]), the default activations, no ``clip``, LSTM's ``input_forget`` 0,
no ``sequence_lens`` (every sequence runs T steps); forward, reverse and
bidirectional.  The weights (``W`` and ``R`` of a direction, transposed; the
bias sums) are constants computed from the node's, as a constant folder
computes them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["recurrent_rules"]

# per kind: the gates in ONNX's order, the default activations (per direction), the input
# positions of sequence_lens, the initial states and the peepholes, and the output names
_KINDS: dict[str, dict[str, Any]] = {
    "LSTM": {
        "gates": "iofc",
        "activations": ("Sigmoid", "Tanh", "Tanh"),
        "sequence_lens": 4,
        "states": (5, 6),
        "peepholes": 7,
        "outputs": ("y", "y_h", "y_c"),
    },
    "GRU": {
        "gates": "zrh",
        "activations": ("Sigmoid", "Tanh"),
        "sequence_lens": 4,
        "states": (5,),
        "peepholes": None,
        "outputs": ("y", "y_h"),
    },
}


def _inputs(node: Any) -> list[Any]:
    return list(node.inputs) + [None] * (8 - len(node.inputs))


def _unrollable(kind: str, node: Any, x: Any) -> bool:
    spec, a, inputs = _KINDS[kind], node.attributes, _inputs(node)
    if a.get_int("layout", 0) != 0 or a.get("clip") is not None or a.get_int("input_forget", 0) != 0:
        return False
    directions = 2 if a.get_string("direction", "forward") == "bidirectional" else 1
    given = a.get_strings("activations", None)
    if given is not None and tuple(given) != spec["activations"] * directions:
        return False
    if x.shape is None or len(x.shape) != 3 or not all(isinstance(d, int) for d in x.shape):
        return False  # the sequence length (and the batch, for zero initial states) must be static
    if inputs[spec["sequence_lens"]] is not None:  # steps past a sequence's end would need masking
        return False
    constant = [1, 2, 3] + ([spec["peepholes"]] if spec["peepholes"] is not None else [])
    return all(inputs[i] is None or inputs[i].const_value is not None for i in constant)


class _Builder:
    """Nodes of one unrolled RNN, written with the rewriter's ``op`` at ``opset``
    (``Squeeze``, ``Unsqueeze`` and ``Split`` take their axes and sizes as
    inputs from opset 13 on); integer constants are made once and shared."""

    def __init__(self, op: Any, opset: int, dtype: np.dtype) -> None:
        import onnx_ir as ir

        self.op, self.opset, self.dtype, self.ir = op, opset, dtype, ir
        self._ints: dict[tuple[int, ...], Any] = {}

    def const(self, value: np.ndarray) -> Any:
        return self.op.Constant(value=self.ir.tensor(np.ascontiguousarray(value, dtype=self.dtype)))

    def ints(self, values: tuple[int, ...]) -> Any:
        if values not in self._ints:
            self._ints[values] = self.op.Constant(value=self.ir.tensor(np.array(values, np.int64)))
        return self._ints[values]

    def squeeze0(self, value: Any) -> Any:
        return self.op.Squeeze(value, self.ints((0,))) if self.opset >= 13 else self.op.Squeeze(value, axes=[0])

    def unsqueeze0(self, value: Any) -> Any:
        return self.op.Unsqueeze(value, self.ints((0,))) if self.opset >= 13 else self.op.Unsqueeze(value, axes=[0])

    def split(self, value: Any, sizes: tuple[int, ...], axis: int) -> list[Any]:
        if len(sizes) == 1:
            return [value]
        if self.opset >= 13:
            return list(self.op.Split(value, self.ints(sizes), axis=axis, _outputs=len(sizes)))
        return list(self.op.Split(value, axis=axis, split=list(sizes), _outputs=len(sizes)))

    def entries(self, value: Any, count: int) -> list[Any]:
        """The ``count`` entries of axis 0, that axis dropped."""
        return [self.squeeze0(part) for part in self.split(value, (1,) * count, 0)]

    def stacked(self, values: list[Any]) -> Any:
        """[B, H] each -> [len, B, H]."""
        parts = [self.unsqueeze0(v) for v in values]
        return parts[0] if len(parts) == 1 else self.op.Concat(*parts, axis=0)

    def linear(self, x: Any, weight: Any, bias: Any) -> Any:
        return self.op.Add(self.op.MatMul(x, weight), bias)


def _unroll(kind: str, op: Any, opset: int, x: Any, node: Any) -> list[Any]:
    """The outputs (Y, Y_h[, Y_c]) of ``node`` computed step by step."""
    spec, a, inputs = _KINDS[kind], node.attributes, _inputs(node)
    w, r = (inputs[i].const_value.numpy() for i in (1, 2))
    directions, rows, _ = w.shape
    hidden = rows // len(spec["gates"])
    nb = _Builder(op, opset, w.dtype)
    bias = inputs[3].const_value.numpy() if inputs[3] is not None else np.zeros((directions, 2 * rows), w.dtype)
    p = inputs[spec["peepholes"]] if spec["peepholes"] is not None else None
    peep = p.const_value.numpy() if p is not None else None
    steps, batch = int(x.shape[0]), int(x.shape[1])
    direction = a.get_string("direction", "forward")
    step = _lstm_step if kind == "LSTM" else _gru_step
    given = {i: nb.entries(inputs[i], directions) for i in spec["states"] if inputs[i] is not None}  # per direction

    per_step: list[list[Any]] = [[] for _ in range(steps)]
    finals: list[list[Any]] = [[] for _ in spec["states"]]
    for d in range(directions):
        reverse = direction == "reverse" or (direction == "bidirectional" and d == 1)
        weights = {
            "W": w[d].T,  # [I, gates × H]
            "R": r[d].T,  # [H, gates × H]
            "Wb": bias[d, :rows],
            "Rb": bias[d, rows:],
            "P": peep[d] if peep is not None else None,  # LSTM: [Pi, Po, Pf]
            "hidden": hidden,
            "linear_before_reset": a.get_int("linear_before_reset", 0),
        }
        # the input's share of every gate, for all steps in one product
        projected = nb.entries(op.MatMul(x, nb.const(weights["W"])), steps)
        states = [
            nb.const(np.zeros((batch, hidden), w.dtype)) if inputs[i] is None else given[i][d] for i in spec["states"]
        ]
        for t in range(steps - 1, -1, -1) if reverse else range(steps):
            states = step(nb, weights, projected[t], states)
            per_step[t].append(states[0])
        for final, state in zip(finals, states):
            final.append(state)

    y = [nb.unsqueeze0(nb.stacked(hs)) for hs in per_step]  # [1, D, B, H] per step
    return [y[0] if len(y) == 1 else op.Concat(*y, axis=0), *(nb.stacked(f) for f in finals)]


def _lstm_step(nb: _Builder, weights: dict[str, Any], xw: Any, states: list[Any]) -> list[Any]:
    """One LSTM step: ``xw`` is x·Wᵀ of all four gates; h·Rᵀ + Wb + Rb is one
    product with a constant bias (a simplifier's Gemm, a converter's dense layer)."""
    op, hidden = nb.op, weights["hidden"]
    h, c = states
    recurrent = nb.linear(h, nb.const(weights["R"]), nb.const(weights["Wb"] + weights["Rb"]))
    i, o, f, g = nb.split(op.Add(xw, recurrent), (hidden,) * 4, 1)
    peep = weights["P"]
    if peep is not None:
        i = op.Add(i, op.Mul(nb.const(peep[:hidden]), c))
        f = op.Add(f, op.Mul(nb.const(peep[2 * hidden :]), c))
    c = op.Add(op.Mul(op.Sigmoid(f), c), op.Mul(op.Sigmoid(i), op.Tanh(g)))
    if peep is not None:
        o = op.Add(o, op.Mul(nb.const(peep[hidden : 2 * hidden]), c))
    return [op.Mul(op.Sigmoid(o), op.Tanh(c)), c]


def _gru_step(nb: _Builder, weights: dict[str, Any], xw: Any, states: list[Any]) -> list[Any]:
    """One GRU step: ``xw`` is x·Wᵀ of the three gates, Wb added here."""
    op, hidden = nb.op, weights["hidden"]
    (h,) = states
    xz, xr, xh = nb.split(op.Add(xw, nb.const(weights["Wb"])), (hidden,) * 3, 1)
    if weights["linear_before_reset"]:
        hz, hr, hh = nb.split(nb.linear(h, nb.const(weights["R"]), nb.const(weights["Rb"])), (hidden,) * 3, 1)
        z, r = op.Sigmoid(op.Add(xz, hz)), op.Sigmoid(op.Add(xr, hr))
        n = op.Tanh(op.Add(xh, op.Mul(r, hh)))
    else:
        both = nb.linear(h, nb.const(weights["R"][:, : 2 * hidden]), nb.const(weights["Rb"][: 2 * hidden]))
        hz, hr = nb.split(both, (hidden,) * 2, 1)
        z, r = op.Sigmoid(op.Add(xz, hz)), op.Sigmoid(op.Add(xr, hr))
        recurrent = nb.linear(
            op.Mul(r, h), nb.const(weights["R"][:, 2 * hidden :]), nb.const(weights["Rb"][2 * hidden :])
        )
        n = op.Tanh(op.Add(xh, recurrent))
    return [op.Add(n, op.Mul(z, op.Sub(h, n)))]


def recurrent_rules(kinds: set[str], opset: int) -> list[Any]:
    """onnxscript pattern rules unrolling the RNN operators in ``kinds`` (LSTM,
    GRU) of a graph at ``opset``, one rule per count of outputs the node has."""
    from onnxscript.rewriter import pattern

    def rule(kind: str, count: int) -> Any:
        # a pattern's parameters after ``op`` are all values of the graph: kind and count come from the closure
        names = list(_KINDS[kind]["outputs"][:count])

        def target(op: Any, x: Any, w: Any, r: Any) -> Any:
            return getattr(op, kind)(x, w, r, _allow_other_inputs=True, _allow_other_attributes=True, _outputs=names)

        def check(context: Any, x: Any, w: Any, r: Any, y: Any, **_: Any) -> bool:
            return len(y.producer().outputs) == count and _unrollable(kind, y.producer(), x)

        def replace(op: Any, x: Any, w: Any, r: Any, y: Any, **_: Any) -> Any:
            outputs = _unroll(kind, op, opset, x, y.producer())[:count]
            return tuple(outputs) if count > 1 else outputs[0]

        return pattern.RewriteRule(target, replace, check, name=f"{kind} ({count} outputs) unrolled over its steps")

    return [
        rule(kind, count)
        for kind in sorted(kinds & set(_KINDS))
        for count in range(len(_KINDS[kind]["outputs"]), 0, -1)
    ]
