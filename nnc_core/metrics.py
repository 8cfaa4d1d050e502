"""Model performance in the model parameter set (NNR_MPS, clause 7.3.3; Annex F).

An encoder may state how well the coded model performs on its validation
set: ``validation_set_performance`` (flt(32)) and the name of the metric,
``performance_metric_type`` (st(v)).  Annex F of ISO/IEC 15938-17 gives the
naming of metrics; its exact text is **UNVERIFIED** here (see
shared/spec/01 §4).  :func:`metric_name` builds names in the form this
project uses until it is checked: the metric, then optional qualifiers
joined by ``"@"`` (``"top-1-accuracy@imagenet-val"``), lower case, no NUL.
Nothing in decoding depends on these fields.

Writing: ``nnc_core.encode(..., performance_metric_type=name,
validation_set_performance=value)``.  Reading: :func:`performance_metric`.
"""

from __future__ import annotations

import re

from nnc_core.bitstream.units import ModelParameterSet, flatten_units, read_units
from nnc_core.errors import ConfigError

__all__ = ["METRICS", "metric_name", "performance_metric"]

# Metric names (the first component of performance_metric_type).
METRICS = (
    "top-1-accuracy",
    "top-5-accuracy",
    "accuracy",
    "map",
    "map50",
    "psnr",
    "ssim",
    "f1",
    "wer",
    "bleu",
    "mean-absolute-error",
    "mean-squared-error",
)

_QUALIFIER = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


def metric_name(metric: str, *qualifiers: str) -> str:
    """``performance_metric_type`` for ``metric`` on e.g. a named data set.

    >>> metric_name("top-1-accuracy", "imagenet-val")
    'top-1-accuracy@imagenet-val'
    """
    metric = metric.strip().lower()
    if metric not in METRICS:
        raise ConfigError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")
    parts = [metric]
    for q in qualifiers:
        q = q.strip().lower()
        if not _QUALIFIER.match(q):
            raise ConfigError(f"metric qualifier {q!r} must be lower-case letters, digits, '.', '_' or '-'")
        parts.append(q)
    return "@".join(parts)


def performance_metric(data: bytes | bytearray | memoryview) -> tuple[str, float] | None:
    """``(performance_metric_type, validation_set_performance)`` of a bitstream's
    model parameter set, or ``None`` when it states none."""
    for _, _, unit in flatten_units(read_units(data)):
        if isinstance(unit, ModelParameterSet):
            if unit.validation_set_performance_present_flag:
                return unit.performance_metric_type or "", float(unit.validation_set_performance or 0.0)
            return None
    return None
