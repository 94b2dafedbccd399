"""Validation of every COCO-style input: data roots, ground truth, results and submissions.

One rule per question, shared by every command: what an integer or a number is, what a valid
segmentation or RLE is (counts through :mod:`helpers.masks`' strict reader), which keys an image,
annotation or result entry needs. A problem is one line naming the file and the entry; data files
raise :class:`~helpers.errors.DataError`, results and submissions
:class:`~helpers.errors.SubmissionError`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Iterable

from pycocotools import mask as mask_utils

from .errors import DataError, SubmissionError
from .masks import rle_problem, runs_problem

BORDER_TOLERANCE = 1.0  # pixels a bbox or polygon point may reach past the image border
_PLURALS = {"image": "images", "annotation": "annotations", "category": "categories"}


# ------------------------------------------------------------------------------------ values


def is_int(value: Any) -> bool:
    """A JSON integer (booleans are not)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite JSON number (booleans, NaN and infinities are not)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def short(value: Any, limit: int = 60) -> str:
    """A repr cut to ``limit`` characters for one-line messages (safe for deeply nested values)."""
    try:
        text = repr(value)
    except RecursionError:
        return "<a deeply nested value>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def json_type(value: Any) -> str:
    """The JSON name of a value's type, for messages."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"a number ({short(value)})"
    names = {dict: "an object", list: "a list", str: "a string", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def source_name(source: Any, default: str) -> str:
    """How messages name a file argument: its path, or ``default`` for an in-memory object."""
    return str(source) if isinstance(source, (str, os.PathLike)) else default


# ------------------------------------------------------------------------------ segmentations


def _polygons_rle(polygons: list, h: int, w: int) -> dict:
    """The merged compressed RLE of a list of polygons [[x1, y1, x2, y2, ...], ...]."""
    if not polygons:
        raise ValueError("segmentation is an empty polygon list")
    for k, part in enumerate(polygons):
        if not isinstance(part, list) or not all(is_number(v) for v in part):
            raise ValueError(f"polygon {k} is not a list of numbers")
        if len(part) < 6 or len(part) % 2:
            raise ValueError(f"polygon {k} has {len(part)} coordinates (needs an even number, at least 6)")
    return mask_utils.merge(mask_utils.frPyObjects(polygons, h, w))


def _dict_rle(rle: dict, h: int, w: int) -> dict:
    """A checked compressed RLE from an RLE object whose counts are a string or a list."""
    size, counts = rle.get("size"), rle.get("counts")
    if not isinstance(size, list) or size != [h, w]:
        raise ValueError(f"RLE 'size' {short(size)} differs from the image's [{h}, {w}]")
    if isinstance(counts, list):
        problem = runs_problem(counts, h, w)
        if problem:
            raise ValueError(f"RLE {problem}")
        return mask_utils.frPyObjects({"size": [h, w], "counts": counts}, h, w)
    if isinstance(counts, (str, bytes)):
        text = counts.decode("ascii", "replace") if isinstance(counts, bytes) else counts
        problem = rle_problem(text, h, w)
        if problem:
            raise ValueError(f"RLE {problem}")
        return {"size": [h, w], "counts": text.encode("ascii")}
    raise ValueError("RLE 'counts' must be a string or a list of integers")


def segmentation_rle(segmentation: Any, h: int, w: int) -> dict:
    """One compressed RLE for a COCO segmentation (polygons, compressed or uncompressed RLE).

    Raises ValueError saying what is malformed (callers add the file and entry).
    """
    if isinstance(segmentation, list):
        return _polygons_rle(segmentation, h, w)
    if isinstance(segmentation, dict):
        return _dict_rle(segmentation, h, w)
    raise ValueError("'segmentation' must be a list of polygons or an RLE object")


# ------------------------------------------------------------------------- COCO ground truth


def _fail(name: str, entry: str, problem: str) -> DataError:
    return DataError(f"{name}: {entry}: {problem}")


def _entry_name(kind: str, index: int, obj: Any) -> str:
    """'annotation id 7' when the entry has a usable id, else 'annotations[3]'."""
    if isinstance(obj, dict) and is_int(obj.get("id")):
        return f"{kind} id {obj['id']}"
    return f"{_PLURALS[kind]}[{index}]"


def _require(name: str, entry: str, obj: dict, key: str, check, expected: str):
    """``obj[key]`` after checking it exists and passes ``check``."""
    if key not in obj:
        raise _fail(name, entry, f"missing key '{key}'")
    if not check(obj[key]):
        raise _fail(name, entry, f"'{key}' must be {expected}, got {short(obj[key])}")
    return obj[key]


def entries(name: str, coco: dict, key: str) -> list:
    """A top-level list whose items are all JSON objects."""
    if key not in coco:
        raise _fail(name, "top level", f"missing key '{key}'")
    items = coco[key]
    if not isinstance(items, list):
        raise _fail(name, "top level", f"'{key}' must be a list, got {json_type(items)}")
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise _fail(name, f"{key}[{i}]", f"must be a JSON object, got {json_type(item)}")
    return items


def _unique_ids(name: str, kind: str, items: list) -> None:
    """Every item's integer 'id' is unique."""
    seen: set[int] = set()
    for i, item in enumerate(items):
        item_id = _require(name, f"{_PLURALS[kind]}[{i}]", item, "id", is_int, "an integer")
        if item_id in seen:
            raise _fail(name, f"{kind} id {item_id}", f"duplicate {kind} id")
        seen.add(item_id)


def _check_categories(name: str, categories: list) -> None:
    if not categories:
        raise _fail(name, "top level", "'categories' is empty")
    _unique_ids(name, "category", categories)
    names: set[str] = set()
    for i, cat in enumerate(categories):
        entry = _entry_name("category", i, cat)
        cat_name = _require(name, entry, cat, "name", lambda v: isinstance(v, str) and v, "a non-empty string")
        if cat_name in names:
            raise _fail(name, entry, f"duplicate category name {cat_name!r}")
        names.add(cat_name)


def _positive_int(value: Any) -> bool:
    return is_int(value) and value > 0


def file_name_problem(file_name: str) -> str | None:
    """Why an image ``file_name`` could resolve outside its image folder, or None when it cannot."""
    if "\x00" in file_name:
        return "holds a NUL character"
    for pure in (PurePosixPath(file_name), PureWindowsPath(file_name)):
        if pure.is_absolute() or pure.anchor:
            return "is an absolute path (file names are relative to the image folder)"
        if ".." in pure.parts:
            return "contains '..' (file names must stay inside the image folder)"
    return None


def _check_images(name: str, images: list) -> None:
    _unique_ids(name, "image", images)
    names: set[str] = set()
    for i, image in enumerate(images):
        entry = _entry_name("image", i, image)
        file_name = _require(name, entry, image, "file_name", lambda v: isinstance(v, str) and v, "a file name")
        problem = file_name_problem(file_name)
        if problem:
            raise _fail(name, entry, f"file_name {short(file_name)} {problem}")
        _require(name, entry, image, "height", _positive_int, "a positive integer")
        _require(name, entry, image, "width", _positive_int, "a positive integer")
        if file_name in names:
            raise _fail(name, entry, f"duplicate file_name {file_name!r}")
        names.add(file_name)


def _inside(x: float, y: float, w: int, h: int) -> bool:
    t = BORDER_TOLERANCE
    return -t <= x <= w + t and -t <= y <= h + t


def is_bbox(value: Any) -> bool:
    """[x, y, width, height] of four finite numbers."""
    return isinstance(value, list) and len(value) == 4 and all(is_number(v) for v in value)


def _check_bbox(name: str, entry: str, bbox: list, w: int, h: int) -> None:
    x, y, bw, bh = bbox
    if bw < 0 or bh < 0:
        raise _fail(name, entry, f"'bbox' {short(bbox)} has a negative width or height")
    if not (_inside(x, y, w, h) and _inside(x + bw, y + bh, w, h)):
        raise _fail(name, entry, f"'bbox' {short(bbox)} extends outside the {w}x{h} image")


def _check_polygon_points(name: str, entry: str, polygons: list, w: int, h: int) -> None:
    for k, part in enumerate(polygons):
        for x, y in zip(part[0::2], part[1::2]):
            if not _inside(x, y, w, h):
                raise _fail(name, entry, f"polygon {k} point ({x}, {y}) lies outside the {w}x{h} image")


def _check_annotation(name: str, entry: str, ann: dict, image: dict, category_ids: set[int]) -> None:
    """Keys, category, bbox and segmentation of one annotation whose image is known."""
    cat = _require(name, entry, ann, "category_id", is_int, "an integer")
    if cat not in category_ids:
        declared = ", ".join(str(c) for c in sorted(category_ids))
        raise _fail(name, entry, f"category_id {cat} is not a declared category ({declared})")
    _require(name, entry, ann, "iscrowd", lambda v: is_int(v) and v in (0, 1), "0 or 1")
    _require(name, entry, ann, "area", lambda v: is_number(v) and v >= 0, "a non-negative number")
    bbox = _require(name, entry, ann, "bbox", is_bbox, "[x, y, width, height]")
    seg = _require(name, entry, ann, "segmentation", lambda v: isinstance(v, (list, dict)), "polygons or RLE")
    h, w = image["height"], image["width"]
    _check_bbox(name, entry, bbox, w, h)
    try:
        rle = segmentation_rle(seg, h, w)
    except ValueError as e:
        raise _fail(name, entry, str(e)) from None
    if isinstance(seg, list):
        _check_polygon_points(name, entry, seg, w, h)
    if int(mask_utils.area(rle)) == 0:
        raise _fail(name, entry, "'segmentation' covers no pixel (degenerate or zero-area polygon)")


def _check_annotations(name: str, annotations: list, images: list, categories: list) -> None:
    _unique_ids(name, "annotation", annotations)
    images_by_id = {image["id"]: image for image in images}
    category_ids = {cat["id"] for cat in categories}
    for i, ann in enumerate(annotations):
        entry = _entry_name("annotation", i, ann)
        image_id = _require(name, entry, ann, "image_id", is_int, "an integer")
        if image_id not in images_by_id:
            raise _fail(name, entry, f"image_id {image_id} is not among the file's images")
        _check_annotation(name, f"{entry} (image id {image_id})", ann, images_by_id[image_id], category_ids)


def check_coco(name: str, coco: Any, require_annotations: bool | None = None, hint: str = "") -> bool:
    """Validate a COCO dict (what validate-data checks, image files aside); True when it has annotations.

    require_annotations: True, 'annotations' must be there (``hint`` is added when it is not);
    None, it is optional; False, any annotations are ignored.
    """
    if not isinstance(coco, dict):
        raise DataError(f"{name}: top level must be a JSON object with 'images' and 'categories', "
                        f"got {json_type(coco)}")
    categories = entries(name, coco, "categories")
    images = entries(name, coco, "images")
    _check_categories(name, categories)
    _check_images(name, images)
    has_annotations = require_annotations is not False and "annotations" in coco
    if require_annotations and not has_annotations:
        raise _fail(name, "top level", f"missing key 'annotations'{hint}")
    if has_annotations:
        _check_annotations(name, entries(name, coco, "annotations"), images, categories)
    return has_annotations


def image_file(image_dir: Path, file_name: str) -> Path:
    """The file of an image entry inside ``image_dir``; a name leading outside it is a DataError."""
    problem = file_name_problem(file_name)
    path = image_dir / file_name
    if problem is None:
        try:
            inside = path.resolve().is_relative_to(image_dir.resolve())
        except (OSError, RuntimeError):  # a symlink loop
            inside = False
        if not inside:
            problem = "resolves outside the image folder (a symlink?)"
    if problem:
        raise DataError(f"{image_dir}: file_name {short(file_name)} {problem}")
    return path


# ------------------------------------------------------------------------ results, submissions


def id_list(ids: Iterable[int]) -> str:
    ids = sorted(ids)
    if not ids:
        return "none"
    return f"{ids[0]}..{ids[-1]}" if ids == list(range(ids[0], ids[-1] + 1)) else ", ".join(map(str, ids))


def results_list(value: Any, name: str) -> list:
    """A results / submission document must be a JSON list of detections."""
    if not isinstance(value, list):
        raise SubmissionError(f"{name}: a submission is a JSON list of detections, got {json_type(value)}")
    return value


def result_problem(entry: Any, sizes: dict[int, tuple[int, int]], categories: dict[int, str], *,
                   segm: bool, bbox: bool, score_range: bool = True, reference: str = "the test file") -> str | None:
    """What is wrong with one result / submission entry, or None.

    segm: a compressed-RLE 'segmentation' is required (one given anyway is checked all the same).
    bbox: a 'bbox' is required (pycocotools' loadRes reads one from every entry when the first has one).
    score_range: the score must lie in [0, 1], as the grader's file does.
    reference: how messages name the file that declares the images and categories.
    """
    if not isinstance(entry, dict):
        return f"must be an object, got {json_type(entry)}"
    keys = ("image_id", "category_id", *(("segmentation",) if segm else ()), "score", *(("bbox",) if bbox else ()))
    for key in keys:
        if key not in entry:
            return f"missing key '{key}'" + (" (entry 0 has a 'bbox', so every entry needs one)" if key == "bbox" else "")
    if bbox and not is_bbox(entry["bbox"]):
        return (f"bbox must be [x, y, width, height] of finite numbers (entry 0 has a 'bbox', so every entry "
                f"needs one), got {short(entry['bbox'])}")
    if bbox and (entry["bbox"][2] < 0 or entry["bbox"][3] < 0):
        return f"bbox {short(entry['bbox'])} has a negative width or height"
    image_id, category_id, score = entry["image_id"], entry["category_id"], entry["score"]
    if not is_int(image_id):
        return f"image_id must be an integer, got {short(image_id)}"
    if image_id not in sizes:
        return f"image_id {image_id} is not an image of {reference}"
    if not is_int(category_id) or category_id not in categories:
        return f"category_id {short(category_id)} is not a category of {reference} ({id_list(categories)})"
    if not is_number(score):
        return f"score must be a finite number, got {short(score)}"
    if score_range and not 0.0 <= score <= 1.0:
        return f"score {score!r} is outside [0, 1]"
    if "segmentation" in entry:
        return segmentation_problem(entry["segmentation"], image_id, sizes[image_id])
    return None


def segmentation_problem(segm: Any, image_id: int, size: tuple[int, int]) -> str | None:
    """What is wrong with a result's compressed RLE for an image of ``size`` (h, w), or None."""
    if not isinstance(segm, dict) or "size" not in segm or "counts" not in segm:
        return f"segmentation must be an RLE object {{\"size\", \"counts\"}}, got {json_type(segm)}"
    rle_size = segm["size"]
    if not (isinstance(rle_size, list) and len(rle_size) == 2 and all(is_int(v) for v in rle_size)):
        return f"segmentation size must be [height, width], got {short(rle_size)}"
    if tuple(rle_size) != size:
        return f"segmentation size {rle_size} differs from image {image_id}'s [height, width] {list(size)}"
    problem = rle_problem(segm["counts"], *size)
    return f"segmentation {problem}" if problem else None


def check_results(name: str, results: list, sizes: dict[int, tuple[int, int]], categories: dict[int, str], *,
                  segm: bool, bbox: bool | None = None, score_range: bool = True,
                  reference: str = "the test file") -> None:
    """Every entry of a results list, first problem raised as a SubmissionError naming the entry.

    bbox None: required when the first entry has one (what loadRes does).
    """
    if bbox is None:
        bbox = bool(results) and isinstance(results[0], dict) and "bbox" in results[0]
    for index, entry in enumerate(results):
        problem = result_problem(entry, sizes, categories, segm=segm, bbox=bbox, score_range=score_range,
                                 reference=reference)
        if problem:
            raise SubmissionError(f"{name}: entry {index}: {problem}")


def image_sizes(coco: dict) -> dict[int, tuple[int, int]]:
    """{image id: (height, width)} of a COCO dict already checked by :func:`check_coco`."""
    return {image["id"]: (image["height"], image["width"]) for image in coco["images"]}


def category_names(coco: dict) -> dict[int, str]:
    """{category id: name} in id order of a COCO dict already checked by :func:`check_coco`."""
    return {cat["id"]: cat["name"] for cat in sorted(coco["categories"], key=lambda c: c["id"])}
