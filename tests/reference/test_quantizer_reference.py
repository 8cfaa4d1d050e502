"""Our quantizers choose the reference software's stored integers (NNCodec 2.1.3).

Rate-distortion optimised quantization (``lambda_scale > 0``) with dependent
quantization (8-state trellis, a rate model per state) and with uniform
quantization (a sequential rate model), over several lambdas, scan orders and
unary lengths, on random and on real weights; and the int32 overflow guard,
after which NNCodec picks a coarser QP.  Runs in the tox environment
``nncodec``.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from nnc_core.decoding import quantization_step
from nnc_core.deepcabac import dq_quantize, urq_quantize
from nnc_core.errors import QuantizationOverflowError
from nnc_core.testing import reference

pytestmark = pytest.mark.reference

LAMBDAS = [0.5, 1.0, 4.0, 16.0]


def ours(w: np.ndarray, qp: int, dq: bool, so: int, lam: float, unary: int) -> np.ndarray:
    quantize = dq_quantize if dq else urq_quantize
    return quantize(w, quantization_step(qp, 2), scan_order=so, lambda_scale=lam, cabac_unary_length_minus1=unary)


def check(w: np.ndarray, qp: int, dq: bool, so: int, lam: float, unary: int) -> None:
    expected, used = reference.quantize(
        w, dq_flag=dq, qp=qp, scan_order=so, lambda_scale=lam, cabac_unary_length_minus1=unary
    )
    assert used == qp
    assert np.array_equal(ours(w, qp, dq, so, lam, unary), expected), (w.shape, qp, dq, so, lam, unary)


def random_weights(rng: np.random.Generator, shape: tuple[int, ...], scale: float) -> np.ndarray:
    w = rng.laplace(size=shape) * scale
    w[rng.random(shape) < 0.2] = 0.0
    return w.astype(np.float32)


@pytest.mark.parametrize("lam", LAMBDAS + [0.3])  # 0.3 is not a float32: NNCodec rounds it
@pytest.mark.parametrize("dq", [True, False])
def test_random_weights(rng, lam, dq):
    tensors = [
        (random_weights(rng, (40, 30), 0.02), -38),
        (random_weights(rng, (37,), 0.3), -75),  # large levels: long remainders
        (random_weights(rng, (3, 4, 5), 0.05), -38),
        (random_weights(rng, (70, 20), 0.5), -20),
    ]
    for (w, qp), so, unary in itertools.product(tensors, [0, 2], [0, 3, 10]):
        check(w, qp, dq, so, lam, unary)


@pytest.mark.parametrize("lam", LAMBDAS)
@pytest.mark.parametrize("dq", [True, False])
def test_real_weights(minilm, crepe_tiny, lam, dq):
    """Tensors of all-MiniLM-L6-v2 and CREPE tiny at NNCodec's default QPs
    (-38 for weights, -75 for the rest)."""
    names = [
        "embeddings.LayerNorm.weight",
        "encoder.layer.0.attention.output.dense.bias",
        "encoder.layer.0.attention.self.query.weight",
    ]
    tensors = [minilm[n] for n in names]
    tensors[2] = tensors[2][:96]  # keep it quick: 96 of its 384 rows
    tensors += [crepe_tiny[n] for n in ("conv1.weight", "conv3.weight", "conv1_BN.running_var")]
    for w, so, unary in itertools.product(tensors, [0, 2], [3, 10]):
        check(w, -38 if w.ndim > 1 else -75, dq, so, lam, unary)


@pytest.mark.parametrize("lam", [0.0, 1.0])
@pytest.mark.parametrize("dq", [True, False])
def test_overflow_falls_back_like_nncodec(rng, lam, dq):
    """Where NNCodec's guard trips it re-quantizes at a coarser QP: ours
    reports the overflow at the requested QP and matches at NNCodec's QP."""
    for shape, scale, qp in [((30, 33), 6000.0, -75), ((200,), 1e9, 0)]:
        w = random_weights(rng, shape, scale)
        expected, used = reference.quantize(w, dq_flag=dq, qp=qp, scan_order=1, lambda_scale=lam)
        assert used > qp
        with pytest.raises(QuantizationOverflowError):
            ours(w, qp, dq, 1, lam, 10)
        assert np.array_equal(ours(w, used, dq, 1, lam, 10), expected)


def test_guard_edges_like_nncodec():
    """URQ with lambda > 0 tests round(w / step) in double: near 2**31 it
    passes where the float32 test of lambda = 0 fails; a weight of exactly
    -2**31 steps passes it and, through NNCodec's int32 conversion, becomes 0."""
    near = np.array([[3670015.75, 0.001, -0.003], [-3670015.75, 0.02, 0.007]], dtype=np.float32)
    lowest = np.array([-(2.0**31), 3.0, -2147483520.0], dtype=np.float32)
    for w, qp in ((near, -37), (lowest, 0)):
        for unary in (0, 10):
            check(w, qp, False, 0, 1.0, unary)
    check(lowest, 0, False, 0, 0.0, 10)
    with pytest.raises(QuantizationOverflowError):
        ours(near, -37, False, 0, 0.0, 10)
    with pytest.raises(RuntimeError, match="overflow"):  # NNCodec's fallback QP still overflows
        reference.quantize(near, dq_flag=False, qp=-37, lambda_scale=0.0)
