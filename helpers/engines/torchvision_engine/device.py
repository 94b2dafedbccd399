"""Where and how the engine computes: the device (checked), the process's place in a DDP run, cuDNN's
algorithm search, channels-last weights, and mixed precision."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from ...config import Config
from ...errors import ConfigError, EngineError
from .. import base

# SOLVER.AMP.ENABLED: autocast dtype per device type. float16 on CUDA, with a GradScaler against gradient
# underflow; bfloat16 on the CPU (float32's exponent range: no scaler). Other devices run in full precision.
AMP_DTYPES = {"cuda": torch.float16, "cpu": torch.bfloat16}
# CPU flags (Linux /proc/cpuinfo) that compute bfloat16 natively: Intel AMX (Sapphire Rapids on), or AVX512-BF16
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
CPUINFO = "/proc/cpuinfo"


def native_bf16_cpu(cpuinfo: str | None = None) -> bool | None:
    """Whether this CPU computes bfloat16 natively (NATIVE_BF16_FLAGS), or None where its flags cannot be read.

    Measured on a 2-core Xeon with AMX: a 3x3 convolution of the homework's FPN (256 channels at 200x272)
    took 24 ms in bfloat16 against 181 ms in float32. Without them oneDNN emulates bfloat16 and it can be
    slower than float32. ``cpuinfo``: the file to read (default CPUINFO)."""
    try:
        with open(cpuinfo or CPUINFO, encoding="utf-8", errors="replace") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), None)
    except OSError:
        return None
    return None if flags is None else any(flag in flags for flag in NATIVE_BF16_FLAGS)


@dataclass
class _Dist:
    """This process's place in a (possibly single-process) run."""

    device: torch.device
    rank: int = 0
    world: int = 1
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _device(cfg: Config) -> torch.device:
    """MODEL.DEVICE, checked: a CUDA device on a machine without CUDA is an error, not a fallback."""
    try:
        device = torch.device(cfg["MODEL.DEVICE"])
    except RuntimeError:
        raise ConfigError(f"MODEL.DEVICE {cfg['MODEL.DEVICE']!r} is not a torch device (use cuda or cpu)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise EngineError("MODEL.DEVICE is cuda but CUDA is not available here: pass MODEL.DEVICE cpu to run on the CPU")
    return device


def _setup_distributed(cfg: Config) -> _Dist:
    """Join the torchrun process group when WORLD_SIZE > 1 (NCCL on CUDA, gloo on CPU)."""
    device = _device(cfg)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist(device)
    if cfg["SOLVER.IMS_PER_BATCH"] % world:
        raise ConfigError(f"SOLVER.IMS_PER_BATCH {cfg['SOLVER.IMS_PER_BATCH']} (the total batch) must divide among {world} processes")
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return _Dist(device, dist.get_rank(), dist.get_world_size(), owns)


def _cudnn_benchmark(cfg: Config, device: torch.device) -> None:
    """CUDNN_BENCHMARK on CUDA: cuDNN times its convolution algorithms per input shape and keeps the
    fastest (multi-scale training meets a handful of shapes); the CPU has no cuDNN."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = bool(cfg["CUDNN_BENCHMARK"])


def _to_device(model: nn.Module, device: torch.device) -> nn.Module:
    """The model on its device, conv weights channels-last (NHWC): faster convolutions with cuDNN
    and oneDNN alike (about 15% per training iteration of configs/demo.yaml on a 2-core CPU)."""
    return model.to(device).to(memory_format=torch.channels_last)


def _amp_dtype(cfg: Config, device: torch.device) -> torch.dtype | None:
    """The autocast dtype SOLVER.AMP.ENABLED gives on ``device`` (AMP_DTYPES), or None: full precision."""
    if not cfg["SOLVER.AMP.ENABLED"]:
        return None
    dtype = AMP_DTYPES.get(device.type)
    if dtype is None:
        base.warn_once(f"SOLVER.AMP.ENABLED: no mixed precision on {device.type}; running in full precision")
    elif device.type == "cpu" and native_bf16_cpu() is False:
        base.warn_once("SOLVER.AMP.ENABLED on a CPU without AMX or AVX512-BF16 (its flags): bfloat16 is emulated "
                       "here and can be slower than float32; set SOLVER.AMP.ENABLED False to compare")
    return dtype


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Mixed precision in ``dtype`` on ``device`` (None: a no-op)."""
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


