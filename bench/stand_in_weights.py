"""Stand-in ImageNet backbone weights: the homework's model structure without downloading anything.

The homework trains from ImageNet weights, and with them both engines build the backbone it trains: every
norm a FrozenBatchNorm2d (fixed statistics) and the stem and res2 frozen (``FREEZE_AT 2``). Random init
(``MODEL.WEIGHTS ""``) builds another model (trainable BN, nothing frozen: ``trainable_norm_for_random_init``),
which costs differently per iteration. This machine cannot download ImageNet weights, so the benchmark can
write stand-ins: a random ResNet of the config's DEPTH / NUM_GROUPS / WIDTH_PER_GROUP whose BN statistics
are measured on random images normalised as ImageNet inputs are (so activations keep a sane scale through
the frozen norms, as with real weights), saved in each engine's format:

* torchvision: a bare ResNet state dict, as torchvision's ImageNet .pth files are;
* detectron2: a ``{"model": ...}`` checkpoint with detectron2's ResNet names
  (``backbone.bottom_up.res2.0.conv1.norm.running_mean``...).

The values are not ImageNet's and the detections are meaningless: only the structure and the work match.
"""

from __future__ import annotations

import re
from pathlib import Path

CALIBRATION_BATCHES = 3  # forward passes whose batch statistics become the frozen norms' statistics
CALIBRATION_SHAPE = (4, 3, 224, 224)  # ImageNet's input size


def stand_in_resnet_state(cfg, seed: int = 0) -> dict:
    """A random torchvision ResNet's state dict (no ``fc``) for the config's backbone, its BN statistics
    measured on CALIBRATION_BATCHES batches of standard-normal images (ImageNet-normalised inputs)."""
    import torch
    from torch import nn
    from torchvision.models.resnet import ResNet

    from helpers.engines.torchvision_engine.model import RESNET_STAGES

    torch.manual_seed(seed)
    block, layers = RESNET_STAGES[cfg["MODEL.RESNETS.DEPTH"]]
    resnet = ResNet(block, layers, groups=cfg["MODEL.RESNETS.NUM_GROUPS"],
                    width_per_group=cfg["MODEL.RESNETS.WIDTH_PER_GROUP"]).train()
    for module in resnet.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # a plain average over the calibration batches
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _ in range(CALIBRATION_BATCHES):
            resnet(torch.randn(CALIBRATION_SHAPE, generator=generator))
    return {k: v for k, v in resnet.state_dict().items() if not k.startswith("fc.") and "num_batches_tracked" not in k}


def detectron2_name(name: str) -> str:
    """torchvision's ResNet key -> detectron2's: ``layer1.0.bn2.weight`` -> ``backbone.bottom_up.res2.0.conv2.norm.weight``."""
    stem = re.fullmatch(r"(conv1|bn1)\.(\w+)", name)
    if stem:
        return "backbone.bottom_up.stem.conv1." + ("" if stem[1] == "conv1" else "norm.") + stem[2]
    block = re.fullmatch(r"layer(\d)\.(\d+)\.(conv|bn|downsample\.)(\d)\.(\w+)", name)
    if not block:
        raise ValueError(f"not a torchvision ResNet key: {name}")
    stage, index, kind, number, leaf = block.groups()
    prefix = f"backbone.bottom_up.res{int(stage) + 1}.{index}."
    if kind == "downsample.":
        return prefix + ("shortcut." if number == "0" else "shortcut.norm.") + leaf
    return prefix + f"conv{number}." + ("" if kind == "conv" else "norm.") + leaf


def write_stand_in_weights(cfg, folder: Path) -> dict[str, Path]:
    """The stand-in weights for each engine, written into ``folder``; {engine: path}."""
    import torch

    state = stand_in_resnet_state(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"torchvision": folder / "stand_in_resnet_torchvision.pth",
             "detectron2": folder / "stand_in_resnet_detectron2.pth"}
    torch.save(state, paths["torchvision"])
    torch.save({"model": {detectron2_name(k): v for k, v in state.items()}}, paths["detectron2"])
    return paths
