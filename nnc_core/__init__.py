"""nnc_core: ISO/IEC 15938-17:2024 Neural Network Coding (NNC/NNR).

Imports no machine-learning framework; framework support comes from plugins.
"""

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

from nnc_core.decoding import DecoderState, decode, iter_decode
from nnc_core.encoding import encode, encode_to
from nnc_core.incremental import UpdateDecoder, UpdateEncoder
from nnc_core.reader import NNRReader, TensorInfo, open

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "encode",
    "encode_to",
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
