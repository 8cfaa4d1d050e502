"""The nnc command: info lists units and bits per parameter; decode writes an
.npz atomically and leaves nothing behind when it fails."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np

import nnc_core
from nnc_core.cli import main

VECTORS = Path(__file__).parent / "vectors"
BLOCK = VECTORS / "v11_block_conv_bn" / "stream.nnr"


def test_console_script_is_installed():
    exe = shutil.which("nnc")
    assert exe, "pip install . provides the nnc command"
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("nnc ")


def test_info_lists_units_and_tensors(capsys):
    assert main(["info", str(BLOCK)]) == 0
    out = capsys.readouterr().out
    assert "573 bytes, 4 units" in out
    assert "NNR_NDU         18       555  NNR_PT_BLOCK ids=conv.weight,bn.bias" in out
    assert "conv.weight                                      float32  8x3x3x3            -38     17.344" in out
    assert "256 parameters, 17.906 bits per parameter" in out


def test_decode_writes_the_reference_tensors(tmp_path):
    out = tmp_path / "model.npz"
    assert main(["decode", str(BLOCK), "-o", str(out), "-q"]) == 0
    with np.load(out) as archive:
        assert list(archive) == [
            "conv.bias",
            "bn.bias",
            "bn.weight",
            "bn.running_mean",
            "bn.running_var",
            "conv.weight",
        ]
        for name in archive:
            reference = np.load(VECTORS / "v11_block_conv_bn" / f"dec_{name}.npy")
            assert archive[name].tobytes() == reference.tobytes()
    assert list(tmp_path.iterdir()) == [out]  # no temporary file left


def test_failed_decode_leaves_previous_output_intact(tmp_path, capsys):
    truncated = tmp_path / "truncated.nnr"
    truncated.write_bytes(BLOCK.read_bytes()[:100])
    out = tmp_path / "model.npz"
    out.write_bytes(b"previous")
    assert main(["decode", str(truncated), "-o", str(out)]) == 1
    assert (
        "nnc decode: error: nnr_unit_size 555 runs past the end of the bitstream (82 bytes left) (unit 3, byte offset 18)"
        in capsys.readouterr().err
    )
    assert out.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz", "truncated.nnr"]


def test_info_shows_aggregated_units_nested(tmp_path, capsys):
    import numpy as np

    from nnc_core.bitstream.units import AggregateUnit, read_units
    from streams import structured_stream

    stream, expected = structured_stream(np.random.default_rng(3))
    path = tmp_path / "structured.nnr"
    path.write_bytes(stream)
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    units = read_units(stream)
    (index,) = [i for i, u in enumerate(units) if isinstance(u, AggregateUnit)]
    agg = units[index]
    assert f"{index:>4}  NNR_AGG  {agg.offset:>9} {agg.size:>9}  NNR_AGG_GEN units=3 entry_points" in out
    lps, ndu, ints = agg.units
    assert f"{index:>4}.0  NNR_LPS  {lps.offset:>7} {lps.size:>9}  qp_density=4 qp=-100" in out
    assert (
        f"{index:>4}.1  NNR_NDU  {ndu.offset:>7} {ndu.size:>9}  NNR_PT_FLOAT ids=fc.weight,fc.extra dims=5x9 concat_axis=1 split=6"
        in out
    )
    assert any(line.startswith("   3  NNR_NDU ") and "first_dim_shift=2 part=3 dq scan_order=1" in line for line in out)
    # a split tensor's bits per parameter count all its parts
    parts = [u for u in units if getattr(u, "partial_data_counter", None) and u.header.element_ids == ["conv.weight"]]
    bpp = 8 * sum(u.size for u in parts) / expected["conv.weight"][0].size
    assert any(line.startswith("conv.weight ") and line.endswith(f"{bpp:>10.3f}") for line in out)
    assert f"{'fc.weight':<48} float32  5x6" in "\n".join(out)


def test_info_piped_into_head_ends_quietly(tmp_path):
    """`nnc info big.nnr | head -1`: the reader closes the pipe early; no traceback, no error."""
    import subprocess
    import sys

    path = tmp_path / "many.nnr"
    path.write_bytes(nnc_core.encode({f"tensor.{i}": np.full(3, i, np.int32) for i in range(3000)}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "nnc_core.cli", "info", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
    )
    assert proc.stdout.readline().startswith(str(path).encode())
    proc.stdout.close()  # more than a pipe buffer of output is still to come
    err = proc.stderr.read()
    assert proc.wait() == 0 and err == b""


def test_ci_runs_the_readme_commands():
    """.ci/run is the README's install command and its test command, and nothing else."""
    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text()

    def block(heading: str) -> str:
        section = readme.split(f"\n## {heading}\n", 1)[1]
        return section.split("```sh\n", 1)[1].split("\n```", 1)[0].strip()

    lines = [ln for ln in (root / ".ci" / "run").read_text().splitlines() if ln and not ln.startswith("#")]
    assert lines == ["set -euo pipefail", 'cd "$(dirname "$0")/.."', block("Install"), block("Test")]


def test_readme_quickstart_runs(tmp_path, monkeypatch):
    """The README's Python quickstart, run as written on a small model."""
    root = Path(__file__).resolve().parent.parent
    section = (root / "README.md").read_text().split("\n## Quickstart\n", 1)[1]
    code = section.split("```python\n", 1)[1].split("\n```", 1)[0]
    rng = np.random.default_rng(3)
    weights = {
        "encoder.layer.0.attention.self.query.weight": rng.normal(0, 0.05, (32, 32)).astype(np.float32),
        "encoder.layer.0.attention.self.query.bias": rng.normal(0, 0.05, 32).astype(np.float32),
    }
    np.savez(tmp_path / "weights.npz", **weights)
    monkeypatch.chdir(tmp_path)
    scope = {"finetuned": {k: v + np.float32(0.01) for k, v in weights.items()}}
    exec(compile(code, "README.md quickstart", "exec"), scope)  # noqa: S102 - the documented code itself
    assert scope["w"].shape == (32, 32) and sorted(scope["restored"]) == sorted(weights)
    assert (tmp_path / "weights.nnr").stat().st_size > 0 and isinstance(scope["update"], bytes)
