"""Best-checkpoint metric, training on every image, and the homework's inference mistakes measured,
on tiny torchvision runs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from helpers import experiment, inference_checks, runs
from helpers.engines.base import Predictor
from helpers.errors import ConfigError, DataError
from helpers.evaluate import evaluate
from helpers.paths import CONFIGS
from tiny_schedule import tiny_overrides

pytestmark = pytest.mark.slow


def _train(demo_root, run_dir, **extra):
    extra = {"MODEL.ROI_HEADS.SCORE_THRESH_TEST": "0.05", **extra}
    return experiment.train(CONFIGS / "demo.yaml", tiny_overrides(**extra), data_root=demo_root, run_dir=run_dir,
                            progress=False)


@pytest.fixture(scope="module")
def tiny_run(demo_root, tmp_path_factory):
    return _train(demo_root, tmp_path_factory.mktemp("checks") / "train")


def test_best_checkpoint_is_chosen_by_segm_ap50_by_default(tiny_run):
    best = runs.read_best(tiny_run)
    evals = runs.eval_rows(runs.read_metrics(tiny_run))
    top = max(evals, key=lambda r: r["segm/AP50"])
    assert best["metric"] == "segm/AP50" and best["value"] == top["segm/AP50"]


def test_best_metric_key_is_honoured_and_checked(demo_root, tmp_path):
    run = _train(demo_root, tmp_path / "bbox", **{"TEST.BEST_METRIC": "bbox/AP"})
    best = runs.read_best(run)
    evals = runs.eval_rows(runs.read_metrics(run))
    assert best["metric"] == "bbox/AP" and best["value"] == max(r["bbox/AP"] for r in evals)
    with pytest.raises(ConfigError, match="TEST.BEST_METRIC.*segm/mAP"):
        _train(demo_root, tmp_path / "bad", **{"TEST.BEST_METRIC": "segm/mAP"})
    assert not (tmp_path / "bad").exists()


def test_val_fraction_zero_trains_on_every_image_without_evaluating(demo_root, tmp_path):
    run = _train(demo_root, tmp_path / "all", **{"DATASETS.VAL_FRACTION": "0"})
    info = runs.read_run_info(run)
    train = json.loads(open(info["train_split"]).read())
    source = json.loads((demo_root / "pascal_train.json").read_text())
    assert len(train["images"]) == len(source["images"])
    assert runs.is_finished(run) and not runs.eval_rows(runs.read_metrics(run)) and runs.read_best(run) is None
    assert runs.resolve_checkpoint(run, "best").name == runs.FINAL
    with pytest.raises(DataError, match="trained on every image"):
        experiment.evaluate_run(run)
    assert "skipped" in inference_checks.measure(run, tmp_path)
    assert not (tmp_path / inference_checks.CHANNEL_ORDER).exists()


def test_swapped_predictor_feeds_the_opposite_channel_order():
    seen = []
    predictor = Predictor(lambda images: seen.extend(images) or [None] * len(images), [], 0.05, "cpu")
    image = np.zeros((2, 2, 3), dtype=np.uint8)
    image[..., 0] = 200
    predictor([image])
    predictor.swap_channels = True
    predictor([image])
    assert seen[0][0, 0].tolist() == [200, 0, 0] and seen[1][0, 0].tolist() == [0, 0, 200]


def test_channel_order_and_threshold_sweep_are_measured_on_val(tiny_run, tmp_path):
    from helpers import data
    from helpers.engines.base import predict_split

    order = inference_checks.channel_order(tiny_run, tmp_path)
    assert json.loads((tmp_path / inference_checks.CHANNEL_ORDER).read_text()) == order
    assert order["trained_with"] == "RGB" and [r["fed"] for r in order["rows"]] == ["RGB", "BGR"]
    split = data.load_split(runs.read_run_info(tiny_run)["val_split"], check_images=False)
    as_trained = predict_split(experiment.load_predictor(tiny_run), split)
    assert order["rows"][0]["segm/AP50"] == evaluate(split.coco, as_trained)["AP50"]
    assert order["rows"][0]["detections"] == len(as_trained)
    swapped = predict_split(experiment.load_predictor(tiny_run, swap_channels=True), split)
    assert order["rows"][1]["segm/AP"] == evaluate(split.coco, swapped)["AP"]

    sweep = inference_checks.threshold_sweep(tiny_run, tmp_path)
    assert json.loads((tmp_path / inference_checks.THRESHOLD_SWEEP).read_text()) == sweep
    thresholds = [r["threshold"] for r in sweep["rows"]]
    assert thresholds[0] == 0.0 and thresholds[-1] == 0.9 and 0.5 in thresholds and 0.05 in thresholds
    counts = [r["detections"] for r in sweep["rows"]]
    assert counts == sorted(counts, reverse=True)
    # filtering the threshold-0 predictions equals predicting at that threshold
    at_half = predict_split(experiment.load_predictor(tiny_run, score_thresh=0.5), split)
    row = next(r for r in sweep["rows"] if r["threshold"] == 0.5)
    assert row["detections"] == len(at_half) and row["segm/AP50"] == evaluate(split.coco, at_half)["AP50"]
