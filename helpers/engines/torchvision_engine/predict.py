"""Prediction: images in, :class:`Instances` out (the data set's category ids, boolean masks)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torchvision.ops import FrozenBatchNorm2d

from ...config import Config
from ...instances import Instances
from .. import base
from . import tta as torchvision_tta
from .device import _amp_dtype, _autocast
from .frozen_norm import conv_norm_pairs

MASK_THRESHOLD = 0.5
FOLDABLE_NORMS = (nn.BatchNorm2d, FrozenBatchNorm2d)  # fixed affine maps at inference: foldable into a conv


def fold_norms(module: nn.Module) -> nn.Module:
    """``module`` (in eval mode) with every batch norm that directly follows a convolution folded into that
    convolution's weights and bias (torch's ``fuse_conv_bn_eval``) and replaced by an identity.

    At inference a BatchNorm or FrozenBatchNorm is a per-channel affine map, so the folded model computes
    the same function (to float rounding) with one pass fewer over every backbone activation: on the
    homework config it was the second-largest op of prediction on a CPU (bench/PROFILE.md). Pairs are
    found as torchvision builds them (``frozen_norm.conv_norm_pairs``): ``convK`` followed by ``bnK`` in the ResNet stem and blocks, and a
    convolution followed by its norm inside a Sequential (the shortcut's ``downsample``, normed FPN and head
    convs). GroupNorm depends on the activations and is left as it is. Changes ``module`` in place.
    """
    if module.training:
        raise ValueError("fold_norms needs a model in eval mode")
    for child in module.children():
        fold_norms(child)
    for conv_name, norm_name in conv_norm_pairs(module):
        conv, norm = getattr(module, conv_name, None), getattr(module, norm_name, None)
        if type(conv) is nn.Conv2d and isinstance(norm, FOLDABLE_NORMS):
            setattr(module, conv_name, fuse_conv_bn_eval(conv, norm))
            setattr(module, norm_name, nn.Identity())
    return module


def _image_tensor(image: np.ndarray, device: torch.device) -> torch.Tensor:
    """HxWx3 uint8 RGB -> 3xHxW float 0..1 on ``device`` (converted after the copy: 4x less traffic)."""
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).to(device, non_blocking=True).float().div_(255)


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


