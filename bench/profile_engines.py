"""Profile one training iteration and one prediction of every available engine, stage by stage.

torch.profiler (CPU activities) records the engine's own ``training_steps`` iterations (as
bench_engines.py replays them: the run's config, split, seeds and weights) and its predictor on
real Tiny VOC images, at one image size (--min-size: INPUT.MIN_SIZE_TRAIN and MIN_SIZE_TEST).
Every op's self CPU time goes to the pipeline stage it ran in:

* forward: the innermost stage module that ran it (global forward hooks open a
  ``record_function`` range per stage module: ResNet body, FPN, RPN head, RPN proposals/loss,
  box RoIAlign, box head, mask RoIAlign, mask head, ROI sampling/decode/NMS/losses), plus ranges
  around each engine's preprocessing and postprocessing (rescale, paste masks);
* backward: the stage whose forward op created the autograd node (the profiler's sequence numbers);
* outside the model: data loading (the DataLoader's own range), the optimizer (its own ranges) and
  the rest (Python glue, loss sums, the predictor's resize and conversions).

Times are ms per training iteration and per predicted image (the mean over the profiled ones, after
--warmup uncounted iterations and one uncounted image). The predictor runs at --score-thresh
(default 0: every image sends TEST.DETECTIONS_PER_IMAGE boxes to the mask head and the paste, as a
trained model does at most; a random-init model would send none at the config's threshold). Both engines
get the benchmark's equal-work settings (bench_engines.py: RPN and test NMS off, ImageNet pixel std under
random init), so their stages see the same numbers of proposals and detections, and denormals are flushed.
--stand-in-weights profiles the homework's FrozenBN backbone with its stem and res2 frozen (bench_engines.py:
Stand-in weights).

    python bench/profile_engines.py --data ../shared/tinyvoc --min-size 512 --out profile.json
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
import tempfile
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from bench.bench_engines import cli, engine_pins, equal_work_overrides  # noqa: E402

DEFAULT_CONFIG = PROJECT_ROOT / "configs" / "homework.yaml"
DEFAULT_DATA = PROJECT_ROOT.parent / "shared" / "tinyvoc"
PREFIX = "stage::"
OUTSIDE = "outside the model (Python glue, loss sums, predictor resize/convert)"
DATA_LOADING = "data loading (in-process: NUM_WORKERS 0)"
OPTIMIZER = "optimizer (step, zero_grad)"
MODEL_OTHER = "model: top level (batching, glue)"
PREPROCESS = "preprocess (normalize, resize, batch)"
POSTPROCESS = "postprocess (rescale boxes, paste masks)"
BACKWARD_OTHER = "backward: not attributed"
TOP_OPS = 15

# pipeline stages, in order, and the module paths (per engine) that run them; the innermost wins
STAGES = [
    (PREPROCESS, {"torchvision": ["transform"], "detectron2": []}),  # detectron2: preprocess_image, wrapped
    ("backbone body (ResNet)", {"torchvision": ["backbone.body"], "detectron2": ["backbone.bottom_up"]}),
    ("FPN", {"torchvision": ["backbone", "backbone.fpn"], "detectron2": ["backbone"]}),
    ("RPN head (convs)", {"torchvision": ["rpn.head"], "detectron2": ["proposal_generator.rpn_head"]}),
    ("RPN anchors, proposals, NMS, loss", {"torchvision": ["rpn"], "detectron2": ["proposal_generator"]}),
    ("box RoIAlign", {"torchvision": ["roi_heads.box_roi_pool"], "detectron2": ["roi_heads.box_pooler"]}),
    ("box head + predictor", {"torchvision": ["roi_heads.box_head", "roi_heads.box_predictor"],
                              "detectron2": ["roi_heads.box_head", "roi_heads.box_predictor"]}),
    ("mask RoIAlign", {"torchvision": ["roi_heads.mask_roi_pool"], "detectron2": ["roi_heads.mask_pooler"]}),
    ("mask head + predictor", {"torchvision": ["roi_heads.mask_head", "roi_heads.mask_predictor"],
                               "detectron2": ["roi_heads.mask_head"]}),
    ("ROI sampling, box decode/NMS, losses", {"torchvision": ["roi_heads"], "detectron2": ["roi_heads"]}),
    (POSTPROCESS, {"torchvision": [], "detectron2": []}),  # wrapped functions, see _wrap_processing
    (MODEL_OTHER, {"torchvision": [""], "detectron2": [""]}),
]
MODEL_CLASSES = {"torchvision": "MaskRCNN", "detectron2": "GeneralizedRCNN"}


def stage_order() -> list[str]:
    """Every stage name a result can hold, in pipeline order (forward, backward, outside)."""
    forward = [name for name, _ in STAGES]
    return [DATA_LOADING, *forward, *(f"backward: {name}" for name in [DATA_LOADING, *forward, OUTSIDE]), BACKWARD_OTHER,
            OPTIMIZER, OUTSIDE]


class StageHooks:
    """Global forward hooks that open a ``record_function`` range ``stage::<name>`` around every call of
    a stage module of the first Mask R-CNN model they see (the engine's), and close it after."""

    def __init__(self, engine: str):
        self.engine = engine
        self.paths = {path: name for name, paths in STAGES for path in paths[engine]}
        self.stage_of: dict[int, str] = {}
        self.open: list = []
        self.model = None
        self.handles = []

    def __enter__(self) -> "StageHooks":
        from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

        self.handles = [register_module_forward_pre_hook(self._pre), register_module_forward_hook(self._post)]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()

    def _pre(self, module, _inputs) -> None:
        if self.model is None and type(module).__name__ == MODEL_CLASSES[self.engine]:
            self.attach(module)
        name = self.stage_of.get(id(module))
        if name is not None:
            self.open.append(_enter(name))

    def _post(self, module, _inputs, _output) -> None:
        if id(module) in self.stage_of and self.open:
            self.open.pop().__exit__(None, None, None)

    def attach(self, model) -> None:
        """Map ``model``'s stage modules and wrap its pre/postprocessing in ranges."""
        self.model = model
        modules = dict(model.named_modules())
        self.stage_of = {id(modules[path]): name for path, name in self.paths.items() if path in modules}
        _wrap_processing(self.engine, model)


def _enter(name: str):
    import torch

    rf = torch.profiler.record_function(PREFIX + name)
    rf.__enter__()
    return rf


def _ranged(fn, name: str):
    import torch

    def wrapped(*args, **kwargs):
        with torch.profiler.record_function(PREFIX + name):
            return fn(*args, **kwargs)

    return wrapped


def _wrap_processing(engine: str, model) -> None:
    """Ranges around what the stage modules do not cover: torchvision's ``transform.postprocess``
    (box rescale, mask paste; its normalize/resize is the ``transform`` module), detectron2's
    ``preprocess_image`` (normalize, batch) and ``detector_postprocess`` (rescale, paste). Instance
    attributes on this model only, but for detectron2's module-level function (restored by
    :func:`unwrap_processing`)."""
    if engine == "torchvision":
        model.transform.postprocess = _ranged(model.transform.postprocess, POSTPROCESS)
    else:
        from detectron2.modeling.meta_arch import rcnn

        model.preprocess_image = _ranged(model.preprocess_image, PREPROCESS)
        if not hasattr(rcnn.detector_postprocess, "_profile_original"):
            wrapped = _ranged(rcnn.detector_postprocess, POSTPROCESS)
            wrapped._profile_original = rcnn.detector_postprocess
            rcnn.detector_postprocess = wrapped


def unwrap_processing() -> None:
    if "detectron2.modeling.meta_arch.rcnn" in sys.modules:
        rcnn = sys.modules["detectron2.modeling.meta_arch.rcnn"]
        rcnn.detector_postprocess = getattr(rcnn.detector_postprocess, "_profile_original", rcnn.detector_postprocess)


def _marker(event, backward_stage: dict[int, str]) -> str | None:
    """The stage an event opens, if it opens one."""
    name = event.name
    if name.startswith(PREFIX):
        return name[len(PREFIX):]
    if name.startswith("enumerate(DataLoader)"):
        return DATA_LOADING
    if name.startswith("Optimizer."):
        return OPTIMIZER
    if name.startswith("autograd::engine::evaluate_function"):
        return "backward: " + backward_stage[event.sequence_nr] if event.sequence_nr in backward_stage else BACKWARD_OTHER
    return None


def stage_times(events) -> tuple[dict[str, float], dict[str, float]]:
    """Self CPU time (µs) per stage and per op name of a profile's events: every event's self time
    goes to the innermost stage around it; an autograd node's backward goes to the forward stage of
    the op that created it."""
    def stage_of(event, backward_stage):
        while event is not None:
            found = _marker(event, backward_stage)
            if found is not None:
                return found
            event = event.cpu_parent
        return OUTSIDE

    # an op run through autograd records the sequence number the next autograd node will get; the
    # last op (in time) to record a number is the one that created that node (or a composite op
    # around it), so the last one's stage is where the node's backward belongs
    backward_stage: dict[int, str] = {}
    for event in sorted(events, key=lambda e: e.time_range.start):
        if getattr(event, "sequence_nr", -1) >= 0 and not event.name.startswith("autograd::"):
            found = stage_of(event, {})
            if not found.startswith("backward") and found != OPTIMIZER:
                backward_stage[event.sequence_nr] = found
    stages: dict[str, float] = collections.defaultdict(float)
    ops: dict[str, float] = collections.defaultdict(float)
    for event in events:
        stages[stage_of(event, backward_stage)] += event.self_cpu_time_total
        if not event.name.startswith(PREFIX):
            ops[event.name] += event.self_cpu_time_total
    return dict(stages), dict(ops)


def profile_call(fn) -> tuple[dict[str, float], dict[str, float]]:
    """Profile one call of ``fn``: self CPU µs per stage and per op."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        with torch.profiler.record_function("profile::call"):
            fn()
    return stage_times(prof.events())


def summarize(calls: list[tuple[dict[str, float], dict[str, float]]]) -> dict:
    """ms per call (the mean over ``calls``) per stage, in pipeline order, and of the top ops."""
    def mean_ms(key):
        return sum(stages.get(key, 0.0) for stages, _ in calls) / 1000 / len(calls)

    found = {name for stages, _ in calls for name in stages}
    order = stage_order() + sorted(found - set(stage_order()))  # every stage found counts, known ones in order
    stages = {name: mean_ms(name) for name in order if name in found}
    op_names = {name for _, ops in calls for name in ops}
    ops = {name: sum(o.get(name, 0.0) for _, o in calls) / 1000 / len(calls) for name in op_names}
    top = sorted(ops.items(), key=lambda kv: -kv[1])[:TOP_OPS]
    return {"stages_ms": {k: v for k, v in stages.items() if v > 0}, "total_ms": sum(stages.values()),
            "top_ops_ms": dict(top), "calls": len(calls)}


def make_run(engine: str, args: argparse.Namespace, tmp: Path) -> Path:
    """A run folder of ``engine`` trained for one iteration from random init, or from the stand-in weights
    in ``args.stand_in`` (the weights the predictor loads; its config and split are what ``training_steps``
    replays)."""
    from helpers import experiment

    run_dir = tmp / engine
    size = str(args.min_size)
    weights = str(args.stand_in[engine]) if getattr(args, "stand_in", None) else ""
    base = ["MODEL.WEIGHTS", weights, "MODEL.DEVICE", "cpu"]
    # the benchmark's equal-work settings (bench_engines.py), then this script's own size and loading
    pins = engine_pins(engine, equal_work_overrides(args.config, [*base, *args.overrides], bool(weights)))
    overrides = [*base, *pins, "INPUT.MIN_SIZE_TRAIN", f"({size},)", "INPUT.MIN_SIZE_TEST", size,
                 "DATALOADER.NUM_WORKERS", "0", *args.overrides]
    schedule = ["SOLVER.MAX_ITER", "1", "TEST.EVAL_PERIOD", "0", "SOLVER.CHECKPOINT_PERIOD", "1"]
    experiment.train(args.config, [*overrides, *schedule], engine=engine, data_root=args.data, run_dir=run_dir,
                     progress=False, match_num_classes=True)
    return run_dir


def profile_engines(names: list[str], args: argparse.Namespace, tmp: Path) -> dict[str, dict]:
    """Profile training iterations, then predictions, of every engine in ``names``, interleaved
    (engine after engine, call after call) so that a change in the machine's load hits all of them."""
    from helpers import data, experiment
    from helpers.data import SplitPaths
    from helpers.engines import get_engine

    if args.stand_in_weights:
        from bench.stand_in_weights import write_stand_in_weights
        from helpers.config import load_config

        args.stand_in = write_stand_in_weights(load_config(args.config, args.overrides), tmp / "weights")
    runs = {name: make_run(name, args, tmp) for name in names}
    results: dict[str, dict] = {name: {} for name in names}
    hooks = {name: StageHooks(name).__enter__() for name in names}
    try:
        steps = {}
        for name, run_dir in runs.items():
            cfg, info = experiment.load_run(run_dir)  # as bench_engines.measure_train replays a run
            cfg["SOLVER.MAX_ITER"] = args.warmup + args.iters
            steps[name] = get_engine(name).training_steps(cfg, SplitPaths(Path(info["train_split"]),
                                                                          Path(info["val_split"])))
            for _ in range(args.warmup):
                steps[name]()
        calls = {name: [] for name in names}
        for _ in range(args.iters):
            for name in names:
                calls[name].append(profile_call(steps[name]))
        for name in names:
            results[name]["train"] = summarize(calls[name])
    finally:
        for h in hooks.values():
            h.__exit__()
        unwrap_processing()
    del steps

    arrays = [data.read_image(path) for _, path in experiment.images_to_predict(Path(args.data) / data.TEST_JSON)[0]
              [: args.images + 1]]
    hooks = {name: StageHooks(name).__enter__() for name in names}
    try:
        predictors = {}
        for name, run_dir in runs.items():
            predictors[name] = experiment.load_predictor(run_dir, checkpoint="final", score_thresh=args.score_thresh)
            predictors[name](arrays[:1])  # warm-up; the hooks attach to the model here
        calls = {name: [] for name in names}
        detections = {name: [] for name in names}
        for array in arrays[1:]:
            for name in names:
                calls[name].append(profile_call(lambda: detections[name].append(len(predictors[name]([array])[0].scores))))
        for name in names:
            results[name]["predict"] = {**summarize(calls[name]),
                                        "detections_per_image": statistics.fmean(detections[name])}
    finally:
        for h in hooks.values():
            h.__exit__()
        unwrap_processing()
    for name in names:
        results[name]["predict_image_sizes"] = [list(a.shape[:2]) for a in arrays[1:]]
    return results


def format_table(results: dict[str, dict], phase: str) -> str:
    """A Markdown table of one phase: stage, ms per engine, the ratio of the second to the first."""
    names = list(results)
    header = "| stage | " + " | ".join(f"{n} ms" for n in names) + (f" | {names[1]}/{names[0]} |" if len(names) > 1 else " |")
    lines = [header, "|---" * (len(names) + 1 + (len(names) > 1)) + "|"]
    rows = [s for s in stage_order() if any(s in results[n][phase]["stages_ms"] for n in names)] + ["total"]
    for stage in rows:
        values = [results[n][phase]["total_ms" if stage == "total" else "stages_ms"] for n in names]
        values = [v if stage == "total" else v.get(stage, 0.0) for v in values]
        cells = [f"{v:.4g}" for v in values]
        if len(names) > 1:
            cells.append(f"{values[1] / values[0]:.3g}x" if values[0] > 0 else "n/a")
        label = f"**{stage}**" if stage == "total" else stage
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_top_ops(results: dict[str, dict], phase: str) -> str:
    """The top ops by self CPU time of each engine, side by side (ms per call)."""
    names = list(results)
    tops = [list(results[n][phase]["top_ops_ms"].items()) for n in names]
    lines = ["| # | " + " | ".join(f"{n} op | ms" for n in names) + " |",
             "|---" * (1 + 2 * len(names)) + "|"]
    for i in range(max(len(t) for t in tops)):
        cells = [f"`{t[i][0]}` | {t[i][1]:.4g}" if i < len(t) else " | " for t in tops]
        lines.append(f"| {i + 1} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(DEFAULT_CONFIG))
    p.add_argument("--data", default=str(DEFAULT_DATA), help="Tiny VOC root (default: ../shared/tinyvoc)")
    p.add_argument("--min-size", type=int, default=800, help="INPUT.MIN_SIZE_TRAIN and _TEST (default 800)")
    p.add_argument("--iters", type=int, default=1, help="profiled training iterations (default 1)")
    p.add_argument("--warmup", type=int, default=1, help="uncounted training iterations before them (default 1)")
    p.add_argument("--images", type=int, default=2, help="profiled predictions (plus one warm-up; default 2)")
    p.add_argument("--score-thresh", type=float, default=0.0, help="the predictor's score threshold (default 0)")
    p.add_argument("--engines", nargs="+", default=None, help="engines to profile (default: every available one)")
    p.add_argument("--out", default=None, help="also write the results as JSON here")
    p.add_argument("--stand-in-weights", action="store_true",
                   help="the homework's FrozenBN structure: stand-in backbone weights (bench_engines.py) instead of random init")
    p.add_argument("overrides", nargs=argparse.REMAINDER, help="KEY VALUE config overrides for every engine")
    args = p.parse_args(argv)
    check_run_args(p, args)
    if not 0 <= args.score_thresh <= 1:
        p.error("--score-thresh must be within 0..1")
    return args


def check_run_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The arguments this script and bench_backbones.py share: --min-size, --iters, --warmup, --images and
    the KEY VALUE overrides; a bad one is argparse's usage error."""
    if args.min_size < 32:
        p.error("--min-size must be at least 32")
    if args.iters < 1 or args.images < 1:
        p.error("--iters and --images must be at least 1")
    if args.warmup < 0:
        p.error("--warmup must not be negative")
    if len(args.overrides) % 2:
        p.error("config overrides come in KEY VALUE pairs")


def engines_to_run(requested: list[str] | None) -> tuple[list[str], dict[str, tuple[bool, str]]]:
    """The engines asked for (default: every available one), each checked to import, before any work
    (an unknown or missing one is one error line); and every engine's availability."""
    from helpers.engines import available_engines, get_engine

    engines = available_engines()
    names = requested or [name for name, (ok, _) in engines.items() if ok]
    for name in names:
        get_engine(name)
    return names, engines


def main(argv: list[str] | None = None) -> None:
    import torch

    from helpers import experiment
    from helpers.config import load_config
    from helpers.errors import DataError
    from helpers.io import check_output_path, write_json

    args = parse_args(argv)
    if args.out:
        check_output_path(args.out, "--out")
    torch.set_flush_denormal(True)  # as bench_engines.py measures (its docstring: Equal work)
    if not Path(args.config).is_file():
        raise DataError(f"--config {args.config}: no such file")
    experiment.resolve_data_root(load_config(args.config), args.data)  # no pascal_train.json: one error line
    names, engines = engines_to_run(args.engines)
    with tempfile.TemporaryDirectory(prefix="profile-") as tmp:
        results = profile_engines(names, args, Path(tmp))
    skipped = {name: reason for name, (ok, reason) in engines.items() if not ok and args.engines is None}
    print(f"config {args.config}, data {args.data}, min size {args.min_size}, {args.iters} training iteration(s) "
          f"after {args.warmup} warm-up, {args.images} prediction(s) after 1 warm-up, score threshold "
          f"{args.score_thresh}{', stand-in weights' if args.stand_in_weights else ''}; torch {torch.__version__}, {torch.get_num_threads()} threads; self CPU ms per call")
    for phase in ("train", "predict"):
        print(f"\n{phase}\n\n{format_table(results, phase)}\n\ntop ops ({phase})\n\n{format_top_ops(results, phase)}")
    for name, reason in skipped.items():
        print(f"\n{name}: not available: {reason}")
    if args.out:
        write_json(args.out, {"config": args.config, "data": str(args.data), "min_size": args.min_size,
                              "iters": args.iters, "warmup": args.warmup, "images": args.images,
                              "score_thresh": args.score_thresh, "stand_in_weights": args.stand_in_weights,
                              "torch": torch.__version__,
                              "threads": torch.get_num_threads(), "results": results, "not_available": skipped},
                   indent=2)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    cli(main)
