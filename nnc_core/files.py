"""Writing outputs atomically: a failed or interrupted run leaves the previous
file (or folder) as it was and no partial output behind.

Everything is written to a temporary sibling of the destination (same
directory, so the final rename never crosses file systems) and renamed over
the destination only once complete.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = ["write_atomically", "atomic_path"]


def write_atomically(path: str | os.PathLike[str], write: Callable[[BinaryIO], object]) -> None:
    """Write ``path`` as a whole or not at all.

    The content goes to a file in the target's directory that has no name
    (Linux O_TMPFILE; elsewhere a hidden ``.NAME.*.part`` file, removed on
    any failure), is flushed to disk, then takes the place of ``path`` in one
    rename: a reader sees the old file or the new one, never a part, and a
    failed, interrupted or killed run leaves the old file as it was (a killed
    run leaves no file at all, or with the fallback a hidden ``.part`` file).
    The new file gets the old one's permissions, or the umask's for a new one.
    """
    path = Path(path).resolve()
    directory = path.parent
    mode = _file_mode(path)
    tmp: str | None = None
    fd = _unnamed_file(directory, mode)
    if fd is None:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
            if tmp is None:  # give the unnamed file a name only now, for the rename
                tmp = _link_unnamed(f.fileno(), directory, path.name)
        os.replace(tmp, path)
        tmp = None
        _fsync_directory(directory)
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass


def _file_mode(path: Path) -> int:
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        umask = os.umask(0o022)
        os.umask(umask)
        return 0o666 & ~umask


def _unnamed_file(directory: Path, mode: int) -> int | None:
    """A descriptor of a new unnamed file in ``directory``, or None where unsupported."""
    flag = getattr(os, "O_TMPFILE", None)
    if flag is None or not os.path.isdir("/proc/self/fd"):
        return None
    try:
        return os.open(directory, flag | os.O_WRONLY, mode)
    except OSError:  # file system without O_TMPFILE
        return None


def _link_unnamed(fd: int, directory: Path, name: str) -> str:
    # linkat(AT_SYMLINK_FOLLOW) of /proc/self/fd/N names an O_TMPFILE file; a
    # plain link() would link the magic symlink itself (EXDEV)
    proc = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY)
    try:
        while True:
            tmp = os.path.join(directory, f".{name}.{secrets.token_hex(6)}.part")
            try:
                os.link(str(fd), tmp, src_dir_fd=proc, follow_symlinks=True)
                return tmp
            except FileExistsError:
                continue
    finally:
        os.close(proc)


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable (POSIX; a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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
    # A suffix-less destination (a SavedModel folder) gets a temporary name without a suffix either.
    if path.suffix:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".part{path.suffix}", dir=parent)
    else:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}_", suffix="_part", dir=parent)
    os.close(fd)
    tmp = Path(name)
    if directory:
        tmp.unlink()
    try:
        yield tmp
        if tmp.is_file():  # mkstemp creates 0600: the old file's mode, or the umask's for a new one
            os.chmod(tmp, _file_mode(path))
        _replace(tmp, path)
        _fsync_directory(parent)
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
