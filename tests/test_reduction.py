"""Parameter reduction (clause 8): each tool's encoder option, its signalling
and the exact reconstruction on decode."""

from __future__ import annotations

import numpy as np
import pytest

import nnc_core
from nnc_core import reduction
from nnc_core.bitstream.units import CompressedDataUnit, ParameterTypes, TopologyStorageFormat, TopologyUnit, read_units
from nnc_core.cli import main
from nnc_core.decoding import quantization_step
from nnc_core.encoding import uniform_quantize
from nnc_core.errors import BitstreamError, ConfigError


@pytest.fixture
def model(rng):
    """A conv layer with bias and batch norm feeding a linear layer."""
    return {
        "conv.weight": rng.standard_normal((12, 4, 3, 3)).astype(np.float32)
        * np.linspace(0.1, 1.0, 12, dtype=np.float32)[:, None, None, None],
        "conv.bias": rng.standard_normal(12).astype(np.float32),
        "bn.weight": rng.uniform(0.5, 1.5, 12).astype(np.float32),
        "bn.bias": rng.standard_normal(12).astype(np.float32),
        "bn.running_mean": rng.standard_normal(12).astype(np.float32),
        "bn.running_var": rng.uniform(0.5, 2.0, 12).astype(np.float32),
        "fc.weight": rng.standard_normal((10, 12)).astype(np.float32),
        "fc.bias": rng.standard_normal(10).astype(np.float32),
    }


BLOCKS = {
    "conv": {
        "weight": "conv.weight",
        "bias": "conv.bias",
        "bn.gamma": "bn.weight",
        "bn.beta": "bn.bias",
        "bn.mean": "bn.running_mean",
        "bn.var": "bn.running_var",
    },
    "fc": {"weight": "fc.weight", "bias": "fc.bias"},
}


def _ndus(stream):
    return [u for u in read_units(stream) if isinstance(u, CompressedDataUnit)]


# --- sparsification ---------------------------------------------------------


def test_sparsification_without_target_zeroes_exactly_below_half_a_step(model):
    step = float(quantization_step(-38, 2))
    out = reduction.sparsify(model, ["conv.weight", "fc.weight"], 0.0, step)
    for name in ("conv.weight", "fc.weight"):
        expected = np.where(np.abs(model[name]) < step / 2, 0, model[name])
        assert np.array_equal(out[name], expected)
    assert out["conv.bias"] is model["conv.bias"]


@pytest.mark.parametrize("target", [0.3, 0.6, 0.8])
def test_sparsification_reaches_its_target_with_one_threshold_per_tensor(model, target):
    stream = nnc_core.encode(model, sparsity=target, qp=-32)
    eligible = ["conv.weight", "fc.weight"]
    sparsified = reduction.sparsify(model, eligible, target, float(quantization_step(-32, 2)))
    assert reduction.sparsity_of(sparsified.values()) >= target
    for name in eligible:
        w, s = model[name], sparsified[name]
        zeroed = s == 0
        # a magnitude threshold: every zeroed value is smaller than every kept one
        assert np.abs(w[zeroed]).max() < np.abs(w[~zeroed]).min()
        assert np.array_equal(s[~zeroed], w[~zeroed])
    # the stream is the plain encoding of the sparsified model; with uniform
    # quantization its zeros decode as zeros (the DQ trellis may move a zero
    # to a neighbouring level when that lowers the total error)
    assert stream == nnc_core.encode(sparsified, qp=-32)
    decoded = nnc_core.decode(nnc_core.encode(model, sparsity=target, qp=-32, use_dq=False))
    for name in eligible:
        assert not decoded[name][sparsified[name] == 0].any()


def test_structured_sparsification_zeroes_the_rows_below_gain_times_the_mean(model):
    gain = 0.9
    out = reduction.structured_sparsify(model, ["conv.weight", "fc.weight"], gain, {})
    for name in ("conv.weight", "fc.weight"):
        w = model[name]
        means = np.abs(w.reshape(len(w), -1)).mean(axis=1)
        below = np.flatnonzero(means < gain * means.mean())
        expected = w.copy()
        expected[below] = 0
        assert below.size > 0
        assert np.array_equal(out[name], expected)
    stream = nnc_core.encode(model, structured_sparsity=gain, row_skipping=True)
    decoded = nnc_core.decode(stream)
    assert np.array_equal(
        np.flatnonzero(~decoded["conv.weight"].reshape(12, -1).any(axis=1)),
        np.flatnonzero(~out["conv.weight"].reshape(12, -1).any(axis=1)),
    )


def test_structured_sparsification_acts_on_the_coded_rows():
    """With a dimension shift the rows are slices along the shifted dimension;
    the count of rows dropped is NNCodec's int(count / rows * rows), one short
    of count for 15 rows below the threshold out of 22."""
    means = np.r_[np.full(15, 0.1), np.full(7, 1.0)].astype(np.float32)
    kernel = np.broadcast_to(means, (3, 22)).copy()  # rows along dimension 1
    assert int((15 / 22) * 22) == 14
    out = reduction.structured_sparsify({"k": kernel}, ["k"], 0.9, {"k": 1})["k"]
    zero_rows = np.flatnonzero(~out.any(axis=0))
    assert zero_rows.tolist() == list(range(14))
    assert np.array_equal(out[:, 14:], kernel[:, 14:])


# --- pruning ------------------------------------------------------------------


def test_pruning_removes_the_smallest_rows_everywhere_and_signals_the_topology(model):
    stream = nnc_core.encode(
        model, blocks=BLOCKS, prune={"conv.weight": 0.25}, prune_consumers={"conv.weight": ["fc.weight"]}
    )
    norms = np.abs(model["conv.weight"]).reshape(12, -1).sum(axis=1)
    removed = np.sort(np.argsort(norms)[:3])
    assert np.array_equal(removed, [0, 1, 2])  # the rows scaled down most
    keep = np.setdiff1d(np.arange(12), removed)

    expected = dict(model)
    for name in ("conv.weight", "conv.bias", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"):
        expected[name] = np.ascontiguousarray(model[name][keep])
    expected["fc.weight"] = np.ascontiguousarray(model["fc.weight"][:, keep])
    # the stream codes exactly the pruned tensors, in a pruning topology unit
    plain = nnc_core.encode(expected, blocks=BLOCKS)
    units = read_units(stream)
    (tpl,) = [u for u in units if isinstance(u, TopologyUnit)]
    assert tpl.topology_storage_format == TopologyStorageFormat.NNR_TPL_PRUN
    assert [u.header for u in _ndus(stream)] == [u.header for u in _ndus(plain)]
    assert _ndus(stream)[0].header.tensor_dimensions == [9, 4, 3, 3]

    decoded = nnc_core.decode(stream)
    assert {n: v.shape for n, v in decoded.items()} == {n: v.shape for n, v in expected.items()}
    topology = reduction.read_pruning_topology(stream)
    assert topology["conv.weight"] == reduction.PrunedElement((12, 4, 3, 3), {0: tuple(keep)})
    assert topology["fc.weight"] == reduction.PrunedElement((10, 12), {1: tuple(keep)})
    assert topology["bn.running_var"] == reduction.PrunedElement((12,), {0: tuple(keep)})
    assert set(topology) == {
        "conv.weight",
        "conv.bias",
        "bn.weight",
        "bn.bias",
        "bn.running_mean",
        "bn.running_var",
        "fc.weight",
    }

    full = nnc_core.decode(stream, unprune=True)
    for name, value in full.items():
        assert value.shape == model[name].shape
    assert not full["conv.weight"][removed].any() and not full["fc.weight"][:, removed].any()
    assert np.array_equal(full["conv.weight"][keep], decoded["conv.weight"])
    assert np.array_equal(full["fc.weight"][:, keep], decoded["fc.weight"])
    assert np.array_equal(full["fc.bias"], decoded["fc.bias"])


def test_pruning_topology_container_round_trips_and_rejects_damage():
    topology = {
        "a": reduction.PrunedElement((5, 3), {0: (0, 2, 4)}),
        "b": reduction.PrunedElement((4, 6, 2), {1: (1,), 2: (0, 1)}),
    }
    data = reduction.write_pruning_topology(topology)
    assert reduction.parse_pruning_topology(data) == topology
    assert topology["b"].shape == (4, 1, 2)
    with pytest.raises(BitstreamError, match="data after"):
        reduction.parse_pruning_topology(data + b"\x00")
    with pytest.raises(BitstreamError):
        reduction.parse_pruning_topology(data[:-1])


def test_pruning_options_are_validated(model):
    with pytest.raises(ConfigError, match="outside"):
        nnc_core.encode(model, prune={"fc.weight": 1.0})
    with pytest.raises(ConfigError, match="bias of block"):
        nnc_core.encode(model, blocks=BLOCKS, prune={"conv.bias": 0.5})
    with pytest.raises(ConfigError, match="input"):
        nnc_core.encode(model, prune={"fc.weight": 0.5}, prune_consumers={"fc.weight": ["conv.weight"]})
    with pytest.raises(ConfigError, match="not a float tensor"):
        nnc_core.encode(model, prune={"fc.bias": 0.5})
    with pytest.raises(ConfigError, match="needs prune"):
        nnc_core.encode(model, prune_consumers={"fc.weight": ["conv.weight"]})


# --- unification ----------------------------------------------------------------


def test_unification_gives_one_magnitude_per_block(model):
    qp = -30
    step = quantization_step(qp, 2)
    stream = nnc_core.encode(model, unification=(2, 4), use_dq=False, qp=qp)
    decoded = nnc_core.decode(stream)
    for name in ("conv.weight", "fc.weight"):
        w = model[name].reshape(len(model[name]), -1)
        d = decoded[name].reshape(w.shape)
        for r in range(0, w.shape[0], 2):
            for c in range(0, w.shape[1], 4):
                tile = w[r : r + 2, c : c + 4]
                level = np.round(np.abs(tile).astype(np.float64).mean() / np.float64(step))
                expected = np.sign(tile) * (step * np.float32(level))
                assert np.array_equal(d[r : r + 2, c : c + 4], expected.astype(np.float32))
    assert np.array_equal(decoded["fc.bias"], nnc_core.decode(nnc_core.encode(model, use_dq=False, qp=qp))["fc.bias"])
    with pytest.raises(ConfigError, match="use_dq=False"):
        nnc_core.encode(model, unification=(2, 4))
    with pytest.raises(ConfigError, match="positive"):
        nnc_core.encode(model, unification=(0, 4), use_dq=False)


# --- low-rank decomposition -------------------------------------------------------


@pytest.mark.parametrize(
    "args", [{}, {"use_dq": False}, {"scan_order": 1}, {"fold_batch_norm": True, "row_skipping": True}]
)
def test_decomposed_weight_is_g_times_h_of_the_decoded_factors(model, args):
    stream = nnc_core.encode(model, blocks=BLOCKS, low_rank={"conv.weight": 3, "fc.weight": 2}, **args)
    ndus = _ndus(stream)
    conv = ndus[0].header
    assert conv.compressed_parameter_types & ParameterTypes.NNR_CPT_DC
    assert (conv.decomposition_rank, conv.g_number_of_rows, conv.tensor_dimensions) == (3, 12, [12, 4, 3, 3])
    assert conv.element_ids[:2] == ["conv.weight_G", "conv.weight_H"]

    factors = nnc_core.decode(stream, recompose=False)
    g, h = factors["conv.weight_G"], factors["conv.weight_H"]
    assert (g.shape, h.shape) == ((12, 3), (3, 36))
    decoded = nnc_core.decode(stream)
    assert "conv.weight_G" not in decoded
    # in stream order, the weight in its factors' place
    assert list(decoded) == [n[:-2] if n.endswith("_G") else n for n in factors if not n.endswith("_H")]
    expected = (g.astype(np.float64) @ h.astype(np.float64)).astype(np.float32).reshape(12, 4, 3, 3)
    assert np.array_equal(decoded["conv.weight"], expected)
    fc = (factors["fc.weight_G"].astype(np.float64) @ factors["fc.weight_H"].astype(np.float64)).astype(np.float32)
    assert np.array_equal(decoded["fc.weight"], fc)
    # the factors are the truncated SVD's, quantized as weights
    g0, h0 = reduction.decompose(model["conv.weight"], 3)
    alone = nnc_core.decode(
        nnc_core.encode({"g": g0, "h": h0}, **{k: v for k, v in args.items() if k != "fold_batch_norm"})
    )
    assert np.array_equal(g, alone["g"]) and np.array_equal(h, alone["h"])


def test_low_rank_everywhere_only_where_it_saves_parameters(rng):
    tensors = {
        "small": rng.standard_normal((4, 4)).astype(np.float32),
        "big": rng.standard_normal((16, 16)).astype(np.float32),
    }
    decoded = nnc_core.decode(nnc_core.encode(tensors, low_rank=2), recompose=False)
    assert list(decoded) == ["small", "big_G", "big_H"]  # 2 * (4 + 4) = 16 parameters: no saving, not decomposed


def test_low_rank_options_are_validated(model):
    with pytest.raises(ConfigError, match="outside 1..10"):
        nnc_core.encode(model, low_rank={"fc.weight": 11})
    with pytest.raises(ConfigError, match="codebook"):
        nnc_core.encode(model, low_rank=2, codebook_mode=1)
    with pytest.raises(ConfigError, match="dimension_shift"):
        nnc_core.encode(model, low_rank={"fc.weight": 2}, dimension_shift={"fc.weight": 1})
    with pytest.raises(ConfigError, match="positive rank"):
        nnc_core.encode(model, low_rank=0)


# --- local scaling adaptation -------------------------------------------------------


def test_local_scaling_factors_fit_the_quantized_rows(model):
    qp, nonweight_qp = -26, -60
    stream = nnc_core.encode(model, local_scaling=True, use_dq=False, qp=qp, nonweight_qp=nonweight_qp)
    raw = nnc_core.decode(stream)
    plain = nnc_core.decode(nnc_core.encode(model, use_dq=False, qp=qp, nonweight_qp=nonweight_qp))
    for name in ("conv.weight", "fc.weight"):
        w_hat = raw[name]
        assert np.array_equal(w_hat, plain[name])  # the weight is coded as without LSA
        alpha = reduction.local_scaling_factors(model[name], w_hat, np.ones(len(w_hat), np.float32))
        step = quantization_step(nonweight_qp, 2)
        assert np.array_equal(raw[name + "_scaling"], step * uniform_quantize(alpha, step).astype(np.float32))
    scaled = nnc_core.decode(stream, apply_local_scaling=True)
    assert list(scaled) == list(plain)
    for name in ("conv.weight", "fc.weight"):
        ls = raw[name + "_scaling"].reshape((-1,) + (1,) * (model[name].ndim - 1))
        assert np.array_equal(scaled[name], raw[name] * ls)
        # each row's error is no larger than without scaling (up to the factor's rounding)
        err = ((scaled[name] - model[name]) ** 2).reshape(len(ls), -1).sum(axis=1)
        err_plain = ((plain[name] - model[name]) ** 2).reshape(len(ls), -1).sum(axis=1)
        assert np.all(err <= err_plain * (1 + 1e-6) + 1e-12)
        assert err.sum() < err_plain.sum()


def test_local_scaling_with_folding_and_decomposition(model):
    stream = nnc_core.encode(
        model, blocks=BLOCKS, fold_batch_norm=True, local_scaling=True, low_rank={"conv.weight": 4}
    )
    conv = _ndus(stream)[0].header
    assert conv.compressed_parameter_types == int(
        ParameterTypes.NNR_CPT_DC | ParameterTypes.NNR_CPT_LS | ParameterTypes.NNR_CPT_BI
    )
    raw = nnc_core.decode(stream, recompose=False)
    out = nnc_core.decode(stream, apply_local_scaling=True)
    g = raw["conv.weight_G"] * raw["conv.weight_scaling"][:, None]
    expected = (g.astype(np.float64) @ raw["conv.weight_H"].astype(np.float64)).astype(np.float32).reshape(12, 4, 3, 3)
    assert np.array_equal(out["conv.weight"], expected)
    assert "conv.weight_scaling" not in out
    # the folded target: the weight's rows times gamma / sqrt(var + eps)
    gain = model["bn.weight"] / np.sqrt(model["bn.running_var"] + np.float32(1e-5))
    target = model["conv.weight"] * gain[:, None, None, None]
    unscaled = nnc_core.decode(
        nnc_core.encode(model, blocks=BLOCKS, fold_batch_norm=True, low_rank={"conv.weight": 4}),
        apply_local_scaling=True,
    )
    assert ((out["conv.weight"] - target) ** 2).sum() < ((unscaled["conv.weight"] - target) ** 2).sum()


# --- command line -----------------------------------------------------------------


def test_cli_reduction_flags(tmp_path, model):
    src = tmp_path / "model.npz"
    np.savez(src, **model)
    out = tmp_path / "model.nnr"
    args = [
        "encode",
        str(src),
        "-o",
        str(out),
        "-q",
        "--sparsity",
        "0.5",
        "--structured-sparsity",
        "0.9",
        "--prune",
        "conv.weight=0.25",
        "--prune-consumer",
        "conv.weight=fc.weight",
        "--low-rank",
        "fc.weight=3",
        "--local-scaling",
    ]
    assert main(args) == 0
    expected = nnc_core.encode(
        model,
        sparsity=0.5,
        structured_sparsity=0.9,
        prune={"conv.weight": 0.25},
        prune_consumers={"conv.weight": ["fc.weight"]},
        low_rank={"fc.weight": 3},
        local_scaling=True,
    )
    assert out.read_bytes() == expected
    dec = tmp_path / "dec.npz"
    assert main(["decode", str(out), "-o", str(dec), "-q", "--unprune", "--apply-local-scaling"]) == 0
    with np.load(dec) as archive:
        reference = nnc_core.decode(expected, unprune=True, apply_local_scaling=True)
        assert list(archive) == list(reference)
        for name in archive:
            assert np.array_equal(archive[name], reference[name])
    assert main(["encode", str(src), "-o", str(out), "-q", "--unification", "2,4", "--no-dq"]) == 0
    assert out.read_bytes() == nnc_core.encode(model, unification=(2, 4), use_dq=False)
    assert main(["encode", str(src), "-o", str(out), "-q", "--low-rank", "x"]) == 1
    assert main(["encode", str(src), "-o", str(out), "-q", "--prune", "conv.weight"]) == 1


def test_sparsity_options_are_validated(model):
    with pytest.raises(ConfigError, match="sparsity"):
        nnc_core.encode(model, sparsity=1.0)
    with pytest.raises(ConfigError, match="structured_sparsity"):
        nnc_core.encode(model, structured_sparsity=-1)
    with pytest.raises(ConfigError, match="one weight QP"):
        nnc_core.encode(model, sparsity=0.5, qp_per_tensor={"fc.weight": -30})


# --- performance maps ---------------------------------------------------------------

MAPS = {
    "sparsification": [
        {"threshold": 0.25, "non_zero_ratio": 0.375, "accuracy": 0.5, "class_accuracy": [0.5, 0.75], "class_bitmask": 3}
    ],
    "pruning": [{"pruning_ratio": 0.25, "accuracy": 0.625}, {"pruning_ratio": 0.5, "accuracy": 0.5}],
    "unification": [
        {
            "threshold": 0.5,
            "accuracy": 0.75,
            "reshaped_tensor_dimensions": [12, 36],
            "super_block_dimensions": [4, 8],
            "block_dimensions": [2, 4],
        }
    ],
    "decomposition": [{"mse_threshold": 0.125, "accuracy": 0.875, "reduction_ratio": 0.5, "class_accuracy": [1.0]}],
}


@pytest.mark.parametrize("kinds", [["sparsification"], ["pruning"], ["unification"], ["decomposition"], list(MAPS)])
def test_performance_maps_are_written_into_the_mps(model, kinds):
    from nnc_core.bitstream.units import ModelParameterSet

    maps = {k: MAPS[k] for k in kinds}
    stream = nnc_core.encode(model, performance_maps=maps)
    (mps,) = [u for u in read_units(stream) if isinstance(u, ModelParameterSet)]
    assert (
        mps.mps_sparsification_flag,
        mps.mps_pruning_flag,
        mps.mps_unification_flag,
        mps.mps_decomposition_performance_map_flag,
    ) == tuple(k in kinds for k in MAPS)
    assert mps.performance_maps == reduction.check_performance_maps(maps)
    assert mps.performance_maps[kinds[0]][0]["accuracy"] == MAPS[kinds[0]][0]["accuracy"]
    decoded = nnc_core.decode(stream)
    plain = nnc_core.decode(nnc_core.encode(model))
    assert all(np.array_equal(decoded[n], plain[n]) for n in plain)


def test_performance_maps_are_validated(model):
    with pytest.raises(ConfigError, match="unknown kind"):
        nnc_core.encode(model, performance_maps={"quantization": []})
    with pytest.raises(ConfigError, match="lacks 'accuracy'"):
        nnc_core.encode(model, performance_maps={"pruning": [{"pruning_ratio": 0.5}]})
    with pytest.raises(ConfigError, match="unknown fields"):
        nnc_core.encode(model, performance_maps={"pruning": [{"pruning_ratio": 0.5, "accuracy": 1, "top5": 1}]})


UNIFICATION_CLASSES = [
    # 3 class accuracies: as many as class_bitmask's value (NNCodec's syntax), 4 classes
    {"threshold": 0.5, "accuracy": 0.75, "count_classes": 4, "class_bitmask": 3, "class_accuracy": [0.5, 0.25, 1.0]},
    # count_classes by default: the number of class accuracies
    {"threshold": 0.25, "accuracy": 0.5, "class_bitmask": 2, "class_accuracy": [0.125, 0.375]},
]


def test_unification_map_codes_class_bitmask_accuracies(model):
    """upm_count_classes u(8), upm_class_bitmask ue(7), then as many flt(32) class
    accuracies as the bitmask's value (notes 01 §4.1): the MPS's last bytes."""
    import struct

    stream = nnc_core.encode(model, performance_maps={"unification": UNIFICATION_CLASSES})
    mps = read_units(stream)[1]
    unit = stream[mps.offset : mps.offset + mps.size]
    entry = struct.pack("<ff", 0.25, 0.5) + bytes([2, 0b1_0000010]) + struct.pack("<ff", 0.125, 0.375)
    assert unit.endswith(entry + b"\x80")
    first = struct.pack("<ff", 0.5, 0.75) + bytes([4, 0b1_0000011]) + struct.pack("<fff", 0.5, 0.25, 1.0)
    # the second entry has no dimensions: ue(1) 1 and byte_alignment() (111 00000), two counts 1
    assert unit.endswith(first + bytes([0b111_00000, 1, 1]) + entry + b"\x80")
    assert [
        (e["count_classes"], e["class_bitmask"], e["class_accuracy"]) for e in mps.performance_maps["unification"]
    ] == [(4, 3, [0.5, 0.25, 1.0]), (2, 2, [0.125, 0.375])]
    assert mps.performance_maps == reduction.check_performance_maps({"unification": UNIFICATION_CLASSES})

    # a bitmask asking for more accuracies than the unit holds
    at = mps.offset + unit.index(bytes([2, 0b1_0000010])) + 1
    bad = stream[:at] + bytes([0b1_0001111]) + stream[at + 1 :]
    with pytest.raises(BitstreamError, match="upm_class_bitmask 15: 15 class accuracies cannot fit the unit") as e:
        read_units(bad)
    assert (e.value.unit_index, e.value.byte_offset) == (1, at + 1)


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"class_bitmask": 3, "class_accuracy": [0.5]}, "class_bitmask 3 with 1 class accuracies"),
        ({"class_accuracy": [0.5, 0.5]}, "class_bitmask 0 with 2 class accuracies"),
        ({"class_bitmask": 2, "class_accuracy": [0.5, 0.5], "count_classes": 1}, "NNCodec 2.1.3 reads at most 1"),
        ({"class_bitmask": 0, "count_classes": 256}, "count_classes 256 outside 0..255"),
        ({"class_bitmask": 0, "count_classes": "many"}, "invalid literal"),
    ],
)
def test_unification_class_accuracies_are_validated(model, entry, message):
    with pytest.raises(ConfigError, match=message):
        nnc_core.encode(model, performance_maps={"unification": [{"threshold": 0.5, "accuracy": 0.5, **entry}]})


def test_unification_class_accuracies_as_nncodec_stores_them(model):
    """NNCodec keeps the accuracies in one array max(1, largest count_classes so far)
    wide: one accuracy needs no class count, a later entry may use an earlier count."""
    maps = [
        {"threshold": 0.5, "accuracy": 0.5, "count_classes": 0, "class_bitmask": 1, "class_accuracy": [0.5]},
        {"threshold": 0.5, "accuracy": 0.5, "count_classes": 3, "class_bitmask": 0},
        {"threshold": 0.5, "accuracy": 0.5, "count_classes": 0, "class_bitmask": 3, "class_accuracy": [1, 2, 3]},
    ]
    stream = nnc_core.encode(model, performance_maps={"unification": maps})
    assert [e["class_accuracy"] for e in read_units(stream)[1].performance_maps["unification"]] == [
        [0.5],
        [],
        [1.0, 2.0, 3.0],
    ]
    with pytest.raises(ConfigError, match="NNCodec 2.1.3 reads at most 3"):
        nnc_core.encode(
            model, performance_maps={"unification": [*maps, {**maps[2], "class_bitmask": 4, "class_accuracy": [1] * 4}]}
        )
    with pytest.raises(ConfigError, match="unknown fields"):
        nnc_core.encode(
            model, performance_maps={"pruning": [{"pruning_ratio": 0.5, "accuracy": 1, "count_classes": 1}]}
        )


# --- a decomposed weight as two NDUs (G, then H) ------------------------------------------


def _factor_ndus(rng, *, rank=3, shape=(8, 2, 5), dq=False):
    import dataclasses

    from nnc_core.bitstream.layout import build_ndu
    from nnc_core.bitstream.units import write_unit
    from streams import expected_values, start

    units, state = start()
    rows, cols = shape[0], int(np.prod(shape[1:]))
    g = rng.integers(-20, 21, (rows, rank)).astype(np.int32)
    h = rng.integers(-20, 21, (rank, cols)).astype(np.int32)
    qp = -40
    for name, stored in (("w_G", g), ("w_H", h)):
        unit = build_ndu(stored, [name], qp=qp)
        unit.header = dataclasses.replace(
            unit.header,
            compressed_parameter_types=int(ParameterTypes.NNR_CPT_DC | ParameterTypes.NNR_CPT_BI),
            decomposition_rank=rank,
            g_number_of_rows=rows,
            tensor_dimensions=list(shape),
        )
        units.append(write_unit(unit, state))
    return units, state, expected_values(g, qp, 2), expected_values(h, qp, 2)


def test_decomposed_weight_in_two_ndus_is_recomposed(rng):
    units, _, g, h = _factor_ndus(rng)
    stream = b"".join(units)
    factors = nnc_core.decode(stream, recompose=False)
    assert np.array_equal(factors["w_G"], g) and np.array_equal(factors["w_H"], h)
    decoded = nnc_core.decode(stream)
    assert list(decoded) == ["w"]
    assert np.array_equal(
        decoded["w"], (g.astype(np.float64) @ h.astype(np.float64)).astype(np.float32).reshape(8, 2, 5)
    )


def test_decomposition_factor_ndus_must_pair_up(rng):
    units, state, _, _ = _factor_ndus(rng)
    with pytest.raises(BitstreamError, match="ends after G"):
        nnc_core.decode(b"".join(units[:-1]))
    with pytest.raises(BitstreamError, match="must be the NDU carrying H"):
        nnc_core.decode(b"".join(units[:-1] + units[2:3]))  # G followed by the topology unit
    other, _, _, _ = _factor_ndus(rng, rank=2)
    with pytest.raises(BitstreamError, match="another rank"):
        nnc_core.decode(b"".join(units[:-1] + other[-1:]))


def _topologies():
    from hypothesis import strategies as st

    def element(shape):
        dims = st.lists(st.sampled_from(range(len(shape))), unique=True, max_size=len(shape))
        return dims.flatmap(
            lambda ds: st.fixed_dictionaries(
                {d: st.lists(st.integers(0, shape[d] - 1), unique=True).map(lambda k: tuple(sorted(k))) for d in ds}
            )
        ).map(lambda kept: reduction.PrunedElement(tuple(shape), kept))

    shapes = st.lists(st.integers(1, 40), min_size=1, max_size=4)
    names = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), min_size=1, max_size=12)
    return st.dictionaries(names, shapes.flatmap(element), max_size=5)


def test_pruning_topology_round_trips_for_any_topology():
    from hypothesis import given

    @given(_topologies())
    def check(topology):
        assert reduction.parse_pruning_topology(reduction.write_pruning_topology(topology)) == topology

    check()
