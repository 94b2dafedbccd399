"""Weights: torchvision's ImageNet backbones (from its cache or downloaded, with a clear error offline) and
our checkpoints or plain state dicts, checked against the model they go into."""

from __future__ import annotations

import contextlib
import logging
import socket
from pathlib import Path
from typing import Iterator

import torch
import torchvision
from torch import nn

from ... import runs
from ...config import Config
from ...errors import ConfigError, EngineError

log = logging.getLogger(__name__)

DOWNLOAD_TIMEOUT_S = 60  # a stalled ImageNet download fails instead of hanging
# torchvision's ImageNet weights (IMAGENET1K_V1) by (DEPTH, NUM_GROUPS, WIDTH_PER_GROUP)
IMAGENET_WEIGHTS = {
    (18, 1, 64): "ResNet18_Weights",
    (34, 1, 64): "ResNet34_Weights",
    (50, 1, 64): "ResNet50_Weights",
    (101, 1, 64): "ResNet101_Weights",
    (152, 1, 64): "ResNet152_Weights",
    (50, 32, 4): "ResNeXt50_32X4D_Weights",
    (101, 32, 8): "ResNeXt101_32X8D_Weights",
    (101, 64, 4): "ResNeXt101_64X4D_Weights",
    (50, 1, 128): "Wide_ResNet50_2_Weights",
    (101, 1, 128): "Wide_ResNet101_2_Weights",
}



def _resnet_name(cfg: Config) -> str:
    """The backbone's usual name: ResNet-50, ResNeXt-101 32x8d, ResNet-50 (width 128 per group)."""
    depth, groups, width = (cfg[f"MODEL.RESNETS.{k}"] for k in ("DEPTH", "NUM_GROUPS", "WIDTH_PER_GROUP"))
    if groups > 1:
        return f"ResNeXt-{depth} {groups}x{width}d"
    return f"ResNet-{depth}" + ("" if width == 64 else f" (width {width} per group)")


def _imagenet_weights(cfg: Config) -> torchvision.models.WeightsEnum:
    """torchvision's ImageNet weights for this DEPTH / NUM_GROUPS / WIDTH_PER_GROUP; ConfigError if it has none."""
    shape = tuple(cfg[f"MODEL.RESNETS.{k}"] for k in ("DEPTH", "NUM_GROUPS", "WIDTH_PER_GROUP"))
    if shape not in IMAGENET_WEIGHTS:
        known = ", ".join(f"{d}/{g}/{w}" for d, g, w in IMAGENET_WEIGHTS)
        raise ConfigError(f"MODEL.WEIGHTS imagenet: torchvision has no ImageNet weights for {_resnet_name(cfg)} "
                          f"(DEPTH/NUM_GROUPS/WIDTH_PER_GROUP {'/'.join(map(str, shape))}; it has {known}); "
                          f"set MODEL.WEIGHTS to a weights file, or MODEL.WEIGHTS '' for random init")
    return getattr(torchvision.models, IMAGENET_WEIGHTS[shape]).IMAGENET1K_V1


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def _imagenet_state(weights: torchvision.models.WeightsEnum, name: str) -> dict:
    """torchvision's ImageNet backbone weights, from its cache or downloaded; EngineError if neither works."""
    try:
        with _socket_timeout(DOWNLOAD_TIMEOUT_S):
            return weights.get_state_dict(progress=True, check_hash=True)
    except (OSError, RuntimeError, ValueError) as e:
        cache = Path(torch.hub.get_dir()) / "checkpoints"
        raise EngineError(
            f"cannot get torchvision's ImageNet {name} weights ({type(e).__name__}: {e}); "
            f"put {Path(weights.url).name} (from {weights.url}) into {cache}, "
            f"or set MODEL.WEIGHTS to a local checkpoint path, or MODEL.WEIGHTS '' for random init"
        ) from None


def _read_state_dict(path: Path) -> dict:
    """The model weights of a .pth file: one of our checkpoints ("model" key) or a plain state dict."""
    if not path.is_file():
        raise EngineError(f"MODEL.WEIGHTS: no such file {path}")
    if path.suffix == ".pkl":
        raise EngineError(f"{path}: detectron2 .pkl weights are for the detectron2 engine; the torchvision engine reads .pth")
    try:
        state = runs.torch_load(path)
    except Exception as e:  # torch raises many types for a bad file, some with paragraphs of advice
        raise EngineError(f"cannot read weights from {path}: not a PyTorch weights file, or damaged "
                          f"({runs.load_error_text(e)})") from None
    state = state.get("model", state) if isinstance(state, dict) else None
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise EngineError(f"{path} holds neither a checkpoint with a 'model' state dict nor a state dict")
    return state


def _load_weights(model: nn.Module, path: Path, strict: bool) -> None:
    """Load a checkpoint or state dict into ``model``.

    strict: every tensor must match (prediction from a run). Otherwise tensors of another shape
    are skipped, and a bare ResNet state dict (ImageNet .pth) goes into the backbone.
    """
    state = _read_state_dict(path)
    if not strict and not any(k.startswith("backbone.") for k in state):
        state = {f"backbone.body.{k}": v for k, v in state.items() if not k.startswith("fc.")}
    own = model.state_dict()
    mismatched = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if strict and mismatched:
        raise EngineError(f"{path} does not fit this model ({mismatched[0]}: {tuple(state[mismatched[0]].shape)} "
                          f"vs {tuple(own[mismatched[0]].shape)}); was it trained with another config?")
    missing, unexpected = model.load_state_dict({k: v for k, v in state.items() if k not in mismatched}, strict=False)
    if strict and (missing or unexpected):
        raise EngineError(f"{path} does not fit this model: {len(missing)} tensors missing, {len(unexpected)} unexpected")
    loaded = len(state) - len(unexpected) - len(mismatched)
    if not loaded:
        raise EngineError(f"{path}: none of its tensors fit this torchvision model (weights of another engine or model?)")
    if not strict:
        log.warning("loaded %s: %d tensors; %d missing, %d unexpected, %d skipped for their shape",
                    path, loaded, len(missing), len(unexpected), len(mismatched))


