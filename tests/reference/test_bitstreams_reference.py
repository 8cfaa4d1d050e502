"""NNCodec's bitstreams of real pretrained models decode with ours to exactly
NNCodec's own decoded tensors (bytes and dtypes), over many settings."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

from nnc_core.decoding import decode_bitstream
from nnc_core.testing import pretrained, reference

pytestmark = pytest.mark.reference


def _minilm_subset(minilm):
    """Embedding LayerNorm and the first attention block: 0.59 M parameters."""
    names = [n for n in minilm if n.startswith(("embeddings.LayerNorm", "encoder.layer.0.attention"))]
    return {n: minilm[n] for n in names}


def _crepe(crepe_tiny):
    """CREPE tiny with its integer BN counters as int32 tensors."""
    out = {}
    for name, value in crepe_tiny.items():
        out[name] = value.astype(np.int32).reshape(-1) if value.dtype.kind == "i" else value
    return out


def _crepe_blocks(params):
    """Conv/linear weight + bias + batch norm of each CREPE layer as one block."""
    return pretrained.crepe_block_types(params)


def _compress_and_decode(params, **args):
    nnc = reference.nncodec_compression()
    with contextlib.redirect_stdout(io.StringIO()):
        stream = nnc.compress(params, bitstream_path=None, return_bitstream=True, verbose=False, **args)
        expected = nnc.decompress(bytearray(stream))
    return bytes(stream), expected


def _check(stream, expected):
    ours = {t.name: t.values for t in decode_bitstream(stream)}
    assert list(ours) == list(expected)
    for name, value in expected.items():
        value = np.asarray(value)
        assert ours[name].dtype == value.dtype, name
        assert ours[name].shape == value.shape, name
        assert ours[name].tobytes() == value.tobytes(), name


SETTINGS = [
    {},
    {"use_dq": False},
    {"qp": -32},
    {"qp": -44, "use_dq": False},
    {"qp": -60, "qp_density": 3},
    {"qp": -20, "qp_density": 1},
    {"row_skipping": True},
    {"scan_order": 2},
    {"scan_order": 1, "use_dq": False, "row_skipping": True},
    {"cabac_unary_length_minus1": 3, "param_opt": False},
    {"lambda_scale": 1.0},
]


@pytest.mark.parametrize("args", SETTINGS, ids=lambda a: ",".join(f"{k}={v}" for k, v in a.items()) or "defaults")
def test_minilm_streams_decode_like_nncodec(minilm, args):
    _check(*_compress_and_decode(_minilm_subset(minilm), **args))


# NNCodec's codebook encoder tries every zero offset with a full encode, which
# takes minutes on these tensors; codebooks are tested at coarse steps, where
# codebooks stay small, on the attention block's query projection.
CODEBOOK_SETTINGS = [
    {"codebook_mode": 1, "qp": -20},
    {"codebook_mode": 2, "use_dq": False, "qp": -24},
    {"codebook_mode": 1, "qp": -22, "scan_order": 1, "row_skipping": True},
]


@pytest.mark.parametrize("args", CODEBOOK_SETTINGS, ids=lambda a: ",".join(f"{k}={v}" for k, v in a.items()))
def test_codebook_streams_decode_like_nncodec(minilm, args):
    names = [n for n in minilm if n.startswith("encoder.layer.0.attention.self.query")]
    _check(*_compress_and_decode({n: minilm[n] for n in names}, **args))


@pytest.mark.parametrize("args", SETTINGS[:7], ids=lambda a: ",".join(f"{k}={v}" for k, v in a.items()) or "defaults")
def test_crepe_streams_decode_like_nncodec(crepe_tiny, args):
    params = _crepe(crepe_tiny)
    _check(*_compress_and_decode(params, **args))


@pytest.mark.parametrize("bnf", [False, True])
@pytest.mark.parametrize("use_dq", [True, False])
def test_crepe_block_streams_decode_like_nncodec(crepe_tiny, bnf, use_dq):
    params = {k: v for k, v in crepe_tiny.items() if v.dtype == np.float32}
    _check(*_compress_and_decode(params, block_id_and_param_type=_crepe_blocks(params), bnf=bnf, use_dq=use_dq))


ENCODER_SETTINGS = [
    {},
    {"use_dq": False},
    {"qp": -32, "qp_density": 3, "nonweight_qp": -90},
    {"scan_order": 2, "row_skipping": True},
    {"scan_order": 1, "use_dq": False},
    {"cabac_unary_length_minus1": 3, "param_opt": False},
    {"lambda_scale": 1.0},
    {"lambda_scale": 4.0, "use_dq": False, "scan_order": 2},
]


def test_density_1_with_the_default_nonweight_qp(crepe_tiny):
    """nonweight_qp -75 is outside what qp_density 1 signals (-64..63).  NNCodec
    raises each CREPE non-weight's QP to its overflow fallback, but writes a
    fallback below -64 as it is, and the 7-bit field wraps (-65 reads as 63):
    its stream decodes those tensors wrongly.  Ours raises such a fallback to
    -64: every tensor whose QP NNCodec could signal is coded as NNCodec codes
    it, the others at -64, and NNCodec decodes our stream to what we decode."""
    import nnc_core

    params = _crepe(crepe_tiny)
    ours = nnc_core.encode(params, qp=-20, qp_density=1)
    theirs, _ = _compress_and_decode(params, qp=-20, qp_density=1)
    mine = {t.name: t for t in decode_bitstream(ours)}
    nncodec = {t.name: t for t in decode_bitstream(theirs)}
    wrapped = [n for n in mine if mine[n].qp != nncodec[n].qp]
    assert wrapped and all(mine[n].qp == -64 and nncodec[n].qp > 0 for n in wrapped)
    for name, t in mine.items():
        if name not in wrapped:
            assert t.qp == nncodec[name].qp and np.array_equal(t.stored, nncodec[name].stored), name
    nnc = reference.nncodec_compression()
    with contextlib.redirect_stdout(io.StringIO()):
        decoded_there = nnc.decompress(bytearray(ours))
    _check(ours, decoded_there)


@pytest.mark.parametrize(
    "args", ENCODER_SETTINGS, ids=lambda a: ",".join(f"{k}={v}" for k, v in a.items()) or "defaults"
)
@pytest.mark.parametrize("model", ["minilm", "crepe"])
def test_our_streams_equal_nncodec_and_decode_there(minilm, crepe_tiny, model, args):
    """Our encoder writes NNCodec's exact bitstream; NNCodec decodes it to what we decode."""
    import nnc_core

    params = _minilm_subset(minilm) if model == "minilm" else _crepe(crepe_tiny)
    ours = nnc_core.encode(params, **args)
    theirs, expected = _compress_and_decode(params, **args)
    assert ours == theirs
    nnc = reference.nncodec_compression()
    with contextlib.redirect_stdout(io.StringIO()):
        decoded_there = nnc.decompress(bytearray(ours))
    _check(ours, decoded_there)


@pytest.mark.parametrize("args", CODEBOOK_SETTINGS, ids=lambda a: ",".join(f"{k}={v}" for k, v in a.items()))
def test_our_codebook_streams_equal_nncodec(minilm, args):
    import nnc_core

    params = {n: minilm[n] for n in minilm if n.startswith("encoder.layer.0.attention.self.query")}
    ours = nnc_core.encode(params, **args)
    theirs, expected = _compress_and_decode(params, **args)
    assert ours == theirs


BLOCK_ENCODER_SETTINGS = [
    {},
    {"bnf": True},
    {"bnf": True, "use_dq": False, "scan_order": 1, "row_skipping": True},
    {"int_quant_bw": 8},
    {"lambda_scale": 2.0, "bnf": True},
    {"int_quant_bw": 6, "use_dq": False},  # (NNCodec fails on int_quant_bw with bnf: KeyError)
    # weights may take a codebook while biases stay uniform (joint blocks with a
    # codebook); only conv1 and the classifier, as NNCodec's codebook search is slow
    {"codebook_mode": 2, "use_dq": False, "qp": -20, "layers": ("conv1", "classifier")},
]


@pytest.mark.parametrize(
    "args", BLOCK_ENCODER_SETTINGS, ids=lambda a: ",".join(f"{k}={v}" for k, v in a.items()) or "defaults"
)
def test_our_block_streams_equal_nncodec(crepe_tiny, args):
    """Conv/linear + bias + batch-norm blocks (joint or split, folded or not):
    our bitstream is NNCodec's, and NNCodec decodes it to what we decode."""
    import nnc_core
    from nnc_core.encoding import blocks_from_parameter_types

    args = dict(args)
    layers = args.pop("layers", ("",))
    params = {k: v for k, v in crepe_tiny.items() if v.dtype == np.float32 and k.startswith(layers)}
    reference_blocks = _crepe_blocks(params)
    ours = nnc_core.encode(
        params,
        blocks=blocks_from_parameter_types(reference_blocks["block_identifier"], reference_blocks["parameter_type"]),
        fold_batch_norm=args.get("bnf", False),
        **{k: v for k, v in args.items() if k != "bnf"},
    )
    theirs, _ = _compress_and_decode(params, block_id_and_param_type=reference_blocks, **args)
    assert ours == theirs
    nnc = reference.nncodec_compression()
    with contextlib.redirect_stdout(io.StringIO()):
        decoded_there = nnc.decompress(bytearray(ours))
    _check(ours, decoded_there)


def test_our_int_aligned_streams_equal_nncodec(minilm):
    import nnc_core

    params = _minilm_subset(minilm)
    assert (
        nnc_core.encode(params, int_quant_bw=4, use_dq=False)
        == _compress_and_decode(params, int_quant_bw=4, use_dq=False)[0]
    )


def test_nncodec_decodes_our_raw_floats(minilm, rng):
    """NNR_PT_RAW_FLOAT (which NNCodec's writer cannot produce) decodes there
    to the exact float32 values, NaN and infinity included.  NNCodec 2.1.3's
    parser fails on any unit after a raw-float NDU (TypeError in its byte
    count), so the raw tensor is the last one here."""
    import nnc_core

    params = {n: minilm[n] for n in minilm if n.startswith("encoder.layer.0.attention.self")}
    odd = rng.standard_normal((5, 7)).astype(np.float32)
    odd[1, 2], odd[3, 4], odd[4, 0] = np.nan, np.inf, -np.inf
    params["odd"] = odd
    ours = nnc_core.encode(params, raw_float=["odd"])
    nnc = reference.nncodec_compression()
    with contextlib.redirect_stdout(io.StringIO()):
        decoded_there = nnc.decompress(bytearray(ours))
    _check(ours, decoded_there)
    assert np.asarray(decoded_there["odd"]).tobytes() == odd.tobytes()


def test_nncodec_decodes_streams_that_signal_dtypes_and_scalars(minilm):
    """Our streams signal a tensor's own dtype (nnr_decompressed_data_format) and a
    scalar as a tensor without dimensions; NNCodec reads both (it ignores the
    dtype) and decodes every tensor to our values, in float32 and int32."""
    import nnc_core

    params = {n: v.astype(np.float16) if v.ndim > 1 else v for n, v in _minilm_subset(minilm).items()}
    params.update({"counter": np.arange(-5, 5, dtype=np.int8), "scale": np.array(0.5, np.float32)})
    ours = nnc_core.encode(params)
    nnc = reference.nncodec_compression()
    with contextlib.redirect_stdout(io.StringIO()):
        theirs = nnc.decompress(bytearray(ours))
    mine = nnc_core.decode(ours)
    assert list(theirs) == list(mine)
    for name, value in theirs.items():
        value = np.asarray(value)
        assert mine[name].dtype == params[name].dtype and mine[name].shape == params[name].shape, name
        assert value.shape == mine[name].shape, name
        assert np.array_equal(value.astype(mine[name].dtype), mine[name]), name


def test_nncodec_decodes_integers_beyond_int32_as_their_planes():
    """int64 values beyond int32 travel as int32 planes (high, low 32 bits) on
    a last axis of 2: NNCodec, which ignores the data format, decodes the planes."""
    import nnc_core
    from nnc_core.dtypes import to_planes

    params = {"ids": np.array([[1, -(2**40)], [2**62, 7]], np.int64), "w": np.full((4, 4), 0.25, np.float32)}
    ours = nnc_core.encode(params)
    nnc = reference.nncodec_compression()
    with contextlib.redirect_stdout(io.StringIO()):
        theirs = nnc.decompress(bytearray(ours))
    planes, _ = to_planes(params["ids"])
    assert np.array_equal(np.asarray(theirs["ids"]), planes)
    assert np.array_equal(nnc_core.decode(ours)["ids"], params["ids"])


def test_nncodec_decodes_exact_floats_as_their_patterns_and_planes():
    """Lossless bf16 travels as a codebook of its bit patterns at QP 0, float64
    as the int32 planes of its bits (docs/decisions.md): NNCodec, which ignores
    the data format, decodes the patterns' integers (in float64) and the planes."""
    import ml_dtypes

    import nnc_core
    from nnc_core.dtypes import to_patterns, to_planes

    params = {
        "w": np.array([[0.5, -0.0], [np.nan, 3.0e-3]], np.float32).astype(ml_dtypes.bfloat16),
        "d": np.array([1 / 3, -2.5e-300], np.float64),
        "f": np.full((4, 4), 0.25, np.float32),
    }
    ours = nnc_core.encode(params, lossless=True)
    nnc = reference.nncodec_compression()
    with contextlib.redirect_stdout(io.StringIO()):
        theirs = nnc.decompress(bytearray(ours))
    assert np.array_equal(np.asarray(theirs["w"]), to_patterns(params["w"])[0].astype(np.float64))
    assert np.array_equal(np.asarray(theirs["d"]), to_planes(params["d"])[0])
    assert np.array_equal(np.asarray(theirs["f"]), params["f"])
    out = nnc_core.decode(ours)
    assert all(out[n].tobytes() == v.tobytes() for n, v in params.items())


def test_nncodec_decodes_a_hugging_face_folder_stream(tmp_path):
    """The safetensors plugin carries a model folder's layout and other files in
    an NNR_TPL unit (NNR_TPL_UNREC, a JSON text ending in NUL: docs/decisions.md).
    NNCodec parses it as a string, ignores it, and decodes every tensor of
    all-MiniLM-L6-v2's folder (bf16 and int64 among them here) to our values."""
    import ml_dtypes

    import nnc_core
    from nnc_core.plugins import read_model

    folder = tmp_path / "model"
    folder.mkdir()
    source = pretrained.folder("minilm")
    for path in source.rglob("*"):
        if path.is_file() and path.name != "model.safetensors":
            (folder / path.relative_to(source)).parent.mkdir(parents=True, exist_ok=True)
            (folder / path.relative_to(source)).write_bytes(path.read_bytes())
    params = {
        n: v.astype(ml_dtypes.bfloat16) if v.ndim > 1 else v
        for n, v in _minilm_subset(pretrained.load("minilm")).items()
    }
    params["embeddings.position_ids"] = np.arange(512, dtype=np.int64).reshape(1, 512)
    from safetensors import TensorSpec, serialize_file

    specs = {
        n: TensorSpec(dtype=v.dtype.name, shape=list(v.shape), data_ptr=v.ctypes.data, data_len=v.nbytes)
        for n, v in params.items()
    }
    serialize_file(specs, str(folder / "model.safetensors"), {"format": "pt"})
    model = read_model(folder)
    assert model.framework == "safetensors" and model.topology.data.endswith(b"\x00")
    ours = nnc_core.encode(model.tensors, topology=model.topology)
    nnc = reference.nncodec_compression()
    with contextlib.redirect_stdout(io.StringIO()):
        theirs = nnc.decompress(bytearray(ours))
    mine = nnc_core.decode(ours)
    wide = nnc_core.decode(ours, dtype="float32")
    assert sorted(theirs) == sorted(mine) == sorted(params)
    for name, value in theirs.items():
        # NNCodec ignores the declared dtype and returns its reconstruction (float32 for
        # floats): equal to ours decoded as float32, and rounded (RNE) to ours in bf16
        value = np.asarray(value).reshape(mine[name].shape)
        if mine[name].dtype == ml_dtypes.bfloat16:
            assert np.array_equal(value.astype(np.float32), wide[name]), name
        assert np.array_equal(value.astype(mine[name].dtype), mine[name]), name
