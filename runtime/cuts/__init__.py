"""The cut engine: graphs from a random walk, spectral bipartitions, the hierarchy and its stopping rules.

- :mod:`.graph`: transition-matrix checks, stationary distribution, ``walk`` / ``dot`` / ``cosine`` graphs.
- :mod:`.spectral`: Fiedler vectors and the exact one-pass NCut sweep.
- :mod:`.hierarchy`: the best-first binary tree, the stopping rules, ``cut_transition_matrix`` /
  ``cut_affinity``.
"""

from walkcut.runtime.cuts.graph import MODES, affinity, check_transition_matrix, stationary_distribution
from walkcut.runtime.cuts.hierarchy import (
    AUTO_RULES,
    CutResult,
    Hierarchy,
    HierarchyNode,
    cut_affinity,
    cut_transition_matrix,
)

__all__ = [
    "AUTO_RULES",
    "MODES",
    "CutResult",
    "Hierarchy",
    "HierarchyNode",
    "affinity",
    "check_transition_matrix",
    "cut_affinity",
    "cut_transition_matrix",
    "stationary_distribution",
]
