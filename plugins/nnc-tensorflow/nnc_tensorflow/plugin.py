"""Entry point of the TensorFlow/Keras plugin: declarations only, no TensorFlow import."""

from collections.abc import Iterator

from nnc_core.plugins import FrameworkPlugin, TopologyConverter, TopologyStorageFormat, hookimpl


@hookimpl
def nnc_frameworks() -> Iterator[FrameworkPlugin]:
    yield FrameworkPlugin(
        name="tensorflow",
        adapter="nnc_tensorflow.adapter:KerasAdapter",
        framework="tensorflow",
        framework_distribution="tensorflow-cpu",
        suffixes=(".keras", ".h5", ".hdf5"),
        object_types=("keras.src.models.model.Model",),
        topology_format=TopologyStorageFormat.NNR_TPL_TEF,
        annex="D",
        description="TensorFlow/Keras: .keras, legacy .h5, SavedModel folders, keras.Model",
        directories=True,
    )


@hookimpl
def nnc_topology_converters() -> Iterator[TopologyConverter]:
    yield TopologyConverter(
        "tensorflow",
        "onnx",
        "nnc_tensorflow.convert:to_onnx",
        requires=("tensorflow", "tf2onnx"),
        description="tf2onnx on a SavedModel export",
    )
    yield TopologyConverter(
        "tensorflow",
        "nnef",
        "nnc_tensorflow.convert:to_nnef",
        requires=("tensorflow", "tf2onnx", "nnef_tools"),
        description="tf2onnx, then nnef-tools ONNX -> NNEF",
    )
    yield TopologyConverter(
        "onnx",
        "tensorflow",
        "nnc_tensorflow.convert:from_onnx",
        requires=("onnx", "nnc_onnx", "onnxscript", "onnxsim", "onnx2keras", "tensorflow"),
        description="graph prepared (onnxscript), onnxsim, onnx2keras, saved as a SavedModel folder",
        explain="nnc_tensorflow.convert:explain_from_onnx",
    )
