"""Topology converters from TensorFlow/Keras, wrapping established tools.

* TensorFlow -> ONNX: ``tf2onnx`` (its command line, on a SavedModel export).
* TensorFlow -> NNEF: ``tf2onnx``, then ``nnef-tools`` ONNX -> NNEF
  (nnef-tools reads TensorFlow only as frozen TF1 graphs or TFLite; the TFLite
  route folds batch norms into the convolutions, so fewer tensors would keep
  their identity for ``nnc convert``'s matching than through ONNX).

Each is called as ``function(source, destination, *, example_inputs=None)``
by :func:`nnc_core.convert.convert`, which then replaces the converted
model's weights by the NNR-decoded ones.  The tools run in subprocesses:
their console noise and global TensorFlow state stay out of the caller.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from nnc_core.errors import ModelError

__all__ = ["to_onnx", "to_nnef", "onnx_to_nnef"]

OPSET = 17


def _run(args: list[str], what: str) -> None:
    r = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True)
    if r.returncode != 0:
        tail = "\n".join((r.stderr or r.stdout).strip().splitlines()[-5:])
        raise ModelError(f"{what} failed (exit {r.returncode}):\n{tail}")


def _saved_model(source: Any, folder: Path) -> Path:
    """``source`` as a SavedModel folder (exported from Keras when it is one)."""
    from nnc_tensorflow.adapter import KerasAdapter, _is_saved_model

    if not hasattr(source, "layers") and _is_saved_model(Path(str(source))):
        return Path(str(source))
    model = KerasAdapter().load(source)
    target = folder / "saved_model"
    model.export(str(target), verbose=False)
    return target


def to_onnx(source: Any, destination: Path, *, example_inputs: Any = None) -> None:
    """Keras model or SavedModel -> ONNX file with tf2onnx."""
    with tempfile.TemporaryDirectory() as tmp:
        saved = _saved_model(source, Path(tmp))
        _run(["tf2onnx.convert", "--saved-model", str(saved), "--output", str(destination), "--opset", str(OPSET)],
             "tf2onnx")


def onnx_to_nnef(source: Path, destination: Path, example_inputs: Any = None) -> None:
    """ONNX file -> NNEF folder with nnef-tools (dynamic dimensions 1 unless
    ``example_inputs`` gives the shapes)."""
    try:
        from nnc_nnef.convert import from_onnx
    except ImportError as e:
        raise ModelError("TensorFlow -> NNEF needs the nnc-nnef plugin") from e
    from_onnx(source, destination, example_inputs=example_inputs)


def to_nnef(source: Any, destination: Path, *, example_inputs: Any = None) -> None:
    """Keras model or SavedModel -> NNEF folder (tf2onnx, then nnef-tools)."""
    with tempfile.TemporaryDirectory() as tmp:
        onnx_file = Path(tmp) / "model.onnx"
        to_onnx(source, onnx_file)
        onnx_to_nnef(onnx_file, destination, example_inputs)
