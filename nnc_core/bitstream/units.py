"""NNR units and their high-level syntax (ISO/IEC 15938-17 clause 7.3/7.4):
the public surface of :mod:`nnc_core.bitstream`, gathered from

* :mod:`~nnc_core.bitstream.syntax`: unit records, enums, the parse state;
* :mod:`~nnc_core.bitstream.reader`: :func:`read_units`, :func:`flatten_units`;
* :mod:`~nnc_core.bitstream.writer`: :func:`write_unit`, :func:`aggregate_unit`, ...
"""

from nnc_core.bitstream.reader import flatten_units, read_units
from nnc_core.bitstream.syntax import (
    ICNN_NDU_ID,
    ICNN_NDU_PL_SHA256,
    ICNN_NDU_PL_SHA512,
    AggregateUnit,
    AggregateUnitType,
    CompressedDataUnit,
    EntryPoint,
    IntegerCodebook,
    LayerParameterSet,
    ModelParameterSet,
    NduHeader,
    ParameterTypes,
    ParseState,
    PayloadType,
    QuantizationUnit,
    StartUnit,
    TensorDimensionMapping,
    TopologyStorageFormat,
    TopologyUnit,
    Unit,
    UnitType,
    block_rows_minus1,
    coded_rows,
    dimension_mapping_problem,
    quantization_base,
)
from nnc_core.bitstream.writer import (
    aggregate_unit,
    write_integer_codebook,
    write_unit,
    write_units,
)

__all__ = [
    "UnitType",
    "AggregateUnitType",
    "PayloadType",
    "ParameterTypes",
    "TopologyStorageFormat",
    "ICNN_NDU_ID",
    "ICNN_NDU_PL_SHA256",
    "ICNN_NDU_PL_SHA512",
    "Unit",
    "StartUnit",
    "ModelParameterSet",
    "LayerParameterSet",
    "TopologyUnit",
    "QuantizationUnit",
    "IntegerCodebook",
    "EntryPoint",
    "NduHeader",
    "CompressedDataUnit",
    "AggregateUnit",
    "TensorDimensionMapping",
    "ParseState",
    "quantization_base",
    "block_rows_minus1",
    "coded_rows",
    "dimension_mapping_problem",
    "read_units",
    "flatten_units",
    "write_unit",
    "write_units",
    "aggregate_unit",
    "write_integer_codebook",
]
