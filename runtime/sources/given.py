"""``GivenSource``: a source whose transition matrix was computed somewhere else.

Where the model runs apart from the cuts, the cut side still needs a source to hand to its
:class:`~walkcut.runtime.segmenter.Segmenter`: the video pipeline's model stage runs the engine ahead
of the cut workers (:mod:`walkcut.runtime.video.overlap`), and ``walkcut batch`` runs it in a GPU
actor before a CPU task cuts. In both, the ready transition is handed over with :meth:`GivenSource.hand`
(or given at construction) and ``Segmenter.set_image`` takes it from :meth:`GivenSource.transition`
as from any source. Each handed transition serves one image.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import numpy as np

from walkcut.runtime.sources.contract import check_cut_settings
from walkcut.runtime.sources.pixels import Transition


class GivenSource:
    """Hands a ready :class:`~walkcut.runtime.sources.pixels.Transition` to a Segmenter, once.

    Parameters
    ----------
    transition : Transition, optional
        The transition of the next image (or hand it later with :meth:`hand`).
    timings : dict, optional
        Seconds of the stages that produced it (``preprocess``, ``engine``); reported by the
        Segmenter as a source's own timings (``last_timings``).
    cut_defaults : mapping, optional
        The cut settings of the model that produced the transitions (its contract's
        ``cut_defaults``), so a Segmenter over this source uses them as it would over the model.

    Examples
    --------
    >>> source = GivenSource()
    >>> source.hand(transition, {"engine": 0.004})          # doctest: +SKIP
    >>> Segmenter(source).set_image(image).segment()        # doctest: +SKIP
    """

    def __init__(self, transition: Transition | None = None, *, timings: Mapping | None = None,
                 cut_defaults: Mapping | None = None) -> None:
        check_cut_settings(cut_defaults or {}, source="GivenSource cut_defaults")
        self._cut_defaults = MappingProxyType(dict(cut_defaults or {}))
        self._next: Transition | None = None
        self.last_timings: dict = {}
        if transition is not None:
            self.hand(transition, timings)

    @property
    def cut_defaults(self) -> Mapping:
        return self._cut_defaults

    @property
    def pending(self) -> bool:
        """Whether a transition waits to be used."""
        return self._next is not None

    def hand(self, transition: Transition, timings: Mapping | None = None) -> None:
        """Give the transition of the next image (replacing one not used yet) and its timings."""
        if not isinstance(transition, Transition):
            raise TypeError(f"transition must be a Transition, got {type(transition).__name__}")
        self._next = transition
        self.last_timings = dict(timings or {})

    def take(self) -> tuple[Transition, dict] | None:
        """Remove and return the waiting ``(transition, timings)`` without using it (None if none):
        a worker in another process forwards it with the frame."""
        if self._next is None:
            return None
        transition, self._next = self._next, None
        return transition, dict(self.last_timings)

    def transition(self, image_rgb: np.ndarray) -> Transition:
        """The handed transition (``image_rgb`` is not looked at); each serves one image."""
        if self._next is None:
            raise RuntimeError("GivenSource: no transition handed over for this image (call hand() first)")
        transition, self._next = self._next, None
        return transition
