"""Run the ordered notebooks headlessly with papermill under a profile, then the report.

    python -m helpers run-notebooks --profile demo
    python -m helpers run-notebooks --profile homework --data /path/to/tinyvoc -p engine torchvision

A profile (``configs/profiles/NAME.yaml``) holds the course settings (data root, engine, config,
overrides) and per-notebook ones; the run's course file (see :mod:`helpers.course`) carries them to
every notebook. Everything a run makes goes under ``runs/<run_name>/``:
executed notebooks, split files, run folders, submission, figures. Re-running skips finished
training and resumes unfinished training (the notebooks call the same resumable helpers).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterable

import yaml

from . import course
from .errors import ConfigError, HelpersError
from .paths import NOTEBOOKS, PROJECT_ROOT, RUNS, resolve
from .readers import read_yaml

NOTEBOOK_ORDER = [
    "01_data_exploration",
    "02_training",
    "03_weight_decay_ablation",
    "04_inference",
    "05_visualization",
]


def parse_param(text: str) -> Any:
    """A ``-p NAME VALUE`` value as YAML (numbers, booleans, lists, mappings), else the string."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def declared_parameters(notebook: str) -> set[str]:
    """The names a notebook's ``parameters`` cell declares."""
    import ast
    import json

    cells = json.loads((NOTEBOOKS / f"{notebook}.ipynb").read_text(encoding="utf-8"))["cells"]
    names: set[str] = set()
    for cell in cells:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            for node in ast.parse("".join(cell["source"])).body:
                if isinstance(node, ast.Assign):
                    names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def read_params_file(path: str | Path) -> dict[str, Any]:
    """A ``-f params.yaml`` file: a mapping of parameter names to values."""
    extra = read_yaml(path, ConfigError) or {}
    if not isinstance(extra, dict):
        raise ConfigError(f"{path}: a parameters file must be a mapping")
    return extra


def notebook_parameters(notebook: str, settings: Path, explicit: dict[str, Any]) -> dict[str, Any]:
    """What papermill injects into one notebook: the course file, and the explicit values that this
    notebook declares in its parameters cell (everything else reaches it through the course file)."""
    declared = declared_parameters(notebook)
    return {"settings": str(settings), **{k: v for k, v in explicit.items() if k in declared}}


def run_notebooks(
    profile: str | Path = "demo",
    data_root: str | Path | None = None,
    run_name: str | None = None,
    params_file: str | Path | None = None,
    params: dict[str, Any] | None = None,
    only: Iterable[str] | None = None,
    report: bool | None = None,
    log_output: bool = False,
    runs_dir: str | Path = RUNS,
    report_dir: str | Path | None = None,
) -> Path:
    """Execute the notebooks in order under a profile; returns ``runs_dir/<run_name>``.

    Writes the run's course file (``<run root>/course.yaml``: the profile, plus the parameters file,
    ``-p`` values and ``data_root``) and points every notebook at it. The report is rebuilt into
    ``report_dir`` (default: the project's ``report/``) afterwards when the profile asks for it and
    all notebooks ran.
    """
    import os

    import papermill as pm

    os.environ["HELPERS_HEADLESS"] = "1"  # the kernels inherit it: image_browser.browser draws static figures
    prof = course.load_profile(profile)
    explicit = {**(read_params_file(params_file) if params_file else {}), **(params or {})}
    if data_root:
        explicit["data_root"] = str(resolve(data_root))
    run_root = Path(runs_dir) / (run_name or prof["run_name"])
    selected = [nb for nb in NOTEBOOK_ORDER if not only or any(nb.startswith(o) for o in only)]
    if not selected:
        raise ConfigError(f"--only {' '.join(only or [])} matches none of {', '.join(NOTEBOOK_ORDER)}")
    settings = course.write_course_file(run_root / "course.yaml", prof["path"], **{**explicit, "run_root": str(run_root)})
    course.load(settings, quiet=True)  # refuse bad settings before any notebook starts
    out_dir = run_root / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    for nb in selected:
        started = time.perf_counter()
        print(f"== {nb}", flush=True)
        try:
            pm.execute_notebook(
                str(NOTEBOOKS / f"{nb}.ipynb"),
                str(out_dir / f"{nb}.ipynb"),
                parameters=notebook_parameters(nb, settings, explicit),
                cwd=str(NOTEBOOKS),
                kernel_name="python3",
                # --log-output: the cells' printed text (the progress lines) straight to this process's
                # stdout/stderr, as it comes; papermill's own log_output goes through `logging`, which
                # nothing configures here, so it showed nothing
                stdout_file=sys.stdout if log_output else None,
                stderr_file=sys.stderr if log_output else None,
                progress_bar=not log_output,
            )
        except pm.PapermillExecutionError as e:
            raise HelpersError(f"{nb} failed in cell {e.exec_count}: {e.ename}: {e.evalue} "
                               f"(see {out_dir / (nb + '.ipynb')})") from None
        print(f"   done in {time.perf_counter() - started:.0f} s -> {out_dir / (nb + '.ipynb')}", flush=True)
    if report is None:
        report = bool(prof.get("report", False)) and not only
    if report:
        build_report(run_root, report_dir)
    return run_root


def build_report(run_root: str | Path, report_dir: str | Path | None = None) -> None:
    """``report/build.py`` for one run folder."""
    cmd = [sys.executable, str(PROJECT_ROOT / "report" / "build.py"), "--run", str(run_root)]
    if report_dir:
        cmd += ["--out", str(report_dir)]
    if subprocess.run(cmd, cwd=PROJECT_ROOT).returncode != 0:
        raise HelpersError(f"report build failed for {run_root}")
