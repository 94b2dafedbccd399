"""Where things are: paths in parameters and profiles are relative to the project root."""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = PROJECT_ROOT / "notebooks"
CONFIGS = PROJECT_ROOT / "configs"
RUNS = PROJECT_ROOT / "runs"


def resolve(path: str | Path | None) -> Path | None:
    """An absolute path: ``~`` expanded, relative paths taken from the project root."""
    if path is None or str(path) == "":
        return None
    p = Path(path).expanduser()
    return p if p.is_absolute() else (PROJECT_ROOT / p)
