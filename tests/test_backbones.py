"""Backbones R50, R101 and X101-32x8d from detectron2's RESNETS keys: configs, model shapes, training, errors."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch
import torchvision

from helpers import data, experiment, runs
from helpers.config import load_config
from helpers.engines import detectron2_engine as d2e
from helpers.engines import torchvision_engine as tve
from helpers.engines.torchvision_engine import weights as tv_weights
from helpers.errors import ConfigError, EngineError
from engine_checks import assert_instances_fit_images
from tiny_schedule import tiny_overrides

X101 = {"MODEL.RESNETS.DEPTH": "101", "MODEL.RESNETS.NUM_GROUPS": "32", "MODEL.RESNETS.WIDTH_PER_GROUP": "8",
        "MODEL.RESNETS.STRIDE_IN_1X1": "False"}

# (config file, torchvision's reference constructor, groups and width of a res2 bottleneck's 3x3 conv)
BACKBONES = [
    ("homework.yaml", "resnet50", 1, 64),
    ("homework_r101.yaml", "resnet101", 1, 64),
    ("homework_x101.yaml", "resnext101_32x8d", 32, 256),
]


def _params(module: torch.nn.Module, skip: str = "\0") -> int:
    return sum(p.numel() for name, p in module.named_parameters() if not name.startswith(skip))


@pytest.mark.parametrize("config, reference, groups, width", BACKBONES)
def test_backbone_matches_torchvisions_reference(project_root, config, reference, groups, width):
    cfg = load_config(project_root / "configs" / config, ["MODEL.WEIGHTS", ""])  # random init: BN, nothing frozen
    for engine in ("torchvision", "detectron2"):
        cfg.check_engine(engine)  # STRIDE_IN_1X1 False (X101) is what torchvision builds: accepted
    model = tve.build_model(tve.prepare_config(cfg), 20, load_weights=False)
    body = model.backbone.body
    assert _params(body) == _params(getattr(torchvision.models, reference)(), skip="fc.")
    conv = body.layer1[0].conv2  # res2's first 3x3 conv
    assert (conv.groups, conv.in_channels, conv.out_channels) == (groups, width, width)
    assert body.layer2[0].conv2.stride == (2, 2) and body.layer2[0].conv1.stride == (1, 1)  # stride in the 3x3


def test_x101_trains_and_predicts_through_the_engine_api(project_root, demo_root, tmp_path):
    run_dir = tmp_path / "run"
    # one 64 px image per iteration, no evaluation: the largest backbone at the least cost (~20 s on 2 CPU cores)
    overrides = tiny_overrides(**X101, **{"SOLVER.MAX_ITER": "2", "SOLVER.CHECKPOINT_PERIOD": "2", "SOLVER.IMS_PER_BATCH": "1",
                                          "INPUT.MIN_SIZE_TRAIN": "(64,)", "INPUT.MAX_SIZE_TRAIN": "96",
                                          "INPUT.MIN_SIZE_TEST": "64", "INPUT.MAX_SIZE_TEST": "96",
                                          "TEST.EVAL_PERIOD": "0", "DATASETS.VAL_FRACTION": "0.0"})
    experiment.train(project_root / "configs" / "demo.yaml", overrides, data_root=demo_root, run_dir=run_dir,
                     progress=False)
    assert [r["iteration"] for r in runs.read_metrics(run_dir)] == [0, 1] and (run_dir / runs.FINAL).is_file()
    state = torch.load(run_dir / runs.FINAL, map_location="cpu", weights_only=True)["model"]
    assert state["backbone.body.layer1.0.conv2.weight"].shape == (256, 8, 3, 3)  # 32 groups of 8 channels
    predictor = experiment.load_predictor(run_dir, score_thresh=0.0)
    split = data.load_split(demo_root / data.TEST_JSON, check_images=False)
    image = data.read_image(split.image_path(split.images[0]))
    assert_instances_fit_images([image], predictor([image]), {c["id"] for c in split.categories})


@pytest.mark.parametrize("overrides, message", [
    (["MODEL.RESNETS.NUM_GROUPS", "0"], r"MODEL\.RESNETS\.NUM_GROUPS = 0 is out of range: expected an integer >= 1"),
    (["MODEL.RESNETS.WIDTH_PER_GROUP", "0"], r"MODEL\.RESNETS\.WIDTH_PER_GROUP = 0 is out of range"),
    (["MODEL.RESNETS.NUM_GROUPS", "32"], r"NUM_GROUPS = 32 needs a bottleneck ResNet \(MODEL\.RESNETS\.DEPTH >= 50\)"),
])
def test_bad_groups_are_config_errors(project_root, overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(project_root / "configs" / "demo.yaml", overrides)  # demo: DEPTH 18


def test_bad_num_groups_is_one_error_line_on_the_command_line(project_root, demo_root, tmp_path):
    done = subprocess.run([sys.executable, "-m", "helpers", "train", "--config", str(project_root / "configs" / "demo.yaml"),
                           "--data", str(demo_root), "--run-dir", str(tmp_path / "run"), "MODEL.RESNETS.NUM_GROUPS", "-2"],
                          cwd=project_root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: MODEL.RESNETS.NUM_GROUPS = -2 is out of range: expected an integer >= 1"]
    assert not (tmp_path / "run").exists()


def test_torchvision_cannot_widen_basic_blocks(project_root):
    cfg = load_config(project_root / "configs" / "demo.yaml", ["MODEL.RESNETS.WIDTH_PER_GROUP", "128"])
    with pytest.raises(ConfigError, match=r"WIDTH_PER_GROUP = 128: the torchvision engine builds ResNet-18"):
        tve.prepare_config(cfg)


def test_imagenet_weights_exist_only_for_torchvisions_shapes(project_root):
    homework = project_root / "configs" / "homework.yaml"
    assert tv_weights._imagenet_weights(load_config(project_root / "configs" / "homework_x101.yaml")) \
        is torchvision.models.ResNeXt101_32X8D_Weights.IMAGENET1K_V1
    assert tv_weights._imagenet_weights(load_config(project_root / "configs" / "homework_r101.yaml")) \
        is torchvision.models.ResNet101_Weights.IMAGENET1K_V1
    cfg = load_config(homework, ["MODEL.RESNETS.DEPTH", "152", "MODEL.RESNETS.NUM_GROUPS", "32"])
    with pytest.raises(ConfigError) as err:
        tve.prepare_config(cfg)
    assert len(str(err.value).splitlines()) == 1
    assert "no ImageNet weights for ResNeXt-152 32x64d" in str(err.value) and "MODEL.WEIGHTS ''" in str(err.value)
    tve.prepare_config(cfg.merge(["MODEL.WEIGHTS", ""]))  # random init needs no weights


@pytest.mark.parametrize("config, file", [("homework_r101.yaml", "resnet101-63fe2227.pth"),
                                          ("homework_x101.yaml", "resnext101_32x8d-8ba56ff5.pth")])
def test_imagenet_weights_offline_name_the_file(project_root, offline, config, file):
    cfg = load_config(project_root / "configs" / config, ["MODEL.DEVICE", "cpu"])
    start = time.monotonic()
    with pytest.raises(EngineError) as err:
        tve.build_model(cfg, 20)
    assert time.monotonic() - start < 30
    assert file in str(err.value) and str(offline) in str(err.value)


def test_detectron2_x101_imagenet_is_fairs_with_its_pixel_std(project_root):
    """detectron2 itself is not needed to resolve the weights and the effective keys."""
    cfg = d2e.prepare_config(load_config(project_root / "configs" / "homework_x101.yaml", ["MODEL.DEVICE", "cpu"]))
    assert d2e._weights(cfg) == "detectron2://ImageNetPretrained/FAIR/X-101-32x8d.pkl"
    assert cfg["MODEL.PIXEL_STD"] == [57.375, 57.120, 58.395] and cfg["MODEL.RESNETS.STRIDE_IN_1X1"] is False
    r101 = d2e.prepare_config(load_config(project_root / "configs" / "homework_r101.yaml", ["MODEL.DEVICE", "cpu"]))
    assert d2e._weights(r101) == "detectron2://ImageNetPretrained/MSRA/R-101.pkl"
    assert r101["MODEL.PIXEL_STD"] == [1.0, 1.0, 1.0]
    with pytest.raises(EngineError, match=r"not 50/32/4"):
        d2e.prepare_config(load_config(project_root / "configs" / "homework.yaml",
                                       ["MODEL.RESNETS.NUM_GROUPS", "32", "MODEL.RESNETS.WIDTH_PER_GROUP", "4"]))
