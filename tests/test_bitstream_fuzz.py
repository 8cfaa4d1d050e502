"""Malformed bitstreams: truncations and corruptions of real (conformance)
streams, and of streams with aggregate units, layer parameter sets, split
tensors, multi-element NDUs and tensors in their own dtypes (exact floats as
bit-pattern codebooks and int32 planes), raise BitstreamError naming the unit and byte
offset, never any other exception, crash or runaway allocation; randomly
structured streams decode exactly."""

from __future__ import annotations

import json
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import nnc_core
from nnc_core import BitstreamError
from nnc_core.bitstream.layout import build_ndu, concatenate_elements, split_tensor
from nnc_core.bitstream.units import aggregate_unit, read_units, write_unit, write_units
from nnc_core.decoding import decode_bitstream
from streams import expected_values, lps, start, stored_for, structured_stream, unit_bytes, vector

ROOT = Path(__file__).parent / "vectors"
_MANIFEST = json.loads((ROOT / "manifest.json").read_text())
# streams that decode on their own (updates need the state of earlier steps)
STREAMS = [(ROOT / (v["steps"][0] if "steps" in v else v)["stream"]).read_bytes() for v in _MANIFEST["vectors"]]


def _structured_streams() -> list[bytes]:
    """Streams with every structure tool (see streams.structured_stream), and
    conformance streams whose units after the MPS sit in one aggregate unit."""
    rng = np.random.default_rng(7)
    out = [structured_stream(rng)[0] for _ in range(2)]
    for vector_id in ("v09_multi_tensor", "v11_block_conv_bn", "v13_scan16_entry_points"):
        units = unit_bytes(vector(vector_id))
        out.append(b"".join(units[:2]) + aggregate_unit(units[2:]))
    own_dtypes = {
        "bf16": rng.normal(0, 0.1, (6, 5)).astype(ml_dtypes.bfloat16),
        "fp8": rng.normal(0, 0.5, 7).astype(ml_dtypes.float8_e4m3fn),
        "f64": rng.normal(0, 1, (3, 2)),
        "ids": np.array([2**40, -1], np.int64),
        "u8": np.arange(4, dtype=np.uint8),
    }
    out.append(nnc_core.encode(own_dtypes, lossless=True))
    return out


STRUCTURED = _structured_streams()


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


@pytest.mark.parametrize("index", range(len(STRUCTURED)))
def test_every_truncation_of_structured_streams_fails_cleanly(index):
    """Cut inside a unit (aggregate units included): an error naming where; cut
    between units: the tensors of the units kept, or an incomplete split tensor."""
    stream = STRUCTURED[index]
    boundaries = {u.offset for u in read_units(stream)}
    full = [t.name for t in decode_bitstream(stream)]
    for cut in range(1, len(stream)):
        if cut in boundaries:
            try:
                names = [t.name for t in decode_bitstream(stream[:cut])]
            except BitstreamError as e:
                assert "is incomplete: the bitstream ends before the part" in str(e), str(e)
                assert (e.unit_index, e.byte_offset) == (len(read_units(stream[:cut])), cut)
                continue
            assert names == full[: len(names)]
        else:
            with pytest.raises(BitstreamError) as e:
                decode_bitstream(stream[:cut])
            assert e.value.unit_index is not None and e.value.byte_offset is not None


@st.composite
def _tensor_plan(draw, index: int):
    """One tensor: shape, dimension shift, DQ, scan, parts, QP offset; or a multi-element NDU."""
    ndim = draw(st.integers(1, 3))
    shape = tuple(draw(st.lists(st.integers(1, 20 if ndim <= 2 else 8), min_size=ndim, max_size=ndim)))
    return {
        "name": f"t{index}",
        "shape": shape,
        "shift": draw(st.integers(0, ndim - 1)) if ndim > 1 else 0,
        "dq": draw(st.booleans()),
        "scan": draw(st.integers(0, 2)),
        "parts": draw(st.integers(1, 4)),
        "counter_for_one": draw(st.booleans()),  # a single part with partial_data_counter 1
        "qp_offset": draw(st.integers(-32, 31)),
        "integer": draw(st.integers(0, 5)) == 0,
        "elements": draw(st.integers(0, 3)),  # 2 or 3: a multi-element NDU
        "lps": draw(st.none() | st.tuples(st.integers(0, 5), st.integers(-100, 60))),  # steps stay finite
    }


@given(
    seed=st.integers(0, 2**32 - 1),
    density=st.integers(0, 5),
    plans=st.integers(1, 4).flatmap(lambda n: st.tuples(*[_tensor_plan(i) for i in range(n)])),
    grouping=st.lists(st.integers(1, 4), min_size=1, max_size=12),
)
def test_randomly_structured_streams_decode_exactly(seed, density, plans, grouping):
    """Random tensors split over NDUs, with shifted first dimensions, multi-element
    NDUs and layer parameter sets, in runs of units wrapped into aggregate units."""
    rng = np.random.default_rng(seed)
    head, state = start(qp_density=density)
    units: list[bytes] = []
    expected: list[tuple[str, np.ndarray, int | None, int]] = []
    for plan in plans:
        if plan["lps"] is not None:
            units.append(write_unit(lps(*plan["lps"]), state))
        d, base = state.quantization_base()
        qp = None if plan["integer"] else base + plan["qp_offset"]
        shape, shift = plan["shape"], plan["shift"]
        if plan["elements"] >= 2:
            axis = len(shape) - 1
            elements = {
                f"{plan['name']}.{j}": stored_for(rng, shape, dq=False, scan_order=0, shift=0)
                for j in range(plan["elements"])
            }
            tensor, ids, mapping = concatenate_elements(elements, axis)
            units.append(
                write_unit(
                    build_ndu(tensor, ids, qp=qp, quantization_base=(d, base), tensor_dimension_mapping=mapping), state
                )
            )
            expected += [(n, e, qp, d) for n, e in elements.items()]
            continue
        axis = shift if len(shape) > 1 else 0
        count = min(plan["parts"], shape[axis])
        whole = []
        for part in split_tensor(np.zeros(shape), count, first_tensor_dimension_shift=shift):
            dq = plan["dq"] and qp is not None
            stored = stored_for(rng, part.values.shape, dq=dq, scan_order=plan["scan"], shift=shift)
            whole.append(stored)
            counter = part.partial_data_counter if count > 1 or plan["counter_for_one"] else None
            ndu = build_ndu(
                stored,
                [plan["name"]],
                qp=qp,
                quantization_base=(d, base),
                dq_flag=dq,
                scan_order=plan["scan"],
                first_tensor_dimension_shift=shift,
                partial_data_counter=counter,
            )
            units.append(write_unit(ndu, state))
        expected.append((plan["name"], np.concatenate(whole, axis=axis), qp, d))
    # wrap runs of units into aggregate units (runs of one stay as they are)
    body, at = [], 0
    for run in grouping:
        chunk = units[at : at + run]
        body.append(aggregate_unit(chunk) if len(chunk) >= 2 else b"".join(chunk))
        at += run
    body.append(b"".join(units[at:]))
    stream = b"".join(head) + b"".join(body)

    tensors = decode_bitstream(stream)
    assert [t.name for t in tensors] == [e[0] for e in expected]
    for t, (name, stored, qp, d) in zip(tensors, expected):
        assert t.qp == qp
        assert np.array_equal(t.stored, stored), name
        want = stored if qp is None else expected_values(stored, qp, d)
        assert t.values.dtype == want.dtype and t.values.tobytes() == want.tobytes(), name
    assert write_units(read_units(stream)) == stream


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


def test_hdsp_without_history_is_a_bitstream_error():
    """Found by the fuzz test below: a corrupted header bit (v30's first stream
    then signals a parent) makes the payload's HDSP flag present and set, but
    no earlier version of the tensor was decoded."""
    stream = bytearray(STREAMS[23])
    stream[9] ^= 32
    with pytest.raises(
        BitstreamError,
        match=r"history-dependent significance \(HDSP\) but no history was given \(unit \d+, byte offset \d+\)",
    ):
        decode_bitstream(bytes(stream))


@example(index=23, flips=[(9, 32)])
@given(
    index=st.integers(0, len(STREAMS) + len(STRUCTURED) - 1),
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)), min_size=1, max_size=4),
)
def test_corrupted_streams_fail_cleanly(index, flips):
    """Conformance streams, then the structured ones (aggregate units, splits, LPS)."""
    stream = bytearray((STREAMS + STRUCTURED)[index])
    for pos, mask in flips:
        stream[pos % len(stream)] ^= mask
    _decode_or_bitstream_error(bytes(stream))


def test_declared_size_is_bounded():
    with pytest.raises(
        BitstreamError,
        match=r"tensor 'layer.weight' of shape \[16, 12\] is larger than the limit of 100 elements \(unit 3",
    ):
        decode_bitstream(STREAMS[0], max_elements=100)


def test_units_rewrite_to_identical_bytes():
    """Every unit of every conformance stream (incremental steps too), and of the
    structured streams, re-serialises exactly."""

    for path in sorted(ROOT.glob("*/*.nnr")):
        stream = path.read_bytes()
        assert write_units(read_units(stream)) == stream, path.name
    for stream in STRUCTURED:
        assert write_units(read_units(stream)) == stream


def test_parameter_sets_with_metadata_round_trip():
    """MPS/LPS fields NNCodec never writes (base model id, metric, performance maps) survive writing and reading."""
    from nnc_core.bitstream.units import (
        LayerParameterSet,
        ModelParameterSet,
        StartUnit,
        TopologyUnit,
        UnitType,
        write_units,
    )

    spm = [
        {"threshold": 0.5, "non_zero_ratio": 0.25, "accuracy": 0.75, "class_bitmask": 5, "class_accuracy": [0.5, 1.0]}
    ]
    dpm = [{"mse_threshold": 0.125, "accuracy": 0.5, "reduction_ratio": 2.0, "class_accuracy": [0.25]}]
    units = [
        StartUnit(UnitType.NNR_STR, general_profile_idc=1),
        ModelParameterSet(
            UnitType.NNR_MPS,
            topology_carriage_flag=True,
            mps_sparsification_flag=True,
            mps_decomposition_performance_map_flag=True,
            mps_quantization_method_flags=1,
            base_model_id_present_flag=True,
            validation_set_performance_present_flag=True,
            mps_parent_signalling_enabled_flag=True,
            nnr_pre_flag=True,
            base_model_id="resnet50-v1.5@sha256:0f0f",
            performance_metric_type="top1_accuracy",
            mps_qp_density=3,
            mps_quantization_parameter=-1000,
            performance_maps={"sparsification": spm, "decomposition": dpm},
            validation_set_performance=0.75,
        ),
        TopologyUnit(UnitType.NNR_TPL, topology_storage_format=3, topology_data=b"\x00"),
        LayerParameterSet(
            UnitType.NNR_LPS, lps_quantization_method_flags=1, lps_qp_density=4, lps_quantization_parameter=-77
        ),
    ]
    stream = write_units(units)
    parsed = read_units(stream)
    for written, read in zip(units, parsed):
        for field in written.__dataclass_fields__:
            if field not in ("offset", "size", "nnr_unit_size_flag"):
                assert getattr(read, field) == getattr(written, field), field
