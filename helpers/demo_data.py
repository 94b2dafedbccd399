"""The embedded default data set: synthetic shapes in exactly the Tiny VOC layout.

Each image has a textured background (gradient, noise, a few lines) and 1-4 filled shapes of
random size, rotation and colour (from a band of hues per class), painted in order, so later shapes occlude earlier ones. An
annotation is the VISIBLE part of its shape (several polygons when a shape is cut in two).
Shapes are painted with the same rasteriser that decodes the annotations (pycocotools), so
pixels and masks agree. Besides its shape, the hue band is a cue to the class (see CLASS_HUE_SPREAD).
"""

from __future__ import annotations

import io
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils
from shapely import affinity
from shapely.geometry import MultiPolygon, Polygon, box
from shapely.ops import unary_union

from . import data
from .errors import DataError
from .io import write_bytes, write_json

DEMO_CLASSES = ["circle", "square", "triangle", "star", "cross"]
DEFAULT_NUM_TRAIN = 200
DEFAULT_NUM_TEST = 20
GENERATOR = "helpers.demo_data"
GENERATOR_VERSION = 3  # bump when the images or annotations a seed gives change

WIDTHS = (144, 208)
HEIGHTS = (128, 176)
MAX_INSTANCES = 4
AREA_RANGE = (700.0, 14000.0)  # area of the whole shape in pixels (about 26-120 px across), sampled log-uniformly
MIN_VISIBLE_FRACTION = 0.6  # of the whole shape: occluded, but still recognisable by its outline
MIN_VISIBLE_AREA = 60.0  # pixels
MIN_PART_AREA = 12.0  # pixels, for each piece of a visible part
PLACEMENT_TRIES = 30
# Each class paints in its own band of hues (saturation and brightness vary): a cue that lets a
# random-init model on two CPU cores learn the set in minutes (val segm AP50 about 0.17 after 220
# iterations with hues uncorrelated to the class, about 0.64 with these bands). Shapes of at least
# 700 px area that keep 60% of themselves visible took it to about 0.79 (0.85 with a test-time NMS
# of 0.3) after 300 iterations of 4 images; tinier, mostly hidden shapes mostly cost AP.
# configs/demo.yaml (300 iterations of 3 images) reaches about 0.91.
CLASS_HUE_SPREAD = 0.04
MIN_COLOUR_DISTANCE = 90.0  # RGB distance between an instance and the others / the background
JPEG_QUALITY = 92


def _unit_outline(name: str) -> np.ndarray:
    """Vertices (n, 2) of a class's shape centred on the origin with circumradius 1."""
    if name == "circle":
        angles = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        radii = np.ones_like(angles)
    elif name == "square":
        angles, radii = np.pi / 4 + np.arange(4) * np.pi / 2, np.ones(4)
    elif name == "triangle":
        angles, radii = np.pi / 2 + np.arange(3) * 2 * np.pi / 3, np.ones(3)
    elif name == "star":
        angles, radii = np.pi / 2 + np.arange(10) * np.pi / 5, np.tile([1.0, 0.42], 5)
    elif name == "cross":
        a = 0.34  # half the arm width
        quarter = np.array([(a, 1.0), (a, a), (1.0, a)])
        turn = np.array([[0.0, -1.0], [1.0, 0.0]])  # (x, y) -> (y, -x)
        return np.concatenate([quarter @ np.linalg.matrix_power(turn, k) for k in range(4)])
    else:
        raise ValueError(f"unknown demo class {name!r}")
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


_OUTLINES = {name: Polygon(_unit_outline(name)) for name in DEMO_CLASSES}


@dataclass
class _Shape:
    """One painted instance: class index, full outline (image coordinates) and colour."""

    label: int
    outline: Polygon
    colour: tuple[int, int, int]


def _random_colour(rng: np.random.Generator, saturation: tuple[float, float], value: tuple[float, float],
                   hue: tuple[float, float] = (0.0, 1.0)):
    """An RGB colour from a random hue in ``hue`` and the given saturation / value ranges."""
    h, s, v = rng.uniform(*hue) % 1.0, rng.uniform(*saturation), rng.uniform(*value)
    k = (np.array([5.0, 3.0, 1.0]) + h * 6) % 6
    rgb = v - v * s * np.clip(np.minimum(k, 4 - k), 0, 1)
    return tuple(int(round(c * 255)) for c in rgb)


def _colour_distance(a, b) -> float:
    return float(np.linalg.norm(np.subtract(a, b, dtype=float)))


def _random_shape(rng: np.random.Generator, w: int, h: int, avoid: list) -> _Shape:
    """A shape of random class, area, rotation, position and a colour far from ``avoid``."""
    label = int(rng.integers(len(DEMO_CLASSES)))
    unit = _OUTLINES[DEMO_CLASSES[label]]
    radius = math.sqrt(math.exp(rng.uniform(*np.log(AREA_RANGE))) / unit.area)
    outline = affinity.rotate(unit, rng.uniform(0, 360), origin=(0, 0))
    cx, cy = rng.uniform(0.08 * w, 0.92 * w), rng.uniform(0.08 * h, 0.92 * h)
    outline = affinity.affine_transform(outline, [radius, 0, 0, radius, cx, cy])
    hue = (label / len(DEMO_CLASSES) - CLASS_HUE_SPREAD, label / len(DEMO_CLASSES) + CLASS_HUE_SPREAD)
    colour = _random_colour(rng, (0.45, 1.0), (0.4, 1.0), hue)
    for _ in range(PLACEMENT_TRIES):
        if all(_colour_distance(colour, other) >= MIN_COLOUR_DISTANCE for other in avoid):
            break
        colour = _random_colour(rng, (0.45, 1.0), (0.4, 1.0), hue)
    return _Shape(label, outline, colour)


def _polygons(geometry) -> list[Polygon]:
    """The polygon pieces of a shapely result (lines and points of a collection dropped)."""
    if isinstance(geometry, Polygon):
        return [geometry] if not geometry.is_empty else []
    if isinstance(geometry, MultiPolygon):
        return list(geometry.geoms)
    return [g for g in getattr(geometry, "geoms", []) if isinstance(g, Polygon) and not g.is_empty]


def _visible_parts(shapes: list[_Shape], w: int, h: int) -> list[list[Polygon]]:
    """For each shape, the pieces of it that no later shape covers, clipped to the image."""
    frame = box(0, 0, w, h)
    parts = []
    for i, shape in enumerate(shapes):
        visible = shape.outline.intersection(frame)
        later = [s.outline for s in shapes[i + 1 :]]
        if later:
            visible = visible.difference(unary_union(later))
        parts.append(_polygons(visible))
    return parts


def _acceptable(shape: _Shape, pieces: list[Polygon]) -> bool:
    """Visible enough, no tiny slivers, no holes (a hole would need a polygon with interiors)."""
    area = sum(p.area for p in pieces)
    if area < max(MIN_VISIBLE_AREA, MIN_VISIBLE_FRACTION * shape.outline.area):
        return False
    return all(p.area >= MIN_PART_AREA and not p.interiors for p in pieces)


def _place_shapes(rng: np.random.Generator, w: int, h: int, background: tuple) -> list[_Shape]:
    """1..MAX_INSTANCES shapes whose visible parts all satisfy :func:`_acceptable`."""
    shapes: list[_Shape] = []
    for _ in range(int(rng.integers(1, MAX_INSTANCES + 1))):
        for _ in range(PLACEMENT_TRIES):
            candidate = _random_shape(rng, w, h, [background] + [s.colour for s in shapes])
            trial = shapes + [candidate]
            if all(_acceptable(s, p) for s, p in zip(trial, _visible_parts(trial, w, h))):
                shapes = trial
                break
    return shapes


def _background(rng: np.random.Generator, w: int, h: int) -> tuple[Image.Image, tuple]:
    """A muted two-colour gradient at a random angle, with noise and a few lines; and its mean colour."""
    c0 = np.array(_random_colour(rng, (0.0, 0.35), (0.25, 0.9)), float)
    c1 = np.array(_random_colour(rng, (0.0, 0.35), (0.25, 0.9)), float)
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w]
    t = xx * math.cos(angle) + yy * math.sin(angle)
    t = (t - t.min()) / max(t.max() - t.min(), 1e-6)
    pixels = c0 + t[..., None] * (c1 - c0) + rng.normal(0, 10, (h, w, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(2, 7))):
        ends = rng.uniform([0, 0, 0, 0], [w, h, w, h]).tolist()
        draw.line(ends, fill=_random_colour(rng, (0.0, 0.4), (0.2, 1.0)), width=int(rng.integers(1, 3)))
    return image, tuple(int(c) for c in (c0 + c1) / 2)


def _outline_rle(outline: Polygon, w: int, h: int) -> dict:
    coords = np.asarray(outline.exterior.coords[:-1]).ravel().tolist()
    return mask_utils.frPyObjects([coords], h, w)[0]


def _render(image: Image.Image, shapes: list[_Shape], rng: np.random.Generator) -> bytes:
    """Paint the shapes in order with the annotation rasteriser, add mild noise, encode as JPEG."""
    w, h = image.size
    pixels = np.asarray(image, dtype=np.float64).copy()
    for shape in shapes:
        mask = mask_utils.decode(_outline_rle(shape.outline, w, h)).astype(bool)
        pixels[mask] = shape.colour
    pixels += rng.normal(0, 4, pixels.shape)
    out = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(out, "JPEG", quality=JPEG_QUALITY, subsampling=0)
    return out.getvalue()


def _annotation(pieces: list[Polygon], label: int, w: int, h: int) -> dict:
    """A COCO annotation (without ids) of a visible part given as polygon pieces."""
    segmentation = [np.round(np.asarray(p.exterior.coords[:-1]), 2).ravel().tolist() for p in pieces]
    x0, y0, x1, y1 = MultiPolygon(pieces).bounds
    area = int(mask_utils.area(data.segmentation_rle(segmentation, h, w)))
    bbox = [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)]
    return {"category_id": label + 1, "segmentation": segmentation, "area": area, "bbox": bbox, "iscrowd": 0}


def _make_image(seed: int, split_code: int, index: int) -> tuple[bytes, int, int, list[dict]]:
    """One image (JPEG bytes, height, width) and its annotations, from its own seeded generator."""
    rng = np.random.default_rng([seed, split_code, index])
    w, h = int(rng.integers(WIDTHS[0], WIDTHS[1] + 1)), int(rng.integers(HEIGHTS[0], HEIGHTS[1] + 1))
    image, background = _background(rng, w, h)
    shapes = _place_shapes(rng, w, h, background)
    annotations = [_annotation(p, s.label, w, h) for s, p in zip(shapes, _visible_parts(shapes, w, h))]
    return _render(image, shapes, rng), h, w, annotations


def _write_images(root: Path, folder: str, prefix: str, split_code: int, seed: int, first_id: int, count: int):
    """Write ``count`` images; return their image entries and (image id, annotation) pairs."""
    images, annotations = [], []
    (root / folder).mkdir(parents=True, exist_ok=True)
    for index in range(count):
        jpeg, h, w, anns = _make_image(seed, split_code, index)
        image_id, file_name = first_id + index, f"{prefix}_{index:05d}.jpg"
        write_bytes(root / folder / file_name, jpeg)
        images.append({"id": image_id, "file_name": file_name, "height": h, "width": w})
        annotations += [(image_id, ann) for ann in anns]
    _remove_stale(root / folder, prefix, {image["file_name"] for image in images})
    return images, annotations


def _remove_stale(folder: Path, prefix: str, keep: set[str]) -> None:
    """Delete demo images of an earlier, larger run that the new JSON no longer lists."""
    for path in folder.glob(f"{prefix}_*.jpg"):
        if path.name not in keep:
            path.unlink()


def _categories() -> list[dict]:
    return [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(DEMO_CLASSES)]


def _existing_info(root: Path) -> dict | None:
    """The 'info' of an existing pascal_train.json (None when there is none or it is unreadable)."""
    try:
        info = json.loads((root / data.TRAIN_JSON).read_text(encoding="utf-8")).get("info")
    except (OSError, ValueError, AttributeError):
        return None
    return info if isinstance(info, dict) else None


def _is_complete(root: Path, info: dict) -> bool:
    """The root holds a demo set made with ``info``: both JSON files and every image listed."""
    if _existing_info(root) != info or not (root / data.TEST_JSON).is_file():
        return False
    try:
        train = json.loads((root / data.TRAIN_JSON).read_text(encoding="utf-8"))["images"]
        test = json.loads((root / data.TEST_JSON).read_text(encoding="utf-8"))["images"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return all((root / data.TRAIN_IMAGES / i["file_name"]).is_file() for i in train) and all(
        (root / data.TEST_IMAGES / i["file_name"]).is_file() for i in test
    )


def _guard_foreign_root(root: Path) -> None:
    """Never overwrite a data set that this module did not write (e.g. the real Tiny VOC)."""
    if (root / data.TRAIN_JSON).exists():
        info = _existing_info(root)
        if not info or info.get("generator") != GENERATOR:
            raise DataError(f"{root}: holds a {data.TRAIN_JSON} that is not a demo data set; choose another folder")


def make_demo_data(
    root: str | os.PathLike, seed: int = 0, num_train: int | None = None, num_test: int | None = None
) -> Path:
    """Write the synthetic data set to ``root`` (deterministic in ``seed``) and return ``root``.

    Layout as Tiny VOC: ``train_images/`` + ``pascal_train.json`` (polygons, categories 1..K of
    :data:`DEMO_CLASSES`) and ``test_images/`` + ``test.json`` (images and categories only).
    ``pascal_train.json`` is written last and records seed and sizes in its ``info``: a root that
    already holds the same complete set is returned untouched.
    """
    root = Path(root)
    num_train = DEFAULT_NUM_TRAIN if num_train is None else int(num_train)
    num_test = DEFAULT_NUM_TEST if num_test is None else int(num_test)
    if num_train < 1 or num_test < 0:
        raise DataError(f"demo data needs num_train >= 1 and num_test >= 0, got {num_train} and {num_test}")
    info = {"generator": GENERATOR, "version": GENERATOR_VERSION, "seed": seed}
    info.update(num_train=num_train, num_test=num_test)
    if _is_complete(root, info):
        return root
    _guard_foreign_root(root)
    (root / data.TRAIN_JSON).unlink(missing_ok=True)  # the root no longer looks complete
    train_images, pairs = _write_images(root, data.TRAIN_IMAGES, "train", 0, seed, 1, num_train)
    test_images, _ = _write_images(root, data.TEST_IMAGES, "test", 1, seed, num_train + 1, num_test)
    annotations = [{"id": k + 1, "image_id": image_id, **ann} for k, (image_id, ann) in enumerate(pairs)]
    write_json(root / data.TEST_JSON, {"images": test_images, "categories": _categories()})
    write_json(
        root / data.TRAIN_JSON,
        {"info": info, "images": train_images, "annotations": annotations, "categories": _categories()},
    )
    return root
