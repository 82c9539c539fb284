"""Video: input and output (:mod:`.io`; ROS bags: :mod:`.bags`, with the ``ros`` extra), the pipelined
run (:mod:`.pipeline`), the messages between its threads (:mod:`.frames`), its workers
(:mod:`.workers`), the model stage that overlaps the engine and the cuts (:mod:`.overlap`), id
tracking (:mod:`.tracking`)."""

from walkcut.runtime.video.frames import (
    Frame,
    FrameInfo,
    FrameResult,
    ReorderBuffer,
    RunCounters,
    SourcedFrame,
    TrackedFrame,
)
from walkcut.runtime.video.io import (
    Terminated,
    VideoInput,
    VideoInputError,
    VideoReader,
    VideoWriter,
    display_available,
)
from walkcut.runtime.video.overlap import ModelStage, ModelStats
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
    "Frame",
    "FrameInfo",
    "FrameResult",
    "FrameSegmentation",
    "IdTracker",
    "ModelStage",
    "ModelStats",
    "ProcessSegmenter",
    "ReorderBuffer",
    "RunCounters",
    "SegmenterSpec",
    "SourcedFrame",
    "Terminated",
    "TrackedFrame",
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
