"""One-shot GPU check: every available engine, fp32 against AMP, on the homework config.

For each engine (detectron2 only where it imports; the JSON and the table say why not otherwise) and
each precision (fp32; AMP = SOLVER.AMP.ENABLED, float16 autocast on CUDA): training seconds per
iteration, inference seconds per image, peak GPU memory (torch.cuda.max_memory_allocated, per phase),
FLOPs and the fraction of this GPU's measured matmul peak in the matching dtype, all measured by
bench/bench_engines.py's own functions, each phase in its own child process. The config is
configs/homework.yaml (R50-FPN, 640-800 px, batch 2) with no ImageNet weights (no
downloads) and, by default, stand-in backbone weights (bench/stand_in_weights.py: random, with calibrated
frozen norms, in each engine's format), with which both engines build the model the homework trains: a
FrozenBN backbone with its stem and res2 frozen. ``--random-init`` trains from MODEL.WEIGHTS "" instead
(trainable BN, every stage trained). No evaluation, and the benchmark's equal-work
settings (bench_engines.py: one training size, RPN and test NMS off, score threshold 0, the same ResNet
stride, RoIAlign sampling and foreground rule, so every engine and precision does the same work per
iteration and image). The torchvision engine's
models are always channels-last; the detectron2 engine has no channels-last option.

    python bench/gpu_check.py                           # a generated demo set (images upscaled to 640-800 px)
    python bench/gpu_check.py --data ../shared/tinyvoc  # the real Tiny VOC subset
    python bench/gpu_check.py --device cpu --smoke      # the CPU-checkable parts: tiny sizes, a few iterations

Time: --iters 200 (the default) is an estimate, not a measurement: R50-FPN Mask R-CNN at 640-800 px,
batch 2, runs at about 0.1-0.25 s per iteration on an H100/H200-class GPU, so 4 runs (2 engines x
fp32/AMP) train for 1.5-3.5 minutes in all; with 8 child processes that each start CUDA and build a
model (about 15-30 s apiece) and 4 x 50 predictions, about 4-8 minutes. --budget-min (default 9)
stops starting new runs once that much time has passed; the ones not run say so.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from bench import bench_engines  # noqa: E402
from bench.flops import PEAK_SIZES, matmul_peak, peak_dtype  # noqa: E402

CONFIG = PROJECT_ROOT / "configs" / "homework.yaml"
DEFAULT_OUT = PROJECT_ROOT / "runs" / "gpu-check" / "gpu_check.json"
PRECISIONS = ("fp32", "amp")
CHANNELS_LAST = {"torchvision": "yes (the engine's models are channels-last)",
                 "detectron2": "no (not an option of the detectron2 engine)"}
# --smoke: a slim model at tiny sizes, a few iterations: the script's mechanics in about a minute on a CPU
SMOKE_ITERS = bench_engines.WARMUP_ITERS + 1
SMOKE_IMAGES = 2
SMOKE_PEAK_SIZES = (1024,)
SMOKE_DEMO = {"num_train": 8, "num_test": 3}
SMOKE_OVERRIDES = {
    "MODEL.RESNETS.DEPTH": "18", "MODEL.FPN.OUT_CHANNELS": "32", "MODEL.ROI_BOX_HEAD.FC_DIM": "64",
    "MODEL.ROI_MASK_HEAD.CONV_DIM": "16", "MODEL.ROI_MASK_HEAD.NUM_CONV": "1",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": "32", "MODEL.RPN.PRE_NMS_TOPK_TRAIN": "200",
    "MODEL.RPN.POST_NMS_TOPK_TRAIN": "100", "MODEL.RPN.PRE_NMS_TOPK_TEST": "100", "MODEL.RPN.POST_NMS_TOPK_TEST": "50",
    "TEST.DETECTIONS_PER_IMAGE": "20", "INPUT.MIN_SIZE_TRAIN": "(96,)", "INPUT.MAX_SIZE_TRAIN": "128",
    "INPUT.MIN_SIZE_TEST": "96", "INPUT.MAX_SIZE_TEST": "128", "DATALOADER.NUM_WORKERS": "0",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="data root (default: a demo set generated in a temp folder)")
    p.add_argument("--device", default="cuda", help="torch device (default cuda; cpu with --smoke for CI)")
    p.add_argument("--iters", type=int, default=None,
                   help=f"training iterations per run (default 200; {SMOKE_ITERS} with --smoke)")
    p.add_argument("--images", type=int, default=None, help="images to predict per run (default 50; 2 with --smoke)")
    p.add_argument("--engines", nargs="+", default=None, help="engines to run (default: every available one)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes and a few iterations: the mechanics, not numbers")
    p.add_argument("--random-init", action="store_true",
                   help="train from random init (trainable BN, nothing frozen) instead of the stand-in weights "
                        "(the homework's FrozenBN backbone, stem and res2 frozen)")
    p.add_argument("--budget-min", type=float, default=9.0, help="start no new run after this many minutes")
    p.add_argument("--out", default=str(DEFAULT_OUT), help=f"the JSON results (default {DEFAULT_OUT.relative_to(PROJECT_ROOT)})")
    args = p.parse_args(argv)
    args.iters = args.iters if args.iters is not None else SMOKE_ITERS if args.smoke else 200
    args.images = args.images if args.images is not None else SMOKE_IMAGES if args.smoke else 50
    if args.iters <= bench_engines.WARMUP_ITERS:
        p.error(f"--iters must be above {bench_engines.WARMUP_ITERS}")
    if args.images < 1:
        p.error("--images must be at least 1")
    if args.budget_min <= 0:
        p.error("--budget-min must be positive")
    return args


def check_inputs(args: argparse.Namespace) -> None:
    """Data root, engines, output file and device, before any work (HelpersError: one error: line)."""
    from helpers import data
    from helpers.engines import ENGINE_MODULES
    from helpers.errors import ConfigError, DataError
    from helpers.io import check_output_dir, check_output_path

    if args.data is not None and not (Path(args.data) / data.TRAIN_JSON).is_file():
        raise DataError(f"--data {args.data}: no {data.TRAIN_JSON} there (the Tiny VOC root, e.g. ../shared/tinyvoc)")
    unknown = sorted(set(args.engines or []) - set(ENGINE_MODULES))
    if unknown:
        raise ConfigError(f"--engines {' '.join(unknown)}: unknown; choose from {', '.join(ENGINE_MODULES)}")
    out = Path(args.out)
    if out.parent.is_dir():
        check_output_path(out, "--out")
    else:
        check_output_dir(out.parent, "--out")  # created by the write
    import torch

    try:
        device = torch.device(args.device)
    except RuntimeError:
        raise ConfigError(f"--device {args.device!r} is not a torch device (use cuda or cpu)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda but CUDA is not available here: run it on a GPU machine, "
                          "or pass --device cpu --smoke for the CPU-checkable parts")


def run_overrides(args: argparse.Namespace, num_classes: int, amp: bool) -> list[str]:
    """KEY VALUE overrides of homework.yaml for one run: the device, the data's classes, no evaluation
    (timing only), AMP on or off, random init with --random-init (else run_phase gives each engine its
    stand-in weights); plus the smoke sizes."""
    items = {**({"MODEL.WEIGHTS": '""'} if args.random_init else {}), "MODEL.DEVICE": args.device,
             "MODEL.ROI_HEADS.NUM_CLASSES": str(num_classes), "DATASETS.VAL_FRACTION": "0.0", "SOLVER.AMP.ENABLED": str(amp),
             **(SMOKE_OVERRIDES if args.smoke else {})}
    return [x for kv in items.items() for x in kv]


def run_one(args: argparse.Namespace, engine: str, precision: str, root: Path, num_classes: int, run_dir: Path,
            peaks: dict, stand_in: dict[str, Path]) -> dict:
    """Train and predict with one engine at one precision (bench_engines' phases), from ``stand_in``'s
    weights for it unless --random-init; its row."""
    overrides = run_overrides(args, num_classes, precision == "amp")
    phase_args = argparse.Namespace(config=str(CONFIG), data=str(root), iters=args.iters, images=args.images,
                                    overrides=overrides, stand_in=stand_in,
                                    pinned=bench_engines.equal_work_overrides(str(CONFIG), overrides, bool(stand_in)))
    row = {"engine": engine, "precision": precision, "channels_last": CHANNELS_LAST.get(engine, "unknown")}
    try:
        for phase in ("train", "predict"):
            row.update(bench_engines.run_phase(phase_args, engine, phase, run_dir))
    except SystemExit as e:  # run_phase's message: which phase failed, and the child's stderr
        print(e, file=sys.stderr)
        last = [line for line in str(e).splitlines() if line.strip()][-1:]
        return {**row, "status": f"failed: {last[0] if last else 'no output'}"}
    peak = peaks[precision]["flop_per_s"]
    return {**bench_engines.add_fractions(row, peak), "status": "ok"}


def format_markdown(rows: list[dict], peaks: dict) -> str:
    """The rows as one Markdown table (3-4 significant digits; memory in whole MiB)."""
    columns = [("train s/iter", "train_s_per_iter", "{:.4g}"), ("predict s/img", "predict_s_per_image", "{:.4g}"),
               ("train peak MiB", "train_peak_mb", "{:.0f}"), ("predict peak MiB", "predict_peak_mb", "{:.0f}"),
               ("train GFLOP/s", "train_flop_per_s", "{:.4g}"), ("train of peak", "train_fraction_of_peak", "{:.3g}"),
               ("predict GFLOP/s", "predict_flop_per_s", "{:.4g}"),
               ("predict of peak", "predict_fraction_of_peak", "{:.3g}")]
    scale = {"train_flop_per_s": 1e-9, "predict_flop_per_s": 1e-9}
    lines = ["| engine | precision | channels-last | " + " | ".join(t for t, _, _ in columns) + " | status |",
             "|---|---|---|" + "---|" * len(columns) + "---|"]
    for row in rows:
        cells = [fmt.format(row[key] * scale.get(key, 1)) if key in row else "" for _, key, fmt in columns]
        lines.append(f"| {row['engine']} | {row['precision']} | {row['channels_last'].split(' ')[0]} | "
                     + " | ".join(cells) + f" | {row['status']} |")
    for precision, peak in peaks.items():
        lines.append(f"\n{precision} peak: {peak['flop_per_s'] * 1e-9:.4g} GFLOP/s (best {peak['dtype']} matmul of "
                     f"{peak['sizes']}-square matrices on {peak['device']}, {peak['threads']} threads)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    check_inputs(args)
    import torch

    from bench.stand_in_weights import write_stand_in_weights
    from helpers import data
    from helpers.config import load_config
    from helpers.demo_data import make_demo_data
    from helpers.engines import available_engines
    from helpers.io import write_json

    started = time.monotonic()
    engines = {name: status for name, status in available_engines().items() if args.engines is None or name in args.engines}
    not_available = {name: reason for name, (ok, reason) in engines.items() if not ok}
    device_type = torch.device(args.device).type
    sizes = SMOKE_PEAK_SIZES if args.smoke else PEAK_SIZES
    peaks = {"fp32": matmul_peak(args.device, peak_dtype(args.device, amp=False), sizes)}
    if any(device_type in bench_engines.ENGINE_AMP_DEVICES.get(name, ()) for name in engines):
        peaks["amp"] = matmul_peak(args.device, peak_dtype(args.device, amp=True), sizes)
    if device_type == "cuda":
        torch.cuda.empty_cache()  # the children measure their own memory; leave them the whole GPU
    rows = []
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        root = Path(args.data).resolve() if args.data else make_demo_data(Path(tmp) / "demo", **(SMOKE_DEMO if args.smoke else {}))
        num_classes = len(data.load_split(root / data.TRAIN_JSON, check_images=False).categories)
        stand_in = {} if args.random_init else write_stand_in_weights(
            load_config(CONFIG, run_overrides(args, num_classes, amp=False)), Path(tmp) / "weights")
        for engine in (name for name, (ok, _) in engines.items() if ok):
            for precision in PRECISIONS:
                row = {"engine": engine, "precision": precision, "channels_last": CHANNELS_LAST.get(engine, "unknown")}
                if precision == "amp" and device_type not in bench_engines.ENGINE_AMP_DEVICES.get(engine, ()):
                    rows.append({**row, "status": f"skipped: the {engine} engine's AMP autocasts on "
                                                  f"{', '.join(bench_engines.ENGINE_AMP_DEVICES.get(engine, ())) or 'no device'} only"})
                elif time.monotonic() - started > args.budget_min * 60:
                    rows.append({**row, "status": f"skipped: --budget-min {args.budget_min:g} used up"})
                else:
                    print(f"{engine} {precision}: {args.iters} iterations, {args.images} images ...", flush=True)
                    rows.append(run_one(args, engine, precision, root, num_classes, Path(tmp) / f"{engine}-{precision}", peaks,
                                        stand_in))
    elapsed = time.monotonic() - started
    result = {
        "device": torch.cuda.get_device_name(args.device) if device_type == "cuda" else args.device,
        "torch": torch.__version__, "config": str(CONFIG.relative_to(PROJECT_ROOT)), "smoke": args.smoke,
        "data": str(args.data) if args.data else "a generated demo set", "iters": args.iters,
        "images": args.images, "weights": "random init" if args.random_init else "stand-in (FrozenBN, stem and res2 frozen)",
        "peaks": peaks, "rows": rows, "not_available": not_available, "elapsed_s": elapsed,
    }
    table = format_markdown(rows, peaks)
    print(table)
    for name, reason in not_available.items():
        print(f"{name}: not available: {reason}")
    write_json(args.out, result, indent=2)
    print(f"wrote {args.out} ({elapsed / 60:.1f} minutes)")
    if any(row["status"].startswith("failed") for row in rows):
        raise SystemExit(1)


if __name__ == "__main__":
    bench_engines.cli(main)
