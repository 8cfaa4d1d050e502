"""The ONNX plugin on real pretrained models (Silero VAD 6.2.3's ONNX files from
its PyPI wheel: one with its weights as Constant nodes inside If subgraphs, one
with initializers), run with onnxruntime, and on small graphs built here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from nnc_core.bitstream.units import TopologyStorageFormat
from nnc_core.cli import main
from nnc_core.errors import ModelError
from nnc_core.model import decode_model, encode_model
from nnc_core.plugins import get_plugin_manager, read_model, write_model
from nnc_core.testing import pretrained

ROOT = Path(__file__).resolve().parents[3]
RATE, CHUNK = 16000, 512


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _resonator(x: np.ndarray, frequency: float, bandwidth: float) -> np.ndarray:
    r, theta = np.exp(-np.pi * bandwidth / RATE), 2 * np.pi * frequency / RATE
    a1, a2 = -2 * r * np.cos(theta), r * r
    y = np.zeros_like(x)
    for n in range(x.size):
        y[n] = x[n] - a1 * (y[n - 1] if n > 0 else 0.0) - a2 * (y[n - 2] if n > 1 else 0.0)
    return y


def signal() -> np.ndarray:
    """1 s of faint noise, then 2 s of synthesized vowels (a glottal pulse train at
    120 +- 30 Hz through three formant resonators, four vowels in turn)."""
    t = np.arange(2 * RATE) / RATE
    phase = np.cumsum(120 + 30 * np.sin(2 * np.pi * 3 * t)) / RATE
    pulses = (np.diff(np.floor(phase), prepend=0) > 0).astype(float)
    vowels = [
        (730, 90, 1090, 110, 2440, 170),
        (270, 60, 2290, 100, 3010, 120),
        (570, 80, 840, 90, 2410, 150),
        (300, 60, 870, 90, 2240, 120),
    ]
    voiced = np.zeros_like(t)
    length = t.size // 8
    for k in range(8):
        f1, b1, f2, b2, f3, b3 = vowels[k % 4]
        part = pulses[k * length : (k + 1) * length]
        sound = _resonator(part, f1, b1) + 0.5 * _resonator(part, f2, b2) + 0.25 * _resonator(part, f3, b3)
        voiced[k * length : (k + 1) * length] = sound * np.hanning(length) ** 0.3
    noise = 0.002 * np.random.default_rng(1).standard_normal(RATE)
    return np.concatenate([noise, 0.3 * voiced / np.abs(voiced).max()]).astype(np.float32)


SIGNAL = signal()


def vad(path: Path) -> np.ndarray:
    """Speech probability of every 512-sample chunk, as silero-vad runs it: state
    carried across chunks, each chunk preceded by the last 64 samples."""
    s = session(path)
    names = {i.name for i in s.get_inputs()}
    state, context = np.zeros((2, 1, 128), np.float32), np.zeros(64, np.float32)
    out = []
    for start in range(0, SIGNAL.size - CHUNK + 1, CHUNK):
        chunk = np.concatenate([context, SIGNAL[start : start + CHUNK]])
        context = chunk[-64:]
        feeds = {"input": chunk[None], "state": state}
        if "sr" in names:
            feeds["sr"] = np.array(RATE, np.int64)
        probability, state = s.run(None, feeds)
        out.append(float(probability.reshape(-1)[0]))
    return np.array(out)


def lossless(nnr) -> dict:
    return {"raw_float": list(nnr.tensors)}


def test_plugin_is_listed_and_loading_it_imports_no_onnx():
    status = {s.name: s for s in get_plugin_manager().status(import_adapters=True)}
    assert status["onnx"].state == "ok" and status["onnx"].annex == "B"
    assert status["onnx"].framework_version == onnx.__version__
    code = (
        "import sys; from nnc_core.plugins import get_plugin_manager; pm = get_plugin_manager(); pm.status();"
        "print(pm.plugin_for_destination('x.onnx').name, 'onnx' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT / "tests")
    assert out.stdout.split() == ["onnx", "False"]


@pytest.mark.parametrize("name, tensors, parameters", [("silero-vad", 28, 545280), ("silero-vad-ifless", 30, 545668)])
def test_silero_lossless_round_trip_runs_identically(name, tensors, parameters, tmp_path):
    source = pretrained.path(name)
    nnr = read_model(source)
    assert len(nnr.tensors) == tensors and sum(v.size for v in nnr.tensors.values()) == parameters
    assert nnr.topology.storage_format == TopologyStorageFormat.NNR_TPL_ONNX
    data = encode_model(nnr, **lossless(nnr))
    write_model(decode_model(data), tmp_path / "out.onnx")  # no template: the graph comes from NNR_TPL
    onnx.checker.check_model(str(tmp_path / "out.onnx"), full_check=True)
    assert np.array_equal(vad(tmp_path / "out.onnx"), vad(source))


def test_silero_lossy_keeps_the_decisions(tmp_path):
    source = pretrained.path("silero-vad")
    data = encode_model(read_model(source))  # default qp -38
    assert 8 * len(data) / 545280 < 9.0
    write_model(decode_model(data), tmp_path / "lossy.onnx")
    original, restored = vad(source), vad(tmp_path / "lossy.onnx")
    assert original[:31].max() < 0.5 < original[32:].min()  # noise, then vowels
    assert (
        np.abs(original - restored).max() < 0.02
    )  # measured 1.03e-2 (6.9 bits/parameter at qp -32: 2.7e-2, decisions still equal)
    assert np.array_equal(original > 0.5, restored > 0.5)


def test_cli_encode_decode(tmp_path, capsys):
    source = pretrained.path("silero-vad-ifless")
    assert main(["encode", str(source), "-o", str(tmp_path / "v.nnr")]) == 0
    assert "(onnx): 30 tensors, 545668 parameters" in capsys.readouterr().err
    assert main(["decode", str(tmp_path / "v.nnr"), "-o", str(tmp_path / "v.onnx")]) == 0
    assert main(["decode", str(tmp_path / "v.nnr"), "-o", str(tmp_path / "t.onnx"), "--template", str(source)]) == 0
    a, b = onnx.load(str(tmp_path / "v.onnx")), onnx.load(str(tmp_path / "t.onnx"))
    assert a.SerializeToString() == b.SerializeToString()
    assert np.array_equal(vad(tmp_path / "v.onnx") > 0.5, vad(source) > 0.5)


def small_model(**initializer_overrides) -> onnx.ModelProto:
    """Conv -> Relu -> BatchNormalization -> Flatten -> Gemm(transB=1), a Constant scale, a Pow exponent."""
    rng = np.random.default_rng(3)
    arrays = {
        "conv.weight": rng.normal(size=(16, 2, 3, 3)),
        "conv.bias": rng.normal(size=16),
        "bn.scale": rng.uniform(0.5, 2, 16),
        "bn.bias": rng.normal(size=16),
        "bn.mean": rng.normal(size=16),
        "bn.var": rng.uniform(0.5, 2, 16),
        "fc.weight": rng.normal(size=(3, 256)),
        "fc.bias": rng.normal(size=3),
        "two": np.array(2.0),
    }
    inits = [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in arrays.items()]
    inits += [numpy_helper.from_array(np.array([1, -1], np.int64), "shape")]
    for name, proto in initializer_overrides.items():
        inits = [proto if i.name == name else i for i in inits]
    scale = helper.make_node(
        "Constant", [], ["scale"], value=numpy_helper.from_array(rng.normal(size=(1, 3)).astype(np.float32), "s")
    )
    nodes = [
        helper.make_node("Conv", ["x", "conv.weight", "conv.bias"], ["c"]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("BatchNormalization", ["r", "bn.scale", "bn.bias", "bn.mean", "bn.var"], ["b"]),
        helper.make_node("Reshape", ["b", "shape"], ["f"]),
        helper.make_node("Gemm", ["f", "fc.weight", "fc.bias"], ["g"], transB=1),
        scale,
        helper.make_node("Mul", ["g", "scale"], ["m"]),
        helper.make_node("Pow", ["m", "two"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "small",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_blocks_from_the_graph_and_what_is_carried():
    nnr = read_model(small_model())
    assert nnr.blocks == {
        "conv": {
            "weight": "conv.weight",
            "bias": "conv.bias",
            "bn.gamma": "bn.scale",
            "bn.beta": "bn.bias",
            "bn.mean": "bn.mean",
            "bn.var": "bn.var",
        },
        "fc": {"weight": "fc.weight", "bias": "fc.bias"},
    }
    # integer "shape" and the one-element Pow exponent "two" stay in the topology; the Constant is carried
    assert list(nnr.tensors) == [
        "conv.weight",
        "conv.bias",
        "bn.scale",
        "bn.bias",
        "bn.mean",
        "bn.var",
        "fc.weight",
        "fc.bias",
        "scale",
    ]


def test_in_memory_template_is_left_as_it_was(tmp_path):
    model = small_model()
    before = model.SerializeToString()
    lossy = decode_model(encode_model(read_model(model), qp=-20))
    write_model(lossy, tmp_path / "out.onnx", template=model)
    assert model.SerializeToString() == before
    written = read_model(tmp_path / "out.onnx").tensors
    assert all(np.array_equal(written[k], lossy.tensors[k]) for k in lossy.tensors)
    assert any(not np.array_equal(written[k], v) for k, v in read_model(model).tensors.items())


def test_external_data_is_read_and_written(tmp_path):
    model = small_model()
    expected = numpy_helper.to_array(model.graph.initializer[0])
    onnx.save_model(model, str(tmp_path / "ext.onnx"), save_as_external_data=True, location="ext.bin")
    nnr = read_model(tmp_path / "ext.onnx")
    assert np.array_equal(nnr.tensors["conv.weight"], expected)
    write_model(decode_model(encode_model(nnr, **lossless(nnr))), tmp_path / "out.onnx", template=tmp_path / "ext.onnx")
    assert (tmp_path / "out.onnx.data").is_file()
    x = {"x": np.random.default_rng(0).normal(size=(1, 2, 6, 6)).astype(np.float32)}
    assert np.array_equal(
        session(tmp_path / "out.onnx").run(None, x)[0], session(tmp_path / "ext.onnx").run(None, x)[0]
    )


def test_bitstream_carriage_inside_an_onnx_file(tmp_path):
    source = pretrained.path("silero-vad")
    data = encode_model(read_model(source))
    adapter = get_plugin_manager().adapter("onnx")
    adapter.embed(data, tmp_path / "carrier.onnx")
    adapter.embed(data, tmp_path / "carrier2.onnx", template=source)
    carrier = onnx.load(str(tmp_path / "carrier.onnx"))
    assert {p.key: p.value for p in carrier.metadata_props}["nnr_bitstream"] == "__nnr__"
    assert (tmp_path / "carrier.onnx").stat().st_size < len(data) + 200_000  # graph stub + bitstream, no weights
    assert adapter.extract(tmp_path / "carrier.onnx") == data == adapter.extract(tmp_path / "carrier2.onnx")
    assert adapter.extract(source) is None


# -- bad models (issue #7 item 5) ------------------------------------------------


def test_corrupt_and_incomplete_files(tmp_path):
    (tmp_path / "junk.onnx").write_bytes(b"\x08\x07\xff\xff\xff garbage")
    with pytest.raises(ModelError, match=r"junk.onnx: not a readable ONNX model"):
        read_model(tmp_path / "junk.onnx")
    onnx.save_model(small_model(), str(tmp_path / "ext.onnx"), save_as_external_data=True, location="w.bin")
    (tmp_path / "w.bin").unlink()
    with pytest.raises(
        ModelError, match=r"ext.onnx: tensor 'conv.weight' refers to external data 'w.bin', which does not exist"
    ):
        read_model(tmp_path / "ext.onnx")


def test_unsupported_dtypes_and_sparse_tensors(tmp_path):
    f8 = helper.make_tensor("conv.bias", TensorProto.FLOAT8E4M3FN, [16], [1.0, 2.0, 0.5, 0.25] * 4)
    with pytest.raises(ModelError, match=r"initializer 'conv.bias' of graph 'small' has data type FLOAT8E4M3FN"):
        read_model(small_model(**{"conv.bias": f8}))
    model = small_model()
    sparse = helper.make_sparse_tensor(
        numpy_helper.from_array(np.ones(2, np.float32), "sp"),
        numpy_helper.from_array(np.array([0, 3], np.int64), "i"),
        [4],
    )
    model.graph.sparse_initializer.append(sparse)
    with pytest.raises(ModelError, match=r"sparse initializer 'sp' of graph 'small' is not supported"):
        read_model(model)


def test_missing_weights_mismatched_shapes_and_no_topology(tmp_path):
    source = pretrained.path("silero-vad-ifless")
    decoded = decode_model(encode_model(read_model(source)))
    name = next(iter(decoded.tensors))
    value = decoded.tensors.pop(name)
    with pytest.raises(ModelError, match=rf"x.onnx: missing weight {name!r} of the bitstream's ONNX topology"):
        write_model(decoded, tmp_path / "x.onnx")
    decoded.tensors[name] = value[..., :1]
    with pytest.raises(
        ModelError, match=rf"tensor {name!r} has shape \[.*\], initializer {name!r} of graph .* in template .* has"
    ):
        write_model(decoded, tmp_path / "x.onnx", template=source)
    decoded.tensors[name] = value
    decoded.topology = None
    with pytest.raises(ModelError, match=r"carries no ONNX topology; give the original model as template"):
        write_model(decoded, tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_annex_b_example_runs():
    out = subprocess.run(
        [sys.executable, str(ROOT / "annex_examples" / "onnx" / "example.py")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "outputs identical: True" in out.stdout


def test_shape_setting_floats_stay_exact(tmp_path):
    """Resize scales (a 4-element float Constant, as in YOLOv8's upsampling) set the
    output size: they stay in the topology, and a lossy model keeps its shapes."""
    rng = np.random.default_rng(3)
    weight = rng.normal(size=(8, 3, 3, 3)).astype(np.float32)
    scales = np.array([1, 1, 2, 2], np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Constant", [], ["scales"], value=numpy_helper.from_array(scales)),
            helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1]),
            helper.make_node("Resize", ["y", "", "scales"], ["z"], mode="nearest"),
        ],
        "up",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 5, 5])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 8, 10, 10])],
        [numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, tmp_path / "up.onnx")
    nnr = read_model(tmp_path / "up.onnx")
    assert list(nnr.tensors) == ["w"]
    write_model(decode_model(encode_model(nnr, qp=-20)), tmp_path / "lossy.onnx")
    x = rng.random((1, 3, 5, 5), dtype=np.float32)
    got, expected = (session(tmp_path / p).run(None, {"x": x})[0] for p in ("lossy.onnx", "up.onnx"))
    assert got.shape == expected.shape == (1, 8, 10, 10)
    assert 0 < np.abs(got - expected).max() < 0.5
