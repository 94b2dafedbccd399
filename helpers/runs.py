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
import re
import sys
from pathlib import Path
from typing import Any, Iterable

from .errors import EngineError, HelpersError, WriteError
from .io import atomic_write, write_error, write_json, write_text

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


_PERIODIC = re.compile(r"model_(\d{7})\.pth")


def _tagged_checkpoint(run_dir: Path) -> Path | None:
    """The file ``last_checkpoint`` names (it may be missing or damaged), or None without a usable tag."""
    tag = Path(run_dir) / LAST
    try:
        name = tag.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        return None
    return Path(run_dir) / name


def last_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint named by ``last_checkpoint``, or None for a fresh run (not loaded: see
    :func:`resume_checkpoint` for the one to trust)."""
    path = _tagged_checkpoint(run_dir)
    return path if path is not None and path.is_file() else None


def checkpoints(run_dir: Path) -> list[Path]:
    """The run's resumable checkpoints (periodic ones and model_final.pth), newest first by name."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in run_dir.iterdir() if (m := _PERIODIC.fullmatch(p.name)) and p.is_file()]
    ordered = [p for _, p in sorted(found, reverse=True)]
    return ([run_dir / FINAL] if (run_dir / FINAL).is_file() else []) + ordered


def load_error_text(error: BaseException) -> str:
    """One line for what torch.load raised: its type and the problem, without torch's paragraphs of advice."""
    text = str(error)
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1]
    first = next((line.strip() for line in text.splitlines() if line.strip()), "").split(". ")[0]
    return f"{type(error).__name__}: {first[:200]}" if first else type(error).__name__


def torch_load(path: Path) -> Any:
    """``torch.load(weights_only=True)`` on the CPU, without torch's warnings about pickle protocols."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(path, map_location="cpu", weights_only=True)


def checkpoint_problem(path: Path) -> tuple[int | None, str | None]:
    """(iteration, None) when ``path`` loads completely as one of our checkpoints, else (None, why)."""
    import zipfile

    if not path.is_file():
        return None, "file not found"
    try:  # torch.save writes a zip with a CRC per record, which torch.load itself does not check
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
            if bad is not None:
                return None, f"is damaged (record {bad} fails its CRC check)"
    except (OSError, zipfile.BadZipFile, EOFError, ValueError, NotImplementedError) as e:
        return None, f"is damaged ({type(e).__name__}: {e})"
    try:
        state = torch_load(path)
    except Exception as e:  # torch raises many types for a truncated or corrupt file
        return None, f"does not load ({load_error_text(e)})"
    iteration = state.get("iteration") if isinstance(state, dict) else None
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict) or not isinstance(iteration, int):
        return None, "is not a complete checkpoint (no 'model' state dict and 'iteration')"
    return iteration, None


def resume_checkpoint(run_dir: Path, retag: bool = True) -> Path | None:
    """The newest checkpoint that loads completely, or None for a fresh run.

    The one ``last_checkpoint`` names comes first; when it is damaged (a sync that left a partial
    file, a truncated copy), the newest complete one is used instead, with a warning naming the
    damaged file and the iteration resumed from, and (``retag``) ``last_checkpoint`` is pointed at it.
    """
    run_dir = Path(run_dir)
    tagged = _tagged_checkpoint(run_dir)
    candidates = ([tagged] if tagged is not None else []) + [p for p in checkpoints(run_dir) if p != tagged]
    if not candidates:
        return None
    damaged: list[str] = []
    for path in candidates:
        iteration, problem = checkpoint_problem(path)
        if problem is None:
            if damaged:
                print(f"warning: {'; '.join(damaged)}; using {path} (iteration {iteration}) instead",
                      file=sys.stderr, flush=True)
                if retag:
                    write_text(run_dir / LAST, path.name)
            return path
        damaged.append(f"{path} {problem}")
    raise EngineError(f"{run_dir}: no complete checkpoint to resume from ({damaged[0]}); "
                      f"remove the damaged files to start again from iteration 0")


def remove_partial_writes(run_dir: Path) -> list[Path]:
    """Delete temp files left by a write that a kill interrupted (see helpers.io.atomic_write)."""
    leftovers = sorted(Path(run_dir).glob(".*.tmp"))
    for path in leftovers:
        path.unlink(missing_ok=True)
    return leftovers


def resolve_checkpoint(run_dir: Path, which: str = "best") -> Path:
    """``best`` (falls back to final), ``final``, ``last`` (the newest complete one, see
    :func:`resume_checkpoint`) or a path to a .pth file."""
    run_dir = Path(run_dir)
    if which == "last":
        candidates = [p for p in [resume_checkpoint(run_dir, retag=False)] if p]
    else:
        candidates = {"best": [run_dir / BEST, run_dir / FINAL], "final": [run_dir / FINAL]}.get(which, [Path(which)])
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


def record_failure(run_dir: Path, error: BaseException) -> None:
    """Best effort, never raising: status ``failed`` and the one-line reason in run.json.

    On a full disk the atomic rewrite can fail for want of a block; run.json is then rewritten in
    place when the new record fits in the blocks it already has.
    """
    text = " ".join(str(error).split())
    if isinstance(error, HelpersError):
        reason = text
    elif isinstance(error, KeyboardInterrupt):
        reason = "interrupted (KeyboardInterrupt)"
    else:
        reason = f"{type(error).__name__}: {text}" if text else type(error).__name__
    try:
        data = read_run_info(run_dir)
    except HelpersError:
        data = {}
    data.update(status="failed", error=reason)
    text = json.dumps(data, indent=2)
    path = Path(run_dir) / RUN_INFO
    try:
        write_text(path, text)
    except WriteError:
        try:
            with open(path, "r+b") as f:
                allocated = os.fstat(f.fileno()).st_blocks * 512
                encoded = text.encode("utf-8")
                if len(encoded) <= allocated:
                    f.write(encoded)
                    f.truncate()
                    f.flush()
                    os.fsync(f.fileno())
        except OSError:
            pass


def read_run_info(run_dir: Path) -> dict:
    """run.json ({} when absent); a damaged one is an EngineError naming it."""
    from .readers import read_json

    path = Path(run_dir) / RUN_INFO
    if not path.exists():
        return {}
    info = read_json(path, EngineError)
    if not isinstance(info, dict):
        raise EngineError(f"{path}: damaged run record: expected a JSON object, got {type(info).__name__}")
    return info


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
    """Appends one JSON line per record to metrics.json, synced so a kill loses at most one line."""

    def __init__(self, run_dir: Path, start_iter: int):
        truncate_metrics(run_dir, start_iter)
        self.path = Path(run_dir) / METRICS
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
        except OSError as e:
            raise write_error(self.path, e) from None

    def write(self, record: dict[str, Any]) -> None:
        """Append one line; a failed write is cut off again (no partial line) and raised as a WriteError."""
        data = (json.dumps(record) + "\n").encode("utf-8")
        start = os.lseek(self._fd, 0, os.SEEK_END)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
            os.fsync(self._fd)
        except OSError as e:
            try:
                os.ftruncate(self._fd, start)
            except OSError:
                pass
            raise write_error(self.path, e) from None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

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
    from .readers import read_json

    info_path = Path(run_dir) / BEST_INFO
    if not info_path.exists():
        return None
    best = read_json(info_path, EngineError)
    if not (isinstance(best, dict) and isinstance(best.get("iteration"), int)
            and isinstance(best.get("value"), (int, float)) and not isinstance(best.get("value"), bool)):
        raise EngineError(f"{info_path}: damaged record of the best checkpoint (expected iteration, metric, value); "
                          f"delete it and {BEST} to track the best again")
    return best


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
