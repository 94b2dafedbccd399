"""The interactive walkthrough in a real browser: JupyterLab in headless Chromium (selenium).

One JupyterLab server, started from this environment on 127.0.0.1 with a token, serves a copy of
the project whose notebooks get a tiny schedule on the demo data (an ``injected-parameters`` cell, as
papermill adds). Each of the five notebooks is opened and run with Run > Run All Cells, then saved; the
tests below check what the page showed and what the saved notebook holds, and drive notebook 05's
image browser (slider, image dropdown, ground-truth checkbox).

Screenshots, the console log and the server log go to ``runs/browser-test/`` (or $BROWSER_TEST_ARTIFACTS);
every failure message names that folder. Skips only when Chromium or chromedriver is missing
(``.ci/run`` installs them); a wait that runs out is a failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from browser_support import (BrowserTestError, JupyterLab, LabPage, copy_project, find_browser, set_parameters,
                             start_chromium, wait_for)
from helpers.pipeline import NOTEBOOK_ORDER

PROJECT_ROOT = Path(__file__).resolve().parents[1]
BROWSER = find_browser()
pytestmark = [pytest.mark.browser, pytest.mark.slow]
if isinstance(BROWSER, str):
    pytestmark.append(pytest.mark.skip(reason=BROWSER))

ARTIFACTS = Path(os.environ.get("BROWSER_TEST_ARTIFACTS") or PROJECT_ROOT / "runs" / "browser-test")
NOTEBOOK_TIMEOUT = float(os.environ.get("BROWSER_TEST_NOTEBOOK_TIMEOUT", "900"))  # seconds per notebook
WIDGET_TIMEOUT = 90.0  # seconds for a widget to render or redraw

# The papermill test's tiny schedule (tests/test_notebooks.py) with the engine tests' small heads
# (tests/tiny_schedule.py); the ablation evaluates once per variant, and 02 trains a few more iterations,
# so that a progress line per iteration would exceed the bound on the training cell's text.
TINY = {"SOLVER.MAX_ITER": 4, "SOLVER.CHECKPOINT_PERIOD": 4, "TEST.EVAL_PERIOD": 4, "SOLVER.WARMUP_ITERS": 1,
        "SOLVER.STEPS": [3], "SOLVER.IMS_PER_BATCH": 2, "INPUT.MIN_SIZE_TRAIN": [96], "INPUT.MAX_SIZE_TRAIN": 128,
        "INPUT.MIN_SIZE_TEST": 96, "INPUT.MAX_SIZE_TEST": 128, "MODEL.ROI_HEADS.SCORE_THRESH_TEST": 0.0,
        "MODEL.FPN.OUT_CHANNELS": 32, "MODEL.ROI_BOX_HEAD.FC_DIM": 64, "MODEL.ROI_MASK_HEAD.CONV_DIM": 16,
        "MODEL.ROI_MASK_HEAD.NUM_CONV": 1, "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": 32,
        "MODEL.RPN.PRE_NMS_TOPK_TRAIN": 200, "MODEL.RPN.POST_NMS_TOPK_TRAIN": 100,
        "MODEL.RPN.PRE_NMS_TOPK_TEST": 100, "MODEL.RPN.POST_NMS_TOPK_TEST": 50, "TEST.DETECTIONS_PER_IMAGE": 20}
TRAIN_ITERS = 24
TINY_TRAINING = {**TINY, "SOLVER.MAX_ITER": TRAIN_ITERS, "SOLVER.CHECKPOINT_PERIOD": 8, "TEST.EVAL_PERIOD": 8,
                 "SOLVER.STEPS": [12]}
MAX_TRAINING_TEXT_LINES = TRAIN_ITERS - 4  # fewer text lines than iterations: no line per iteration
FIGURE_NOTEBOOKS = ("01_data_exploration", "02_training", "03_weight_decay_ablation", "05_visualization")
# What ipywidgets and its JupyterLab manager log when a widget cannot be shown; not JupyterLab's notes
# on plugins that activate slowly on a loaded machine ("... is taking too long to activate", "took N ms").
WIDGET_ERROR = re.compile(r"@jupyter-widgets|ipywidgets|jupyterlab-manager|widget[- ](model|view)|Error displaying widget|"
                          r"Could not (create|render|instantiate)|is not registered|Model not found|comm.*(not found|fail)",
                          re.I)
SLOW_PLUGIN = re.compile(r"Plugin \S+ (\(with \d+ dependants\) took [\d.]+ ?ms to activate|is taking too long to activate)")
# A cell's visible value that nobody meant to show: a bool/None, a default object repr, a path object.
STRAY_REPR = re.compile(r"^(True|False|None|<.* at 0x[0-9a-f]+>|(Posix|Windows)?Path\(.*\)|<Figure size .*>)$", re.S)


def write_course(path: Path, data_root: Path, run_root: Path) -> Path:
    """The course settings every notebook copy reads: the demo course on the demo data with the tiny
    schedule (02 a few more iterations), run folder in the tmp dir."""
    from helpers import course

    return course.write_course_file(path, "demo", data_root=str(data_root), run_root=str(run_root), make_demo_data=False,
                                    overrides=TINY, notebooks={"02_training": {"overrides": TINY_TRAINING},
                                                               "03_weight_decay_ablation": {"ablation_overrides": {}}})


@dataclass
class Ran:
    """One notebook after Run All Cells: the page's cells, the saved notebook, and how long it took."""
    name: str
    cells: list[dict]
    saved: dict
    seconds: float
    progress_while_running: int = 0  # progress widgets seen in a running ([*]) cell

    def code_cells(self) -> list[tuple[int, dict]]:
        return [(i, c) for i, c in enumerate(self.saved["cells"]) if c["cell_type"] == "code"]


@dataclass
class Walkthrough:
    page: LabPage
    ran: dict[str, Ran] = field(default_factory=dict)
    console: list[dict] = field(default_factory=list)

    def collect_console(self) -> list[dict]:
        """The browser console so far (chromedriver hands each entry out once), also written to console.log."""
        self.console += self.page.console_log()
        (ARTIFACTS / "console.log").write_text(
            "".join(f"{e.get('level')} {e.get('source', '')} {e.get('message')}\n" for e in self.console),
            encoding="utf-8")
        return self.console


def where() -> str:
    return f"(screenshots and logs: {ARTIFACTS})"


def run_notebook(page: LabPage, course: Path, name: str) -> Ran:
    path = f"notebooks/{name}.ipynb"
    file = course / path
    ncells = len(json.loads(file.read_text(encoding="utf-8"))["cells"])
    page.open(path, ncells)
    seen = {"progress": 0}

    def watch(snapshot: list[dict]) -> None:
        running = [c for c in snapshot if c["prompt"] == "[*]:" and c["progress"]]
        if running and not seen["progress"]:
            page.screenshot(f"{name}_progress_while_running")
        seen["progress"] = max([seen["progress"]] + [c["progress"] for c in running])

    seconds = page.run_all(path, NOTEBOOK_TIMEOUT, while_running=watch)
    if name == "05_visualization":
        wait_for_widget_browser(page, browser_cell_index(file))
    cells = page.cells()
    page.screenshot(name)
    screenshot_cells(page, name, cells)
    saved = page.save(file)
    return Ran(name, cells, saved, seconds, seen["progress"])


def screenshot_cells(page: LabPage, name: str, cells: list[dict]) -> None:
    from selenium.webdriver.common.by import By

    elements = page.driver.find_elements(By.CSS_SELECTOR, ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell")
    for cell, element in zip(cells, elements):
        if cell["code"] and cell["mimes"]:
            page.driver.execute_script("arguments[0].scrollIntoView()", element)
            element.screenshot(str(ARTIFACTS / f"{name}_cell{cell['index']:02d}.png"))


def widget_cell(cells: list[dict]) -> dict | None:
    return next((c for c in reversed(cells) if c["code"] and c["widgets"]), None)


def browser_cell_index(notebook: Path) -> int:
    """The index of the cell that calls the image browser, in the notebook file."""
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    return next(i for i, c in enumerate(cells) if "image_browser.browser(" in "".join(c["source"]))


def wait_for_widget_browser(page: LabPage, index: int) -> None:
    """The image browser's widgets in the page, its picture loaded; a clear failure otherwise, naming
    what the browser's cell shows instead, with a screenshot of that cell."""
    def ready() -> bool:
        cell = widget_cell(page.cells())
        return bool(cell and any(i["widget"] and i["complete"] and i["natural"][0] > 0 for i in cell["imgs"]))

    def shown() -> str:
        from selenium.webdriver.common.by import By

        cell = page.cells()[index]
        element = page.driver.find_elements(By.CSS_SELECTOR, ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell")[index]
        page.driver.execute_script("arguments[0].scrollIntoView()", element)
        shot = ARTIFACTS / "05_widgets_not_rendered_cell.png"
        element.screenshot(str(shot))
        return (f"the image browser's cell (In {cell['prompt']} cell {index}) shows {cell['mimes']} "
                f"{[t[:200] for t in cell['text']]} (screenshots {shot}, {page.screenshot('05_widgets_not_rendered')})")

    wait_for("05's image browser to render as live widgets with its picture (not 'Loading widget...', "
             "not a text repr)", ready, WIDGET_TIMEOUT, on_timeout=shown)


@pytest.fixture(scope="module")
def walkthrough(tmp_path_factory, demo_root):
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.fail("Chromium is here but selenium is not installed: pip install -e '.[test]'")
    chromium, chromedriver = BROWSER
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    work = tmp_path_factory.mktemp("browser")
    course = copy_project(PROJECT_ROOT, work / "course")
    run_root = work / "runs" / "browser"
    settings = write_course(work / "course.yaml", demo_root, run_root)
    for name in NOTEBOOK_ORDER:
        set_parameters(course / "notebooks" / f"{name}.ipynb", {"settings": str(settings)})
    lab = JupyterLab(course, work / "jupyter", ARTIFACTS / "jupyterlab.log")
    driver = None
    started = time.monotonic()
    try:
        lab.start()
        driver = start_chromium(chromium, chromedriver, work / "chromium-profile")
        walk = Walkthrough(LabPage(driver, lab, ARTIFACTS))
        for name in NOTEBOOK_ORDER:
            try:
                walk.ran[name] = run_notebook(walk.page, course, name)
            except BrowserTestError as e:
                pytest.fail(f"{name}: {e} {where()}")
            walk.collect_console()
            print(f"{name}: Run All Cells took {walk.ran[name].seconds:.0f} s")
            if name != NOTEBOOK_ORDER[-1]:
                lab.shutdown_kernels()  # frees the CPU and memory for the next notebook
        print(f"the five notebooks ran in JupyterLab in {time.monotonic() - started:.0f} s {where()}")
        yield walk
    finally:
        if driver is not None:
            driver.quit()
        lab.stop()


def cell_label(cell: dict) -> str:
    """A saved code cell as a person finds it: its prompt and the start of its last line."""
    lines = [line for line in "".join(cell.get("source", "")).splitlines() if line.strip()]
    return f"In [{cell.get('execution_count')}] ({(lines[-1] if lines else '').strip()[:60]!r})"


# ----------------------------------------------------------------------------- every notebook


def test_every_notebook_runs_all_cells_without_an_error(walkthrough):
    problems = []
    for name, ran in walkthrough.ran.items():
        for index, cell in ran.code_cells():
            if cell.get("execution_count") is None:
                problems.append(f"{name} cell {index} ({cell_label(cell)}): did not run")
            for out in cell.get("outputs", []):
                if out["output_type"] == "error":
                    problems.append(f"{name} {cell_label(cell)}: {out['ename']}: {out['evalue']}")
        prompts = [c["prompt"] for c in ran.cells if c["code"]]
        if not all(re.fullmatch(r"\[\d+\]:", p) for p in prompts):
            problems.append(f"{name}: the page's prompts are {prompts}")
    assert not problems, "; ".join(problems) + f" {where()}"


def test_figures_render_as_images_at_most_at_natural_size(walkthrough):
    problems = []
    for name, ran in walkthrough.ran.items():
        pngs = sum("image/png" in out.get("data", {}) for _, cell in ran.code_cells() for out in cell.get("outputs", []))
        figures = [img for cell in ran.cells for img in cell["imgs"] if not img["widget"]]
        if name in FIGURE_NOTEBOOKS and not pngs:
            problems.append(f"{name}: no figure in its outputs")
        if len(figures) != pngs:
            problems.append(f"{name}: the page shows {len(figures)} figure images for {pngs} PNG outputs")
        for cell in ran.cells:
            for img in cell["imgs"]:
                if not (img["complete"] and img["natural"][0] > 0):
                    problems.append(f"{name} cell {cell['index']}: an image did not load ({img['src']})")
                elif img["shown"][0] > img["natural"][0] + 0.5:
                    problems.append(f"{name} cell {cell['index']}: an image of natural width {img['natural'][0]} px "
                                    f"is drawn {img['shown'][0]:.0f} px wide (upscaled)")
    assert not problems, "; ".join(problems) + f" {where()}"


def test_every_visible_output_is_intended(walkthrough):
    """No cell shows a stray value: an execute_result that is only a plain-text repr such as False."""
    stray = []
    for name, ran in walkthrough.ran.items():
        for _, cell in ran.code_cells():
            for out in cell.get("outputs", []):
                if out["output_type"] != "execute_result" or set(out.get("data", {})) != {"text/plain"}:
                    continue
                text = "".join(out["data"]["text/plain"]).strip()
                if STRAY_REPR.match(text):
                    stray.append(f"{name} {cell_label(cell)} shows {text[:80]!r}")
    assert not stray, "; ".join(stray) + " (end the cell with a statement, or print what is meant to show)"


# ----------------------------------------------------------------------------- 02: progress


def test_training_shows_a_live_progress_bar_and_little_text(walkthrough):
    ran = walkthrough.ran["02_training"]
    bars = [c for c in ran.cells if c["progress"]]
    assert bars, f"02_training: no progress bar widget in any cell's output {where()}"
    assert ran.progress_while_running, f"02_training: the progress bar was not shown while training ran {where()}"
    cell = bars[0]
    bar_text = " ".join(cell["bars"])
    assert f"{TRAIN_ITERS}/{TRAIN_ITERS}" in bar_text, \
        f"02_training: the bar does not show {TRAIN_ITERS}/{TRAIN_ITERS} iterations at the end: {bar_text!r} {where()}"
    lines = [line for t, m in zip(cell["text"], cell["mimes"]) if "widget" not in m for line in t.splitlines()
             if line.strip()]
    assert len(lines) <= MAX_TRAINING_TEXT_LINES, (
        f"02_training: the training cell printed {len(lines)} text lines for {TRAIN_ITERS} iterations "
        f"(at most {MAX_TRAINING_TEXT_LINES}): {lines[:5]} ... {where()}")


# ----------------------------------------------------------------------------- 05: the image browser


def _browser_elements(page: LabPage) -> dict:
    from selenium.webdriver.common.by import By

    outputs = page.driver.find_elements(By.CSS_SELECTOR, ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell")
    cell = [c for c in outputs if c.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output .jupyter-widgets")][-1]
    find = lambda css: cell.find_elements(By.CSS_SELECTOR, css)  # noqa: E731
    return {"cell": cell, "output": find(".jp-OutputArea-output")[-1], "select": find(".widget-dropdown select"),
            "handle": find(".widget-slider .noUi-handle"), "readout": find(".widget-slider .widget-readout"),
            "checkbox": find(".widget-checkbox input[type=checkbox]"), "image": find("img.widget-image")}


def test_image_browser_is_live_widgets_at_natural_size(walkthrough):
    ran = walkthrough.ran["05_visualization"]
    cell = widget_cell(ran.cells)
    assert cell, f"05_visualization: no widget in any output {where()}"
    text = " ".join(cell["text"])
    assert "Loading widget" not in text and "Error displaying widget" not in text and "VBox(" not in text, \
        f"05_visualization: the browser shows {text[:200]!r} instead of live widgets {where()}"
    found = _browser_elements(walkthrough.page)
    missing = [k for k in ("select", "handle", "readout", "checkbox", "image") if len(found[k]) != 1]
    assert not missing, f"05_visualization: the image browser lacks exactly one {', '.join(missing)} {where()}"
    walkthrough.page.driver.execute_script("arguments[0].scrollIntoView()", found["cell"])
    found["output"].screenshot(str(ARTIFACTS / "05_widget_browser.png"))
    natural, shown = walkthrough.page.driver.execute_script(
        "const i = arguments[0]; return [i.naturalWidth, i.getBoundingClientRect().width]", found["image"][0])
    assert natural > 0 and shown <= natural + 0.5, \
        f"05_visualization: the browser's picture, {natural} px wide, is drawn {shown:.0f} px wide {where()}"


def test_image_browser_redraws_on_every_control(walkthrough):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.support.ui import Select

    page = walkthrough.page
    found = _browser_elements(page)
    image = found["image"][0]
    state = {"picture": page.image_digest(image), "src": image.get_attribute("src")}

    def redrawn(what: str) -> None:
        def changed():
            if image.get_attribute("src") == state["src"]:
                return None
            picture = page.image_digest(image)
            return picture if picture[0] != state["picture"][0] else None

        picture = wait_for(f"05's picture to redraw after {what}", changed, WIDGET_TIMEOUT,
                           on_timeout=lambda: f"screenshot {page.screenshot('05_not_redrawn')}")
        state.update(picture=picture, src=image.get_attribute("src"))
        shown = page.driver.execute_script("return arguments[0].getBoundingClientRect().width", image)
        assert shown <= picture[1] + 0.5, f"after {what}: a {picture[1]} px picture drawn {shown:.0f} px wide {where()}"
        page.driver.execute_script("arguments[0].scrollIntoView()", found["cell"])
        found["output"].screenshot(str(ARTIFACTS / f"05_after_{what.replace(' ', '_')}.png"))

    readout = found["readout"][0].text
    ActionChains(page.driver).click_and_hold(found["handle"][0]).move_by_offset(-40, 0).release().perform()
    redrawn("moving the slider")
    assert found["readout"][0].text != readout, "the slider's readout did not change"

    select = Select(found["select"][0])
    assert len(select.options) >= 2, f"05's image dropdown has {len(select.options)} image(s) {where()}"
    select.select_by_index(1)
    redrawn("choosing another image")

    found["checkbox"][0].click()
    redrawn("hiding the ground truth")
    found["checkbox"][0].click()
    redrawn("showing the ground truth")


def test_browser_console_has_no_widget_errors(walkthrough):
    entries = walkthrough.collect_console()
    bad = [e["message"] for e in entries if e.get("level") in ("SEVERE", "WARNING")
           and WIDGET_ERROR.search(e.get("message", "")) and not SLOW_PLUGIN.search(e.get("message", ""))]
    assert not bad, f"the browser console has widget errors: {bad[:5]} {where()}"
