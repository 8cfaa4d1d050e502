"""Annex A (NNEF): an NNEF model compressed with NNR and restored.

Steps: nudenet's pretrained YOLOv8n (an ONNX file inside the ``nudenet``
wheel) is converted to NNEF with nnef-tools; the NNEF folder is encoded
(NNR_TPL_NNEF topology = graph.nnef, deflated); the bitstream is decoded to a
new NNEF folder; both folders are converted to ONNX by nnef-tools and run by
onnxruntime on the same image; and the bitstream is also carried inside NNEF
tensor files (Annex A carriage).  Needs the ``nnef`` tox environment's
packages (nnc-nnef, nnef-tools, onnx, onnxsim, onnxruntime).

    python annex_examples/nnef/example.py [WORKDIR]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

from nnc_core.model import decode_model, encode_model
from nnc_core.plugins import read_model, write_model
from nnc_core.testing import pretrained


def run_nnef(folder: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    from nnc_nnef.convert import to_onnx

    onnx_file = folder.with_suffix(".onnx")
    to_onnx(folder, onnx_file)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def main(workdir: Path) -> dict:
    from nnc_nnef.adapter import NnefAdapter
    from nnc_nnef.convert import from_onnx

    source = workdir / "nudenet.nnef"
    from_onnx(pretrained.path("nudenet-320n"), source, example_inputs=(1, 3, 320, 320))

    model = read_model(source)
    bitstream = encode_model(model)  # qp -38, DQ: the defaults
    (workdir / "nudenet.nnr").write_bytes(bitstream)
    write_model(decode_model(bitstream), workdir / "restored.nnef")

    x = np.random.default_rng(7).random((1, 3, 320, 320), dtype=np.float32)
    before, after = run_nnef(source, x), run_nnef(workdir / "restored.nnef", x)
    NnefAdapter().embed(bitstream, workdir / "carried.nnef")
    params = sum(v.size for v in model.tensors.values())
    result = {
        "tensors": len(model.tensors),
        "parameters": int(params),
        "nnef_bytes": sum(f.stat().st_size for f in source.iterdir()),
        "nnr_bytes": len(bitstream),
        "carried_bytes": sum(f.stat().st_size for f in (workdir / "carried.nnef").iterdir()),
        "bits_per_parameter": 8 * len(bitstream) / params,
        "max_abs_output_difference": float(np.abs(after - before).max()),
        "max_abs_output": float(np.abs(before).max()),
        "carriage_round_trip": NnefAdapter().extract(workdir / "carried.nnef") == bitstream,
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
