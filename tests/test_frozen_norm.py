"""Frozen batch norms folded into their convolutions for training (torchvision engine)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torchvision.models.resnet import Bottleneck, ResNet
from torchvision.ops import FrozenBatchNorm2d

from helpers.config import load_config
from helpers.engines.torchvision_engine import frozen_norm
from helpers.engines.torchvision_engine.frozen_norm import ConvWithFrozenNorm, FoldedFrozenNorm, fold_frozen_norms
from helpers.engines.torchvision_engine.predict import fold_norms


def _random_frozen_stats(model: nn.Module, seed: int = 0) -> nn.Module:
    """Every FrozenBatchNorm2d with random statistics (not the identity a fresh one is)."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, FrozenBatchNorm2d):
            c = m.weight.numel()
            m.weight.copy_(torch.rand(c, generator=gen) + 0.5)
            m.bias.copy_(torch.randn(c, generator=gen) * 0.1)
            m.running_mean.copy_(torch.randn(c, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
    return model


def _resnet(seed: int = 0) -> ResNet:
    torch.manual_seed(seed)
    return _random_frozen_stats(ResNet(Bottleneck, [1, 1, 1, 1], norm_layer=FrozenBatchNorm2d), seed)


def test_folded_resnet_computes_the_same_outputs_and_gradients_with_the_same_state():
    plain = _resnet()
    folded = fold_frozen_norms(copy.deepcopy(plain))
    assert {type(m) for m in folded.modules()} >= {ConvWithFrozenNorm, FoldedFrozenNorm}
    assert not any(type(m) is FrozenBatchNorm2d for m in folded.modules())  # every norm here follows a conv
    assert folded.state_dict().keys() == plain.state_dict().keys()
    assert all(torch.equal(v, plain.state_dict()[k]) for k, v in folded.state_dict().items())
    x = torch.randn(2, 3, 64, 80)
    torch.testing.assert_close(folded(x), plain(x), rtol=1e-4, atol=1e-4)
    # the same function and gradients; float64, where only rounding differs (in float32 the gradients of the
    # first layers, after 13 convolutions back, differ by float32 rounding in another order)
    plain, folded, x = plain.double(), folded.double(), x.double()
    for model in (plain, folded):
        model.zero_grad()
        model(x).square().sum().backward()
    for (name, p_folded), p_plain in zip(folded.named_parameters(), plain.parameters()):
        torch.testing.assert_close(p_folded.grad, p_plain.grad, rtol=1e-9, atol=1e-12, msg=name)


def test_folding_applies_the_norm_once_with_a_conv_bias_and_leaves_other_norms_alone():
    torch.manual_seed(0)
    conv, norm, lone = nn.Conv2d(3, 4, 3, bias=True), FrozenBatchNorm2d(4), FrozenBatchNorm2d(4)
    plain = _random_frozen_stats(nn.Sequential(conv, norm, nn.ReLU(), lone))
    folded = fold_frozen_norms(copy.deepcopy(plain))
    assert [type(m) for m in folded] == [ConvWithFrozenNorm, FoldedFrozenNorm, nn.ReLU, FrozenBatchNorm2d]
    x = torch.randn(1, 3, 9, 9)
    torch.testing.assert_close(folded(x), plain(x), rtol=1e-5, atol=1e-5)


def test_folded_modules_keep_their_parameters_and_load_a_checkpoint_into_their_norms():
    model = _resnet()
    params = [id(p) for p in model.parameters()]
    fold_frozen_norms(model)
    assert [id(p) for p in model.parameters()] == params  # the optimizer built after sees the same tensors
    other = _resnet(seed=1)
    model.load_state_dict(other.state_dict())
    x = torch.randn(1, 3, 48, 48)
    torch.testing.assert_close(model(x), other(x), rtol=1e-4, atol=1e-4)  # the folded conv reads the new stats
    clone = copy.deepcopy(model)  # the norm a conv folds is its copied sibling, not the original's
    clone.bn1.running_mean.add_(1.0)
    assert not torch.allclose(clone(x), model(x))


def test_prediction_folding_does_not_apply_a_folded_norm_twice():
    plain = _resnet().eval()
    folded = fold_norms(fold_frozen_norms(copy.deepcopy(plain)).eval())
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(folded(x), plain(x), rtol=1e-4, atol=1e-4)


def test_a_frozen_stage_has_no_gradient_and_the_next_stage_trains():
    model = fold_frozen_norms(_resnet())
    model.conv1.requires_grad_(False)
    model.layer1.requires_grad_(False)
    model(torch.randn(1, 3, 64, 64)).sum().backward()
    assert model.conv1.weight.grad is None and model.layer1[0].conv1.weight.grad is None
    assert model.layer2[0].conv1.weight.grad is not None


@pytest.mark.parametrize("norm, freeze_at, folded", [("FrozenBN", 2, True), ("BN", 2, True), ("BN", 0, False)])
def test_training_builds_the_homework_backbone_folded(norm, freeze_at, folded, demo_root, tmp_path):
    from helpers import data
    from helpers.engines.torchvision_engine import loop
    from helpers.engines.torchvision_engine.device import _Dist

    cfg = load_config("configs/demo.yaml", ["MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu", "MODEL.RESNETS.NORM", norm,
                                            "MODEL.BACKBONE.FREEZE_AT", str(freeze_at)])
    splits = data.make_split(data.load_split(demo_root / data.TRAIN_JSON), tmp_path / "split", val_fraction=0.2)
    trainer = loop._Trainer(cfg, splits, tmp_path / "run", _Dist(torch.device("cpu")))
    trainer.build()
    body = trainer.model.backbone.body
    assert (type(body.conv1) is ConvWithFrozenNorm) == folded  # the stem: frozen under FREEZE_AT >= 1
    assert (type(body.layer1[0].bn1) is FoldedFrozenNorm) == folded
    if norm == "BN":
        assert type(body.layer2[0].bn1) is nn.BatchNorm2d  # trainable stages keep BN


def test_module_docstring_says_why_it_is_not_fuse_conv_bn_eval():
    assert "fuse_conv_bn_eval" in frozen_norm.__doc__
