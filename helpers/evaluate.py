"""COCO metrics of results against a ground truth, computed by pycocotools' COCOeval itself.

Every number here is what ``COCOeval`` gives for the same ground truth and results (that is
what graders run): this module only loads and checks the inputs, silences pycocotools' prints
and reads its arrays. ``precision`` is COCOeval's ``eval["precision"]`` array, indexed
[IoU threshold, recall threshold, category, area range, max detections].
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Iterator
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from .errors import DataError
from .readers import load_json
from .submission import load_results
from .validate import category_names, check_coco, check_results, image_sizes, source_name

METRIC_NAMES = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]
IOU_TYPES = ("segm", "bbox")

_METRIC_MEANINGS = {
    "AP": "IoU=0.50:0.95  area=all     maxDets=100",
    "AP50": "IoU=0.50       area=all     maxDets=100",
    "AP75": "IoU=0.75       area=all     maxDets=100",
    "APs": "IoU=0.50:0.95  area=small   maxDets=100",
    "APm": "IoU=0.50:0.95  area=medium  maxDets=100",
    "APl": "IoU=0.50:0.95  area=large   maxDets=100",
    "AR1": "IoU=0.50:0.95  area=all     maxDets=1",
    "AR10": "IoU=0.50:0.95  area=all     maxDets=10",
    "AR100": "IoU=0.50:0.95  area=all     maxDets=100",
    "ARs": "IoU=0.50:0.95  area=small   maxDets=100",
    "ARm": "IoU=0.50:0.95  area=medium  maxDets=100",
    "ARl": "IoU=0.50:0.95  area=large   maxDets=100",
}
_AREA_ALL, _MAX_DETS_LAST = 0, -1  # indices into COCOeval's area ranges and maxDets

# The leaderboard's metric is mask AP at IoU 0.5 (COCOeval segm stats[1]); AP@[.5:.95] is another number
# and never goes under its name.
HEADLINE = "segm/AP50"
HEADLINE_LABEL = "mask mAP@0.5 (segm AP50)"
METRIC_LABELS = {
    "segm/AP50": HEADLINE_LABEL,
    "segm/AP": "mask AP@[.5:.95] (segm AP)",
    "segm/AP75": "mask AP@0.75 (segm AP75)",
    "bbox/AP50": "box mAP@0.5 (bbox AP50)",
    "bbox/AP": "box AP@[.5:.95] (bbox AP)",
    "bbox/AP75": "box AP@0.75 (bbox AP75)",
}


def metric_label(key: str) -> str:
    """The one name a metric key ("segm/AP50", "bbox/AP"...) goes by in tables, figures and text."""
    return METRIC_LABELS.get(key, key)


# --------------------------------------------------------------------------- public API


def evaluate(gt: Any, results: Any, iou_type: str = "segm") -> dict:
    """COCO metrics of ``results`` against ``gt``.

    gt: a COCO ground-truth JSON path, a loaded dict or a pycocotools ``COCO``.
    results: a results JSON path or a list of result dicts (the submission format).
    Returns ``{name: float}`` for :data:`METRIC_NAMES` (COCOeval's ``stats``, -1.0 where it has
    no ground truth), ``per_class`` ``{name: {"AP", "AP50"}}`` in category-id order (-1.0 for a
    class without ground truth), ``iou_type``, ``num_images`` and ``num_detections``.
    """
    ev = _run_cocoeval(gt, results, iou_type)
    with _quiet():
        ev.summarize()
    metrics: dict[str, Any] = {name: float(value) for name, value in zip(METRIC_NAMES, ev.stats, strict=True)}
    metrics["per_class"] = {
        name: {"AP": _mean_valid(precision), "AP50": _mean_valid(precision[0])}
        for name, precision in _class_precisions(ev)
    }
    metrics.update(iou_type=iou_type, num_images=len(ev.params.imgIds), num_detections=len(ev.cocoDt.anns))
    return metrics


def precision_recall(gt: Any, results: Any, iou_type: str = "segm", iou: float = 0.5) -> dict:
    """Per-class precision-recall curves at one IoU threshold (area all, 100 detections).

    Returns ``{class_name: {"recall": [...], "precision": [...], "ap": float}}``: COCO's 101
    recall thresholds and its interpolated precision at each, their mean as ``ap``. A class without
    ground truth has empty lists and ``ap`` -1.0.
    """
    ev = _run_cocoeval(gt, results, iou_type)
    t = _iou_index(ev, iou)
    recall = [float(r) for r in ev.params.recThrs]
    curves = {}
    for name, precision in _class_precisions(ev):
        ap = _mean_valid(precision[t])
        valid = ap != -1.0
        curves[name] = {"recall": recall if valid else [],
                        "precision": [float(p) for p in precision[t]] if valid else [], "ap": ap}
    return curves


def per_image_errors(gt: Any, results: Any, iou_type: str = "segm", iou: float = 0.5,
                     score_thresh: float = 0.0) -> list[dict]:
    """Per ground-truth image, how COCOeval matched detections at one IoU (area all, 100 dets).

    One dict per image: ``image_id``, ``file_name``, ``num_gt`` (non-crowd ground truth),
    ``num_det`` (detections scoring at least ``score_thresh`` among the 100 best per class),
    ``matched``, ``missed`` (ground truth left unmatched) and ``false_positives`` (detections left
    unmatched). Detections matched to crowd regions count in ``num_det`` only, as COCOeval
    ignores them. Sorted worst first: most ``missed + false_positives``, then by image id.
    """
    ev = _run_cocoeval(gt, results, iou_type)
    t = _iou_index(ev, iou)
    rows = {img_id: {"image_id": int(img_id), "file_name": ev.cocoGt.imgs[img_id].get("file_name", ""),
                     "num_gt": 0, "num_det": 0, "matched": 0, "missed": 0, "false_positives": 0}
            for img_id in ev.params.imgIds}
    all_area = ev.params.areaRng[_AREA_ALL]
    for e in ev.evalImgs:
        if e is not None and e["aRng"] == all_area:
            _add_matches(rows[e["image_id"]], e, t, score_thresh)
    for row in rows.values():
        row["missed"] = row["num_gt"] - row["matched"]
    return sorted(rows.values(), key=lambda r: (-(r["missed"] + r["false_positives"]), r["image_id"]))


def format_table(metrics: dict, title: str | None = None) -> str:
    """The 12 COCO metrics, then per-class AP and AP50, as a readable text table."""
    lines = [title or f"{metrics.get('iou_type', '')} metrics".strip()]
    if "num_images" in metrics:
        lines[0] += f" ({metrics['num_images']} images, {metrics['num_detections']} detections)"
    if metrics.get("iou_type") == "segm":
        lines.append(f"  {HEADLINE_LABEL}: {metrics['AP50']:.4f}  (the leaderboard's metric; "
                     f"{METRIC_LABELS['segm/AP']}: {metrics['AP']:.4f})")
    lines += [f"  {name:<6} {_cell(metrics[name])}   {_METRIC_MEANINGS[name]}" for name in METRIC_NAMES]
    per_class = metrics.get("per_class", {})
    if per_class:
        width = max(len(name) for name in per_class)
        lines.append(f"  {'class':<{width}}  {'AP':>6}  {'AP50':>6}")
        lines += [f"  {name:<{width}}  {_cell(v['AP'])}  {_cell(v['AP50'])}" for name, v in per_class.items()]
    if any(v == -1.0 for v in _all_values(metrics)):
        lines.append("  n/a: no ground truth in that class or area range")
    return "\n".join(lines)


# --------------------------------------------------------------------------- running COCOeval


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Swallow pycocotools' progress prints."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def _run_cocoeval(gt: Any, results: Any, iou_type: str) -> COCOeval:
    """A COCOeval of ``results`` on ``gt`` after ``evaluate()`` and ``accumulate()``.

    Inputs are deep-copied first: pycocotools writes into the dicts it is given.
    """
    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type must be one of {IOU_TYPES}, got {iou_type!r}")
    dataset = _load_ground_truth(gt, iou_type)
    detections = _load_detections(results, dataset, iou_type, source_name(gt, "the ground truth"))
    with _quiet():
        coco_gt = _coco(dataset)
        coco_dt = coco_gt.loadRes(detections) if detections else _coco(_no_detections(dataset))
        ev = COCOeval(coco_gt, coco_dt, iou_type)
        ev.evaluate()
        ev.accumulate()
    return ev


def _coco(dataset: dict) -> COCO:
    """A pycocotools COCO object over an in-memory dataset dict."""
    coco = COCO()
    coco.dataset = dataset
    coco.createIndex()
    return coco


def _no_detections(dataset: dict) -> dict:
    """What ``loadRes`` would build for zero results (it fails on an empty list itself)."""
    return {"images": list(dataset["images"]), "categories": copy.deepcopy(dataset["categories"]),
            "annotations": []}


_IMAGE_KEYS = ("id", "file_name", "height", "width")
_CATEGORY_KEYS = ("id", "name", "supercategory")
_ANNOTATION_KEYS = ("id", "image_id", "category_id", "iscrowd", "area", "bbox", "segmentation")
_RESULT_KEYS = ("image_id", "category_id", "score", "bbox", "segmentation")


def _copy(items: list[dict], keys: tuple[str, ...]) -> list[dict]:
    """Private copies of checked entries with only the keys pycocotools reads (it writes into them)."""
    return [{k: copy.deepcopy(item[k]) for k in keys if k in item} for item in items]


def _load_ground_truth(gt: Any, iou_type: str) -> dict:
    """A private copy of a ground-truth dataset, checked as validate-data checks it (image files aside)."""
    name = source_name(gt, "the ground truth")
    data = gt.dataset if isinstance(gt, COCO) else load_json(gt, DataError)
    check_coco(name, data, require_annotations=True, hint=" (a test file? evaluation needs ground truth)")
    return {"info": {},  # some pycocotools releases' loadRes read it unconditionally
            "images": _copy(data["images"], _IMAGE_KEYS), "categories": _copy(data["categories"], _CATEGORY_KEYS),
            "annotations": _copy(data["annotations"], _ANNOTATION_KEYS)}


def _load_detections(results: Any, dataset: dict, iou_type: str, gt_name: str) -> list[dict]:
    """A private copy of the results list, checked as validate-submission checks a submission.

    Every entry needs image_id, category_id and a score in [0, 1]; a 'bbox' from all when the first
    has one (loadRes reads it from all), else a compressed-RLE 'segmentation' (loadRes measures areas
    on it), and for segm evaluation a 'segmentation' anyway. Any segmentation given is checked.
    """
    name = source_name(results, "results")
    detections = load_results(results)
    with_bbox = bool(detections) and isinstance(detections[0], dict) and "bbox" in detections[0]
    check_results(name, detections, image_sizes(dataset), category_names(dataset),
                  segm=iou_type == "segm" or not with_bbox, bbox=with_bbox, reference=gt_name)
    return _copy(detections, _RESULT_KEYS)


# --------------------------------------------------------------------------- reading COCOeval's arrays


def _class_precisions(ev: COCOeval) -> Iterator[tuple[str, np.ndarray]]:
    """(class name, precision[IoU, recall]) at area all and the largest maxDets, in category-id order."""
    precision = ev.eval["precision"]
    for k, cat_id in enumerate(ev.params.catIds):
        name = str(ev.cocoGt.cats[cat_id].get("name", cat_id))
        yield name, precision[:, :, k, _AREA_ALL, _MAX_DETS_LAST]


def _mean_valid(values: np.ndarray) -> float:
    """The mean of COCOeval entries that are not -1 (absent ground truth); -1.0 when there are none."""
    valid = values[values > -1]
    return float(np.mean(valid)) if valid.size else -1.0


def _iou_index(ev: COCOeval, iou: float) -> int:
    """Index of an IoU threshold among COCOeval's (0.50, 0.55, ..., 0.95)."""
    hits = np.flatnonzero(np.isclose(ev.params.iouThrs, iou))
    if not hits.size:
        thresholds = np.round(ev.params.iouThrs, 2).tolist()
        raise ValueError(f"iou must be one of COCOeval's thresholds {thresholds}, got {iou}")
    return int(hits[0])


def _add_matches(row: dict, e: dict, t: int, score_thresh: float) -> None:
    """Add one (image, category) evaluation at IoU index ``t`` to an image's counts."""
    kept = np.asarray(e["dtScores"], dtype=float) >= score_thresh
    matched = np.asarray(e["dtMatches"][t]) > 0
    counted = kept & ~np.asarray(e["dtIgnore"][t], dtype=bool)
    row["num_gt"] += int(np.sum(np.asarray(e["gtIgnore"]) == 0))
    row["num_det"] += int(kept.sum())
    row["matched"] += int((counted & matched).sum())
    row["false_positives"] += int((counted & ~matched).sum())


# --------------------------------------------------------------------------- formatting


def _cell(value: float) -> str:
    return "   n/a" if value == -1.0 else f"{value:6.4f}"


def _all_values(metrics: dict) -> Iterator[float]:
    yield from (metrics[name] for name in METRIC_NAMES)
    for v in metrics.get("per_class", {}).values():
        yield from (v["AP"], v["AP50"])
