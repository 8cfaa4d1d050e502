"""The plugin system: entry-point loading that survives broken plugins, the
allow-list, format detection, and encode/decode/convert through a plugin.

The plugins here are real distributions: a ``.dist-info`` folder with an
``entry_points.txt`` put on ``sys.path``, found by importlib.metadata exactly
as an installed plugin is.  Their "framework" is the standard library's
``json`` module, so the tests need no machine-learning framework.
"""

from __future__ import annotations

import ast
import inspect
import re
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

import nnc_core
from nnc_core.cli import main
from nnc_core.convert import convert, match_tensors
from nnc_core.errors import FrameworkUnavailableError, ModelError, PluginError
from nnc_core.model import NNRModel
from nnc_core.plugins import NncSpecs, PluginManager, PluginWarning, get_plugin_manager
from nnc_core.plugins.hookspecs import HOOK_API_VERSION

ROOT = Path(__file__).resolve().parents[1]

# A framework "fakefw": files *.fake are .npz archives whose names carry a
# "fw/" prefix and whose 2-D arrays are stored transposed (its "layout": the
# adapter transposes to NNR's output-channels-first layout and back).
FAKEFW = '''
from pathlib import Path
import numpy as np
from nnc_core.files import write_atomically
from nnc_core.model import NNRModel
from nnc_core.plugins import FrameworkPlugin, TopologyConverter, hookimpl

@hookimpl
def nnc_frameworks():
    yield FrameworkPlugin(name="fakefw", adapter="fakefw_plugin:Adapter", framework="json",
                          suffixes=(".fake",), annex="-", description="test framework")

@hookimpl
def nnc_topology_converters():
    yield TopologyConverter("numpy", "fakefw", "fakefw_plugin:from_npz")

def _store(tensors, path):
    stored = {"fw/" + k: (v.T if v.ndim == 2 else v) for k, v in tensors.items()}
    write_atomically(path, lambda f: np.savez(f, **stored))

CALLS = []  # example_inputs each conversion got

def from_npz(source, destination, *, example_inputs=None):
    CALLS.append(example_inputs)
    with np.load(source) as a:
        tensors = {k.upper(): a[k] for k in a.files}
    if "CONV" in tensors:  # a tensor the converter derives, as folding a batch norm does
        tensors["DERIVED"] = tensors["CONV"][:, :1] * np.float32(3)
    _store(tensors, destination)

class Adapter:
    def can_read(self, source):
        return str(source).endswith(".fake")
    def read(self, source):
        with np.load(str(source)) as a:
            tensors = {k[3:]: (a[k].T if a[k].ndim == 2 else a[k]) for k in a.files}
        return NNRModel(tensors)
    def write(self, model, destination, *, template=None):
        _store(model.tensors, destination)
    def embed(self, bitstream, destination, *, template=None):
        Path(destination).write_bytes(bitstream)
    def extract(self, source):
        return Path(source).read_bytes()
'''


def _distribution(root: Path, dist: str, entry_points: dict[str, str], modules: dict[str, str]) -> None:
    info = root / f"{dist.replace('-', '_')}-0.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.3\n")
    lines = "\n".join(f"{name} = {target}" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[nnc]\n{lines}\n")
    for name, source in modules.items():
        (root / f"{name}.py").write_text(textwrap.dedent(source))


@pytest.fixture
def plugin_path(tmp_path, monkeypatch):
    """A folder on sys.path for fake plugin distributions; a fresh manager after."""
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    get_plugin_manager.cache_clear()
    yield root
    get_plugin_manager.cache_clear()
    for name in [m for m in sys.modules if m.endswith("_plugin")]:
        del sys.modules[name]


@pytest.fixture
def fakefw(plugin_path):
    _distribution(plugin_path, "nnc-fakefw", {"fakefw": "fakefw_plugin"}, {"fakefw_plugin": FAKEFW})
    return plugin_path


def test_builtin_numpy_plugin_is_listed(capsys):
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert re.search(
        r"^numpy\s+nnc-core\s+" + re.escape(nnc_core.__version__) + r"\s+-\s+numpy \S+\s+\.npz\s+ok$", out, re.M
    )


def test_entry_point_plugin_is_loaded_listed_and_used(fakefw, tmp_path, capsys):
    assert main(["plugins", "--check"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^fakefw\s+nnc-fakefw\s+0\.3\s+-\s+json \S+\s+\.fake\s+ok$", out, re.M), out

    weights = {"dense": np.arange(12, dtype=np.float32).reshape(3, 4) / 8, "bias": np.arange(3, dtype=np.float32) / 4}
    from fakefw_plugin import _store

    source = tmp_path / "model.fake"
    _store(weights, source)
    nnr, back = tmp_path / "model.nnr", tmp_path / "back.fake"
    assert main(["encode", str(source), "-o", str(nnr), "-q"]) == 0
    assert main(["decode", str(nnr), "-o", str(back), "-q"]) == 0
    assert nnc_core.decode(nnr.read_bytes()).keys() == {"dense", "bias"}
    with np.load(back) as a:  # written back in the framework's layout
        assert a["fw/dense"].shape == (4, 3)
        assert a["fw/dense"].T.tobytes() == nnc_core.decode(nnr.read_bytes())["dense"].tobytes()


def test_broken_plugin_warns_and_the_host_goes_on(plugin_path, tmp_path, capsys):
    _distribution(
        plugin_path, "nnc-broken", {"broken": "broken_plugin"}, {"broken_plugin": "import not_a_module_xyz\n"}
    )
    with pytest.warns(
        PluginWarning, match=r"nnc plugin 'broken' from nnc-broken 0\.3: failed to load: ModuleNotFoundError"
    ):
        statuses = get_plugin_manager().status()
    states = {s.name: s.state for s in statuses}
    assert states["numpy"] == "ok"
    assert states["broken"].startswith("failed to load: ModuleNotFoundError: No module named 'not_a_module_xyz'")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginWarning)
        npz = tmp_path / "m.npz"
        np.savez(npz, w=np.ones((2, 2), np.float32))
        assert main(["encode", str(npz), "-o", str(tmp_path / "m.nnr"), "-q"]) == 0


def test_missing_framework_and_bad_records(plugin_path):
    _distribution(
        plugin_path,
        "nnc-odd",
        {"odd": "odd_plugin"},
        {
            "odd_plugin": """
            from nnc_core.plugins import FrameworkPlugin, hookimpl
            @hookimpl
            def nnc_frameworks():
                yield FrameworkPlugin(name="ghost", adapter="ghost:A", framework="not_installed_fw_xyz", suffixes=(".ghost",))
                yield FrameworkPlugin(name="numpy", adapter="x:Y", framework="json")
                yield FrameworkPlugin(name="future", adapter="x:Y", framework="json", hook_api=99)
            """
        },
    )
    pm = get_plugin_manager()
    with pytest.warns(PluginWarning) as caught:
        statuses = {s.name: s.state for s in pm.status()}
    messages = [str(w.message) for w in caught]
    assert any("duplicate framework name 'numpy', also declared by nnc-core" in m for m in messages)
    assert any(f"needs hook API 99, this nnc-core has {HOOK_API_VERSION}" in m for m in messages)
    assert statuses["ghost"] == "framework 'not_installed_fw_xyz' not installed"
    assert "future" in statuses and statuses["future"].startswith("needs hook API 99")
    with pytest.raises(FrameworkUnavailableError, match="plugin 'ghost' needs the 'not_installed_fw_xyz' module") as e:
        pm.adapter("ghost")
    assert isinstance(e.value, ImportError)
    assert pm.frameworks()["numpy"].adapter == "nnc_core.plugins.npz:NpzAdapter"  # the built-in one stays


def test_allow_list_loads_only_named_plugins(fakefw, monkeypatch):
    monkeypatch.setenv("NNC_LOAD_PLUGINS", "")
    assert set(PluginManager().frameworks()) == set()  # not loaded: frameworks() needs load_plugins
    pm = PluginManager()
    pm.load_plugins()
    assert set(pm.frameworks()) == {"numpy"}
    monkeypatch.setenv("NNC_LOAD_PLUGINS", "fakefw")
    pm = PluginManager()
    pm.load_plugins()
    assert set(pm.frameworks()) == {"numpy", "fakefw"}


def test_unknown_format_is_a_clear_error(fakefw, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("NNC_LOAD_PLUGINS", "fakefw")  # whatever else is installed (a TensorFlow plugin reads .h5)
    model = tmp_path / "model.h5"
    model.write_bytes(b"not a model")
    assert main(["encode", str(model), "-o", str(tmp_path / "x.nnr")]) == 1
    err = capsys.readouterr().err
    assert "nnc encode: error: no installed plugin reads .h5 files" in err
    assert "installed plugins: numpy (.npz), fakefw (.fake)" in err
    assert not (tmp_path / "x.nnr").exists()
    with pytest.raises(PluginError, match=r"no installed plugin writes \.h5 outputs"):
        get_plugin_manager().plugin_for_destination(model)
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ModelError, match="corrupt.npz: not a readable .npz archive"):
        nnc_core.plugins.read_model(corrupt)


# A framework whose models are folders: NAME's adapter writes a folder
# holding "written-by" (its name) beside the arrays.
FOLDERFW = '''
from pathlib import Path
import numpy as np
from nnc_core.plugins import FrameworkPlugin, hookimpl

@hookimpl
def nnc_frameworks():
    yield FrameworkPlugin(name="NAME", adapter="NAME_plugin:Adapter", framework="json", directories=True,
                          topology_format=TOPOLOGY, annex="-", description="folder framework")

class Adapter:
    def can_read(self, source):
        return (Path(source) / "written-by").is_file()
    def read(self, source):
        raise NotImplementedError
    def write(self, model, destination, *, template=None):
        Path(destination).mkdir()
        (Path(destination) / "written-by").write_text("NAME")
    def embed(self, bitstream, destination, *, template=None):
        raise NotImplementedError
    def extract(self, source):
        return None
'''


TOPOLOGY_FOLDA = 200  # an unassigned topology_storage_format value


def test_folder_destination_goes_to_the_models_own_framework_or_is_refused(plugin_path, tmp_path, monkeypatch):
    from nnc_core.model import Topology, decode_model, encode_model
    from nnc_core.plugins import write_model

    # only these fake plugins: installed framework plugins (TensorFlow, NNEF) write folders too
    monkeypatch.setenv("NNC_LOAD_PLUGINS", "folda")
    folda = FOLDERFW.replace("NAME", "folda").replace("TOPOLOGY", str(TOPOLOGY_FOLDA))
    _distribution(plugin_path, "nnc-folda", {"folda": "folda_plugin"}, {"folda_plugin": folda})
    weights = {"w": np.ones((2, 2), np.float32)}
    write_model(NNRModel(weights), tmp_path / "only")  # the one folder plugin installed
    assert (tmp_path / "only" / "written-by").read_text() == "folda"

    monkeypatch.setenv("NNC_LOAD_PLUGINS", "folda,foldb")
    get_plugin_manager.cache_clear()
    _distribution(
        plugin_path,
        "nnc-foldb",
        {"foldb": "foldb_plugin"},
        {"foldb_plugin": FOLDERFW.replace("NAME", "foldb").replace("TOPOLOGY", "201")},
    )
    write_model(NNRModel(weights, framework="foldb"), tmp_path / "own")
    assert (tmp_path / "own" / "written-by").read_text() == "foldb"
    # a topology of format NNR_TPL_UNREC (0, every plugin's default) names no plugin
    write_model(NNRModel(weights, framework="foldb", topology=Topology()), tmp_path / "unrec")
    assert (tmp_path / "unrec" / "written-by").read_text() == "foldb"
    decoded = decode_model(encode_model(NNRModel(weights, topology=Topology(TOPOLOGY_FOLDA, b"graph"))))
    write_model(decoded, tmp_path / "carried")  # the plugin whose topology the bitstream carries
    assert (tmp_path / "carried" / "written-by").read_text() == "folda"
    with pytest.raises(PluginError, match=r"guess: several plugins write model folders \(folda, foldb\): name one"):
        write_model(NNRModel(weights), tmp_path / "guess")
    assert not (tmp_path / "guess").exists()
    write_model(NNRModel(weights), tmp_path / "named", framework="folda")
    assert (tmp_path / "named" / "written-by").read_text() == "folda"


def test_convert_carries_the_nnr_decoded_weights(fakefw, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("NNC_LOAD_PLUGINS", "fakefw")  # the converter list below is fakefw's alone
    rng = np.random.default_rng(5)
    weights = {"conv": rng.normal(size=(6, 5)).astype(np.float32), "bias": rng.normal(size=6).astype(np.float32)}
    source, destination = tmp_path / "model.npz", tmp_path / "model.fake"
    np.savez(source, **weights)
    assert main(["convert", str(source), "-o", str(destination), "--qp", "-30"]) == 0
    assert "model.npz (numpy) -> " in capsys.readouterr().err
    expected = nnc_core.decode(nnc_core.encode(weights, qp=-30))
    with np.load(destination) as a:
        # the converter renamed (CONV) and transposed; the weights are the NNR-decoded ones
        assert sorted(a.files) == ["fw/BIAS", "fw/CONV", "fw/DERIVED"]
        assert a["fw/CONV"].T.tobytes() == expected["conv"].tobytes()
        # the converter ran on the source rewritten with the decoded weights
        assert a["fw/DERIVED"].T.tobytes() == (expected["conv"][:, :1] * np.float32(3)).tobytes()
        assert a["fw/BIAS"].tobytes() == expected["bias"].tobytes()
        assert a["fw/CONV"].T.tobytes() != weights["conv"].tobytes()  # lossy: really carried
    report = convert(source, tmp_path / "again.fake", qp=-30)
    assert report.matched == {"CONV": "conv", "BIAS": "bias"} and report.unmatched == ["DERIVED"]
    assert report.from_decoded
    with pytest.raises(
        PluginError, match=r"no topology converter from fakefw to numpy is installed \(available: [^)]*numpy->fakefw"
    ):
        convert(destination, tmp_path / "x.npz")
    assert not (tmp_path / "x.npz").exists()


def test_convert_input_shape_only_for_conversions_from_onnx(fakefw, tmp_path, monkeypatch, capsys):
    """--input-shape goes to the first converter; only ONNX's converters to
    NNEF, TensorFlow and PyTorch take a shape (others would take it for input tensors)."""
    monkeypatch.setenv("NNC_LOAD_PLUGINS", "fakefw")
    source = tmp_path / "model.npz"
    np.savez(source, w=np.ones((2, 2), np.float32))
    assert main(["convert", str(source), "-o", str(tmp_path / "m.fake"), "--input-shape", "1,2"]) == 1
    assert capsys.readouterr().err == (
        "nnc convert: error: --input-shape applies to conversions from ONNX to NNEF, "
        "TensorFlow or PyTorch, not numpy -> fakefw\n"
    )
    assert not (tmp_path / "m.fake").exists()


def test_convert_matches_tensors_in_the_source_dtypes(fakefw, tmp_path, monkeypatch):
    """NNR decodes float32; a float64 source is rewritten, converted and
    matched in float64 (the report used to find no tensor)."""
    monkeypatch.setenv("NNC_LOAD_PLUGINS", "fakefw")
    rng = np.random.default_rng(7)
    weights = {"conv": rng.normal(size=(6, 5)), "bias": rng.normal(size=6)}
    source = tmp_path / "model.npz"
    np.savez(source, **weights)
    report = convert(source, tmp_path / "model.fake", qp=-30)
    assert report.from_decoded and report.matched == {"CONV": "conv", "BIAS": "bias"}
    expected = nnc_core.decode(nnc_core.encode(weights, qp=-30))
    with np.load(tmp_path / "model.fake") as a:
        assert a["fw/CONV"].dtype == np.float64
        assert a["fw/CONV"].T.tobytes() == expected["conv"].astype(np.float64).tobytes()


def test_convert_applies_local_scaling_and_unprunes(fakefw, tmp_path, monkeypatch):
    """The converters get the whole model back: local scaling factors applied
    (not left as extra <w>_scaling tensors the source format cannot hold) and
    pruned tensors at their full shapes."""
    monkeypatch.setenv("NNC_LOAD_PLUGINS", "fakefw")
    rng = np.random.default_rng(8)
    weights = {"conv": rng.normal(size=(6, 5)).astype(np.float32), "bias": rng.normal(size=6).astype(np.float32)}
    source = tmp_path / "model.npz"
    np.savez(source, **weights)
    report = convert(source, tmp_path / "model.fake", local_scaling=True)
    assert report.matched == {"CONV": "conv", "BIAS": "bias"}
    expected = nnc_core.decode(nnc_core.encode(weights, local_scaling=True), apply_local_scaling=True)
    with np.load(tmp_path / "model.fake") as a:
        assert sorted(a.files) == ["fw/BIAS", "fw/CONV", "fw/DERIVED"]
        assert a["fw/CONV"].T.tobytes() == expected["conv"].tobytes()
    convert(source, tmp_path / "pruned.fake", prune={"conv": 0.5})
    expected = nnc_core.decode(nnc_core.encode(weights, prune={"conv": 0.5}), unprune=True)
    with np.load(tmp_path / "pruned.fake") as a:
        assert a["fw/CONV"].shape == (5, 6) and a["fw/CONV"].T.tobytes() == expected["conv"].tobytes()


def test_convert_refuses_missing_converter_modules_and_unknown_targets(plugin_path, tmp_path, monkeypatch):
    monkeypatch.setenv("NNC_LOAD_PLUGINS", "needy")  # the installed list below is needy's and the built-in one
    _distribution(
        plugin_path,
        "nnc-needy",
        {"needy": "needy_plugin"},
        {
            "needy_plugin": """
            from nnc_core.plugins import FrameworkPlugin, TopologyConverter, hookimpl
            @hookimpl
            def nnc_frameworks():
                yield FrameworkPlugin(name="needy", adapter="nnc_core.plugins.npz:NpzAdapter", framework="json",
                                      suffixes=(".needy",))
            @hookimpl
            def nnc_topology_converters():
                yield TopologyConverter("numpy", "needy", "needy_plugin:nothing", requires=("json", "not_installed_conv_xyz"))
            """
        },
    )
    source = tmp_path / "m.npz"
    np.savez(source, w=np.ones((2, 3), np.float32))
    with pytest.raises(
        FrameworkUnavailableError, match=r"the numpy -> needy converter needs not_installed_conv_xyz, not installed"
    ):
        convert(source, tmp_path / "m.needy")
    with pytest.raises(PluginError, match=r"no framework plugin named 'nope'; installed: needy, numpy"):
        convert(source, tmp_path / "m.x", target="nope")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz", "site"]


CHAINFW = """
import numpy as np
from nnc_core.files import write_atomically
from nnc_core.model import NNRModel
from nnc_core.plugins import FrameworkPlugin, TopologyConverter, hookimpl

@hookimpl
def nnc_frameworks():
    yield FrameworkPlugin(name="chainfw", adapter="chainfw_plugin:Adapter", framework="json", suffixes=(".chain",))

@hookimpl
def nnc_topology_converters():
    yield TopologyConverter("fakefw", "chainfw", "chainfw_plugin:from_fake")
    yield TopologyConverter("chainfw", "numpy", "chainfw_plugin:nothing", requires=("not_installed_conv_xyz",))

CALLS = []  # example_inputs each conversion got

def from_fake(source, destination, *, example_inputs=None):
    CALLS.append(example_inputs)
    with np.load(str(source)) as a:  # fakefw's file: names "fw/NAME", 2-D arrays transposed
        stored = {"c" + k[3:].lower(): a[k] for k in a.files}
    write_atomically(destination, lambda f: np.savez(f, **stored))

class Adapter:
    def can_read(self, source):
        return str(source).endswith(".chain")
    def read(self, source):
        with np.load(str(source)) as a:
            return NNRModel({k: (a[k].T if a[k].ndim == 2 else a[k]) for k in a.files})
    def write(self, model, destination, *, template=None):
        stored = {k: (v.T if v.ndim == 2 else v) for k, v in model.tensors.items()}
        write_atomically(destination, lambda f: np.savez(f, **stored))
"""


def test_convert_chains_converters_through_an_intermediate_framework(fakefw, tmp_path, capsys, monkeypatch):
    _distribution(fakefw, "nnc-chainfw", {"chainfw": "chainfw_plugin"}, {"chainfw_plugin": CHAINFW})
    monkeypatch.setenv("NNC_LOAD_PLUGINS", "fakefw,chainfw")
    rng = np.random.default_rng(6)
    weights = {"conv": rng.normal(size=(6, 5)).astype(np.float32), "bias": rng.normal(size=6).astype(np.float32)}
    source, destination = tmp_path / "model.npz", tmp_path / "model.chain"
    np.savez(source, **weights)
    assert main(["convert", str(source), "-o", str(destination), "--qp", "-30"]) == 0
    assert f"model.npz (numpy) -> {destination} (chainfw via fakefw): " in capsys.readouterr().err
    expected = nnc_core.decode(nnc_core.encode(weights, qp=-30))
    with np.load(destination) as a:  # numpy -> fakefw -> chainfw renamed twice; the NNR-decoded weights arrived
        assert sorted(a.files) == ["cbias", "cconv", "cderived"]
        assert a["cconv"].T.tobytes() == expected["conv"].tobytes() != weights["conv"].tobytes()
        assert a["cbias"].tobytes() == expected["bias"].tobytes()
        assert a["cderived"].T.tobytes() == (expected["conv"][:, :1] * np.float32(3)).tobytes()  # first step's
    report = convert(source, tmp_path / "again.chain", qp=-30, example_inputs=(1, 5))
    assert report.route == ["numpy", "fakefw", "chainfw"]
    import chainfw_plugin
    import fakefw_plugin

    assert fakefw_plugin.CALLS[-1] == (1, 5) and chainfw_plugin.CALLS[-1] is None  # the first step's alone
    assert report.matched == {"cconv": "conv", "cbias": "bias"} and report.unmatched == ["cderived"]
    assert convert(source, tmp_path / "one.fake").route == ["numpy", "fakefw"]
    with pytest.raises(FrameworkUnavailableError, match=r"the chainfw -> numpy converter needs not_installed_conv_xyz"):
        convert(tmp_path / "again.chain", tmp_path / "back.npz")
    assert not (tmp_path / "back.npz").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again.chain", "model.chain", "model.npz", "one.fake", "site"]


def test_match_tensors_prefers_names_then_content():
    a = np.arange(4, dtype=np.float32)
    source = NNRModel({"x": a, "y": a.copy(), "z": a * 2})
    destination = NNRModel({"y": a, "renamed": a * 2, "new": a * 3})
    assert match_tensors(source, destination) == {"y": "y", "renamed": "z"}


def test_core_imports_no_framework():
    code = (
        "import sys, nnc_core, nnc_core.plugins, nnc_core.convert, nnc_core.cli\n"
        "from nnc_core.plugins import get_plugin_manager\n"
        "pm = get_plugin_manager(); pm.status(); [pm.plugin_for_destination(f'x{s}') for r in pm.frameworks().values() for s in r.suffixes]\n"
        "print(sorted(m for m in ('torch', 'tensorflow', 'keras', 'onnx', 'onnxruntime', 'nnef', 'nnef_tools') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT / "tests")
    assert out.stdout.strip() == "[]"


def test_every_hook_is_documented_with_its_signature():
    readme = (ROOT / "docs" / "plugins.md").read_text()
    hooks = [name for name, _ in inspect.getmembers(NncSpecs, inspect.isfunction) if name.startswith("nnc_")]
    assert hooks == ["nnc_frameworks", "nnc_topology_converters"]
    for name in hooks:
        function = getattr(NncSpecs, name)
        assert ".. versionadded::" in (function.__doc__ or ""), name
        parameters = [p for p in inspect.signature(function).parameters if p != "self"]
        assert f"`{name}({', '.join(parameters)})`" in readme, f"docs/plugins.md documents {name}"


def test_atomic_outputs_keep_the_destination_suffix_and_get_umask_permissions(tmp_path):
    import os

    from nnc_core.files import atomic_path, write_atomically

    with atomic_path(tmp_path / "model.onnx") as staged:
        assert staged.name.startswith(".model.onnx.") and staged.suffix == ".onnx"  # formats chosen by suffix
        staged.write_bytes(b"x")
    umask = os.umask(0o027)
    try:
        write_atomically(tmp_path / "a.bin", lambda f: f.write(b"a"))
    finally:
        os.umask(umask)
    assert (tmp_path / "a.bin").stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "model.onnx"]


def test_performance_metric_in_the_model_parameter_set():
    from nnc_core import decode, encode
    from nnc_core.bitstream.units import ModelParameterSet, read_units
    from nnc_core.errors import ConfigError
    from nnc_core.metrics import metric_name, performance_metric

    tensors = {"w": np.arange(12, dtype=np.float32).reshape(3, 4) / 16}
    name = metric_name("Top-1-Accuracy", "ImageNet-val")
    assert name == "top-1-accuracy@imagenet-val"
    data = encode(tensors, performance_metric_type=name, validation_set_performance=0.7625)
    assert performance_metric(data) == (name, np.float32(0.7625).item())
    mps = next(u for u in read_units(data) if isinstance(u, ModelParameterSet))
    assert mps.validation_set_performance_present_flag and not mps.metric_type_performance_map_valid_flag
    np.testing.assert_array_equal(decode(data)["w"], decode(encode(tensors))["w"])
    assert len(data) == len(encode(tensors)) + len(name) + 1 + 4
    assert performance_metric(encode(tensors)) is None
    with pytest.raises(ConfigError, match="both or neither"):
        encode(tensors, validation_set_performance=0.5)
    with pytest.raises(ConfigError, match="unknown metric"):
        metric_name("goodness")
    with pytest.raises(ConfigError, match="qualifier"):
        metric_name("psnr", "a b")


def test_plugins_import_only_the_public_plugin_api():
    """The plugins in this repository import from the core only `nnc_core`
    (the codec) and `nnc_core.plugins` (the plugin API), so that the core's
    internals can change without breaking a plugin; test helpers
    (`nnc_core.testing`) are for their tests, not their packages."""
    root = Path(__file__).resolve().parents[1] / "plugins"
    found = []
    for path in sorted(root.glob("nnc-*/nnc_*/**/*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            modules = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            for module in modules:
                if module.startswith("nnc_core") and module not in ("nnc_core", "nnc_core.plugins"):
                    found.append(f"{path.relative_to(root)}:{node.lineno}: {module}")
    assert len(list(root.glob("nnc-*/nnc_*/plugin.py"))) >= 5
    assert not found, "\n".join(found)
