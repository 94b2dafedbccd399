"""FLOPs of real work and the machine's measured dense matmul peak: the benchmark's "fraction of peak".

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode``: matrix multiplies and convolutions
(forward and backward), 2 FLOPs per multiply-add. Elementwise ops, norms, RoIAlign, NMS and the
optimizer's update are not counted: the count is the dense work, what a matmul peak measures.

The peak is the best of several large square matmuls (2048 and 4096) on the same device, with the
same thread count, in the dtype the model computes in (see :func:`peak_dtype`).
"""

from __future__ import annotations

import time
from typing import Any, Callable

PEAK_SIZES = (2048, 4096)
PEAK_REPEATS = 5  # timed samples per size (fewer when one size has used up PEAK_BUDGET_S)
PEAK_BUDGET_S = 2.0  # seconds of timed samples per size, after the first sample
CUDA_INNER = 10  # matmuls per timed sample on a GPU, between two synchronisations


def count_flops(fn: Callable[[], Any]) -> tuple[Any, int]:
    """``fn()``'s result and the FLOPs it ran (matmuls and convolutions, backward included)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        result = fn()
    return result, int(counter.get_total_flops())


def peak_dtype(device: str, amp: bool) -> str:
    """The dtype the model's matmuls and convolutions run in: autocast's dtype under AMP (float16 on
    CUDA, bfloat16 on the CPU), else float32 ("tf32" on CUDA when cuDNN may use TF32 for convolutions,
    PyTorch's default: the convolutions, most of Mask R-CNN's FLOPs, then run on TF32 tensor cores)."""
    import torch

    kind = torch.device(device).type
    if amp:
        return str(torch.get_autocast_dtype(kind)).removeprefix("torch.")
    return "tf32" if kind == "cuda" and torch.backends.cudnn.allow_tf32 else "float32"


def matmul_peak(device: str = "cpu", dtype: str = "float32", sizes: tuple[int, ...] = PEAK_SIZES) -> dict:
    """The best FLOP/s of ``sizes``-square matmuls on ``device`` in ``dtype`` (float32, tf32, float16,
    bfloat16), one warm-up each, and how it was measured."""
    import torch

    dev = torch.device(device)
    cuda = dev.type == "cuda"
    inner = CUDA_INNER if cuda else 1
    torch_dtype = torch.float32 if dtype == "tf32" else getattr(torch, dtype)
    tf32_before = torch.backends.cuda.matmul.allow_tf32
    best, best_size = 0.0, None
    try:
        torch.backends.cuda.matmul.allow_tf32 = dtype == "tf32"
        for n in sizes:
            a = torch.randn(n, n, device=dev).to(torch_dtype)
            b = torch.randn(n, n, device=dev).to(torch_dtype)
            torch.matmul(a, b)  # warm-up: allocation, kernel choice
            spent = 0.0
            for _ in range(PEAK_REPEATS):
                if cuda:
                    torch.cuda.synchronize(dev)
                start = time.perf_counter()
                for _ in range(inner):
                    torch.matmul(a, b)
                if cuda:
                    torch.cuda.synchronize(dev)
                seconds = time.perf_counter() - start
                spent += seconds
                rate = 2 * n**3 * inner / seconds
                if rate > best:
                    best, best_size = rate, n
                if spent > PEAK_BUDGET_S:
                    break
            del a, b
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32_before
    return {"flop_per_s": best, "size": best_size, "sizes": list(sizes), "dtype": dtype, "device": str(dev),
            "threads": torch.get_num_threads()}


def fraction_fields(prefix: str, flops: float, seconds: float, peak: float) -> dict:
    """``{prefix}_flop_per_s`` (FLOPs / seconds) and ``{prefix}_fraction_of_peak`` (that / peak)."""
    achieved = flops / seconds
    return {f"{prefix}_flop_per_s": achieved, f"{prefix}_fraction_of_peak": achieved / peak}
