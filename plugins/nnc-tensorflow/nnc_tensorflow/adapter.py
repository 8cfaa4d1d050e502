"""TensorFlow/Keras models as NNR models (ISO/IEC 15938-17 Annex D).

Sources: ``.keras`` archives, legacy Keras ``.h5``/``.hdf5`` files, SavedModel
folders and in-memory ``keras.Model`` objects.

Names: a tensor is named by its Keras variable path (``conv2d_1/kernel``),
which is also the SavedModel variable name without ``:0``, so the same model
gives the same NNR names in every form.

Layout (the decision this plugin makes): TensorFlow stores kernels with the
output channels LAST (``Dense`` ``[in, out]``, ``Conv2D`` ``[kh, kw, in,
out]``).  Every tool of NNR that works along a tensor's first dimension (row
skipping, local scaling, batch-norm folding, DQ rows, entry points) must act
on output channels, so the plugin TRANSPOSES each kernel (a variable whose
name ends in ``kernel``) of rank n with the permutation
``(n-1, n-2, 0, …, n-3)``: ``[out, in, kh, kw]`` — the layout of ONNX, NNEF
and PyTorch.  It does not signal ``first_tensor_dimension_shift`` instead,
because (1) a transposed tensor is byte-identical to the same layer's tensor
read from ONNX, NNEF or PyTorch, which is what ``nnc convert`` relies on to
carry the NNR-decoded weights into a converted model, and (2) a decoder that
ignores the shift (NNCodec parses it and ignores it) still sees output
channels first.  The transposition is a pure function of the name, so writing
back needs no side information.  Other variables (biases, batch-norm
statistics, embeddings) keep their layout.

Topology: the NNR_TPL unit carries ``topology_storage_format`` NNR_TPL_TEF
with the Keras model config (``model.to_json()``), deflated, so a ``.keras``
or ``.h5`` file can be rebuilt from the bitstream alone; a SavedModel (no
Keras config) carries an empty TEF topology and is written back from a
template (the original folder).

Carriage (Annex E): :meth:`KerasAdapter.embed` writes a ``.keras`` archive
(zip) holding the model config and the NNR bitstream as ``model.nnr`` instead
of ``model.weights.h5``; a ``.h5`` file holds it as the uint8 dataset
``nnr_bitstream`` beside the ``model_config`` attribute.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np

from nnc_core.plugins import ModelError, NNRModel, Topology, TopologyStorageFormat, topology_of


def _tf() -> tuple[Any, Any]:
    """keras and tensorflow, imported on first use (detecting a format imports neither)."""
    import keras
    import tensorflow as tf

    return keras, tf


def _is_keras_model(obj: object) -> TypeGuard[Any]:  # a keras.Model (keras is untyped)
    keras = sys.modules.get("keras")
    return keras is not None and isinstance(obj, keras.Model)


__all__ = ["KerasAdapter", "to_nnr_layout", "from_nnr_layout", "is_kernel"]

CARRIAGE_MEMBER = "model.nnr"
H5_CARRIAGE_DATASET = "nnr_bitstream"
_FLOAT_KINDS = ("float16", "float32", "float64")


def is_kernel(name: str) -> bool:
    """Whether variable ``name`` is a kernel whose output channels come last."""
    return name.rsplit("/", 1)[-1].endswith("kernel")


def _perm(ndim: int) -> tuple[int, ...]:
    return (ndim - 1, ndim - 2, *range(ndim - 2))


def to_nnr_layout(name: str, value: np.ndarray) -> np.ndarray:
    """TensorFlow layout -> NNR coding layout (output channels first)."""
    if is_kernel(name) and value.ndim >= 2:
        return np.ascontiguousarray(np.transpose(value, _perm(value.ndim)))
    return value


def from_nnr_layout(name: str, value: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_nnr_layout`."""
    if is_kernel(name) and value.ndim >= 2:
        return np.ascontiguousarray(np.transpose(value, np.argsort(_perm(value.ndim))))
    return value


def _nnr_value(name: str, value: Any, where: str) -> np.ndarray:
    a = np.asarray(value)
    if a.dtype.name in _FLOAT_KINDS:
        return to_nnr_layout(name, a)
    if a.dtype.kind in "iu":  # in their own dtype: the core carries every width (int64 beyond int32 as planes)
        return to_nnr_layout(name, a)
    if a.dtype.kind == "b":
        return to_nnr_layout(name, a.astype(np.int32))
    raise ModelError(f"{where}: variable {name!r} has dtype {a.dtype}, which the TensorFlow plugin cannot map to NNR")


def _is_saved_model(path: Path) -> bool:
    return path.is_dir() and (path / "saved_model.pb").is_file()


class KerasAdapter:
    """Reads and writes Keras models and SavedModel folders."""

    # -- reading -------------------------------------------------------------

    def can_read(self, source: object, /) -> bool:
        if _is_keras_model(source):
            return True
        path = Path(str(source))
        if path.is_dir():
            return _is_saved_model(path)
        if path.suffix.lower() == ".keras":
            return zipfile.is_zipfile(path)
        if path.suffix.lower() in (".h5", ".hdf5"):
            with open(path, "rb") as f:
                return f.read(8) == b"\x89HDF\r\n\x1a\n"
        return False

    def load(self, source: object) -> Any:
        """The framework object: a ``keras.Model`` or a loaded SavedModel."""
        keras, tf = _tf()
        if isinstance(source, keras.Model):
            return source
        path = Path(str(source))
        if not path.exists():
            raise ModelError(f"{path}: no such file or folder")
        if path.is_dir():
            if not _is_saved_model(path):
                raise ModelError(f"{path}: a folder without saved_model.pb is no SavedModel")
            try:
                return tf.saved_model.load(str(path))
            except Exception as e:
                raise ModelError(f"{path}: cannot load SavedModel: {type(e).__name__}: {_short(e)}") from e
        try:
            return keras.saving.load_model(str(path), compile=False)
        except Exception as e:
            raise ModelError(f"{path}: cannot load Keras model: {type(e).__name__}: {_short(e)}") from e

    def read(self, source: object, /) -> NNRModel:
        obj = self.load(source)
        where = f"keras.Model {source.name!r}" if _is_keras_model(source) else str(source)
        if _is_keras_model(obj):
            return self._read_keras(obj, where)
        return self._read_saved_model(obj, where)

    def _read_keras(self, model: Any, where: str) -> NNRModel:
        tensors: dict[str, np.ndarray] = {}
        blocks: dict[str, dict[str, str]] = {}
        for layer in _layers(model):
            for w in layer.weights:
                if w.path in tensors:
                    continue  # shared weights appear under every layer that uses them
                tensors[w.path] = _nnr_value(
                    w.path, w.numpy(), f"{where}, layer {layer.name!r} ({type(layer).__name__})"
                )
            kernel, bias = _output_kernel(layer), getattr(layer, "bias", None)
            if kernel is None or np.ndim(tensors.get(kernel.path)) < 2:  # type: ignore[arg-type]  # np.ndim(None) is 0
                continue
            if (
                bias is not None
                and hasattr(bias, "path")
                and np.ndim(tensors.get(bias.path)) == 1  # type: ignore[arg-type]  # np.ndim(None) is 0
                and tensors[kernel.path].shape[0] == tensors[bias.path].shape[0]
            ):
                blocks[layer.name] = {"weight": kernel.path, "bias": bias.path}
        _add_batch_norms(model, tensors, blocks)
        try:
            config = model.to_json()
        except Exception as e:  # subclassed models without get_config
            raise ModelError(f"{where}: the model's topology cannot be serialised (to_json): {_short(e)}") from e
        topology = Topology(TopologyStorageFormat.NNR_TPL_TEF, config.encode(), deflate=True)
        return NNRModel(tensors, blocks=blocks, topology=topology, framework="tensorflow", metadata={"kind": "keras"})

    def _read_saved_model(self, obj: Any, where: str) -> NNRModel:
        tensors: dict[str, np.ndarray] = {}
        for v in obj.variables:
            name = _variable_name(v)
            if name in tensors:
                raise ModelError(f"{where}: two variables are named {name!r}; the plugin cannot tell them apart")
            tensors[name] = _nnr_value(name, v.numpy(), where)
        topology = Topology(TopologyStorageFormat.NNR_TPL_TEF, b"")
        return NNRModel(tensors, topology=topology, framework="tensorflow", metadata={"kind": "saved_model"})

    # -- writing -------------------------------------------------------------

    def write(self, model: NNRModel, destination: Path, /, *, template: object | None = None) -> None:
        destination = Path(destination)
        keras, tf = _tf()
        suffix = destination.suffix.lower()
        if suffix in (".keras", ".h5", ".hdf5"):
            keras_model = self._keras_model(model, template)
            self._assign(keras_model.weights, model, lambda w: w.path)
            _save_file(destination, lambda p: keras_model.save(p))
            return
        if suffix:
            raise ModelError(
                f"{destination}: the TensorFlow plugin writes .keras, .h5 or SavedModel folders, not {suffix}"
            )
        # SavedModel folder
        base = self.load(template) if template is not None and not isinstance(template, keras.Model) else template
        if base is None or isinstance(base, keras.Model):
            if base is None:
                keras_model = self._keras_model(model, None)
            else:  # the caller's model object gets the weights in a clone, never itself
                keras_model = keras.models.clone_model(base) if base is template else base
            self._assign(keras_model.weights, model, lambda w: w.path)
            _save_folder(destination, lambda p: keras_model.export(p, verbose=False))
        else:
            self._assign(base.variables, model, _variable_name)
            _save_folder(destination, lambda p: tf.saved_model.save(base, p, signatures=base.signatures))

    def _keras_model(self, model: NNRModel, template: object | None) -> Any:
        keras, _ = _tf()
        if template is not None:
            obj = self.load(template)
            if not isinstance(obj, keras.Model):
                raise ModelError(f"{template}: a SavedModel cannot be a template for a Keras file; write a folder")
            return keras.models.clone_model(obj) if obj is template else obj
        topology = model.topology
        if topology is None or topology.storage_format != TopologyStorageFormat.NNR_TPL_TEF or not topology.data:
            raise ModelError(
                "the bitstream carries no Keras topology (NNR_TPL_TEF with a model config): "
                "pass the original model as template"
            )
        try:
            return keras.models.model_from_json(topology.data.decode())
        except Exception as e:
            raise ModelError(
                f"the NNR_TPL_TEF topology is no Keras model config this Keras can build: "
                f"{type(e).__name__}: {_short(e)}"
            ) from e

    @staticmethod
    def _assign(variables: Any, model: NNRModel, name_of: Any) -> None:
        missing = []
        for v in variables:
            name = name_of(v)
            if name not in model.tensors:
                missing.append(name)
                continue
            value = from_nnr_layout(name, np.asarray(model.tensors[name]))
            shape = tuple(v.shape)
            if value.shape != shape:
                raise ModelError(f"tensor {name!r}: decoded shape {value.shape} does not match the model's {shape}")
            v.assign(value.astype(v.dtype.name if hasattr(v.dtype, "name") else v.dtype))
        if missing:
            raise ModelError(f"the decoded model lacks {len(missing)} weight(s) of the TensorFlow model: {missing[:5]}")

    # -- carriage (Annex E) ---------------------------------------------------

    def embed(self, bitstream: bytes, destination: Path, /, *, template: object | None = None) -> None:
        destination = Path(destination)
        if not destination.suffix:
            self._embed_saved_model(bytes(bitstream), destination, template)
            return
        keras, _ = _tf()
        config = None
        if template is not None:
            obj = self.load(template)
            if isinstance(obj, keras.Model):
                config = obj.to_json()
        if config is None:
            topology = topology_of(bitstream)
            if topology is not None and topology.storage_format == TopologyStorageFormat.NNR_TPL_TEF and topology.data:
                config = topology.data.decode()
        suffix = destination.suffix.lower()
        if suffix == ".keras":

            def write(path: str) -> None:
                with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
                    zf.writestr(
                        "metadata.json", json.dumps({"keras_version": keras.__version__, "nnr": CARRIAGE_MEMBER})
                    )
                    zf.writestr("config.json", config or "{}")
                    zf.writestr(CARRIAGE_MEMBER, bytes(bitstream))

            _save_file(destination, write)
        elif suffix in (".h5", ".hdf5"):
            import h5py

            def write_h5(path: str) -> None:
                with h5py.File(path, "w") as f:
                    if config:
                        f.attrs["model_config"] = config
                    f.create_dataset(H5_CARRIAGE_DATASET, data=np.frombuffer(bitstream, dtype=np.uint8))

            _save_file(destination, write_h5)
        else:
            raise ModelError(f"{destination}: NNR carriage is written to .keras or .h5 files or SavedModel folders")

    @staticmethod
    def _embed_saved_model(bitstream: bytes, destination: Path, template: object | None) -> None:
        """A SavedModel folder carrying the bitstream: the template's graph
        (``saved_model.pb``, its assets) and ``assets/model.nnr`` in place of
        the ``variables/`` checkpoint.  A carrier, not a loadable SavedModel:
        decode the bitstream and write it with the original as template to
        run it."""
        if template is None or not _is_saved_model(Path(str(template))):
            raise ModelError(
                f"{destination}: NNR carriage in a SavedModel folder needs the original SavedModel "
                "as template (its graph; the bitstream holds the weights)"
            )
        source = Path(str(template))

        def write(folder: str) -> None:
            target = Path(folder)
            target.mkdir()
            for item in source.iterdir():
                if item.name == "variables":
                    continue
                (shutil.copytree if item.is_dir() else shutil.copy2)(item, target / item.name)
            (target / "assets").mkdir(exist_ok=True)
            (target / "assets" / CARRIAGE_MEMBER).write_bytes(bitstream)

        _save_folder(destination, write)

    def extract(self, source: Path, /) -> bytes | None:
        path = Path(source)
        if path.is_dir():
            carried = path / "assets" / CARRIAGE_MEMBER
            return carried.read_bytes() if carried.is_file() else None
        if path.suffix.lower() == ".keras":
            try:
                with zipfile.ZipFile(path) as zf:
                    if CARRIAGE_MEMBER not in zf.namelist():
                        return None
                    return zf.read(CARRIAGE_MEMBER)
            except zipfile.BadZipFile as e:
                raise ModelError(f"{path}: not a .keras archive: {e}") from e
        if path.suffix.lower() in (".h5", ".hdf5"):
            import h5py

            try:
                with h5py.File(path, "r") as f:
                    if H5_CARRIAGE_DATASET not in f:
                        return None
                    return f[H5_CARRIAGE_DATASET][()].tobytes()
            except OSError as e:
                raise ModelError(f"{path}: not an HDF5 file: {e}") from e
        return None


# Layers that act on each value alone: a batch norm after them still scales the
# producer's output channels (not Softmax, which mixes the channels).
_ELEMENTWISE = ("ReLU", "LeakyReLU", "ELU", "Dropout", "Identity")
_MIXING_ACTIVATIONS = ("softmax", "log_softmax")


def _elementwise(layer: Any) -> bool:
    kind = type(layer).__name__
    if kind == "Activation":
        return getattr(layer.activation, "__name__", "") not in _MIXING_ACTIVATIONS
    return kind in _ELEMENTWISE


_BN_MEMBERS = (("bn.gamma", "gamma"), ("bn.beta", "beta"), ("bn.mean", "moving_mean"), ("bn.var", "moving_variance"))


def _output_kernel(layer: Any) -> Any:
    """The variable whose rows (in NNR layout) are the layer's output channels:
    ``kernel`` (Conv*, Dense), or a SeparableConv's ``pointwise_kernel``."""
    if "Transpose" in type(layer).__name__:
        return None  # Conv*DTranspose kernels are [.., out, in]: input channels first in NNR layout
    kernel = getattr(layer, "kernel", None)
    if kernel is None:  # Keras 3 SeparableConv*: no kernel
        kernel = getattr(layer, "pointwise_kernel", None)
    return kernel if hasattr(kernel, "path") else None


def _add_batch_norms(model: Any, tensors: dict[str, np.ndarray], blocks: dict[str, dict[str, str]]) -> None:
    """Join each BatchNormalization to the block of the layer feeding it, found
    from the model's graph (never from names): directly or through layers that
    act element-wise, each used by nothing else; normalisation over the last
    (channel) axis; gamma, beta and both statistics present with the producer's
    output-channel count."""
    for layer in _layers(model):
        if type(layer).__name__ != "BatchNormalization" or len(getattr(layer, "_inbound_nodes", ())) != 1:
            continue
        variables: dict[str, Any] = {key: getattr(layer, attr, None) for key, attr in _BN_MEMBERS}
        if any(not hasattr(v, "path") or v.path not in tensors for v in variables.values()):
            continue
        axis = layer.axis if isinstance(layer.axis, int) else (layer.axis[0] if len(layer.axis) == 1 else None)
        rank = len(layer.input.shape) if hasattr(layer, "input") else None
        if axis is None or rank is None or axis not in (-1, rank - 1):
            continue
        producer = _producer(layer)
        while producer is not None and _elementwise(producer) and len(producer._outbound_nodes) == 1:
            producer = _producer(producer)
        if producer is None or len(producer._outbound_nodes) != 1:
            continue
        kernel = _output_kernel(producer)
        if kernel is None or kernel.path not in tensors or np.ndim(tensors[kernel.path]) < 2:
            continue
        channels = tensors[kernel.path].shape[0]
        if any(tensors[v.path].shape != (channels,) for v in variables.values()):
            continue
        # the producer feeds only this batch norm (checked above): one per block
        blocks.setdefault(producer.name, {"weight": kernel.path}).update({key: v.path for key, v in variables.items()})


def _producer(layer: Any) -> Any:
    """The single layer whose output ``layer`` takes, or None."""
    nodes: Any = getattr(layer, "_inbound_nodes", ())
    if len(nodes) != 1 or len(nodes[0].parent_nodes) != 1:
        return None
    return nodes[0].parent_nodes[0].operation


def _layers(model: Any) -> list[Any]:
    """Every layer with weights, nested models flattened, in model order."""
    out = []
    for layer in model.layers:
        if _is_keras_model(layer):
            out.extend(_layers(layer))
        else:
            out.append(layer)
    return out


def _variable_name(v: Any) -> str:
    name = getattr(v, "path", None) or v.name
    return name[:-2] if name.endswith(":0") else name


def _short(e: BaseException) -> str:
    """The first line of an error, or the line naming an unknown layer class."""
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    for line in lines:
        if "Could not locate" in line or "Unknown layer" in line:
            return line[:300]
    return lines[0][:300] if lines else type(e).__name__


def _save_file(destination: Path, save: Any) -> None:
    """Save through a same-suffix temporary name (Keras checks suffixes), then rename."""
    destination = destination.resolve()
    if not destination.parent.is_dir():
        raise FileNotFoundError(f"output directory {destination.parent} does not exist")
    tmp = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
    try:
        staged = tmp / destination.name
        with contextlib.redirect_stdout(io.StringIO()):
            save(str(staged))
        os.replace(staged, destination)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _save_folder(destination: Path, save: Any) -> None:
    from nnc_core.plugins import atomic_path

    with atomic_path(destination, directory=True) as staged, contextlib.redirect_stdout(io.StringIO()):
        save(str(staged))
