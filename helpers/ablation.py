"""The weight-decay ablation: variants × seeds as separate runs, their final val metrics and a verdict.

Variants come from an ablation YAML (``configs/ablation.yaml``: overrides on top of an experiment
config, and a ``baseline`` variant the others are compared with). Every variant runs once per seed
(``SEED``). Before anything trains, :func:`plan` resolves every run's config and says what it costs:
a run already finished is never trained again, one that was interrupted resumes, and a run whose
resolved config equals an existing run's (02's training run, for the homework's variant at seed 0)
reuses that run instead of training it again.

What is compared is each run's metric at its FINAL checkpoint (the evaluation at SOLVER.MAX_ITER),
not the best of several evaluations on the split that is reported: picking the best on the same
split would favour the noisier variant. Per variant: mean ± spread (sample SD between seeds) and a
Student-t interval of the mean; per variant against the baseline: the difference with its Welch
t-interval, and a verdict that says whether the noise lets it be told apart.

:func:`decay_arithmetic` does the sum that decides the question before any training: SGD with
weight decay λ multiplies a weight by (1 - lr·λ) per step; over the schedule (warm-up and steps
included) that is a shrink factor per parameter group (weights, biases, norms).
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from . import runs, stats
from .errors import ConfigError
from .evaluate import HEADLINE, METRIC_LABELS, metric_label
from .io import write_json
from .readers import read_yaml
from .schedule import learning_rates

# What the homework reported (mask mAP@0.5 on the hidden test set, as graded), and what it really changed.
HOMEWORK_REPORTED = [
    {"variant": "reported 'no decay'", HEADLINE: 0.42467, "reported": True,
     "weight_decay": 0.0001, "weight_decay_bias": 0.0001},
    {"variant": "reported 'decay 0.1'", HEADLINE: 0.47416, "reported": True,
     "weight_decay": 0.0001, "weight_decay_bias": 0.01},
]
HOMEWORK_NOTE = (
    "The homework labelled its runs 'without weight decay' and 'weight decay = 0.1', but its notebook "
    "only set SOLVER.WEIGHT_DECAY_BIAS = 0.01; SOLVER.WEIGHT_DECAY stayed at the inherited 1e-4 in both."
)
RESULTS = "results.json"
METRICS = (HEADLINE, "segm/AP")  # the headline, and AP@[.5:.95] beside it under its own name


# ------------------------------------------------------------------------------ variants and plan


def load_spec(path: str | Path, names: Iterable[str] | None = None) -> dict[str, Any]:
    """{"variants": {name: {"label", "overrides"}}, "baseline": name} from an ablation YAML,
    optionally only the variants ``names`` (in that order)."""
    path = Path(path)
    spec = read_yaml(path, ConfigError)
    try:
        variants = spec["variants"]
    except (TypeError, KeyError):
        raise ConfigError(f"{path}: expected a mapping with a 'variants' key") from None
    if not isinstance(variants, dict) or not variants:
        raise ConfigError(f"{path}: 'variants' must be a non-empty mapping")
    names = list(names or [])
    if names:
        unknown = [n for n in names if n not in variants]
        if unknown:
            raise ConfigError(f"{path}: no variant {unknown[0]!r}; known: {', '.join(variants)}")
        variants = {n: variants[n] for n in names}
    for name, v in variants.items():
        if not isinstance(v, dict) or not isinstance(v.get("overrides"), dict):
            raise ConfigError(f"{path}: variant {name!r} needs an 'overrides' mapping")
    baseline = spec.get("baseline", next(iter(variants)))
    if baseline not in variants:
        baseline = next(iter(variants))
    return {"variants": variants, "baseline": baseline, "source": str(path)}


def load_variants(path: str | Path, names: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
    """{name: {"label", "overrides"}} from an ablation YAML, optionally only ``names`` (in that order)."""
    return load_spec(path, names)["variants"]


def run_name(variant: str, seed: int) -> str:
    return f"{variant}/seed{seed}"


def _comparable(flat: dict) -> dict:
    return {k: v for k, v in flat.items() if k != "OUTPUT_DIR"}


def _same_run(cfg, engine: str, other: Path) -> bool:
    """Whether ``other`` is a run folder of ``engine`` whose resolved config equals ``cfg`` (but OUTPUT_DIR)."""
    from .config import load_config

    if not (other / runs.CONFIG).is_file() or runs.read_run_info(other).get("engine", "torchvision") != engine:
        return False
    return _comparable(load_config(other / runs.CONFIG).flat()) == _comparable(cfg.flat())


def plan(config, variants: dict[str, dict[str, Any]], out_dir: str | Path, seeds: Iterable[int] = (0,),
         engine: str = "torchvision", data_root=None, overrides: dict[str, Any] | None = None, split_dir=None,
         match_num_classes: bool = False, reuse: Iterable[str | Path] = (), init_from: str | Path | None = None
         ) -> list[dict]:
    """Every (variant, seed) run with its resolved config, checked before any work starts.

    Each entry: variant, seed, run_dir, iterations, status ("finished", "reused" (run_dir is the
    reused run), "resume" or "train") and cfg. ``init_from``: a run whose final weights every
    variant starts from (MODEL.WEIGHTS), e.g. 02's run for a fine-tuning ablation.
    """
    from .experiment import setup_run

    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"ablation seeds must be distinct integers, got {seeds}")
    base = dict(overrides or {})
    if init_from:
        base["MODEL.WEIGHTS"] = str(runs.resolve_checkpoint(Path(init_from), "final"))
    reuse = [Path(r) for r in reuse if r and Path(r).is_dir()]
    out_dir = Path(out_dir)
    entries = []
    for name, variant in variants.items():
        for seed in seeds:
            cfg, _, run_dir = setup_run(config, {**base, **variant["overrides"], "SEED": seed}, engine, data_root,
                                        out_dir / name / f"seed{seed}", split_dir, match_num_classes)
            if cfg["DATASETS.VAL_FRACTION"] <= 0:
                raise ConfigError("the ablation compares val metrics: DATASETS.VAL_FRACTION must be above 0")
            runs.best_metric(cfg)
            same = next((r for r in reuse if _same_run(cfg, engine, r) and runs.is_finished(r)), None)
            if same is not None and not runs.is_finished(run_dir):
                status, run_dir = "reused", same
            elif runs.is_finished(run_dir):
                status = "finished"
            else:
                status = "resume" if runs.last_checkpoint(run_dir) else "train"
            entries.append({"variant": name, "seed": seed, "run_dir": run_dir, "iterations": cfg["SOLVER.MAX_ITER"],
                            "status": status, "cfg": cfg})
    return entries


def cost(entries: list[dict], seconds_per_iteration: float | None = None) -> dict:
    """What the plan costs: runs, iterations to train (reused and finished runs cost nothing), hours."""
    todo = [e for e in entries if e["status"] in ("train", "resume")]
    iterations = sum(e["iterations"] for e in todo)  # a resumed run is counted in full: an upper bound
    out = {"runs": len(entries), "to_train": len(todo), "reused": sum(e["status"] == "reused" for e in entries),
           "finished": sum(e["status"] == "finished" for e in entries), "iterations": iterations,
           "seconds_per_iteration": seconds_per_iteration, "hours": None}
    if seconds_per_iteration:
        out["hours"] = iterations * seconds_per_iteration / 3600
    return out


def seconds_per_iteration(run_dir: str | Path) -> float | None:
    """The median logged time of a training iteration of a run (to estimate an ablation's cost)."""
    times = [r["time"] for r in runs.read_metrics(Path(run_dir)) if isinstance(r.get("time"), (int, float))]
    return statistics.median(times) if times else None


def format_plan(entries: list[dict], seconds_per_iter: float | None = None) -> str:
    """The plan as text: one line per run, then the total cost."""
    lines = [f"{'run':<28} {'iterations':>10}  status"]
    for e in entries:
        where = f" ({e['run_dir']})" if e["status"] == "reused" else ""
        lines.append(f"{run_name(e['variant'], e['seed']):<28} {e['iterations']:>10}  {e['status']}{where}")
    c = cost(entries, seconds_per_iter)
    total = (f"{c['runs']} runs: {c['to_train']} to train ({c['iterations']} iterations), "
             f"{c['reused']} reused, {c['finished']} already finished")
    if c["hours"] is not None:
        total += f"; about {c['hours']:.2g} hours at {seconds_per_iter:.3g} s per iteration"
    return "\n".join(lines + [total])


# ------------------------------------------------------------------------------ running and results


def run_ablation(config, variants: dict[str, dict[str, Any]], out_dir: str | Path, engine: str = "torchvision",
                 data_root=None, overrides: dict[str, Any] | None = None, split_dir=None, progress: bool = True,
                 match_num_classes: bool = False, seeds: Iterable[int] = (0,), reuse: Iterable[str | Path] = (),
                 init_from: str | Path | None = None, baseline: str | None = None) -> dict:
    """Train every (variant, seed) run that :func:`plan` says needs it; write and return the results."""
    from .experiment import train

    entries = plan(config, variants, out_dir, seeds, engine, data_root, overrides, split_dir, match_num_classes,
                   reuse, init_from)
    print(format_plan(entries))
    for e in entries:
        if e["status"] in ("train", "resume"):
            print(f"== {run_name(e['variant'], e['seed'])}: {variants[e['variant']].get('label', '')}")
            train(e["cfg"], engine=engine, data_root=data_root, run_dir=e["run_dir"], resume=True,
                  split_dir=split_dir, progress=progress)
    results = collect(entries, variants, baseline)
    write_json(Path(out_dir) / RESULTS, results, indent=2)
    return results


def final_metrics(run_dir: str | Path) -> dict | None:
    """The val metrics logged at a finished run's last iteration (its final checkpoint), or None."""
    from .config import load_config

    run_dir = Path(run_dir)
    if not runs.is_finished(run_dir):
        return None
    last = load_config(run_dir / runs.CONFIG)["SOLVER.MAX_ITER"] - 1
    rows = [r for r in runs.eval_rows(runs.read_metrics(run_dir)) if r["iteration"] == last]
    return {k: v for k, v in rows[-1].items() if k.startswith(("segm/", "bbox/"))} if rows else None


def collect(entries: list[dict], variants: dict[str, dict[str, Any]], baseline: str | None = None) -> dict:
    """Per-run final metrics, per-variant summaries, comparisons with the baseline and the decay sums."""
    run_rows = []
    for e in entries:
        final = final_metrics(e["run_dir"])
        if final is None:
            continue
        run_rows.append({"variant": e["variant"], "seed": e["seed"], "run_dir": str(e["run_dir"]),
                         "reused": e["status"] == "reused", "iterations": e["iterations"],
                         **{k: final[k] for k in ("segm/AP50", "segm/AP", "segm/AP75", "bbox/AP50", "bbox/AP")
                            if k in final}})
    cfgs = {}
    for e in entries:
        cfgs.setdefault(e["variant"], e["cfg"])
    summary = []
    for name in variants:
        mine = [r for r in run_rows if r["variant"] == name]
        cfg = cfgs[name]
        bias = cfg["SOLVER.WEIGHT_DECAY_BIAS"]
        summary.append({
            "variant": name, "label": variants[name].get("label", name),
            "weight_decay": cfg["SOLVER.WEIGHT_DECAY"],
            "weight_decay_bias": cfg["SOLVER.WEIGHT_DECAY"] if bias is None else bias,
            "weight_decay_norm": cfg["SOLVER.WEIGHT_DECAY_NORM"], "iterations": cfg["SOLVER.MAX_ITER"],
            "seeds": [r["seed"] for r in mine],
            **{m: stats.summarize([r[m] for r in mine if m in r]) for m in METRICS},
        })
    baseline = baseline if baseline in variants else next(iter(variants))
    return {"metric": HEADLINE, "metric_label": metric_label(HEADLINE), "also": "segm/AP",
            "measured_at": "final checkpoint (evaluation at SOLVER.MAX_ITER) on the val split",
            "confidence": stats.CONFIDENCE, "baseline": baseline, "runs": run_rows, "summary": summary,
            "comparisons": compare(summary, baseline),
            "decay": [{"variant": name, **decay_arithmetic(cfgs[name])} for name in variants]}


def compare(summary: list[dict], baseline: str, metric: str = HEADLINE) -> list[dict]:
    """Each variant against ``baseline``: the difference of means with its Welch interval and a verdict."""
    by_name = {s["variant"]: s for s in summary}
    base = by_name[baseline]
    out = []
    for s in summary:
        if s["variant"] == baseline:
            continue
        w = stats.welch(s[metric]["values"], base[metric]["values"])
        out.append({"a": s["variant"], "b": baseline, "metric": metric, **w,
                    "verdict": verdict(s["variant"], baseline, w)})
    return out


def verdict(a: str, b: str, w: dict) -> str:
    """"A beats B by x ± y" when the interval excludes 0, else "no difference detectable at this noise"."""
    n = f"n = {w['n_a']} and {w['n_b']} seeds"
    level = f"{w['confidence']:.0%}"
    if w["diff"] is None:
        return f"{a} vs {b}: no finished runs to compare"
    if w["half_width"] is None:
        return f"{a} vs {b}: {a} − {b} = {w['diff']:+.4f} with {n}: at least 2 seeds per variant are needed for an interval"
    if w["half_width"] == 0.0:
        if w["diff"] == 0.0:
            return f"no difference detectable: every run of {a} and {b} gave the same value ({n})"
        return (f"{a} − {b} = {w['diff']:+.4f}, but every seed gave the same value within each variant: "
                f"no noise estimate, no verdict ({n})")
    if abs(w["diff"]) > w["half_width"]:
        win, lose = (a, b) if w["diff"] > 0 else (b, a)
        return f"{win} beats {lose} by {abs(w['diff']):.4f} ± {w['half_width']:.4f} ({level} Welch t-interval, {n})"
    return (f"no difference detectable at this noise: {a} − {b} = {w['diff']:+.4f} ± {w['half_width']:.4f} "
            f"({level} Welch t-interval, {n})")


def read_results(out_dir: str | Path) -> dict:
    """The results written by :func:`run_ablation` (empty when the ablation has not run)."""
    path = Path(out_dir) / RESULTS
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


# ------------------------------------------------------------------------------ decay arithmetic


def lr_schedule(cfg) -> np.ndarray:
    """The learning rate of every iteration 0 .. MAX_ITER-1 (:mod:`helpers.schedule`)."""
    return learning_rates(cfg)


def decay_arithmetic(cfg) -> dict:
    """Per parameter group (weights, biases, norms), from a resolved config: λ, the lr factor, Σ lr·λ
    over the schedule, and the factor decay alone multiplies a parameter by: Π(1 - lr_t·λ) for plain
    SGD, and with momentum μ (whose buffer accumulates the decay term) about Π(1 - lr_t·λ/(1-μ))."""
    lr = lr_schedule(cfg)
    mu = cfg["SOLVER.MOMENTUM"]
    wd, bias = cfg["SOLVER.WEIGHT_DECAY"], cfg["SOLVER.WEIGHT_DECAY_BIAS"]
    groups = [("weights", wd, 1.0), ("biases", wd if bias is None else bias, cfg["SOLVER.BIAS_LR_FACTOR"]),
              ("norms", cfg["SOLVER.WEIGHT_DECAY_NORM"], 1.0)]
    out = []
    for name, lam, factor in groups:
        steps = lr * factor * lam
        with np.errstate(divide="ignore"):
            plain = float(np.exp(np.sum(np.log1p(-np.minimum(steps, 1.0)))))
            momentum = float(np.exp(np.sum(np.log1p(-np.minimum(steps / (1 - mu), 1.0))))) if mu < 1 else None
        out.append({"group": name, "weight_decay": lam, "lr_factor": factor, "sum_lr_decay": float(steps.sum()),
                    "shrink_sgd": plain, "shrink_momentum": momentum})
    return {"base_lr": cfg["SOLVER.BASE_LR"], "iterations": int(cfg["SOLVER.MAX_ITER"]),
            "sum_lr": float(lr.sum()), "momentum": mu, "groups": out}


# ------------------------------------------------------------------------------ formatting


def _num(value) -> str:
    """A config value as the config has it (repr of floats: 0.00025 stays 0.00025)."""
    return "-" if value is None else repr(value) if isinstance(value, float) else str(value)


def _metric_cell(s: dict) -> str:
    if not s or not s["n"]:
        return "-"
    if s["half_width"] is None:
        return f"{s['mean']:.4f} (n = 1)"
    return f"{s['mean']:.4f} ± {s['sd']:.4f} [{s['low']:.4f}, {s['high']:.4f}]"


def summary_table(results: dict) -> tuple[list[str], list[list[str]]]:
    """(columns, rows) of the per-variant table: decays, seeds, mean ± SD [t-interval] of each metric."""
    level = f"{results.get('confidence', stats.CONFIDENCE):.0%}"
    cols = ["variant", "WEIGHT_DECAY", "WEIGHT_DECAY_BIAS", "WEIGHT_DECAY_NORM", "iterations", "n (seeds)"]
    cols += [f"{METRIC_LABELS[m]}: mean ± SD [{level} CI]" for m in METRICS]
    rows = [[s["variant"], _num(s["weight_decay"]), _num(s["weight_decay_bias"]), _num(s["weight_decay_norm"]),
             str(s["iterations"]), str(s[HEADLINE]["n"])] + [_metric_cell(s[m]) for m in METRICS]
            for s in results.get("summary", [])]
    return cols, rows


def decay_table(results: dict) -> tuple[list[str], list[list[str]]]:
    """(columns, rows) of the lr·λ·T arithmetic, one row per variant and parameter group."""
    cols = ["variant", "group", "λ", "BASE_LR", "T", "Σ lr·λ", "shrink (1-lr·λ)^T", "with momentum"]
    rows = []
    for d in results.get("decay", []):
        for g in d["groups"]:
            rows.append([d["variant"], g["group"], _num(g["weight_decay"]), _num(d["base_lr"] * g["lr_factor"]),
                         str(d["iterations"]), f"{g['sum_lr_decay']:.3g}", f"{g['shrink_sgd']:.6g}",
                         "-" if g["shrink_momentum"] is None else f"{g['shrink_momentum']:.6g}"])
    return cols, rows


def runs_table(results: dict, path_text=str) -> tuple[list[str], list[list[str]]]:
    """(columns, rows): every run's final-checkpoint metrics; ``path_text`` writes each run folder."""
    cols = ["variant", "seed", METRIC_LABELS[HEADLINE], METRIC_LABELS["segm/AP"], "run"]
    rows = [[r["variant"], str(r["seed"]), f"{r.get(HEADLINE, math.nan):.4f}", f"{r.get('segm/AP', math.nan):.4f}",
             path_text(r["run_dir"]) + (" (reused)" if r.get("reused") else "")] for r in results.get("runs", [])]
    return cols, rows


def _text_table(cols: list[str], rows: list[list[str]]) -> str:
    widths = [max([len(c)] + [len(r[k]) for r in rows]) for k, c in enumerate(cols)]
    line = lambda cells: "  ".join(f"{c:<{w}}" for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(cols)] + [line(r) for r in rows])


def format_decay(entries: list[dict]) -> str:
    """The lr·λ·T arithmetic of a :func:`plan`'s variants (from each variant's resolved config), as text."""
    cfgs: dict[str, Any] = {}
    for e in entries:
        cfgs.setdefault(e["variant"], e["cfg"])
    return _text_table(*decay_table({"decay": [{"variant": n, **decay_arithmetic(c)} for n, c in cfgs.items()]}))


def format_table(results: dict) -> str:
    """The ablation as text: per-variant summary, the verdicts, then the decay arithmetic."""
    if not results or not results.get("summary"):
        return "no finished ablation runs"
    parts = [f"{results['metric_label']} and {METRIC_LABELS['segm/AP']} at the {results['measured_at']}",
             _text_table(*summary_table(results)), "", "Verdicts (against the baseline):"]
    parts += [f"  {c['verdict']}" for c in results.get("comparisons", [])]
    parts += ["", "Weight decay arithmetic per parameter group:", _text_table(*decay_table(results))]
    return "\n".join(parts)
