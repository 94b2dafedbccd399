"""The model: detectron2's Mask R-CNN ResNet-FPN built from torchvision's detection parts (see the package
docstring for how each config key maps), and the input transform that resizes and pastes for it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.rpn import RPNHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from ...config import IMAGENET, Config
from ...errors import ConfigError
from .paste import paste_masks
from .roi_align import ThreadedMultiScaleRoIAlign
from .weights import _imagenet_state, _imagenet_weights, _load_weights, _resnet_name

log = logging.getLogger(__name__)

IMAGENET_MEAN = [0.485, 0.456, 0.406]  # what torchvision's ImageNet weights were trained with (RGB, 0..1)
IMAGENET_STD = [0.229, 0.224, 0.225]
NUM_LEVELS = 5  # FPN levels p2..p6, one anchor size each
FEATURE_NAMES = ["0", "1", "2", "3"]  # torchvision's names of p2..p5, the levels the ROI poolers read
GN_GROUPS = 32  # detectron2's GroupNorm
NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, FrozenBatchNorm2d)
# torchvision's block and blocks per stage (res2..res5) for each MODEL.RESNETS.DEPTH, as detectron2 builds them
RESNET_STAGES = {
    18: (BasicBlock, [2, 2, 2, 2]),
    34: (BasicBlock, [3, 4, 6, 3]),
    50: (Bottleneck, [3, 4, 6, 3]),
    101: (Bottleneck, [3, 4, 23, 3]),
    152: (Bottleneck, [3, 8, 36, 3]),
}


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
        .paste: the same pixels, one allocation per image instead of one per detection."""
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
        rpn_anchor_generator=_Float32Anchors(sizes, ratios),
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
        box_roi_pool=ThreadedMultiScaleRoIAlign(FEATURE_NAMES, box_res, cfg["MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO"]),
        box_head=box_head,
        box_predictor=_BoxPredictor(box_dim, num_classes + 1, cfg["MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG"]),
        box_score_thresh=cfg["MODEL.ROI_HEADS.SCORE_THRESH_TEST"],
        box_nms_thresh=cfg["MODEL.ROI_HEADS.NMS_THRESH_TEST"],
        box_detections_per_img=cfg["TEST.DETECTIONS_PER_IMAGE"],
        box_fg_iou_thresh=roi_iou,
        box_bg_iou_thresh=roi_iou,
        box_batch_size_per_image=cfg["MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE"],
        box_positive_fraction=cfg["MODEL.ROI_HEADS.POSITIVE_FRACTION"],
        mask_roi_pool=ThreadedMultiScaleRoIAlign(FEATURE_NAMES, mask_res, cfg["MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO"]),
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


class _Float32Anchors(AnchorGenerator):
    """torchvision's AnchorGenerator, with the anchors always in float32.

    torchvision makes the anchors in the feature maps' dtype. Under autocast that is bfloat16 (float16 on
    CUDA). bfloat16 keeps 8 significant bits, so an anchor coordinate of an 800x1333 input lands on a multiple
    of 4 or 8 pixels. That moves the anchors' IoU with the ground truth, the regression targets and the
    decoded proposals: on the homework config at 800 px it changed the first step's loss_rpn_box_reg from
    0.849 to 0.380. detectron2 keeps its anchors in float32. Only the feature maps' shapes matter here, so
    they are handed on as float32 views of one element, and nothing is copied."""

    def forward(self, image_list, feature_maps: list[torch.Tensor]) -> list[torch.Tensor]:
        shapes = [torch.zeros((), dtype=torch.float32, device=f.device).expand(f.shape) for f in feature_maps]
        return super().forward(image_list, shapes)


class _RPNHead(RPNHead):
    """torchvision's RPN head (same modules and weights) with its two 1x1 convs run as one, and float32 outputs.

    One conv: objectness (A channels) and box deltas (4A) read the same 256-channel map, and on the
    largest level (p2) a 1x1 conv with so few outputs is bound by reading that map. Concatenating the two
    weights (A + 4A rows, a few KB) reads it once: forward and backward of both took 99 ms on a
    2x256x200x272 channels-last map, 48 ms as one (2-core CPU).

    float32: under autocast the convs run in bfloat16/float16, and torchvision decodes boxes in the
    dtype of the deltas: proposals and detections would be rounded to a few pixels (bfloat16 keeps 8
    significant bits: steps of 2 px at 256..512). In float32 they are decoded, matched and NMS-ed as
    without AMP; the box and mask predictors do the same."""

    def forward(self, x: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        weight = torch.cat([self.cls_logits.weight, self.bbox_pred.weight])
        bias = torch.cat([self.cls_logits.bias, self.bbox_pred.bias])
        anchors = self.cls_logits.out_channels
        logits, deltas = [], []
        for feature in x:
            both = F.conv2d(self.conv(feature), weight, bias)
            logits.append(both[:, :anchors].float())
            deltas.append(both[:, anchors:].float())
        return logits, deltas


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


def _check_resnet(cfg: Config) -> None:
    """What torchvision's ResNet can build: basic blocks (R18/R34) have one group of width 64."""
    depth, width = cfg["MODEL.RESNETS.DEPTH"], cfg["MODEL.RESNETS.WIDTH_PER_GROUP"]
    if depth in (18, 34) and width != 64:
        raise ConfigError(f"MODEL.RESNETS.WIDTH_PER_GROUP = {width}: the torchvision engine builds ResNet-{depth} "
                          f"(basic blocks) only with 64; a width needs MODEL.RESNETS.DEPTH >= 50")


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


