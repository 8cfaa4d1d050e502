"""Test data for the entropy coder: scan orders and valid stored integers.

The coder's input under dependent quantization (DQ) is a reconstruction
index, which must agree with the DQ state reached along the scan.  These
helpers turn arbitrary levels into such indices by walking the tensor in
coding order, written independently of the C code (straight from the
notes' clause 10 description) so that tests cross-check it.
"""

from __future__ import annotations

import numpy as np

DQ_NEXT = [[0, 2], [7, 5], [1, 3], [6, 4], [2, 0], [5, 7], [3, 1], [4, 6]]


def matrix_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    if not shape:
        return 1, 1
    return shape[0], int(np.prod(shape[1:], dtype=np.int64))


def scan_segments(shape: tuple[int, ...], scan_order: int):
    """Row segments (row, first flat position, length) in coding order."""
    h, w = matrix_shape(shape)
    if h * w == 0:
        return
    so = 0 if (w <= 1 or h <= 1) else scan_order
    bw, bh = (w, h) if so == 0 else (4 << so, 4 << so)
    for by in range(0, h, bh):
        for bx in range(0, w, bw):
            for y in range(by, min(by + bh, h)):
                yield y, y * w + bx, min(bw, w - bx)


def dq_stored_integers(levels: np.ndarray, scan_order: int = 0, row_skip: bool = False) -> np.ndarray:
    """Reconstruction indices 2k - sgn(k)*(state & 1) of levels k along the scan.

    With row skipping, an all-zero row is skipped and the state advances by
    the tensor width per skipped row segment (reference software behaviour).
    """
    k = np.asarray(levels, dtype=np.int64)
    h, w = matrix_shape(k.shape)
    flat = k.reshape(-1)
    skipped = np.zeros(h, bool)
    if row_skip and w > 1 and h > 1:
        skipped = ~flat.reshape(h, w).any(axis=1)
    out = np.zeros_like(flat)
    state = 0
    for y, start, length in scan_segments(k.shape, scan_order):
        if skipped[y]:
            for _ in range(w):
                state = DQ_NEXT[state][0]
            continue
        for pos in range(start, start + length):
            v = int(flat[pos])
            out[pos] = 0 if v == 0 else 2 * v - (1 if v > 0 else -1) * (state & 1)
            state = DQ_NEXT[state][v & 1]
    return out.reshape(k.shape).astype(np.int32)


def laplace_levels(
    rng: np.random.Generator, shape: tuple[int, ...], scale: float, zero_rows: float = 0.0
) -> np.ndarray:
    """Integer levels with a Laplacian distribution, some whole rows zero."""
    levels = np.round(rng.laplace(size=shape) * scale).astype(np.int64)
    if zero_rows and levels.ndim >= 2 and levels.size:
        rows = levels.reshape(levels.shape[0], -1)
        rows[rng.random(levels.shape[0]) < zero_rows] = 0
    return levels


def quantize_uniform(weights: np.ndarray, step: float) -> np.ndarray:
    """Plain rounding to multiples of step (levels of real weights)."""
    return np.round(np.asarray(weights, dtype=np.float64) / step).astype(np.int64)
