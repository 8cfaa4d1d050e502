"""Encoding a model (named tensors) into an NNR bitstream.

This is the encoder counterpart of :mod:`nnc_core.decoding`: quantization
(clause 9: uniform reconstruction quantization, or dependent scalar
quantization with the trellis of :func:`nnc_core.deepcabac.dq_quantize`),
DeepCABAC coding of each tensor into its own NNR_NDU or of a layer's tensors
into one NNR_PT_BLOCK NDU, batch-norm folding (clause 8), and the high-level
syntax around it (NNR_STR, NNR_MPS, NNR_TPL).

With the same settings the bitstream is byte-identical to the one the
reference software (NNCodec 2.1.3) writes: float tensors with more than one
dimension (and block weights) are weights coded at ``qp``, the others at
``nonweight_qp``; integer tensors are coded losslessly as NNR_PT_INT.  Work
goes NDU by NDU, so memory stays near one model's size.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from nnc_core import dtypes, reduction
from nnc_core.bitstream.bits import BitWriter, ue_lengths
from nnc_core.bitstream.layout import (
    code_payload,
    coded_scan_order,
    coded_view,
    split_tensor,
)
from nnc_core.bitstream.units import (
    CompressedDataUnit,
    EntryPoint,
    IntegerCodebook,
    ModelParameterSet,
    NduHeader,
    ParameterTypes,
    ParseState,
    PayloadType,
    StartUnit,
    TopologyStorageFormat,
    UnitType,
    aggregate_unit,
    write_integer_codebook,
    write_unit,
)
from nnc_core.config import EncoderConfig
from nnc_core.decoding import (
    BLOCK_CODING_ORDER,
    BLOCK_ID_ORDER,
    _reconstruct,
    quantization_step,
)
from nnc_core.deepcabac import TensorCoding, dq_quantize, encode_tensor, urq_quantize
from nnc_core.errors import ConfigError, EncodeError, QuantizationOverflowError
from nnc_core.parallel import check_workers, ordered_map
from nnc_core.topology import Topology

__all__ = ["write_stream", "uniform_quantize", "blocks_from_parameter_types", "BLOCK_ROLES"]


def uniform_quantize(weights: np.ndarray, step: np.float32) -> np.ndarray:
    """Uniform reconstruction quantization: ``round(float32(1/step) * w)``,
    rounding halves away from zero (the reference encoder's arithmetic)."""
    return urq_quantize(weights, step, lambda_scale=0.0)


def _overflow_qp(w: np.ndarray, qp_density: int) -> int:
    """The QP the reference encoder falls back to when levels would overflow int32:
    the smallest step that keeps max|w| within 2**31 - 3 steps."""
    k = 1 << qp_density
    min_step = float(np.max(np.abs(w))) / float((1 << 31) - 3)
    base = float(np.float32(np.floor(np.log2(min_step)) * k))
    return int(np.ceil(np.float32(base + ((min_step * k) / 2.0 ** (base / k) - k))))


@dataclass(frozen=True)
class _Quantizer:
    """How float tensors are quantized (clause 9.3; encoder choices of notes 03)."""

    qp_density: int
    lambda_scale: float  # rate weight of RDO quantization, 0 = nearest
    unary: int  # cabac_unary_length_minus1 of the stream (RDO rate model)

    def __call__(self, name: str, w: np.ndarray, qp: int, dq: bool, scan_order: int) -> tuple[np.ndarray, int]:
        """Stored integers of a float tensor and the QP they use: the requested
        one, or where levels would overflow int32 the reference's fallback QP."""
        try:
            try:
                return self._run(w, qp, dq, scan_order), qp
            except QuantizationOverflowError:
                # the fallback is the encoder's own choice: never below what the
                # density can signal (a coarser step, so levels fit all the more)
                qp = max(_overflow_qp(w, self.qp_density), -(1 << (5 + self.qp_density)))
                return self._run(w, qp, dq, scan_order), qp
        except EncodeError as e:
            raise EncodeError(f"tensor {name!r}: {e}") from e

    def _run(self, w: np.ndarray, qp: int, dq: bool, scan_order: int) -> np.ndarray:
        step = quantization_step(qp, self.qp_density)
        quantize = dq_quantize if dq else urq_quantize
        return quantize(
            w, step, scan_order=scan_order, lambda_scale=self.lambda_scale, cabac_unary_length_minus1=self.unary
        )


def _codebook_bits(codebook: IntegerCodebook) -> int:
    w = BitWriter()
    write_integer_codebook(w, codebook)
    return w.bit_length


def _codebook_egk(values: np.ndarray) -> int:
    """The ``codebook_egk`` (0..15) that codes a sorted codebook's gaps in the
    fewest bits, the smallest of equals (as the reference encoder chooses)."""
    gaps = np.diff(np.asarray(values, dtype=np.int64)) - 1
    return min(range(16), key=lambda k: int(ue_lengths(gaps, k).sum()))


def _codebook_quantize(
    name: str, w: np.ndarray, qp: int, quantize: _Quantizer, use_dq: bool, mode: int, scan_order: int, param_opt: bool
) -> tuple[np.ndarray, int, IntegerCodebook | None]:
    """Codebook quantization (clause 9.2.3 signalling), with the reference encoder's choices.

    Levels of uniform quantization (at a step halved when DQ was asked for,
    to compensate for not using it) become indices into their sorted unique
    values; the zero offset is the one that codes the indices in the fewest
    bytes, and ``codebook_egk`` the one that codes the codebook in the fewest
    bits.  Mode 2 keeps uniform quantization when that codes smaller.
    Returns stored integers, QP and codebook (None: uniform).
    """
    unary = quantize.unary
    if unary < 1:
        raise ConfigError("codebooks need cabac_unary_length_minus1 >= 1 (their search codes with that many flags)")
    levels, cb_qp = quantize(name, w, qp - (1 << quantize.qp_density) if use_dq else qp, False, scan_order)
    values, inverse = np.unique(levels, return_inverse=True)
    indices = inverse.reshape(levels.shape).astype(np.int32)
    # The reference encoder's search codes with cabac_unary_length_minus1 flags
    # (not + 1) and profile-0 binarization; reproduced for identical choices.
    search = TensorCoding(cabac_unary_length_minus1=unary - 1, general_profile_idc=0, param_opt=True)
    best_zero, best_bytes = 0, None
    for zero in range(len(values)):
        size = len(encode_tensor(indices - zero, search))
        if best_bytes is None or size < best_bytes:
            best_zero, best_bytes = zero, size
    codebook = IntegerCodebook(_codebook_egk(values), [int(v) for v in values], best_zero)
    indices = (indices - best_zero).astype(np.int32)
    if mode == 1:
        return indices, cb_qp, codebook
    uniform, uni_qp = quantize(name, w, qp, True, scan_order) if use_dq else (levels, cb_qp)
    cost = TensorCoding(dq_flag=use_dq, scan_order=scan_order, cabac_unary_length_minus1=unary - 1, param_opt=param_opt)
    bytes_uniform = len(encode_tensor(uniform, cost))
    cost = TensorCoding(scan_order=scan_order, cabac_unary_length_minus1=unary - 1, param_opt=param_opt)
    # (the reference adds the codebook's size in bits to a size in bytes)
    bytes_codebook = len(encode_tensor(indices, cost)) + _codebook_bits(codebook)
    if bytes_codebook < bytes_uniform:
        return indices, cb_qp, codebook
    return uniform, uni_qp, None


def _check_qp(name: str, qp: int, base_qp: int, qp_density: int) -> None:
    bits = 6 + qp_density
    offset = qp - base_qp
    if not -(1 << (bits - 1)) <= offset < (1 << (bits - 1)):
        raise ConfigError(
            f"tensor {name!r}: qp {qp} is outside {-(1 << (bits - 1)) + base_qp}..{(1 << (bits - 1)) - 1 + base_qp}, "
            f"the range qp_density {qp_density} can signal"
        )


def _int_aligned_qp(w: np.ndarray, bits: int, qp_density: int) -> int:
    """QP whose step maps the 99.95th percentile of |w| to the largest integer
    of ``bits`` bits (unsigned when ``w`` has no negative value): the
    reference encoder's integer-aligned mode, in its float32 arithmetic."""
    if not np.any(w):
        return 0
    a = np.abs(w)
    denom = np.float32((1 << bits) - 1 if not np.any(w < 0) else (1 << (bits - 1)) - 1)
    s = np.float32(np.percentile(a, 99.95)) / denom
    if s == 0:
        s = np.float32(a.max()) / denom
    k = np.float32(1 << qp_density)
    base = np.floor(np.log2(s)) * k
    qp = base + ((s * k) / np.float32(2.0) ** (base / k) - k)
    limit = 1 << (5 + qp_density)
    return int(np.round(np.clip(qp, -limit, limit - 1)))


def _clip_to_bits(stored: np.ndarray, w: np.ndarray, bits: int) -> np.ndarray:
    """Stored integers clipped to the bit depth of integer-aligned mode (as the
    reference encoder does, also to DQ reconstruction indices)."""
    if not np.any(w < 0):
        return stored.clip(0, (1 << bits) - 1)
    return stored.clip(-(1 << (bits - 1)), (1 << (bits - 1)) - 1)


# ---------------------------------------------------------------------------
# NNR_PT_BLOCK (clause 7.3.8): a layer's weight with its bias, local scaling
# vector and batch-norm parameters in one NDU.

#: Roles a tensor can have in a block, and the reference software's names of them.
BLOCK_ROLES = {
    "weight": "weight",
    "ls": "weight.ls",
    "bias": "bias",
    "bn.beta": "bn.beta",
    "bn.gamma": "bn.gamma",
    "bn.mean": "bn.mean",
    "bn.var": "bn.var",
}
_BN_ROLES = ("bn.beta", "bn.gamma", "bn.mean", "bn.var")


def blocks_from_parameter_types(
    block_identifier: Mapping[str, object], parameter_type: Mapping[str, str]
) -> dict[str, dict[str, str]]:
    """``blocks`` for :func:`encode` from the reference software's
    ``block_id_and_param_type`` dictionaries (tensor -> block id, tensor ->
    ``"weight"``, ``"bias"``, ``"weight.ls"``, ``"bn.gamma"``, ...)."""
    by_name = {v: k for k, v in BLOCK_ROLES.items()}
    blocks: dict[str, dict[str, str]] = {}
    for name, block_id in block_identifier.items():
        if block_id is None:
            continue
        kind = parameter_type.get(name)
        if kind not in by_name:
            raise ConfigError(
                f"tensor {name!r} of block {block_id!r} has parameter type {kind!r}, not one of {sorted(by_name)}"
            )
        members = blocks.setdefault(str(block_id), {})
        if by_name[kind] in members:
            raise ConfigError(
                f"block {block_id!r} has two tensors of type {kind!r}: {members[by_name[kind]]!r} and {name!r}"
            )
        members[by_name[kind]] = name
    return blocks


@dataclass
class _Member:
    """A tensor about to be coded, with what its NDU header says of it."""

    role: str  # block role, or "tensor" outside blocks
    name: str
    value: np.ndarray
    parameter_id: int
    weight: bool  # coded at the weight QP
    qp: int | None = None  # explicit QP (qp_per_tensor, or the non-weight QP of folded tensors)
    shift: int = 0  # first_tensor_dimension_shift
    partial_data_counter: int | None = None  # part of a split tensor
    full_shape: tuple[int, ...] | None = None  # G of a decomposition: the weight's shape


@dataclass
class _Coded:
    """A member after quantization: what goes into the payload."""

    name: str
    shape: tuple[int, ...]  # the tensor's own shape (tensor_dimensions)
    payload_type: int
    stored: np.ndarray  # int32 levels, or float32 values for raw floats, in coded view
    qp: int | None
    dq: bool
    codebook: IntegerCodebook | None = None
    clipped: bool = False  # integer-aligned clipping: DQ integers may be no reconstruction indices
    data_format: int | None = None  # nnr_decompressed_data_format of the tensor's own dtype (None: int32/float32)


@dataclass(frozen=True)
class _Settings:
    qp: int
    qp_density: int
    nonweight_qp: int
    use_dq: bool
    codebook_mode: int
    scan_order: int
    unary: int
    param_opt: bool
    row_skipping: bool
    int_quant_bw: int | None
    raw_float: frozenset[str]
    quantize: _Quantizer
    lossless: bool = False
    update: Any = None  # nnc_core.incremental: parent signalling of an incremental update
    local_scaling: bool = False


def _check_blocks(
    tensors: Mapping[str, np.ndarray], blocks: Mapping[str, Mapping[str, str]], shifts: Mapping[str, int]
) -> dict[str, dict[str, str]]:
    """Validated blocks (id -> role -> tensor name); blocks of a lone weight are dropped
    (the reference software codes them as plain tensors)."""
    owner: dict[str, str] = {}
    checked: dict[str, dict[str, str]] = {}
    for block_id, members in blocks.items():
        members = dict(members)
        unknown = set(members) - set(BLOCK_ROLES)
        if unknown:
            raise ConfigError(f"block {block_id!r}: unknown roles {sorted(unknown)}; roles are {list(BLOCK_ROLES)}")
        if "weight" not in members:
            raise ConfigError(f"block {block_id!r} has no weight")
        present = [r for r in _BN_ROLES if r in members]
        if present and len(present) != len(_BN_ROLES):
            raise ConfigError(f"block {block_id!r}: batch norm needs all of {list(_BN_ROLES)}, got {present}")
        for role, name in members.items():
            if name not in tensors:
                raise ConfigError(f"block {block_id!r}: {role} {name!r} is not a tensor of the model")
            if name in owner:
                raise ConfigError(f"tensor {name!r} is in blocks {owner[name]!r} and {block_id!r}")
            owner[name] = str(block_id)
        weight = np.shape(tensors[members["weight"]])
        if not weight:
            raise ConfigError(f"block {block_id!r}: weight {members['weight']!r} is a scalar")
        rows = weight[shifts.get(members["weight"], 0)]
        for role, name in members.items():
            shape = np.shape(tensors[name]) or (1,)
            if role != "weight" and shape != (rows,):
                raise ConfigError(
                    f"block {block_id!r}: {role} {name!r} has shape {list(shape)}, "
                    f"a block member needs shape [{rows}] (the weight's coded first dimension)"
                )
            if role != "weight" and shifts.get(name):
                raise ConfigError(f"block {block_id!r}: {role} {name!r} is 1-D and takes no dimension shift")
        if len(members) > 1:
            checked[str(block_id)] = members
    return checked


def _fold_batch_norm(
    members: list[_Member], tensors: Mapping[str, np.ndarray], epsilon: float, nonweight_qp: int
) -> list[_Member]:
    """Batch-norm folding (clause 8): ``g = gamma / sqrt(var + eps)``; the local
    scaling vector becomes ``ls * g`` and the bias ``(bias - mean) * g + beta``;
    the batch-norm tensors are dropped.  New tensors are named as the reference
    software names them and take the ids of beta (bias) and gamma (scaling)."""
    by_role = {m.role: m for m in members}
    if "bn.gamma" not in by_role:
        return members
    weight = by_role["weight"].name
    bn = {}
    for role in _BN_ROLES:
        value = by_role[role].value
        if np.asarray(value).dtype.kind != "f":
            raise EncodeError(
                f"tensor {by_role[role].name!r}: batch-norm folding needs float tensors, not {np.asarray(value).dtype}"
            )
        bn[role] = np.asarray(value, dtype=np.float32).reshape(-1)
    g = bn["bn.gamma"] / np.sqrt(bn["bn.var"] + np.float32(epsilon))
    out = [m for m in members if m.role not in _BN_ROLES and m.role not in ("ls", "bias")]
    ls = by_role.get("ls")
    if ls is None:
        ls = _Member(
            "ls",
            _new_name(weight + "_scaling", tensors),
            np.ones_like(g),
            by_role["bn.gamma"].parameter_id,
            False,
            nonweight_qp,
        )
    bias = by_role.get("bias")
    if bias is None:
        bias = _Member(
            "bias",
            _new_name(weight + ".bias", tensors),
            np.zeros_like(g),
            by_role["bn.beta"].parameter_id,
            False,
            nonweight_qp,
        )
    ls.value = np.asarray(ls.value, dtype=np.float32).reshape(-1) * g
    bias.value = (np.asarray(bias.value, dtype=np.float32).reshape(-1) - bn["bn.mean"]) * g + bn["bn.beta"]
    return out + [ls, bias]


def _new_name(name: str, tensors: Mapping[str, np.ndarray]) -> str:
    if name in tensors:
        raise ConfigError(
            f"batch-norm folding would create tensor {name!r}, but the model already has one of that name"
        )
    return name


def _block_types(roles: Collection[str]) -> int:
    cpt = ParameterTypes.NONE
    if "G" in roles:
        cpt |= ParameterTypes.NNR_CPT_DC
    if "ls" in roles:
        cpt |= ParameterTypes.NNR_CPT_LS
    if "bn.gamma" in roles:
        cpt |= ParameterTypes.NNR_CPT_BN
    if "bias" in roles:
        cpt |= ParameterTypes.NNR_CPT_BI
    return int(cpt)


def _jointly_codable(members: list[_Member], coded: list[_Coded]) -> bool:
    """Whether a block's members can share one NNR_PT_BLOCK NDU: the reference
    decoder takes one dq_flag for all and the codebook for the weight only, and
    a block carries quantized float tensors only."""
    if any(c.payload_type != PayloadType.NNR_PT_FLOAT for c in coded):
        return False
    if any(c.codebook is not None for m, c in zip(members, coded) if m.role != "weight"):
        return False
    if any(c.data_format in dtypes.PATTERN_FORMATS for c in coded):
        return False  # decoders map a block's members by role, not by their bit patterns
    return len({c.dq for c in coded}) == 1


# ---------------------------------------------------------------------------


def write_stream(
    write: Callable[[bytes], object],
    tensors: Mapping[str, np.ndarray],
    config: EncoderConfig,
    /,
    *,
    topology: Topology | None = None,
    progress: Callable[[int, int, str], None] | None = None,
    update: Any = None,
) -> None:
    """Encode named tensors into one NNR bitstream, calling ``write`` with
    each unit in stream order as soon as it is ready (arguments as for
    :func:`encode`).  ``update``: the parent signalling of an incremental
    update (:mod:`nnc_core.incremental` passes it; never a user's).
    """
    c = config
    workers = check_workers(c.workers)
    qp, qp_density, nonweight_qp, use_dq, scan_order = c.qp, c.qp_density, c.nonweight_qp, c.use_dq, c.scan_order
    lambda_scale, codebook_mode, int_quant_bw, raw_float = c.lambda_scale, c.codebook_mode, c.int_quant_bw, c.raw_float
    blocks, fold_batch_norm, batch_norm_epsilon = c.blocks, c.fold_batch_norm, c.batch_norm_epsilon
    max_part_elements, aggregate, cabac_unary_length_minus1 = (
        c.max_part_elements,
        c.aggregate,
        c.cabac_unary_length_minus1,
    )
    dimension_shift, row_skipping, local_scaling = c.dimension_shift, c.row_skipping, c.local_scaling
    qp_per_tensor = dict(c.qp_per_tensor or {})
    shifts = {str(k): int(v) for k, v in (dimension_shift or {}).items()}
    for name, shift in shifts.items():
        ndim = np.ndim(tensors[name]) if name in tensors else 0
        if shift and not 0 <= shift < ndim:
            raise ConfigError(f"dimension_shift {shift} of tensor {name!r} names no dimension of its {ndim}-D shape")
    for what, names in (("qp_per_tensor", qp_per_tensor), ("raw_float", raw_float), ("dimension_shift", shifts)):
        unknown = set(names) - set(tensors)
        if unknown:
            raise ConfigError(f"{what} names tensors that are not in the model: {sorted(unknown)}")
    reduced = reduction.prepare(
        tensors,
        blocks or {},
        shifts,
        raw_float,
        lambda name: float(quantization_step(qp_per_tensor.get(name, qp), qp_density)),
        sparsity=c.sparsity,
        structured_sparsity=c.structured_sparsity,
        prune_ratios=c.prune,
        prune_consumers=c.prune_consumers,
        unification=c.unification,
        low_rank=c.low_rank,
        local_scaling=local_scaling,
        use_dq=use_dq,
        lambda_scale=lambda_scale,
        codebook_mode=codebook_mode,
        int_quant_bw=int_quant_bw,
    )
    tensors, blocks = reduced.tensors, reduced.blocks
    settings = _Settings(
        qp,
        qp_density,
        nonweight_qp,
        use_dq,
        codebook_mode,
        scan_order,
        cabac_unary_length_minus1,
        c.param_opt,
        bool(row_skipping),
        int_quant_bw,
        frozenset(raw_float),
        _Quantizer(qp_density, float(lambda_scale), cabac_unary_length_minus1),
        update=update,
        local_scaling=bool(local_scaling),
        lossless=c.lossless,
    )
    checked = _check_blocks(tensors, blocks or {}, shifts)
    for name in reduced.ranks:  # a decomposed weight travels in a block, even alone
        if not any(m["weight"] == name for m in checked.values()):
            checked[name if name not in checked else name + "+"] = {"weight": name}
    block_of = {name: members for members in checked.values() for name in members.values()}
    index_of = {name: i for i, name in enumerate(tensors)}

    maps = reduction.check_performance_maps(c.performance_maps)
    state = ParseState()
    mps = ModelParameterSet(
        UnitType.NNR_MPS,
        topology_carriage_flag=True,
        mps_sparsification_flag="sparsification" in maps,
        mps_pruning_flag="pruning" in maps,
        mps_unification_flag="unification" in maps,
        mps_decomposition_performance_map_flag="decomposition" in maps,
        performance_maps=maps,
        mps_quantization_method_flags=1,
        mps_qp_density=qp_density,
        mps_quantization_parameter=0,
        validation_set_performance_present_flag=c.validation_set_performance is not None,
        performance_metric_type=c.performance_metric_type,
        validation_set_performance=None
        if c.validation_set_performance is None
        else float(c.validation_set_performance),
    )
    if update is not None:
        mps = replace(mps, **update.mps_fields())
    if reduced.topology:
        if topology is not None:
            raise ConfigError("pruning signals its own topology (NNR_TPL_PRUN); topology= cannot be given with it")
        topology = Topology(TopologyStorageFormat.NNR_TPL_PRUN, reduction.write_pruning_topology(reduced.topology))
    head = [
        write_unit(StartUnit(UnitType.NNR_STR, general_profile_idc=1), state),
        write_unit(mps, state),
        write_unit((topology or Topology()).to_unit(), state),
    ]
    total = len(tensors)

    def jobs() -> Iterator[Callable[[], tuple[list[bytes], int, str]]]:
        """One job per NDU group, made as the tensors are read: at most the jobs
        in flight hold tensors, whatever the model's size."""
        done = 0
        for name in tensors:
            name = str(name)
            roles = block_of.get(name)
            if roles is None:
                value = tensors[name]
                member = _Member(
                    "tensor",
                    name,
                    value,
                    index_of[name],
                    np.ndim(value) > 1,
                    qp_per_tensor.get(name),
                    shifts.get(name, 0),
                )
                pieces = _parts(member, max_part_elements)
                for i, part in enumerate(pieces):
                    done += i == len(pieces) - 1
                    yield _job([part], settings, state, done, name)
                continue
            if roles["weight"] != name:
                continue  # coded with its block's weight
            members = [
                _Member(
                    role,
                    roles[role],
                    tensors[roles[role]],
                    index_of[roles[role]],
                    role == "weight",
                    qp_per_tensor.get(roles[role]),
                    shifts.get(roles[role], 0),
                )
                for role in BLOCK_CODING_ORDER
                if role in roles
            ]
            if fold_batch_norm:
                members = _fold_batch_norm(members, tensors, batch_norm_epsilon, nonweight_qp)
                members.sort(key=lambda m: BLOCK_CODING_ORDER.index(m.role))
            if name in reduced.ranks:
                members = _decompose(members, reduced.ranks[name])
            done += len(roles)
            yield _job(members, settings, state, done, name)

    if aggregate:
        units = list(head)
        for ndus, done, name in ordered_map(jobs(), workers):
            units.extend(ndus)
            if progress is not None:
                progress(done, total, name)
        write(head[0] + aggregate_unit(units[1:]))
        return
    for unit in head:
        write(unit)
    for ndus, done, name in ordered_map(jobs(), workers):
        for unit in ndus:
            write(unit)
        if progress is not None:
            progress(done, total, name)


def _job(
    members: list[_Member], s: _Settings, state: ParseState, done: int, name: str
) -> Callable[[], tuple[list[bytes], int, str]]:
    """Coding one tensor (block, part) on a worker thread; its cost is its element count."""
    job = functools.partial(_encode_job, members, s, state, done, name)
    job.cost = sum(int(np.size(m.value)) for m in members)  # type: ignore[attr-defined]  # a function attribute, read by ordered_map
    return job


def _encode_job(
    members: list[_Member], s: _Settings, state: ParseState, done: int, name: str
) -> tuple[list[bytes], int, str]:
    return _encode_members(members, s, state), done, name


def _parts(m: _Member, max_elements: int | None) -> list[_Member]:
    """A tensor outside blocks, cut into parts of at most ``max_elements`` (clause 7.3.1,
    ``partial_data_counter``), or whole."""
    value = np.asarray(m.value)
    if max_elements is None or value.size <= max_elements:
        return [m]
    value = value.reshape(1) if value.ndim == 0 else value
    rows = value.shape[m.shift]
    rows_per_part = max(1, max_elements // max(1, value.size // rows))
    count = -(-rows // rows_per_part)
    if count > 255:
        raise ConfigError(
            f"tensor {m.name!r}: {count} parts of at most {max_elements} elements; a tensor can be split into 255 parts at most"
        )
    return [
        _Member(m.role, m.name, p.values, m.parameter_id, m.weight, m.qp, m.shift, p.partial_data_counter)
        for p in split_tensor(
            value,
            [min(rows_per_part, rows - start) for start in range(0, rows, rows_per_part)],
            first_tensor_dimension_shift=m.shift,
        )
    ]


def _decompose(members: list[_Member], rank: int) -> list[_Member]:
    """A block's weight replaced by the G and H factors of its rank-``rank``
    decomposition (clause 8; NNR_CPT_DC), in its place in coding order."""
    out = []
    for m in members:
        if m.role != "weight":
            out.append(m)
            continue
        value = np.asarray(m.value, dtype=np.float32)
        g, h = reduction.decompose(value, rank)
        shape = tuple(int(d) for d in value.shape)
        out.append(_Member("G", m.name + "_G", g, m.parameter_id, True, m.qp, full_shape=shape))
        out.append(_Member("H", m.name + "_H", h, m.parameter_id, True, m.qp))
    return out


def _adapt_local_scaling(members: list[_Member], coded: list[_Coded], s: _Settings) -> list[_Coded]:
    """Local scaling adaptation (clause 8): the LS member becomes the per-row
    factors that best fit the quantized weight (for G and H: their product)
    to the weight scaled by the LS values so far, and is quantized again."""
    roles = {m.role: i for i, m in enumerate(members)}
    if "ls" not in roles or any(c.payload_type != PayloadType.NNR_PT_FLOAT for c in coded):
        return coded

    def rec(i: int) -> np.ndarray:
        c = coded[i]
        return np.asarray(
            _reconstruct(c.stored, c.payload_type, c.qp, s.qp_density, c.codebook, None), dtype=np.float64
        )

    if "G" in roles:
        g, h = members[roles["G"]], members[roles["H"]]
        target = np.asarray(g.value, dtype=np.float64) @ np.asarray(h.value, dtype=np.float64)
        reconstructed = rec(roles["G"]) @ rec(roles["H"])
    else:
        w = members[roles["weight"]]
        target = coded_view(np.asarray(w.value, dtype=np.float32), w.shift)
        reconstructed = rec(roles["weight"])
    ls = members[roles["ls"]]
    ls.value = reduction.local_scaling_factors(target, reconstructed, np.asarray(ls.value, dtype=np.float32))
    coded = list(coded)
    coded[roles["ls"]] = _quantize_member(ls, s)
    return coded


def _encode_members(members: list[_Member], s: _Settings, state: ParseState) -> list[bytes]:
    """The NDUs of one tensor, or of one block's tensors (in coding order)."""
    coded = [_quantize_member(m, s) for m in members]
    if s.local_scaling:
        coded = _adapt_local_scaling(members, coded, s)
    joint = len(members) > 1 and _jointly_codable(members, coded)
    factor = next((m for m in members if m.role == "G"), None)
    if factor is not None and not joint:
        raise EncodeError(
            f"decomposed weight {factor.name!r}: its block's members cannot share one NDU (integer or raw members)"
        )
    if not joint:
        cpt = _block_types([m.role for m in members]) if len(members) > 1 else 0
        return [_write_ndu([m], [c], s, state, cpt) for m, c in zip(members, coded)]
    return [_write_ndu(members, coded, s, state, _block_types([m.role for m in members]))]


def _quantize_member(m: _Member, s: _Settings) -> _Coded:
    coded = _quantize_value(m, s)
    if coded.data_format in dtypes.WIDE_FORMATS:
        return coded  # int32 planes: signalled, shaped (*shape, 2)
    if coded.data_format not in dtypes.PATTERN_FORMATS:  # (a codebook of bit patterns is signalled as such)
        coded.data_format = dtypes.format_of(np.asarray(m.value).dtype)
    if np.ndim(m.value) == 0:
        coded.shape = ()  # a scalar: no tensor dimensions (its payload codes one element)
    return coded


def _quantize_value(m: _Member, s: _Settings) -> _Coded:
    value = np.asarray(m.value)
    if value.ndim == 0:
        value = value.reshape(1)
    shape = tuple(int(d) for d in value.shape)
    value = coded_view(value, m.shift)  # rows of the 2-D view first (clause 7.3.8)
    if dtypes.is_integer(value.dtype):
        if value.size and (value.min() < -(2**31) or value.max() > 2**31 - 1):
            return _as_planes(m)  # NNR_PT_INT codes int32: wider values go as two int32 planes
        return _Coded(m.name, shape, PayloadType.NNR_PT_INT, value.astype(np.int32), None, False)
    if not dtypes.is_float(value.dtype):
        raise EncodeError(
            f"tensor {m.name!r}: dtype {value.dtype} is not supported "
            "(integers up to 32 bits, bool, float16, bfloat16, float8, float32, float64)"
        )
    if s.lossless and m.name not in s.raw_float:
        exact = _exact(m, value, shape, s)
        if exact is not None:
            return exact
    w = dtypes.as_float32(value)
    if m.name in s.raw_float or (s.lossless and value.dtype.itemsize <= 4):
        return _Coded(m.name, shape, PayloadType.NNR_PT_RAW_FLOAT, w, None, False)
    if not np.all(np.isfinite(w)):
        bad = int(np.flatnonzero(~np.isfinite(w.reshape(-1)))[0])
        raise EncodeError(
            f"tensor {m.name!r}: non-finite value {w.reshape(-1)[bad]} at flat index {bad} (send it with raw_float to keep it)"
        )
    bits = None
    if s.int_quant_bw is not None:
        bits = s.int_quant_bw if s.int_quant_bw > 7 or m.weight else 8
        requested = _int_aligned_qp(w, bits, s.qp_density)
    elif m.qp is not None:
        requested = m.qp
    else:
        requested = s.qp if m.weight else s.nonweight_qp
    # Only the QP a tensor ends up with must be signalable: a requested one
    # outside the range (NNCodec's default nonweight_qp -75 at qp_density 0
    # or 1) is replaced by the overflow fallback for most tensors, as NNCodec
    # does; a tensor that keeps it is refused below.
    scan = coded_scan_order(value.shape, s.scan_order)
    codebook = None
    if s.codebook_mode:
        stored, qp, codebook = _codebook_quantize(
            m.name, w, requested, s.quantize, s.use_dq, s.codebook_mode, scan, s.param_opt
        )
        dq = s.use_dq and codebook is None
    else:
        dq = s.use_dq
        stored, qp = s.quantize(m.name, w, requested, dq, scan)
    if bits is not None:
        stored = _clip_to_bits(stored, w, bits)
    _check_qp(m.name, qp, 0, s.qp_density)
    return _Coded(m.name, shape, PayloadType.NNR_PT_FLOAT, stored, qp, dq, codebook, clipped=bits is not None)


def _as_planes(m: _Member) -> _Coded:
    """A tensor sent as the two int32 planes of its values' bits, on a last
    axis of 2 (integers beyond int32, float64 sent exactly; see :mod:`nnc_core.dtypes`)."""
    if m.shift:
        raise EncodeError(
            f"tensor {m.name!r}: {np.asarray(m.value).dtype} values travel as int32 planes, "
            "which are not sent with a shifted dimension"
        )
    planes, data_format = dtypes.to_planes(np.asarray(m.value))
    return _Coded(m.name, (*np.shape(m.value), 2), PayloadType.NNR_PT_INT, planes, None, False, data_format=data_format)


def _exact(m: _Member, value: np.ndarray, shape: tuple[int, ...], s: _Settings) -> _Coded | None:
    """A float tensor coded exactly where float32 raw floats would not be
    (float64) or would take more bytes (the narrow floats); None: as a raw
    float (float32, an empty tensor, or a tensor of an update, whose
    differences are float32).  See :mod:`nnc_core.dtypes`."""
    if value.dtype == np.float64:
        return _as_planes(m)
    if value.dtype.itemsize > 2 or value.size == 0 or s.update is not None:
        return None
    values, positions, data_format = dtypes.pattern_codebook(value)
    zero = min(int(np.searchsorted(values, 0)), len(values) - 1)  # +0.0 or the value next to it
    indices = np.subtract(positions, zero, out=positions)
    codebook = IntegerCodebook(_codebook_egk(values), [int(v) for v in values], zero)
    return _Coded(m.name, shape, PayloadType.NNR_PT_FLOAT, indices, 0, False, codebook, data_format=data_format)


def _write_ndu(members: list[_Member], coded: list[_Coded], s: _Settings, state: ParseState, cpt: int) -> bytes:
    """One NNR_NDU (clause 7.3.8): a single tensor, or a block's members in coding order."""
    block = len(members) > 1
    # a block's header describes its weight
    at = next(i for i, m in enumerate(members) if m.role in ("weight", "G")) if block else 0
    lead = coded[at]
    if lead.data_format in dtypes.PATTERN_FORMATS or lead.data_format in dtypes.WIDE_FORMATS:
        # Codebook indices of bit patterns run to the thousands, int32 planes
        # further: one flag before the Exp-Golomb remainder codes them as
        # small as any setting tried (0.1 % smaller on bf16 weights) and
        # 1.7x faster; the cost search of context sets gains nothing here.
        s = replace(s, unary=1, param_opt=False)
    scan = coded_scan_order(lead.stored.shape, s.scan_order)
    node: dict[str, Any] = {}
    if s.update is not None:
        if s.update.omitted(coded):
            return b""  # an all-zero update is not sent (decoders keep the tensor as it was)
        node = s.update.node_fields(members, coded, at)
    entry_points: list[EntryPoint]
    if lead.payload_type == PayloadType.NNR_PT_RAW_FLOAT:
        payload, entry_points = lead.stored.astype("<f4").tobytes(), []
    elif s.update is None:
        payload, entry_points = _payload(coded, scan, s)
    else:
        # HDSP (temporal tools): the shorter payload with the flag off or on, off on ties
        tca = node["temporal_context_modeling_flag"]
        parents = [s.update.parent(m, c, tca) for m, c in zip(members, coded)]
        tries = [
            _payload(coded, scan, s, parents, hdsp)
            for hdsp in ((False, True) if s.update.try_hdsp(parents) else (False,))
        ]
        payload, entry_points = min(tries, key=lambda p: len(p[0]))
    if block:
        by_role = {m.role: m.name for m in members}
        ids = [
            by_role[r]
            for role in BLOCK_ID_ORDER
            for r in (("weight", "G", "H") if role == "weight" else (role,))
            if r in by_role
        ]
        parameter_id = members[at].parameter_id
    else:
        ids, parameter_id = [members[0].name], members[0].parameter_id
    formats = {c.data_format for c in coded}  # a block's members share one: their weight's, if all have it
    data_format = formats.pop() if len(formats) == 1 else None
    header = NduHeader(
        decompressed_data_format_present_flag=data_format is not None,
        decompressed_data_format=data_format,
        payload_type=PayloadType.NNR_PT_BLOCK if block else lead.payload_type,
        multiple_topology_elements_present_flag=block,
        element_ids=ids,
        node_id_present_flag=True,
        device_id=0,
        parameter_id=parameter_id,
        put_node_depth=0,
        codebook_present_flag=lead.codebook is not None,
        codebooks=[lead.codebook] if lead.codebook else [],
        dq_flag=lead.dq,
        tensor_dimensions_flag=True,
        cabac_unary_length_flag=True,
        compressed_parameter_types=cpt,
        decomposition_rank=lead.shape[1] if members[at].role == "G" else None,
        g_number_of_rows=lead.shape[0] if members[at].role == "G" else None,
        tensor_dimensions=list(members[at].full_shape or lead.shape),
        cabac_unary_length_minus1=s.unary,
        first_tensor_dimension_shift=members[at].shift,
        scan_order=scan,
        entry_points=entry_points,
    )
    if node:
        header = replace(header, **node)
    unit = CompressedDataUnit(
        UnitType.NNR_NDU, header=header, payload=payload, partial_data_counter=members[0].partial_data_counter
    )
    return write_unit(unit, state)


def _payload(
    coded: list[_Coded], scan_order: int, s: _Settings, parents: list[Any] | None = None, hdsp: bool = False
) -> tuple[bytes, list[EntryPoint]]:
    """The DeepCABAC payload of an NDU's tensors and its entry points.

    ``parents``: per tensor ``(base, history)`` in coded view for the
    temporal tools of an incremental update (None each where unused);
    ``hdsp`` turns on HDSP for the tensors that have a history and signal it.
    """
    tensors = []
    for i, c in enumerate(coded):
        history = parents[i][1] if parents else None
        coding = TensorCoding(
            dq_flag=c.dq,
            scan_order=coded_scan_order(c.stored.shape, scan_order),
            cabac_unary_length_minus1=s.unary,
            general_profile_idc=1,
            row_skip_flag=s.row_skipping,
            param_opt=s.param_opt,
            codebook_size=len(c.codebook.values) if c.codebook else 0,
            codebook_zero_offset=c.codebook.zero_offset if c.codebook else 0,
            dq_any_index=c.clipped and c.dq,
            parent_node_id_present_flag=parents is not None,
            hdsp_flag=hdsp and history is not None and hdsp_signalled(c.stored.shape, c.codebook),
        )
        tensors.append((c.name, c.stored, c.qp, coding))
    if parents is None:
        return code_payload(tensors, 6 + s.qp_density)
    bases = [p[0] for p in parents]
    histories = [p[1] if t[3].hdsp_flag else None for p, t in zip(parents, tensors)]
    return code_payload(tensors, 6 + s.qp_density, bases=bases, histories=histories)


def hdsp_signalled(coded_shape: tuple[int, ...], codebook: IntegerCodebook | None) -> bool:
    """Whether a tensor's payload carries the HDSP (and row-skip) flag (profile 1):
    a coded view of more than one row and column, not a single-entry codebook."""
    rows = int(coded_shape[0]) if coded_shape else 1
    cols = int(np.prod(coded_shape[1:])) if len(coded_shape) > 1 else 1
    return rows > 1 and cols > 1 and not (codebook is not None and len(codebook.values) == 1)
