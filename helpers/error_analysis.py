"""Where the mAP goes: the TIDE error breakdown, its conclusions and ``error_analysis.json``.

TIDE (Bolya et al., "TIDE: A General Toolbox for Identifying Object Detection Errors", ECCV 2020)
gives every false positive at the foreground IoU ``t_f`` (0.5) one error type, from its best
overlaps with the image's ground truth (any class ``iou_any``, same class ``iou_same``, other
classes ``iou_other``), checked in this order:

    background      iou_any < t_b (0.1): it lies on no object
    localisation    t_b <= iou_same < t_f: the right class, a poor fit
    classification  iou_other >= t_f: the right place, the wrong class
    duplicate       iou_same >= t_f: the object was already taken by a higher-scoring detection
    both            otherwise (t_b <= iou_other < t_f): the wrong class and a poor fit

(the order of the authors' ``tidecv`` 1.0.1, which gives the same dAPs on test cases where every
class has ground truth)

and ``missed`` is every ground-truth object left unmatched that no classification or
localisation error was aiming at. Each type's dAP is the mAP after an oracle fixes every error
of that type alone, minus the base mAP:

    classification  the detection takes the class of its object and becomes a true positive
    localisation    the detection takes the shape of its object and becomes a true positive
                    (only the highest-scoring classification or localisation error aiming at an
                    object left unmatched is fixed; the others aiming at it are removed)
    both, duplicate, background   the detection is removed
    missed          the object is removed from the ground truth

Matching and AP are pycocotools' own: the true and false positives are COCOeval's at ``t_f``
(area "all", 100 detections per image and class), and the AP of the fixed detections is computed
exactly as ``COCOeval.accumulate`` does (101 recall points, classes without ground truth left
out), so the base value is pycocotools' AP50. An object matched in the base evaluation stays
matched (a fix aiming at it removes the detection); a class whose every object the ``missed``
fix removed scores 1 when none of its detections is left a false positive, else 0.

Why not ``tidecv`` itself: 1.0.1 (2020) runs on numpy 2, but it scores a class without ground
truth as AP 0, so its base value is not pycocotools' AP50 (0.518 instead of 0.777 on
``tests/fixtures/eval``), and it needs OpenCV, pandas and seaborn.

The class-confusion matrix is :mod:`helpers.confusion`; the figures are :mod:`helpers.plots_errors`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pycocotools.mask as mask_utils
from pycocotools.coco import COCO

from .evaluate import _iou_index, _run_cocoeval
from .io import write_json


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
    if bg_iou <= iou_same < fg_iou:
        return "localisation"
    if iou_other >= fg_iou:
        return "classification"
    if iou_same >= fg_iou:
        return "duplicate"
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
        self._index()

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

    def _index(self) -> None:
        """What every AP recomputation reuses: errors in score order (all, and per image),
        each class's counted detections in ranking order, its object count and base precision."""
        self.error_order = sorted(self.errors, key=self._score_order)
        self.errors_by_img: dict[int, list[int]] = {}
        for dt_id in self.error_order:
            self.errors_by_img.setdefault(self.dets[dt_id]["img"], []).append(dt_id)
        self.base_cats = [c for c in self.cat_ids if any(row["cat"] == c for row in self.gts.values())]
        self.npig = {c: 0 for c in self.cat_ids}
        for row in self.gts.values():
            self.npig[row["cat"]] += 1
        self.rows_by_cat: dict[int, list[tuple[float, int, bool, int]]] = {c: [] for c in self.cat_ids}
        for dt_id, row in self.dets.items():
            self.rows_by_cat[row["cat"]].append((-row["score"], row["order"], row["tp"], dt_id))
        for rows in self.rows_by_cat.values():
            rows.sort()
        self.base_q = {c: self._precision(self.rows_by_cat[c], self.npig[c]) for c in self.base_cats}
        self.fixer: dict[int, int] = {}  # unmatched object -> the highest-scoring error a fix may turn into its TP
        for dt_id in self.error_order:
            kind, target, _ = self.errors[dt_id]
            if kind in _FIX_MOVES and target not in self.matched:
                self.fixer.setdefault(target, dt_id)

    def class_aps(self, fixes: set[str] = frozenset(), image: int | None = None) -> dict[int, np.ndarray]:
        """Per class with base ground truth, COCO's 101-point precision after the given fixes
        (only those in ``image`` when given); classes the fixes do not touch keep their base."""
        changes: dict[int, int | None] = {}  # dt id -> the class it is a true positive of now, or None: removed
        for dt_id in self.error_order if image is None else self.errors_by_img.get(image, []):
            kind, target, _ = self.errors[dt_id]
            if kind in fixes:
                fixed = kind in _FIX_MOVES and self.fixer.get(target) == dt_id
                changes[dt_id] = self.gts[target]["cat"] if fixed else None
        removed = {c: 0 for c in self.cat_ids}
        if "missed" in fixes:
            for g in self.missed:
                if image is None or self.gts[g]["img"] == image:
                    removed[self.gts[g]["cat"]] += 1
        touched = {self.dets[d]["cat"] for d in changes} | {c for c in changes.values() if c is not None}
        touched |= {c for c, n in removed.items() if n}
        aps = dict(self.base_q)
        for c in touched.intersection(aps):
            rows = [r for r in self.rows_by_cat[c] if r[3] not in changes]
            rows += [(-self.dets[d]["score"], self.dets[d]["order"], True, d) for d, cat in changes.items() if cat == c]
            aps[c] = self._precision(sorted(rows), self.npig[c] - removed[c])
        return aps

    def _precision(self, rows: list[tuple[float, int, bool, int]], npig: int) -> np.ndarray:
        """COCOeval.accumulate's interpolated precision at its recall thresholds, for one class;
        ``rows`` are (-score, order, is_tp, dt id) in ranking order."""
        q = np.zeros(len(self.rec_thrs))
        if npig == 0:  # every object removed by the missed fix
            return q + float(all(r[2] for r in rows))
        if not rows:
            return q
        hits = np.array([r[2] for r in rows], dtype=bool)
        tp = np.cumsum(hits, dtype=float)
        fp = np.cumsum(~hits, dtype=float)
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


# --------------------------------------------------------------------------- conclusions and the record

_POINTS_AT = {  # what each error type usually points at (TIDE's reading of it)
    "classification": "the classifier: objects found but named wrong (see the confusion matrix)",
    "localisation": "the box and mask heads: the right object, fitted too loosely for the IoU threshold",
    "both": "detections near an object of another class: often clutter or overlapping objects",
    "duplicate": "test-time NMS: more than one detection per object survives (MODEL.ROI_HEADS.NMS_THRESH_TEST)",
    "background": "false alarms on no object, ranked above true detections",
    "missed": "recall: objects no detection covers at all (proposals, small or occluded objects, the score threshold)",
}


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def conclusions(breakdown: dict, confusion: dict | None = None) -> list[str]:
    """Sentences that follow from the numbers: the gap, the error types that cost most, those
    absent, the most frequent confusion and the image that costs most (values unrounded: 4
    significant digits never show a non-zero as 0)."""
    base, errors = breakdown["base_map"], breakdown["errors"]
    ranked = sorted(errors, key=lambda k: -errors[k]["dap"])
    lines = [f"{breakdown['metric']} is {base:.4g}: {1 - base:.4g} below a perfect 1."]
    costly = [k for k in ranked if errors[k]["dap"] > 0]
    if costly:
        first = costly[0]
        lines.append(f"Fixing {first} errors alone would add the most: dAP {errors[first]['dap']:.4g} "
                     f"({_plural(errors[first]['count'], 'error')}). It points at {_POINTS_AT[first]}.")
        if len(costly) > 1:
            rest = ", ".join(f"{k} {errors[k]['dap']:.4g}" for k in costly[1:3])
            lines.append(f"Next: {rest}. The dAPs do not add up to the gap: each is measured with only its "
                         "own type fixed.")
        top = breakdown.get("top_images", {}).get(first) or []
        if top:
            lines.append(f"Image {top[0]['image_id']} ({top[0]['file_name']}) costs the most {first} dAP: "
                         f"{top[0]['dap']:.4g} from {_plural(top[0]['count'], 'error')}.")
    else:
        lines.append("No error type costs any mAP.")
    absent = [k for k in ERROR_TYPES if errors[k]["count"] == 0]
    if absent:
        lines.append(f"No {', '.join(absent)} errors.")
    if confusion is not None:
        matrix, labels = np.asarray(confusion["matrix"]), confusion["labels"]
        n = len(labels) - 1
        off = [(int(matrix[i, j]), labels[i], labels[j]) for i in range(n) for j in range(n) if i != j and matrix[i, j]]
        if off:
            count, truth, pred = max(off, key=lambda t: (t[0], -labels.index(t[1]), -labels.index(t[2])))
            lines.append(f"The most frequent confusion: {truth} detected as {pred} ({_plural(count, 'time')}, scores ≥ "
                         f"{confusion['score_thresh']:g}).")
        else:
            lines.append(f"No object was detected as another class at score ≥ {confusion['score_thresh']:g}.")
    return lines




def write_error_analysis(path: str | os.PathLike, breakdown: dict, confusion: dict | None = None) -> Path:
    """Write ``error_analysis.json`` atomically: the metric's name, the base mAP, the six error
    types (dAP, mAP if fixed, count), the top images per type, the confusion matrix (from
    :func:`helpers.confusion.confusion_matrix`) and the :func:`conclusions`.

    The per-detection rows stay out (they are recomputed from the results file in seconds)."""
    record = {
        "metric": breakdown["metric"], "base_map": breakdown["base_map"], "iou_type": breakdown["iou_type"],
        "fg_iou": breakdown["fg_iou"], "bg_iou": breakdown["bg_iou"],
        "method": "TIDE (Bolya et al., ECCV 2020): dAP = mAP with that error type fixed by an oracle - base mAP",
        "errors": breakdown["errors"], "all_fixed_map": breakdown["all_fixed_map"],
        "top_images": breakdown["top_images"], "confusion": confusion,
        "conclusions": conclusions(breakdown, confusion),
    }
    return write_json(path, record, indent=1)
