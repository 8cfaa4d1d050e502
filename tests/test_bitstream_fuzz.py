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
    with pytest.raises(BitstreamError, match=r"tensor 'layer.weight' of shape \[16, 12\] is larger than the limit of 100 elements \(unit 3"):
        decode_bitstream(STREAMS[0], max_elements=100)


def test_units_rewrite_to_identical_bytes():
    """Every unit of every conformance stream (incremental steps too) re-serialises exactly."""
    from nnc_core.bitstream.units import write_units

    for path in sorted(ROOT.glob("*/*.nnr")):
        stream = path.read_bytes()
        assert write_units(read_units(stream)) == stream, path.name


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

    spm = [{"threshold": 0.5, "non_zero_ratio": 0.25, "accuracy": 0.75, "class_bitmask": 5, "class_accuracy": [0.5, 1.0]}]
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
        LayerParameterSet(UnitType.NNR_LPS, lps_quantization_method_flags=1, lps_qp_density=4, lps_quantization_parameter=-77),
    ]
    stream = write_units(units)
    parsed = read_units(stream)
    for written, read in zip(units, parsed):
        for field in written.__dataclass_fields__:
            if field not in ("offset", "size", "nnr_unit_size_flag"):
                assert getattr(read, field) == getattr(written, field), field
