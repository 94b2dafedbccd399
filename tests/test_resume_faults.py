"""A run survives damage: a truncated last checkpoint, a full disk, a failure of any kind (torchvision, CPU).

Each case trains the tiny schedule in process through the CLI (``helpers.__main__.main``), damages the
run folder as a Drive disconnect or a full disk would, and checks the one-line error, the run.json
status and that resuming ends bit-identical to an undisturbed run.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import shutil
from pathlib import Path

import pytest

from helpers import experiment, runs
from helpers.__main__ import main
from engine_checks import assert_same_run
from tiny_schedule import tiny_overrides

pytestmark = pytest.mark.slow


def train_argv(project_root: Path, demo_root: Path, run_dir: Path, *flags: str) -> list[str]:
    return ["train", "--config", str(project_root / "configs" / "demo.yaml"), "--data", str(demo_root),
            "--run-dir", str(run_dir), *flags, *tiny_overrides()]


@pytest.fixture(scope="module")
def reference(project_root, demo_root, tmp_path_factory) -> Path:
    """An undisturbed tiny run: checkpoints after iterations 2 and 5, then model_final.pth."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    assert main(train_argv(project_root, demo_root, run_dir)) == 0
    return run_dir


def copy_run(reference: Path, tmp_path: Path) -> Path:
    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    return run_dir


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if "error:" in line]


def test_truncated_last_checkpoint_resumes_from_the_previous_one(project_root, demo_root, reference, tmp_path, capsys):
    """Killed after the checkpoint of iteration 5, which a sync then left half-written."""
    run_dir = copy_run(reference, tmp_path)
    (run_dir / runs.FINAL).unlink()
    (run_dir / runs.LAST).write_text("model_0000005.pth")
    truncate(run_dir / "model_0000005.pth")
    runs.write_run_info(run_dir, status="training")
    capsys.readouterr()
    assert main(train_argv(project_root, demo_root, run_dir, "--resume")) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1, err[-2000:]
    assert "model_0000005.pth does not load" in warnings[0]
    assert "model_0000002.pth (iteration 2)" in warnings[0]
    assert_same_run(run_dir, reference)
    assert runs.read_run_info(run_dir)["status"] == "finished"
    assert (run_dir / runs.LAST).read_text() == runs.FINAL


def test_corrupt_bytes_inside_the_last_checkpoint_are_caught_by_its_crc(project_root, demo_root, reference, tmp_path,
                                                                       capsys):
    """torch.load reads flipped tensor bytes without complaint; the zip CRC does not."""
    run_dir = copy_run(reference, tmp_path)
    (run_dir / runs.FINAL).unlink()
    (run_dir / runs.LAST).write_text("model_0000005.pth")
    path = run_dir / "model_0000005.pth"
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(64)
    path.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(train_argv(project_root, demo_root, run_dir, "--resume")) == 0
    assert "fails its CRC check" in capsys.readouterr().err
    assert_same_run(run_dir, reference)


def test_predict_last_falls_back_past_a_damaged_checkpoint(demo_root, reference, tmp_path, capsys):
    run_dir = copy_run(reference, tmp_path)
    truncate(run_dir / runs.FINAL)  # last_checkpoint names it
    out = tmp_path / "sub.json"
    capsys.readouterr()
    assert main(["predict", "--run-dir", str(run_dir), "--images", str(demo_root / "test.json"), "--out", str(out),
                 "--checkpoint", "last", "--score-thresh", "0.0"]) == 0
    err = capsys.readouterr().err
    assert f"warning: {run_dir / runs.FINAL} does not load" in err
    assert "model_0000005.pth (iteration 5) instead" in err
    assert isinstance(json.loads(out.read_text()), list)
    assert (run_dir / runs.LAST).read_text() == runs.FINAL  # predict reads a run; it does not retag it


def test_no_complete_checkpoint_is_one_line_and_failed(project_root, demo_root, reference, tmp_path, capsys):
    run_dir = copy_run(reference, tmp_path)
    (run_dir / runs.FINAL).unlink()
    (run_dir / runs.LAST).write_text("model_0000005.pth")
    for name in ("model_0000005.pth", "model_0000002.pth"):
        truncate(run_dir / name)
    capsys.readouterr()
    assert main(train_argv(project_root, demo_root, run_dir, "--resume")) == 2
    err = capsys.readouterr().err
    assert error_lines(err) == [err.splitlines()[-1]] and "no complete checkpoint to resume from" in err
    info = runs.read_run_info(run_dir)
    assert info["status"] == "failed" and "no complete checkpoint" in info["error"]


class _FullDisk(io.RawIOBase):
    """A file that takes ``room`` bytes, then fails as a full disk does."""

    def __init__(self, f, room: int):
        self.f, self.room = f, room

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        if len(b) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(b)
        return self.f.write(b)


def test_full_disk_at_a_checkpoint_is_one_line_keeps_the_previous_and_resumes(project_root, demo_root, reference,
                                                                              tmp_path, capsys, monkeypatch):
    real_atomic_write = runs.atomic_write

    @contextlib.contextmanager
    def atomic_write(path, mode="w", **kwargs):  # the disk fills up while the checkpoint of iteration 5 is written
        with real_atomic_write(path, mode, **kwargs) as f:
            yield _FullDisk(f, room=4096) if Path(path).name == "model_0000005.pth" else f

    monkeypatch.setattr(runs, "atomic_write", atomic_write)
    run_dir = tmp_path / "run"
    capsys.readouterr()
    assert main(train_argv(project_root, demo_root, run_dir)) == 2
    err = capsys.readouterr().err
    lines = error_lines(err)
    assert len(lines) == 1 and lines[0] == err.splitlines()[-1] and lines[0].startswith("error: "), err[-2000:]
    assert f"cannot write {run_dir / 'model_0000005.pth'}: No space left on device (ENOSPC)" in lines[0]
    assert "Traceback" not in err
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]
    assert not (run_dir / "model_0000005.pth").exists() and not (run_dir / runs.FINAL).exists()
    assert runs.checkpoint_problem(run_dir / "model_0000002.pth") == (2, None)
    assert runs.last_checkpoint(run_dir) == run_dir / "model_0000002.pth"
    info = runs.read_run_info(run_dir)
    assert info["status"] == "failed" and "No space left on device" in info["error"]

    monkeypatch.setattr(runs, "atomic_write", real_atomic_write)  # space freed
    assert main(train_argv(project_root, demo_root, run_dir, "--resume")) == 0
    assert_same_run(run_dir, reference)
    assert runs.read_run_info(run_dir)["status"] == "finished"


@pytest.mark.parametrize("error", [RuntimeError("CUDA error: an illegal memory access\nmore"), KeyboardInterrupt()])
def test_any_failure_during_training_records_failed(project_root, demo_root, tmp_path, monkeypatch, error):
    from helpers.engines import torchvision_engine as tve

    def broken(*args, **kwargs):
        raise error

    monkeypatch.setattr(tve, "train", broken)
    run_dir = tmp_path / "run"
    with pytest.raises(type(error)):
        experiment.train(project_root / "configs" / "demo.yaml", tiny_overrides(), data_root=demo_root,
                         run_dir=run_dir, progress=False)
    info = runs.read_run_info(run_dir)
    assert info["status"] == "failed"
    assert info["error"] == ("RuntimeError: CUDA error: an illegal memory access more" if isinstance(error, RuntimeError)
                             else "interrupted (KeyboardInterrupt)")
