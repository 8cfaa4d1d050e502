"""Test data for stream structure: bitstreams with aggregate units, layer
parameter sets, split tensors, multi-element NDUs and dimension shifts.

Streams are assembled from nnc_core's unit writer and NDU builder; the
expected values are computed here from the stored integers, independently of
the decoder (clause 9 step size written out again).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from levels import dq_stored_integers, laplace_levels
from nnc_core.bitstream.layout import build_ndu, coded_view, concatenate_elements, decoded_view, split_tensor
from nnc_core.bitstream.units import (
    LayerParameterSet,
    ModelParameterSet,
    ParseState,
    StartUnit,
    TopologyUnit,
    UnitType,
    aggregate_unit,
    read_units,
    write_unit,
)

VECTORS = Path(__file__).parent / "vectors"


def vector(vector_id: str) -> bytes:
    return (VECTORS / vector_id / "stream.nnr").read_bytes()


def unit_bytes(stream: bytes) -> list[bytes]:
    """The serialised units of a bitstream, one bytes object each (top level)."""
    return [stream[u.offset : u.offset + u.size] for u in read_units(stream)]


def step(qp: int, qp_density: int) -> np.float32:
    """Step size of clause 9: (k + qp mod k) * 2**(floor(qp / k) - d), k = 2**d."""
    k = 2**qp_density
    return np.float32((k + qp % k) * 2.0 ** (qp // k - qp_density))


def expected_values(stored: np.ndarray, qp: int, qp_density: int) -> np.ndarray:
    return step(qp, qp_density) * stored.astype(np.float32)


def start(
    *,
    qp_density: int = 2,
    qp: int = 0,
    parent_signalling: bool = False,
    indexed: bool = False,
    topology: TopologyUnit | None = None,
) -> tuple[list[bytes], ParseState]:
    """STR, MPS and TPL units of a profile-1 stream, and the parse state after them
    (``indexed``: ``mps_topology_indexed_reference_flag``; ``topology``: the TPL unit,
    an empty one unless given)."""
    state = ParseState()
    units = [
        StartUnit(UnitType.NNR_STR, general_profile_idc=1),
        ModelParameterSet(
            UnitType.NNR_MPS,
            topology_carriage_flag=True,
            mps_quantization_method_flags=1,
            mps_qp_density=qp_density,
            mps_quantization_parameter=qp,
            mps_parent_signalling_enabled_flag=parent_signalling,
            mps_topology_indexed_reference_flag=indexed,
        ),
        topology if topology is not None else TopologyUnit(UnitType.NNR_TPL, topology_data=b"\x00"),
    ]
    return [write_unit(u, state) for u in units], state


def lps(qp_density: int, qp: int) -> LayerParameterSet:
    return LayerParameterSet(
        UnitType.NNR_LPS, lps_quantization_method_flags=1, lps_qp_density=qp_density, lps_quantization_parameter=qp
    )


def stored_for(
    rng: np.random.Generator,
    shape: tuple[int, ...],
    *,
    dq: bool,
    scan_order: int,
    shift: int,
    row_skip: bool = False,
    scale: float = 3.0,
) -> np.ndarray:
    """Stored integers of a tensor of ``shape`` that are valid when coded in its
    coded view (dimension ``shift`` first) with the given DQ, scan and row skipping."""
    coded_levels = laplace_levels(rng, tuple(coded_view(np.empty(shape), shift).shape), scale, zero_rows=0.2)
    coded = dq_stored_integers(coded_levels, scan_order, row_skip) if dq else coded_levels.astype(np.int32)
    return decoded_view(coded, shift)


def structured_stream(rng: np.random.Generator) -> tuple[bytes, dict[str, tuple[np.ndarray, int | None, int]]]:
    """A stream using every structure tool at once, and its expected content.

    Returns the bitstream and ``name -> (stored integers, qp, qp_density)``
    in decoding order (qp None: integer tensor).
    """
    parts, state = start(qp_density=2, qp=0)
    expected: dict[str, tuple[np.ndarray, int | None, int]] = {}

    # a weight split over three NDUs, coded with its last dimension as rows
    w = np.zeros((3, 4, 21), dtype=np.int32)
    for part in split_tensor(w, 3, first_tensor_dimension_shift=2):
        stored = stored_for(rng, part.values.shape, dq=True, scan_order=1, shift=2)
        w[..., part.start : part.stop] = stored
        ndu = build_ndu(
            stored,
            ["conv.weight"],
            qp=-30,
            quantization_base=state.quantization_base(),
            dq_flag=True,
            scan_order=1,
            first_tensor_dimension_shift=2,
            partial_data_counter=part.partial_data_counter,
        )
        parts.append(write_unit(ndu, state))
    expected["conv.weight"] = (w, -30, 2)

    # an aggregate unit: a layer parameter set and a two-element NDU under it
    inner = [write_unit(lps(4, -100), state)]
    a = stored_for(rng, (5, 6), dq=False, scan_order=0, shift=0)
    b = stored_for(rng, (5, 3), dq=False, scan_order=0, shift=0)
    tensor, ids, mapping = concatenate_elements({"fc.weight": a, "fc.extra": b}, axis=1)
    inner.append(
        write_unit(
            build_ndu(
                tensor, ids, qp=-90, quantization_base=state.quantization_base(), tensor_dimension_mapping=mapping
            ),
            state,
        )
    )
    expected["fc.weight"] = (a, -90, 4)
    expected["fc.extra"] = (b, -90, 4)
    ints = rng.integers(-40, 40, size=(7,)).astype(np.int32)
    inner.append(write_unit(build_ndu(ints, ["counts"]), state))
    expected["counts"] = (ints, None, 4)
    parts.append(aggregate_unit(inner))

    # after the aggregate unit the LPS is still in force
    bias = stored_for(rng, (9,), dq=False, scan_order=0, shift=0)
    for part in split_tensor(bias, [4, 5]):
        ndu = build_ndu(
            part.values,
            ["fc.bias"],
            qp=-95,
            quantization_base=state.quantization_base(),
            partial_data_counter=part.partial_data_counter,
        )
        parts.append(write_unit(ndu, state))
    expected["fc.bias"] = (bias, -95, 4)
    return b"".join(parts), expected
