# The C extension is declared here because cffi_modules cannot be written in
# pyproject.toml (python-cffi/cffi#55); all metadata lives in pyproject.toml.
import os

from setuptools import setup

# Builds with other compiler switches (csrc/build_ffi.py: sanitizers, the
# portable decoder, debug, -Werror) get their own build directory: setuptools would
# otherwise reuse the objects of the last build, whatever their switches.
variant = "-".join(
    name
    for name, on in (
        ("sanitize-" + os.environ.get("NNC_SANITIZE", "").replace(",", "-"), os.environ.get("NNC_SANITIZE")),
        ("noasm", os.environ.get("NNC_NO_ASM")),
        ("debug", os.environ.get("NNC_DEBUG")),
        ("werror", os.environ.get("NNC_WERROR")),
    )
    if on
)
setup(
    cffi_modules=["csrc/build_ffi.py:ffibuilder"],
    options={"build": {"build_base": os.path.join("build", variant)}} if variant else {},
)
