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

Before onnx2torch, the graph is prepared (:mod:`nnc_onnx.prepare`): Constant
weights become initializers (onnx2torch looks weights up among initializers
only), constants and shape computations are folded, ``If`` nodes with a
constant condition inlined, input shapes fixed where the user gives them, and
operators onnx2torch lacks rewritten where an exact rewrite exists.  An
operator left without converter is named, with its nodes, before onnx2torch
runs; a node onnx2torch fails on is named from its traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
import io
import sys
import types
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

from nnc_core.plugins import ModelError, PluginError, write_atomically

if TYPE_CHECKING:
    from nnc_core.plugins import ConversionStep

__all__ = ["to_torch", "example_inputs_for", "explain_torch", "onnx2torch_has"]


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


def onnx2torch_has(domain: str, op_type: str, opset: int) -> bool:
    """Whether onnx2torch has a converter for ``op_type`` at ``opset``."""
    from onnx2torch.node_converters.registry import get_converter

    try:
        get_converter(op_type, opset, domain or "")
    except NotImplementedError:
        return False
    return True


_UNBLOCK = (
    "what would unblock it: input shapes fixed with --input-shape (nnc convert) or example_inputs, an exact "
    "rewrite of the operator into ones onnx2torch has, or another route (e.g. ONNX -> TensorFlow)"
)


def _prepared(
    source: Any, example_inputs: Any
) -> tuple[onnx.ModelProto, str, list[ConversionStep], dict[str, list[int]] | None]:
    """The source ONNX model prepared for onnx2torch, its label, the steps and the static input shapes given."""
    from nnc_onnx.adapter import load
    from nnc_onnx.prepare import given_inputs, prepare

    model, origin = load(source)
    _onnx2torch()
    shapes, values = given_inputs(model, example_inputs)
    lacking = lacking_operators_torch(model)
    # a reflect Pad onnx2torch converts, and torch runs only on the last 1 to 3 axes of a 3- to 5-D tensor
    prepared, steps = prepare(
        model, input_shapes=shapes, input_values=values, rewrite=lacking, rewrite_forms=["Pad"], origin=origin
    )
    return prepared, origin, steps, shapes or None


def lacking_operators_torch(model: onnx.ModelProto) -> list[str]:
    from nnc_onnx.prepare import lacking_operators

    return lacking_operators(model, onnx2torch_has)


def _check_operators(prepared: onnx.ModelProto, origin: str) -> None:
    from nnc_onnx.prepare import REWRITABLE, describe_nodes

    lacking = lacking_operators_torch(prepared)
    if lacking:
        how = ", ".join(
            f"{op}: {'an exact rewrite exists but did not match' if op in REWRITABLE else 'no rewrite known'}"
            for op in lacking
        )
        raise ModelError(
            f"{origin}: onnx2torch {_version('onnx2torch')} has no converter for {describe_nodes(prepared, lacking)} "
            f"({how}); {_UNBLOCK}"
        )


def _version(distribution: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "(not installed)"


def explain_torch(source: Any, *, example_inputs: Any = None) -> list[ConversionStep]:
    """The steps of ONNX -> PyTorch on ``source`` and whether each would work,
    without writing anything (``nnc convert --explain``): the preparation runs
    in memory, then onnx2torch converts the prepared graph in memory."""
    from nnc_core.plugins import ConversionStep
    from nnc_onnx.prepare import planned_steps

    name = f"onnx2torch {_version('onnx2torch')}"
    missing = [m for m in ("onnxscript", "onnx2torch", "torch") if importlib.util.find_spec(m) is None]
    if missing:
        return planned_steps(None, ()) + [
            ConversionStep("ONNX graph to torch.fx module", name, f"missing package {', '.join(missing)}")
        ]
    try:
        prepared, origin, steps, _ = _prepared(source, example_inputs)
    except (ModelError, PluginError) as e:
        return planned_steps(None, ()) + [ConversionStep("graph preparation", "onnxscript", f"fails: {e}")]
    try:
        _check_operators(prepared, origin)
        _onnx2torch().convert(prepared)
    except ModelError as e:
        return steps + [ConversionStep("ONNX graph to torch.fx module", name, f"fails: {e}")]
    except Exception as e:
        from nnc_onnx.prepare import converter_error

        return steps + [
            ConversionStep(
                "ONNX graph to torch.fx module", name, f"fails: {converter_error(origin, 'onnx2torch', e, _UNBLOCK)}"
            )
        ]
    return steps + [ConversionStep("ONNX graph to torch.fx module", name, "available: converts (checked in memory)")]


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

    from nnc_onnx.prepare import converter_error, is_input_value

    destination = Path(destination)
    suffix = destination.suffix.lower()
    if suffix not in (".pt", ".pth", ".pt2"):
        raise PluginError(
            f"{destination}: a {suffix} file cannot hold the converted graph; write .pt (TorchScript) or .pt2"
        )
    model, origin, _, _ = _prepared(source, example_inputs)
    _check_operators(model, origin)
    try:
        module = _onnx2torch().convert(model).eval()
    except PluginError:
        raise
    except Exception as e:
        raise converter_error(origin, "onnx2torch", e, _UNBLOCK) from e

    def is_shape(value: Any) -> bool:
        return isinstance(value, (tuple, list)) and all(isinstance(d, int) for d in value)

    if (
        example_inputs is None
        or is_shape(example_inputs)
        or (isinstance(example_inputs, dict) and all(is_shape(v) or is_input_value(v) for v in example_inputs.values()))
    ):
        inputs = example_inputs_for(model)  # zeros of the (now static) input shapes: tracing needs values only
    elif isinstance(example_inputs, dict):
        inputs = tuple(v for v in example_inputs.values() if not is_input_value(v))  # fixed ones left the graph
    else:
        inputs = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
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
