"""nnc convert ONNX -> TensorFlow (onnxsim, then onnx2keras, saved as a
SavedModel folder) and NNEF -> TensorFlow (nnef-tools to ONNX first: a chain
of declared converters), weights as NNR, on nudenet's pretrained YOLOv8n.

Source and destination run on the same image.  Lossless settings (weights
sent raw) give exactly the SavedModel the converter alone gives, and outputs
within 1e-3 of onnxruntime's (onnx2keras' float re-association: measured
1.5e-4 for outputs up to 320).  Lossy (default QP) outputs stay within
LOSSY_* of the source's; every variable carries exactly the NNR-decoded values.
"""

from __future__ import annotations

import numpy as np
import pytest

from nnc_core.cli import main
from nnc_core.convert import convert, match_tensors
from nnc_core.errors import PluginError
from nnc_core.model import decode_model, encode_model
from nnc_core.plugins import read_model
from nnc_core.testing.frameworks import float_names, run_onnx, run_saved_model

SHAPE = (1, 3, 320, 320)
VARIABLES = 127  # the SavedModel's: 64 conv kernels, 63 biases (the DFL conv has none)
CONVERTER_TOLERANCE = 1e-3  # onnx2keras/TensorFlow kernels vs onnxruntime, outputs up to 320
LOSSY_SCORES = 0.02  # rows 4: of the output: class scores (sigmoids); measured 0.006
LOSSY_BOXES = 0.03  # rows 0-3: box coordinates in pixels, relative to the largest; measured 0.026


def test_onnx_to_tensorflow_lossless_is_the_converter_alone(nude_onnx, image, tmp_path):
    from nnc_tensorflow.convert import from_onnx

    from_onnx(nude_onnx, tmp_path / "direct", example_inputs=SHAPE)
    report = convert(
        nude_onnx, tmp_path / "nude", target="tensorflow", raw_float=float_names(nude_onnx), example_inputs=SHAPE
    )
    assert report.route == ["onnx", "tensorflow"]
    assert len(report.matched) == VARIABLES and report.unmatched == []  # by content: onnx2keras renames
    source, converted = read_model(nude_onnx).tensors, read_model(tmp_path / "nude").tensors
    for dst, src in report.matched.items():
        np.testing.assert_array_equal(converted[dst], source[src])
    got = run_saved_model(tmp_path / "nude", image)
    assert np.array_equal(got, run_saved_model(tmp_path / "direct", image))
    np.testing.assert_allclose(got, run_onnx(nude_onnx, image), rtol=0, atol=CONVERTER_TOLERANCE)


def _lossy_checks(source, destination, got, expected):
    """Every variable holds an NNR-decoded tensor (not the source's); outputs within tolerance."""
    decoded = decode_model(encode_model(read_model(source)))
    original, carried = read_model(source).tensors, read_model(destination)
    matched = match_tensors(decoded, carried)  # by content: each variable is one decoded tensor
    assert len(matched) == len(carried.tensors) == VARIABLES
    assert sum(not np.array_equal(decoded.tensors[s], original[s]) for s in matched.values()) == VARIABLES
    assert got.shape == expected.shape == (1, 22, 2100)
    assert 0 < np.abs(got[:, 4:] - expected[:, 4:]).max() <= LOSSY_SCORES
    assert np.abs(got[:, :4] - expected[:, :4]).max() <= LOSSY_BOXES * np.abs(expected[:, :4]).max()


def test_onnx_to_tensorflow_lossy_command_line(nude_onnx, image, tmp_path, capsys):
    # the ONNX file's height and width are dynamic: --input-shape fixes them
    assert (
        main(
            [
                "convert",
                str(nude_onnx),
                "-o",
                str(tmp_path / "nude"),
                "--framework",
                "tensorflow",
                "--input-shape",
                "1,3,320,320",
            ]
        )
        == 0
    )
    assert f"-> {tmp_path / 'nude'} (tensorflow): " in (err := capsys.readouterr().err)
    assert f"{VARIABLES} tensors carried, 0 derived by the converter" in err
    _lossy_checks(nude_onnx, tmp_path / "nude", run_saved_model(tmp_path / "nude", image), run_onnx(nude_onnx, image))
    assert main(["convert", str(nude_onnx), "-o", str(tmp_path / "x"), "--input-shape", "1x3"]) == 1
    assert "--input-shape '1x3': give comma-separated integers" in capsys.readouterr().err


def test_nnef_to_tensorflow_through_onnx(nude_nnef, nude_onnx, image, tmp_path):
    report = convert(nude_nnef, tmp_path / "nude", target="tensorflow")
    assert report.route == ["nnef", "onnx", "tensorflow"]
    # Compared with the ONNX model the NNEF folder was made from: nnef-tools' own
    # NNEF -> ONNX export writes the DFL Softmax(axis=1) at opset 11, where
    # onnxruntime normalises over every trailing axis, so run_nnef's box rows are
    # not the network's (onnx2keras, like NNEF, normalises over axis 1 alone).
    assert len(report.matched) == VARIABLES and report.unmatched == []
    _lossy_checks(nude_nnef, tmp_path / "nude", run_saved_model(tmp_path / "nude", image), run_onnx(nude_onnx, image))


def test_keras_files_are_refused_for_converted_graphs(nude_onnx, tmp_path):
    with pytest.raises(PluginError, match=r"holds Lambda layers, which Keras cannot reload from a .keras file"):
        convert(nude_onnx, tmp_path / "nude.keras", example_inputs=SHAPE)
    assert list(tmp_path.iterdir()) == []
