"""Battery for the output policy (walkcut/outputs.py): nothing a user owns is lost.

Every case makes its own files, runs a subcommand, and checks the exit code, the one error line,
and that every file present before the command is byte-identical after it (:func:`snapshot`).
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from file_snapshot import assert_unchanged, snapshot
from walkcut.cli import main
from walkcut.outputs import FRAMES_MARKER, png_with_record, read_record

GRID = ["--grid", "16"]  # 256-node graphs: each image cuts in a fraction of a second


# -- helpers --------------------------------------------------------------------------------------

def one_error(err: str) -> str:
    """The single ``walkcut: error:`` line of ``err`` (and there is exactly one)."""
    lines = [line for line in err.splitlines() if line.startswith("walkcut: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def blobs(seed: int, h: int = 48, w: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 40, (h, w, 3), dtype=np.uint8)
    for _ in range(3):
        y, x = rng.integers(0, h - 16), rng.integers(0, w - 16)
        img[y:y + rng.integers(12, h - y), x:x + rng.integers(12, w - x)] = rng.integers(60, 255, 3)
    return img


def write_image(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(path.suffix or ".png", blobs(seed))
    assert ok
    path.write_bytes(buf.tobytes())
    return path


def write_clip(path: Path, n: int = 4) -> Path:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48))
    for t in range(n):
        w.write(np.roll(blobs(1), 3 * t, axis=1))
    w.release()
    return path


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def outputs_of(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


# -- 1. one output policy: existing files, inputs, pairs, label folders ---------------------------

def test_segment_refuses_a_users_file_with_an_outputs_name(tmp_path, capsys):
    img = write_image(tmp_path / "x.png")
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "x_overlay.png").write_bytes(b"my own picture")
    before = snapshot(tmp_path)
    code, _, err = run(capsys, "segment", img, "--out", tmp_path / "o", *GRID)
    line = one_error(err)
    assert code == 2 and "x_overlay.png" in line and "--overwrite" in line
    assert_unchanged(before, tmp_path)
    assert not (tmp_path / "o" / "x_labels.png").exists()  # refused before any work


def test_segment_never_replaces_an_input_even_with_overwrite(tmp_path, capsys):
    img = write_image(tmp_path / "x.png")
    user = write_image(tmp_path / "x_labels.png", seed=3)  # an input that is also x.png's output name
    link = tmp_path / "alias_labels.png"
    os.link(img, link)  # a hard link: another name for an input
    before = snapshot(tmp_path)
    code, _, err = run(capsys, "segment", img, user, "--out", tmp_path, "--overwrite", *GRID)
    line = one_error(err)
    assert code == 2 and "never replaces an input" in line and "x_labels.png" in line
    assert_unchanged(before, tmp_path)
    alias = write_image(tmp_path / "alias.png", seed=4)
    before = snapshot(tmp_path)
    code, _, err = run(capsys, "segment", img, alias, "--out", tmp_path, "--overwrite", *GRID)
    assert code == 2 and "never replaces an input" in one_error(err)
    assert_unchanged(before, tmp_path)


def test_video_out_is_refused_when_it_exists_or_is_the_input(tmp_path, capsys):
    clip = write_clip(tmp_path / "clip.mp4")
    mine = tmp_path / "mine.mp4"
    mine.write_bytes(b"a video I made")
    link = tmp_path / "link.mp4"
    link.symlink_to(clip)
    before = snapshot(tmp_path)
    code, _, err = run(capsys, "video", clip, "--out", mine, *GRID)
    line = one_error(err)
    assert code == 2 and "mine.mp4" in line and "--overwrite" in line
    for target in (clip, link):  # the input itself, or a link to it
        code, _, err = run(capsys, "video", clip, "--out", target, "--overwrite", *GRID)
        assert code == 2 and "never replaces an input" in one_error(err)
    code, _, err = run(capsys, "video", link, "--out", clip, "--overwrite", *GRID)
    assert code == 2 and "never replaces an input" in one_error(err)
    assert_unchanged(before, tmp_path)


def test_labels_dir_of_another_run_is_cleared_only_with_overwrite(tmp_path, capsys):
    clip = write_clip(tmp_path / "clip.mp4", n=4)
    frames = tmp_path / "frames"
    code, _, err = run(capsys, "video", clip, "--labels-dir", frames, *GRID)
    assert code == 0, err
    assert outputs_of(frames) == [FRAMES_MARKER, "000000.png", "000001.png", "000002.png", "000003.png"]
    (frames / "notes.txt").write_text("mine")
    before = snapshot(tmp_path)
    code, _, err = run(capsys, "video", clip, "--labels-dir", frames, "--max-frames", "2", *GRID)
    line = one_error(err)
    assert code == 2 and "--overwrite" in line and "earlier run" in line
    assert_unchanged(before, tmp_path)
    code, _, err = run(capsys, "video", clip, "--labels-dir", frames, "--max-frames", "2", "--overwrite", *GRID)
    assert code == 0, err
    # no stale frames of the earlier, longer run; the user's own file is kept
    assert outputs_of(frames) == [FRAMES_MARKER, "000000.png", "000001.png", "notes.txt"]
    assert (frames / "notes.txt").read_text() == "mine"
    assert_unchanged({k: v for k, v in before.items() if not k.startswith("frames/")}, tmp_path)


def test_labels_dir_with_frames_walkcut_did_not_write_is_refused_even_with_overwrite(tmp_path, capsys):
    clip = write_clip(tmp_path / "clip.mp4")
    frames = tmp_path / "frames"
    write_image(frames / "000000.png")  # the user's, no marker
    before = snapshot(tmp_path)
    code, _, err = run(capsys, "video", clip, "--labels-dir", frames, "--overwrite", *GRID)
    line = one_error(err)
    assert code == 2 and "did not write" in line and "--labels-dir" in line
    assert_unchanged(before, tmp_path)


def test_eval_json_and_gallery_are_refused_before_any_work(tmp_path, capsys):
    mine = tmp_path / "photo.png"
    write_image(mine)
    before = snapshot(tmp_path)
    # no dataset at --root: the refusal comes first, before the data is even looked for
    code, _, err = run(capsys, "eval", "bsds500", "--root", tmp_path / "nothing", "--json", mine)
    line = one_error(err)
    assert code == 2 and "photo.png" in line and "--overwrite" in line
    code, _, err = run(capsys, "eval", "bsds500", "--root", tmp_path / "nothing", "--gallery", mine)
    assert code == 2 and "--overwrite" in one_error(err)
    code, _, err = run(capsys, "eval", "bsds500", "--root", tmp_path / "nothing", "--json", tmp_path / "r.png",
                       "--gallery", tmp_path / "r.png")
    assert code == 2 and "same file" in one_error(err)
    assert_unchanged(before, tmp_path)


def test_bench_json_is_refused_when_it_exists_or_is_the_input(tmp_path, capsys):
    img = write_image(tmp_path / "x.png")
    mine = tmp_path / "numbers.json"
    mine.write_text('{"mine": 1}')
    before = snapshot(tmp_path)
    code, _, err = run(capsys, "bench", img, "--json", mine, "--runs", "1", "--warmup", "0", *GRID)
    line = one_error(err)
    assert code == 2 and "numbers.json" in line and "--overwrite" in line
    code, _, err = run(capsys, "bench", img, "--json", img, "--overwrite", "--runs", "1", "--warmup", "0", *GRID)
    assert code == 2 and "never replaces an input" in one_error(err)
    assert_unchanged(before, tmp_path)
    code, _, err = run(capsys, "bench", img, "--json", mine, "--overwrite", "--runs", "1", "--warmup", "0", *GRID)
    assert code == 0, err
    assert "stages" in json.loads(mine.read_text())


def test_export_out_is_refused_when_it_exists_or_is_the_model(tmp_path, capsys):
    model = tmp_path / "model.onnx"
    model.write_bytes(b"a real export, not to be replaced by random weights")
    before = snapshot(tmp_path)
    code, _, err = run(capsys, "export", "--random-weights", "--arch", "tiny", "--out", model)
    line = one_error(err)
    assert code == 2 and "model.onnx" in line and "--overwrite" in line
    code, _, err = run(capsys, "export", "--model", model, "--out", model, "--overwrite")
    assert code == 2 and "never replaces an input" in one_error(err)
    engine = tmp_path / "other.engine"
    engine.write_bytes(b"an engine")
    code, _, err = run(capsys, "export", "--random-weights", "--arch", "tiny", "--out", tmp_path / "other.onnx",
                       "--trt")
    line = one_error(err)
    assert code == 2 and "other.engine" in line and "--overwrite" in line
    assert_unchanged(before, tmp_path)


def test_pair_stays_whole_when_the_second_write_fails(tmp_path, capsys, monkeypatch):
    import walkcut.runtime.imageio as imageio

    img = write_image(tmp_path / "x.png")
    out = tmp_path / "o"
    assert run(capsys, "segment", img, "--out", out, *GRID)[0] == 0
    write_image(img, seed=9)  # new content: the next run makes a different pair
    before = snapshot(tmp_path)
    real, calls = imageio.write_temporary, []

    def disk_full_on_second(path, data):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, data)

    monkeypatch.setattr(imageio, "write_temporary", disk_full_on_second)
    code, _, err = run(capsys, "segment", img, "--out", out, "--overwrite", *GRID)
    assert code == 1 and "disk full writing" in one_error(err)
    assert len(calls) == 2
    assert_unchanged(before, tmp_path)  # the old label map AND the old overlay
    assert outputs_of(out) == ["x_labels.png", "x_overlay.png"]  # no temporary left behind


def test_swap_restores_the_old_pair_when_a_rename_fails(tmp_path, monkeypatch):
    from walkcut.runtime import imageio

    a, b = tmp_path / "a.png", tmp_path / "b.png"
    a.write_bytes(b"old a")
    b.write_bytes(b"old b")
    real = os.replace

    def fail_on_b(src, dst):
        if Path(dst) == b and ".part" in Path(src).name:
            raise OSError(errno.EIO, "I/O error")
        return real(src, dst)

    monkeypatch.setattr(imageio.os, "replace", fail_on_b)
    with pytest.raises(OSError):
        imageio.write_all_or_none([(a, b"new a"), (b, b"new b")])
    assert a.read_bytes() == b"old a" and b.read_bytes() == b"old b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png"]


# -- 2. unique, stable names ----------------------------------------------------------------------

def test_colliding_names_in_one_folder_give_distinct_outputs(tmp_path, capsys):
    src = tmp_path / "in"
    for i, name in enumerate(("x.jpg", "x.png", "x.jpg.png")):
        write_image(src / name, seed=i)
    before = snapshot(tmp_path)
    code, out, err = run(capsys, "segment", src, "--out", tmp_path / "o", *GRID)
    assert code == 0, err
    assert "segmented 3 of 3 images" in out
    assert outputs_of(tmp_path / "o") == sorted(f"{n}_{k}.png" for n in ("x.jpg", "x.png", "x.jpg.png")
                                                for k in ("labels", "overlay"))
    records = {read_record(tmp_path / "o" / f"{n}_labels.png")["input"]["path"] for n in ("x.jpg", "x.png", "x.jpg.png")}
    assert len(records) == 3  # three results, one per input
    assert_unchanged(before, tmp_path)


def test_names_do_not_depend_on_the_other_inputs(tmp_path, capsys):
    photos = tmp_path / "photos"
    write_image(photos / "sub" / "a.png")
    other = write_image(tmp_path / "elsewhere" / "deep" / "b.png", seed=1)
    assert run(capsys, "segment", photos, "--out", tmp_path / "o1", *GRID)[0] == 0
    assert run(capsys, "segment", photos, other, "--out", tmp_path / "o2", *GRID)[0] == 0
    assert run(capsys, "segment", str(photos / "**" / "*.png"), "--out", tmp_path / "o3", *GRID)[0] == 0
    assert "sub/a_labels.png" in outputs_of(tmp_path / "o1")
    assert "sub/a_labels.png" in outputs_of(tmp_path / "o2") and "b_labels.png" in outputs_of(tmp_path / "o2")
    assert "sub/a_labels.png" in outputs_of(tmp_path / "o3")
    # same file, same name, same bytes whatever else was given
    assert (tmp_path / "o1" / "sub" / "a_labels.png").read_bytes() == (tmp_path / "o2" / "sub" / "a_labels.png").read_bytes()


def test_same_file_name_from_two_arguments_keeps_both(tmp_path, capsys):
    a = write_image(tmp_path / "a" / "x.png", seed=1)
    b = write_image(tmp_path / "b" / "x.png", seed=2)
    code, _, err = run(capsys, "segment", a, b, "--out", tmp_path / "o", *GRID)
    assert code == 0, err
    labels = [p for p in outputs_of(tmp_path / "o") if p.endswith("_labels.png")]
    assert len(labels) == 2  # both results kept, under the paths as given
    assert all(p.endswith(("a/x.png_labels.png", "b/x.png_labels.png")) for p in labels)


# -- 3. resume ------------------------------------------------------------------------------------

def test_skip_existing_skips_only_outputs_made_from_this_input_with_these_settings(tmp_path, capsys):
    img = write_image(tmp_path / "x.png")
    out = tmp_path / "o"
    assert run(capsys, "segment", img, "--out", out, "--threshold", "0.3", *GRID)[0] == 0
    record = read_record(out / "x_labels.png")
    assert record["input"]["size"] == img.stat().st_size and record["settings"]["cuts"]["threshold"] == 0.3
    before = snapshot(tmp_path)
    code, _, err = run(capsys, "segment", img, "--out", out, "--threshold", "0.3", "--skip-existing", *GRID)
    assert code == 0 and "skipping 1 image" in err
    code, _, err = run(capsys, "segment", img, "--out", out, "--threshold", "0.5", "--skip-existing", *GRID)
    line = one_error(err)
    assert code == 2 and "other settings" in line and "threshold 0.3 (now 0.5)" in line and "--overwrite" in line
    assert_unchanged(before, tmp_path)


def test_skip_existing_refuses_outputs_of_a_changed_input(tmp_path, capsys):
    img = write_image(tmp_path / "x.png")
    out = tmp_path / "o"
    assert run(capsys, "segment", img, "--out", out, *GRID)[0] == 0
    write_image(img, seed=5)
    os.utime(img, ns=(img.stat().st_atime_ns, img.stat().st_mtime_ns + 10**9))
    before = snapshot(tmp_path)
    code, _, err = run(capsys, "segment", img, "--out", out, "--skip-existing", *GRID)
    line = one_error(err)
    assert code == 2 and "earlier version" in line and "--overwrite" in line
    assert_unchanged(before, tmp_path)


def test_skip_existing_refuses_a_half_pair_or_a_foreign_file(tmp_path, capsys):
    img = write_image(tmp_path / "x.png")
    out = tmp_path / "o"
    assert run(capsys, "segment", img, "--out", out, *GRID)[0] == 0
    (out / "x_overlay.png").unlink()
    before = snapshot(tmp_path)
    code, _, err = run(capsys, "segment", img, "--out", out, "--skip-existing", *GRID)
    line = one_error(err)
    assert code == 2 and "x_overlay.png" in line and "missing" in line and "--overwrite" in line
    assert_unchanged(before, tmp_path)
    # a user's own PNG under the overlay's name: a valid picture, but walkcut did not write it
    write_image(out / "x_overlay.png", seed=7)
    before = snapshot(tmp_path)
    code, _, err = run(capsys, "segment", img, "--out", out, "--skip-existing", *GRID)
    line = one_error(err)
    assert code == 2 and "x_overlay.png" in line and "did not write" in line
    assert_unchanged(before, tmp_path)


def test_record_round_trips_and_leaves_the_pixels_alone(tmp_path):
    labels = (np.arange(48 * 64).reshape(48, 64) % 700).astype(np.uint16)
    ok, buf = cv2.imencode(".png", labels)
    record = {"version": 1, "input": {"path": "caf\udce9.png", "size": 3, "mtime_ns": 4}, "settings": {},
              "outputs": ["x_labels.png"]}
    data = png_with_record(buf.tobytes(), record)
    path = tmp_path / "x_labels.png"
    path.write_bytes(data)
    assert read_record(path) == record
    assert np.array_equal(cv2.imread(str(path), cv2.IMREAD_UNCHANGED), labels)
    path.write_bytes(buf.tobytes())
    assert read_record(path) is None


# -- 4. output folders are never read as input ----------------------------------------------------

def test_out_inside_the_input_folder_is_never_read(tmp_path, capsys):
    photos = tmp_path / "photos"
    write_image(photos / "a.png")
    write_image(photos / "b.jpg", seed=1)
    for _ in range(2):
        code, out, err = run(capsys, "segment", photos, "--out", photos / "seg", "--skip-existing", *GRID)
        assert code == 0, err
    assert outputs_of(photos / "seg") == ["a_labels.png", "a_overlay.png", "b_labels.png", "b_overlay.png"]
    assert "nothing to do" in out
    # --out the input folder itself: the files walkcut wrote there are not inputs either
    for _ in range(2):
        code, out, err = run(capsys, "segment", photos, "--out", photos, "--skip-existing", *GRID)
        assert code == 0, err
    assert not [p for p in outputs_of(photos) if "_labels_" in p or "_overlay_" in p]
    assert "nothing to do" in out


# -- batch: the same policy on Ray ----------------------------------------------------------------

@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    pytest.importorskip("pyarrow")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _manifest(path: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


@pytest.mark.slow
def test_batch_names_resume_and_manifest(local_ray, tmp_path, capsys, monkeypatch):
    from walkcut.batch.manifest import ManifestWriter

    src = tmp_path / "in"
    for i, name in enumerate(("x.jpg", "x.png", "x.jpg.png")):
        write_image(src / name, seed=i)
    weird = os.path.join(os.fsencode(src), b"caf\xe9.png")  # not UTF-8
    with open(weird, "wb") as f:
        f.write(cv2.imencode(".png", blobs(4))[1].tobytes())
    out = src / "seg"  # inside the input folder: never read back
    # A driver killed after its rows arrived, before any flush: the journal keeps them.
    monkeypatch.setattr(ManifestWriter, "flush", lambda self: None)
    monkeypatch.setattr(ManifestWriter, "finish", lambda self, order, carried: (_ for _ in ()).throw(SystemExit(9)))
    with pytest.raises(SystemExit):
        main(["batch", str(src), "--out", str(out), *GRID])
    monkeypatch.undo()
    capsys.readouterr()
    assert list((out / ".walkcut-batch").glob("journal-*.jsonl"))
    # the journal is walkcut's own run state: merged into the manifest and removed by the next run
    before = {k: v for k, v in snapshot(tmp_path).items() if "/.walkcut-batch/" not in k}
    code, _, err = run(capsys, "batch", src, "--out", out, *GRID)
    assert code == 0, err
    assert "4 complete from an earlier run" in err
    assert_unchanged(before, tmp_path)
    rows = _manifest(out / "manifest.parquet")
    assert len(rows) == 4 and len({r["input"] for r in rows}) == 4  # every input once
    assert all(r["status"] == "ok" and r["segments"] > 0 and r["seconds_cuts"] == r["seconds_cuts"] for r in rows)
    assert any("\\xe9" in r["input"] for r in rows)
    labels = sorted(Path(r["labels"]).name for r in rows)
    assert labels == ["caf\\xe9_labels.png", "x.jpg.png_labels.png", "x.jpg_labels.png", "x.png_labels.png"]
    # other settings: refused before any work, nothing touched
    before = snapshot(tmp_path)
    code, _, err = run(capsys, "batch", src, "--out", out, "--threshold", "0.9", *GRID)
    line = one_error(err)
    assert code == 2 and "other settings" in line and "--overwrite" in line
    assert_unchanged(before, tmp_path)
    # a manifest path holding a user's file
    mine = tmp_path / "mine.parquet"
    mine.write_bytes(b"my data")
    before = snapshot(tmp_path)
    code, _, err = run(capsys, "batch", src, "--out", out, "--manifest", mine, *GRID)
    line = one_error(err)
    assert code == 2 and "not a walkcut manifest" in line and "--overwrite" in line
    assert_unchanged(before, tmp_path)


@pytest.mark.slow
def test_batch_rebuilds_rows_whose_journal_was_lost(local_ray, tmp_path, capsys):
    src = tmp_path / "in"
    write_image(src / "a.png")
    out = tmp_path / "o"
    assert run(capsys, "batch", src, "--out", out, *GRID)[0] == 0
    (out / "manifest.parquet").unlink()  # outputs without any row
    code, _, err = run(capsys, "batch", src, "--out", out, *GRID)
    assert code == 0, err
    (row,) = _manifest(out / "manifest.parquet")
    assert row["status"] == "ok" and row["segments"] > 0 and row["height"] == 48 and row["width"] == 64


def test_batch_refuses_a_users_file_with_an_outputs_name_before_ray_starts(tmp_path, capsys):
    pytest.importorskip("ray")
    pytest.importorskip("pyarrow")
    src = tmp_path / "in"
    write_image(src / "a.png")
    write_image(src / "b.png", seed=1)
    out = tmp_path / "o"
    out.mkdir()
    (out / "b_labels.png").write_bytes(b"my own label map")
    before = snapshot(tmp_path)
    code, _, err = run(capsys, "batch", src, "--out", out, *GRID)
    line = one_error(err)
    assert code == 2 and "b_labels.png" in line and "did not write" in line and "--overwrite" in line
    assert "ray:" not in err  # refused before Ray was started
    assert_unchanged(before, tmp_path)
    assert outputs_of(out) == ["b_labels.png"]


def test_relative_to_mirrors_one_root_and_refuses_inputs_outside_it(tmp_path, capsys):
    root = tmp_path / "shoot"
    a = write_image(root / "day1" / "x.png")
    b = write_image(root / "day2" / "x.png", seed=1)
    code, _, err = run(capsys, "segment", a, b, "--relative-to", root, "--out", tmp_path / "o", *GRID)
    assert code == 0, err
    assert [p for p in outputs_of(tmp_path / "o") if p.endswith("_labels.png")] == ["day1/x_labels.png",
                                                                                     "day2/x_labels.png"]
    stray = write_image(tmp_path / "stray.png", seed=2)
    before = snapshot(tmp_path)
    code, _, err = run(capsys, "segment", a, stray, "--relative-to", root, "--out", tmp_path / "o2", *GRID)
    line = one_error(err)
    assert code == 2 and "stray.png" in line and "--relative-to" in line
    assert_unchanged(before, tmp_path)
    assert not (tmp_path / "o2").exists()
