"""Drive the reference software's DeepCABAC coder like :mod:`nnc_core.deepcabac`.

NNCodec 2.1.3 (PyPI ``nncodec``) ships its coder as the pybind11 extension
``nncodec.extensions.deepCABAC``.  The functions here take the same
arguments as our :class:`~nnc_core.deepcabac.TensorCoding`-based API and call
NNCodec the way its own NDU coder does, so that tests and benchmarks can
compare bytes, decoded values and entry points.  Importing this module needs
``nncodec`` installed (``pip install --no-deps nncodec==2.1.3 'numpy<2'``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from nncodec.extensions import deepCABAC  # type: ignore[import-not-found]  # NNCodec is installed only in the nncodec and bench environments
from nncodec.extensions.deepCABAC import HdspMode  # type: ignore[import-not-found]  # NNCodec is installed only in the nncodec and bench environments

from nnc_core.deepcabac import ENTRY_POINT_DTYPE, TensorCoding

__all__ = ["encode", "decode", "entry_points", "entry_point_ints", "quantize"]

_NO_HISTORY = np.zeros(2, dtype=np.int8)


def _matrix(values: np.ndarray) -> np.ndarray:
    return values.reshape(1) if values.ndim == 0 else values


def _codebook_args(coding: TensorCoding) -> tuple[int, int]:
    """NNCodec's NDU coder passes codebook limits to its coder in profile 1 only."""
    if coding.general_profile_idc != 1:
        return 0, 0
    return coding.codebook_size, coding.codebook_zero_offset


def _hdsp_args(coding: TensorCoding, history: np.ndarray | None, *, encoding: bool) -> tuple[Any, np.ndarray]:
    """NNCodec's (HdspMode, history) pair: AlwaysOff means no HDSP flag at all."""
    hist = _NO_HISTORY if history is None else np.ascontiguousarray(history, dtype=np.int8).reshape(-1)
    if not coding.parent_node_id_present_flag:
        return HdspMode.AlwaysOff, hist
    if encoding:
        return (HdspMode.TensorOn if coding.hdsp_flag else HdspMode.TensorOff), hist
    return (HdspMode.TensorOn if history is not None else HdspMode.TensorOff), hist


def encode(
    values: np.ndarray,
    coding: TensorCoding,
    *,
    base: np.ndarray | None = None,
    history: np.ndarray | None = None,
    qp_offset: tuple[int, int] | None = None,
) -> bytes:
    """Payload of one tensor coded by NNCodec; ``qp_offset`` = (value, nbits) first."""
    q = np.ascontiguousarray(_matrix(values), dtype=np.int32)
    enc = deepCABAC.Encoder()
    if qp_offset is not None:
        enc.iae_v(qp_offset[1], qp_offset[0])
    enc.initCtxModels(coding.cabac_unary_length_minus1 + 1, int(coding.param_opt))
    rows = q.reshape(q.shape[0], -1)
    skip = (~rows.any(axis=1)).astype(np.int32) if q.ndim >= 2 else np.zeros(q.shape[0], np.int32)
    args = (
        int(coding.dq_flag),
        coding.scan_order,
        coding.general_profile_idc,
        int(coding.parent_node_id_present_flag),
        int(coding.row_skip_flag),
        skip,
        *_hdsp_args(coding, history, encoding=True),
        *_codebook_args(coding),
    )
    if base is not None:
        enc.encodeLayer2(q, np.ascontiguousarray(base, dtype=np.int32).reshape(q.shape), *args)
    else:
        enc.encodeLayer(q, *args)
    return bytes(enc.finish())


def entry_point_ints(eps: np.ndarray) -> np.ndarray:
    """Our entry points (one per block row) in NNCodec's packed differential form."""
    eps = np.asarray(eps, dtype=ENTRY_POINT_DTYPE)
    packed = [
        ((int(eps[r]["bit_position"]) - int(eps[r - 1]["bit_position"])) << 11)
        + (int(eps[r]["value"]) << 3)
        + int(eps[r]["dq_state"])
        for r in range(1, len(eps))
    ]
    return np.array(packed, dtype=np.uint64)


def _decoder(payload: bytes, coding: TensorCoding) -> Any:  # NNCodec's deepCABAC.Decoder
    dec = deepCABAC.Decoder()
    buf = np.frombuffer(payload, dtype=np.uint8).copy()
    dec.setStream(buf)  # keeps buf alive (pybind11 keep_alive)
    return dec


def decode(
    payload: bytes,
    shape: tuple[int, ...],
    coding: TensorCoding,
    *,
    base: np.ndarray | None = None,
    history: np.ndarray | None = None,
    eps: np.ndarray | None = None,
    qp_bits: int | None = None,
) -> tuple[np.ndarray, int]:
    """Stored integers NNCodec decodes, and the bytes it consumed.

    Block scans need the entry points (ours, ENTRY_POINT_DTYPE) since NNCodec
    decodes block rows from them, as its NDU reader does.
    """
    dec, out = _decode_tensor(payload, shape, coding, base, history, eps, qp_bits)
    consumed = dec.finish()
    return out.reshape(shape), int(consumed)


def decode_levels(payload: bytes, shape: tuple[int, ...], coding: TensorCoding) -> np.ndarray:
    """Stored integers NNCodec decodes, without reading the terminating bin
    (which it reports as an error on bytes no encoder wrote, e.g. random ones)."""
    return _decode_tensor(payload, shape, coding, None, None, None, None)[1].reshape(shape)


def _decode_tensor(
    payload: bytes,
    shape: tuple[int, ...],
    coding: TensorCoding,
    base: np.ndarray | None,
    history: np.ndarray | None,
    eps: np.ndarray | None,
    qp_bits: int | None,
) -> tuple[Any, np.ndarray]:
    """NNCodec's decoder after decoding one tensor, and the tensor."""
    dec = _decoder(payload, coding)
    if qp_bits is not None:
        dec.iae_v(qp_bits)
    dec.initCtxModels(coding.cabac_unary_length_minus1 + 1)
    if eps is not None and len(eps) > 1:
        dec.setEntryPoints(entry_point_ints(eps))
    out = np.zeros(shape if shape else (1,), dtype=np.int32)
    args = (
        int(coding.dq_flag),
        coding.scan_order,
        coding.general_profile_idc,
        int(coding.parent_node_id_present_flag),
        *_hdsp_args(coding, history, encoding=False),
        *_codebook_args(coding),
    )
    if base is not None:
        dec.decodeLayer2(out, np.ascontiguousarray(base, dtype=np.int32).reshape(out.shape), *args)
    else:
        dec.decodeLayer(out, *args)
    return dec, out


def entry_points(payload: bytes, shape: tuple[int, ...], coding: TensorCoding) -> np.ndarray:
    """NNCodec's packed entry points of a single-tensor payload (without TCA/HDSP)."""
    dec = _decoder(payload, coding)
    dec.initCtxModels(coding.cabac_unary_length_minus1 + 1)
    out = np.zeros(shape, dtype=np.int32)
    eps = dec.decodeLayerAndCreateEPs(
        out,
        int(coding.dq_flag),
        coding.scan_order,
        coding.general_profile_idc,
        int(coding.parent_node_id_present_flag),
        HdspMode.AlwaysOff,
        _NO_HISTORY,
        *_codebook_args(coding),
    )
    return np.array(eps, dtype=np.uint64)


def quantize(
    weights: np.ndarray,
    *,
    dq_flag: bool,
    qp: int,
    qp_density: int = 2,
    scan_order: int = 0,
    lambda_scale: float = 0.0,
    cabac_unary_length_minus1: int = 10,
) -> tuple[np.ndarray, int]:
    """NNCodec's quantizer: stored integers and the QP it used (it may raise QP on overflow).

    Called as NNCodec's approximator does, with the stream's
    ``cabac_unary_length_minus1`` (which its rate model takes as its number of
    greater-than flags).
    """
    w = np.ascontiguousarray(weights, dtype=np.float32)
    q = np.zeros(w.shape, dtype=np.int32)
    enc = deepCABAC.Encoder()
    enc.initCtxModels(cabac_unary_length_minus1, 0)
    used = enc.quantLayer(w, q, int(dq_flag), qp_density, qp, lambda_scale, cabac_unary_length_minus1, scan_order, 1)
    return q, int(used)


def nncodec_compression() -> Any:  # the module nncodec.nnc.compression
    """NNCodec's ``nnc.compression`` module (``compress``/``decompress``).

    NNCodec imports its optional ``framework`` package (PyTorch, TensorFlow and
    dataset helpers) at import time; like the generator of our conformance
    vectors, this replaces it with stubs so that only numpy and NNCodec's codec
    core are needed.
    """
    import sys
    import types

    if "nncodec.framework" not in sys.modules:
        fw = types.ModuleType("nncodec.framework")
        fw.__path__ = []
        tfm = types.ModuleType("nncodec.framework.tensorflow_model")
        tfm.is_tef_model = lambda model: False  # type: ignore[attr-defined]  # stand-in, filled by hand
        ptm = types.ModuleType("nncodec.framework.pytorch_model")
        ptm.is_pyt_model = lambda model: False  # type: ignore[attr-defined]  # stand-in, filled by hand
        uci = types.ModuleType("nncodec.framework.use_case_init")
        uci.use_cases = {}  # type: ignore[attr-defined]  # stand-in, filled by hand
        fw.tensorflow_model, fw.pytorch_model, fw.use_case_init = tfm, ptm, uci  # type: ignore[attr-defined]  # stand-in, filled by hand
        sys.modules.update(
            {
                "nncodec.framework": fw,
                "nncodec.framework.tensorflow_model": tfm,
                "nncodec.framework.pytorch_model": ptm,
                "nncodec.framework.use_case_init": uci,
            }
        )
    from nncodec.nnc import compression  # type: ignore[import-not-found]  # NNCodec is installed only in the nncodec and bench environments

    return compression
