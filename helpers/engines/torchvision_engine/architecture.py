"""The model's stages and tensor shapes, for the course's architecture figure."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from ...config import Config
from .model import build_model
from .predict import _image_tensor

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


