"""``walkcut batch`` on a local Ray (2 CPUs, started and stopped by this module).

Outputs must equal ``walkcut segment``'s byte for byte (pixel source and an ONNX engine, both with the
engine inside the CPU tasks and with an actor pool), the manifest must hold one right row per
input, a bad file must be a row with its error, an interrupted run must resume with every output
written exactly once, and a worker killed mid-task must be retried.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

ray = pytest.importorskip("ray")
pq = pytest.importorskip("pyarrow.parquet")

from walkcut.batch import collect_batch_inputs
from walkcut.batch.work import FAULT_ENV
from walkcut.cli import main
from walkcut.inputs import InputError

GRID = ["--grid", "16"]  # 256-node graphs: every image cuts in a fraction of a second


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _blobs(seed: int, h: int = 72, w: int = 96) -> np.ndarray:
    """A BGR image of a few coloured rectangles on noise: clear segments for the cuts."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 40, (h, w, 3), dtype=np.uint8)
    for _ in range(3):
        y, x = rng.integers(0, h - 20), rng.integers(0, w - 20)
        img[y:y + rng.integers(15, h - y), x:x + rng.integers(15, w - x)] = rng.integers(60, 255, 3)
    return img


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    for i in range(6):
        cv2.imwrite(str(folder / f"img{i:02d}.png"), _blobs(i))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return folder


def _segment(inputs, out: Path, *extra) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "walkcut", "segment", *map(str, inputs), "--out", str(out), *extra],
                          check=False, capture_output=True, text=True, timeout=300)


def _pngs(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*.png"))}


def _manifest(out: Path) -> list[dict]:
    return pq.read_table(out / "manifest.parquet").to_pylist()


def test_outputs_equal_segment_and_manifest_reports_each_input(local_ray, image_dir, tmp_path, capsys):
    ref = tmp_path / "segment"
    done = _segment(sorted(image_dir.iterdir()), ref, *GRID)
    assert done.returncode == 1, done.stderr  # the broken file
    out = tmp_path / "batch"
    assert main(["batch", str(image_dir), "--out", str(out), *GRID]) == 1
    err = capsys.readouterr().err
    assert "using the Ray already started" in err
    assert f"walkcut: error: {image_dir / 'broken.jpg'}: not a readable image" in err
    got, want = _pngs(out), _pngs(ref)
    assert len(want) == 12 and got == want  # labels + overlay of 6 images, byte for byte

    rows = _manifest(out)
    assert [Path(r["input"]).name for r in rows] == ["broken.jpg"] + [f"img{i:02d}.png" for i in range(6)]
    bad, good = rows[0], rows[1:]
    assert bad["status"] == "error" and "broken.jpg: not a readable image" in bad["error"]
    assert bad["segments"] == 0 and not Path(bad["labels"]).exists()
    for row in good:
        assert row["status"] == "ok" and row["error"] == ""
        labels = cv2.imread(row["labels"], cv2.IMREAD_UNCHANGED)
        assert labels.dtype == np.uint16 and labels.shape == (row["height"], row["width"]) == (72, 96)
        assert row["segments"] == labels.max() + 1 >= 2
        assert Path(row["overlay"]).exists()
        assert row["seconds_cuts"] > 0 and row["seconds_upsample"] > 0 and row["seconds_write"] > 0
        assert np.isnan(row["seconds_engine"])  # pixel source: no engine stage


def test_source_flags_give_the_labels_of_segment(local_ray, image_dir, tmp_path):
    """--preset and --contour-scale mean on batch what they mean on segment (one source builder)."""
    images = [image_dir / f"img{i:02d}.png" for i in range(2)]
    flags = ["--preset", "street", "--contour-scale", "3"]
    ref = tmp_path / "segment"
    assert _segment(images, ref, *flags).returncode == 0
    plain = tmp_path / "plain"
    assert _segment(images, plain).returncode == 0
    out = tmp_path / "batch"
    assert main(["batch", *map(str, images), "--out", str(out), *flags]) == 0
    got = _pngs(out)
    assert got == _pngs(ref)
    assert got != _pngs(plain)  # the flags changed the labels: they were not ignored


def test_engine_outputs_equal_segment_in_tasks_and_in_an_actor_pool(local_ray, image_dir, tmp_path):
    pytest.importorskip("onnx")
    from test_backends import build_fake_model

    model = tmp_path / "fake.onnx"
    # The model carries its own cut settings: both commands, and both batch paths, must use them.
    build_fake_model(model, contract_overrides={"cut_defaults": {"max_segments": 3}})
    images = [image_dir / f"img{i:02d}.png" for i in range(4)]
    ref = tmp_path / "segment"
    done = _segment(images, ref, "--engine", str(model))
    assert done.returncode == 0, done.stderr
    want = _pngs(ref)
    for extra in ([], ["--actors", "1", "--batch-size", "3"]):
        out = tmp_path / f"batch{len(extra)}"
        assert main(["batch", *map(str, images), "--out", str(out), "--engine", str(model), *extra]) == 0
        assert _pngs(out) == want, extra
        rows = _manifest(out)
        assert all(r["status"] == "ok" and r["seconds_engine"] > 0 for r in rows)
        assert all(r["seconds_preprocess"] >= 0 for r in rows)
        assert all(1 <= r["segments"] <= 3 for r in rows)  # the model's max_segments


@pytest.mark.slow
def test_driver_segments_while_its_local_ray_starts(image_dir, tmp_path):
    """Without a running Ray the command starts one, and the driver cuts images from the head of the
    queue meanwhile: the outputs must still be segment's, each written once, each in the manifest."""
    images = [image_dir / f"img{i:02d}.png" for i in range(6)]
    ref, out = tmp_path / "segment", tmp_path / "batch"
    assert _segment(images, ref, *GRID).returncode == 0
    done = subprocess.run([sys.executable, "-m", "walkcut", "-v", "batch", *map(str, images), "--out", str(out),
                           *GRID, "--num-cpus", "1"], check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _pngs(out) == _pngs(ref)
    assert [r["status"] for r in _manifest(out)] == ["ok"] * 6
    import re
    found = re.search(r"the driver segmented (\d+) of 6 images while Ray started", done.stderr)
    assert found and int(found.group(1)) >= 1, done.stderr[-2000:]  # ray.init takes seconds, an image ~0.1 s


def test_killed_worker_is_retried(local_ray, image_dir, tmp_path, monkeypatch):
    images = [image_dir / f"img{i:02d}.png" for i in range(3)]
    ref = tmp_path / "segment"
    assert _segment(images, ref, *GRID).returncode == 0
    marker = tmp_path / "fault-fired"
    monkeypatch.setenv(FAULT_ENV, f"img01:{marker}")
    out = tmp_path / "batch"
    assert main(["batch", *map(str, images), "--out", str(out), *GRID, "--images-per-block", "1"]) == 0
    assert marker.exists()  # the first attempt of img01's task killed its worker
    assert _pngs(out) == _pngs(ref)  # ... and the retry wrote the same result
    assert [r["status"] for r in _manifest(out)] == ["ok"] * 3


def _terminate_after_two_overlays(cmd: list[str], out: Path) -> str:
    """Run a batch command, SIGTERM it once two overlays exist under ``out``; assert exit 130 and
    return its stderr."""
    driver = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while len(list(out.rglob("*_overlay.png"))) < 2 and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    driver.send_signal(signal.SIGTERM)
    _, err = driver.communicate(timeout=60)
    assert driver.returncode == 130, err
    return err


def test_interrupted_run_resumes_and_writes_every_output_once(local_ray, tmp_path):
    src = tmp_path / "in"
    for sub in ("a", "b"):  # same file names in two folders: outputs mirror the folders
        (src / sub).mkdir(parents=True)
        for i in range(7):
            cv2.imwrite(str(src / sub / f"x{i}.png"), _blobs(100 + i + (50 if sub == "b" else 0), 120, 160))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "walkcut", "batch", str(src), "--out", str(out), "--grid", "32",
           "--images-per-block", "1", "--ray-address", "auto"]
    err = _terminate_after_two_overlays(cmd, out)
    assert "interrupted" in err

    before = {p: p.stat() for p in out.rglob("*.png")}
    for p in before:  # whatever exists is complete
        assert cv2.imread(str(p), cv2.IMREAD_UNCHANGED) is not None, p
    complete = {p.with_name(p.name.replace("_overlay.png", "_labels.png")) for p in before
                if p.name.endswith("_overlay.png") and p.with_name(p.name.replace("_overlay", "_labels")).exists()}
    assert 2 <= len(complete) < 14

    assert main(["batch", str(src), "--out", str(out), "--grid", "32"]) == 0
    after = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    want = sorted(f"{s}/x{i}_{kind}.png" for s in "ab" for i in range(7) for kind in ("labels", "overlay"))
    assert after == want + ["manifest.parquet"]  # nothing partial, no part files left
    for p in complete:  # complete outputs were not written again
        assert p.stat().st_mtime_ns == before[p].st_mtime_ns and p.stat().st_ino == before[p].st_ino
    rows = _manifest(out)
    assert sorted(Path(r["labels"]).relative_to(out).as_posix() for r in rows) == \
        sorted(w for w in want if w.endswith("_labels.png"))
    assert all(r["status"] in ("ok", "skipped") for r in rows)
    assert sum(r["status"] == "ok" for r in rows) >= 14 - len(complete)


def test_list_files_keep_missing_entries_and_name_like_segment(tmp_path, image_dir):
    listing = tmp_path / "list.txt"
    listing.write_text(f"# inputs\n{image_dir / 'img00.png'}\n\n{tmp_path / 'gone.png'}\n{image_dir}/img0[12].png\n")
    images = collect_batch_inputs([f"@{listing}"])
    assert [im.path.name for im in images] == ["img00.png", "gone.png", "img01.png", "img02.png"]
    assert collect_batch_inputs([], [str(listing)]) == images
    with pytest.raises(InputError, match="no such list file"):
        collect_batch_inputs([f"@{tmp_path / 'nope.txt'}"])
    with pytest.raises(InputError, match="no such file or folder"):
        collect_batch_inputs([str(tmp_path / "gone.png")])  # on the command line a typo is a usage error


def test_existing_outputs_are_skipped_unless_overwrite(local_ray, image_dir, tmp_path, capsys):
    images = [str(image_dir / "img04.png")]
    out = tmp_path / "out"
    assert main(["batch", *images, "--out", str(out), *GRID, "--no-overlay"]) == 0
    first = (out / "img04_labels.png").stat().st_mtime_ns
    assert not (out / "img04_overlay.png").exists()
    capsys.readouterr()
    assert main(["batch", *images, "--out", str(out), *GRID, "--no-overlay"]) == 0
    assert "1 complete from an earlier run" in capsys.readouterr().err
    assert (out / "img04_labels.png").stat().st_mtime_ns == first
    assert [r["status"] for r in _manifest(out)] == ["ok"]  # the earlier row is carried over
    assert main(["batch", *images, "--out", str(out), *GRID, "--no-overlay", "--overwrite"]) == 0
    assert (out / "img04_labels.png").stat().st_mtime_ns > first


def test_without_ray_the_command_says_how_to_install_it(image_dir, tmp_path):
    script = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'ray' or name.startswith('ray.'):\n"
        "            raise ImportError('blocked')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from walkcut.cli import main\n"
        f"sys.exit(main(['batch', {str(image_dir / 'img00.png')!r}, '--out', {str(tmp_path / 'o')!r}]))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2
    assert "pip install 'walkcut[ray]'" in done.stderr
    assert not (tmp_path / "o").exists()


# -- scheduling: blocks, the driver's share, Ray's environment ----------------------------------

def test_blocks_shrink_to_single_images_as_the_queue_empties():
    from walkcut.batch.pipeline import block_size

    remaining, sizes = 100, []
    while remaining:
        sizes.append(block_size(6, remaining, slots=2))
        remaining -= sizes[-1]
    assert sizes[0] == 6 and max(sizes) == 6  # the cap from the job count
    assert sizes == sorted(sizes, reverse=True)  # never growing
    assert sizes[-8:] == [1] * 8  # the last image of each slot's quarter share is alone
    assert block_size(32, 10_000, slots=64) == 32 and block_size(32, 5, slots=64) == 1


def test_local_ray_environment_keeps_what_the_user_set(monkeypatch):
    import os

    from walkcut.batch.pipeline import WORKER_NICENESS, _environ, driver_cuts_beside_ray

    monkeypatch.delenv("RAY_worker_niceness", raising=False)
    with _environ(WORKER_NICENESS):
        assert os.environ["RAY_worker_niceness"] == "0"
    assert "RAY_worker_niceness" not in os.environ
    monkeypatch.setenv("RAY_worker_niceness", "7")
    with _environ(WORKER_NICENESS):
        assert os.environ["RAY_worker_niceness"] == "7"
    assert os.environ["RAY_worker_niceness"] == "7"
    assert not driver_cuts_beside_ray(1) and driver_cuts_beside_ray(2)


def test_driver_head_shares_the_queue_with_ray_tasks_to_the_end(local_ray, image_dir, tmp_path):
    """The driver's own cuts and the Ray tasks take jobs from one queue: every job is done once, by
    one of them, with the same bytes as segment; the driver's rows come out of the same stream."""
    from collections import deque

    from walkcut.batch.pipeline import BatchConfig, DriverHead, make_jobs, stream_rows
    from walkcut.cli import build_parser
    from walkcut.cli.args import cut_options, source_spec
    from walkcut.inputs import collect_images
    from walkcut.outputs import options_record

    paths = [str(image_dir / f"img{i:02d}.png") for i in range(6)]
    ref, out = tmp_path / "segment", tmp_path / "batch"
    assert _segment(paths, ref, *GRID).returncode == 0
    args = build_parser().parse_args(["batch", *paths, "--out", str(out), *GRID])  # the options batch runs with
    spec = source_spec(args)
    cfg = BatchConfig(out=out, options=cut_options(args, spec), source=spec)
    jobs = make_jobs(collect_images(paths), out, settings=options_record(spec, cfg.options))
    queue = deque(enumerate(jobs))
    head = DriverHead(queue, spec, cfg.options, to_the_end=True)
    head.start()
    deadline = time.monotonic() + 60
    while len(queue) == len(jobs) and time.monotonic() < deadline:  # the driver has its first image
        time.sleep(0.001)
    rows = list(stream_rows(queue, cfg, resources=ray.cluster_resources(), fault=None, head=head))
    assert sorted(r["key"] for r in rows) == list(range(6))
    assert all(r["status"] == "ok" for r in rows)
    assert 1 <= head.count <= 6 and not head.is_alive()
    assert _pngs(out) == _pngs(ref)


_SESSION_PROBE = """
import os, sys
import ray
from ray._private import ray_constants, worker
from walkcut.batch.pipeline import _stop_autoscaler_monitor, ray_session

with ray_session(None, 2, driver_cuts=True) as (text, owned):
    nice = ray.get(ray.remote(lambda: os.nice(0)).remote())
    print(text, ray.cluster_resources()["CPU"], nice, owned)
    monitor = worker._global_node.all_processes[ray_constants.PROCESS_TYPE_MONITOR][0].process
    _stop_autoscaler_monitor()
    print("monitor stopped", monitor.wait(timeout=10) is not None)
"""


@pytest.mark.slow
def test_local_ray_gives_the_driver_a_cpu_and_its_workers_the_drivers_priority(tmp_path):
    """A local Ray of 2 CPUs keeps 1 for the driver's cuts; its workers run at niceness 0 unless the
    user set RAY_worker_niceness; its autoscaler monitor can be stopped before the shutdown (the
    Ray handle used for that is not public API: this says when an upgrade moved it)."""
    import os

    env = {k: v for k, v in os.environ.items() if k != "RAY_worker_niceness"}
    done = subprocess.run([sys.executable, "-c", _SESSION_PROBE], capture_output=True, text=True, timeout=300,
                          env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("started a local Ray with 2 CPUs: 1 for its workers, 1 for this driver's own cuts")
    assert lines[0].endswith(" 1.0 0 True")  # Ray's CPUs, the worker's niceness, ours
    assert lines[1] == "monitor stopped True"
    done = subprocess.run([sys.executable, "-c", _SESSION_PROBE], capture_output=True, text=True, timeout=300,
                          env={**env, "RAY_worker_niceness": "5"}, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines()[0].endswith(" 1.0 5 True")


@pytest.mark.slow
def test_interrupted_while_the_driver_cuts_beside_its_ray_resumes(tmp_path):
    """SIGTERM while the driver and its local Ray both cut: exit 130, every file there complete, and
    the rerun finishes the rest without writing anything twice."""
    src = tmp_path / "in"
    src.mkdir()
    for i in range(10):
        cv2.imwrite(str(src / f"x{i}.png"), _blobs(200 + i, 120, 160))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "walkcut", "batch", str(src), "--out", str(out), "--grid", "32", "--num-cpus", "2"]
    _terminate_after_two_overlays(cmd, out)
    before = {p: p.stat() for p in out.rglob("*.png")}
    for p in before:
        assert cv2.imread(str(p), cv2.IMREAD_UNCHANGED) is not None, p
    complete = {p for p in before if p.name.endswith("_labels.png")
                and p.with_name(p.name.replace("_labels", "_overlay")).exists()}
    assert 2 <= len(complete) < 10
    saved = _manifest_rows_so_far(out)  # the journal: rows of the driver's own cuts and of Ray's
    assert saved and all(r["status"] == "ok" and Path(r["labels"]) in complete for r in saved)

    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(p.name for p in out.glob("*.png")) == sorted(f"x{i}_{k}.png" for i in range(10)
                                                                  for k in ("labels", "overlay"))
    for p in complete:
        assert p.stat().st_mtime_ns == before[p].st_mtime_ns and p.stat().st_ino == before[p].st_ino
    assert [r["status"] for r in _manifest(out)] == ["ok"] * 10


def _manifest_rows_so_far(out: Path) -> list[dict]:
    """The rows an interrupted run left: its journals (and part files)."""
    from walkcut.batch.manifest import PARTS_DIR, ManifestWriter

    return list(ManifestWriter(out / "manifest.parquet", out / PARTS_DIR).earlier_rows().values())
