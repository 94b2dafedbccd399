"""The run folder: what a training run leaves behind, laid out as detectron2 lays out OUTPUT_DIR.

    config.yaml            the resolved experiment config
    run.json               engine, data root, split files, status
    metrics.json           JSON lines: iteration, losses, lr, time, data_time, val metrics when evaluated
    model_0002999.pth      a checkpoint every SOLVER.CHECKPOINT_PERIOD iterations
    last_checkpoint        the file name of the newest complete checkpoint
    model_final.pth        the weights at SOLVER.MAX_ITER
    model_best.pth         the weights with the best val TEST.BEST_METRIC (segm AP50; best.json says which)
    events.out.tfevents.*  TensorBoard

Both engines write through these functions, so resume, metrics and checkpoints behave the same.
Every write is atomic: a run killed at any moment leaves the previous complete file in place.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

from .errors import EngineError
from .io import atomic_write, write_json, write_text

CONFIG = "config.yaml"
RUN_INFO = "run.json"
METRICS = "metrics.json"
LAST = "last_checkpoint"
FINAL = "model_final.pth"
BEST = "model_best.pth"
BEST_INFO = "best.json"


def checkpoint_name(iteration: int) -> str:
    """detectron2's name for the checkpoint saved after ``iteration`` (0-based)."""
    return f"model_{iteration:07d}.pth"


def save_checkpoint(run_dir: Path, name: str, state: dict[str, Any], tag_last: bool = True) -> Path:
    """Write ``state`` with torch.save atomically, then point ``last_checkpoint`` at it."""
    import torch

    path = Path(run_dir) / name
    with atomic_write(path, "wb") as f:
        torch.save(state, f)
    if tag_last:
        write_text(Path(run_dir) / LAST, name)
    return path


def last_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint named by ``last_checkpoint``, or None for a fresh run."""
    tag = Path(run_dir) / LAST
    if not tag.is_file():
        return None
    path = Path(run_dir) / tag.read_text(encoding="utf-8").strip()
    return path if path.is_file() else None


def remove_partial_writes(run_dir: Path) -> list[Path]:
    """Delete temp files left by a write that a kill interrupted (see helpers.io.atomic_write)."""
    leftovers = sorted(Path(run_dir).glob(".*.tmp"))
    for path in leftovers:
        path.unlink(missing_ok=True)
    return leftovers


def resolve_checkpoint(run_dir: Path, which: str = "best") -> Path:
    """``best`` (falls back to final), ``final``, ``last`` or a path to a .pth file."""
    run_dir = Path(run_dir)
    candidates = {
        "best": [run_dir / BEST, run_dir / FINAL],
        "final": [run_dir / FINAL],
        "last": [p for p in [last_checkpoint(run_dir)] if p],
    }.get(which, [Path(which)])
    for path in candidates:
        if path.is_file():
            return path
    raise EngineError(f"no {which!r} checkpoint in {run_dir} (has the run finished training?)")


def write_run_info(run_dir: Path, **info: Any) -> dict:
    """Merge ``info`` into run.json."""
    data = read_run_info(run_dir)
    data.update(info)
    write_json(Path(run_dir) / RUN_INFO, data, indent=2)
    return data


def read_run_info(run_dir: Path) -> dict:
    path = Path(run_dir) / RUN_INFO
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def is_finished(run_dir: Path) -> bool:
    return (Path(run_dir) / FINAL).is_file() and read_run_info(run_dir).get("status") == "finished"


def read_metrics(run_dir: Path) -> list[dict]:
    """All complete lines of metrics.json (a line cut by a kill is skipped)."""
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and "iteration" in row:
            rows.append(row)
    return rows


def truncate_metrics(run_dir: Path, start_iter: int) -> None:
    """Before (re)starting at ``start_iter``: keep only rows of earlier iterations, atomically."""
    path = Path(run_dir) / METRICS
    if not path.exists():
        return
    keep = [r for r in read_metrics(run_dir) if r["iteration"] < start_iter]
    with atomic_write(path) as f:
        f.writelines(json.dumps(r) + "\n" for r in keep)


class MetricsLog:
    """Appends one JSON line per record to metrics.json, flushed so a kill loses at most one line."""

    def __init__(self, run_dir: Path, start_iter: int):
        truncate_metrics(run_dir, start_iter)
        self.path = Path(run_dir) / METRICS
        self._f = open(self.path, "a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        self._f.write(json.dumps(record) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "MetricsLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


DEFAULT_BEST_METRIC = "segm/AP50"  # the leaderboard's mask mAP@0.5; config key TEST.BEST_METRIC


def best_metric(cfg) -> str:
    """TEST.BEST_METRIC of a config, checked: a ``segm/`` or ``bbox/`` COCO metric name."""
    from .errors import ConfigError
    from .evaluate import METRIC_NAMES

    key = cfg.get("TEST.BEST_METRIC", DEFAULT_BEST_METRIC) or DEFAULT_BEST_METRIC
    allowed = [f"{t}/{m}" for t in ("segm", "bbox") for m in METRIC_NAMES]
    if key not in allowed:
        raise ConfigError(f"TEST.BEST_METRIC {key!r} is not a val metric; choose one of {', '.join(allowed)}")
    return key


def is_new_best(run_dir: Path, value: float, key: str = DEFAULT_BEST_METRIC) -> bool:
    """True when ``value`` of metric ``key`` beats the best recorded in best.json, or none is recorded
    for that metric (best.json written under another metric is replaced)."""
    best = read_best(run_dir)
    return best is None or best.get("metric") != key or value > best["value"]


def read_best(run_dir: Path) -> dict | None:
    """best.json: {"iteration", "metric", "value"}, or None before the first evaluation."""
    info_path = Path(run_dir) / BEST_INFO
    return json.loads(info_path.read_text(encoding="utf-8")) if info_path.is_file() else None


def record_best(run_dir: Path, iteration: int, value: float, key: str = DEFAULT_BEST_METRIC) -> None:
    """best.json names the metric that chose model_best.pth, its value and the iteration."""
    write_json(Path(run_dir) / BEST_INFO, {"iteration": iteration, "metric": key, "value": value}, indent=2)


def format_best(run_dir: Path) -> str:
    """Which val metric chose model_best.pth, its value and iteration, in one line."""
    from .evaluate import metric_label

    best = read_best(run_dir)
    if best is None:
        return "no best checkpoint: no val evaluation recorded (predictions use model_final.pth)"
    return (f"model_best.pth: val {metric_label(best['metric'])} {best['value']:.4f} at iteration "
            f"{best['iteration'] + 1} (chosen by TEST.BEST_METRIC {best['metric']})")


def eval_rows(rows: Iterable[dict]) -> list[dict]:
    """The metrics rows that carry val evaluation results."""
    return [r for r in rows if any(k.startswith(("segm/", "bbox/")) for k in r)]
