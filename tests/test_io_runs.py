"""Atomic writes, the Instances container and the run-folder records."""

from __future__ import annotations

import json

import numpy as np
import pytest

from helpers import runs
from helpers.errors import EngineError
from helpers.instances import Instances
from helpers.io import atomic_write, write_json


def test_atomic_write_keeps_old_content_when_interrupted(tmp_path):
    path = tmp_path / "split.json"
    write_json(path, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_write(path) as f:
            f.write('{"v": 2, "half')
            raise RuntimeError("killed")
    assert json.loads(path.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["split.json"]


def test_instances_normalises_types_and_filters():
    inst = Instances(
        boxes=[[0, 0, 2, 2], [1, 1, 3, 3]],
        masks=np.ones((2, 4, 5)),
        scores=[0.9, 0.2],
        category_ids=[3, 7],
        image_size=(4, 5),
    )
    assert inst.masks.dtype == bool and inst.boxes.dtype == np.float32
    kept = inst.above(0.5)
    assert len(kept) == 1 and kept.category_ids.tolist() == [3]
    assert len(Instances.empty((4, 5))) == 0


def test_metrics_log_truncates_on_resume_and_skips_cut_lines(tmp_path):
    with runs.MetricsLog(tmp_path, start_iter=0) as log:
        for it in range(5):
            log.write({"iteration": it, "total_loss": 1.0 / (it + 1)})
    with open(tmp_path / runs.METRICS, "a") as f:
        f.write('{"iteration": 5, "total_lo')  # a line cut by a kill
    assert [r["iteration"] for r in runs.read_metrics(tmp_path)] == [0, 1, 2, 3, 4]
    with runs.MetricsLog(tmp_path, start_iter=3) as log:
        log.write({"iteration": 3, "total_loss": 0.1})
    assert [r["iteration"] for r in runs.read_metrics(tmp_path)] == [0, 1, 2, 3]


def test_checkpoints_last_and_resolution(tmp_path):
    assert runs.last_checkpoint(tmp_path) is None
    with pytest.raises(EngineError, match="no 'best' checkpoint"):
        runs.resolve_checkpoint(tmp_path, "best")
    runs.save_checkpoint(tmp_path, runs.checkpoint_name(2), {"iteration": 2})
    assert runs.last_checkpoint(tmp_path).name == "model_0000002.pth"
    runs.save_checkpoint(tmp_path, runs.FINAL, {"iteration": 5})
    assert runs.resolve_checkpoint(tmp_path, "best").name == runs.FINAL  # no best yet: final
    runs.save_checkpoint(tmp_path, runs.BEST, {"iteration": 3}, tag_last=False)
    assert runs.resolve_checkpoint(tmp_path, "best").name == runs.BEST
    assert runs.last_checkpoint(tmp_path).name == runs.FINAL


def test_best_tracking(tmp_path):
    assert runs.is_new_best(tmp_path, 0.1)
    runs.record_best(tmp_path, 9, 0.5)
    assert not runs.is_new_best(tmp_path, 0.4)
    assert runs.is_new_best(tmp_path, 0.6)


def test_partial_writes_are_removed_before_a_resume(tmp_path):
    runs.save_checkpoint(tmp_path, runs.checkpoint_name(1), {"iteration": 1})
    (tmp_path / ".model_0000003.pth.abc123.tmp").write_bytes(b"half a checkpoint")
    removed = runs.remove_partial_writes(tmp_path)
    assert [p.name for p in removed] == [".model_0000003.pth.abc123.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [runs.LAST, "model_0000001.pth"]


# ------------------------------------------------------------------------------- write failures


def test_os_error_while_writing_is_one_line_naming_the_file(tmp_path):
    import errno

    from helpers.errors import WriteError

    path = tmp_path / "submission.json"
    write_json(path, [1])
    with pytest.raises(WriteError) as info:
        with atomic_write(path) as f:
            f.write("[2")
            raise OSError(errno.ENOSPC, "No space left on device")
    message = str(info.value)
    assert message.startswith(f"cannot write {path}: No space left on device (ENOSPC)") and "\n" not in message
    assert json.loads(path.read_text()) == [1]
    assert [p.name for p in tmp_path.iterdir()] == ["submission.json"]


def test_torch_style_wrapped_os_error_is_a_write_error(tmp_path):
    """torch's zip writer turns the OSError of a full disk into a RuntimeError; its context is kept."""
    import errno

    from helpers.errors import WriteError

    with pytest.raises(WriteError, match=r"model\.pth: No space left on device"):
        with atomic_write(tmp_path / "model.pth", "wb"):
            try:
                raise OSError(errno.ENOSPC, "No space left on device")
            except OSError:
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
    assert list(tmp_path.iterdir()) == []


def test_permission_denied_and_folder_in_the_way(tmp_path, monkeypatch):
    import tempfile

    from helpers.errors import WriteError

    (tmp_path / "taken").mkdir()
    with pytest.raises(WriteError, match="taken: Is a directory"):
        write_json(tmp_path / "taken", {})

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    with pytest.raises(WriteError, match=r"cannot write .*x\.json: Permission denied \(EACCES\)"):
        write_json(tmp_path / "x.json", {})


def test_other_exceptions_pass_through_unchanged(tmp_path):
    with pytest.raises(KeyError):
        with atomic_write(tmp_path / "a.json"):
            raise KeyError("not a write problem")


def test_output_path_checks(tmp_path):
    from helpers.errors import WriteError
    from helpers.io import check_output_dir, check_output_path

    assert check_output_path(tmp_path / "m.json") == tmp_path / "m.json"
    with pytest.raises(WriteError, match="is a folder"):
        check_output_path(tmp_path)
    with pytest.raises(WriteError, match="does not exist"):
        check_output_path(tmp_path / "nope" / "m.json")
    (tmp_path / "file").write_text("x")
    with pytest.raises(WriteError, match="is a file"):
        check_output_dir(tmp_path / "file")
    with pytest.raises(WriteError, match="is a file"):
        check_output_dir(tmp_path / "file" / "sub")
    assert check_output_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"


def test_metrics_log_write_failure_leaves_no_partial_line(tmp_path, monkeypatch):
    import errno
    import os

    from helpers.errors import WriteError

    log = runs.MetricsLog(tmp_path, start_iter=0)
    log.write({"iteration": 0, "total_loss": 1.0})
    real_write = os.write

    def half_then_full(fd, data):
        real_write(fd, bytes(data[:5]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(WriteError, match=r"metrics\.json: No space left on device"):
        log.write({"iteration": 1, "total_loss": 0.5})
    monkeypatch.setattr(os, "write", real_write)
    log.close()
    assert (tmp_path / runs.METRICS).read_text() == json.dumps({"iteration": 0, "total_loss": 1.0}) + "\n"


def test_record_failure_rewrites_in_place_when_the_disk_is_full(tmp_path, monkeypatch):
    from helpers.errors import EngineError, WriteError

    runs.write_run_info(tmp_path, engine="torchvision", status="training", padding="x" * 200)

    def full(*args, **kwargs):
        raise WriteError("cannot write run.json: No space left on device (ENOSPC)")

    monkeypatch.setattr(runs, "write_text", full)
    runs.record_failure(tmp_path, EngineError("training diverged at iteration 4"))
    info = runs.read_run_info(tmp_path)
    assert info["status"] == "failed" and info["error"] == "training diverged at iteration 4"
    assert info["engine"] == "torchvision"


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A real 256 KiB file system (needs the privilege to mount; skipped where there is none)."""
    import subprocess

    mount = tmp_path / "fs"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()[:200]}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_a_real_full_disk(tiny_tmpfs):
    from helpers.errors import WriteError

    write_json(tiny_tmpfs / "split.json", {"v": 1})
    with pytest.raises(WriteError) as info:
        write_json(tiny_tmpfs / "split.json", {"v": "x" * 1_000_000})
    assert f"cannot write {tiny_tmpfs / 'split.json'}: No space left on device (ENOSPC)" in str(info.value)
    assert json.loads((tiny_tmpfs / "split.json").read_text()) == {"v": 1}
    assert sorted(p.name for p in tiny_tmpfs.iterdir()) == ["split.json"]
    runs.write_run_info(tiny_tmpfs, status="training", engine="torchvision")
    filler = tiny_tmpfs / "filler"
    with pytest.raises(OSError):
        with open(filler, "wb") as f:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
    runs.record_failure(tiny_tmpfs, WriteError("cannot write model_0000005.pth: No space left on device"))
    assert runs.read_run_info(tiny_tmpfs)["status"] == "failed"


# ------------------------------------------------------------------------------- checkpoints


def test_damaged_tag_and_checkpoints(tmp_path, capsys):
    state = {"model": {}, "iteration": 2}
    runs.save_checkpoint(tmp_path, runs.checkpoint_name(2), state)
    runs.save_checkpoint(tmp_path, runs.checkpoint_name(5), {**state, "iteration": 5})
    assert runs.resume_checkpoint(tmp_path).name == "model_0000005.pth"
    (tmp_path / runs.LAST).write_bytes(b"\xff\xfe garbage")  # a tag that is not text: still found by name
    assert runs.resume_checkpoint(tmp_path).name == "model_0000005.pth"
    (tmp_path / runs.LAST).write_text("model_0000009.pth")  # names a file a sync never delivered
    assert runs.resume_checkpoint(tmp_path).name == "model_0000005.pth"
    assert "model_0000009.pth file not found; using" in capsys.readouterr().err
    assert (tmp_path / runs.LAST).read_text() == "model_0000005.pth"
    runs.save_checkpoint(tmp_path, "model_0000007.pth", {"not": "a checkpoint"})
    assert runs.resume_checkpoint(tmp_path).name == "model_0000005.pth"
    assert "is not a complete checkpoint" in capsys.readouterr().err


def test_damaged_records_are_one_line(tmp_path):
    (tmp_path / runs.RUN_INFO).write_text('{"status": "trai')
    with pytest.raises(EngineError, match=r"run\.json: invalid JSON"):
        runs.read_run_info(tmp_path)
    (tmp_path / runs.BEST_INFO).write_text('{"iteration": 3}')
    with pytest.raises(EngineError, match=r"best\.json: damaged record"):
        runs.read_best(tmp_path)
