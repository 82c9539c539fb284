"""Sources of the random walk: the weight-free pixel graph and an exported attention engine.

A source has ``transition(image_rgb) -> Transition``. :mod:`.pixels` needs no model;
:mod:`.engine` runs an exported model through a backend (:mod:`.backends`) after contract-driven
preprocessing (:mod:`.contract`, :mod:`.preprocess`). The engine source is imported lazily (it loads
onnxruntime).
"""

from walkcut.runtime.sources.pixels import PixelSource, Transition

__all__ = ["EngineSource", "PixelSource", "Transition"]


def __getattr__(name):
    if name == "EngineSource":
        from walkcut.runtime.sources.engine import EngineSource

        return EngineSource
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
