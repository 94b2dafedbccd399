"""Figures of the error analysis: the TIDE breakdown bars and the class-confusion matrix.

Both take what :mod:`helpers.error_analysis` returns, return a matplotlib
:class:`~matplotlib.figure.Figure` detached from pyplot (the notebook shows it once; save it as
any other figure) and set no backend.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

_ERROR_COLORS = {  # one colour per error type, kept across figures
    "classification": "#d62728", "localisation": "#ff7f0e", "both": "#8c564b",
    "duplicate": "#9467bd", "background": "#1f77b4", "missed": "#7f7f7f",
}
_ERROR_MEANINGS = {
    "classification": "right place, wrong class",
    "localisation": "right class, poor fit",
    "both": "wrong class, poor fit",
    "duplicate": "object already found",
    "background": "on no object",
    "missed": "object never found",
}


def _figure(figsize: tuple[float, float]):
    fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    plt.close(fig)
    return fig, ax


def plot_error_breakdown(breakdown: dict) -> Figure:
    """Horizontal bars: how much mAP fixing each error type alone would add (dAP), with the
    number of errors of that type; the title names the metric and its base value."""
    kinds = list(breakdown["errors"])
    daps = [breakdown["errors"][k]["dap"] for k in kinds]
    counts = [breakdown["errors"][k]["count"] for k in kinds]
    fig, ax = _figure((8.0, 3.4))
    bars = ax.barh(range(len(kinds)), daps, color=[_ERROR_COLORS.get(k, "#333333") for k in kinds])
    ax.bar_label(bars, labels=[f"{d:.4g}  ({n} error{'s' if n != 1 else ''})" for d, n in zip(daps, counts)],
                 padding=3, fontsize=8)
    ax.set_yticks(range(len(kinds)), [f"{k}\n{_ERROR_MEANINGS.get(k, '')}" for k in kinds], fontsize=8)
    ax.invert_yaxis()
    top = max(daps + [0.0])
    ax.set_xlim(0, max(top * 1.45, 0.05))
    ax.set_xlabel("dAP: mAP gained if an oracle fixed every error of this type (and only it)")
    ax.set_title(f"Where the {breakdown['metric']} of {breakdown['base_map']:.4g} loses the rest "
                 f"(TIDE, foreground IoU {breakdown['fg_iou']:g}, background {breakdown['bg_iou']:g})", fontsize=9)
    return fig


def plot_confusion_matrix(confusion: dict, normalize: bool = False) -> Figure:
    """The class-confusion matrix from :func:`helpers.error_analysis.confusion_matrix`: ground
    truth in rows, prediction in columns, each cell's count written in it; the last row holds the
    false positives on background, the last column the missed objects.

    ``normalize``: colour (and write) each row as a fraction of its ground-truth objects.
    """
    matrix = np.asarray(confusion["matrix"], dtype=float)
    labels = list(confusion["labels"])
    shown = matrix.copy()
    if normalize:
        totals = matrix.sum(axis=1, keepdims=True)
        shown = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
    n = len(labels)
    size = 2.4 + 0.55 * n
    fig, ax = _figure((size + 1.2, size))
    image = ax.imshow(shown, cmap="Blues", vmin=0)
    fig.colorbar(image, ax=ax, shrink=0.8, label="fraction of the row" if normalize else "count")
    limit = shown.max() if shown.size else 0
    for i in range(n):
        for j in range(n):
            if i == n - 1 and j == n - 1:
                continue  # background against background is not counted
            text = f"{shown[i, j]:.2f}" if normalize else f"{int(matrix[i, j])}"
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    color="white" if limit and shown[i, j] > 0.6 * limit else "black")
    rows = labels[:-1] + [f"{labels[-1]}\n(false positive)"]
    cols = labels[:-1] + [f"{labels[-1]}\n(missed)"]
    ax.set_xticks(range(n), cols, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), rows, fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("ground-truth class")
    ax.set_title(f"Confusion at {confusion['iou_type']} IoU ≥ {confusion['iou']:g}, "
                 f"detections scoring ≥ {confusion['score_thresh']:g}", fontsize=9)
    return fig


def show_error_images(split, predictions: dict, breakdown: dict, kinds: int = 3, score_thresh: float = 0.5) -> Figure:
    """Ground truth beside prediction for the image that costs most mAP in each of the ``kinds``
    costliest error types (those with a positive dAP), one row each, labelled with its type."""
    from . import viz

    ranked = sorted((k for k, v in breakdown["errors"].items() if v["dap"] > 0 and breakdown["top_images"].get(k)),
                    key=lambda k: -breakdown["errors"][k]["dap"])[:kinds]
    if not ranked:
        raise ValueError("no error type costs any mAP: nothing to show")
    rows = []
    for kind in ranked:
        image = split.image_by_id(breakdown["top_images"][kind][0]["image_id"])
        rows.append((image, viz._prediction_of(predictions, image), f"worst for {kind}: {_ERROR_MEANINGS[kind]}"))
    return viz._gt_vs_pred_rows(split, rows, score_thresh, "The images that cost the most, per error type")
