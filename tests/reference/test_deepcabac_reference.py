"""Byte equality with the reference software's DeepCABAC (NNCodec 2.1.3).

For the same stored integers and settings our encoder must produce exactly
NNCodec's bytes, NNCodec's decoder must read ours, ours must read NNCodec's,
and the entry points we report must equal the ones NNCodec derives.
Runs in the tox environment ``nncodec`` (numpy<2 and ``nncodec`` installed).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from levels import dq_stored_integers, laplace_levels, matrix_shape
from nnc_core.deepcabac import Decoder, Encoder, TensorCoding
from nnc_core.testing import reference

pytestmark = pytest.mark.reference


def check_against_reference(values, coding, *, base=None, history=None, qp_offset=None):
    """Assert byte equality and cross-decoding for one tensor."""
    enc = Encoder()
    if qp_offset is not None:
        enc.encode_bypass(*qp_offset)
    enc.encode_tensor(values, coding, base=base, history=history)
    ours = enc.finish()
    theirs = reference.encode(values, coding, base=base, history=history, qp_offset=qp_offset)
    assert ours == theirs, f"payloads differ ({len(ours)} vs {len(theirs)} bytes)"

    dec = Decoder(theirs)
    if qp_offset is not None:
        assert dec.decode_bypass(qp_offset[1], signed=True) == qp_offset[0]
    result = dec.decode_tensor(values.shape, coding, base=base, history=history)
    assert dec.finish() == len(theirs)
    assert np.array_equal(result.values, values)

    decoded, consumed = reference.decode(
        ours,
        values.shape,
        coding,
        base=base,
        history=history,
        eps=result.entry_points,
        qp_bits=None if qp_offset is None else qp_offset[1],
    )
    assert consumed == len(ours)
    assert np.array_equal(decoded, values)

    if len(result.entry_points) > 1 and base is None and history is None and qp_offset is None:
        assert np.array_equal(
            reference.entry_points(ours, values.shape, coding), reference.entry_point_ints(result.entry_points)
        )
    return ours


SHAPES = [(16, 12), (70, 40), (33, 20), (7,), (5, 3, 2, 2), (200, 65), (1, 9), (9, 1)]
SETTINGS = list(itertools.product([False, True], [0, 1, 2, 3, 4], [1, 10], [0, 1], [False, True], [False, True]))


@pytest.mark.parametrize("dq,so,unary,profile,row_skip,param_opt", SETTINGS)
def test_every_setting_matches_reference(rng, dq, so, unary, profile, row_skip, param_opt):
    coding = TensorCoding(
        dq_flag=dq,
        scan_order=so,
        cabac_unary_length_minus1=unary,
        general_profile_idc=profile,
        row_skip_flag=row_skip,
        param_opt=param_opt,
    )
    for shape in SHAPES:
        h, w = matrix_shape(shape)
        if so and len(shape) == 2 and (h == 1 or w == 1):
            continue  # NNCodec's NDU writer cannot produce these (KeyError); its coder is fine but unused
        k = laplace_levels(rng, shape, 3.0, zero_rows=0.3)
        values = dq_stored_integers(k, so, row_skip and profile == 1) if dq else k.astype(np.int32)
        check_against_reference(values, coding, qp_offset=(-38, 8) if dq else None)


@pytest.mark.parametrize("dq", [False, True])
@pytest.mark.parametrize("so", [0, 2])
@pytest.mark.parametrize("hdsp", [False, True])
def test_incremental_tools_match_reference(rng, dq, so, hdsp):
    shape = (48, 40)
    base = laplace_levels(rng, shape, 2.0, zero_rows=0.2)
    base = dq_stored_integers(base, so) if dq else base.astype(np.int32)
    history = base != 0
    update = laplace_levels(rng, shape, 1.0, zero_rows=0.2)
    update[rng.random(shape) < 0.5] = 0
    values = dq_stored_integers(update, so, True) if dq else update.astype(np.int32)
    coding = TensorCoding(
        dq_flag=dq, scan_order=so, parent_node_id_present_flag=True, hdsp_flag=hdsp, row_skip_flag=True
    )
    check_against_reference(values, coding, base=base, history=history)  # TCA (+ HDSP)
    check_against_reference(values, coding, history=history)  # HDSP only / flag coded as 0


@pytest.mark.parametrize("dq", [False, True])
@pytest.mark.parametrize("unary", [10, 17, 18])
def test_arbitrary_payload_bytes_decode_as_reference(rng, dq, unary):
    """Both decoders read the same levels from random bytes.

    Random payloads reach bin sequences real streams rarely have (long
    greater-than runs at p = 1/2, improbable LPS bins), so this checks the
    decoder's level loop in its three copies: 11 flags, budget mode up to 18
    flags, per-bin tests above.  It fails when the read-ahead budget is far
    too small (2 bits instead of 32); the margin of the 32 rests on the
    worst-case count in dec_engine.h.  The payloads are far longer than the levels need (NNCodec does
    not check the payload end), and the first byte keeps the first window
    below 510 (clause 10.3 leaves larger windows undefined).
    """
    coding = TensorCoding(dq_flag=dq, cabac_unary_length_minus1=unary)
    for _ in range(20):
        payload = bytearray(rng.integers(0, 256, 1 << 15, dtype=np.uint8).tobytes())
        payload[0] &= 0x7F
        with Decoder(bytes(payload)) as dec:
            ours = dec.decode_tensor((40, 50), coding).values
        theirs = reference.decode_levels(bytes(payload), (40, 50), coding)
        assert np.array_equal(ours, theirs)


@pytest.mark.parametrize("profile", [0, 1])
@pytest.mark.parametrize("size,zero", [(1, 0), (2, 1), (3, 0), (4, 3), (9, 4), (136, 135), (40, 7)])
def test_codebook_indices_match_reference(rng, profile, size, zero):
    values = (rng.integers(0, size, (30, 20)) - zero).astype(np.int32)
    for so in (0, 1):
        coding = TensorCoding(codebook_size=size, codebook_zero_offset=zero, general_profile_idc=profile, scan_order=so)
        check_against_reference(values, coding, qp_offset=(-42, 8))


@pytest.mark.parametrize("dq", [True, False])
def test_real_weights_match_reference(minilm, crepe_tiny, dq):
    """Weights of all-MiniLM-L6-v2 and CREPE quantized by NNCodec's own quantizer."""
    tensors = {k: v for k, v in list(minilm.items())[:24] + list(crepe_tiny.items()) if v.dtype == np.float32}
    for w in tensors.values():
        block_scan = 2 if w.ndim >= 2 and w.shape[0] > 1 and w.size // w.shape[0] > 1 else 0
        # the trellis quantizer walks the coding order, so quantize per scan order
        for coding in (TensorCoding(dq_flag=dq, scan_order=block_scan), TensorCoding(dq_flag=dq, row_skip_flag=True)):
            values, qp = reference.quantize(w, dq_flag=dq, qp=-38 if w.ndim > 1 else -75, scan_order=coding.scan_order)
            check_against_reference(values, coding, qp_offset=(qp, 8))


@pytest.mark.parametrize("qp", [-38, -44, -20])
def test_dq_quantizer_matches_reference(crepe_tiny, rng, qp):
    """Our trellis picks NNCodec's reconstruction indices, in every scan order."""
    from nnc_core.decoding import quantization_step
    from nnc_core.deepcabac import dq_quantize

    tensors = [(rng.standard_normal((40, 30)) * 0.05).astype(np.float32)]
    tensors += [v for v in crepe_tiny.values() if v.dtype == np.float32][:12]
    for w in tensors:
        for so in (0, 2):
            expected, used = reference.quantize(w, dq_flag=True, qp=qp, scan_order=so)
            assert used == qp
            scan = so if w.ndim > 1 else 0
            assert np.array_equal(dq_quantize(w, quantization_step(qp, 2), scan_order=scan), expected)
