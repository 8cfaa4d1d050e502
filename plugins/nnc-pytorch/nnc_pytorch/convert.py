"""PyTorch -> ONNX topology for ``nnc convert``: ``torch.onnx.export``.

The established converter writes the ONNX graph with the original weights;
``nnc_core.convert`` then replaces every initializer that came from a
state-dict entry by the NNR-decoded tensor (matched by name, else by content).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from nnc_core.plugins import ModelError, PluginError

__all__ = ["to_onnx", "OPSET"]

OPSET = 17


def _module_and_inputs(source: Any, example_inputs: Any) -> tuple[torch.nn.Module, tuple[Any, ...]]:
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.suffix.lower() != ".pt2":
            raise PluginError(
                f"{path}: a {path.suffix} file holds weights only, no graph to export; convert a .pt2 file "
                "(torch.export.save) or an nn.Module with example_inputs"
            )
        from nnc_pytorch.adapter import _load_file

        source = _load_file(path)
    if isinstance(source, torch.export.ExportedProgram):
        if example_inputs is None:
            args, kwargs = source.example_inputs or ((), {})
            if kwargs:
                raise PluginError("the exported program takes keyword inputs; pass example_inputs")
            example_inputs = args
        return source.module(), tuple(example_inputs)
    if isinstance(source, torch.nn.Module):
        if example_inputs is None:
            raise PluginError(f"exporting {type(source).__qualname__} to ONNX needs example_inputs")
        if isinstance(example_inputs, torch.Tensor):
            example_inputs = (example_inputs,)
        return source.eval(), tuple(example_inputs)
    raise PluginError(f"cannot export a {type(source).__qualname__} to ONNX: give an nn.Module or a .pt2 file")


def to_onnx(source: Any, destination: Path, *, example_inputs: Any = None) -> None:
    """Export ``source`` (nn.Module with ``example_inputs``, ExportedProgram or .pt2) to ONNX at ``destination``.

    Uses the TorchScript-based ``torch.onnx.export`` (``dynamo=False``, opset
    17, no constant folding so that every weight stays an initializer of its
    own, named by its state-dict key).  Modules are exported in eval mode
    (set here for an nn.Module; the module of a torch.export program is in
    eval mode already and refuses ``train()``, hence ``PRESERVE``).
    """
    module, inputs = _module_and_inputs(source, example_inputs)
    try:
        with torch.no_grad():
            torch.onnx.export(
                module,
                inputs,
                str(destination),
                dynamo=False,
                opset_version=OPSET,
                do_constant_folding=False,
                export_params=True,
                training=torch.onnx.TrainingMode.PRESERVE,
            )
    except Exception as e:
        raise ModelError(f"torch.onnx.export failed for {type(module).__qualname__}: {type(e).__name__}: {e}") from e
