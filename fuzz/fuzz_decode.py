"""atheris harness of the whole Python decode path (unit parser, stream
structure, DeepCABAC through the C extension, reconstruction).

Each input is an NNR bitstream.  It is decoded twice: on its own, and as an
incremental update after the first step of the conformance vector
v30_incr_tca_hdsp (so that TCA and HDSP payloads find a parent).  The only
acceptable outcomes are a result or :class:`nnc_core.BitstreamError` that
names its unit and byte offset; any other exception is a finding.  The
decoder's resource bound applies (see nnc_core.decoding), so a hostile
header cannot make a run allocate without limit.

Run (see fuzz/README.md):
    python fuzz/fuzz_decode.py fuzz/build/corpus/python -atheris_runs=20000
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import atheris

with atheris.instrument_imports():
    import nnc_core
    from nnc_core.bitstream import bits, layout, reader, syntax  # noqa: F401  (instrumented)
    from nnc_core.decoding import DecoderState, decode_bitstream

_V30 = Path(__file__).resolve().parent.parent / "tests" / "vectors" / "v30_incr_tca_hdsp" / "step0.nnr"
_STATE = DecoderState()
decode_bitstream(_V30.read_bytes(), _STATE)


def _check(e: nnc_core.BitstreamError) -> None:
    if e.unit_index is None or e.byte_offset is None:
        raise AssertionError(f"BitstreamError without a location: {e}") from e


def TestOneInput(data: bytes) -> None:
    try:
        decode_bitstream(data)
    except nnc_core.BitstreamError as e:
        _check(e)
    try:
        decode_bitstream(data, copy.deepcopy(_STATE))
    except nnc_core.BitstreamError as e:
        _check(e)


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
