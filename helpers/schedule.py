"""The learning-rate schedule, from the config alone: detectron2's WarmupMultiStepLR.

A linear (or constant) warm-up from ``WARMUP_FACTOR × BASE_LR`` over ``WARMUP_ITERS``, then ``GAMMA``
once per passed step of ``STEPS``. Computed from the iteration alone, with no scheduler state, so the
torchvision engine's resumed runs, the course's plots and the ablation's decay arithmetic all read
the same numbers. (detectron2 itself uses its own scheduler, which this reproduces.)
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Iterable

import numpy as np


def learning_rate(cfg, iteration: int) -> float:
    """The learning rate at ``iteration`` (0-based)."""
    factor = 1.0
    warmup = cfg["SOLVER.WARMUP_ITERS"]
    if iteration < warmup:
        factor = cfg["SOLVER.WARMUP_FACTOR"]
        if cfg["SOLVER.WARMUP_METHOD"] == "linear":
            alpha = iteration / warmup
            factor = factor * (1 - alpha) + alpha
    return cfg["SOLVER.BASE_LR"] * factor * cfg["SOLVER.GAMMA"] ** bisect_right(cfg["SOLVER.STEPS"], iteration)


def learning_rates(cfg, iterations: Iterable[int] | None = None) -> np.ndarray:
    """The learning rate at each of ``iterations`` (default: every one, 0 .. MAX_ITER - 1)."""
    its = range(cfg["SOLVER.MAX_ITER"]) if iterations is None else iterations
    return np.array([learning_rate(cfg, int(i)) for i in its], dtype=float)
