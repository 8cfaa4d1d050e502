"""NNCodec's block-scan bitstreams (entry points in every NDU header) decode in
pieces of block rows on several threads to exactly NNCodec's own tensors."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

from nnc_core import decoding
from nnc_core.decoding import decode_bitstream
from nnc_core.deepcabac import Decoder
from nnc_core.testing import reference

pytestmark = pytest.mark.reference


@pytest.mark.parametrize(
    "args",
    [
        {"scan_order": 1},
        {"scan_order": 2, "use_dq": False, "row_skipping": True},
        {"scan_order": 3, "qp": -32},
    ],
    ids=lambda a: ",".join(f"{k}={v}" for k, v in a.items()),
)
def test_nncodec_entry_points_decode_in_pieces(minilm, monkeypatch, args):
    monkeypatch.setattr(decoding, "ROWS_MIN_ELEMENTS", 0)  # every block-scanned tensor in pieces
    pieces = []
    original = Decoder.decode_tensor_rows

    def spy(self, shape, *a, **k):
        pieces.append(tuple(shape))
        return original(self, shape, *a, **k)

    monkeypatch.setattr(Decoder, "decode_tensor_rows", spy)
    params = {n: v for n, v in minilm.items() if n.startswith(("embeddings.LayerNorm", "encoder.layer.0."))}
    nnc = reference.nncodec_compression()
    with contextlib.redirect_stdout(io.StringIO()):
        stream = bytes(nnc.compress(params, bitstream_path=None, return_bitstream=True, verbose=False, **args))
        expected = nnc.decompress(bytearray(stream))
    for workers in (1, 2, 3, 4):
        ours = {t.name: t.values for t in decode_bitstream(stream, workers=workers)}
        assert list(ours) == list(expected)
        for name, value in expected.items():
            value = np.asarray(value)
            assert ours[name].dtype == value.dtype and ours[name].tobytes() == value.tobytes(), (workers, name)
    assert (1536, 384) in pieces  # the intermediate dense layer's weight, 1536 rows
