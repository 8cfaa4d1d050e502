"""Parameter reduction against NNCodec 2.1.3, for the tools it implements
(statistics-adaptive and structured sparsification, low-rank factors in an
NNR_PT_BLOCK, local scaling factors): on real models, our bitstreams are
NNCodec's, NNCodec's decode with ours bit-exact and ours decode in NNCodec
bit-exact."""

from __future__ import annotations

import contextlib
import importlib.util
import io
from pathlib import Path

import numpy as np
import pytest

import nnc_core
from nnc_core import reduction
from nnc_core.bitstream.units import read_units
from nnc_core.encoding import blocks_from_parameter_types
from nnc_core.testing import pretrained, reference

pytestmark = pytest.mark.reference


def _nncodec():
    return reference.nncodec_compression()


def _ncore():
    """NNCodec's codec core package (after the framework stubs are in place)."""
    _nncodec()
    from nncodec import nnc_core as ncore  # type: ignore[import-not-found]  # NNCodec is installed only in the nncodec and bench environments

    return ncore


def _quiet():
    return contextlib.redirect_stdout(io.StringIO())


def _nncodec_sparsification():
    """NNCodec's encoder-side sparsification helpers, loaded from their file
    (importing them as a package pulls in torch)."""
    import nncodec

    path = Path(nncodec.__file__).parent / "framework" / "applications" / "utils" / "sparsification.py"
    spec = importlib.util.spec_from_file_location("nncodec_sparsification", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _minilm_subset(minilm):
    names = [n for n in minilm if n.startswith(("embeddings.LayerNorm", "encoder.layer.0.attention"))]
    return {n: minilm[n] for n in names}


def _same(ours: dict, theirs: dict) -> None:
    assert sorted(ours) == sorted(theirs)
    for name, value in theirs.items():
        value = np.asarray(value)
        assert ours[name].dtype == value.dtype, name
        assert ours[name].shape == value.shape, name
        assert ours[name].tobytes() == value.tobytes(), name


# --- sparsification -------------------------------------------------------------

SPARSITY = [
    {"sparsity": 0.5},
    {"sparsity": 0.7, "structured_sparsity": 0.9},
    {"sparsity": 0.3, "qp": -32, "use_dq": False, "row_skipping": True},
    {"structured_sparsity": 1.0, "row_skipping": True},
]


@pytest.mark.parametrize("args", SPARSITY, ids=lambda a: ",".join(f"{k}={v}" for k, v in a.items()))
def test_sparsified_streams_equal_nncodec_both_ways(minilm, args):
    """NNCodec's sparsification helpers then its compress() write our bitstream;
    each decoder decodes it to the same tensors."""
    params = _minilm_subset(minilm)
    args = dict(args)
    target, gain = args.pop("sparsity", 0.0), args.pop("structured_sparsity", 0.0)
    sp = _nncodec_sparsification()
    with _quiet():
        sparse = sp.apply_unstruct_spars_v2(args.get("qp", -38), params, target_sparsity=target) if target else params
        if gain:
            sparse = sp.apply_struct_spars_v2(sparse, gain=gain)
        theirs = bytes(_nncodec().compress(sparse, bitstream_path=None, return_bitstream=True, verbose=False, **args))
        decoded_there = _nncodec().decompress(bytearray(theirs))
    ours = nnc_core.encode(params, sparsity=target, structured_sparsity=gain, **args)
    assert ours == theirs
    if target:
        assert sp.get_sparsity(sparse) >= target
    _same(nnc_core.decode(ours), decoded_there)


# --- low-rank decomposition --------------------------------------------------------


def _crepe_layers(crepe_tiny, prefixes=("conv1", "conv6", "classifier")):
    return {k: v for k, v in crepe_tiny.items() if v.dtype == np.float32 and k.startswith(prefixes)}


def _nncodec_compress_decomposed(params, block_types, ranks, **args):
    """NNCodec's bitstream of blocks whose weights are given as G and H factors
    (it has no decomposition encoder; its coder takes ``<weight>_G`` and
    ``<weight>_H`` in place of the weight once the model knows the weight's shape)."""
    ncore = _ncore()
    model = ncore.nnr_model.NNRModel(params)
    ncore.nnr_model.set_block_id_and_param_type(model.model_info, block_types)
    factors = {}
    for name, value in params.items():
        if name in ranks:
            factors[name + "_G"], factors[name + "_H"] = reduction.decompose(value, ranks[name])
        else:
            factors[name] = value
    with _quiet():
        return bytes(
            _nncodec().compress(factors, model=model, bitstream_path=None, return_bitstream=True, verbose=False, **args)
        )


def _nncodec_decode_factors(stream, block_identifier=None):
    """NNCodec's decoded tensors, factors not recomposed (its decompress()
    crashes in the recomposition): its NDU decoder and reconstruction."""
    ncore = _ncore()
    info = {
        "parameter_type": {},
        "parameter_dimensions": {},
        "parameter_index": {},
        "block_identifier": dict(block_identifier or {}),
        "topology_storage_format": None,
        "topology_compression_format": None,
        "performance_maps": {"mps": {}, "lps": {}},
        "performance_map_flags": {
            k: {}
            for k in (
                "mps_sparsification_flag",
                "lps_sparsification_flag",
                "mps_pruning_flag",
                "lps_pruning_flag",
                "mps_unification_flag",
                "lps_unification_flag",
                "mps_decomposition_performance_map_flag",
                "lps_decomposition_performance_map_flag",
            )
        },
    }
    with _quiet():
        data = ncore.coder.decode(bytearray(stream), info, oob_dict={}, hls_stats={})
        ncore.approximator.rec(data)
    return data["parameters"]


DECOMPOSITION = [
    {},
    {"use_dq": False},
    {"scan_order": 1, "row_skipping": True},
    {"qp": -30, "lambda_scale": 1.0},
]


@pytest.mark.parametrize("args", DECOMPOSITION, ids=lambda a: ",".join(f"{k}={v}" for k, v in a.items()) or "defaults")
def test_decomposed_blocks_equal_nncodec_both_ways(crepe_tiny, args):
    params = _crepe_layers(crepe_tiny)
    block_types = pretrained.crepe_block_types(params)
    weights = [n for n, role in block_types["parameter_type"].items() if role == "weight"]
    ranks = {n: max(1, min(params[n].shape[0], int(np.prod(params[n].shape[1:]))) // 4) for n in weights}
    blocks = blocks_from_parameter_types(block_types["block_identifier"], block_types["parameter_type"])
    ours = nnc_core.encode(params, blocks=blocks, low_rank=ranks, **args)
    theirs = _nncodec_compress_decomposed(params, block_types, ranks, **args)
    assert ours == theirs
    factors = _nncodec_decode_factors(theirs)
    assert {n + "_G" for n in weights} <= set(factors)
    _same(nnc_core.decode(theirs, recompose=False), factors)
    # the recomposed weight is G @ H of those factors, in the weight's shape
    decoded = nnc_core.decode(theirs)
    for n in weights:
        g, h = factors[n + "_G"], factors[n + "_H"]
        assert np.array_equal(
            decoded[n], (g.astype(np.float64) @ h.astype(np.float64)).astype(np.float32).reshape(params[n].shape)
        )


# --- local scaling --------------------------------------------------------------------


@pytest.mark.parametrize("args", [{}, {"use_dq": False, "bnf": True}, {"scan_order": 2, "bnf": True}])
def test_local_scaling_streams_decode_like_nncodec(crepe_tiny, args):
    """Our LSA streams: NNCodec decodes them to our tensors, with and without
    applying the factors; given our factors as ``<weight>_scaling`` tensors,
    NNCodec's compress() writes our bitstream."""
    args = dict(args)
    bnf = args.pop("bnf", False)
    params = _crepe_layers(crepe_tiny)
    block_types = pretrained.crepe_block_types(params)
    blocks = blocks_from_parameter_types(block_types["block_identifier"], block_types["parameter_type"])
    ours = nnc_core.encode(params, blocks=blocks, fold_batch_norm=bnf, local_scaling=True, **args)
    with _quiet():
        plain_there = _nncodec().decompress(bytearray(ours))
        scaled_there = _nncodec().decompress(bytearray(ours), reconstruct_lsa=True)
    decoded = nnc_core.decode(ours)
    _same(decoded, plain_there)
    _same(nnc_core.decode(ours, apply_local_scaling=True), scaled_there)

    weights = [n for n, role in block_types["parameter_type"].items() if role == "weight"]
    with_ls = dict(params)
    types = {k: dict(v) for k, v in block_types.items()}
    for n in weights:
        with_ls[n + "_scaling"] = decoded[n + "_scaling"] if not bnf else np.ones(params[n].shape[0], np.float32)
        types["block_identifier"][n + "_scaling"] = types["block_identifier"][n]
        types["parameter_type"][n + "_scaling"] = "weight.ls"
    if not bnf:  # (with folding our factors are fitted to the folded scaling, which NNCodec computes itself)
        with _quiet():
            theirs = _nncodec().compress(
                with_ls,
                block_id_and_param_type=types,
                bitstream_path=None,
                return_bitstream=True,
                verbose=False,
                **args,
            )
        assert ours == bytes(theirs)


# --- tools NNCodec does not implement: their streams still decode there -------------------


def test_nncodec_decodes_our_unified_streams(minilm):
    params = _minilm_subset(minilm)
    ours = nnc_core.encode(params, unification=(4, 8), use_dq=False)
    with _quiet():
        decoded_there = _nncodec().decompress(bytearray(ours))
    _same(nnc_core.decode(ours), decoded_there)
    assert list(decoded_there) == list(params)


def test_nncodec_reads_our_performance_maps(minilm):
    """The MPS performance maps (metadata of sparsification, pruning,
    unification and decomposition) as NNCodec parses them."""
    params = {n: v for n, v in _minilm_subset(minilm).items() if n.startswith("encoder.layer.0.attention.self.query")}
    maps = {
        "sparsification": [
            {
                "threshold": 0.25,
                "non_zero_ratio": 0.375,
                "accuracy": 0.5,
                "class_accuracy": [0.5, 0.75],
                "class_bitmask": 3,
            }
        ],
        "pruning": [{"pruning_ratio": 0.25, "accuracy": 0.625}, {"pruning_ratio": 0.5, "accuracy": 0.5}],
        "unification": [
            {
                "threshold": 0.5,
                "accuracy": 0.75,
                "reshaped_tensor_dimensions": [384, 384],
                "super_block_dimensions": [4, 8],
                "block_dimensions": [2, 4],
            }
        ],
        "decomposition": [{"mse_threshold": 0.125, "accuracy": 0.875, "reduction_ratio": 0.5, "class_accuracy": [1.0]}],
    }
    ours = nnc_core.encode(params, performance_maps=maps)
    with _quiet():
        decoded_there, info = _nncodec().decompress(bytearray(ours), return_model_information=True)
    _same(nnc_core.decode(ours), decoded_there)
    there = info["performance_maps"]["mps"]
    spm = there["sparsification_performance_map"]
    assert (
        spm["spm_count_thresholds"],
        list(spm["sparsification_threshold"]),
        list(spm["non_zero_ratio"]),
        list(spm["spm_nn_accuracy"]),
        list(spm["spm_class_bitmask"]),
        spm["spm_nn_class_accuracy"].tolist(),
    ) == (2, [0.25], [0.375], [0.5], [3], [[0.5, 0.75]])
    ppm = there["pruning_performance_map"]
    assert (list(ppm["pruning_ratio"]), list(ppm["ppm_nn_accuracy"])) == ([0.25, 0.5], [0.625, 0.5])
    upm = there["unification_performance_map"]
    assert (
        upm["reshaped_tensor_dimensions"][0][:2].tolist(),
        upm["super_block_dimensions"][0][:2].tolist(),
        upm["block_dimensions"][0][:2].tolist(),
        list(upm["unification_threshold"]),
    ) == ([384, 384], [4, 8], [2, 4], [0.5])
    dpm = there["decomposition_performance_map"]
    assert (list(dpm["mse_threshold"]), list(dpm["dpm_nn_accuracy"]), list(dpm["nn_reduction_ratio"])) == (
        [0.125],
        [0.875],
        [0.5],
    )


UNIFICATION_CLASSES = [
    {
        "threshold": 0.5,
        "accuracy": 0.75,
        "reshaped_tensor_dimensions": [384, 384],
        "super_block_dimensions": [4, 8],
        "block_dimensions": [2, 4],
        "count_classes": 4,
        "class_bitmask": 3,
        "class_accuracy": [0.5, 0.25, 1.0],
    },
    {"threshold": 0.25, "accuracy": 0.5, "class_bitmask": 2, "class_accuracy": [0.125, 0.375]},
]


def _nncodec_unification_fields():
    """UNIFICATION_CLASSES as the syntax elements of NNCodec's unification map."""
    u32, f32 = np.uint32, np.float32
    return {
        "upm_count_thresholds": 3,
        "count_reshaped_tensor_dimension": np.array([3, 1], u32),
        "reshaped_tensor_dimensions": np.array([[384, 384], [0, 0]], u32),
        "count_super_block_dimension": np.array([3, 1], u32),
        "super_block_dimensions": np.array([[4, 8], [0, 0]], u32),
        "count_block_dimension": np.array([3, 1], u32),
        "block_dimensions": np.array([[2, 4], [0, 0]], u32),
        "unification_threshold": np.array([0.5, 0.25], f32),
        "upm_nn_accuracy": np.array([0.75, 0.5], f32),
        "upm_count_classes": np.array([4, 2], u32),
        "upm_class_bitmask": np.array([3, 2], u32),
        "upm_nn_class_accuracy": np.array([[0.5, 0.25, 1.0, 0.0], [0.125, 0.375, 0.0, 0.0]], f32),
    }


def test_unification_map_class_accuracies_both_ways(minilm):
    """The unification map with class accuracies and nonzero bitmasks: as many
    accuracies as the value of upm_class_bitmask (NNCodec's loop, notes 01 §4.1).
    NNCodec reads ours; the MPS its syntax writer makes of the same fields is ours
    byte for byte, and ours reads it field for field."""
    import nncodec_syntax

    params = {n: v for n, v in _minilm_subset(minilm).items() if n.startswith("encoder.layer.0.attention.self.query")}
    maps = {"unification": UNIFICATION_CLASSES}
    ours = nnc_core.encode(params, performance_maps=maps)
    with _quiet():
        decoded_there, info = _nncodec().decompress(bytearray(ours), return_model_information=True)
    _same(nnc_core.decode(ours), decoded_there)
    upm = info["performance_maps"]["mps"]["unification_performance_map"]
    for key, value in _nncodec_unification_fields().items():
        there = np.asarray(upm[key])
        if there.ndim == 2:  # NNCodec's arrays are as wide as the widest entry
            there = there[:, : np.shape(value)[1]]
        assert there.tolist() == np.asarray(value).tolist(), key

    # NNCodec's syntax writer: the MPS of its own stream with our map's fields
    with _quiet():
        plain = bytes(_nncodec().compress(params, bitstream_path=None, return_bitstream=True, verbose=False))
    start, mps = read_units(plain)[:2]
    profile = {"general_profile_idc": start.general_profile_idc}
    fields, _ = nncodec_syntax.parse(plain[mps.offset : mps.offset + mps.size], profile)
    fields.update(mps_unification_flag=1, **_nncodec_unification_fields())
    theirs = nncodec_syntax.write(fields)
    ours_mps = read_units(ours)[1]
    assert ours[ours_mps.offset : ours_mps.offset + ours_mps.size] == theirs
    stream = plain[: mps.offset] + theirs + plain[mps.offset + mps.size :]
    read = read_units(stream)[1].performance_maps["unification"]
    assert read == reduction.check_performance_maps(maps)["unification"]
    assert [(e["count_classes"], e["class_bitmask"], e["class_accuracy"]) for e in read] == [
        (4, 3, [0.5, 0.25, 1.0]),
        (2, 2, [0.125, 0.375]),
    ]


def test_nncodec_decodes_a_decomposed_weight_in_two_ndus_like_us(rng):
    """The two-NDU form of a decomposed weight (G then H, non-block NDUs with
    NNR_CPT_DC; NNCodec's encoder never writes it, its decoder reads it once
    told the weight's block: without, it fails on an unset variable)."""
    import dataclasses

    from nnc_core.bitstream.layout import build_ndu
    from nnc_core.bitstream.units import ParameterTypes, write_unit
    from streams import start

    units, state = start()
    shape, rank = (16, 3, 5), 4
    for name, dims in (("w_G", (16, rank)), ("w_H", (rank, 15))):
        unit = build_ndu(rng.integers(-30, 31, dims).astype(np.int32), [name], qp=-36)
        unit.header = dataclasses.replace(
            unit.header,
            compressed_parameter_types=int(ParameterTypes.NNR_CPT_DC),
            decomposition_rank=rank,
            g_number_of_rows=16,
            tensor_dimensions=list(shape),
        )
        units.append(write_unit(unit, state))
    stream = b"".join(units)
    _same(nnc_core.decode(stream, recompose=False), _nncodec_decode_factors(stream, {"w": "w"}))
