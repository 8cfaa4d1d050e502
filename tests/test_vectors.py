"""Every conformance vector made by NNCodec 2.1.3 decodes to exactly the
reference decoder's tensors: bytes, dtypes, shapes and stored integers."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from nnc_core.decoding import DecoderState, decode_bitstream
from nnc_core.incremental import UpdateEncoder

ROOT = Path(__file__).parent / "vectors"
MANIFEST = json.loads((ROOT / "manifest.json").read_text())
VECTORS = {v["id"]: v for v in MANIFEST["vectors"]}


def _steps(vector: dict) -> list[dict]:
    return vector["steps"] if "steps" in vector else [vector]


def _check_step(step: dict, state: DecoderState | None) -> None:
    stream = (ROOT / step["stream"]).read_bytes()
    assert len(stream) == step["stream_bytes"]
    assert hashlib.sha256(stream).hexdigest() == step["stream_sha256"]
    decoded = decode_bitstream(stream, state)
    assert [t.name for t in decoded] == [d["name"] for d in step["decoded"]]
    for tensor, expected in zip(decoded, step["decoded"]):
        reference = np.load(ROOT / expected["file"])
        assert tensor.values.dtype == reference.dtype, tensor.name
        assert tensor.values.shape == reference.shape, tensor.name
        assert tensor.values.tobytes() == reference.tobytes(), tensor.name
        assert hashlib.sha256(tensor.values.tobytes()).hexdigest() == expected["sha256"]
        assert np.array_equal(tensor.stored, np.load(ROOT / expected["stored_integers_file"])), tensor.name
    everything = b"".join(t.values.tobytes() for t in sorted(decoded, key=lambda t: t.name))
    assert hashlib.sha256(everything).hexdigest() == step["decoded_all_sha256"]


@pytest.mark.parametrize("vector_id", sorted(VECTORS))
def test_vector_decodes_exactly(vector_id):
    vector = VECTORS[vector_id]
    state = DecoderState() if "steps" in vector else None
    for step in _steps(vector):
        _check_step(step, state)


def test_incremental_vectors_need_their_base():
    """Decoding an update without the state of the earlier steps is refused."""
    step1 = (ROOT / VECTORS["v30_incr_tca_hdsp"]["steps"][1]["stream"]).read_bytes()
    from nnc_core import BitstreamError

    with pytest.raises(BitstreamError, match="temporal context adaptation but no parent"):
        decode_bitstream(step1, DecoderState())


@pytest.mark.parametrize("vector_id", ["v30_incr_tca_hdsp", "v31_incr_plain_nodq"])
def test_incremental_vectors_reencode_exactly(vector_id):
    """NNCodec's incremental vectors, re-encoded from their inputs: same bytes."""
    vector = VECTORS[vector_id]
    args = vector["compress_args"]
    encoder = UpdateEncoder(
        signal_base=False,
        tca=args["tca"],
        hdsp=vector_id == "v30_incr_tca_hdsp",
        row_skipping=args.get("row_skipping", False),
        use_dq=args.get("use_dq", True),
    )
    for step in vector["steps"]:
        update = {name: np.load(ROOT / info["file"]) for name, info in step["inputs"].items()}
        assert encoder.encode_update(update) == (ROOT / step["stream"]).read_bytes()
