"""Sources of the random walk: the weight-free pixel graph and an exported attention engine.

A source has ``transition(image_rgb) -> Transition`` and ``cut_defaults`` (cut settings it carries).
Each is described by a picklable *spec* with ``open()`` (:mod:`.spec`): :class:`PixelSource` is its
own spec; :class:`EngineSpec` names a model and a backend and starts it where it is opened.
:mod:`.pixels` needs no model; :mod:`.engine` runs an exported model through a backend
(:mod:`.backends`) after contract-driven preprocessing (:mod:`.contract`, :mod:`.preprocess`) and
checks its output (:func:`validate_attention`); :class:`GivenSource` (:mod:`.given`) hands over a
transition computed elsewhere. The engine names are imported lazily (they load the backends).
"""

from walkcut.runtime.sources.given import GivenSource
from walkcut.runtime.sources.pixels import PixelSource, Transition
from walkcut.runtime.sources.spec import SourceSpec, source_spec

__all__ = ["EngineSource", "EngineSpec", "GivenSource", "PixelSource", "SourceSpec", "Transition",
           "source_spec", "validate_attention"]

_ENGINE_NAMES = ("EngineSource", "EngineSpec", "validate_attention")


def __getattr__(name):
    if name in _ENGINE_NAMES:
        from walkcut.runtime.sources import engine

        return getattr(engine, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
