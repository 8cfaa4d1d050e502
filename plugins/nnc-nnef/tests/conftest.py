"""A real pretrained model as an NNEF folder.

``nudenet`` 3.4.2 ships ``nudenet/320n.onnx`` (a YOLOv8n detector, 3.0 M
parameters).  The fixture fetches it like the core's pretrained weights
(``pip download --no-deps``, SHA-256 checked, cached) and converts it to
NNEF with nnef-tools, as a user with an ONNX model would.
"""

from __future__ import annotations

import numpy as np
import pytest

from nnc_core.testing import pretrained


@pytest.fixture(scope="session")
def nude_onnx():
    return pretrained.path("nudenet-320n")


@pytest.fixture(scope="session")
def nude_nnef(nude_onnx, tmp_path_factory):
    from nnc_nnef.convert import from_onnx

    folder = tmp_path_factory.mktemp("nnef") / "nudenet.nnef"
    from_onnx(nude_onnx, folder, example_inputs=(1, 3, 320, 320))
    return folder


@pytest.fixture(scope="session")
def image():
    return np.random.default_rng(7).random((1, 3, 320, 320), dtype=np.float32)


def run_nnef(folder, x, tmp_path):
    """Outputs of an NNEF folder: nnef-tools converts it to ONNX, onnxruntime runs it."""
    import onnxruntime as ort

    from nnc_nnef.convert import to_onnx

    onnx_file = tmp_path / f"{folder.name}.onnx"
    to_onnx(folder, onnx_file)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]
