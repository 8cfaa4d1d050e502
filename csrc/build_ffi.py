"""Build script of the cffi extension ``nnc_core._deepcabac`` (out-of-line API mode).

setuptools runs this file through ``cffi_modules`` in setup.py; it must not
import nnc_core.  Environment switches:

* ``NNC_WERROR=1``: treat compiler warnings as errors (CI builds).
* ``NNC_SANITIZE=address,undefined``: build with sanitizers (tox env ``sanitize``).
* ``NNC_DEBUG=1``: no optimisation, debug symbols.
* ``NNC_NO_ASM=1``: the decoder's portable C path instead of its x86-64
  inline assembly (``-DDEC_NO_ASM``; tox env ``sanitize`` builds it).
"""

import os
import sys
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
# setuptools passes paths relative to the project root
ROOT = HERE.parent


def _rel(path: Path) -> str:
    return os.path.relpath(path, ROOT) if Path.cwd() == ROOT else str(path)


def _msvc() -> bool:
    # the compiler setuptools picks on Windows (a MinGW build would take the GCC flags)
    return sys.platform == "win32" and "GCC" not in sys.version


def _compile_args() -> list[str]:
    if _msvc():
        # C11 for `static inline` and designated initializers; the C code's GCC
        # builtins and assembly are behind #if __GNUC__ with portable fallbacks
        args = ["/std:c11", "/O2", "/W3"]
        return [*args, "/WX"] if os.environ.get("NNC_WERROR") else args
    # -fno-wrapv: Python's own CFLAGS, which setuptools puts first, carry
    # -fwrapv; the C code has no signed overflow (the sanitize environment
    # checks), and wrapping semantics cost the decoder's loops 2-4 %.
    args = ["-std=c99", "-Wall", "-Wextra", "-Wno-unused-parameter", "-fno-wrapv"]
    if os.environ.get("NNC_DEBUG"):
        args += ["-O0", "-g"]
    else:
        args += ["-O3"]
    if os.environ.get("NNC_WERROR"):
        args.append("-Werror")
    sanitize = os.environ.get("NNC_SANITIZE")
    if sanitize:
        # every report is fatal, so that a test run cannot pass over one
        args += [f"-fsanitize={sanitize}", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", "-g"]
    return args


def _link_args() -> list[str]:
    if _msvc():
        return []
    sanitize = os.environ.get("NNC_SANITIZE")
    return [f"-fsanitize={sanitize}"] if sanitize else []


ffibuilder = FFI()
ffibuilder.cdef((HERE / "deepcabac.cdef.h").read_text())
ffibuilder.set_source(
    "nnc_core._deepcabac",
    (HERE / "deepcabac.csrc.c").read_text(),
    sources=[_rel(p) for p in sorted((HERE / "src").glob("*.c"))],
    include_dirs=[_rel(HERE / "include"), _rel(HERE / "src")],
    extra_compile_args=_compile_args(),
    extra_link_args=_link_args(),
    define_macros=[("_POSIX_C_SOURCE", "200809L")] + ([("DEC_NO_ASM", "1")] if os.environ.get("NNC_NO_ASM") else []),
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
