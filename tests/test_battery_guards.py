"""Resource guards and exits (issue 23): each case makes its own files, runs the command, and checks
the exit code, the one line it prints, and that every file present before is byte-identical after.

Cases: the pixel limit (read from the header, before decoding), folder walks and globs through
symbolic-link loops, the --grid range and its memory estimate, --workers capped at the cores, a
full disk (a fault-injecting writer, and a real 64 KiB tmpfs where mounting is permitted), SIGINT /
SIGTERM on every subcommand (exit 130 with the summary), video runs that write nothing or read a
truncated file, native-library noise, subcommand help hints, eval without data, a flat image, and
the label outputs (--no-overlay, --labels-format index8, --color-labels).
"""

from __future__ import annotations

import errno
import os
import signal
import struct
import subprocess
import sys
import threading
import time
import tracemalloc
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from file_snapshot import assert_unchanged, snapshot
from test_cli import two_regions
from walkcut.cli import main
from walkcut.runtime import defaults

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals, links and mounts")


# --- helpers -----------------------------------------------------------------------------------------

def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip()]


def one_line(err: str, *needles: str) -> str:
    """The single stderr line, which must contain every needle (and no traceback)."""
    lines = error_lines(err)
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def picture(h=48, w=64, seed=0) -> np.ndarray:
    """BGR: two colour regions, lightly noisy (two clear segments)."""
    return two_regions(h, w, seed)


def write_image(path: Path, img: np.ndarray | None = None, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), picture(**kw) if img is None else img)
    return path


def write_big_png(path: Path, width: int, height: int) -> Path:
    """A valid grey PNG of ``width x height`` zeros, compressed as it is written (never in memory)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    z = zlib.compressobj(9)
    row = b"\x00" * (width + 1)  # filter byte + pixels
    body = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


def scene(t: int, h=72, w=96) -> np.ndarray:
    img = np.empty((h, w, 3), np.uint8)
    img[:] = (40, 160, 40)
    img[:, : w // 3] = (200, 40, 40)
    img[20:52, 20 + 2 * t: 50 + 2 * t] = (30, 30, 220)
    return img


def write_clip(path: Path, n=12, fourcc="MJPG") -> Path:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10, (96, 72))
    for t in range(n):
        w.write(scene(t % 20))
    w.release()
    return path


def spawn(*argv: str, cwd=None) -> subprocess.Popen:
    """``python -m walkcut ARGV`` in a child with the default SIGINT handling (a parent that ignores
    SIGINT, as a background CI job may, would hand that on), stderr read by a thread."""
    def restore():
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    proc = subprocess.Popen([sys.executable, "-m", "walkcut", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, preexec_fn=restore, cwd=cwd)
    proc.err_text = []

    def pump():
        for chunk in iter(lambda: proc.stderr.read1(4096), b""):
            proc.err_text.append(chunk.decode("utf-8", "replace"))

    proc.pump = threading.Thread(target=pump, daemon=True)
    proc.pump.start()
    return proc


def wait_for(cond, proc: subprocess.Popen, timeout=120.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert proc.poll() is None, f"exited {proc.returncode} before work started: {''.join(proc.err_text)}"
        assert time.monotonic() < deadline, "work did not start"
        time.sleep(0.05)


def finish(proc: subprocess.Popen, timeout=120.0) -> tuple[int, str, str]:
    proc.wait(timeout=timeout)
    out = proc.stdout.read()
    proc.pump.join(timeout=10)
    return proc.returncode, out.decode("utf-8", "replace"), "".join(proc.err_text)


# --- 1. pixel limit ------------------------------------------------------------------------------------

def test_pixel_limit_is_checked_from_the_header_before_decoding(tmp_path, capsys, monkeypatch):
    big = write_big_png(tmp_path / "big.png", 10000, 10000)  # 100 Mpx, 0.1 MB on disk
    before = snapshot(tmp_path)

    def no_decode(*a, **k):
        raise AssertionError("decoded an image above the pixel limit")

    monkeypatch.setattr(cv2, "imdecode", no_decode)
    from walkcut.runtime.imageio import ImageTooLargeError, read_image

    tracemalloc.start()
    t = time.perf_counter()
    with pytest.raises(ImageTooLargeError):
        read_image(big)
    seconds = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert seconds < 0.5 and peak < 4 * 2**20, (seconds, peak)  # header only: ms and kB, not 100 MB

    rc = main(["segment", str(big), "--out", str(tmp_path / "out")])
    assert rc == 1
    one_line(capsys.readouterr().err, "big.png", "10000 x 10000", "100.0 Mpx", "89.5 Mpx", "--max-pixels")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    assert_unchanged(before, tmp_path)


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp", ".tif", ".webp", ".ppm"])
def test_pixel_limit_reads_every_format_header(ext, tmp_path):
    from walkcut.runtime.imageio import header_size

    path = write_image(tmp_path / f"x{ext}", h=40, w=70)
    assert header_size(path) == (70, 40)


def test_pixel_limit_is_raised_by_flag_or_environment(tmp_path, capsys, monkeypatch):
    img = write_image(tmp_path / "x.png", h=40, w=60)  # 2400 px
    before = snapshot(tmp_path)
    assert main(["segment", str(img), "--out", str(tmp_path / "a"), "--grid", "8", "--max-pixels", "2000"]) == 1
    one_line(capsys.readouterr().err, "60 x 40", "--max-pixels 2400")
    monkeypatch.setenv("WALKCUT_MAX_PIXELS", "2000")
    assert main(["segment", str(img), "--out", str(tmp_path / "b"), "--grid", "8"]) == 1
    one_line(capsys.readouterr().err, "pixel limit")
    assert main(["segment", str(img), "--out", str(tmp_path / "c"), "--grid", "8", "--max-pixels", "2400"]) == 0
    assert (tmp_path / "c" / "x_labels.png").exists()
    monkeypatch.setenv("WALKCUT_MAX_PIXELS", "lots")
    assert main(["segment", str(img), "--out", str(tmp_path / "d"), "--grid", "8"]) == 2
    one_line(capsys.readouterr().err, "WALKCUT_MAX_PIXELS", "--max-pixels")
    assert_unchanged(before, tmp_path)


# --- 2. walks that cannot loop ---------------------------------------------------------------------------

def _loops(root: Path) -> Path:
    """a/ and b/ link to each other, a/sub/up links back to a/: two loops through each other."""
    write_image(root / "a" / "sub" / "x.png")
    write_image(root / "b" / "y.png", seed=1)
    os.symlink("../b", root / "a" / "to_b")
    os.symlink("../a", root / "b" / "to_a")
    os.symlink("..", root / "a" / "sub" / "up")
    return root


@pytest.mark.parametrize("arg", ["{root}", "{root}/**/*.png", "{root}/**", "{root}/a/**/*.png"])
def test_symlink_loops_end_fast_and_each_file_once(arg, tmp_path):
    root = _loops(tmp_path / "in")
    before = snapshot(tmp_path)
    code = ("import resource, sys, time; from walkcut.inputs import expand_inputs; t = time.perf_counter(); "
            f"r = expand_inputs([{arg.format(root=root)!r}]); "
            "print(len(r), sorted(p.name for p in r), time.perf_counter() - t)")
    # In a child with a deadline: Python's own recursive glob would not return here.
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    n, names, seconds = done.stdout.rsplit(" ", 1)[0].split(" ", 1)[0], done.stdout, float(done.stdout.split()[-1])
    assert int(n) == 2 and "'x.png'" in names and "'y.png'" in names
    assert seconds < 2.0
    assert_unchanged(before, tmp_path)


def test_segment_through_symlink_loops_writes_each_image_once(tmp_path, capsys):
    root = _loops(tmp_path / "in")
    before = snapshot(tmp_path)
    assert main(["segment", f"{root}/**/*.png", "--out", str(tmp_path / "out"), "--grid", "8"]) == 0
    out = capsys.readouterr()
    assert "segmented 2 of 2 images" in out.out and not out.err
    written = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.png"))
    assert written == ["a/sub/x_labels.png", "a/sub/x_overlay.png", "b/y_labels.png", "b/y_overlay.png"]
    assert_unchanged(before, tmp_path)


# --- 3. grid range, memory estimate, workers -------------------------------------------------------

def test_grid_above_the_range_is_a_usage_error(tmp_path, capsys):
    img = write_image(tmp_path / "x.png")
    before = snapshot(tmp_path)
    assert main(["segment", str(img), "--out", str(tmp_path / "out"), "--grid", str(defaults.MAX_GRID + 1)]) == 2
    one_line(capsys.readouterr().err, f"from {defaults.MIN_GRID} to {defaults.MAX_GRID}", "walkcut segment --help")
    assert not (tmp_path / "out").exists()
    assert_unchanged(before, tmp_path)


def test_grid_that_does_not_fit_memory_is_refused_with_the_estimate(tmp_path, capsys, monkeypatch):
    from walkcut.cli import args as cli_args
    from walkcut.runtime.sources.pixels import graph_memory_bytes

    # The estimate grows as R**4 and matches the measured peak (1.07 GB at R = 128) within 20 %.
    assert graph_memory_bytes(64) < graph_memory_bytes(96) < graph_memory_bytes(128)
    assert 0.8e9 < graph_memory_bytes(128) < 1.35e9
    img = write_image(tmp_path / "x.png")
    before = snapshot(tmp_path)
    monkeypatch.setattr(cli_args, "available_memory", lambda: 256 * 2**20)
    assert main(["segment", str(img), "--out", str(tmp_path / "out"), "--grid", "96"]) == 2
    one_line(capsys.readouterr().err, "--grid 96 needs about", "GiB", "0.2 GiB available", "smaller --grid")
    assert not (tmp_path / "out").exists()
    assert main(["segment", str(img), "--out", str(tmp_path / "out"), "--grid", "16"]) == 0
    assert_unchanged(before, tmp_path)


def test_workers_above_the_cores_are_capped_with_a_note(tmp_path, capsys):
    from walkcut.runtime.video.workers import available_cores, plan_workers

    plan = plan_workers(cores=2, workers=64)
    assert plan.workers == 2 and plan.capped_from == 64
    assert plan_workers(cores=4, workers=3).capped_from is None
    clip = write_clip(tmp_path / "c.avi", n=3)
    before = snapshot(tmp_path)
    many = available_cores() + 7
    rc = main(["video", str(clip), "--labels-dir", str(tmp_path / "labels"), "--grid", "8", "--threads",
               "--workers", str(many)])
    assert rc == 0
    err = capsys.readouterr().err
    notes = [line for line in err.splitlines() if line.startswith("walkcut: --workers")]
    assert notes == [f"walkcut: --workers {many} is more than the {available_cores()} "
                     f"core{'s' if available_cores() > 1 else ''} here: using {available_cores()}"]
    assert len(list((tmp_path / "labels").glob("*.png"))) == 3
    assert_unchanged(before, tmp_path)


# --- 4. a full disk stops the run --------------------------------------------------------------------------

def test_disk_full_stops_segment_at_once_with_the_count(tmp_path, capsys, monkeypatch):
    from walkcut.cli import segment as seg_cli
    from walkcut.runtime.imageio import write_all_or_none

    images = [write_image(tmp_path / "in" / f"x{i}.png", seed=i) for i in range(4)]
    before = snapshot(tmp_path)
    calls = []

    def fills_up(pairs):  # the second image finds the disk full
        calls.append(1)
        if len(calls) >= 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "out" / ".x1_labels.png.k2.part"))
        write_all_or_none(pairs)

    monkeypatch.setattr(seg_cli, "write_all_or_none", fills_up)
    rc = main(["segment", *map(str, images), "--out", str(tmp_path / "out"), "--grid", "8"])
    assert rc == 1
    captured = capsys.readouterr()
    line = one_line(captured.err, "disk full", "stopped after 1 of 4 images", "--skip-existing")
    assert ".part" not in line and "Errno" not in line
    assert len(calls) == 2  # stopped at the first ENOSPC, not tried on every later image
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["x0_labels.png", "x0_overlay.png"]
    assert_unchanged(before, tmp_path)


def _tmpfs(path: Path, size: str = "64k") -> Path:
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    return path


def test_disk_full_on_a_real_tiny_tmpfs_stops_segment(tmp_path, capsys):
    images = [write_image(tmp_path / "in" / f"x{i}.png", img=(np.random.default_rng(i).integers(
        0, 255, (120, 160, 3), dtype=np.uint8))) for i in range(6)]  # noise: about 57 KB per overlay
    before = snapshot(tmp_path)
    disk = _tmpfs(tmp_path / "disk")
    try:
        rc = main(["segment", *map(str, images), "--out", str(disk / "out"), "--grid", "8"])
        assert rc == 1
        line = one_line(capsys.readouterr().err, "disk full", "stopped after", "of 6 images")
        assert ".part" not in line
        left = sorted(p.name for p in (disk / "out").iterdir())
        assert not [n for n in left if n.startswith(".")]  # no temporary file stays
        for name in left:  # whatever is there is whole, in pairs
            assert cv2.imread(str(disk / "out" / name), cv2.IMREAD_UNCHANGED) is not None
        assert len(left) % 2 == 0 and len(left) < 12
    finally:
        subprocess.run(["umount", str(disk)], check=False)
    assert_unchanged(before, tmp_path)


def test_disk_full_stops_video_with_the_count(tmp_path, capsys, monkeypatch):
    from walkcut.runtime.imageio import atomic_write_bytes
    from walkcut.runtime.video import pipeline

    clip = write_clip(tmp_path / "c.avi", n=10)
    before = snapshot(tmp_path)
    written = []

    def fills_up(path, data, **kw):
        if len(written) >= 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), f"{path}.tmp.part")
        written.append(path)
        return atomic_write_bytes(path, data, **kw)

    monkeypatch.setattr(pipeline, "atomic_write_bytes", fills_up)
    rc = main(["video", str(clip), "--labels-dir", str(tmp_path / "labels"), "--grid", "8", "--threads"])
    assert rc == 1
    lines = error_lines(capsys.readouterr().err)
    errors = [line for line in lines if line.startswith("walkcut: error")]
    assert errors == ["walkcut: error: disk full: stopped after 3 frames (those are complete); free space and run again"]
    assert "Errno" not in "\n".join(lines)
    assert len(list((tmp_path / "labels").glob("*.png"))) == 3
    assert_unchanged(before, tmp_path)


@pytest.mark.slow  # starts a local Ray
def test_disk_full_on_a_real_tiny_tmpfs_stops_batch(tmp_path):
    pytest.importorskip("ray")
    for i in range(8):
        write_image(tmp_path / "in" / f"x{i}.png", np.random.default_rng(i).integers(0, 255, (120, 160, 3), np.uint8))
    before = snapshot(tmp_path)
    disk = _tmpfs(tmp_path / "disk", "160k")
    try:
        done = subprocess.run([sys.executable, "-m", "walkcut", "batch", str(tmp_path / "in"), "--out",
                               str(disk / "out"), "--grid", "8", "--num-cpus", "1"],  # the manifest too
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 1, done.stderr
        errors = [line for line in done.stderr.splitlines() if line.startswith("walkcut: error")]
        assert len(errors) == 1 and "disk full" in errors[0] and "stopped after" in errors[0], done.stderr
    finally:
        subprocess.run(["umount", str(disk)], check=False)
    assert_unchanged(before, tmp_path)


# --- 5. signals and exits ----------------------------------------------------------------------------------

SIGNALS = [signal.SIGINT, signal.SIGTERM]


@pytest.mark.slow  # a child that must start, write and be stopped: a few seconds each
@pytest.mark.parametrize("sig", SIGNALS, ids=["SIGINT", "SIGTERM"])
def test_segment_stops_with_130_and_its_summary(sig, tmp_path):
    images = [write_image(tmp_path / "in" / f"x{i:02d}.png", h=240, w=320, seed=i) for i in range(40)]
    before = snapshot(tmp_path)
    out = tmp_path / "out"
    proc = spawn("segment", str(tmp_path / "in"), "--out", str(out), "--grid", "48")
    wait_for(lambda: out.is_dir() and any(out.glob("*_overlay.png")), proc)
    proc.send_signal(sig)
    rc, stdout, err = finish(proc)
    assert rc == 130, err
    line = one_line(err, "segmented", f"of {len(images)} images", "interrupted")
    assert ("SIGTERM" in line) == (sig == signal.SIGTERM)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    assert_unchanged(before, tmp_path)


@pytest.mark.slow
def test_video_stops_with_130_and_its_summary_on_sigint(tmp_path):
    clip = write_clip(tmp_path / "long.avi", n=400)
    before = snapshot(tmp_path)
    labels = tmp_path / "labels"
    proc = spawn("video", str(clip), "--labels-dir", str(labels), "--grid", "8")
    wait_for(lambda: labels.is_dir() and len(os.listdir(labels)) >= 3, proc)
    proc.send_signal(signal.SIGINT)
    rc, _, err = finish(proc)
    assert rc == 130, err
    assert "frames written of" in err and "(interrupted)" in err
    assert_unchanged(before, tmp_path)


def _fake_bsds(root: Path, n: int) -> Path:
    from scipy.io import savemat

    for i in range(n):
        img = write_image(root / "images" / "val" / f"{i}.jpg", h=160, w=240, seed=i)
        h, w = cv2.imread(str(img)).shape[:2]
        seg = np.ones((h, w), np.uint16)
        seg[:, w // 2:] = 2
        cell = np.empty((1, 1), dtype=object)
        cell[0, 0] = {"Segmentation": seg, "Boundaries": np.zeros((h, w), np.uint8)}
        (root / "groundTruth" / "val").mkdir(parents=True, exist_ok=True)
        savemat(str(root / "groundTruth" / "val" / f"{i}.mat"), {"groundTruth": cell})
    return root


@pytest.mark.slow
@pytest.mark.parametrize("sig", SIGNALS, ids=["SIGINT", "SIGTERM"])
def test_eval_stops_with_130(sig, tmp_path):
    root = _fake_bsds(tmp_path / "bsds", 60)
    before = snapshot(tmp_path)
    proc = spawn("-v", "eval", "bsds500", "--root", str(root), "--grid", "32", "--no-progress",
                 "--json", str(tmp_path / "r.json"))
    wait_for(lambda: "cut settings" in "".join(proc.err_text), proc)
    time.sleep(0.5)
    proc.send_signal(sig)
    rc, _, err = finish(proc)
    assert rc == 130, err
    lines = [line for line in err.splitlines() if "interrupted" in line]
    assert len(lines) == 1, err
    head = "walkcut: eval interrupted" + (" by SIGTERM" if sig == signal.SIGTERM else "") + " after segmenting "
    assert lines[0].startswith(head) and lines[0].endswith(
        " of 60 images: no scores and nothing was written (--json and --gallery are written at the end)"), lines
    assert not (tmp_path / "r.json").exists()
    assert_unchanged(before, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("sig", SIGNALS, ids=["SIGINT", "SIGTERM"])
def test_bench_stops_with_130(sig, tmp_path):
    before = snapshot(tmp_path)
    proc = spawn("-v", "bench", "--runs", "100000", "--grid", "16", "--json", str(tmp_path / "b.json"))
    wait_for(lambda: "cut settings" in "".join(proc.err_text), proc)
    time.sleep(0.5)
    proc.send_signal(sig)
    rc, _, err = finish(proc)
    assert rc == 130, err
    assert "walkcut: bench interrupted" in err
    assert not (tmp_path / "b.json").exists()
    assert_unchanged(before, tmp_path)


@pytest.mark.slow
def test_export_stops_with_130(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    before = snapshot(tmp_path)
    out = tmp_path / "m.onnx"
    proc = spawn("-v", "export", "--random-weights", "--arch", "tiny", "--out", str(out), "--no-progress")
    wait_for(lambda: "capturing" in "".join(proc.err_text), proc, timeout=300)
    proc.send_signal(signal.SIGTERM)
    rc, _, err = finish(proc, timeout=300)
    assert rc == 130, err
    assert "walkcut: export interrupted by SIGTERM" in err
    assert not out.exists()
    assert_unchanged(before, tmp_path)


@pytest.mark.slow  # starts a local Ray in the child
def test_batch_stops_with_130_and_its_summary_on_sigint(tmp_path):
    pytest.importorskip("ray")
    for i in range(30):
        write_image(tmp_path / "in" / f"x{i:02d}.png", h=240, w=320, seed=i)
    before = snapshot(tmp_path)
    out = tmp_path / "out"
    proc = spawn("batch", str(tmp_path / "in"), "--out", str(out), "--grid", "48", "--num-cpus", "1",
                 "--images-per-block", "1")
    wait_for(lambda: out.is_dir() and any(out.rglob("*_overlay.png")), proc, timeout=300)
    proc.send_signal(signal.SIGINT)
    rc, _, err = finish(proc, timeout=300)
    assert rc == 130, err
    assert [line for line in err.splitlines() if "interrupted after" in line], err
    # Ray's own lines stay off the terminal without -v
    assert not [line for line in err.splitlines() if "INFO" in line or "Started a local Ray" in line], err
    assert_unchanged(before, tmp_path)


def test_video_that_writes_nothing_fails(tmp_path, capsys):
    clip = write_clip(tmp_path / "c.avi", n=20)
    before = snapshot(tmp_path)
    # --max-latency on a file: the decoder outruns the cuts, every frame is replaced or too old.
    rc = main(["video", str(clip), "--out", str(tmp_path / "o.avi"), "--grid", "24", "--max-latency", "0.001",
               "--threads", "--workers", "1"])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("walkcut: error")]
    if rc == 0:  # this machine segmented a frame within 1 microsecond of its arrival: nothing to check
        pytest.skip("a frame was written")
    assert rc == 1
    assert len(errors) == 1 and "none written" in errors[0] and "--max-latency" in errors[0], err
    assert not [line for line in err.splitlines() if "WARNING" in line or "ERROR" in line], err
    assert not (tmp_path / "o.avi").exists()
    assert_unchanged(before, tmp_path)


def test_truncated_video_says_so(tmp_path, capsys):
    whole = write_clip(tmp_path / "whole.avi", n=40)
    data = whole.read_bytes()
    half = tmp_path / "half.avi"
    half.write_bytes(data[: len(data) // 2])
    before = snapshot(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "walkcut", "video", str(half), "--labels-dir",
                           str(tmp_path / "labels"), "--grid", "8", "--threads"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("walkcut: error")]
    assert len(errors) == 1 and "of the 40 frames its container announces" in errors[0], proc.stderr
    assert "truncated" in errors[0]
    # FFmpeg's own lines ("[mjpeg @ 0x...] ...") stay off the terminal
    assert not [line for line in proc.stderr.splitlines() if line.startswith("[")], proc.stderr
    assert_unchanged(before, tmp_path)


def test_truncated_image_is_one_line_without_codec_noise(tmp_path):
    whole = write_image(tmp_path / "x.png", h=200, w=300)
    data = whole.read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "cut.jpg").write_bytes(cv2.imencode(".jpg", picture(200, 300))[1].tobytes()[:2000])
    before = snapshot(tmp_path)
    for name in ("cut.png", "cut.jpg"):
        proc = subprocess.run([sys.executable, "-m", "walkcut", "segment", str(tmp_path / name), "--out",
                               str(tmp_path / "out"), "--grid", "8"], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 1
        one_line(proc.stderr, name, "not a readable image")
    assert_unchanged(before, tmp_path)


def test_native_error_texts_become_one_readable_line():
    from walkcut.cli.errors import first_line

    try:
        cv2.resize(np.zeros((0, 0), np.uint8), (4, 4))
    except cv2.error as exc:
        line = first_line(exc)
    assert line.startswith("OpenCV resize() failed") and ".cpp" not in line and "\n" not in line
    with pytest.raises(OverflowError) as overflow:
        _ = 10.0 ** 400
    assert first_line(overflow.value) == "numerical result out of range (OverflowError)"
    e = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/out/.x_labels.png.a1b2.part")
    assert first_line(e) == os.strerror(errno.ENOSPC)


def test_atomic_write_errors_name_the_file_not_the_temporary(tmp_path):
    from walkcut.runtime.imageio import atomic_write_bytes

    gone = tmp_path / "missing" / "x.png"
    with pytest.raises(OSError) as info:
        atomic_write_bytes(gone, b"data")
    assert info.value.filename == str(gone) and ".part" not in str(info.value)


@pytest.mark.parametrize("argv, command", [
    (["segment", "x.png", "--out", "o", "--no-such-flag"], "segment"),
    (["video", "x.avi", "--out", "o.avi", "--no-such-flag"], "video"),
    (["eval", "bsds500", "--no-such-flag"], "eval"),
    (["bench", "--no-such-flag"], "bench"),
])
def test_subcommand_errors_point_at_that_subcommands_help(argv, command, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    assert main(argv) == 2
    one_line(capsys.readouterr().err, "--no-such-flag", f"`walkcut {command} --help`")
    assert_unchanged(before, tmp_path)


def test_eval_without_data_says_where_to_get_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WALKCUT_DATA", str(tmp_path / "nothing"))
    before = snapshot(tmp_path)
    assert main(["eval", "bsds500"]) == 2
    line = one_line(capsys.readouterr().err, "bsds500", "--root", "WALKCUT_DATA", "get it from", "https://")
    assert str(tmp_path / "nothing" / "bsds500") in line
    assert main(["eval", "camvid", "--root", str(tmp_path / "none")]) == 2
    one_line(capsys.readouterr().err, "camvid", "--root", "WALKCUT_DATA", "get it from")
    assert_unchanged(before, tmp_path)


# --- 6. a flat image is one segment ---------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["flat", "near-flat"])
def test_flat_image_is_one_segment(kind, tmp_path, capsys):
    img = np.full((120, 160, 3), 128, np.uint8)
    if kind == "near-flat":  # 1-grey-level noise: no visible boundary anywhere
        img = np.clip(img + np.random.default_rng(0).normal(0, 1, img.shape), 0, 255).astype(np.uint8)
    path = write_image(tmp_path / "flat.png", img)
    before = snapshot(tmp_path)
    assert main(["segment", str(path), "--out", str(tmp_path / "out")]) == 0
    assert "flat.png: 1 segment ->" in capsys.readouterr().out
    labels = cv2.imread(str(tmp_path / "out" / "flat_labels.png"), cv2.IMREAD_UNCHANGED)
    assert labels.shape == (120, 160) and not labels.any()
    assert_unchanged(before, tmp_path)


def test_contrast_test_leaves_natural_images_unchanged(monkeypatch):
    from conftest import data_path

    from walkcut.runtime.imageio import read_image
    from walkcut.runtime.segmenter import Segmenter
    from walkcut.runtime.sources.pixels import PixelSource

    folder = data_path("bsds500", "images", "val")
    segmenter = Segmenter(PixelSource())
    for path in sorted(folder.glob("*.jpg"))[:3]:
        image = read_image(path)
        with_test = segmenter.set_image(image).segment().labels
        assert segmenter.transition.contrast > 4 * defaults.FLAT_CONTRAST
        monkeypatch.setattr(defaults, "FLAT_CONTRAST", 0.0)
        without = segmenter.set_image(image).segment().labels
        monkeypatch.undo()
        assert np.array_equal(with_test, without), path.name


# --- 7. label outputs and progress ---------------------------------------------------------------------

def test_no_overlay_index8_and_color_labels(tmp_path, capsys):
    img = write_image(tmp_path / "x.png")
    before = snapshot(tmp_path)
    assert main(["segment", str(img), "--out", str(tmp_path / "a"), "--grid", "8", "--no-overlay"]) == 0
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["x_labels.png"]
    assert main(["segment", str(img), "--out", str(tmp_path / "b"), "--grid", "8", "--labels-format", "index8",
                 "--color-labels"]) == 0
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["x_labels.png", "x_labels_color.png",
                                                                    "x_overlay.png"]
    index8 = cv2.imread(str(tmp_path / "b" / "x_labels.png"), cv2.IMREAD_UNCHANGED)
    uint16 = cv2.imread(str(tmp_path / "a" / "x_labels.png"), cv2.IMREAD_UNCHANGED)
    assert index8.dtype == np.uint8 and uint16.dtype == np.uint16
    assert np.array_equal(index8, uint16) and index8.max() >= 1
    color = cv2.imread(str(tmp_path / "b" / "x_labels_color.png"), cv2.IMREAD_UNCHANGED)
    assert color.shape == (*index8.shape, 3)
    # one colour per segment
    assert len(np.unique(color.reshape(-1, 3), axis=0)) == len(np.unique(index8))
    capsys.readouterr()
    assert main(["segment", str(img), "--out", str(tmp_path / "c"), "--labels-format", "index8",
                 "--max-segments", "300"]) == 2
    one_line(capsys.readouterr().err, "index8", "256")
    assert_unchanged(before, tmp_path)


def test_video_progress_only_on_a_terminal(tmp_path, capsys, monkeypatch):
    clip = write_clip(tmp_path / "c.avi", n=4)
    before = snapshot(tmp_path)
    assert main(["video", str(clip), "--labels-dir", str(tmp_path / "l1"), "--grid", "8", "--threads"]) == 0
    assert "frame/s" not in capsys.readouterr().err
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert main(["video", str(clip), "--labels-dir", str(tmp_path / "l2"), "--grid", "8", "--threads"]) == 0
    err = capsys.readouterr().err
    assert "video: 0/4 frames" in err and "/4 frames, " in err and "frame/s" in err  # frames, rate, elapsed
    assert_unchanged(before, tmp_path)


def test_numeric_extremes_are_usage_errors_and_warnings_one_line(tmp_path, capsys, caplog):
    import argparse
    import warnings

    from walkcut.cli.errors import run_command

    img = write_image(tmp_path / "x.png")
    before = snapshot(tmp_path)
    for value in ("1e300", "1e-300"):  # once an OverflowError "(34, 'Numerical result out of range')"
        assert main(["segment", str(img), "--out", str(tmp_path / "out"), "--contour-scale", value]) == 2
        one_line(capsys.readouterr().err, "--contour-scale", "from 0.001 to 1000")
    assert not (tmp_path / "out").exists()

    def warns(args):
        warnings.warn("overflow encountered\nin divide", RuntimeWarning, stacklevel=1)
        return 0

    with caplog.at_level("WARNING"):
        assert run_command(warns, argparse.Namespace(command="segment")) == 0
    assert [r.getMessage() for r in caplog.records] == ["RuntimeWarning: overflow encountered in divide"]
    assert_unchanged(before, tmp_path)


def test_disk_full_under_the_video_writer_is_reported_on_a_real_tiny_tmpfs(tmp_path, capsys):
    # OpenCV's writer says nothing when the disk fills: the finished file is checked instead.
    clip = tmp_path / "noise.avi"
    w = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 120))
    rng = np.random.default_rng(0)
    for _ in range(30):
        w.write(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8))  # about 15 KB a frame
    w.release()
    before = snapshot(tmp_path)
    disk = _tmpfs(tmp_path / "disk")
    try:
        rc = main(["video", str(clip), "--out", str(disk / "o.avi"), "--grid", "8", "--threads"])
        assert rc == 1
        one_line(capsys.readouterr().err, "disk full writing", "o.avi", "of the 30 frames", "removed")
        assert not list(disk.iterdir())  # no broken video, no temporary file
    finally:
        subprocess.run(["umount", str(disk)], check=False)
    assert_unchanged(before, tmp_path)


def test_eval_honours_the_pixel_limit(tmp_path, capsys):
    root = _fake_bsds(tmp_path / "bsds", 2)
    before = snapshot(tmp_path)
    rc = main(["eval", "bsds500", "--root", str(root), "--grid", "8", "--no-progress", "--max-pixels", "1000",
               "--thresholds", "none"])
    assert rc == 1
    one_line(capsys.readouterr().err, "0.jpg", "240 x 160", "--max-pixels 38400")
    assert_unchanged(before, tmp_path)


def test_batch_num_cpus_above_the_cores_is_capped_with_a_note(tmp_path, capsys, monkeypatch):
    pytest.importorskip("ray")
    from walkcut.batch import pipeline
    from walkcut.runtime.video.workers import available_cores

    img = write_image(tmp_path / "x.png")
    before = snapshot(tmp_path)
    seen = {}

    def fake_run(images, config, **kw):  # what Ray would be started with; no Ray here
        seen["num_cpus"] = config.num_cpus
        return pipeline.BatchSummary(total=1, to_do=1, ok=1, manifest=tmp_path / "out" / "m.parquet")

    monkeypatch.setattr(pipeline, "run_batch", fake_run)
    cores = available_cores()
    assert main(["batch", str(img), "--out", str(tmp_path / "out"), "--num-cpus", str(cores + 5)]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if "--num-cpus" in line]
    assert notes == [f"walkcut: --num-cpus {cores + 5} is more than the {cores} core{'s' if cores > 1 else ''} "
                     f"here: using {cores}"]
    assert seen["num_cpus"] == cores
    assert_unchanged(before, tmp_path)
