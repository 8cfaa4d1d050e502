"""Failure leaves nothing behind (issue #7 item 4): every command that writes a
file (`nnc encode`, `nnc decode`) writes it atomically; a failed, interrupted
or killed run leaves the previous file intact and no temporary file."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from nnc_core.cli import main

VECTORS = Path(__file__).parent / "vectors"
STREAM = VECTORS / "v11_block_conv_bn" / "stream.nnr"


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _tensors(tmp_path: Path) -> Path:
    src = tmp_path / "in.npz"
    np.savez(src, w=np.linspace(-1, 1, 60, dtype=np.float32).reshape(6, 10), n=np.arange(5, dtype=np.int32))
    return src


def test_new_outputs_get_the_umask_permissions(tmp_path):
    src = _tensors(tmp_path)
    assert main(["encode", str(src), "-o", str(tmp_path / "m.nnr"), "-q"]) == 0
    assert main(["decode", str(tmp_path / "m.nnr"), "-o", str(tmp_path / "m.npz"), "-q"]) == 0
    for name in ("m.nnr", "m.npz"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~_umask()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.npz", "m.nnr", "m.npz"]


def test_replaced_outputs_keep_their_permissions(tmp_path):
    src = _tensors(tmp_path)
    out = tmp_path / "m.nnr"
    out.write_bytes(b"old")
    out.chmod(0o640)
    assert main(["encode", str(src), "-o", str(out), "-q"]) == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o640
    assert out.read_bytes()[:2] != b"ol" and len(out.read_bytes()) > 20


def test_failed_encode_leaves_previous_output_intact(tmp_path, capsys):
    src = tmp_path / "bad.npz"
    np.savez(src, w=np.array([1 + 2j, 3j], dtype=np.complex64))
    out = tmp_path / "m.nnr"
    out.write_bytes(b"previous")
    assert main(["encode", str(src), "-o", str(out), "-q"]) == 1
    assert "nnc encode: error: " in capsys.readouterr().err
    assert out.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.npz", "m.nnr"]


def test_output_into_a_directory_fails_cleanly(tmp_path, capsys):
    (tmp_path / "m.npz").mkdir()
    assert main(["decode", str(STREAM), "-o", str(tmp_path / "m.npz"), "-q"]) == 1
    assert "nnc decode: error: " in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"] and not any((tmp_path / "m.npz").iterdir())


# A child process runs the real command with one library call slowed down, so
# that a signal arrives in the middle of the write (the .npz writer, after part
# of the archive is written) or after it (the fsync before the rename).
_CHILD = textwrap.dedent(
    """
    import os, signal, sys, time
    import numpy as np
    import nnc_core.cli as cli

    where, argv = sys.argv[1], sys.argv[2:]
    # as in a foreground terminal: a test run started in the background (a
    # CI runner, `tox &`) passes SIGINT on ignored, and Python keeps it so
    signal.signal(signal.SIGINT, signal.default_int_handler)

    def pause():
        print("ready", flush=True)
        time.sleep(600)  # ended by the signal; long enough for a loaded machine (sanitizers)

    if where == "savez":
        import nnc_core.plugins.npz as npz

        def write_npz(f, arrays, **options):
            f.write(b"PK partial archive")
            f.flush()
            pause()
        npz.write_npz = write_npz
    else:
        def fsync(fd):
            pause()
        os.fsync = fsync
    sys.exit(cli.main(argv))
    """
)


def _interrupt(tmp_path: Path, where: str, argv: list[str], sig: int) -> int:
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, where, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,  # not the source tree, which would shadow the installed package
    )
    try:
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(sig)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode


@pytest.mark.parametrize(
    "sig, code",
    [
        (signal.SIGTERM, 128 + signal.SIGTERM),
        (signal.SIGINT, 130),
        (signal.SIGHUP, 128 + signal.SIGHUP),
        (signal.SIGKILL, -signal.SIGKILL),
    ],
    ids=["SIGTERM", "SIGINT", "SIGHUP", "SIGKILL"],
)
@pytest.mark.parametrize("where", ["savez", "fsync"])
def test_interrupted_decode_leaves_previous_output_intact(tmp_path, sig, code, where):
    out = tmp_path / "model.npz"
    out.write_bytes(b"previous")
    assert _interrupt(tmp_path, where, ["decode", str(STREAM), "-o", str(out)], sig) == code
    assert out.read_bytes() == b"previous"
    # nothing else, not even after SIGKILL: the file being written had no name yet
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]


@pytest.mark.parametrize(
    "sig, code", [(signal.SIGTERM, 128 + signal.SIGTERM), (signal.SIGKILL, -signal.SIGKILL)], ids=["SIGTERM", "SIGKILL"]
)
def test_interrupted_encode_leaves_previous_output_intact(tmp_path, sig, code):
    src = _tensors(tmp_path)
    out = tmp_path / "m.nnr"
    out.write_bytes(b"previous")
    assert _interrupt(tmp_path, "fsync", ["encode", str(src), "-o", str(out)], sig) == code
    assert out.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.npz", "m.nnr"]


def test_fallback_without_unnamed_files_cleans_up(tmp_path, monkeypatch):
    """Where O_TMPFILE is missing, a hidden .part file is used and removed on failure."""
    import nnc_core.files as files

    monkeypatch.setattr(files, "_unnamed_file", lambda directory, mode: None)
    out = tmp_path / "m.npz"
    out.write_bytes(b"previous")
    seen = []

    def failing(f):
        f.write(b"partial")
        seen.extend(p.name for p in tmp_path.iterdir())
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        files.write_atomically(out, failing)
    assert len(seen) == 2 and any(n.startswith(".m.npz.") and n.endswith(".part") for n in seen)
    assert out.read_bytes() == b"previous" and [p.name for p in tmp_path.iterdir()] == ["m.npz"]
    files.write_atomically(out, lambda f: f.write(b"new"))
    assert out.read_bytes() == b"new" and [p.name for p in tmp_path.iterdir()] == ["m.npz"]
