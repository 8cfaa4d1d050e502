"""Topology converters from and to TensorFlow/Keras, wrapping established tools.

* TensorFlow -> ONNX: ``tf2onnx`` (its command line, on a SavedModel export).
* TensorFlow -> NNEF: ``tf2onnx``, then ``nnef-tools`` ONNX -> NNEF
  (nnef-tools reads TensorFlow only as frozen TF1 graphs or TFLite; the TFLite
  route folds batch norms into the convolutions, so fewer tensors would keep
  their identity for ``nnc convert``'s matching than through ONNX).
* ONNX -> TensorFlow: the graph is prepared by the ONNX plugin
  (:mod:`nnc_onnx.prepare`: input shapes fixed, constants folded, Constant
  weights lifted to initializers, ``HardSigmoid``/``HardSwish`` rewritten
  into ``Mul``/``Add``/``Clip``, which onnx2keras has), ``onnxsim`` simplifies
  it (batch norms kept apart from the convolutions, so their tensors stay the
  NNR-decoded ones), then ``onnx2keras`` builds a Keras model (channels
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
from typing import TYPE_CHECKING, Any

from nnc_core.plugins import ModelError, PluginError

if TYPE_CHECKING:
    from nnc_core.plugins import ConversionStep

__all__ = ["to_onnx", "to_nnef", "onnx_to_nnef", "from_onnx", "explain_from_onnx"]

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


_UNBLOCK = (
    "what would unblock it: input shapes fixed with --input-shape (nnc convert) or example_inputs, an exact "
    "rewrite of the operator into ones onnx2keras has, or another route (e.g. ONNX -> PyTorch)"
)


def _keras_has(domain: str, op_type: str, opset: int) -> bool:
    from onnx2keras.layers import AVAILABLE_CONVERTERS

    return domain in ("", "ai.onnx") and op_type in AVAILABLE_CONVERTERS


def _version(distribution: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "(not installed)"


def _prepared(source: Any, example_inputs: Any) -> tuple[Any, str, list[ConversionStep], dict[str, list[int]]]:
    """The ONNX model prepared for onnx2keras (nnc_onnx.prepare, then onnxsim),
    its label, the steps done and the static input shapes."""
    import onnx

    try:
        import onnxsim

        from nnc_onnx.prepare import given_inputs, lacking_operators, prepare, raw_initializers, rewrite_operators
    except ImportError as e:
        raise PluginError(
            f"nnc convert onnx -> tensorflow needs the nnc-onnx plugin, onnxscript and onnxsim ({e}): "
            "pip install nnc-onnx 'onnxscript>=0.7,<0.8' onnxsim"
        ) from e
    from nnc_core.plugins import ConversionStep

    if isinstance(source, onnx.ModelProto):
        model, origin = source, "ONNX model"
    else:
        origin = str(source)
        try:
            model = onnx.load(origin)
        except Exception as e:
            raise ModelError(f"{origin}: cannot load the ONNX model ({type(e).__name__}: {str(e)[:300]})") from e
    shapes, values = given_inputs(model, example_inputs, every_input=True)
    # operators onnx2keras has but converts wrongly in some forms: a reflect Pad of fewer than 4 axes (it
    # reads 8 pads), a 1-D Conv (it pads SAME whatever the pads and drops the bias), a Gather from a tensor
    prepared, steps = prepare(
        model,
        input_shapes=shapes,
        input_values=values,
        rewrite=lacking_operators(model, _keras_has),
        rewrite_forms=["Pad", "Conv", "Gather"],
        origin=origin,
    )
    try:
        # batch norms stay apart: fused into the convolutions they would be new tensors, not the NNR-decoded ones
        simplified, ok = onnxsim.simplify(prepared, overwrite_input_shapes=shapes, skip_fuse_bn=True)
    except Exception as e:
        raise ModelError(f"{origin}: onnxsim cannot simplify it ({type(e).__name__}: {str(e)[:300]})") from e
    if not ok:
        raise ModelError(f"{origin}: onnxsim's simplified graph does not check")
    raw_initializers(simplified)  # onnxsim writes float_data again
    steps.append(ConversionStep("simplification (batch norms not fused)", f"onnxsim {_version('onnxsim')}", "done"))
    # onnx2keras unsqueezes one axis only, and onnxsim fuses consecutive Unsqueezes into one of several axes:
    # those are rewritten back into a chain of single-axis Unsqueezes; a Slice entry taking a whole axis
    # is dropped (onnx2keras's multi-axis Slice empties an axis whose end is the int64 maximum); a
    # ReduceMean/ReduceMax gets its default keepdims written (onnx2keras fails where it is absent)
    simplified = rewrite_operators(simplified, ["Unsqueeze", "Slice", "ReduceMean", "ReduceMax"], origin=origin)
    steps.append(
        ConversionStep(
            "Unsqueeze of several axes as single-axis ones, whole-axis Slice entries dropped, "
            "ReduceMean/ReduceMax keepdims written out",
            "onnxscript.rewriter",
            "done",
        )
    )
    return simplified, origin, steps, shapes


def _check_operators(model: Any, origin: str) -> None:
    from nnc_onnx.prepare import REWRITABLE, describe_nodes, lacking_operators

    lacking = lacking_operators(model, _keras_has)
    if lacking:
        how = ", ".join(
            f"{op}: {'an exact rewrite exists but did not match' if op in REWRITABLE else 'no rewrite known'}"
            for op in lacking
        )
        raise ModelError(
            f"{origin}: onnx2keras {_version('onnx2keras')} has no converter for "
            f"{describe_nodes(model, lacking)} ({how}); {_UNBLOCK}"
        )


def _to_keras(model: Any, origin: str, shapes: dict[str, list[int]]) -> Any:
    import logging

    import onnx2keras

    from nnc_onnx.prepare import converter_error

    _check_operators(model, origin)
    logger = logging.getLogger("onnx2keras")
    level = logger.level
    logger.setLevel(logging.ERROR)  # its fallbacks to Lambda layers are logged as warnings
    try:
        return onnx2keras.onnx_to_keras(
            model, list(shapes), input_shapes=[s[1:] for s in shapes.values()], verbose=False, name_policy="renumerate"
        )
    except Exception as e:
        raise converter_error(origin, "onnx2keras", e, _UNBLOCK) from e
    finally:
        logger.setLevel(level)


def explain_from_onnx(source: Any, *, example_inputs: Any = None) -> list[ConversionStep]:
    """The steps of ONNX -> TensorFlow on ``source`` and whether each would
    work, without writing anything (``nnc convert --explain``): preparation,
    onnxsim and onnx2keras run in memory; the SavedModel export is not run."""
    import importlib.util

    from nnc_core.plugins import ConversionStep

    name = f"onnx2keras {_version('onnx2keras')}"
    missing = [m for m in ("onnxscript", "onnxsim", "onnx2keras", "nnc_onnx") if importlib.util.find_spec(m) is None]
    if missing:
        return [ConversionStep("graph preparation and onnx2keras", name, f"missing package {', '.join(missing)}")]
    try:
        model, origin, steps, shapes = _prepared(source, example_inputs)
    except (ModelError, PluginError) as e:
        return [ConversionStep("graph preparation", "onnxscript, onnxsim", f"fails: {e}")]
    try:
        _to_keras(model, origin, shapes)
    except (ModelError, PluginError) as e:
        return steps + [ConversionStep("ONNX graph to Keras model", name, f"fails: {e}")]
    return steps + [
        ConversionStep("ONNX graph to Keras model", name, "available: converts (checked in memory)"),
        ConversionStep("Keras model exported as a SavedModel folder", "keras", "available (not run)"),
    ]


def from_onnx(source: Any, destination: Path, *, example_inputs: Any = None) -> None:
    """ONNX file -> TensorFlow SavedModel folder (onnxsim, then onnx2keras).

    ``example_inputs`` gives the input shapes (the converter needs them
    static); otherwise dynamic dimensions are set to 1.  The SavedModel's
    ``serve`` signature takes the ONNX inputs in their ONNX layout.
    """
    destination = Path(destination)
    if destination.suffix.lower() in (".keras", ".h5", ".hdf5"):
        raise PluginError(
            f"{destination}: a model converted from ONNX holds Lambda layers, which Keras cannot "
            f"reload from a {destination.suffix} file; write a SavedModel folder (no suffix)"
        )
    try:
        import onnx2keras  # noqa: F401
    except ImportError as e:
        raise PluginError(
            "nnc convert onnx -> tensorflow needs onnx2keras: pip install --no-deps onnx2keras==0.0.25"
        ) from e
    model, origin, _, shapes = _prepared(source, example_inputs)
    keras_model = _to_keras(model, origin, shapes)
    try:
        keras_model.export(str(destination), verbose=False)
    except Exception as e:
        raise ModelError(
            f"{origin}: the Keras model onnx2keras built does not export as a SavedModel "
            f"({type(e).__name__}: {str(e)[:300]})"
        ) from e
