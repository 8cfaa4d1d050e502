"""The exception tree of nnc_core.

Every error the library raises on purpose derives from :class:`NncError`.
Where a builtin exception fits too, the class also derives from it, so
callers may catch either (``except ValueError`` still works for bad input).
"""

from __future__ import annotations

__all__ = [
    "NncError",
    "ConfigError",
    "EncodeError",
    "QuantizationOverflowError",
    "BitstreamError",
    "BaseMismatchError",
    "NncMemoryError",
    "CoderStateError",
    "ModelError",
    "PluginError",
    "FrameworkUnavailableError",
]


class NncError(Exception):
    """Root of all nnc_core errors; never raised directly."""


class ConfigError(NncError, ValueError):
    """Invalid coding parameters or arguments."""


class EncodeError(NncError, ValueError):
    """A value cannot be represented with the chosen coding parameters."""


class QuantizationOverflowError(EncodeError):
    """Quantized values would leave the int32 range at the chosen step size.

    The reference encoder then re-quantizes at a coarser QP; encoders catch
    this to do the same.
    """


class BitstreamError(NncError, ValueError):
    """A bitstream or payload is truncated, corrupt or inconsistent.

    ``unit_index`` and ``byte_offset`` locate the problem in the bitstream
    where known (``None`` otherwise); the message includes them.  Inside an
    aggregate unit (NNR_AGG), ``unit_index`` is the index of the aggregate
    unit in the bitstream and ``aggregated_index`` that of the unit inside it.
    ``tensor`` names the tensor (the first element id of the NDU) when the
    problem is in a compressed data unit; the message names it too.
    """

    def __init__(
        self,
        message: str,
        *,
        unit_index: int | None = None,
        byte_offset: int | None = None,
        aggregated_index: int | None = None,
        tensor: str | None = None,
    ):
        where = []
        if unit_index is not None:
            where.append(f"unit {unit_index}")
        if aggregated_index is not None:
            where.append(f"aggregated unit {aggregated_index}")
        if tensor is not None and repr(tensor) not in message:
            where.append(f"tensor {tensor!r}")
        if byte_offset is not None:
            where.append(f"byte offset {byte_offset}")
        super().__init__(f"{message} ({', '.join(where)})" if where else message)
        self.detail = message
        self.unit_index = unit_index
        self.aggregated_index = aggregated_index
        self.byte_offset = byte_offset
        self.tensor = tensor


class BaseMismatchError(BitstreamError):
    """An incremental update does not belong to the base model it is decoded
    against (its ``base_model_id`` or its NDUs' parent references say so)."""


class NncMemoryError(NncError, MemoryError):
    """The C coder could not allocate memory."""


class CoderStateError(NncError, RuntimeError):
    """A coder object was used out of order or from two threads at once."""


class ModelError(NncError, ValueError):
    """A framework model cannot be mapped to NNR or written back.

    The message names the file, layer or tensor (unsupported layer or dtype,
    missing weight, mismatched shape, corrupt file).
    """


class PluginError(NncError):
    """A plugin is broken, duplicated, or no plugin handles a model or file."""


class FrameworkUnavailableError(PluginError, ImportError):
    """The framework a plugin needs is not installed or fails to import."""
