"""nnc convert PyTorch <-> NNEF, TensorFlow -> PyTorch and PyTorch ->
TensorFlow, each through ONNX (the shortest chain of declared converters:
torch.onnx.export, nnef-tools, tf2onnx, onnx2torch, onnxsim + onnx2keras),
weights as NNR, on real pretrained models.  Source and destination run on the
same input: lossless (weights sent raw) within the converters' float
re-association, lossy (default QP) within the stated tolerance, the
destination's tensors being exactly the NNR-decoded ones."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import torch

import crepe
from crepe import model, program, tones  # noqa: F401 (fixtures)
from nnc_core.cli import main
from nnc_core.convert import convert
from nnc_core.model import decode_model, encode_model
from nnc_core.plugins import read_model
from nnc_core.testing.frameworks import float_names, run_nnef, run_saved_model

CREPE_TENSORS = 38  # 6 x (conv weight, bias, 4 batch norm) + classifier weight, bias
FLOAT_TOLERANCE = 1e-5  # onnxruntime / TorchScript kernels against torch's, sigmoid and softmax outputs
CREPE_LOSSY = 5e-3  # as in cross-pytorch-onnx; measured 1.2e-3
FER_LOSSY = 0.03  # softmax outputs, as in the TensorFlow plugin's tests


@pytest.fixture(scope="module")
def crepe_conversion(program, tmp_path_factory):
    """CREPE as NNEF, converted losslessly from the .pt2 program through ONNX: (folder, report)."""
    folder = tmp_path_factory.mktemp("nnef") / "crepe.nnef"
    return folder, convert(program, folder, raw_float=float_names(program))


@pytest.fixture(scope="module")
def crepe_nnef(crepe_conversion):
    return crepe_conversion[0]


def _carries(source, destination, report, lossless, count, **options):
    """``count`` tensors were matched (matching is by content, so the match
    itself is what can fail), and reading the destination gives the source's
    (lossless) or the NNR-decoded ones."""
    assert len(report.matched) == count
    source_model = read_model(source)
    original = source_model.tensors
    expected = original if lossless else decode_model(encode_model(source_model, **options)).tensors
    carried = read_model(destination).tensors
    for dst, src in report.matched.items():
        np.testing.assert_array_equal(carried[dst].reshape(expected[src].shape), expected[src])
    if not lossless:  # every weight matrix and kernel really changed by quantization
        weights = [s for s in report.matched.values() if original[s].ndim >= 2]
        assert weights and all(not np.array_equal(expected[s], original[s]) for s in weights)


def test_pytorch_to_nnef_lossless(model, tones, program, crepe_conversion):
    crepe_nnef, report = crepe_conversion
    assert report.route == ["pytorch", "onnx", "nnef"]
    assert report.unmatched == []
    _carries(program, crepe_nnef, report, lossless=True, count=CREPE_TENSORS)
    with torch.no_grad():
        expected = model(tones).numpy()
    np.testing.assert_allclose(run_nnef(crepe_nnef, tones.numpy()), expected, rtol=0, atol=FLOAT_TOLERANCE)


def test_pytorch_to_nnef_lossy_command_line(model, tones, program, tmp_path, capsys):
    assert main(["convert", str(program), "-o", str(tmp_path / "crepe.nnef")]) == 0
    err = capsys.readouterr().err
    assert f"-> {tmp_path / 'crepe.nnef'} (nnef via onnx): 487102 parameters" in err
    assert f"{CREPE_TENSORS} tensors carried, 0 derived by the converter" in err
    with torch.no_grad():
        expected = model(tones).numpy()
    got = run_nnef(tmp_path / "crepe.nnef", tones.numpy())
    assert 0 < np.abs(got - expected).max() <= CREPE_LOSSY
    assert np.array_equal(crepe.cents(got), crepe.cents(expected))


def test_nnef_to_pytorch(model, tones, crepe_nnef, tmp_path):
    report = convert(crepe_nnef, tmp_path / "crepe.pt", raw_float=float_names(crepe_nnef))
    assert report.route == ["nnef", "onnx", "pytorch"]
    # the unmatched ones are onnx2torch's constants
    _carries(crepe_nnef, tmp_path / "crepe.pt", report, lossless=True, count=CREPE_TENSORS)
    with torch.no_grad():
        got, expected = torch.jit.load(str(tmp_path / "crepe.pt"))(tones).numpy(), model(tones).numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=FLOAT_TOLERANCE)
    lossy = convert(crepe_nnef, tmp_path / "lossy.pt", qp=-34)  # the NNEF weights are raw: any QP re-quantizes
    _carries(crepe_nnef, tmp_path / "lossy.pt", lossy, lossless=False, count=CREPE_TENSORS, qp=-34)


def test_tensorflow_to_pytorch_lossy(fer_h5, faces, tmp_path):
    report = convert(fer_h5, tmp_path / "fer.pt")
    assert report.route == ["tensorflow", "onnx", "pytorch"]
    assert sorted(report.matched.values()) == ["conv2d_7/bias", "conv2d_7/kernel"]  # tf2onnx folds the batch norms
    _carries(fer_h5, tmp_path / "fer.pt", report, lossless=False, count=2)
    expected = np.asarray(keras.models.load_model(fer_h5, compile=False)(faces, training=False))
    with torch.no_grad():
        got = torch.jit.load(str(tmp_path / "fer.pt"))(torch.from_numpy(faces)).numpy()
    assert 0 < np.abs(got - expected).max() <= FER_LOSSY


def test_pytorch_to_tensorflow(nude_onnx, image, tmp_path):
    """nudenet's YOLOv8n as a PyTorch module (onnx2torch), to a SavedModel."""
    import onnx

    from nnc_onnx.convert import _onnx2torch

    module = _onnx2torch().convert(onnx.load(str(nude_onnx))).eval()
    x = torch.from_numpy(image)
    report = convert(module, tmp_path / "nude", target="tensorflow", example_inputs=(x,), raw_float=float_names(module))
    assert report.route == ["pytorch", "onnx", "tensorflow"]
    assert report.unmatched == []
    _carries(module, tmp_path / "nude", report, lossless=True, count=127)  # every SavedModel variable
    with torch.no_grad():
        expected = module(x).numpy()
    np.testing.assert_allclose(run_saved_model(tmp_path / "nude", image), expected, rtol=0, atol=1e-3)  # outputs to 320
