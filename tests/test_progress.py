"""Progress that a person sees in Jupyter and reads in a log: the bar, and plain lines at a cadence."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

from helpers import progress
from helpers.progress import Progress, format_duration


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(progress.time, "perf_counter", c)
    return c


def test_lines_every_tenth_and_at_the_end(clock):
    out = io.StringIO()
    p = Progress(300, "train", stream=out, bar=False)
    for it in range(300):
        clock.now += 0.5
        p.update(total_loss=1.0 / (it + 1), lr=0.00025)
    p.close()
    lines = out.getvalue().splitlines()
    iters = [int(line.split()[1].split("/")[0]) for line in lines]
    assert iters == [1] + list(range(30, 301, 30))  # the first, then one per tenth; the last says 300/300
    assert "lr 0.00025" in lines[0]  # exactly as configured, never 0.0003
    assert "0.5 s/it" in lines[1] and "ETA 2m15s" in lines[1]  # 270 iterations to go at 0.5 s
    assert lines[-1].startswith("[train] 300/300 (100%)") and "ETA 0s" in lines[-1]


def test_a_run_stopped_short_says_where(clock):
    out = io.StringIO()
    p = Progress(300, "train", stream=out, bar=False)
    for _ in range(7):
        clock.now += 1
        p.update(total_loss=0.5)
    p.close()
    assert out.getvalue().splitlines()[-1].startswith("[train] 7/300") and "stopped after 7s" in out.getvalue()


def test_a_line_at_least_every_minute_however_slow(clock):
    out = io.StringIO()
    p = Progress(30000, "train", initial=1000, stream=out, bar=False)
    for _ in range(10):
        clock.now += 25.0  # 25 s per iteration: the every-1500-iterations line would take 10 hours
        p.update(total_loss=2.0)
    lines = out.getvalue().splitlines()
    assert [line.split()[1] for line in lines] == ["1001/30000", "1004/30000", "1007/30000", "1010/30000"]  # 75 s apart at 25 s/it
    assert "ETA" in lines[-1] and "h" in lines[-1].split("ETA")[1]


def test_a_resumed_run_counts_from_where_it_stopped(clock):
    out = io.StringIO()
    p = Progress(10, "train", initial=7, stream=out, bar=False)
    for _ in range(3):
        clock.now += 1
        p.update(total_loss=0.5)
    p.close()
    assert out.getvalue().splitlines()[0].startswith("[train] 8/10 (80%)")
    assert out.getvalue().splitlines()[-1].startswith("[train] 10/10 (100%)")


def test_no_bar_where_nobody_watches_and_no_output_when_disabled():
    out = io.StringIO()
    p = Progress(5, "predict", unit="img", stream=out)  # stderr is pytest's capture: no terminal, no Jupyter
    assert p._bar is None
    quiet = Progress(5, "predict", stream=out, enabled=False)
    quiet.update()
    quiet.close()
    assert out.getvalue() == ""


@pytest.mark.parametrize("seconds, text", [(0, "0s"), (59.4, "59s"), (61, "1m01s"), (3600 * 5 + 120, "5h02m"),
                                           (float("inf"), "?")])
def test_durations(seconds, text):
    assert format_duration(seconds) == text


@pytest.mark.slow
def test_training_prints_progress_lines_into_a_redirected_log(project_root, demo_root, tmp_path):
    from tiny_schedule import tiny_overrides

    log = tmp_path / "train.log"
    with open(log, "w") as f:
        code = subprocess.run([sys.executable, "-m", "helpers", "train", "--config", str(project_root / "configs" / "demo.yaml"),
                               "--data", str(demo_root), "--run-dir", str(tmp_path / "run"), *tiny_overrides()],
                              cwd=project_root, stdout=f, stderr=subprocess.STDOUT, timeout=600).returncode
    text = log.read_text()
    assert code == 0, text[-2000:]
    assert "\r" not in text  # no bar redraws in a file
    lines = [line for line in text.splitlines() if line.startswith("[train] ")]
    assert [line.split()[1] for line in lines if "/6" in line] == ["1/6", "2/6", "3/6", "4/6", "5/6", "6/6"]
    assert all("total_loss" in line and " lr " in line and "s/it" in line and "ETA" in line for line in lines if "/6" in line)
    assert sum("val mask mAP@0.5 (segm AP50)" in line for line in lines) == 2  # TEST.EVAL_PERIOD 3 of 6


@pytest.mark.slow
def test_run_notebooks_log_output_shows_training_progress(demo_root, tmp_path, capfd):
    from helpers import pipeline

    tiny = {"SOLVER.MAX_ITER": 4, "SOLVER.CHECKPOINT_PERIOD": 2, "TEST.EVAL_PERIOD": 4, "SOLVER.WARMUP_ITERS": 1,
            "SOLVER.STEPS": [3], "INPUT.MIN_SIZE_TRAIN": [96], "INPUT.MIN_SIZE_TEST": 96}
    pipeline.run_notebooks("demo", data_root=demo_root, run_name="logtest", runs_dir=tmp_path / "runs",
                           params={"overrides": tiny, "make_demo_data": False}, only=["01", "02"], log_output=True)
    out = capfd.readouterr().out
    for it in range(1, 5):
        assert f"[train] {it}/4" in out, out[-3000:]
    assert "val mask mAP@0.5 (segm AP50)" in out
