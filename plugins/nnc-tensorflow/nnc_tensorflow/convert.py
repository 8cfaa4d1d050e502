"""Topology converters from and to TensorFlow/Keras, wrapping established tools.

* TensorFlow -> ONNX: ``tf2onnx`` (its command line, on a SavedModel export).
* TensorFlow -> NNEF: ``tf2onnx``, then ``nnef-tools`` ONNX -> NNEF
  (nnef-tools reads TensorFlow only as frozen TF1 graphs or TFLite; the TFLite
  route folds batch norms into the convolutions, so fewer tensors would keep
  their identity for ``nnc convert``'s matching than through ONNX).
* ONNX -> TensorFlow: ``onnxsim`` fixes the input shapes and folds the
  shape computations, then ``onnx2keras`` builds a Keras model (channels
  first, as the ONNX graph is), exported as a SavedModel folder.  onnx2keras
  writes ``Lambda`` layers for several operators, which Keras cannot reload
  from a ``.keras``/``.h5`` file; a SavedModel keeps the traced graph and
  needs no Python code to load.  (onnx2tf, the other established converter,
  pins numpy 1.26, protobuf 4 and TensorFlow 2.19; onnx2keras declares the
  ``tensorflow`` distribution, which would install a second copy of
  TensorFlow beside ``tensorflow-cpu``, so it is installed with ``--no-deps``.)

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

import numpy as np

from nnc_core.errors import ModelError, PluginError

__all__ = ["to_onnx", "to_nnef", "onnx_to_nnef", "from_onnx"]

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
        _run(
            ["tf2onnx.convert", "--saved-model", str(saved), "--output", str(destination), "--opset", str(OPSET)],
            "tf2onnx",
        )


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


def _static_inputs(model: Any, example_inputs: Any) -> dict[str, list[int]]:
    """The graph inputs' shapes: from ``example_inputs`` (an array, a shape, or
    a dict of either by input name), else the model's with dynamic dimensions 1."""
    initializers = {i.name for i in model.graph.initializer}
    shapes = {
        i.name: [
            d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1 for d in i.type.tensor_type.shape.dim
        ]
        for i in model.graph.input
        if i.name not in initializers
    }
    if example_inputs is None:
        return shapes
    names = list(shapes)
    if isinstance(example_inputs, (tuple, list)) and example_inputs and not isinstance(example_inputs[0], int):
        example_inputs = dict(zip(names, example_inputs))  # one value per input, in order
    given = example_inputs if isinstance(example_inputs, dict) else {names[0]: example_inputs}
    for name, value in given.items():
        if name not in shapes:
            raise ModelError(f"example input {name!r} is no input of the ONNX model ({', '.join(names)})")
        shapes[name] = [int(d) for d in (value if isinstance(value, (tuple, list)) else np.shape(value))]
    return shapes


def from_onnx(source: Any, destination: Path, *, example_inputs: Any = None) -> None:
    """ONNX file -> TensorFlow SavedModel folder (onnxsim, then onnx2keras).

    ``example_inputs`` gives the input shapes (the converter needs them
    static); otherwise dynamic dimensions are set to 1.  The SavedModel's
    ``serve`` signature takes the ONNX inputs in their ONNX layout.
    """
    import logging

    import onnx

    destination = Path(destination)
    if destination.suffix.lower() in (".keras", ".h5", ".hdf5"):
        raise PluginError(
            f"{destination}: a model converted from ONNX holds Lambda layers, which Keras cannot "
            f"reload from a {destination.suffix} file; write a SavedModel folder (no suffix)"
        )
    try:
        import onnx2keras
        import onnxsim
    except ImportError as e:
        raise PluginError(
            "nnc convert onnx -> tensorflow needs onnxsim and onnx2keras: "
            "pip install onnxsim && pip install --no-deps onnx2keras==0.0.25"
        ) from e
    if isinstance(source, onnx.ModelProto):
        model, origin = source, "ONNX model"
    else:
        origin = str(source)
        try:
            model = onnx.load(origin)
        except Exception as e:
            raise ModelError(f"{origin}: cannot load the ONNX model ({type(e).__name__}: {str(e)[:300]})") from e
    shapes = _static_inputs(model, example_inputs)
    try:
        simplified, ok = onnxsim.simplify(model, overwrite_input_shapes=shapes)
    except Exception as e:
        raise ModelError(f"{origin}: onnxsim cannot simplify it ({type(e).__name__}: {str(e)[:300]})") from e
    if not ok:
        raise ModelError(f"{origin}: onnxsim's simplified graph does not check")
    logger = logging.getLogger("onnx2keras")
    level = logger.level
    logger.setLevel(logging.ERROR)  # its fallbacks to Lambda layers are logged as warnings
    try:
        keras_model = onnx2keras.onnx_to_keras(
            simplified,
            list(shapes),
            input_shapes=[s[1:] for s in shapes.values()],
            verbose=False,
            name_policy="renumerate",
        )
        keras_model.export(str(destination), verbose=False)
    except Exception as e:
        raise ModelError(f"{origin}: onnx2keras cannot convert it ({type(e).__name__}: {str(e)[:300]})") from e
    finally:
        logger.setLevel(level)
