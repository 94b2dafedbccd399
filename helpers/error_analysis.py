"""Where the mAP goes: the TIDE error breakdown, a class-confusion matrix, ``error_analysis.json``.

TIDE (Bolya et al., "TIDE: A General Toolbox for Identifying Object Detection Errors", ECCV 2020)
gives every false positive at the foreground IoU ``t_f`` (0.5) one error type, from its best
overlaps with the image's ground truth (any class ``iou_any``, same class ``iou_same``, other
classes ``iou_other``), checked in this order:

    background      iou_any < t_b (0.1): it lies on no object
    classification  iou_other >= t_f: the right place, the wrong class
    duplicate       iou_same >= t_f: the object was already taken by a higher-scoring detection
    localisation    t_b <= iou_same < t_f: the right class, a poor fit
    both            t_b <= iou_other < t_f: the wrong class and a poor fit

and ``missed`` is every ground-truth object left unmatched that no classification or
localisation error was aiming at. Each type's dAP is the mAP after an oracle fixes every error
of that type alone, minus the base mAP:

    classification  the detection takes the class of its object and becomes a true positive
    localisation    the detection takes the shape of its object and becomes a true positive
                    (both of these are suppressed instead when that object is already matched)
    both, duplicate, background   the detection is removed
    missed          the object is removed from the ground truth

Matching and AP are pycocotools' own: the true and false positives are COCOeval's at ``t_f``
(area "all", 100 detections per image and class), and the AP of the fixed detections is computed
exactly as ``COCOeval.accumulate`` does (101 recall points, classes without ground truth left
out), so the base value is pycocotools' AP50. Two choices that the paper leaves open: an object
matched in the base evaluation stays matched, so a fix aiming at it is suppressed; a class whose
every object the ``missed`` fix removed scores 1 when none of its detections is left a false
positive, else 0. (``tidecv`` 1.0.1 runs on numpy 2, but it scores classes without ground truth
as AP 0, so its base value is not pycocotools' AP50, and it needs OpenCV, pandas and seaborn.)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pycocotools.mask as mask_utils
from pycocotools.coco import COCO

from .evaluate import _coco, _iou_index, _load_detections, _load_ground_truth, _quiet, _run_cocoeval
from .io import write_json
from .submission import source_name

ERROR_TYPES = ("classification", "localisation", "both", "duplicate", "background", "missed")
BACKGROUND = "background"
_FIX_MOVES = {"classification", "localisation"}  # fixes that turn a detection into a true positive


def metric_label(iou_type: str = "segm", iou: float = 0.5) -> str:
    """The name of the base metric: ``"mask mAP@0.5 (segm AP50)"`` for masks at IoU 0.5."""
    kind = "mask" if iou_type == "segm" else "box"
    return f"{kind} mAP@{iou:g} ({iou_type} AP{round(iou * 100)})"


# --------------------------------------------------------------------------- the TIDE breakdown


def error_type(iou_same: float, iou_other: float, fg_iou: float = 0.5, bg_iou: float = 0.1) -> str:
    """The TIDE type of one false positive from its best IoU with an object of its own class
    (``iou_same``; that object already taken when >= ``fg_iou``) and of another class."""
    if max(iou_same, iou_other) < bg_iou:
        return BACKGROUND
    if iou_other >= fg_iou:
        return "classification"
    if iou_same >= fg_iou:
        return "duplicate"
    if iou_same >= bg_iou:
        return "localisation"
    return "both"


def error_breakdown(gt: Any, results: Any, iou_type: str = "segm", fg_iou: float = 0.5, bg_iou: float = 0.1,
                    top_images: int = 5) -> dict:
    """The TIDE breakdown of the mAP at ``fg_iou`` into the six error types (see the module doc).

    gt: a COCO ground-truth path, dict or ``COCO``; results: a results path or list (the
    submission format), as :func:`helpers.evaluate.evaluate` takes them.
    Returns a dict with ``metric`` (its name, e.g. "mask mAP@0.5 (segm AP50)"), ``base_map``
    (pycocotools' value), ``errors`` ``{type: {"dap", "fixed_map", "count"}}`` in
    :data:`ERROR_TYPES` order, ``all_fixed_map`` (every error fixed at once: 1.0),
    ``top_images`` ``{type: [{"image_id", "file_name", "dap", "count"}, ...]}`` (the images whose
    errors of that type alone cost the most mAP, at most ``top_images`` each, largest first),
    ``false_positives`` (one row per false positive: ``image_id``, ``category_id``, ``score``,
    ``error``, ``target_category_id``, ``iou``) and ``missed`` (``image_id``, ``category_id``,
    ``gt_id``). dAP values are fractions of 1, like the mAP.
    """
    if not 0.0 < bg_iou < fg_iou <= 1.0:
        raise ValueError(f"need 0 < bg_iou < fg_iou <= 1, got bg_iou={bg_iou}, fg_iou={fg_iou}")
    ev = _run_cocoeval(gt, results, iou_type)
    state = _State(ev, _iou_index(ev, fg_iou), iou_type, fg_iou, bg_iou)
    base = state.mean_ap(state.class_aps())
    coco_base = _coco_map(ev, state.t)
    if not np.isclose(base, coco_base, rtol=0, atol=1e-9):  # guards the re-implemented accumulate
        raise AssertionError(f"re-computed base mAP {base} differs from pycocotools' {coco_base}")
    errors, top = {}, {}
    for kind in ERROR_TYPES:
        fixed = state.mean_ap(state.class_aps({kind}))
        errors[kind] = {"dap": fixed - base, "fixed_map": fixed, "count": state.count(kind)}
        top[kind] = state.top_images(kind, base, top_images)
    return {
        "metric": metric_label(iou_type, fg_iou), "iou_type": iou_type, "fg_iou": fg_iou, "bg_iou": bg_iou,
        "base_map": coco_base, "errors": errors,
        "all_fixed_map": state.mean_ap(state.class_aps(set(ERROR_TYPES))),
        "top_images": top, "false_positives": state.fp_rows(), "missed": state.missed_rows(),
    }


def format_breakdown(breakdown: dict) -> str:
    """The breakdown as a short text table: dAP and mAP as fractions of 1, to 10 significant
    digits (so a small dAP never shows as 0)."""
    lines = [f"{breakdown['metric']}: {breakdown['base_map']:.10g}",
             f"  {'error':<15} {'dAP':>14} {'count':>6}   mAP if fixed"]
    for kind, row in breakdown["errors"].items():
        lines.append(f"  {kind:<15} {row['dap']:14.10g} {row['count']:6d}   {row['fixed_map']:.10g}")
    return "\n".join(lines)


class _State:
    """COCOeval's matches at the foreground IoU, each false positive's error and target."""

    def __init__(self, ev, t: int, iou_type: str, fg_iou: float, bg_iou: float):
        self.ev, self.t, self.iou_type = ev, t, iou_type
        self.rec_thrs = ev.params.recThrs
        self.img_index = {img_id: i for i, img_id in enumerate(ev.params.imgIds)}
        self.cat_ids = list(ev.params.catIds)
        self.dets: dict[int, dict] = {}  # dt id -> {cat, img, score, order, tp}
        self.gts: dict[int, dict] = {}   # gt id -> {cat, img, matched}
        self._collect(ev)
        self.by_img: dict[int, list[int]] = {}
        for g, row in self.gts.items():
            self.by_img.setdefault(row["img"], []).append(g)
        self.matched = {g for g, row in self.gts.items() if row["matched"]}
        self.errors: dict[int, tuple[str, int | None, float]] = {}  # dt id -> (type, target gt, iou)
        for dt_id in sorted((d for d, row in self.dets.items() if not row["tp"]), key=self._score_order):
            self.errors[dt_id] = self._classify(dt_id, fg_iou, bg_iou)
        targets = {target for kind, target, _ in self.errors.values() if kind in _FIX_MOVES}
        self.missed = [g for g, row in self.gts.items() if not row["matched"] and g not in targets]

    def _collect(self, ev) -> None:
        """Counted detections and ground truth of every class, in COCOeval's order."""
        n_img, n_area = len(ev.params.imgIds), len(ev.params.areaRng)
        order = 0
        for k, cat_id in enumerate(self.cat_ids):
            for i, img_id in enumerate(ev.params.imgIds):
                e = ev.evalImgs[k * n_area * n_img + i]  # area range 0: "all"
                if e is None:
                    continue
                for j, dt_id in enumerate(e["dtIds"]):
                    if not e["dtIgnore"][self.t][j]:  # ignored (matched to a crowd region): never counted
                        self.dets[dt_id] = {"cat": cat_id, "img": img_id, "score": float(e["dtScores"][j]),
                                            "order": order, "tp": bool(e["dtMatches"][self.t][j])}
                    order += 1
                for j, gt_id in enumerate(e["gtIds"]):
                    if not e["gtIgnore"][j]:
                        self.gts[gt_id] = {"cat": cat_id, "img": img_id, "matched": bool(e["gtMatches"][self.t][j])}

    def _score_order(self, dt_id: int) -> tuple[float, int]:
        return -self.dets[dt_id]["score"], self.dets[dt_id]["order"]

    def _classify(self, dt_id: int, fg_iou: float, bg_iou: float) -> tuple[str, int | None, float]:
        """(error type, target ground-truth id or None, its IoU) of one false positive."""
        det = self.dets[dt_id]
        gt_ids = self.by_img.get(det["img"], [])
        ious = _ious(self.ev, dt_id, gt_ids, self.iou_type)
        same = [(iou, g) for iou, g in zip(ious, gt_ids) if self.gts[g]["cat"] == det["cat"]]
        other = [(iou, g) for iou, g in zip(ious, gt_ids) if self.gts[g]["cat"] != det["cat"]]
        best_same = max(same, default=(0.0, None))
        best_other = max(other, default=(0.0, None))
        kind = error_type(best_same[0], best_other[0], fg_iou, bg_iou)
        if kind == BACKGROUND:
            return kind, None, max(best_same[0], best_other[0])
        iou, target = best_other if kind in ("classification", "both") else best_same
        return kind, target, iou

    # ----------------------------------------------------------------------- AP after fixes

    def class_aps(self, fixes: set[str] = frozenset(), image: int | None = None) -> dict[int, np.ndarray]:
        """Per class with base ground truth, COCO's 101-point precision after the given fixes
        (only those in ``image`` when given)."""
        scope = (lambda img: True) if image is None else (lambda img: img == image)
        dets = {d: dict(row) for d, row in self.dets.items()}
        used = set(self.matched)
        for dt_id in sorted(self.errors, key=self._score_order):
            kind, target, _ = self.errors[dt_id]
            if kind not in fixes or not scope(dets[dt_id]["img"]):
                continue
            if kind in _FIX_MOVES and target not in used:
                used.add(target)
                dets[dt_id].update(tp=True, cat=self.gts[target]["cat"])
            else:
                del dets[dt_id]
        removed = {g for g in self.missed if "missed" in fixes and scope(self.gts[g]["img"])}
        npig = {c: 0 for c in self.cat_ids}
        for g, row in self.gts.items():
            npig[row["cat"]] += g not in removed
        base_cats = {row["cat"] for row in self.gts.values()}
        by_cat: dict[int, list[dict]] = {c: [] for c in base_cats}
        for row in dets.values():
            by_cat.setdefault(row["cat"], []).append(row)
        return {c: self._precision(by_cat[c], npig[c]) for c in self.cat_ids if c in base_cats}

    def _precision(self, rows: list[dict], npig: int) -> np.ndarray:
        """COCOeval.accumulate's interpolated precision at its recall thresholds, for one class."""
        rows = sorted(rows, key=lambda r: (-r["score"], r["order"]))
        q = np.zeros(len(self.rec_thrs))
        if npig == 0:  # every object removed by the missed fix
            return q + float(all(r["tp"] for r in rows))
        if not rows:
            return q
        tp = np.cumsum([r["tp"] for r in rows], dtype=float)
        fp = np.cumsum([not r["tp"] for r in rows], dtype=float)
        recall = tp / npig
        precision = np.maximum.accumulate((tp / (fp + tp + np.spacing(1)))[::-1])[::-1]
        idx = np.searchsorted(recall, self.rec_thrs, side="left")
        valid = idx < len(rows)
        q[valid] = precision[idx[valid]]
        return q

    @staticmethod
    def mean_ap(aps: dict[int, np.ndarray]) -> float:
        """The mean over classes, as COCOeval's summarize takes it (-1.0 without any class)."""
        return float(np.mean(np.concatenate(list(aps.values())))) if aps else -1.0

    # ----------------------------------------------------------------------- reports

    def count(self, kind: str) -> int:
        if kind == "missed":
            return len(self.missed)
        return sum(1 for k, _, _ in self.errors.values() if k == kind)

    def _images_with(self, kind: str) -> dict[int, int]:
        counts: dict[int, int] = {}
        if kind == "missed":
            imgs = [self.gts[g]["img"] for g in self.missed]
        else:
            imgs = [self.dets[d]["img"] for d, (k, _, _) in self.errors.items() if k == kind]
        for img in imgs:
            counts[img] = counts.get(img, 0) + 1
        return counts

    def top_images(self, kind: str, base: float, limit: int) -> list[dict]:
        rows = []
        for img, n in self._images_with(kind).items():
            dap = self.mean_ap(self.class_aps({kind}, image=img)) - base
            rows.append({"image_id": int(img), "file_name": self.ev.cocoGt.imgs[img].get("file_name", ""),
                         "dap": dap, "count": n})
        rows.sort(key=lambda r: (-r["dap"], -r["count"], r["image_id"]))
        return rows[:limit]

    def fp_rows(self) -> list[dict]:
        rows = []
        for dt_id in sorted(self.errors, key=self._score_order):
            kind, target, iou = self.errors[dt_id]
            det = self.dets[dt_id]
            rows.append({"image_id": int(det["img"]), "category_id": int(det["cat"]), "score": det["score"],
                         "error": kind, "target_category_id": None if target is None else int(self.gts[target]["cat"]),
                         "iou": float(iou)})
        return rows

    def missed_rows(self) -> list[dict]:
        return [{"image_id": int(self.gts[g]["img"]), "category_id": int(self.gts[g]["cat"]), "gt_id": int(g)}
                for g in sorted(self.missed)]


def _coco_map(ev, t: int) -> float:
    """pycocotools' own mAP at IoU index ``t`` (area all, 100 detections): stats[1] for t = 0."""
    precision = ev.eval["precision"][t, :, :, 0, -1]
    valid = precision[precision > -1]
    return float(np.mean(valid)) if valid.size else -1.0


def _geometry(coco: COCO, ann: dict, iou_type: str) -> Any:
    return coco.annToRLE(ann) if iou_type == "segm" else ann["bbox"]


def _ious(ev, dt_id: int, gt_ids: list[int], iou_type: str) -> list[float]:
    """IoU of one detection with each listed ground-truth object (no crowd rule)."""
    if not gt_ids:
        return []
    det = _geometry(ev.cocoDt, ev.cocoDt.anns[dt_id], iou_type)
    gts = [_geometry(ev.cocoGt, ev.cocoGt.anns[g], iou_type) for g in gt_ids]
    return [float(v) for v in np.asarray(mask_utils.iou([det], gts, [0] * len(gts))).ravel()]


# --------------------------------------------------------------------------- confusion matrix


def confusion_matrix(gt: Any, results: Any, iou_type: str = "segm", iou: float = 0.5,
                     score_thresh: float = 0.5) -> dict:
    """Ground-truth class (rows) against predicted class (columns) for detections scoring at
    least ``score_thresh``, with a ``background`` row (detections on no object: false positives)
    and a ``background`` column (objects no detection found: missed).

    Per image, detections in descending score first take an unmatched object of their own class
    (highest IoU >= ``iou``, as COCOeval matches); those left then take any unmatched object at
    IoU >= ``iou``, whatever its class: an off-diagonal cell is a classification confusion.
    Crowd regions are left out. Returns ``{"labels": [class names..., "background"],
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


# --------------------------------------------------------------------------- the record


def write_error_analysis(path: str | os.PathLike, breakdown: dict, confusion: dict | None = None) -> Path:
    """Write ``error_analysis.json`` atomically: the metric's name, the base mAP, the six error
    types (dAP, mAP if fixed, count), the top images per type and the confusion matrix.

    The per-detection rows stay out (they are recomputed from the results file in seconds)."""
    record = {
        "metric": breakdown["metric"], "base_map": breakdown["base_map"], "iou_type": breakdown["iou_type"],
        "fg_iou": breakdown["fg_iou"], "bg_iou": breakdown["bg_iou"],
        "method": "TIDE (Bolya et al., ECCV 2020): dAP = mAP with that error type fixed by an oracle - base mAP",
        "errors": breakdown["errors"], "all_fixed_map": breakdown["all_fixed_map"],
        "top_images": breakdown["top_images"], "confusion": confusion,
    }
    return write_json(path, record, indent=1)
