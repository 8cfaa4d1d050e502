"""ONNX -> PyTorch topology for ``nnc convert``: onnx2torch.

onnx2torch turns the ONNX graph into a ``torch.fx.GraphModule`` holding the
original weights; it is saved as TorchScript (``.pt``, ``torch.jit.trace``)
or as a ``.pt2`` program (``torch.export``): the PyTorch formats that keep a
graph without pickled Python code.  ``nnc_core.convert``
then replaces each weight that came from an ONNX initializer by the
NNR-decoded tensor (matched by content: onnx2torch renames them).

onnx2torch declares a dependency on torchvision, which pins its own torch
build; it is installed with ``--no-deps``.  It imports torchvision only for
its NonMaxSuppression and RoiAlign converters: when torchvision is absent, a
placeholder is registered for the import, and those two operators fail with a
clear error when met.
"""

from __future__ import annotations

import importlib
import importlib.util
import io
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from nnc_core.errors import ModelError, PluginError
from nnc_core.files import write_atomically

__all__ = ["to_torch", "example_inputs_for"]


def _onnx2torch() -> Any:
    if importlib.util.find_spec("onnx2torch") is None:
        raise PluginError("nnc convert onnx -> pytorch needs onnx2torch: pip install --no-deps onnx2torch")
    if importlib.util.find_spec("torchvision") is not None or "torchvision" in sys.modules:
        return importlib.import_module("onnx2torch")

    def unavailable(*args: Any, **kwargs: Any) -> Any:
        raise PluginError("this model uses NonMaxSuppression or RoiAlign, whose onnx2torch converters need torchvision")

    vision, ops = types.ModuleType("torchvision"), types.ModuleType("torchvision.ops")
    ops.nms = ops.roi_align = ops.box_convert = unavailable  # type: ignore[attr-defined]  # a stand-in module, filled by hand
    vision.ops = ops  # type: ignore[attr-defined]  # a stand-in module, filled by hand
    sys.modules["torchvision"], sys.modules["torchvision.ops"] = vision, ops
    try:
        return importlib.import_module("onnx2torch")
    finally:
        del sys.modules["torchvision"], sys.modules["torchvision.ops"]


def example_inputs_for(model: onnx.ModelProto) -> tuple[Any, ...]:
    """Zeros shaped like the graph's inputs (unknown dimensions: 1)."""
    import torch

    initializers = {i.name for i in model.graph.initializer}
    inputs = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor_type = value.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1 for d in tensor_type.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
        inputs.append(torch.from_numpy(np.zeros(shape, dtype=dtype)))  # tracing needs values, not meaningful ones
    return tuple(inputs)


def to_torch(source: Any, destination: Path, *, example_inputs: Any = None) -> None:
    """Convert the ONNX model at ``source`` to PyTorch at ``destination``:
    a TorchScript archive (``.pt``/``.pth``, ``torch.jit.trace`` of the
    converted module) or a ``.pt2`` program (``torch.export``, which needs
    a graph without data-dependent shapes)."""
    import torch

    from nnc_onnx.adapter import load

    destination = Path(destination)
    suffix = destination.suffix.lower()
    if suffix not in (".pt", ".pth", ".pt2"):
        raise PluginError(
            f"{destination}: a {suffix} file cannot hold the converted graph; write .pt (TorchScript) or .pt2"
        )
    model, origin = load(source)
    onnx2torch = _onnx2torch()
    try:
        module = onnx2torch.convert(model).eval()
    except PluginError:
        raise
    except Exception as e:
        raise ModelError(f"{origin}: onnx2torch cannot convert it ({type(e).__name__}: {e})") from e
    inputs = tuple(example_inputs) if example_inputs is not None else example_inputs_for(model)
    try:
        with torch.no_grad():
            program = torch.export.export(module, inputs) if suffix == ".pt2" else torch.jit.trace(module, inputs)
    except Exception as e:
        how = "torch.export" if suffix == ".pt2" else "torch.jit.trace"
        raise ModelError(f"{origin}: {how} of the converted module failed ({type(e).__name__}: {str(e)[:300]})") from e

    def save(f: Any) -> None:
        buffer = io.BytesIO()
        (torch.export.save if suffix == ".pt2" else torch.jit.save)(program, buffer)
        f.write(buffer.getvalue())

    write_atomically(destination, save)
