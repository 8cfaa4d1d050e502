"""PyTorch plugin of nnc-core: ISO/IEC 15938-17 Annex C (NNR_TPL_PYT).

The entry point (``nnc_pytorch.plugin``) imports no torch; the adapter
(``nnc_pytorch.adapter``) does, and is imported only when a PyTorch model is
read or written.
"""

__version__ = "0.1.0"
