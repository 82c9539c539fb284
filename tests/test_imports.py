"""The runtime must never import torch: it runs on boards where torch is absent."""

import subprocess
import sys

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
