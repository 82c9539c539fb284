"""``walkcut batch``: segmentation of large image sets on Ray Data (install ``walkcut[ray]``).

:func:`segment_image` (the work for one image, shared with ``walkcut segment``) and the manifest
need no Ray; :func:`run_batch` imports Ray when it runs.
"""

from walkcut.batch.inputs import collect_batch_inputs
from walkcut.batch.pipeline import BatchConfig, BatchSummary, run_batch
from walkcut.batch.work import Job, segment_image

__all__ = ["BatchConfig", "BatchSummary", "Job", "collect_batch_inputs", "run_batch", "segment_image"]
