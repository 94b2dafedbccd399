"""bench/bench_engines.py: runs every available engine and reports comparable numbers."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from helpers.engines import available_engines
from tiny_schedule import tiny_overrides


def _bench_module(project_root):
    spec = importlib.util.spec_from_file_location("bench_engines", project_root / "bench" / "bench_engines.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_runs_every_available_engine_and_writes_its_numbers(project_root, demo_root, tmp_path):
    out = tmp_path / "bench.json"
    overrides = tiny_overrides(**{"MODEL.DEVICE": "cpu"})
    done = subprocess.run([sys.executable, "bench/bench_engines.py", "--data", str(demo_root), "--iters", "5",
                           "--images", "2", "--out", str(out), *overrides],
                          cwd=project_root, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    ran = {name for name, (ok, _) in available_engines().items() if ok}
    assert set(result["results"]) == ran and "torchvision" in ran
    for row in result["results"].values():
        assert 0 < row["train_s_per_iter"] < 60 and 0 < row["predict_s_per_image"] < 60
        assert row["train_peak_mb"] > 50 and row["predict_peak_mb"] > 50
    assert set(result["not_available"]) == set(available_engines()) - ran
    assert "train s/iter" in done.stdout and "torchvision" in done.stdout


def test_table_gives_each_engine_its_ratio_to_the_first(project_root):
    bench = _bench_module(project_root)
    row = {"train_s_per_iter": 1.0, "predict_s_per_image": 0.5, "train_peak_mb": 100.0, "predict_peak_mb": 80.0}
    slower = {k: v * 2 for k, v in row.items()}
    table = bench.format_table({"torchvision": row, "detectron2": slower}, {"other": "not importable"})
    lines = table.splitlines()
    assert lines[1].split()[0] == "torchvision" and lines[2].split()[0] == "detectron2"
    assert lines[3].split() == ["detectron2/torchvision", "2.00x", "2.00x", "2.00x", "2.00x"]
    assert lines[4].startswith("other") and "not available: not importable" in lines[4]


def test_too_few_iterations_is_a_usage_error(project_root):
    bench = _bench_module(project_root)
    with pytest.raises(SystemExit):
        bench.parse_args(["--iters", str(bench.WARMUP_ITERS)])
