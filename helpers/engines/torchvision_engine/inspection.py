"""``inspect`` for the torchvision engine: one image through a trained model, stage by stage.

The model is built and loaded as :func:`helpers.engines.torchvision_engine.load_predictor` builds it, and run as
torchvision's ``GeneralizedRCNN.forward`` runs it (transform, backbone, RPN, ROI heads,
postprocess), calling each part itself so every stage's tensors can be kept. Forward hooks catch
what a part computes inside (the ResNet stages, the anchors); the RPN's own ``filter_proposals``
is called a second time with NMS switched off for the proposals before NMS. Matching uses the
RPN's own matcher (``MODEL.RPN.IOU_THRESHOLDS``, low-quality matches allowed, as in training).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torchvision.models.detection.transform import resize_boxes
from torchvision.ops import box_iou
from torchvision.ops import boxes as box_ops

from ...config import Config
from .. import inspect_record as rec
from .device import _amp_dtype, _autocast, _device, _to_device
from .model import _anchor_levels, build_model
from .predict import MASK_THRESHOLD, _image_tensor
from .weights import _load_weights

FPN_NAMES = ["p2", "p3", "p4", "p5", "p6"]
RES_NAMES = ["res2", "res3", "res4", "res5"]
NO_NMS = 1.0  # NMS at IoU 1.0 drops nothing: the proposals before NMS


def inspect(cfg: Config, checkpoint: Path, categories: list[dict], image: np.ndarray, gt: dict | None = None,
            gt_index: int = 0, num_channels: int = rec.NUM_CHANNELS, num_rois: int = rec.NUM_ROIS) -> dict:
    """The plain-data record of one RGB uint8 image through the checkpoint's model (see inspect_record)."""
    gt_boxes, gt_ids = rec.check_gt(gt, gt_index)
    device = _device(cfg)
    sorted_cats = sorted(categories, key=lambda c: c["id"])
    category_ids = np.array([c["id"] for c in sorted_cats], dtype=np.int64)
    model = build_model(cfg, len(categories), load_weights=False)
    _load_weights(model, Path(checkpoint), strict=True)
    model = _to_device(model, device).eval()
    with torch.inference_mode(), _autocast(device, _amp_dtype(cfg, device)):
        out = _run(model, _image_tensor(image, device), num_rois)
    record = _record(cfg, model, out, image, gt_boxes, gt_ids, gt_index, category_ids, num_channels)
    record["class_names"] = {int(c["id"]): c["name"] for c in sorted_cats}
    record["engine"] = "torchvision"
    record["checkpoint"] = str(checkpoint)
    return record


def _run(model, tensor: torch.Tensor, num_rois: int) -> dict:
    """GeneralizedRCNN.forward in eval mode, one part at a time, keeping what each part made."""
    caught: dict = {}
    rpn = model.rpn
    filter_proposals = rpn.filter_proposals

    def filter_twice(proposals, objectness, image_shapes, num_anchors_per_level):
        thresh, post = rpn.nms_thresh, rpn._post_nms_top_n
        rpn.nms_thresh, rpn._post_nms_top_n = NO_NMS, {k: proposals.shape[1] for k in post}
        try:
            caught["pre_nms"] = filter_proposals(proposals, objectness, image_shapes, num_anchors_per_level)
        finally:
            rpn.nms_thresh, rpn._post_nms_top_n = thresh, post
        caught["post_nms"] = filter_proposals(proposals, objectness, image_shapes, num_anchors_per_level)
        caught["anchors_per_level"] = list(num_anchors_per_level)
        return caught["post_nms"]

    hooks = [
        model.backbone.body.register_forward_hook(lambda _m, _i, o: caught.__setitem__("body", o)),
        rpn.anchor_generator.register_forward_hook(lambda _m, _i, o: caught.__setitem__("anchors", o)),
        rpn.head.register_forward_hook(lambda _m, _i, o: caught.__setitem__("objectness", o[0])),
    ]
    rpn.filter_proposals = filter_twice
    try:
        original_size = tuple(tensor.shape[-2:])
        images, _ = model.transform([tensor])
        features = model.backbone(images.tensors)
        proposals, _ = rpn(images, features)
        heads = model.roi_heads
        box_features = heads.box_head(heads.box_roi_pool(features, proposals, images.image_sizes))
        class_logits, box_regression = heads.box_predictor(box_features)
        refined = box_ops.clip_boxes_to_image(heads.box_coder.decode(box_regression, proposals), images.image_sizes[0])
        probs = torch.softmax(class_logits, -1)
        picked = torch.as_tensor(rec.top_rois(probs[:, 1:].float().cpu().numpy(), num_rois), dtype=torch.int64,
                                 device=tensor.device)
        pooled = heads.box_roi_pool(features, [proposals[0][picked]], images.image_sizes)
        roi_levels = heads.box_roi_pool.map_levels([proposals[0][picked]]) if len(picked) else torch.zeros(0)
        detections, _ = heads(features, proposals, images.image_sizes)
        raw = {k: v.clone() for k, v in detections[0].items()}
        final = model.transform.postprocess(detections, images.image_sizes, [original_size])[0]
    finally:
        del rpn.filter_proposals  # back to the class's method
        for hook in hooks:
            hook.remove()
    return {**caught, "images": images, "features": features, "proposals": proposals[0], "probs": probs,
            "refined": refined, "picked": picked, "pooled": pooled, "roi_levels": roi_levels, "raw": raw,
            "final": final, "original_size": original_size}


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy()


def _record(cfg: Config, model, out: dict, image: np.ndarray, gt_boxes, gt_ids, gt_index: int,
            category_ids: np.ndarray, num_channels: int) -> dict:
    images = out["images"]
    h, w = images.image_sizes[0]
    padded = list(images.tensors.shape[1:])
    transform = model.transform
    record = {"image": np.asarray(image, np.uint8)}
    record["input"] = rec.input_record(_np(images.tensors[0, :, :h, :w]), padded, out["original_size"],
                                       transform.image_mean, transform.image_std, 1.0, "RGB",
                                       cfg["INPUT.MIN_SIZE_TEST"], cfg["INPUT.MAX_SIZE_TEST"])
    record["backbone"] = [rec.level_record(n, _np(t[0]), num_channels)
                          for n, t in zip(RES_NAMES, out["body"].values())]
    record["fpn"] = [rec.level_record(n, _np(t[0]), num_channels)
                     for n, t in zip(FPN_NAMES, out["features"].values())]

    # anchors: torchvision's generator concatenates the levels; split them by the RPN's counts
    counts = out["anchors_per_level"]
    anchors = _np(out["anchors"][0])
    per_level = np.split(anchors, np.cumsum(counts)[:-1])
    grids = [tuple(o.shape[-2:]) for o in out["objectness"]]
    sizes, ratios = _anchor_levels(cfg)
    in_gt = None
    if gt_boxes is not None:
        in_gt = _np(resize_boxes(torch.as_tensor(gt_boxes), out["original_size"], (h, w)))
    location = rec.location_of(in_gt, gt_index, (h, w))
    strides = [(padded[1] // gh, padded[2] // gw) for gh, gw in grids]  # as torchvision's AnchorGenerator steps
    record["anchors"] = rec.anchor_record(FPN_NAMES, grids, per_level, strides, sizes, ratios, location)

    record["matching"] = None
    if in_gt is not None:
        quality = box_iou(torch.as_tensor(in_gt), torch.as_tensor(anchors))
        matched = model.rpn.proposal_matcher(quality).numpy()
        matcher = model.rpn.proposal_matcher
        labels = np.where(matched >= 0, 1, np.where(matched == matcher.BELOW_LOW_THRESHOLD, 0, -1))
        record["matching"] = rec.matching_record(anchors, rec.level_of_each(counts), FPN_NAMES, quality[gt_index].numpy(),
                                                 matched, labels, gt_index, in_gt, gt_ids, cfg["MODEL.RPN.IOU_THRESHOLDS"],
                                                 quality.max(dim=1).values.numpy())

    pre_boxes, pre_scores = out["pre_nms"]
    post_boxes, post_scores = out["post_nms"]
    record["proposals"] = rec.proposal_record(_np(pre_boxes[0]), _np(pre_scores[0]), _np(post_boxes[0]),
                                              _np(post_scores[0]), cfg["MODEL.RPN.NMS_THRESH"],
                                              cfg["MODEL.RPN.PRE_NMS_TOPK_TEST"], cfg["MODEL.RPN.POST_NMS_TOPK_TEST"],
                                              len(counts))

    probs = _np(out["probs"])
    fg = probs[:, 1:]
    best = fg.argmax(axis=1) if len(fg) else np.zeros(0, np.int64)
    refined = _np(out["refined"])  # proposals x (K + 1) x 4; class 0 is background
    record["box_head"] = {
        "proposals": _np(out["proposals"]), "scores": fg, "background": probs[:, 0],
        "best_category_id": category_ids[best], "best_score": fg.max(axis=1) if len(fg) else np.zeros(0, np.float32),
        "refined": refined[np.arange(len(best)), best + 1] if len(best) else np.zeros((0, 4), np.float32),
        "score_thresh": float(model.roi_heads.score_thresh), "nms_thresh": float(model.roi_heads.nms_thresh),
    }
    picked = out["picked"].cpu().numpy()
    pooled = _np(out["pooled"])
    level_names = FPN_NAMES[:4]
    record["roi_align"] = {
        "proposal_index": picked, "boxes": record["box_head"]["proposals"][picked],
        "features": pooled.mean(axis=1), "shape": list(pooled.shape[1:]),
        "resolution": int(cfg["MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION"]),
        "level": [level_names[int(i)] for i in out["roi_levels"].cpu().numpy().reshape(-1)],
    }

    raw, final = out["raw"], out["final"]
    det_boxes_input = _np(raw["boxes"])
    record["detections"] = {
        "boxes": _np(final["boxes"]), "scores": _np(final["scores"]),
        "category_ids": category_ids[final["labels"].cpu().numpy() - 1],
        "masks": (final["masks"][:, 0] >= MASK_THRESHOLD).cpu().numpy(), "boxes_input": det_boxes_input,
        "score_thresh": float(model.roi_heads.score_thresh), "mask_threshold": MASK_THRESHOLD,
    }
    index = rec.choose_detection(det_boxes_input, None if in_gt is None else in_gt[gt_index])
    record["mask"] = None
    if index is not None:
        pasted = _np(final["masks"][index, 0])
        record["mask"] = {
            "index": index, "probability": _np(raw["masks"][index, 0]),
            "resolution": int(raw["masks"].shape[-1]), "box_input": det_boxes_input[index],
            "box": record["detections"]["boxes"][index], "score": float(record["detections"]["scores"][index]),
            "category_id": int(record["detections"]["category_ids"][index]),
            "pasted": pasted, "binary": pasted >= MASK_THRESHOLD, "threshold": MASK_THRESHOLD,
        }
    record["gt"] = None if gt_boxes is None else {"boxes": gt_boxes, "category_ids": gt_ids, "index": int(gt_index)}
    return record
