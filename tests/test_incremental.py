"""Incremental coding: sessions of updates, base models as arrays or bitstreams,
what the bitstream signals, and the refusal of updates of another base."""

from __future__ import annotations

import numpy as np
import pytest

import nnc_core
from nnc_core import BaseMismatchError, UpdateDecoder, UpdateEncoder
from nnc_core.bitstream.units import CompressedDataUnit, ModelParameterSet, read_units
from nnc_core.cli import main
from nnc_core.incremental import model_fingerprint


def _model(rng, scale=1.0):
    return {
        "fc1.weight": (0.1 * scale * rng.standard_normal((24, 16))).astype(np.float32),
        "fc1.bias": (0.02 * scale * rng.standard_normal(24)).astype(np.float32),
        "fc2.weight": (0.1 * scale * rng.standard_normal((10, 24))).astype(np.float32),
        "steps": np.array([7, 0, 3], np.int32),
    }


def _fine_tuned(rng, model, rows=4):
    """A few rows of each weight changed, biases nudged, the counter advanced."""
    out = {}
    for name, w in model.items():
        w = w.copy()
        if w.dtype.kind == "i":
            w += 1
        elif w.ndim == 2:
            changed = rng.choice(w.shape[0], rows, replace=False)
            w[changed] += (0.01 * rng.standard_normal((rows, w.shape[1]))).astype(np.float32)
        else:
            w += np.float32(0.001)
        out[name] = w
    return out


def _units(data):
    units = read_units(data)
    mps = next(u for u in units if isinstance(u, ModelParameterSet))
    return mps, [u.header for u in units if isinstance(u, CompressedDataUnit)]


def test_session_round_trip_and_signalling(rng):
    models = [_model(rng)]
    for _ in range(3):
        models.append(_fine_tuned(rng, models[-1]))
    encoder, decoder = UpdateEncoder(qp=-46), UpdateDecoder()
    streams, sent = [], []
    for m in models:
        streams.append(encoder.encode(m))
        sent.append(dict(encoder.reference))
    for k, (model, data) in enumerate(zip(models, streams)):
        got = decoder.decode(data)
        assert list(got) == list(model)
        for name in model:
            assert got[name].dtype == model[name].dtype
            assert got[name].tobytes() == sent[k][name].tobytes()
        assert np.array_equal(got["steps"], model["steps"])  # integers are lossless
        # DQ: under two steps of error per update so far
        assert np.max(np.abs(got["fc1.weight"] - model["fc1.weight"])) < (k + 1) * 2 * 2.0 ** (-46 / 4)
        mps, headers = _units(data)
        assert mps.mps_parent_signalling_enabled_flag
        if k == 0:
            assert not mps.base_model_id_present_flag  # the root: no base
        else:
            assert mps.base_model_id == model_fingerprint(decoder_reference_before(models, streams, k))
        for h in headers:
            assert h.parent_node_id_present_flag and h.parent_node_id_type == 0 and h.parent_device_id == 0
            assert h.put_node_depth == k + 1
            assert h.temporal_context_modeling_flag == (k > 0)
        assert [h.parameter_id for h in headers] == list(range(4))
    # updates are far smaller than the model
    assert all(len(s) < len(streams[0]) / 2 for s in streams[1:])


def decoder_reference_before(models, streams, k):
    decoder = UpdateDecoder()
    for data in streams[:k]:
        decoder.decode(data)
    return decoder.reference


def test_unchanged_tensors_are_not_sent_and_keep_their_depth(rng):
    model = _model(rng)
    encoder, decoder = UpdateEncoder(), UpdateDecoder()
    decoder.decode(encoder.encode(model))
    changed = dict(model, **{"fc1.weight": model["fc1.weight"] + np.float32(0.05)})
    data = encoder.encode(changed)
    _, headers = _units(data)
    assert [h.element_ids for h in headers] == [["fc1.weight"]]
    got = decoder.decode(data)
    assert got["fc2.weight"].tobytes() == decoder.reference["fc2.weight"].tobytes()
    assert decoder.state.put_node_depth == {"fc1.weight": 2, "fc1.bias": 1, "fc2.weight": 1, "steps": 1}
    _, headers = _units(encoder.encode(dict(changed, **{"fc2.weight": changed["fc2.weight"] + np.float32(0.05)})))
    assert [(h.element_ids, h.put_node_depth) for h in headers] == [(["fc2.weight"], 2)]


def test_row_skipping_skips_unchanged_rows(rng):
    model = _model(rng)
    update = {"fc1.weight": np.zeros((24, 16), np.float32)}
    update["fc1.weight"][[2, 9]] = 0.05
    sizes = {}
    for skip in (False, True):
        encoder = UpdateEncoder(model, row_skipping=skip, tca=False, hdsp=False)
        data = encoder.encode_update(update)
        sizes[skip] = len(data)
        got = nnc_core.decode(data, base=model)
        assert got["fc1.weight"].tobytes() == encoder.reference["fc1.weight"].tobytes()
    assert sizes[True] < sizes[False]


def test_one_shot_api_with_array_and_bitstream_bases(rng):
    model = _model(rng)
    tuned = _fine_tuned(rng, model)
    # base as arrays
    data = nnc_core.encode(tuned, base=model, qp=-46)
    got = nnc_core.decode(data, base=model)
    assert np.max(np.abs(got["fc1.weight"] - tuned["fc1.weight"])) < 2 * 2.0 ** (-46 / 4)
    # unchanged rows stay exactly as they were with uniform quantization (the DQ
    # trellis may place a level in a zero row to reach a better state)
    got = nnc_core.decode(nnc_core.encode(tuned, base=model, qp=-46, use_dq=False), base=model)
    same = np.all(tuned["fc2.weight"] == model["fc2.weight"], axis=1)
    assert 0 < same.sum() < len(same)
    assert np.array_equal(got["fc2.weight"][same], model["fc2.weight"][same])
    assert np.array_equal(got["steps"], tuned["steps"])
    # base as the bitstream it was sent in: TCA against its NDUs
    base_stream = nnc_core.encode(model)
    data = nnc_core.encode(tuned, base=base_stream)
    _, headers = _units(data)
    assert all(h.temporal_context_modeling_flag and h.put_node_depth == 1 for h in headers)
    received = nnc_core.decode(base_stream)
    got = nnc_core.decode(data, base=base_stream)
    for name in tuned:
        expected = UpdateEncoder(base_stream)
        expected.encode(tuned)
        assert got[name].tobytes() == expected.reference[name].tobytes()
    assert not np.array_equal(got["fc1.weight"], received["fc1.weight"])


def test_update_of_another_base_is_refused(rng):
    model = _model(rng)
    other = dict(model, **{"fc1.bias": model["fc1.bias"] + np.float32(1e-3)})
    data = nnc_core.encode(_fine_tuned(rng, model), base=model)
    with pytest.raises(
        BaseMismatchError,
        match=r"NNR_MPS: base_model_id 'nnc-sha256:[0-9a-f]{64}' names another base model .*\(unit 1, byte offset 4\)",
    ):
        nnc_core.decode(data, base=other)


def test_skipped_update_is_refused_by_node_depth(rng):
    """Without base_model_id the parent references tell: an update decoded
    after its grand-parent, not its parent, is refused."""
    models = [_model(rng)]
    for _ in range(2):
        models.append(_fine_tuned(rng, models[-1]))
    encoder = UpdateEncoder(signal_base=False, tca=False, hdsp=False)
    s0, _, s2 = [encoder.encode(m) for m in models]
    decoder = UpdateDecoder(s0)
    with pytest.raises(
        BaseMismatchError,
        match=r"NNR_NDU of tensor 'fc1.weight': put_node_depth 3 has its parent at "
        r"depth 2, but the base holds the tensor's NDU of depth 1 \(unit 3,",
    ):
        decoder.decode(s2)
    with pytest.raises(
        BaseMismatchError, match="node depth 3 updates an earlier version of the tensor, but no base was given"
    ):
        UpdateDecoder().decode(s2)


def test_tca_update_needs_its_parent_bitstream(rng):
    model = _model(rng)
    base_stream = nnc_core.encode(model)
    data = nnc_core.encode(_fine_tuned(rng, model), base=base_stream)
    with pytest.raises(
        BaseMismatchError, match="temporal context adaptation against its parent NDU .* give the base as the bitstream"
    ):
        nnc_core.decode(data, base=nnc_core.decode(base_stream))


def test_complete_model_is_no_update(rng):
    model = _model(rng)
    with pytest.raises(BaseMismatchError, match="NNR_MPS: the bitstream is a complete model"):
        nnc_core.decode(nnc_core.encode(model), base=model)


def test_error_feedback_carries_the_quantization_residual(rng):
    model = _model(rng)
    step = {name: (_fine_tuned(rng, model)[name] - w) for name, w in model.items() if w.dtype.kind == "f"}
    plain, fed = UpdateEncoder(model, qp=-30), UpdateEncoder(model, qp=-30, error_feedback=True, pre_flag=True)
    for encoder in (plain, fed):
        encoder.encode_update(step)
    sent = fed.reference["fc1.weight"] - model["fc1.weight"]
    np.testing.assert_allclose(fed._residual["fc1.weight"], step["fc1.weight"] - sent, atol=1e-6)
    for _ in range(3):
        data = fed.encode_update(step)
        plain.encode_update(step)
    mps, _ = _units(data)
    assert mps.nnr_pre_flag
    target = model["fc1.weight"] + 4 * step["fc1.weight"]
    err_fed = np.abs(fed.reference["fc1.weight"] - target).max()
    err_plain = np.abs(plain.reference["fc1.weight"] - target).max()
    assert err_fed < 2 * 2 ** (-30 / 4) < err_plain  # no drift: the error stays under two DQ steps


def test_encoder_refuses_bad_sessions(rng):
    model = _model(rng)
    with pytest.raises(nnc_core.ConfigError, match="max_part_elements"):
        UpdateEncoder(max_part_elements=10)
    # tools that change the tensor set or shapes cannot code an update of the base's tensors
    for option in (
        {"low_rank": 4},
        {"prune": {"fc1.weight": 0.25}},
        {"local_scaling": True},
        {"fold_batch_norm": True},
    ):
        with pytest.raises(
            nnc_core.ConfigError, match=f"{next(iter(option))} is not an option of an incremental update"
        ):
            nnc_core.encode(model, base=model, **option)
    data = nnc_core.encode(model, base=model)
    for option in ({"recompose": False}, {"apply_local_scaling": True}, {"unprune": True}):
        with pytest.raises(nnc_core.ConfigError, match="do not apply to an update"):
            nnc_core.decode(data, base=model, **option)
    with pytest.raises(nnc_core.ConfigError, match=r"tensor 'fc1.weight' has shape \[3\], its base \[24, 16\]"):
        nnc_core.encode({"fc1.weight": np.zeros(3, np.float32)}, base=model)
    with pytest.raises(nnc_core.ConfigError, match="a base is a mapping of arrays or NNR bitstream"):
        UpdateDecoder(42)


def test_cli_encodes_and_decodes_updates(tmp_path, rng):
    model = _model(rng)
    tuned = _fine_tuned(rng, model)
    base_npz, tuned_npz = tmp_path / "base.npz", tmp_path / "tuned.npz"
    np.savez(base_npz, **model)
    np.savez(tuned_npz, **tuned)
    base_nnr, update, out = tmp_path / "base.nnr", tmp_path / "update.nnr", tmp_path / "out.npz"
    assert main(["encode", str(base_npz), "-o", str(base_nnr), "-q"]) == 0
    for base in (base_npz, base_nnr):
        assert main(["encode", str(tuned_npz), "--base", str(base), "-o", str(update), "-q"]) == 0
        assert update.read_bytes() == nnc_core.encode(
            tuned, base=model if base == base_npz else base_nnr.read_bytes(), row_skipping=True
        )
        assert main(["decode", str(update), "--base", str(base), "-o", str(out), "-q"]) == 0
        expected = nnc_core.decode(update.read_bytes(), base=model if base == base_npz else base_nnr.read_bytes())
        with np.load(out) as archive:
            assert sorted(archive.files) == sorted(expected)
            for name in expected:
                assert archive[name].tobytes() == expected[name].tobytes()
    assert main(["decode", str(update), "--base", str(tuned_npz), "-o", str(out)]) == 1


def test_refused_update_leaves_the_session_usable(rng):
    models = [_model(rng)]
    for _ in range(2):
        models.append(_fine_tuned(rng, models[-1]))
    encoder = UpdateEncoder()
    s0, s1, s2 = [encoder.encode(m) for m in models]
    decoder = UpdateDecoder(s0)
    before = {k: v.copy() for k, v in decoder.reference.items()}
    with pytest.raises(BaseMismatchError, match="base_model_id"):
        decoder.decode(s2)
    assert all(decoder.reference[k].tobytes() == before[k].tobytes() for k in before)
    decoder.decode(s1)
    got = decoder.decode(s2)
    assert all(got[k].tobytes() == encoder.reference[k].tobytes() for k in got)
    with pytest.raises(
        nnc_core.ConfigError, match=r"tensor 'fc1.weight' has shape \[16, 24\], its parent NDU \[24, 16\]"
    ):
        encoder.encode_update({"fc1.weight": np.ones((16, 24), np.float32)})


def test_all_zero_tensor_of_the_base_is_sent(rng):
    """NNCodec leaves an all-zero tensor out of the first stream of a session;
    we send it, so that the receiver has it (later all-zero updates are left out)."""
    model = dict(_model(rng), **{"pooler.bias": np.zeros(24, np.float32)})
    encoder, decoder = UpdateEncoder(), UpdateDecoder()
    got = decoder.decode(encoder.encode(model))
    assert got["pooler.bias"].tobytes() == model["pooler.bias"].tobytes()
    _, headers = _units(encoder.encode(dict(_fine_tuned(rng, model), **{"pooler.bias": model["pooler.bias"]})))
    assert "pooler.bias" not in [h.element_ids[0] for h in headers]


def test_codebook_updates_keep_float32_models(rng):
    models = [_model(rng)]
    models.append(_fine_tuned(rng, models[-1]))
    encoder, decoder = UpdateEncoder(codebook_mode=1), UpdateDecoder()
    for m in models:
        got = decoder.decode(encoder.encode(m))
        assert {k: v.dtype for k, v in got.items()} == {k: v.dtype for k, v in m.items()}
        assert all(got[k].tobytes() == encoder.reference[k].tobytes() for k in got)


def test_cli_info_lists_an_update(tmp_path, rng, capsys):
    model = _model(rng)
    base = nnc_core.encode(model)
    update = tmp_path / "update.nnr"
    update.write_bytes(nnc_core.encode(_fine_tuned(rng, model), base=base))
    assert main(["info", str(update)]) == 0
    out = capsys.readouterr().out
    assert "parent_signalling base_model_id='nnc-sha256:" in out
    assert "NNR_PT_FLOAT ids=fc1.weight dims=24x16 dq parent depth=1 tca" in out
    assert "its tensors decode only with its base" in out


def test_error_feedback_leaves_the_base_error_alone(rng):
    """The first stream of a session is the base: its quantization error is not
    carried into the first update, which then sends only what changed."""
    model = _model(rng)
    tuned = dict(model, **{"fc1.weight": model["fc1.weight"] + np.float32(0.05)})
    encoder = UpdateEncoder(error_feedback=True)
    encoder.encode(model)
    _, headers = _units(encoder.encode(tuned))
    assert [h.element_ids for h in headers] == [["fc1.weight"]]


def test_encode_with_base_keeps_an_explicit_setting_equal_to_the_plain_default(rng):
    model = _model(rng)
    tuned = _fine_tuned(rng, model)
    off = nnc_core.encode(tuned, base=model, row_skipping=False)  # False is encode()'s default, not the session's
    assert off == UpdateEncoder(model, row_skipping=False).encode(tuned)
    assert nnc_core.encode(tuned, base=model) == UpdateEncoder(model).encode(tuned) != off


def test_options_per_bitstream(rng):
    """Settings given to encode() hold for that bitstream only."""
    model = _model(rng)
    tuned = _fine_tuned(rng, model)
    a, b = UpdateEncoder(qp=-38), UpdateEncoder(qp=-50)
    assert a.encode(model) == b.encode(model, qp=-38)
    fine = a.encode(tuned, qp=-50)
    assert fine == b.encode(tuned)
    assert fine != UpdateEncoder(model).encode(tuned)
    with pytest.raises(nnc_core.ConfigError, match="max_part_elements is not an option of an incremental update"):
        a.encode(tuned, max_part_elements=4)


def test_a_session_carries_integers_beyond_int32(rng):
    """A base with an int64 tensor beyond int32 (sent as int32 planes) and an
    update of it whose differences fit int32: the receiver holds every value."""
    m0 = {"w": _model(rng)["fc1.weight"], "ids": np.array([1, 2**40, -(2**50)], np.int64)}
    m1 = {"w": m0["w"] + np.float32(0.01), "ids": m0["ids"] + np.array([1, 5, 0], np.int64)}
    encoder, decoder = UpdateEncoder(), UpdateDecoder()
    for model in (m0, m1):
        got = decoder.decode(encoder.encode(model))
        assert got["ids"].dtype == np.int64 and np.array_equal(got["ids"], model["ids"])


def _threads_running_steps(monkeypatch):
    """Names of the threads that decode NDUs (a spy around the real step)."""
    import threading

    from nnc_core import decoding

    names: set[str] = set()
    real = decoding._run_step

    def spy(*args, **kwargs):
        names.add(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(decoding, "_run_step", spy)
    return names


def test_updates_decode_on_threads_with_the_same_result(rng, monkeypatch):
    """An update's NDUs each read their own tensor's TCA base and HDSP history:
    they decode on the threads, and every worker count gives the same tensors."""
    model = {f"layer{i}.weight": (0.1 * rng.standard_normal((64, 48))).astype(np.float32) for i in range(8)}
    encoder = UpdateEncoder(qp=-40, workers=1)
    streams = [encoder.encode(model)]
    for _ in range(2):
        model = _fine_tuned(rng, model, rows=8)
        streams.append(encoder.encode(model))
    threads = _threads_running_steps(monkeypatch)
    one, two = UpdateDecoder(workers=1), UpdateDecoder(workers=2)
    for data in streams:
        threads.clear()
        a, b = one.decode_update(data), two.decode_update(data)
        assert list(a) == list(b) and all(a[n].tobytes() == b[n].tobytes() for n in a)
        assert len(threads) > 1, threads
    assert all(one.reference[n].tobytes() == two.reference[n].tobytes() for n in model)
    assert all(one.state.history[n].tobytes() == two.state.history[n].tobytes() for n in model)


def test_a_tensor_carried_twice_with_a_state_decodes_in_order(rng, monkeypatch):
    """Two bitstreams concatenated carry each tensor twice: the second NDU of a
    tensor reads the state the first left, so they decode one at a time."""
    from nnc_core.decoding import DecoderState, decode_units

    first = {"w": (0.1 * rng.standard_normal((32, 32))).astype(np.float32)}
    second = {"w": first["w"] + np.float32(0.01)}
    data = nnc_core.encode(first) + nnc_core.encode(second)
    threads = _threads_running_steps(monkeypatch)
    results = []
    for workers in (1, 2):
        state = DecoderState()
        results.append(decode_units(read_units(data), len(data), state, workers=workers))
        assert list(state.base) == ["w"]
    assert threads == {"MainThread"}
    assert [t.values.tobytes() for t in results[0]] == [t.values.tobytes() for t in results[1]]
