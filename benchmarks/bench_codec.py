"""Whole-model benchmark: nnc_core.encode/decode against NNCodec 2.1.3's
compress/decompress on real pretrained models, side by side in one run.

Run it with::

    tox -e bench-codec                       # environment with NNCodec (see tox.ini)
    python benchmarks/bench_codec.py         # in any environment holding both

For each model and setting it reports the bitstream size, bits per parameter,
the SNR of the reconstruction over all float tensors, encode and decode wall
time of both implementations and their ratio, and whether the two bitstreams
are identical (they are for every setting both implement the same way).
``--repeat N`` reports the best of N rounds; ``--encode-repeat M`` gives the
encoders (most of the run time) M rounds instead.
Models come from PyPI wheels (see nnc_core.testing.pretrained).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import platform
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import nnc_core
from nnc_core.encoding import blocks_from_parameter_types
from nnc_core.testing import pretrained, reference

SETTINGS = {
    "defaults (DQ, qp -38)": {},
    "uniform, qp -38": {"use_dq": False},
    "DQ, qp -32, row skipping": {"qp": -32, "row_skipping": True},
    "DQ, scan 16x16 blocks": {"scan_order": 2},
    "DQ, RDO lambda 1": {"lambda_scale": 1.0},
    "uniform, int_quant_bw 8": {"int_quant_bw": 8, "use_dq": False},
    # layers as NNR_PT_BLOCK units, batch norm folded (CREPE only: MiniLM has no batch norm)
    "blocks + BN folding": {"blocks": True, "bnf": True},
}


def _arguments(model: str, tensors: dict[str, np.ndarray], setting: dict) -> tuple[dict, dict] | None:
    """(our encode() arguments, NNCodec's compress() arguments) of a setting, None if it does not apply."""
    ours, theirs = dict(setting), dict(setting)
    if ours.pop("blocks", False):
        if not model.startswith("crepe"):
            return None
        types = pretrained.crepe_block_types(tensors)
        ours["blocks"] = blocks_from_parameter_types(types["block_identifier"], types["parameter_type"])
        theirs.pop("blocks")
        theirs["block_id_and_param_type"] = types
    if ours.pop("bnf", False):
        ours["fold_batch_norm"] = True
    return ours, theirs


def _model(name: str) -> dict[str, np.ndarray]:
    tensors = pretrained.load(name)
    # integer tensors (position ids, BN counters) as int32, which both codecs code losslessly
    return {k: (v.astype(np.int32).reshape(-1) if v.dtype.kind == "i" else v) for k, v in tensors.items()}


def _snr(original: dict[str, np.ndarray], decoded: dict[str, np.ndarray]) -> float:
    """SNR over all float tensors; NaN when the stream carries other tensors
    (batch-norm folding replaces the BN tensors and changes the bias)."""
    if set(original) != set(decoded):
        return float("nan")
    signal = noise = 0.0
    for name, w in original.items():
        if w.dtype.kind != "f":
            continue
        d = np.asarray(decoded[name], dtype=np.float64)
        signal += float(np.sum(np.square(w.astype(np.float64))))
        noise += float(np.sum(np.square(w.astype(np.float64) - d)))
    return 10 * np.log10(signal / noise) if noise else float("inf")


def _best(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["minilm", "crepe-full"], choices=sorted(pretrained.MODELS))
    parser.add_argument("--repeat", type=int, default=1, help="timed rounds per measurement (best reported)")
    parser.add_argument(
        "--encode-repeat", type=int, default=None, help="timed rounds of the encoders (default: --repeat)"
    )
    parser.add_argument(
        "--settings",
        nargs="+",
        default=list(SETTINGS),
        choices=list(SETTINGS),
        metavar="SETTING",
        help="settings to run, by label (default: all), e.g. --settings 'DQ, RDO lambda 1'",
    )
    args = parser.parse_args()
    enc_repeat = args.repeat if args.encode_repeat is None else args.encode_repeat

    nnc = reference.nncodec_compression()
    print("## Whole-model coding: nnc_core vs NNCodec 2.1.3\n")
    print(f"- {platform.processor() or platform.machine()}, Python {platform.python_version()}, numpy {np.__version__}")
    print(
        f"- best of {enc_repeat} encoding and {args.repeat} decoding round(s); times in seconds; × = NNCodec time / ours\n"
    )
    print(
        "| model | setting | params | bytes | bits/param | SNR dB | identical | enc ours | enc NNCodec | enc × | dec ours | dec NNCodec | dec × |"
    )
    print("|---|---|--:|--:|--:|--:|:-:|--:|--:|--:|--:|--:|--:|")
    for model in args.models:
        tensors = _model(model)
        params = sum(v.size for v in tensors.values())
        for label, setting in SETTINGS.items():
            if label not in args.settings:
                continue
            arguments = _arguments(model, tensors, setting)
            if arguments is None:
                continue
            our_args, their_args = arguments
            # what is timed is bound when the callable is made (partials,
            # lambda defaults), not read from the loop's variables when called
            t_enc, ours = _best(functools.partial(nnc_core.encode, tensors, **our_args), enc_repeat)
            with contextlib.redirect_stdout(io.StringIO()):
                r_enc, theirs = _best(
                    lambda tensors=tensors, their_args=their_args: bytes(
                        nnc.compress(tensors, bitstream_path=None, return_bitstream=True, verbose=False, **their_args)
                    ),
                    enc_repeat,
                )
                r_dec, _ = _best(lambda theirs=theirs: nnc.decompress(bytearray(theirs)), args.repeat)
            t_dec, decoded = _best(functools.partial(nnc_core.decode, ours), args.repeat)
            print(
                f"| {model} | {label} | {params:,} | {len(ours):,} | {8 * len(ours) / params:.3f} | {_snr(tensors, decoded):.2f} "
                f"| {'yes' if ours == theirs else 'NO'} | {t_enc:.2f} | {r_enc:.2f} | {r_enc / t_enc:.2f} "
                f"| {t_dec:.2f} | {r_dec:.2f} | {r_dec / t_dec:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
