"""Seed corpora of the fuzz harnesses, made from real bitstreams.

``python fuzz/make_seeds.py OUTDIR`` writes

* ``OUTDIR/python/``: whole NNR bitstreams for fuzz_decode.py: every
  conformance vector (tests/vectors, incremental steps included), the
  structured streams of tests/streams.py (aggregate units, layer parameter
  sets, split tensors, multi-element NDUs, dimension shifts), and streams
  nnc_core.encode makes of every payload type (NNR_PT_INT, NNR_PT_FLOAT with
  and without DQ, codebooks, NNR_PT_RAW_FLOAT, NNR_PT_BLOCK with batch norm,
  row skipping, block scans, parts, aggregation);
* ``OUTDIR/c/``: inputs of fuzz_deepcabac.c: a 12-byte parameter header and
  an NDU payload the Python encoder made with those parameters (decode mode),
  or levels to code (round-trip mode).

Needs nnc_core installed; deterministic.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import nnc_core  # noqa: E402
from nnc_core.bitstream.units import aggregate_unit  # noqa: E402
from nnc_core.deepcabac import Encoder, TensorCoding  # noqa: E402
from streams import structured_stream, unit_bytes  # noqa: E402

VECTORS = ROOT / "tests" / "vectors"


def vector_streams() -> list[bytes]:
    manifest = json.loads((VECTORS / "manifest.json").read_text())
    out = []
    for v in manifest["vectors"]:
        for entry in v.get("steps", [v]):
            out.append((VECTORS / entry["stream"]).read_bytes())
    return out


def encoded_streams() -> list[bytes]:
    rng = np.random.default_rng(11)
    w = (rng.standard_normal((12, 10)) * 0.05).astype(np.float32)
    w[3] = 0
    conv = (rng.standard_normal((6, 3, 3, 3)) * 0.1).astype(np.float32)
    small = {"fc.weight": w, "fc.bias": (rng.standard_normal(12) * 0.02).astype(np.float32)}
    block = {
        "conv.weight": conv,
        "conv.bias": (rng.standard_normal(6) * 0.02).astype(np.float32),
        "bn.weight": (1 + rng.standard_normal(6) * 0.1).astype(np.float32),
        "bn.bias": (rng.standard_normal(6) * 0.1).astype(np.float32),
        "bn.running_mean": (rng.standard_normal(6) * 0.1).astype(np.float32),
        "bn.running_var": (1 + rng.random(6)).astype(np.float32),
    }
    blocks = {
        "conv": {
            "weight": "conv.weight",
            "bias": "conv.bias",
            "bn.gamma": "bn.weight",
            "bn.beta": "bn.bias",
            "bn.mean": "bn.running_mean",
            "bn.var": "bn.running_var",
        }
    }
    ints = {"counts": rng.integers(-1000, 1000, size=(5, 7)).astype(np.int32)}
    out = [
        nnc_core.encode(small),
        nnc_core.encode(small, use_dq=False, qp=-30),
        nnc_core.encode(small, codebook_mode=1),
        nnc_core.encode(small, raw_float=["fc.bias"]),
        nnc_core.encode(small, row_skipping=True, scan_order=1),
        nnc_core.encode(small, scan_order=2, cabac_unary_length_minus1=3, param_opt=False),
        nnc_core.encode(small, max_part_elements=40, aggregate=True),
        nnc_core.encode(ints),
        nnc_core.encode({**ints, **small}, int_quant_bw=8),
    ]
    try:
        out.append(nnc_core.encode(block, blocks=blocks))
    except nnc_core.NncError as e:  # the seeds do not depend on one API detail
        print(f"make_seeds: block stream skipped: {e}", file=sys.stderr)
    return out


def python_seeds() -> dict[str, bytes]:
    streams = vector_streams() + encoded_streams()
    rng = np.random.default_rng(7)
    streams += [structured_stream(rng)[0] for _ in range(2)]
    for s in vector_streams()[:12:3]:  # conformance units after the MPS inside one aggregate unit
        units = unit_bytes(s)
        if len(units) > 3:
            streams.append(b"".join(units[:2]) + aggregate_unit(units[2:]))
    return {hashlib.sha1(s).hexdigest()[:16] + ".nnr": s for s in streams}


def _header(height: int, width: int, scan: int, gt: int, flags: int, extra: int) -> bytes:
    """The 6 parameter bytes of one tensor (inverse of parse_params in fuzz_deepcabac.c)."""
    shape = (height - 1) | (width - 1) << 7
    return bytes([shape & 0xFF, shape >> 8, scan, gt - 1, flags, extra])


def c_seeds() -> dict[str, bytes]:
    rng = np.random.default_rng(5)
    seeds = {}
    cases = []
    for scan in range(5):
        for dq in (0, 1):
            for gt in (1, 4, 11):
                cases.append(dict(scan=scan, dq=dq, gt=gt, profile=scan % 2, row_skip=gt == 4, cb=0, qp=dq))
    cases += [
        dict(scan=0, dq=0, gt=11, profile=1, row_skip=False, cb=1, qp=1),
        dict(scan=1, dq=0, gt=2, profile=0, row_skip=True, cb=1, qp=0),
    ]
    for i, c in enumerate(cases):
        height, width = (int(x) for x in rng.integers(1, 40, size=2))
        levels = rng.laplace(0, 2.0, size=(height, width)).round().astype(np.int32)
        levels[rng.random(height) < 0.3] = 0
        extra = 0
        cb_size = cb_zero = 0
        if c["cb"]:
            extra = 63 | (2 << 6)  # 64 entries, zero at 32
            cb_size, cb_zero = 64, 32
            levels = np.clip(levels, -cb_zero, cb_size - 1 - cb_zero)
        flags = c["dq"] | c["profile"] << 1 | c["row_skip"] << 4 | 1 << 5 | (1 << 6 if c["cb"] else 0)
        if c["qp"]:
            flags |= 1 << 7
            extra = (extra & ~7) | 2  # 8 bypass bins
        coding = TensorCoding(
            dq_flag=bool(c["dq"]),
            scan_order=c["scan"],
            cabac_unary_length_minus1=c["gt"] - 1,
            general_profile_idc=c["profile"],
            row_skip_flag=c["row_skip"],
            codebook_size=cb_size,
            codebook_zero_offset=cb_zero,
            dq_any_index=bool(c["dq"]),
        )
        with Encoder() as enc:
            if c["qp"]:
                enc.encode_bypass(37, 6 + (extra & 7))
            enc.encode_tensor(levels, coding)
            payload = enc.finish()
        head = _header(height, width, c["scan"], c["gt"], flags, extra)
        mode = 0  # one tensor, no base, no history, decode
        second = head[:5] + bytes([(head[5] & ~0x0F) | mode])
        seeds[f"dec{i:03d}"] = head + second + payload
        # round trip: the same parameters, levels from the payload bytes
        seeds[f"rt{i:03d}"] = head + second[:5] + bytes([(head[5] & ~0x0F) | 8 | (i & 7)]) + payload
    return seeds


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "fuzz" / "build" / "corpus")
    for name, seeds in (("python", python_seeds()), ("c", c_seeds())):
        d = out / name
        d.mkdir(parents=True, exist_ok=True)
        for fname, data in seeds.items():
            (d / fname).write_bytes(data)
        print(f"{len(seeds)} seeds in {d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
