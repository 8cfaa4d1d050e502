"""Resource limits of the decoder (issue #7 item 3): a size, dimension count or
tensor size declared in a bitstream never makes the decoder allocate more than
a bounded multiple of the input, or of the limit the caller sets; errors name
the unit, byte offset and tensor (item 4)."""

from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pytest

import nnc_core
from nnc_core import BitstreamError
from nnc_core.bitstream.layout import build_ndu
from nnc_core.bitstream.units import read_units, write_unit
from nnc_core.decoding import ELEMENTS_PER_BYTE, MIN_ELEMENT_BUDGET, decode_bitstream, element_budget
from streams import start, unit_bytes, vector

MiB = 1 << 20


def _peak(fn) -> tuple[object, int]:
    """fn's result (or the exception it raised) and its peak traced allocation in bytes."""
    tracemalloc.start()
    try:
        try:
            result: object = fn()
        except Exception as e:  # noqa: BLE001 - returned to the caller
            result = e
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _stream_with_dims(dims: list[int], stored: np.ndarray | None = None, name: str = "w") -> tuple[bytes, int]:
    """A stream whose NDU declares ``dims`` over a small real payload; and the NDU's offset."""
    head, state = start()
    ndu = build_ndu(np.arange(6, dtype=np.int32).reshape(2, 3) if stored is None else stored, [name])
    ndu.header.tensor_dimensions = list(dims)
    ndu.header.tensor_dimensions_flag = True
    data = b"".join(head) + write_unit(ndu, state)
    return data, len(b"".join(head))


def test_budget_rule():
    assert element_budget(0) == MIN_ELEMENT_BUDGET == 4194304
    assert element_budget(4000) == MIN_ELEMENT_BUDGET
    assert element_budget(1_000_000) == 1024 * 1_000_000 == ELEMENTS_PER_BYTE * 1_000_000


def test_densest_payload_without_row_skipping_fits_the_rule():
    """An all-zero tensor is the most compressible payload without row skipping:
    it still needs more than 1/ELEMENTS_PER_BYTE byte per element, so every such
    stream fits the default budget whatever its size."""
    zeros = np.zeros(1 << 20, np.float32)
    for dq in (True, False):
        data = nnc_core.encode({"z": zeros}, use_dq=dq)
        assert zeros.size < ELEMENTS_PER_BYTE * len(data)  # fits even without the floor
        assert nnc_core.decode(data, max_elements=ELEMENTS_PER_BYTE * len(data))["z"].size == 1 << 20


@pytest.mark.parametrize(
    "dims",
    [
        [1 << 40, 1 << 40],  # huge dimensions
        [2] * 200,  # many dimensions (2**200 elements)
        [MIN_ELEMENT_BUDGET + 1],  # just over the floor
        [65536, 65536, 65536],
    ],
    ids=["huge", "many", "floor+1", "cube"],
)
def test_hostile_dimensions_are_refused_before_allocating(dims):
    data, ndu_offset = _stream_with_dims(dims)
    assert len(data) < 400
    error, peak = _peak(lambda: decode_bitstream(data))
    assert isinstance(error, BitstreamError), error
    shape = ", ".join(str(d) for d in dims)
    assert str(error) == (
        f"tensor 'w' of shape [{shape}] is larger than the limit of {MIN_ELEMENT_BUDGET} elements "
        f"(unit 3, byte offset {ndu_offset})"
    )
    assert (error.unit_index, error.byte_offset, error.tensor) == (3, ndu_offset, "w")
    assert peak < 1 * MiB, peak


def test_caller_limit_bounds_the_allocation():
    data, ndu_offset = _stream_with_dims([1000, 1000])
    error, peak = _peak(lambda: decode_bitstream(data, max_elements=999_999))
    assert isinstance(error, BitstreamError)
    assert "larger than the limit of 999999 elements" in str(error)
    assert peak < 1 * MiB, peak


def test_declared_size_over_a_short_payload_stops_at_its_end():
    """Within the limit, a declared size the payload cannot fill fails as truncated
    once the payload is used up, naming the tensor; time and memory stay bounded."""
    data, ndu_offset = _stream_with_dims([2048, 2048])  # 4M elements, the floor
    t0 = time.perf_counter()
    error, peak = _peak(lambda: decode_bitstream(data))
    elapsed = time.perf_counter() - t0
    assert isinstance(error, BitstreamError), error
    assert str(error).startswith("tensor 'w': ")
    assert (error.tensor, error.unit_index) == ("w", 3)
    payload_offset = read_units(data)[3].payload_offset
    assert error.byte_offset == payload_offset
    assert peak < 4 * MIN_ELEMENT_BUDGET * 4 + MiB  # int32 output and entry points: a few bytes per element
    assert elapsed < 5.0


def test_row_skipped_zero_tensor_beyond_the_floor_needs_a_larger_limit():
    """The one kind of real stream the default refuses: mostly all-zero rows under
    row skipping, more elements than the floor in a few bytes."""
    zeros = np.zeros((4096, 2048), np.float32)
    data = nnc_core.encode({"z": zeros}, row_skipping=True)
    assert len(data) < 100
    ndu = read_units(data)[-1]
    with pytest.raises(BitstreamError) as e:
        nnc_core.decode(data)
    assert str(e.value) == (
        f"tensor 'z' of shape [4096, 2048] is larger than the limit of {MIN_ELEMENT_BUDGET} elements "
        f"(unit {len(read_units(data)) - 1}, byte offset {ndu.offset})"
    )
    out = nnc_core.decode(data, max_elements=zeros.size)
    assert out["z"].shape == (4096, 2048) and not out["z"].any()


def test_budget_is_shared_by_all_tensors_of_a_stream():
    """Many NDUs, each under the limit, cannot add up past it."""
    zeros = {f"z{i}": np.zeros((1024, 1024), np.float32) for i in range(5)}
    data = nnc_core.encode(zeros, row_skipping=True)
    units = read_units(data)
    with pytest.raises(BitstreamError) as e:
        nnc_core.decode(data)
    fifth = units[-1]
    assert str(e.value) == (
        f"tensor 'z4' of shape [1024, 1024] takes the elements decoded from this bitstream past the limit of "
        f"{MIN_ELEMENT_BUDGET} ({4 * 1024 * 1024} before it; pass a larger max_elements to accept it) "
        f"(unit {len(units) - 1}, byte offset {fifth.offset})"
    )
    out = nnc_core.decode(data, max_elements=5 * 1024 * 1024)
    assert sorted(out) == sorted(zeros) and not any(v.any() for v in out.values())


def test_huge_unit_size_is_refused_without_allocating():
    head = b"".join(unit_bytes(vector("v01_default_dq"))[:3])
    # nnr_unit_size_flag 1, nnr_unit_size 2**31 - 1: a 2 GiB unit declared in 6 bytes
    data = head + bytes([0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00])
    error, peak = _peak(lambda: decode_bitstream(data))
    assert isinstance(error, BitstreamError)
    assert str(error) == (
        f"nnr_unit_size 2147483647 runs past the end of the bitstream (6 bytes left) (unit 3, byte offset {len(head)})"
    )
    assert peak < 1 * MiB


def test_every_real_stream_fits_the_default_budget():
    import json
    from pathlib import Path

    root = Path(__file__).parent / "vectors"
    manifest = json.loads((root / "manifest.json").read_text())
    count = 0
    for v in manifest["vectors"]:
        state = nnc_core.DecoderState()
        for entry in v.get("steps", [v]):
            data = (root / entry["stream"]).read_bytes()
            tensors = decode_bitstream(data, state)
            assert sum(t.values.size for t in tensors) <= element_budget(len(data))
            count += 1
    assert count == len(list(root.glob("*/*.nnr")))


def test_header_errors_in_an_ndu_name_the_tensor():
    """An inconsistent NDU header (not only a corrupt payload) names its tensor."""
    data, ndu_offset = _stream_with_dims([4, 3], name="fc.weight")  # 12 declared, 6 coded: payload too short
    with pytest.raises(BitstreamError) as e:
        decode_bitstream(data)
    assert "'fc.weight'" in str(e.value) and e.value.unit_index == 3 and e.value.byte_offset is not None
    head, state = start()
    ndu = build_ndu(np.arange(6, dtype=np.int32).reshape(2, 3), ["conv.bias"], partial_data_counter=2)
    ndu.header.element_ids = ["conv.bias"]
    other = build_ndu(np.arange(6, dtype=np.int32).reshape(2, 3), ["conv.bias"], partial_data_counter=2)
    data = b"".join(head) + write_unit(ndu, state) + write_unit(other, state)
    with pytest.raises(BitstreamError) as e:
        decode_bitstream(data)
    second = read_units(data)[4]
    assert str(e.value) == (
        "tensor 'conv.bias': partial_data_counter 2 repeats a part already received (overlapping parts; part 1 was due) "
        f"(unit 4, byte offset {second.offset})"
    )


@pytest.mark.parametrize("codebook_mode, dtype, per_element", [(0, np.float32, 13), (1, np.float64, 29)])
def test_peak_memory_per_element_of_the_budget(codebook_mode, dtype, per_element):
    """The densest stream the default budget admits (a row-skipped tensor of the
    floor's size in a few bytes) peaks under 30 bytes per element: stored int32,
    values, and for codebooks the int64 indices and float64 values."""
    w = np.zeros((2048, 2048), np.float32)
    w[0, 0] = 0.5
    data = nnc_core.encode({"w": w}, row_skipping=True, codebook_mode=codebook_mode)
    assert len(data) < 100
    out, peak = _peak(lambda: nnc_core.decode(data))
    assert out["w"].dtype == np.dtype(dtype) and abs(out["w"][0, 0] - 0.5) < 2**-9 and np.count_nonzero(out["w"]) == 1
    assert peak < per_element * MIN_ELEMENT_BUDGET, peak / MIN_ELEMENT_BUDGET


@pytest.mark.parametrize("vector_id", ["v09_multi_tensor", "v11_block_conv_bn", "v03_codebook"])
def test_every_payload_corruption_names_unit_offset_and_tensor(vector_id):
    """Flip each payload byte of each NDU: the stream decodes, or the error names the
    NDU's unit index, a byte offset inside that unit and its tensor."""
    stream = vector(vector_id)
    ndus = [u for u in read_units(stream) if hasattr(u, "payload_offset")]
    failures = 0
    for index, u in enumerate(read_units(stream)):
        if u not in ndus:
            continue
        for pos in range(u.payload_offset, u.offset + u.size):
            corrupt = bytearray(stream)
            corrupt[pos] ^= 0xFF
            try:
                decode_bitstream(bytes(corrupt))
            except BitstreamError as e:
                failures += 1
                assert e.unit_index == index and e.tensor == str(u.header.element_ids[0]), str(e)
                assert u.offset <= e.byte_offset < u.offset + u.size, str(e)
                assert (
                    f"unit {index}" in str(e) and repr(e.tensor) in str(e) and f"byte offset {e.byte_offset}" in str(e)
                )
    assert failures > 0
