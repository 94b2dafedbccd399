"""The detectron2 engine: the homework's own library, driven through its public API.

Our config keys are detectron2's (see :mod:`helpers.config`), so the translation is direct:
``get_cfg()``, then the model zoo's ``mask_rcnn_R_50_FPN_3x.yaml``, then every key of the
experiment except our own ``DATASETS.ROOT / VAL_FRACTION / SPLIT_SEED``. The train and val split
files are registered as COCO data sets, and training is a ``DefaultTrainer`` with a few methods
overridden, as detectron2's own projects do (PointRend's ``train_net.py``):

- ``build_train_loader``: detectron2's ``DatasetMapper`` behind a sampler that draws the batch of
  iteration i from (SEED, i) alone, and numpy's / Python's RNG (the augmentations) seeded per
  sample, so a run killed at any moment resumes to bit-identical weights (on CPU);
- ``test``: the package's COCO evaluation of the val split (:func:`base.evaluate_on_split`),
  flat ``segm/AP``... keys;
- ``build_hooks``: detectron2's hooks plus per-iteration seeding of torch's RNG (RPN / ROI
  sampling), evaluation every ``TEST.EVAL_PERIOD`` iterations and in the last one with the best
  checkpoint (``model_best.pth`` + ``best.json``), ``metrics.json`` and TensorBoard written every
  iteration, atomic checkpoints, and a progress bar.

The run folder is the torchvision engine's (see :mod:`helpers.runs`), plus ``detectron2_config.yaml``
(detectron2's full config) and detectron2's loss names in ``metrics.json``.

Multi-GPU: detectron2's launcher starts one process per GPU, each running the experiment (the
main process alone checkpoints, evaluates and writes metrics)::

    from detectron2.engine import launch
    from helpers import experiment
    launch(experiment.train, num_gpus_per_machine=2, dist_url="auto",
           args=("configs/homework.yaml", None, "detectron2", data_root, run_dir))

``SOLVER.IMS_PER_BATCH`` stays the total batch: each process takes its share of the same batch.

detectron2 is imported on first use, so this module imports (and :func:`available` answers)
on machines without it.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import random
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import data, runs
from ..config import IMAGENET, MODEL_ZOO_BASE, Config
from ..errors import ConfigError, EngineError
from ..instances import Instances
from ..io import write_text
from . import base


D2_CONFIG = "detectron2_config.yaml"  # detectron2's full config dump, beside our config.yaml
OUR_KEYS = ("DATASETS.ROOT", "DATASETS.VAL_FRACTION", "DATASETS.SPLIT_SEED", "TEST.BEST_METRIC")  # not detectron2's
IMAGENET_WEIGHTS = {  # the ImageNet backbones detectron2's model zoo configs start from, by (DEPTH, NUM_GROUPS, WIDTH_PER_GROUP)
    (50, 1, 64): "detectron2://ImageNetPretrained/MSRA/R-50.pkl",
    (101, 1, 64): "detectron2://ImageNetPretrained/MSRA/R-101.pkl",
    (101, 32, 8): "detectron2://ImageNetPretrained/FAIR/X-101-32x8d.pkl",
}
# What mask_rcnn_X_101_32x8d_FPN_3x.yaml sets for FAIR's X-101-32x8d.pkl (a Caffe2 model at FB)
FAIR_X101_KEYS = {"MODEL.PIXEL_STD": [57.375, 57.120, 58.395], "MODEL.RESNETS.STRIDE_IN_1X1": False}
# Base-RCNN-FPN.yaml's structural keys that our config does not carry: what get_cfg() needs on
# top of our keys to be the 3x model when detectron2.model_zoo cannot be imported.
BASE_RCNN_FPN = {
    "MODEL.META_ARCHITECTURE": "GeneralizedRCNN",
    "MODEL.BACKBONE.NAME": "build_resnet_fpn_backbone",
    "MODEL.FPN.IN_FEATURES": ["res2", "res3", "res4", "res5"],
    "MODEL.RPN.IN_FEATURES": ["p2", "p3", "p4", "p5", "p6"],
    "MODEL.ROI_HEADS.NAME": "StandardROIHeads",
    "MODEL.ROI_HEADS.IN_FEATURES": ["p2", "p3", "p4", "p5"],
    "MODEL.ROI_BOX_HEAD.NAME": "FastRCNNConvFCHead",
    "MODEL.ROI_MASK_HEAD.NAME": "MaskRCNNConvUpsampleHead",
}



# ------------------------------------------------------------------------------- engine API


def available() -> tuple[bool, str]:
    """Whether detectron2 (with its training and data modules) imports here, and which one."""
    try:
        import detectron2
        import detectron2.data  # noqa: F401  (fails when a dependency or the build is broken)
        import detectron2.engine  # noqa: F401
    except Exception as e:  # ImportError, or a build that does not match this torch
        return False, f"detectron2 is not importable ({e}); install it from source: see README"
    where = "CUDA available" if torch.cuda.is_available() else "CPU only"
    return True, f"detectron2 {detectron2.__version__} from {Path(detectron2.__file__).parent} ({where})"


def prepare_config(cfg: Config) -> Config:
    """The effective config (a copy): random init gets a trainable backbone, R18/R34 the stage
    width detectron2 requires, FAIR's ImageNet X101-32x8d its pixel std and stride (unless set);
    weights and input format are checked."""
    cfg = cfg.copy()
    base.trainable_norm_for_random_init(cfg)
    if cfg["MODEL.RESNETS.DEPTH"] in (18, 34) and cfg["MODEL.RESNETS.RES2_OUT_CHANNELS"] != 64:
        cfg["MODEL.RESNETS.RES2_OUT_CHANNELS"] = 64  # detectron2 asserts it for basic-block ResNets
    if cfg["INPUT.FORMAT"] not in ("BGR", "RGB"):
        raise ConfigError(f"INPUT.FORMAT {cfg['INPUT.FORMAT']!r}: the detectron2 engine reads BGR or RGB images")
    if _weights(cfg) == IMAGENET_WEIGHTS[(101, 32, 8)]:
        for key, value in FAIR_X101_KEYS.items():
            if key not in cfg.explicit and cfg[key] != value:
                cfg[key] = value
                base.warn_once(f"MODEL.WEIGHTS imagenet for X101-32x8d is FAIR's X-101-32x8d.pkl: {key} {value} "
                               "(as detectron2's mask_rcnn_X_101_32x8d_FPN_3x.yaml sets it)")
    return cfg


def train(cfg: Config, splits: data.SplitPaths, run_dir: Path, resume: bool = False, progress: bool = True) -> dict:
    """Train into ``run_dir`` (resuming from its last checkpoint when asked); final val metrics.

    Every process of a ``launch`` calls this; the main process alone writes files.
    """
    from detectron2.utils import comm
    from detectron2.utils.env import seed_all_rng

    run_dir = Path(run_dir)
    node = detectron2_config(cfg, splits, run_dir)
    # verified: a damaged last checkpoint falls back to the newest complete one, which last_checkpoint then names
    checkpoint = runs.resume_checkpoint(run_dir, retag=comm.is_main_process()) if resume else None
    start = _checkpoint_iteration(checkpoint) + 1 if checkpoint else 0
    if comm.is_main_process():
        write_text(run_dir / D2_CONFIG, node.dump())
        runs.truncate_metrics(run_dir, start)  # before detectron2's JSONWriter opens metrics.json
    if checkpoint is None:
        _fetch_weights(node.MODEL.WEIGHTS)
    torch.backends.cudnn.benchmark = node.CUDNN_BENCHMARK
    _check_mask_format(node, splits.train)
    seed_all_rng(node.SEED)  # the initial weights
    trainer = _detectron2_class(_Trainer, "detectron2.engine.DefaultTrainer")(node, start, progress,
                                                                              runs.best_metric(cfg))
    trainer.resume_or_load(resume=resume)
    if trainer.start_iter != start:
        raise EngineError(f"{run_dir}: detectron2 resumed at iteration {trainer.start_iter}, expected {start}")
    try:
        trainer.train()
    except FloatingPointError as e:  # detectron2's check of the losses (and of the RPN's outputs)
        if comm.is_main_process():
            runs.truncate_metrics(run_dir, trainer.iter)  # the failed step's partial row
        last = runs.last_checkpoint(run_dir)
        where = f"the last good checkpoint is {last}" if last else "no checkpoint was saved yet"
        raise EngineError(
            f"training diverged: loss became nan or inf at iteration {trainer.iter} ({str(e).splitlines()[0]}); "
            f"{where}. Try a lower SOLVER.BASE_LR, a longer SOLVER.WARMUP_ITERS or SOLVER.CLIP_GRADIENTS.ENABLED True"
        ) from None
    final = _final_metrics(run_dir) if comm.is_main_process() else {}
    return comm.all_gather(final)[0]  # every process of a launch returns the main process's metrics


def load_predictor(cfg: Config, checkpoint: Path, categories: list[dict]) -> base.Predictor:
    """A predictor for a checkpoint of one of our runs (or any detectron2 Mask R-CNN weights)."""
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    cfg = cfg.copy()
    cfg["MODEL.WEIGHTS"] = ""  # the checkpoint holds every weight
    node = detectron2_config(cfg)
    model = build_model(node)
    try:
        DetectionCheckpointer(model).load(str(checkpoint))
    except Exception as e:  # a truncated or garbage file: one line, not fvcore's traceback
        raise EngineError(f"cannot read weights from {checkpoint}: not a checkpoint of this model, or damaged "
                          f"({runs.load_error_text(e)})") from None
    return _predictor(model.eval(), node, categories)


def build_optimizer(cfg: Config, categories: list[dict]):
    """detectron2's own optimizer (``detectron2.solver.build_optimizer``) over a random-init model of
    ``cfg``: its parameter groups are what weight decay acts on (for the course to read)."""
    from detectron2.modeling import build_model
    from detectron2.solver import build_optimizer as d2_build_optimizer

    cfg = cfg.copy()
    base.trainable_norm_for_random_init(cfg)  # what training would use; the weights are not loaded here
    if cfg["MODEL.RESNETS.DEPTH"] in (18, 34):
        cfg["MODEL.RESNETS.RES2_OUT_CHANNELS"] = 64
    cfg.merge({"MODEL.DEVICE": "cpu", "MODEL.WEIGHTS": "", "MODEL.ROI_HEADS.NUM_CLASSES": len(categories)})
    node = detectron2_config(cfg)
    return d2_build_optimizer(node, build_model(node))


def training_steps(cfg: Config, splits: data.SplitPaths):
    """For measuring training (the benchmark counts the FLOPs of its iterations): a function whose
    k-th call runs training iteration k-1 as :func:`train` would from scratch (the same initial
    weights, batch, seeds, learning rate, forward, backward and optimizer step) in this process,
    writing nothing, and returns its losses as metrics.json records them. ``cfg`` is an effective
    config (:func:`prepare_config`); one process only.

    detectron2's own SimpleTrainer (AMPTrainer with SOLVER.AMP.ENABLED) and LR scheduler, as
    DefaultTrainer builds them, without its hooks and writers."""
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.engine import AMPTrainer, SimpleTrainer
    from detectron2.modeling import build_model
    from detectron2.solver import build_lr_scheduler
    from detectron2.solver import build_optimizer as d2_build_optimizer
    from detectron2.utils.env import seed_all_rng
    from detectron2.utils.events import EventStorage

    node = detectron2_config(cfg, splits)
    _fetch_weights(node.MODEL.WEIGHTS)
    torch.backends.cudnn.benchmark = node.CUDNN_BENCHMARK
    seed_all_rng(node.SEED)  # the initial weights, as train() seeds them
    model = build_model(node)
    DetectionCheckpointer(model).load(node.MODEL.WEIGHTS)  # what resume_or_load(resume=False) does
    optimizer = d2_build_optimizer(node, model)
    trainer = (AMPTrainer if node.SOLVER.AMP.ENABLED else SimpleTrainer)(model, train_loader(node, 0), optimizer)
    scheduler = build_lr_scheduler(node, optimizer)
    storage = EventStorage(0)  # run_step writes its losses to the current storage
    trainer.iter = 0

    def step() -> dict[str, float]:
        torch.manual_seed(base.iteration_seed(node.SEED, trainer.iter, base.TORCH_STREAM, 0))  # _SeedIteration
        with storage:
            storage.iter = trainer.iter
            trainer.run_step()
        scheduler.step()  # detectron2's LRScheduler hook, after every step
        trainer.iter += 1
        return {k: float(v) for k, (v, _) in storage.latest().items() if k.startswith("loss") or k == "total_loss"}

    return step


def architecture(cfg: Config, categories: list[dict], image: np.ndarray) -> list[dict]:
    """Stages and tensor shapes of one eval-mode forward pass of a random-init model, in pipeline order.

    Every detection is kept (score threshold 0), so the mask branch sees DETECTIONS_PER_IMAGE boxes.
    """
    from detectron2.modeling import build_model

    cfg = cfg.copy()
    cfg.merge({"MODEL.DEVICE": "cpu", "MODEL.WEIGHTS": "", "MODEL.ROI_HEADS.SCORE_THRESH_TEST": 0.0})
    node = detectron2_config(cfg)
    model = build_model(node).eval()
    rows: list[dict] = []
    handles = []
    for path, pick, pre in _architecture_stages(node):
        def record(_module, args, out=None, pick=pick):
            rows.extend({"stage": stage, "shape": list(t.shape)} for stage, t in pick(args if out is None else out))
        module = model.get_submodule(path)
        handles.append(module.register_forward_pre_hook(record) if pre else module.register_forward_hook(record))
    try:
        _predictor(model, node, categories)([image])
    finally:
        for handle in handles:
            handle.remove()
    return rows


# ------------------------------------------------------------------------------ config


def detectron2_config(cfg: Config, splits: data.SplitPaths | None = None, run_dir: Path | None = None):
    """The detectron2 CfgNode of an experiment: get_cfg(), the 3x model-zoo yaml, then our keys.

    With ``splits`` the train / val files are registered and named in DATASETS.TRAIN / TEST;
    with ``run_dir`` it is the OUTPUT_DIR.
    """
    from detectron2.config import get_cfg

    node = get_cfg()
    _merge_model_zoo_base(node)
    pairs: list[Any] = []
    for key, value in cfg.flat().items():
        if key not in OUR_KEYS:
            pairs += [key, value]
    node.merge_from_list(pairs)
    node.MODEL.WEIGHTS = _weights(cfg)
    node.MODEL.DEVICE = _device(cfg)
    node.SEED = base.effective_seed(cfg)
    if node.SOLVER.AMP.ENABLED and not node.MODEL.DEVICE.startswith("cuda"):
        node.SOLVER.AMP.ENABLED = False
        base.warn_once("SOLVER.AMP.ENABLED needs CUDA: training in full precision on the CPU")
    if splits is not None:
        node.DATASETS.TRAIN = (register_split(splits.train),)
        # DATASETS.VAL_FRACTION 0: every image trains, no val split to evaluate on
        node.DATASETS.TEST = (register_split(splits.val),) if cfg["DATASETS.VAL_FRACTION"] > 0 else ()
    if run_dir is not None:
        node.OUTPUT_DIR = str(run_dir)
    return node


def _merge_model_zoo_base(node) -> None:
    """The 3x yaml from detectron2's model zoo; its structural keys directly when the zoo is missing."""
    try:
        from detectron2 import model_zoo  # imports pkg_resources, gone from setuptools >= 81

        node.merge_from_file(model_zoo.get_config_file(MODEL_ZOO_BASE))
    except (ImportError, RuntimeError) as e:
        base.warn_once(f"detectron2.model_zoo is unusable here ({e}): setting Base-RCNN-FPN's structural keys directly")
        node.merge_from_list([x for item in BASE_RCNN_FPN.items() for x in item])


def _weights(cfg: Config) -> str:
    """MODEL.WEIGHTS as detectron2 reads it: "imagenet" -> the MSRA ImageNet backbone of that depth."""
    weights = cfg["MODEL.WEIGHTS"]
    if weights == IMAGENET:
        shape = tuple(cfg[f"MODEL.RESNETS.{k}"] for k in ("DEPTH", "NUM_GROUPS", "WIDTH_PER_GROUP"))
        if shape not in IMAGENET_WEIGHTS:
            raise EngineError(
                f"MODEL.WEIGHTS imagenet: detectron2 has ImageNet weights for R50, R101 and X101-32x8d "
                f"(DEPTH/NUM_GROUPS/WIDTH_PER_GROUP 50/1/64, 101/1/64, 101/32/8), not {'/'.join(map(str, shape))}; "
                f"set MODEL.WEIGHTS to a weights file, or '' for random init"
            )
        return IMAGENET_WEIGHTS[shape]
    if weights == "" or "://" in weights:
        return weights
    path = Path(weights).expanduser()
    if not path.is_file():
        raise EngineError(f"MODEL.WEIGHTS: no such file {path}")
    return str(path)


def _fetch_weights(url: str) -> None:
    """Download (or find in detectron2's cache) the initial weights now, with a useful error offline."""
    if "://" not in url:
        return
    from detectron2.utils.file_io import PathManager

    try:
        PathManager.get_local_path(url)
    except Exception as e:  # urllib, iopath and socket errors alike
        name = url.rsplit("/", 1)[-1]
        raise EngineError(
            f"cannot download the initial weights {url} ({type(e).__name__}: {e}); on a machine with internet "
            f"download {name} (detectron2:// is https://dl.fbaipublicfiles.com/detectron2/), put it somewhere "
            f"here and set MODEL.WEIGHTS to its path, or set MODEL.WEIGHTS '' for random init"
        ) from None


def _device(cfg: Config) -> str:
    """MODEL.DEVICE, checked: a CUDA device on a machine without CUDA is an error, not a fallback."""
    device = cfg["MODEL.DEVICE"]
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise EngineError(
            "MODEL.DEVICE is cuda but CUDA is not available here: pass MODEL.DEVICE cpu to run on the CPU"
        )
    return device


def _checkpoint_iteration(path: Path) -> int:
    """The iteration a checkpoint was saved after (detectron2 resumes at the next one)."""
    return int(torch.load(path, map_location="cpu", mmap=True, weights_only=True)["iteration"])


def _check_mask_format(node, train_json: Path) -> None:
    """Polygon masks (detectron2's default) cannot hold RLE segmentations: say which key to set."""
    if node.INPUT.MASK_FORMAT != "polygon":
        return
    split = data.load_split(train_json, check_images=False)
    if any(isinstance(ann["segmentation"], dict) for ann in split.annotations):
        raise ConfigError(f"{train_json} has RLE segmentations, which INPUT.MASK_FORMAT polygon cannot hold: "
                          f"set INPUT.MASK_FORMAT bitmask")


# ---------------------------------------------------------------------------------- data


def register_split(json_path: Path) -> str:
    """Register a split file as a COCO data set (once per path and content); its detectron2 name."""
    from detectron2.data import DatasetCatalog
    from detectron2.data.datasets import register_coco_instances

    json_path = Path(json_path).resolve()
    split = data.load_split(json_path, check_images=False)
    digest = hashlib.sha256(str(json_path).encode() + json_path.read_bytes()).hexdigest()[:12]
    name = f"tinyvoc_{split.name}_{digest}"
    if name not in DatasetCatalog.list():
        register_coco_instances(name, {"thing_classes": split.class_names}, str(json_path), str(split.image_dir))
    return name


class _SeededMapper(torch.utils.data.Dataset):
    """Data set dicts through detectron2's DatasetMapper, keyed by (iteration, index), with the
    augmentations' RNGs (numpy's and Python's global ones) seeded from the key: any worker and any
    restart sees the same sample."""

    def __init__(self, dicts: list[dict], mapper, seed: int):
        self.dicts, self.mapper, self.seed = dicts, mapper, seed

    def __len__(self) -> int:
        return len(self.dicts)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        iteration, index = key
        seed = base.iteration_seed(self.seed, iteration, base.AUGMENT_STREAM, index)
        np.random.seed(seed)
        random.seed(seed)
        return self.mapper(self.dicts[index])


def train_loader(node, start_iter: int) -> torch.utils.data.DataLoader:
    """detectron2's training samples (DATASETS.TRAIN through DatasetMapper) batched by iteration from
    ``start_iter`` on: this process's share of the batch, DATALOADER.NUM_WORKERS workers."""
    from detectron2.data import DatasetMapper, get_detection_dataset_dicts
    from detectron2.data.build import trivial_batch_collator
    from detectron2.utils import comm

    dicts = get_detection_dataset_dicts(node.DATASETS.TRAIN, filter_empty=node.DATALOADER.FILTER_EMPTY_ANNOTATIONS)
    sampler = base.iteration_batches(len(dicts), node.SOLVER.IMS_PER_BATCH, node.SEED, start_iter,
                                     rank=comm.get_rank(), world=comm.get_world_size())
    return torch.utils.data.DataLoader(
        _SeededMapper(dicts, DatasetMapper(node, is_train=True), node.SEED),
        batch_sampler=sampler,
        num_workers=node.DATALOADER.NUM_WORKERS,
        collate_fn=trivial_batch_collator,
        generator=torch.Generator(),  # its base seed must not draw from torch's global RNG
    )


# ----------------------------------------------------------------------- trainer and hooks


@functools.lru_cache(maxsize=None)
def _detectron2_class(mixin: type, base_path: str) -> type:
    """``mixin`` on top of a detectron2 class (imported now): the classes below are defined at
    module level without importing detectron2, and combined with their base on first use."""
    module, name = base_path.rsplit(".", 1)
    return type(mixin.__name__.lstrip("_"), (mixin, getattr(importlib.import_module(module), name)), {})


def _hook(mixin: type, *args) -> Any:
    """An instance of a hook mixin combined with detectron2's HookBase."""
    return _detectron2_class(mixin, "detectron2.engine.HookBase")(*args)


class _Trainer:
    """DefaultTrainer (the base it is mixed into) with our data order, evaluation, checkpoints and hooks."""

    def __init__(self, cfg, start_iter: int, progress: bool, best_metric: str = runs.DEFAULT_BEST_METRIC):
        self.expected_start, self.progress = start_iter, progress  # build_* below need them
        self.best_metric = best_metric  # TEST.BEST_METRIC (ours, not in detectron2's CfgNode)
        super().__init__(cfg)

    def build_train_loader(self, cfg):
        """Batches by iteration from the iteration this run starts at (see :func:`train_loader`)."""
        return train_loader(cfg, self.expected_start)

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        """Val metrics of ``model`` on DATASETS.TEST[0] as flat ``segm/AP``... keys (main process only)."""
        from detectron2.data import MetadataCatalog
        from detectron2.evaluation import inference_context
        from detectron2.utils import comm

        if not comm.is_main_process():
            return {}
        json_file = MetadataCatalog.get(cfg.DATASETS.TEST[0]).json_file
        categories = data.load_split(json_file, check_images=False).categories
        model = getattr(model, "module", model)  # the model inside DistributedDataParallel
        with inference_context(model):
            return base.evaluate_on_split(_predictor(model, cfg, categories), Path(json_file))

    def build_writers(self):
        """Console lines only: metrics.json and TensorBoard are written every iteration (build_hooks)."""
        from detectron2.utils.events import CommonMetricPrinter

        return [CommonMetricPrinter(self.max_iter)]

    def build_hooks(self):
        """detectron2's hooks, with atomic checkpoints and our evaluation, plus seeding, writers and progress.

        Per step: seed, train, evaluate when due (with the best checkpoint), the metrics.json row,
        then the periodic checkpoint (detectron2 checkpoints before evaluating): a kill between any
        two resumes at the right iteration with every metrics row written once.
        """
        from detectron2.engine import hooks
        from detectron2.utils import comm
        from detectron2.utils.events import JSONWriter, TensorboardXWriter

        # DefaultTrainer made a plain DetectionCheckpointer just before calling this; the
        # PeriodicCheckpointer built below must get the atomic one.
        self.checkpointer = _detectron2_class(_AtomicCheckpointer, "detectron2.checkpoint.DetectionCheckpointer")(
            self.model, self.cfg.OUTPUT_DIR, trainer=weakref.proxy(self)
        )
        built = super().build_hooks()
        checkpointing = [h for h in built if isinstance(h, hooks.PeriodicCheckpointer)]  # main process only
        built = [h for h in built if not isinstance(h, (hooks.PeriodicCheckpointer, hooks.EvalHook))]
        built.insert(0, _hook(_SeedIteration, self.cfg.SEED))
        if self.cfg.DATASETS.TEST:  # none when DATASETS.VAL_FRACTION is 0 (trained on every image)
            built.append(_hook(_Evaluate, self.cfg.TEST.EVAL_PERIOD, Path(self.cfg.OUTPUT_DIR), self.best_metric))
        if comm.is_main_process():
            out = self.cfg.OUTPUT_DIR
            writers = [JSONWriter(str(Path(out) / runs.METRICS), window_size=1),
                       TensorboardXWriter(out, window_size=1, purge_step=self.expected_start)]
            built.append(hooks.PeriodicWriter(writers, period=1))
        built += checkpointing
        if comm.is_main_process() and self.progress:
            built.append(_hook(_ProgressBar))
        return built


class _AtomicCheckpointer:
    """DetectionCheckpointer (the base it is mixed into) whose files appear whole or not at all:
    a kill during a save leaves the previous checkpoint, and ``last_checkpoint`` naming it, intact."""

    def save(self, name: str, tag_last: bool = True, **kwargs: Any) -> None:
        """fvcore's save (model, checkpointables, extra data) through runs.save_checkpoint."""
        if not self.save_dir or not self.save_to_disk:
            return
        state = {"model": self.model.state_dict(), **{k: v.state_dict() for k, v in self.checkpointables.items()}}
        state.update(kwargs)
        self.logger.info("Saving checkpoint to %s", Path(self.save_dir) / f"{name}.pth")
        runs.save_checkpoint(Path(self.save_dir), f"{name}.pth", state, tag_last=tag_last)


class _SeedIteration:
    """Seeds torch's RNG (RPN and ROI sampling) from (SEED, iteration, rank) before every step."""

    def __init__(self, seed: int):
        self.seed = seed

    def before_step(self):
        from detectron2.utils import comm

        torch.manual_seed(base.iteration_seed(self.seed, self.trainer.iter, base.TORCH_STREAM, comm.get_rank()))


class _Evaluate:
    """detectron2's EvalHook as the torchvision engine schedules it: every TEST.EVAL_PERIOD iterations
    and in the last one (not after training), so the results join that iteration's metrics row;
    then model_best.pth and best.json when the val ``best_metric`` (TEST.BEST_METRIC) improved."""

    def __init__(self, period: int, run_dir: Path, best_metric: str = runs.DEFAULT_BEST_METRIC):
        self.period, self.run_dir, self.best_metric = period, run_dir, best_metric

    def after_step(self):
        from detectron2.utils import comm

        it, done = self.trainer.iter, self.trainer.iter + 1
        if done != self.trainer.max_iter and not (self.period > 0 and done % self.period == 0):
            return
        results = self.trainer.test(self.trainer.cfg, self.trainer.model)
        if results:  # the main process
            self.trainer.storage.put_scalars(**results, smoothing_hint=False)
            key = self.best_metric
            if runs.is_new_best(self.run_dir, results[key], key):
                self.trainer.checkpointer.save(Path(runs.BEST).stem, tag_last=False, iteration=it)
                runs.record_best(self.run_dir, it, results[key], key)
        comm.synchronize()


class _ProgressBar:
    """helpers.progress over the iterations: the bar, and text lines with the latest losses and lr."""

    def before_train(self):
        from ..progress import Progress

        self.bar = Progress(self.trainer.max_iter, "train", initial=self.trainer.start_iter)

    def after_step(self):
        latest = {k: v[0] for k, v in self.trainer.storage.latest().items()}
        self.bar.update(**{k: float(v) for k, v in latest.items() if k.startswith("loss") or k in ("total_loss", "lr")})
        if "segm/AP50" in latest and self.trainer.storage.latest()["segm/AP50"][1] == self.trainer.iter:
            self.bar.note(base.eval_line(self.trainer.iter, latest))

    def after_train(self):
        self.bar.close()


def _final_metrics(run_dir: Path) -> dict:
    """The val metrics of the last evaluation, as metrics.json recorded them."""
    rows = runs.eval_rows(runs.read_metrics(run_dir))
    return {k: v for k, v in rows[-1].items() if k.startswith(("segm/", "bbox/"))} if rows else {}


# ---------------------------------------------------------------------------- prediction


def _predictor(model, node, categories: list[dict]) -> base.Predictor:
    """A Predictor around ``model``, which the caller keeps in eval mode while using it.

    Images come as RGB (helpers.data.read_image) and go to the model in INPUT.FORMAT, resized as
    detectron2's DefaultPredictor does. With TEST.AUG.ENABLED the model is wrapped in detectron2's own
    ``GeneralizedRCNNWithTTA``, which resizes (to each of TEST.AUG.MIN_SIZES) and flips by itself.
    """
    import detectron2.data.transforms as T

    category_ids = np.array([c["id"] for c in sorted(categories, key=lambda c: c["id"])], dtype=np.int64)
    resize = T.ResizeShortestEdge([node.INPUT.MIN_SIZE_TEST] * 2, node.INPUT.MAX_SIZE_TEST)
    if node.TEST.AUG.ENABLED:
        from detectron2.modeling import GeneralizedRCNNWithTTA

        model = GeneralizedRCNNWithTTA(node, model)
    bgr = node.INPUT.FORMAT == "BGR"

    def predict(images: list[np.ndarray]) -> list[Instances]:
        inputs = []
        for rgb in images:
            image = rgb[:, :, ::-1] if bgr else rgb
            if node.TEST.AUG.ENABLED:  # uint8 at its own size, as detectron2's DatasetMapper gives the TTA mapper
                tensor = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
            else:
                resized = resize.get_transform(image).apply_image(image)
                tensor = torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1)).astype("float32"))
            inputs.append({"image": tensor, "height": rgb.shape[0], "width": rgb.shape[1]})
        with torch.no_grad():
            outputs = model(inputs)
        return [_instances(out["instances"], rgb.shape[:2], category_ids) for out, rgb in zip(outputs, images)]

    return base.Predictor(predict, categories, node.MODEL.ROI_HEADS.SCORE_THRESH_TEST, node.MODEL.DEVICE)


def _instances(pred, image_size: tuple[int, int], category_ids: np.ndarray) -> Instances:
    """detectron2's Instances of one image -> ours, with the data set's category ids."""
    pred = pred.to("cpu")
    return Instances(
        boxes=pred.pred_boxes.tensor.float().numpy(),
        masks=pred.pred_masks.numpy(),
        scores=pred.scores.float().numpy(),
        category_ids=category_ids[pred.pred_classes.numpy()],
        image_size=image_size,
    )


# -------------------------------------------------------------------------- architecture


def _architecture_stages(node) -> list[tuple[str, Any, bool]]:
    """(module path, picker of (stage, tensor) pairs, pre-hook?) in the order a forward pass meets them,
    with the torchvision engine's stage names."""
    single = {
        "backbone.bottom_up.stem": "backbone.stem",
        **{f"backbone.bottom_up.res{i}": f"backbone.res{i}" for i in range(2, 6)},
    }
    stages: list[tuple[str, Any, bool]] = [("backbone", lambda args: [("input", args[0])], True)]
    stages += [(path, lambda out, stage=stage: [(stage, out)], False) for path, stage in single.items()]
    stages += [
        ("backbone", lambda out: [(f"fpn.{k}", v) for k, v in out.items()], False),
        ("proposal_generator", lambda out: [("rpn.proposals", out[0][0].proposal_boxes.tensor)], False),
        ("roi_heads.box_pooler", lambda out: [("roi_heads.box_pooler", out)], False),
        ("roi_heads.box_head", lambda out: [("roi_heads.box_head", out)], False),
        ("roi_heads.box_predictor",
         lambda out: [("roi_heads.box_predictor.scores", out[0]), ("roi_heads.box_predictor.deltas", out[1])], False),
        ("roi_heads.mask_pooler", lambda out: [("roi_heads.mask_pooler", out)], False),
    ]
    if node.MODEL.ROI_MASK_HEAD.NUM_CONV:
        last_conv = f"roi_heads.mask_head.mask_fcn{node.MODEL.ROI_MASK_HEAD.NUM_CONV}"
        stages.append((last_conv, lambda out: [("roi_heads.mask_head", out)], False))
    stages += [
        ("roi_heads.mask_head.predictor", lambda out: [("roi_heads.mask_predictor", out)], False),
        ("", lambda out: [("output.boxes", out[0]["instances"].pred_boxes.tensor),
                          ("output.masks", out[0]["instances"].pred_masks)], False),
    ]
    return stages


# ------------------------------------------------------------------------------------ inspect


def inspect(cfg: Config, checkpoint: Path, categories: list[dict], image: np.ndarray, gt: dict | None = None,
            **options: Any) -> dict:
    """One RGB image through a checkpoint's model, every stage kept as plain data (detectron2_inspect)."""
    from . import detectron2_inspect

    return detectron2_inspect.inspect(cfg, checkpoint, categories, image, gt, **options)
