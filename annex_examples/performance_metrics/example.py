"""Annex F (performance-metric naming): the model parameter set (NNR_MPS)
states a metric's name (``performance_metric_type``) and value
(``validation_set_performance``).  Core only.

No validation data ships with a weights-only package, so this example
measures a weight-domain figure, the PSNR of the decoded CREPE-tiny weights
against the originals, and names it ``psnr@weights`` with
:func:`nnc_core.metrics.metric_name`; a user with a validation set writes
e.g. ``metric_name("top-1-accuracy", "imagenet-val")`` and the accuracy the
same way.  (Annex F's exact naming is UNVERIFIED; see nnc_core/metrics.py.)
Two QPs give two bitstreams, each stating its own figure, which a receiver
reads back with :func:`nnc_core.metrics.performance_metric` without
decoding any tensor.

    python annex_examples/performance_metrics/example.py
"""

from __future__ import annotations

import numpy as np

from nnc_core import decode, encode
from nnc_core.metrics import metric_name, performance_metric
from nnc_core.testing import pretrained


def psnr(original: dict, decoded: dict) -> float:
    """PSNR (dB) of the decoded weight tensors (2-D and more) against the originals."""
    names = [k for k, v in original.items() if v.dtype.kind == "f" and v.ndim > 1]
    a = np.concatenate([original[k].ravel() for k in names]).astype(np.float64)
    b = np.concatenate([decoded[k].ravel() for k in names]).astype(np.float64)
    return float(10 * np.log10(np.abs(a).max() ** 2 / np.mean((a - b) ** 2)))


def main() -> dict:
    tensors = pretrained.load("crepe-tiny")
    name = metric_name("psnr", "weights")
    result = {}
    for qp in (-38, -30):
        value = psnr(tensors, decode(encode(tensors, qp=qp)))
        stream = encode(tensors, qp=qp, performance_metric_type=name, validation_set_performance=value)
        result[qp] = {"bytes": len(stream), "stated": performance_metric(stream), "measured": value}
        print(f"qp {qp}: {len(stream)} bytes, MPS states {performance_metric(stream)}")
    return result


if __name__ == "__main__":
    main()
