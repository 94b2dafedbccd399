"""The detectron2 engine on the CPU: config translation, run folder, bit-exact kill-and-resume,
predictor, errors. Without detectron2 (CI) only the first test runs: the engine module still
imports and says why it is unavailable."""

from __future__ import annotations

import importlib.util
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import data, experiment, runs
from helpers.config import load_config
from helpers.engines import detectron2_engine as d2e
from helpers.engines import get_engine
from helpers.errors import ConfigError, EngineError
from engine_checks import assert_instances_fit_images, assert_run_folder_layout, assert_same_run, final_state
from tiny_schedule import MAX_ITER, tiny_overrides


def test_engine_module_imports_and_says_why_without_detectron2(monkeypatch):
    monkeypatch.setitem(sys.modules, "detectron2", None)  # as if it were not installed
    ok, reason = d2e.available()
    assert not ok
    assert reason.startswith("detectron2 is not importable (") and reason.endswith("install it from source: see README")
    with pytest.raises(EngineError, match="the detectron2 engine is not available: detectron2 is not importable"):
        get_engine("detectron2")


def needs_detectron2(test):
    """Marks a test that needs detectron2: skipped, saying so, where it is not installed (CI)."""
    absent = importlib.util.find_spec("detectron2") is None
    skip = pytest.mark.skipif(absent, reason="detectron2 is not importable: install it from source (README)")
    return pytest.mark.detectron2(skip(test))

def tiny_config(project_root: Path, **extra: str):
    return d2e.prepare_config(load_config(project_root / "configs" / "demo.yaml", tiny_overrides(**extra)))


def train_command(project_root: Path, demo_root: Path, run_dir: Path, *flags: str) -> list[str]:
    return [sys.executable, "-m", "helpers", "train", "--engine", "detectron2",
            "--config", str(project_root / "configs" / "demo.yaml"), "--data", str(demo_root),
            "--run-dir", str(run_dir), *flags, *tiny_overrides()]


@pytest.fixture(scope="module")
def reference_run(project_root, demo_root, tmp_path_factory) -> Path:
    """An uninterrupted training run: the layout checks, the predictor and the resume reference."""
    run_dir = tmp_path_factory.mktemp("d2_reference") / "run"
    experiment.train(project_root / "configs" / "demo.yaml", tiny_overrides(), engine="detectron2",
                     data_root=demo_root, run_dir=run_dir, progress=False)
    return run_dir


# ------------------------------------------------------------------------------------- config


@needs_detectron2
def test_homework_values_land_in_the_detectron2_config(project_root):
    cfg = d2e.prepare_config(load_config(project_root / "configs" / "homework.yaml", ["MODEL.DEVICE", "cpu"]))
    node = d2e.detectron2_config(cfg)
    assert node.SOLVER.BASE_LR == 0.00025 and node.SOLVER.IMS_PER_BATCH == 2 and node.SOLVER.MAX_ITER == 30000
    assert node.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE == 128 and node.MODEL.ROI_HEADS.NUM_CLASSES == 20
    assert node.SOLVER.WEIGHT_DECAY_BIAS == 0.01 and node.SOLVER.WEIGHT_DECAY == 1e-4
    assert node.SOLVER.CHECKPOINT_PERIOD == 3000 and node.DATALOADER.NUM_WORKERS == 2
    assert tuple(node.SOLVER.STEPS) == (210000, 250000)
    assert tuple(node.INPUT.MIN_SIZE_TRAIN) == (640, 672, 704, 736, 768, 800) and node.INPUT.FORMAT == "BGR"
    assert node.MODEL.WEIGHTS == "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
    assert node.MODEL.RESNETS.NORM == "FrozenBN" and node.MODEL.BACKBONE.FREEZE_AT == 2
    assert node.MODEL.META_ARCHITECTURE == "GeneralizedRCNN" and node.MODEL.MASK_ON
    assert "ROOT" not in node.DATASETS and "VAL_FRACTION" not in node.DATASETS  # ours, not detectron2's


@needs_detectron2
def test_x101_backbone_keys_land_in_the_detectron2_config_and_build(project_root):
    cfg = d2e.prepare_config(load_config(project_root / "configs" / "homework_x101.yaml", ["MODEL.DEVICE", "cpu"]))
    node = d2e.detectron2_config(cfg)
    resnets = node.MODEL.RESNETS
    assert (resnets.DEPTH, resnets.NUM_GROUPS, resnets.WIDTH_PER_GROUP, resnets.STRIDE_IN_1X1) == (101, 32, 8, False)
    assert node.MODEL.WEIGHTS == "detectron2://ImageNetPretrained/FAIR/X-101-32x8d.pkl"
    assert tuple(node.MODEL.PIXEL_STD) == (57.375, 57.120, 58.395)
    from detectron2.modeling import build_backbone

    conv = build_backbone(node).bottom_up.res2[0].conv2  # res2's first 3x3 conv: 32 groups of 8 channels
    assert (conv.groups, conv.in_channels, conv.out_channels, conv.stride) == (32, 256, 256, (1, 1))


@needs_detectron2
def test_pooler_sampling_ratio_keys_land_in_the_detectron2_config(project_root):
    cfg = d2e.prepare_config(load_config(project_root / "configs" / "homework.yaml", [
        "MODEL.DEVICE", "cpu", "MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO", "2", "MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO", "3"]))
    node = d2e.detectron2_config(cfg)
    assert (node.MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO, node.MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO) == (2, 3)


@needs_detectron2
def test_config_without_the_model_zoo_is_the_same(project_root, monkeypatch):
    """Where detectron2.model_zoo cannot import (no pkg_resources), the structural keys are set directly."""
    import detectron2

    cfg = d2e.prepare_config(load_config(project_root / "configs" / "homework.yaml", ["MODEL.DEVICE", "cpu"]))
    with_zoo = d2e.detectron2_config(cfg).dump()
    monkeypatch.delattr(detectron2, "model_zoo", raising=False)
    monkeypatch.setitem(sys.modules, "detectron2.model_zoo", None)
    assert d2e.detectron2_config(cfg).dump() == with_zoo


@needs_detectron2
def test_prepare_config_makes_random_init_and_small_resnets_buildable(project_root):
    cfg = d2e.prepare_config(load_config(project_root / "configs" / "homework.yaml",
                                         ["MODEL.WEIGHTS", "", "MODEL.RESNETS.DEPTH", "18"]))
    assert (cfg["MODEL.RESNETS.NORM"], cfg["MODEL.BACKBONE.FREEZE_AT"]) == ("BN", 0)
    assert cfg["MODEL.RESNETS.RES2_OUT_CHANNELS"] == 64
    with pytest.raises(EngineError, match="ImageNet weights for R50, R101 and X101-32x8d .*not 18/1/64"):
        d2e.prepare_config(load_config(project_root / "configs" / "demo.yaml", ["MODEL.WEIGHTS", "imagenet"]))
    with pytest.raises(ConfigError, match=r"MODEL\.MASK_ON = False is not supported by the detectron2 engine"):
        load_config(project_root / "configs" / "demo.yaml", ["MODEL.MASK_ON", "False"]).check_engine("detectron2")


@needs_detectron2
def test_offline_weights_download_fails_with_instructions():
    with pytest.raises(EngineError) as err:
        d2e._fetch_weights("http://127.0.0.1:9/R-50.pkl")  # nothing listens there: refused, like offline
    assert "set MODEL.WEIGHTS to its path" in str(err.value) and "MODEL.WEIGHTS '' for random init" in str(err.value)


@needs_detectron2
def test_missing_weights_file_is_an_engine_error(project_root, tmp_path):
    with pytest.raises(EngineError, match="no such file"):
        d2e.prepare_config(load_config(project_root / "configs" / "demo.yaml",
                                       ["MODEL.WEIGHTS", str(tmp_path / "x.pkl")]))


@needs_detectron2
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_device_without_cuda_is_a_clear_error(project_root):
    cfg = d2e.prepare_config(load_config(project_root / "configs" / "homework.yaml"))
    with pytest.raises(EngineError, match="pass MODEL.DEVICE cpu"):
        d2e.detectron2_config(cfg)


# ---------------------------------------------------------------------------------- training


@needs_detectron2
@pytest.mark.slow
def test_training_run_folder_layout(reference_run):
    from detectron2.config import get_cfg

    assert_run_folder_layout(reference_run, {d2e.D2_CONFIG}, {"loss_cls", "loss_box_reg", "loss_mask", "loss_rpn_cls",
                                                              "loss_rpn_loc", "total_loss", "lr", "data_time"})
    assert runs.read_run_info(reference_run)["engine"] == "detectron2"
    node = get_cfg()
    node.merge_from_file(str(reference_run / d2e.D2_CONFIG))
    assert (node.SOLVER.MAX_ITER, node.MODEL.RESNETS.NORM, node.OUTPUT_DIR) == (MAX_ITER, "BN", str(reference_run))
    checkpoint = torch.load(reference_run / "model_0000002.pth", weights_only=True)
    assert checkpoint["iteration"] == 2 and checkpoint["model"].keys() == final_state(reference_run).keys()


@needs_detectron2
def test_batches_depend_only_on_the_iteration(project_root, demo_root, tmp_path):
    """The loader started at iteration 3, with two workers, yields what the one started at 0 yields there."""
    cfg = tiny_config(project_root)
    splits = experiment.prepare_split(cfg, demo_root, tmp_path / "split")
    node = d2e.detectron2_config(cfg, splits)
    from_start = iter(d2e.train_loader(node, 0))
    batches = [next(from_start) for _ in range(5)]
    node.DATALOADER.NUM_WORKERS = 2
    resumed = iter(d2e.train_loader(node, 3))
    for expected in batches[3:]:
        got = next(resumed)
        assert [b["image_id"] for b in got] == [b["image_id"] for b in expected]
        assert all(torch.equal(g["image"], e["image"]) for g, e in zip(got, expected))
        assert all(torch.equal(g["instances"].gt_boxes.tensor, e["instances"].gt_boxes.tensor)
                   for g, e in zip(got, expected))


@needs_detectron2
def test_both_engines_batch_the_same_images_whatever_order_the_json_lists(project_root, demo_root, tmp_path):
    """detectron2 lists a COCO file's images by id, and so does the torchvision engine: iteration k's
    batch holds the same images in both (the benchmark's training comparison relies on it)."""
    import json

    from helpers.engines import base
    from helpers.engines.torchvision_engine import train_data as tv_data

    cfg = tiny_config(project_root)
    splits = experiment.prepare_split(cfg, demo_root, tmp_path / "split")
    doc = json.loads(splits.train.read_text())
    doc["images"] = doc["images"][1::2] + doc["images"][::2]
    splits.train.write_text(json.dumps(doc))
    node = d2e.detectron2_config(cfg, splits)
    d2_batches = iter(d2e.train_loader(node, 0))
    tv_images = tv_data._TrainImages(data.load_split(splits.train, check_images=False), True, False, 0)
    for it in range(4):
        tv_files = [Path(tv_images.records[i][0]).resolve()
                    for i in base.batch_indices(len(tv_images), node.SOLVER.IMS_PER_BATCH, it, node.SEED)]
        assert [Path(b["file_name"]).resolve() for b in next(d2_batches)] == tv_files


@needs_detectron2
@pytest.mark.slow
def test_killed_after_a_checkpoint_resumes_bit_identically(project_root, demo_root, reference_run, tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(train_command(project_root, demo_root, run_dir), cwd=project_root,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    try:
        while runs.last_checkpoint(run_dir) is None:
            assert proc.poll() is None, f"the run ended before it was killed: {proc.stderr.read().decode()[-2000:]}"
            assert time.monotonic() < deadline, "timed out waiting to kill the run"
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert not (run_dir / runs.FINAL).exists()
    resumed_at = int(runs.last_checkpoint(run_dir).stem.split("_")[1]) + 1
    done = subprocess.run(train_command(project_root, demo_root, run_dir, "--resume"), cwd=project_root,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"Starting training from iteration {resumed_at}" in done.stdout + done.stderr

    assert_same_run(run_dir, reference_run)


@needs_detectron2
def test_checkpoint_write_killed_midway_leaves_the_previous_one(tmp_path, monkeypatch):
    model = torch.nn.Linear(2, 2)
    checkpointer = d2e._detectron2_class(d2e._AtomicCheckpointer, "detectron2.checkpoint.DetectionCheckpointer")(
        model, str(tmp_path))
    checkpointer.save("model_0000002", iteration=2)

    def dies_halfway(obj, f, *args, **kwargs):
        f.write(b"PK half a checkpoint")
        raise KeyboardInterrupt  # stands for the kill

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        checkpointer.save("model_0000005", iteration=5)
    assert sorted(p.name for p in tmp_path.iterdir()) == [runs.LAST, "model_0000002.pth"]
    assert runs.last_checkpoint(tmp_path) == tmp_path / "model_0000002.pth"
    assert torch.load(tmp_path / "model_0000002.pth", weights_only=True)["iteration"] == 2


@needs_detectron2
@pytest.mark.slow
def test_nan_loss_stops_with_the_iteration_and_keeps_the_last_checkpoint(project_root, demo_root, tmp_path):
    run_dir = tmp_path / "run"
    overrides = tiny_overrides(**{"SOLVER.BASE_LR": "10000.0", "SOLVER.WARMUP_ITERS": "1",
                                  "SOLVER.CHECKPOINT_PERIOD": "1"})
    with pytest.raises(EngineError, match=r"nan or inf at iteration \d+") as err:
        experiment.train(project_root / "configs" / "demo.yaml", overrides, engine="detectron2", data_root=demo_root,
                         run_dir=run_dir, progress=False)
    failed_at = int(str(err.value).split("at iteration ")[1].split(" ")[0])
    assert failed_at >= 1, "the learning rate needs a step to blow up"
    assert runs.last_checkpoint(run_dir) == run_dir / runs.checkpoint_name(failed_at - 1)
    assert str(run_dir / runs.checkpoint_name(failed_at - 1)) in str(err.value)
    assert not (run_dir / runs.checkpoint_name(failed_at)).exists() and not (run_dir / runs.FINAL).exists()
    assert [r["iteration"] for r in runs.read_metrics(run_dir)] == list(range(failed_at))


# -------------------------------------------------------------------------------- prediction


@needs_detectron2
@pytest.mark.slow
def test_predictor_returns_instances_with_dataset_ids(reference_run, demo_root):
    predictor = experiment.load_predictor(reference_run, score_thresh=0.0)
    split = data.load_split(demo_root / data.TEST_JSON, check_images=False)
    images = [data.read_image(split.image_path(img)) for img in split.images[:2]]
    assert predictor.device == "cpu"
    assert_instances_fit_images(images, predictor(images), {c["id"] for c in split.categories})


@needs_detectron2
@pytest.mark.slow
def test_classes_map_back_to_the_data_sets_category_ids(reference_run, demo_root):
    cfg, _ = experiment.load_run(reference_run)
    cfg["MODEL.ROI_HEADS.SCORE_THRESH_TEST"] = 0.0
    split = data.load_split(demo_root / data.TEST_JSON, check_images=False)
    image = data.read_image(split.image_path(split.images[0]))
    checkpoint = reference_run / runs.FINAL
    plain = d2e.load_predictor(cfg, checkpoint, split.categories)([image])[0]
    sparse = [{**c, "id": c["id"] * 10} for c in split.categories]
    renumbered = d2e.load_predictor(cfg, checkpoint, sparse)([image])[0]
    assert len(plain) > 0 and renumbered.category_ids.tolist() == (plain.category_ids * 10).tolist()


@needs_detectron2
def test_predictor_feeds_the_model_bgr(project_root):
    """The homework gave RGB to a BGR model; ours converts: a red image reaches the model red in BGR."""
    from detectron2.modeling import build_model

    node = d2e.detectron2_config(tiny_config(project_root))
    model = build_model(node).eval()
    seen = []
    model.backbone.register_forward_pre_hook(lambda _module, args: seen.append(args[0]))
    red = np.zeros((64, 80, 3), np.uint8)
    red[..., 0] = 255
    inst = d2e._predictor(model, node, [{"id": i, "name": str(i)} for i in range(1, 6)])([red])[0]
    mean, std = node.MODEL.PIXEL_MEAN, node.MODEL.PIXEL_STD  # BGR order
    pixel = seen[0][0, :, 0, 0]
    assert pixel.tolist() == pytest.approx([(0 - mean[0]) / std[0], (0 - mean[1]) / std[1], (255 - mean[2]) / std[2]])
    assert inst.masks.shape[1:] == (64, 80)


@needs_detectron2
def test_architecture_matches_the_torchvision_engines_stages(project_root, demo_root):
    from helpers.engines import torchvision_engine as tve

    cfg = load_config(project_root / "configs" / "demo.yaml")
    split = data.load_split(demo_root / data.TRAIN_JSON, check_images=False)
    image = data.read_image(split.image_path(split.images[0]))
    rows = d2e.architecture(d2e.prepare_config(cfg), split.categories, image)
    stages = [r["stage"] for r in rows]
    assert stages == [r["stage"] for r in tve.architecture(tve.prepare_config(cfg), split.categories, image)]
    shapes = {r["stage"]: r["shape"] for r in rows}
    assert shapes["fpn.p2"][1] == cfg["MODEL.FPN.OUT_CHANNELS"]
    assert shapes["roi_heads.mask_predictor"][1:] == [len(split.categories), 28, 28]  # class-specific, no background
    assert shapes["output.masks"][1:] == list(image.shape[:2])


@needs_detectron2
def test_build_optimizer_is_detectron2s_with_its_weight_decay_groups(project_root, demo_root):
    """detectron2's own build_optimizer over the config: weights, biases and norms get their decays."""
    from engine_checks import weight_decay_groups_of

    assert sum(g["values"] for g in weight_decay_groups_of(d2e, project_root, demo_root)) > 1_000_000


@needs_detectron2
def test_best_metric_key_and_training_on_every_image(project_root, demo_root, tmp_path):
    """TEST.BEST_METRIC picks model_best.pth; DATASETS.VAL_FRACTION 0 trains on every image and evaluates nothing."""
    run = experiment.train(project_root / "configs" / "demo.yaml", tiny_overrides(**{"TEST.BEST_METRIC": "bbox/AP50"}),
                           engine="detectron2", data_root=demo_root, run_dir=tmp_path / "bbox", progress=False)
    best = runs.read_best(run)
    assert best["metric"] == "bbox/AP50"
    assert best["value"] == max(r["bbox/AP50"] for r in runs.eval_rows(runs.read_metrics(run)))
    run = experiment.train(project_root / "configs" / "demo.yaml", tiny_overrides(**{"DATASETS.VAL_FRACTION": "0"}),
                           engine="detectron2", data_root=demo_root, run_dir=tmp_path / "all", progress=False)
    assert runs.is_finished(run) and not runs.eval_rows(runs.read_metrics(run)) and runs.read_best(run) is None


@needs_detectron2
def test_channel_order_check_swaps_to_rgb_for_a_bgr_model(reference_run, tmp_path):
    from helpers import inference_checks

    order = inference_checks.channel_order(reference_run, tmp_path)
    assert order["trained_with"] == "BGR" and order["engine"] == "detectron2"
    assert [(r["fed"], r["as_trained"]) for r in order["rows"]] == [("BGR", True), ("RGB", False)]
    assert all(0.0 <= r["segm/AP50"] <= 1.0 for r in order["rows"])


@needs_detectron2
@pytest.mark.slow
def test_tta_is_detectron2s_own_and_one_pass_equals_the_plain_prediction(reference_run, demo_root, tmp_path):
    """TEST.AUG.ENABLED wraps the model in GeneralizedRCNNWithTTA, fed the image at its own size: with one
    pass at MIN_SIZE_TEST and no flip, its detections are the plain predictor's."""
    from helpers import inference_checks

    split = data.load_split(demo_root / data.TEST_JSON, check_images=False)
    images = [data.read_image(split.image_path(img)) for img in split.images[:2]]
    plain = experiment.load_predictor(reference_run, score_thresh=0.0)(images)
    cfg, _ = experiment.load_run(reference_run)
    run = tmp_path / "one_pass"
    import shutil

    shutil.copytree(reference_run, run)
    cfg["TEST.AUG.MIN_SIZES"], cfg["TEST.AUG.FLIP"] = [cfg["INPUT.MIN_SIZE_TEST"]], False
    cfg.save(run / "config.yaml")
    one_pass = experiment.load_predictor(run, score_thresh=0.0, tta=True)(images)
    for a, b in zip(plain, one_pass):
        assert len(a.scores) > 0 and len(a.scores) == len(b.scores)
        assert np.allclose(a.scores, b.scores, atol=1e-5) and np.allclose(a.boxes, b.boxes, atol=1e-2)
        assert (a.category_ids == b.category_ids).all()
    assert_instances_fit_images(images, experiment.load_predictor(reference_run, score_thresh=0.0, tta=True)(images),
                                {c["id"] for c in split.categories})
    report = inference_checks.measure_tta(reference_run, tmp_path)
    assert [r["tta"] for r in report["rows"]] == [False, True] and report["augmentations"] == 6


@needs_detectron2
def test_training_steps_replay_the_runs_iterations(reference_run):
    from engine_checks import assert_training_steps_replay

    assert_training_steps_replay(d2e, reference_run)
