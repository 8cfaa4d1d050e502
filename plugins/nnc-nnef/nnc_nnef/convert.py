"""Topology converters between NNEF and ONNX with nnef-tools.

Called as ``function(source, destination, *, example_inputs=None)`` by
:func:`nnc_core.convert.convert`.  nnef-tools runs in a subprocess; dynamic
ONNX input dimensions are fixed to 1 (nnef-tools needs static shapes).

ONNX -> NNEF: nnef-tools has no converter for ``HardSigmoid``, ``HardSwish``
(MobileNetV3-style blocks), ``GRU`` or ``Einsum``, and its ``LSTM`` computes the wrong function: its
``lstm_step`` fragment splits the gates in PyTorch's order (i, f, g, o) while
the weights it is given are in ONNX's (i, o, f, c), so the forget and output
gates are swapped (Silero VAD's state came out wrong by 3.0).  A graph
holding any of them, holding ``If`` nodes, or with an input value fixed, is
first prepared by the ONNX plugin (:mod:`nnc_onnx.prepare`: the same
onnxscript rewrite rules as before onnx2keras, exact equivalents in ``Mul``,
``Add``, ``Clip``, the LSTM and GRU unrolled into ``MatMul``, ``Sigmoid``, ``Tanh``,
a grouped linear ``Einsum`` as one ``MatMul`` per group;
the ``If`` on constants and on shapes folded), which the ``convert`` extra
declares.

NNEF -> ONNX: nnef-tools writes opset 11 and carries NNEF's ``softmax(x, axes
= [a])`` over as ``Softmax(axis=a)``, which before opset 13 means a softmax
over all the axes from ``a`` on (the input flattened to two dimensions), not
over ``a`` alone (YOLOv8's distribution focal loss takes it over axis 1 of a
4-D tensor: the boxes came out wrong, by their whole range).  Each such
``Softmax`` whose axis is not the last is rewritten (onnxscript's pattern
rewriter) into what the NNEF graph computes: the axis transposed to the last
place, ``Softmax`` over it, transposed back.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from nnc_core.plugins import ModelError, PluginError

__all__ = ["from_onnx", "to_onnx", "nnef_tools"]


def nnef_tools(*args: str) -> None:
    """Run ``python -m nnef_tools.convert ARGS``; :class:`ModelError` with its last lines on failure."""
    r = subprocess.run([sys.executable, "-m", "nnef_tools.convert", *args], capture_output=True, text=True)
    if r.returncode != 0:
        tail = "\n".join((r.stderr or r.stdout).strip().splitlines()[-5:])
        raise ModelError(f"nnef-tools failed (exit {r.returncode}):\n{tail}")


def _folder_target(destination: Path) -> None:
    """``nnc convert`` stages a suffixed destination (``model.nnef``) as an empty
    placeholder file; an NNEF model is a folder, so the placeholder goes."""
    destination = Path(destination)
    if destination.is_file() and destination.stat().st_size == 0:
        destination.unlink()


# operators nnef-tools has no converter for, or converts wrongly (LSTM: see above),
# which nnc_onnx.prepare rewrites exactly
NNEF_TOOLS_LACKS = ("HardSigmoid", "HardSwish", "LSTM", "GRU", "Einsum")


def _prepared(source: Path, folder: Path, example_inputs: Any) -> tuple[Path, dict[str, list[int]]]:
    """The ONNX file nnef-tools converts and its static input shapes: ``source``
    itself, or, when it holds operators nnef-tools lacks or ``If`` nodes, or
    an input value is fixed, the graph prepared by :func:`nnc_onnx.prepare.prepare`
    (operators rewritten, constant ``If`` conditions folded; in ``folder``)."""
    import onnx

    try:
        from nnc_onnx.prepare import all_nodes, given_inputs, prepare
    except ImportError as e:
        raise PluginError(
            f"{source}: converting an ONNX model to NNEF needs the ONNX plugin's graph preparation: "
            "pip install 'nnc-nnef[convert]' (nnc-onnx, onnxscript, onnxsim)"
        ) from e
    # the graph alone decides whether to prepare; the weights (external data too) load only then
    model = onnx.load(str(source), load_external_data=False)
    shapes, values = given_inputs(model, example_inputs, every_input=True)
    if not values and not any(node.op_type in (*NNEF_TOOLS_LACKS, "If") for node in all_nodes(model.graph)):
        return source, shapes
    model = onnx.load(str(source))
    prepared, _ = prepare(model, input_shapes=shapes, input_values=values, rewrite=NNEF_TOOLS_LACKS, origin=str(source))
    path = folder / "prepared.onnx"
    onnx.save(prepared, str(path))
    return path, shapes


def from_onnx(source: Any, destination: Path, *, example_inputs: Any = None) -> None:
    """ONNX file -> NNEF folder."""
    source = Path(str(source))
    _folder_target(destination)
    with tempfile.TemporaryDirectory(prefix="nnc-nnef-") as folder:
        prepared, shapes = _prepared(source, Path(folder), example_inputs)
        nnef_tools(
            "--input-format",
            "onnx",
            "--output-format",
            "nnef",
            "--input-model",
            str(prepared),
            "--output-model",
            str(destination),
            "--fold-constants",
            "--input-shapes",
            repr({name: tuple(shape) for name, shape in shapes.items()}),
        )


def to_onnx(source: Any, destination: Path, *, example_inputs: Any = None) -> None:
    """NNEF folder -> ONNX file."""
    nnef_tools(
        "--input-format",
        "nnef",
        "--output-format",
        "onnx",
        "--input-model",
        str(source),
        "--output-model",
        str(destination),
    )
    _softmax_over_one_axis(Path(destination))


def _softmax_over_one_axis(onnx_file: Path) -> None:
    """Rewrite (in place) each opset-11 ``Softmax`` nnef-tools wrote for an NNEF
    softmax over one axis that is not the last into Transpose, Softmax over the
    last axis, Transpose back: the NNEF graph's softmax (see the module's doc)."""
    import onnx

    model = onnx.load(str(onnx_file))
    opset = next((e.version for e in model.opset_import if e.domain in ("", "ai.onnx")), 1)
    if opset >= 13 or not any(n.op_type == "Softmax" for n in model.graph.node):
        return  # from opset 13 on, Softmax(axis=a) is over a alone
    try:
        import onnx_ir as ir
        from onnxscript.rewriter import RewritePass, pattern
    except ImportError as e:
        raise PluginError(
            f"{onnx_file}: nnef-tools' ONNX Softmax needs rewriting, which needs onnxscript: "
            "pip install 'nnc-nnef[convert]'"
        ) from e

    def axis_of(out: Any) -> int:
        return out.producer().attributes.get_int("axis", 1)

    def not_last(context: Any, x: Any, out: Any) -> bool:
        return x.shape is not None and axis_of(out) % len(x.shape) != len(x.shape) - 1

    def over_one_axis(op: Any, x: Any, out: Any) -> Any:
        rank = len(x.shape)
        axis = axis_of(out) % rank
        perm = [i for i in range(rank) if i != axis] + [axis]
        back = [perm.index(i) for i in range(rank)]
        return op.Transpose(op.Softmax(op.Transpose(x, perm=perm), axis=rank - 1), perm=back)

    rule = pattern.RewriteRule(
        lambda op, x: op.Softmax(x, _allow_other_attributes=True, _outputs=["out"]),
        over_one_axis,
        not_last,
        name="NNEF softmax over one axis: Transpose, Softmax over the last axis, Transpose",
    )
    graph = ir.serde.deserialize_model(onnx.shape_inference.infer_shapes(model))
    RewritePass([rule])(graph)
    onnx.save(ir.serde.serialize_model(graph), str(onnx_file))
