"""Folding batch norms into convolutions for prediction: the same function, no norm left to run."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from helpers import data, experiment, runs
from helpers.config import load_config
from helpers.engines import torchvision_engine as tve
from helpers.engines.torchvision_engine import device as tv_device, predict as tv_predict, weights as tv_weights
from helpers.engines.torchvision_engine.predict import FOLDABLE_NORMS, fold_norms
from helpers.paths import CONFIGS
from tiny_schedule import tiny_overrides


def _model(norm: str, depth: int = 50, fpn_norm: str = "", **extra) -> nn.Module:
    """A random-init model of ``norm`` whose norms hold random statistics, so folding is not the identity."""
    cfg = load_config(CONFIGS / "homework.yaml", {"MODEL.WEIGHTS": "", "MODEL.RESNETS.NORM": norm,
                                                  "MODEL.RESNETS.DEPTH": depth, "MODEL.FPN.NORM": fpn_norm,
                                                  "INPUT.MIN_SIZE_TEST": 128, "INPUT.MAX_SIZE_TEST": 192, **extra})
    torch.manual_seed(0)
    model = tve.build_model(cfg, 5, load_weights=False)
    gen = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, FOLDABLE_NORMS):
            for name, low, high in (("weight", 0.5, 1.5), ("bias", -0.2, 0.2), ("running_mean", -0.3, 0.3),
                                    ("running_var", 0.5, 2.0)):
                tensor = getattr(module, name)
                with torch.no_grad():
                    tensor.copy_(torch.empty(tensor.shape).uniform_(low, high, generator=gen))
    return model.eval()


@pytest.mark.parametrize("norm, depth, fpn_norm", [("BN", 50, ""), ("FrozenBN", 50, ""), ("BN", 18, "BN"),
                                                   ("FrozenBN", 50, "GN")])
def test_folded_backbone_computes_the_same_features(norm, depth, fpn_norm):
    model = _model(norm, depth, fpn_norm)
    folded = fold_norms(copy.deepcopy(model))
    left = [m for m in folded.backbone.modules() if isinstance(m, FOLDABLE_NORMS)]
    assert left == []  # every batch norm of the ResNet (and a BN-normed FPN) is gone
    if fpn_norm == "GN":  # GroupNorm depends on the activations: kept
        assert any(isinstance(m, nn.GroupNorm) for m in folded.backbone.fpn.modules())
    images = torch.rand(2, 3, 128, 160, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        want, got = model.backbone(images), folded.backbone(images)
    for key in want:
        scale = want[key].abs().max().item()
        torch.testing.assert_close(got[key], want[key], rtol=1e-4, atol=1e-4 * scale)


def test_folding_needs_eval_mode():
    with pytest.raises(ValueError, match="eval mode"):
        fold_norms(_model("BN").train())


def test_a_conv_not_followed_by_its_norm_is_left_alone():
    """Only conv -> norm pairs are folded: a norm before a conv, or a conv of another kind, stays."""
    seq = nn.Sequential(FrozenBatchNorm2d(3), nn.Conv2d(3, 4, 3), nn.ReLU(), nn.BatchNorm2d(4)).eval()
    folded = fold_norms(copy.deepcopy(seq))
    assert [type(m) for m in folded] == [FrozenBatchNorm2d, nn.Conv2d, nn.ReLU, nn.BatchNorm2d]


def test_predictor_of_a_run_predicts_as_the_unfolded_model(project_root, demo_root, tmp_path):
    """load_predictor folds the norms; what it predicts is what the same weights predict unfolded."""
    run_dir = tmp_path / "run"
    experiment.train(project_root / "configs" / "demo.yaml", tiny_overrides(), data_root=demo_root, run_dir=run_dir,
                     progress=False)
    folded = experiment.load_predictor(run_dir, checkpoint="final", score_thresh=0.0)
    cfg, _, categories = experiment.run_for_inference(run_dir, 0.0, None, None)
    cpu = torch.device("cpu")
    model = tve.build_model(cfg, len(categories), load_weights=False)
    tv_weights._load_weights(model, runs.resolve_checkpoint(run_dir, "final"), strict=True)
    assert any(isinstance(m, FOLDABLE_NORMS) for m in model.modules())  # the demo model has norms to fold
    plain = tv_predict._predictor(tv_device._to_device(model, cpu).eval(), cfg, categories, cpu)
    split = data.load_split(demo_root / data.TEST_JSON, check_images=False)
    for info in split.images[:3]:
        image = data.read_image(split.image_path(info))
        (want,), (got,) = plain([image]), folded([image])
        assert len(got) == len(want) > 0
        np.testing.assert_allclose(got.scores, want.scores, atol=1e-4)
        np.testing.assert_allclose(got.boxes, want.boxes, atol=1e-2)
        assert (got.category_ids == want.category_ids).all()
        assert (got.masks != want.masks).mean() < 1e-3
