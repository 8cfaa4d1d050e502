"""Quantizers of the encoder: the dependent-quantization trellis and the
rate-distortion optimised quantizers (C) against plain-Python transcriptions
of the notes' description, the conformance vector made with lambda > 0, and
the rules their output must satisfy."""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from levels import DQ_NEXT, scan_segments
from nnc_core._deepcabac import lib
from nnc_core.decoding import decode_bitstream, quantization_step
from nnc_core.deepcabac import (
    Encoder,
    TensorCoding,
    _quantize,
    decode_tensor,
    dq_quantize,
    encode_tensor,
    scan_positions,
    urq_quantize,
)
from nnc_core.encoding import uniform_quantize
from nnc_core.errors import ConfigError, EncodeError, QuantizationOverflowError

VECTORS = Path(__file__).parent / "vectors"


def trellis_reference(weights: np.ndarray, step: float, order: list[int]) -> np.ndarray:
    """03-quantization §6 written out directly (lambda = 0: squared error only)."""
    return trellis_rdo_reference(weights, step, order, 0.0, 10).astype(np.int32)


@pytest.mark.parametrize("shape,scan_order", [((37,), 0), ((12, 20), 0), ((20, 24), 1), ((3, 4, 5), 0)])
def test_trellis_matches_the_description(rng, shape, scan_order):
    w = (rng.standard_normal(shape) * 0.01).astype(np.float32)
    step = quantization_step(-38, 2)
    order = [p for _, start, n in scan_segments(shape, scan_order) for p in range(start, start + n)]
    assert np.array_equal(dq_quantize(w, step, scan_order=scan_order), trellis_reference(w, float(step), order))


def test_trellis_output_is_codable_and_close(rng):
    w = (rng.standard_normal((64, 48)) * 0.05).astype(np.float32)
    step = quantization_step(-38, 2)
    stored = dq_quantize(w, step, scan_order=2)
    coding = TensorCoding(dq_flag=True, scan_order=2)
    assert np.array_equal(decode_tensor(encode_tensor(stored, coding), w.shape, coding), stored)
    error = np.abs(stored * np.float32(step) - w)
    assert error.max() <= 2 * step  # DQ points are at most two steps apart
    assert float(np.mean(error**2)) < float(step) ** 2 / 2


# ---------------------------------------------------------------------------
# lambda > 0: rate-distortion optimised quantization (notes 03 §5 and §6)


def _c_table(name: str) -> list[int]:
    """The numbers of a constant table of the C sources (data of the notes, 02 §4)."""
    text = (Path(__file__).resolve().parents[1] / "csrc" / "src" / "tables.c").read_text()
    start = text.index(name + "[")
    body = text[text.index("{", start) : text.index("};", start)]
    return [int(x) for x in re.findall(r"-?\d+", body)]


_EST = _c_table("dcabac_est_bits")  # pairs: cost of bin 0, bin 1 (1/32768 bit)
_CURVE = _c_table("dcabac_curve")


class RateModel:
    """A profile-0 context set that only estimates rates (03 §5): all contexts
    at initialisation set 0 (shifts 5 and 4, both estimates 0), ``n``
    greater-than flags in the 02 §5 layout, the last coded value as neighbour."""

    def __init__(self, n: int) -> None:
        self.n = n
        size = 53 + 4 * n + 37
        self.s0 = [0] * size
        self.s1 = [0] * size
        self.prev = 0

    def take_contexts(self, other: RateModel) -> None:
        self.s0 = other.s0[:]
        self.s1 = other.s1[:]

    def _bins(self, v: int, state: int) -> tuple[list[tuple[int, int]], int]:
        """(context, bin) of v's context-coded bins (02 §8.3, unlimited), and
        its number of bypass bins.  The reference codes at least one
        greater-than flag even with n = 0."""
        n = self.n
        c = 0 if self.prev == 0 else (1 if self.prev < 0 else 2)
        bins = [(3 * state + c, int(v != 0))]
        if v == 0:
            return bins, 0
        neg, a = int(v < 0), abs(v)
        bins.append((48 + c, neg))
        flags = max(n, 1)
        for j in range(flags):
            g = int(a > j + 1)
            bins.append((53 + 2 * j + neg, g))
            if not g:
                return bins, 0
        r, k = a - flags - 1, 0
        while r >= (2 << k) - 1:
            bins.append((53 + 4 * n + k, 1))
            k += 1
        bins.append((53 + 4 * n + k, 0))
        return bins, k

    def rate(self, v: int, state: int) -> int:
        bins, bypass = self._bins(v, state)
        bits = 32768 * bypass
        for ci, b in bins:
            bits += _EST[2 * (512 + ((self.s1[ci] + 16 * self.s0[ci]) >> 3)) + b]
        return bits

    def code(self, v: int, state: int) -> None:
        for ci, b in self._bins(v, state)[0]:
            g = 1 if b else -1
            s0, s1 = self.s0[ci], self.s1[ci]
            self.s0[ci] = s0 + g * (_CURVE[16 + ((g * s0) >> 3)] >> 5)
            self.s1[ci] = s1 + g * (_CURVE[16 + ((g * s1) >> 7)] >> 4)
        self.prev = v


def _round_half_away(a: float) -> int:
    f = math.floor(a)
    return f + 1 if a - f >= 0.5 else f


def urq_rdo_reference(weights: np.ndarray, step: float, order: list[int], lam: float, n: int) -> np.ndarray:
    """03 §5, lambda > 0, written out directly."""
    lam_dash = float(np.float32(lam)) * (math.log(2.0) / 6.0)
    d = 32768.0 / lam_dash
    q = 1.0 / float(np.float32(step))
    model = RateModel(n)
    out = np.zeros(weights.size, dtype=np.int64)
    for pos in order:
        w = float(weights.flat[pos])
        sg = -1 if w < 0 else 1
        a = sg * w * q
        best, cost = 0, d * (a * a) + model.rate(0, 0)
        m = _round_half_away(a)
        if m >= 2**31:  # (w = -2**31 steps) the reference's int32 conversion leaves no candidate on x86
            m = 0
        for c in range(max(1, m - 1), m + 1):
            j = d * ((a - c) * (a - c)) + model.rate(c, 0)
            if j < cost:
                best, cost = c, j
        out[pos] = sg * best
        model.code(sg * best, 0)
    return out.reshape(weights.shape)


def trellis_rdo_reference(weights: np.ndarray, step: float, order: list[int], lam: float, n: int) -> np.ndarray:
    """03 §6 with its "RDO variant" paragraph, written out directly: a rate
    model per state, in two banks that swap roles at every position.  With
    ``lam`` 0 the costs are squared errors alone (D = 1, no rates)."""
    rdo = lam > 0
    d = 32768.0 / (float(np.float32(lam)) * 4.0 * (math.log(2.0) / 6.0) * 0.7) if rdo else 1.0
    q = 1.0 / float(np.float32(step))
    cost = [0.0] + [0.5 * sys.float_info.max] * 7
    banks = [[RateModel(n) for _ in range(8)] for _ in range(2)]
    history = []
    for i, pos in enumerate(order):
        prev_bank, curr_bank = banks[(i + 1) % 2], banks[i % 2]
        w = float(weights.flat[pos])
        sg = -1 if w < 0 else 1
        o = (q * w) * sg
        m = max(1, int(math.trunc(o)) - 1)
        cand = [None] * 5
        cand[4] = (d * (o * o), 0)
        for c in range(m, m + 4):
            cand[c & 3] = (d * ((o - c) * (o - c)), sg * ((c + 1) >> 1))
        new, choice = [0.0] * 8, [None] * 8
        for t in range(8):
            best = None
            for p in range(8):
                slots = []
                if DQ_NEXT[p][0] == t:
                    slots += [3 * (p & 1), 4]
                if DQ_NEXT[p][1] == t:
                    slots.append(2 - (p & 1))
                for slot in slots:
                    j = cost[p] + cand[slot][0] + (prev_bank[p].rate(cand[slot][1], p) if rdo else 0)
                    if best is None or j < best:
                        best, choice[t] = j, (p, cand[slot][1])
            new[t] = best
        for t in range(8 if rdo else 0):
            p, level = choice[t]
            curr_bank[t].take_contexts(prev_bank[p])
            curr_bank[t].code(level, t)
        cost = new
        history.append(choice)
    state = min(range(8), key=lambda s: (cost[s], s))
    out = np.zeros(weights.size, dtype=np.int64)
    for pos, choices in zip(reversed(order), reversed(history)):
        p, level = choices[state]
        out[pos] = 0 if level == 0 else 2 * level - (1 if level > 0 else -1) * (p & 1)
        state = p
    return out.reshape(weights.shape)


def _coding_order(shape: tuple[int, ...], scan_order: int) -> list[int]:
    return [p for _, start, n in scan_segments(shape, scan_order) for p in range(start, start + n)]


@pytest.mark.parametrize("shape", [(16, 16), (33, 50), (8, 70), (70, 8), (5, 7, 9), (9, 1), (1, 40)])
@pytest.mark.parametrize("scan_order", [0, 1, 2, 4])
def test_scan_positions_follow_the_block_scan(shape, scan_order):
    positions = scan_positions(shape, scan_order)
    expected = _coding_order(shape, scan_order)
    if positions is None:  # row-major order
        assert expected == list(range(int(np.prod(shape))))
    else:
        assert positions.dtype == np.int64 and positions.tolist() == expected


def _rdo_weights(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Small weights, exact zeros, and a few large ones (long remainders)."""
    w = rng.laplace(size=shape) * 0.01
    w[rng.random(shape) < 0.15] = 0.0
    w[rng.random(shape) < 0.05] *= 60.0
    return w.astype(np.float32)


@pytest.mark.parametrize("shape,scan_order", [((16, 12), 1), ((45,), 0)])
@pytest.mark.parametrize("lam,unary", [(0.5, 10), (4.0, 0), (16.0, 2)])
def test_rdo_trellis_matches_the_description(rng, shape, scan_order, lam, unary):
    w = _rdo_weights(rng, shape)
    step = quantization_step(-38, 2)
    got = dq_quantize(w, step, scan_order=scan_order, lambda_scale=lam, cabac_unary_length_minus1=unary)
    expected = trellis_rdo_reference(w, float(step), _coding_order(shape, scan_order), lam, unary)
    assert np.array_equal(got, expected)
    if lam >= 1:
        assert not np.array_equal(got, dq_quantize(w, step, scan_order=scan_order))  # the rate matters


# lambda 0 prices no rate, so the flag count matters only for lambda > 0
@pytest.mark.parametrize(
    "lam,unary", [(0.0, 10)] + [(lam, unary) for lam in (0.05, 1.0, 40.0) for unary in (0, 1, 2, 10, 31, 255)]
)
def test_rdo_trellis_simd_matches_portable(rng, lam, unary):
    """The DQ trellis's AVX-512 forward pass chooses the levels of its
    portable pass, with lambda 0 (squared error only) and lambda > 0:
    magnitudes over nine decades, zeros, and levels near 2**30 (remainder
    prefixes of 29 bins), row-major and in blocks."""
    if not Encoder().simd:
        pytest.skip("this CPU has no AVX-512: both sides would run the portable pass")
    step = quantization_step(-38, 2)
    shape = (70, 97)
    # scales growing along the tensor: remainders get longer as it goes
    w = (
        rng.laplace(size=shape)
        * 0.01
        * np.exp(np.linspace(-4.0, 9.0, 70 * 97).reshape(shape) + rng.uniform(-1.0, 1.0, shape))
    )
    w[rng.random(shape) < 0.1] = 0.0
    w[-1, -4:] = np.array([2.147e9, -2.1e9, 6.0e8, -3.0e5]) * float(step)
    w = w.astype(np.float32)
    for scan_order in (0, 2):
        got = dq_quantize(w, step, scan_order=scan_order, lambda_scale=lam, cabac_unary_length_minus1=unary)
        portable = _quantize(lib.dcabac_dq_quantize_rd_portable, w, step, scan_order, lam, unary)
        assert np.array_equal(got, portable)
        assert abs(int(got[-1, -4])) > 2**31 - 2**24 and np.count_nonzero(got == 0) > w.size // 10


@pytest.mark.parametrize("shape,scan_order", [((24, 20), 1), ((30, 7), 0), ((90,), 0)])
@pytest.mark.parametrize("lam,unary", [(0.5, 10), (1.0, 0), (4.0, 3), (0.3, 1)])
def test_rdo_uniform_matches_the_description(rng, shape, scan_order, lam, unary):
    w = _rdo_weights(rng, shape)
    step = quantization_step(-38, 2)
    got = urq_quantize(w, step, scan_order=scan_order, lambda_scale=lam, cabac_unary_length_minus1=unary)
    expected = urq_rdo_reference(w, float(step), _coding_order(shape, scan_order), lam, unary)
    assert np.array_equal(got, expected)
    if lam >= 1:
        assert not np.array_equal(got, uniform_quantize(w, step))


def test_rdo_uniform_long_remainder():
    """Levels near 2**31 (remainder prefixes of 30 bins) at qp -37, where the
    double-precision guard of URQ with lambda > 0 passes although the float32
    one of lambda = 0 fails."""
    w = np.array([[3670015.75, 0.001, -0.003], [-3670015.75, 0.02, 0.007]], dtype=np.float32)
    step = quantization_step(-37, 2)
    for unary in (0, 10):
        got = urq_quantize(w, step, lambda_scale=1.0, cabac_unary_length_minus1=unary)
        assert np.array_equal(got, urq_rdo_reference(w, float(step), list(range(w.size)), 1.0, unary))
        assert got[0, 0] == 2147483502 and got[1, 0] == -2147483502
    with pytest.raises(QuantizationOverflowError):
        urq_quantize(w, step, lambda_scale=0.0)


def test_lambda_rdo_conformance_vector():
    """v17_lambda_rdo (NNCodec, lambda_scale 1.0, DQ, other settings default):
    quantizing its input at the stream's QP gives exactly its stored integers."""
    manifest = json.loads((VECTORS / "manifest.json").read_text())
    vector = next(v for v in manifest["vectors"] if v["id"] == "v17_lambda_rdo")
    assert vector["compress_args"] == {"lambda_scale": 1.0}
    (decoded,) = decode_bitstream((VECTORS / vector["stream"]).read_bytes())
    assert decoded.qp == -38  # NNCodec's default qp, with its default qp_density 2
    weights = np.load(VECTORS / vector["inputs"]["layer.weight"]["file"])
    expected = np.load(VECTORS / vector["decoded"][0]["stored_integers_file"])
    got = dq_quantize(weights, quantization_step(decoded.qp, 2), lambda_scale=1.0, cabac_unary_length_minus1=10)
    assert np.array_equal(got, expected)
    assert not np.array_equal(dq_quantize(weights, quantization_step(decoded.qp, 2)), expected)


def test_rdo_output_is_codable(rng):
    w = (rng.standard_normal((40, 36)) * 0.05).astype(np.float32)
    step = quantization_step(-38, 2)
    for dq, quantize in ((True, dq_quantize), (False, urq_quantize)):
        stored = quantize(w, step, scan_order=2, lambda_scale=2.0)
        coding = TensorCoding(dq_flag=dq, scan_order=2)
        assert np.array_equal(decode_tensor(encode_tensor(stored, coding), w.shape, coding), stored)
        assert np.abs(stored * np.float32(step) - w).max() <= 2 * step


def test_uniform_lambda_zero_is_rounding(rng):
    w = (rng.standard_normal((50, 20)) * 0.05).astype(np.float32)
    step = quantization_step(-38, 2)
    w[0, :4] = np.array([0.5, 1.5, -0.5, -2.5], dtype=np.float32) * step  # halves
    assert np.array_equal(urq_quantize(w, step, lambda_scale=0.0), uniform_quantize(w, step))
    assert urq_quantize(w, step, lambda_scale=0.0)[0, :4].tolist() == [1, 2, -1, -3]


@pytest.mark.parametrize("lam", [0.0, 1.0])
def test_overflow_guard(lam):
    """03 §5: the reference's int32 guard, reported so that a coarser QP can be
    chosen: URQ admits [-2**31, 2**31 - 1], DQ [-(2**31 - 2), 2**31 - 3]."""
    step = quantization_step(0, 2)  # 1.0
    fits = np.array([2147483520.0, -2147483520.0, 3.0], dtype=np.float32)  # largest float32 below 2**31
    assert urq_quantize(fits, step, lambda_scale=lam).tolist() == [2147483520, -2147483520, 3]
    dq = dq_quantize(fits, step, lambda_scale=lam).astype(np.int64)
    assert np.abs(dq - fits.astype(np.int64)).max() <= 2  # DQ points are two steps apart
    lowest = np.array([-(2.0**31), 1.0], dtype=np.float32)
    # with lambda > 0 the reference's int32 conversion of round(2**31) leaves level 0 (x86)
    assert urq_quantize(lowest, step, lambda_scale=lam).tolist() == [-(2**31) if lam == 0 else 0, 1]
    with pytest.raises(QuantizationOverflowError):
        dq_quantize(lowest, step, lambda_scale=lam)
    for quantize in (dq_quantize, urq_quantize):
        for too_big in ([1.0, 2.0**31], [-(2.0**31) - 256, 1.0]):
            with pytest.raises(QuantizationOverflowError, match="coarser QP") as info:
                quantize(np.array(too_big, dtype=np.float32), step, lambda_scale=lam)
            assert isinstance(info.value, EncodeError)
        with pytest.raises(EncodeError, match="finite") as info:
            quantize(np.array([2.0**31, np.nan], dtype=np.float32), step, lambda_scale=lam)
        assert not isinstance(info.value, QuantizationOverflowError)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"lambda_scale": -1.0},
        {"lambda_scale": float("nan")},
        {"lambda_scale": 1e39},  # infinite as float32
        {"lambda_scale": 1.0, "cabac_unary_length_minus1": 256},
        {"lambda_scale": 1.0, "cabac_unary_length_minus1": -1},
        {"lambda_scale": 1.0, "scan_order": 5},
    ],
)
def test_quantizer_arguments_are_checked(kwargs):
    w = np.zeros((4, 4), dtype=np.float32)
    for quantize in (dq_quantize, urq_quantize):
        with pytest.raises(ConfigError):
            quantize(w, 0.5, **kwargs)
        with pytest.raises(ConfigError, match="step"):
            quantize(w, 0.0, lambda_scale=1.0)
