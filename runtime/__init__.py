"""walkcut runtime: numpy, scipy, OpenCV and onnxruntime only; never torch.

- :mod:`walkcut.runtime.cuts`: the cuts (graphs, node solvers, the hierarchy).
- :mod:`walkcut.runtime.sources`: where the random walk comes from (pixel graph, exported engine).
- :mod:`walkcut.runtime.video`: video input/output, the pipelined run, id tracking.
- :mod:`walkcut.runtime.segmenter`, :mod:`~walkcut.runtime.upsample`, :mod:`~walkcut.runtime.draw`,
  :mod:`~walkcut.runtime.imageio`, :mod:`~walkcut.runtime.labels`: one image end to end.
- :mod:`walkcut.runtime.defaults`: every default and tuning constant, with its reason.
"""

from walkcut.runtime.cuts import (
    CutResult,
    Hierarchy,
    HierarchyNode,
    affinity,
    cut_affinity,
    cut_transition_matrix,
    stationary_distribution,
)

__all__ = [
    "CutResult",
    "Hierarchy",
    "HierarchyNode",
    "affinity",
    "cut_affinity",
    "cut_transition_matrix",
    "stationary_distribution",
]
