"""Incremental sessions interoperate with NNCodec 2.1.3 in both directions.

A real model (part of all-MiniLM-L6-v2) is sent as its base stream and then
three updates, NNCodec's way (``compress_differences`` with a shared encoder
state, an HDSP tool when HDSP is on).  For every incremental tool NNCodec
implements: NNCodec's streams decode with ours to exactly its own decoded
tensors; our streams are byte-identical to NNCodec's; and with our
``base_model_id`` added, NNCodec decodes our streams to exactly our tensors.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

from nnc_core.incremental import UpdateDecoder, UpdateEncoder
from nnc_core.testing import reference

pytestmark = pytest.mark.reference


def _steps(minilm, rows=None, scale=0.05) -> list[dict[str, np.ndarray]]:
    """The base (embedding LayerNorm and the first attention block's query and
    value projections, or their first ``rows`` rows) and three sparse updates
    of it, as fine-tuning makes them: a few rows changed in each weight, small
    changes to the biases."""
    names = [
        n
        for n in minilm
        if n.startswith("embeddings.LayerNorm")
        or n.startswith(("encoder.layer.0.attention.self.query", "encoder.layer.0.attention.self.value"))
    ]
    base = {n: np.ascontiguousarray(minilm[n][:rows] if "self" in n else minilm[n]).astype(np.float32) for n in names}
    rng = np.random.default_rng(4)
    steps = [base]
    for k in range(3):
        update = {}
        for n, w in base.items():
            step = np.float32(w.std() * scale)
            d = (rng.standard_normal(w.shape) * step).astype(np.float32)
            if w.ndim == 2:
                d[rng.random(w.shape[0]) < 0.7] = 0  # unchanged rows
            elif k == 1:
                d[:] = 0  # an all-zero update of a tensor: not sent
            update[n] = d
        steps.append(update)
    return steps


def _nncodec():
    nnc = reference.nncodec_compression()
    from nncodec.nnc_core.hdsp.hdsp_tool import HdspTool  # type: ignore[import-not-found]  # NNCodec is installed only in the nncodec and bench environments

    return nnc, HdspTool


def _new_state() -> dict:
    return {"parameters": {}, "put_node_depth": {}, "device_id": 0, "parameter_id": {}}


TOOLS = [
    {"tca": True, "hdsp": True, "row_skipping": True},
    {"tca": True, "hdsp": False, "row_skipping": False, "use_dq": False},
    {"tca": False, "hdsp": True, "row_skipping": True, "scan_order": 2},
    {"tca": True, "hdsp": True, "row_skipping": False, "scan_order": 1, "use_dq": False, "qp": -40},
    {"tca": False, "hdsp": False, "row_skipping": False, "pre_flag": True},
]


# NNCodec's codebook search encodes a tensor once per codebook entry: tested on
# the first 48 rows of the projections, at a coarse step with larger updates.
CODEBOOK_TOOLS = [
    {"tca": True, "hdsp": True, "row_skipping": True, "codebook_mode": 1, "qp": -24},
    {"tca": True, "hdsp": False, "row_skipping": False, "codebook_mode": 2, "use_dq": False, "qp": -24},
]


@pytest.mark.parametrize("tools", TOOLS + CODEBOOK_TOOLS, ids=lambda t: ",".join(f"{k}={v}" for k, v in t.items()))
def test_update_sequence_interoperates(minilm, tools):
    steps = _steps(minilm, 48, 0.5) if "codebook_mode" in tools else _steps(minilm)
    nnc, HdspTool = _nncodec()
    hdsp = tools["hdsp"]
    args = {k: v for k, v in tools.items() if k not in ("hdsp", "pre_flag")}
    args["pre_signalling"] = tools.get("pre_flag", False)
    ours = {k: v for k, v in tools.items()}

    enc_state, dec_state = _new_state(), _new_state()
    enc_hdsp, dec_hdsp = (HdspTool(True), HdspTool(True)) if hdsp else (None, None)
    encoder, exact_encoder = UpdateEncoder(**ours), UpdateEncoder(signal_base=False, **ours)
    decoder = UpdateDecoder()
    our_dec_state, our_dec_hdsp = _new_state(), HdspTool(True) if hdsp else None
    sizes = []
    for update in steps:
        with contextlib.redirect_stdout(io.StringIO()):
            stream = bytes(
                nnc.compress(
                    update,
                    bitstream_path=None,
                    return_bitstream=True,
                    verbose=False,
                    approx_param_base=enc_state,
                    update_base_param=True,
                    compress_differences=True,
                    hdsp_tool=enc_hdsp,
                    **args,
                )
            )
            expected = nnc.decompress(
                bytearray(stream),
                approx_param_base=dec_state,
                update_base_param=True,
                hdsp_tool=dec_hdsp,
                return_hls=True,
            )[0]
        # NNCodec -> ours
        got = decoder.decode_update(stream)
        assert list(got) == list(expected)
        for name, value in expected.items():
            assert got[name].dtype == value.dtype and got[name].tobytes() == value.tobytes(), name
        # ours == NNCodec, byte for byte (without base_model_id)
        assert exact_encoder.encode_update(update) == stream
        # ours (with base_model_id) -> NNCodec
        mine = encoder.encode_update(update)
        with contextlib.redirect_stdout(io.StringIO()):
            theirs = nnc.decompress(
                bytearray(mine),
                approx_param_base=our_dec_state,
                update_base_param=True,
                hdsp_tool=our_dec_hdsp,
                return_hls=True,
            )[0]
        assert list(theirs) == list(got)
        for name, value in theirs.items():
            assert np.asarray(value).tobytes() == got[name].tobytes(), name
        sizes.append((len(stream), len(mine)))
    # the updates are sent, the all-zero bias updates of step 2 are not
    assert all(theirs_len < sizes[0][0] for theirs_len, _ in sizes[1:])
    assert decoder.reference.keys() == encoder.reference.keys()
    for name in decoder.reference:
        assert decoder.reference[name].tobytes() == encoder.reference[name].tobytes()
