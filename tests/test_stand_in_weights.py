"""bench/stand_in_weights.py and the benchmark's --stand-in-weights: the homework's FrozenBN structure without
ImageNet weights."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest
import torch
from torchvision.models.resnet import ResNet
from torchvision.ops import FrozenBatchNorm2d

from helpers.config import load_config
from tiny_schedule import tiny_overrides


def _module(project_root, name):
    spec = importlib.util.spec_from_file_location(name, project_root / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _frozen_resnet(state: dict, depth: int = 50) -> ResNet:
    from helpers.engines.torchvision_engine.model import RESNET_STAGES

    block, layers = RESNET_STAGES[depth]
    resnet = ResNet(block, layers, norm_layer=FrozenBatchNorm2d)
    resnet.load_state_dict(state, strict=False)  # no fc
    return resnet.eval()


def _features(resnet: ResNet, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        x = resnet.maxpool(resnet.relu(resnet.bn1(resnet.conv1(x))))
        return resnet.layer4(resnet.layer3(resnet.layer2(resnet.layer1(x))))


def test_stand_in_norms_are_calibrated_so_frozen_features_keep_their_scale(project_root):
    stand_in = _module(project_root, "stand_in_weights")
    cfg = load_config(project_root / "configs" / "homework.yaml")
    state = stand_in.stand_in_resnet_state(cfg)
    assert not any(k.startswith("fc.") or "num_batches_tracked" in k for k in state)
    assert not torch.allclose(state["layer3.0.bn2.running_var"], torch.ones(256))  # measured, not the defaults
    x = torch.randn(1, 3, 160, 160, generator=torch.Generator().manual_seed(5))
    calibrated = _features(_frozen_resnet(state), x)
    assert torch.isfinite(calibrated).all() and 0.05 < calibrated.std() < 20
    # the same convolutions with a fresh FrozenBN's statistics (mean 0, var 1): the scale runs away
    defaults = {k: v for k, v in state.items() if "running" not in k and "bn" not in k and "downsample.1" not in k}
    assert _features(_frozen_resnet(defaults), x).std() > 10 * calibrated.std()  # 30x here


@pytest.mark.parametrize("depth", [18, 50])
def test_detectron2_names_cover_every_resnet_key_once(project_root, tmp_path, depth):
    stand_in = _module(project_root, "stand_in_weights")
    cfg = load_config(project_root / "configs" / "homework.yaml", ["MODEL.RESNETS.DEPTH", str(depth)])
    paths = stand_in.write_stand_in_weights(cfg, tmp_path / "w")
    tv = torch.load(paths["torchvision"], weights_only=True)
    d2 = torch.load(paths["detectron2"], weights_only=True)["model"]
    assert len(d2) == len(tv)  # no two torchvision keys map to one detectron2 key
    assert all(torch.equal(d2[stand_in.detectron2_name(k)], v) for k, v in tv.items())
    examples = {
        "conv1.weight": "backbone.bottom_up.stem.conv1.weight",
        "bn1.running_mean": "backbone.bottom_up.stem.conv1.norm.running_mean",
        "layer1.0.downsample.0.weight": "backbone.bottom_up.res2.0.shortcut.weight",
        "layer1.0.downsample.1.bias": "backbone.bottom_up.res2.0.shortcut.norm.bias",
        "layer4.1.bn2.running_var": "backbone.bottom_up.res5.1.conv2.norm.running_var",
    }
    for torchvision_key, detectron2_key in examples.items():
        if torchvision_key in tv:  # ResNet-18's first block has no shortcut conv
            assert stand_in.detectron2_name(torchvision_key) == detectron2_key
    with pytest.raises(ValueError, match="not a torchvision ResNet key"):
        stand_in.detectron2_name("fc.weight")


def test_detectron2_builds_exactly_the_keys_the_stand_in_names(project_root, tmp_path):
    pytest.importorskip("detectron2", reason="detectron2 is not importable: install it from source (README)")
    from detectron2.config import get_cfg
    from detectron2.layers import ShapeSpec
    from detectron2.modeling.backbone import build_resnet_backbone

    stand_in = _module(project_root, "stand_in_weights")
    cfg = load_config(project_root / "configs" / "homework.yaml")
    paths = stand_in.write_stand_in_weights(cfg, tmp_path / "w")
    node = get_cfg()
    node.MODEL.RESNETS.DEPTH, node.MODEL.RESNETS.OUT_FEATURES = 50, ["res2", "res3", "res4", "res5"]
    keys = {f"backbone.bottom_up.{k}" for k in build_resnet_backbone(node, ShapeSpec(channels=3)).state_dict()}
    assert set(torch.load(paths["detectron2"], weights_only=True)["model"]) == keys


def test_torchvision_training_loads_the_stand_in_into_a_folded_frozen_backbone(project_root, tmp_path, demo_root):
    from helpers import data
    from helpers.engines import torchvision_engine as tve
    from helpers.engines.torchvision_engine import loop
    from helpers.engines.torchvision_engine.device import _Dist
    from helpers.engines.torchvision_engine.frozen_norm import ConvWithFrozenNorm

    stand_in = _module(project_root, "stand_in_weights")
    overrides = ["MODEL.RESNETS.DEPTH", "50", "MODEL.RESNETS.NORM", "FrozenBN", "MODEL.BACKBONE.FREEZE_AT", "2",
                 "MODEL.DEVICE", "cpu"]
    paths = stand_in.write_stand_in_weights(load_config(project_root / "configs" / "demo.yaml", overrides), tmp_path / "w")
    cfg = tve.prepare_config(load_config(project_root / "configs" / "demo.yaml",
                                         [*overrides, "MODEL.WEIGHTS", str(paths["torchvision"])]))
    splits = data.make_split(data.load_split(demo_root / data.TRAIN_JSON), tmp_path / "split", val_fraction=0.2)
    trainer = loop._Trainer(cfg, splits, tmp_path / "run", _Dist(torch.device("cpu")))
    trainer.build()
    body, state = trainer.model.backbone.body, torch.load(paths["torchvision"], weights_only=True)
    assert torch.equal(body.layer3[1].bn2.running_var, state["layer3.1.bn2.running_var"])
    assert torch.equal(body.layer3[1].conv2.weight, state["layer3.1.conv2.weight"])
    assert type(body.layer3[1].conv2) is ConvWithFrozenNorm
    assert not body.layer1[0].conv1.weight.requires_grad and body.layer2[0].conv1.weight.requires_grad


def test_stand_in_pins_the_pixel_std_and_refuses_a_weights_override(project_root):
    bench = _module(project_root, "bench_engines")
    homework = str(project_root / "configs" / "homework.yaml")
    assert "MODEL.PIXEL_STD" in bench.equal_work_overrides(homework, [], stand_in=True)
    with pytest.raises(SystemExit):
        bench.parse_args(["--stand-in-weights", "MODEL.WEIGHTS", "x.pth"])


def test_bench_with_stand_in_weights_trains_the_frozen_structure_end_to_end(project_root, demo_root, tmp_path):
    out = tmp_path / "bench.json"
    overrides = tiny_overrides(**{"MODEL.DEVICE": "cpu", "MODEL.RESNETS.NORM": "FrozenBN", "MODEL.BACKBONE.FREEZE_AT": "2"})
    done = subprocess.run([sys.executable, "bench/bench_engines.py", "--data", str(demo_root), "--iters", "4",
                           "--images", "1", "--peak-sizes", "512", "--stand-in-weights", "--out", str(out), *overrides],
                          cwd=project_root, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["stand_in_weights"] is True and "torchvision" in result["results"]
    assert "stand-in weights (FrozenBN backbone" in done.stdout
