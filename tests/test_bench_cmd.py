"""`walkcut bench`: stage table and JSON, and the dense-reference comparison."""

import json

import numpy as np
from conftest import planted_walk, same_partition
from walkcut.runtime.cuts.graph import affinity

from walkcut.cli import main
from walkcut.cli.bench import bench_compare_dense
from walkcut.eval.reference import dense_recursive_ncut


def test_bench_prints_stages_and_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--runs", "2", "--warmup", "1", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    for stage in ("source", "cuts", "upsample", "video encode", "total"):
        assert f"| {stage} |" in text
    report = json.loads(out.read_text())
    assert report["stages"]["cuts"]["runs"] == 2
    assert report["stages"]["total"]["median_ms"] >= report["stages"]["cuts"]["median_ms"] > 0


def test_bench_bad_image_is_a_clear_error(tmp_path, capsys):
    assert main(["bench", str(tmp_path / "nope.png")]) == 1
    assert "no such file" in capsys.readouterr().err


def test_dense_reference_agrees_on_planted_graph():
    P, truth = planted_walk([40, 30, 50], p_out=0.01, seed=9)
    W = np.asarray(affinity(P), dtype=np.float64)
    assert same_partition(dense_recursive_ncut(W, 0.3), truth)


def test_compare_dense_reports_same_partition():
    (row,) = bench_compare_dense(runs=1, grids=(12,))
    assert row["same_partition"] and row["n"] == 144 and row["speedup"] > 0


def test_compare_methods_times_both_and_reports_agreement(tmp_path, capsys):
    out = tmp_path / "methods.json"
    assert main(["bench", "--compare-methods", "--grid", "16", "--runs", "1", "--warmup", "0",
                 "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| fast |" in text and "| reference |" in text and "adjusted Rand index" in text
    res = json.loads(out.read_text())["compare_methods"]
    assert res["n"] == 256
    assert res["methods"]["fast"]["runs"] == 1 and res["methods"]["reference"]["median_ms"] > 0
    assert 0.0 <= res["ari"] <= 1.0 and res["segments"]["fast"] >= 1


def test_frame_budget_times_every_stage_at_both_sizes(tmp_path, capsys):
    from walkcut.cli.bench import FRAME_STAGES
    from walkcut.runtime.defaults import VIDEO_MAX_SEGMENTS

    out = tmp_path / "budget.json"
    assert main(["bench", "--frame-budget", "--grid", "8", "--runs", "2", "--warmup", "1", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    for stage in FRAME_STAGES:
        assert f"| {stage} |" in text
    report = json.loads(out.read_text())
    assert report["cut_options"]["max_segments"] == VIDEO_MAX_SEGMENTS  # the video command's settings
    assert set(report["frame_budget"]) == {"480x360", "1280x720"}
    for size in report["frame_budget"].values():
        assert set(size["stages"]) == set(FRAME_STAGES)
        assert all(s["runs"] == 2 and s["median_ms"] >= 0 for s in size["stages"].values())
        assert size["stages"]["cuts"]["median_ms"] > 0 and size["cpu_total_median_ms"] > 0
        assert size["segments_median"] >= 1
    # Without the contour term there is nothing to time for it.
    off = tmp_path / "budget_off.json"
    assert main(["bench", "--frame-budget", "--grid", "8", "--runs", "1", "--warmup", "0",
                 "--contour-scale", "off", "--json", str(off)]) == 0
    assert "|   contour term |" not in capsys.readouterr().out
    assert all("  contour term" not in s["stages"] for s in json.loads(off.read_text())["frame_budget"].values())
