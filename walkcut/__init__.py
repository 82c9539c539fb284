"""walkcut: training-free segmentation by random-walk Normalized Cuts.

The everyday names are re-exported here, lazily (importing ``walkcut`` loads nothing heavy and never
torch)::

    from walkcut import Segmenter, PixelSource, EngineSource, cut_transition_matrix, read_image

A source is described by a picklable spec with ``open()`` (``PixelSource`` is its own;
``EngineSpec`` names an exported model and its backend); ``source_spec(...)`` builds one from the
options the commands share, and ``GivenSource`` hands a transition computed elsewhere to a Segmenter.

Where things live (the folders map to these names through the install, ``pip install -e .``):

- :mod:`walkcut.runtime` (folder ``runtime/``): the lean runtime — the cuts (``cuts``: graphs, node
  solvers, the hierarchy), sources of the walk (``sources``), video (``video``), segmenter,
  upsampling, drawing, image I/O, and every default (``defaults``). Never torch.
- :mod:`walkcut.export` (folder ``export/``): the export stage (torch, diffusers, onnx; the ``export``
  extra): Stable Diffusion and DINOv2 backbones, and existing ONNX vision transformers.
- :mod:`walkcut.models` (folder ``models/``): the architecture JSON files, packaged data.
- :mod:`walkcut.eval`: metrics, dataset loaders and the evaluation loop.
- :mod:`walkcut.batch`: ``walkcut batch`` on Ray Data; :mod:`walkcut.inputs`: input expansion and
  output naming for many images.
- :mod:`walkcut.cli`: the ``walkcut`` command, one module per subcommand (nothing else imports it).
"""

from __future__ import annotations

import importlib

__version__ = "0.3.0"

#: Public name -> module that defines it.
_EXPORTS = {
    "Segmenter": "walkcut.runtime.segmenter",
    "Segmentation": "walkcut.runtime.segmenter",
    "PixelSource": "walkcut.runtime.sources.pixels",
    "Transition": "walkcut.runtime.sources.pixels",
    "EngineSource": "walkcut.runtime.sources.engine",
    "EngineSpec": "walkcut.runtime.sources.engine",
    "GivenSource": "walkcut.runtime.sources.given",
    "source_spec": "walkcut.runtime.sources.spec",
    "cut_transition_matrix": "walkcut.runtime.cuts.hierarchy",
    "cut_affinity": "walkcut.runtime.cuts.hierarchy",
    "CutResult": "walkcut.runtime.cuts.hierarchy",
    "Hierarchy": "walkcut.runtime.cuts.hierarchy",
    "read_image": "walkcut.runtime.imageio",
    "overlay": "walkcut.runtime.draw",
    "StreamSegmenter": "walkcut.stream",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'walkcut' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
