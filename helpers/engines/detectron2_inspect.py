"""``inspect`` for the detectron2 engine: one image through a trained model, stage by stage.

The model is built and loaded as :func:`detectron2_engine.load_predictor` does, and the image goes
through the engine's own predictor (so the detections are the predictor's). Forward hooks on
detectron2's modules keep each stage: the ResNet (``backbone.bottom_up``) and FPN outputs, the
anchors, the proposals, the box predictor's scores and deltas, the ROI heads' 28x28 masks before
they are pasted. The RPN's own ``predict_proposals`` runs a second time with NMS switched off for
the proposals before NMS. Matching uses the RPN's own ``anchor_matcher`` (``MODEL.RPN.IOU_THRESHOLDS``
and ``IOU_LABELS``, low-quality matches allowed, as in training). Nothing is imported from
detectron2 until called.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..config import Config
from . import detectron2_engine as d2e
from . import inspect_record as rec

NO_NMS = 1.0  # NMS at IoU 1.0 drops nothing: the proposals before NMS


def inspect(cfg: Config, checkpoint: Path, categories: list[dict], image: np.ndarray, gt: dict | None = None,
            gt_index: int = 0, num_channels: int = rec.NUM_CHANNELS, num_rois: int = rec.NUM_ROIS) -> dict:
    """The plain-data record of one RGB uint8 image through the checkpoint's model (see inspect_record)."""
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    gt_boxes, gt_ids = rec.check_gt(gt, gt_index)
    cfg = cfg.copy()
    cfg["MODEL.WEIGHTS"] = ""  # the checkpoint holds every weight
    node = d2e.detectron2_config(cfg)
    model = build_model(node)
    DetectionCheckpointer(model).load(str(checkpoint))
    model.eval()
    sorted_cats = sorted(categories, key=lambda c: c["id"])
    category_ids = np.array([c["id"] for c in sorted_cats], dtype=np.int64)
    out = _run(model, node, categories, image)
    with torch.no_grad():
        record = _record(node, model, out, image, gt_boxes, gt_ids, gt_index, category_ids, num_channels, num_rois)
    record["class_names"] = {int(c["id"]): c["name"] for c in sorted_cats}
    record["engine"] = "detectron2"
    record["checkpoint"] = str(checkpoint)
    return record


def _run(model, node, categories: list[dict], image: np.ndarray) -> dict:
    """The engine's predictor on ``image``, with hooks keeping every stage's tensors."""
    caught: dict = {}
    rpn = model.proposal_generator
    predict_proposals = rpn.predict_proposals

    def predict_twice(anchors, logits, deltas, image_sizes):
        thresh, post = rpn.nms_thresh, dict(rpn.post_nms_topk)
        rpn.nms_thresh = NO_NMS
        rpn.post_nms_topk = {k: sum(x.shape[1] for x in logits) for k in post}
        try:
            caught["pre_nms"] = predict_proposals(anchors, logits, deltas, image_sizes)
        finally:
            rpn.nms_thresh, rpn.post_nms_topk = thresh, post
        return predict_proposals(anchors, logits, deltas, image_sizes)

    def keep(name):
        return lambda _m, _i, o: caught.__setitem__(name, o)

    def keep_heads(_m, _i, o):  # before postprocessing scales the boxes in place and pastes the masks
        inst = o[0][0]
        caught["raw"] = {"boxes": inst.pred_boxes.tensor.clone(), "masks": inst.pred_masks.clone()}

    hooks = [
        model.proposal_generator.register_forward_pre_hook(lambda _m, args: caught.__setitem__("images", args[0])),
        model.backbone.bottom_up.register_forward_hook(keep("body")),
        model.backbone.register_forward_hook(keep("features")),
        rpn.anchor_generator.register_forward_hook(keep("anchors")),
        rpn.register_forward_hook(keep("proposals")),
        model.roi_heads.box_predictor.register_forward_hook(keep("box_predictions")),
        model.roi_heads.register_forward_hook(keep_heads),
    ]
    rpn.predict_proposals = predict_twice
    try:
        caught["instances"] = d2e._predictor(model, node, categories)([image])[0]
    finally:
        del rpn.predict_proposals  # back to the class's method
        for hook in hooks:
            hook.remove()
    return caught


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy()


def _per_level(value: list, levels: int) -> list:
    return value * levels if len(value) == 1 else value


def _record(node, model, out: dict, image: np.ndarray, gt_boxes, gt_ids, gt_index: int, category_ids: np.ndarray,
            num_channels: int, num_rois: int) -> dict:
    from detectron2.modeling.poolers import assign_boxes_to_levels
    from detectron2.structures import Boxes, pairwise_iou

    images = out["images"]
    h, w = images.image_sizes[0]
    padded = list(images.tensor.shape[1:])
    record = {"image": np.asarray(image, np.uint8)}
    record["input"] = rec.input_record(_np(images.tensor[0, :, :h, :w]), padded, image.shape[:2],
                                       node.MODEL.PIXEL_MEAN, node.MODEL.PIXEL_STD, 255.0, node.INPUT.FORMAT,
                                       node.INPUT.MIN_SIZE_TEST, node.INPUT.MAX_SIZE_TEST)
    record["backbone"] = [rec.level_record(name, _np(t[0]), num_channels)
                          for name, t in out["body"].items() if name in node.MODEL.FPN.IN_FEATURES]
    record["fpn"] = [rec.level_record(name, _np(t[0]), num_channels) for name, t in out["features"].items()]

    rpn = model.proposal_generator
    names = list(rpn.in_features)
    per_level = [_np(b.tensor) for b in out["anchors"]]
    counts = [len(a) for a in per_level]
    grids = [tuple(out["features"][n].shape[-2:]) for n in names]
    sizes = _per_level(list(node.MODEL.ANCHOR_GENERATOR.SIZES), len(names))
    ratios = _per_level(list(node.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS), len(names))
    in_gt = None
    if gt_boxes is not None:  # the resize the predictor applied, on the boxes
        in_gt = (gt_boxes * np.array([w / image.shape[1], h / image.shape[0]] * 2, np.float32)).astype(np.float32)
    location = rec.location_of(in_gt, gt_index, (h, w))
    strides = [(s, s) for s in rpn.anchor_generator.strides]
    record["anchors"] = rec.anchor_record(names, grids, per_level, strides, sizes, ratios, location)

    record["matching"] = None
    anchors = np.concatenate(per_level)
    if in_gt is not None:
        quality = pairwise_iou(Boxes(torch.as_tensor(in_gt)), Boxes(torch.as_tensor(anchors)))
        matched, labels = rpn.anchor_matcher(quality)
        record["matching"] = rec.matching_record(anchors, rec.level_of_each(counts), names, _np(quality[gt_index]),
                                                 matched.numpy(), labels.numpy(), gt_index, in_gt, gt_ids,
                                                 list(node.MODEL.RPN.IOU_THRESHOLDS), _np(quality.max(dim=1).values))

    pre, post = out["pre_nms"][0], out["proposals"][0][0]
    record["proposals"] = rec.proposal_record(
        _np(pre.proposal_boxes.tensor), _np(torch.sigmoid(pre.objectness_logits)), _np(post.proposal_boxes.tensor),
        _np(torch.sigmoid(post.objectness_logits)), rpn.nms_thresh, rpn.pre_nms_topk[False], rpn.post_nms_topk[False],
        len(names))

    heads = model.roi_heads
    predictor = heads.box_predictor
    predictions = out["box_predictions"]
    probs = _np(predictor.predict_probs(predictions, [post])[0])  # K foreground classes, then background
    fg = probs[:, :-1]
    best = fg.argmax(axis=1) if len(fg) else np.zeros(0, np.int64)
    boxes = Boxes(predictor.predict_boxes(predictions, [post])[0].reshape(len(post), -1, 4)[
        torch.arange(len(post)), torch.as_tensor(best) if predictor.bbox_pred.out_features > 4 else 0])
    boxes.clip((h, w))
    record["box_head"] = {
        "proposals": _np(post.proposal_boxes.tensor), "scores": fg, "background": probs[:, -1],
        "best_category_id": category_ids[best], "best_score": fg.max(axis=1) if len(fg) else np.zeros(0, np.float32),
        "refined": _np(boxes.tensor), "score_thresh": float(predictor.test_score_thresh),
        "nms_thresh": float(predictor.test_nms_thresh),
    }
    picked = rec.top_rois(fg, num_rois)
    chosen = [Boxes(post.proposal_boxes.tensor[torch.as_tensor(picked, dtype=torch.int64)])]
    pooler = heads.box_pooler
    pooled = _np(pooler([out["features"][f] for f in heads.box_in_features], chosen))
    levels = assign_boxes_to_levels(chosen, pooler.min_level, pooler.max_level, pooler.canonical_box_size,
                                    pooler.canonical_level)
    record["roi_align"] = {
        "proposal_index": picked, "boxes": record["box_head"]["proposals"][picked],
        "features": pooled.mean(axis=1), "shape": list(pooled.shape[1:]),
        "resolution": int(node.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION),
        "level": [heads.box_in_features[int(i)] for i in levels.cpu().numpy()],
    }

    inst = out["instances"]
    raw = out["raw"]
    det_boxes_input = _np(raw["boxes"])
    record["detections"] = {
        "boxes": inst.boxes, "scores": inst.scores, "category_ids": inst.category_ids, "masks": inst.masks,
        "boxes_input": det_boxes_input, "score_thresh": float(predictor.test_score_thresh), "mask_threshold": 0.5,
    }
    index = rec.choose_detection(det_boxes_input, None if in_gt is None else in_gt[gt_index])
    record["mask"] = None
    if index is not None:
        from detectron2.layers.mask_ops import _do_paste_mask  # paste_masks_in_image's soft (unthresholded) paste

        probability = raw["masks"][index:index + 1, 0]
        pasted = _np(_do_paste_mask(probability[:, None], torch.as_tensor(inst.boxes[index:index + 1], device=probability.device),
                                    image.shape[0], image.shape[1], skip_empty=False)[0][0])
        record["mask"] = {
            "index": index, "probability": _np(probability[0]), "resolution": int(probability.shape[-1]),
            "box_input": det_boxes_input[index], "box": inst.boxes[index], "score": float(inst.scores[index]),
            "category_id": int(inst.category_ids[index]), "pasted": pasted, "binary": inst.masks[index],
            "threshold": 0.5,
        }
    record["gt"] = None if gt_boxes is None else {"boxes": gt_boxes, "category_ids": gt_ids, "index": int(gt_index)}
    return record
