"""The range of every config key: what each accepts beyond its type.

:class:`helpers.config.Config` checks a value here whenever one is set (file, override or engine),
so a bad value fails before a run folder is written, naming the key, the value and this range.
Which values an engine can build (ENGINE_CHOICES in :mod:`helpers.config`) is checked there.
"""

from __future__ import annotations

import re
from typing import Any

from .errors import ConfigError
from .validate import is_int, is_number, short


def _int_at_least(lo: int, hi: int | None = None) -> tuple:
    text = f"an integer >= {lo}" if hi is None else f"an integer in [{lo}, {hi}]"
    return (lambda v: is_int(v) and v >= lo and (hi is None or v <= hi)), text


def _number(lo: float, hi: float | None = None, lo_open: bool = False, hi_open: bool = False) -> tuple:
    def ok(v: Any) -> bool:
        if not is_number(v):
            return False
        above = v > lo if lo_open else v >= lo
        below = hi is None or (v < hi if hi_open else v <= hi)
        return above and below

    if hi is None:
        return ok, f"a number {'>' if lo_open else '>='} {lo}"
    return ok, f"a number in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"


def _choice(*options: str) -> tuple:
    return (lambda v: v in options), "one of " + ", ".join(repr(o) for o in options)


def _list_of(check, what: str, length: int | None = None, non_empty: bool = True, increasing: bool = False) -> tuple:
    def ok(v: Any) -> bool:
        if not isinstance(v, list) or (non_empty and not v) or (length is not None and len(v) != length):
            return False
        if not all(check(x) for x in v):
            return False
        return not increasing or all(a < b for a, b in zip(v, v[1:]))

    size = f"{length} " if length is not None else ("a non-empty list of " if non_empty else "a list of ")
    order = ", strictly increasing" if increasing else ""
    return ok, (f"a list of {size}{what}" if length is not None else f"{size}{what}") + order


_POSITIVE = _int_at_least(1)
_NON_NEGATIVE = _int_at_least(0)
_FRACTION = _number(0.0, 1.0)
_OPEN_FRACTION = _number(0.0, 1.0, lo_open=True)
_POSITIVE_NUMBER = _number(0.0, lo_open=True)
_NON_NEGATIVE_NUMBER = _number(0.0)
_ANY_STRING = (lambda v: isinstance(v, str)), "a string"
_BOOL = (lambda v: isinstance(v, bool)), "True or False"
_POSITIVE_SIZES = _list_of(lambda x: is_int(x) and x > 0, "positive integers")
_PER_LEVEL = _list_of(lambda x: isinstance(x, list) and bool(x) and all(is_number(y) and y > 0 for y in x),
                      "non-empty lists of positive numbers")
_THRESHOLDS = _list_of(lambda x: is_number(x) and 0 <= x <= 1, "numbers in [0, 1]", increasing=True)
_POOLERS = _choice("ROIAlignV2", "ROIAlign", "ROIPool")

RANGES: dict[str, tuple] = {
    "MODEL.DEVICE": ((lambda v: isinstance(v, str) and re.fullmatch(r"cpu|mps|cuda(:\d+)?", v) is not None),
                     "'cpu', 'cuda', 'cuda:N' or 'mps'"),
    "MODEL.WEIGHTS": _ANY_STRING,
    "MODEL.MASK_ON": _BOOL,
    "MODEL.PIXEL_MEAN": _list_of(is_number, "finite numbers", length=3),
    "MODEL.PIXEL_STD": _list_of(lambda x: is_number(x) and x > 0, "positive numbers", length=3),
    "MODEL.BACKBONE.FREEZE_AT": _int_at_least(0, 5),
    "MODEL.RESNETS.DEPTH": _POSITIVE,  # the depths each engine builds: ENGINE_CHOICES
    "MODEL.RESNETS.NUM_GROUPS": _POSITIVE,  # > 1 only with DEPTH >= 50: config.check_consistency
    "MODEL.RESNETS.WIDTH_PER_GROUP": _POSITIVE,
    "MODEL.RESNETS.NORM": _ANY_STRING,
    "MODEL.RESNETS.OUT_FEATURES": _list_of(lambda x: x in ("res2", "res3", "res4", "res5"), "names among 'res2'..'res5'"),
    "MODEL.RESNETS.RES2_OUT_CHANNELS": _POSITIVE,
    "MODEL.RESNETS.STEM_OUT_CHANNELS": _POSITIVE,
    "MODEL.RESNETS.STRIDE_IN_1X1": _BOOL,
    "MODEL.FPN.OUT_CHANNELS": _POSITIVE,
    "MODEL.FPN.NORM": _ANY_STRING,
    "MODEL.ANCHOR_GENERATOR.SIZES": _PER_LEVEL,
    "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS": _PER_LEVEL,
    "MODEL.RPN.BATCH_SIZE_PER_IMAGE": _POSITIVE,
    "MODEL.RPN.POSITIVE_FRACTION": _OPEN_FRACTION,
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN": _POSITIVE,
    "MODEL.RPN.PRE_NMS_TOPK_TEST": _POSITIVE,
    "MODEL.RPN.POST_NMS_TOPK_TRAIN": _POSITIVE,
    "MODEL.RPN.POST_NMS_TOPK_TEST": _POSITIVE,
    "MODEL.RPN.NMS_THRESH": _OPEN_FRACTION,
    "MODEL.RPN.IOU_THRESHOLDS": _THRESHOLDS,
    "MODEL.ROI_HEADS.NUM_CLASSES": _POSITIVE,
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": _POSITIVE,
    "MODEL.ROI_HEADS.POSITIVE_FRACTION": _OPEN_FRACTION,
    "MODEL.ROI_HEADS.IOU_THRESHOLDS": _THRESHOLDS,
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST": _FRACTION,
    "MODEL.ROI_HEADS.NMS_THRESH_TEST": _OPEN_FRACTION,
    "MODEL.ROI_BOX_HEAD.NUM_CONV": _NON_NEGATIVE,
    "MODEL.ROI_BOX_HEAD.CONV_DIM": _POSITIVE,
    "MODEL.ROI_BOX_HEAD.NUM_FC": _NON_NEGATIVE,
    "MODEL.ROI_BOX_HEAD.FC_DIM": _POSITIVE,
    "MODEL.ROI_BOX_HEAD.NORM": _ANY_STRING,
    "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG": _BOOL,
    "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION": _POSITIVE,
    "MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO": _NON_NEGATIVE,
    "MODEL.ROI_BOX_HEAD.POOLER_TYPE": _POOLERS,
    "MODEL.ROI_MASK_HEAD.NUM_CONV": _NON_NEGATIVE,
    "MODEL.ROI_MASK_HEAD.CONV_DIM": _POSITIVE,
    "MODEL.ROI_MASK_HEAD.NORM": _ANY_STRING,
    "MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK": _BOOL,
    "MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION": _POSITIVE,
    "MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO": _NON_NEGATIVE,
    "MODEL.ROI_MASK_HEAD.POOLER_TYPE": _POOLERS,
    "INPUT.MIN_SIZE_TRAIN": _POSITIVE_SIZES,
    "INPUT.MIN_SIZE_TRAIN_SAMPLING": _choice("choice", "range", "range_by_clipping"),
    "INPUT.MAX_SIZE_TRAIN": _POSITIVE,
    "INPUT.MIN_SIZE_TEST": _POSITIVE,
    "INPUT.MAX_SIZE_TEST": _POSITIVE,
    "INPUT.RANDOM_FLIP": _choice("horizontal", "vertical", "none"),
    "INPUT.FORMAT": _choice("BGR", "RGB"),
    "INPUT.MASK_FORMAT": _choice("polygon", "bitmask"),
    "DATASETS.TRAIN": _list_of(lambda x: isinstance(x, str), "strings", non_empty=False),
    "DATASETS.TEST": _list_of(lambda x: isinstance(x, str), "strings", non_empty=False),
    "DATASETS.ROOT": _ANY_STRING,
    "DATASETS.VAL_FRACTION": _number(0.0, 1.0, hi_open=True),
    "DATASETS.SPLIT_SEED": _int_at_least(0, 2**32 - 1),
    "DATALOADER.NUM_WORKERS": _int_at_least(0, 256),
    "DATALOADER.ASPECT_RATIO_GROUPING": _BOOL,
    "DATALOADER.FILTER_EMPTY_ANNOTATIONS": _BOOL,
    "SOLVER.LR_SCHEDULER_NAME": _choice("WarmupMultiStepLR", "WarmupCosineLR"),
    "SOLVER.IMS_PER_BATCH": _POSITIVE,
    "SOLVER.BASE_LR": _POSITIVE_NUMBER,
    "SOLVER.MOMENTUM": _number(0.0, 1.0, hi_open=True),
    "SOLVER.NESTEROV": _BOOL,
    "SOLVER.WEIGHT_DECAY": _NON_NEGATIVE_NUMBER,
    "SOLVER.WEIGHT_DECAY_NORM": _NON_NEGATIVE_NUMBER,
    "SOLVER.WEIGHT_DECAY_BIAS": ((lambda v: v is None or (is_number(v) and v >= 0)), "None or a number >= 0"),
    "SOLVER.BIAS_LR_FACTOR": _NON_NEGATIVE_NUMBER,
    "SOLVER.GAMMA": _POSITIVE_NUMBER,
    "SOLVER.STEPS": _list_of(lambda x: is_int(x) and x >= 0, "integers >= 0", non_empty=False, increasing=True),
    "SOLVER.MAX_ITER": _POSITIVE,
    "SOLVER.WARMUP_FACTOR": _FRACTION,
    "SOLVER.WARMUP_ITERS": _NON_NEGATIVE,
    "SOLVER.WARMUP_METHOD": _choice("linear", "constant"),
    "SOLVER.CHECKPOINT_PERIOD": _POSITIVE,
    "SOLVER.AMP.ENABLED": _BOOL,
    "SOLVER.CLIP_GRADIENTS.ENABLED": _BOOL,
    "SOLVER.CLIP_GRADIENTS.CLIP_TYPE": _choice("value", "norm"),
    "SOLVER.CLIP_GRADIENTS.CLIP_VALUE": _POSITIVE_NUMBER,
    "SOLVER.CLIP_GRADIENTS.NORM_TYPE": _POSITIVE_NUMBER,
    "TEST.EVAL_PERIOD": _NON_NEGATIVE,
    "TEST.DETECTIONS_PER_IMAGE": _POSITIVE,
    # the val metric that picks model_best.pth: a segm/ or bbox/ COCO metric (helpers.evaluate.METRIC_NAMES)
    "TEST.BEST_METRIC": _choice(*[f"{t}/{m}" for t in ("segm", "bbox")
                                  for m in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100",
                                            "ARs", "ARm", "ARl")]),
    "TEST.AUG.ENABLED": _BOOL,
    "TEST.AUG.MIN_SIZES": _POSITIVE_SIZES,
    "TEST.AUG.MAX_SIZE": _POSITIVE,
    "TEST.AUG.FLIP": _BOOL,
    "OUTPUT_DIR": ((lambda v: isinstance(v, str) and v.strip() != "" and "\x00" not in v), "a non-empty path"),
    "SEED": _int_at_least(-1, 2**32 - 1),
    "CUDNN_BENCHMARK": _BOOL,
}


def check_range(key: str, value: Any) -> None:
    """Raise a ConfigError naming the key, the value and its range when ``value`` is outside it."""
    check, allowed = RANGES[key]
    if not check(value):
        raise ConfigError(f"{key} = {short(value)} is out of range: expected {allowed}")
