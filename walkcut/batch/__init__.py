"""``walkcut batch``: segmentation of large image sets on Ray Data (install ``walkcut[ray]``).

:mod:`walkcut.batch.work` (the work for one image, shareable with ``walkcut segment``) needs neither
Ray nor pyarrow; the names below load their modules on first use, so importing the package (or
``walkcut.batch.work``) does not require the ``ray`` extra.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "BatchConfig": "walkcut.batch.pipeline",
    "BatchSummary": "walkcut.batch.pipeline",
    "run_batch": "walkcut.batch.pipeline",
    "collect_batch_inputs": "walkcut.batch.inputs",
    "Job": "walkcut.batch.work",
    "segment_image": "walkcut.batch.work",
}
__all__ = ["BatchConfig", "BatchSummary", "Job", "collect_batch_inputs", "run_batch", "segment_image"]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
