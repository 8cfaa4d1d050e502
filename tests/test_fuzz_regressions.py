"""Every bug the fuzzers (fuzz/) found, as a regression test.  The inputs
themselves are under fuzz/regressions/ (replayed by `tox -e fuzz` too)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from nnc_core import BitstreamError, EncodeError
from nnc_core.bitstream.units import read_units
from nnc_core.decoding import decode_bitstream
from nnc_core.deepcabac import Decoder, TensorCoding, encode_tensor

REGRESSIONS = Path(__file__).resolve().parent.parent / "fuzz" / "regressions"
PYTHON_INPUTS = sorted((REGRESSIONS / "python").iterdir())


def test_regression_inputs_are_there():
    assert [p.name for p in PYTHON_INPUTS] == ["codebook-index-out-of-range", "zero-dimension-beside-huge-ones"]
    assert [p.name for p in sorted((REGRESSIONS / "c").iterdir())] == ["dq-any-index-int32-min"]


@pytest.mark.parametrize("path", PYTHON_INPUTS, ids=[p.name for p in PYTHON_INPUTS])
def test_python_regression_inputs_fail_cleanly(path):
    data = path.read_bytes()
    with pytest.raises(BitstreamError) as e:
        decode_bitstream(data)
    assert e.value.unit_index is not None and e.value.byte_offset is not None and e.value.tensor is not None


def test_codebook_index_outside_the_codebook():
    """atheris, fuzz_decode.py: a profile-0 codebook tensor (the binarization is not
    limited to the codebook there) decoded a stored integer whose codebook index
    was out of range, and reconstruction raised IndexError."""
    data = (REGRESSIONS / "python" / "codebook-index-out-of-range").read_bytes()
    ndu = read_units(data)[3]
    with pytest.raises(BitstreamError) as e:
        decode_bitstream(data)
    assert str(e.value) == (
        "tensor 'layer.weight': stored integer -2 at position 3 is outside the codebook of 3 entries "
        f"(CbZeroOffset 1) (unit 3, byte offset {ndu.payload_offset})"
    )
    assert (e.value.unit_index, e.value.tensor) == (3, "layer.weight")


def test_empty_tensor_with_huge_dimensions():
    """atheris, long run: a tensor with a zero dimension has no elements, so it passed
    the element budget, but numpy refused to allocate its shape (the other
    dimensions multiply past 2**63) with a ValueError.  Now refused as too large."""
    data = (REGRESSIONS / "python" / "zero-dimension-beside-huge-ones").read_bytes()
    dims = read_units(data)[3].header.tensor_dimensions
    assert 0 in dims and len(dims) == 50
    with pytest.raises(BitstreamError) as e:
        decode_bitstream(data)
    assert str(e.value) == (
        f"tensor 'layer.weight' of shape {dims}: its non-zero dimensions span more than the limit of 4194304 "
        "elements (unit 3, byte offset 18)"
    )
    # the same with only a few, small dimensions: an empty tensor decodes
    from nnc_core.bitstream.layout import build_ndu
    from nnc_core.bitstream.units import write_unit
    from streams import start

    head, state = start()
    ndu = build_ndu(np.zeros((0, 3), np.int32), ["e"])
    out = decode_bitstream(b"".join(head) + write_unit(ndu, state))
    assert [(t.name, t.values.shape) for t in out] == [("e", (0, 3))]


def test_dq_any_index_int32_min_in_an_odd_state_is_refused():
    """libFuzzer, fuzz_deepcabac.c round-trip mode: with dq_any_index, INT32_MIN in
    an odd DQ state was coded as the level whose reconstruction index is
    -(2**31 + 1), which no decoder accepts; the encoder now refuses it."""
    coding = TensorCoding(dq_flag=True, dq_any_index=True)
    # 2, 2 (levels 1, 1) lead from state 0 through 2 to state 3
    with pytest.raises(EncodeError, match=r"value -2147483648 at position 2 cannot be coded"):
        encode_tensor(np.array([2, 2, -(2**31)], np.int32), coding)
    # in an even state it is an index of its own and round-trips
    payload = encode_tensor(np.array([-(2**31), 4], np.int32), coding)
    assert Decoder(payload).decode_tensor((2,), coding).values.tolist() == [-(2**31), 4]


@given(
    st.lists(
        st.sampled_from([0, 1, -1, 2, -2, 3, 2**31 - 1, 2**31 - 2, 2**31 - 3, -(2**31), -(2**31) + 1, -(2**31) + 2]),
        min_size=1,
        max_size=12,
    )
)
@example([2, 2, 2**31 - 1])
@example([2, 2, -(2**31) + 1])
def test_dq_any_index_output_always_decodes(values):
    """Whatever the encoder accepts with dq_any_index decodes, to indices of the same sign."""
    coding = TensorCoding(dq_flag=True, dq_any_index=True)
    a = np.array(values, np.int32)
    try:
        payload = encode_tensor(a, coding)
    except EncodeError:
        return
    out = Decoder(payload).decode_tensor(a.shape, coding).values
    assert all((x >= 0) == (y >= 0) or y == 0 for x, y in zip(a.tolist(), out.tolist()))
    assert np.all(np.abs(out.astype(np.int64) - a) <= 1)
