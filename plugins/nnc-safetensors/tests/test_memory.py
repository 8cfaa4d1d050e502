"""Peak memory of `nnc encode FOLDER` and `nnc decode -o FOLDER` on a sharded
bf16 checkpoint, measured as users see it: the command in a process of its
own, its maximum resident set size (ru_maxrss), against the bound the
streaming design states for any input, 300 MB + (workers + 1) x 24 bytes x
the largest tensor's elements (tests/test_streaming.py holds .npz to it).

The checkpoint is larger than that bound and made of many small tensors, so
that holding it (or keeping the pages of its files mapped, as the reader once
did) fails the test while the tensors in flight pass it.  Quantized and
lossless (bit-pattern codebooks) alike."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

import nnc_core
from nnc_core.plugins import read_model

ROOT = Path(__file__).resolve().parents[3]

# Llama-shaped (embed_tokens, q/k/v/o_proj, gate/up/down_proj, norms, lm_head) with
# small dimensions: 270 layers of tensors of at most 512 x 256 elements, 320 MB in bf16
DIMS = ["--hidden", "256", "--intermediate", "512", "--vocab", "1024", "--kv", "128"]
LARGEST = 1024 * 256
# coarse uniform quantization: the time goes down (the C coder has few bins to code),
# the memory per element in flight does not (the same arrays are made per tensor)
CODING = ["--qp", "-20", "--no-dq"]
STEP = 2.0 ** (-20 / 4)  # qp -20 at qp_density 2


# The command is started by a small process of its own, not by pytest: Linux carries
# a parent's peak RSS at fork into the child's ru_maxrss, and pytest's may be larger
# than the bound.
_RUN = textwrap.dedent(
    """
    import os, subprocess, sys
    proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    sys.stderr.write(proc.stderr.read().decode())
    print(usage.ru_maxrss * 1024)
    sys.exit(os.waitstatus_to_exitcode(status))
    """
)


def _peak_rss(argv: list[str], cwd: Path) -> int:
    """Peak resident bytes of one process (cwd: not the source tree, which would shadow the installed package)."""
    out = subprocess.run([sys.executable, "-c", _RUN, *argv], cwd=cwd, capture_output=True, text=True, check=False)
    assert out.returncode == 0, f"{' '.join(argv)}: {out.stderr}"
    return int(out.stdout.split()[-1])


def test_sharded_bf16_checkpoint_streams_within_the_bound(tmp_path):
    src = tmp_path / "checkpoint"
    generated = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "checkpoint_gen.py"),
            str(src),
            "--params",
            "1.6e8",
            "--shard-bytes",
            "1e8",
            *DIMS,
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    summary = json.loads(generated.stdout)
    assert summary["shards"] == 4
    total = summary["bytes"]
    index = json.loads((src / "model.safetensors.index.json").read_text())
    assert index["metadata"]["total_size"] == total
    model = read_model(src)
    largest = max(int(np.prod(model.tensors.shape_of(n))) for n in model.tensors)
    assert largest == LARGEST
    nnc = [sys.executable, "-m", "nnc_core.cli"]
    streams = {}
    for workers in (1, 2):
        bound = 300e6 + (workers + 1) * 24 * largest
        assert total > bound  # the checkpoint itself does not fit: the bound tests streaming
        stream, out = tmp_path / f"w{workers}.nnr", tmp_path / f"out{workers}"
        peak = _peak_rss(
            [*nnc, "encode", str(src), "-o", str(stream), "-q", "--workers", str(workers), *CODING], tmp_path
        )
        assert peak < bound, ("encode", workers, peak, bound)
        peak = _peak_rss([*nnc, "decode", str(stream), "-o", str(out), "-q", "--workers", str(workers)], tmp_path)
        assert peak < bound, ("decode", workers, peak, bound)
        streams[workers] = stream.read_bytes()
    assert streams[1] == streams[2]  # the worker count changes nothing written

    # the round trip: the same folder, each tensor what the bitstream decodes to, within the quantization step
    files = sorted(p.name for p in src.iterdir())
    for out in (tmp_path / "out1", tmp_path / "out2"):
        assert sorted(p.name for p in out.iterdir()) == files
        for name in ("config.json", "model.safetensors.index.json"):
            assert (out / name).read_bytes() == (src / name).read_bytes()
        for name in files:  # the same headers (dtype and shape kept): the same sizes
            assert (out / name).stat().st_size == (src / name).stat().st_size
    assert all((tmp_path / "out1" / n).read_bytes() == (tmp_path / "out2" / n).read_bytes() for n in files)
    decoded = read_model(tmp_path / "out2").tensors
    with nnc_core.open(tmp_path / "w2.nnr") as reader:
        count = 0
        for name, value in reader.items():
            got, original = decoded[name], model.tensors[name]
            assert got.dtype == original.dtype == value.dtype and got.shape == original.shape, name
            assert got.tobytes() == value.tobytes(), name
            error = np.abs(got.astype(np.float32) - original.astype(np.float32))
            if original.ndim > 1:  # weights: uniform quantization to the nearest step, then rounded to bf16
                assert error.max() <= STEP / 2 * (1 + 2.0**-7), name
            else:  # norm weights: nonweight QP -75, finer than bf16 itself
                assert np.all(error <= np.abs(original.astype(np.float32)) * 2.0**-8), name
            count += 1
    assert count == len(model.tensors)
    model.tensors.close()
    decoded.close()

    # lossless: bf16 as codebooks of its bit patterns, within the same bound, the folder back byte for byte
    bound = 300e6 + 3 * 24 * largest
    stream, out = tmp_path / "lossless.nnr", tmp_path / "lossless"
    peak = _peak_rss([*nnc, "encode", str(src), "-o", str(stream), "-q", "--workers", "2", "--lossless"], tmp_path)
    assert peak < bound, ("lossless encode", peak, bound)
    peak = _peak_rss([*nnc, "decode", str(stream), "-o", str(out), "-q", "--workers", "2"], tmp_path)
    assert peak < bound, ("lossless decode", peak, bound)
    assert stream.stat().st_size < 0.8 * total
    assert all((out / n).read_bytes() == (src / n).read_bytes() for n in files)
