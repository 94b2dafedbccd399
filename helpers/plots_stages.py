"""Figures of Mask R-CNN's stages on one image, from an ``inspect`` record (helpers.inspect_run).

One function per stage, in pipeline order; each returns a matplotlib Figure whose title says what
is drawn and whose caption (bottom) says what to look for, with the numbers of the record, so the
figures read the same on any data set and either engine. :func:`stage_figures` makes them all;
:func:`save_stage_figures` writes them as PNGs.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from .io import atomic_write

LEVEL_COLORS = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"]
GT_COLOR, POS_COLOR, NEG_COLOR = "yellow", "lime", "red"
CAPTION_WIDTH = 120
DPI = 110


def _figure(nrows: int, ncols: int, figsize) -> tuple[Figure, np.ndarray]:
    fig, axes = plt.subplots(nrows, ncols, figsize=figsize, squeeze=False, layout="constrained")
    plt.close(fig)  # detached: the notebook shows the returned figure once
    return fig, axes


def _caption(fig: Figure, title: str, look_for: str) -> Figure:
    fig.suptitle(title, fontsize=12, fontweight="bold")
    fig.supxlabel(textwrap.fill("Look for: " + look_for, CAPTION_WIDTH), fontsize=9, ha="center")
    return fig


def _box(ax, box, color, lw=1.5, ls="-", alpha=1.0, label=None) -> None:
    x0, y0, x1, y1 = (float(v) for v in box)
    ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=color, lw=lw, ls=ls, alpha=alpha))
    if label:
        ax.text(x0, y0, label, color="black", fontsize=7, va="bottom",
                bbox={"facecolor": color, "alpha": 0.8, "pad": 1, "lw": 0})


def _show(ax, image, title: str | None = None) -> None:
    ax.imshow(image)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)


def _name(record: dict, category_id: int) -> str:
    return record["class_names"].get(int(category_id), str(category_id))


# ------------------------------------------------------------------------------------- stages


def plot_input(record: dict) -> Figure:
    """The image, the resized image the model sees, and one normalised channel."""
    inp = record["input"]
    (H, W), (h, w) = inp["original_size"], inp["size"]
    fig, axes = _figure(1, 3, (13, 4))
    _show(axes[0, 0], record["image"], f"original image, {H}×{W} (h×w)")
    _show(axes[0, 1], inp["image"], f"resized to {h}×{w} (scale {inp['scale'][0]:.4g})")
    order = inp["channel_order"]
    im = axes[0, 2].imshow(inp["tensor"][0], cmap="coolwarm")
    axes[0, 2].set_title(f"normalised channel 0 ({order[0]}): (x − {inp['pixel_mean'][0]:g}) / {inp['pixel_std'][0]:g}",
                         fontsize=9)
    axes[0, 2].set_xticks([])
    axes[0, 2].set_yticks([])
    fig.colorbar(im, ax=axes[0, 2], shrink=0.8)
    means = ", ".join(f"{m:.3g}" for m in inp["channel_mean"])
    return _caption(fig, "1 · Input: resize and normalise",
                    f"the short side becomes INPUT.MIN_SIZE_TEST {inp['min_size_test']} unless the long side would pass "
                    f"MAX_SIZE_TEST {inp['max_size_test']}; the {order} channels (range 0..{inp['value_range']:g}) are "
                    f"normalised with the model's pixel mean and std (ImageNet's), so an average ImageNet pixel becomes 0 "
                    f"(this image's channel means after normalising: {means}); the batch is "
                    f"padded with zeros to {inp['padded_shape'][1]}×{inp['padded_shape'][2]}, a multiple of 32, for the "
                    "backbone's strides.")


def plot_feature_maps(record: dict) -> Figure:
    """A few channels (the most varied ones) of every backbone and FPN level, and the mean |activation|."""
    levels = record["backbone"] + record["fpn"]
    k = len(levels[0]["channel_index"])
    fig, axes = _figure(len(levels), k + 1, (1.9 * (k + 1) + 1.5, 1.5 * len(levels) + 1))
    for row, lv in zip(axes, levels):
        c, hh, ww = lv["shape"]
        for ax, ch, index in zip(row, lv["channels"], lv["channel_index"]):
            ax.imshow(ch, cmap="viridis")
            ax.set_title(f"channel {index}", fontsize=7)
        row[-1].imshow(lv["mean_abs"], cmap="magma")
        row[-1].set_title("mean |x| over channels", fontsize=7)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_ylabel(f"{lv['name']}\n{c}×{hh}×{ww}\nstride {lv['stride']}", fontsize=8, rotation=0, ha="right",
                          va="center")
    fpn = record["fpn"][0]["shape"][0]
    return _caption(fig, "2 · Backbone (res2..res5) and FPN (p2..p6) feature maps, shape C×H×W",
                    f"each level halves the resolution (stride {levels[0]['stride']} to {levels[-1]['stride']}); backbone "
                    f"channels grow with depth, while every FPN level has the same {fpn} channels (MODEL.FPN.OUT_CHANNELS), "
                    "so one RPN head and one RoI head serve all levels. Fine levels keep outlines, coarse levels respond "
                    "to whole objects.")


def plot_anchors(record: dict) -> Figure:
    """The anchors at one location per level, every anchor centre, and the count per level."""
    anchors = record["anchors"]
    levels = anchors["levels"]
    image = record["input"]["image"]
    fig, axes = _figure(1, 3, (15, 4.6))
    ax = axes[0, 0]
    _show(ax, image, "anchors at one location, one colour per level")
    for lv, color in zip(levels, LEVEL_COLORS * 2):
        for i, box in enumerate(lv["at_location"]):
            _box(ax, box, color, lw=1.2, label=lv["name"] if i == 0 else None)
    ax.plot(*anchors["location_xy"], "w+", ms=12, mew=2)
    ax.set_xlim(min(0, *(lv["at_location"][:, 0].min() for lv in levels)) - 5,
                max(image.shape[1], *(lv["at_location"][:, 2].max() for lv in levels)) + 5)
    ax.set_ylim(max(image.shape[0], *(lv["at_location"][:, 3].max() for lv in levels)) + 5,
                min(0, *(lv["at_location"][:, 1].min() for lv in levels)) - 5)
    ax = axes[0, 1]
    _show(ax, image, "every anchor centre (larger dots: coarser levels)")
    points_per_pixel = 4.2 * 72 / max(image.shape[:2])  # the panel is about 4.2 inches across
    for lv, color in zip(levels, LEVEL_COLORS * 2):
        ax.scatter(lv["centers"][:, 0], lv["centers"][:, 1], s=min(0.4 * max(lv["stride"]) * points_per_pixel, 5.0) ** 2,
                   color=color, label=lv["name"], alpha=0.8, lw=0)
    ax.set_xlim(-0.5, image.shape[1] - 0.5)
    ax.set_ylim(image.shape[0] - 0.5, -0.5)
    ax.legend(fontsize=7, loc="lower right", markerscale=3)
    ax = axes[0, 2]
    counts = [lv["count"] for lv in levels]
    bars = ax.bar([lv["name"] for lv in levels], counts, color=LEVEL_COLORS[:len(levels)])
    for bar, lv in zip(bars, levels):
        h, w = lv["grid"]
        ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height(), f"{h}×{w}×{lv['per_location']}\n= {lv['count']}",
                ha="center", va="bottom", fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("anchors")
    ax.set_title(f"anchors per level: {anchors['total']} in all", fontsize=9)
    lv0 = levels[0]
    sizes = ", ".join(lv["name"] + " " + "/".join(f"{s:g}" for s in lv["sizes"]) for lv in levels)
    ratios = ", ".join(f"{r:g}" for r in lv0["aspect_ratios"])
    return _caption(fig, "3 · Anchors: sizes × aspect ratios at every location of every level",
                    f"each level has its own anchor size ({sizes} px, MODEL.ANCHOR_GENERATOR.SIZES) at aspect ratios "
                    f"{ratios} (ASPECT_RATIOS), so "
                    f"A = {anchors['per_location']} anchors per location; a level of H×W locations has H×W×A anchors. "
                    "Fine levels hold most anchors (small boxes, dense grid), coarse levels few large ones.")


def plot_anchor_matching(record: dict) -> Figure:
    """The anchors the RPN's matcher labels positive and (nearly overlapping) negative for one object."""
    m = record["matching"]
    if m is None:
        fig, axes = _figure(1, 1, (6, 2))
        axes[0, 0].set_axis_off()
        axes[0, 0].text(0.5, 0.5, "no ground truth for this image: no anchor matching", ha="center", va="center")
        return fig
    bg, fg = m["thresholds"]
    fig, axes = _figure(1, 2, (13, 4.8))
    ax = axes[0, 0]
    _show(ax, record["input"]["image"], f"object {m['gt_index']} ({_name(record, m['gt_category_id'])})")
    for i, box in enumerate(m["gt_boxes"]):
        if i != m["gt_index"]:
            _box(ax, box, "white", lw=1, ls="--")
    for box in m["near_negative"]:
        _box(ax, box, NEG_COLOR, lw=0.8, alpha=0.8)
    for box, low in zip(m["positive"], m["low_quality"]):
        _box(ax, box, POS_COLOR, lw=1.5, ls=":" if low else "-")
    _box(ax, m["gt_box"], GT_COLOR, lw=2.5)
    ax = axes[0, 1]
    ax.hist([m["positive_iou"], m["near_negative_iou"]], bins=np.linspace(0, 1, 21), color=[POS_COLOR, NEG_COLOR],
            label=[f"positive ({m['positive_count']})", f"negatives drawn ({len(m['near_negative'])})"])
    for t, label in ((bg, f"bg < {bg:g}"), (fg, f"fg ≥ {fg:g}")):
        ax.axvline(t, color="k", ls="--", lw=1)
        ax.text(t, ax.get_ylim()[1] * 0.95, label, fontsize=8, ha="center", backgroundcolor="white")
    ax.set_xlabel("IoU with the object")
    ax.set_ylabel("anchors")
    ax.legend(fontsize=8)
    low = int(np.sum(m["low_quality"]))
    ax.set_title(f"{m['positive_count']} positive for this object, {m['negative_count']} negative, "
                 f"{m['ignored_count']} ignored (all objects)", fontsize=9)
    return _caption(fig, "4 · Anchor matching (MODEL.RPN.IOU_THRESHOLDS): positives green, negatives red, object yellow",
                    f"positive anchors (green) overlap the object by IoU ≥ {fg:g}; negatives (red, the {len(m['near_negative'])} "
                    f"that overlap it most) have IoU < {bg:g} with every object; anchors in between are ignored in the RPN "
                    f"loss. The matcher also makes each object's best anchors positive whatever their IoU (dotted green: "
                    f"{low} here), so no object is left without one; best IoU {m['best_iou']:.3g}.")


def plot_proposals(record: dict, max_drawn: int = 100) -> Figure:
    """RPN proposals before and after NMS (the highest-scoring ``max_drawn`` of each)."""
    p = record["proposals"]
    fig, axes = _figure(1, 2, (12, 4.6))
    for ax, key, title in ((axes[0, 0], "pre_nms", f"before NMS: {p['pre_nms_count']} proposals"),
                           (axes[0, 1], "post_nms", f"after NMS: {p['post_nms_count']} proposals")):
        boxes, scores = p[key], p[key + "_scores"]
        order = np.argsort(-scores, kind="stable")[:max_drawn]
        _show(ax, record["input"]["image"], f"{title} (top {len(order)} drawn)")
        top = scores[order].max() if len(order) else 1.0
        for i in order[::-1]:
            _box(ax, boxes[i], plt.cm.plasma(float(scores[i] / top) if top > 0 else 0.0), lw=0.8,
                 alpha=0.3 + 0.7 * float(scores[i] / top if top > 0 else 0))
    return _caption(fig, "5 · RPN proposals: anchors moved by the RPN's deltas, ranked by objectness",
                    f"before NMS the RPN keeps the top {p['pre_nms_topk']} per level (MODEL.RPN.PRE_NMS_TOPK_TEST, "
                    f"{p['num_levels']} levels), many of them near-copies of one another; NMS drops every "
                    f"box that overlaps a higher-scoring one by IoU > {p['nms_thresh']:g} (MODEL.RPN.NMS_THRESH) and "
                    f"keeps at most {p['post_nms_topk']} (POST_NMS_TOPK_TEST). Brighter = higher objectness.")


def plot_roi_align(record: dict) -> Figure:
    """The image inside a few proposals and what RoIAlign pooled for them (mean over channels)."""
    r = record["roi_align"]
    n = max(1, len(r["boxes"]))
    fig, axes = _figure(2, n, (2.6 * n + 1, 5.4))
    image = record["input"]["image"]
    bh = record["box_head"]
    for j in range(n):
        if j >= len(r["boxes"]):
            axes[0, j].set_axis_off()
            axes[1, j].set_axis_off()
            continue
        x0, y0, x1, y1 = (int(round(v)) for v in r["boxes"][j])
        crop = image[max(0, y0):max(y0 + 1, y1), max(0, x0):max(x0 + 1, x1)]
        i = int(r["proposal_index"][j])
        _show(axes[0, j], crop, f"proposal {i}: {x1 - x0}×{y1 - y0} px\n{_name(record, bh['best_category_id'][i])} "
                                f"{bh['best_score'][i]:.3g}")
        _show(axes[1, j], r["features"][j], f"pooled from {r['level'][j]}: {r['shape'][1]}×{r['shape'][2]}")
        axes[1, j].images[0].set_cmap("viridis")
    return _caption(fig, f"6 · RoIAlign: every proposal becomes a {r['shape'][0]}×{r['resolution']}×{r['resolution']} "
                         "feature (mean over channels shown)",
                    "proposals of any size and shape come out on the same grid (MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION), "
                    "sampled bilinearly without rounding, from the FPN level that suits the box (larger boxes, coarser "
                    "levels); the pooled grid is a coarse picture of the object inside the box.")


def plot_box_head(record: dict, top: int = 5) -> Figure:
    """The box head's top proposals, refined; and one proposal's class probabilities."""
    bh = record["box_head"]
    order = np.argsort(-bh["best_score"], kind="stable")[:top]
    fig, axes = _figure(1, 2, (13, 4.6), )
    ax = axes[0, 0]
    _show(ax, record["input"]["image"], f"the {len(order)} proposals the box head is surest of")
    for rank, i in enumerate(order):
        color = LEVEL_COLORS[rank % len(LEVEL_COLORS)]
        _box(ax, bh["proposals"][i], color, lw=1, ls="--")
        _box(ax, bh["refined"][i], color, lw=2, label=f"{_name(record, bh['best_category_id'][i])} {bh['best_score'][i]:.3g}")
    ax = axes[0, 1]
    if len(order):
        i = order[0]
        names = [record["class_names"][c] for c in sorted(record["class_names"])] + ["background"]
        values = list(bh["scores"][i]) + [float(bh["background"][i])]
        ax.barh(names[::-1], values[::-1], color=["0.6"] + ["tab:blue"] * (len(names) - 1))
        ax.set_xlim(0, 1)
        ax.set_xlabel("probability (softmax over classes + background)")
        ax.set_title(f"class probabilities of proposal {i}", fontsize=9)
    return _caption(fig, "7 · Box head: class probabilities and refined boxes (dashed: proposal, solid: refined)",
                    "the box head scores each proposal over the classes plus background and moves the box by the "
                    "deltas of its class; detections keep scores ≥ MODEL.ROI_HEADS.SCORE_THRESH_TEST "
                    f"({bh['score_thresh']:g}) after per-class NMS at IoU {bh['nms_thresh']:g} "
                    f"(NMS_THRESH_TEST). A good model puts nearly all probability on one class.")


def plot_mask_head(record: dict) -> Figure:
    """The 28×28 mask of one detection, thresholded, and pasted into the image."""
    m = record["mask"]
    if m is None:
        fig, axes = _figure(1, 1, (6, 2))
        axes[0, 0].set_axis_off()
        axes[0, 0].text(0.5, 0.5, "no detection above the score threshold: no mask", ha="center", va="center")
        return fig
    fig, axes = _figure(1, 3, (14, 4.4))
    res = m["resolution"]
    im = axes[0, 0].imshow(m["probability"], cmap="viridis", vmin=0, vmax=1)
    axes[0, 0].set_title(f"mask head output {res}×{res} ({_name(record, m['category_id'])} {m['score']:.3g})", fontsize=9)
    fig.colorbar(im, ax=axes[0, 0], shrink=0.8)
    _show(axes[0, 1], m["probability"] >= m["threshold"], f"≥ {m['threshold']:g}")
    axes[0, 1].images[0].set_cmap("gray")
    overlay = record["image"].astype(np.float32) / 255
    overlay[m["binary"]] = 0.5 * overlay[m["binary"]] + 0.5 * np.array([1.0, 0.2, 0.2])
    h, w = m["pasted"].shape
    _show(axes[0, 2], overlay, f"pasted into the {h}×{w} image")
    _box(axes[0, 2], m["box"], GT_COLOR, lw=1.5)
    for ax in axes[0, :1]:
        ax.set_xticks([])
        ax.set_yticks([])
    return _caption(fig, f"8 · Mask head: a {res}×{res} mask per detection, pasted into its box",
                    f"the mask head predicts one {res}×{res} grid of probabilities inside the detected box, for the "
                    "detected class only (twice MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION); pasting stretches it over the box "
                    f"in the original image and keeps pixels ≥ {m['threshold']:g}: the mask's detail is limited by {res} "
                    "cells across the box.")


def stage_summary(record: dict) -> str:
    """The record's shapes and counts, one line per stage (what a notebook prints beside the figures)."""
    inp, p, a = record["input"], record["proposals"], record["anchors"]
    shape = lambda s: "×".join(str(v) for v in s)  # noqa: E731
    lines = [f"image {shape(record['image'].shape[:2])} -> input {shape(inp['tensor'].shape)} "
             f"(scale {inp['scale'][0]:.4g}, padded to {shape(inp['padded_shape'])}, {inp['channel_order']})"]
    lines += [f"{lv['name']:>4}  {shape(lv['shape']):>12}  stride {lv['stride']}" for lv in record["backbone"] + record["fpn"]]
    lines.append(f"anchors: {a['per_location']} per location; " + ", ".join(
        f"{lv['name']} {lv['grid'][0]}×{lv['grid'][1]}×{lv['per_location']} = {lv['count']}" for lv in a["levels"])
        + f"; {a['total']} in all")
    m = record["matching"]
    if m is not None:
        bg, fg = m["thresholds"]
        lines.append(f"object {m['gt_index']} ({_name(record, m['gt_category_id'])}): {m['positive_count']} positive anchors "
                     f"(IoU >= {fg:g} or its best), {m['negative_count']} negative (IoU < {bg:g} with every object), "
                     f"{m['ignored_count']} ignored")
    lines.append(f"proposals: {p['pre_nms_count']} before NMS -> {p['post_nms_count']} after "
                 f"(NMS at IoU {p['nms_thresh']:g}, at most {p['post_nms_topk']})")
    r = record["roi_align"]
    lines.append(f"RoIAlign: {len(r['boxes'])} crops of {shape(r['shape'])} from " + ", ".join(r["level"]))
    bh, det = record["box_head"], record["detections"]
    lines.append(f"box head: {shape(bh['scores'].shape)} class probabilities (+ background); "
                 f"{len(det['scores'])} detections with score >= {det['score_thresh']:g}")
    if record["mask"] is not None:
        mk = record["mask"]
        lines.append(f"mask head: {mk['resolution']}×{mk['resolution']} for detection {mk['index']} "
                     f"({_name(record, mk['category_id'])}), pasted into {shape(mk['pasted'].shape)}")
    return "\n".join(lines)


STAGES = {
    "input": plot_input,
    "features": plot_feature_maps,
    "anchors": plot_anchors,
    "anchor_matching": plot_anchor_matching,
    "proposals": plot_proposals,
    "roi_align": plot_roi_align,
    "box_head": plot_box_head,
    "mask_head": plot_mask_head,
}


def stage_figures(record: dict) -> dict[str, Figure]:
    """Every stage's figure, in pipeline order."""
    return {name: plot(record) for name, plot in STAGES.items()}


def save_stage_figures(record: dict, folder: str | Path, prefix: str = "02_stage") -> list[Path]:
    """Write every stage's figure as ``{prefix}{n}_{stage}.png`` in ``folder`` (atomically); the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n, (name, fig) in enumerate(stage_figures(record).items(), start=1):
        path = folder / f"{prefix}{n}_{name}.png"
        with atomic_write(path, "wb") as f:
            fig.savefig(f, format="png", dpi=DPI, metadata={"Software": None})
        plt.close(fig)
        paths.append(path)
    return paths
