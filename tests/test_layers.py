"""nnc_core's modules import each other in one direction only: every import of
a module of the package, at the top or inside a function, is an edge, and
the graph has no cycle (type-checking-only imports excepted).  The façade
(nnc_core.api) sits above the encoder, the decoder and incremental coding,
which never import it."""

from __future__ import annotations

import ast
from pathlib import Path

import nnc_core

PACKAGE = Path(nnc_core.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_only(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def _imports(path: Path, modules: set[str]) -> set[str]:
    tree = ast.parse(path.read_text())
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    this = _module_name(path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if _type_checking_only(node, parents):
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            # `from package import module` imports the module, not the package's __init__
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        out.update(n for n in names if n in modules and n != this)
    return out


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: _imports(path, set(files)) for name, path in files.items()}


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt) :] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_the_layers_below_the_facade_do_not_import_it():
    graph = _graph()
    below = [
        "nnc_core.encoding",
        "nnc_core.decoding",
        "nnc_core.incremental",
        "nnc_core.reader",
        "nnc_core.reduction",
        "nnc_core.bitstream.units",
        "nnc_core.deepcabac",
        "nnc_core.config",
        "nnc_core.parallel",
    ]
    for name in below:
        assert "nnc_core.api" not in graph[name], name
        assert "nnc_core.cli" not in graph[name] and "nnc_core.plugins" not in graph[name], name
    assert "nnc_core.api" in graph["nnc_core"]
