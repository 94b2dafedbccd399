"""One experiment end to end: resolve config, data root, split and run folder; train; predict.

This is what the CLI (``python -m helpers train|predict``) and the notebooks call; the engine
seam (:mod:`helpers.engines`) does the model work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from . import cpu_memory, data, runs
from .config import Config, load_config
from .errors import DataError, EngineError
from .io import check_output_dir, check_output_path


def resolve_data_root(cfg: Config, data_root: str | Path | None) -> Path:
    """--data, else the config's DATASETS.ROOT, else :func:`helpers.data.default_data_root`."""
    root = Path(data_root or cfg["DATASETS.ROOT"] or data.default_data_root()).expanduser()
    if not (root / data.TRAIN_JSON).is_file():
        raise DataError(
            f"no {data.TRAIN_JSON} in {root}: download Tiny VOC into it (see data/README.md) "
            f"or make the demo set with `python -m helpers make-demo-data {root}`"
        )
    return root.resolve()


def prepare_split(cfg: Config, root: Path, split_dir: Path, write: bool = True) -> data.SplitPaths:
    """The seeded class-stratified train/val split files every engine and notebook shares.

    ``write=False`` (the other processes of a multi-process run) only names them: rank 0 writes them
    before the processes meet."""
    if not write:
        return data.SplitPaths(split_dir / "train.json", split_dir / "val.json")
    train = data.load_root(root, check_images=False).train
    return data.make_split(train, split_dir, val_fraction=cfg["DATASETS.VAL_FRACTION"], seed=cfg["DATASETS.SPLIT_SEED"])


def process_rank() -> int:
    """This process's rank in a multi-process run (torchrun's RANK, or an existing process group's)."""
    import os

    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank()
    except ImportError:
        pass
    return int(os.environ.get("RANK", "0") or 0)


def _wait_for_rank0() -> None:
    """Where a process group already exists (detectron2's ``launch``), the others wait for rank 0's files."""
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.barrier()
    except ImportError:
        pass


def setup_run(
    config: str | Path | Config,
    overrides: dict[str, Any] | Iterable[str] | None = None,
    engine: str = "torchvision",
    data_root: str | Path | None = None,
    run_dir: str | Path | None = None,
    split_dir: str | Path | None = None,
    match_num_classes: bool = False,
) -> tuple[Config, data.SplitPaths, Path]:
    """Resolve everything a training run needs, and check it before any work starts.

    ``match_num_classes`` sets MODEL.ROI_HEADS.NUM_CLASSES from the data instead of rejecting a
    mismatch (for profiles that run one config on either data set).
    """
    from .engines import get_engine

    cfg = config.copy().merge(overrides) if isinstance(config, Config) else load_config(config, overrides)
    cfg.check_engine(engine)
    cfg = get_engine(engine).prepare_config(cfg)
    runs.best_metric(cfg)  # TEST.BEST_METRIC names a val metric
    root = resolve_data_root(cfg, data_root)
    run_dir = Path(run_dir or cfg["OUTPUT_DIR"]).expanduser().resolve()
    _check_run_dir(run_dir)
    main = process_rank() == 0
    splits = prepare_split(cfg, root, Path(split_dir) if split_dir else run_dir / "data", write=main)
    categories = data.load_split(splits.train if main else root / data.TRAIN_JSON, check_images=False).categories
    if match_num_classes:
        cfg["MODEL.ROI_HEADS.NUM_CLASSES"] = len(categories)
    if cfg["MODEL.ROI_HEADS.NUM_CLASSES"] != len(categories):
        raise EngineError(
            f"MODEL.ROI_HEADS.NUM_CLASSES is {cfg['MODEL.ROI_HEADS.NUM_CLASSES']} but {root / data.TRAIN_JSON} "
            f"declares {len(categories)} categories; set MODEL.ROI_HEADS.NUM_CLASSES {len(categories)}"
        )
    cfg["DATASETS.ROOT"] = str(root)
    cfg["OUTPUT_DIR"] = str(run_dir)
    return cfg, splits, run_dir


def trains_on_all(cfg: Config) -> bool:
    """DATASETS.VAL_FRACTION 0: every annotated image trains, there is no val split and nothing is evaluated
    (the final submission, with the schedule chosen on the split)."""
    return cfg["DATASETS.VAL_FRACTION"] <= 0


def _check_run_dir(run_dir: Path) -> None:
    """A run folder is a folder we can write, and what it already holds is readable."""
    check_output_dir(run_dir, "run")
    if run_dir.is_dir():
        runs.read_run_info(run_dir)  # a truncated run.json: one line naming it, before any work


def train(
    config: str | Path | Config,
    overrides: dict[str, Any] | Iterable[str] | None = None,
    engine: str = "torchvision",
    data_root: str | Path | None = None,
    run_dir: str | Path | None = None,
    resume: bool = False,
    split_dir: str | Path | None = None,
    progress: bool = True,
    match_num_classes: bool = False,
) -> Path:
    """Train (or resume, or skip when finished) one run; returns the run folder.

    A run folder that already holds checkpoints is never overwritten: pass ``resume=True``
    to continue it (a finished run is then left as it is).
    """
    from .engines import get_engine

    cfg, splits, run_dir = setup_run(config, overrides, engine, data_root, run_dir, split_dir, match_num_classes)
    if resume and runs.is_finished(run_dir):
        return run_dir
    if not resume and (runs.last_checkpoint(run_dir) is not None or runs.checkpoints(run_dir)):
        raise EngineError(f"{run_dir} already holds checkpoints: pass --resume to continue it, or choose another --run-dir")
    module = get_engine(engine)
    recorded = runs.read_run_info(run_dir).get("engine")
    if recorded and recorded != engine:
        raise EngineError(f"{run_dir} was trained with the {recorded} engine, not {engine}: resume it with "
                          f"--engine {recorded}, or choose another --run-dir")
    main = process_rank() == 0  # only rank 0 writes the run folder (the engines checkpoint on rank 0 too)
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        runs.remove_partial_writes(run_dir)
        cfg.save(run_dir / runs.CONFIG)
        runs.write_run_info(run_dir, engine=engine, data_root=cfg["DATASETS.ROOT"], train_split=str(splits.train),
                            val_split=str(splits.val), status="training", error=None)
    _wait_for_rank0()
    cpu_memory.keep_freed_memory(cfg["MODEL.DEVICE"])
    try:
        final = module.train(cfg, splits, run_dir, resume=resume, progress=progress)
        if main:
            runs.write_run_info(run_dir, status="finished", final_metrics=final)
    except BaseException as e:  # any reason, an interrupt included: run.json must not say "training"
        if main:
            runs.record_failure(run_dir, e)
        raise
    return run_dir


def load_run(run_dir: str | Path) -> tuple[Config, dict]:
    """The resolved config and run.json of a trained run."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise EngineError(f"{run_dir}: not a run folder ({'a file' if run_dir.exists() else 'not found'})")
    if not (run_dir / runs.CONFIG).is_file():
        raise EngineError(f"{run_dir} is not a run folder (no {runs.CONFIG})")
    info = runs.read_run_info(run_dir)
    path = run_dir / runs.RUN_INFO
    if not info:
        raise EngineError(f"{path}: missing or empty: not a trained run folder (train it with `python -m helpers train`)")
    for key in ("engine", "train_split"):
        if not isinstance(info.get(key), str) or not info[key]:
            raise EngineError(f"{path}: incomplete run record: no '{key}' (was the run's training started here?)")
    if info["engine"] not in ("torchvision", "detectron2"):
        raise EngineError(f"{path}: unknown engine {info['engine']!r} in the run record")
    return load_config(run_dir / runs.CONFIG), info


def run_for_inference(run_dir: str | Path, score_thresh: float | None = None,
                      device: str | None = None, tta: bool | None = None) -> tuple[Config, dict, list[dict]]:
    """A trained run's config (with the test-time score threshold, device and test-time augmentation
    asked for; None keeps the run's), its run.json and its categories: what predicting or inspecting
    with it starts from."""
    cfg, info = load_run(run_dir)
    if score_thresh is not None:
        cfg["MODEL.ROI_HEADS.SCORE_THRESH_TEST"] = float(score_thresh)
    if device is not None:
        cfg["MODEL.DEVICE"] = device
    if tta is not None:
        cfg["TEST.AUG.ENABLED"] = bool(tta)
    return cfg, info, data.load_split(info["train_split"], check_images=False).categories


def load_predictor(run_dir: str | Path, checkpoint: str = "best", score_thresh: float | None = None,
                   device: str | None = None, swap_channels: bool = False, tta: bool | None = None):
    """A :class:`helpers.engines.base.Predictor` for a trained run's checkpoint.

    ``swap_channels``: feed the model the channel order opposite to the one it was trained with
    (what the homework did: RGB into a BGR-trained detectron2 model), to measure what that costs.
    ``tta``: test-time augmentation on or off (``TEST.AUG.*``); None keeps the run's TEST.AUG.ENABLED.
    """
    from .engines import get_engine

    cfg, info, categories = run_for_inference(run_dir, score_thresh, device, tta)
    module = get_engine(info["engine"])
    cpu_memory.keep_freed_memory(cfg["MODEL.DEVICE"])
    predictor = module.load_predictor(cfg, runs.resolve_checkpoint(Path(run_dir), checkpoint), categories)
    predictor.swap_channels = swap_channels
    return predictor


def images_to_predict(images: str | Path, image_dir: str | Path | None = None) -> tuple[list[tuple[int, Path]], Path]:
    """(image_id, path) pairs and the JSON their ids come from.

    ``images`` is a test.json (ids from it; images in ``image_dir``, else its conventional folder) or a
    folder of images with the test.json that lists them beside it or above it. A bare folder is
    refused: the grader matches predictions by the ids in test.json, so numbering files 1..N would
    score zero.
    """
    images = Path(images)
    if images.is_dir():
        listing = [p for p in (images / data.TEST_JSON, images.parent / data.TEST_JSON) if p.is_file()]
        if not listing:
            raise DataError(f"{images}: a folder of images has no image ids; pass the test.json that lists them "
                            f"(--images test.json, with --image-dir {images} when the images are elsewhere)")
        json_path = listing[0]
        if image_dir is None and json_path.parent != images:
            image_dir = images
    elif images.is_file():
        json_path = images
    elif images.name == data.TEST_JSON:
        raise DataError(f"no {data.TEST_JSON} in {images.parent}: a data root needs the grader's test.json "
                        "(its images and categories) to predict for the leaderboard")
    else:
        raise DataError(f"{images}: no such file or folder (a test.json, or the folder that holds it)")
    if image_dir is None and json_path.name == data.TEST_JSON:
        image_dir = json_path.parent / data.TEST_IMAGES
    split = data.load_split(json_path, image_dir=Path(image_dir) if image_dir else None, check_images=False)
    pairs = [(img["id"], split.image_path(img)) for img in split.images]
    missing = [str(p) for _, p in pairs if not p.is_file()]
    if missing:
        raise DataError(f"{json_path}: {len(missing)} of its {len(pairs)} images are missing, e.g. {missing[0]}")
    return pairs, json_path


def predict(run_dir: str | Path, images: str | Path, out: str | Path, checkpoint: str = "best",
            score_thresh: float | None = None, progress: bool = True, device: str | None = None,
            image_dir: str | Path | None = None, tta: bool | None = None) -> dict:
    """Predict the images a test.json lists with a trained run and write a submission file; returns
    its validation summary (against that test.json, as the grader reads it) plus timing."""
    import time

    from .submission import instances_to_results, validate_submission, write_submission

    check_output_path(out, "submission")
    pairs, json_path = images_to_predict(images, image_dir)
    predictor = load_predictor(run_dir, checkpoint, score_thresh, device, tta=tta)
    ids = {p: i for i, p in pairs}
    results: list[dict] = []
    start = time.perf_counter()
    for path, inst in predictor.predict_paths([p for _, p in pairs], progress=progress):
        results.extend(instances_to_results(ids[path], inst))
    seconds = time.perf_counter() - start
    write_submission(out, results)
    summary = {"submission": str(out), "images": len(pairs), "detections": len(results),
               "seconds_per_image": seconds / max(len(pairs), 1)}
    summary["validation"] = validate_submission(json_path, out)
    return summary


VAL_RESULTS = "val_results.json"
VAL_METRICS = "val_metrics.json"


def evaluate_run(run_dir: str | Path, split_json: str | Path | None = None, checkpoint: str = "best",
                 score_thresh: float | None = None, out_dir: str | Path | None = None,
                 progress: bool = True) -> dict:
    """Predict a split (default: the run's val split) and compute segm and bbox metrics.

    Writes ``val_results.json`` (COCO results) and ``val_metrics.json`` into ``out_dir``
    (default: the run folder) and returns ``{"segm": metrics, "bbox": metrics, ...}``.
    """
    import time

    from .engines.base import predict_split
    from .evaluate import evaluate
    from .io import write_json

    run_dir = Path(run_dir)
    out_dir = Path(out_dir or run_dir)
    check_output_dir(out_dir, "evaluation output")
    split = val_split(run_dir, split_json)
    predictor = load_predictor(run_dir, checkpoint, score_thresh)
    start = time.perf_counter()
    results = predict_split(predictor, split, progress=progress)
    seconds = (time.perf_counter() - start) / max(len(split.images), 1)
    write_json(out_dir / VAL_RESULTS, results)
    report = {iou: evaluate(split.coco, results, iou_type=iou) for iou in ("segm", "bbox")}
    report.update(split=str(split.json_path), checkpoint=checkpoint, seconds_per_image=seconds,
                  score_thresh=predictor.score_thresh)
    write_json(out_dir / VAL_METRICS, report, indent=2)
    return report


def val_split(run_dir: str | Path, split_json: str | Path | None = None) -> data.Split:
    """The split to measure a run on: ``split_json``, else the run's val split (an error for a run that
    trained on every image: it has none)."""
    cfg, info = load_run(run_dir)
    if split_json is None and trains_on_all(cfg):
        raise DataError(f"{run_dir} trained on every image (DATASETS.VAL_FRACTION 0): it has no val split to "
                        f"measure on; measure the run trained on the split instead")
    if split_json is None and not isinstance(info.get("val_split"), str):
        raise EngineError(f"{Path(run_dir) / runs.RUN_INFO}: incomplete run record: no 'val_split'")
    return data.load_split(split_json or info["val_split"], check_images=False)
