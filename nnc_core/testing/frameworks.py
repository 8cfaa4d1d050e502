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


def run_onnx(model: str | Path | bytes, *inputs: np.ndarray) -> np.ndarray:
    """The first output of an ONNX model (file or serialized bytes) on ``inputs``,
    given in the order of its graph inputs, with onnxruntime on the CPU."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # no warnings about unused initializers
    source = model if isinstance(model, bytes) else str(model)
    session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    return session.run(None, {i.name: np.asarray(x) for i, x in zip(session.get_inputs(), inputs)})[0]


def run_nnef(folder: str | Path, x: np.ndarray) -> np.ndarray:
    """The first output of an NNEF folder: nnef-tools converts it to ONNX (in a
    temporary folder), onnxruntime runs it."""
    from nnc_nnef.convert import to_onnx

    with tempfile.TemporaryDirectory(prefix="nnc-nnef-run-") as tmp:
        onnx_file = Path(tmp) / f"{Path(folder).name}.onnx"
        to_onnx(Path(folder), onnx_file)
        return run_onnx(onnx_file, x)


def run_saved_model(folder: str | Path, x: np.ndarray) -> np.ndarray:
    """The output of a SavedModel folder's ``serve`` signature on ``x``."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(folder))  # kept referenced while its function runs
    return np.asarray(loaded.serve([x]))


def float_names(source: Any) -> list[str]:
    """Names of a model's float tensors (anything ``read_model`` reads, or an
    :class:`~nnc_core.model.NNRModel`): ``raw_float=`` these for a lossless bitstream."""
    from nnc_core.model import NNRModel
    from nnc_core.plugins import read_model

    model = source if isinstance(source, NNRModel) else read_model(source)
    return [n for n, v in model.tensors.items() if v.dtype.kind == "f"]
