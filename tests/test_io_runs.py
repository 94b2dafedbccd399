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
