"""walkcut runtime: numpy, scipy, OpenCV and onnxruntime only; never torch."""

from walkcut.runtime.cuts import CutResult, Hierarchy, HierarchyNode, cut_affinity, cut_transition_matrix
from walkcut.runtime.graph import affinity, stationary_distribution

__all__ = [
    "CutResult",
    "Hierarchy",
    "HierarchyNode",
    "affinity",
    "cut_affinity",
    "cut_transition_matrix",
    "stationary_distribution",
]
