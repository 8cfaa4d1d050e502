"""NNCodec 2.1.3's high-level-syntax coder (``nncodec.nnc_core.hls``) used on
its own: a unit written from a dict of syntax elements, and a unit parsed into
one.  Its encoder leaves out syntax it does not implement (performance maps,
NNR_TPL_REFLIST, indexed references); its syntax coder writes and reads them."""

from __future__ import annotations

from typing import Any

from nnc_core.testing import reference


def hls() -> Any:  # the module nncodec.nnc_core.hls
    reference.nncodec_compression()  # the framework stubs, before NNCodec's codec core is imported
    from nncodec.nnc_core import hls as module  # type: ignore[import-not-found]  # NNCodec is installed only in the nncodec and bench environments

    return module


def _flt(writer: Any, n: int, x: Any) -> None:
    """NNCodec's ``BitWriter.flt`` with its conversion mended: the original calls
    ``np.float32(x, dtype='<f4')``, a TypeError with any numpy (its syntax writer
    cannot write a float); the bytes are those its reader reads, the
    little-endian IEEE-754 word, one u(8) each."""
    import numpy as np

    assert n == 32 and isinstance(x, np.float32)
    for byte in np.asarray(x, dtype="<f4").tobytes():
        writer.u(8, byte)


def write(fields: dict[str, Any], payload: bytes = b"") -> bytes:
    """One NNR unit as NNCodec's syntax writer serialises ``fields`` (then ``payload``)."""
    coder = hls()
    original, coder.BitWriter.flt = coder.BitWriter.flt, _flt
    try:
        data = coder.encode_nnr_unit_with_size_dummy(fields)
    finally:
        coder.BitWriter.flt = original
    data.extend(payload)
    data, _ = coder.update_nnr_unit_size(data)
    return bytes(data)


def parse(unit: bytes, state: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """The syntax elements of one NNR unit as NNCodec's syntax reader parses it,
    given the elements of earlier units it depends on (``state``), and the
    number of bytes it read (for an NDU: its header)."""
    fields = dict(state)
    *_, read = hls().decode_nnr_unit(bytearray(unit), fields)
    return fields, read
