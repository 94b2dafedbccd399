"""Run the ordered notebooks headlessly with papermill under a profile, then the report.

    python -m helpers run-notebooks --profile demo
    python -m helpers run-notebooks --profile homework --data /path/to/tinyvoc -p engine torchvision

A profile (``configs/profiles/NAME.yaml``) holds the parameters injected into every notebook's
``parameters`` cell plus per-notebook ones. Everything a run makes goes under ``runs/<run_name>/``:
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

from .errors import ConfigError, HelpersError
from .paths import CONFIGS, NOTEBOOKS, PROJECT_ROOT, RUNS, resolve

NOTEBOOK_ORDER = [
    "01_data_exploration",
    "02_training",
    "03_weight_decay_ablation",
    "04_inference",
    "05_visualization",
]


def profile_path(profile: str | Path) -> Path:
    """A profile name (``demo``) or a path to a profile YAML."""
    path = Path(profile)
    if path.suffix not in {".yaml", ".yml"}:
        path = CONFIGS / "profiles" / f"{profile}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (CONFIGS / "profiles").glob("*.yaml"))
        raise ConfigError(f"no profile {profile!r} (known: {', '.join(known)})")
    return path


def load_profile(profile: str | Path, params_file: str | Path | None = None,
                 params: dict[str, Any] | None = None) -> dict[str, Any]:
    """The profile, plus a parameters YAML file and ``-p`` values under ``"explicit"``: those win over
    both the profile's common and its per-notebook parameters (the ``-p`` values last)."""
    path = profile_path(profile)
    prof = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    prof.setdefault("parameters", {})
    prof.setdefault("notebooks", {})
    prof.setdefault("run_name", path.stem)
    prof["explicit"] = {}
    if params_file:
        extra = yaml.safe_load(Path(params_file).read_text(encoding="utf-8")) or {}
        if not isinstance(extra, dict):
            raise ConfigError(f"{params_file}: a parameters file must be a mapping")
        prof["explicit"].update(extra)
    prof["explicit"].update(params or {})
    return prof


def parse_param(text: str) -> Any:
    """A ``-p NAME VALUE`` value as YAML (numbers, booleans, lists, mappings), else the string."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def notebook_parameters(prof: dict[str, Any], notebook: str, run_root: Path) -> dict[str, Any]:
    """What papermill injects into one notebook."""
    return {**prof["parameters"], **(prof["notebooks"].get(notebook) or {}), **prof["explicit"],
            "run_root": str(run_root)}


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

    The report is rebuilt into ``report_dir`` (default: the project's ``report/``) afterwards when
    the profile asks for it and all notebooks ran.
    """
    import os

    import papermill as pm

    os.environ["HELPERS_HEADLESS"] = "1"  # the kernels inherit it: viz.browser draws static figures
    prof = load_profile(profile, params_file, params)
    if data_root:
        prof["explicit"]["data_root"] = str(resolve(data_root))
    run_root = Path(runs_dir) / (run_name or prof["run_name"])
    out_dir = run_root / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    selected = [nb for nb in NOTEBOOK_ORDER if not only or any(nb.startswith(o) for o in only)]
    for nb in selected:
        started = time.perf_counter()
        print(f"== {nb}", flush=True)
        try:
            pm.execute_notebook(
                str(NOTEBOOKS / f"{nb}.ipynb"),
                str(out_dir / f"{nb}.ipynb"),
                parameters=notebook_parameters(prof, nb, run_root),
                cwd=str(NOTEBOOKS),
                kernel_name="python3",
                log_output=log_output,
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
