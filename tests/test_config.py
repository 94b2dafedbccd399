"""Experiment configs: the homework's values, overrides, rejection of unknown / unsupported keys."""

from __future__ import annotations

import pytest

from helpers.config import DEFAULT_KEYS, MODEL_ZOO_BASE, Config, load_config
from helpers.errors import ConfigError


@pytest.fixture(scope="module")
def homework(project_root) -> Config:
    return load_config(project_root / "configs" / "homework.yaml")


# The homework's Figure 4, verbatim (see shared/NOTES.md).
FIGURE_4 = {
    "DATASETS.TRAIN": ["VOC"],
    "DATASETS.TEST": [],
    "DATALOADER.NUM_WORKERS": 2,
    "SOLVER.IMS_PER_BATCH": 2,
    "SOLVER.BASE_LR": 0.00025,
    "SOLVER.WEIGHT_DECAY_BIAS": 0.01,
    "SOLVER.CHECKPOINT_PERIOD": 3000,
    "SOLVER.MAX_ITER": 30000,
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": 128,
    "MODEL.ROI_HEADS.NUM_CLASSES": 20,
}

# Inherited from mask_rcnn_R_50_FPN_3x.yaml and detectron2's defaults.
INHERITED = {
    "MODEL.WEIGHTS": "imagenet",
    "MODEL.RESNETS.DEPTH": 50,
    "MODEL.RESNETS.NORM": "FrozenBN",
    "MODEL.BACKBONE.FREEZE_AT": 2,
    "SOLVER.WEIGHT_DECAY": 0.0001,
    "SOLVER.MOMENTUM": 0.9,
    "SOLVER.WARMUP_ITERS": 1000,
    "SOLVER.WARMUP_METHOD": "linear",
    "SOLVER.STEPS": [210000, 250000],
    "INPUT.MIN_SIZE_TRAIN": [640, 672, 704, 736, 768, 800],
    "INPUT.MAX_SIZE_TRAIN": 1333,
    "INPUT.MIN_SIZE_TEST": 800,
    "INPUT.MAX_SIZE_TEST": 1333,
    "INPUT.RANDOM_FLIP": "horizontal",
    "INPUT.FORMAT": "BGR",
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST": 0.05,
}


@pytest.mark.parametrize("key,value", sorted({**FIGURE_4, **INHERITED}.items()))
def test_homework_has_figure_4_and_inherited_values(homework, key, value):
    assert homework[key] == value


def test_homework_learning_rate_never_decays(homework):
    assert min(homework["SOLVER.STEPS"]) > homework["SOLVER.MAX_ITER"]


def test_demo_config_inherits_homework_and_fits_the_demo_classes(project_root):
    from helpers.demo_data import DEMO_CLASSES

    demo = load_config(project_root / "configs" / "demo.yaml")
    assert demo["MODEL.DEVICE"] == "cpu"
    assert demo["MODEL.WEIGHTS"] == ""
    assert demo["MODEL.ROI_HEADS.NUM_CLASSES"] == len(DEMO_CLASSES)
    assert demo["SOLVER.WEIGHT_DECAY_BIAS"] == 0.01  # from homework.yaml
    demo.check_engine("torchvision")


def test_no_path_gives_the_model_zoo_defaults():
    cfg = load_config()
    assert cfg.flat() == DEFAULT_KEYS and not cfg.explicit


@pytest.mark.parametrize(
    "text,expected",
    [
        (["INPUT.MIN_SIZE_TRAIN", "(640, 800)"], [640, 800]),
        (["INPUT.MIN_SIZE_TRAIN", "[512]"], [512]),
        (["INPUT.MIN_SIZE_TRAIN", "600"], [600]),
        (["SOLVER.AMP.ENABLED", "True"], True),
        (["SOLVER.AMP.ENABLED", "true"], True),
        (["SOLVER.BASE_LR", "0.001"], 0.001),
        (["SOLVER.BASE_LR", "1"], 1.0),
        (["SOLVER.BASE_LR", "1e-3"], 0.001),
        (["SOLVER.MAX_ITER", "100"], 100),
        (["MODEL.WEIGHTS", "''"], ""),
        (["MODEL.WEIGHTS", "runs/x/model_final.pth"], "runs/x/model_final.pth"),
        (["MODEL.DEVICE", "cpu"], "cpu"),
        (["SOLVER.WEIGHT_DECAY_BIAS", "None"], None),
        (["SOLVER.WEIGHT_DECAY_BIAS", "0.01"], 0.01),
        (["MODEL.ANCHOR_GENERATOR.SIZES", "[[16], [32], [64], [128], [256]]"], [[16], [32], [64], [128], [256]]),
    ],
)
def test_override_strings_parse_like_detectron2(text, expected):
    cfg = load_config(None, text)
    assert cfg[text[0]] == expected and type(cfg[text[0]]) is type(expected)
    assert text[0] in cfg.explicit


def test_overrides_apply_after_the_file_and_accept_dicts(project_root):
    cfg = load_config(project_root / "configs" / "homework.yaml", {"SOLVER.MAX_ITER": 7})
    cfg.merge(["--", "SOLVER.BASE_LR", "0.5"])
    assert cfg["SOLVER.MAX_ITER"] == 7 and cfg["SOLVER.BASE_LR"] == 0.5


def test_unknown_key_is_rejected_with_a_suggestion():
    with pytest.raises(ConfigError, match=r"unknown config key SOLVER\.BASE_RL; did you mean SOLVER\.BASE_LR\?"):
        load_config(None, ["SOLVER.BASE_RL", "0.1"])


def test_unknown_key_in_a_file_names_the_file(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("SOLVER:\n  MAX_ITR: 10\n")
    with pytest.raises(ConfigError, match=r"exp\.yaml: unknown config key SOLVER\.MAX_ITR; did you mean SOLVER\.MAX_ITER\?"):
        load_config(path)


@pytest.mark.parametrize(
    "key,value",
    [
        ("SOLVER.MAX_ITER", "'many'"),
        ("SOLVER.MAX_ITER", "1.5"),
        ("SOLVER.BASE_LR", "'fast'"),
        ("SOLVER.BASE_LR", "True"),
        ("SOLVER.BASE_LR", "nan"),
        ("SOLVER.AMP.ENABLED", "1"),
        ("INPUT.MIN_SIZE_TRAIN", "'big'"),
        ("MODEL.DEVICE", "0"),
    ],
)
def test_type_errors_are_rejected(key, value):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, [key, value])


def test_overrides_need_pairs():
    with pytest.raises(ConfigError, match="KEY VALUE pairs"):
        load_config(None, ["SOLVER.MAX_ITER"])


def test_base_chain_resolves_relative_paths(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.yaml").write_text(f'_BASE_: "{MODEL_ZOO_BASE}"\nSOLVER:\n  BASE_LR: 0.1\n  MAX_ITER: 10\n')
    (tmp_path / "sub" / "b.yaml").write_text('_BASE_: "../a.yaml"\nSOLVER:\n  MAX_ITER: 20\n')
    cfg = load_config(tmp_path / "sub" / "b.yaml")
    assert cfg["SOLVER.BASE_LR"] == 0.1 and cfg["SOLVER.MAX_ITER"] == 20
    assert {"SOLVER.BASE_LR", "SOLVER.MAX_ITER"} <= cfg.explicit


def test_missing_base_is_an_error(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text('_BASE_: "nowhere.yaml"\n')
    with pytest.raises(ConfigError, match="nowhere.yaml"):
        load_config(path)


def test_base_loop_is_an_error(tmp_path):
    (tmp_path / "a.yaml").write_text('_BASE_: "b.yaml"\n')
    (tmp_path / "b.yaml").write_text('_BASE_: "a.yaml"\n')
    with pytest.raises(ConfigError, match="loops"):
        load_config(tmp_path / "a.yaml")


def test_missing_file_and_bad_yaml_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("SOLVER: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(bad)


def test_torchvision_rejects_unsupported_keys_only_when_set(homework):
    homework.check_engine("torchvision")  # INPUT.FORMAT is BGR by default: not set, not an error
    cfg = homework.copy().merge(["INPUT.FORMAT", "RGB"])
    with pytest.raises(ConfigError, match=r"INPUT\.FORMAT is not supported by the torchvision engine"):
        cfg.check_engine("torchvision")
    cfg.check_engine("detectron2")


def test_torchvision_rejects_values_it_cannot_build(homework):
    cfg = homework.copy().merge(["MODEL.RESNETS.DEPTH", "42"])
    with pytest.raises(ConfigError, match=r"MODEL\.RESNETS\.DEPTH = 42"):
        cfg.check_engine("torchvision")
    norm = homework.copy().merge(["MODEL.ROI_MASK_HEAD.NORM", "LN"])  # detectron2 has LN; torchvision's heads do not here
    with pytest.raises(ConfigError, match=r"MODEL\.ROI_MASK_HEAD\.NORM = 'LN'.*choose from '', 'GN', 'BN'"):
        norm.check_engine("torchvision")
    norm.check_engine("detectron2")


def test_resolved_config_saved_in_the_run_folder_reloads_identically(homework, tmp_path):
    from helpers import runs

    cfg = homework.copy().merge(["SOLVER.MAX_ITER", "5", "SOLVER.WEIGHT_DECAY_BIAS", "None"])
    path = cfg.save(tmp_path / runs.CONFIG)
    again = load_config(path)
    assert again.flat() == cfg.flat()
    assert "SOLVER.MAX_ITER" in path.read_text().split("\n\n")[0]  # the header lists what was set


def test_torchvision_prepare_config_makes_random_init_trainable(homework):
    from helpers.engines import torchvision_engine

    cfg = torchvision_engine.prepare_config(homework.copy().merge(["MODEL.WEIGHTS", "''"]))
    assert cfg["MODEL.RESNETS.NORM"] == "BN" and cfg["MODEL.BACKBONE.FREEZE_AT"] == 0
    assert homework["MODEL.RESNETS.NORM"] == "FrozenBN"  # a copy: the input is untouched
    kept = torchvision_engine.prepare_config(homework)
    assert kept["MODEL.RESNETS.NORM"] == "FrozenBN" and kept["MODEL.BACKBONE.FREEZE_AT"] == 2


def test_torchvision_prepare_config_checks_anchor_levels(homework):
    from helpers.engines import torchvision_engine

    cfg = homework.copy().merge(["MODEL.ANCHOR_GENERATOR.SIZES", "[[32], [64]]"])
    with pytest.raises(ConfigError, match="SIZES needs 1 or 5"):
        torchvision_engine.prepare_config(cfg)
