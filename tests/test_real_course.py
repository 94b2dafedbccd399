"""Real Tiny VOC through the whole course: the homework's R50-FPN config on the offline subset,
on a CPU, at smoke scale (configs/profiles/tinyvoc-cpu.yaml). Skips where the subset is absent."""

from __future__ import annotations

import json

import pytest

from helpers import data, pipeline, runs, submission
from helpers.config import load_config


@pytest.mark.slow
def test_the_course_runs_on_real_tiny_voc(tinyvoc_root, tmp_path):
    run_root = pipeline.run_notebooks("tinyvoc-cpu", data_root=tinyvoc_root, runs_dir=tmp_path / "runs",
                                      report_dir=tmp_path / "report")
    for name in pipeline.NOTEBOOK_ORDER:
        assert (run_root / "notebooks" / f"{name}.ipynb").is_file()
    # 01: a split of the real annotations, 20 VOC classes on both sides
    real = data.load_root(tinyvoc_root, check_images=False)
    train = data.load_split(run_root / "data" / "train.json", check_images=False)
    val = data.load_split(run_root / "data" / "val.json", check_images=False)
    assert len(train.images) + len(val.images) == len(real.train.images)
    assert [c["name"] for c in val.categories][:3] == ["aeroplane", "bicycle", "bird"] and len(val.categories) == 20
    # 02: R50-FPN, 20 classes, trained and evaluated
    cfg = load_config(run_root / "train" / runs.CONFIG)
    assert cfg["MODEL.RESNETS.DEPTH"] == 50 and cfg["MODEL.ROI_HEADS.NUM_CLASSES"] == 20
    assert runs.is_finished(run_root / "train")
    assert [r["iteration"] for r in runs.read_metrics(run_root / "train")] == [0, 1, 2, 3]
    # 03: the ablation's table
    assert json.loads((run_root / "ablation" / "results.json").read_text())
    # 04: a submission for all 100 official test images that validates as the grader reads it
    summary = submission.validate_submission(tinyvoc_root / data.TEST_JSON, run_root / "submission.json")
    assert summary["images_total"] == 100
    ids = {e["image_id"] for e in json.loads((run_root / "submission.json").read_text())}
    assert ids <= {img["id"] for img in data.load_split(tinyvoc_root / data.TEST_JSON, check_images=False).images}
    metrics = json.loads((run_root / "val_metrics.json").read_text())
    assert 0.0 <= metrics["segm"]["AP50"] <= 1.0 and len(metrics["segm"]["per_class"]) == 20
    tta = json.loads((run_root / "tta.json").read_text())  # at the profile's sizes, not detectron2's 400..1200
    assert tta["min_sizes"] == [224, 256, 288] and [r["tta"] for r in tta["rows"]] == [False, True]
    # 05 and the report
    assert (run_root / "figures" / "05_per_class_ap50.png").is_file()
    assert (tmp_path / "report" / "report.md").is_file()
