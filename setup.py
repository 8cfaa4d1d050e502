# The C extension is declared here because cffi_modules cannot be written in
# pyproject.toml (python-cffi/cffi#55); all metadata lives in pyproject.toml.
from setuptools import setup

setup(cffi_modules=["csrc/build_ffi.py:ffibuilder"])
