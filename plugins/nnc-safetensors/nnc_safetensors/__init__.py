"""safetensors plugin of nnc-core: ``.safetensors`` files and Hugging Face
model folders read and written without torch (see :mod:`nnc_safetensors.adapter`)."""

__all__ = ["__version__"]
__version__ = "0.1.0"
