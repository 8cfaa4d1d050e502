"""Incremental coding: a model sent as updates of a base model (ISO/IEC
15938-17:2024, second edition; notes 04).

An incremental session is a sequence of NNR bitstreams.  Each one carries,
per tensor, an *update*: values the receiver adds to the version of the
tensor it already holds.  The bitstream structures the updates as the
*parameter update tree* of the standard:

* the NNR_MPS sets ``mps_parent_signalling_enabled_flag`` and, when the
  receiver's model is known, ``base_model_id`` (below);
* every NDU is a node ``(device_id, parameter_id, put_node_depth)`` with a
  parent reference of type ICNN_NDU_ID: the NDU of the same ``parameter_id``
  one level up (``put_node_depth - 1``);
* an all-zero update of a tensor the receiver has is not sent at all;
* temporal context adaptation (TCA, ``temporal_context_modeling_flag``) codes
  a tensor with contexts selected by the stored integers of its parent NDU,
  and history-dependent significance probability (HDSP, a per-tensor flag in
  the payload) with contexts selected by whether a position was ever
  non-zero in the earlier NDUs of the tensor;
* row skipping (``row_skip_flag``) signals the rows an update leaves
  unchanged instead of coding their zeros.

The reference software (NNCodec 2.1.3) codes such sequences with
``compress(..., compress_differences=True)``: the first bitstream is the
base model itself at node depth 1 (the implicit root is the empty model),
each later one holds differences at the next depth.  :class:`UpdateEncoder`
and :class:`UpdateDecoder` reproduce that: the same tensors and options give
byte-identical bitstreams, and each decodes the other's.

Identifying the base.  ``base_model_id`` is a string the MPS may carry to
name the model a bitstream updates; its format is not fixed by what we know
of the standard (notes 04 §7: UNVERIFIED) and NNCodec never writes it.  We
write ``"nnc-sha256:" + SHA-256`` of the receiver's model before the update
(:func:`model_fingerprint`) and a decoder refuses a bitstream whose id in that
form does not match its base; ids in other forms are not checked.  Without
an id the node ids still tell a decoder that holds the earlier NDUs (a
session, or a base given as bitstreams) whether a stream continues them:
``put_node_depth - 1`` must be the depth of the tensor's last NDU, and
``parent_device_id`` and ``parameter_id`` must match it.  Payload-hash
parent references (ICNN_NDU_PL_SHA256/512) are parsed but not checked: what
they hash is UNVERIFIED.

Predictive residual encoding.  The MPS flag ``nnr_pre_flag`` exists; the
decoding process it selects is not known from NNCodec (which only writes
and reads the flag; notes 04 §4: UNVERIFIED).  Decoding here therefore does
not depend on it.  :class:`UpdateEncoder` can signal it (``pre_flag``) and
offers the encoder-side prediction NNCodec's federated-learning client uses
(``error_feedback``): what quantization left out of one update is added to
the next, so the receiver's model does not drift from the sender's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from nnc_core.bitstream.layout import coded_view
from nnc_core.bitstream.units import (
    ICNN_NDU_ID,
    CompressedDataUnit,
    ModelParameterSet,
    flatten_units,
    read_units,
)
from nnc_core.config import EncoderConfig
from nnc_core.decoding import DecoderState, decode_units
from nnc_core.encoding import write_stream
from nnc_core.errors import BaseMismatchError, ConfigError, EncodeError
from nnc_core.parallel import check_workers

__all__ = [
    "BASE_ID_PREFIX",
    "model_fingerprint",
    "UpdateEncoder",
    "UpdateDecoder",
    "encode_update",
    "decode_update",
]

#: Prefix of the ``base_model_id`` strings this implementation writes and checks.
BASE_ID_PREFIX = "nnc-sha256:"


def model_fingerprint(tensors: Mapping[str, np.ndarray]) -> str:
    """``base_model_id`` of a model: :data:`BASE_ID_PREFIX` and the SHA-256 of its
    tensors in name order (name, dtype, shape and little-endian C-order bytes)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        a = np.asarray(tensors[name])
        a = a.astype(a.dtype.newbyteorder("<"), copy=False)
        h.update(name.encode() + b"\0" + a.dtype.str.encode() + b"\0" + repr(a.shape).encode() + b"\0")
        h.update(np.ascontiguousarray(a).tobytes())
    return BASE_ID_PREFIX + h.hexdigest()


def _applied(reference: np.ndarray | None, update: np.ndarray) -> np.ndarray:
    """A tensor after adding a decoded update; keeps the reference's dtype (a
    new float tensor is float32, also where codebook decoding gives float64)."""
    if reference is None:
        return update.astype(np.float32) if update.dtype.kind == "f" else update.copy()
    if reference.shape != update.shape:
        raise ConfigError(
            f"an update of shape {list(update.shape)} cannot apply to a tensor of shape {list(reference.shape)}"
        )
    if reference.dtype.kind in "iu":
        return (reference.astype(np.int64) + update.astype(np.int64)).astype(reference.dtype)
    return (reference + update).astype(reference.dtype)


def _difference(name: str, value: Any, reference: np.ndarray | None) -> np.ndarray:
    """``value - reference`` as the encoder codes it (float32 for floats, int32 for integers)."""
    a = np.asarray(value)
    if reference is None:
        return a
    if a.shape != reference.shape:
        raise ConfigError(f"tensor {name!r} has shape {list(a.shape)}, its base {list(reference.shape)}")
    if a.dtype.kind in "iu" and reference.dtype.kind in "iu":
        d = a.astype(np.int64) - reference.astype(np.int64)
        if d.size and (d.min() < -(2**31) or d.max() > 2**31 - 1):
            raise EncodeError(f"tensor {name!r}: its difference from the base leaves int32")
        return d.astype(np.int32)
    return (a.astype(np.float32) - reference.astype(np.float32)).astype(np.float32)


class UpdateDecoder:
    """Receiver of an incremental session: decodes its bitstreams in order.

    ``base`` is the model the first bitstream updates: a mapping of arrays
    (e.g. a loaded ``.npz``), an NNR bitstream, or a sequence of bitstreams
    (a base and updates of it, decoded in order); None starts from the empty
    model, so that the first bitstream is the base itself.  Bitstreams given
    as the base also provide the TCA base and HDSP history of their tensors.
    ``workers``: threads decoding an update's NDUs at once (default: the CPUs
    available; see :func:`nnc_core.decoding.decode_steps`).
    """

    def __init__(self, base: Any = None, *, max_elements: int | None = None, workers: int | None = None) -> None:
        self.state = DecoderState()
        self.reference: dict[str, np.ndarray] = {}
        self.max_elements = max_elements
        self.workers = check_workers(workers)
        self._node: dict[str, tuple[int, int]] = {}  # tensor -> (device_id, parameter_id) of its last NDU
        if base is None:
            return
        if isinstance(base, (bytes, bytearray, memoryview)):
            base = [base]
        if isinstance(base, Mapping):
            self.reference = {str(k): np.array(v) for k, v in base.items()}
        elif isinstance(base, Sequence) and all(isinstance(b, (bytes, bytearray, memoryview)) for b in base):
            for stream in base:
                self.decode(stream)
        else:
            raise ConfigError(f"a base is a mapping of arrays or NNR bitstream(s), not {type(base).__name__}")

    def decode(self, data: bytes | bytearray | memoryview) -> dict[str, np.ndarray]:
        """The receiver's model after the bitstream: every tensor it held, with the update added."""
        self.decode_update(data)
        return dict(self.reference)

    def decode_update(self, data: bytes | bytearray | memoryview) -> dict[str, np.ndarray]:
        """Decode the next bitstream and apply it; returns only the decoded updates
        (what the reference software's decoder returns).

        Raises:
            BaseMismatchError: the bitstream names another base model, or its
                node ids do not continue the NDUs decoded so far.
            BitstreamError: the bitstream is corrupt, or needs parent data (TCA)
                the decoder does not have.
        """
        units = read_units(data)
        nodes = self._check(units)
        s = self.state
        saved = dict(s.base), dict(s.history), dict(s.put_node_depth)
        try:
            tensors = decode_units(units, len(data), s, max_elements=self.max_elements, workers=self.workers)
            update = {t.name: t.values for t in tensors}
            reference = dict(self.reference)
            for name, values in update.items():
                try:
                    reference[name] = _applied(reference.get(name), values)
                except ConfigError as e:
                    raise BaseMismatchError(f"tensor {name!r}: {e}; the bitstream does not update this base") from e
        except BaseException:
            s.base, s.history, s.put_node_depth = saved  # a refused bitstream leaves the session as it was
            raise
        self.reference = reference
        self._node.update(nodes)
        return update

    def _check(self, units: list[Any]) -> dict[str, tuple[int, int]]:
        """Refuse a bitstream that is not an update of what this decoder holds."""
        mps: ModelParameterSet | None = None
        nodes: dict[str, tuple[int, int]] = {}
        for index, inner, unit in flatten_units(units):
            at: dict[str, Any] = dict(unit_index=index, aggregated_index=inner, byte_offset=unit.offset)
            if isinstance(unit, ModelParameterSet):
                mps = unit
                if not self.reference:
                    continue  # the first bitstream of a session is the root: any model
                if not unit.mps_parent_signalling_enabled_flag:
                    raise BaseMismatchError(
                        "NNR_MPS: the bitstream is a complete model (mps_parent_signalling_enabled_flag 0), "
                        "not an update of the base",
                        **at,
                    )
                given = unit.base_model_id if unit.base_model_id_present_flag else None
                if given is not None and given.startswith(BASE_ID_PREFIX):
                    have = model_fingerprint(self.reference)
                    if given != have:
                        raise BaseMismatchError(
                            f"NNR_MPS: base_model_id {given!r} names another base model than the one given ({have!r})",
                            **at,
                        )
            elif isinstance(unit, CompressedDataUnit) and unit.header.parent_node_id_present_flag:
                h = unit.header
                names = [str(e) for e in h.element_ids]
                depth = h.put_node_depth or 0
                for name in names:
                    self._check_parent(name, h, depth, mps, at)
                    nodes[name] = (h.device_id or 0, h.parameter_id or 0)
        return nodes

    def _check_parent(self, name: str, h: Any, depth: int, mps: ModelParameterSet | None, at: dict[str, Any]) -> None:
        if h.parent_node_id_type != ICNN_NDU_ID:
            return  # payload-hash parents: what is hashed is not known (UNVERIFIED)
        known = self.state.put_node_depth.get(name)
        if known is None:
            if depth > 1 and not self.reference and not (mps and mps.base_model_id_present_flag):
                raise BaseMismatchError(
                    f"NNR_NDU of tensor {name!r}: node depth {depth} updates an earlier version of the tensor, "
                    "but no base was given",
                    **at,
                )
            if h.temporal_context_modeling_flag:
                raise BaseMismatchError(
                    f"NNR_NDU of tensor {name!r}: codes with temporal context adaptation against its parent NDU "
                    f"(depth {depth - 1}), which the decoder does not have: give the base as the bitstream(s) it was "
                    "sent in",
                    **at,
                )
            return
        if depth != known + 1:
            raise BaseMismatchError(
                f"NNR_NDU of tensor {name!r}: put_node_depth {depth} has its parent at depth {depth - 1}, "
                f"but the base holds the tensor's NDU of depth {known}",
                **at,
            )
        device, parameter = self._node.get(name, (h.parent_device_id or 0, h.parameter_id or 0))
        if (h.parent_device_id or 0) != device or (h.parameter_id or 0) != parameter:
            raise BaseMismatchError(
                f"NNR_NDU of tensor {name!r}: parent (device {h.parent_device_id or 0}, parameter {h.parameter_id}) "
                f"is not the tensor's last NDU (device {device}, parameter {parameter})",
                **at,
            )


class _StreamPlan:
    """What the encoder asks while writing one bitstream of a session
    (:func:`nnc_core.encoding.write_stream` with ``update``)."""

    def __init__(self, mirror: UpdateDecoder, tca: bool, hdsp: bool, pre_flag: bool, signal_base: bool, device_id: int):
        self.mirror = mirror
        self.tca = tca
        self.hdsp = hdsp
        self.pre_flag = pre_flag
        self.signal_base = signal_base
        self.device_id = device_id

    def mps_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {"mps_parent_signalling_enabled_flag": True, "nnr_pre_flag": self.pre_flag}
        if self.signal_base and self.mirror.reference:
            fields.update(base_model_id_present_flag=True, base_model_id=model_fingerprint(self.mirror.reference))
        return fields

    def omitted(self, coded: list[Any]) -> bool:
        """An NDU whose stored integers are all zero is not sent, as NNCodec does,
        unless the receiver does not have a tensor of it yet: NNCodec omits those
        too (from the first stream of a session), which leaves the receiver
        without the tensor and its shape."""
        return all(c.name in self.mirror.reference for c in coded) and not any(np.any(c.stored) for c in coded)

    def node_fields(self, members: list[Any], coded: list[Any], at: int) -> dict[str, Any]:
        """NDU header fields: node id and parent reference of a tensor (block)."""
        lead = members[at].name
        state = self.mirror.state
        depth = state.put_node_depth.get(lead, 0) + 1
        parameter_id = self.mirror._node.get(lead, (self.device_id, members[at].parameter_id))[1]
        return dict(
            device_id=self.device_id,
            parameter_id=parameter_id,
            put_node_depth=depth,
            parent_node_id_present_flag=True,
            parent_node_id_type=ICNN_NDU_ID,
            parent_device_id=0,
            temporal_context_modeling_flag=self.tca and lead in state.base,
        )

    def parent(self, member: Any, coded: Any, tca: bool) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(TCA base, HDSP history) of a member, in its coded view."""
        state = self.mirror.state
        shift = member.shift  # 0 for non-weight block members (checked when blocks are formed)
        shape = coded.shape

        def view(a: np.ndarray | None, what: str) -> np.ndarray | None:
            if a is None:
                return None
            if a.shape != tuple(shape):
                raise ConfigError(f"tensor {member.name!r} has shape {list(shape)}, its {what} {list(a.shape)}")
            return coded_view(a, shift)

        base = view(state.base.get(member.name), "parent NDU") if tca else None
        if tca and base is None:
            raise ConfigError(f"tensor {member.name!r} has no parent NDU for temporal context adaptation")
        return base, view(state.history.get(member.name), "history") if self.hdsp else None

    def try_hdsp(self, parents: list[Any]) -> bool:
        """The reference encoder tries HDSP on an NDU when all its tensors have a history."""
        return self.hdsp and all(h is not None for _, h in parents)


class UpdateEncoder:
    """Sender of an incremental session; mirrors the receiver's state exactly.

    Args:
        base: the model the first bitstream updates (as for :class:`UpdateDecoder`);
            None: the first bitstream carries the base model itself.
        tca: temporal context adaptation where a tensor has a parent NDU.
        hdsp: history-dependent significance probability, per NDU where it
            codes shorter.
        row_skipping: signal unchanged (all-zero) rows instead of coding them.
        signal_base: write ``base_model_id`` (:func:`model_fingerprint` of the
            receiver's model) when there is a base.
        pre_flag: set ``nnr_pre_flag`` (signalling only; see the module notes).
        error_feedback: carry what quantization left out of an update into
            the next one (encoder side only), so that the receiver's model
            does not drift from the sender's over many updates.
        device_id: ``device_id`` of every NDU.
        config: the encoder's settings (:class:`~nnc_core.config.EncoderConfig`).
        **options: single fields of it changed (qp, use_dq, ...).
    """

    def __init__(
        self,
        base: Any = None,
        *,
        tca: bool = True,
        hdsp: bool = True,
        row_skipping: bool = True,
        signal_base: bool = True,
        pre_flag: bool = False,
        error_feedback: bool = False,
        device_id: int = 0,
        config: EncoderConfig | None = None,
        **options: Any,
    ) -> None:
        _check_session_options(options)
        self._config = EncoderConfig.of(config, **dict(options, row_skipping=row_skipping))
        self._mirror = UpdateDecoder(base, workers=self._config.workers)
        self._plan: dict[str, Any] = dict(
            tca=tca, hdsp=hdsp, pre_flag=pre_flag, signal_base=signal_base, device_id=device_id
        )
        self.error_feedback = error_feedback
        self._residual: dict[str, np.ndarray] = {}  # error feedback: what quantization left out
        self._previous: dict[str, np.ndarray] = dict(self._mirror.reference)  # the sender's last model
        self.last_update: dict[str, np.ndarray] = {}  # the differences the last bitstream coded

    @property
    def reference(self) -> dict[str, np.ndarray]:
        """The receiver's model after the bitstreams so far."""
        return self._mirror.reference

    @property
    def state(self) -> DecoderState:
        return self._mirror.state

    def encode(self, model: Mapping[str, np.ndarray], **options: Any) -> bytes:
        """Code the change from the previous model given (at first: the base) to
        ``model``: each tensor's difference; tensors not in ``model`` stay as
        they are, unchanged tensors and rows cost (almost) nothing.
        ``options`` override the session's encode settings for this bitstream
        (e.g. a finer ``qp`` for updates than for the base)."""
        update = {}
        for name, value in model.items():
            name = str(name)
            previous = self._previous.get(name)
            update[name] = _difference(name, value, previous if previous is not None else self.reference.get(name))
        data = self.encode_update(update, **options)
        self._previous.update({str(k): np.array(v) for k, v in model.items()})
        return data

    def encode_update(self, update: Mapping[str, np.ndarray], **options: Any) -> bytes:
        """Code ``update`` as it is: the values the receiver adds (as NNCodec's
        ``compress_differences``); with ``error_feedback`` plus what
        quantization left out of the earlier updates."""
        update = {str(k): np.asarray(v) for k, v in update.items()}
        if self.error_feedback:
            for name, r in self._residual.items():
                if name in update and update[name].dtype.kind == "f":
                    update[name] = (update[name].astype(np.float32) + r).astype(np.float32)
        self.last_update = update
        root = not self.reference
        data, decoded = self._code(update, options)
        if self.error_feedback and not root:  # (the base's own quantization error is no update's)
            for name, d in update.items():
                if d.dtype.kind == "f":
                    got = decoded.get(name)
                    self._residual[name] = (
                        d.astype(np.float32) if got is None else (d - got.astype(np.float32)).astype(np.float32)
                    )
        return data

    def _code(self, update: dict[str, Any], options: dict[str, Any]) -> tuple[bytes, dict[str, np.ndarray]]:
        _check_session_options(options)
        plan = _StreamPlan(self._mirror, **self._plan)
        extra = {k: options.pop(k) for k in ("topology", "progress") if k in options}
        parts: list[bytes] = []
        write_stream(parts.append, update, self._config.replace(**options), update=plan, **extra)
        data = b"".join(parts)
        # The receiver's state follows from the bitstream: decode it as the receiver will.
        return data, self._mirror.decode_update(data)


# Options an update cannot take: the session builds the stream itself (no
# split tensors), and an update names exactly the base's tensors in their
# shapes, which decomposition, pruning, local scaling factors and batch-norm
# folding (drops the batch norms, adds scaling factors) would change.
_NOT_IN_SESSION = ("base", "max_part_elements", "low_rank", "prune", "local_scaling", "fold_batch_norm")


def _check_session_options(options: Mapping[str, Any]) -> None:
    for name in _NOT_IN_SESSION:
        if options.get(name) not in (None, False):
            raise ConfigError(
                f"{name} is not an option of an incremental update (an update codes the base's "
                "tensors in their shapes, as one stream)"
            )


def encode_update(tensors: Mapping[str, np.ndarray], base: Any, **options: Any) -> bytes:
    """One bitstream coding ``tensors`` as an update of ``base`` (see
    :class:`UpdateEncoder`; ``options`` as there, and :func:`nnc_core.encode`'s)."""
    per_stream = {k: options.pop(k) for k in ("topology", "progress") if k in options}
    return UpdateEncoder(base, **options).encode(tensors, **per_stream)


def decode_update(data: bytes | bytearray | memoryview, base: Any, **options: Any) -> dict[str, np.ndarray]:
    """The model ``data`` makes of ``base`` (see :class:`UpdateDecoder`)."""
    return UpdateDecoder(base, **options).decode(data)
