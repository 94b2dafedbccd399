"""The torchvision engine: detectron2's Mask R-CNN ResNet-FPN rebuilt from torchvision parts.

Config keys keep detectron2's meaning (see :mod:`helpers.config`); the mapping is:

- backbone: torchvision's ResNet of ``MODEL.RESNETS.DEPTH`` with ``NUM_GROUPS`` groups of
  ``WIDTH_PER_GROUP`` channels in its bottlenecks (R50, R101, X101-32x8d = 101/32/8 is torchvision's
  resnext101_32x8d; the stride sits in the 3x3 conv, as detectron2's ``STRIDE_IN_1X1 False``) and
  ``RESNETS.NORM`` (FrozenBN, BN, GN = GroupNorm(32), SyncBN = BN converted under DDP);
  ``MODEL.WEIGHTS imagenet`` loads torchvision's own ImageNet weights of that shape; the stem and the first
  ``BACKBONE.FREEZE_AT - 1`` stages are frozen (their norms become FrozenBN), as in detectron2; in training
  each FrozenBN is computed inside the conv before it (``frozen_norm``), at inference folded into it;
  an FPN of ``FPN.OUT_CHANNELS`` on res2..res5 plus a max-pooled p6 for the RPN.
- RPN, ROI heads, box head (``NUM_CONV`` convs of ``CONV_DIM``, then ``NUM_FC`` FC layers of
  ``FC_DIM``) and mask head (``NUM_CONV`` convs of ``CONV_DIM``) from ``torchvision.models.detection``,
  their RoIAlign at ``POOLER_RESOLUTION`` with ``POOLER_SAMPLING_RATIO`` points per bin (0: adaptive),
  each conv followed by its ``NORM`` (none, GN = GroupNorm(32), BN), as is every FPN conv by ``FPN.NORM``; ``NUM_CLASSES + 1`` outputs, label 0 is
  background and labels 1..K are the categories sorted by id.
- input: RGB floats in 0..1 normalised with torchvision's ImageNet mean/std; one of
  ``MIN_SIZE_TRAIN`` per training image, ``MIN_SIZE_TEST`` in eval mode.

- ``SOLVER.AMP.ENABLED``: training steps and prediction under ``torch.autocast``, float16 with a
  GradScaler on CUDA, bfloat16 on the CPU (no scaler needed); the RPN, box and mask predictors hand
  float32 to box decoding, NMS, mask pasting and the losses.

- loading: ``DATALOADER.NUM_WORKERS`` worker processes (0: in the training process); host memory
  is pinned when the device is CUDA (detectron2 has no key for it, so neither do we);
  ``CUDNN_BENCHMARK`` turns on cuDNN's algorithm search on CUDA (fastest, not bit-reproducible).

Training is iteration-based like detectron2's: every batch, flip and random draw depends only on
(SEED, iteration), so a run killed at any moment resumes to bit-identical weights (on CPU), with any
number of loader workers: a sample is drawn from (SEED, iteration, index) alone, never from a
worker's own random state.

The package has one job per module, as torchvision's detection references split theirs: ``model`` (the
builder and the input transform), ``weights`` (ImageNet and checkpoint loading), ``train_data`` (samples),
``loop`` (optimizer and the iteration loop), ``device`` (device, DDP, precision), ``predict`` (images to
Instances), ``paste`` (masks into the image), ``roi_align`` (multi-level RoIAlign on every CPU thread),
``frozen_norm`` (frozen norms inside their convs in training),
``tta`` (test-time augmentation), ``architecture`` and ``inspection`` (the course's views of the model). This file is the engine's interface (helpers.engines).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
import torchvision

from ... import data
from ...config import IMAGENET, Config
from ...errors import ConfigError
from .. import base
from .architecture import architecture  # noqa: F401  (engine API)
from .device import _cudnn_benchmark, _device, _Dist, _setup_distributed, _to_device
from .loop import _optimizer, _Trainer
from .model import _anchor_levels, _check_resnet, build_model
from .predict import _predictor, fold_norms
from .weights import _imagenet_weights, _load_weights

# ------------------------------------------------------------------------------- engine API


def available() -> tuple[bool, str]:
    """torch and torchvision import (they are dependencies of this package), so always usable."""
    where = "CUDA available" if torch.cuda.is_available() else "CPU only"
    return True, f"torch {torch.__version__}, torchvision {torchvision.__version__} ({where})"


def prepare_config(cfg: Config) -> Config:
    """The effective config: random init gets a trainable backbone; anchors checked. A copy."""
    cfg = cfg.copy()
    base.trainable_norm_for_random_init(cfg)
    _anchor_levels(cfg)
    _check_resnet(cfg)
    if cfg["MODEL.WEIGHTS"] == IMAGENET:
        _imagenet_weights(cfg)
    for key in ("SOLVER.CHECKPOINT_PERIOD", "SOLVER.IMS_PER_BATCH", "SOLVER.MAX_ITER"):
        if cfg[key] < 1:
            raise ConfigError(f"{key} must be at least 1, got {cfg[key]}")
    if len(cfg["MODEL.RPN.IOU_THRESHOLDS"]) != 2 or len(cfg["MODEL.ROI_HEADS.IOU_THRESHOLDS"]) != 1:
        raise ConfigError("the torchvision engine takes MODEL.RPN.IOU_THRESHOLDS [bg, fg] and one MODEL.ROI_HEADS.IOU_THRESHOLDS")
    return cfg


def train(cfg: Config, splits: data.SplitPaths, run_dir: Path, resume: bool = False, progress: bool = True) -> dict:
    """Train into ``run_dir`` (resuming from its last checkpoint when asked); final val metrics.

    Under ``torchrun`` (WORLD_SIZE > 1) every process calls this; rank 0 alone writes files.
    """
    ctx = _setup_distributed(cfg)
    _cudnn_benchmark(cfg, ctx.device)
    try:
        final = _Trainer(cfg, splits, Path(run_dir), ctx).run(resume, progress)
        if ctx.world > 1:
            box = [final]
            dist.broadcast_object_list(box, src=0)
            final = box[0]
        return final
    finally:
        if ctx.owns_group:
            dist.destroy_process_group()


def load_predictor(cfg: Config, checkpoint: Path, categories: list[dict]) -> base.Predictor:
    """A predictor for a checkpoint of one of our runs (or a full torchvision Mask R-CNN state dict)."""
    device = _device(cfg)
    model = build_model(cfg, len(categories), load_weights=False)
    _load_weights(model, Path(checkpoint), strict=True)
    model = _to_device(fold_norms(model.eval()), device)  # for prediction only: training keeps its norms
    return _predictor(model, cfg, categories, device)


def build_optimizer(cfg: Config, categories: list[dict]) -> torch.optim.Optimizer:
    """The SGD optimizer training would use, over a random-init model of ``cfg``: its parameter
    groups are what weight decay acts on (for the course to read, not to train with)."""
    cfg = prepare_config(cfg.copy())
    return _optimizer(cfg, build_model(cfg, len(categories), load_weights=False))


def training_steps(cfg: Config, splits: data.SplitPaths) -> Callable[[], dict[str, float]]:
    """For measuring training (the benchmark counts the FLOPs of its iterations): a function whose
    k-th call runs training iteration k-1 as :func:`train` would from scratch (the same initial
    weights, batch, seeds, forward, backward and optimizer step) in this process, writing nothing,
    and returns its losses as metrics.json records them. ``cfg`` is an effective config
    (:func:`prepare_config`); at most SOLVER.MAX_ITER calls."""
    trainer = _Trainer(cfg, splits, Path(os.devnull), _Dist(_device(cfg)))  # no run folder: nothing is saved
    trainer.build()
    trainer.model.train()
    batches = iter(trainer._loader(0))

    def step() -> dict[str, float]:
        it, images, targets = next(batches)
        row = trainer._step(it, images, targets)
        return {k: v for k, v in row.items() if k.startswith("loss") or k == "total_loss"}

    return step


# ------------------------------------------------------------------------------------ inspect


def inspect(cfg: Config, checkpoint: Path, categories: list[dict], image: np.ndarray, gt: dict | None = None,
            **options: Any) -> dict:
    """One RGB image through a checkpoint's model, every stage kept as plain data (see .inspection)."""
    from . import inspection

    return inspection.inspect(cfg, checkpoint, categories, image, gt, **options)

