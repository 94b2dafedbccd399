"""The course settings: one file that every notebook reads, so the whole course switches in one place.

    runs/course.yaml           (made from the demo profile the first time a notebook opens)
    profile: demo              # a profile in configs/profiles/ (demo, homework, gpu-ci, tinyvoc-cpu) or a YAML path
    # any profile parameter may be set here too, e.g.
    # data_root: /content/drive/MyDrive/tinyvoc
    # engine: detectron2

A profile (``configs/profiles/NAME.yaml``) holds the common settings (data root, engine, config,
overrides) and per-notebook ones (``notebooks: {03_weight_decay_ablation: {...}}``). The course file
names a profile and may override any of them, top level or per notebook. ``run-notebooks`` writes one
such file into the run root and points every notebook at it; on Colab ``runs/`` lives on Google Drive,
so the settings survive a reconnect.

Each notebook's first call is :func:`load`, which also makes what that notebook needs and can make
(the demo data, the split) and says in one line which notebook to run first when it cannot.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError, DataError, HelpersError
from .io import write_text
from .readers import read_yaml
from .paths import CONFIGS, RUNS, resolve

DEFAULT_FILE = RUNS / "course.yaml"
ENV_FILE = "HELPERS_COURSE"  # a course file for every notebook of this process (tests, CI, a shared setup)
DEFAULT_PROFILE = "demo"
COMMON_KEYS = ("data_root", "run_root", "engine", "config", "overrides", "make_demo_data", "match_num_classes",
               "tinyvoc_url")

_HEADER = """\
# The course settings every notebook reads (helpers/course.py). Switch the whole course here, once:
#   profile: demo          the embedded demo data set on a CPU (the default)
#   profile: homework      the homework's experiment on Tiny VOC (GPU); set data_root to your copy
# Any profile parameter can be overridden below (data_root, engine, config, overrides, tinyvoc_url),
# and per notebook under `notebooks:`. See configs/profiles/*.yaml for what each profile sets.
"""


def profile_path(profile: str | Path) -> Path:
    """A profile name (``demo``) or a path to a profile YAML."""
    path = Path(profile)
    if path.suffix not in {".yaml", ".yml"}:
        path = CONFIGS / "profiles" / f"{profile}.yaml"
    else:
        path = resolve(path)
    if not path.is_file():
        known = sorted(p.stem for p in (CONFIGS / "profiles").glob("*.yaml"))
        raise ConfigError(f"no profile {str(profile)!r} (known: {', '.join(known)})")
    return path


def _read_mapping(path: Path, what: str) -> dict:
    data = read_yaml(path, ConfigError)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: {what} must be a mapping of names to values, not {type(data).__name__}")
    return data


def load_profile(profile: str | Path) -> dict[str, Any]:
    """``{"parameters": {...}, "notebooks": {nb: {...}}, "run_name": str, "report": bool}`` of a profile."""
    path = profile_path(profile)
    prof = _read_mapping(path, "a profile")
    for key in ("parameters", "notebooks"):
        prof[key] = prof.get(key) or {}
        if not isinstance(prof[key], dict):
            raise ConfigError(f"{path}: `{key}` must be a mapping")
    for nb, params in prof["notebooks"].items():
        if not isinstance(params, dict):
            raise ConfigError(f"{path}: notebooks.{nb} must be a mapping")
    prof.setdefault("run_name", path.stem)
    prof["path"] = str(path)
    return prof


@dataclass
class Course:
    """The resolved settings of one notebook: where the data and the run are, which engine and config."""

    file: Path
    profile: str
    notebook: str
    data_root: Path
    run_root: Path
    engine: str
    config: Path
    overrides: dict[str, Any]
    make_demo_data: bool = False
    match_num_classes: bool = False
    tinyvoc_url: str = ""
    params: dict[str, Any] = field(default_factory=dict)  # this notebook's own settings from the profile

    @property
    def train_dir(self) -> Path:
        """02's run folder (also the ablation's baseline run)."""
        return self.run_root / "train"

    @property
    def split_dir(self) -> Path:
        return self.run_root / "data"

    @property
    def figures(self) -> Path:
        return self.run_root / "figures"

    def cfg(self):
        """The experiment config with this course's overrides."""
        from .config import load_config

        return load_config(self.config, self.overrides)

    def summary(self) -> str:
        return (f"course {self.profile} ({self.file}): data {self.data_root}, engine {self.engine}, "
                f"config {self.config}, runs in {self.run_root}")

    def param(self, name: str, value: Any = None) -> Any:
        """A notebook parameter: ``value`` when the notebook's parameters cell sets it (not None),
        else the course's setting for this notebook, else None."""
        return value if value is not None else self.params.get(name)

    # What a notebook needs -----------------------------------------------------------------------

    def ensure_data(self) -> Path:
        """The data root, made when it is the demo set and missing; else a one-line error saying what to do."""
        from . import data, demo_data

        if not (self.data_root / data.TRAIN_JSON).is_file():
            if self.make_demo_data:
                print(f"making the demo data set in {self.data_root} (once)", flush=True)
                demo_data.make_demo_data(self.data_root)
            else:
                raise DataError(f"no {data.TRAIN_JSON} in {self.data_root}: put Tiny VOC there (data/README.md), "
                                f"set tinyvoc_url or data_root in {self.file}, or use `profile: demo`")
        return self.data_root

    def ensure_split(self):
        """The seeded train/val split files (made from the data when missing); returns their paths."""
        from . import data

        cfg = self.cfg()
        root = data.load_root(self.ensure_data(), check_images=False)
        return data.make_split(root.train, self.split_dir, val_fraction=cfg["DATASETS.VAL_FRACTION"],
                               seed=cfg["DATASETS.SPLIT_SEED"])

    def require_trained(self) -> Path:
        """02's finished run folder, or a one-line error saying to run 02 first."""
        from . import runs

        if not runs.is_finished(self.train_dir):
            state = "has not finished training" if (self.train_dir / runs.CONFIG).is_file() else "does not exist yet"
            raise HelpersError(f"{self.train_dir} {state}: run 02_training first (same course settings, {self.file})")
        return self.train_dir

    def require(self, path: str | Path, made_by: str) -> Path:
        """A file an earlier notebook writes, or a one-line error naming that notebook."""
        path = Path(path)
        if not path.is_file():
            raise HelpersError(f"{path} does not exist yet: run {made_by} first (same course settings, {self.file})")
        return path


def course_file(path: str | Path | None = None) -> Path:
    """The course file: ``path``, else $HELPERS_COURSE, else runs/course.yaml."""
    if path:
        return resolve(path)
    env = os.environ.get(ENV_FILE)
    return resolve(env) if env else DEFAULT_FILE


def write_course_file(path: str | Path, profile: str | Path = DEFAULT_PROFILE, **settings: Any) -> Path:
    """Write a course file naming ``profile`` plus ``settings`` (atomically); returns its path."""
    load_profile(profile)  # refuse a profile that does not load
    body = {"profile": str(profile), **{k: v for k, v in settings.items() if v is not None}}
    return write_text(Path(path), _HEADER + yaml.safe_dump(body, sort_keys=False))


def switch(profile: str | Path, path: str | Path | None = None, **settings: Any) -> Path:
    """Point the whole course at another profile (and settings), e.g. ``switch("homework",
    data_root="/content/drive/MyDrive/tinyvoc")``; every notebook reads it from then on."""
    out = write_course_file(course_file(path), profile, **settings)
    print(f"course settings: {out} -> profile {profile}")
    return out


def read_settings(path: Path) -> tuple[dict, dict]:
    """(profile, the course file's own mapping) for a course file."""
    own = _read_mapping(path, "the course settings")
    prof = load_profile(own.get("profile") or DEFAULT_PROFILE)
    if "notebooks" in own and not isinstance(own["notebooks"], dict):
        raise ConfigError(f"{path}: `notebooks` must be a mapping")
    return prof, own


def resolved(path: Path, notebook: str) -> dict[str, Any]:
    """Profile parameters < profile notebook section < course file < course file notebook section."""
    prof, own = read_settings(path)
    top = {k: v for k, v in own.items() if k not in {"profile", "notebooks"}}
    merged = {**prof["parameters"], **(prof["notebooks"].get(notebook) or {}), **top,
              **((own.get("notebooks") or {}).get(notebook) or {})}
    merged.setdefault("run_root", str(RUNS / prof["run_name"]))
    merged["profile"] = Path(prof["path"]).stem
    return merged


def load(path: str | Path | None = None, notebook: str = "", quiet: bool = False) -> Course:
    """The course settings for ``notebook`` (made from the demo profile when the file is missing)."""
    file = course_file(path)
    if not file.is_file():
        write_course_file(file, DEFAULT_PROFILE)
        if not quiet:
            print(f"wrote {file} (profile {DEFAULT_PROFILE}); edit it, or call course.switch(...), "
                  "to switch every notebook at once")
    s = resolved(file, notebook)
    missing = [k for k in ("data_root", "engine", "config") if not s.get(k)]
    if missing:
        raise ConfigError(f"{file}: no {', '.join(missing)} (set it there or in the profile)")
    overrides = s.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise ConfigError(f"{file}: `overrides` must be a mapping of config keys to values")
    if s["engine"] not in ("torchvision", "detectron2"):
        raise ConfigError(f"{file}: engine {s['engine']!r} is not one of torchvision, detectron2")
    config = resolve(s["config"])
    if not config.is_file():
        raise ConfigError(f"{file}: config {s['config']} does not exist")
    c = Course(
        file=file, profile=s["profile"], notebook=notebook, data_root=resolve(s["data_root"]),
        run_root=resolve(s["run_root"]), engine=s["engine"], config=config, overrides=dict(overrides),
        make_demo_data=bool(s.get("make_demo_data", False)), match_num_classes=bool(s.get("match_num_classes", False)),
        tinyvoc_url=str(s.get("tinyvoc_url") or ""),
        params={k: v for k, v in s.items() if k not in COMMON_KEYS and k != "profile"},
    )
    if not quiet:
        print(c.summary())
    return c
