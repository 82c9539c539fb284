"""--rerun: recordings the Rerun SDK reads back (entities, frames, ids, colours, times), the output
policy for .rrd files, addresses checked before any work, and a live viewer (the SDK's own server).
Tests that need rerun-sdk skip without it; the refusal without it runs everywhere."""

from __future__ import annotations

import collections
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest

from walkcut.cli import main
from walkcut.runtime.draw import palette
from walkcut.runtime.rerun_log import DEFAULT_ADDRESS, RerunLog, RerunTarget
from walkcut.runtime.video import VideoInput, VideoPipeline, VideoReader
from walkcut.runtime.video.pipeline import ID_COLORS
from walkcut.runtime.video.workers import SegmenterSpec, build_video_segmenter
from test_stream import moving_scene

needs_rerun = pytest.mark.skipif(importlib.util.find_spec("rerun") is None,
                                 reason='rerun-sdk not installed (pip install "walkcut[rerun]")')
FPS = 10.0


def write_clip(path, n=8):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (200, 120))
    for t in range(n):
        writer.write(moving_scene(t))
    writer.release()
    return path


def read_recording(path) -> dict:
    """``{(entity, static): [pyarrow RecordBatch, ...]}`` of the first recording in an .rrd, as the
    Rerun SDK reads it."""
    import rerun as rr

    reader = rr.chunk.RrdReader(path)
    assert len(reader.recordings()) == 1
    out = collections.defaultdict(list)
    for chunk in reader.stream().collect().stream():
        out[(chunk.entity_path, chunk.is_static)].append(chunk.to_record_batch())
    return out


def column(batches, name) -> list:
    return [v for b in batches for v in b.column(name).to_pylist()]


def segmentation_maps(batches, timeline="frame") -> dict[int, np.ndarray]:
    """``{step: (H, W) uint16 ids}`` from the SegmentationImage rows."""
    maps = {}
    for step, buf, fmt in zip(column(batches, timeline), column(batches, "SegmentationImage:buffer"),
                              column(batches, "SegmentationImage:format")):
        h, w = fmt[0]["height"], fmt[0]["width"]
        maps[step] = np.frombuffer(bytes(buf[0]), np.uint16).reshape(h, w)
    return maps


def context_colors(recording) -> dict[int, tuple]:
    [batch] = recording[("/image", True)]
    [[entries]] = batch.column("AnnotationContext:context").to_pylist()  # one row, one context
    rgba = {e["class_id"]: e["class_description"]["info"]["color"] for e in entries}
    return {k: (c >> 24 & 255, c >> 16 & 255, c >> 8 & 255) for k, c in rgba.items()}


# --- addresses and the missing SDK (no rerun-sdk needed) --------------------------------------------

def test_targets_parse_files_and_addresses():
    from walkcut.cli.rerun_option import LOCAL_VIEWER  # the --help text's copy

    assert RerunTarget.parse(None).url == DEFAULT_ADDRESS == RerunTarget.parse("").url == LOCAL_VIEWER
    assert RerunTarget.parse("out/run.RRD").path.name == "run.RRD"
    assert RerunTarget.parse("robot:9876").url == "rerun+http://robot:9876/proxy"
    assert RerunTarget.parse("[::1]:9876").host_port == ("::1", 9876)
    url = "rerun+https://viewer.example:443/proxy"
    assert RerunTarget.parse(url).url == url and RerunTarget.parse("rerun://h:1/proxy").host_port == ("h", 1)
    for bad in ("run.mp4", "http://h:9876/proxy", "robot", "h:99999", "rerun+http://h:9876/other"):
        with pytest.raises(ValueError, match="NAME.rrd|out of range"):
            RerunTarget.parse(bad)


def test_without_the_sdk_the_option_names_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "rerun", None)  # import rerun -> ImportError
    clip = write_clip(tmp_path / "c.avi", n=2)
    assert main(["video", str(clip), "--rerun", str(tmp_path / "r.rrd")]) == 2
    err = capsys.readouterr().err
    assert 'pip install "walkcut[rerun]"' in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == [clip]


def test_a_malformed_address_is_a_usage_error(tmp_path, capsys):
    clip = write_clip(tmp_path / "c.avi", n=2)
    assert main(["video", str(clip), "--rerun", "viewer.local"]) == 2
    assert "neither a recording file nor a viewer address" in capsys.readouterr().err


# --- recordings read back ---------------------------------------------------------------------------

@needs_rerun
def test_video_recording_reads_back_with_its_entities_frames_ids_and_colours(tmp_path, capsys):
    clip = write_clip(tmp_path / "clip.avi", n=8)
    rrd = tmp_path / "run.rrd"
    rc = main(["video", str(clip), "--rerun", str(rrd), "--labels-dir", str(tmp_path / "ids"),
               "--workers", "1", "--threads"])
    assert rc == 0 and "rerun: 8 frames -> " in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.avi", "ids", "run.rrd"]  # no .part left
    rec = read_recording(rrd)
    entities = {e for e, static in rec if not static}
    assert {"/image", "/image/segmentation", "/segments", "/latency", "/timings/source", "/timings/cuts",
            "/timings/upsample", "/timings/track", "/timings/encode"} <= entities
    for entity in entities:  # every entity once per frame, on the frame timeline
        assert sorted(column(rec[(entity, False)], "frame")) == list(range(8)), entity
    maps = segmentation_maps(rec[("/image/segmentation", False)])
    for index, ids in maps.items():  # the tracked ids, as --labels-dir writes them
        np.testing.assert_array_equal(ids, cv2.imread(str(tmp_path / "ids" / f"{index:06d}.png"),
                                                      cv2.IMREAD_UNCHANGED))
    colors = context_colors(rec)  # id k: the overlay video's colour of id k
    assert len(colors) >= 64 and all(colors[k] == tuple(ID_COLORS[k % 64]) for k in colors)
    used = set(np.unique(np.concatenate([m.ravel() for m in maps.values()])).tolist())
    assert used <= set(colors)
    times = [t.total_seconds() for t in column(rec[("/image/segmentation", False)], "video_time")]
    np.testing.assert_allclose(sorted(times), np.arange(8) / FPS, atol=1e-6)  # seconds into the file
    images = rec[("/image", False)]
    assert column(images, "EncodedImage:media_type") == [["image/jpeg"]] * 8
    first = bytes(column(images, "EncodedImage:blob")[0][0])
    assert cv2.imdecode(np.frombuffer(first, np.uint8), cv2.IMREAD_COLOR).shape == (120, 200, 3)
    counts = [v[0] for v in column(rec[("/segments", False)], "Scalars:scalars")]
    assert counts == [len(np.unique(maps[k])) for k in sorted(maps)]


@needs_rerun
def test_segment_recording_has_one_step_per_image(tmp_path, capsys):
    paths = []
    for t in range(2):
        paths.append(tmp_path / f"im{t}.png")
        cv2.imwrite(str(paths[-1]), moving_scene(3 * t))
    rrd = tmp_path / "seg.rrd"
    assert main(["segment", *map(str, paths), "--out", str(tmp_path / "out"), "--rerun", str(rrd)]) == 0
    rec = read_recording(rrd)
    maps = segmentation_maps(rec[("/image/segmentation", False)], timeline="image")
    assert sorted(maps) == [0, 1]
    for step, path in enumerate(paths):
        np.testing.assert_array_equal(maps[step], cv2.imread(str(tmp_path / "out" / f"{path.stem}_labels.png"),
                                                             cv2.IMREAD_UNCHANGED))
    assert column(rec[("/source", False)], "TextLog:text") == [[str(p)] for p in paths]
    raw = rec[("/image", False)]  # still images are logged raw, not JPEG
    assert column(raw, "Image:format")[0][0]["width"] == 200
    colors = context_colors(rec)
    assert all(colors[k] == tuple(palette(len(colors))[k]) for k in colors)  # no repeat: segment's overlay


@needs_rerun
def test_stream_records_its_timestamps(tmp_path):
    from walkcut.stream import StreamSegmenter

    rrd = tmp_path / "s.rrd"
    with StreamSegmenter(color="bgr", rerun=str(rrd)) as stream:
        for t in range(3):
            stream.push(0.25 * t, moving_scene(t))
    rec = read_recording(rrd)
    batches = rec[("/image/segmentation", False)]
    assert sorted(column(batches, "frame")) == [0, 1, 2]
    assert sorted(t.total_seconds() for t in column(batches, "video_time")) == [0.0, 0.25, 0.5]


# --- the output policy -------------------------------------------------------------------------------

@needs_rerun
def test_an_existing_recording_is_kept_unless_overwrite(tmp_path, capsys):
    clip = write_clip(tmp_path / "clip.avi", n=2)
    rrd = tmp_path / "run.rrd"
    rrd.write_bytes(b"not yours to replace")
    assert main(["video", str(clip), "--rerun", str(rrd), "--out", str(tmp_path / "o.mp4")]) == 2
    assert "run.rrd already exists; add --overwrite" in capsys.readouterr().err
    assert rrd.read_bytes() == b"not yours to replace" and not (tmp_path / "o.mp4").exists()
    assert main(["segment", str(tmp_path / "nope.png"), "--out", str(tmp_path / "o"), "--rerun", str(rrd)]) == 2
    assert rrd.read_bytes() == b"not yours to replace"
    assert main(["video", str(clip), "--rerun", str(rrd), "--overwrite", "--threads"]) == 0
    assert sorted(column(read_recording(rrd)[("/image", False)], "frame")) == [0, 1]


@needs_rerun
def test_an_interrupted_run_leaves_a_complete_recording_of_the_frames_done(tmp_path):
    clip = write_clip(tmp_path / "clip.avi", n=8)
    rrd = tmp_path / "cut.rrd"

    def interrupt(index, ids, picture):
        if index == 2:
            raise KeyboardInterrupt

    pipeline = VideoPipeline(lambda: build_video_segmenter(SegmenterSpec()), cut_options={"max_segments": 8})
    with VideoReader(VideoInput.parse(str(clip))) as reader, RerunLog(rrd) as log:
        summary = pipeline.run(reader, on_frame=interrupt, sinks=(log,))
    assert summary.stop_reason == "interrupted" and log.frames == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.avi", "cut.rrd"]
    assert sorted(column(read_recording(rrd)[("/image/segmentation", False)], "frame")) == [0, 1, 2]


@needs_rerun
def test_no_frame_no_file(tmp_path, capsys):
    with RerunLog(tmp_path / "empty.rrd"):
        pass
    assert list(tmp_path.iterdir()) == []
    junk = tmp_path / "junk.avi"
    junk.write_bytes(b"\x00" * 1000)
    assert main(["video", str(junk), "--rerun", str(tmp_path / "r.rrd")]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.avi"]


# --- viewers -----------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@needs_rerun
def test_an_address_without_a_viewer_stops_before_any_work(tmp_path, capsys):
    clip = write_clip(tmp_path / "clip.avi", n=2)
    out = tmp_path / "o.mp4"
    assert main(["video", str(clip), "--out", str(out), "--rerun", f"127.0.0.1:{free_port()}"]) == 2
    assert "no Rerun viewer answers at rerun+http://127.0.0.1:" in capsys.readouterr().err
    # A port that accepts connections but never answers gRPC (rerun-sdk would wait on it for ever).
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)
    accepted = []
    threading.Thread(target=lambda: accepted.append(silent.accept()), daemon=True).start()
    try:
        t0 = time.monotonic()
        assert main(["video", str(clip), "--out", str(out), "--rerun", f"127.0.0.1:{silent.getsockname()[1]}"]) == 2
        assert time.monotonic() - t0 < 15
    finally:
        silent.close()
    assert "accepts connections but is not a Rerun viewer's gRPC port" in capsys.readouterr().err
    assert not out.exists()


@needs_rerun
def test_frames_stream_to_a_running_viewer(tmp_path, capsys):
    port = free_port()
    # `python -m rerun` runs the viewer binary as its child: a session of their own, ended together.
    server = subprocess.Popen([sys.executable, "-m", "rerun", "--serve-grpc", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:  # the server's port opens once it is up
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, "the Rerun server did not start"
                time.sleep(0.2)
        clip = write_clip(tmp_path / "clip.avi", n=3)
        assert main(["video", str(clip), "--rerun", f"127.0.0.1:{port}", "--threads"]) == 0
        assert f"rerun: 3 frames -> rerun+http://127.0.0.1:{port}/proxy" in capsys.readouterr().err
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


@needs_rerun
@pytest.mark.slow
def test_sigterm_midway_leaves_the_frames_written(tmp_path):
    clip = tmp_path / "long.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (200, 120))
    for t in range(200):
        writer.write(moving_scene(t % 8))
    writer.release()
    rrd, labels = tmp_path / "run.rrd", tmp_path / "ids"
    proc = subprocess.Popen([sys.executable, "-m", "walkcut", "video", str(clip), "--rerun", str(rrd),
                             "--labels-dir", str(labels), "--grid", "8"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(labels.glob("*.png"))) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    written = len(list(labels.glob("*.png")))  # the folder also holds walkcut's marker file
    assert 3 <= written < 200 and f"rerun: {written} frames -> {rrd}" in err
    frames = sorted(column(read_recording(rrd)[("/image/segmentation", False)], "frame"))
    assert frames == list(range(written))  # every frame written, once, and nothing else
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@needs_rerun
def test_a_recording_never_replaces_the_input(tmp_path, capsys):
    clip = write_clip(tmp_path / "clip.avi", n=2).rename(tmp_path / "clip.rrd")  # a video named like a recording
    before = clip.read_bytes()
    assert main(["video", str(clip), "--rerun", str(clip), "--overwrite"]) == 2
    assert "is an input of this command" in capsys.readouterr().err and clip.read_bytes() == before
