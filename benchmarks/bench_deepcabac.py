"""Benchmark our DeepCABAC coder against NNCodec 2.1.3's on the same levels.

Run it with::

    tox -e bench                      # all sets, defaults
    tox -e bench -- --repeat 3        # arguments after -- go to the script

``tox -e bench`` builds our wheel and installs ``nncodec==2.1.3`` with
``--no-deps`` next to ``numpy<2``, as the ``nncodec`` test environment does.
Any environment holding both works: ``python benchmarks/bench_deepcabac.py``
(the source tree must not shadow the installed ``nnc_core``, so do not put
the repository root on ``sys.path``).  Models are downloaded into
``$NNC_MODEL_CACHE`` (default ``~/.cache/nnc-core/models``) on first use.

Options: ``--models minilm crepe-full synthetic`` chooses the level sets,
``--repeat N`` the number of timed rounds on the models (default 2, best one
reported), ``--big-repeat N`` those on the synthetic tensor and in the thread
test (default ``--repeat`` minus 1), ``--no-dq`` codes plain levels instead of
dependent-quantization indices, ``--no-threads`` skips the thread test,
``--warmup N`` the untimed rounds run on each level set before the timed
ones (default 1; a set's first round tends to run slower), ``--quick`` is
one round everywhere, no warm-up and no thread test.  With ``--repeat 3``
(the README's run) the whole run takes about 4.5 minutes on a 2-core AMD
EPYC VM, most of it in NNCodec's encoder.

What it measures
----------------
Level sets:

* ``minilm`` and ``crepe-full`` (see :mod:`nnc_core.testing.pretrained`):
  every float32 tensor quantized by NNCodec's own quantizer
  (:func:`nnc_core.testing.reference.quantize`, qp -38, qp_density 2, DQ on);
  integer tensors (position ids, BN counters) are skipped.
* ``synthetic``: one 4096 x 4096 tensor of N(0, 0.02) weights (seed 0),
  quantized the same way (16.8 M levels).

Each tensor is one payload (one arithmetic codeword) coded with
``TensorCoding(dq_flag=True)`` (row-major scan, 11 greater-than flags,
``param_opt`` on, as NNCodec's default).  Per round, the four measurements
(our encoder, NNCodec's encoder, our decoder, NNCodec's decoder) run one after
the other on the whole set, timed with :func:`time.perf_counter`; the best
round is reported.  Every round checks that both encoders produce identical
bytes and that both decoders return the input levels; a mismatch is reported
and makes the script fail after printing its tables.

NNCodec is driven through :mod:`nnc_core.testing.reference`, which calls its
pybind11 extension the way NNCodec's NDU coder does; its figures include that
adapter's small numpy overhead (row-skip flags, buffer copies).

Threads: two 1024 x 4096 tensors (rows 0-1023 and 1024-2047 of the synthetic
weights, each quantized on its own; ``--thread-rows``) are coded as two
payloads, first one after the other on the main thread, then on two threads of
a :class:`concurrent.futures.ThreadPoolExecutor`, each with its own
Encoder/Decoder.  Our C calls release the GIL, so two threads should get close
to 2x on two free cores; NNCodec's extension keeps the GIL, so it stays ~1x.
The run is noisy if anything else uses the cores (see the load average shown).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import importlib.metadata
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

try:
    from nnc_core.deepcabac import Decoder, Encoder, TensorCoding
    from nnc_core.testing import pretrained, reference
except ImportError as exc:  # pragma: no cover - usage error
    sys.exit(
        f"{exc}\nneeds nnc_core installed with its compiled extension, and nncodec==2.1.3; "
        "a source tree on sys.path (PYTHONPATH, python -m from the repository root) shadows the installed package"
    )

MODEL_SETS = ("minilm", "crepe-full")
SYNTHETIC = "synthetic"
QP = -38
QP_DENSITY = 2


# --------------------------------------------------------------------------- level sets


@dataclass
class LevelSet:
    """Stored integers of a set of tensors, each coded as its own payload."""

    name: str
    tensors: list[np.ndarray]
    prep_seconds: float = 0.0

    @property
    def levels(self) -> int:
        """Total number of levels in the set."""
        return sum(t.size for t in self.tensors)


def quantize(weights: np.ndarray, dq: bool) -> np.ndarray:
    """Stored integers of NNCodec's quantizer (qp -38, qp_density 2) as int32."""
    q, _ = reference.quantize(np.atleast_1d(weights), dq_flag=dq, qp=QP, qp_density=QP_DENSITY)
    return np.ascontiguousarray(q, dtype=np.int32)


def model_levels(name: str, dq: bool) -> LevelSet:
    """A pretrained model's float32 tensors quantized; integer tensors are skipped."""
    start = time.perf_counter()
    weights = pretrained.load(name)
    tensors = [quantize(w, dq) for w in weights.values() if w.dtype == np.float32]
    return LevelSet(name, tensors, time.perf_counter() - start)


def synthetic_weights() -> np.ndarray:
    """One 4096 x 4096 float32 tensor of N(0, 0.02) weights (seed 0)."""
    rng = np.random.default_rng(0)
    return (rng.standard_normal((4096, 4096)) * 0.02).astype(np.float32)


def synthetic_levels(dq: bool) -> LevelSet:
    """The synthetic tensor, quantized."""
    start = time.perf_counter()
    return LevelSet("synthetic 4096x4096", [quantize(synthetic_weights(), dq)], time.perf_counter() - start)


def thread_levels(rows: int, dq: bool) -> list[np.ndarray]:
    """Two tensors for the thread test: rows 0..rows-1 and rows..2*rows-1 of the synthetic weights.

    Each block is quantized on its own: with dependent quantization a slice of
    a quantized tensor is not a valid tensor (its first value is coded from
    the trellis state where the previous rows left it, not from state 0).
    """
    w = synthetic_weights()
    return [quantize(w[:rows], dq), quantize(w[rows : 2 * rows], dq)]


# --------------------------------------------------------------------------- coders


def ours_encode(tensors: Sequence[np.ndarray], coding: TensorCoding) -> list[bytes]:
    """One payload per tensor from our encoder."""
    payloads = []
    for q in tensors:
        with Encoder() as enc:
            enc.encode_tensor(q, coding)
            payloads.append(enc.finish())
    return payloads


def ours_decode(payloads: Sequence[bytes], tensors: Sequence[np.ndarray], coding: TensorCoding) -> list[np.ndarray]:
    """Stored integers our decoder reads from each payload (shapes from ``tensors``)."""
    out = []
    for payload, q in zip(payloads, tensors):
        with Decoder(payload) as dec:
            out.append(dec.decode_tensor(q.shape, coding).values)
            dec.finish()
    return out


def nncodec_encode(tensors: Sequence[np.ndarray], coding: TensorCoding) -> list[bytes]:
    """One payload per tensor from NNCodec's encoder."""
    return [reference.encode(q, coding) for q in tensors]


def nncodec_decode(payloads: Sequence[bytes], tensors: Sequence[np.ndarray], coding: TensorCoding) -> list[np.ndarray]:
    """Stored integers NNCodec's decoder reads from each payload (row-major scan: no entry points)."""
    return [reference.decode(payload, q.shape, coding)[0] for payload, q in zip(payloads, tensors)]


# --------------------------------------------------------------------------- measurements


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    """Wall-clock seconds of one call of ``fn`` and its result."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def same_values(decoded: Sequence[np.ndarray], tensors: Sequence[np.ndarray]) -> bool:
    """Whether every decoded tensor equals its input."""
    return len(decoded) == len(tensors) and all(np.array_equal(d.reshape(q.shape), q) for d, q in zip(decoded, tensors))


@dataclass
class SetResult:
    """Best times (seconds) and checks of one level set."""

    name: str
    tensors: int
    levels: int
    payload_bytes: int = 0
    enc_ours: float = float("inf")
    enc_ref: float = float("inf")
    dec_ours: float = float("inf")
    dec_ref: float = float("inf")
    problems: list[str] = field(default_factory=list)


def bench_set(ls: LevelSet, coding: TensorCoding, rounds: int, warmup: int = 1) -> SetResult:
    """Time both encoders and decoders on one level set; best of ``rounds`` rounds.

    ``warmup`` rounds run first and are not timed (their checks count): a
    set's first round tends to run slower (memory the process has not used
    before, cold caches); on this project's VM the first decode of the
    synthetic tensor took up to 140 ms longer.
    """
    res = SetResult(ls.name, len(ls.tensors), ls.levels)
    times: dict[str, list[float]] = {"enc_ours": [], "enc_ref": [], "dec_ours": [], "dec_ref": []}
    # the timed calls are partials, not lambdas: their arguments are bound when
    # made, so they never see a payload list of another round or one deleted
    # below (a lambda would read ``ours`` when called, after the ``del``)
    for _ in range(warmup + rounds):
        t, ours = timed(functools.partial(ours_encode, ls.tensors, coding))
        times["enc_ours"].append(t)
        t, ref = timed(functools.partial(nncodec_encode, ls.tensors, coding))
        times["enc_ref"].append(t)
        differing = sum(a != b for a, b in zip(ours, ref))
        if differing:
            res.problems.append(f"{ls.name}: {differing} of {len(ours)} payloads differ from NNCodec's")
        res.payload_bytes = sum(len(p) for p in ours)
        t, dec = timed(functools.partial(ours_decode, ours, ls.tensors, coding))
        times["dec_ours"].append(t)
        if not same_values(dec, ls.tensors):
            res.problems.append(f"{ls.name}: our decoder does not return the input levels")
        t, dec = timed(functools.partial(nncodec_decode, ours, ls.tensors, coding))
        times["dec_ref"].append(t)
        if not same_values(dec, ls.tensors):
            res.problems.append(f"{ls.name}: NNCodec's decoder does not return the input levels")
        del dec, ours, ref
    for key, values in times.items():
        setattr(res, key, min(values[warmup:]))
    return res


@dataclass
class ThreadResult:
    """Best times (seconds) of coding the same tensors on 1 and 2 threads."""

    coder: str
    levels: int
    enc_1: float = float("inf")
    enc_2: float = float("inf")
    dec_1: float = float("inf")
    dec_2: float = float("inf")


def bench_threads(
    parts: list[np.ndarray], coding: TensorCoding, rounds: int, problems: list[str]
) -> list[ThreadResult]:
    """Code ``parts`` (one payload each) on the main thread, then one per thread.

    Each worker codes its own tensor with its own Encoder/Decoder (or NNCodec
    coder object), so the coders never share state.
    """
    coders = {
        "nnc_core": (ours_encode, ours_decode),
        "NNCodec 2.1.3": (nncodec_encode, nncodec_decode),
    }
    levels = sum(p.size for p in parts)
    results = []
    with concurrent.futures.ThreadPoolExecutor(len(parts)) as pool:
        list(pool.map(lambda _: None, parts))  # start the workers before timing
        for name, (encode, decode) in coders.items():
            tr = ThreadResult(name, levels)

            # this coder's functions bound as defaults: the helpers must not
            # read the loop variables when called (a closure would)
            def encode_threaded(encode: Callable[..., list[bytes]] = encode) -> list[bytes]:
                return [b for chunk in pool.map(lambda q: encode([q], coding), parts) for b in chunk]

            def decode_threaded(
                payloads: list[bytes], decode: Callable[..., list[np.ndarray]] = decode
            ) -> list[np.ndarray]:
                jobs = [([p], [q]) for p, q in zip(payloads, parts)]
                return [v for chunk in pool.map(lambda job: decode(*job, coding), jobs) for v in chunk]

            for _ in range(rounds):
                t, single = timed(functools.partial(encode, parts, coding))
                tr.enc_1 = min(tr.enc_1, t)
                t, multi = timed(encode_threaded)
                tr.enc_2 = min(tr.enc_2, t)
                if single != multi:
                    problems.append(f"threads, {name}: payloads coded on 2 threads differ from 1 thread")
                t, dec = timed(functools.partial(decode, single, parts, coding))
                tr.dec_1 = min(tr.dec_1, t)
                if not same_values(dec, parts):
                    problems.append(f"threads, {name}: 1-thread decode does not return the input levels")
                t, dec = timed(functools.partial(decode_threaded, single))
                tr.dec_2 = min(tr.dec_2, t)
                if not same_values(dec, parts):
                    problems.append(f"threads, {name}: 2-thread decode does not return the input levels")
                del single, multi, dec
            results.append(tr)
    return results


# --------------------------------------------------------------------------- reporting


def mlps(levels: int, seconds: float) -> float:
    """Throughput in millions of levels per second."""
    return levels / seconds / 1e6


def machine_info() -> list[str]:
    """CPU model, core count, OS, Python, numpy and coder versions."""
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        cpu = platform.processor() or "unknown"
    load = " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()

    def version(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "?"

    return [
        f"CPU: {cpu} ({os.cpu_count()} logical CPUs, {usable} usable)",
        f"OS: {platform.system()} {platform.release()} {platform.machine()}",
        f"Python {platform.python_version()} ({platform.python_implementation()}), numpy {np.__version__}",
        f"nnc-core {version('nnc-core')}, nncodec {version('nncodec')}",
        "load average at start: " + load,
    ]


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table, numeric columns right-aligned."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    align = ["---" if i == 0 else "--:" for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        padded = (str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
        return "| " + " | ".join(padded) + " |"

    sep = "|" + "|".join(("-" * (w + 1) + ":" if a == "--:" else "-" * (w + 2)) for a, w in zip(align, widths)) + "|"
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


def set_table(results: Sequence[SetResult]) -> str:
    """Markdown table of the per-set results."""
    header = [
        "set",
        "tensors",
        "levels",
        "bytes",
        "bits/level",
        "enc ours",
        "enc NNCodec",
        "enc ×",
        "dec ours",
        "dec NNCodec",
        "dec ×",
    ]
    rows = []
    for r in results:
        rows.append(
            [
                r.name,
                f"{r.tensors}",
                f"{r.levels:,}",
                f"{r.payload_bytes:,}",
                f"{8 * r.payload_bytes / r.levels:.3f}",
                f"{mlps(r.levels, r.enc_ours):.2f}",
                f"{mlps(r.levels, r.enc_ref):.2f}",
                f"{r.enc_ref / r.enc_ours:.2f}",
                f"{mlps(r.levels, r.dec_ours):.2f}",
                f"{mlps(r.levels, r.dec_ref):.2f}",
                f"{r.dec_ref / r.dec_ours:.2f}",
            ]
        )
    return markdown_table(header, rows)


def thread_table(results: Sequence[ThreadResult]) -> str:
    """Markdown table of the 1-thread vs 2-thread results."""
    header = ["coder", "enc 1 thread", "enc 2 threads", "enc ×", "dec 1 thread", "dec 2 threads", "dec ×"]
    rows = []
    for r in results:
        rows.append(
            [
                r.coder,
                f"{mlps(r.levels, r.enc_1):.2f}",
                f"{mlps(r.levels, r.enc_2):.2f}",
                f"{r.enc_1 / r.enc_2:.2f}",
                f"{mlps(r.levels, r.dec_1):.2f}",
                f"{mlps(r.levels, r.dec_2):.2f}",
                f"{r.dec_1 / r.dec_2:.2f}",
            ]
        )
    return markdown_table(header, rows)


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--models",
        nargs="+",
        choices=[*MODEL_SETS, SYNTHETIC],
        default=[*MODEL_SETS, SYNTHETIC],
        metavar="SET",
        help=f"level sets to code, from {', '.join([*MODEL_SETS, SYNTHETIC])} (default: all)",
    )
    p.add_argument("--repeat", type=int, default=2, help="timed rounds per model set; best is reported (default 2)")
    p.add_argument(
        "--big-repeat",
        type=int,
        default=None,
        help="timed rounds for the synthetic tensor and the thread test (default: --repeat minus 1, at least 1)",
    )
    p.add_argument(
        "--thread-rows",
        type=int,
        default=1024,
        help="rows of each of the two 4096-wide tensors of the thread test (default 1024, at most 2048)",
    )
    p.add_argument("--no-dq", action="store_true", help="plain quantization instead of dependent quantization")
    p.add_argument("--no-threads", action="store_true", help="skip the 1- vs 2-thread test")
    p.add_argument(
        "--warmup",
        type=int,
        default=1,
        help="untimed rounds on each level set before the timed ones (default 1)",
    )
    p.add_argument("--quick", action="store_true", help="one round everywhere, no warm-up and no thread test")
    args = p.parse_args(argv)
    if args.quick:
        args.repeat, args.big_repeat, args.warmup, args.no_threads = 1, 1, 0, True
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    if args.big_repeat is None:
        args.big_repeat = max(1, args.repeat - 1)
    if args.big_repeat < 1:
        p.error("--big-repeat must be at least 1")
    if args.warmup < 0:
        p.error("--warmup must be at least 0")
    if not 1 <= args.thread_rows <= 2048:
        p.error("--thread-rows must be in 1..2048")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print its tables; non-zero exit if any check failed."""
    args = parse_args(argv)
    dq = not args.no_dq
    coding = TensorCoding(dq_flag=dq)
    wall = time.perf_counter()

    print("## DeepCABAC throughput: nnc_core vs NNCodec 2.1.3\n")
    for line in machine_info():
        print(f"- {line}")
    print(
        f"- levels: NNCodec quantizer, qp {QP}, qp_density {QP_DENSITY}, DQ {'on' if dq else 'off'}; "
        f"coding: {coding}\n"
        f"- best of {args.repeat} round(s) for models, {args.big_repeat} for the synthetic tensor and threads; "
        f"after {args.warmup} untimed warm-up round(s) per set; one payload per tensor\n",
        flush=True,
    )

    results: list[SetResult] = []
    problems: list[str] = []
    for name in dict.fromkeys(args.models):
        ls = synthetic_levels(dq) if name == SYNTHETIC else model_levels(name, dq)
        rounds = args.big_repeat if name == SYNTHETIC else args.repeat
        print(
            f"{ls.name}: {len(ls.tensors)} tensors, {ls.levels:,} levels (load+quantize {ls.prep_seconds:.1f} s); "
            f"timing {rounds} round(s) after {args.warmup} warm-up ...",
            flush=True,
        )
        res = bench_set(ls, coding, rounds, args.warmup)
        results.append(res)
        problems += res.problems
        del ls

    thread_results: list[ThreadResult] = []
    if not args.no_threads:
        parts = thread_levels(args.thread_rows, dq)
        print(
            f"threads: 2 tensors of {parts[0].shape[0]}x{parts[0].shape[1]}; timing {args.big_repeat} round(s) ...",
            flush=True,
        )
        thread_results = bench_threads(parts, coding, args.big_repeat, problems)

    print("\n### Single thread, whole sets (M levels/s; × = NNCodec time / our time)\n")
    print(set_table(results))
    ok = "identical" if not any("differ" in p for p in problems) else "NOT IDENTICAL"
    print(
        f"\nEncoded bytes: {ok} to NNCodec's for every tensor. "
        f"Decoded levels: {'equal' if not problems else 'see problems'} to the input."
    )
    if thread_results:
        print("\n### Two tensors on 2 threads vs 1 thread (M levels/s; × = 1-thread time / 2-thread time)\n")
        print(thread_table(thread_results))
        ours = next(r for r in thread_results if r.coder == "nnc_core")
        print(
            f"\nThe two tensors are rows 0-{args.thread_rows - 1} and {args.thread_rows}-{2 * args.thread_rows - 1} "
            f"of the synthetic weights, each quantized on its own ({ours.levels:,} levels in all); "
            "each thread has its own coder object."
        )
    print(f"\nTotal run time {time.perf_counter() - wall:.0f} s.")

    if problems:
        print("\nPROBLEMS:")
        for p in dict.fromkeys(problems):
            print(f"- {p}")
        raise AssertionError(f"{len(set(problems))} check(s) failed, see above")
    return 0


if __name__ == "__main__":
    sys.exit(main())
