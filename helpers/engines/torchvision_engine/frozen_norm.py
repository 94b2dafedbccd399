"""Frozen batch norms computed inside the convolution before them, for training.

A FrozenBatchNorm2d (the homework's backbone norm: ImageNet statistics, never updated) is a fixed
per-channel affine map, ``y = x * scale + shift``. torchvision computes it as two more passes over every
activation it follows (a multiply and an add; in the backward, one more multiply). Folded into the
convolution before it, the same map costs nothing per pixel: the convolution runs with weights
``w * scale`` and bias ``shift`` (plus ``bias * scale`` where it has one), which are per-channel and tiny,
computed again on every forward so that a trainable convolution keeps learning its own ``w``. On the homework
config a ResNet-50 at 800 px passes over about 1.4 GB of such activations per training batch.

Why here and not torch's ``fuse_conv_bn_eval`` (what ``predict.fold_norms`` uses at inference): that makes
new fixed weights, which training would never update. Here the modules keep their parameters and buffers
and their state-dict keys: checkpoints, resuming and the optimizer's parameter groups see the model as
built. ``predict.fold_norms`` leaves these pairs alone (it folds plain Conv2d + norm pairs only), and a
predictor loaded from a checkpoint is built unfolded and folded there.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d


class FoldedFrozenNorm(FrozenBatchNorm2d):
    """A FrozenBatchNorm2d that its convolution applies: an identity here, with the same buffers."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class ConvWithFrozenNorm(nn.Conv2d):
    """A Conv2d followed by the FrozenBatchNorm2d in ``self.folded_norm``, computed as one convolution."""

    folded_norm: tuple[FoldedFrozenNorm]  # a tuple, so that the norm stays its parent's submodule only

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = self.folded_norm[0]
        scale = norm.weight * (norm.running_var + norm.eps).rsqrt()
        shift = norm.bias - norm.running_mean * scale
        bias = shift if self.bias is None else torch.addcmul(shift, self.bias, scale)
        return self._conv_forward(x, self.weight * scale.reshape(-1, 1, 1, 1), bias)


def conv_norm_pairs(module: nn.Module) -> list[tuple[str, str]]:
    """(conv, norm) candidate child names as torchvision builds them: ``convK`` then ``bnK`` in the ResNet stem
    and blocks, and neighbours in a Sequential (the shortcut's ``downsample``, normed FPN and head convs).
    The callers check what the names hold."""
    names = [name for name, _ in module.named_children()]
    pairs = [(name, "bn" + name[4:]) for name in names if name.startswith("conv")]
    if isinstance(module, nn.Sequential):
        pairs += list(zip(names, names[1:]))
    return pairs


def fold_frozen_norms(module: nn.Module) -> nn.Module:
    """``module`` with every FrozenBatchNorm2d that directly follows a Conv2d computed inside that conv
    (module docstring). Same function to float rounding; the same parameters, buffers and state-dict keys.
    Changes ``module`` in place and returns it."""
    for child in module.children():
        fold_frozen_norms(child)
    for conv_name, norm_name in conv_norm_pairs(module):
        conv, norm = getattr(module, conv_name, None), getattr(module, norm_name, None)
        if type(conv) is nn.Conv2d and type(norm) is FrozenBatchNorm2d:
            conv.__class__, norm.__class__ = ConvWithFrozenNorm, FoldedFrozenNorm
            conv.folded_norm = (norm,)
    return module

