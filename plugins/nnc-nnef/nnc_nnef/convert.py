"""Topology converters between NNEF and ONNX with nnef-tools.

Called as ``function(source, destination, *, example_inputs=None)`` by
:func:`nnc_core.convert.convert`.  nnef-tools runs in a subprocess; dynamic
ONNX input dimensions are fixed to 1 (nnef-tools needs static shapes).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from nnc_core.plugins import ModelError

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


def from_onnx(source: Any, destination: Path, *, example_inputs: Any = None) -> None:
    """ONNX file -> NNEF folder."""
    source = Path(str(source))
    _folder_target(destination)
    nnef_tools(
        "--input-format",
        "onnx",
        "--output-format",
        "nnef",
        "--input-model",
        str(source),
        "--output-model",
        str(destination),
        "--fold-constants",
        "--input-shapes",
        repr(_input_shapes(source, example_inputs)),
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
