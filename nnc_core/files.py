"""Writing outputs atomically: a failed or interrupted run leaves the previous
file (or folder) as it was and no partial output behind.

Everything is written to a temporary sibling of the destination (same
directory, so the final rename never crosses file systems) and renamed over
the destination only once complete.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = ["write_atomically", "atomic_path"]


def write_atomically(path: str | os.PathLike[str], write: Callable[[BinaryIO], object]) -> None:
    """Call ``write(f)`` on a temporary file, then rename it to ``path``."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s new content to.

    On normal exit the temporary file or folder replaces ``path``; on any
    exception (including KeyboardInterrupt) it is removed and ``path`` is
    untouched.  With ``directory=True`` the yielded path does not exist yet
    (frameworks that save folders create it themselves) and replaces an
    existing folder of the same name.
    """
    path = Path(path).resolve()
    parent = path.parent
    if not parent.is_dir():
        raise FileNotFoundError(f"output directory {parent} does not exist")
    # The temporary name ends in the destination's suffix (".x.onnx.1a2b.part.onnx"):
    # adapters and frameworks that pick the format from the suffix write the right one.
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".part{path.suffix}", dir=parent)
    os.close(fd)
    tmp = Path(name)
    if directory:
        tmp.unlink()
    try:
        yield tmp
        if tmp.is_file():  # mkstemp creates 0600; give the output the permissions a plain open() would
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        _replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def _replace(tmp: Path, path: Path) -> None:
    if tmp.is_dir() and path.is_dir():
        # os.replace cannot put a folder over a non-empty one: move the old
        # folder aside first, and back if the second rename fails.
        old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
        old.rmdir()
        os.replace(path, old)
        try:
            os.replace(tmp, path)
        except BaseException:
            os.replace(old, path)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)


def _remove(tmp: Path) -> None:
    if tmp.is_dir():
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
