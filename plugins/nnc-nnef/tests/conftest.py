"""A real pretrained model as an NNEF folder.

``nudenet`` 3.4.2 ships ``nudenet/320n.onnx`` (a YOLOv8n detector, 3.0 M
parameters).  The fixture fetches it like the core's pretrained weights
(``pip download --no-deps``, SHA-256 checked, cached) and converts it to
NNEF with nnef-tools, as a user with an ONNX model would.
"""

from __future__ import annotations

from nnc_core.testing.fixtures import image, nude_nnef, nude_onnx  # noqa: F401
