"""Source specs: the one way a source is described, shipped to workers and opened.

A *spec* is a small, frozen, picklable description of a source with ``open()`` (the source, ready to
give transitions) and ``cut_defaults`` (the cut settings the source carries; see
:class:`~walkcut.runtime.segmenter.Segmenter`):

- :class:`~walkcut.runtime.sources.pixels.PixelSource` is its own spec (a frozen dataclass of its
  options; ``open()`` returns it);
- :class:`~walkcut.runtime.sources.engine.EngineSpec` names an exported model and its backend; its
  ``open()`` starts the backend in the process or thread that calls it.

:func:`source_spec` builds one from the options every segmenting command shares (``walkcut
segment``, ``batch``, ``video``, ``eval``, ``bench`` all call it through
:func:`walkcut.cli.args.source_spec`), so an option means the same thing everywhere; video workers,
Ray tasks and the evaluation loop open the spec they are given instead of building sources themselves.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from walkcut.runtime import defaults as _d
from walkcut.runtime.sources.pixels import PixelSource

__all__ = ["SourceSpec", "source_spec"]


@runtime_checkable
class SourceSpec(Protocol):
    """What every source spec offers (pickled by value, opened where the work runs)."""

    @property
    def cut_defaults(self) -> Mapping: ...

    def open(self): ...


def source_spec(*, engine: str | os.PathLike | None = None, backend: str = "auto", threads: int | None = None,
                preset: str | None = None, **pixel_options) -> SourceSpec:
    """The spec of the source these options name.

    Parameters
    ----------
    engine : path, optional
        An exported model: the result is an :class:`~walkcut.runtime.sources.engine.EngineSpec`
        with ``backend`` and ``threads``. Pixel-source options cannot go with it (the model fixes
        its grid).
    backend, threads
        The engine's backend and CPU threads (only with ``engine``).
    preset : str, optional
        A key of :data:`walkcut.runtime.defaults.PRESETS`: its ``source`` options start the pixel
        source's (with ``engine`` it is ignored here; its cut settings are the caller's to apply).
    **pixel_options
        :class:`~walkcut.runtime.sources.pixels.PixelSource` options (``grid``, ``contour_scale``,
        ``color_scale``, ...), overriding the preset's. ``contour_scale=None`` turns the contour
        term off.

    Returns
    -------
    PixelSource or EngineSpec
    """
    if preset is not None and preset not in _d.PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {', '.join(_d.PRESETS)}")
    if engine is not None:
        if pixel_options:
            raise ValueError(f"{', '.join(sorted(pixel_options))} set the pixel source; an engine ({engine}) "
                             f"replaces it and fixes its own grid: leave them out")
        from walkcut.runtime.sources.engine import EngineSpec  # keeps this module free of the backends

        return EngineSpec(engine, backend=backend, threads=threads)
    if backend != "auto" or threads is not None:
        raise ValueError(f"backend={backend!r} and threads={threads!r} run an engine; give engine=MODEL "
                         f"(the pixel source has no backend)")
    options = dict(_d.PRESETS[preset]["source"]) if preset is not None else {}
    options.update(pixel_options)
    return PixelSource(**options)
