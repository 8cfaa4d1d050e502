"""Topology converters between NNEF and ONNX with nnef-tools.

Called as ``function(source, destination, *, example_inputs=None)`` by
:func:`nnc_core.convert.convert`.  nnef-tools runs in a subprocess; dynamic
ONNX input dimensions are fixed to 1 (nnef-tools needs static shapes).

ONNX -> NNEF: nnef-tools has no converter for ``HardSigmoid`` or ``HardSwish``
(MobileNetV3-style blocks); a graph holding them is first prepared by the ONNX
plugin (:mod:`nnc_onnx.prepare`: the same onnxscript rewrite rules as before
onnx2keras, exact equivalents in ``Mul``, ``Add``, ``Clip``), which the
``convert`` extra declares.

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


def _input_shapes(onnx_file: Path, example_inputs: Any = None) -> dict[str, tuple[int, ...]]:
    """Static input shapes: from ``example_inputs`` (an array, a shape tuple, or
    a dict of either by input name), else the model's with dynamic dimensions 1."""
    import onnx

    model = onnx.load(str(onnx_file), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in initializers]
    shapes = {
        i.name: tuple(
            d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1 for d in i.type.tensor_type.shape.dim
        )
        for i in model.graph.input
        if i.name not in initializers
    }
    if example_inputs is None:
        return shapes
    given = example_inputs if isinstance(example_inputs, dict) else {names[0]: example_inputs}
    for name, value in given.items():
        if name not in shapes:
            raise ModelError(f"{onnx_file}: example input {name!r} is no input of the model ({', '.join(names)})")
        shapes[name] = tuple(int(d) for d in (value if isinstance(value, (tuple, list)) else value.shape))
    return shapes


def _folder_target(destination: Path) -> None:
    """``nnc convert`` stages a suffixed destination (``model.nnef``) as an empty
    placeholder file; an NNEF model is a folder, so the placeholder goes."""
    destination = Path(destination)
    if destination.is_file() and destination.stat().st_size == 0:
        destination.unlink()


# operators nnef-tools has no converter for, which nnc_onnx.prepare rewrites exactly
NNEF_TOOLS_LACKS = ("HardSigmoid", "HardSwish")


def _prepared(source: Path, folder: Path, shapes: dict[str, tuple[int, ...]]) -> Path:
    """``source`` itself, or, when it holds operators nnef-tools lacks, the graph
    prepared by :func:`nnc_onnx.prepare.prepare` with them rewritten (in ``folder``)."""
    import onnx

    model = onnx.load(str(source))
    if not any(node.op_type in NNEF_TOOLS_LACKS for node in model.graph.node):
        return source
    try:
        from nnc_onnx.prepare import prepare
    except ImportError as e:
        raise PluginError(
            f"{source}: nnef-tools has no converter for {', '.join(NNEF_TOOLS_LACKS)}; rewriting them needs "
            "the ONNX plugin's graph preparation: pip install 'nnc-nnef[convert]' (nnc-onnx, onnxscript)"
        ) from e
    prepared, _ = prepare(
        model, input_shapes={k: list(v) for k, v in shapes.items()}, rewrite=NNEF_TOOLS_LACKS, origin=str(source)
    )
    path = folder / "prepared.onnx"
    onnx.save(prepared, str(path))
    return path


def from_onnx(source: Any, destination: Path, *, example_inputs: Any = None) -> None:
    """ONNX file -> NNEF folder."""
    source = Path(str(source))
    _folder_target(destination)
    shapes = _input_shapes(source, example_inputs)
    with tempfile.TemporaryDirectory(prefix="nnc-nnef-") as folder:
        nnef_tools(
            "--input-format",
            "onnx",
            "--output-format",
            "nnef",
            "--input-model",
            str(_prepared(source, Path(folder), shapes)),
            "--output-model",
            str(destination),
            "--fold-constants",
            "--input-shapes",
            repr(shapes),
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
