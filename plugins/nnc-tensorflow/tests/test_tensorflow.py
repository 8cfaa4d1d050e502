"""The TensorFlow/Keras plugin (Annex D) on a real pretrained model (fer's
emotion CNN, legacy .h5), in every form it reads and writes."""

from __future__ import annotations

import json
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from nnc_core.bitstream.units import TopologyStorageFormat, TopologyUnit, read_units
from nnc_core.cli import main
from nnc_core.errors import ModelError
from nnc_core.model import decode_model, encode_model
from nnc_core.plugins import get_plugin_manager, read_model, write_model
from nnc_core.testing.frameworks import float_names, run_saved_model
from nnc_tensorflow.adapter import KerasAdapter, from_nnr_layout, to_nnr_layout

# Lossy tolerance at the default QP (-38): softmax outputs within 0.03, and
# the predicted class unchanged, on the test batch.
LOSSY_TOLERANCE = 0.03


@pytest.fixture(scope="module")
def fer_model(fer_h5):
    return keras.models.load_model(fer_h5, compile=False)


def _run(model, x):
    return np.asarray(model(x, training=False))


def _lossless(model):
    return encode_model(model, raw_float=float_names(model))


def test_plugin_is_listed_and_chosen(fer_h5, fer_model, tmp_path):
    pm = get_plugin_manager()
    assert pm.plugin_for_source(fer_h5).name == "tensorflow"
    assert pm.plugin_for_source(fer_model).name == "tensorflow"
    fer_model.export(str(tmp_path / "sm"), verbose=False)
    assert pm.plugin_for_source(tmp_path / "sm").name == "tensorflow"
    assert pm.plugin_for_destination(tmp_path / "x.keras").name == "tensorflow"


def test_layout_names_blocks_and_topology(fer_h5, fer_model):
    model = read_model(fer_h5)
    assert model.framework == "tensorflow"
    assert list(model.tensors) == [w.path for w in fer_model.weights]
    kernel = fer_model.get_layer("conv2d_7").kernel.numpy()  # [3, 3, 128, 7]
    assert model.tensors["conv2d_7/kernel"].shape == (7, 128, 3, 3)
    np.testing.assert_array_equal(model.tensors["conv2d_7/kernel"], kernel.transpose(3, 2, 0, 1))
    np.testing.assert_array_equal(from_nnr_layout("conv2d_7/kernel", model.tensors["conv2d_7/kernel"]), kernel)
    assert model.tensors["separable_conv2d_1/pointwise_kernel"].shape == (16, 8, 1, 1)
    assert model.tensors["batch_normalization_1/gamma"].shape == (8,)
    assert model.blocks["conv2d_7"] == {"weight": "conv2d_7/kernel", "bias": "conv2d_7/bias"}
    bn = {
        f"bn.{k}": f"batch_normalization_{{}}/{v}"
        for k, v in (("gamma", "gamma"), ("beta", "beta"), ("mean", "moving_mean"), ("var", "moving_variance"))
    }
    # from the graph: conv2d_4 feeds batch_normalization_6 (names would pair it with _4)
    assert model.blocks["conv2d_4"] == {"weight": "conv2d_4/kernel", **{k: v.format(6) for k, v in bn.items()}}
    assert model.blocks["separable_conv2d_1"] == {
        "weight": "separable_conv2d_1/pointwise_kernel",
        **{k: v.format(4) for k, v in bn.items()},
    }
    assert sum("bn.gamma" in b for b in model.blocks.values()) == 14  # every batch norm of the model
    assert len(model.blocks) == 15
    assert model.dimension_shift == {}
    assert model.topology.storage_format == TopologyStorageFormat.NNR_TPL_TEF and model.topology.deflate
    assert json.loads(model.topology.data)["class_name"] == "Functional"
    dense = to_nnr_layout("dense/kernel", np.arange(6, dtype=np.float32).reshape(2, 3))
    assert dense.shape == (3, 2) and dense[2, 1] == 5


def test_lossless_round_trip_every_format(fer_h5, fer_model, face_batch, tmp_path):
    data = _lossless(read_model(fer_h5))
    units = read_units(data)
    tpl = [u for u in units if isinstance(u, TopologyUnit)][0]
    assert tpl.topology_storage_format == TopologyStorageFormat.NNR_TPL_TEF and tpl.topology_compression_format == 1
    decoded = decode_model(data)
    expected = _run(fer_model, face_batch)
    for name in ("back.keras", "back.h5"):
        write_model(decoded, tmp_path / name)  # built from the carried Keras config alone
        back = keras.models.load_model(tmp_path / name, compile=False)
        assert len(back.weights) == len(fer_model.weights)
        for a, b in zip(fer_model.weights, back.weights):
            np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
        np.testing.assert_array_equal(_run(back, face_batch), expected)
    write_model(decoded, tmp_path / "sm", framework="tensorflow")
    np.testing.assert_allclose(run_saved_model(tmp_path / "sm", face_batch), expected, rtol=0, atol=1e-6)


def test_saved_model_source_round_trip(fer_model, face_batch, tmp_path):
    fer_model.export(str(tmp_path / "sm"), verbose=False)
    model = read_model(tmp_path / "sm")
    assert set(model.tensors) == {w.path for w in fer_model.weights}
    assert model.tensors["conv2d_1/kernel"].shape == (8, 1, 3, 3)
    decoded = decode_model(_lossless(model))
    write_model(decoded, tmp_path / "sm2", framework="tensorflow", template=tmp_path / "sm")
    weights = {w.path: w.numpy() for w in fer_model.weights}
    for v in tf.saved_model.load(str(tmp_path / "sm2")).variables:
        np.testing.assert_array_equal(v.numpy(), weights[v.name[:-2]], err_msg=v.name)
    np.testing.assert_array_equal(
        run_saved_model(tmp_path / "sm2", face_batch), run_saved_model(tmp_path / "sm", face_batch)
    )


def test_lossy_within_tolerance_and_command_line(fer_h5, fer_model, face_batch, tmp_path, capsys):
    nnr, back = tmp_path / "fer.nnr", tmp_path / "fer.keras"
    assert main(["encode", str(fer_h5), "-o", str(nnr)]) == 0
    assert main(["decode", str(nnr), "-o", str(back)]) == 0
    restored = keras.models.load_model(back, compile=False)
    expected, got = _run(fer_model, face_batch), _run(restored, face_batch)
    assert np.abs(got - expected).max() <= LOSSY_TOLERANCE
    np.testing.assert_array_equal(got.argmax(1), expected.argmax(1))
    assert 0 < nnr.stat().st_size < 58423 * 4 / 2  # under 16 bits per parameter
    kernel = restored.get_layer("conv2d_7").kernel.numpy()
    assert kernel.shape == (3, 3, 128, 7) and not np.array_equal(kernel, fer_model.get_layer("conv2d_7").kernel.numpy())


def test_in_memory_model_and_template(fer_model, face_batch, tmp_path):
    model = read_model(fer_model)
    model.topology = None  # only the template can rebuild it now
    decoded = decode_model(_lossless(model))
    decoded.topology = None
    with pytest.raises(ModelError, match="no Keras topology"):
        write_model(decoded, tmp_path / "x.keras")
    write_model(decoded, tmp_path / "x.keras", template=fer_model)
    np.testing.assert_array_equal(
        _run(keras.models.load_model(tmp_path / "x.keras", compile=False), face_batch), _run(fer_model, face_batch)
    )
    # lossy weights into a SavedModel folder from the in-memory template: the folder
    # holds the decoded weights, the caller's model keeps its own
    before = [w.numpy().copy() for w in fer_model.weights]
    lossy = decode_model(encode_model(model, qp=-20))
    write_model(lossy, tmp_path / "sm", framework="tensorflow", template=fer_model)
    assert all(np.array_equal(w.numpy(), b) for w, b in zip(fer_model.weights, before))
    saved = read_model(tmp_path / "sm").tensors
    assert saved.keys() == lossy.tensors.keys()
    assert all(np.array_equal(saved[k], lossy.tensors[k]) for k in saved)
    assert any(not np.array_equal(saved[k], model.tensors[k]) for k in saved)


def test_embed_and_extract(fer_h5, tmp_path):
    data = encode_model(read_model(fer_h5))
    adapter = KerasAdapter()
    for name in ("carried.keras", "carried.h5"):
        adapter.embed(data, tmp_path / name)
        assert adapter.extract(tmp_path / name) == data
    with zipfile.ZipFile(tmp_path / "carried.keras") as zf:
        assert json.loads(zf.read("config.json"))["class_name"] == "Functional"
        assert "model.weights.h5" not in zf.namelist()
    assert adapter.extract(fer_h5) is None


def test_saved_model_carriage(fer_model, face_batch, tmp_path):
    """A SavedModel folder carries the bitstream as assets/model.nnr beside the
    original graph, without the variables; decoded with the original as template
    it runs as the lossless original does."""
    fer_model.export(str(tmp_path / "sm"), verbose=False)
    data = _lossless(read_model(tmp_path / "sm"))
    adapter = KerasAdapter()
    with pytest.raises(ModelError, match="needs the original SavedModel as template"):
        adapter.embed(data, tmp_path / "carried")
    adapter.embed(data, tmp_path / "carried", template=tmp_path / "sm")
    assert adapter.extract(tmp_path / "carried") == data and adapter.extract(tmp_path / "sm") is None
    assert not (tmp_path / "carried" / "variables").exists()
    assert (tmp_path / "carried" / "saved_model.pb").read_bytes() == (tmp_path / "sm" / "saved_model.pb").read_bytes()
    adapter.embed(encode_model(read_model(tmp_path / "sm")), tmp_path / "lossy", template=tmp_path / "sm")
    size = {
        name: sum(f.stat().st_size for f in (tmp_path / name).rglob("*") if f.is_file()) for name in ("sm", "lossy")
    }
    assert size["lossy"] < size["sm"] - 58423 * 4 * 3 / 4  # the weights at under 8 bits instead of 32
    adapter.write(decode_model(adapter.extract(tmp_path / "carried")), tmp_path / "restored", template=tmp_path / "sm")
    np.testing.assert_array_equal(
        run_saved_model(tmp_path / "restored", face_batch), run_saved_model(tmp_path / "sm", face_batch)
    )


# -- bad models (#7 item 5) ------------------------------------------------------


def test_corrupt_files_name_the_file(tmp_path):
    bad = tmp_path / "broken.h5"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 64)
    with pytest.raises(ModelError, match=r"broken\.h5: cannot load Keras model"):
        read_model(bad)
    notzip = tmp_path / "broken.keras"
    notzip.write_bytes(b"not a zip")
    with pytest.raises(ModelError, match=r"broken\.keras"):
        read_model(notzip)
    folder = tmp_path / "empty"
    folder.mkdir()
    with pytest.raises(ModelError, match="no SavedModel"):
        KerasAdapter().read(folder)


def test_unsupported_layer_is_named(fer_h5, tmp_path):
    with zipfile.ZipFile(tmp_path / "custom.keras", "w") as zf:
        config = json.loads(keras.models.load_model(fer_h5, compile=False).to_json())
        config["config"]["layers"][1]["class_name"] = "MyFancyConv"
        config["config"]["layers"][1]["module"] = "mypackage.layers"
        zf.writestr("config.json", json.dumps(config))
        zf.writestr("metadata.json", json.dumps({"keras_version": keras.__version__}))
    with pytest.raises(ModelError, match="MyFancyConv"):
        read_model(tmp_path / "custom.keras")


def test_int64_variables_beyond_int32_survive(tmp_path):
    """An int64 variable holding values beyond int32 (a step counter) travels
    in its own dtype (the core sends it as int32 planes) and is restored."""

    class Counter(keras.layers.Layer):
        def build(self, shape):
            self.big = self.add_weight(name="big", shape=(2,), dtype="int64", initializer="zeros", trainable=False)

        def call(self, x):
            return x

    inputs = keras.Input((3,))
    model = keras.Model(inputs, Counter(name="counter")(keras.layers.Dense(2, name="dense")(inputs)))
    model.get_layer("counter").big.assign(np.array([1, 2**40]))
    decoded = decode_model(encode_model(read_model(model)))
    assert decoded.tensors["counter/big"].dtype == np.int64
    assert decoded.tensors["counter/big"].tolist() == [1, 2**40]
    write_model(decoded, tmp_path / "m.keras", template=model)
    restored = keras.saving.load_model(tmp_path / "m.keras", custom_objects={"Counter": Counter})
    assert restored.get_layer("counter").big.numpy().tolist() == [1, 2**40]


def test_missing_weight_and_shape_mismatch_are_named(fer_h5, tmp_path):
    decoded = decode_model(encode_model(read_model(fer_h5)))
    del decoded.tensors["conv2d_3/kernel"]
    with pytest.raises(ModelError, match=r"conv2d_3/kernel"):
        write_model(decoded, tmp_path / "x.keras")
    decoded = decode_model(encode_model(read_model(fer_h5)))
    decoded.tensors["conv2d_7/bias"] = np.zeros(8, np.float32)
    with pytest.raises(ModelError, match=r"conv2d_7/bias.*\(8,\).*\(7,\)"):
        write_model(decoded, tmp_path / "x.keras")
    assert not (tmp_path / "x.keras").exists()


def test_batch_norm_blocks_follow_the_graph(tmp_path):
    """A batch norm joins the layer feeding it (also through an element-wise activation), not
    one whose output is used elsewhere too, nor one behind a softmax (it mixes the channels),
    nor a transposed convolution (input-channels-first kernel)."""
    x = keras.Input((8, 8, 3))
    a = keras.layers.Conv2D(4, 3, name="a")(x)
    a = keras.layers.BatchNormalization(name="bn_a")(keras.layers.Activation("relu", name="relu")(a))
    b = keras.layers.Conv2D(4, 1, use_bias=False, name="b")(a)
    shared = keras.layers.BatchNormalization(name="bn_b")(b)
    t = keras.layers.Conv2DTranspose(5, 3, name="t")(keras.layers.Add()([shared, b]))
    t = keras.layers.BatchNormalization(name="bn_t")(t)
    s = keras.layers.Conv2D(5, 1, name="s")(t)
    s = keras.layers.BatchNormalization(name="bn_s")(keras.layers.Activation("softmax", name="softmax")(s))
    m = keras.layers.Conv2D(5, 1, name="m")(s)
    m = keras.layers.BatchNormalization(name="bn_m")(keras.layers.Softmax(name="softmax_layer")(m))
    model = read_model(keras.Model(x, m, name="blocks"))
    assert model.blocks == {
        "a": {
            "weight": "a/kernel",
            "bias": "a/bias",
            "bn.gamma": "bn_a/gamma",
            "bn.beta": "bn_a/beta",
            "bn.mean": "bn_a/moving_mean",
            "bn.var": "bn_a/moving_variance",
        },
        "s": {"weight": "s/kernel", "bias": "s/bias"},
        "m": {"weight": "m/kernel", "bias": "m/bias"},
    }
