"""Rebuild the homework's figures and the report document from what a run recorded.

    python report/build.py --run runs/demo            # or: make report RUN=runs/demo

Reads only the run's records (config.yaml, run.json, best.json, metrics.json, ablation/results.json,
val_metrics.json, channel_order.json, threshold_sweep.json, tta.json, the split files and the data root) and
writes ``report/figures/*.png`` and ``report/report.md``. Every table is written twice: as a figure and
as a Markdown table beside it. Values are printed as the config has them (0.00025 stays 0.00025);
measured metrics to 4 decimals. A report of a demo run says so in its title and every caption, and
published Tiny VOC results (hidden test set, as graded) only ever appear in their own table, or, for
a Tiny VOC run, in their own column beside our val numbers. Building twice gives identical files.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # the same renderer everywhere: byte-identical PNGs

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helpers import ablation, data, demo_data, inference_checks, plots, plots_errors, runs, viz  # noqa: E402
from helpers.config import load_config  # noqa: E402
from helpers.evaluate import HEADLINE, HEADLINE_LABEL, METRIC_LABELS  # noqa: E402
from helpers.io import write_json, write_text  # noqa: E402
from helpers.paths import CONFIGS, PROJECT_ROOT  # noqa: E402

VOC_CLASSES = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
               "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor"]
PUBLISHED_LABEL = "hidden test set, as graded"
# Published results on Tiny VOC (mask mAP@0.5 on the hidden test set, as graded; ../shared/NOTES.md):
# (who, model, iterations, value as published, note).
PUBLISHED = [
    ("the homework, labelled 'without weight decay'", "R50-FPN", "30k", "0.42467",
     "in fact WEIGHT_DECAY 1e-4, WEIGHT_DECAY_BIAS 1e-4"),
    ("the homework, labelled 'weight decay = 0.1'", "R50-FPN", "30k", "0.47416",
     "in fact WEIGHT_DECAY 1e-4, WEIGHT_DECAY_BIAS 0.01"),
    ("Yunyung", "R50-FPN", "50k", "0.471", ""),
    ("Yunyung", "R101-FPN", "50k", "0.485", ""),
    ("yamiefun", "R50", "50k", "0.493", ""),
    ("Zonsor", "X101-FPN", "-", "0.523", ""),
    ("Avocado5818", "X101", "120k", "0.557", ""),
    ("course baseline", "-", "-", "0.247", ""),
]

# The homework's Figure 4, in order: (key, what the homework wrote or inherited).
HYPERPARAMETERS = [
    ("DATASETS.TRAIN", "Figure 4"), ("DATASETS.TEST", "Figure 4"), ("DATALOADER.NUM_WORKERS", "Figure 4"),
    ("SOLVER.IMS_PER_BATCH", "Figure 4"), ("SOLVER.BASE_LR", "Figure 4"), ("SOLVER.WEIGHT_DECAY_BIAS", "Figure 4"),
    ("SOLVER.CHECKPOINT_PERIOD", "Figure 4"), ("SOLVER.MAX_ITER", "Figure 4"),
    ("MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "Figure 4"), ("MODEL.ROI_HEADS.NUM_CLASSES", "Figure 4"),
    ("SOLVER.WEIGHT_DECAY", "inherited"), ("SOLVER.MOMENTUM", "inherited"), ("SOLVER.WARMUP_ITERS", "inherited"),
    ("SOLVER.STEPS", "inherited"), ("INPUT.MIN_SIZE_TRAIN", "inherited"), ("INPUT.MAX_SIZE_TRAIN", "inherited"),
    ("INPUT.MIN_SIZE_TEST", "inherited"), ("INPUT.RANDOM_FLIP", "inherited"), ("MODEL.WEIGHTS", "inherited"),
    ("MODEL.RESNETS.DEPTH", "inherited"), ("MODEL.RESNETS.NORM", "inherited"),
    ("DATASETS.VAL_FRACTION", "ours (0: every image trains)"), ("TEST.BEST_METRIC", "ours"),
]
ARCHITECTURE = "architecture.json"


def value_text(value) -> str:
    """A config value exactly as the config holds it: floats by repr (0.00025, 0.0001), lists as tuples."""
    if value is None:
        return "None"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(value_text(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    if isinstance(value, str):
        return repr(value) if value == "" else value
    return str(value)


def metric_text(value) -> str:
    """A measured metric (0-1) to 4 decimals; '-' when absent."""
    return "-" if value is None else f"{value:.4f}"


def markdown_table(columns, rows) -> str:
    esc = lambda s: str(s).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(esc(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows] or ["| " + " | ".join(["(none)"] + [""] * (len(columns) - 1)) + " |"]
    return "\n".join(lines)


class Report:
    """Collects figures, tables and Markdown sections; writes them at the end."""

    def __init__(self, out_dir: Path, run_root: Path, demo: bool):
        self.out_dir, self.run_root, self.demo = out_dir, run_root, demo
        self.fig_dir = out_dir / "figures"
        self.sections: list[str] = []
        self.written: list[str] = []

    def caption(self, text: str, ours: bool = True) -> str:
        """``ours=False``: a figure of published results, not of this run (no demo mark)."""
        return ("DEMO run (synthetic shapes, not Tiny VOC): " + text) if self.demo and ours else text

    def figure(self, fig, name: str, caption: str, ours: bool = True) -> None:
        viz.save_figure(fig, self.fig_dir / f"{name}.png")
        self.written.append(f"{name}.png")
        self.sections.append(f"![{name}](figures/{name}.png)\n\n*{self.caption(caption, ours)}*\n")

    def table(self, columns, rows, name: str, caption: str, title: str, ours: bool = True) -> None:
        """The table as a figure and, beside it, as Markdown text."""
        if self.demo and ours:
            title = "DEMO run: " + title
        self.figure(plots.table_figure(columns, rows, title=title), name, caption, ours)
        self.sections.append(markdown_table(columns, rows) + "\n")

    def text(self, markdown: str) -> None:
        self.sections.append(markdown.strip() + "\n")

    def write(self, head: str) -> Path:
        for stale in sorted(self.fig_dir.glob("*.png")):  # figures of an earlier build this one did not make
            if stale.name not in self.written:
                stale.unlink()
        return write_text(self.out_dir / "report.md", "\n".join([head] + self.sections))


def _rel(path: str | Path) -> str:
    path = Path(path).resolve()
    try:
        return str(path.relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)


def data_kind(root: data.Split) -> str:
    """"demo" (the synthetic shapes), "tinyvoc" (the 20 VOC classes) or "other"."""
    info = root.coco.get("info") if isinstance(root.coco.get("info"), dict) else {}
    if info.get("generator") == demo_data.GENERATOR:
        return "demo"
    if [c["name"] for c in sorted(root.categories, key=lambda c: c["id"])] == VOC_CLASSES:
        return "tinyvoc"
    return "other"


def architecture_rows(run_dir: Path, cfg, info: dict, categories: list[dict], image) -> list[dict]:
    """Stages and tensor shapes of one forward pass of the run's model (cached in the run folder,
    so the report can be rebuilt where the run's engine is not installed)."""
    cache = run_dir / ARCHITECTURE
    if cache.is_file():
        return json.loads(cache.read_text(encoding="utf-8"))
    from helpers.engines import get_engine

    probe = cfg.copy().merge({"MODEL.WEIGHTS": "", "MODEL.DEVICE": "cpu"})  # shapes do not depend on weights
    engine = get_engine(info.get("engine", "torchvision"))
    rows = engine.architecture(engine.prepare_config(probe), categories, image)
    write_json(cache, rows, indent=1)
    return rows


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def build(run_root: Path, out_dir: Path) -> Path:
    train_dir = run_root / "train"
    if not (train_dir / runs.CONFIG).is_file():
        raise SystemExit(f"error: {train_dir} holds no finished training run; run notebooks 01-02 first")
    cfg, info = load_config(train_dir / runs.CONFIG), runs.read_run_info(train_dir)
    config_name = _rel(cfg["OUTPUT_DIR"]) + "/config.yaml"
    train_split = data.load_split(info["train_split"], check_images=False)
    root = data.load_root(info["data_root"], check_images=False)
    kind = data_kind(root.train)
    rep = Report(out_dir, run_root, demo=kind == "demo")
    src = f"run `{_rel(run_root)}`, data `{_rel(info['data_root'])}`"
    engine = info.get("engine", "torchvision")
    on_all = cfg["DATASETS.VAL_FRACTION"] <= 0

    title = "# Mask R-CNN on Tiny PASCAL VOC — report"
    if kind == "demo":
        title += " of a DEMO run (synthetic shapes, not Tiny VOC)"
    what = {"demo": "the synthetic demo data set (coloured shapes, 5 classes): its numbers say nothing about Tiny VOC",
            "tinyvoc": "Tiny VOC (20 classes)", "other": "a data set that is neither Tiny VOC nor the demo set"}[kind]
    n_val = len(data.load_split(info["val_split"], check_images=False).images) if not on_all else 0
    trained_on = (f"every annotated image ({len(train_split.images)}; DATASETS.VAL_FRACTION 0: no val split, "
                  f"so no val numbers)" if on_all else
                  f"the train split ({len(train_split.images)} images); {n_val} images held out for validation "
                  f"(DATASETS.VAL_FRACTION {value_text(cfg['DATASETS.VAL_FRACTION'])})")
    head = (f"{title}\n\nBuilt by `report/build.py` from `{_rel(run_root)}`: {engine} engine, config "
            f"`{config_name}`, data `{_rel(info['data_root'])}` ({what}). The model trained on {trained_on}.\n\n"
            f"The headline metric is the leaderboard's, **{HEADLINE_LABEL}**: mask AP at IoU 0.5. "
            f"{METRIC_LABELS['segm/AP']} is reported beside it under its own name.\n")

    rep.text("## Data")
    rep.figure(viz.show_samples(root.train, n=6, seed=0), "fig1_samples",
               f"Figures 1–2: training images with their ground-truth masks and class names ({src}).")
    rep.figure(plots.plot_dataset_stats(data.dataset_stats(root.train)), "fig2_dataset_stats",
               f"Data set statistics: classes, instances per image, COCO mask-size buckets, image sizes ({src}).")

    rep.text("## Model")
    image = data.read_image(train_split.image_path(train_split.images[0]))
    arch = architecture_rows(train_dir, cfg, info, train_split.categories, image)
    rep.figure(plots.plot_architecture(arch, title=f"Mask R-CNN, ResNet-{cfg['MODEL.RESNETS.DEPTH']}-FPN ({engine})"),
               "fig3_architecture",
               f"Figure 3: the Mask R-CNN stages with the tensor shapes recorded in one forward pass of "
               f"`{config_name}` on `{train_split.images[0]['file_name']}`.")
    homework = load_config(CONFIGS / "homework.yaml")
    rows = [[key, value_text(homework[key]), why, value_text(cfg[key])] for key, why in HYPERPARAMETERS]
    rep.table(["key", "homework", "homework source", "this run"], rows, "fig4_hyperparameters",
              f"Figure 4: the homework's hyperparameters ('Figure 4' = set in its notebook, 'inherited' = from "
              f"mask_rcnn_R_50_FPN_3x.yaml) beside those of this run, `{config_name}`; values as the configs hold them.",
              "Hyperparameters")

    rep.text("## Training")
    rep.figure(plots.plot_training_curves(runs.read_metrics(train_dir)), "fig8_training_curves",
               f"Losses, learning rate and validation metrics during training ({_rel(train_dir)}).")
    best = runs.read_best(train_dir)
    if best:
        rep.text(f"`model_best.pth` was chosen by val {METRIC_LABELS.get(best['metric'], best['metric'])} "
                 f"(`{best['metric']}` = {metric_text(best['value'])}) after iteration {best['iteration'] + 1}.")
    elif on_all:
        rep.text("No best checkpoint: with no val split nothing was evaluated; predictions use `model_final.pth`.")

    _val_section(rep, run_root, on_all)
    _inference_section(rep, run_root)
    _errors_section(rep, run_root)
    _ablation_section(rep, run_root)
    _published_section(rep, run_root, cfg, kind, on_all)
    return rep.write(head)


def _val_section(rep: Report, run_root: Path, on_all: bool) -> None:
    rep.text("## Our val numbers")
    val = _read(run_root / "val_metrics.json")
    if not val:
        rep.text("No val metrics recorded: " + ("the model trained on every image." if on_all else "run notebook 04."))
        return
    rows = [[METRIC_LABELS[f"{iou}/{k}"], metric_text(val[iou][k])] for iou in ("segm", "bbox") for k in ("AP50", "AP", "AP75")]
    rows.append(["score threshold", value_text(val.get("score_thresh"))])
    rows.append(["checkpoint", str(val.get("checkpoint"))])
    rows.append(["split", f"{_rel(val['split'])} ({val['segm']['num_images']} images)"])
    rep.table(["metric (val split)", "value"], rows, "fig13_val_metrics",
              f"Our model on the val split (`{_rel(val['split'])}`), from `{_rel(run_root / 'val_metrics.json')}`.",
              "Val metrics")


def _inference_section(rep: Report, run_root: Path) -> None:
    rep.text("## The homework's inference mistakes, measured\n\nThe homework fed RGB images to a model trained on BGR, "
             "and kept only detections scoring 0.5 or more. Both measured on the val split with our model.")
    order = _read(run_root / inference_checks.CHANNEL_ORDER)
    if order:
        rows = [[f"{r['fed']}" + (" (as trained)" if r["as_trained"] else " (swapped)"), metric_text(r[HEADLINE]),
                 metric_text(r["segm/AP"]), str(r["detections"])] for r in order["rows"]]
        cols = ["fed to the model", METRIC_LABELS[HEADLINE], METRIC_LABELS["segm/AP"], "detections"]
        cap = (f"Channel order: model trained on {order['trained_with']} ({order['engine']} engine), val split, "
               f"score threshold {value_text(order['score_thresh'])} ({_rel(run_root / inference_checks.CHANNEL_ORDER)}).")
        rep.table(cols, rows, "fig11_channel_order_table", cap, "Channel order")
        rep.figure(plots.plot_channel_order(order), "fig11_channel_order", cap)
    else:
        rep.text("Channel order: not measured (run notebook 04).")
    sweep = _read(run_root / inference_checks.THRESHOLD_SWEEP)
    if sweep:
        def note(t):
            return " (ours)" if t == sweep["default_threshold"] else " (the homework's)" if t == sweep["homework_threshold"] else ""
        rows = [[value_text(r["threshold"]) + note(r["threshold"]), metric_text(r[HEADLINE]), metric_text(r["segm/AP"]),
                 str(r["detections"])] for r in sweep["rows"]]
        cols = ["score threshold", METRIC_LABELS[HEADLINE], METRIC_LABELS["segm/AP"], "detections"]
        cap = (f"Score threshold: detections scoring at least t kept, predicted once at 0 on the val split "
               f"({_rel(run_root / inference_checks.THRESHOLD_SWEEP)}).")
        rep.table(cols, rows, "fig12_threshold_sweep_table", cap, "Score threshold")
        rep.figure(plots.plot_threshold_sweep(sweep), "fig12_threshold_sweep", cap)
    else:
        rep.text("Score threshold: not measured (run notebook 04).")
    tta = _read(run_root / inference_checks.TTA)
    if tta:
        rows = [["with TTA" if r["tta"] else "without TTA", metric_text(r[HEADLINE]), metric_text(r["segm/AP"]),
                 str(r["detections"]), f"{r['seconds_per_image']:.3g}"] for r in tta["rows"]]
        cols = ["test-time augmentation", METRIC_LABELS[HEADLINE], METRIC_LABELS["segm/AP"], "detections", "s per image"]
        sizes = ", ".join(value_text(s) for s in tta["min_sizes"])
        cap = (f"Test-time augmentation on the val split: shortest edge {sizes} (max {value_text(tta['max_size'])})"
               f"{', each also flipped' if tta['flip'] else ''}, {tta['augmentations']} passes per image, merged as "
               f"detectron2's TTA merges; seconds per image as measured on the machine that ran 04 "
               f"({_rel(run_root / inference_checks.TTA)}).")
        rep.table(cols, rows, "fig16_tta_table", cap, "Test-time augmentation")
    else:
        rep.text("Test-time augmentation: not measured (run notebook 04).")


def _errors_section(rep: Report, run_root: Path) -> None:
    rep.text("## Where the mAP goes: error types")
    path = run_root / "error_analysis.json"
    analysis = _read(path)
    if not analysis:
        rep.text("No error analysis recorded (run notebook 05).")
        return
    rows = [[kind, metric_text(e["dap"]), metric_text(e["fixed_map"]), str(e["count"])]
            for kind, e in analysis["errors"].items()]
    cap = (f"TIDE breakdown of the val {analysis['metric']} ({metric_text(analysis['base_map'])}): how much fixing "
           f"each error type alone would add (dAP), from `{_rel(path)}`.")
    rep.table(["error type", "dAP", f"{analysis['metric']} if fixed", "errors"], rows, "fig14_error_types", cap,
              "Error types")
    rep.figure(plots_errors.plot_error_breakdown(analysis), "fig14_error_breakdown", cap)
    if analysis.get("confusion"):
        rep.figure(plots_errors.plot_confusion_matrix(analysis["confusion"]), "fig15_confusion_matrix",
                   f"Class confusion on the val split: ground-truth class (rows) against the predicted class "
                   f"(columns), with missed objects and detections on background ({_rel(path)}).")
    if analysis.get("conclusions"):
        rep.text("\n".join(f"- {line}" for line in analysis["conclusions"]))


def _ablation_section(rep: Report, run_root: Path) -> None:
    rep.text("## The weight-decay ablation\n\n" + ablation.HOMEWORK_NOTE)
    res = ablation.read_results(run_root / "ablation")
    if not res or not res.get("summary"):
        rep.text("No ablation results recorded (run notebook 03).")
        return
    level = f"{res['confidence']:.0%}"
    reused = [r for r in res["runs"] if r.get("reused")]
    rep.text(f"Every variant ran with seeds {', '.join(str(s) for s in sorted({r['seed'] for r in res['runs']}))}; "
             f"compared: {res['metric_label']} at the {res['measured_at']} (not the best of several evaluations on "
             f"that split). Mean ± SD over seeds, [{level} Student-t interval of the mean]."
             + (f" Reused instead of trained again (resolved config identical): "
                + ", ".join(f"{r['variant']} seed {r['seed']} = `{_rel(r['run_dir'])}`" for r in reused) + "."
                if reused else ""))
    rep.table(*ablation.summary_table(res), "fig5_ablation_table",
              f"Figure 5: the ablation variants ({_rel(run_root / 'ablation')}), final-checkpoint val metrics.",
              "Weight-decay ablation")
    rep.text("**Verdicts** (each variant against the baseline, " + res["baseline"] + "):\n\n"
             + "\n".join(f"- {c['verdict']}" for c in res["comparisons"]))
    rep.table(*ablation.runs_table(res, _rel), "fig5c_ablation_runs", "Every ablation run's final-checkpoint val metrics.",
              "Ablation runs")
    rep.text("**The lr·λ·T arithmetic.** SGD with weight decay λ multiplies each parameter by (1 − lr·λ) per step; "
             "with momentum μ the decay term accumulates in the momentum buffer, about (1 − lr·λ/(1−μ)) per step. "
             "Over the schedule (warm-up and steps included), from each variant's resolved config:")
    rep.table(*ablation.decay_table(res), "fig5b_decay_arithmetic",
              "Shrink factor that weight decay alone applies to each parameter group over the run.",
              "Weight decay arithmetic")
    rep.figure(plots.plot_ablation(res["summary"]), "fig6_ablation_chart",
               f"Figure 6: {res['metric_label']} of each variant at its final checkpoint (val): mean over seeds, "
               f"{level} t-interval, one dot per run. Our runs only.")
    curves = {ablation.run_name(r["variant"], r["seed"]): runs.eval_rows(runs.read_metrics(r["run_dir"]))
              for r in res["runs"]}
    rep.figure(plots.plot_eval_curves(curves), "fig7_ablation_curves",
               "Figure 7: validation metrics during training, one line per ablation run.")


def _published_section(rep: Report, run_root: Path, cfg, kind: str, on_all: bool) -> None:
    rep.text(f"## Published Tiny VOC results ({PUBLISHED_LABEL})\n\nThe homework's and peers' leaderboard scores, "
             f"{HEADLINE_LABEL} on Tiny VOC's hidden test set. The homework's own two numbers are its ablation as "
             "reported (see the note above on what it really changed).")
    col = f"{HEADLINE_LABEL}, {PUBLISHED_LABEL}"
    rows = [[who, model, iters, value, note] for who, model, iters, value, note in PUBLISHED]
    rep.table(["who", "model", "iterations", col, "note"], rows, "fig9_published",
              f"Published results on Tiny VOC ({PUBLISHED_LABEL}; ../shared/NOTES.md), not this run's.",
              f"Published Tiny VOC results ({PUBLISHED_LABEL})", ours=False)
    if kind != "tinyvoc":
        rep.text("This run is not on Tiny VOC, so none of its numbers is set beside these." if kind == "other" else
                 "This is a demo run on synthetic shapes: none of its numbers is set beside these.")
        return
    val = _read(run_root / "val_metrics.json")
    model = f"R{cfg['MODEL.RESNETS.DEPTH']}-FPN"
    ours_col, test_col = f"{HEADLINE_LABEL}, val split (ours)", col
    rows = []
    if val:
        rows.append([f"ours: {run_root.name}", model, str(cfg["SOLVER.MAX_ITER"]), metric_text(val["segm"]["AP50"]), "-"])
    res = ablation.read_results(run_root / "ablation")
    for s in res.get("summary", []) if res else []:
        if s[HEADLINE]["n"]:
            rows.append([f"ours: ablation {s['variant']} (mean of {s[HEADLINE]['n']})", model, str(s["iterations"]),
                         metric_text(s[HEADLINE]["mean"]), "-"])
    rows += [[who, m, iters, "-", value] for who, m, iters, value, _ in PUBLISHED]
    rep.table(["run", "model", "iterations", ours_col, test_col], rows, "fig10_val_vs_test",
              "Our val numbers beside the published test numbers, in separate columns: different images, "
              "a guide, not a ranking." + (" (This run trained on every image: it has no val number.)" if on_all else ""),
              "Ours (val) beside published (test)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default="runs/demo", help="run folder made by the notebooks (runs/NAME)")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent), help="report folder")
    args = p.parse_args(argv)
    run_root = Path(args.run) if Path(args.run).is_absolute() else PROJECT_ROOT / args.run
    path = build(run_root.resolve(), Path(args.out))
    print(f"wrote {path} and its figures")
    return 0


if __name__ == "__main__":
    sys.exit(main())
