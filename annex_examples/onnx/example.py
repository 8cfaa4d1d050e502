"""Annex B (ONNX) of ISO/IEC 15938-17, end to end on a small graph.

What it shows:
* NNR tensor names are the ONNX tensor names (initializers, Constant outputs),
  which is how the bitstream references the ONNX graph;
* NNR_PT_BLOCK blocks come from the graph: Conv weight + bias, and the
  BatchNormalization the Conv feeds (here through a Relu);
* the NNR_TPL unit signals NNR_TPL_ONNX and carries the ModelProto with every
  coded tensor reduced to a stub, so the .nnr file alone rebuilds the .onnx;
* the rebuilt model passes onnx.checker and onnxruntime gives the same outputs.

Run: python annex_examples/onnx/example.py   (needs nnc-core, nnc-onnx, onnxruntime)
"""

import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from nnc_core.bitstream.units import TopologyStorageFormat
from nnc_core.model import decode_model, encode_model
from nnc_core.plugins import read_model, write_model

rng = np.random.default_rng(0)
weights = {
    "conv.weight": rng.normal(size=(8, 3, 3, 3)),
    "conv.bias": rng.normal(size=8),
    "bn.scale": rng.uniform(0.5, 2, 8),
    "bn.bias": rng.normal(size=8),
    "bn.mean": rng.normal(size=8),
    "bn.var": rng.uniform(0.5, 2, 8),
}
graph = helper.make_graph(
    [
        helper.make_node("Conv", ["x", "conv.weight", "conv.bias"], ["c"]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("BatchNormalization", ["r", "bn.scale", "bn.bias", "bn.mean", "bn.var"], ["y"]),
    ],
    "annex_b",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 6, 6])],
    [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in weights.items()],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])

nnr = read_model(model)
print("tensors (ONNX names):", list(nnr.tensors))
print("blocks from the graph:", nnr.blocks)
assert nnr.topology.storage_format == TopologyStorageFormat.NNR_TPL_ONNX

# Lossless: every tensor sent as raw float (lossy: drop raw_float, set qp).
bitstream = encode_model(nnr, raw_float=list(nnr.tensors))
print(f"bitstream: {len(bitstream)} bytes (graph included)")

with tempfile.TemporaryDirectory() as tmp:
    out = Path(tmp) / "restored.onnx"
    write_model(decode_model(bitstream), out)  # no template: the graph comes from the NNR_TPL unit
    onnx.checker.check_model(str(out), full_check=True)
    x = {"x": rng.normal(size=(1, 3, 8, 8)).astype(np.float32)}
    a = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, x)[0]
    b = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, x)[0]
print("outputs identical:", bool(np.array_equal(a, b)))
