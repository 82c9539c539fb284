"""The cuts: graphs from a random walk, spectral bipartitions, the hierarchy and its stopping rules.

Imports run one way, from the bottom:

- :mod:`.counts`: load-independent work counts of a cut (bytes of dense matrices streamed per stage,
  in single float32 mat-vecs); every module below may report to it.
- :mod:`.krylov`: eigen-solvers of one node (dense ``eigh``, ARPACK, LOBPCG, full-reorthogonalisation
  Lanczos).
- :mod:`.stationary`: the stationary distribution of a walk (float64 reference; float32 Arnoldi for
  the fast method, which also returns the walk's second left Ritz vector, the root's start).
- :mod:`.sweep`: the exact one-pass NCut sweep along a vector (gathered and chunked).
- :mod:`.graph`: transition-matrix checks, ``walk`` / ``dot`` / ``cosine`` graphs (uses ``stationary``).
- :mod:`.spectral`: the reference Fiedler vector and bipartition (uses ``krylov``, ``sweep``).
- :mod:`.sparse`: shift-invert Lanczos on sparse graphs (uses ``krylov``).
- :mod:`.nodes`: the node-solver interface and its two implementations, ``reference`` and ``fast``
  (uses ``spectral``, ``sparse``, ``krylov``, ``sweep``).
- :mod:`.hierarchy`: the best-first binary tree, the stopping rules, ``cut_transition_matrix`` /
  ``cut_affinity`` (uses ``graph``, ``nodes``).

``method="fast" | "reference"`` picks the cut algorithm; "engine" means the exported model.
"""

from walkcut.runtime.cuts.graph import MODES, affinity, check_transition_matrix
from walkcut.runtime.cuts.hierarchy import (
    AUTO_RULES,
    CutResult,
    Hierarchy,
    HierarchyNode,
    cut_affinity,
    cut_transition_matrix,
)
from walkcut.runtime.cuts.nodes import FastNodeSolver, NodeSolver, ReferenceNodeSolver
from walkcut.runtime.cuts.stationary import stationary_distribution

__all__ = [
    "AUTO_RULES",
    "MODES",
    "CutResult",
    "FastNodeSolver",
    "Hierarchy",
    "HierarchyNode",
    "NodeSolver",
    "ReferenceNodeSolver",
    "affinity",
    "check_transition_matrix",
    "cut_affinity",
    "cut_transition_matrix",
    "stationary_distribution",
]
