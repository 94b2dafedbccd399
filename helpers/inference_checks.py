"""The homework's two inference mistakes, measured on the val split.

* channel order: the homework fed RGB images to a detectron2 model trained on BGR. :func:`channel_order`
  evaluates the chosen model with the channel order it was trained with, and swapped.
* score threshold: the homework kept only detections scoring 0.5 or more, although COCO AP rewards
  ranked low-score detections. :func:`threshold_sweep` predicts once at threshold 0 and evaluates the
  detections scoring at least t, for every t (the same as predicting at t: NMS and the per-image cap
  keep the highest-scoring boxes, so dropping the low ones afterwards leaves what predicting at t keeps).

Each writes a JSON file to the run root (``channel_order.json``, ``threshold_sweep.json``) with the
mask mAP@0.5 (segm AP50, the leaderboard's metric) and AP@[.5:.95] of every setting.

Beside them, one lever the homework did not pull: test-time augmentation (``TEST.AUG.*``), measured by
:func:`measure_tta` with and without, with its cost in seconds per image (``tta.json``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

from . import experiment
from .evaluate import HEADLINE, METRIC_LABELS, evaluate
from .io import write_json

CHANNEL_ORDER = "channel_order.json"
THRESHOLD_SWEEP = "threshold_sweep.json"
TTA = "tta.json"
HOMEWORK_THRESHOLD = 0.5
THRESHOLDS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def _scores(split, results: list[dict]) -> dict:
    segm = evaluate(split.coco, results, iou_type="segm")
    return {"segm/AP50": segm["AP50"], "segm/AP": segm["AP"], "detections": len(results)}


def trained_channel_order(run_dir: str | Path) -> str:
    """The channel order a run's model was trained with: detectron2's INPUT.FORMAT, RGB for torchvision."""
    cfg, info = experiment.load_run(run_dir)
    return cfg["INPUT.FORMAT"] if info.get("engine", "torchvision") == "detectron2" else "RGB"


def channel_order(run_dir: str | Path, out_dir: str | Path, checkpoint: str = "best",
                  score_thresh: float | None = None, split_json: str | Path | None = None,
                  progress: bool = False) -> dict:
    """segm AP50 and AP on the val split with the training channel order and with it swapped;
    written to ``out_dir/channel_order.json``."""
    from .engines.base import predict_split

    run_dir = Path(run_dir)
    split = experiment.val_split(run_dir, split_json)
    trained = trained_channel_order(run_dir)
    other = {"RGB": "BGR", "BGR": "RGB"}[trained]
    rows = []
    for swapped in (False, True):
        predictor = experiment.load_predictor(run_dir, checkpoint, score_thresh, swap_channels=swapped)
        results = predict_split(predictor, split, progress=progress)
        rows.append({"fed": other if swapped else trained, "as_trained": not swapped, **_scores(split, results)})
    report = {"engine": experiment.load_run(run_dir)[1].get("engine", "torchvision"), "trained_with": trained,
              "run_dir": str(run_dir), "checkpoint": checkpoint, "split": str(split.json_path),
              "score_thresh": predictor.score_thresh, "metric_labels": {k: METRIC_LABELS[k] for k in (HEADLINE, "segm/AP")},
              "rows": rows, "cost_of_swapping": {k: rows[0][k] - rows[1][k] for k in (HEADLINE, "segm/AP")}}
    write_json(Path(out_dir) / CHANNEL_ORDER, report, indent=2)
    return report


def _thresholds(thresholds: Iterable[float], default: float) -> list[float]:
    return sorted({float(t) for t in thresholds} | {float(default), HOMEWORK_THRESHOLD})


def threshold_sweep(run_dir: str | Path, out_dir: str | Path, checkpoint: str = "best",
                    thresholds: Sequence[float] = THRESHOLDS, split_json: str | Path | None = None,
                    progress: bool = False) -> dict:
    """segm AP50 and AP on the val split keeping detections scoring >= t, for each t (plus the homework's
    0.5 and the run's MODEL.ROI_HEADS.SCORE_THRESH_TEST); written to ``out_dir/threshold_sweep.json``."""
    from .engines.base import predict_split

    run_dir = Path(run_dir)
    cfg, _ = experiment.load_run(run_dir)
    default = cfg["MODEL.ROI_HEADS.SCORE_THRESH_TEST"]
    split = experiment.val_split(run_dir, split_json)
    results = predict_split(experiment.load_predictor(run_dir, checkpoint, score_thresh=0.0), split, progress=progress)
    rows = [{"threshold": t, **_scores(split, [r for r in results if r["score"] >= t])}
            for t in _thresholds(thresholds, default)]
    best = max(rows, key=lambda r: (r[HEADLINE], -r["threshold"]))
    report = {"run_dir": str(run_dir), "checkpoint": checkpoint, "split": str(split.json_path),
              "default_threshold": default, "homework_threshold": HOMEWORK_THRESHOLD,
              "metric_labels": {k: METRIC_LABELS[k] for k in (HEADLINE, "segm/AP")}, "rows": rows,
              "best_threshold": best["threshold"]}
    write_json(Path(out_dir) / THRESHOLD_SWEEP, report, indent=2)
    return report


def measure_tta(run_dir: str | Path, out_dir: str | Path, checkpoint: str = "best",
                           score_thresh: float | None = None, split_json: str | Path | None = None,
                           progress: bool = False) -> dict:
    """segm AP50 and AP on the val split without and with test-time augmentation (the run config's
    TEST.AUG.MIN_SIZES, MAX_SIZE and FLIP), and seconds per image of each; written to ``out_dir/tta.json``."""
    import time

    from .engines.base import predict_split

    run_dir = Path(run_dir)
    cfg, _ = experiment.load_run(run_dir)
    split = experiment.val_split(run_dir, split_json)
    rows = []
    for tta in (False, True):
        predictor = experiment.load_predictor(run_dir, checkpoint, score_thresh, tta=tta)
        start = time.perf_counter()
        results = predict_split(predictor, split, progress=progress)
        seconds = (time.perf_counter() - start) / max(len(split.images), 1)
        rows.append({"tta": tta, **_scores(split, results), "seconds_per_image": seconds})
    report = {"run_dir": str(run_dir), "checkpoint": checkpoint, "split": str(split.json_path),
              "score_thresh": predictor.score_thresh, "min_sizes": cfg["TEST.AUG.MIN_SIZES"],
              "max_size": cfg["TEST.AUG.MAX_SIZE"], "flip": cfg["TEST.AUG.FLIP"],
              "augmentations": len(cfg["TEST.AUG.MIN_SIZES"]) * (2 if cfg["TEST.AUG.FLIP"] else 1),
              "metric_labels": {k: METRIC_LABELS[k] for k in (HEADLINE, "segm/AP")}, "rows": rows,
              "gain": {k: rows[1][k] - rows[0][k] for k in (HEADLINE, "segm/AP")},
              "cost": rows[1]["seconds_per_image"] / rows[0]["seconds_per_image"] if rows[0]["seconds_per_image"] else None}
    write_json(Path(out_dir) / TTA, report, indent=2)
    return report


def format_tta(report: dict) -> str:
    sizes = ", ".join(str(s) for s in report["min_sizes"])
    lines = [f"test-time augmentation: shortest edge {sizes} (max {report['max_size']})"
             f"{', each also flipped' if report['flip'] else ''}: {report['augmentations']} passes per image, val split:"]
    for r in report["rows"]:
        lines.append(f"  {'with TTA   ' if r['tta'] else 'without TTA'}: {METRIC_LABELS[HEADLINE]} {r[HEADLINE]:.4f}, "
                     f"{METRIC_LABELS['segm/AP']} {r['segm/AP']:.4f}, {r['seconds_per_image']:.3g} s per image")
    if report["cost"] is not None:
        lines.append(f"  TTA costs {report['cost']:.3g}x the time per image")
    return "\n".join(lines)


def format_channel_order(report: dict) -> str:
    lines = [f"model trained with {report['trained_with']} ({report['engine']} engine), val split:"]
    for r in report["rows"]:
        what = "as trained" if r["as_trained"] else "swapped, as the homework did"
        lines.append(f"  fed {r['fed']} ({what}): {METRIC_LABELS[HEADLINE]} {r[HEADLINE]:.4f}, "
                     f"{METRIC_LABELS['segm/AP']} {r['segm/AP']:.4f}")
    return "\n".join(lines)


def format_threshold_sweep(report: dict) -> str:
    lines = [f"{'score >=':>9}  {METRIC_LABELS[HEADLINE]:>26}  {METRIC_LABELS['segm/AP']:>26}  detections"]
    for r in report["rows"]:
        mark = " (ours)" if r["threshold"] == report["default_threshold"] else \
            " (the homework's)" if r["threshold"] == report["homework_threshold"] else ""
        lines.append(f"{r['threshold']:>9g}  {r[HEADLINE]:>26.4f}  {r['segm/AP']:>26.4f}  {r['detections']:>10}{mark}")
    return "\n".join(lines)


def measure(run_dir: str | Path, out_dir: str | Path, checkpoint: str = "best", score_thresh: float | None = None,
            progress: bool = False) -> dict:
    """Notebook 04's measurements on the val split: COCO metrics (``val_metrics.json``), channel order,
    the score-threshold sweep and test-time augmentation, all written to ``out_dir``. A run that trained on every image
    (DATASETS.VAL_FRACTION 0) has no val split: nothing is measured and ``skipped`` says why."""
    cfg, _ = experiment.load_run(run_dir)
    if experiment.trains_on_all(cfg):
        return {"skipped": f"{run_dir} trained on every image (DATASETS.VAL_FRACTION 0): no val split to measure on; "
                           f"the measurements belong to the run trained on the split"}
    return {"val": experiment.evaluate_run(run_dir, checkpoint=checkpoint, score_thresh=score_thresh, out_dir=out_dir,
                                           progress=progress),
            "channel_order": channel_order(run_dir, out_dir, checkpoint, score_thresh, progress=progress),
            "threshold_sweep": threshold_sweep(run_dir, out_dir, checkpoint, progress=progress),
            "tta": measure_tta(run_dir, out_dir, checkpoint, score_thresh, progress=progress)}


def format_measured(measured: dict) -> str:
    """What :func:`measure` found, as text."""
    from .evaluate import format_table

    if "skipped" in measured:
        return measured["skipped"]
    return "\n\n".join([format_table(measured["val"]["segm"], title="val segm"),
                        format_table(measured["val"]["bbox"], title="val bbox"),
                        format_channel_order(measured["channel_order"]),
                        format_threshold_sweep(measured["threshold_sweep"]),
                        format_tta(measured["tta"])])


def save_figures(measured: dict, fig_dir: str | Path) -> list:
    """The channel-order and threshold-sweep figures, saved to ``fig_dir`` and returned (to display)."""
    from . import plots, viz

    if "skipped" in measured:
        return []
    figs = [(plots.plot_channel_order(measured["channel_order"]), "04_channel_order.png"),
            (plots.plot_threshold_sweep(measured["threshold_sweep"]), "04_threshold_sweep.png")]
    return [viz.save_figure(fig, Path(fig_dir) / name, close=False) for fig, name in figs]
