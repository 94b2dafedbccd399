"""Charts of numbers: data set statistics, training curves, AP and PR curves, the architecture, the
ablation, the inference checks and tables. Each returns a detached matplotlib Figure, as
:mod:`helpers.viz` does (save it with :func:`helpers.viz.save_figure`).
"""

from __future__ import annotations

import math
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from . import data
from .evaluate import HEADLINE, metric_label
from .viz import _figure, _message, _message_figure, _mpl_color, class_colors

_AP_IOU = {"AP": "IoU 0.50:0.95", "AP50": "IoU 0.50", "AP75": "IoU 0.75"}


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


def _iteration_axis(ax) -> None:
    """An x axis of iterations: whole numbers only (a run evaluated once would otherwise get 13.4, 13.6, ...)."""
    ax.set_xlabel("iteration")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))


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
    _iteration_axis(ax)
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
    _iteration_axis(ax)
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
    _iteration_axis(ax)
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
    _iteration_axis(ax)
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
        _iteration_axis(ax)
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


_TABLE_FONT_PT = 10
_TABLE_PAD = 0.04  # fraction of a cell's width left blank on each side of its text
_TABLE_MARGIN_PT = 6


def _text_points(text: str, weight: str = "normal") -> float:
    """How wide ``text`` renders at the table's font size, in points (matplotlib's own font metrics)."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import text_to_path

    width, _, _ = text_to_path.get_text_width_height_descent(text, FontProperties(size=_TABLE_FONT_PT, weight=weight),
                                                            ismath=False)
    return width


def table_figure(columns: Sequence[str], rows: Sequence[Sequence], title: str | None = None) -> Figure:
    """A table rendered as a figure: bold shaded header, banded rows, column widths fitted to the text."""
    texts = [[_cell_text(v) for v in row] for row in rows] or [["(none)"] + [""] * (len(columns) - 1)]
    # each column as wide as its widest text as matplotlib renders it (the header in bold), plus the padding
    widths = [max([_text_points(str(c), "bold")] + [_text_points(row[k]) for row in texts]) / (1 - 2 * _TABLE_PAD)
              + _TABLE_MARGIN_PT for k, c in enumerate(columns)]
    fig_w = max(sum(widths) / 72 + 0.2, 3.0)
    fig_h = 0.3 * (len(texts) + 1) + (0.45 if title else 0.1)
    fig, axes = _figure(figsize=(fig_w, fig_h))
    ax = axes[0, 0]
    ax.set_axis_off()
    table = ax.table(cellText=texts, colLabels=list(columns), cellLoc="left", colLoc="left",
                     colWidths=[w / sum(widths) for w in widths], bbox=[0, 0, 1, 1])
    table.auto_set_font_size(False)
    table.set_fontsize(_TABLE_FONT_PT)
    for (r, _), cell in table.get_celld().items():
        cell.set_edgecolor("0.8")
        cell.PAD = _TABLE_PAD
        if r == 0:
            cell.set_facecolor("0.88")
            cell.get_text().set_fontweight("bold")
        elif r % 2 == 0:
            cell.set_facecolor("0.965")
    if title:
        ax.set_title(title, fontsize=11, loc="left")
    return fig
