"""torch.compile measured on the torchvision engine's training step: eager against a compiled backbone.

The ResNet-FPN backbone is the part of Mask R-CNN that ``torch.compile`` can take whole (the RPN and ROI
heads are data-dependent: proposals, sampling, NMS). Both variants train the same model (the config's,
random init, channels-last, as the engine builds it) on the same synthetic batches of two images whose
sizes cycle through three shapes (multi-scale training meets several shapes; ``dynamic=True`` asks for
shape-generic kernels). Each variant runs in this process one after the other; the first iterations of the
compiled one include compiling, so they are reported apart from the steady-state median.

    python bench/try_compile.py --min-size 320 --iters 8 [--out compile.json] [KEY VALUE ...]

Findings (bench/PROFILE.md): on a 2-core CPU it compiled for minutes and then saved a few per cent per
iteration, so the engine does not offer it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from bench.bench_engines import cli  # noqa: E402

SHAPES = ((1.0, 4 / 3), (4 / 3, 1.0), (1.0, 1.1))  # (height, width) as multiples of --min-size, cycled
WARMUP = 3  # iterations left out of the median (compiling happens in them)


def batch(step: int, size: int, gen) -> tuple[list, list[dict]]:
    """Two random images of one of SHAPES, each with two boxes and masks of classes 1 and 5."""
    import torch

    h, w = (int(round(size * f / 32) * 32) for f in SHAPES[step % len(SHAPES)])
    images = [torch.rand(3, h, w, generator=gen) for _ in range(2)]
    masks = torch.zeros(2, h, w, dtype=torch.uint8)
    masks[0, h // 8 : h // 2, w // 8 : w // 2] = 1
    masks[1, h // 3 : h - 8, w // 2 : w - 8] = 1
    boxes = torch.tensor([[w // 8, h // 8, w // 2, h // 2], [w // 2, h // 3, w - 8, h - 8]], dtype=torch.float32)
    targets = [{"boxes": boxes, "labels": torch.tensor([1, 5]), "masks": masks} for _ in images]
    return images, targets


def run(cfg, compiled: bool, iters: int, size: int) -> list[float]:
    """Seconds of each training step (forward, backward, SGD step) of a fresh model."""
    import torch

    from helpers.engines import torchvision_engine as tve
    from helpers.engines.torchvision_engine import device

    torch.manual_seed(0)
    model = device._to_device(tve.build_model(cfg, 20, load_weights=False), torch.device("cpu")).train()
    if compiled:
        model.backbone = torch.compile(model.backbone, dynamic=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    seconds = []
    for step in range(iters):
        images, targets = batch(step, size, gen)
        start = time.perf_counter()
        loss = sum(model(images, targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        seconds.append(time.perf_counter() - start)
        print(f"{'compiled' if compiled else 'eager'} iteration {step}: {seconds[-1]:.3f} s", flush=True)
    return seconds


def main(argv: list[str] | None = None) -> None:
    import torch

    from helpers.config import load_config
    from helpers.engines import torchvision_engine as tve
    from helpers.io import check_output_path, write_json

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(PROJECT_ROOT / "configs" / "homework.yaml"))
    p.add_argument("--min-size", type=int, default=320, help="shortest edge of the synthetic images (default 320)")
    p.add_argument("--iters", type=int, default=8, help=f"iterations per variant, the first {WARMUP} not in the median")
    p.add_argument("--out", default=None, help="also write the results as JSON here")
    p.add_argument("overrides", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = p.parse_args(argv)
    if args.iters <= WARMUP or args.min_size < 32:
        p.error(f"--iters must be above {WARMUP} and --min-size at least 32")
    if args.out:
        check_output_path(args.out, "--out")
    size = args.min_size
    cfg = tve.prepare_config(load_config(args.config, ["MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu",
                                                       "INPUT.MIN_SIZE_TRAIN", f"({size},)", *args.overrides]))
    results = {}
    for compiled in (False, True):
        seconds = run(cfg, compiled, args.iters, size)
        results["compiled" if compiled else "eager"] = {
            "first_iterations_s": seconds[:WARMUP], "steady_s_per_iter": statistics.median(seconds[WARMUP:])}
    eager, compiled = (results[k]["steady_s_per_iter"] for k in ("eager", "compiled"))
    extra = sum(results["compiled"]["first_iterations_s"]) - sum(results["eager"]["first_iterations_s"])
    print(f"config {args.config}, min size {size}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"eager {eager:.3f} s/iter, compiled backbone {compiled:.3f} s/iter ({eager / compiled:.3f}x); "
          f"compiling cost {extra:.0f} s in the first {WARMUP} iterations, paid back after "
          + (f"{extra / (eager - compiled):.0f} iterations" if eager > compiled else "never"))
    if args.out:
        write_json(args.out, {"config": args.config, "min_size": size, "iters": args.iters, "torch": torch.__version__,
                              "threads": torch.get_num_threads(), "results": results}, indent=2)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    cli(main)
