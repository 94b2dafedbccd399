"""The course settings file every notebook reads, and every profile resolving on every machine."""

from __future__ import annotations

import json

import pytest
import yaml

from helpers import course, data, experiment, pipeline
from helpers.config import load_config
from helpers.errors import ConfigError, DataError, HelpersError
from helpers.paths import CONFIGS

PROFILES = sorted(p.stem for p in (CONFIGS / "profiles").glob("*.yaml"))


def test_a_missing_course_file_is_made_from_the_demo_profile(tmp_path, capsys):
    path = tmp_path / "course.yaml"
    c = course.load(path, "02_training")
    assert path.is_file() and yaml.safe_load(path.read_text()) == {"profile": "demo"}
    demo = course.load_profile("demo")["parameters"]
    assert c.profile == "demo" and c.engine == demo["engine"]
    assert c.config == CONFIGS / "demo.yaml" and c.overrides == demo["overrides"]
    assert c.run_root.name == "demo" and c.train_dir == c.run_root / "train"
    assert "wrote" in capsys.readouterr().out


def test_one_edit_switches_every_notebook(tmp_path):
    path = tmp_path / "course.yaml"
    course.switch("homework", path, data_root=str(tmp_path / "voc"), engine="torchvision")
    for nb in pipeline.NOTEBOOK_ORDER:
        c = course.load(path, nb, quiet=True)
        assert (c.profile, c.engine, c.data_root) == ("homework", "torchvision", tmp_path / "voc")
        assert c.config == CONFIGS / "homework.yaml"


def test_precedence_profile_then_notebook_section_then_course_file(tmp_path):
    path = tmp_path / "course.yaml"
    path.write_text(yaml.safe_dump({"profile": "demo", "engine": "detectron2",
                                    "notebooks": {"03_weight_decay_ablation": {"ablation_overrides": {"SOLVER.MAX_ITER": 7}}}}))
    c3 = course.load(path, "03_weight_decay_ablation", quiet=True)
    assert c3.engine == "detectron2" and c3.param("ablation_overrides") == {"SOLVER.MAX_ITER": 7}
    # the demo profile's own section for 03 applies where the course file says nothing
    c3_default = course.load(tmp_path / "other.yaml", "03_weight_decay_ablation", quiet=True)
    assert c3_default.param("ablation_overrides") == course.load_profile("demo")["notebooks"][
        "03_weight_decay_ablation"]["ablation_overrides"]
    # a value given in the notebook's parameters cell wins
    assert c3.param("ablation_overrides", {"SOLVER.MAX_ITER": 1}) == {"SOLVER.MAX_ITER": 1}
    assert course.load(path, "04_inference", quiet=True).param("ablation_overrides") is None


def test_environment_variable_names_the_course_file(tmp_path, monkeypatch):
    path = tmp_path / "elsewhere.yaml"
    monkeypatch.setenv(course.ENV_FILE, str(path))
    assert course.load("", "01_data_exploration", quiet=True).file == path and path.is_file()


@pytest.mark.parametrize("body, message", [
    ("profile: nope\n", "no profile 'nope'"),
    ("[1, 2]\n", "must be a mapping"),
    ("profile: demo\nengine: tensorflow\n", "engine 'tensorflow'"),
    ("profile: demo\nconfig: configs/missing.yaml\n", "does not exist"),
    ("profile: demo\noverrides: [1]\n", "`overrides` must be a mapping"),
    ("profile: demo\nnotebooks: 3\n", "`notebooks` must be a mapping"),
    ("profile: [demo\n", "invalid YAML (line 2"),
    (b"profile: \xff\xfe\n", "course.yaml"),
])
def test_bad_course_files_get_one_line_naming_the_file(tmp_path, body, message):
    path = tmp_path / "course.yaml"
    path.write_bytes(body if isinstance(body, bytes) else body.encode())
    with pytest.raises(ConfigError) as e:
        course.load(path, "02_training", quiet=True)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_notebooks_make_what_they_can_and_name_what_to_run_first(tmp_path):
    path = tmp_path / "course.yaml"
    course.write_course_file(path, "demo", data_root=str(tmp_path / "demo"), run_root=str(tmp_path / "run"))
    c = course.load(path, "02_training", quiet=True)
    splits = c.ensure_split()  # makes the demo data set and the split: 02 opened alone
    assert (tmp_path / "demo" / data.TRAIN_JSON).is_file() and splits.train.is_file() and splits.val.is_file()
    with pytest.raises(HelpersError, match="run 02_training first"):
        course.load(path, "04_inference", quiet=True).require_trained()
    with pytest.raises(HelpersError, match="run 04_inference first"):
        c.require(c.run_root / "val_results.json", "04_inference")


def test_a_real_data_course_without_data_says_where_to_put_it(tmp_path):
    path = tmp_path / "course.yaml"
    course.write_course_file(path, "homework", data_root=str(tmp_path / "none"))
    with pytest.raises(DataError, match="no pascal_train.json in .*none"):
        course.load(path, "01_data_exploration", quiet=True).ensure_data()


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_loads_and_resolves_for_every_notebook(profile, tmp_path):
    """What run-notebooks would inject: each notebook's settings, its config with the profile's
    overrides (and the ablation's), each key supported by the profile's engine."""
    prof = course.load_profile(profile)
    path = course.write_course_file(tmp_path / "course.yaml", profile)
    for nb in pipeline.NOTEBOOK_ORDER:
        c = course.load(path, nb, quiet=True)
        cfg = load_config(c.config, c.overrides)
        cfg.check_engine(c.engine)
        cfg.check_engine("torchvision")  # every profile must also run on the engine installable anywhere
        extra = c.param("ablation_overrides")
        if extra:
            load_config(c.config, {**c.overrides, **extra}).check_engine(c.engine)
        unknown = set((prof["notebooks"].get(nb) or {})) - pipeline.declared_parameters(nb) - {"ablation_overrides", "seeds", "finetune_from"}
        assert not unknown, f"{profile}: {nb} neither declares nor reads {unknown}"
    assert prof["run_name"]


def test_the_homework_and_gpu_ci_profiles_are_the_homework_config():
    for name in ("homework", "gpu-ci"):
        c = course.load_profile(name)["parameters"]
        cfg = load_config(CONFIGS / "homework.yaml", c["overrides"])
        assert cfg["MODEL.RESNETS.DEPTH"] == 50 and cfg["MODEL.ROI_HEADS.NUM_CLASSES"] == 20
        assert cfg["SOLVER.IMS_PER_BATCH"] == 2 and cfg["MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE"] == 128
    assert load_config(CONFIGS / "homework.yaml")["SOLVER.BASE_LR"] == 0.00025


def test_run_notebooks_writes_the_run_course_file_and_injects_only_declared_names(tmp_path):
    settings = tmp_path / "course.yaml"
    course.write_course_file(settings, "demo", engine="torchvision", score_thresh=0.3)
    explicit = {"engine": "torchvision", "score_thresh": 0.3, "n_images": 2}
    assert pipeline.notebook_parameters("05_visualization", settings, explicit) == {
        "settings": str(settings), "score_thresh": 0.3, "n_images": 2}
    assert pipeline.notebook_parameters("02_training", settings, explicit) == {"settings": str(settings)}


def test_predict_refuses_a_bare_folder_and_takes_ids_from_test_json(demo_root, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    for p in sorted((demo_root / data.TEST_IMAGES).iterdir())[:2]:
        (bare / p.name).write_bytes(p.read_bytes())
    with pytest.raises(DataError, match="no image ids; pass the test.json"):
        experiment.images_to_predict(bare)
    test = json.loads((demo_root / data.TEST_JSON).read_text())
    want = sorted(img["id"] for img in test["images"])
    for images in (demo_root, demo_root / data.TEST_IMAGES, demo_root / data.TEST_JSON):
        pairs, listing = experiment.images_to_predict(images)
        assert sorted(i for i, _ in pairs) == want and listing == demo_root / data.TEST_JSON
    # a test.json whose images are elsewhere
    pairs, _ = experiment.images_to_predict(demo_root / data.TEST_JSON, image_dir=demo_root / data.TEST_IMAGES)
    assert sorted(i for i, _ in pairs) == want
    with pytest.raises(DataError, match="images are missing"):
        experiment.images_to_predict(demo_root / data.TEST_JSON, image_dir=bare)
    with pytest.raises(DataError, match="no such file"):
        experiment.images_to_predict(tmp_path / "nothing.json")


def test_predict_cli_refuses_a_bare_folder_in_one_line(tmp_path, capsys):
    from helpers.__main__ import main

    (tmp_path / "imgs").mkdir()
    code = main(["predict", "--run-dir", str(tmp_path / "run"), "--images", str(tmp_path / "imgs"),
                 "--out", str(tmp_path / "sub.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and "test.json" in err[0]
    assert not (tmp_path / "sub.json").exists()


def test_resuming_with_another_engine_is_refused(project_root, demo_root, tmp_path):
    from helpers import runs
    from tiny_schedule import tiny_overrides

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    runs.write_run_info(run_dir, engine="detectron2", status="training")
    with pytest.raises(HelpersError, match="trained with the detectron2 engine"):
        experiment.train(project_root / "configs" / "demo.yaml", tiny_overrides(), engine="torchvision",
                         data_root=demo_root, run_dir=run_dir, resume=True, progress=False)
