"""Benchmark every available engine on the same config and data.

For each engine: training seconds per iteration (the median of metrics.json's "time" after a few
warm-up iterations), inference seconds per image (images decoded beforehand, one warm-up image)
and peak memory (CUDA: torch.cuda.max_memory_allocated; CPU: the process's peak resident set).
Training and inference each run in a fresh child process, so every peak belongs to one phase
of one engine.

    python bench/bench_engines.py                       # configs/demo.yaml on a generated demo set
    python bench/bench_engines.py --config configs/homework.yaml --data /path/to/tinyvoc --iters 50
    python bench/bench_engines.py --out bench.json MODEL.DEVICE cpu
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

WARMUP_ITERS = 3  # iterations left out of the training median (allocator, caches, cudnn)
RESULT_PREFIX = "BENCH_RESULT "


def peak_memory_mb(device: str) -> float:
    """Peak memory of this process so far: CUDA allocations on a GPU run, else the resident set."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB on Linux


def measure_train(engine: str, config: str, data: str, run_dir: Path, iters: int, overrides: list[str]) -> dict:
    """Train ``iters`` iterations (no periodic evaluation, one checkpoint) and time them."""
    from helpers import experiment, runs

    schedule = ["SOLVER.MAX_ITER", str(iters), "TEST.EVAL_PERIOD", "0", "SOLVER.CHECKPOINT_PERIOD", str(iters)]
    experiment.train(config, [*overrides, *schedule], engine=engine, data_root=data, run_dir=run_dir, progress=False)
    cfg, _ = experiment.load_run(run_dir)
    # the same iterations for every engine; detectron2 leaves "time" out of its first rows
    times = [row["time"] for row in runs.read_metrics(run_dir) if "time" in row and row["iteration"] >= WARMUP_ITERS]
    return {"train_s_per_iter": statistics.median(times), "train_peak_mb": peak_memory_mb(cfg["MODEL.DEVICE"])}


def measure_predict(run_dir: Path, images: Path, count: int) -> dict:
    """Predict ``count`` images (after one warm-up image) with the run's final weights."""
    from helpers import data, experiment

    predictor = experiment.load_predictor(run_dir, checkpoint="final")
    arrays = [data.read_image(path) for _, path in experiment.images_to_predict(images)[0][: count + 1]]
    predictor(arrays[:1])
    start = time.perf_counter()
    for array in arrays[1:]:
        predictor([array])
    seconds = (time.perf_counter() - start) / max(len(arrays) - 1, 1)
    return {"predict_s_per_image": seconds, "predict_peak_mb": peak_memory_mb(predictor.device)}


def run_phase(args: argparse.Namespace, engine: str, phase: str, run_dir: Path) -> dict:
    """One phase of one engine in a child process; its JSON result."""
    command = [sys.executable, str(Path(__file__).resolve()), "--phase", phase, "--engine", engine,
               "--run-dir", str(run_dir), "--config", args.config, "--data", str(args.data),
               "--iters", str(args.iters), "--images", str(args.images), *args.overrides]
    done = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True)
    results = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if done.returncode or not results:
        raise SystemExit(f"{engine} {phase} failed:\n{done.stderr[-3000:]}")
    return json.loads(results[-1][len(RESULT_PREFIX):])


def format_table(results: dict[str, dict], skipped: dict[str, str]) -> str:
    """The results as a text table, plus each engine's ratio to the first one."""
    columns = [("train s/iter", "train_s_per_iter", "{:.3f}"), ("predict s/img", "predict_s_per_image", "{:.3f}"),
               ("train peak MiB", "train_peak_mb", "{:.0f}"), ("predict peak MiB", "predict_peak_mb", "{:.0f}")]
    width = 24
    lines = [f"{'engine':<{width}}" + "".join(f"{title:>18}" for title, _, _ in columns)]
    for engine, row in results.items():
        lines.append(f"{engine:<{width}}" + "".join(f"{fmt.format(row[key]):>18}" for _, key, fmt in columns))
    names = list(results)
    for engine in names[1:]:
        ratios = [results[engine][key] / results[names[0]][key] for _, key, _ in columns]
        lines.append(f"{engine + '/' + names[0]:<{width}}" + "".join(f"{r:>17.2f}x" for r in ratios))
    lines += [f"{engine:<{width}}not available: {reason}" for engine, reason in skipped.items()]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(PROJECT_ROOT / "configs" / "demo.yaml"))
    p.add_argument("--data", default=None, help="data root (default: a demo set generated in a temp folder)")
    p.add_argument("--iters", type=int, default=20, help=f"training iterations (the first {WARMUP_ITERS} are not timed)")
    p.add_argument("--images", type=int, default=10, help="images to predict (plus one warm-up)")
    p.add_argument("--out", default=None, help="also write the results as JSON here")
    p.add_argument("--phase", choices=["train", "predict"], help=argparse.SUPPRESS)
    p.add_argument("--engine", help=argparse.SUPPRESS)
    p.add_argument("--run-dir", help=argparse.SUPPRESS)
    p.add_argument("overrides", nargs=argparse.REMAINDER, help="KEY VALUE config overrides for every engine")
    args = p.parse_args(argv)
    if args.iters <= WARMUP_ITERS:
        p.error(f"--iters must be above {WARMUP_ITERS}")
    return args


def child(args: argparse.Namespace) -> None:
    """--phase: measure one phase and print its result line."""
    from helpers.data import TEST_JSON

    run_dir = Path(args.run_dir)
    if args.phase == "train":
        result = measure_train(args.engine, args.config, args.data, run_dir, args.iters, args.overrides)
    else:
        result = measure_predict(run_dir, Path(args.data) / TEST_JSON, args.images)
    print(RESULT_PREFIX + json.dumps(result))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.phase:
        return child(args)
    from helpers.demo_data import make_demo_data
    from helpers.engines import available_engines
    from helpers.io import write_json

    data_label = args.data or "a generated demo set"
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        args.data = args.data or str(make_demo_data(Path(tmp) / "demo"))
        engines = available_engines()
        results = {}
        for engine in (name for name, (ok, _) in engines.items() if ok):
            run_dir = Path(tmp) / engine
            results[engine] = {**run_phase(args, engine, "train", run_dir), **run_phase(args, engine, "predict", run_dir)}
    skipped = {name: reason for name, (ok, reason) in engines.items() if not ok}
    print(f"config {args.config}, data {data_label}, {args.iters} iterations, {args.images} images")
    print(format_table(results, skipped))
    if args.out:
        write_json(args.out, {"config": args.config, "iters": args.iters, "images": args.images,
                              "results": results, "not_available": skipped}, indent=2)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
