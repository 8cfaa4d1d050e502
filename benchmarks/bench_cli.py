"""Whole-process benchmark: the ``nnc`` command against NNCodec 2.1.3, as users run them.

Each measurement is one process reading its input file and writing its
output file: ``nnc encode model.npz -o m.nnr`` and ``nnc decode m.nnr -o
out.npz`` (with the default workers and with ``--workers 1``) beside a
Python process that loads the same ``.npz`` and calls NNCodec's
``compress(..., bitstream_path=...)``, and one that calls ``decompress`` on
its bitstream and saves the tensors with ``numpy.savez``.  Wall time covers
interpreter start-up, imports, reading and writing; memory is each process's
peak resident set size (``wait4``).  The two encoders write identical
bitstreams at these settings (checked).

Run it with::

    tox -e bench-cli                                   # environment with NNCodec (see tox.ini)
    tox -e bench-cli -- --large 600                    # also a generated 600 M-parameter model (ours only)

Results go to ``benchmarks/results/cli-<UTC time>.json`` and a Markdown table to stdout.
Models come from PyPI wheels (see ``nnc_core.testing.pretrained``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

from nnc_core.parallel import default_workers
from nnc_core.plugins.npz import write_npz
from nnc_core.testing import pretrained

RESULTS = Path(__file__).parent / "results"

_NNCODEC_ENCODE = textwrap.dedent(
    """
    import contextlib, io, sys
    import numpy as np
    from nnc_core.testing.reference import nncodec_compression
    nnc = nncodec_compression()
    with np.load(sys.argv[1]) as archive:
        tensors = {name: archive[name] for name in archive.files}
    with contextlib.redirect_stdout(io.StringIO()):
        nnc.compress(tensors, bitstream_path=sys.argv[2], verbose=False)
    """
)

_NNCODEC_DECODE = textwrap.dedent(
    """
    import contextlib, io, sys
    import numpy as np
    from nnc_core.testing.reference import nncodec_compression
    nnc = nncodec_compression()
    with contextlib.redirect_stdout(io.StringIO()):
        tensors = nnc.decompress(sys.argv[1])
    np.savez(sys.argv[2], **tensors)
    """
)

_GENERATE = textwrap.dedent(
    """
    import sys
    import numpy as np
    from nnc_core.plugins.npz import write_npz

    rng = np.random.default_rng(0)
    d, ff = 2048, 5504
    target = int(float(sys.argv[2]) * 1e6)

    def layers():
        total, i = 0, 0
        yield "embed_tokens.weight", rng.normal(0, 0.02, (32000, d)).astype(np.float32)
        total += 32000 * d
        while total < target:
            for name, shape in (("self_attn.q_proj", (d, d)), ("self_attn.k_proj", (d, d)), ("self_attn.v_proj", (d, d)),
                                ("self_attn.o_proj", (d, d)), ("mlp.gate_proj", (ff, d)), ("mlp.up_proj", (ff, d)),
                                ("mlp.down_proj", (d, ff))):
                yield f"layers.{i}.{name}.weight", rng.normal(0, 0.02, shape).astype(np.float32)
                total += shape[0] * shape[1]
            yield f"layers.{i}.input_layernorm.weight", np.ones(d, np.float32)
            yield f"layers.{i}.post_attention_layernorm.weight", np.ones(d, np.float32)
            i += 1

    with open(sys.argv[1], "wb") as f:
        write_npz(f, layers())
    """
)


# The measured process is started by this small one, not by the benchmark: Linux
# carries a parent's peak RSS at fork into the child's ru_maxrss, and a benchmark
# grows (it loads models, reads checkpoints to compare them).  Prints wall seconds and peak bytes.
_MEASURE = textwrap.dedent(
    """
    import os, subprocess, sys, time
    start = time.perf_counter()
    proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    sys.stderr.write(proc.stderr.read().decode())
    print(elapsed, usage.ru_maxrss * 1024)
    sys.exit(os.waitstatus_to_exitcode(status))
    """
)


def _run(argv: list[str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of one process."""
    out = subprocess.run([sys.executable, "-c", _MEASURE, *argv], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{' '.join(argv)} failed ({out.returncode}): {out.stderr}")
    elapsed, peak = out.stdout.split()
    return float(elapsed), int(peak)


def _best(commands: dict[str, list[str]], repeat: int) -> dict[str, tuple[float, int]]:
    """Best wall seconds and largest peak RSS of each command over ``repeat``
    rounds, each round running every command once in the order given: a slow
    spell of a shared machine then touches every command alike, not the runs
    of one (which made one-worker/two-worker ratios swing by a quarter)."""
    runs: dict[str, list[tuple[float, int]]] = {label: [] for label in commands}
    for _ in range(repeat):
        for label, argv in commands.items():
            runs[label].append(_run(argv))
    return {label: (min(t for t, _ in r), max(m for _, m in r)) for label, r in runs.items()}


def _nnc(*args: str) -> list[str]:
    """The ``nnc`` command of this environment (as installed), else the module."""
    script = Path(sys.executable).with_name("nnc")
    return [str(script), *args] if script.exists() else [sys.executable, "-m", "nnc_core.cli", *args]


def _model_file(name: str, folder: Path) -> tuple[Path, int, int]:
    tensors = pretrained.load(name)
    # integer tensors (position ids, BN counters) as int32, which both codecs code losslessly
    tensors = {k: (v.astype(np.int32).reshape(-1) if v.dtype.kind == "i" else v) for k, v in tensors.items()}
    path = folder / f"{name}.npz"
    with open(path, "wb") as f:
        write_npz(f, tensors.items())
    return path, sum(int(v.size) for v in tensors.values()), max(int(v.size) for v in tensors.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["minilm", "crepe-full"], choices=sorted(pretrained.MODELS))
    parser.add_argument(
        "--repeat", type=int, default=3, help="rounds, each running every measurement once (best time, largest RSS)"
    )
    parser.add_argument(
        "--large",
        type=float,
        metavar="MILLIONS",
        help="also a generated Llama-shaped float32 model of this many million parameters (ours only)",
    )
    parser.add_argument("--no-nncodec", action="store_true", help="skip NNCodec (an environment without it)")
    args = parser.parse_args()
    workers = default_workers()
    load_before = os.getloadavg()  # recorded: other processes on the machine slow every figure
    rows = []
    with tempfile.TemporaryDirectory(prefix="nnc-bench-") as tmp:
        folder = Path(tmp)
        for model in args.models:
            src, params, largest = _model_file(model, folder)
            row: dict = {
                "model": model,
                "parameters": params,
                "largest_tensor": largest,
                "npz_bytes": src.stat().st_size,
            }
            ours, theirs = folder / f"{model}.nnr", folder / f"{model}.nncodec.nnr"
            # every round encodes before it decodes: the decodes read what the encodes wrote
            commands = {
                "encode_default": _nnc("encode", str(src), "-o", str(ours), "-q"),
                "encode_1": _nnc("encode", str(src), "-o", str(ours), "-q", "--workers", "1"),
                "encode_nncodec": [sys.executable, "-c", _NNCODEC_ENCODE, str(src), str(theirs)],
                "decode_default": _nnc("decode", str(ours), "-o", str(folder / "out.npz"), "-q"),
                "decode_1": _nnc("decode", str(ours), "-o", str(folder / "out.npz"), "-q", "--workers", "1"),
                "decode_nncodec": [sys.executable, "-c", _NNCODEC_DECODE, str(theirs), str(folder / "ref.npz")],
            }
            if args.no_nncodec:
                commands = {label: argv for label, argv in commands.items() if not label.endswith("nncodec")}
            row.update(_best(commands, args.repeat))
            row["bytes"] = ours.stat().st_size
            if not args.no_nncodec:
                row["identical"] = theirs.read_bytes() == ours.read_bytes()
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
        if args.large:
            src = folder / "large.npz"
            subprocess.run([sys.executable, "-c", _GENERATE, str(src), str(args.large)], check=True)
            shapes = _npz_shapes(src)
            params = sum(int(np.prod(s)) for s in shapes.values())
            largest = max(int(np.prod(s)) for s in shapes.values())
            row = {
                "model": f"generated {params / 1e6:.0f}M",
                "parameters": params,
                "largest_tensor": largest,
                "npz_bytes": src.stat().st_size,
            }
            ours = folder / "large.nnr"
            for label, extra in (("default", []), ("1", ["--workers", "1"])):
                row[f"encode_{label}"] = _run(_nnc("encode", str(src), "-o", str(ours), "-q", *extra))
                row[f"decode_{label}"] = _run(_nnc("decode", str(ours), "-o", str(folder / "out.npz"), "-q", *extra))
            row["bytes"] = ours.stat().st_size
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    record = {
        "benchmark": "bench_cli",
        "utc": stamp,
        "machine": platform.machine(),
        "cpus_available": workers,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "repeat": args.repeat,
        "rounds": "interleaved (each round runs every command of a model once)",
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "rows": rows,
    }
    record_run(f"cli-{stamp}", record, table(record))


def record_run(name: str, record: dict, table: str) -> None:
    """Writes a run's figures to benchmarks/results/NAME.json and prints its table."""
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{name}.json"
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(table)
    print(f"\n(recorded in {out.relative_to(Path.cwd()) if out.is_relative_to(Path.cwd()) else out})")


def _npz_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Array shapes of an .npz from the members' .npy headers (no array read)."""
    import zipfile

    shapes = {}
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            with archive.open(info) as f:
                version = np.lib.format.read_magic(f)
                shape, _, _ = np.lib.format._read_array_header(f, version)  # noqa: SLF001 - header only
            shapes[info.filename.removesuffix(".npy")] = shape
    return shapes


def table(record: dict) -> str:
    """The Markdown table of a recorded run."""
    w = record["cpus_available"]
    lines = [
        f"Whole processes (`nnc encode`/`nnc decode` on .npz files), {record['machine']}, {w} CPUs, "
        f"best of {record['repeat']}; times in seconds, × = NNCodec's time / ours, RSS = peak resident MB.",
        "",
        f"| model | params | enc ours ({w} workers) | enc 1 worker | enc NNCodec | enc × | enc × 1 worker "
        f"| dec ours ({w} workers) | dec 1 worker | dec NNCodec | dec × | dec × 1 worker | RSS enc / dec ours | RSS enc / dec NNCodec | identical |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|:-:|",
    ]
    mb = 1 / 1e6
    for r in record["rows"]:
        # the row bound as a default: the helpers must not read the loop variable when called
        def fmt(key: str, r: dict = r) -> str:
            return f"{r[key][0]:.2f}" if key in r else "–"

        def ratio(a: str, b: str, r: dict = r) -> str:
            return f"{r[b][0] / r[a][0]:.2f}" if a in r and b in r else "–"

        rss_ref = (
            f"{r['encode_nncodec'][1] * mb:.0f} / {r['decode_nncodec'][1] * mb:.0f}" if "encode_nncodec" in r else "–"
        )
        lines.append(
            f"| {r['model']} | {r['parameters'] / 1e6:.1f} M | {fmt('encode_default')} | {fmt('encode_1')} | {fmt('encode_nncodec')} "
            f"| {ratio('encode_default', 'encode_nncodec')} | {ratio('encode_1', 'encode_nncodec')} "
            f"| {fmt('decode_default')} | {fmt('decode_1')} | {fmt('decode_nncodec')} "
            f"| {ratio('decode_default', 'decode_nncodec')} | {ratio('decode_1', 'decode_nncodec')} "
            f"| {r['encode_default'][1] * mb:.0f} / {r['decode_default'][1] * mb:.0f} | {rss_ref} "
            f"| {'yes' if r.get('identical') else ('–' if 'identical' not in r else 'NO')} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
