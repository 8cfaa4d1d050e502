"""The part of the conversion matrix (benchmarks/conversion_matrix.py, the
whole of it: ``tox -e matrix``) that CI runs: the corpus models not covered by
the other cross tests (ONNX files exported from Keras/TensorFlow, a model
converted only after the preparation rewrote an operator), each cell checking
what the matrix checks (lossless outputs within the converters' error; default
settings: destination weights equal to the NNR-decoded ones, outputs within the
model's tolerance), and a failing cell naming its converter's limit."""

from __future__ import annotations

import re
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
    # Silero VAD: sample rate fixed, Ifs on shapes folded (onnxsim), LSTM unrolled, for each converter:
    ("silero-vad", "pytorch"),  # reflect Pad of a 2-D tensor as a 4-D one (torch pads 3- to 5-D tensors)
    ("silero-vad", "tensorflow"),  # 1-D Conv as 2-D, Gather from the state as Slice (onnx2keras)
    ("silero-vad", "nnef"),  # nnef-tools' own LSTM swaps the forget and output gates
    ("ppocr-v2-rec", "nnef"),  # two bidirectional LSTMs over 80 steps, their weights folded by onnxsim
]


@pytest.mark.parametrize(("name", "target"), CELLS)
def test_cell_converts_and_matches(name, target, tmp_path):
    cell = conversion_matrix.cell(name, target, tmp_path)
    assert cell.ok, cell.text
    assert " carried, " in cell.text


def test_cell_that_fails_names_the_converter_and_why(tmp_path):
    """magika's one-hot encoding compares with Equal, which onnx2keras has no
    converter for, and which no exact rewrite into its operators exists for."""
    cell = conversion_matrix.cell("magika", "tensorflow", tmp_path)
    assert not cell.ok
    assert cell.text.startswith("✗ convert (lossless): ModelError:")
    assert "onnx2keras 0.0.25 has no converter for Equal" in cell.text and "no rewrite known" in cell.text


def test_cell_over_the_tolerance_tells_the_codec_error(tmp_path):
    """basic-pitch converts to PyTorch and matches losslessly (its reflect Pad
    taken as a 4-D one), but at the default settings NNR moves its note
    probabilities by more than 5 %: the cell measures the source itself with the
    decoded weights in onnxruntime, and finds the same error (the codec's, not
    the conversion's)."""
    cell = conversion_matrix.cell("basic-pitch", "pytorch", tmp_path)
    assert not cell.ok
    found = re.match(
        r"✗ run the destination: AssertionError: default-settings output differs by ([0-9.e-]+) \(relative\), "
        r"over 0.05; the source itself with its NNR-decoded weights differs by ([0-9.e-]+) \(the codec's error",
        cell.text,
    )
    assert found, cell.text
    assert float(found[1]) > 0.05 and found[1] == found[2]


def test_table_written_between_the_markers(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(f"# title\n\n{conversion_matrix.BEGIN}\nold\n{conversion_matrix.END}\n\nafter\n")
    conversion_matrix.write(page, "| a |\n|---|")
    assert page.read_text() == f"# title\n\n{conversion_matrix.BEGIN}\n| a |\n|---|\n{conversion_matrix.END}\n\nafter\n"
