"""nnc_core: ISO/IEC 15938-17:2024 Neural Network Coding (NNC/NNR).

Imports no machine-learning framework; framework support comes from plugins.
"""

from nnc_core.api import decode, encode, encode_to, iter_decode, open
from nnc_core.config import EncoderConfig
from nnc_core.decoding import DecoderState
from nnc_core.errors import (
    BaseMismatchError,
    BitstreamError,
    CoderStateError,
    ConfigError,
    EncodeError,
    NncError,
    NncMemoryError,
    QuantizationOverflowError,
)
from nnc_core.incremental import UpdateDecoder, UpdateEncoder
from nnc_core.reader import NNRReader, TensorInfo
from nnc_core.version import __version__

__all__ = [
    "__version__",
    "encode",
    "encode_to",
    "EncoderConfig",
    "decode",
    "iter_decode",
    "open",
    "NNRReader",
    "TensorInfo",
    "DecoderState",
    "UpdateEncoder",
    "UpdateDecoder",
    "NncError",
    "ConfigError",
    "EncodeError",
    "QuantizationOverflowError",
    "BitstreamError",
    "BaseMismatchError",
    "NncMemoryError",
    "CoderStateError",
]
