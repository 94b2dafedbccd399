"""helpers.plots_errors draws what the error analysis computed: one bar per error type, one cell per count."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

from helpers.confusion import confusion_matrix  # noqa: E402
from helpers.error_analysis import ERROR_TYPES, error_breakdown  # noqa: E402
from helpers.plots_errors import plot_confusion_matrix, plot_error_breakdown  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures" / "eval"
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")


def test_breakdown_bars_match_the_dap_values():
    b = error_breakdown(FIXTURES / "gt.json", FIXTURES / "results.json")
    fig = plot_error_breakdown(b)
    ax = fig.axes[0]
    widths = [patch.get_width() for patch in ax.patches]
    assert widths == [b["errors"][k]["dap"] for k in ERROR_TYPES]
    assert [t.get_text().split("\n")[0] for t in ax.get_yticklabels()] == list(ERROR_TYPES)
    assert "mask mAP@0.5 (segm AP50)" in ax.get_title()
    assert f"({b['errors']['localisation']['count']} errors)" in " ".join(t.get_text() for t in ax.texts)
    fig.canvas.draw()


@pytest.mark.parametrize("normalize", [False, True])
def test_confusion_cells_hold_the_counts(normalize):
    c = confusion_matrix(FIXTURES / "gt.json", FIXTURES / "results.json", score_thresh=0.0)
    fig = plot_confusion_matrix(c, normalize=normalize)
    ax = fig.axes[0]
    n = len(c["labels"])
    assert len(ax.texts) == n * n - 1  # every cell but background x background
    cells = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}
    for i in range(n):
        row_total = sum(c["matrix"][i])
        for j in range(n):
            if (i, j) == (n - 1, n - 1):
                continue
            value = c["matrix"][i][j]
            expected = f"{value / row_total:.2f}" if normalize and row_total else (
                "0.00" if normalize else str(value))
            assert cells[(i, j)] == expected
    assert ax.get_xticklabels()[-1].get_text() == "background\n(missed)"
    fig.canvas.draw()


def test_show_error_images_draws_the_worst_image_of_the_costliest_types(demo_root, tmp_path):
    from helpers import data
    from helpers.error_analysis import error_breakdown
    from helpers.instances import Instances
    from helpers.plots_errors import show_error_images

    split = data.load_split(demo_root / data.TRAIN_JSON, check_images=False)
    anns = [a for a in split.annotations if a["image_id"] == split.images[0]["id"]]
    results = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": [a["bbox"][0] + 300, a["bbox"][1], 5, 5],
                "score": 0.9} for a in anns]  # every detection on background: every object missed
    b = error_breakdown(split.coco, results, iou_type="bbox")
    predictions = {img["id"]: Instances.empty((img["height"], img["width"])) for img in split.images}
    fig = show_error_images(split, predictions, b, kinds=2)
    assert len(fig.axes) == 2 * len([k for k in b["errors"] if b["errors"][k]["dap"] > 0][:2])
    assert "worst for" in " ".join(ax.get_title() for ax in fig.axes)
    fig.savefig(tmp_path / "e.png")
