"""Drawing: masks and labels on images, image grids, and saving figures.

Every figure function returns a matplotlib :class:`~matplotlib.figure.Figure` and never shows it:
the notebook displays the returned figure once (it is detached from pyplot, so the inline backend
does not draw it a second time), and :func:`save_figure` writes it as a PNG. The drawing primitive
:func:`draw_instances` returns an RGB array. Nothing here sets a matplotlib backend. Charts of numbers
are :mod:`helpers.plots`; the interactive image browser is :mod:`helpers.image_browser`.

Output is deterministic: each class keeps one colour (:func:`class_colors`, by category-id order),
samples are drawn with a fixed seed, and PNGs carry no software or date metadata, so the same
inputs give the same bytes.
"""

from __future__ import annotations

import colorsys
import io
import math
import os
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont

from . import data
from .instances import Instances
from .io import atomic_write

DEFAULT_DPI = 120
UNKNOWN_COLOR = (160, 160, 160)  # a category id missing from the class-name map
_GOLDEN = 0.618033988749895
_SHADES = ((0.90, 0.95), (0.60, 1.00), (1.00, 0.72))  # (saturation, value), cycled per colour
_PANEL = (4.4, 3.6)  # inches per image panel


# ----------------------------------------------------------------------------- figures and files


def _figure(nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] | None = None, **kwargs):
    """A (fig, 2-D axes array) pair in constrained layout, detached from pyplot's figure list."""
    fig, axes = plt.subplots(nrows, ncols, figsize=figsize, squeeze=False, layout="constrained", **kwargs)
    plt.close(fig)
    return fig, axes


def _message_figure(text: str, figsize: tuple[float, float] = (6.0, 2.0)) -> Figure:
    """A figure holding one centred message (for empty inputs)."""
    fig, axes = _figure(figsize=figsize)
    _message(axes[0, 0], text)
    return fig


def _message(ax, text: str) -> None:
    """Replace an axes' content by a centred grey message."""
    ax.set_axis_off()
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=11, color="0.35", transform=ax.transAxes, wrap=True)


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = DEFAULT_DPI, close: bool = True) -> Path | Figure:
    """Write ``fig`` as a PNG atomically (byte-stable: no metadata); return the path and close the figure.

    With ``close=False`` the figure is returned instead, so a notebook cell ending in
    ``viz.save_figure(fig, path, close=False)`` saves the figure and shows it.
    """
    path = Path(path)
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    if not close:
        return fig
    plt.close(fig)
    return path


def _png_bytes(fig: Figure, dpi: int = 90) -> bytes:
    """The PNG of a figure, in memory (for the browser's image widget)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    return buffer.getvalue()


# ----------------------------------------------------------------------------- colours


def class_colors(n: int) -> list[tuple[int, int, int]]:
    """``n`` distinct RGB colours (0-255); colour ``i`` is the same whatever ``n`` is.

    Hues step by the golden ratio and saturation / brightness cycle through three shades, so
    neighbouring classes never look alike.
    """
    colors = []
    for i in range(n):
        saturation, value = _SHADES[i % len(_SHADES)]
        r, g, b = colorsys.hsv_to_rgb((i * _GOLDEN) % 1.0, saturation, value)
        colors.append((round(r * 255), round(g * 255), round(b * 255)))
    return colors


def _colors_by_id(class_names_by_id: dict[int, str]) -> dict[int, tuple[int, int, int]]:
    """Each category id's colour: :func:`class_colors` in ascending category-id order."""
    ids = sorted(class_names_by_id)
    return dict(zip(ids, class_colors(len(ids))))


def _mpl_color(rgb: tuple[int, int, int]) -> tuple[float, float, float]:
    """A 0-255 RGB tuple as matplotlib's 0-1 floats."""
    return tuple(c / 255 for c in rgb)


def _names_by_id(split: data.Split) -> dict[int, str]:
    """{category id: name} of a split."""
    return {cat["id"]: cat["name"] for cat in split.categories}


# ----------------------------------------------------------------------------- drawing masks


@lru_cache(maxsize=16)
def _label_font(size: int) -> ImageFont.FreeTypeFont:
    """Matplotlib's bundled DejaVu Sans Bold: present wherever matplotlib is, so labels render alike."""
    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans-Bold.ttf"
    return ImageFont.truetype(str(path), size)


def _erode(mask: np.ndarray) -> np.ndarray:
    """One step of 4-neighbour erosion (pixels outside the image count as background)."""
    padded = np.pad(mask, 1, constant_values=False)
    return (mask & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:])


def _inner_outline(mask: np.ndarray, thickness: int) -> np.ndarray:
    """The mask's pixels within ``thickness`` of its border: an outline that never leaves the mask."""
    core = mask
    for _ in range(thickness):
        core = _erode(core)
    return mask & ~core


def _label_anchor(mask: np.ndarray, box: np.ndarray | None) -> tuple[float, float, bool] | None:
    """Where an instance's label goes, as (x, y, centred): just above its box's top-left corner,
    else centred on its mask's centroid; None for an empty mask without a box."""
    if box is not None:
        return float(box[0]), float(box[1]), False
    ys, xs = np.nonzero(mask)
    if not ys.size:
        return None
    return float(xs.mean()), float(ys.mean()), True


def _text_color(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black on light backgrounds, white on dark ones."""
    luminance = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    return (0, 0, 0) if luminance > 150 else (255, 255, 255)


def _overlaps(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    """Whether two (x, y, width, height) rectangles intersect."""
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def _place_tag(anchor: tuple[float, float, bool], tag: tuple[int, int], size: tuple[int, int],
               placed: list[tuple[float, float, float, float]]) -> tuple[float, float]:
    """Top-left of a label tag at ``anchor``, kept inside the image and stepped down or up by a tag
    height (up to three times) to clear the tags already ``placed``; records the chosen rectangle."""
    (x0, y0, centred), (tag_w, tag_h), (h, w) = anchor, tag, size
    x0, y0 = (x0 - tag_w / 2, y0 - tag_h / 2) if centred else (x0, y0 - tag_h)
    x = min(max(x0, 0), max(w - tag_w, 0))
    spots = [(x, min(max(y0 + k * tag_h, 0), max(h - tag_h, 0))) for k in (0, 1, -1, 2, -2, 3, -3)]
    spot = next((s for s in spots if not any(_overlaps((*s, tag_w, tag_h), p) for p in placed)), spots[0])
    placed.append((*spot, tag_w, tag_h))
    return spot


def _draw_label(draw: ImageDraw.ImageDraw, anchor: tuple[float, float, bool], text: str,
                rgb: tuple[int, int, int], font: ImageFont.FreeTypeFont, size: tuple[int, int],
                placed: list[tuple[float, float, float, float]]) -> None:
    """A tag filled with the class colour holding ``text``, placed by :func:`_place_tag`."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    pad = 2
    tag_w, tag_h = right - left + 2 * pad, bottom - top + 2 * pad
    x, y = _place_tag(anchor, (tag_w, tag_h), size, placed)
    draw.rectangle([x, y, x + tag_w - 1, y + tag_h - 1], fill=rgb)
    draw.text((x + pad - left, y + pad - top), text, fill=_text_color(rgb), font=font)


def _instance_label(category_id: int, class_names_by_id: dict[int, str], score: float | None) -> str:
    """The class name, with the score when given; an id missing from the map reads "id 7"."""
    name = class_names_by_id.get(category_id, f"id {category_id}")
    return name if score is None else f"{name} {score:.2f}"


def _blend_masks(canvas: np.ndarray, masks: np.ndarray, colors: list[tuple[int, int, int]], order: np.ndarray,
                 alpha: float, thickness: int) -> Image.Image:
    """The canvas with every mask blended in its colour and outlined from inside, in ``order``."""
    out = canvas.astype(np.float32)
    for i in order:
        color = np.asarray(colors[i], dtype=np.float32)
        out[masks[i]] = (1 - alpha) * out[masks[i]] + alpha * color
        out[_inner_outline(masks[i], thickness)] = color
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8))


def _draw_labels(picture: Image.Image, masks: np.ndarray, boxes: np.ndarray | None, texts: list[str],
                 colors: list[tuple[int, int, int]], order: np.ndarray) -> None:
    """One label tag per instance (on its box, else its mask), later tags moved to clear earlier ones."""
    draw = ImageDraw.Draw(picture)
    h, w = masks.shape[1:]
    font = _label_font(max(10, round(max(h, w) / 32)))
    placed: list[tuple[float, float, float, float]] = []
    for i in order:
        anchor = _label_anchor(masks[i], None if boxes is None else boxes[i])
        if anchor is not None:
            _draw_label(draw, anchor, texts[i], colors[i], font, (h, w), placed)


def draw_instances(image: np.ndarray, masks: np.ndarray, category_ids: Sequence[int],
                   class_names_by_id: dict[int, str], scores: Sequence[float] | None = None,
                   boxes: np.ndarray | None = None, alpha: float = 0.45, labels: bool = True) -> np.ndarray:
    """The image with each instance's mask blended in its class colour, outlined, optionally boxed
    (XYXY) and labelled "name" or "name 0.93"; returns a new HxWx3 uint8 RGB array.

    Outlines are drawn inside the masks, so with ``boxes=None`` and ``labels=False`` only mask pixels
    change. Larger masks are drawn first, so small instances stay visible on top of big ones.
    """
    canvas = np.asarray(image)
    canvas = np.repeat(canvas[..., None], 3, axis=2) if canvas.ndim == 2 else canvas[..., :3]
    h, w = canvas.shape[:2]
    masks = np.asarray(masks, dtype=bool).reshape(-1, h, w)
    category_ids = [int(c) for c in category_ids]
    by_id = _colors_by_id(class_names_by_id)
    colors = [by_id.get(c, UNKNOWN_COLOR) for c in category_ids]
    thickness = max(1, round(max(h, w) / 250))
    order = np.argsort(-masks.sum(axis=(1, 2)), kind="stable")
    picture = _blend_masks(canvas, masks, colors, order, alpha, thickness)
    box_array = None if boxes is None else np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    if box_array is not None:
        draw = ImageDraw.Draw(picture)
        for i in order:
            draw.rectangle([float(v) for v in box_array[i]], outline=colors[i], width=thickness)
    if labels:
        texts = [_instance_label(c, class_names_by_id, None if scores is None else float(scores[k]))
                 for k, c in enumerate(category_ids)]
        _draw_labels(picture, masks, box_array, texts, colors, order)
    return np.asarray(picture)


def gt_instances(split: data.Split, image: dict | int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ground truth of one image (entry or id): bool masks (N, H, W), category ids (N,), XYXY boxes (N, 4)."""
    image = image if isinstance(image, dict) else split.image_by_id(image)
    h, w = image["height"], image["width"]
    anns = split.annotations_of(image["id"])
    masks = np.zeros((len(anns), h, w), dtype=bool)
    for k, ann in enumerate(anns):
        masks[k] = data.annotation_mask(ann, h, w)
    category_ids = np.array([ann["category_id"] for ann in anns], dtype=np.int64)
    boxes = np.array([[x, y, x + bw, y + bh] for x, y, bw, bh in (ann["bbox"] for ann in anns)],
                     dtype=np.float32).reshape(-1, 4)
    return masks, category_ids, boxes


def _gt_overlay(split: data.Split, image: dict, pixels: np.ndarray,
                class_names_by_id: dict[int, str]) -> tuple[np.ndarray, int]:
    """The image's pixels with its ground truth drawn, and the number of instances."""
    masks, category_ids, _ = gt_instances(split, image)
    return draw_instances(pixels, masks, category_ids, class_names_by_id), len(category_ids)


def _prediction_overlay(pixels: np.ndarray, instances: Instances, class_names_by_id: dict[int, str],
                        score_thresh: float) -> tuple[np.ndarray, int]:
    """The image with the predictions scoring at least ``score_thresh`` drawn, and their number."""
    kept = instances.above(score_thresh)
    return draw_instances(pixels, kept.masks, kept.category_ids, class_names_by_id, kept.scores), len(kept)


# ----------------------------------------------------------------------------- image grids


def _show(ax, pixels: np.ndarray, title: str) -> None:
    """An image panel: pixels, a small title, no axes."""
    ax.imshow(pixels)
    ax.set_title(title, fontsize=10)
    ax.set_axis_off()


def _image_grid(count: int, cols: int):
    """(fig, flat list of axes) for ``count`` image panels, spare panels hidden."""
    cols = max(1, min(cols, count))
    rows = math.ceil(count / cols)
    fig, axes = _figure(rows, cols, figsize=(_PANEL[0] * cols, _PANEL[1] * rows))
    flat = list(axes.flat)
    for ax in flat[count:]:
        ax.set_axis_off()
    return fig, flat[:count]


def show_samples(split: data.Split, n: int = 6, seed: int = 0, cols: int = 3) -> Figure:
    """``n`` randomly chosen annotated images (fixed ``seed``) with their ground-truth masks and class names."""
    pool = [image for image in split.images if split.annotations_of(image["id"])]
    if not pool:
        return _message_figure(f"{split.name}: no annotated images to show")
    picks = np.random.default_rng(seed).choice(len(pool), size=min(n, len(pool)), replace=False)
    fig, axes = _image_grid(len(picks), cols)
    for ax, index in zip(axes, picks):
        image = pool[int(index)]
        pixels, count = _gt_overlay(split, image, data.read_image(split.image_path(image)), _names_by_id(split))
        _show(ax, pixels, f"{image['file_name']}: {count} instance{'s' * (count != 1)}")
    fig.suptitle(f"{split.name}: {len(picks)} random images with their ground-truth masks (seed {seed})",
                 fontsize=12)
    return fig


def show_predictions(items: Sequence[tuple[np.ndarray, Instances, str]], class_names_by_id: dict[int, str],
                     score_thresh: float = 0.5, cols: int = 3) -> Figure:
    """A grid of predictions: ``items`` are (RGB image, Instances, title)."""
    if not items:
        return _message_figure("no predictions to show")
    fig, axes = _image_grid(len(items), cols)
    for ax, (pixels, instances, title) in zip(axes, items):
        overlay, count = _prediction_overlay(np.asarray(pixels), instances, class_names_by_id, score_thresh)
        _show(ax, overlay, f"{title}: {count} instance{'s' * (count != 1)}")
    fig.suptitle(f"Predictions with score ≥ {score_thresh:g}", fontsize=12)
    return fig


def _gt_vs_pred_rows(split: data.Split, rows: Sequence[tuple[dict, Instances, str]], score_thresh: float,
                     title: str, class_names_by_id: dict[int, str] | None = None) -> Figure:
    """One row per image: ground truth left, prediction right; ``rows`` are (image entry, Instances, row note).
    Class names default to the split's."""
    names = class_names_by_id or _names_by_id(split)
    fig, axes = _figure(len(rows), 2, figsize=(2 * _PANEL[0] + 1.0, _PANEL[1] * len(rows) + 0.4))
    for (left, right), (image, instances, note) in zip(axes, rows):
        pixels = data.read_image(split.image_path(image))
        gt_pixels, num_gt = _gt_overlay(split, image, pixels, names)
        overlay, num_pred = _prediction_overlay(pixels, instances, names, score_thresh)
        _show(left, gt_pixels, f"{image['file_name']}: ground truth ({num_gt})")
        _show(right, overlay, f"prediction, score ≥ {score_thresh:g} ({num_pred})" + (f"\n{note}" if note else ""))
    fig.suptitle(title, fontsize=12)
    return fig


def _prediction_of(predictions: dict[int, Instances], image: dict) -> Instances:
    """The image's predictions, or none when it was not predicted."""
    if image["id"] in predictions:
        return predictions[image["id"]]
    return Instances.empty((image["height"], image["width"]))


def show_gt_vs_pred(split: data.Split, image: dict | int, instances: Instances, score_thresh: float = 0.5) -> Figure:
    """Ground truth beside the prediction for one image (entry or id)."""
    image = image if isinstance(image, dict) else split.image_by_id(image)
    return _gt_vs_pred_rows(split, [(image, instances, "")], score_thresh,
                            f"Image id {image['id']}: ground truth vs prediction")


def show_worst_images(split: data.Split, predictions: dict[int, Instances], errors: Sequence[dict], n: int = 4,
                      score_thresh: float = 0.5) -> Figure:
    """The first ``n`` predicted images of ``errors`` (``evaluate.per_image_errors``, worst first),
    ground truth beside prediction, with the missed and false-positive counts in each title."""
    worst = [e for e in errors if e["image_id"] in predictions][:n]
    if not worst:
        return _message_figure("no predicted images among the errors")
    rows = [(split.image_by_id(e["image_id"]), predictions[e["image_id"]],
             f"missed {e['missed']} of {e['num_gt']} / false positives {e['false_positives']} of {e['num_det']}")
            for e in worst]
    return _gt_vs_pred_rows(split, rows, score_thresh,
                            f"The {len(rows)} images with the most errors (missed + false positives)\n"
                            f"counts as matched by the evaluation; drawn: predictions with score ≥ {score_thresh:g}")
