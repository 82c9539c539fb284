"""Temporally consistent segment ids: each frame's segments matched to the previous frame's.

Per-frame segmentation numbers its segments by the order of the cut hierarchy, which changes from
frame to frame, so a region's id (and colour) would flicker. :class:`IdTracker` renames the segments
of each new frame: it counts the pixels every (current segment, previous id) pair shares, solves the
assignment that maximises the total shared area (Hungarian method, scipy's
``linear_sum_assignment``), keeps a match only when it covers at least ``min_overlap`` of the
smaller of the two regions, and gives unmatched segments the smallest ids not in use in either
frame, so ids stay bounded on an endless stream.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment


def overlap_matrix(labels: np.ndarray, previous: np.ndarray, n_cur: int, n_prev: int) -> np.ndarray:
    """``(n_cur, n_prev)`` pixel counts shared by current segment i and previous id j."""
    from walkcut.runtime.labels import count_pairs  # the one contingency table (metrics use it too)

    return count_pairs(labels, previous, n_cur, n_prev)


class IdTracker:
    """Renames each frame's segments so a region keeps its id across frames.

    Parameters
    ----------
    min_overlap : float, default 0.2
        A match is kept when the shared area is at least this fraction of the smaller region.
    match_size : int, optional
        Longest side at which overlaps are counted (labels are subsampled with nearest neighbour);
        ``None`` counts at full resolution. The default 240 makes matching cost ~1 ms per frame.
    """

    def __init__(self, *, min_overlap: float = 0.2, match_size: int | None = 240) -> None:
        if not 0.0 <= min_overlap <= 1.0:
            raise ValueError(f"min_overlap must lie in [0, 1], got {min_overlap!r}")
        if match_size is not None and match_size < 1:
            raise ValueError(f"match_size must be a positive integer or None, got {match_size!r}")
        self.min_overlap = float(min_overlap)
        self.match_size = match_size
        self._previous: np.ndarray | None = None  # ids of the last frame, subsampled

    def reset(self) -> None:
        """Forget the previous frame (e.g. after a scene cut)."""
        self._previous = None

    def _subsample(self, labels: np.ndarray) -> np.ndarray:
        if self.match_size is None:
            return labels
        step = max(1, -(-max(labels.shape) // self.match_size))
        return labels[step // 2::step, step // 2::step]

    def update(self, labels: np.ndarray) -> np.ndarray:
        """Ids for the frame's ``labels`` ((H, W) ints 0..K-1), consistent with the previous frame.

        Returns
        -------
        (H, W) int64 ids; the first frame keeps its labels.
        """
        labels = np.asarray(labels)
        if labels.ndim != 2:
            raise ValueError(f"labels must be a 2-D map, got shape {labels.shape}")
        small = self._subsample(labels)
        n_cur = int(labels.max()) + 1 if labels.size else 0
        if self._previous is None or self._previous.shape != small.shape:
            mapping = np.arange(n_cur, dtype=np.int64)
        else:
            prev = self._previous
            n_prev = int(prev.max()) + 1
            overlap = overlap_matrix(small, prev, n_cur, n_prev)  # (n_cur, n_prev)
            size_cur = overlap.sum(axis=1)
            size_prev = overlap.sum(axis=0)
            rows, cols = linear_sum_assignment(overlap, maximize=True)
            mapping = np.full(n_cur, -1, dtype=np.int64)
            for i, j in zip(rows, cols):
                smaller = min(size_cur[i], size_prev[j])
                if smaller > 0 and overlap[i, j] >= self.min_overlap * smaller:
                    mapping[i] = j
            taken = set(mapping[mapping >= 0].tolist()) | set(np.flatnonzero(size_prev).tolist())
            free = (k for k in range(n_cur + n_prev + 1) if k not in taken)
            for i in np.flatnonzero(mapping < 0):
                mapping[i] = next(free)
        ids = mapping[labels]
        self._previous = self._subsample(ids)
        return ids


def change_fraction(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of pixels whose id differs between two frames' id maps."""
    if a.shape != b.shape:
        raise ValueError(f"id maps differ in shape: {a.shape} vs {b.shape}")
    return float(np.mean(a != b))
