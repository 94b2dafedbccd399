"""The course notebooks: hygiene (stripped, one literal parameters cell) and a headless run of all five."""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import pytest

from helpers.pipeline import NOTEBOOK_ORDER
from helpers.paths import NOTEBOOKS

NOTEBOOK_FILES = [NOTEBOOKS / f"{name}.ipynb" for name in NOTEBOOK_ORDER]


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def test_the_five_notebooks_exist_in_order():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == [p.name for p in NOTEBOOK_FILES]


@pytest.mark.parametrize("path", NOTEBOOK_FILES, ids=lambda p: p.stem)
def test_notebook_is_committed_stripped(path):
    for cell in _cells(path):
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [], f"{path.name}: a code cell has outputs"
            assert cell.get("execution_count") is None, f"{path.name}: a code cell has an execution count"


@pytest.mark.parametrize("path", NOTEBOOK_FILES, ids=lambda p: p.stem)
def test_one_parameters_cell_of_plain_literals(path):
    tagged = [c for c in _cells(path) if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: needs exactly one cell tagged 'parameters'"
    tree = ast.parse("".join(tagged[0]["source"]))
    assert tree.body, "empty parameters cell"
    for node in tree.body:
        assert isinstance(node, ast.Assign) and len(node.targets) == 1, f"{path.name}: only NAME = literal lines"
        ast.literal_eval(node.value)  # raises on anything but a plain literal


@pytest.mark.parametrize("path", NOTEBOOK_FILES, ids=lambda p: p.stem)
def test_opens_with_what_it_teaches_a_colab_badge_and_the_setup_cell(path):
    cells = _cells(path)
    intro = "".join(cells[0]["source"])
    assert cells[0]["cell_type"] == "markdown" and "colab.research.google.com" in intro
    assert "What you learn" in intro and "Reads" in intro and "Writes" in intro
    assert "colab.setup(" in "".join(cells[1]["source"])


def _is_png(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 1000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_all_notebooks_run_headless_in_order_and_the_report_builds(demo_root, tmp_path):
    """papermill runs 01 -> 05 on the demo data with a tiny schedule; check what they wrote."""
    from helpers import data, pipeline, runs, submission

    tiny = {"SOLVER.MAX_ITER": 4, "SOLVER.CHECKPOINT_PERIOD": 2, "TEST.EVAL_PERIOD": 2, "SOLVER.WARMUP_ITERS": 1,
            "SOLVER.STEPS": [3], "INPUT.MIN_SIZE_TRAIN": [96], "INPUT.MIN_SIZE_TEST": 96,
            "MODEL.ROI_HEADS.SCORE_THRESH_TEST": 0.0}
    run_root = pipeline.run_notebooks(
        "demo", data_root=demo_root, run_name="nbtest", runs_dir=tmp_path / "runs", report_dir=tmp_path / "report",
        params={"overrides": tiny, "ablation_overrides": {}, "make_demo_data": False, "solutions": True},
        report=True,
    )
    for name in NOTEBOOK_ORDER:
        executed = run_root / "notebooks" / f"{name}.ipynb"
        assert executed.is_file()
    # 01: the split
    val = data.load_split(run_root / "data" / "val.json", check_images=False)
    train = data.load_split(run_root / "data" / "train.json", check_images=False)
    assert val.images and train.images
    assert not {i["id"] for i in val.images} & {i["id"] for i in train.images}
    # 02: the run folder and its metrics
    rows = runs.read_metrics(run_root / "train")
    assert [r["iteration"] for r in rows] == list(range(4))
    evals = runs.eval_rows(rows)
    assert evals and all(0.0 <= r["segm/AP"] <= 1.0 and 0.0 <= r["bbox/AP50"] <= 1.0 for r in evals)
    assert runs.is_finished(run_root / "train")
    assert json.loads((run_root / "train" / "best.json").read_text())["metric"] == "segm/AP50"
    # 03: the demo's variants, two seeds each, final-checkpoint metrics, verdicts, decay arithmetic
    results = json.loads((run_root / "ablation" / "results.json").read_text())
    assert [s["variant"] for s in results["summary"]] == ["no_decay", "homework", "strong"]
    assert all(s["segm/AP50"]["n"] == 2 and s["segm/AP50"]["half_width"] is not None for s in results["summary"])
    assert {(r["variant"], r["seed"]) for r in results["runs"]} == {(v, s) for v in ("no_decay", "homework", "strong")
                                                                     for s in (0, 1)}
    assert [c["a"] for c in results["comparisons"]] == ["homework", "strong"]
    assert all("beats" in c["verdict"] or "no difference" in c["verdict"] for c in results["comparisons"])
    assert [d["variant"] for d in results["decay"]] == ["no_decay", "homework", "strong"]
    # 04: the inference checks
    order = json.loads((run_root / "channel_order.json").read_text())
    assert [r["as_trained"] for r in order["rows"]] == [True, False] and order["trained_with"] == "RGB"
    sweep = json.loads((run_root / "threshold_sweep.json").read_text())
    assert {0.0, 0.05, 0.5, 0.9} <= {r["threshold"] for r in sweep["rows"]}
    tta = json.loads((run_root / "tta.json").read_text())
    assert tta["augmentations"] == 6 and [r["tta"] for r in tta["rows"]] == [False, True]
    # 04: a submission that validates, and val metrics
    summary = submission.validate_submission(demo_root / "test.json", run_root / "submission.json")
    assert summary["images_total"] == len(json.loads((demo_root / "test.json").read_text())["images"])
    metrics = json.loads((run_root / "val_metrics.json").read_text())
    assert set(metrics["segm"]) >= {"AP", "AP50", "AP75", "per_class"}
    # figures from 01, 02, 03, 05
    for fig in ["01_dataset_stats", "01_samples", "02_training_curves", "03_ablation", "05_predictions",
                "05_gt_vs_pred", "05_per_class_ap50", "05_pr_curves", "05_worst_images"]:
        assert _is_png(run_root / "figures" / f"{fig}.png"), fig
    # 05: the error analysis, its figures
    analysis = json.loads((run_root / "error_analysis.json").read_text())
    assert set(analysis["errors"]) == {"classification", "localisation", "both", "duplicate", "background", "missed"}
    assert analysis["metric"] == "mask mAP@0.5 (segm AP50)" and "confusion" in analysis
    stages = ["02_stage1_input", "02_stage2_features", "02_stage3_anchors", "02_stage4_anchor_matching",
              "02_stage5_proposals", "02_stage6_roi_align", "02_stage7_box_head", "02_stage8_mask_head"]
    for fig in ["02_lr_schedule", *stages, "05_error_breakdown", "05_confusion_matrix", "05_error_images", "04_channel_order",
                "04_threshold_sweep"]:
        assert _is_png(run_root / "figures" / f"{fig}.png"), fig
    # every exercise ran its check with the filled-in solution, and it was right
    from helpers import exercises

    for name in NOTEBOOK_ORDER:
        text = "".join("".join(o.get("text", "")) for c in _cells(run_root / "notebooks" / f"{name}.ipynb")
                       if c["cell_type"] == "code" for o in c.get("outputs", []))  # nbformat stores lines as a list
        for ex in exercises.names(name):
            assert f"[{ex}] correct" in text, (name, ex)
    # the report
    report = tmp_path / "report"
    assert (report / "report.md").is_file()
    md = (report / "report.md").read_text()
    for png in ["fig1_samples", "fig3_architecture", "fig4_hyperparameters", "fig5_ablation_table",
                "fig5b_decay_arithmetic", "fig6_ablation_chart", "fig7_ablation_curves", "fig8_training_curves",
                "fig9_published", "fig11_channel_order", "fig12_threshold_sweep", "fig13_val_metrics"]:
        assert _is_png(report / "figures" / f"{png}.png"), png
        assert f"figures/{png}.png" in md
    assert md.startswith("# Mask R-CNN on Tiny PASCAL VOC — report of a DEMO run")
    assert "| SOLVER.BASE_LR | 0.00025 | Figure 4 |" in md


def test_a_notebook_opened_alone_names_the_one_to_run_first(tmp_path, monkeypatch):
    """04 on a fresh course (no trained model): its first call stops with one error line naming 02,
    not a traceback; 02 opened alone makes the demo data and the split itself (tests/test_course.py)."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    from helpers import course

    settings = course.write_course_file(tmp_path / "course.yaml", "demo", data_root=str(tmp_path / "demo"),
                                        run_root=str(tmp_path / "run"))
    nb = nbformat.read(NOTEBOOKS / "04_inference.ipynb", as_version=4)
    env = {**os.environ, course.ENV_FILE: str(settings)}
    with pytest.raises(CellExecutionError):
        NotebookClient(nb, timeout=300, kernel_name="python3",
                       resources={"metadata": {"path": str(NOTEBOOKS)}}).execute(env=env)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert len(errors) == 1 and errors[0].ename == "HelpersError"
    assert errors[0].traceback == [f"error: {tmp_path / 'run' / 'train'} does not exist yet: run 02_training first "
                                   f"(same course settings, {settings})"]


@pytest.mark.parametrize("path", NOTEBOOK_FILES, ids=lambda p: p.stem)
def test_every_notebook_has_its_exercises_checked_and_a_summary(path):
    from helpers import exercises

    source = "\n".join("".join(c["source"]) for c in _cells(path))
    names = exercises.names(path.stem)
    assert len(names) >= 3
    for name in names:
        assert f'exercises.check("{name}", answer, fill=solutions' in source, name
    assert "Why it matters" in "".join(_cells(path)[0]["source"])
    assert "## Summary" in source and "**Try next:**" in source
