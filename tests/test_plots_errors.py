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
