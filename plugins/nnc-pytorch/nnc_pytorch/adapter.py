"""PyTorch models as NNR sees them (ISO/IEC 15938-17 Annex C).

Sources: an ``nn.Module`` (its ``state_dict()``), a state dict (mapping of
names to tensors), a ``.pt``/``.pth`` file holding a state dict (loaded with
``torch.load(weights_only=True)``: no pickled code is run) or a TorchScript
archive (``torch.jit.save``, loaded with ``torch.jit.load``: TorchScript, not
Python), a ``.pt2`` file saved by ``torch.export.save`` (an
``ExportedProgram``: graph and weights).  Written
back: a state dict (``.pt``/``.pth``), or, given the original
as template, the same TorchScript archive or ``.pt2`` program with the new
weights.

Names: each NNR tensor is named by its state-dict key, which is how the
topology references it (Annex C: the state dict of a module is the model's
weights; its keys are the parameters' names in the module's structure).
Layout: PyTorch already stores output channels first (``Conv*d`` weights are
``(out, in/groups, *kernel)``, ``Linear`` ``(out, in)``), so tensors are
coded as stored, with no dimension shift.

Blocks (clause 7.3.6, NNR_PT_BLOCK): found from the model's structure, never
from names: where a module is given, each ``Conv1d/2d/3d`` and ``Linear``
module's ``weight`` with its ``bias``; a ``BatchNorm*d`` joins the block of
the conv/linear whose output reaches it through element-wise activations only
(found by tracing the module with ``torch.fx``; if the module cannot be traced,
blocks have no batch norm).  For a ``.pt2`` file the same is read from the
exported graph (``aten.conv*``/``aten.linear`` and batch-norm nodes and their
weight inputs).  A plain state dict or file has no structure: its tensors are
coded one by one.

Topology (NNR_TPL, ``topology_storage_format`` NNR_TPL_PYT, deflated): a JSON
document naming the module class (where known) and each state-dict entry with
its dtype and shape, so that a decoder restores the exact state dict (dtype
included) without the original file.  UNVERIFIED: our notes hold no text of
Annex C's topology payload; this form is our choice, the referencing of
tensors by state-dict key is what Annex C's naming implies.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nnc_core.plugins import CARRIAGE_KEY, ModelError, NNRModel, Topology, TopologyStorageFormat, write_atomically
from nnc_pytorch.plugin import SUFFIXES

__all__ = ["TorchAdapter", "load_state", "is_torchscript", "module_blocks", "CARRIAGE_KEY", "TOPOLOGY_FORMAT"]

TOPOLOGY_FORMAT = "nnc-pytorch/1"

_CONV_LINEAR = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Linear)
_BATCH_NORM = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)
# Element-wise modules and functions a batch norm may follow a conv through.
_ELEMENTWISE_MODULES = (
    torch.nn.ReLU,
    torch.nn.ReLU6,
    torch.nn.LeakyReLU,
    torch.nn.ELU,
    torch.nn.GELU,
    torch.nn.SiLU,
    torch.nn.Sigmoid,
    torch.nn.Tanh,
    torch.nn.Hardswish,
    torch.nn.Identity,
    torch.nn.Dropout,
)
_ELEMENTWISE_FUNCTIONS = {
    torch.relu,
    torch.nn.functional.relu,
    torch.nn.functional.relu6,
    torch.nn.functional.leaky_relu,
    torch.nn.functional.gelu,
    torch.nn.functional.silu,
    torch.sigmoid,
    torch.tanh,
    torch.nn.functional.elu,
    torch.nn.functional.hardswish,
    torch.nn.functional.dropout,
}
_ELEMENTWISE_METHODS = {"relu", "sigmoid", "tanh"}
_BN_ROLES = (("weight", "bn.gamma"), ("bias", "bn.beta"), ("running_mean", "bn.mean"), ("running_var", "bn.var"))

# dtypes NNR carries exactly as numpy arrays; others are widened (and restored on write) or refused.
_WIDEN = {torch.bfloat16: torch.float32, torch.bool: torch.uint8}


class TorchAdapter:
    """The :class:`~nnc_core.plugins.FrameworkAdapter` of the ``pytorch`` plugin."""

    def can_read(self, source: Any, /) -> bool:
        if isinstance(source, (torch.nn.Module, torch.export.ExportedProgram)):
            return True
        if isinstance(source, Mapping):
            return bool(source) and all(isinstance(v, torch.Tensor) for v in source.values())
        return isinstance(source, (str, os.PathLike)) and Path(source).suffix.lower() in SUFFIXES

    def read(self, source: Any, /) -> NNRModel:
        state, blocks, module_class = _load_with_structure(source)
        where = _where(source)
        tensors: dict[str, np.ndarray] = {}
        entries = []
        for name, value in state.items():
            tensors[name] = _to_numpy(value, name, where)
            entries.append([name, str(value.dtype).removeprefix("torch."), list(value.shape)])
        document = {"format": TOPOLOGY_FORMAT, "module": module_class, "state_dict": entries}
        topology = Topology(TopologyStorageFormat.NNR_TPL_PYT, json.dumps(document).encode(), deflate=True)
        return NNRModel(
            tensors, blocks=blocks, topology=topology, framework="pytorch", metadata={"module": module_class}
        )

    def write(self, model: NNRModel, destination: Path, /, *, template: Any = None) -> None:
        destination = Path(destination)
        suffix = destination.suffix.lower()
        if suffix not in SUFFIXES:
            raise ModelError(
                f"{destination}: the pytorch plugin writes {', '.join(SUFFIXES)} files, not {suffix or 'suffix-less'}"
            )
        template_path = Path(template) if isinstance(template, (str, os.PathLike)) else None
        if template is not None:
            where = _where(template)  # the user's file, also once it is loaded
            if (
                template_path is not None
            ):  # loaded once: its state gives the reference and, for .pt2/TorchScript, the graph
                template = _load_file(template_path)
            template_state = _load_with_structure(template, structure=False, where=where)[0]
            reference: dict[str, tuple[str, list[int]]] | None = {
                k: (str(v.dtype).removeprefix("torch."), list(v.shape)) for k, v in template_state.items()
            }
            what = f"template {where}"
        else:
            reference = _reference_from_topology(model)
            what = "the bitstream's topology"
        state = _state_from_model(model, reference, what, destination)
        if suffix == ".pt2":
            _write_exported(state, destination, template, what, owned=template_path is not None)
        elif suffix in (".pt", ".pth") and template_path is not None and isinstance(template, torch.jit.ScriptModule):
            _write_torchscript(state, destination, template)
        else:
            write_atomically(destination, lambda f: torch.save(state, f))

    def embed(self, bitstream: bytes, destination: Path, /, *, template: Any = None) -> None:
        """Carry a bitstream as the uint8 tensor ``__nnr__`` of a state-dict file (.pt/.pth)."""
        suffix = Path(destination).suffix.lower()
        if suffix not in (".pt", ".pth"):
            raise ModelError(
                f"{destination}: NNR carriage is in .pt or .pth state-dict files, not {suffix or 'suffix-less'} files"
            )
        payload = {CARRIAGE_KEY: torch.frombuffer(bytearray(bitstream), dtype=torch.uint8)}
        write_atomically(destination, lambda f: torch.save(payload, f))

    def extract(self, source: Path, /) -> bytes | None:
        state = load_state(source)
        value = state.get(CARRIAGE_KEY)
        return None if value is None else value.numpy().tobytes()


# -- reading ------------------------------------------------------------------


def _where(source: Any) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return f"{type(source).__module__}.{type(source).__qualname__} object"


def _load_file(path: Path) -> Any:
    if not path.is_file():
        raise ModelError(f"{path}: no such file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".pt2":
            return torch.export.load(str(path))
        if is_torchscript(path):
            return torch.jit.load(str(path), map_location="cpu")
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for corrupt or unsafe files
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ModelError(f"{path}: not a readable PyTorch {suffix} file ({type(e).__name__}: {first[:200]})") from e


def is_torchscript(path: Path) -> bool:
    """Whether ``path`` is a TorchScript archive (``torch.jit.save``): a zip with compiled code."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as zf:
            return any(name.endswith("/constants.pkl") for name in zf.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _checked_state(state: Any, where: str) -> dict[str, torch.Tensor]:
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]  # a checkpoint whose weights are under "state_dict"
    if not isinstance(state, Mapping):
        raise ModelError(f"{where}: holds a {type(state).__name__}, not a state dict (a mapping of names to tensors)")
    out: dict[str, torch.Tensor] = {}
    for name, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise ModelError(f"{where}: entry {name!r} is a {type(value).__name__}, not a tensor")
        out[str(name)] = value
    if not out:
        raise ModelError(f"{where}: the state dict is empty")
    return out


def load_state(source: Any) -> dict[str, torch.Tensor]:
    """The state dict of any source the adapter reads."""
    return _load_with_structure(source, structure=False)[0]


def _load_with_structure(
    source: Any, structure: bool = True, where: str | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, str]], str | None]:
    """State dict, blocks and module class of a source; ``where`` names it in
    errors (default: the path, or the object's type)."""
    where = where or _where(source)
    if isinstance(source, (str, os.PathLike)):
        source = _load_file(Path(source))
    if isinstance(source, torch.export.ExportedProgram):
        state = _checked_state(dict(source.state_dict), where)
        blocks = _exported_blocks(source, state) if structure else {}
        return state, blocks, None
    if isinstance(source, torch.nn.Module):
        _check_module(source)
        state = _checked_state(source.state_dict(), where)
        blocks = module_blocks(source, state) if structure else {}
        return state, blocks, f"{type(source).__module__}.{type(source).__qualname__}"
    return _checked_state(source, where), {}, None


def _check_module(module: torch.nn.Module) -> None:
    """Refuse modules whose weights are not plain tensors of the state dict."""
    for name, sub in module.named_modules():
        kind = type(sub).__module__
        if kind.startswith(("torch.ao.nn.quantized", "torch.nn.quantized")):
            raise ModelError(
                f"layer {name or '(root)'!r} ({type(sub).__qualname__}): quantized modules keep packed weights "
                "outside tensors; NNR needs float or integer tensors (dequantize the model first)"
            )
        if torch.nn.parameter.is_lazy(getattr(sub, "weight", None)):
            raise ModelError(
                f"layer {name or '(root)'!r} ({type(sub).__qualname__}): uninitialized lazy weight; run the model once first"
            )


def _to_numpy(value: torch.Tensor, name: str, where: str) -> np.ndarray:
    if value.is_sparse or value.layout != torch.strided:
        raise ModelError(f"{where}: tensor {name!r} has layout {value.layout}; only dense tensors are supported")
    if value.is_quantized or value.is_complex() or value.dtype in (torch.float8_e4m3fn, torch.float8_e5m2):
        raise ModelError(
            f"{where}: tensor {name!r} has dtype {value.dtype}, which NNR does not carry "
            "(supported: float16/32/64, bfloat16, integers, bool)"
        )
    if value.dtype.is_floating_point and value.dtype not in (
        torch.float16,
        torch.float32,
        torch.float64,
        torch.bfloat16,
    ):
        raise ModelError(f"{where}: tensor {name!r} has unsupported dtype {value.dtype}")
    value = value.detach().cpu()
    if value.dtype in _WIDEN:
        value = value.to(_WIDEN[value.dtype])
    return value.contiguous().numpy().copy()


def module_blocks(module: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> dict[str, dict[str, str]]:
    """NNR blocks from a module's structure (see the module docstring)."""
    blocks: dict[str, dict[str, str]] = {}
    out_features: dict[str, int] = {}
    for name, sub in module.named_modules():
        if isinstance(sub, _CONV_LINEAR) and f"{_prefix(name)}weight" in state:
            members = {"weight": f"{_prefix(name)}weight"}
            if sub.bias is not None:
                members["bias"] = f"{_prefix(name)}bias"
            blocks[name] = members
            out_features[name] = int(sub.weight.shape[0])
    for bn, conv in _traced_batch_norms(module).items():
        sub = module.get_submodule(bn)
        keys = {role: f"{_prefix(bn)}{attr}" for attr, role in _BN_ROLES}
        if (
            conv in blocks
            and "bn.gamma" not in blocks[conv]
            and all(k in state for k in keys.values())
            and sub.num_features == out_features[conv]
        ):
            blocks[conv].update(keys)
    return blocks


def _prefix(name: str) -> str:
    return f"{name}." if name else ""


def _traced_batch_norms(module: torch.nn.Module) -> dict[str, str]:
    """batch-norm module -> conv/linear module feeding it through element-wise ops, by ``torch.fx``."""
    import inspect

    import torch.fx

    try:
        parameters = inspect.signature(module.forward).parameters.values()
        concrete = {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}
        graph = torch.fx.symbolic_trace(module, concrete_args=concrete or None).graph
    except Exception:  # untraceable control flow: blocks without batch norm
        return {}
    kinds = {name: sub for name, sub in module.named_modules()}
    found: dict[str, str] = {}
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(kinds.get(node.target), _BATCH_NORM):
            continue
        current = node.args[0] if node.args else None
        while isinstance(current, torch.fx.Node) and len(current.users) == 1:
            if current.op == "call_module" and isinstance(kinds.get(current.target), _CONV_LINEAR):
                found[node.target] = current.target
                break
            elementwise = (
                (current.op == "call_module" and isinstance(kinds.get(current.target), _ELEMENTWISE_MODULES))
                or (current.op == "call_function" and current.target in _ELEMENTWISE_FUNCTIONS)
                or (current.op == "call_method" and current.target in _ELEMENTWISE_METHODS)
            )
            if not elementwise:
                break
            current = current.args[0]
    return found


def _exported_blocks(
    program: torch.export.ExportedProgram, state: Mapping[str, torch.Tensor]
) -> dict[str, dict[str, str]]:
    """NNR blocks from an exported graph: conv/linear nodes and batch norms fed by them."""
    signature = program.graph_signature
    names = {**signature.inputs_to_parameters, **signature.inputs_to_buffers}
    aten = torch.ops.aten
    conv_targets = {
        aten.conv1d.default,
        aten.conv2d.default,
        aten.conv3d.default,
        aten.convolution.default,
        aten.linear.default,
    }
    bn_targets = {
        aten._native_batch_norm_legit_no_training.default,
        aten.batch_norm.default,
        aten._native_batch_norm_legit_functional.default,
    }
    elementwise = {
        aten.relu.default,
        aten.relu_.default,
        aten.sigmoid.default,
        aten.tanh.default,
        aten.gelu.default,
        aten.silu.default,
        aten.hardtanh.default,
        aten.leaky_relu.default,
    }
    blocks: dict[str, dict[str, str]] = {}
    by_node: dict[Any, str] = {}
    graph = program.graph
    for node in graph.nodes:
        if node.op == "call_function" and node.target in conv_targets:
            weight = names.get(getattr(node.args[1], "name", None))
            if weight is None or weight not in state or (node.target == aten.convolution.default and node.args[6]):
                continue  # weight not a parameter, or a transposed convolution (input channels first)
            members = {"weight": weight}
            bias = names.get(getattr(node.args[2], "name", None)) if len(node.args) > 2 else None
            if bias in state:
                members["bias"] = bias
            block = weight.rsplit(".", 1)[0]
            blocks[block] = members
            by_node[node] = block
    for node in graph.nodes:
        if node.op != "call_function" or node.target not in bn_targets:
            continue
        keys: list[Any] = [
            names.get(getattr(a, "name", None)) for a in node.args[1:5]
        ]  # None: not a state tensor (checked below)
        current = node.args[0]
        while (
            current is not None
            and current not in by_node
            and len(current.users) == 1
            and current.op == "call_function"
            and current.target in elementwise
        ):
            current = current.args[0]
        block = by_node.get(current)
        if (
            block
            and all(k in state for k in keys)
            and "bn.gamma" not in blocks[block]
            and state[keys[0]].shape[0] == state[blocks[block]["weight"]].shape[0]
        ):
            blocks[block].update(dict(zip(("bn.gamma", "bn.beta", "bn.mean", "bn.var"), keys)))
    return blocks


# -- writing ------------------------------------------------------------------


def _reference_from_topology(model: NNRModel) -> dict[str, tuple[str, list[int]]] | None:
    topology = model.topology
    if topology is None or topology.storage_format != TopologyStorageFormat.NNR_TPL_PYT or not topology.data:
        return None
    try:
        document = json.loads(topology.data)
        if document.get("format") != TOPOLOGY_FORMAT:
            return None
        return {name: (dtype, list(shape)) for name, dtype, shape in document["state_dict"]}
    except (ValueError, KeyError, TypeError) as e:
        raise ModelError(f"the bitstream's PyTorch topology is not valid: {e}") from e


def _state_from_model(
    model: NNRModel, reference: dict[str, tuple[str, list[int]]] | None, what: str, destination: Path
) -> dict[str, torch.Tensor]:
    if reference is None:  # no template, no PyTorch topology: the decoded arrays as they are
        return {name: torch.from_numpy(np.array(v, order="C")) for name, v in model.tensors.items()}
    missing = [name for name in reference if name not in model.tensors]
    if missing:
        raise ModelError(f"{destination}: missing weight {missing[0]!r} of {what} ({len(missing)} missing)")
    extra = [name for name in model.tensors if name not in reference]
    if extra:
        raise ModelError(f"{destination}: tensor {extra[0]!r} is not in {what} ({len(extra)} unexpected)")
    state = {}
    for name, (dtype_name, shape) in reference.items():
        value = np.asarray(model.tensors[name])
        if list(shape) == [] and value.shape == (1,):
            value = value.reshape(())  # NNR codes a scalar as one element
        if list(value.shape) != list(shape):
            raise ModelError(f"{destination}: tensor {name!r} has shape {list(value.shape)}, {what} has {list(shape)}")
        dtype = getattr(torch, dtype_name, None)
        if not isinstance(dtype, torch.dtype):
            raise ModelError(f"{destination}: tensor {name!r}: unknown dtype {dtype_name!r} in {what}")
        state[name] = torch.from_numpy(np.array(value, order="C")).to(dtype)
    return state


def _write_torchscript(state: dict[str, torch.Tensor], destination: Path, script: torch.jit.ScriptModule) -> None:
    script.load_state_dict(state)  # our own copy, loaded from the template file

    def save(f: Any) -> None:
        buffer = io.BytesIO()
        torch.jit.save(script, buffer)
        f.write(buffer.getvalue())

    write_atomically(destination, save)


def _write_exported(
    state: dict[str, torch.Tensor], destination: Path, template: Any, what: str, *, owned: bool
) -> None:
    """Write ``template``'s graph with ``state`` as its weights; ``what`` names
    the template in errors; ``owned``: the template was loaded here."""
    if template is None:
        raise ModelError(
            f"{destination}: writing a .pt2 program needs its graph: give the original as template "
            "(nnc decode --template ORIGINAL.pt2)"
        )
    if not isinstance(template, torch.export.ExportedProgram):
        raise ModelError(f"{destination}: {what} is not a torch.export program")
    program = template
    if not owned:  # the caller's program: the weights go into a copy, never into it
        buffer = io.BytesIO()
        torch.export.save(template, buffer)
        buffer.seek(0)
        program = torch.export.load(buffer)
    with torch.no_grad():
        for name, value in program.state_dict.items():
            if name not in state:
                raise ModelError(f"{destination}: missing weight {name!r} of the template program")
            value.copy_(state[name])

    def save(f: Any) -> None:
        buffer = io.BytesIO()
        torch.export.save(program, buffer)
        f.write(buffer.getvalue())

    write_atomically(destination, save)
