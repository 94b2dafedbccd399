"""The interactive image browser of notebook 05: image, score threshold and ground truth over a picture
drawn at its natural size (ipywidgets 7 or 8; a static figure where no widgets can render).
"""

from __future__ import annotations

import os

from . import data
from .instances import Instances
from matplotlib.figure import Figure

from .viz import _gt_vs_pred_rows, _png_bytes, _prediction_of, show_predictions


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
