"""Benchmark every available engine on the same config and data.

For each engine: training seconds per iteration (the median of metrics.json's "time" after a few
warm-up iterations), inference seconds per image (images decoded beforehand, one warm-up image)
and peak memory (CUDA: torch.cuda.max_memory_allocated; CPU: the process's peak resident set).
Training and inference each run in a fresh child process, so every peak belongs to one phase
of one engine.

And the fraction of the machine's peak (bench/flops.py): FLOPs of a training iteration (forward,
backward; the mean of the first FLOP_ITERS timed iterations, replayed with the engine's
``training_steps`` after the timing and the memory readout) and of a prediction (the mean over the
timed images, counted after timing them), each over its measured seconds, against the best dense
matmul FLOP/s of this device measured in the same run.

Equal work (the default; ``--as-configured`` turns it off). Two engines given the same config do not do the
same work per iteration or per image: each draws its own training sizes from MIN_SIZE_TRAIN, and the number of
proposals and detections that reach the box and mask heads depends on each model's own (random) weights. On
the homework config that made torchvision count 21% more FLOPs per training iteration and 30% more per image
than detectron2 in the same run (bench/PROFILE.md). So by default the benchmark pins the work: one training
size (the config's largest), RPN NMS off (every image sends exactly POST_NMS_TOPK proposals on), score
threshold 0 and test NMS off (exactly DETECTIONS_PER_IMAGE detections reach the mask head), the stride of each
stage's first block in its 3x3 conv (STRIDE_IN_1X1 False, the only way torchvision builds a ResNet; the MSRA
weights' True puts it in the 1x1 conv, which makes detectron2's first blocks of res3..res5 do a quarter of
their 1x1 work), RoIAlign at a fixed POOLER_SAMPLES points per bin (the configs' adaptive 0 samples in
proportion to each RoI's area, so the random proposals' sizes set the cost: 0.57 s against 0.20 s per image
for the same 1000 RoIs in one profile), foreground RoIs only at an IoU of POSITIVE_IOU with a ground-truth box
(both engines add the ground-truth boxes to the proposals, so each image's positives are its ground-truth
boxes in either engine, and the mask head trains on the same RoIs; at the configs' 0.5 the count follows how
well each random model's proposals happen to overlap the objects, and with them the mask targets' cost: 137
against 5 ms in one profile), and, under random init or stand-in weights (below), the pixel std set to
ImageNet's (with its default std of 1, meant for MSRA weights, a random-init model's activations are ~58x
torchvision's and its RPN proposes mostly degenerate boxes, which are dropped: 30-60 proposals instead of
1000; torchvision always normalises with ImageNet's). An engine that does not support a key (it builds that
part its own fixed way: helpers.config.ENGINE_UNSUPPORTED) is not given it. The FLOP counts in the second
table show whether the work matched (a line under it says where it did not, with the ratio per FLOP). Both engines
train the same images at each iteration: the same SEED picks the same positions in the split, which both list in image
id order. Your own KEY VALUE overrides come after these, so they win.

Denormals. Every phase runs with ``torch.set_flush_denormal(True)``, in every engine: random and stand-in
weights make some values subnormal, and an x86 CPU computes those far slower. That measured the engines'
luck, not their work: the same detectron2 training iterations (stand-in weights) took 16.5 and 18.4 s with
denormals and 11.5 and 11.3 s flushed, with the same losses.

Stand-in weights (``--stand-in-weights``). The homework trains from ImageNet weights, and with them both
engines build a FrozenBN backbone with its stem and res2 frozen; random init builds trainable BN with
nothing frozen, another model with another cost. Where ImageNet weights cannot be downloaded, this
option gives each engine random weights in its own format with calibrated norm statistics
(bench/stand_in_weights.py) as MODEL.WEIGHTS, so that both build and train the homework's structure.

    python bench/bench_engines.py                       # configs/demo.yaml on a generated demo set
    python bench/bench_engines.py --config configs/homework.yaml --data /path/to/tinyvoc --iters 50
    python bench/bench_engines.py --out bench.json MODEL.DEVICE cpu
    python bench/bench_engines.py --config configs/homework.yaml --data /path/to/tinyvoc --stand-in-weights MODEL.DEVICE cpu
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

from bench.flops import PEAK_SIZES, count_flops, matmul_peak, peak_dtype  # noqa: E402

WARMUP_ITERS = 3  # iterations left out of the training median (allocator, caches, cudnn)
FLOP_ITERS = 3  # timed iterations whose FLOPs are counted (fewer when fewer were timed)
RESULT_PREFIX = "BENCH_RESULT "
POOLER_SAMPLES = 2  # RoIAlign points per bin and axis under equal work (torchvision's own Mask R-CNN uses 2)
POSITIVE_IOU = 0.99  # under equal work a training RoI is foreground only if it is (almost) a ground-truth box


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
    from helpers.data import SplitPaths

    schedule = ["SOLVER.MAX_ITER", str(iters), "TEST.EVAL_PERIOD", "0", "SOLVER.CHECKPOINT_PERIOD", str(iters)]
    experiment.train(config, [*overrides, *schedule], engine=engine, data_root=data, run_dir=run_dir, progress=False)
    cfg, info = experiment.load_run(run_dir)
    # the same iterations for every engine; detectron2 leaves "time" out of its first rows
    times = [row["time"] for row in runs.read_metrics(run_dir) if "time" in row and row["iteration"] >= WARMUP_ITERS]
    result = {"train_s_per_iter": statistics.median(times), "train_peak_mb": peak_memory_mb(cfg["MODEL.DEVICE"]),
              # the backbone as the engine built it (random init trains BN and every stage: module docstring)
              "backbone_norm": cfg["MODEL.RESNETS.NORM"], "freeze_at": cfg["MODEL.BACKBONE.FREEZE_AT"]}
    flops = count_train_flops(engine, cfg, SplitPaths(Path(info["train_split"]), Path(info["val_split"])),
                              min(FLOP_ITERS, iters - WARMUP_ITERS))
    mean = statistics.fmean(flops)
    return {**result, "train_flops_per_iter": mean, "train_flop_per_s": mean / result["train_s_per_iter"],
            "train_flops_iterations": [WARMUP_ITERS, WARMUP_ITERS + len(flops) - 1]}


def count_train_flops(engine: str, cfg, splits, count: int) -> list[int]:
    """FLOPs of training iterations WARMUP_ITERS .. WARMUP_ITERS + count - 1, replayed from scratch
    (the earlier ones run uncounted) with the engine's ``training_steps``: the run's batches, seeds
    and weights (bit-identical on a CPU)."""
    from helpers.engines import get_engine

    step = get_engine(engine).training_steps(cfg, splits)
    for _ in range(WARMUP_ITERS):
        step()
    return [count_flops(step)[1] for _ in range(count)]


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
    result = {"predict_s_per_image": seconds, "predict_peak_mb": peak_memory_mb(predictor.device)}
    flops = statistics.fmean(count_flops(lambda a=array: predictor([a]))[1] for array in arrays[1:] or arrays)
    return {**result, "predict_flops_per_image": flops, "predict_flop_per_s": flops / seconds}


def run_phase(args: argparse.Namespace, engine: str, phase: str, run_dir: Path) -> dict:
    """One phase of one engine in a child process; its JSON result."""
    stand_in = getattr(args, "stand_in", {})  # gpu_check.py passes its own arguments
    weights = ["MODEL.WEIGHTS", str(stand_in[engine])] if engine in stand_in else []
    overrides = [*engine_pins(engine, args.pinned), *weights, *args.overrides]  # the user's own overrides last: they win
    command = [sys.executable, str(Path(__file__).resolve()), "--phase", phase, "--engine", engine,
               "--run-dir", str(run_dir), "--config", args.config, "--data", str(args.data),
               "--iters", str(args.iters), "--images", str(args.images), *overrides]
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


def add_fractions(row: dict, peak: float) -> dict:
    """The row with each phase's achieved FLOP/s as a fraction of the measured peak."""
    return {**row, **{f"{phase}_fraction_of_peak": row[f"{phase}_flop_per_s"] / peak for phase in ("train", "predict")}}


def format_compute_table(results: dict[str, dict], peaks: dict[str, dict]) -> str:
    """FLOPs, achieved FLOP/s and fraction of the measured matmul peak per engine, as a text table
    (3 significant digits: a small fraction stays a small number, never 0.00). ``peaks``: the measured
    peak of each dtype the engines compute in; a row's ``dtype`` (float32 when absent) names its own."""
    columns = [("train GFLOP/iter", "train_flops_per_iter", 1e-9), ("train GFLOP/s", "train_flop_per_s", 1e-9),
               ("train of peak", "train_fraction_of_peak", 1), ("predict GFLOP/img", "predict_flops_per_image", 1e-9),
               ("predict GFLOP/s", "predict_flop_per_s", 1e-9), ("predict of peak", "predict_fraction_of_peak", 1)]
    width = 24
    lines = [f"peak {peak['flop_per_s'] * 1e-9:.4g} GFLOP/s: best {peak['dtype']} matmul of {peak['sizes']}-square "
             f"matrices on {peak['device']}, {peak['threads']} threads" for peak in peaks.values()]
    lines.append(f"{'engine':<{width}}{'dtype':>10}" + "".join(f"{title:>19}" for title, _, _ in columns))
    for engine, row in results.items():
        lines.append(f"{engine:<{width}}{row.get('dtype', 'float32'):>10}"
                     + "".join(f"{row[key] * scale:>19.3g}" for _, key, scale in columns))
    return "\n".join(lines + work_lines(results))


WORK_TOLERANCE = 0.02  # FLOP counts further apart than this are not the same work


def work_lines(results: dict[str, dict]) -> list[str]:
    """For each engine after the first: its FLOPs per iteration and per image against the first's, and
    the first engine's speed per FLOP against its own (the fair ratio where the work differs), with a
    warning where the FLOP counts differ by more than WORK_TOLERANCE."""
    names = list(results)
    first = results[names[0]] if names else {}
    lines = []
    for engine in names[1:]:
        row = results[engine]
        for phase, flops, unit in (("train", "train_flops_per_iter", "iteration"),
                                   ("predict", "predict_flops_per_image", "image")):
            work = row[flops] / first[flops]
            per_flop = first[f"{phase}_flop_per_s"] / row[f"{phase}_flop_per_s"]
            warning = ": not the same work, compare per FLOP" if abs(work - 1) > WORK_TOLERANCE else ""
            lines.append(f"{phase}: {engine} counts {work:.3g}x {names[0]}'s FLOPs per {unit}{warning}; "
                         f"per FLOP {names[0]} is {per_flop:.3g}x as fast")
    return lines


IMAGENET_PIXEL_STD = "[57.375, 57.12, 58.395]"  # detectron2's pixel std for torchvision-style weights (BGR, 0..255)


def equal_work_overrides(config: str, overrides: list[str], stand_in: bool = False) -> list[str]:
    """The KEY VALUE overrides that give every engine the same work (module docstring: Equal work); with
    ``stand_in`` (weights calibrated for ImageNet-normalised inputs) the pixel std is pinned as under random init."""
    from helpers.config import load_config

    cfg = load_config(config, overrides)
    pins = ["INPUT.MIN_SIZE_TRAIN", f"({max(cfg['INPUT.MIN_SIZE_TRAIN'])},)", "INPUT.MIN_SIZE_TRAIN_SAMPLING", "choice",
            "MODEL.RPN.NMS_THRESH", "1.0", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
            "MODEL.ROI_HEADS.NMS_THRESH_TEST", "1.0", "MODEL.RESNETS.STRIDE_IN_1X1", "False",
            "MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO", str(POOLER_SAMPLES), "MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO",
            str(POOLER_SAMPLES), "MODEL.ROI_HEADS.IOU_THRESHOLDS", f"[{POSITIVE_IOU}]"]
    if cfg["MODEL.WEIGHTS"] == "" or stand_in:
        pins += ["MODEL.PIXEL_STD", IMAGENET_PIXEL_STD]
    return pins


def engine_pins(engine: str, pins: list[str]) -> list[str]:
    """The equal-work settings an engine takes: a key it does not support (helpers.config's
    ENGINE_UNSUPPORTED: it builds that part its own fixed way) is left out for it."""
    from helpers.config import ENGINE_UNSUPPORTED

    unsupported = ENGINE_UNSUPPORTED.get(engine, {})
    pairs = zip(pins[::2], pins[1::2])
    return [item for key, value in pairs if key not in unsupported for item in (key, value)]


# where each engine's SOLVER.AMP.ENABLED autocasts (float16 on CUDA, bfloat16 on the CPU); elsewhere it runs in
# full precision with AMP on. detectron2's AMPTrainer asserts CUDA ("CUDA is required for AMP training"), and its
# predictor has no autocast, so on a CPU the detectron2 engine trains and predicts in float32.
ENGINE_AMP_DEVICES = {"torchvision": ("cuda", "cpu"), "detectron2": ("cuda",)}


def engine_dtypes(args: argparse.Namespace, engines: list[str]) -> dict[str, str]:
    """The dtype each engine's convolutions and matmuls run in under the config (bench/flops.py's
    peak_dtype): float32 (tf32 on CUDA), or autocast's with SOLVER.AMP.ENABLED where the engine autocasts."""
    import torch

    from helpers.config import load_config
    from helpers.errors import EngineError

    cfg = load_config(args.config, args.overrides)
    device = cfg["MODEL.DEVICE"]
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise EngineError("MODEL.DEVICE is cuda but CUDA is not available here: pass MODEL.DEVICE cpu to run on the CPU")
    kind = torch.device(device).type
    return {engine: peak_dtype(device, bool(cfg["SOLVER.AMP.ENABLED"]) and kind in ENGINE_AMP_DEVICES.get(engine, ()))
            for engine in engines}


def measure_peaks(args: argparse.Namespace, dtypes: dict[str, str]) -> dict[str, dict]:
    """The dense matmul peak of the config's device in each dtype of ``dtypes`` (engine -> dtype)."""
    from helpers.config import load_config

    device = load_config(args.config, args.overrides)["MODEL.DEVICE"]
    return {dtype: matmul_peak(device, dtype, tuple(args.peak_sizes)) for dtype in dict.fromkeys(dtypes.values())}


def precision_line(dtypes: dict[str, str]) -> str:
    """What each engine computes in, and a warning where they differ."""
    text = ", ".join(f"{engine} in {dtype}" for engine, dtype in dtypes.items())
    if len(set(dtypes.values())) > 1:
        text += (": not the same precision (SOLVER.AMP.ENABLED autocasts where an engine can: "
                 + "; ".join(f"{e} on {', '.join(d)}" for e, d in ENGINE_AMP_DEVICES.items() if e in dtypes) + ")")
    return f"precision: {text}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(PROJECT_ROOT / "configs" / "demo.yaml"))
    p.add_argument("--data", default=None, help="data root (default: a demo set generated in a temp folder)")
    p.add_argument("--iters", type=int, default=20, help=f"training iterations (the first {WARMUP_ITERS} are not timed)")
    p.add_argument("--images", type=int, default=10, help="images to predict (plus one warm-up)")
    p.add_argument("--out", default=None, help="also write the results as JSON here")
    p.add_argument("--as-configured", action="store_true",
                   help="run the config as it is, without the settings that give every engine the same work")
    p.add_argument("--stand-in-weights", action="store_true",
                   help="give each engine random backbone weights with calibrated frozen norms as MODEL.WEIGHTS: "
                        "the homework's FrozenBN structure without downloading ImageNet weights")
    p.add_argument("--peak-sizes", type=int, nargs="+", default=list(PEAK_SIZES), metavar="N",
                   help=f"square matmul sizes the peak FLOP/s is the best of (default {' '.join(map(str, PEAK_SIZES))})")
    p.add_argument("--phase", choices=["train", "predict"], help=argparse.SUPPRESS)
    p.add_argument("--engine", help=argparse.SUPPRESS)
    p.add_argument("--run-dir", help=argparse.SUPPRESS)
    p.add_argument("overrides", nargs=argparse.REMAINDER, help="KEY VALUE config overrides for every engine")
    args = p.parse_args(argv)
    if args.iters <= WARMUP_ITERS:
        p.error(f"--iters must be above {WARMUP_ITERS}")
    if args.images < 1:
        p.error("--images must be at least 1")
    if min(args.peak_sizes) < 1:
        p.error("--peak-sizes must be positive")
    if args.stand_in_weights and "MODEL.WEIGHTS" in args.overrides[::2]:
        p.error("--stand-in-weights sets MODEL.WEIGHTS: leave MODEL.WEIGHTS out of the overrides")
    return args


def child(args: argparse.Namespace) -> None:
    """--phase: measure one phase and print its result line (denormals flushed: module docstring)."""
    import torch

    from helpers.data import TEST_JSON

    torch.set_flush_denormal(True)

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
    from helpers.io import check_output_path, write_json

    if args.out:
        check_output_path(args.out, "--out")
    data_label = args.data or "a generated demo set"
    args.pinned = [] if args.as_configured else equal_work_overrides(args.config, args.overrides, args.stand_in_weights)
    engines = available_engines()
    dtypes = engine_dtypes(args, [name for name, (ok, _) in engines.items() if ok])
    peaks = measure_peaks(args, dtypes)
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        args.data = args.data or str(make_demo_data(Path(tmp) / "demo"))
        args.stand_in = {}
        if args.stand_in_weights:
            from bench.stand_in_weights import write_stand_in_weights
            from helpers.config import load_config

            args.stand_in = write_stand_in_weights(load_config(args.config, args.overrides), Path(tmp) / "weights")
        results = {}
        for engine, dtype in dtypes.items():
            run_dir = Path(tmp) / engine
            row = {**run_phase(args, engine, "train", run_dir), **run_phase(args, engine, "predict", run_dir)}
            results[engine] = add_fractions({**row, "dtype": dtype}, peaks[dtype]["flop_per_s"])
    skipped = {name: reason for name, (ok, reason) in engines.items() if not ok}
    print(f"config {args.config}, data {data_label}, {args.iters} iterations, {args.images} images, "
          + (f"equal work: {' '.join(args.pinned)}" if args.pinned else "as configured")
          + (", stand-in weights (FrozenBN backbone as with ImageNet weights)" if args.stand_in_weights else ""))
    print(precision_line(dtypes))
    print(format_table(results, skipped))
    print(format_compute_table(results, peaks))
    if args.out:
        write_json(args.out, {"config": args.config, "iters": args.iters, "images": args.images,
                              "equal_work": args.pinned, "stand_in_weights": args.stand_in_weights,
                              "overrides": args.overrides, "peaks": peaks,
                              "results": results, "not_available": skipped}, indent=2)
        print(f"wrote {args.out}")


def cli(main_fn=None) -> None:
    """Run ``main_fn`` (default: :func:`main`); a user's mistake (HelpersError) is one ``error:`` line, exit 2."""
    from helpers.errors import HelpersError

    try:
        (main_fn or main)()
    except HelpersError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    cli()
