"""Video: input and output (:mod:`.io`), the pipelined run (:mod:`.pipeline`), id tracking (:mod:`.tracking`)."""

from walkcut.runtime.video.io import (
    Terminated,
    VideoInput,
    VideoInputError,
    VideoReader,
    VideoWriter,
    display_available,
)
from walkcut.runtime.video.pipeline import (
    FrameSegmentation,
    ProcessSegmenter,
    VideoPipeline,
    VideoSummary,
    limit_blas_threads,
)
from walkcut.runtime.video.tracking import IdTracker

__all__ = [
    "FrameSegmentation",
    "IdTracker",
    "ProcessSegmenter",
    "Terminated",
    "VideoInput",
    "VideoInputError",
    "VideoPipeline",
    "VideoReader",
    "VideoSummary",
    "VideoWriter",
    "display_available",
    "limit_blas_threads",
]
