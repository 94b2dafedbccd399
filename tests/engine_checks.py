"""Checks both engines' tests share: predictor output, and two runs ending bit-identical."""

from pathlib import Path

import numpy as np
import torch

from helpers import runs
from tiny_schedule import MAX_ITER


def assert_instances_fit_images(images: list, outputs: list, valid_ids: set) -> None:
    """One Instances per image: full-size bool masks, XYXY float32 boxes, sorted scores, the data set's ids."""
    assert len(outputs) == len(images)
    for image, inst in zip(images, outputs):
        h, w = image.shape[:2]
        assert inst.image_size == (h, w) and len(inst) > 0
        assert inst.masks.shape == (len(inst), h, w) and inst.masks.dtype == bool
        assert inst.boxes.shape == (len(inst), 4) and inst.boxes.dtype == np.float32
        assert inst.scores.dtype == np.float32 and np.all(np.diff(inst.scores) <= 0)
        assert set(inst.category_ids.tolist()) <= valid_ids


def final_state(run_dir: Path) -> dict:
    return torch.load(run_dir / runs.FINAL, map_location="cpu", weights_only=True)["model"]


def assert_same_run(run_dir: Path, reference: Path) -> None:
    """Bit-identical final weights, and every iteration logged once with the same losses."""
    ours, ref = final_state(run_dir), final_state(reference)
    assert ours.keys() == ref.keys()
    different = [k for k in ref if not torch.equal(ours[k], ref[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"
    rows, ref_rows = runs.read_metrics(run_dir), runs.read_metrics(reference)
    assert [r["iteration"] for r in rows] == list(range(MAX_ITER))
    assert [r["total_loss"] for r in rows] == [r["total_loss"] for r in ref_rows]
    assert [r.get("segm/AP") for r in rows] == [r.get("segm/AP") for r in ref_rows]
