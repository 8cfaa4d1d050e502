"""The part of the conversion matrix (benchmarks/conversion_matrix.py, the
whole of it: ``tox -e matrix``) that CI runs: the corpus models not covered by
the other cross tests (ONNX files exported from Keras/TensorFlow, a model
converted only after the preparation rewrote an operator), each cell checking
what the matrix checks (lossless outputs within the converters' error; default
settings: destination weights equal to the NNR-decoded ones, outputs within the
model's tolerance), and a failing cell naming its converter's limit."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import conversion_matrix  # noqa: E402

CELLS = [
    ("dnsmos", "pytorch"),  # keras2onnx export (onnx2torch)
    ("dnsmos", "nnef"),  # nnef-tools
    ("magika", "pytorch"),  # tf2onnx export; GlobalMaxPool rewritten as ReduceMax for onnx2torch
    ("ppocr-cls", "nnef"),  # PaddlePaddle export; HardSigmoid rewritten for nnef-tools
    ("ppocr-rec", "pytorch"),  # PaddlePaddle export of PP-OCRv4's recognizer: attention blocks (onnx2torch)
]


@pytest.mark.parametrize(("name", "target"), CELLS)
def test_cell_converts_and_matches(name, target, tmp_path):
    cell = conversion_matrix.cell(name, target, tmp_path)
    assert cell.ok, cell.text
    assert " carried, " in cell.text


def test_cell_that_fails_names_the_converter_and_why(tmp_path):
    """basic-pitch's reflect padding of a 3-D tensor along a non-last axis:
    onnx2torch converts it, torch cannot run it (a limit of torch's padding)."""
    cell = conversion_matrix.cell("basic-pitch", "pytorch", tmp_path)
    assert not cell.ok
    assert cell.text.startswith("✗ convert (lossless): ModelError:")
    assert "torch.jit.trace of the converted module failed" in cell.text and "reflect padding" in cell.text


def test_table_written_between_the_markers(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(f"# title\n\n{conversion_matrix.BEGIN}\nold\n{conversion_matrix.END}\n\nafter\n")
    conversion_matrix.write(page, "| a |\n|---|")
    assert page.read_text() == f"# title\n\n{conversion_matrix.BEGIN}\n| a |\n|---|\n{conversion_matrix.END}\n\nafter\n"
