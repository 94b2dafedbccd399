"""Checks both engines' tests share: the run folder, predictor output, and two runs ending bit-identical."""

from pathlib import Path

import json

import numpy as np
import torch

from helpers import runs
from tiny_schedule import MAX_ITER


def assert_run_folder_layout(run_dir: Path, extra_files: set, loss_keys: set) -> list[dict]:
    """detectron2's OUTPUT_DIR layout after the tiny schedule: files, a metrics row per iteration with
    ``loss_keys``, val metrics at iterations 2 and 5, the best checkpoint, a finished run.json.
    Returns the metrics rows."""
    names = {p.name for p in run_dir.iterdir()}
    assert {runs.CONFIG, runs.RUN_INFO, runs.METRICS, runs.LAST, runs.FINAL, runs.BEST, runs.BEST_INFO,
            "model_0000002.pth", "model_0000005.pth", *extra_files} <= names
    assert any(n.startswith("events.out.tfevents") for n in names)
    assert not [n for n in names if n.endswith(".tmp")]
    assert (run_dir / runs.LAST).read_text() == runs.FINAL
    rows = runs.read_metrics(run_dir)
    assert [r["iteration"] for r in rows] == list(range(MAX_ITER))
    for row in rows:
        assert loss_keys <= row.keys()
    assert [r["iteration"] for r in runs.eval_rows(rows)] == [2, 5]
    assert {"segm/AP", "segm/AP50", "bbox/AP", "bbox/AP50"} <= rows[2].keys()
    best = json.loads((run_dir / runs.BEST_INFO).read_text())
    assert best["iteration"] in (2, 5) and best["metric"] == "segm/AP50"  # TEST.BEST_METRIC default
    info = runs.read_run_info(run_dir)
    assert info["status"] == "finished" and "segm/AP" in info["final_metrics"]
    return rows


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


def weight_decay_groups_of(engine, project_root: Path, demo_root: Path) -> list[dict]:
    """The engine's optimizer groups for the demo config with decays 1e-4 / 0.01 (biases) / 0 (norms),
    after checking that exactly those three decays appear."""
    from helpers import concepts, data
    from helpers.config import load_config

    cfg = load_config(project_root / "configs" / "demo.yaml", {"SOLVER.WEIGHT_DECAY": 1e-4, "SOLVER.WEIGHT_DECAY_BIAS": 0.01,
                                                               "SOLVER.WEIGHT_DECAY_NORM": 0.0})
    categories = data.load_split(demo_root / data.TEST_JSON, check_images=False).categories
    groups = concepts.optimizer_groups(engine.build_optimizer(cfg, categories))
    assert sorted({g["weight_decay"] for g in groups}) == [0.0, 1e-4, 0.01]
    return groups


def assert_training_steps_replay(engine, run_dir: Path, count: int = 2) -> None:
    """The engine's ``training_steps`` on a run's config and split gives the run's first ``count``
    iterations' losses, exactly (a CPU run is deterministic): it measures the iterations the run ran."""
    from helpers import data, experiment

    cfg, info = experiment.load_run(run_dir)
    step = engine.training_steps(cfg, data.SplitPaths(Path(info["train_split"]), Path(info["val_split"])))
    rows = runs.read_metrics(run_dir)[:count]
    assert [r["iteration"] for r in rows] == list(range(count))
    for row in rows:
        losses = step()
        assert "total_loss" in losses and len(losses) > 2
        assert losses == {k: row[k] for k in losses}, f"iteration {row['iteration']}"
