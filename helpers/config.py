"""Experiment configs: one YAML file in detectron2's vocabulary, overrides, per-engine key support.

An experiment file looks like a detectron2 config::

    _BASE_: "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml"
    SOLVER:
      BASE_LR: 0.00025

``_BASE_`` is either that model-zoo name (whose values are built in below, so no detectron2
install is needed to read a config) or a path relative to the file (``../homework.yaml``).
Overrides are ``KEY VALUE`` pairs, as ``detectron2``'s ``merge_from_list`` takes them.

Unknown keys are rejected with a suggestion. Keys the chosen engine cannot honour are
rejected when the experiment sets them (see :data:`ENGINE_KEYS` and ``configs/README.md``).
"""

from __future__ import annotations

import ast
import copy
import difflib
import math
from pathlib import Path
from typing import Any, Iterable

import yaml

from .errors import ConfigError
from .ranges import RANGES, check_range as _check_range  # noqa: F401 (RANGES re-exported)
from .validate import short

MODEL_ZOO_BASE = "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml"
IMAGENET = "imagenet"  # MODEL.WEIGHTS value: the engine library's own ImageNet-pretrained backbone

# The values of detectron2's ``mask_rcnn_R_50_FPN_3x.yaml`` (through Base-RCNN-FPN.yaml and
# detectron2/config/defaults.py) for every key this package reads.  Our own keys are under
# DATASETS (ROOT, VAL_FRACTION, SPLIT_SEED) and TEST.BEST_METRIC: detectron2 projects extend the config the
# same way.
DEFAULTS: dict[str, Any] = {
    "MODEL": {
        "DEVICE": "cuda",
        # The 3x yaml's detectron2://ImageNetPretrained/MSRA/R-50.pkl, named per engine.
        "WEIGHTS": IMAGENET,
        "MASK_ON": True,
        "PIXEL_MEAN": [103.530, 116.280, 123.675],
        "PIXEL_STD": [1.0, 1.0, 1.0],
        "BACKBONE": {"FREEZE_AT": 2},
        "RESNETS": {
            "DEPTH": 50,
            "NUM_GROUPS": 1,  # 32 with WIDTH_PER_GROUP 8 and DEPTH 101: ResNeXt-101 32x8d
            "WIDTH_PER_GROUP": 64,  # the bottleneck's width per group in res2 (doubles per stage)
            "NORM": "FrozenBN",
            "OUT_FEATURES": ["res2", "res3", "res4", "res5"],
            "RES2_OUT_CHANNELS": 256,
            "STEM_OUT_CHANNELS": 64,
            "STRIDE_IN_1X1": True,
        },
        "FPN": {"OUT_CHANNELS": 256, "NORM": ""},
        "ANCHOR_GENERATOR": {"SIZES": [[32], [64], [128], [256], [512]], "ASPECT_RATIOS": [[0.5, 1.0, 2.0]]},
        "RPN": {
            "BATCH_SIZE_PER_IMAGE": 256,
            "POSITIVE_FRACTION": 0.5,
            "PRE_NMS_TOPK_TRAIN": 2000,
            "PRE_NMS_TOPK_TEST": 1000,
            "POST_NMS_TOPK_TRAIN": 1000,
            "POST_NMS_TOPK_TEST": 1000,
            "NMS_THRESH": 0.7,
            "IOU_THRESHOLDS": [0.3, 0.7],
        },
        "ROI_HEADS": {
            "NUM_CLASSES": 80,
            "BATCH_SIZE_PER_IMAGE": 512,
            "POSITIVE_FRACTION": 0.25,
            "IOU_THRESHOLDS": [0.5],
            "SCORE_THRESH_TEST": 0.05,
            "NMS_THRESH_TEST": 0.5,
        },
        "ROI_BOX_HEAD": {
            "NUM_CONV": 0,
            "CONV_DIM": 256,
            "NUM_FC": 2,
            "FC_DIM": 1024,
            "NORM": "",
            "CLS_AGNOSTIC_BBOX_REG": False,
            "POOLER_RESOLUTION": 7,
            "POOLER_SAMPLING_RATIO": 0,
            "POOLER_TYPE": "ROIAlignV2",
        },
        "ROI_MASK_HEAD": {
            "NUM_CONV": 4,
            "CONV_DIM": 256,
            "NORM": "",
            "CLS_AGNOSTIC_MASK": False,
            "POOLER_RESOLUTION": 14,
            "POOLER_SAMPLING_RATIO": 0,
            "POOLER_TYPE": "ROIAlignV2",
        },
    },
    "INPUT": {
        "MIN_SIZE_TRAIN": [640, 672, 704, 736, 768, 800],
        "MIN_SIZE_TRAIN_SAMPLING": "choice",
        "MAX_SIZE_TRAIN": 1333,
        "MIN_SIZE_TEST": 800,
        "MAX_SIZE_TEST": 1333,
        "RANDOM_FLIP": "horizontal",
        "FORMAT": "BGR",
        "MASK_FORMAT": "polygon",
    },
    "DATASETS": {
        "TRAIN": ["coco_2017_train"],
        "TEST": ["coco_2017_val"],
        "ROOT": "",  # ours: the data root in the Tiny VOC layout
        "VAL_FRACTION": 0.1,  # ours: share of annotated images held out for validation (0: train on all, no val)
        "SPLIT_SEED": 0,  # ours: seed of the class-stratified train/val split
    },
    "DATALOADER": {"NUM_WORKERS": 4, "ASPECT_RATIO_GROUPING": True, "FILTER_EMPTY_ANNOTATIONS": True},
    "SOLVER": {
        "LR_SCHEDULER_NAME": "WarmupMultiStepLR",
        "IMS_PER_BATCH": 16,
        "BASE_LR": 0.02,
        "MOMENTUM": 0.9,
        "NESTEROV": False,
        "WEIGHT_DECAY": 0.0001,
        "WEIGHT_DECAY_NORM": 0.0,
        "WEIGHT_DECAY_BIAS": None,  # None: same as WEIGHT_DECAY
        "BIAS_LR_FACTOR": 1.0,
        "GAMMA": 0.1,
        "STEPS": [210000, 250000],
        "MAX_ITER": 270000,
        "WARMUP_FACTOR": 0.001,
        "WARMUP_ITERS": 1000,
        "WARMUP_METHOD": "linear",
        "CHECKPOINT_PERIOD": 5000,
        "AMP": {"ENABLED": False},
        "CLIP_GRADIENTS": {"ENABLED": False, "CLIP_TYPE": "value", "CLIP_VALUE": 1.0, "NORM_TYPE": 2.0},
    },
    "TEST": {
        "EVAL_PERIOD": 0,
        "DETECTIONS_PER_IMAGE": 100,
        "BEST_METRIC": "segm/AP50",  # ours: the val metric that picks model_best.pth (the leaderboard's)
        # test-time augmentation: every size (and its horizontal flip), merged as detectron2's TTA merges
        "AUG": {"ENABLED": False, "MIN_SIZES": [400, 500, 600, 700, 800, 900, 1000, 1100, 1200], "MAX_SIZE": 4000,
                "FLIP": True},
    },
    "OUTPUT_DIR": "./output",
    "SEED": -1,
    "CUDNN_BENCHMARK": False,
}

# Keys each engine cannot honour. Setting one of these in an experiment (file or override)
# while using that engine is an error; at its default it is simply not used.
ENGINE_UNSUPPORTED: dict[str, dict[str, str]] = {
    "detectron2": {
        "DATALOADER.ASPECT_RATIO_GROUPING": "batches follow a seeded order per iteration, so resume is bit-exact",
    },
    "torchvision": {
        "MODEL.PIXEL_MEAN": "torchvision normalises RGB input with its ImageNet mean/std, which its weights need",
        "MODEL.PIXEL_STD": "torchvision normalises RGB input with its ImageNet mean/std, which its weights need",
        "INPUT.FORMAT": "torchvision models take RGB input",
        "INPUT.MASK_FORMAT": "masks are always rasterised bitmaps in torchvision",
        "INPUT.MIN_SIZE_TRAIN_SAMPLING": "torchvision picks one of MIN_SIZE_TRAIN ('choice') per image",
        "MODEL.RESNETS.OUT_FEATURES": "torchvision's FPN always uses res2..res5",
        "MODEL.RESNETS.RES2_OUT_CHANNELS": "fixed by the torchvision ResNet of the chosen depth",
        "MODEL.RESNETS.STEM_OUT_CHANNELS": "fixed by the torchvision ResNet of the chosen depth",
        "MODEL.RESNETS.STRIDE_IN_1X1": "torchvision ResNets put the stride in the 3x3 conv",
        "MODEL.ROI_BOX_HEAD.POOLER_TYPE": "torchvision uses MultiScaleRoIAlign (aligned=False)",
        "MODEL.ROI_MASK_HEAD.POOLER_TYPE": "torchvision uses MultiScaleRoIAlign (aligned=False)",
        "DATALOADER.ASPECT_RATIO_GROUPING": "torchvision's loader batches images in sampler order",
        "SOLVER.LR_SCHEDULER_NAME": "only WarmupMultiStepLR is implemented for torchvision",
    },
}

# Keys of ENGINE_UNSUPPORTED that the engine builds at one fixed value: setting that value states what
# the engine does anyway, so it is accepted (detectron2's X101 configs set STRIDE_IN_1X1 False, which is
# how torchvision's ResNets are built).
ENGINE_FIXED: dict[str, dict[str, Any]] = {
    "detectron2": {},
    "torchvision": {"MODEL.RESNETS.STRIDE_IN_1X1": False},
}

# Values that exist only as fixed choices in one engine; anything else is rejected.
ENGINE_CHOICES: dict[str, dict[str, tuple]] = {
    "detectron2": {
        "MODEL.MASK_ON": (True,),
    },
    "torchvision": {
        "MODEL.RESNETS.DEPTH": (18, 34, 50, 101, 152),
        "MODEL.RESNETS.NORM": ("FrozenBN", "BN", "GN", "SyncBN"),
        "MODEL.FPN.NORM": ("", "GN", "BN"),
        "MODEL.ROI_BOX_HEAD.NORM": ("", "GN", "BN"),
        "MODEL.ROI_MASK_HEAD.NORM": ("", "GN", "BN"),
        "INPUT.RANDOM_FLIP": ("horizontal", "none"),
        "SOLVER.WARMUP_METHOD": ("linear", "constant"),
        "MODEL.MASK_ON": (True,),
        "SOLVER.CLIP_GRADIENTS.CLIP_TYPE": ("value", "norm"),
    },
}

ENGINES = ("torchvision", "detectron2")


def check_consistency(cfg: "Config") -> None:
    """What one key's range cannot say: values that must agree with each other."""
    if cfg["INPUT.MIN_SIZE_TRAIN_SAMPLING"] != "choice" and len(cfg["INPUT.MIN_SIZE_TRAIN"]) != 2:
        raise ConfigError(f"INPUT.MIN_SIZE_TRAIN = {short(cfg['INPUT.MIN_SIZE_TRAIN'])} is out of range: "
                          f"INPUT.MIN_SIZE_TRAIN_SAMPLING {cfg['INPUT.MIN_SIZE_TRAIN_SAMPLING']!r} needs "
                          f"[min, max]{_where(cfg)}")
    ratios, sizes = cfg["MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS"], cfg["MODEL.ANCHOR_GENERATOR.SIZES"]
    if len(ratios) not in (1, len(sizes)):
        raise ConfigError(f"MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS has {len(ratios)} levels: expected 1 or as many "
                          f"as MODEL.ANCHOR_GENERATOR.SIZES ({len(sizes)}){_where(cfg)}")
    if cfg["MODEL.RESNETS.NUM_GROUPS"] > 1 and cfg["MODEL.RESNETS.DEPTH"] < 50:
        raise ConfigError(f"MODEL.RESNETS.NUM_GROUPS = {cfg['MODEL.RESNETS.NUM_GROUPS']} needs a bottleneck ResNet "
                          f"(MODEL.RESNETS.DEPTH >= 50), got DEPTH {cfg['MODEL.RESNETS.DEPTH']}{_where(cfg)}")


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


DEFAULT_KEYS = _flatten(DEFAULTS)


class Config:
    """A resolved experiment: nested values in detectron2's layout plus the keys the user set."""

    def __init__(self, tree: dict | None = None, explicit: Iterable[str] = (), source: str | None = None):
        self.tree = copy.deepcopy(tree if tree is not None else DEFAULTS)
        self.explicit: set[str] = set(explicit)
        self.source = source

    def __getitem__(self, key: str) -> Any:
        node: Any = self.tree
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                raise ConfigError(_unknown_key_message(key))
            node = node[part]
        return copy.deepcopy(node) if isinstance(node, (list, dict)) else node

    def __setitem__(self, key: str, value: Any) -> None:
        """Set one known key (type-checked), and remember the experiment set it."""
        _check_known(key)
        parts = key.split(".")
        node = self.tree
        for part in parts[:-1]:
            node = node[part]
        value = _coerce(key, value, DEFAULT_KEYS[key])
        _check_range(key, value)
        node[parts[-1]] = value
        self.explicit.add(key)

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except ConfigError:
            return default

    def merge(self, overrides: dict[str, Any] | Iterable[str] | None) -> "Config":
        """Apply overrides: a dict of dotted keys, or a flat ``[KEY, VALUE, KEY, VALUE]`` list."""
        for key, value in parse_overrides(overrides).items():
            self[key] = value
        check_consistency(self)
        return self

    def copy(self) -> "Config":
        return Config(self.tree, self.explicit, self.source)

    def flat(self) -> dict[str, Any]:
        return _flatten(self.tree)

    def to_yaml(self) -> str:
        header = "# Resolved experiment config (detectron2 vocabulary). Set by the experiment:\n"
        header += "".join(f"#   {k}\n" for k in sorted(self.explicit))
        return header + yaml.safe_dump(self.tree, sort_keys=False, default_flow_style=None)

    def save(self, path: str | Path) -> Path:
        from .io import write_text

        return write_text(path, self.to_yaml())

    def check_engine(self, engine: str) -> None:
        """Reject keys this engine cannot honour, if the experiment set them."""
        if engine not in ENGINES:
            raise ConfigError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
        for key in sorted(self.explicit):
            why = ENGINE_UNSUPPORTED[engine].get(key)
            fixed = ENGINE_FIXED[engine].get(key, DEFAULT_KEYS[key])
            if why is not None and self[key] not in (DEFAULT_KEYS[key], fixed):
                raise ConfigError(f"{key} is not supported by the {engine} engine ({why}){_where(self)}")
        for key, allowed in ENGINE_CHOICES[engine].items():
            if self[key] not in allowed:
                raise ConfigError(
                    f"{key} = {self[key]!r} is not supported by the {engine} engine "
                    f"(choose from {', '.join(map(repr, allowed))}){_where(self)}"
                )

    def __repr__(self) -> str:
        return f"Config(source={self.source!r}, explicit={sorted(self.explicit)})"


def _where(cfg: Config) -> str:
    return f" [config: {cfg.source}]" if cfg.source else ""


def _unknown_key_message(key: str) -> str:
    close = difflib.get_close_matches(key, DEFAULT_KEYS, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]}?" if close else ""
    return f"unknown config key {key}{hint}"


def _check_known(key: str) -> None:
    if key not in DEFAULT_KEYS:
        raise ConfigError(_unknown_key_message(key))


def _coerce(key: str, value: Any, default: Any) -> Any:
    """Type-check ``value`` against the default's type, as detectron2's merge does."""
    if isinstance(value, tuple):
        value = list(value)
    if default is None:  # SOLVER.WEIGHT_DECAY_BIAS: a number or None
        if value is None:
            return None
        default = 0.0
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(float(value)):
                raise ConfigError(f"{key} must be a finite number, got {value!r}")
            return float(value)
    elif isinstance(default, str):
        if isinstance(value, str):
            return value
        if value is None:
            return ""
    elif isinstance(default, list):
        if isinstance(value, list):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool) and default and not isinstance(default[0], list):
            return [value]
    raise ConfigError(f"{key} expects {type(default).__name__} like {default!r}, got {value!r}")


def parse_overrides(overrides: dict[str, Any] | Iterable[str] | None) -> dict[str, Any]:
    """``["SOLVER.MAX_ITER", "100"]`` or ``{"SOLVER.MAX_ITER": 100}`` -> dict of parsed values."""
    if not overrides:
        return {}
    if isinstance(overrides, dict):
        return dict(overrides)
    items = [str(x) for x in overrides]
    if items and items[0] == "--":
        items = items[1:]
    if len(items) % 2:
        raise ConfigError(f"overrides come in KEY VALUE pairs; {items[-1]!r} has no value")
    out: dict[str, Any] = {}
    for key, text in zip(items[::2], items[1::2]):
        _check_known(key)
        out[key] = _parse_value(text)
    return out


def _parse_value(text: str) -> Any:
    """A command-line value: a Python literal as detectron2 reads it ("(640, 800)", "True"),
    else YAML ("true", "[1, 2]", "null"), else the plain string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        pass
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, (bool, int, float, list, type(None))) else text


def _read_yaml(path: Path) -> dict:
    from .readers import read_yaml

    data = read_yaml(path, ConfigError)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping of keys, got {type(data).__name__}")
    return data


def _apply_file(cfg: Config, path: Path, seen: tuple[Path, ...] = ()) -> None:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: _BASE_ chain loops back to itself")
    data = _read_yaml(path)
    base = data.pop("_BASE_", None)
    if base is not None and base != MODEL_ZOO_BASE:  # the built-in DEFAULTS are exactly MODEL_ZOO_BASE
        base_path = (path.parent / str(base)).resolve()
        if not base_path.is_file():
            raise ConfigError(f"{path}: _BASE_ {base!r} is neither {MODEL_ZOO_BASE!r} nor a file next to this config")
        _apply_file(cfg, base_path, seen + (path,))
    for key, value in _flatten_user(data, path).items():
        try:
            cfg[key] = value
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None


def _flatten_user(data: dict, path: Path, prefix: str = "") -> dict[str, Any]:
    """Flatten a user YAML mapping; a mapping value under a leaf key is an error."""
    out: dict[str, Any] = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and key not in DEFAULT_KEYS:
            out.update(_flatten_user(v, path, key + "."))
        else:
            out[key] = v
    return out


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | Iterable[str] | None = None) -> Config:
    """Read an experiment YAML (or just the 3x defaults when ``path`` is None) and apply overrides."""
    cfg = Config(source=str(path) if path else None)
    if path is not None:
        _apply_file(cfg, Path(path))
    cfg.merge(overrides)
    return cfg


def engine_key_table() -> list[tuple[str, Any, str, str]]:
    """(key, default, torchvision, detectron2) rows for the config reference."""
    rows = []
    for key, default in DEFAULT_KEYS.items():
        cells = []
        for engine in ("torchvision", "detectron2"):
            why = ENGINE_UNSUPPORTED[engine].get(key)
            choices = ENGINE_CHOICES[engine].get(key)
            if why and key in ENGINE_FIXED[engine]:
                cells.append(f"no ({why}; {ENGINE_FIXED[engine][key]!r}, what it builds, is accepted)")
            elif why:
                cells.append(f"no ({why})")
            elif choices:
                cells.append("yes: " + ", ".join(str(c) if c != "" else "'' (none)" for c in choices))
            else:
                cells.append("yes")
        rows.append((key, default, cells[0], cells[1]))
    return rows


def value_range_table() -> list[tuple[str, str]]:
    """(key, allowed values) rows for the config reference: what :data:`RANGES` accepts."""
    return [(key, RANGES[key][1]) for key in DEFAULT_KEYS]
