"""The grader's file: masks <-> compressed RLE, the submission writer and its validator.

A submission is a JSON list with one entry per predicted instance::

    {"image_id": 914, "category_id": 15, "score": 0.93,
     "segmentation": {"size": [333, 500], "counts": "<compressed RLE as a str>"}}

``image_id`` and ``category_id`` come from ``test.json``; ``size`` is that image's
``[height, width]``; ``counts`` is what ``pycocotools.mask.encode`` gives for the mask in
column-major order, decoded to ``str``. :func:`validate_submission` checks every entry before
the grader (pycocotools' ``COCO.loadRes`` + ``COCOeval``) reads it.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np
import pycocotools.mask as mask_utils

from .errors import DataError, SubmissionError
from .instances import Instances
from .io import write_json
from .masks import mask_to_rle, masks_to_rles, rle_problem, rle_run_lengths, rle_to_mask  # noqa: F401 (re-exported)
from .readers import load_json
from .validate import (category_names, check_coco, check_results, image_sizes, json_type,  # noqa: F401
                       results_list, source_name)

RESULT_KEYS = ("image_id", "category_id", "segmentation", "score")
MAX_DETS = 100  # COCOeval keeps this many highest-scoring detections per image and class

# --------------------------------------------------------------------------- writing


def instances_to_results(image_id: int, inst: Instances) -> list[dict]:
    """One submission entry per instance of one image, plain JSON-serialisable Python values."""
    rles = masks_to_rles(inst.masks)
    return [
        {"image_id": int(image_id), "category_id": int(cat), "segmentation": rle, "score": float(score)}
        for cat, rle, score in zip(inst.category_ids, rles, inst.scores, strict=True)
    ]


def write_submission(path: str | os.PathLike, results: Iterable[dict]) -> Path:
    """Write results as a submission JSON list, atomically; returns the path."""
    return write_json(path, list(results))


# --------------------------------------------------------------------------- reading


def load_results(source: Any) -> list:
    """A results / submission list from a path or an in-memory list; SubmissionError otherwise."""
    return results_list(load_json(source, SubmissionError), source_name(source, "results"))


def results_to_instances(results: Iterable[dict], split) -> dict[int, Instances]:
    """Group results by image back into :class:`Instances` (boxes from the masks), one per image
    of ``split`` (a :class:`helpers.data.Split`); images without results get empty instances."""
    by_image: dict[int, list[dict]] = {img["id"]: [] for img in split.images}
    for r in results:
        by_image.setdefault(int(r["image_id"]), []).append(r)
    out = {}
    for img in split.images:
        rows = sorted(by_image[img["id"]], key=itemgetter("score"), reverse=True)
        size = (img["height"], img["width"])
        if not rows:
            out[img["id"]] = Instances.empty(size)
            continue
        rles = [r["segmentation"] for r in rows]
        x, y, w, h = np.asarray(mask_utils.toBbox([{**rle, "counts": rle["counts"].encode()} for rle in rles])).T
        out[img["id"]] = Instances(
            boxes=np.stack([x, y, x + w, y + h], axis=1),
            masks=np.stack([rle_to_mask(rle) for rle in rles]),
            scores=[r["score"] for r in rows],
            category_ids=[r["category_id"] for r in rows],
            image_size=size,
        )
    return out


def load_test_file(test_json: Any) -> tuple[dict[int, tuple[int, int]], dict[int, str]]:
    """Image sizes ``{id: (h, w)}`` and category names ``{id: name}`` of a test.json-like file, after
    checking it as validate-data does (image files aside): a broken test file is named, not the submission."""
    coco = load_json(test_json, DataError)
    check_coco(source_name(test_json, "test json"), coco, require_annotations=False)
    return image_sizes(coco), category_names(coco)


# --------------------------------------------------------------------------- validation


def validate_submission(test_json: Any, submission: Any) -> dict:
    """Check a submission against test.json (each a path or already loaded); return a summary.

    The first problem found raises a one-line :class:`SubmissionError` naming the entry index and
    the key. The summary holds counts, the score range and ``warnings`` (no detections, images
    without detections, more than :data:`MAX_DETS` per image and class, extra keys).
    """
    sizes, categories = load_test_file(test_json)
    results = load_results(submission)
    check_results(source_name(submission, "submission"), results, sizes, categories, segm=True)
    return _summarize(results, sizes, categories)


def _summarize(results: list[dict], sizes: dict[int, tuple[int, int]], categories: dict[int, str]) -> dict:
    """Counts, score range and warnings of a submission already known to be valid."""
    per_class = Counter(entry["category_id"] for entry in results)
    per_image_class = Counter((entry["image_id"], entry["category_id"]) for entry in results)
    covered = {entry["image_id"] for entry in results}
    scores = [float(entry["score"]) for entry in results]
    extra = sorted({key for entry in results for key in entry} - set(RESULT_KEYS))
    summary = {
        "detections": len(results),
        "images_covered": len(covered),
        "images_total": len(sizes),
        "per_class": {cat_name: per_class.get(cat_id, 0) for cat_id, cat_name in categories.items()},
        "score_min": min(scores, default=None),
        "score_max": max(scores, default=None),
        "max_per_image_and_class": max(per_image_class.values(), default=0),
        "extra_keys": extra,
    }
    summary["warnings"] = _warnings(summary)
    return summary


def _warnings(summary: dict) -> list[str]:
    """Things worth a look in a valid submission."""
    warnings = []
    if summary["detections"] == 0:
        warnings.append("0 detections: the grader will score this submission 0")
    elif summary["images_covered"] < summary["images_total"]:
        missing = summary["images_total"] - summary["images_covered"]
        warnings.append(f"{missing} of {summary['images_total']} images have no detections")
    if summary["max_per_image_and_class"] > MAX_DETS:
        warnings.append(f"up to {summary['max_per_image_and_class']} detections of one class in one image: "
                        f"COCOeval scores only the {MAX_DETS} highest-scoring")
    if summary["extra_keys"]:
        note = " (with 'bbox', pycocotools takes box areas for APs/APm/APl)" if "bbox" in summary["extra_keys"] else ""
        warnings.append(f"extra keys {summary['extra_keys']}: the grader reads {list(RESULT_KEYS)}{note}")
    return warnings


def format_summary(summary: dict) -> str:
    """A readable multi-line report of :func:`validate_submission`'s summary."""
    lines = [f"valid submission: {summary['detections']} detections on "
             f"{summary['images_covered']} of {summary['images_total']} images"]
    if summary["detections"]:
        lines.append(f"scores: {summary['score_min']:.4f} .. {summary['score_max']:.4f}")
    width = max((len(name) for name in summary["per_class"]), default=0)
    lines.append("detections per class:")
    lines += [f"  {name:<{width}}  {count:>6}" for name, count in summary["per_class"].items()]
    lines += [f"warning: {w}" for w in summary["warnings"]]
    return "\n".join(lines)
