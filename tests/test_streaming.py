"""The streaming, parallel core: random access (nnc_core.open) equals the full
decode for every tensor; every worker count writes and reads the same bytes;
streaming to a file equals the bytes API; a model read lazily from .npz is
coded without being held; errors met while streaming name unit and offset
and leave no output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import nnc_core
from nnc_core import BitstreamError, ConfigError
from nnc_core.bitstream.units import (
    CompressedDataUnit,
    NduHeader,
    ParameterTypes,
    PayloadType,
    UnitType,
    aggregate_unit,
    read_units,
    write_unit,
)
from nnc_core.cli import main
from nnc_core.decoding import DecoderState, decode_bitstream
from nnc_core.deepcabac import Encoder, TensorCoding
from nnc_core.parallel import ordered_map
from nnc_core.plugins import items_as_decoded
from nnc_core.plugins.npz import NpzTensors, write_npz
from streams import start, structured_stream, unit_bytes, vector

ROOT = Path(__file__).parent / "vectors"
MANIFEST = json.loads((ROOT / "manifest.json").read_text())
ALONE = [(v["steps"][0] if "steps" in v else v)["stream"] for v in MANIFEST["vectors"]]
UPDATES = [v for v in MANIFEST["vectors"] if "steps" in v]


@pytest.fixture(scope="module")
def layers(minilm) -> dict[str, np.ndarray]:
    """MiniLM's encoder layers (its 11.7 M-parameter embedding left out, for time)."""
    return {name: value for name, value in minilm.items() if value.size < 1_000_000}


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _check_random_access(data: bytes, **options) -> None:
    full = nnc_core.decode(data, **options)
    with nnc_core.open(data, **options) as reader:
        assert list(reader) == list(full)
        assert len(reader) == len(full)
        for name in reversed(list(full)):  # each one alone, against stream order
            got = reader[name]
            assert _same(got, full[name]), name
            info = reader.info(name)
            assert (info.shape, info.dtype) == (got.shape, got.dtype), name
        streamed = list(reader.items())
        assert [n for n, _ in streamed] == list(full)
        assert all(_same(v, full[n]) for n, v in streamed)
    with nnc_core.open(data, workers=2, **options) as reader:  # as decoded: every tensor, in any order
        as_decoded = list(reader.items_as_decoded())
    assert sorted(_key(n, v) for n, v in as_decoded) == sorted(_key(n, v) for n, v in streamed)


def _key(name: str, value: np.ndarray) -> tuple:
    return name, value.dtype.str, value.shape, value.tobytes()


@pytest.mark.parametrize("stream", ALONE)
def test_random_access_equals_full_decode_for_every_conformance_vector(stream):
    _check_random_access((ROOT / stream).read_bytes())


def test_random_access_of_structured_streams():
    """Split tensors, multi-element NDUs, layer parameter sets, dimension shifts, aggregate units."""
    rng = np.random.default_rng(11)
    for _ in range(4):
        _check_random_access(structured_stream(rng)[0])
    units = unit_bytes(vector("v11_block_conv_bn"))
    _check_random_access(b"".join(units[:2]) + aggregate_unit(units[2:]))


@pytest.mark.parametrize(
    "encode_options, decode_options",
    [
        (dict(low_rank=4), dict()),
        (dict(low_rank=4), dict(recompose=False)),
        (dict(local_scaling=True), dict(apply_local_scaling=True)),
        (dict(local_scaling=True, low_rank=4), dict(apply_local_scaling=True)),
        (dict(prune={"a.weight": 0.25}), dict(unprune=True)),
        (dict(prune={"a.weight": 0.25}), dict()),
        (dict(max_part_elements=100, dimension_shift={"b.weight": 1}), dict()),
        (dict(codebook_mode=1), dict()),
        (dict(raw_float=["a.bias"], aggregate=True), dict()),
    ],
)
def test_random_access_with_reduction_tools(rng, encode_options, decode_options):
    tensors = {
        "a.weight": rng.normal(0, 0.1, (16, 24)).astype(np.float32),
        "a.bias": rng.normal(0, 0.1, 16).astype(np.float32),
        "b.weight": rng.normal(0, 0.1, (12, 20)).astype(np.float32),
        "steps": np.arange(7, dtype=np.int32),
    }
    blocks = {"a": {"weight": "a.weight", "bias": "a.bias"}}
    if "raw_float" in encode_options or "max_part_elements" in encode_options:
        blocks = {}
    data = nnc_core.encode(tensors, blocks=blocks, **encode_options)
    _check_random_access(data, **decode_options)


def test_random_access_of_an_update_reads_the_state_without_changing_it():
    vector_ = UPDATES[0]
    state = DecoderState()
    first = (ROOT / vector_["steps"][0]["stream"]).read_bytes()
    decode_bitstream(first, state)
    update = (ROOT / vector_["steps"][1]["stream"]).read_bytes()
    before = {k: v.copy() for k, v in state.base.items()}
    expected = {t.name: t.values for t in decode_bitstream(update, DecoderState(dict(state.base), dict(state.history)))}
    with nnc_core.open(update, state=state) as reader:
        for name in expected:
            assert _same(reader[name], expected[name]), name
        assert all(_same(v, expected[n]) for n, v in reader.items())
        # an update's NDUs read the state the ones before them leave: stream order
        assert [n for n, _ in reader.items_as_decoded()] == [n for n, _ in reader.items()]
    assert state.base.keys() == before.keys() and all(np.array_equal(state.base[k], before[k]) for k in before)


def test_reader_memory_maps_a_file_and_says_what_is_missing(tmp_path):
    path = tmp_path / "m.nnr"
    path.write_bytes(vector("v09_multi_tensor"))
    with nnc_core.open(path) as reader:
        name = next(iter(reader))
        assert _same(reader[name], nnc_core.decode(path.read_bytes())[name])
        with pytest.raises(KeyError):
            reader["no such tensor"]
        info = reader.info(name)
        assert info.bytes > 0 and info.units


def test_reader_refuses_a_truncated_header_at_open(tmp_path):
    data = vector("v09_multi_tensor")
    units = read_units(data)
    cut = units[-1].offset + 3
    with pytest.raises(BitstreamError) as e:
        nnc_core.open(data[:cut])
    assert e.value.unit_index == len(units) - 1 and e.value.byte_offset == units[-1].offset


@pytest.mark.parametrize(
    "options",
    [
        dict(),
        dict(use_dq=False, lambda_scale=1.0),
        dict(max_part_elements=4096),
        dict(scan_order=2, row_skipping=True),
        dict(aggregate=True),
        dict(fold_batch_norm=True),
    ],
)
def test_every_worker_count_gives_the_same_bytes(crepe_tiny, options):
    from nnc_core.encoding import blocks_from_parameter_types
    from nnc_core.testing import pretrained

    tensors, blocks = crepe_tiny, blocks_from_parameter_types(**pretrained.crepe_block_types(crepe_tiny))
    streams = {w: nnc_core.encode(tensors, blocks=blocks, workers=w, **options) for w in (1, 2, 3, 5)}
    assert len(set(streams.values())) == 1
    data = streams[1]
    decoded = {w: nnc_core.decode(data, workers=w) for w in (1, 2, 4)}
    for w in (2, 4):
        assert list(decoded[w]) == list(decoded[1])
        assert all(_same(decoded[w][n], decoded[1][n]) for n in decoded[1])


def test_every_worker_count_gives_the_same_bytes_with_codebooks(rng):
    tensors = {f"w{i}": np.round(rng.normal(0, 3, (40, 30))).astype(np.float32) * 0.01 for i in range(6)}
    streams = {w: nnc_core.encode(tensors, codebook_mode=2, workers=w) for w in (1, 2, 3)}
    assert len(set(streams.values())) == 1


def test_workers_must_be_a_positive_integer():
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConfigError, match="workers"):
            nnc_core.encode({"w": np.zeros((2, 2), np.float32)}, workers=bad)
        with pytest.raises(ConfigError, match="workers"):
            nnc_core.decode(vector("v09_multi_tensor"), workers=bad)


def test_ordered_map_keeps_order_and_raises_the_first_error_in_place():
    import threading
    import time

    def job(i):
        def run():
            time.sleep(0.001 * ((7 * i) % 5))
            if i == 6:
                raise ValueError("six")
            return i, threading.get_ident()

        return run

    assert [r[0] for r in ordered_map((job(i) for i in range(6)), 3)] == list(range(6))
    seen = []
    with pytest.raises(ValueError, match="six"):
        for value, _ in ordered_map((job(i) for i in range(20)), 3):
            seen.append(value)
    assert seen == list(range(6))

    def jobs():
        yield job(0)
        raise KeyError("made while planning")

    got = []
    with pytest.raises(KeyError):
        for value, _ in ordered_map(jobs(), 2):
            got.append(value)
    assert got == [0]


def test_ordered_map_runs_the_small_jobs_behind_a_large_one():
    """While a large job runs, the other threads take the small jobs after it,
    as many as their costs allow (here 200 of cost 1 behind one of cost 1000):
    the large job finishes only once the last small one has run, which a
    window of fewer jobs would never reach (it would time out)."""
    import threading

    last_ran = threading.Event()

    def large():
        return last_ran.wait(timeout=30)

    large.cost = 1000  # type: ignore[attr-defined]

    def small(i):
        def run():
            if i == 199:
                last_ran.set()
            return i

        return run

    results = list(ordered_map(iter([large, *(small(i) for i in range(200))]), 2))
    assert results == [True, *range(200)]


def test_ordered_map_starts_the_costliest_job_a_thread_is_free_for():
    """Two threads held by the first jobs; the one freed first starts the large
    job drawn after a small one (which a first-come queue would start first)."""
    import threading

    first_done, large_started = threading.Event(), threading.Event()
    started = []

    def held(event):
        def run():
            assert event.wait(timeout=30)
            return "held"

        run.cost = 10  # type: ignore[attr-defined]
        return run

    def small():
        started.append("small")
        return "small"

    def large():
        started.append("large")
        large_started.set()
        return "large"

    large.cost = 5  # type: ignore[attr-defined]

    def jobs():
        yield from (held(first_done), held(large_started), small, large)
        first_done.set()  # every job drawn (the window has room for all four)

    assert list(ordered_map(jobs(), 2)) == ["held", "held", "small", "large"]  # yielded in the jobs' order
    assert started == ["large", "small"]


def test_unordered_map_yields_results_as_they_end():
    import threading

    release = threading.Event()

    def slow():
        assert release.wait(timeout=30)
        return "slow"

    slow.cost = 100  # type: ignore[attr-defined]

    def quick(i):
        return lambda: i

    got = []
    for result in ordered_map(iter([slow, *(quick(i) for i in range(10))]), 2, ordered=False):
        got.append(result)
        if len(got) == 10:
            release.set()  # the slow job, first of all, ends once every quick one has come out
    assert got == [*range(10), "slow"]

    def failing():
        raise ValueError("failed")

    with pytest.raises(ValueError, match="failed"):
        list(ordered_map(iter([quick(0), failing, quick(1)]), 2, ordered=False))
    assert list(ordered_map(iter([quick(0), quick(1)]), 1, ordered=False)) == [0, 1]


def test_npz_directory_keeps_the_order_given(tmp_path):
    arrays = [("b", np.arange(3)), ("c", np.ones((2, 2), np.float32)), ("a", np.float64(1.5))]
    with open(tmp_path / "m.npz", "wb") as f:
        write_npz(f, iter(arrays), order=["a", "b", "c", "d"])
    with np.load(tmp_path / "m.npz") as archive:
        assert archive.files == ["a", "b", "c"]
        assert all(_same(archive[n], np.asarray(v)) for n, v in arrays)
    # a plain mapping's own order; a decoding one's as decoded (every tensor once)
    assert [n for n, _ in items_as_decoded(dict(arrays))] == ["b", "c", "a"]
    data = nnc_core.encode({n: np.asarray(v, np.float32).reshape(-1) for n, v in arrays})
    with nnc_core.open(data, workers=2) as reader:
        assert sorted(n for n, _ in items_as_decoded(reader)) == ["a", "b", "c"]


def test_encode_to_equals_the_bytes_api(tmp_path, layers):
    expected = nnc_core.encode(layers)
    path = tmp_path / "m.nnr"
    assert nnc_core.encode_to(path, layers) == len(expected)
    assert path.read_bytes() == expected
    with open(tmp_path / "f.nnr", "wb") as f:
        nnc_core.encode_to(f, layers, workers=1)
    assert (tmp_path / "f.nnr").read_bytes() == expected


class _Watched(dict):
    """A mapping that records which tensors are alive (read, not yet freed)."""

    def __init__(self, tensors):
        super().__init__(tensors)
        self.reads = []

    def __getitem__(self, name):
        self.reads.append(name)
        return np.array(super().__getitem__(name))  # a fresh copy each time, as a file read


def test_lazy_mapping_is_read_tensor_by_tensor(layers):
    watched = _Watched(layers)
    data = nnc_core.encode(watched, workers=2)
    assert data == nnc_core.encode(layers)
    assert sorted(watched.reads) == sorted(layers)  # each read once, on its turn


def _open_files(path: Path) -> int:
    """How many of this process's file descriptors are open on ``path``."""
    fds = Path("/proc/self/fd")
    return sum(1 for fd in fds.iterdir() if os.path.realpath(fd) == os.path.realpath(path))


def test_npz_is_read_lazily_and_written_streaming(tmp_path, layers):
    src = tmp_path / "in.npz"
    with open(src, "wb") as f:
        write_npz(f, layers.items())
    with np.load(src) as archive:  # numpy reads what the streaming writer wrote
        assert sorted(archive.files) == sorted(layers)
        assert all(_same(archive[n], layers[n]) for n in layers)
    with NpzTensors(src) as lazy:
        assert list(lazy) == list(layers) and len(lazy) == len(layers)
        assert _open_files(src) == 1
    assert _open_files(src) == 0  # closed on leaving the block, while `lazy` still exists
    assert main(["encode", str(src), "-o", str(tmp_path / "m.nnr"), "-q"]) == 0
    assert (tmp_path / "m.nnr").read_bytes() == nnc_core.encode(layers)
    expected = nnc_core.decode((tmp_path / "m.nnr").read_bytes())
    for workers in ("1", "2"):  # two: each tensor written as decoded, the directory in stream order
        assert (
            main(["decode", str(tmp_path / "m.nnr"), "-o", str(tmp_path / "out.npz"), "-q", "--workers", workers]) == 0
        )
        with np.load(tmp_path / "out.npz") as out:
            assert list(out.files) == list(expected)
            assert all(_same(out[n], expected[n]) for n in expected)


def test_decode_one_tensor_from_the_command_line(tmp_path, capsys):
    path = tmp_path / "m.nnr"
    path.write_bytes(vector("v09_multi_tensor"))
    full = nnc_core.decode(path.read_bytes())
    name = list(full)[-1]
    assert main(["decode", str(path), "-o", str(tmp_path / "one.npz"), "--tensor", name, "-q"]) == 0
    with np.load(tmp_path / "one.npz") as out:
        assert out.files == [name] and _same(out[name], full[name])
    assert main(["decode", str(path), "-o", str(tmp_path / "none.npz"), "--tensor", "nope", "-q"]) == 1
    assert "has no tensor 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "none.npz").exists()


def test_corrupt_unit_while_streaming_names_it_and_leaves_no_output(tmp_path, capsys, layers):
    data = bytearray(nnc_core.encode(layers))
    units = read_units(bytes(data))
    victim = units[len(units) // 2]
    data[victim.payload_offset + 5 : victim.offset + victim.size] = bytes(
        victim.offset + victim.size - victim.payload_offset - 5
    )
    path = tmp_path / "bad.nnr"
    path.write_bytes(bytes(data))
    with pytest.raises(BitstreamError) as e:
        dict(nnc_core.open(path).items())
    assert e.value.unit_index == len(units) // 2
    assert main(["decode", str(path), "-o", str(tmp_path / "out.npz"), "-q"]) == 1
    err = capsys.readouterr().err
    assert f"unit {len(units) // 2}, byte offset {victim.payload_offset}" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.nnr"]


# ---------------------------------------------------------------------------
# Peak memory, measured as users see it: the nnc command in a process of its
# own, its maximum resident set size.

_GENERATE = textwrap.dedent(
    """
    import sys
    import numpy as np
    from nnc_core.plugins.npz import write_npz

    rng = np.random.default_rng(0)

    def layers():
        d, ff = 512, 2048
        for i in range(int(sys.argv[2])):
            for name, shape in (("q", (d, d)), ("k", (d, d)), ("v", (d, d)), ("o", (d, d)), ("up", (ff, d)), ("down", (d, ff))):
                yield f"layers.{i}.{name}.weight", rng.normal(0, 0.02, shape).astype(np.float32)
                yield f"layers.{i}.{name}.bias", rng.normal(0, 0.02, shape[0]).astype(np.float32)
            yield f"layers.{i}.norm.weight", np.ones(d, np.float32)

    with open(sys.argv[1], "wb") as f:
        write_npz(f, layers())
    """
)

_RUN = textwrap.dedent(
    """
    import resource, subprocess, sys
    code = subprocess.call(sys.argv[1:])
    print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)
    sys.exit(code)
    """
)


def _peak_rss(argv: list[str], cwd: Path) -> int:
    # cwd: not the source tree, which would shadow the installed package
    out = subprocess.run([sys.executable, "-c", _RUN, *argv], capture_output=True, text=True, check=True, cwd=cwd)
    return int(out.stdout.split()[-1])


@pytest.mark.slow
@pytest.mark.skipif(
    "libasan" in os.environ.get("LD_PRELOAD", ""),
    reason="AddressSanitizer's shadow memory and quarantine inflate RSS; the core environment measures it",
)
def test_peak_memory_is_bounded_by_the_tensors_in_flight(tmp_path):
    """A 400 MB model (100 M parameters in 32 layers) encodes and decodes in
    far less memory than the model: 300 MB + (workers + 1) x 24 bytes x its
    largest tensor, the bound the streaming issue states; so does its
    lossless stream, as large as the model."""
    model = tmp_path / "model.npz"
    subprocess.run([sys.executable, "-c", _GENERATE, str(model), "32"], check=True, cwd=tmp_path)
    size = model.stat().st_size
    assert size > 390e6
    largest = 2048 * 512
    nnc = [sys.executable, "-m", "nnc_core.cli"]
    for workers in (1, 2):
        bound = 300e6 + (workers + 1) * 24 * largest
        peak = _peak_rss(
            [*nnc, "encode", str(model), "-o", str(tmp_path / "m.nnr"), "-q", "--workers", str(workers)], tmp_path
        )
        assert peak < bound, (workers, peak, bound)
        peak = _peak_rss(
            [*nnc, "decode", str(tmp_path / "m.nnr"), "-o", str(tmp_path / "d.npz"), "-q", "--workers", str(workers)],
            tmp_path,
        )
        assert peak < bound, (workers, peak, bound)
    with nnc_core.open(tmp_path / "m.nnr") as reader, np.load(tmp_path / "d.npz") as out:
        name = "layers.31.down.weight"
        assert _same(out[name], reader[name])
    # lossless: raw floats, a stream as large as the model, which the decoder
    # memory-maps; the pages it has passed must not stay resident
    _peak_rss([*nnc, "encode", str(model), "-o", str(tmp_path / "m.nnr"), "-q", "--lossless"], tmp_path)
    assert (tmp_path / "m.nnr").stat().st_size > 390e6
    for workers in (1, 2):
        bound = 300e6 + (workers + 1) * 24 * largest
        peak = _peak_rss(
            [*nnc, "decode", str(tmp_path / "m.nnr"), "-o", str(tmp_path / "d.npz"), "-q", "--workers", str(workers)],
            tmp_path,
        )
        assert peak < bound, ("lossless", workers, peak, bound)
    with np.load(model) as source, np.load(tmp_path / "d.npz") as out:
        name = "layers.31.down.weight"
        assert np.array_equal(out[name], source[name])


def test_review_findings_stay_fixed(tmp_path, rng):
    """Earlier tensors are handed on before a later corrupt NDU fails; a block split
    into parts keeps its block (local scaling applies); a closed reader refuses use;
    a tensor carried twice has no single value."""
    tensors = {"a": rng.normal(0, 0.1, (8, 8)).astype(np.float32), "b": rng.normal(0, 0.1, (8, 8)).astype(np.float32)}
    data = bytearray(nnc_core.encode(tensors))
    last = read_units(bytes(data))[-1]
    data[last.payload_offset : last.offset + last.size] = bytes(last.offset + last.size - last.payload_offset)
    got = []
    with pytest.raises(BitstreamError):
        for name, _ in nnc_core.iter_decode(bytes(data), workers=1):
            got.append(name)
    assert got == ["a"]

    # a block (weight + local scaling) split into two parts: our encoder splits no block,
    # the stream syntax allows it
    head, state = start()
    parts, rows_of = list(head), (3, 2)
    for counter, rows in zip((2, 1), rows_of):
        w = rng.integers(-3, 4, (rows, 4)).astype(np.int32)
        ls = rng.integers(1, 4, (rows,)).astype(np.int32)
        enc = Encoder()
        for values in (ls, w):  # block coding order: ls before the weight
            enc.encode_bypass(-38 & 0xFF, 8)
            enc.encode_tensor(values, TensorCoding())
        header = NduHeader(
            payload_type=PayloadType.NNR_PT_BLOCK,
            multiple_topology_elements_present_flag=True,
            element_ids=["fc.weight", "fc.ls"],
            tensor_dimensions_flag=True,
            cabac_unary_length_flag=True,
            compressed_parameter_types=ParameterTypes.NNR_CPT_LS,
            tensor_dimensions=[rows, 4],
        )
        parts.append(
            write_unit(
                CompressedDataUnit(UnitType.NNR_NDU, header=header, payload=enc.finish(), partial_data_counter=counter),
                state,
            )
        )
    split = b"".join(parts)
    assert list(nnc_core.decode(split, apply_local_scaling=True)) == ["fc.weight"]
    assert sorted(nnc_core.decode(split)) == ["fc.ls", "fc.weight"]
    with nnc_core.open(split, apply_local_scaling=True) as reader:
        assert list(reader) == ["fc.weight"] and [n for n, _ in reader.items()] == ["fc.weight"]
        assert reader["fc.weight"].shape == (5, 4)

    reader = nnc_core.open(nnc_core.encode(tensors))
    reader.close()
    for use in (lambda: reader["a"], lambda: list(reader.items()), lambda: reader.info("a")):
        with pytest.raises(ValueError, match="closed"):
            use()

    twice = nnc_core.encode(tensors) + nnc_core.encode({"a": tensors["b"]})
    with nnc_core.open(twice) as reader:
        with pytest.raises(ConfigError, match=r"tensor 'a' is carried more than once"):
            reader["a"]
        assert [n for n, _ in reader.items()] == ["a", "b", "a"]
    assert nnc_core.decode(twice)["a"].tobytes() == nnc_core.decode(nnc_core.encode({"a": tensors["b"]}))["a"].tobytes()
