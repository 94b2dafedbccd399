"""The engine-neutral part of ``inspect``: numpy in, the plain-data record out.

Both engines run their own model and hand the tensors of each stage (as numpy arrays) to these
functions, so the record has the same keys, units and conventions whichever engine made it:

- boxes are XYXY pixels; every stage before the final detections is in the coordinates of the
  model's input (the resized image), the detections and the pasted mask in the original image's;
- class scores are the foreground classes in category-id order, background apart;
- anchor labels are 1 (positive), 0 (negative), -1 (ignored), as the RPN's matcher assigns them.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

NUM_CHANNELS = 4      # feature channels shown per level
NUM_ROIS = 4          # proposals whose RoIAlign crops are kept
NUM_NEAR_NEGATIVES = 24  # the negatives that overlap the object most


def level_record(name: str, feature: np.ndarray, num_channels: int = NUM_CHANNELS) -> dict:
    """One feature map (C x H x W) of level ``res<k>`` or ``p<k>``: its shape, stride (2**k), the
    ``num_channels`` channels of largest spatial spread (the most structured ones) and the mean
    absolute activation over all channels."""
    feature = np.asarray(feature, dtype=np.float32)
    c, h, w = feature.shape
    spread = feature.reshape(c, -1).std(axis=1)
    index = np.sort(np.argsort(-spread, kind="stable")[:num_channels])
    return {"name": name, "shape": [int(c), int(h), int(w)], "stride": 2 ** int(name[-1]),
            "channel_index": [int(i) for i in index], "channels": feature[index].copy(),
            "mean_abs": np.abs(feature).mean(axis=0)}


def display_image(tensor: np.ndarray, mean: Sequence[float], std: Sequence[float], value_range: float,
                  channel_order: str) -> np.ndarray:
    """The normalised input (3 x h x w, the model's channel order) back to an RGB uint8 image."""
    chw = tensor * np.asarray(std, np.float32)[:, None, None] + np.asarray(mean, np.float32)[:, None, None]
    if channel_order == "BGR":
        chw = chw[::-1]
    return np.clip(np.rint(chw.transpose(1, 2, 0) * (255.0 / value_range)), 0, 255).astype(np.uint8)


def input_record(tensor: np.ndarray, padded_shape: Sequence[int], original_hw: Sequence[int], mean, std,
                 value_range: float, channel_order: str, min_size: int, max_size: int) -> dict:
    """The model's input: the normalised tensor (unpadded), its size, padding and the resize scale."""
    tensor = np.asarray(tensor, np.float32)
    h, w = tensor.shape[1:]
    return {
        "tensor": tensor, "image": display_image(tensor, mean, std, value_range, channel_order),
        "size": (int(h), int(w)), "padded_shape": [int(v) for v in padded_shape],
        "original_size": (int(original_hw[0]), int(original_hw[1])),
        "scale": (h / original_hw[0], w / original_hw[1]),
        "channel_order": channel_order, "pixel_mean": [float(v) for v in mean], "pixel_std": [float(v) for v in std],
        "value_range": float(value_range), "min_size_test": int(min_size), "max_size_test": int(max_size),
        "channel_mean": tensor.reshape(3, -1).mean(axis=1), "channel_std": tensor.reshape(3, -1).std(axis=1),
    }


def anchor_record(names: Sequence[str], grids: Sequence[Sequence[int]], anchors: Sequence[np.ndarray],
                  strides: Sequence[Sequence[int]], sizes: Sequence[Sequence[float]], ratios: Sequence[Sequence[float]],
                  location_xy: Sequence[float]) -> dict:
    """Anchors per level: grid, count, the anchors at the grid cell nearest ``location_xy`` (input
    pixels) and every anchor centre. ``anchors[l]`` is (H*W*A) x 4 in location-major order, as both
    libraries generate them; ``strides[l]`` is the (y, x) step between locations the library used
    (torchvision divides the padded input by the grid, so a coarse level's step can differ from 2**k)."""
    levels = []
    for name, (h, w), boxes, stride, size, ratio in zip(names, grids, anchors, strides, sizes, ratios):
        boxes = np.asarray(boxes, np.float32)
        per_location = boxes.shape[0] // (h * w)
        row = int(np.clip(round(location_xy[1] / stride[0]), 0, h - 1))
        col = int(np.clip(round(location_xy[0] / stride[1]), 0, w - 1))
        start = (row * w + col) * per_location
        centres = boxes.reshape(h * w, per_location, 4).mean(axis=1)
        levels.append({
            "name": name, "stride": (int(stride[0]), int(stride[1])), "grid": (int(h), int(w)), "per_location": int(per_location),
            "count": int(boxes.shape[0]), "sizes": [float(s) for s in size], "aspect_ratios": [float(r) for r in ratio],
            "location": (row, col), "at_location": boxes[start:start + per_location].copy(),
            "centers": np.stack([(centres[:, 0] + centres[:, 2]) / 2, (centres[:, 1] + centres[:, 3]) / 2], axis=1),
        })
    return {"levels": levels, "total": int(sum(lv["count"] for lv in levels)),
            "per_location": levels[0]["per_location"], "location_xy": (float(location_xy[0]), float(location_xy[1]))}


def matching_record(anchors: np.ndarray, level_of_anchor: np.ndarray, level_names: Sequence[str], iou: np.ndarray,
                    matched: np.ndarray, labels: np.ndarray, gt_index: int, gt_boxes: np.ndarray,
                    gt_category_ids: Sequence[int], thresholds: Sequence[float], gt_best_iou: np.ndarray,
                    num_near_negatives: int = NUM_NEAR_NEGATIVES) -> dict:
    """The anchors the RPN's matcher assigns to ground-truth object ``gt_index`` (all objects of the
    image compete, as in training).

    ``iou``: IoU of every anchor with object ``gt_index``; ``gt_best_iou``: each object's best IoU with
    any anchor; ``matched``: the object each anchor is
    matched to; ``labels``: 1 / 0 / -1 per anchor as the matcher assigned them (before sampling).
    Positives below the foreground threshold come from the matcher's low-quality rule: an object's
    best anchors are positive whatever their IoU.
    """
    positive = np.flatnonzero((labels == 1) & (matched == gt_index))
    negative = labels == 0
    near = np.flatnonzero(negative & (iou > 0))
    near = near[np.argsort(-iou[near], kind="stable")[:num_near_negatives]]
    bg, fg = (float(t) for t in thresholds)
    return {
        "gt_index": int(gt_index), "gt_box": np.asarray(gt_boxes[gt_index], np.float32),
        "gt_boxes": np.asarray(gt_boxes, np.float32), "gt_category_id": int(gt_category_ids[gt_index]),
        "thresholds": (bg, fg),
        "positive": anchors[positive].copy(), "positive_iou": iou[positive].copy(),
        "positive_level": [level_names[i] for i in level_of_anchor[positive]],
        "low_quality": iou[positive] < fg,
        "best_iou": float(iou.max()) if iou.size else 0.0, "gt_best_iou": np.asarray(gt_best_iou, np.float32),
        "positive_count": int(positive.size),
        "positive_count_all": int((labels == 1).sum()),
        "negative_count": int(negative.sum()), "ignored_count": int((labels == -1).sum()),
        "near_negative": anchors[near].copy(), "near_negative_iou": iou[near].copy(),
    }


def level_of_each(counts: Sequence[int]) -> np.ndarray:
    """The level index of every anchor of the concatenated levels."""
    return np.repeat(np.arange(len(counts)), counts)


def proposal_record(pre_boxes, pre_scores, post_boxes, post_scores, nms_thresh: float, pre_topk: int,
                    post_topk: int, num_levels: int) -> dict:
    """RPN proposals before NMS (the top PRE_NMS_TOPK_TEST per level, clipped) and after it (at most
    POST_NMS_TOPK_TEST), with their objectness probabilities."""
    return {"pre_nms": np.asarray(pre_boxes, np.float32), "pre_nms_scores": np.asarray(pre_scores, np.float32),
            "post_nms": np.asarray(post_boxes, np.float32), "post_nms_scores": np.asarray(post_scores, np.float32),
            "pre_nms_count": int(len(pre_boxes)), "post_nms_count": int(len(post_boxes)),
            "nms_thresh": float(nms_thresh), "pre_nms_topk": int(pre_topk), "post_nms_topk": int(post_topk),
            "num_levels": int(num_levels)}


def top_rois(foreground_scores: np.ndarray, num_rois: int = NUM_ROIS) -> np.ndarray:
    """The proposals the box head is surest hold an object (highest foreground class probability)."""
    best = foreground_scores.max(axis=1) if foreground_scores.size else np.zeros(0)
    return np.argsort(-best, kind="stable")[:num_rois]


def choose_detection(boxes_input: np.ndarray, gt_box: np.ndarray | None) -> int | None:
    """The detection whose box overlaps the chosen object most (else the top-scoring one); None if none."""
    if not len(boxes_input):
        return None
    if gt_box is None:
        return 0
    iou = box_iou_np(boxes_input, gt_box[None])[:, 0]
    return int(np.argmax(iou)) if iou.max() > 0 else 0


def box_iou_np(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` with every box in ``b`` (XYXY)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = lambda x: np.prod(np.clip(x[:, 2:] - x[:, :2], 0, None), axis=1)  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def location_of(gt_boxes: np.ndarray | None, gt_index: int, input_hw: Sequence[int]) -> tuple[float, float]:
    """Where the anchors are shown: the chosen object's centre, else the image's (input pixels, x, y)."""
    if gt_boxes is not None and len(gt_boxes):
        x0, y0, x1, y1 = gt_boxes[gt_index]
        return (x0 + x1) / 2, (y0 + y1) / 2
    return input_hw[1] / 2, input_hw[0] / 2


def check_gt(gt: dict | None, gt_index: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The ground truth as (boxes N x 4 XYXY in original pixels, category ids), checked."""
    from ..errors import DataError

    if gt is None:
        return None, None
    boxes = np.asarray(gt["boxes"], np.float32).reshape(-1, 4)
    ids = np.asarray(gt["category_ids"], np.int64).reshape(-1)
    if len(boxes) != len(ids):
        raise DataError(f"inspect: {len(boxes)} ground-truth boxes but {len(ids)} category ids")
    if not len(boxes):
        return None, None
    if not 0 <= gt_index < len(boxes):
        raise DataError(f"inspect: object {gt_index} does not exist; the image has {len(boxes)} annotated objects")
    return boxes, ids
