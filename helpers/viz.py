"""Figures and the interactive image browser.

Every figure function returns a matplotlib :class:`~matplotlib.figure.Figure` and never shows it:
the notebook displays the returned figure once (it is detached from pyplot, so the inline backend
does not draw it a second time), and :func:`save_figure` writes it as a PNG. The drawing primitive
:func:`draw_instances` returns an RGB array. Nothing here sets a matplotlib backend.

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
from .evaluate import HEADLINE, metric_label
from .instances import Instances
from .io import atomic_write

DEFAULT_DPI = 120
UNKNOWN_COLOR = (160, 160, 160)  # a category id missing from the class-name map
_GOLDEN = 0.618033988749895
_SHADES = ((0.90, 0.95), (0.60, 1.00), (1.00, 0.72))  # (saturation, value), cycled per colour
_PANEL = (4.4, 3.6)  # inches per image panel
_AP_IOU = {"AP": "IoU 0.50:0.95", "AP50": "IoU 0.50", "AP75": "IoU 0.75"}


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


# ----------------------------------------------------------------------------- data set statistics


def _plot_per_class_counts(ax, per_class: dict) -> None:
    """Horizontal grouped bars: instances and images per class, first class on top."""
    names = list(per_class)
    y = np.arange(len(names))
    instances = [per_class[name]["instances"] for name in names]
    images = [per_class[name]["images"] for name in names]
    bars = ax.barh(y - 0.2, instances, height=0.4, color="tab:blue", label="instances")
    ax.bar_label(bars, padding=2, fontsize=7)
    bars = ax.barh(y + 0.2, images, height=0.4, color="tab:orange", label="images containing the class")
    ax.bar_label(bars, padding=2, fontsize=7)
    ax.set_yticks(y, names, fontsize=9)
    ax.invert_yaxis()
    ax.margins(x=0.12)
    ax.set_xlabel("count")
    ax.set_title("Instances and images per class")
    ax.legend(fontsize=8, loc="lower right")


def _plot_instances_per_image(ax, per_image: dict) -> None:
    """Bars: how many images have 0, 1, 2, ... instances, with the mean marked."""
    histogram = per_image["histogram"]
    ax.bar(range(len(histogram)), histogram, color="tab:blue", width=0.8)
    ax.axvline(per_image["mean"], color="tab:red", linestyle="--", label=f"mean {per_image['mean']:.2f}")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("instances in the image")
    ax.set_ylabel("images")
    ax.set_title(f"Instances per image (max {per_image['max']})")
    ax.legend(fontsize=9)


def _plot_mask_areas(ax, areas: list[int], buckets: dict) -> None:
    """Histogram of mask areas on a log axis, COCO's small / medium / large ranges shaded."""
    areas = np.asarray(areas, dtype=float)
    top = max(float(areas.max(initial=1.0)), data.MEDIUM_AREA * 4.0)
    ax.set_xscale("log")
    spans = [(1, data.SMALL_AREA, "small", "< 32²"), (data.SMALL_AREA, data.MEDIUM_AREA, "medium", "32²–96²"),
             (data.MEDIUM_AREA, top, "large", "≥ 96²")]
    for (lo, hi, key, rule), shade in zip(spans, ("#fde0dd", "#fff7bc", "#e5f5e0")):
        ax.axvspan(lo, hi, color=shade, label=f"{key} {rule}: {buckets[key]}")
    if areas.size:
        ax.hist(areas[areas > 0], bins=np.logspace(0, math.log10(top), 40), color="tab:blue")
    for boundary in (data.SMALL_AREA, data.MEDIUM_AREA):
        ax.axvline(boundary, color="0.3", linestyle="--", linewidth=1)
    ax.set_xlim(1, top)
    ax.set_xlabel("mask area (pixels, log scale)")
    ax.set_ylabel("instances")
    ax.set_title("Mask areas with COCO's size ranges")
    ax.legend(fontsize=8, loc="upper left")


def _plot_image_sizes(ax, sizes: dict) -> None:
    """Each distinct width x height once, marker area growing with how many images have it."""
    pairs, counts = np.unique(np.column_stack([sizes["widths"], sizes["heights"]]), axis=0, return_counts=True)
    if not len(pairs):
        _message(ax, "no images")
        return
    ax.scatter(pairs[:, 0], pairs[:, 1], s=12 + 300 * counts / counts.max(), alpha=0.5, color="tab:blue")
    for w, h, n in sizes["most_common"][:3]:
        ax.annotate(f"{w}×{h}: {n}", (w, h), textcoords="offset points", xytext=(6, 6), fontsize=8)
    ax.set_xlabel("width (pixels)")
    ax.set_ylabel("height (pixels)")
    ax.set_title("Image sizes (marker area ~ number of images)")


def plot_dataset_stats(stats: dict) -> Figure:
    """2x2 overview of :func:`helpers.data.dataset_stats`: per-class counts, instances per image,
    mask areas against COCO's small / medium / large boundaries, image sizes."""
    fig, axes = _figure(2, 2, figsize=(13, 9.5))
    _plot_per_class_counts(axes[0, 0], stats["per_class"])
    _plot_instances_per_image(axes[0, 1], stats["instances_per_image"])
    _plot_mask_areas(axes[1, 0], stats["areas"], stats["mask_area"])
    _plot_image_sizes(axes[1, 1], stats["image_sizes"])
    fig.suptitle(f"{stats['num_images']} images, {stats['num_annotations']} instances", fontsize=13)
    return fig


# ----------------------------------------------------------------------------- training curves


def _series(rows: Sequence[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(iterations, values) of the rows carrying a finite number under ``key``."""
    points = [(r["iteration"], float(r[key])) for r in rows
              if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool) and math.isfinite(r[key])]
    x, y = zip(*points) if points else ((), ())
    return np.asarray(x, dtype=float), np.asarray(y, dtype=float)


def _smooth(values: np.ndarray) -> np.ndarray:
    """Trailing moving average over about 1/25 of the points (a shorter window at the start)."""
    window = max(1, len(values) // 25)
    sums = np.concatenate([[0.0], np.cumsum(values)])
    end = np.arange(1, len(values) + 1)
    start = np.maximum(0, end - window)
    return (sums[end] - sums[start]) / (end - start)


def _plot_raw_and_smooth(ax, x: np.ndarray, y: np.ndarray, color, label: str) -> None:
    """A faint line of the logged values under a bold moving average (the one labelled)."""
    ax.plot(x, y, color=color, alpha=0.25, linewidth=0.8)
    ax.plot(x, _smooth(y), color=color, linewidth=1.6, label=label)


def _loss_keys(rows: Sequence[dict]) -> list[str]:
    """The loss components logged (``loss_*``), sorted."""
    return sorted({k for r in rows for k in r if k.startswith("loss")})


def _plot_val_metrics(ax, rows: Sequence[dict]) -> None:
    """segm / bbox AP and AP50 against iteration, where evaluations were logged."""
    styles = {"segm/AP": ("tab:blue", "-"), "segm/AP50": ("tab:green", "-"),
              "bbox/AP": ("tab:blue", "--"), "bbox/AP50": ("tab:green", "--")}
    plotted = False
    for key, (color, linestyle) in styles.items():
        x, y = _series(rows, key)
        if len(x):
            ax.plot(x, y, color=color, linestyle=linestyle, marker="o", markersize=4, label=metric_label(key))
            plotted = True
    if not plotted:
        _message(ax, "no validation evaluations logged")
        return
    ax.set_xlabel("iteration")
    ax.set_ylabel("AP (as logged)")
    ax.set_title("Validation AP (solid: masks, dashed: boxes)")
    ax.legend(fontsize=9)


def _plot_total_loss(ax, rows: Sequence[dict]) -> None:
    """``total_loss`` against iteration."""
    ax.set_title("Total training loss")
    x, y = _series(rows, "total_loss")
    if not len(x):
        _message(ax, "no total_loss logged")
        return
    _plot_raw_and_smooth(ax, x, y, "black", "total loss (smoothed)")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.legend(fontsize=9)


def _plot_loss_components(ax, rows: Sequence[dict]) -> None:
    """Every ``loss_*`` key against iteration, one colour each."""
    ax.set_title("Loss components")
    keys = _loss_keys(rows)
    if not keys:
        _message(ax, "no loss components logged")
        return
    palette = plt.get_cmap("tab10")
    for k, key in enumerate(keys):
        _plot_raw_and_smooth(ax, *_series(rows, key), palette(k % 10), key)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.legend(fontsize=9)


def _plot_learning_rate(ax, rows: Sequence[dict]) -> None:
    """``lr`` against iteration (warm-up and steps show here)."""
    ax.set_title("Learning rate")
    x, y = _series(rows, "lr")
    if not len(x):
        _message(ax, "no learning rate logged")
        return
    ax.plot(x, y, color="tab:purple")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    ax.set_xlabel("iteration")
    ax.set_ylabel("learning rate")


def plot_training_curves(rows: Sequence[dict]) -> Figure:
    """Training curves from :func:`helpers.runs.read_metrics` rows: total loss, each loss component
    (faint raw values, bold moving average), learning rate, and validation AP where logged."""
    if not rows:
        return _message_figure("no metrics yet: the run has not logged an iteration")
    fig, axes = _figure(2, 2, figsize=(13, 8.5))
    _plot_total_loss(axes[0, 0], rows)
    _plot_loss_components(axes[0, 1], rows)
    _plot_learning_rate(axes[1, 0], rows)
    _plot_val_metrics(axes[1, 1], rows)
    fig.suptitle(f"Training up to iteration {max(r['iteration'] for r in rows)} "
                 "(faint: logged values, bold: moving average)", fontsize=13)
    return fig


# ----------------------------------------------------------------------------- evaluation


def plot_per_class_ap(metrics: dict, metric: str = "AP50") -> Figure:
    """Per-class ``metric`` from :func:`helpers.evaluate.evaluate` as sorted bars with the mean marked;
    classes without ground truth are listed, not drawn."""
    per_class = metrics["per_class"]
    colors = dict(zip(per_class, class_colors(len(per_class))))
    valid = sorted(((v[metric], name) for name, v in per_class.items() if v[metric] >= 0), reverse=True)
    absent = [name for name, v in per_class.items() if v[metric] < 0]
    fig, axes = _figure(figsize=(9, 1.4 + 0.32 * max(len(valid), 1)))
    ax = axes[0, 0]
    iou_type = metrics.get("iou_type", "")
    ax.set_title(f"{metric_label(f'{iou_type}/{metric}')} per class".strip() if iou_type else
                 f"{metric} per class ({_AP_IOU.get(metric, metric)})")
    if not valid:
        _message(ax, "no class has ground truth")
        return fig
    values, names = zip(*valid)
    bars = ax.barh(range(len(names)), values, color=[_mpl_color(colors[n]) for n in names])
    ax.bar_label(bars, fmt="%.3f", padding=3, fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=9)
    ax.invert_yaxis()
    mean = float(np.mean(values))
    ax.axvline(mean, color="black", linestyle="--", linewidth=1, label=f"mean over classes {mean:.3f}")
    ax.set_xlim(0, 1.08)
    ax.set_xlabel(metric + (f"\n(no ground truth, not shown: {', '.join(absent)})" if absent else ""))
    ax.legend(fontsize=9, loc="lower right")
    return fig


def plot_pr_curves(pr: dict, iou: float = 0.5, cols: int = 5) -> Figure:
    """Small multiples of :func:`helpers.evaluate.precision_recall`: one precision-recall curve per class,
    its AP in the title; ``iou`` is the threshold the curves were computed at (for the title)."""
    if not pr:
        return _message_figure("no classes")
    cols = min(cols, len(pr))
    rows = math.ceil(len(pr) / cols)
    fig, axes = _figure(rows, cols, figsize=(2.7 * cols, 2.4 * rows + 0.5), sharex=True, sharey=True)
    colors = class_colors(len(pr))
    for k, (ax, (name, curve)) in enumerate(zip(axes.flat, pr.items())):
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.05)
        ax.grid(alpha=0.3)
        if not curve["recall"]:
            ax.set_title(f"{name}: no ground truth", fontsize=9)
            continue
        color = _mpl_color(colors[k])
        ax.plot(curve["recall"], curve["precision"], color=color, linewidth=1.6)
        ax.fill_between(curve["recall"], curve["precision"], color=color, alpha=0.2)
        ax.set_title(f"{name}: AP {curve['ap']:.3f}", fontsize=9)
    for ax in list(axes.flat)[len(pr):]:
        ax.set_axis_off()
    for ax in axes[-1]:
        ax.set_xlabel("recall")
    for ax in axes[:, 0]:
        ax.set_ylabel("precision")
    fig.suptitle(f"Precision–recall per class (IoU {iou:g})", fontsize=12)
    return fig


def plot_eval_curves(curves: dict[str, Sequence[dict]], metrics: Sequence[str] = (HEADLINE, "segm/AP")) -> Figure:
    """Validation metrics against iteration, one line per run: ``curves`` maps a run's name (e.g. an
    ablation variant) to its metrics rows (:func:`helpers.runs.eval_rows`); one panel per metric."""
    fig, axes = _figure(1, len(metrics), figsize=(6.2 * len(metrics), 4.4))
    palette = plt.get_cmap("tab10")
    for ax, metric in zip(axes[0], metrics):
        ax.set_title(f"Validation {metric_label(metric)}")
        for k, (name, rows) in enumerate(curves.items()):
            x, y = _series(rows, metric)
            if len(x):
                ax.plot(x, y, marker="o", markersize=4, color=palette(k % 10), label=name)
        if not ax.lines:
            _message(ax, f"no {metric} logged")
            continue
        ax.set_xlabel("iteration")
        ax.set_ylabel(metric_label(metric))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=9)
    return fig


# ----------------------------------------------------------------------------- architecture


def _shape_text(shape: Sequence[int]) -> str:
    """[1, 256, 200, 272] as "1 × 256 × 200 × 272"."""
    return " × ".join(str(int(v)) for v in shape)


def _stage_groups(rows: Sequence[dict]) -> dict[str, list[tuple[str, str]]]:
    """Stages grouped by the part before the first dot, in order: {group: [(name, shape text)]}."""
    groups: dict[str, list[tuple[str, str]]] = {}
    for row in rows:
        group, _, name = row["stage"].partition(".")
        groups.setdefault(group, []).append((name or group, _shape_text(row["shape"])))
    return groups


def plot_architecture(rows: Sequence[dict], title: str | None = None) -> Figure:
    """A block diagram of the model from recorded stages (``engine.architecture``: dicts with
    ``stage`` such as "backbone.res2" and ``shape``): one column per part, data flowing left to right,
    each block naming the stage and its output tensor shape."""
    groups = _stage_groups(rows)
    if not groups:
        return _message_figure("no architecture recorded")
    tallest = max(len(stages) for stages in groups.values())
    col_w, row_h = 2.15, 0.62
    fig, axes = _figure(figsize=(col_w * len(groups) + 0.4, row_h * tallest + 1.2))
    ax = axes[0, 0]
    ax.set_axis_off()
    ax.set_xlim(0, len(groups))
    ax.set_ylim(tallest, -0.6)
    palette = plt.get_cmap("Pastel1")
    for col, (group, stages) in enumerate(groups.items()):
        ax.text(col + 0.5, -0.35, group, ha="center", va="center", fontsize=11, fontweight="bold")
        top = (tallest - len(stages)) / 2
        for k, (name, shape) in enumerate(stages):
            ax.text(col + 0.5, top + k + 0.5, f"{name}\n{shape}", ha="center", va="center", fontsize=8.5,
                    bbox={"boxstyle": "round,pad=0.4", "facecolor": palette(col % 9), "edgecolor": "0.5"})
        if col:
            ax.annotate("", xy=(col + 0.14, tallest / 2), xytext=(col - 0.14, tallest / 2),
                        arrowprops={"arrowstyle": "-|>", "color": "0.3", "lw": 1.5, "mutation_scale": 16})
    ax.set_title(title or "Model stages and output shapes", fontsize=12)
    return fig


# ----------------------------------------------------------------------------- ablation and tables


def _variant_label(row: dict) -> str:
    """Variant name over its weight-decay settings, where the row records them."""
    settings = [f"{label} {row[key]:g}" for key, label in (("weight_decay", "wd"), ("weight_decay_bias", "bias wd"))
                if isinstance(row.get(key), (int, float))]
    return row["variant"] + ("\n" + ", ".join(settings) if settings else "")


def plot_ablation(summary: Sequence[dict], metric: str = HEADLINE, title: str | None = None) -> Figure:
    """Each ablation variant's seeds (dots) and their mean with its t-interval (bar and error bar), from
    the ``summary`` rows of :func:`helpers.ablation.collect` (``row[metric]`` is a
    :func:`helpers.stats.summarize` dict). Only our runs: published numbers never share this axis."""
    rows = [r for r in summary if (r.get(metric) or {}).get("n")]
    fig, axes = _figure(figsize=(max(6.0, 1.9 * len(rows) + 1.5), 5))
    ax = axes[0, 0]
    ax.set_title(title or f"Ablation: {metric_label(metric)} at the final checkpoint (val)")
    if not rows:
        _message(ax, f"no finished runs with {metric_label(metric)}")
        return fig
    means = [r[metric]["mean"] for r in rows]
    errors = [r[metric]["half_width"] or 0.0 for r in rows]
    drawn = ax.bar(range(len(rows)), means, width=0.6, color="tab:blue", alpha=0.55, edgecolor="tab:blue")
    ax.errorbar(range(len(rows)), means, yerr=errors, fmt="none", ecolor="black", capsize=6, linewidth=1.2)
    for k, r in enumerate(rows):
        values = r[metric]["values"]
        offsets = np.linspace(-0.12, 0.12, len(values)) if len(values) > 1 else [0.0]
        ax.scatter([k + o for o in offsets], values, color="black", s=16, zorder=3)
    level = f"{rows[0][metric].get('confidence', 0.95):.0%}"
    ax.bar_label(drawn, labels=[f"{m:.4f}" for m in means], padding=3, fontsize=9, label_type="center")
    ax.set_xticks(range(len(rows)), [_variant_label(r) + f"\nn = {r[metric]['n']}" for r in rows], fontsize=9)
    ax.set_ylabel(metric_label(metric))
    top = max(v for r in rows for v in r[metric]["values"] + [r[metric]["mean"] + (r[metric]["half_width"] or 0)])
    ax.set_ylim(0, max(top * 1.15, 0.01))
    ax.set_xlabel(f"bars: mean over seeds; error bars: {level} t-interval of the mean; dots: one run each",
                  fontsize=8, color="0.35")
    return fig


def plot_channel_order(report: dict) -> Figure:
    """Bars of :func:`helpers.inference_checks.channel_order`: each metric with the training channel order
    and with it swapped."""
    metrics = [HEADLINE, "segm/AP"]
    rows = report["rows"]
    fig, axes = _figure(figsize=(7.5, 4.4))
    ax = axes[0, 0]
    width = 0.38
    for k, r in enumerate(rows):
        label = f"fed {r['fed']} ({'as trained' if r['as_trained'] else 'swapped, as the homework did'})"
        bars = ax.bar([m + (k - 0.5) * width for m in range(len(metrics))], [r[m] for m in metrics], width=width,
                      color="tab:green" if r["as_trained"] else "tab:red", label=label)
        ax.bar_label(bars, fmt="%.4f", padding=2, fontsize=9)
    ax.set_xticks(range(len(metrics)), [metric_label(m) for m in metrics])
    ax.set_ylim(0, max([r[m] for r in rows for m in metrics] + [0.01]) * 1.2)
    ax.set_ylabel("val")
    ax.set_title(f"Channel order: model trained on {report['trained_with']} ({report['engine']})")
    ax.legend(fontsize=9, loc="upper right")
    return fig


def plot_threshold_sweep(report: dict) -> Figure:
    """Both metrics against the score threshold of :func:`helpers.inference_checks.threshold_sweep`, with
    our default and the homework's 0.5 marked."""
    rows = report["rows"]
    t = [r["threshold"] for r in rows]
    fig, axes = _figure(figsize=(7.5, 4.4))
    ax = axes[0, 0]
    for metric, color in ((HEADLINE, "tab:green"), ("segm/AP", "tab:blue")):
        ax.plot(t, [r[metric] for r in rows], marker="o", markersize=4, color=color, label=metric_label(metric))
    for x, text, style in ((report["default_threshold"], f"ours ({report['default_threshold']:g})", "--"),
                           (report["homework_threshold"], f"the homework's ({report['homework_threshold']:g})", ":")):
        ax.axvline(x, color="0.3", linestyle=style, linewidth=1, label=text)
    ax.set_xlabel("score threshold (detections scoring at least this are kept)")
    ax.set_ylabel("val")
    ax.set_ylim(0, max([r[m] for r in rows for m in (HEADLINE, "segm/AP")] + [0.01]) * 1.15)
    ax.set_title("Score threshold against val mask AP")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
    return fig


def _cell_text(value) -> str:
    """A table cell: integral floats as integers, small numbers compactly, 4 decimals otherwise."""
    if value is None:
        return "–"
    if isinstance(value, (list, tuple)):
        return ", ".join(_cell_text(v) for v in value)
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e6:
            return str(int(value))
        return f"{value:g}" if abs(value) < 1e-3 else f"{value:.4f}"
    return str(value)


def table_figure(columns: Sequence[str], rows: Sequence[Sequence], title: str | None = None) -> Figure:
    """A table rendered as a figure: bold shaded header, banded rows, column widths fitted to the text."""
    texts = [[_cell_text(v) for v in row] for row in rows] or [["(none)"] + [""] * (len(columns) - 1)]
    widths = [max([len(str(c))] + [len(row[k]) for row in texts]) + 2 for k, c in enumerate(columns)]
    fig_w = min(max(0.085 * sum(widths) + 0.4, 3.0), 16.0)
    fig_h = 0.3 * (len(texts) + 1) + (0.45 if title else 0.1)
    fig, axes = _figure(figsize=(fig_w, fig_h))
    ax = axes[0, 0]
    ax.set_axis_off()
    table = ax.table(cellText=texts, colLabels=list(columns), cellLoc="left", colLoc="left",
                     colWidths=[w / sum(widths) for w in widths], bbox=[0, 0, 1, 1])
    table.auto_set_font_size(False)
    table.set_fontsize(10)
    for (r, _), cell in table.get_celld().items():
        cell.set_edgecolor("0.8")
        cell.PAD = 0.04  # fraction of the cell width left blank beside the text
        if r == 0:
            cell.set_facecolor("0.88")
            cell.get_text().set_fontweight("bold")
        elif r % 2 == 0:
            cell.set_facecolor("0.965")
    if title:
        ax.set_title(title, fontsize=11, loc="left")
    return fig


# ----------------------------------------------------------------------------- browser


def _static_reason() -> str | None:
    """Why the browser cannot be interactive here, or None when a live Jupyter kernel can show widgets."""
    if os.environ.get("HELPERS_HEADLESS", "").strip().lower() not in ("", "0", "false", "no"):
        return "HELPERS_HEADLESS is set"
    try:
        import ipywidgets  # noqa: F401
        from IPython import get_ipython
    except ImportError:
        return "ipywidgets is not installed"
    if getattr(get_ipython(), "kernel", None) is None:
        return "no Jupyter kernel"
    return None


def _browsable_images(split: data.Split, predictions: dict[int, Instances]) -> list[dict]:
    """The split's predicted images, or all of them when there are no predictions."""
    images = [image for image in split.images if image["id"] in predictions] if predictions else split.images
    if not images:
        raise ValueError(f"none of the predicted images is in split {split.name!r}")
    return images


def _browser_view(split: data.Split, image: dict, predictions: dict[int, Instances],
                  class_names_by_id: dict[int, str], score_thresh: float, show_gt: bool) -> Figure:
    """The browser's figure for one image: ground truth beside prediction, or the prediction alone."""
    instances = _prediction_of(predictions, image)
    if show_gt:
        return _gt_vs_pred_rows(split, [(image, instances, "")], score_thresh,
                                f"Image id {image['id']}: ground truth vs prediction", class_names_by_id)
    item = (data.read_image(split.image_path(image)), instances, f"{image['file_name']} (id {image['id']})")
    return show_predictions([item], class_names_by_id, score_thresh, cols=1)


def _static_browser(split: data.Split, images: list[dict], predictions: dict[int, Instances],
                    class_names_by_id: dict[int, str], score_thresh: float, count: int = 3) -> Figure:
    """The browser's stand-in: ground truth beside prediction for the first ``count`` images."""
    rows = [(image, _prediction_of(predictions, image), "") for image in images[:count]]
    return _gt_vs_pred_rows(split, rows, score_thresh, f"The first {len(rows)} of {len(images)} images "
                            "(static view of the image browser)", class_names_by_id)


def _widget_browser(split: data.Split, images: list[dict], predictions: dict[int, Instances],
                    class_names_by_id: dict[int, str], score_thresh: float):
    """Dropdown (image), slider (score threshold) and checkbox (ground truth) over a PNG view."""
    import ipywidgets as widgets

    by_id = {image["id"]: image for image in images}
    choose = widgets.Dropdown(options=[(f"{im['file_name']} (id {im['id']})", im["id"]) for im in images],
                              description="image")
    threshold = widgets.FloatSlider(value=score_thresh, min=0.0, max=1.0, step=0.05, description="score ≥",
                                    continuous_update=False, readout_format=".2f")
    show_gt = widgets.Checkbox(value=True, description="show ground truth")
    # At its natural size: never stretched to the output's width (only shrunk to fit a narrower one).
    view = widgets.Image(format="png", layout=widgets.Layout(max_width="100%", height="auto"))

    def render(_change=None) -> None:
        fig = _browser_view(split, by_id[choose.value], predictions, class_names_by_id, threshold.value,
                            show_gt.value)
        view.value = _png_bytes(fig)

    for control in (choose, threshold, show_gt):
        control.observe(render, names="value")
    render()
    # A VBox stretches its children across its width by default: keep each at its own width instead.
    return widgets.VBox([widgets.HBox([choose, threshold, show_gt]), view],
                        layout=widgets.Layout(align_items="flex-start"))


def browser(split: data.Split, predictions: dict[int, Instances], class_names_by_id: dict[int, str],
            score_thresh: float = 0.5, static: bool | None = None):
    """Browse images with their predictions (and ground truth) in Jupyter; returns the widget.

    ``static=None`` decides by itself: without ipywidgets, outside a Jupyter kernel, or with the
    ``HELPERS_HEADLESS`` environment variable set (papermill runs), it prints why and returns a
    static figure of a few images instead. ``static=True`` / ``False`` force either.
    """
    images = _browsable_images(split, predictions)
    reason = _static_reason() if static is None else ("static=True" if static else None)
    if reason:
        fig = _static_browser(split, images, predictions, class_names_by_id, score_thresh)
        print(f"Showing a static figure of the first images instead of the interactive browser ({reason}).")
        return fig
    return _widget_browser(split, images, predictions, class_names_by_id, score_thresh)
