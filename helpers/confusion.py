"""The class-confusion matrix of a set of detections: which class each object was detected as.

Ground truth in rows, prediction in columns, plus a ``background`` row (detections on no object)
and a ``background`` column (objects no detection found). Input checks and loading are
:mod:`helpers.evaluate`'s, so the same files give the same errors as ``evaluate``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pycocotools.mask as mask_utils
from pycocotools.coco import COCO

from .error_analysis import BACKGROUND, _geometry
from .errors import SubmissionError
from .evaluate import _coco, _load_detections, _load_ground_truth, _quiet
from .submission import source_name


def confusion_matrix(gt: Any, results: Any, iou_type: str = "segm", iou: float = 0.5,
                     score_thresh: float = 0.5) -> dict:
    """Ground-truth class (rows) against predicted class (columns) for detections scoring at
    least ``score_thresh``, with a ``background`` row (detections on no object: false positives)
    and a ``background`` column (objects no detection found: missed).

    Per image, detections in descending score first take an unmatched object of their own class
    (highest IoU >= ``iou``, as COCOeval matches); those left then take any unmatched object at
    IoU >= ``iou``, whatever its class: an off-diagonal cell is a classification confusion.
    Crowd regions are left out (a detection on one counts as background). Returns ``{"labels": [class names..., "background"],
    "category_ids": [...], "matrix": [[int]]}`` plus ``iou``, ``score_thresh``, ``iou_type``.
    """
    coco_gt, coco_dt = _load_pair(gt, results, iou_type)
    cat_ids = sorted(coco_gt.cats)
    col = {c: k for k, c in enumerate(cat_ids)}
    bg = len(cat_ids)
    matrix = np.zeros((bg + 1, bg + 1), dtype=int)
    for img_id in sorted(coco_gt.imgs):
        gts = [a for a in coco_gt.imgToAnns.get(img_id, []) if not a.get("iscrowd", 0)]
        dets = sorted((d for d in coco_dt.imgToAnns.get(img_id, []) if d["score"] >= score_thresh),
                      key=lambda d: -d["score"])
        ious = _iou_matrix(coco_gt, coco_dt, dets, gts, iou_type)
        taken_gt, taken_dt = set(), set()
        for same_class_only in (True, False):
            for i, d in enumerate(dets):
                if i in taken_dt:
                    continue
                choices = [(ious[i, j], -j) for j, g in enumerate(gts)
                           if j not in taken_gt and ious[i, j] >= iou
                           and (g["category_id"] == d["category_id"] or not same_class_only)]
                if choices:
                    j = -max(choices)[1]
                    taken_gt.add(j)
                    taken_dt.add(i)
                    matrix[col[gts[j]["category_id"]], col[d["category_id"]]] += 1
        for i, d in enumerate(dets):
            if i not in taken_dt:
                matrix[bg, col[d["category_id"]]] += 1
        for j, g in enumerate(gts):
            if j not in taken_gt:
                matrix[col[g["category_id"]], bg] += 1
    labels = [str(coco_gt.cats[c].get("name", c)) for c in cat_ids] + [BACKGROUND]
    return {"labels": labels, "category_ids": [int(c) for c in cat_ids], "matrix": matrix.tolist(),
            "iou": iou, "score_thresh": score_thresh, "iou_type": iou_type}


def _load_pair(gt: Any, results: Any, iou_type: str) -> tuple[COCO, COCO]:
    """Checked ground truth and results as pycocotools COCO objects (as COCOeval would load them)."""
    dataset = _load_ground_truth(gt, iou_type)
    detections = _load_detections(results, dataset, iou_type, source_name(gt, "the ground truth"))
    known = {c["id"] for c in dataset["categories"]}
    for index, det in enumerate(detections):
        if det["category_id"] not in known:
            raise SubmissionError(f"{source_name(results, 'results')}: entry {index}: category_id "
                                  f"{det['category_id']!r} is not a category of {source_name(gt, 'the ground truth')}")
    with _quiet():
        coco_gt = _coco(dataset)
        coco_dt = coco_gt.loadRes(detections) if detections else _coco({**dataset, "annotations": []})
    return coco_gt, coco_dt


def _iou_matrix(coco_gt: COCO, coco_dt: COCO, dets: list[dict], gts: list[dict], iou_type: str) -> np.ndarray:
    if not dets or not gts:
        return np.zeros((len(dets), len(gts)))
    d = [_geometry(coco_dt, a, iou_type) for a in dets]
    g = [_geometry(coco_gt, a, iou_type) for a in gts]
    return np.asarray(mask_utils.iou(d, g, [0] * len(g))).reshape(len(dets), len(gts))
