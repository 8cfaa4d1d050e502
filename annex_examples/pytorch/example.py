"""Annex C (PyTorch) of ISO/IEC 15938-17, end to end on a small module.

What it shows:
* NNR tensor names are the module's state-dict keys (how an NNR bitstream
  references a PyTorch topology);
* NNR_PT_BLOCK blocks (weight, bias, batch norm) come from the module's
  structure: each Conv/Linear module, and the BatchNorm its output feeds;
* the NNR_TPL unit signals NNR_TPL_PYT and lists the state dict (dtypes,
  shapes), so the decoder rebuilds a state dict that loads into the module.

Run: python annex_examples/pytorch/example.py   (needs nnc-core and nnc-pytorch)
"""

import tempfile
from pathlib import Path

import torch

from nnc_core.bitstream.units import TopologyStorageFormat
from nnc_core.model import decode_model, encode_model
from nnc_core.plugins import read_model, write_model

torch.manual_seed(0)
net = torch.nn.Sequential(
    torch.nn.Conv2d(3, 8, 3),
    torch.nn.ReLU(),
    torch.nn.BatchNorm2d(8),
    torch.nn.Flatten(),
    torch.nn.Linear(8 * 6 * 6, 10),
).eval()
with torch.no_grad():  # give the batch norm non-trivial statistics
    net[2].running_mean.uniform_(-1, 1)
    net[2].running_var.uniform_(0.5, 2)

nnr = read_model(net)
print("tensors (state-dict keys):", list(nnr.tensors))
print("blocks from the module structure:", nnr.blocks)
assert nnr.topology.storage_format == TopologyStorageFormat.NNR_TPL_PYT

# Lossless: every float tensor sent as raw float (lossy: drop raw_float, set qp).
bitstream = encode_model(nnr, raw_float=[n for n, v in nnr.tensors.items() if v.dtype.kind == "f"])
print(f"bitstream: {len(bitstream)} bytes")

with tempfile.TemporaryDirectory() as tmp:
    out = Path(tmp) / "restored.pth"
    write_model(decode_model(bitstream), out)  # no template needed: the topology lists the state dict
    restored = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3),
        torch.nn.ReLU(),
        torch.nn.BatchNorm2d(8),
        torch.nn.Flatten(),
        torch.nn.Linear(8 * 6 * 6, 10),
    ).eval()
    restored.load_state_dict(torch.load(out, weights_only=True))

x = torch.randn(2, 3, 8, 8)
with torch.no_grad():
    same = torch.equal(net(x), restored(x))
print("outputs identical:", same)
