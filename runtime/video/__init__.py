"""Video: input and output (:mod:`.io`), the pipelined run (:mod:`.pipeline`), its workers
(:mod:`.workers`), the engine stage that overlaps engine and cuts (:mod:`.overlap`), id tracking
(:mod:`.tracking`)."""

from walkcut.runtime.video.io import (
    Terminated,
    VideoInput,
    VideoInputError,
    VideoReader,
    VideoWriter,
    display_available,
)
from walkcut.runtime.video.overlap import EngineStage, EngineStats
from walkcut.runtime.video.pipeline import VideoPipeline, VideoSummary
from walkcut.runtime.video.tracking import IdTracker
from walkcut.runtime.video.workers import (
    FrameSegmentation,
    ProcessSegmenter,
    SegmenterSpec,
    WorkerPlan,
    available_cores,
    build_video_segmenter,
    limit_blas_threads,
    plan_workers,
    worker_factory,
)

__all__ = [
    "EngineStage",
    "EngineStats",
    "FrameSegmentation",
    "IdTracker",
    "ProcessSegmenter",
    "SegmenterSpec",
    "Terminated",
    "VideoInput",
    "VideoInputError",
    "VideoPipeline",
    "VideoReader",
    "VideoSummary",
    "VideoWriter",
    "WorkerPlan",
    "available_cores",
    "build_video_segmenter",
    "display_available",
    "limit_blas_threads",
    "plan_workers",
    "worker_factory",
]
