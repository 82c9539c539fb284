"""Imports: the runtime never imports torch (it runs on boards where torch is absent), and the
package's module graph has no cycle."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import importlib, pkgutil, sys

class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch.") or name in ("diffusers", "transformers"):
            raise ImportError(f"blocked import of {name} in the runtime")
        return None

sys.meta_path.insert(0, Block())
import walkcut.runtime as rt
names = [m.name for m in pkgutil.walk_packages(rt.__path__, "walkcut.runtime.")]
for name in names:
    importlib.import_module(name)
import walkcut.cli as cli
cli.build_parser()
from walkcut import EngineSource, PixelSource, Segmenter, cut_transition_matrix, read_image  # noqa: F401  # registers every subcommand, walkcut export included
assert "torch" not in sys.modules
print(len(names))
"""


def test_runtime_imports_without_torch():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip()) >= 18  # every runtime module, sub-packages included, was imported


def test_no_top_level_export_or_runtime_package(tmp_path):
    """Installed, the folders exist only as walkcut.export / walkcut.runtime (run outside the repo
    so the checkout itself is not on sys.path)."""
    code = (
        "import importlib.util as u, walkcut.runtime, walkcut.export; "
        "print(u.find_spec('runtime') is None, u.find_spec('export') is None, walkcut.runtime.__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True", "walkcut.runtime"]


def test_nothing_below_the_command_line_imports_it():
    """The CLI is the top floor: the library (runtime, batch, eval, inputs) never imports walkcut.cli."""
    code = r"""
import importlib, importlib.util, pkgutil, sys
import walkcut.runtime, walkcut.eval, walkcut.batch
names = ["walkcut.inputs"]
for pkg in (walkcut.runtime, walkcut.eval, walkcut.batch):
    names += [m.name for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + ".")]
for name in names:
    if name.startswith("walkcut.batch.") and not all(importlib.util.find_spec(m) for m in ("ray", "pyarrow")):
        continue  # the ray extra is not installed: batch's Ray modules cannot load here
    importlib.import_module(name)
import walkcut
for name in walkcut.__all__:
    getattr(walkcut, name)
leaked = sorted(m for m in sys.modules if m == "walkcut.cli" or m.startswith("walkcut.cli."))
print(leaked)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# --- The module import graph of the package is acyclic -----------------------------------------------


def package_folders() -> dict[str, Path]:
    """``{import name: folder}`` from pyproject's ``package-dir`` (runtime/ is walkcut.runtime, ...)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    return {name: REPO / folder for name, folder in config["package-dir"].items()}


def package_modules() -> dict[str, Path]:
    """``{module name: file}`` of every module of the package (a package is its ``__init__``)."""
    roots = package_folders()
    modules = {}
    for pkg, folder in roots.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join([pkg, *parts])] = path
    return modules


def imported_modules(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Package modules that ``name`` imports anywhere in its file (inside functions too): for
    ``from a.b import c`` the module ``a.b.c`` if it is one, else ``a.b``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets += [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
    out = set()
    for target in targets:
        while target and target not in modules:  # walkcut.runtime.cuts.graph.affinity -> ...graph
            target = target.rpartition(".")[0]
        if target and target != name:
            out.add(target)
    return out


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of nodes (first == last), or ``None``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in sorted(graph):
        if root in state:
            continue
        path, stack = [root], [iter(sorted(graph[root]))]
        state[root] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph[nxt])))
    return None


def test_find_cycle_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": {"b"}}) == ["b", "c", "b"]


def test_package_import_graph_is_acyclic():
    """Imports run one way: no module of walkcut imports, directly or through others, a module that
    imports it back, not even from inside a function (a lazy import hides a loop; it does not remove it)."""
    modules = package_modules()
    graph = {name: imported_modules(name, path, modules) for name, path in modules.items()}
    # The graph is real: the runtime's sub-packages are found under their install names, and imports
    # inside functions count (walkcut.cli.bench imports the reference cut inside a function).
    assert {"walkcut.runtime.cuts.hierarchy", "walkcut.runtime.sources.pixels", "walkcut.cli"} <= set(graph)
    assert "walkcut.runtime.cuts.nodes" in graph["walkcut.runtime.cuts.hierarchy"]
    assert "walkcut.eval.reference" in graph["walkcut.cli.bench"]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_cut_modules_import_one_way():
    """The cuts' layers (runtime/cuts/__init__.py): each module imports only modules listed before it."""
    order = ["counts", "krylov", "stationary", "sweep", "graph", "spectral", "sparse", "nodes", "hierarchy"]
    modules = package_modules()
    prefix = "walkcut.runtime.cuts."
    assert sorted(n[len(prefix):] for n in modules if n.startswith(prefix)) == sorted(order)
    for i, short in enumerate(order):
        name = prefix + short
        inside = {m[len(prefix):] for m in imported_modules(name, modules[name], modules) if m.startswith(prefix)}
        assert inside <= set(order[:i]), f"{short} imports {sorted(inside - set(order[:i]))}"


def test_one_import_style():
    """Package modules import each other by absolute ``walkcut.`` names, never relatively: the folders
    are importable only through the install's folder-to-package mapping, so a relative import would
    only serve loading a folder by path, which the package does not support."""
    relative = []
    for name, path in package_modules().items():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and node.level:
                relative.append(f"{name}:{node.lineno}")
    assert relative == []
