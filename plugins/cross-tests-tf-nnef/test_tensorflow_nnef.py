"""nnc convert TensorFlow/Keras -> NNEF (tf2onnx, then nnef-tools), weights
as NNR, on fer's pretrained emotion CNN; source (Keras) and destination
(NNEF, run through nnef-tools -> ONNX -> onnxruntime) on the same input.

tf2onnx folds each batch norm into the preceding convolution's weights, so
only layers without a batch norm keep tensors identical to the source
(here ``conv2d_7``'s kernel and bias); those carry the NNR-decoded values,
the folded ones keep the converter's values and are reported as unmatched.
"""

from __future__ import annotations

import keras
import nnef
import numpy as np

from nnc_core.cli import main
from nnc_core.convert import convert
from nnc_core.model import decode_model, encode_model
from nnc_core.plugins import read_model
from nnc_core.testing.frameworks import float_names, run_nnef

LOSSY_TOLERANCE = 0.03  # softmax outputs, as in the TensorFlow plugin's tests


def _carried(report, destination):
    graph = nnef.load_graph(str(destination))
    labels = {op.outputs["output"]: op.attribs["label"] for op in graph.operations if op.name == "variable"}
    return {labels[t]: graph.tensors[t].data for t in labels if labels[t] in report.matched}


def test_lossless(fer_h5, faces, tmp_path):
    source = read_model(fer_h5)
    raw = float_names(source)
    report = convert(fer_h5, tmp_path / "fer.nnef", raw_float=raw)
    assert (report.source_framework, report.target_framework) == ("tensorflow", "nnef")
    assert sorted(report.matched.values()) == ["conv2d_7/bias", "conv2d_7/kernel"]
    for label, value in _carried(report, tmp_path / "fer.nnef").items():
        np.testing.assert_array_equal(
            value.reshape(source.tensors[report.matched[label]].shape), source.tensors[report.matched[label]]
        )
    expected = np.asarray(keras.models.load_model(fer_h5, compile=False)(faces, training=False))
    got = run_nnef(tmp_path / "fer.nnef", faces)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)  # converter's float re-association only


def test_lossy_command_line(fer_h5, faces, tmp_path, capsys):
    assert main(["convert", str(fer_h5), "-o", str(tmp_path / "fer.nnef")]) == 0
    assert "2 tensors carried" in capsys.readouterr().err
    decoded = decode_model(encode_model(read_model(fer_h5))).tensors
    source = read_model(fer_h5).tensors
    carried = read_model(tmp_path / "fer.nnef").tensors  # NNEF plugin: filters [out, in, kh, kw], biases 1-D
    for name in ("conv2d_7/kernel", "conv2d_7/bias"):
        hits = [
            label
            for label, value in carried.items()
            if value.shape == decoded[name].shape and np.array_equal(value, decoded[name])
        ]
        assert len(hits) == 1, name
        assert not np.array_equal(decoded[name], source[name])
    expected = np.asarray(keras.models.load_model(fer_h5, compile=False)(faces, training=False))
    got = run_nnef(tmp_path / "fer.nnef", faces)
    assert 0 < np.abs(got - expected).max() <= LOSSY_TOLERANCE
