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

import json
import math
import os
from collections import Counter
from collections.abc import Iterable
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np
import pycocotools.mask as mask_utils

from .errors import DataError, HelpersError, SubmissionError
from .instances import Instances
from .masks import mask_to_rle, masks_to_rles, rle_problem, rle_run_lengths, rle_to_mask  # noqa: F401 (re-exported)
from .io import write_json

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


def source_name(source: Any, default: str) -> str:
    """How messages name a file argument: its path, or ``default`` for an in-memory object."""
    return str(source) if isinstance(source, (str, os.PathLike)) else default


def load_json(source: Any, error: type[HelpersError] = HelpersError) -> Any:
    """The JSON document at a path, or ``source`` itself when it is already loaded.

    A missing, unreadable or invalid file raises ``error`` with a one-line message naming it.
    """
    if not isinstance(source, (str, os.PathLike)):
        return source
    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise error(f"{path}: cannot read it ({type(e).__name__})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise error(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None


def load_results(source: Any) -> list:
    """A results / submission list from a path or an in-memory list; SubmissionError otherwise."""
    results = load_json(source, SubmissionError)
    if not isinstance(results, list):
        raise SubmissionError(
            f"{source_name(source, 'results')}: a submission is a JSON list of detections, "
            f"got {_json_type(results)}")
    return results


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


def _json_type(value: Any) -> str:
    """The JSON name of a value's type, for messages."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"a number ({value!r})"
    names = {dict: "an object", list: "a list", str: "a string", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _load_test_file(test_json: Any) -> tuple[dict[int, tuple[int, int]], dict[int, str]]:
    """Image sizes ``{id: (h, w)}`` and category names ``{id: name}`` of a test.json-like file."""
    name = source_name(test_json, "test json")
    data = load_json(test_json, DataError)
    if not isinstance(data, dict):
        raise DataError(f"{name}: expected a COCO JSON object, got {_json_type(data)}")
    try:
        sizes = {img["id"]: (int(img["height"]), int(img["width"])) for img in data["images"]}
        categories = {cat["id"]: str(cat.get("name", cat["id"]))
                      for cat in sorted(data["categories"], key=itemgetter("id"))}
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"{name}: 'images' need id, height, width and 'categories' need id ({e!r})") from None
    return sizes, categories


# --------------------------------------------------------------------------- validation


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_box(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 4 and all(_is_number(v) and math.isfinite(v) for v in value)


def _id_list(ids: Iterable[int]) -> str:
    ids = sorted(ids)
    return f"{ids[0]}..{ids[-1]}" if ids == list(range(ids[0], ids[-1] + 1)) else ", ".join(map(str, ids))


def _entry_problem(entry: Any, sizes: dict[int, tuple[int, int]], categories: dict[int, str],
                   with_bbox: bool) -> str | None:
    """What is wrong with one submission entry, or None.

    ``with_bbox``: the first entry has a "bbox", so pycocotools' loadRes reads one from every entry.
    """
    if not isinstance(entry, dict):
        return f"must be an object, got {_json_type(entry)}"
    for key in RESULT_KEYS:
        if key not in entry:
            return f"missing key '{key}'"
    if with_bbox and not _is_box(entry.get("bbox")):
        return f"bbox must be [x, y, width, height] (entry 0 has a 'bbox', so every entry needs one), " \
               f"got {entry.get('bbox')!r}"
    image_id, category_id, score = entry["image_id"], entry["category_id"], entry["score"]
    if not _is_int(image_id):
        return f"image_id must be an integer, got {image_id!r}"
    if image_id not in sizes:
        return f"image_id {image_id} is not an image of the test file"
    if not _is_int(category_id) or category_id not in categories:
        return f"category_id {category_id!r} is not a category of the test file ({_id_list(categories)})"
    if not _is_number(score) or not math.isfinite(score):
        return f"score must be a finite number, got {score!r}"
    if not 0.0 <= score <= 1.0:
        return f"score {score!r} is outside [0, 1]"
    return _segmentation_problem(entry["segmentation"], image_id, sizes[image_id])


def _segmentation_problem(segm: Any, image_id: int, size: tuple[int, int]) -> str | None:
    """What is wrong with an entry's RLE for an image of ``size`` (h, w), or None."""
    if not isinstance(segm, dict) or "size" not in segm or "counts" not in segm:
        return f"segmentation must be an RLE object {{\"size\", \"counts\"}}, got {_json_type(segm)}"
    rle_size = segm["size"]
    if not (isinstance(rle_size, list) and len(rle_size) == 2 and all(_is_int(v) for v in rle_size)):
        return f"segmentation size must be [height, width], got {rle_size!r}"
    if tuple(rle_size) != size:
        return f"segmentation size {rle_size} differs from image {image_id}'s [height, width] {list(size)}"
    problem = rle_problem(segm["counts"], *size)
    return f"segmentation {problem}" if problem else None


def validate_submission(test_json: Any, submission: Any) -> dict:
    """Check a submission against test.json (each a path or already loaded); return a summary.

    The first problem found raises a one-line :class:`SubmissionError` naming the entry index and
    the key. The summary holds counts, the score range and ``warnings`` (no detections, images
    without detections, more than :data:`MAX_DETS` per image and class, extra keys).
    """
    sizes, categories = _load_test_file(test_json)
    results = load_results(submission)
    name = source_name(submission, "submission")
    with_bbox = bool(results) and isinstance(results[0], dict) and "bbox" in results[0]
    for index, entry in enumerate(results):
        problem = _entry_problem(entry, sizes, categories, with_bbox)
        if problem:
            raise SubmissionError(f"{name}: entry {index}: {problem}")
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
