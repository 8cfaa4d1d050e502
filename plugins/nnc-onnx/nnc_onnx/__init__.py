"""ONNX plugin of nnc-core: ISO/IEC 15938-17 Annex B (NNR_TPL_ONNX).

The entry point (``nnc_onnx.plugin``) imports no onnx; the adapter
(``nnc_onnx.adapter``) does, and is imported only when an ONNX model is read
or written.
"""

__version__ = "0.1.0"
