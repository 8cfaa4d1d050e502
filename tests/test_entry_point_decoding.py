"""A tensor's block rows decoded in pieces from the stream's entry points
(clause 10.5) on several threads: the same bytes as the sequential decode
for every worker count, and entry points that disagree with the payload
refused with a BitstreamError naming the unit and offset."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import nnc_core
from levels import dq_stored_integers
from nnc_core import decoding
from nnc_core.bitstream.units import CompressedDataUnit, read_units
from nnc_core.bitstream.writer import write_units
from nnc_core.deepcabac import Decoder, Encoder, TensorCoding, resolve_entry_points
from nnc_core.errors import BitstreamError
from nnc_core.parallel import FanOut, ordered_map


@pytest.fixture
def pieces_counted(monkeypatch):
    """Every tensor with entry points decodes in pieces (no size threshold);
    the list counts the tensors that did."""
    monkeypatch.setattr(decoding, "ROWS_MIN_ELEMENTS", 0)
    calls: list[tuple[int, ...]] = []
    original = Decoder.decode_tensor_rows

    def spy(self, shape, *args, **kwargs):
        calls.append(tuple(shape))
        return original(self, shape, *args, **kwargs)

    monkeypatch.setattr(Decoder, "decode_tensor_rows", spy)
    return calls


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert list(a) == list(b)
    for name in a:
        assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape, name
        assert a[name].tobytes() == b[name].tobytes(), name


def _random_model(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "big.weight": rng.laplace(0, 0.05, (700, 96)).astype(np.float32),
        "sparse.weight": np.where(rng.random((300, 40)) < 0.7, 0, rng.normal(0, 0.1, (300, 40))).astype(np.float32),
        "odd.weight": rng.normal(0, 0.02, (37, 5, 3, 3)).astype(np.float32),
        "bias": rng.normal(0, 0.1, 96).astype(np.float32),
    }


ENCODINGS = [
    {"scan_order": 1},
    {"scan_order": 2, "use_dq": False},
    {"scan_order": 1, "row_skipping": True},
    {"scan_order": 3, "use_dq": False, "row_skipping": True},
    {"scan_order": 4, "qp": -24},
]


@pytest.mark.parametrize("options", ENCODINGS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_random_weights_decode_alike_on_every_worker_count(rng, pieces_counted, options):
    data = nnc_core.encode(_random_model(rng), **options)
    expected = nnc_core.decode(data, workers=1)
    assert not pieces_counted  # one worker: the sequential decoder
    for workers in (2, 3, 4):
        _same(nnc_core.decode(data, workers=workers), expected)
    assert (700, 96) in pieces_counted and (300, 40) in pieces_counted


def test_real_weights_decode_alike_on_every_worker_count(minilm, pieces_counted):
    """all-MiniLM-L6-v2: the word embedding's first rows and the first layer."""
    tensors = {"embeddings.word_embeddings.weight": minilm["embeddings.word_embeddings.weight"][:3000]}
    tensors.update({n: v for n, v in minilm.items() if n.startswith("encoder.layer.0.")})
    for options in ({"scan_order": 1}, {"scan_order": 2, "use_dq": False, "row_skipping": True}):
        data = nnc_core.encode(tensors, **options)
        expected = nnc_core.decode(data, workers=1)
        for workers in (2, 3, 4):
            _same(nnc_core.decode(data, workers=workers), expected)
    assert (3000, 384) in pieces_counted


def test_streaming_reader_decodes_a_tensor_in_pieces(rng, pieces_counted):
    data = nnc_core.encode(_random_model(rng), scan_order=1)
    expected = nnc_core.decode(data, workers=1)
    with nnc_core.open(data, workers=3) as reader:
        assert reader["big.weight"].tobytes() == expected["big.weight"].tobytes()
    assert pieces_counted == [(700, 96)]


def test_split_parts_with_entry_points_decode_alike_on_every_worker_count(minilm, pieces_counted):
    """Parts of a split tensor (partial_data_counter) are NDUs of their own,
    decoded on the pool; each part's block rows fan out as well."""
    tensors = {n: v for n, v in minilm.items() if n.startswith("encoder.layer.3.attention.self")}
    data = nnc_core.encode(tensors, scan_order=1, max_part_elements=40_000)
    counters = [u.partial_data_counter for u in read_units(data) if isinstance(u, CompressedDataUnit)]
    assert counters[:5] == [None, 4, 3, 2, 1]
    expected = nnc_core.decode(data, workers=1)
    for workers in (2, 3, 4):
        _same(nnc_core.decode(data, workers=workers), expected)
    assert (104, 384) in pieces_counted


def test_updates_decoded_with_a_state_fan_out_too(rng, pieces_counted):
    """With a decoder state a tensor's block rows fan out too (TCA base and
    HDSP history are read-only there)."""
    m0 = {"w": (0.1 * rng.standard_normal((200, 48))).astype(np.float32)}
    changed = (0.01 * rng.standard_normal((200, 48))).astype(np.float32) * (rng.random((200, 1)) < 0.3)
    m1 = {"w": m0["w"] + changed}
    # one worker: the encoder's own decode of what it sent (its mirror) does not fan out
    encoder = nnc_core.UpdateEncoder(qp=-40, scan_order=1, row_skipping=True, workers=1)
    streams = [encoder.encode(m0), encoder.encode(m1)]
    decoded = []
    for workers in (1, 2, 3):
        state = decoding.DecoderState()
        decoded.append([nnc_core.decode(s, state=state, workers=workers)["w"].tobytes() for s in streams])
    assert decoded[1] == decoded[0] and decoded[2] == decoded[0]
    assert pieces_counted == [(200, 48)] * 4


def test_the_large_tensor_threshold_keeps_small_tensors_sequential(rng, monkeypatch):
    data = nnc_core.encode(_random_model(rng), scan_order=1)
    called = []
    monkeypatch.setattr(Decoder, "decode_tensor_rows", lambda *a, **k: called.append(1))
    nnc_core.decode(data, workers=2)
    assert not called  # below ROWS_MIN_ELEMENTS


# ---- the coder's entry: ranges of block rows --------------------------------


def _payload(rng, coding: TensorCoding, shape=(200, 30)):
    levels = rng.laplace(0, 2.0, shape).astype(np.int32)
    if coding.row_skip_flag:
        levels[rng.random(shape[0]) < 0.4] = 0
    values = dq_stored_integers(levels, coding.scan_order, coding.row_skip_flag) if coding.dq_flag else levels
    enc = Encoder()
    enc.encode_bypass(5, 7)
    enc.encode_tensor(values, coding)
    eps = enc.entry_points()
    enc.encode_tensor(values[:3], TensorCoding())  # a tensor after it: the decoder goes on from the last rows
    payload = enc.finish()
    eps = resolve_entry_points(payload, eps)
    signalled = [(int(e[0]) - int(eps[0][0]), int(e[1]), int(e[2])) for e in eps[1:]]
    return payload, values, signalled


def _decode_rows(payload, values, coding, signalled, pieces, run=None):
    with Decoder(payload) as dec:
        dec.decode_bypass(7)
        got = dec.decode_tensor_rows(values.shape, coding, entry_points=signalled, pieces=pieces, run=run)
        rest = dec.decode_tensor((3, values.shape[1]), TensorCoding())
        dec.finish()
    return got, rest


@pytest.mark.parametrize("dq", [False, True])
@pytest.mark.parametrize("scan_order", [1, 2, 3, 4])
@pytest.mark.parametrize("row_skip", [False, True])
def test_rows_in_pieces_equal_the_sequential_decode(rng, dq, scan_order, row_skip):
    coding = TensorCoding(dq_flag=dq, scan_order=scan_order, row_skip_flag=row_skip)
    payload, values, signalled = _payload(rng, coding, (300, 37))
    with Decoder(payload) as dec:
        dec.decode_bypass(7)
        sequential = dec.decode_tensor(values.shape, coding)
    fan_out = FanOut(3)
    try:
        for pieces in range(1, len(signalled) + 3):
            got, rest = _decode_rows(payload, values, coding, signalled, pieces, fan_out.run)
            assert got.values.tobytes() == values.tobytes()
            assert np.array_equal(got.entry_points, sequential.entry_points)
            assert got.row_skip_flag == sequential.row_skip_flag
            assert rest.values.tobytes() == values[:3].tobytes()
    finally:
        fan_out.close()


def _corrupt(signalled, row, *, offset=None, value=None, dq_state=None):
    out = list(signalled)
    o, v, s = out[row - 1]
    out[row - 1] = (o if offset is None else offset, v if value is None else value, s if dq_state is None else dq_state)
    return out


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda s, n: _corrupt(s, 2, offset=8 * n), "block row 2 at bit .* lies past the payload"),
        (lambda s, n: _corrupt(s, 2, offset=-1), "block row 2 at bit .* comes before block row 1"),
        (lambda s, n: _corrupt(s, 3, offset=s[1][0] + 1), "entry point of block row 3 .*disagrees with the payload"),
        (lambda s, n: _corrupt(s, 2, offset=s[1][0] + 3), "entry point of block row 2 .*disagrees"),
        (lambda s, n: _corrupt(s, 2, value=s[1][1] ^ 1), "entry point of block row 2 .*disagrees"),
        (lambda s, n: _corrupt(s, 2, dq_state=s[1][2] ^ 1), "entry point of block row 2 .*disagrees"),
        (lambda s, n: _corrupt(s, 1, dq_state=9), "block row 1 .*DQ state 9"),
    ],
)
def test_corrupt_entry_points_are_refused(rng, change, message):
    coding = TensorCoding(dq_flag=True, scan_order=1)
    payload, values, signalled = _payload(rng, coding, (64, 40))
    corrupt = change(signalled, len(payload))
    for pieces in (len(signalled) + 1, 4):
        with pytest.raises(BitstreamError, match=message):
            _decode_rows(payload, values, coding, corrupt, pieces)


def test_fan_out_inside_the_pool_cannot_deadlock():
    """Every pool thread fans out at once and waits only for pieces that run."""
    fan_out = FanOut(2)
    started = threading.Barrier(2, timeout=10)

    def job(i):
        def run():
            if i < 2:
                started.wait()  # both pool threads are inside a job
            return sum(fan_out.run([lambda k=k: i * 100 + k for k in range(5)]))

        return run

    try:
        results = list(ordered_map((job(i) for i in range(6)), 2))
    finally:
        fan_out.close()
    assert results == [sum(i * 100 + k for k in range(5)) for i in range(6)]


def test_fan_out_raises_the_first_pieces_error_after_all_ended():
    fan_out = FanOut(3)
    ran = []

    def piece(k):
        def run():
            ran.append(k)
            if k in (1, 3):
                raise ValueError(k)

        return run

    try:
        with pytest.raises(ValueError, match="1"):
            fan_out.run([piece(k) for k in range(5)])
    finally:
        fan_out.close()
    assert sorted(ran) == [0, 1, 2, 3, 4]


# ---- whole streams with corrupt entry point lists ---------------------------


def _with_entry_points(data: bytes, edit) -> bytes:
    units = read_units(data)
    ndus = [u for u in units if isinstance(u, CompressedDataUnit) and len(u.header.entry_points) > 3]
    edit(ndus[0].header.entry_points)
    return write_units(units)


@pytest.mark.parametrize("workers", [1, 2, 3])
@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda eps: setattr(eps[2], "bit_offset_delta", eps[2].bit_offset_delta + (1 << 20)),
            "past the payload|disagrees",
        ),
        (lambda eps: setattr(eps[2], "bit_offset_delta", -(1 << 20)), "comes before|disagrees"),
        (lambda eps: setattr(eps[1], "value", eps[1].value ^ 16), "disagrees with the payload"),
        (lambda eps: setattr(eps[3], "bit_offset_delta", eps[3].bit_offset_delta + 1), "disagrees with the payload"),
    ],
)
def test_streams_with_corrupt_entry_points_raise_naming_unit_and_offset(rng, monkeypatch, workers, edit, message):
    monkeypatch.setattr(decoding, "ROWS_MIN_ELEMENTS", 0)
    data = nnc_core.encode(_random_model(rng), scan_order=1)
    assert write_units(read_units(data)) == data
    corrupt = _with_entry_points(data, edit)
    with pytest.raises(BitstreamError, match=message) as info:
        nnc_core.decode(corrupt, workers=workers)
    assert info.value.unit_index is not None and info.value.byte_offset is not None
    assert "entry point of block row" in str(info.value)
