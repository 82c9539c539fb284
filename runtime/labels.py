"""Small helpers on label maps shared by the runtime and the evaluation code."""

from __future__ import annotations

import numpy as np


def count_pairs(a: np.ndarray, b: np.ndarray, n_a: int, n_b: int) -> np.ndarray:
    """Contingency table of two label maps with labels ``0..n_a-1`` and ``0..n_b-1``.

    Parameters
    ----------
    a, b : array_like of int, same shape
        Label maps; every value of ``a`` lies in ``[0, n_a)`` and of ``b`` in ``[0, n_b)``.
    n_a, n_b : int
        Number of labels of each map.

    Returns
    -------
    table : ndarray of int64, shape (n_a, n_b)
        ``table[i, j]`` = number of positions where ``a == i`` and ``b == j``.

    Notes
    -----
    One ``bincount`` over the pair index ``i * n_b + j``: linear in the number of pixels, and it
    serves both the id tracker of the video pipeline (overlaps between frames) and the evaluation
    metrics (segments against ground truth), which compact arbitrary labels first.
    """
    pair = np.asarray(a).ravel().astype(np.int64) * n_b + np.asarray(b).ravel()
    return np.bincount(pair, minlength=n_a * n_b).reshape(n_a, n_b).astype(np.int64, copy=False)
