"""Load-independent work counts of a cut: bytes of dense matrices moved, per stage.

The cuts of a dense graph are memory-bound: their time is the bytes they stream through the
``n x n`` (float32) matrix and its node blocks. Wall times on a shared machine move with its load;
these counts do not. Inside :func:`counting` the cut functions report every pass over a dense
matrix or node block (:func:`tally`); outside it, :func:`tally` is a no-op.

Convention (bench/RESULTS.md, "Speed v3: cuts"): one unit is one single-thread float32 ``n x n``
mat-vec, i.e. ``4 n^2`` bytes read. A pass counts the bytes it reads plus the bytes it writes
(an in-place update of the whole matrix is two units); a product of an ``m x m`` block with ``k``
vectors counts ``k`` products, ``k (m / n)^2`` units, even when one pass over the block serves all
``k`` columns. Work on small vectors and on the (tiny) tridiagonal and Ritz problems is not
counted; sparse graphs report their factorisations and solves as calls, not bytes.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from contextvars import ContextVar

_ACTIVE: ContextVar[dict | None] = ContextVar("walkcut_cut_counts", default=None)


class Counts:
    """Bytes moved per stage (``bytes``) and events per stage (``calls``, e.g. products, solves)."""

    def __init__(self):
        self.bytes: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def units(self, n: int) -> dict[str, float]:
        """Bytes per stage in single float32 ``n x n`` mat-vecs (``4 n^2`` bytes each)."""
        return {stage: b / (4.0 * n * n) for stage, b in self.bytes.items()}

    def total_units(self, n: int) -> float:
        return sum(self.units(n).values())


@contextlib.contextmanager
def counting():
    """Count the work of the cuts run inside the block (this thread / task only)."""
    counts = Counts()
    token = _ACTIVE.set(counts)
    try:
        yield counts
    finally:
        _ACTIVE.reset(token)


def tally(stage: str, nbytes: float = 0.0, calls: int = 0) -> None:
    """Add ``nbytes`` of dense-matrix traffic (and ``calls`` events) to ``stage`` when counting."""
    counts = _ACTIVE.get()
    if counts is not None:
        counts.bytes[stage] += float(nbytes)
        if calls:
            counts.calls[stage] += int(calls)


def active() -> bool:
    """Whether a :func:`counting` block is open (lets callers skip work done only to count)."""
    return _ACTIVE.get() is not None
