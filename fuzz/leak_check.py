"""Leak check: 10,000 encode/decode cycles must not grow the heap.

Each cycle encodes and decodes a small model through the public API (a DQ
weight, a bias, an integer tensor, a raw float tensor), codes and decodes one
tensor with the low-level coder, and runs the coder's error paths (a corrupt
payload, a truncated bitstream, a value the encoder refuses), so that memory
freed on success and on failure is both checked.

Under AddressSanitizer (tox env ``sanitize``, run through fuzz/sanitize.sh)
the measure is the allocator's own count of live heap bytes
(``__sanitizer_get_current_allocated_bytes``); otherwise the resident set
size.  After a warm-up of 1,000 cycles, the other 9,000 may grow the live
heap by at most 64 KiB (a leak of 8 bytes per cycle exceeds it), the
resident set by at most 512 KiB (64 bytes per cycle).

    python fuzz/leak_check.py [--sanitized] [CYCLES]
"""

from __future__ import annotations

import ctypes
import gc
import sys

import numpy as np

import nnc_core
from nnc_core import BitstreamError, EncodeError
from nnc_core.deepcabac import Decoder, Encoder, TensorCoding

WARMUP = 1000


def _allocated_bytes():
    """Live heap bytes under a sanitizer runtime, or None."""
    try:
        fn = ctypes.CDLL(None).__sanitizer_get_current_allocated_bytes
    except AttributeError:
        return None
    fn.restype = ctypes.c_size_t
    return fn


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def cycle(i: int, model: dict[str, np.ndarray], levels: np.ndarray, stream: bytes) -> None:
    data = nnc_core.encode(model, raw_float=["raw"], qp=-38 - i % 4)
    out = nnc_core.decode(data)
    assert out["ints"].tolist() == model["ints"].tolist()
    dq = bool(i & 1)
    coding = TensorCoding(dq_flag=dq, dq_any_index=dq, scan_order=i % 3)
    with Encoder() as enc:
        enc.encode_bypass(i & 63, 6)
        enc.encode_tensor(levels, coding)
        payload = enc.finish()
    with Decoder(payload) as dec:
        assert dec.decode_bypass(6) == i & 63
        decoded = dec.decode_tensor(levels.shape, coding).values
        assert dq or np.array_equal(decoded, levels)
        dec.finish()
    # error paths: corrupt payload, truncated stream, value the encoder refuses
    try:
        with Decoder(payload[: len(payload) // 2] + bytes([0xA5]) * 3) as dec:
            dec.decode_bypass(6)
            dec.decode_tensor(levels.shape, coding)
            dec.finish()
    except BitstreamError:
        pass
    try:
        nnc_core.decode(stream[: len(stream) - 1 - i % 17])
    except BitstreamError:
        pass
    try:
        with Encoder() as enc:
            enc.encode_tensor(np.array([1, 3, 5], np.int32), TensorCoding(dq_flag=True))
    except EncodeError:
        pass


def _check_instrumented() -> None:
    """--sanitized: the extension itself must carry ASan and UBSan instrumentation
    (a preloaded runtime alone would make this check, and the tests, pass)."""
    import nnc_core._deepcabac as ext

    binary = open(ext.__file__, "rb").read()
    for symbol in (b"__asan_init", b"__ubsan_handle_"):
        if symbol not in binary:
            raise SystemExit(f"leak check: {ext.__file__} has no {symbol.decode()}: not a sanitizer build")


def main() -> int:
    args = sys.argv[1:]
    if "--sanitized" in args:
        args.remove("--sanitized")
        _check_instrumented()
    cycles = int(args[0]) if args else 10_000
    rng = np.random.default_rng(3)
    model = {
        "w": (rng.standard_normal((8, 6)) * 0.05).astype(np.float32),
        "b": (rng.standard_normal(8) * 0.01).astype(np.float32),
        "ints": rng.integers(-50, 50, size=(4, 3)).astype(np.int32),
        "raw": rng.standard_normal(5).astype(np.float32),
    }
    levels = rng.integers(-4, 5, size=(6, 10)).astype(np.int32)
    stream = nnc_core.encode(model)
    allocated = _allocated_bytes()
    measure = allocated if allocated is not None else _rss
    what = "live heap bytes (sanitizer allocator)" if allocated is not None else "resident set size"
    limit = 64 * 1024 if allocated is not None else 512 * 1024
    for i in range(min(WARMUP, cycles)):
        cycle(i, model, levels, stream)
    gc.collect()
    before = measure()
    for i in range(WARMUP, cycles):
        cycle(i, model, levels, stream)
    gc.collect()
    after = measure()
    growth = after - before
    print(
        f"leak check: {cycles} encode/decode cycles; {what} after {WARMUP}: {before}, at the end: {after}, "
        f"growth {growth} bytes (limit {limit})"
    )
    if growth > limit:
        print("leak check: FAILED", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
