"""`walkcut video` with no cut flags gives, frame by frame, the partition `walkcut segment` gives."""

from __future__ import annotations

import cv2
import numpy as np
from walkcut.eval.metrics import contingency_table
from walkcut.runtime.segmenter import Segmenter

from walkcut.cli import main


def street(t: int, h: int = 120, w: int = 160, seed: int = 3) -> np.ndarray:
    """BGR frame: ten noisy colour regions drifting right by 3 px per frame (a busy scene: segment's
    32-leaf tree keeps ~24 segments, a 16-leaf tree can keep at most 16)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    seeds = rng.uniform(0, 1, (10, 2)) * (h, w)
    seeds[:, 1] += 3 * t
    region = np.argmin((yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2, axis=2)
    colors = rng.integers(30, 225, (10, 3))
    noise = np.random.default_rng(100 + t).normal(0, 6, (h, w, 3))
    return np.clip(colors[region] + noise, 0, 255).astype(np.uint8)


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to renaming: every label of ``a`` meets exactly one label of ``b`` and vice versa."""
    table = contingency_table(a, b) > 0
    return bool((table.sum(axis=0) == 1).all() and (table.sum(axis=1) == 1).all())


def test_video_labels_are_segments_labels_frame_by_frame(tmp_path, capsys):
    n = 5
    clip = tmp_path / "street.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 10, (160, 120))
    for t in range(n):
        writer.write(street(t))
    writer.release()
    # The frames as the video command decodes them, losslessly, for the segment command.
    frames = tmp_path / "frames"
    frames.mkdir()
    cap = cv2.VideoCapture(str(clip))
    for i in range(n):
        ok, frame = cap.read()
        assert ok
        cv2.imwrite(str(frames / f"{i:06d}.png"), frame)
    cap.release()
    # Threads instead of processes only keep the test quick; neither changes a partition.
    assert main(["video", str(clip), "--labels-dir", str(tmp_path / "video"), "--workers", "1", "--threads"]) == 0
    assert main(["segment", str(frames), "--out", str(tmp_path / "segment")]) == 0
    capsys.readouterr()
    counts = []
    for i in range(n):
        video = cv2.imread(str(tmp_path / "video" / f"{i:06d}.png"), cv2.IMREAD_UNCHANGED)
        image = cv2.imread(str(tmp_path / "segment" / f"{i:06d}_labels.png"), cv2.IMREAD_UNCHANGED)
        assert video.shape == image.shape == (120, 160)
        assert same_partition(video, image), f"frame {i}: video and segment cut differently"
        counts.append(np.unique(image).size)
    # The scene needs segment's tree: more segments than a 16-leaf tree could give.
    assert max(counts) > 16


def test_a_smaller_tree_would_change_the_answer():
    """Why video grows segment's tree: on this scene a 16-leaf tree gives another partition."""
    image = cv2.cvtColor(street(0), cv2.COLOR_BGR2RGB)
    small = Segmenter().set_image(image).segment(max_segments=16).labels
    default = Segmenter().set_image(image).segment().labels
    assert not same_partition(small, default)
