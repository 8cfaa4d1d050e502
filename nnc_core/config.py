"""The encoder's settings: one frozen, validated object.

:class:`EncoderConfig` holds every choice :func:`nnc_core.encode` makes
that is not the model itself.  It is checked when made, each invalid field
named in a :class:`~nnc_core.errors.ConfigError`; what can only be checked
against a model (tensor names, shapes) is checked when encoding.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from nnc_core.errors import ConfigError

__all__ = ["EncoderConfig"]


@dataclass(frozen=True)
class EncoderConfig:
    """Settings of the encoder (defaults: NNCodec 2.1.3's).

    Make one with keywords, derive others with :meth:`replace`::

        config = EncoderConfig(qp=-32, use_dq=False)
        nnc_core.encode(tensors, config)
        nnc_core.encode(tensors, config, qp=-40)      # the same with one field changed

    Attributes:
    qp, qp_density: quantization parameter of weights (tensors with more
        than one dimension, and block weights); the step size is
        ``2**(qp / 2**qp_density)`` up to the density's resolution.
    nonweight_qp: QP of the other float tensors (biases, norms).
        A tensor whose levels would overflow int32 at its QP gets the
        smallest larger QP that fits, as the reference encoder does.
    qp_per_tensor: QP overrides by tensor name.
    use_dq: dependent scalar quantization (trellis) instead of uniform.
    lambda_scale: rate-distortion optimised quantization: > 0 weighs the
        estimated DeepCABAC rate of each decision against its squared error
        (the reference encoder's RDO; 0 picks the nearest points).
    codebook_mode: 0 none; 1 every float tensor coded as indices into an
        integer codebook; 2 a codebook where it codes smaller.
    int_quant_bw: integer-aligned quantization: each float tensor gets
        the QP that maps its 99.95th percentile magnitude to the largest
        integer of this many bits (8 bits at least for non-weights), and
        its stored integers are clipped to that bit depth.  With DQ a
        clipped integer may be no reconstruction index of its state; it is
        then coded as the reference encoder codes it and decodes to a
        neighbouring value.
    raw_float: names of float tensors sent uncompressed (NNR_PT_RAW_FLOAT,
        float32, which NNCodec decodes; exact for float32 and the narrow
        floats); they may hold NaN and infinity.
    lossless: every float tensor not in ``raw_float`` coded exactly, NaN
        and infinity included: float32 as raw floats, bfloat16, float16 and
        float8 as indices into a codebook of their bit patterns (about 3/4
        of their bytes on real weights), float64 as two int32 planes of its
        bits (see docs/decisions.md).  Integers are always exact.  It
        excludes the settings that change values (parameter reduction,
        batch-norm folding, integer-aligned clipping).
    blocks: block id -> {role: tensor name}, roles ``weight`` (required),
        ``bias``, ``ls`` (local scaling) and ``bn.gamma``, ``bn.beta``,
        ``bn.mean``, ``bn.var`` (all four or none).  A block's tensors
        travel in one NNR_PT_BLOCK NDU at its weight's place in the model,
        or in one NDU each, in block coding order, where they cannot share
        one (different dq flags, codebook-coded non-weights, integer or raw
        members).  :func:`blocks_from_parameter_types` converts the
        reference software's ``block_id_and_param_type``.
    fold_batch_norm: fold each block's batch norm into a local scaling
        vector ``<weight>_scaling`` and the bias (``<weight>.bias`` if the
        block had none), with ``batch_norm_epsilon`` (1e-5 as in PyTorch;
        TensorFlow uses 1e-3).
    sparsity, structured_sparsity, prune, prune_consumers, unification,
        low_rank, local_scaling: parameter reduction (clause 8), see
        :mod:`nnc_core.reduction` and docs/guide/reduction.md.
        ``sparsity``: target fraction of zeros reached by
        statistics-adaptive sparsification of the weights;
        ``structured_sparsity``: gain g > 0 zeroing the weight rows whose
        mean magnitude is below g times the mean over rows; ``prune``:
        weight name -> fraction of its output rows to remove (with the
        per-row members of its block, and input channels (dimension 1)
        of ``prune_consumers[weight]``), signalled in an NNR_TPL_PRUN
        topology unit; ``unification``: (rows, columns) of the blocks
        whose weights share one magnitude; ``low_rank``: rank (every
        weight where it saves parameters) or weight name -> rank, sent as
        G and H factors (NNR_CPT_DC); ``local_scaling``: per-row factors
        (NNR_CPT_LS) fitted after quantization to each weight.
    performance_maps: metadata written into the NNR_MPS (sets its
        sparsification, pruning, unification and decomposition map
        flags): kind -> entries, see
        :func:`nnc_core.reduction.check_performance_maps`.
    scan_order: 0 row-major, 1..4 block scans with entry points.
    cabac_unary_length_minus1, param_opt, row_skipping: entropy coding
        options (see :class:`nnc_core.deepcabac.TensorCoding`);
        ``row_skipping`` is off unless given, and on in an update
        (``base=``) unless given False.
    dimension_shift: ``first_tensor_dimension_shift`` by tensor name:
        the dimension coded as rows (scan, row skipping, entry points,
        DQ), e.g. 3 for output channels of a ``[kh, kw, in, out]`` kernel;
        a block's weight sets it for the block.
    max_part_elements: split tensors (outside blocks) larger than this
        into consecutive NDUs of at most this many elements, cut along
        their coded first dimension (``partial_data_counter``; at most
        255 parts), each with its own QP and entry points.
    aggregate: carry every unit after the start unit in one NNR_AGG unit.
    performance_metric_type, validation_set_performance: the model's
        performance on its validation set and the metric's name (NNR_MPS
        ``validation_set_performance`` flt(32) and
        ``performance_metric_type`` st(v), clause 7.3.3, named as Annex F
        describes; see :mod:`nnc_core.metrics`); both or neither.
    workers: threads quantizing and coding tensors at once (default:
        the CPUs available to the process; 1: no threads).  Tensors
        (blocks, parts) are read as a bounded window has room for them (see
        :func:`nnc_core.parallel.ordered_map`); the bitstream does not
        depend on the number.

    """

    qp: int = -38
    qp_density: int = 2
    nonweight_qp: int = -75
    qp_per_tensor: Mapping[str, int] | None = None
    use_dq: bool = True
    lambda_scale: float = 0.0
    codebook_mode: int = 0
    int_quant_bw: int | None = None
    raw_float: Collection[str] = ()
    lossless: bool = False
    blocks: Mapping[str, Mapping[str, str]] | None = None
    fold_batch_norm: bool = False
    batch_norm_epsilon: float = 1e-5
    sparsity: float = 0.0
    structured_sparsity: float = 0.0
    prune: Mapping[str, float] | None = None
    prune_consumers: Mapping[str, Collection[str]] | None = None
    unification: tuple[int, int] | None = None
    low_rank: int | Mapping[str, int] | None = None
    local_scaling: bool = False
    performance_maps: Mapping[str, list[Any]] | None = None
    scan_order: int = 0
    cabac_unary_length_minus1: int = 10
    param_opt: bool = True
    row_skipping: bool | None = None
    dimension_shift: Mapping[str, int] | None = None
    max_part_elements: int | None = None
    aggregate: bool = False
    performance_metric_type: str | None = None
    validation_set_performance: float | None = None
    workers: int | None = field(default=None, compare=False)  # changes no byte of the output

    def __post_init__(self) -> None:
        _int_in(self, "qp", -(1 << 20), 1 << 20)
        _int_in(self, "qp_density", 0, 7)
        _int_in(self, "nonweight_qp", -(1 << 20), 1 << 20)
        if self.codebook_mode not in (0, 1, 2) or isinstance(self.codebook_mode, bool):
            raise ConfigError(f"codebook_mode {self.codebook_mode!r} is not 0, 1 or 2")
        _int_in(self, "scan_order", 0, 4)
        _int_in(self, "cabac_unary_length_minus1", 0, 31)
        for name in ("use_dq", "fold_batch_norm", "param_opt", "aggregate", "lossless"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} {getattr(self, name)!r} must be True or False")
        if self.row_skipping is not None and not isinstance(self.row_skipping, bool):
            raise ConfigError(f"row_skipping {self.row_skipping!r} must be True, False or None (on in updates only)")
        _number(self, "lambda_scale", minimum=0.0)
        _number(self, "batch_norm_epsilon", minimum=0.0)
        if self.int_quant_bw is not None:
            _int_in(self, "int_quant_bw", 1, 31)
            if self.codebook_mode or self.qp_per_tensor:
                raise ConfigError("int_quant_bw chooses every tensor's QP: it excludes codebook_mode and qp_per_tensor")
        if self.max_part_elements is not None:
            _int_in(self, "max_part_elements", -(1 << 62), 1 << 62)
            if self.max_part_elements < 1:
                raise ConfigError(f"max_part_elements {self.max_part_elements} must be at least 1")
        if self.lossless:
            changing = [name for name in _CHANGING_VALUES if getattr(self, name)]
            if changing:
                raise ConfigError(f"lossless codes every value exactly: it excludes {changing[0]}")
        if isinstance(self.raw_float, str):
            raise ConfigError(f"raw_float {self.raw_float!r} must be a collection of tensor names, not one string")
        if (self.performance_metric_type is None) != (self.validation_set_performance is None):
            raise ConfigError(
                "performance_metric_type and validation_set_performance go together: give both or neither"
            )
        if self.workers is not None and (
            isinstance(self.workers, bool) or not isinstance(self.workers, numbers.Integral) or self.workers < 1
        ):
            raise ConfigError(f"workers {self.workers!r} must be a positive integer (1: no threads)")

    def replace(self, **changes: Any) -> EncoderConfig:
        """A copy with ``changes`` applied (and checked); an unknown name is a ConfigError."""
        unknown = sorted(set(changes) - _FIELDS)
        if unknown:
            raise ConfigError(f"unknown encoder option {unknown[0]!r}; the options are the fields of EncoderConfig")
        return dataclasses.replace(self, **changes) if changes else self

    def changed(self) -> dict[str, Any]:
        """The fields that differ from the defaults, by name."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if getattr(self, f.name) is not f.default and getattr(self, f.name) != f.default
        }

    @classmethod
    def of(cls, config: EncoderConfig | None = None, /, **changes: Any) -> EncoderConfig:
        """``config`` (default: the defaults) with ``changes`` applied."""
        if config is not None and not isinstance(config, EncoderConfig):
            raise ConfigError(f"config must be an EncoderConfig, not {type(config).__name__}")
        return (config or _DEFAULT).replace(**changes)


def _int_in(config: EncoderConfig, name: str, low: int, high: int) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{name} {value!r} must be an integer")
    if not low <= value <= high:  # type: ignore[operator]  # typeshed's numbers.Integral declares no comparisons
        raise ConfigError(f"{name} {value} outside {low}..{high}")


def _number(config: EncoderConfig, name: str, *, minimum: float) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < minimum:
        raise ConfigError(f"{name} {value!r} must be a finite number >= {minimum:g}")


# settings that change the tensors' values before they are coded
_CHANGING_VALUES = (
    "sparsity",
    "structured_sparsity",
    "prune",
    "unification",
    "low_rank",
    "local_scaling",
    "fold_batch_norm",
    "int_quant_bw",
)
_FIELDS = {f.name for f in dataclasses.fields(EncoderConfig)}
_DEFAULT = EncoderConfig()
