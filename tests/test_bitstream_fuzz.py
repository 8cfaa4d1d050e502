"""Malformed bitstreams: truncations and corruptions of real (conformance)
streams raise BitstreamError naming the unit and byte offset, never any
other exception, crash or runaway allocation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nnc_core import BitstreamError
from nnc_core.bitstream.units import read_units
from nnc_core.decoding import decode_bitstream

ROOT = Path(__file__).parent / "vectors"
_MANIFEST = json.loads((ROOT / "manifest.json").read_text())
# streams that decode on their own (updates need the state of earlier steps)
STREAMS = [(ROOT / (v["steps"][0] if "steps" in v else v)["stream"]).read_bytes() for v in _MANIFEST["vectors"]]


def _decode_or_bitstream_error(data: bytes) -> None:
    try:
        decode_bitstream(data)
    except BitstreamError as e:
        assert e.unit_index is not None and e.byte_offset is not None, str(e)
        assert f"unit {e.unit_index}" in str(e)


@pytest.mark.parametrize("index", range(len(STREAMS)))
def test_every_truncation_fails_cleanly(index):
    """Cut inside a unit: an error; cut between units: the tensors of the units kept."""
    stream = STREAMS[index]
    boundaries = {u.offset for u in read_units(stream)}
    full = [t.name for t in decode_bitstream(stream)]
    for cut in range(1, len(stream)):
        if cut in boundaries:
            names = [t.name for t in decode_bitstream(stream[:cut])]
            assert names == full[: len(names)]
        else:
            with pytest.raises(BitstreamError):
                decode_bitstream(stream[:cut])


def test_unknown_unit_type_is_named():
    stream = bytearray(STREAMS[0])
    units = read_units(stream)
    second = units[1].offset
    stream[second + 2] = (40 << 2) | (stream[second + 2] & 3)  # nnr_unit_type 40
    with pytest.raises(BitstreamError, match=rf"unsupported NNR unit type 40 \(unit 1, byte offset {second + 2}\)"):
        decode_bitstream(bytes(stream))


def test_size_running_past_the_end_is_named():
    stream = bytearray(STREAMS[0])
    stream[0:2] = (0x7FFF).to_bytes(2, "big")
    with pytest.raises(BitstreamError, match=r"runs past the end of the bitstream .*\(unit 0, byte offset 0\)"):
        decode_bitstream(bytes(stream))


@given(
    index=st.integers(0, len(STREAMS) - 1),
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)), min_size=1, max_size=4),
)
def test_corrupted_streams_fail_cleanly(index, flips):
    stream = bytearray(STREAMS[index])
    for pos, mask in flips:
        stream[pos % len(stream)] ^= mask
    _decode_or_bitstream_error(bytes(stream))


def test_declared_size_is_bounded():
    with pytest.raises(BitstreamError, match=r"tensor 'layer.weight': tensor_dimensions \[16, 12\] declare 192 elements, more than the limit of 100 \(unit 3"):
        decode_bitstream(STREAMS[0], max_elements=100)
