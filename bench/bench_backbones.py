"""Cost of the homework's backbones (R50, R101, X101-32x8d) per engine, side by side in one run.

For each backbone config (configs/homework.yaml, homework_r101.yaml, homework_x101.yaml; random init,
CPU) and each available engine: trainable parameters (the engine's ``build_optimizer`` over a random-init
model: with random init every stage trains), FLOPs of one training iteration (the engine's
``training_steps``) and of one prediction (bench/flops.count_flops: matmuls and convolutions), seconds per
training iteration (median of --iters after --warmup) and per predicted image (median of --images real
Tiny VOC test images after one warm-up), at --min-size (INPUT.MIN_SIZE_TRAIN and _TEST; small by default so
that all of it fits minutes on a CPU). The predictor runs at score threshold 0, so each image sends
TEST.DETECTIONS_PER_IMAGE boxes to the mask head (a random-init model would send none at 0.05).

Beside them, the peers' published Tiny VOC mask mAP@0.5 for these backbones (report/report.md's table:
hidden test set, as graded, not measured here).

    python bench/bench_backbones.py --data ../shared/tinyvoc --min-size 320 --out backbones.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from bench.bench_engines import cli  # noqa: E402
from bench.flops import count_flops  # noqa: E402
from bench.profile_engines import DEFAULT_DATA, check_run_args, engines_to_run, make_run  # noqa: E402

BACKBONES = {
    "R50": PROJECT_ROOT / "configs" / "homework.yaml",
    "R101": PROJECT_ROOT / "configs" / "homework_r101.yaml",
    "X101-32x8d": PROJECT_ROOT / "configs" / "homework_x101.yaml",
}
# report/report.md, "Published results on Tiny VOC": hidden test set, as graded, not measured here
PUBLISHED = {
    "R50": [{"who": "the homework", "model": "R50-FPN", "iterations": "30k", "mask_map50": 0.47416}],
    "R101": [{"who": "Yunyung", "model": "R101-FPN", "iterations": "50k", "mask_map50": 0.485}],
    "X101-32x8d": [{"who": "Zonsor", "model": "X101-FPN", "iterations": "-", "mask_map50": 0.523},
                   {"who": "Avocado5818", "model": "X101", "iterations": "120k", "mask_map50": 0.557}],
}
PUBLISHED_NOTE = "hidden test set, as graded, not measured here"


def measure(backbone: str, engine: str, args: argparse.Namespace, tmp: Path, arrays: list) -> dict:
    """Parameters, FLOPs and seconds of one backbone on one engine."""
    from helpers import data, experiment
    from helpers.data import SplitPaths
    from helpers.engines import get_engine

    run_args = argparse.Namespace(config=str(BACKBONES[backbone]), data=args.data, min_size=args.min_size,
                                  overrides=args.overrides)
    run_dir = make_run(engine, run_args, tmp / backbone)
    cfg, info = experiment.load_run(run_dir)
    module = get_engine(engine)
    categories = data.load_split(info["train_split"], check_images=False).categories
    params = sum(p.numel() for group in module.build_optimizer(cfg, categories).param_groups for p in group["params"])
    cfg["SOLVER.MAX_ITER"] = args.warmup + args.iters + 1
    step = module.training_steps(cfg, SplitPaths(Path(info["train_split"]), Path(info["val_split"])))
    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.iters):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    train_flops = count_flops(step)[1]  # the next iteration, counted (not timed)
    predictor = experiment.load_predictor(run_dir, checkpoint="final", score_thresh=0.0)
    predictor(arrays[:1])
    seconds = []
    for array in arrays[1:]:
        start = time.perf_counter()
        predictor([array])
        seconds.append(time.perf_counter() - start)
    predict_flops = statistics.fmean(count_flops(lambda a=array: predictor([a]))[1] for array in arrays[1:])
    return {"params": params, "train_flops_per_iter": train_flops, "predict_flops_per_image": predict_flops,
            "train_s_per_iter": statistics.median(times), "predict_s_per_image": statistics.median(seconds),
            "train_times_s": times, "predict_times_s": seconds}


def format_table(results: dict[str, dict[str, dict]]) -> str:
    """Markdown: one row per backbone and engine, the published mAP beside each backbone."""
    lines = ["| backbone | engine | params (M) | train GFLOP/iter | predict GFLOP/img | train s/iter | predict s/img "
             f"| published mask mAP@0.5 ({PUBLISHED_NOTE}) |", "|---" * 8 + "|"]
    for backbone, engines in results.items():
        published = "; ".join(f"{p['mask_map50']} ({p['who']}, {p['model']}, {p['iterations']} it)"
                              for p in PUBLISHED[backbone])
        for engine, row in engines.items():
            lines.append(f"| {backbone} | {engine} | {row['params'] / 1e6:.2f} | {row['train_flops_per_iter'] / 1e9:.4g} "
                         f"| {row['predict_flops_per_image'] / 1e9:.4g} | {row['train_s_per_iter']:.3g} "
                         f"| {row['predict_s_per_image']:.3g} | {published} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(DEFAULT_DATA), help="Tiny VOC root (default: ../shared/tinyvoc)")
    p.add_argument("--min-size", type=int, default=320, help="INPUT.MIN_SIZE_TRAIN and _TEST (default 320)")
    p.add_argument("--iters", type=int, default=2, help="timed training iterations (default 2)")
    p.add_argument("--warmup", type=int, default=1, help="untimed training iterations before them (default 1)")
    p.add_argument("--images", type=int, default=2, help="timed predictions, plus one warm-up (default 2)")
    p.add_argument("--backbones", nargs="+", default=list(BACKBONES), help=f"any of {' '.join(BACKBONES)}")
    p.add_argument("--engines", nargs="+", default=None, help="engines (default: every available one)")
    p.add_argument("--out", default=None, help="also write the results as JSON here")
    p.add_argument("overrides", nargs=argparse.REMAINDER, help="KEY VALUE config overrides for every run")
    args = p.parse_args(argv)
    check_run_args(p, args)
    unknown = sorted(set(args.backbones) - set(BACKBONES))
    if unknown:
        p.error(f"--backbones {' '.join(unknown)}: unknown; choose from {' '.join(BACKBONES)}")
    return args


def main(argv: list[str] | None = None) -> None:
    import torch

    from helpers import data, experiment
    from helpers.config import load_config
    from helpers.io import check_output_path, write_json

    args = parse_args(argv)
    if args.out:
        check_output_path(args.out, "--out")
    experiment.resolve_data_root(load_config(BACKBONES["R50"]), args.data)  # no pascal_train.json: one error line
    names, engines = engines_to_run(args.engines)
    arrays = [data.read_image(path) for _, path in experiment.images_to_predict(Path(args.data) / data.TEST_JSON)[0]
              [: args.images + 1]]
    with tempfile.TemporaryDirectory(prefix="backbones-") as tmp:
        results: dict[str, dict[str, dict]] = {}
        for backbone in args.backbones:
            for engine in names:
                row = measure(backbone, engine, args, Path(tmp), arrays)
                results.setdefault(backbone, {})[engine] = row
                print(f"measured {backbone} {engine}: {row['train_s_per_iter']:.3g} s/iter, "
                      f"{row['predict_s_per_image']:.3g} s/img", flush=True)  # a long run shows its progress
    print(f"data {args.data}, min size {args.min_size}, batch of the homework config, {args.iters} timed iteration(s) "
          f"after {args.warmup}, {args.images} image(s) after 1; random init, CPU, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(format_table(results))
    if args.out:
        write_json(args.out, {"data": str(args.data), "min_size": args.min_size, "iters": args.iters,
                              "warmup": args.warmup, "images": args.images, "results": results,
                              "published": PUBLISHED, "published_note": PUBLISHED_NOTE,
                              "not_available": {n: r for n, (ok, r) in engines.items() if not ok}}, indent=2)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    cli(main)
