"""The ablation: statistics, verdicts, the decay arithmetic, the plan (reuse, finished runs) and results."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from helpers import ablation, runs, stats
from helpers.config import load_config
from helpers.errors import ConfigError
from helpers.paths import CONFIGS


# ------------------------------------------------------------------------------ statistics


@pytest.mark.parametrize("df, expected", [(1, 12.7062), (2, 4.3027), (4, 2.7764), (9, 2.2622), (30, 2.0423)])
def test_t_quantile_matches_the_tables(df, expected):
    assert stats.t_quantile(0.975, df) == pytest.approx(expected, abs=5e-4)


def test_summarize_gives_mean_sd_and_t_interval():
    s = stats.summarize([0.50, 0.52, 0.51])
    assert s["n"] == 3 and s["mean"] == pytest.approx(0.51) and s["sd"] == pytest.approx(0.01)
    assert s["half_width"] == pytest.approx(4.3027 * 0.01 / math.sqrt(3), rel=1e-3)
    assert s["low"] < 0.51 < s["high"]
    one = stats.summarize([0.4])
    assert one["n"] == 1 and one["sd"] is None and one["half_width"] is None


def test_welch_interval_and_verdicts():
    w = stats.welch([0.50, 0.52, 0.51], [0.40, 0.41, 0.39])
    assert w["diff"] == pytest.approx(0.11) and w["df"] == pytest.approx(4.0)
    assert w["half_width"] == pytest.approx(2.7764 * math.sqrt(2 * 0.01 ** 2 / 3), rel=1e-3)
    text = ablation.verdict("homework", "no_decay", w)
    assert text.startswith("homework beats no_decay by 0.1100 ± 0.0227") and "n = 3 and 3 seeds" in text
    assert ablation.verdict("a", "b", stats.welch([0.40, 0.41, 0.39], [0.50, 0.52, 0.51])).startswith("b beats a by 0.1100")
    noisy = stats.welch([0.50, 0.60], [0.52, 0.58])
    assert ablation.verdict("a", "b", noisy).startswith("no difference detectable at this noise: a − b = +0.0000")
    assert "at least 2 seeds" in ablation.verdict("a", "b", stats.welch([0.5], [0.4]))
    assert ablation.verdict("a", "b", stats.welch([0.5, 0.5], [0.5, 0.5])).startswith("no difference detectable")


# ------------------------------------------------------------------------------ decay arithmetic


def test_lr_schedule_is_the_engines_learning_rate():
    tv_loop = pytest.importorskip("helpers.engines.torchvision_engine.loop")
    for overrides in ({}, {"SOLVER.WARMUP_METHOD": "constant"}, {"SOLVER.WARMUP_ITERS": 0}):
        cfg = load_config(CONFIGS / "demo.yaml", overrides)
        lr = ablation.lr_schedule(cfg)
        assert len(lr) == cfg["SOLVER.MAX_ITER"]
        for it in (0, 1, 25, 49, 50, 239, 240, 280, 299):
            assert lr[it] == pytest.approx(tv_loop.learning_rate(cfg, it), rel=1e-12)


def test_decay_arithmetic_of_the_homework():
    cfg = load_config(CONFIGS / "homework.yaml")
    d = ablation.decay_arithmetic(cfg)
    groups = {g["group"]: g for g in d["groups"]}
    # lr 0.00025 for 30 000 iterations, the first 1 000 a linear ramp from 0.001x: sum = 0.00025 * (29 000 + ~500.5)
    ramp = sum(0.001 * (1 - i / 1000) + i / 1000 for i in range(1000))
    assert d["sum_lr"] == pytest.approx(0.00025 * (29000 + ramp))
    assert groups["weights"]["weight_decay"] == 0.0001 and groups["biases"]["weight_decay"] == 0.01
    assert groups["weights"]["sum_lr_decay"] == pytest.approx(d["sum_lr"] * 1e-4)
    assert groups["weights"]["shrink_sgd"] == pytest.approx(math.exp(-d["sum_lr"] * 1e-4), rel=1e-6)  # ~0.9993
    assert 0.92 < groups["biases"]["shrink_sgd"] < 0.93  # about 7 %
    assert groups["biases"]["shrink_momentum"] == pytest.approx(math.exp(-d["sum_lr"] * 0.01 / 0.1), rel=1e-3)
    assert groups["norms"]["weight_decay"] == 0.0 and groups["norms"]["shrink_sgd"] == 1.0


# ------------------------------------------------------------------------------ the plan and the results


def test_the_profiles_ablation_files_load_with_a_baseline():
    spec = ablation.load_spec(CONFIGS / "ablation.yaml")
    assert spec["baseline"] == "no_decay" and list(spec["variants"])[:1] == ["no_decay"]
    assert set(spec["variants"]) == {"no_decay", "wd_1e-4", "homework", "wd_1e-3", "strong"}
    for profile, seeds in (("demo", 2), ("homework", 3), ("gpu-ci", 2)):
        prof = yaml.safe_load((CONFIGS / "profiles" / f"{profile}.yaml").read_text())["notebooks"]["03_weight_decay_ablation"]
        chosen = ablation.load_spec(CONFIGS / "ablation.yaml", prof["variants"])
        assert chosen["baseline"] == "no_decay" and len(chosen["variants"]) >= 3
        assert len(prof["seeds"]) >= seeds, profile
    with pytest.raises(ConfigError, match="no variant 'nope'"):
        ablation.load_spec(CONFIGS / "ablation.yaml", ["nope"])


def _fake_run(run_dir: Path, cfg, engine: str = "torchvision", final: dict | None = None) -> None:
    """A finished run folder: config, run.json, a final 'checkpoint' and a last-iteration eval row."""
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = cfg.copy()
    cfg["OUTPUT_DIR"] = str(run_dir)
    cfg.save(run_dir / runs.CONFIG)
    runs.write_run_info(run_dir, engine=engine, status="finished")
    (run_dir / runs.FINAL).write_bytes(b"weights")
    last = cfg["SOLVER.MAX_ITER"] - 1
    rows = [{"iteration": 0, "total_loss": 1.0}, {"iteration": last // 2, "segm/AP50": 0.99, "segm/AP": 0.99}]
    rows.append({"iteration": last, **(final or {"segm/AP50": 0.5, "segm/AP": 0.3})})
    (run_dir / runs.METRICS).write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_plan_reuses_a_run_with_the_same_resolved_config_and_never_retrains(demo_root, tmp_path):
    from helpers import experiment

    variants = ablation.load_variants(CONFIGS / "ablation.yaml", ["no_decay", "homework"])
    split_dir = tmp_path / "data"
    # 02's run: the experiment itself (configs/homework.yaml has the homework's decays), SEED 0
    overrides = {"MODEL.ROI_HEADS.NUM_CLASSES": 5, "SOLVER.MAX_ITER": 10}
    cfg02, _, train_dir = experiment.setup_run(CONFIGS / "homework.yaml", {**overrides, "SEED": 0}, "torchvision",
                                               demo_root, tmp_path / "train", split_dir)
    _fake_run(train_dir, cfg02)
    out = tmp_path / "ablation"
    entries = ablation.plan(CONFIGS / "homework.yaml", variants, out, seeds=[0, 1], data_root=demo_root,
                            overrides=overrides, split_dir=split_dir, reuse=[train_dir])
    status = {ablation.run_name(e["variant"], e["seed"]): e["status"] for e in entries}
    assert status == {"no_decay/seed0": "train", "no_decay/seed1": "train", "homework/seed0": "reused",
                      "homework/seed1": "train"}
    assert next(e for e in entries if e["status"] == "reused")["run_dir"] == train_dir
    cost = ablation.cost(entries, seconds_per_iteration=0.36)
    assert cost == {"runs": 4, "to_train": 3, "reused": 1, "finished": 0, "iterations": 30,
                    "seconds_per_iteration": 0.36, "hours": pytest.approx(30 * 0.36 / 3600)}
    assert "3 to train (30 iterations), 1 reused" in ablation.format_plan(entries, 0.36)
    # finish the others by hand: nothing is left to train, and the results use the final evaluations
    values = {"no_decay/seed0": 0.40, "no_decay/seed1": 0.42, "homework/seed1": 0.52}
    for e in entries:
        if e["status"] == "train":
            v = values[ablation.run_name(e["variant"], e["seed"])]
            _fake_run(e["run_dir"], e["cfg"], final={"segm/AP50": v, "segm/AP": v / 2})
    entries = ablation.plan(CONFIGS / "homework.yaml", variants, out, seeds=[0, 1], data_root=demo_root,
                            overrides=overrides, split_dir=split_dir, reuse=[train_dir])
    assert sorted(e["status"] for e in entries) == ["finished", "finished", "finished", "reused"]
    assert ablation.cost(entries)["iterations"] == 0
    res = ablation.collect(entries, variants, "no_decay")
    by = {s["variant"]: s for s in res["summary"]}
    assert by["homework"]["segm/AP50"]["values"] == [0.5, 0.52]  # final checkpoint, not the 0.99 mid-run
    assert by["no_decay"]["segm/AP50"]["mean"] == pytest.approx(0.41)
    assert by["homework"]["weight_decay_bias"] == 0.01 and by["no_decay"]["weight_decay"] == 0.0
    assert [r["reused"] for r in res["runs"] if r["variant"] == "homework"] == [True, False]
    (comparison,) = res["comparisons"]
    assert comparison["a"] == "homework" and comparison["b"] == "no_decay"
    assert comparison["diff"] == pytest.approx(0.10)
    assert comparison["verdict"] == ablation.verdict("homework", "no_decay", stats.welch([0.5, 0.52], [0.40, 0.42]))
    text = ablation.format_table(res)
    assert "mask mAP@0.5 (segm AP50)" in text and "mask AP@[.5:.95] (segm AP)" in text and "0.0001" in text
    assert comparison["verdict"] in text


def test_plan_refuses_an_ablation_without_a_val_split_and_duplicate_seeds(demo_root, tmp_path):
    variants = ablation.load_variants(CONFIGS / "ablation.yaml", ["no_decay"])
    kw = dict(data_root=demo_root, split_dir=tmp_path / "data")
    with pytest.raises(ConfigError, match="VAL_FRACTION"):
        ablation.plan(CONFIGS / "demo.yaml", variants, tmp_path / "a", overrides={"DATASETS.VAL_FRACTION": 0.0}, **kw)
    with pytest.raises(ConfigError, match="distinct"):
        ablation.plan(CONFIGS / "demo.yaml", variants, tmp_path / "a", seeds=[1, 1], **kw)


def test_format_best_names_the_metric(tmp_path):
    assert "no best checkpoint" in runs.format_best(tmp_path)
    runs.record_best(tmp_path, 299, 0.8530573)
    assert runs.format_best(tmp_path) == ("model_best.pth: val mask mAP@0.5 (segm AP50) 0.8531 at iteration 300 "
                                          "(chosen by TEST.BEST_METRIC segm/AP50)")


def test_runs_table_writes_each_run_folder_as_asked():
    """The report writes run folders relative to the project (not this machine's absolute paths)."""
    res = {"runs": [{"variant": "homework", "seed": 1, "segm/AP50": 0.5, "segm/AP": 0.25,
                     "run_dir": "/somewhere/runs/demo/ablation/homework/seed1", "reused": True}]}
    cols, rows = ablation.runs_table(res, lambda p: p.removeprefix("/somewhere/"))
    assert cols[-1] == "run" and rows == [["homework", "1", "0.5000", "0.2500", "runs/demo/ablation/homework/seed1 (reused)"]]
    assert ablation.runs_table(res)[1][0][-1] == "/somewhere/runs/demo/ablation/homework/seed1 (reused)"
