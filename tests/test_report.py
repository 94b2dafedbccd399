"""report/build.py through the path the report takes: a run root's records in, report.md and figures out.

The run roots here are written by hand (no training), so every number the report must show is known.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path


from helpers import ablation, data, experiment, inference_checks, runs
from helpers.paths import CONFIGS, PROJECT_ROOT

spec = importlib.util.spec_from_file_location("report_build", PROJECT_ROOT / "report" / "build.py")
build = importlib.util.module_from_spec(spec)
spec.loader.exec_module(build)

ARCH = [{"stage": "input", "shape": [1, 3, 96, 96]}, {"stage": "backbone.res2", "shape": [1, 64, 24, 24]}]
VAL = {"AP": 0.31234, "AP50": 0.56789, "AP75": 0.3, "num_images": 3, "num_detections": 9}


def _metrics(value: float) -> dict:
    return {k: value if k == "AP50" else value / 2 for k in ("AP", "AP50", "AP75")}


def _tinyvoc_like(demo_root: Path, tmp_path: Path) -> Path:
    """The demo images under Tiny VOC's 20 category names (the generator's mark removed)."""
    root = tmp_path / "tinyvoc"
    shutil.copytree(demo_root, root)
    cats = [{"id": i + 1, "name": n, "supercategory": "voc"} for i, n in enumerate(build.VOC_CLASSES)]
    for name in (data.TRAIN_JSON, data.TEST_JSON):
        coco = json.loads((root / name).read_text())
        coco["categories"] = cats
        coco.pop("info", None)
        (root / name).write_text(json.dumps(coco))
    return root


def make_run_root(data_root: Path, tmp_path: Path, num_classes: int, val_fraction: float = 0.1) -> Path:
    run_root = tmp_path / "runs" / "rep"
    overrides = {"MODEL.ROI_HEADS.NUM_CLASSES": num_classes, "SOLVER.MAX_ITER": 8, "DATASETS.VAL_FRACTION": val_fraction}
    cfg, splits, train_dir = experiment.setup_run(CONFIGS / "demo.yaml", overrides, "torchvision", data_root,
                                                  run_root / "train", run_root / "data")
    train_dir.mkdir(parents=True)
    cfg.save(train_dir / runs.CONFIG)
    runs.write_run_info(train_dir, engine="torchvision", data_root=str(data_root), train_split=str(splits.train),
                        val_split=str(splits.val), status="finished")
    (train_dir / runs.FINAL).write_bytes(b"weights")
    rows = [{"iteration": i, "total_loss": 2.0 - i / 10, "loss_mask": 0.5, "lr": 0.001 * (i + 1), "time": 0.5}
            for i in range(8)]
    if val_fraction > 0:
        rows[7].update({"segm/AP50": 0.6, "segm/AP": 0.3})
        runs.record_best(train_dir, 7, 0.6, "segm/AP50")
    (train_dir / runs.METRICS).write_text("".join(json.dumps(r) + "\n" for r in rows))
    (train_dir / build.ARCHITECTURE).write_text(json.dumps(ARCH))
    if val_fraction > 0:
        (run_root / "val_metrics.json").write_text(json.dumps({
            "segm": {**VAL, "per_class": {}}, "bbox": {**VAL, "AP50": 0.61111, "per_class": {}},
            "split": str(splits.val), "checkpoint": "best", "score_thresh": 0.05}))
        (run_root / inference_checks.CHANNEL_ORDER).write_text(json.dumps({
            "engine": "torchvision", "trained_with": "RGB", "score_thresh": 0.05, "rows": [
                {"fed": "RGB", "as_trained": True, "segm/AP50": 0.56789, "segm/AP": 0.31234, "detections": 9},
                {"fed": "BGR", "as_trained": False, "segm/AP50": 0.43210, "segm/AP": 0.2, "detections": 7}]}))
        (run_root / inference_checks.THRESHOLD_SWEEP).write_text(json.dumps({
            "default_threshold": 0.05, "homework_threshold": 0.5, "rows": [
                {"threshold": t, "segm/AP50": 0.6 - t / 4, "segm/AP": 0.3 - t / 8, "detections": 10 - int(10 * t)}
                for t in (0.0, 0.05, 0.5, 0.9)]}))
        (run_root / inference_checks.TTA).write_text(json.dumps({
            "min_sizes": [128, 160, 192], "max_size": 320, "flip": True, "augmentations": 6, "rows": [
                {"tta": False, "segm/AP50": 0.56789, "segm/AP": 0.31234, "detections": 9, "seconds_per_image": 0.0412},
                {"tta": True, "segm/AP50": 0.60126, "segm/AP": 0.33, "detections": 11, "seconds_per_image": 0.31}]}))
        kinds = ("classification", "localisation", "both", "duplicate", "background", "missed")
        (run_root / "error_analysis.json").write_text(json.dumps({
            "metric": "mask mAP@0.5 (segm AP50)", "base_map": 0.56789, "iou_type": "segm", "fg_iou": 0.5, "bg_iou": 0.1,
            "errors": {k: {"dap": 0.0125 * i, "fixed_map": 0.56789 + 0.0125 * i, "count": i} for i, k in enumerate(kinds)},
            "all_fixed_map": 1.0, "top_images": {k: [] for k in kinds}, "confusion": None,
            "conclusions": ["Fixing missed errors alone would add the most: dAP 0.0625 (5 errors)."]}))
        variants = ablation.load_variants(CONFIGS / "ablation.yaml", ["no_decay", "homework"])
        entries = ablation.plan(CONFIGS / "demo.yaml", variants, run_root / "ablation", seeds=[0, 1],
                                data_root=data_root, overrides=overrides, split_dir=run_root / "data")
        for e, v in zip(entries, (0.41, 0.43, 0.52, 0.54)):
            d = e["run_dir"]
            d.mkdir(parents=True)
            e["cfg"].save(d / runs.CONFIG)
            runs.write_run_info(d, engine="torchvision", status="finished")
            (d / runs.FINAL).write_bytes(b"w")
            (d / runs.METRICS).write_text(json.dumps({"iteration": 7, "segm/AP50": v, "segm/AP": v / 2}) + "\n")
        (run_root / "ablation").mkdir(exist_ok=True)
        (run_root / "ablation" / ablation.RESULTS).write_text(json.dumps(ablation.collect(entries, variants)))
    return run_root


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def test_demo_report_states_values_exactly_says_demo_and_keeps_published_numbers_apart(demo_root, tmp_path):
    run_root = make_run_root(demo_root, tmp_path, num_classes=5)
    out = tmp_path / "report"
    build.build(run_root, out)
    md = (out / "report.md").read_text()
    assert md.splitlines()[0] == "# Mask R-CNN on Tiny PASCAL VOC — report of a DEMO run (synthetic shapes, not Tiny VOC)"
    captions = [line for line in md.splitlines() if line.startswith("*") and not line.startswith("**")]
    published = [c for c in captions if c.startswith("*Published results on Tiny VOC")]
    assert len(published) == 1 and "not this run's" in published[0]
    assert len(captions) > 10 and all(c.startswith("*DEMO run (synthetic shapes, not Tiny VOC): ")
                                      for c in captions if c not in published)
    # the hyperparameter table as text, with the homework's values exactly
    hyper = _section(md, "## Model")
    assert "| SOLVER.BASE_LR | 0.00025 | Figure 4 | 0.015 |" in hyper
    assert "| SOLVER.WEIGHT_DECAY | 0.0001 | inherited | 0.0001 |" in hyper
    assert "| INPUT.MIN_SIZE_TRAIN | (640, 672, 704, 736, 768, 800) | inherited | (128, 144, 160) |" in hyper
    assert "| TEST.BEST_METRIC | segm/AP50 | ours | segm/AP50 |" in hyper
    assert "0.0003" not in md
    # which metric picked the best checkpoint, our val numbers under their own names
    assert "chosen by val mask mAP@0.5 (segm AP50) (`segm/AP50` = 0.6000) after iteration 8" in md
    assert "| mask mAP@0.5 (segm AP50) | 0.5679 |" in md and "| mask AP@[.5:.95] (segm AP) | 0.3123 |" in md
    assert "| box mAP@0.5 (bbox AP50) | 0.6111 |" in md
    # both inference checks, as text
    assert "| RGB (as trained) | 0.5679 | 0.3123 | 9 |" in md and "| BGR (swapped) | 0.4321 | 0.2000 | 7 |" in md
    assert "| 0.05 (ours) | 0.5875 |" in md and "| 0.5 (the homework's) | 0.4750 |" in md
    assert "| without TTA | 0.5679 | 0.3123 | 9 | 0.0412 |" in md and "| with TTA | 0.6013 | 0.3300 | 11 | 0.31 |" in md
    assert "shortest edge 128, 160, 192 (max 320), each also flipped, 6 passes per image" in md
    # the error analysis, as text
    errors = _section(md, "## Where the mAP goes: error types")
    assert "| error type | dAP | mask mAP@0.5 (segm AP50) if fixed | errors |" in errors
    assert "| localisation | 0.0125 | 0.5804 | 1 |" in errors and "| missed | 0.0625 | 0.6304 | 5 |" in errors
    assert "- Fixing missed errors alone would add the most" in errors and "figures/fig14_error_breakdown.png" in errors
    # the ablation: seeds, intervals, verdict, arithmetic; no published number in it
    ab = _section(md, "## The weight-decay ablation")
    assert "| homework | 0.0001 | 0.01 | 0.0 | 8 | 2 | 0.5300 ± 0.0141 [" in ab
    assert "Verdicts" in ab and "homework" in ab and ("beats" in ab or "no difference detectable" in ab)
    assert "| homework | biases | 0.01 | 0.015 | 8 |" in ab
    assert "0.42467" not in ab and "0.47416" not in ab
    # published results only in their own table, labelled; no table of ours beside them
    pub = _section(md, "## Published Tiny VOC results (hidden test set, as graded)")
    assert "| the homework, labelled 'weight decay = 0.1' | R50-FPN | 30k | 0.47416 |" in pub
    assert "0.42467" in pub and "mask mAP@0.5 (segm AP50), hidden test set, as graded" in pub
    assert "0.5679" not in pub and "ours:" not in pub and "val split (ours)" not in pub
    assert not (out / "figures" / "fig10_val_vs_test.png").exists()
    # every figure the text names exists, and every table figure has its Markdown beside it
    for name in ["fig1_samples", "fig4_hyperparameters", "fig5_ablation_table", "fig5b_decay_arithmetic",
                 "fig6_ablation_chart", "fig7_ablation_curves", "fig8_training_curves", "fig9_published",
                 "fig11_channel_order", "fig12_threshold_sweep", "fig13_val_metrics", "fig16_tta_table"]:
        assert f"figures/{name}.png" in md and (out / "figures" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"


def test_rebuilding_gives_identical_files(demo_root, tmp_path):
    run_root = make_run_root(demo_root, tmp_path, num_classes=5)
    first, second = tmp_path / "r1", tmp_path / "r2"
    build.build(run_root, first)
    build.build(run_root, second)
    (first / "figures" / "stale.png").write_bytes(b"old")
    build.build(run_root, first)  # a figure this build does not make is removed
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    for rel in files:
        assert (first / rel).read_bytes() == (second / rel).read_bytes(), rel


def test_tinyvoc_report_puts_our_val_beside_published_test_in_separate_columns(demo_root, tmp_path):
    root = _tinyvoc_like(demo_root, tmp_path)
    run_root = make_run_root(root, tmp_path, num_classes=20)
    out = tmp_path / "report"
    build.build(run_root, out)
    md = (out / "report.md").read_text()
    assert "DEMO" not in md and "Tiny VOC (20 classes)" in md
    table = _section(md, "## Published Tiny VOC results")
    header = ("| run | model | iterations | mask mAP@0.5 (segm AP50), val split (ours) | "
              "mask mAP@0.5 (segm AP50), hidden test set, as graded |")
    assert header in table
    assert "| ours: rep | R18-FPN | 8 | 0.5679 | - |" in table
    assert "| ours: ablation homework (mean of 2) | R18-FPN | 8 | 0.5300 | - |" in table
    assert "| the homework, labelled 'without weight decay' | R50-FPN | 30k | - | 0.42467 |" in table
    assert (out / "figures" / "fig10_val_vs_test.png").is_file()


def test_report_of_a_run_trained_on_every_image_says_so(demo_root, tmp_path):
    run_root = make_run_root(demo_root, tmp_path, num_classes=5, val_fraction=0.0)
    out = tmp_path / "report"
    build.build(run_root, out)
    md = (out / "report.md").read_text()
    assert "The model trained on every annotated image (24; DATASETS.VAL_FRACTION 0: no val split" in md
    assert "No val metrics recorded: the model trained on every image." in md
    assert "| DATASETS.VAL_FRACTION | 0.1 | ours (0: every image trains) | 0.0 |" in md
