"""The torchvision engine: detectron2's Mask R-CNN ResNet-FPN rebuilt from torchvision parts.

Config keys keep detectron2's meaning (see :mod:`helpers.config`); the mapping is:

- backbone: torchvision's ResNet of ``MODEL.RESNETS.DEPTH`` with ``NUM_GROUPS`` groups of
  ``WIDTH_PER_GROUP`` channels in its bottlenecks (R50, R101, X101-32x8d = 101/32/8 is torchvision's
  resnext101_32x8d; the stride sits in the 3x3 conv, as detectron2's ``STRIDE_IN_1X1 False``) and
  ``RESNETS.NORM`` (FrozenBN, BN, GN = GroupNorm(32), SyncBN = BN converted under DDP);
  ``MODEL.WEIGHTS imagenet`` loads torchvision's own ImageNet weights of that shape; the stem and the first
  ``BACKBONE.FREEZE_AT - 1`` stages are frozen (their norms become FrozenBN), as in detectron2;
  an FPN of ``FPN.OUT_CHANNELS`` on res2..res5 plus a max-pooled p6 for the RPN.
- RPN, ROI heads, box head (``NUM_CONV`` convs of ``CONV_DIM``, then ``NUM_FC`` FC layers of
  ``FC_DIM``) and mask head (``NUM_CONV`` convs of ``CONV_DIM``) from ``torchvision.models.detection``,
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
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.distributed as dist
import torchvision
from torch import nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.rpn import RPNHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet
from torchvision.ops import FrozenBatchNorm2d, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from .. import data, runs
from ..schedule import learning_rate  # noqa: F401  (the loop's schedule; tests patch it here)
from ..config import IMAGENET, Config
from ..errors import ConfigError, EngineError
from ..instances import Instances
from . import base, torchvision_tta
from .torchvision_paste import paste_masks

log = logging.getLogger(__name__)

IMAGENET_MEAN = [0.485, 0.456, 0.406]  # what torchvision's ImageNet weights were trained with (RGB, 0..1)
IMAGENET_STD = [0.229, 0.224, 0.225]
NUM_LEVELS = 5  # FPN levels p2..p6, one anchor size each
FEATURE_NAMES = ["0", "1", "2", "3"]  # torchvision's names of p2..p5, the levels the ROI poolers read
POOLER_SAMPLING_RATIO = 0  # detectron2's default: adaptive RoIAlign sampling
DOWNLOAD_TIMEOUT_S = 60  # a stalled ImageNet download fails instead of hanging
MASK_THRESHOLD = 0.5
GN_GROUPS = 32  # detectron2's GroupNorm
# SOLVER.AMP.ENABLED: autocast dtype per device type. float16 on CUDA, with a GradScaler against gradient
# underflow; bfloat16 on the CPU (float32's exponent range: no scaler). Other devices run in full precision.
AMP_DTYPES = {"cuda": torch.float16, "cpu": torch.bfloat16}
NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, FrozenBatchNorm2d)
# torchvision's block and blocks per stage (res2..res5) for each MODEL.RESNETS.DEPTH, as detectron2 builds them
RESNET_STAGES = {
    18: (BasicBlock, [2, 2, 2, 2]),
    34: (BasicBlock, [3, 4, 6, 3]),
    50: (Bottleneck, [3, 4, 6, 3]),
    101: (Bottleneck, [3, 4, 23, 3]),
    152: (Bottleneck, [3, 8, 36, 3]),
}
# torchvision's ImageNet weights (IMAGENET1K_V1) by (DEPTH, NUM_GROUPS, WIDTH_PER_GROUP)
IMAGENET_WEIGHTS = {
    (18, 1, 64): "ResNet18_Weights",
    (34, 1, 64): "ResNet34_Weights",
    (50, 1, 64): "ResNet50_Weights",
    (101, 1, 64): "ResNet101_Weights",
    (152, 1, 64): "ResNet152_Weights",
    (50, 32, 4): "ResNeXt50_32X4D_Weights",
    (101, 32, 8): "ResNeXt101_32X8D_Weights",
    (101, 64, 4): "ResNeXt101_64X4D_Weights",
    (50, 1, 128): "Wide_ResNet50_2_Weights",
    (101, 1, 128): "Wide_ResNet101_2_Weights",
}



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
    model = _to_device(model, device).eval()
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


def architecture(cfg: Config, categories: list[dict], image: np.ndarray) -> list[dict]:
    """Stages and tensor shapes of one eval-mode forward pass of a random-init model, in pipeline order.

    Every detection is kept (score threshold 0), so the mask branch sees DETECTIONS_PER_IMAGE boxes.
    """
    model = build_model(cfg, len(categories), load_weights=False).eval()
    model.roi_heads.score_thresh = 0.0
    rows: list[dict] = []
    hooks = [
        model.get_submodule(path).register_forward_hook(
            lambda _m, _i, out, name=name, pick=pick: rows.extend(
                {"stage": stage, "shape": list(t.shape)} for stage, t in pick(name, out)
            )
        )
        for path, name, pick in _ARCHITECTURE_STAGES
    ]
    try:
        with torch.inference_mode():
            model([_image_tensor(image, torch.device("cpu"))])
    finally:
        for hook in hooks:
            hook.remove()
    return rows


# ----------------------------------------------------------------------------------- model


class _InputTransform(GeneralizedRCNNTransform):
    """torchvision's normalise-and-resize with detectron2's separate train and test sizes:
    train mode picks one of MIN_SIZE_TRAIN per image (torchvision's own choice, from torch's RNG)
    under MAX_SIZE_TRAIN; eval mode resizes to MIN_SIZE_TEST under MAX_SIZE_TEST."""

    def __init__(self, train_sizes: tuple[int, ...], train_max: int, test_size: int, test_max: int):
        super().__init__(train_sizes, train_max, IMAGENET_MEAN, IMAGENET_STD)
        self._sizes = {True: (tuple(train_sizes), train_max), False: ((test_size,), test_max)}
        self.paste_threshold: float | None = None  # None: masks pasted as probabilities; a number: boolean

    def postprocess(self, result: list[dict], image_shapes: list[tuple[int, int]],
                    original_image_sizes: list[tuple[int, int]]) -> list[dict]:
        """torchvision's postprocess (boxes and masks into the original image) with the masks pasted by
        torchvision_paste: the same pixels, one allocation per image instead of one per detection."""
        if self.training:
            return result
        for pred, size, original in zip(result, image_shapes, original_image_sizes):
            pred["boxes"] = resize_boxes(pred["boxes"], size, original)
            if "masks" in pred:
                pred["masks"] = paste_masks(pred["masks"], pred["boxes"], original, self.paste_threshold)
        return result

    def train(self, mode: bool = True) -> "_InputTransform":
        self.min_size, self.max_size = self._sizes[bool(mode)]
        return super().train(mode)


def build_model(cfg: Config, num_classes: int, load_weights: bool = True) -> MaskRCNN:
    """Mask R-CNN as the config describes it, in train mode on the CPU.

    load_weights: apply MODEL.WEIGHTS ("imagenet", a checkpoint path, or "" for none); off when
    the weights come from a checkpoint right after (resume, prediction).
    """
    weights = cfg["MODEL.WEIGHTS"] if load_weights else ""
    channels = cfg["MODEL.FPN.OUT_CHANNELS"]
    box_res, mask_res = cfg["MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION"], cfg["MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION"]
    box_head, box_dim = _box_head(cfg, channels)
    conv_dim = cfg["MODEL.ROI_MASK_HEAD.CONV_DIM"]
    sizes, ratios = _anchor_levels(cfg)
    rpn_bg, rpn_fg = cfg["MODEL.RPN.IOU_THRESHOLDS"]
    roi_iou = cfg["MODEL.ROI_HEADS.IOU_THRESHOLDS"][0]
    model = MaskRCNN(
        _backbone(cfg, imagenet=weights == IMAGENET),
        num_classes=None,
        rpn_anchor_generator=AnchorGenerator(sizes, ratios),
        rpn_head=_RPNHead(channels, len(sizes[0]) * len(ratios[0])),
        rpn_pre_nms_top_n_train=cfg["MODEL.RPN.PRE_NMS_TOPK_TRAIN"],
        rpn_pre_nms_top_n_test=cfg["MODEL.RPN.PRE_NMS_TOPK_TEST"],
        rpn_post_nms_top_n_train=cfg["MODEL.RPN.POST_NMS_TOPK_TRAIN"],
        rpn_post_nms_top_n_test=cfg["MODEL.RPN.POST_NMS_TOPK_TEST"],
        rpn_nms_thresh=cfg["MODEL.RPN.NMS_THRESH"],
        rpn_fg_iou_thresh=rpn_fg,
        rpn_bg_iou_thresh=rpn_bg,
        rpn_batch_size_per_image=cfg["MODEL.RPN.BATCH_SIZE_PER_IMAGE"],
        rpn_positive_fraction=cfg["MODEL.RPN.POSITIVE_FRACTION"],
        box_roi_pool=MultiScaleRoIAlign(FEATURE_NAMES, box_res, POOLER_SAMPLING_RATIO),
        box_head=box_head,
        box_predictor=_BoxPredictor(box_dim, num_classes + 1, cfg["MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG"]),
        box_score_thresh=cfg["MODEL.ROI_HEADS.SCORE_THRESH_TEST"],
        box_nms_thresh=cfg["MODEL.ROI_HEADS.NMS_THRESH_TEST"],
        box_detections_per_img=cfg["TEST.DETECTIONS_PER_IMAGE"],
        box_fg_iou_thresh=roi_iou,
        box_bg_iou_thresh=roi_iou,
        box_batch_size_per_image=cfg["MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE"],
        box_positive_fraction=cfg["MODEL.ROI_HEADS.POSITIVE_FRACTION"],
        mask_roi_pool=MultiScaleRoIAlign(FEATURE_NAMES, mask_res, POOLER_SAMPLING_RATIO),
        mask_head=MaskRCNNHeads(channels, [conv_dim] * cfg["MODEL.ROI_MASK_HEAD.NUM_CONV"], 1,
                                norm_layer=_head_norm(cfg["MODEL.ROI_MASK_HEAD.NORM"])),
        mask_predictor=_MaskPredictor(conv_dim, num_classes + 1, cfg["MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK"]),
    )
    model.transform = _InputTransform(
        tuple(cfg["INPUT.MIN_SIZE_TRAIN"]), cfg["INPUT.MAX_SIZE_TRAIN"], cfg["INPUT.MIN_SIZE_TEST"], cfg["INPUT.MAX_SIZE_TEST"]
    )
    _init_predictors(model)
    if weights not in ("", IMAGENET):
        _load_weights(model, Path(weights).expanduser(), strict=False)
    return model


class _RPNHead(RPNHead):
    """torchvision's RPN head with float32 outputs. Under autocast its convs run in bfloat16/float16,
    and torchvision decodes boxes in the dtype of the deltas: proposals and detections would be
    rounded to a few pixels (bfloat16 keeps 8 significant bits: steps of 2 px at 256..512). In float32
    they are decoded, matched and NMS-ed as without AMP; the box and mask predictors do the same."""

    def forward(self, x: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        logits, deltas = super().forward(x)
        return [t.float() for t in logits], [t.float() for t in deltas]


class _BoxPredictor(FastRCNNPredictor):
    """Class scores and box deltas; with ``agnostic`` (CLS_AGNOSTIC_BBOX_REG) one set of deltas
    that every class shares, repeated per class for torchvision's class-indexed loss and decoding."""

    def __init__(self, in_features: int, num_outputs: int, agnostic: bool):
        super().__init__(in_features, num_outputs)
        self.repeats = num_outputs if agnostic else 1
        if agnostic:
            self.bbox_pred = nn.Linear(in_features, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores, deltas = super().forward(x)
        return scores.float(), deltas.float().repeat(1, self.repeats)  # float32 under autocast: see _RPNHead


class _MaskPredictor(MaskRCNNPredictor):
    """2x upsampling and per-class mask logits; with ``agnostic`` (CLS_AGNOSTIC_MASK) one mask that
    every class shares, expanded per class."""

    def __init__(self, channels: int, num_outputs: int, agnostic: bool):
        super().__init__(channels, channels, 1 if agnostic else num_outputs)
        self.num_outputs = num_outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = super().forward(x).float()  # float32 under autocast: the pasted masks and the loss
        return logits.expand(-1, self.num_outputs, -1, -1)


def _box_head(cfg: Config, channels: int) -> tuple[nn.Module, int]:
    """detectron2's box head: NUM_CONV 3x3 convs of CONV_DIM (with NORM), then NUM_FC FC layers of
    FC_DIM; the module and the width of its output. 0 convs and 2 FCs is torchvision's TwoMLPHead."""
    res = cfg["MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION"]
    num_conv, num_fc = cfg["MODEL.ROI_BOX_HEAD.NUM_CONV"], cfg["MODEL.ROI_BOX_HEAD.NUM_FC"]
    conv_dim, fc_dim = cfg["MODEL.ROI_BOX_HEAD.CONV_DIM"], cfg["MODEL.ROI_BOX_HEAD.FC_DIM"]
    if num_conv < 0 or num_fc < 0 or num_conv + num_fc == 0:
        raise ConfigError("MODEL.ROI_BOX_HEAD needs NUM_CONV >= 0 and NUM_FC >= 0, and at least one layer in all")
    if num_conv == 0 and num_fc == 2:
        return TwoMLPHead(channels * res**2, fc_dim), fc_dim
    head = FastRCNNConvFCHead((channels, res, res), [conv_dim] * num_conv, [fc_dim] * num_fc,
                              norm_layer=_head_norm(cfg["MODEL.ROI_BOX_HEAD.NORM"]))
    return head, fc_dim if num_fc else conv_dim * res**2


def _head_norm(norm: str) -> Callable[[int], nn.Module] | None:
    """The norm after each conv of the FPN and the ROI heads: none, GroupNorm(32) or BatchNorm."""
    return None if norm == "" else _norm_layer(norm)


def _init_predictors(model: MaskRCNN) -> None:
    """detectron2's initialisation of the output layers (small normal weights, zero biases), so
    the first losses are near chance level instead of torchvision's larger Kaiming-scaled logits."""
    for layer, std in ((model.roi_heads.box_predictor.cls_score, 0.01),
                       (model.roi_heads.box_predictor.bbox_pred, 0.001),
                       (model.roi_heads.mask_predictor.mask_fcn_logits, 0.001)):
        nn.init.normal_(layer.weight, std=std)
        nn.init.zeros_(layer.bias)


def _anchor_levels(cfg: Config) -> tuple[tuple[tuple[int, ...], ...], tuple[tuple[float, ...], ...]]:
    """ANCHOR_GENERATOR sizes and ratios per FPN level (a single entry applies to every level)."""
    levels = []
    for key in ("MODEL.ANCHOR_GENERATOR.SIZES", "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS"):
        value = cfg[key]
        if len(value) not in (1, NUM_LEVELS) or not all(isinstance(v, list) and v for v in value):
            raise ConfigError(f"{key} needs 1 or {NUM_LEVELS} non-empty lists (one per FPN level p2..p6), got {value!r}")
        levels.append(tuple(tuple(v) for v in (value * NUM_LEVELS if len(value) == 1 else value)))
    sizes, ratios = levels
    if len({len(s) * len(r) for s, r in zip(sizes, ratios)}) != 1:
        raise ConfigError("every FPN level needs the same number of anchors (sizes x aspect ratios); the RPN head is shared")
    return sizes, ratios


def _norm_layer(norm: str) -> Callable[[int], nn.Module]:
    """The norm layer a NORM key names (SyncBN is BN until DDP converts it)."""
    if norm == "FrozenBN":
        return FrozenBatchNorm2d
    if norm == "GN":
        return _group_norm
    return nn.BatchNorm2d


def _group_norm(channels: int) -> nn.GroupNorm:
    """detectron2's GN: 32 groups."""
    if channels % GN_GROUPS:
        raise ConfigError(f"GN norm needs a channel count divisible by {GN_GROUPS}, got a layer of {channels} channels "
                          "(check MODEL.FPN.OUT_CHANNELS and the heads' CONV_DIM)")
    return nn.GroupNorm(GN_GROUPS, channels)


def _resnet_name(cfg: Config) -> str:
    """The backbone's usual name: ResNet-50, ResNeXt-101 32x8d, ResNet-50 (width 128 per group)."""
    depth, groups, width = (cfg[f"MODEL.RESNETS.{k}"] for k in ("DEPTH", "NUM_GROUPS", "WIDTH_PER_GROUP"))
    if groups > 1:
        return f"ResNeXt-{depth} {groups}x{width}d"
    return f"ResNet-{depth}" + ("" if width == 64 else f" (width {width} per group)")


def _check_resnet(cfg: Config) -> None:
    """What torchvision's ResNet can build: basic blocks (R18/R34) have one group of width 64."""
    depth, width = cfg["MODEL.RESNETS.DEPTH"], cfg["MODEL.RESNETS.WIDTH_PER_GROUP"]
    if depth in (18, 34) and width != 64:
        raise ConfigError(f"MODEL.RESNETS.WIDTH_PER_GROUP = {width}: the torchvision engine builds ResNet-{depth} "
                          f"(basic blocks) only with 64; a width needs MODEL.RESNETS.DEPTH >= 50")


def _imagenet_weights(cfg: Config) -> torchvision.models.WeightsEnum:
    """torchvision's ImageNet weights for this DEPTH / NUM_GROUPS / WIDTH_PER_GROUP; ConfigError if it has none."""
    shape = tuple(cfg[f"MODEL.RESNETS.{k}"] for k in ("DEPTH", "NUM_GROUPS", "WIDTH_PER_GROUP"))
    if shape not in IMAGENET_WEIGHTS:
        known = ", ".join(f"{d}/{g}/{w}" for d, g, w in IMAGENET_WEIGHTS)
        raise ConfigError(f"MODEL.WEIGHTS imagenet: torchvision has no ImageNet weights for {_resnet_name(cfg)} "
                          f"(DEPTH/NUM_GROUPS/WIDTH_PER_GROUP {'/'.join(map(str, shape))}; it has {known}); "
                          f"set MODEL.WEIGHTS to a weights file, or MODEL.WEIGHTS '' for random init")
    return getattr(torchvision.models, IMAGENET_WEIGHTS[shape]).IMAGENET1K_V1


def _backbone(cfg: Config, imagenet: bool) -> BackboneWithFPN:
    """ResNet-FPN: torchvision's ResNet of RESNETS.DEPTH with NUM_GROUPS groups of WIDTH_PER_GROUP
    channels in each bottleneck, optionally ImageNet weights, frozen stem and stages."""
    _check_resnet(cfg)
    block, layers = RESNET_STAGES[cfg["MODEL.RESNETS.DEPTH"]]
    resnet = ResNet(block, layers, groups=cfg["MODEL.RESNETS.NUM_GROUPS"], width_per_group=cfg["MODEL.RESNETS.WIDTH_PER_GROUP"],
                    norm_layer=_norm_layer(cfg["MODEL.RESNETS.NORM"]))
    if imagenet:
        missing, unexpected = resnet.load_state_dict(_imagenet_state(_imagenet_weights(cfg), _resnet_name(cfg)),
                                                     strict=False)
        if missing or unexpected:  # GN has no running statistics to take
            log.info("ImageNet %s: %d tensors missing, %d unused", _resnet_name(cfg), len(missing), len(unexpected))
    _freeze_stages(resnet, cfg["MODEL.BACKBONE.FREEZE_AT"])
    c2 = resnet.inplanes // 8  # res2's output channels: 64 (ResNet-18/34) or 256 (ResNet-50+)
    return BackboneWithFPN(
        resnet,
        return_layers={f"layer{i + 1}": name for i, name in enumerate(FEATURE_NAMES)},
        in_channels_list=[c2 * 2**i for i in range(4)],
        out_channels=cfg["MODEL.FPN.OUT_CHANNELS"],
        extra_blocks=LastLevelMaxPool(),
        norm_layer=_head_norm(cfg["MODEL.FPN.NORM"]),
    )


def _freeze_stages(resnet: nn.Module, freeze_at: int) -> None:
    """detectron2's FREEZE_AT: 1 freezes the stem, 2 also res2, ... 5 every stage."""
    stages = [("conv1", "bn1"), ("layer1",), ("layer2",), ("layer3",), ("layer4",)]
    for names in stages[:freeze_at]:
        for name in names:
            module = getattr(resnet, name)
            module.requires_grad_(False)
            setattr(resnet, name, _frozen_norms(module))


def _frozen_norms(module: nn.Module) -> nn.Module:
    """``module`` with every BatchNorm2d replaced by a FrozenBatchNorm2d holding its statistics."""
    if isinstance(module, nn.BatchNorm2d):
        frozen = FrozenBatchNorm2d(module.num_features, eps=module.eps)
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(frozen, name).copy_(getattr(module, name).detach())
        return frozen
    for name, child in module.named_children():
        setattr(module, name, _frozen_norms(child))
    return module


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def _imagenet_state(weights: torchvision.models.WeightsEnum, name: str) -> dict:
    """torchvision's ImageNet backbone weights, from its cache or downloaded; EngineError if neither works."""
    try:
        with _socket_timeout(DOWNLOAD_TIMEOUT_S):
            return weights.get_state_dict(progress=True, check_hash=True)
    except (OSError, RuntimeError, ValueError) as e:
        cache = Path(torch.hub.get_dir()) / "checkpoints"
        raise EngineError(
            f"cannot get torchvision's ImageNet {name} weights ({type(e).__name__}: {e}); "
            f"put {Path(weights.url).name} (from {weights.url}) into {cache}, "
            f"or set MODEL.WEIGHTS to a local checkpoint path, or MODEL.WEIGHTS '' for random init"
        ) from None


def _read_state_dict(path: Path) -> dict:
    """The model weights of a .pth file: one of our checkpoints ("model" key) or a plain state dict."""
    if not path.is_file():
        raise EngineError(f"MODEL.WEIGHTS: no such file {path}")
    if path.suffix == ".pkl":
        raise EngineError(f"{path}: detectron2 .pkl weights are for the detectron2 engine; the torchvision engine reads .pth")
    try:
        state = runs.torch_load(path)
    except Exception as e:  # torch raises many types for a bad file, some with paragraphs of advice
        raise EngineError(f"cannot read weights from {path}: not a PyTorch weights file, or damaged "
                          f"({runs.load_error_text(e)})") from None
    state = state.get("model", state) if isinstance(state, dict) else None
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise EngineError(f"{path} holds neither a checkpoint with a 'model' state dict nor a state dict")
    return state


def _load_weights(model: nn.Module, path: Path, strict: bool) -> None:
    """Load a checkpoint or state dict into ``model``.

    strict: every tensor must match (prediction from a run). Otherwise tensors of another shape
    are skipped, and a bare ResNet state dict (ImageNet .pth) goes into the backbone.
    """
    state = _read_state_dict(path)
    if not strict and not any(k.startswith("backbone.") for k in state):
        state = {f"backbone.body.{k}": v for k, v in state.items() if not k.startswith("fc.")}
    own = model.state_dict()
    mismatched = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if strict and mismatched:
        raise EngineError(f"{path} does not fit this model ({mismatched[0]}: {tuple(state[mismatched[0]].shape)} "
                          f"vs {tuple(own[mismatched[0]].shape)}); was it trained with another config?")
    missing, unexpected = model.load_state_dict({k: v for k, v in state.items() if k not in mismatched}, strict=False)
    if strict and (missing or unexpected):
        raise EngineError(f"{path} does not fit this model: {len(missing)} tensors missing, {len(unexpected)} unexpected")
    loaded = len(state) - len(unexpected) - len(mismatched)
    if not loaded:
        raise EngineError(f"{path}: none of its tensors fit this torchvision model (weights of another engine or model?)")
    if not strict:
        log.warning("loaded %s: %d tensors; %d missing, %d unexpected, %d skipped for their shape",
                    path, loaded, len(missing), len(unexpected), len(mismatched))


# ---------------------------------------------------------------------------- device, DDP


@dataclass
class _Dist:
    """This process's place in a (possibly single-process) run."""

    device: torch.device
    rank: int = 0
    world: int = 1
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _device(cfg: Config) -> torch.device:
    """MODEL.DEVICE, checked: a CUDA device on a machine without CUDA is an error, not a fallback."""
    try:
        device = torch.device(cfg["MODEL.DEVICE"])
    except RuntimeError:
        raise ConfigError(f"MODEL.DEVICE {cfg['MODEL.DEVICE']!r} is not a torch device (use cuda or cpu)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise EngineError("MODEL.DEVICE is cuda but CUDA is not available here: pass MODEL.DEVICE cpu to run on the CPU")
    return device


def _setup_distributed(cfg: Config) -> _Dist:
    """Join the torchrun process group when WORLD_SIZE > 1 (NCCL on CUDA, gloo on CPU)."""
    device = _device(cfg)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist(device)
    if cfg["SOLVER.IMS_PER_BATCH"] % world:
        raise ConfigError(f"SOLVER.IMS_PER_BATCH {cfg['SOLVER.IMS_PER_BATCH']} (the total batch) must divide among {world} processes")
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return _Dist(device, dist.get_rank(), dist.get_world_size(), owns)


def _cudnn_benchmark(cfg: Config, device: torch.device) -> None:
    """CUDNN_BENCHMARK on CUDA: cuDNN times its convolution algorithms per input shape and keeps the
    fastest (multi-scale training meets a handful of shapes); the CPU has no cuDNN."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = bool(cfg["CUDNN_BENCHMARK"])


def _to_device(model: nn.Module, device: torch.device) -> nn.Module:
    """The model on its device, conv weights channels-last (NHWC): faster convolutions with cuDNN
    and oneDNN alike (about 15% per training iteration of configs/demo.yaml on a 2-core CPU)."""
    return model.to(device).to(memory_format=torch.channels_last)


# ------------------------------------------------------------------------------ prediction


def _image_tensor(image: np.ndarray, device: torch.device) -> torch.Tensor:
    """HxWx3 uint8 RGB -> 3xHxW float 0..1 on ``device`` (converted after the copy: 4x less traffic)."""
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).to(device, non_blocking=True).float().div_(255)


def _amp_dtype(cfg: Config, device: torch.device) -> torch.dtype | None:
    """The autocast dtype SOLVER.AMP.ENABLED gives on ``device`` (AMP_DTYPES), or None: full precision."""
    if not cfg["SOLVER.AMP.ENABLED"]:
        return None
    dtype = AMP_DTYPES.get(device.type)
    if dtype is None:
        base.warn_once(f"SOLVER.AMP.ENABLED: no mixed precision on {device.type}; running in full precision")
    return dtype


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Mixed precision in ``dtype`` on ``device`` (None: a no-op)."""
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def _predictor(model: nn.Module, cfg: Config, categories: list[dict], device: torch.device) -> base.Predictor:
    """A Predictor around ``model``, which the caller keeps in eval mode while using it. The model's masks
    are pasted as booleans from here on (what Instances keeps; the probabilities are never looked at)."""
    category_ids = np.array([c["id"] for c in sorted(categories, key=lambda c: c["id"])], dtype=np.int64)
    model.transform.paste_threshold = MASK_THRESHOLD
    amp = _amp_dtype(cfg, device)
    tta = {"min_sizes": cfg["TEST.AUG.MIN_SIZES"], "max_size": cfg["TEST.AUG.MAX_SIZE"], "flip": cfg["TEST.AUG.FLIP"],
           "nms_thresh": cfg["MODEL.ROI_HEADS.NMS_THRESH_TEST"],
           "detections_per_image": cfg["TEST.DETECTIONS_PER_IMAGE"]} if cfg["TEST.AUG.ENABLED"] else None

    def predict(images: list[np.ndarray]) -> list[Instances]:
        tensors = [_image_tensor(image, device) for image in images]
        with torch.inference_mode(), _autocast(device, amp):
            outputs = [torchvision_tta.predict_one(model, t, **tta) for t in tensors] if tta else model(tensors)
        return [_instances(out, image.shape[:2], category_ids) for out, image in zip(outputs, images)]

    return base.Predictor(predict, categories, cfg["MODEL.ROI_HEADS.SCORE_THRESH_TEST"], str(device))


def _binary(masks: torch.Tensor) -> torch.Tensor:
    """Pasted masks as booleans: already so when pasted with a threshold, else probability >= MASK_THRESHOLD."""
    return masks if masks.dtype == torch.bool else masks >= MASK_THRESHOLD


def _instances(out: dict[str, torch.Tensor], image_size: tuple[int, int], category_ids: np.ndarray) -> Instances:
    """torchvision's output for one image -> Instances with the data set's category ids."""
    return Instances(
        boxes=out["boxes"].float().cpu().numpy(),
        masks=_binary(out["masks"][:, 0]).cpu().numpy(),
        scores=out["scores"].float().cpu().numpy(),
        category_ids=category_ids[out["labels"].cpu().numpy() - 1],
        image_size=image_size,
    )


# ------------------------------------------------------------------------------- training data


class _TrainImages(torch.utils.data.Dataset):
    """Training samples keyed by (iteration, index): image, targets, and a horizontal flip that
    depends only on (seed, iteration, index), so any worker and any restart sees the same sample."""

    def __init__(self, split: data.Split, filter_empty: bool, flip: bool, seed: int):
        label = {cat["id"]: i + 1 for i, cat in enumerate(split.categories)}
        self.records = []  # plain data, cheap to send to worker processes
        for img in split.images:
            anns = [(a, label[a["category_id"]]) for a in split.annotations_of(img["id"]) if _usable(a)]
            if anns or not filter_empty:
                self.records.append((str(split.image_path(img)), anns))
        if not self.records:
            raise EngineError(f"{split.json_path}: no image with a usable annotation to train on")
        self.flip, self.seed = flip, seed

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: tuple[int, int]) -> tuple[int, torch.Tensor, dict[str, torch.Tensor]]:
        iteration, index = key
        path, anns = self.records[index]
        image = data.read_image(path)
        h, w = image.shape[:2]
        masks = np.stack([data.annotation_mask(a, h, w) for a, _ in anns]) if anns else np.zeros((0, h, w), bool)
        boxes = np.array([[x, y, x + bw, y + bh] for (x, y, bw, bh) in (a["bbox"] for a, _ in anns)], np.float32).reshape(-1, 4)
        if self.flip and np.random.default_rng(base.iteration_seed(self.seed, iteration, base.AUGMENT_STREAM, index)).random() < 0.5:
            image, masks = image[:, ::-1], masks[:, :, ::-1]
            boxes = np.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], axis=1)
        target = {
            "boxes": torch.from_numpy(boxes),
            "labels": torch.tensor([lab for _, lab in anns], dtype=torch.int64),
            "masks": torch.from_numpy(np.ascontiguousarray(masks, dtype=np.uint8)),
        }
        return iteration, torch.from_numpy(np.array(image)).permute(2, 0, 1), target


def _usable(ann: dict) -> bool:
    """Annotations a training target can hold: not crowd, a box of positive width and height."""
    return not ann.get("iscrowd", 0) and ann["bbox"][2] > 0 and ann["bbox"][3] > 0


def _collate(samples: list) -> tuple[int, list[torch.Tensor], list[dict]]:
    return samples[0][0], [s[1] for s in samples], [s[2] for s in samples]


# ------------------------------------------------------------------------------ optimisation


def _param_groups(cfg: Config, model: nn.Module) -> list[dict]:
    """detectron2's groups: norm weights get WEIGHT_DECAY_NORM; biases (norm biases too) get
    WEIGHT_DECAY_BIAS when set and BIAS_LR_FACTOR; every other weight WEIGHT_DECAY."""
    decay, decay_norm, decay_bias = cfg["SOLVER.WEIGHT_DECAY"], cfg["SOLVER.WEIGHT_DECAY_NORM"], cfg["SOLVER.WEIGHT_DECAY_BIAS"]
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            lr_factor, wd = 1.0, decay_norm if isinstance(module, NORM_TYPES) else decay
            if name == "bias":
                lr_factor = cfg["SOLVER.BIAS_LR_FACTOR"]
                wd = wd if decay_bias is None else decay_bias
            groups.setdefault((lr_factor, wd), []).append(param)
    return [{"params": params, "lr_factor": f, "weight_decay": wd} for (f, wd), params in groups.items()]


def _optimizer(cfg: Config, model: nn.Module) -> torch.optim.SGD:
    return torch.optim.SGD(
        _param_groups(cfg, model),
        lr=cfg["SOLVER.BASE_LR"],
        momentum=cfg["SOLVER.MOMENTUM"],
        nesterov=cfg["SOLVER.NESTEROV"],
        weight_decay=cfg["SOLVER.WEIGHT_DECAY"],
    )


def _clip_gradients(cfg: Config, optimizer: torch.optim.Optimizer) -> None:
    """SOLVER.CLIP_GRADIENTS as detectron2 applies it: "value" clamps every gradient element,
    "norm" rescales each parameter's gradient to at most CLIP_VALUE on its own."""
    params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    limit = cfg["SOLVER.CLIP_GRADIENTS.CLIP_VALUE"]
    if cfg["SOLVER.CLIP_GRADIENTS.CLIP_TYPE"] == "value":
        nn.utils.clip_grad_value_(params, limit)
    else:
        for p in params:
            nn.utils.clip_grad_norm_(p, limit, cfg["SOLVER.CLIP_GRADIENTS.NORM_TYPE"])


# ---------------------------------------------------------------------------------- the loop


class _Trainer:
    """One training run: model, optimizer and data built once, then the iteration loop."""

    def __init__(self, cfg: Config, splits: data.SplitPaths, run_dir: Path, ctx: _Dist):
        self.cfg, self.splits, self.run_dir, self.ctx = cfg, splits, run_dir, ctx
        self.seed = base.effective_seed(cfg)
        self.split = data.load_split(splits.train, check_images=False)
        self.max_iter = cfg["SOLVER.MAX_ITER"]
        self.amp = _amp_dtype(cfg, ctx.device)

    def run(self, resume: bool, progress: bool) -> dict:
        """Train from scratch or from the last checkpoint up to MAX_ITER; the final val metrics."""
        checkpoint = runs.resume_checkpoint(self.run_dir) if resume else None  # verified: falls back past damage
        start = self.build(checkpoint)
        if start < self.max_iter:
            self._loop(start, progress)
        if self.ctx.is_main and start < self.max_iter:
            runs.save_checkpoint(self.run_dir, runs.FINAL, self._state(self.max_iter - 1))
        return self._final_metrics()

    def build(self, checkpoint: Path | None = None) -> int:
        """Model (seeded initial weights, or the checkpoint's), optimizer, scaler and the net the loop
        runs (DDP under torchrun); the first iteration to run."""
        torch.manual_seed(self.seed)
        self.model = build_model(self.cfg, len(self.split.categories), load_weights=checkpoint is None)
        if self.cfg["MODEL.RESNETS.NORM"] == "SyncBN" and self.ctx.world > 1:
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.model = _to_device(self.model, self.ctx.device)
        self.optimizer = _optimizer(self.cfg, self.model)
        self.scaler = torch.amp.GradScaler(self.ctx.device.type, enabled=self.amp == torch.float16)
        start = self._restore(checkpoint) if checkpoint else 0
        self.net = self.model
        if self.ctx.world > 1:
            ids = [self.ctx.device.index] if self.ctx.device.type == "cuda" else None
            self.net = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        return start

    def _restore(self, checkpoint: Path) -> int:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state.get("scaler", {}))
        log.info("resuming from %s (iteration %d)", checkpoint, state["iteration"])
        return state["iteration"] + 1

    def _state(self, iteration: int) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(), "iteration": iteration}

    def _loader(self, start: int) -> torch.utils.data.DataLoader:
        cfg = self.cfg
        dataset = _TrainImages(self.split, cfg["DATALOADER.FILTER_EMPTY_ANNOTATIONS"], cfg["INPUT.RANDOM_FLIP"] == "horizontal", self.seed)
        sampler = base.iteration_batches(len(dataset), cfg["SOLVER.IMS_PER_BATCH"], self.seed, start, self.max_iter,
                                         self.ctx.rank, self.ctx.world)
        workers = cfg["DATALOADER.NUM_WORKERS"]
        return torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=workers, collate_fn=_collate,
                                           pin_memory=self.ctx.device.type == "cuda", persistent_workers=False,
                                           prefetch_factor=2 if workers else None)

    def _loop(self, start: int, progress: bool) -> None:
        from ..progress import Progress

        main = self.ctx.is_main
        metrics = runs.MetricsLog(self.run_dir, start) if main else None
        writer = _summary_writer(self.run_dir, start) if main else None
        bar = Progress(self.max_iter, "train", initial=start, enabled=progress and main)
        self.model.train()
        try:
            batches = iter(self._loader(start))
            for it in range(start, self.max_iter):
                tic = time.perf_counter()
                batch_it, images, targets = next(batches)
                assert batch_it == it, f"data loader is at iteration {batch_it}, the loop at {it}"
                data_time = time.perf_counter() - tic
                row = {"iteration": it, **self._step(it, images, targets)}
                row.update(time=time.perf_counter() - tic, data_time=data_time)
                self._after_step(it, row, metrics, writer)
                bar.update(**{k: v for k, v in row.items() if k.startswith("loss") or k in ("total_loss", "lr")})
                if any(k.startswith("segm/") for k in row):
                    bar.note(base.eval_line(it, row))
        finally:
            bar.close()
            if main:
                metrics.close()
                writer.close()

    def _step(self, it: int, images: list[torch.Tensor], targets: list[dict]) -> dict[str, float]:
        """One SGD step; the losses (averaged over processes) and the learning rate used."""
        device = self.ctx.device
        lr = learning_rate(self.cfg, it)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group["lr_factor"]
        torch.manual_seed(base.iteration_seed(self.seed, it, base.TORCH_STREAM, self.ctx.rank))
        images = [img.to(device, non_blocking=True).float().div_(255) for img in images]
        targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]
        with _autocast(device, self.amp):
            losses = self.net(images, targets)
        total = sum(losses.values())
        values = self._reduce(losses)
        if not all(math.isfinite(v) for v in values.values()):
            self._diverged(it, values)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        if self.cfg["SOLVER.CLIP_GRADIENTS.ENABLED"]:
            self.scaler.unscale_(self.optimizer)
            _clip_gradients(self.cfg, self.optimizer)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return {**values, "total_loss": sum(values.values()), "lr": lr}

    def _reduce(self, losses: dict[str, torch.Tensor]) -> dict[str, float]:
        """Loss values as floats, averaged over the processes of a DDP run."""
        vector = torch.stack([v.detach().float() for v in losses.values()])
        if self.ctx.world > 1:
            dist.all_reduce(vector)
            vector /= self.ctx.world
        return dict(zip(losses, vector.tolist()))

    def _diverged(self, it: int, values: dict[str, float]) -> None:
        bad = ", ".join(f"{k} = {v}" for k, v in values.items() if not math.isfinite(v))
        last = runs.last_checkpoint(self.run_dir)
        where = f"the last good checkpoint is {last}" if last else "no checkpoint was saved yet"
        raise EngineError(f"training diverged: loss became nan or inf at iteration {it} ({bad}); {where}. "
                          f"Try a lower SOLVER.BASE_LR, a longer SOLVER.WARMUP_ITERS or SOLVER.CLIP_GRADIENTS.ENABLED True")

    def _after_step(self, it: int, row: dict, metrics: runs.MetricsLog | None, writer) -> None:
        """Evaluate when due, then log the row, then checkpoint: a kill between any two leaves a
        run that resumes at the right iteration with each metrics row written once."""
        period, done = self.cfg["TEST.EVAL_PERIOD"], it + 1
        has_val = self.cfg["DATASETS.VAL_FRACTION"] > 0  # 0: trained on every image, nothing to evaluate on
        if has_val and ((period > 0 and done % period == 0) or done == self.max_iter):
            if self.ctx.is_main:
                row.update(self._evaluate())
            if self.ctx.world > 1:
                dist.barrier()
        if not self.ctx.is_main:
            return
        metrics.write(row)
        for key, value in row.items():
            if key != "iteration":
                writer.add_scalar(key, value, it)
        best = runs.best_metric(self.cfg)  # TEST.BEST_METRIC, segm/AP50 by default
        if best in row and runs.is_new_best(self.run_dir, row[best], best):
            runs.save_checkpoint(self.run_dir, runs.BEST, self._state(it), tag_last=False)
            runs.record_best(self.run_dir, it, row[best], best)
        if done % self.cfg["SOLVER.CHECKPOINT_PERIOD"] == 0:
            runs.save_checkpoint(self.run_dir, runs.checkpoint_name(it), self._state(it))

    def _evaluate(self) -> dict[str, float]:
        """Val metrics of the current weights (eval mode, test sizes), then back to training."""
        self.model.eval()
        try:
            predictor = _predictor(self.model, self.cfg, self.split.categories, self.ctx.device)
            return base.evaluate_on_split(predictor, self.splits.val)
        finally:
            self.model.train()

    def _final_metrics(self) -> dict:
        """The val metrics of the last evaluated iteration, as metrics.json recorded them."""
        if not self.ctx.is_main:
            return {}
        rows = runs.eval_rows(runs.read_metrics(self.run_dir))
        return {k: v for k, v in rows[-1].items() if k.startswith(("segm/", "bbox/"))} if rows else {}


def _summary_writer(run_dir: Path, start: int):
    """TensorBoard events in the run folder; events from ``start`` on are dropped from older files."""
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(run_dir), purge_step=start)


# -------------------------------------------------------------------------------- architecture


def _tensors(names: list[str]) -> Callable[[str, Any], list[tuple[str, torch.Tensor]]]:
    """A picker naming the tensors of a module output: a tensor, tuple of tensors or dict of tensors."""

    def pick(_stage: str, out: Any) -> list[tuple[str, torch.Tensor]]:
        values = list(out.values()) if isinstance(out, dict) else list(out) if isinstance(out, tuple) else [out]
        return list(zip(names, values))

    return pick


def _single(stage: str, out: Any) -> list[tuple[str, torch.Tensor]]:
    return [(stage, out)]


_ARCHITECTURE_STAGES: list[tuple[str, str, Callable]] = [
    ("transform", "input", lambda stage, out: [(stage, out[0].tensors)]),
    ("backbone.body.maxpool", "backbone.stem", _single),
    ("backbone.body.layer1", "backbone.res2", _single),
    ("backbone.body.layer2", "backbone.res3", _single),
    ("backbone.body.layer3", "backbone.res4", _single),
    ("backbone.body.layer4", "backbone.res5", _single),
    ("backbone.fpn", "fpn", _tensors(["fpn.p2", "fpn.p3", "fpn.p4", "fpn.p5", "fpn.p6"])),
    ("rpn", "rpn", lambda stage, out: [("rpn.proposals", out[0][0])]),
    ("roi_heads.box_roi_pool", "roi_heads.box_pooler", _single),
    ("roi_heads.box_head", "roi_heads.box_head", _single),
    ("roi_heads.box_predictor", "", _tensors(["roi_heads.box_predictor.scores", "roi_heads.box_predictor.deltas"])),
    ("roi_heads.mask_roi_pool", "roi_heads.mask_pooler", _single),
    ("roi_heads.mask_head", "roi_heads.mask_head", _single),
    ("roi_heads.mask_predictor", "roi_heads.mask_predictor", _single),
    ("", "output", lambda stage, out: [("output.boxes", out[0]["boxes"]), ("output.masks", out[0]["masks"])]),
]


# ------------------------------------------------------------------------------------ inspect


def inspect(cfg: Config, checkpoint: Path, categories: list[dict], image: np.ndarray, gt: dict | None = None,
            **options: Any) -> dict:
    """One RGB image through a checkpoint's model, every stage kept as plain data (torchvision_inspect)."""
    from . import torchvision_inspect

    return torchvision_inspect.inspect(cfg, checkpoint, categories, image, gt, **options)
