"""Running converted models in the plugins' and cross-framework tests.

One place for what every framework test needs: run an ONNX file, an NNEF
folder or a SavedModel on an input, and name a model's float tensors (sent as
raw floats, they make a lossless bitstream).  The frameworks are imported
inside the functions, so importing this module imports none.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["float_names", "run_nnef", "run_onnx", "run_saved_model"]


def run_onnx(model: str | Path | bytes, *inputs: np.ndarray, outputs: int | None = None) -> Any:
    """The first output of an ONNX model (file or serialized bytes) on ``inputs``,
    given in the order of its graph inputs, with onnxruntime on the CPU; with
    ``outputs``, a list of the first that many."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # no warnings about unused initializers
    source = model if isinstance(model, bytes) else str(model)
    session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    results = session.run(None, {i.name: np.asarray(x) for i, x in zip(session.get_inputs(), inputs)})
    return results[0] if outputs is None else results[:outputs]


def run_nnef(folder: str | Path, *inputs: np.ndarray, outputs: int | None = None) -> Any:
    """The first output of an NNEF folder (a list of the first ``outputs``):
    nnef-tools converts it to ONNX (in a temporary folder), onnxruntime runs it."""
    from nnc_nnef.convert import to_onnx

    with tempfile.TemporaryDirectory(prefix="nnc-nnef-run-") as tmp:
        onnx_file = Path(tmp) / f"{Path(folder).name}.onnx"
        to_onnx(Path(folder), onnx_file)
        return run_onnx(onnx_file, *inputs, outputs=outputs)


def run_saved_model(folder: str | Path, *inputs: np.ndarray, outputs: int | None = None) -> Any:
    """The output of a SavedModel folder's ``serve`` signature on ``inputs``
    (with ``outputs``, a list of the first that many outputs)."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(folder))  # kept referenced while its function runs
    out = loaded.serve(list(inputs))
    if outputs is None:
        return np.asarray(out)
    out = list(out) if isinstance(out, (list, tuple)) else [out]
    return [np.asarray(o) for o in out[:outputs]]


def float_names(source: Any) -> list[str]:
    """Names of a model's float tensors (anything ``read_model`` reads, or an
    :class:`~nnc_core.model.NNRModel`): ``raw_float=`` these for a lossless bitstream."""
    from nnc_core.model import NNRModel
    from nnc_core.plugins import read_model

    model = source if isinstance(source, NNRModel) else read_model(source)
    return [n for n, v in model.tensors.items() if v.dtype.kind == "f"]
