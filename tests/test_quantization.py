"""Quantizers of the encoder: the dependent-quantization trellis (C) against
a plain-Python transcription of the notes' description, and the rules its
output must satisfy."""

from __future__ import annotations

import math

import numpy as np
import pytest

from levels import DQ_NEXT, scan_segments
from nnc_core.deepcabac import TensorCoding, decode_tensor, dq_quantize, encode_tensor
from nnc_core.decoding import quantization_step


def trellis_reference(weights: np.ndarray, step: float, order: list[int]) -> np.ndarray:
    """03-quantization §6 written out directly (lambda = 0)."""
    q = 1.0 / float(np.float32(step))
    cost = [0.0] + [0.5 * 1.7976931348623157e308] * 7
    history = []
    for pos in order:
        w = float(weights.flat[pos])
        sg = -1 if w < 0 else 1
        o = (q * w) * sg
        m = max(1, int(math.trunc(o)) - 1)
        cand = [None] * 5
        cand[4] = (o * o, 0)
        for c in range(m, m + 4):
            cand[c & 3] = ((o - c) ** 2, sg * ((c + 1) >> 1))
        new, step_choice = [0.0] * 8, [None] * 8
        for t in range(8):
            best = None
            for p in range(8):
                slots = []
                if DQ_NEXT[p][0] == t:
                    slots += [3 * (p & 1), 4]
                if DQ_NEXT[p][1] == t:
                    slots.append(2 - (p & 1))
                for slot in slots:
                    j = cost[p] + cand[slot][0]
                    if best is None or j < best:
                        best, step_choice[t] = j, (p, cand[slot][1])
            new[t] = best
        cost = new
        history.append(step_choice)
    state = min(range(8), key=lambda s: (cost[s], s))
    out = np.zeros(weights.size, dtype=np.int32)
    for pos, choices in zip(reversed(order), reversed(history)):
        p, level = choices[state]
        out[pos] = 0 if level == 0 else 2 * level - (1 if level > 0 else -1) * (p & 1)
        state = p
    return out.reshape(weights.shape)


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
    assert float(np.mean(error ** 2)) < float(step) ** 2 / 2
