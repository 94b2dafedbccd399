"""Load, validate, index, split and describe a data root in the official Tiny VOC layout.

A data root holds ``pascal_train.json`` + ``train_images/`` (COCO instance annotations, polygons)
and, optionally, ``test.json`` + ``test_images/`` (images and categories only). Every problem is a
:class:`~helpers.errors.DataError` whose one-line message names the file and the offending entry.
Valid but unusual data is accepted: images without annotations, crowd annotations, RLE
segmentations (compressed or not), multi-part polygons, grayscale / palette / RGBA / CMYK images,
EXIF-rotated JPEGs.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from . import readers, validate
from .errors import DataError
from .io import write_json

TRAIN_JSON = "pascal_train.json"
TEST_JSON = "test.json"
TRAIN_IMAGES = "train_images"
TEST_IMAGES = "test_images"

BORDER_TOLERANCE = validate.BORDER_TOLERANCE  # pixels a bbox or polygon point may reach past the image border
SMALL_AREA = 32**2  # COCO area thresholds (mask pixels)
MEDIUM_AREA = 96**2

_PROJECT_ROOT = Path(__file__).resolve().parents[1]
_CONVENTIONAL_IMAGE_DIRS = {TRAIN_JSON: TRAIN_IMAGES, TEST_JSON: TEST_IMAGES}
_CONVENTIONAL_NAMES = {TRAIN_JSON: "train", TEST_JSON: "test"}


def default_data_root() -> Path:
    """``$TINYVOC_ROOT`` if set, else ``<project root>/data/tinyvoc``."""
    env = os.environ.get("TINYVOC_ROOT")
    return Path(env) if env else _PROJECT_ROOT / "data" / "tinyvoc"


# ------------------------------------------------------------------------ images and masks
# Image reading lives in helpers.readers and every validation rule in helpers.validate; these
# names stay here for the notebooks and the other modules.

read_image = readers.read_image
image_size = readers.image_size
segmentation_rle = validate.segmentation_rle


def annotation_mask(ann: dict, h: int, w: int) -> np.ndarray:
    """The annotation's mask as a bool (h, w) array."""
    try:
        rle = segmentation_rle(ann.get("segmentation"), h, w)
    except ValueError as e:
        raise DataError(f"annotation id {ann.get('id')}: {e}") from None
    return mask_utils.decode(rle).astype(bool)


def _check_image_files(path: Path, image_dir: Path, images: list) -> None:
    """Every image file exists inside ``image_dir``, decodes fully and has the JSON's (oriented) size."""
    for image in images:
        entry = f"image id {image['id']}"
        try:
            file = validate.image_file(image_dir, image["file_name"])
        except DataError as e:
            raise DataError(f"{path}: {entry}: {str(e).split(': ', 1)[1]}") from None
        if not file.is_file():
            raise DataError(f"{path}: {entry}: image file {image['file_name']!r} not found in {image_dir}")
        h, w = readers.decode_fully(file)
        if (h, w) != (image["height"], image["width"]):
            raise DataError(
                f"{path}: {entry}: JSON size {image['width']}x{image['height']} differs from the file's "
                f"{w}x{h} ({file.name})"
            )


# ---------------------------------------------------------------------------------------- split


@dataclass
class Split:
    """One COCO JSON file and its image folder, validated and indexed.

    ``coco`` is the parsed dict; its ``annotations`` list is empty for an image-only file
    (``has_annotations`` is then False).
    """

    name: str
    json_path: Path
    image_dir: Path
    coco: dict = field(repr=False)
    has_annotations: bool
    _images_by_id: dict = field(init=False, repr=False, compare=False)
    _annotations_by_image: dict = field(init=False, repr=False, compare=False)
    _category_names: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._images_by_id = {image["id"]: image for image in self.images}
        self._annotations_by_image = defaultdict(list)
        for ann in self.annotations:
            self._annotations_by_image[ann["image_id"]].append(ann)
        self._category_names = {cat["id"]: cat["name"] for cat in self.categories}

    @property
    def images(self) -> list[dict]:
        return self.coco["images"]

    @property
    def annotations(self) -> list[dict]:
        return self.coco["annotations"]

    @property
    def categories(self) -> list[dict]:
        """The categories sorted by id."""
        return sorted(self.coco["categories"], key=lambda cat: cat["id"])

    @property
    def class_names(self) -> list[str]:
        """Category names in category-id order."""
        return [cat["name"] for cat in self.categories]

    @property
    def category_ids(self) -> list[int]:
        """Category ids, ascending (the data set's own ids: never assume 1..K)."""
        return [cat["id"] for cat in self.categories]

    def category_name(self, cat_id: int) -> str:
        if cat_id not in self._category_names:
            raise DataError(f"{self.json_path}: unknown category id {cat_id}")
        return self._category_names[cat_id]

    def image_by_id(self, image_id: int) -> dict:
        if image_id not in self._images_by_id:
            raise DataError(f"{self.json_path}: unknown image id {image_id}")
        return self._images_by_id[image_id]

    def image_path(self, image_or_id: dict | int) -> Path:
        """The file of an image entry or image id."""
        image = image_or_id if isinstance(image_or_id, dict) else self.image_by_id(image_or_id)
        return self.image_dir / image["file_name"]

    def annotations_of(self, image_id: int) -> list[dict]:
        """The annotations of one image (empty list when it has none)."""
        return list(self._annotations_by_image.get(image_id, ()))


@dataclass
class DataRoot:
    """A data root: the annotated train split and, when present, the image-only test split."""

    root: Path
    train: Split
    test: Split | None


def _default_image_dir(json_path: Path, coco: dict) -> Path:
    """The split file's recorded image folder, else the official folder beside an official file."""
    info = coco.get("info")
    if isinstance(info, dict) and isinstance(info.get("image_dir"), str):
        return json_path.parent / info["image_dir"]  # an absolute recorded path wins the join
    if json_path.name in _CONVENTIONAL_IMAGE_DIRS:
        return json_path.parent / _CONVENTIONAL_IMAGE_DIRS[json_path.name]
    raise DataError(f"{json_path}: no image folder given and none recorded in its 'info'")


def _default_name(json_path: Path, coco: dict) -> str:
    info = coco.get("info")
    if isinstance(info, dict) and isinstance(info.get("split"), str):
        return info["split"]
    return _CONVENTIONAL_NAMES.get(json_path.name, json_path.stem)


def load_split(
    json_path: str | os.PathLike,
    image_dir: str | os.PathLike | None = None,
    name: str | None = None,
    require_annotations: bool | None = None,
    check_images: bool = True,
) -> Split:
    """Load and validate one COCO file with its image folder.

    image_dir: default the folder recorded by :func:`make_split` in ``info.image_dir``, else
        ``train_images`` / ``test_images`` beside ``pascal_train.json`` / ``test.json``.
    require_annotations: True, the file must have ``annotations``; None, they are optional;
        False, the file is treated as image-only and any annotations are ignored.
    check_images: also check that every image file exists, decodes fully and has the JSON size.
    """
    json_path = Path(json_path)
    coco = readers.read_json(json_path, DataError)
    has_annotations = validate.check_coco(str(json_path), coco, require_annotations)
    image_dir = Path(image_dir) if image_dir is not None else _default_image_dir(json_path, coco)
    if check_images and not image_dir.is_dir():
        raise DataError(f"{image_dir}: image folder not found (images of {json_path.name})")
    if not has_annotations:
        coco["annotations"] = []
    if check_images:
        _check_image_files(json_path, image_dir, coco["images"])
    return Split(name or _default_name(json_path, coco), json_path, image_dir, coco, has_annotations)


def _same_categories(train: Split, test: Split) -> None:
    if [(c["id"], c["name"]) for c in train.categories] != [(c["id"], c["name"]) for c in test.categories]:
        raise DataError(f"{test.json_path}: categories differ from those of {train.json_path.name}")


def load_root(root: str | os.PathLike, check_images: bool = True) -> DataRoot:
    """Load and validate a data root; the test split is optional (``DataRoot.test`` is then None)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(
            f"{root}: data root not found (download Tiny VOC there, or run: python -m helpers make-demo-data {root})"
        )
    train = load_split(root / TRAIN_JSON, root / TRAIN_IMAGES, "train", True, check_images)
    test = None
    if (root / TEST_JSON).exists():
        test = load_split(root / TEST_JSON, root / TEST_IMAGES, "test", False, check_images)
        _same_categories(train, test)
    return DataRoot(root, train, test)


# -------------------------------------------------------------------------------------- summary


def _zero_area_parts(annotations: list[dict]) -> int:
    """Polygon parts enclosing no area (shoelace); valid beside other parts (real VOC has some)."""
    count = 0
    for ann in annotations:
        if isinstance(ann["segmentation"], list):
            for part in ann["segmentation"]:
                xs, ys = np.asarray(part[0::2], float), np.asarray(part[1::2], float)
                count += np.dot(xs, np.roll(ys, 1)) == np.dot(ys, np.roll(xs, 1))
    return int(count)


def _split_summary(split: Split) -> dict:
    """Counts describing one loaded split."""
    annotated = {ann["image_id"] for ann in split.annotations}
    anns = split.annotations
    return {
        "json": str(split.json_path),
        "image_dir": str(split.image_dir),
        "has_annotations": split.has_annotations,
        "images": len(split.images),
        "annotations": len(anns),
        "categories": len(split.categories),
        "images_without_annotations": sum(image["id"] not in annotated for image in split.images),
        "crowd": sum(ann["iscrowd"] == 1 for ann in anns),
        "rle_segmentations": sum(isinstance(ann["segmentation"], dict) for ann in anns),
        "multi_part_polygons": sum(isinstance(a["segmentation"], list) and len(a["segmentation"]) > 1 for a in anns),
        "zero_area_polygon_parts": _zero_area_parts(anns),
    }


def validate_root(root: str | os.PathLike, check_images: bool = True) -> dict:
    """Validate a data root (raises DataError) and return a JSON-able summary of it."""
    data = load_root(root, check_images)
    return {
        "root": str(data.root),
        "images_checked": check_images,
        "train": _split_summary(data.train),
        "test": _split_summary(data.test) if data.test else None,
    }


def _format_split_line(name: str, s: dict) -> str:
    head = f"{name:<6} {Path(s['json']).name}: {s['images']} images, "
    if not s["has_annotations"]:
        return head + f"{s['categories']} categories (no annotations)"
    line = head + f"{s['annotations']} annotations, {s['categories']} categories"
    notes = [
        f"{s['images_without_annotations']} images without annotations",
        f"{s['crowd']} crowd",
        f"{s['rle_segmentations']} RLE",
        f"{s['multi_part_polygons']} multi-part polygons",
    ]
    if s["zero_area_polygon_parts"]:
        notes.append(f"{s['zero_area_polygon_parts']} zero-area polygon parts (cover no pixel, ignored)")
    return line + "\n       " + ", ".join(notes)


def format_summary(summary: dict) -> str:
    """The summary of :func:`validate_root` as a few readable lines."""
    checked = "image files decoded and checked" if summary["images_checked"] else "image files not checked"
    lines = [f"data root: {summary['root']} ({checked})", _format_split_line("train", summary["train"])]
    lines.append(_format_split_line("test", summary["test"]) if summary["test"] else "test   absent")
    lines.append("OK")
    return "\n".join(lines)


# --------------------------------------------------------------------------------- train / val


@dataclass
class SplitPaths:
    """The two files :func:`make_split` writes."""

    train: Path
    val: Path


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def _val_count(n: int, val_fraction: float) -> int:
    """round(val_fraction * n), at least 1 when val_fraction > 0 and n >= 2, and at most n - 1."""
    if n < 2 or val_fraction <= 0:
        return 0
    return min(max(_round_half_up(val_fraction * n), 1), n - 1)


class _Stratifier:
    """Picks the validation images of a split, class by class, deterministically."""

    def __init__(self, split: Split, seed: int) -> None:
        self.classes_of: dict[int, set[int]] = defaultdict(set)
        for ann in split.annotations:
            self.classes_of[ann["image_id"]].add(ann["category_id"])
        rng = np.random.default_rng(seed)
        ids = sorted(self.classes_of)
        self.order = [ids[i] for i in rng.permutation(len(ids))]  # the seeded tie-breaking order
        self.images_of: dict[int, int] = Counter(c for cs in self.classes_of.values() for c in cs)
        self.in_train = dict(self.images_of)  # per class: images still on the train side
        self.val: list[int] = []
        self.val_set: set[int] = set()

    def stratum(self, image_id: int) -> int:
        """The image's rarest class (fewest images; ties to the smaller id)."""
        return min(self.classes_of[image_id], key=lambda c: (self.images_of[c], c))

    def movable(self, image_id: int) -> bool:
        """Moving it to val leaves every one of its classes with an image on the train side."""
        return image_id not in self.val_set and all(self.in_train[c] > 1 for c in self.classes_of[image_id])

    def move(self, image_id: int) -> None:
        self.val.append(image_id)
        self.val_set.add(image_id)
        for c in self.classes_of[image_id]:
            self.in_train[c] -= 1

    def cover_classes(self, n_val: int) -> None:
        """One val image per class with >= 2 images, rarest class first, while slots remain."""
        for c in sorted(self.images_of, key=lambda c: (self.images_of[c], c)):
            covered = any(c in self.classes_of[i] for i in self.val)
            if len(self.val) >= n_val or covered or self.images_of[c] < 2:
                continue
            pick = next((i for i in self.order if c in self.classes_of[i] and self.movable(i)), None)
            if pick is not None:
                self.move(pick)

    def fill(self, n_val: int, val_fraction: float) -> None:
        """Fill the remaining slots from the stratum furthest below its share."""
        strata = defaultdict(list)
        for i in self.order:
            strata[self.stratum(i)].append(i)
        while len(self.val) < n_val:
            taken = Counter(self.stratum(i) for i in self.val)
            open_strata = [s for s in strata if any(self.movable(i) for i in strata[s])]
            if not open_strata:
                return
            best = max(open_strata, key=lambda s: (val_fraction * len(strata[s]) - taken[s], -s))
            self.move(next(i for i in strata[best] if self.movable(i)))


def _split_info(split: Split, val_fraction: float, seed: int) -> dict:
    """What identifies a split: the source file (path and content), the fraction and the seed."""
    return {
        "image_dir": str(split.image_dir.resolve()),
        "source": str(split.json_path.resolve()),
        "source_sha256": hashlib.sha256(split.json_path.read_bytes()).hexdigest(),
        "val_fraction": val_fraction,
        "seed": seed,
    }


def _recorded_info(path: Path) -> dict | None:
    """The 'info' of an existing split file without its 'split' key, or None when unreadable."""
    try:
        info = readers.read_json(path, DataError).get("info")
    except (DataError, AttributeError):
        return None
    return {k: v for k, v in info.items() if k != "split"} if isinstance(info, dict) else None


def _subset(split: Split, image_ids: set[int], info: dict, side: str) -> dict:
    """A COCO dict of the given images and their annotations, entries unchanged, in file order."""
    return {
        "info": {**info, "split": side},
        "images": [image for image in split.images if image["id"] in image_ids],
        "annotations": [ann for ann in split.annotations if ann["image_id"] in image_ids],
        "categories": split.categories,
    }


def make_split(split: Split, out_dir: str | os.PathLike, val_fraction: float = 0.1, seed: int = 0) -> SplitPaths:
    """Write a seeded, class-stratified train/val split of ``split`` as ``train.json`` + ``val.json``.

    Only annotated images can go to val (unannotated ones stay in train); val gets
    round(val_fraction * n) of the n annotated images, and every class with at least two images
    appears on both sides while val has room. Existing files made from the same source, fraction
    and seed are reused as they are, so every notebook and engine sees the identical split.
    """
    if not split.has_annotations:
        raise DataError(f"{split.json_path}: cannot split a file without annotations")
    if not 0 <= val_fraction < 1:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}")
    out_dir = Path(out_dir)
    paths = SplitPaths(out_dir / "train.json", out_dir / "val.json")
    info = _split_info(split, val_fraction, seed)
    if _recorded_info(paths.train) == info and _recorded_info(paths.val) == info:
        return paths
    stratifier = _Stratifier(split, seed)
    n_val = _val_count(len(stratifier.order), val_fraction)
    stratifier.cover_classes(n_val)
    stratifier.fill(n_val, val_fraction)
    val_ids = set(stratifier.val)
    train_ids = {image["id"] for image in split.images} - val_ids
    write_json(paths.train, _subset(split, train_ids, info, "train"))
    write_json(paths.val, _subset(split, val_ids, info, "val"))
    return paths


# ---------------------------------------------------------------------------------- statistics


def _mask_areas(split: Split) -> list[int]:
    """Pixel area of every annotation's mask, from its segmentation (not the JSON 'area')."""
    areas = []
    for ann in split.annotations:
        image = split.image_by_id(ann["image_id"])
        try:
            rle = segmentation_rle(ann["segmentation"], image["height"], image["width"])
        except ValueError as e:
            raise DataError(f"{split.json_path}: annotation id {ann['id']}: {e}") from None
        areas.append(int(mask_utils.area(rle)))
    return areas


def _instances_per_image(split: Split) -> dict:
    counts = [len(split.annotations_of(image["id"])) for image in split.images]
    histogram = [0] * (max(counts, default=0) + 1)
    for c in counts:
        histogram[c] += 1
    return {
        "histogram": histogram,
        "mean": round(float(np.mean(counts)), 3) if counts else 0.0,
        "max": max(counts, default=0),
    }


def _per_class(split: Split) -> dict:
    instances = Counter(ann["category_id"] for ann in split.annotations)
    images = Counter(c for c, _ in {(a["category_id"], a["image_id"]) for a in split.annotations})
    return {
        cat["name"]: {"id": cat["id"], "instances": instances[cat["id"]], "images": images[cat["id"]]}
        for cat in split.categories
    }


def _image_sizes(split: Split, top: int = 10) -> dict:
    sizes = Counter((image["width"], image["height"]) for image in split.images)
    ranked = sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    return {
        "widths": [image["width"] for image in split.images],
        "heights": [image["height"] for image in split.images],
        "most_common": [[w, h, n] for (w, h), n in ranked],
    }


def dataset_stats(split: Split) -> dict:
    """Plain JSON-able statistics of an annotated split.

    ``instances_per_image.histogram[k]`` is the number of images with k instances; ``per_class``
    follows category order; ``mask_area`` uses COCO's small / medium / large thresholds on the
    mask pixel areas, listed sorted in ``areas``.
    """
    if not split.has_annotations:
        raise DataError(f"{split.json_path}: no annotations to describe")
    areas = _mask_areas(split)
    annotated = {ann["image_id"] for ann in split.annotations}
    return {
        "num_images": len(split.images),
        "num_annotations": len(split.annotations),
        "num_crowd": sum(ann["iscrowd"] == 1 for ann in split.annotations),
        "images_without_annotations": sum(image["id"] not in annotated for image in split.images),
        "instances_per_image": _instances_per_image(split),
        "per_class": _per_class(split),
        "mask_area": {
            "small": sum(a < SMALL_AREA for a in areas),
            "medium": sum(SMALL_AREA <= a < MEDIUM_AREA for a in areas),
            "large": sum(a >= MEDIUM_AREA for a in areas),
        },
        "areas": sorted(areas),
        "image_sizes": _image_sizes(split),
    }


def format_stats(stats: dict) -> str:
    """The statistics of :func:`dataset_stats` as a readable multi-line table."""
    per_image = stats["instances_per_image"]
    area = stats["mask_area"]
    histogram = "  ".join(f"{k}: {n}" for k, n in enumerate(per_image["histogram"]) if n)
    sizes = ", ".join(f"{w}x{h}: {n}" for w, h, n in stats["image_sizes"]["most_common"][:5])
    lines = [
        f"images               {stats['num_images']:>6}   ({stats['images_without_annotations']} without annotations)",
        f"annotations          {stats['num_annotations']:>6}   ({stats['num_crowd']} crowd)",
        f"instances per image  mean {per_image['mean']:.2f}, max {per_image['max']}   [{histogram}]",
        f"mask area            small {area['small']}, medium {area['medium']}, large {area['large']}"
        "   (COCO: < 32x32, < 96x96, larger)",
        f"image sizes (w x h)  {sizes}",
        "",
        f"{'class':<16}{'instances':>10}{'images':>8}",
    ]
    lines += [f"{name:<16}{c['instances']:>10}{c['images']:>8}" for name, c in stats["per_class"].items()]
    return "\n".join(lines)
