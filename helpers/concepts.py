"""Tiny worked examples of the course's concepts, computed, never typed in.

Each example shows the arithmetic step by step and, where a library does the same job, the
library's answer beside it (pycocotools for IoU, RLE and AP), so a notebook can print both:

    box_iou_example, mask_iou_example        IoU of two boxes, of two masks
    anchors_per_level                        anchors per FPN level for a config and input size
    learning_rate, lr_schedule, plot_lr_schedule   warm-up and steps of WarmupMultiStepLR
    weight_decay_groups, shrink_factor       the decay of each parameter group, (1 - lr*lambda)^T
    optimizer_groups                         the groups a real torch optimizer holds
    rle_by_hand, rle_example                 run-length counting in column-major order vs pycocotools
    precision_recall_at_ranks, coco_ap, ap_by_iou   PR at each rank, COCO's 101-point AP, AP50 vs AP
    plot_pr_example                          those ranks, the interpolated curve and its AP
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pycocotools.mask as mask_utils
from matplotlib.figure import Figure

from .schedule import learning_rate  # noqa: F401  (the schedule the engines train with)
from .config import Config

# FPN levels of the R-FPN backbone (res2..res5 at strides 4..32, p6 max-pooled from p5) as
# detectron2 and torchvision build them; each level takes one entry of ANCHOR_GENERATOR.SIZES.
FPN_LEVELS = ("p2", "p3", "p4", "p5", "p6")
FPN_STRIDES = (4, 8, 16, 32, 64)
SIZE_DIVISIBILITY = 32  # both engines pad the batch to a multiple of 32 pixels
COCO_IOUS = tuple(float(t) for t in np.linspace(0.5, 0.95, 10))
COCO_RECALLS = np.linspace(0.0, 1.0, 101)
AREA_SMALL, AREA_MEDIUM = 32 ** 2, 96 ** 2  # COCO's mask-area buckets, in pixels


# --------------------------------------------------------------------------- IoU


def box_iou_example(box_a: Sequence[float], box_b: Sequence[float]) -> dict:
    """IoU of two ``(x1, y1, x2, y2)`` boxes step by step, and pycocotools' value for the same boxes.

    Returns ``intersection_box`` (None when they do not overlap), ``intersection``, ``area_a``,
    ``area_b``, ``union`` (= area_a + area_b - intersection), ``iou`` and ``iou_pycocotools``.
    """
    ax1, ay1, ax2, ay2 = (float(v) for v in box_a)
    bx1, by1, bx2, by2 = (float(v) for v in box_b)
    ix1, iy1, ix2, iy2 = max(ax1, bx1), max(ay1, by1), min(ax2, bx2), min(ay2, by2)
    iw, ih = max(0.0, ix2 - ix1), max(0.0, iy2 - iy1)
    inter = iw * ih
    area_a, area_b = (ax2 - ax1) * (ay2 - ay1), (bx2 - bx1) * (by2 - by1)
    union = area_a + area_b - inter
    library = mask_utils.iou([[ax1, ay1, ax2 - ax1, ay2 - ay1]], [[bx1, by1, bx2 - bx1, by2 - by1]], [0])
    return {"box_a": [ax1, ay1, ax2, ay2], "box_b": [bx1, by1, bx2, by2],
            "intersection_box": [ix1, iy1, ix2, iy2] if inter > 0 else None,
            "intersection": inter, "area_a": area_a, "area_b": area_b, "union": union,
            "iou": inter / union if union > 0 else 0.0, "iou_pycocotools": float(np.asarray(library).ravel()[0])}


def box_iou(box_a: Sequence[float], box_b: Sequence[float]) -> float:
    """Intersection over union of two ``(x1, y1, x2, y2)`` boxes."""
    return box_iou_example(box_a, box_b)["iou"]


def mask_iou_example(mask_a: np.ndarray, mask_b: np.ndarray) -> dict:
    """IoU of two same-size binary masks by counting pixels, and pycocotools' value on their RLEs."""
    a, b = np.asarray(mask_a) != 0, np.asarray(mask_b) != 0
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"need two HxW masks of one size, got {a.shape} and {b.shape}")
    inter, union = int(np.logical_and(a, b).sum()), int(np.logical_or(a, b).sum())
    rles = mask_utils.encode(np.asfortranarray(np.stack([a, b], axis=2).astype(np.uint8)))
    library = float(np.asarray(mask_utils.iou([rles[0]], [rles[1]], [0])).ravel()[0])
    return {"area_a": int(a.sum()), "area_b": int(b.sum()), "intersection": inter, "union": union,
            "iou": inter / union if union else 0.0, "iou_pycocotools": library}


def area_bucket(area: float) -> str:
    """COCO's size bucket of a mask area: small below 32², large from 96², else medium."""
    return "small" if area < AREA_SMALL else "medium" if area < AREA_MEDIUM else "large"


# --------------------------------------------------------------------------- anchors


def resized_input_size(height: int, width: int, min_size: int, max_size: int) -> tuple[int, int]:
    """The image size after resizing the short side to ``min_size`` without the long side passing
    ``max_size`` (detectron2's ResizeShortestEdge rounding; torchvision may differ by a pixel)."""
    scale = min_size / min(height, width)
    if max(height, width) * scale > max_size:
        scale = max_size / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def anchors_per_level(cfg: Config, input_size: tuple[int, int] | None = None) -> list[dict]:
    """Per FPN level: its stride, the anchor sizes and aspect ratios the config gives it, anchors
    per location (sizes x ratios) and, for a network input of ``input_size`` (h, w, after the
    resize), the feature-map size (input padded to a multiple of 32, divided by the stride) and
    the level's anchor count.

    Reads ``MODEL.ANCHOR_GENERATOR.SIZES`` and ``ASPECT_RATIOS`` (one entry broadcast to every
    level, as detectron2 does).
    """
    sizes, ratios = cfg["MODEL.ANCHOR_GENERATOR.SIZES"], cfg["MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS"]
    if len(sizes) != len(FPN_LEVELS) or len(ratios) not in (1, len(FPN_LEVELS)):
        raise ValueError(f"expected {len(FPN_LEVELS)} anchor sizes and 1 or {len(FPN_LEVELS)} ratio lists, "
                         f"got {len(sizes)} and {len(ratios)}")
    rows = []
    padded = None if input_size is None else tuple(math.ceil(v / SIZE_DIVISIBILITY) * SIZE_DIVISIBILITY
                                                   for v in input_size)
    for k, (level, stride) in enumerate(zip(FPN_LEVELS, FPN_STRIDES)):
        level_ratios = ratios[0] if len(ratios) == 1 else ratios[k]
        row = {"level": level, "stride": stride, "sizes": list(sizes[k]), "aspect_ratios": list(level_ratios),
               "anchors_per_location": len(sizes[k]) * len(level_ratios)}
        if padded is not None:
            feature = tuple(math.ceil(v / stride) for v in padded)
            row.update(feature_size=list(feature), anchors=feature[0] * feature[1] * row["anchors_per_location"])
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- learning rate and weight decay


def lr_schedule(cfg: Config, iterations: Sequence[int] | None = None) -> dict:
    """The learning rate at each iteration (every one up to ``SOLVER.MAX_ITER`` by default, at
    most 2 000 evenly spaced points plus the warm-up end and each step)."""
    max_iter = cfg["SOLVER.MAX_ITER"]
    if iterations is None:
        marks = {0, max_iter - 1, cfg["SOLVER.WARMUP_ITERS"]}
        marks |= {s for s in cfg["SOLVER.STEPS"]} | {s - 1 for s in cfg["SOLVER.STEPS"]}
        grid = np.linspace(0, max_iter - 1, num=min(max_iter, 2000)).round().astype(int).tolist()
        iterations = sorted(i for i in set(grid) | marks if 0 <= i < max_iter)
    return {"iteration": list(iterations), "lr": [learning_rate(cfg, i) for i in iterations],
            "warmup_iters": cfg["SOLVER.WARMUP_ITERS"], "steps": [s for s in cfg["SOLVER.STEPS"] if s < max_iter],
            "base_lr": cfg["SOLVER.BASE_LR"]}


def plot_lr_schedule(cfg: Config) -> Figure:
    """The learning rate over the run, with the end of the warm-up and each step marked."""
    schedule = lr_schedule(cfg)
    fig, ax = plt.subplots(figsize=(7.5, 3.0), layout="constrained")
    plt.close(fig)
    ax.plot(schedule["iteration"], schedule["lr"], color="#1f77b4")
    ax.axvline(schedule["warmup_iters"], color="#ff7f0e", linestyle="--",
               label=f"warm-up ends ({schedule['warmup_iters']} iterations)")
    for k, step in enumerate(schedule["steps"]):
        ax.axvline(step, color="#2ca02c", linestyle=":", label="step: x GAMMA" if k == 0 else None)
    ax.set_xlabel("iteration")
    ax.set_ylabel("learning rate")
    ax.set_title(f"WarmupMultiStepLR: BASE_LR {schedule['base_lr']:g}, steps {schedule['steps']}", fontsize=9)
    ax.legend(fontsize=8)
    return fig


def weight_decay_groups(cfg: Config) -> dict[str, float]:
    """The weight decay each parameter group gets, as detectron2 (and our torchvision engine)
    build the optimizer: conv/linear weights ``WEIGHT_DECAY``, norm weights ``WEIGHT_DECAY_NORM``,
    every bias ``WEIGHT_DECAY_BIAS`` when set, else its module's value."""
    decay, norm, bias = cfg["SOLVER.WEIGHT_DECAY"], cfg["SOLVER.WEIGHT_DECAY_NORM"], cfg["SOLVER.WEIGHT_DECAY_BIAS"]
    return {"weights": decay, "biases": decay if bias is None else bias,
            "norm weights": norm, "norm biases": norm if bias is None else bias}


def optimizer_groups(optimizer: Any) -> list[dict]:
    """What each parameter group of a torch optimizer holds: its ``weight_decay``, ``lr`` (and
    ``lr_factor`` when the engine sets one), the number of tensors and of values in it."""
    rows = []
    for group in optimizer.param_groups:
        params = list(group["params"])
        row = {"weight_decay": float(group.get("weight_decay", 0.0)), "lr": float(group["lr"]),
               "tensors": len(params), "values": int(sum(p.numel() for p in params))}
        if "lr_factor" in group:
            row["lr_factor"] = float(group["lr_factor"])
        rows.append(row)
    return rows


def shrink_factor(lr: float, weight_decay: float, steps: int) -> float:
    """What SGD's decay alone leaves of a weight after ``steps`` steps: ``(1 - lr * weight_decay) ** steps``
    (each step subtracts ``lr * weight_decay * w``)."""
    return (1.0 - lr * weight_decay) ** steps


# --------------------------------------------------------------------------- RLE


def rle_by_hand(mask: np.ndarray) -> list[int]:
    """COCO's uncompressed RLE counts of a binary mask, counted by hand: read the pixels column by
    column (column-major, top to bottom, then left to right) and write the length of each run,
    starting with a background run (0 when the first pixel is foreground)."""
    pixels = (np.asarray(mask) != 0).ravel(order="F")
    runs, current, length = [], False, 0
    for value in pixels:
        if value == current:
            length += 1
        else:
            runs.append(length)
            current, length = bool(value), 1
    runs.append(length)
    return runs


def rle_example(mask: np.ndarray) -> dict:
    """A small mask's RLE by hand beside pycocotools': ``column_major`` (the pixel order),
    ``runs`` (by hand), ``runs_row_major`` (the classic mistake), ``counts`` (pycocotools'
    compressed string of the mask), ``counts_of_runs`` (pycocotools compressing the hand-made
    runs) and ``agree`` (the two strings are equal)."""
    mask = (np.asarray(mask) != 0).astype(np.uint8)
    height, width = mask.shape
    runs = rle_by_hand(mask)
    encoded = mask_utils.encode(np.asfortranarray(mask))
    from_runs = mask_utils.frPyObjects({"size": [height, width], "counts": runs}, height, width)
    return {"mask": mask.tolist(), "column_major": mask.ravel(order="F").tolist(), "runs": runs,
            "runs_row_major": rle_by_hand(mask.T), "counts": encoded["counts"].decode("ascii"),
            "counts_of_runs": from_runs["counts"].decode("ascii"),
            "agree": encoded["counts"] == from_runs["counts"]}


# --------------------------------------------------------------------------- precision, recall, AP


def precision_recall_at_ranks(is_tp: Sequence[bool], num_gt: int) -> list[dict]:
    """Precision and recall after each detection of one class, detections in descending score:
    rank k (1-based), true and false positives so far, precision = TP / k, recall = TP / num_gt."""
    if num_gt <= 0:
        raise ValueError(f"num_gt must be positive, got {num_gt}")
    rows, tp = [], 0
    for k, hit in enumerate(is_tp, start=1):
        tp += bool(hit)
        rows.append({"rank": k, "tp": tp, "fp": k - tp, "precision": tp / k, "recall": tp / num_gt})
    return rows


def coco_ap(is_tp: Sequence[bool], num_gt: int) -> float:
    """COCO's AP of a ranked list: the precision made non-increasing from the right, read at 101
    recall points 0, 0.01, ..., 1 (0 beyond the last recall reached), averaged."""
    rows = precision_recall_at_ranks(is_tp, num_gt)
    if not rows:
        return 0.0
    precision = np.maximum.accumulate(np.array([r["precision"] for r in rows])[::-1])[::-1]
    recall = np.array([r["recall"] for r in rows])
    idx = np.searchsorted(recall, COCO_RECALLS, side="left")
    return float(np.mean([precision[i] if i < len(rows) else 0.0 for i in idx]))


def ap_by_iou(scores: Sequence[float], ious: Sequence[float], num_gt: int,
              thresholds: Sequence[float] = COCO_IOUS) -> dict[str, Any]:
    """AP50, AP75 and AP@[.5:.95] of one class's detections, each given its score and its IoU with
    the object it aims at (every detection at a different object; 0 for none).

    A detection is a true positive at threshold t when its IoU >= t: stricter thresholds turn
    loose detections into false positives, so AP@[.5:.95], the mean over the 10 thresholds, is
    never above AP50. Returns ``per_threshold`` {t: AP}, ``AP50``, ``AP75`` and ``AP``.
    """
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    per = {round(t, 2): coco_ap([ious[i] >= min(t, 1 - 1e-10) for i in order], num_gt)  # COCOeval's test
           for t in thresholds}
    return {"per_threshold": per, "AP50": per.get(0.5), "AP75": per.get(0.75), "AP": float(np.mean(list(per.values())))}


def plot_pr_example(is_tp: Sequence[bool], num_gt: int) -> Figure:
    """One class's ranked detections as precision-recall points, the curve COCO interpolates
    from them (precision made non-increasing) and its AP, the mean of that curve at 101 recalls."""
    rows = precision_recall_at_ranks(is_tp, num_gt)
    fig, ax = plt.subplots(figsize=(5.0, 3.6), layout="constrained")
    plt.close(fig)
    recall = [0.0] + [r["recall"] for r in rows]
    precision = [r["precision"] for r in rows]
    envelope = list(np.maximum.accumulate(np.array(precision)[::-1])[::-1]) if rows else []
    ax.step(recall, [envelope[0] if envelope else 0.0] + envelope, where="pre", color="#1f77b4",
            label="interpolated (what COCO reads)")
    colors = ["#2ca02c" if r["tp"] > (rows[k - 1]["tp"] if k else 0) else "#d62728" for k, r in enumerate(rows)]
    ax.scatter(recall[1:], precision, c=colors, zorder=3, label="after each detection (green: TP, red: FP)")
    for r in rows:
        ax.annotate(str(r["rank"]), (r["recall"], r["precision"]), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel(f"recall (true positives / {num_gt} objects)")
    ax.set_ylabel("precision (true positives / detections)")
    ax.set_title(f"AP = {coco_ap(is_tp, num_gt):.4g} (mean precision at recall 0, 0.01, ..., 1)", fontsize=9)
    ax.legend(fontsize=7, loc="lower left")
    return fig


# --------------------------------------------------------------------------- loss terms

# What each of Mask R-CNN's five losses trains, under both engines' names (torchvision, detectron2).
LOSS_TERMS = {
    "loss_objectness": "RPN: is there an object at this anchor? (binary cross-entropy over sampled anchors)",
    "loss_rpn_cls": "RPN: is there an object at this anchor? (binary cross-entropy over sampled anchors)",
    "loss_rpn_box_reg": "RPN: the box offsets from positive anchors to their objects (smooth L1)",
    "loss_rpn_loc": "RPN: the box offsets from positive anchors to their objects (L1)",
    "loss_classifier": "box head: which of the classes, or background, each sampled proposal is (cross-entropy)",
    "loss_cls": "box head: which of the classes, or background, each sampled proposal is (cross-entropy)",
    "loss_box_reg": "box head: the refinement of each positive proposal's box for its class (smooth L1)",
    "loss_mask": "mask head: each positive proposal's 28x28 mask of its class, pixel by pixel (binary cross-entropy)",
}


def loss_terms(rows: Sequence[dict], window: int = 10) -> list[dict]:
    """For each loss in a run's metrics rows: what it trains, and its mean over the first and the
    last ``window`` iterations (how much it fell)."""
    keys = [k for k in (rows[0] if rows else {}) if k.startswith("loss")]
    out = []
    for key in keys:
        values = [float(r[key]) for r in rows if key in r]
        head, tail = values[:window], values[-window:]
        out.append({"loss": key, "trains": LOSS_TERMS.get(key, "?"), "first": sum(head) / len(head),
                    "last": sum(tail) / len(tail)})
    return out
