"""Figures and the browser: each renders on small synthetic inputs, pixels and PNG bytes behave."""

from __future__ import annotations

import json

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from helpers import data, evaluate, image_browser, plots, viz
from helpers.instances import Instances
from helpers.submission import instances_to_results

H, W = 48, 64
NAMES = {1: "cat", 2: "dog", 3: "bird"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _rect_polygon(x0, y0, x1, y1) -> list[list[float]]:
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    """Three noise images in the Tiny VOC layout: two annotated (rectangles), one without annotations."""
    root = tmp_path_factory.mktemp("viz_split")
    (root / "train_images").mkdir()
    rng = np.random.default_rng(0)
    boxes = {1: [(4, 4, 30, 26, 1), (34, 10, 60, 40, 2)], 2: [(10, 8, 50, 44, 3)], 3: []}
    images, annotations = [], []
    for image_id, rects in boxes.items():
        name = f"img{image_id}.png"
        Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(root / "train_images" / name)
        images.append({"id": image_id, "file_name": name, "height": H, "width": W})
        for x0, y0, x1, y1, cat in rects:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": cat, "iscrowd": 0,
                                "area": float((x1 - x0) * (y1 - y0)), "bbox": [x0, y0, x1 - x0, y1 - y0],
                                "segmentation": _rect_polygon(x0, y0, x1, y1)})
    coco = {"images": images, "annotations": annotations,
            "categories": [{"id": i, "name": n} for i, n in NAMES.items()]}
    (root / "pascal_train.json").write_text(json.dumps(coco))
    return data.load_split(root / "pascal_train.json")


@pytest.fixture(scope="module")
def predictions(split) -> dict[int, Instances]:
    """Per image: its ground truth as confident predictions, plus one low-score false positive."""
    out = {}
    for image in split.images:
        masks, cats, boxes = viz.gt_instances(split, image)
        fp = np.zeros((1, H, W), bool)
        fp[30:40, 2:12] = True
        out[image["id"]] = Instances(np.concatenate([boxes, [[2, 30, 12, 40]]]), np.concatenate([masks, fp]),
                                     np.concatenate([np.full(len(cats), 0.9), [0.3]]), np.append(cats, 2), (H, W))
    return out


def _assert_renders(fig, tmp_path, name="fig.png") -> bytes:
    """The figure has axes and saves as a PNG; its bytes."""
    assert isinstance(fig, Figure) and fig.axes
    path = viz.save_figure(fig, tmp_path / name, dpi=40)
    content = path.read_bytes()
    assert content.startswith(PNG_SIGNATURE)
    return content


# ------------------------------------------------------------------------------ drawing


def test_class_colors_distinct_stable_and_valid():
    colors = viz.class_colors(20)
    assert colors == viz.class_colors(20)
    assert len(set(colors)) == 20
    assert all(len(c) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in c) for c in colors)
    assert viz.class_colors(5) == colors[:5]


def test_draw_instances_blends_inside_masks_only():
    image = np.full((H, W, 3), 100, np.uint8)
    masks = np.zeros((2, H, W), bool)
    masks[0, 5:20, 5:25] = True
    masks[1, 25:45, 30:60] = True
    out = viz.draw_instances(image, masks, [1, 2], NAMES, alpha=0.5, labels=False)
    assert out.shape == image.shape and out.dtype == np.uint8
    inside = masks.any(axis=0)
    assert np.array_equal(out[~inside], image[~inside])
    changed = (out != image).any(axis=2)
    assert changed[inside].all()
    interior = out[10, 10].astype(int)  # away from the outline: a 50/50 blend with the class colour
    expected = np.rint(0.5 * 100 + 0.5 * np.array(viz.class_colors(3)[0]))
    assert np.abs(interior - expected).max() <= 1


def test_draw_instances_labels_boxes_grayscale_and_empty():
    gray = np.full((H, W), 60, np.uint8)
    masks = np.zeros((1, H, W), bool)
    masks[20:40, 20:40] = True
    out = viz.draw_instances(gray, masks, [7], NAMES, scores=[0.93], boxes=[[20, 20, 40, 40]])
    assert out.shape == (H, W, 3)
    outside = ~masks[0]
    assert (out[outside] != 60).any()  # box and label reach outside the mask
    empty = viz.draw_instances(gray, np.zeros((0, H, W), bool), [], NAMES)
    assert np.array_equal(empty, np.repeat(gray[..., None], 3, axis=2))


def test_gt_instances(split):
    masks, cats, boxes = viz.gt_instances(split, 1)
    assert masks.shape == (2, H, W) and masks.dtype == bool
    assert cats.tolist() == [1, 2]
    assert boxes.tolist() == [[4, 4, 30, 26], [34, 10, 60, 40]]
    assert masks[0, 10, 10] and not masks[0, 40, 50]
    masks, cats, boxes = viz.gt_instances(split, split.image_by_id(3))
    assert masks.shape == (0, H, W) and cats.shape == (0,) and boxes.shape == (0, 4)


# ------------------------------------------------------------------------------ files


def test_save_figure_is_atomic_and_deterministic(tmp_path):
    stats_rows = [{"iteration": i, "total_loss": 2.0 / (i + 1), "loss_mask": 0.5, "lr": 0.01} for i in range(20)]
    first = viz.save_figure(plots.plot_training_curves(stats_rows), tmp_path / "a.png", dpi=50)
    second = viz.save_figure(plots.plot_training_curves(stats_rows), tmp_path / "b.png", dpi=50)
    assert first.read_bytes() == second.read_bytes()
    with Image.open(first) as im:
        assert im.format == "PNG" and im.size[0] > 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png"]  # no temp file left


def test_save_figure_close_false_returns_the_figure(tmp_path):
    fig = plots.table_figure(["a"], [[1]])
    assert viz.save_figure(fig, tmp_path / "t.png", close=False) is fig
    assert (tmp_path / "t.png").read_bytes().startswith(PNG_SIGNATURE)


# ------------------------------------------------------------------------------ figures


def test_image_figures(split, predictions, tmp_path):
    _assert_renders(viz.show_samples(split, n=6, seed=0), tmp_path)
    _assert_renders(viz.show_gt_vs_pred(split, 1, predictions[1]), tmp_path)
    pixels = data.read_image(split.image_path(1))
    items = [(pixels, predictions[1], "one"), (pixels, predictions[2], "two")]
    _assert_renders(viz.show_predictions(items, NAMES, score_thresh=0.5, cols=3), tmp_path)


def test_show_samples_is_reproducible(split, tmp_path):
    a = _assert_renders(viz.show_samples(split, n=1, seed=3), tmp_path, "a.png")
    b = _assert_renders(viz.show_samples(split, n=1, seed=3), tmp_path, "b.png")
    assert a == b


def test_dataset_stats_figure(split, tmp_path):
    _assert_renders(plots.plot_dataset_stats(data.dataset_stats(split)), tmp_path)


def test_training_curves_with_and_without_rows(tmp_path):
    rows = [{"iteration": i, "total_loss": 3.0 - i / 50, "loss_cls": 1.0, "loss_mask": 0.7, "lr": 1e-4 * i}
            for i in range(100)]
    rows.append({"iteration": 99, "segm/AP": 0.2, "segm/AP50": 0.4, "bbox/AP": 0.25})
    fig = plots.plot_training_curves(rows)
    assert len(fig.axes) == 4
    _assert_renders(fig, tmp_path)
    empty = plots.plot_training_curves([])
    assert any("no metrics yet" in t.get_text() for ax in empty.axes for t in ax.texts)
    _assert_renders(empty, tmp_path)


def test_evaluation_figures_from_real_evaluation(split, predictions, tmp_path):
    results = [r for image_id, inst in predictions.items() for r in instances_to_results(image_id, inst)]
    metrics = evaluate.evaluate(split.coco, results, "segm")
    _assert_renders(plots.plot_per_class_ap(metrics, metric="AP50"), tmp_path)
    _assert_renders(plots.plot_pr_curves(evaluate.precision_recall(split.coco, results, "segm")), tmp_path)
    errors = evaluate.per_image_errors(split.coco, results, "segm")
    fig = viz.show_worst_images(split, predictions, errors, n=2)
    assert any("false positives" in ax.get_title() for ax in fig.axes)
    _assert_renders(fig, tmp_path)


def test_per_class_ap_and_pr_handle_classes_without_ground_truth(tmp_path):
    metrics = {"iou_type": "segm", "per_class": {"cat": {"AP": 0.5, "AP50": 0.8}, "dog": {"AP": -1.0, "AP50": -1.0}}}
    fig = plots.plot_per_class_ap(metrics, metric="AP50")
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["cat"]
    _assert_renders(fig, tmp_path)
    pr = {"cat": {"recall": [0.0, 0.5, 1.0], "precision": [1.0, 0.8, 0.0], "ap": 0.6},
          "dog": {"recall": [], "precision": [], "ap": -1.0}}
    _assert_renders(plots.plot_pr_curves(pr), tmp_path)


def test_ablation_chart_shows_every_seed_and_the_interval_of_our_runs_only(tmp_path):
    from helpers import stats

    summary = [{"variant": "no_decay", "weight_decay": 0.0, "weight_decay_bias": 0.0,
                "segm/AP50": stats.summarize([0.60, 0.62, 0.61])},
               {"variant": "homework", "weight_decay": 1e-4, "weight_decay_bias": 0.01,
                "segm/AP50": stats.summarize([0.58, 0.66])},
               {"variant": "not run", "segm/AP50": stats.summarize([])}]
    fig = plots.plot_ablation(summary)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert len(labels) == 2 and "wd 0.0001" in labels[1] and "n = 3" in labels[0] and "n = 2" in labels[1]
    assert "mask mAP@0.5 (segm AP50)" in ax.get_ylabel() and "final checkpoint" in ax.get_title()
    dots = np.concatenate([c.get_offsets()[:, 1] for c in ax.collections if hasattr(c, "get_offsets")
                           and len(c.get_offsets()) in (2, 3)])
    assert sorted(np.round(dots, 6)) == [0.58, 0.6, 0.61, 0.62, 0.66]
    assert [round(p.get_height(), 6) for p in ax.patches] == [0.61, 0.62]
    assert "t-interval" in ax.get_xlabel()
    _assert_renders(fig, tmp_path)


def test_channel_order_and_threshold_sweep_figures(tmp_path):
    order = {"engine": "detectron2", "trained_with": "BGR", "rows": [
        {"fed": "BGR", "as_trained": True, "segm/AP50": 0.5, "segm/AP": 0.3},
        {"fed": "RGB", "as_trained": False, "segm/AP50": 0.4, "segm/AP": 0.2}]}
    fig = plots.plot_channel_order(order)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["mask mAP@0.5 (segm AP50)", "mask AP@[.5:.95] (segm AP)"]
    assert sorted(round(p.get_height(), 6) for p in ax.patches) == [0.2, 0.3, 0.4, 0.5]
    _assert_renders(fig, tmp_path)
    sweep = {"default_threshold": 0.05, "homework_threshold": 0.5, "rows": [
        {"threshold": t, "segm/AP50": 0.6 - t / 2, "segm/AP": 0.4 - t / 3} for t in (0.0, 0.05, 0.5, 0.9)]}
    fig = plots.plot_threshold_sweep(sweep)
    ax = fig.axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[:2] == ["mask mAP@0.5 (segm AP50)", "mask AP@[.5:.95] (segm AP)"]
    assert "ours (0.05)" in legend and "the homework's (0.5)" in legend
    assert list(ax.lines[0].get_xdata()) == [0.0, 0.05, 0.5, 0.9]
    _assert_renders(fig, tmp_path)


def test_val_curves_name_the_headline_metric(tmp_path):
    rows = [{"iteration": 1, "total_loss": 1.0, "lr": 0.1, "segm/AP": 0.2, "segm/AP50": 0.4}]
    fig = plots.plot_training_curves(rows)
    names = {t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()}
    assert {"mask mAP@0.5 (segm AP50)", "mask AP@[.5:.95] (segm AP)"} <= names
    fig = plots.plot_eval_curves({"a": rows})
    assert [ax.get_title() for ax in fig.axes] == ["Validation mask mAP@0.5 (segm AP50)",
                                                  "Validation mask AP@[.5:.95] (segm AP)"]


def test_table_figure_formats_cells(tmp_path):
    fig = plots.table_figure(["key", "value"], [["lr", 0.00025], ["iters", 30000.0], ["ap", 0.474163],
                                              ["sizes", (640, 800)], ["none", None]], title="Hyperparameters")
    cells = {cell.get_text().get_text() for cell in fig.axes[0].tables[0].get_celld().values()}
    assert {"key", "value", "0.00025", "30000", "0.4742", "640, 800", "–"} <= cells
    _assert_renders(fig, tmp_path)


@pytest.mark.parametrize("columns, rows", [
    (["WEIGHT_DECAY", "WEIGHT_DECAY_BIAS", "WEIGHT_DECAY_NORM"], [[0.0001, 0.01, 0.0]]),
    (["mask mAP@0.5 (segm AP50)", "n"], [[0.85641234, 3], [0.1, 12345678]]),
    (["x"], [["a long cell text that is much wider than its header, with | and unicode – ×"]]),
])
def test_table_figure_fits_every_text_in_its_cell(columns, rows):
    """No header or cell is clipped: each text, as drawn, lies inside its cell."""
    fig = plots.table_figure(columns, rows, title="t")
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    for (r, c), cell in fig.axes[0].tables[0].get_celld().items():
        text, box = cell.get_text().get_window_extent(renderer), cell.get_window_extent(renderer)
        assert box.x0 <= text.x0 and text.x1 <= box.x1, (r, c, cell.get_text().get_text())


def test_eval_curves_and_architecture(tmp_path):
    curves = {"a": [{"iteration": 10, "segm/AP": 0.1, "segm/AP50": 0.2}, {"iteration": 20, "segm/AP": 0.2}],
              "b": []}
    _assert_renders(plots.plot_eval_curves(curves), tmp_path)
    stages = [{"stage": "input", "shape": [1, 3, 64, 64]}, {"stage": "backbone.res2", "shape": [1, 256, 16, 16]},
              {"stage": "backbone.res3", "shape": [1, 512, 8, 8]}, {"stage": "output.masks", "shape": [5, 1, 64, 64]}]
    fig = plots.plot_architecture(stages, title="tiny")
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "backbone" in texts and "res3\n1 × 512 × 8 × 8" in texts
    _assert_renders(fig, tmp_path)


# ------------------------------------------------------------------------------ browser


def test_browser_static_returns_a_figure(split, predictions, tmp_path, capsys):
    fig = image_browser.browser(split, predictions, NAMES, static=True)
    assert "static figure" in capsys.readouterr().out
    _assert_renders(fig, tmp_path)


def test_browser_auto_detects_headless(split, predictions, monkeypatch):
    monkeypatch.setenv("HELPERS_HEADLESS", "1")
    assert isinstance(image_browser.browser(split, predictions, NAMES), Figure)
    monkeypatch.delenv("HELPERS_HEADLESS")
    assert isinstance(image_browser.browser(split, predictions, NAMES), Figure)  # no Jupyter kernel under pytest


def test_browser_widget_rerenders_on_every_control(split, predictions):
    widgets = pytest.importorskip("ipywidgets")
    ui = image_browser.browser(split, predictions, NAMES, score_thresh=0.5, static=False)
    assert isinstance(ui, widgets.VBox)
    (choose, threshold, show_gt), view = ui.children[0].children, ui.children[1]
    assert isinstance(view, widgets.Image)
    seen = [bytes(view.value)]
    threshold.value = 0.1  # shows the low-score false positive too
    seen.append(bytes(view.value))
    show_gt.value = False
    seen.append(bytes(view.value))
    choose.value = 2
    seen.append(bytes(view.value))
    assert all(v.startswith(PNG_SIGNATURE) for v in seen)
    assert len(set(seen)) == 4


def test_browser_rejects_predictions_outside_the_split(split):
    with pytest.raises(ValueError, match="none of the predicted images"):
        image_browser.browser(split, {999: Instances.empty((H, W))}, NAMES, static=True)


def test_iteration_axes_tick_whole_iterations():
    """A run evaluated once (the demo ablation's) gets iteration ticks like 14, never 13.8 or 14.2."""
    fig = plots.plot_eval_curves({"a": [{"iteration": 14, "segm/AP": 0.5, "segm/AP50": 0.8}]})
    fig.canvas.draw()
    for ax in fig.axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
