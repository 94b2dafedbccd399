"""Rebuild the homework's figures and the report document from what a run recorded.

    python report/build.py --run runs/demo            # or: make report RUN=runs/demo

Reads only the run's records (config.yaml, run.json, metrics.json, ablation/results.json,
val_metrics.json, the split files and the data root) and writes, deterministically,
``report/figures/*.png`` and ``report/report.md``. Every figure's caption names the run and config
it came from.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helpers import ablation, data, runs, viz  # noqa: E402
from helpers.config import load_config  # noqa: E402
from helpers.io import write_json, write_text  # noqa: E402
from helpers.paths import CONFIGS, PROJECT_ROOT  # noqa: E402

# Published results on the same data (segm mAP on the hidden test set, as graded; ../shared/NOTES.md).
PEERS = [
    ("the homework", "R50-FPN", "30k", 0.474),
    ("Yunyung", "R50-FPN", "50k", 0.471),
    ("Yunyung", "R101-FPN", "50k", 0.485),
    ("yamiefun", "R50", "50k", 0.493),
    ("Zonsor", "X101-FPN", "-", 0.523),
    ("Avocado5818", "X101", "120k", 0.557),
    ("course baseline", "-", "-", 0.247),
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
]
ARCHITECTURE = "architecture.json"


class Report:
    """Collects figures and Markdown sections; writes them at the end."""

    def __init__(self, out_dir: Path, run_root: Path):
        self.out_dir, self.run_root = out_dir, run_root
        self.fig_dir = out_dir / "figures"
        self.sections: list[str] = []

    def figure(self, fig, name: str, caption: str) -> None:
        viz.save_figure(fig, self.fig_dir / f"{name}.png")
        self.sections.append(f"![{name}](figures/{name}.png)\n\n*{caption}*\n")

    def text(self, markdown: str) -> None:
        self.sections.append(markdown.strip() + "\n")

    def write(self) -> Path:
        head = f"# Mask R-CNN on Tiny PASCAL VOC — report\n\nBuilt by `report/build.py` from `{_rel(self.run_root)}`.\n"
        return write_text(self.out_dir / "report.md", "\n".join([head] + self.sections))


def _rel(path: str | Path) -> str:
    path = Path(path).resolve()
    try:
        return str(path.relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


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


def build(run_root: Path, out_dir: Path) -> Path:
    train_dir = run_root / "train"
    if not (train_dir / runs.CONFIG).is_file():
        raise SystemExit(f"error: {train_dir} holds no finished training run; run notebooks 01-02 first")
    cfg, info = load_config(train_dir / runs.CONFIG), runs.read_run_info(train_dir)
    config_name = _rel(cfg["OUTPUT_DIR"]) + "/config.yaml"
    train_split = data.load_split(info["train_split"], check_images=False)
    rep = Report(out_dir, run_root)
    src = f"run `{_rel(run_root)}`, data `{_rel(info['data_root'])}`"

    rep.text("## Data")
    root = data.load_root(info["data_root"], check_images=False)
    rep.figure(viz.show_samples(root.train, n=6, seed=0), "fig1_samples",
               f"Figures 1–2: training images with their ground-truth masks and class names ({src}).")
    rep.figure(viz.plot_dataset_stats(data.dataset_stats(root.train)), "fig2_dataset_stats",
               f"Data set statistics: classes, instances per image, COCO mask-size buckets, image sizes ({src}).")

    rep.text("## Model")
    image = data.read_image(train_split.image_path(train_split.images[0]))
    arch = architecture_rows(train_dir, cfg, info, train_split.categories, image)
    rep.figure(viz.plot_architecture(arch, title=f"Mask R-CNN, ResNet-{cfg['MODEL.RESNETS.DEPTH']}-FPN "
                                                 f"({info.get('engine', 'torchvision')})"),
               "fig3_architecture",
               f"Figure 3: the Mask R-CNN stages with the tensor shapes recorded in one forward pass of "
               f"`{config_name}` on `{train_split.images[0]['file_name']}`.")
    homework = load_config(CONFIGS / "homework.yaml")
    rows = [[key, _fmt(homework[key]), why, _fmt(cfg[key])] for key, why in HYPERPARAMETERS]
    rep.figure(viz.table_figure(["key", "homework", "homework source", "this run"], rows, title="Hyperparameters"),
               "fig4_hyperparameters",
               f"Figure 4: the homework's hyperparameters ('Figure 4' = set in its notebook, 'inherited' = from "
               f"mask_rcnn_R_50_FPN_3x.yaml) beside those of this run, `{config_name}`.")

    rep.text("## Training")
    rep.figure(viz.plot_training_curves(runs.read_metrics(train_dir)), "fig8_training_curves",
               f"Losses, learning rate and validation AP during training ({_rel(train_dir)}).")

    rep.text("## The weight-decay ablation\n\n" + ablation.HOMEWORK_NOTE)
    ab_rows = ablation.read_results(run_root / "ablation")
    table = [[r["variant"], f"{r['weight_decay']:g}", f"{r['weight_decay_bias']:g}", _fmt(r.get("segm/AP")),
              _fmt(r.get("segm/AP50")), "ours (val)"] for r in ab_rows]
    table += [[r["variant"], f"{r['weight_decay']:g}", f"{r['weight_decay_bias']:g}", _fmt(r["segm/AP"]), "-",
               "reported (test)"] for r in ablation.HOMEWORK_REPORTED]
    rep.figure(viz.table_figure(["variant", "WEIGHT_DECAY", "WEIGHT_DECAY_BIAS", "segm AP", "segm AP50", "source"],
                                table, title="Weight-decay ablation"), "fig5_ablation_table",
               f"Figure 5: the ablation variants ({_rel(run_root / 'ablation')}) beside the homework's reported numbers.")
    rep.figure(viz.plot_ablation(ab_rows, reference_rows=ablation.HOMEWORK_REPORTED), "fig6_ablation_chart",
               "Figure 6: validation segm AP of each variant; grey bars are the homework's reported test-set numbers.")
    curves = {r["variant"]: runs.eval_rows(runs.read_metrics(r["run_dir"])) for r in ab_rows}
    rep.figure(viz.plot_eval_curves(curves), "fig7_ablation_curves",
               "Figure 7: validation segm AP during training, one line per ablation variant.")

    rep.text("## Results")
    ours = _our_results(run_root, train_dir)
    table = [[name, model, iters, _fmt(ap), where] for name, model, iters, ap, where in ours]
    table += [[who, model, iters, _fmt(ap), "test (graded)"] for who, model, iters, ap in PEERS]
    rep.figure(viz.table_figure(["run", "model", "iterations", "segm AP", "measured on"], table,
                                title="Our runs against the homework and peers"), "fig9_comparison",
               "Our runs (validation split) against the homework and peers' published leaderboard results "
               "(hidden test set). Different images: a guide, not a ranking.")
    return rep.write()


def _our_results(run_root: Path, train_dir: Path) -> list[tuple]:
    cfg = load_config(train_dir / runs.CONFIG)
    model = f"R{cfg['MODEL.RESNETS.DEPTH']}-FPN"
    val = run_root / "val_metrics.json"
    where = f"val split of {Path(runs.read_run_info(train_dir)['data_root']).name}"
    rows = []
    if val.is_file():
        segm = json.loads(val.read_text(encoding="utf-8"))["segm"]
        rows.append((f"ours: {run_root.name}", model, str(cfg["SOLVER.MAX_ITER"]), segm["AP"], where))
    for r in ablation.read_results(run_root / "ablation"):
        rows.append((f"ours: {run_root.name}/{r['variant']}", model, str(r["iterations"]), r.get("segm/AP"), where))
    return rows


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
