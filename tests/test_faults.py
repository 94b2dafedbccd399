"""Fault injection: valid files mutated field by field and value by value, every command refusing each one.

Every case runs the CLI in process (``helpers.__main__.main``) and must end in exit status 2, exactly
one ``error:`` line on stderr, no traceback, nothing on stdout and no partial file. A few cases run
the real ``python -m helpers`` to prove the process exit path. The mutations are generated from the
valid documents (each key deleted, each value replaced by values of the wrong type or range), so a
new field gets cases without a new line here.
"""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import yaml

from helpers import data
from helpers.__main__ import main
from helpers.config import DEFAULT_KEYS, RANGES
from helpers.masks import mask_to_rle
from test_data import base_coco, write_root

PROJECT_ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")


# --------------------------------------------------------------------------- the check every case makes


def refused(argv: list[str], capsys, *watched: Path, absent: tuple[Path, ...] = ()) -> str:
    """Run the CLI; assert exit 2, one error line, no traceback, no partial or unwanted file. The error line."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse's own refusals are not what these cases test
        pytest.fail(f"argparse exited {e.code} for {argv}")
    out, err = capsys.readouterr()
    assert code == 2, f"exit {code} for {argv}\nstdout: {out[-500:]}\nstderr: {err[-1500:]}"
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), f"stderr for {argv}:\n{err[-1500:]}"
    assert "Traceback" not in err and out == ""
    for folder in watched:
        leftovers = [p for p in folder.rglob("*") if p.name.endswith(".tmp")]
        assert not leftovers, f"partial files left: {leftovers}"
    for path in absent:
        assert not path.exists(), f"{path} was written for a refused input"
    return lines[0]


# --------------------------------------------------------------------------- generic mutations

WRONG_TYPES = ["1", 1.5, None, [1], {"a": 1}, True]


def mutated(doc: dict, path: tuple, value: Any = ..., delete: bool = False) -> dict:
    """A deep copy of ``doc`` with the value at ``path`` replaced (or deleted)."""
    doc = copy.deepcopy(doc)
    node = doc
    for part in path[:-1]:
        node = node[part]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return doc


def entry_mutations(doc: dict, section: str, index: int, bad: dict[str, list], required: tuple) -> Iterator:
    """(case id, mutated doc): each required key of one entry deleted, each listed bad value set."""
    for key in required:
        yield f"{section}[{index}]-no-{key}", mutated(doc, (section, index, key), delete=True)
    for key, values in bad.items():
        for k, value in enumerate(values):
            yield f"{section}[{index}].{key}={_label(value)}-{k}", mutated(doc, (section, index, key), value)
    for k, value in enumerate([5, "x", [], None]):
        yield f"{section}[{index}]-is-{_label(value)}-{k}", mutated(doc, (section, index), value)


def section_mutations(doc: dict, sections: tuple) -> Iterator:
    for section in sections:
        yield f"no-{section}", mutated(doc, (section,), delete=True)
        for k, value in enumerate([{}, "x", None, 3]):
            yield f"{section}-is-{_label(value)}-{k}", mutated(doc, (section,), value)
    yield "top-level-list", [doc]
    yield "top-level-null", None


def _label(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, float) or math.isfinite(value) else repr(value)
    return "".join(c if c.isalnum() else "_" for c in text)[:24]


TEXT_FAULTS = {
    "truncated": lambda text: text[: len(text) // 2],
    "empty": lambda text: "",
    "deep-nesting": lambda text: "[" * 100_000 + "]" * 100_000,
    "huge-integer": lambda text: text.replace("{", '{"big": ' + "9" * 5000 + ", ", 1),
    "not-utf8": lambda text: text.encode("utf-8").replace(b'"', b'\xff', 1),
    "nan-literal": lambda text: text.replace('"height": ', '"height": NaN, "x": ', 1),
}


def write_fault(path: Path, text: str, fault: str) -> None:
    value = TEXT_FAULTS[fault](text)
    if isinstance(value, bytes):
        path.write_bytes(value)
    else:
        path.write_text(value, encoding="utf-8")


# --------------------------------------------------------------------------- data roots


def _polygon_ann_bad() -> dict[str, list]:
    return {
        "id": ["1", 1.5, None, [1], True, 2],  # 2: a duplicate of annotation 2's id
        "image_id": ["10", None, [10], 999, True],
        "category_id": ["3", None, 999, [3], 1.5],
        "iscrowd": [2, -1, "0", None, True],
        "area": [-1, "0", None, [0], float("nan")],
        "bbox": [[], [1, 2, 3], ["2", "2", "10", "10"], None, [2, 2, -1, 10], [1e9, 0, 1, 1], "box"],
        "segmentation": ["x", None, 3, [], [[]], [[1, 2, 3]], [["a", "b", "c", "d", "e", "f"]], [[1, 1, 1, 1, 1, 1]],
                         [[2, 2, 500, 2, 500, 500]], {"size": [1, 1], "counts": "0"},
                         {"size": [30, 40], "counts": "!!"}, {"size": [30, 40], "counts": [1, 2]},
                         {"size": [30, 40], "counts": [-1, 1201]}, {"size": [30, 40], "counts": "o"},
                         {"size": [30, 40]}, {"size": [30, 40], "counts": 7}],
    }


IMAGE_BAD = {
    "id": ["10", 1.5, None, [10], True, 20],  # 20: a duplicate
    "file_name": ["", 3, None, [], "../a.jpg", "/etc/hostname", "..\\a.jpg", "C:\\a.jpg", "sub/../../a.jpg", "b.png"],
    "height": [0, -5, 1.5, "30", None, True, []],
    "width": [0, -5, 1.5, "40", None, True, []],
}
CATEGORY_BAD = {"id": ["3", None, 1.5, [3], 7], "name": ["", 3, None, [], "dog"]}


def data_root_cases() -> Iterator[tuple[str, Any]]:
    coco = base_coco()
    yield from section_mutations(coco, ("images", "annotations", "categories"))
    yield "categories-empty", mutated(coco, ("categories",), [])
    yield from entry_mutations(coco, "images", 0, IMAGE_BAD, ("id", "file_name", "height", "width"))
    yield from entry_mutations(coco, "annotations", 0, _polygon_ann_bad(),
                               ("id", "image_id", "category_id", "iscrowd", "area", "bbox", "segmentation"))
    yield from entry_mutations(coco, "categories", 0, CATEGORY_BAD, ("id", "name"))


DATA_CASES = dict(data_root_cases())


@pytest.fixture
def good_root(tmp_path) -> Path:
    return write_root(tmp_path / "root")


@pytest.mark.parametrize("case", sorted(DATA_CASES))
def test_data_root_mutations_are_refused_by_every_command(case, good_root, tmp_path, capsys):
    (good_root / data.TRAIN_JSON).write_text(json.dumps(DATA_CASES[case]))
    split_dir = tmp_path / "split"
    for argv in (["validate-data", good_root], ["validate-data", good_root, "--skip-images"],
                 ["stats", good_root], ["split", good_root, "--out", split_dir]):
        line = refused(argv, capsys, tmp_path, absent=(split_dir / "train.json",))
        assert data.TRAIN_JSON in line


@pytest.mark.parametrize("fault", sorted(TEXT_FAULTS))
def test_data_root_text_faults_are_refused(fault, good_root, tmp_path, capsys):
    path = good_root / data.TRAIN_JSON
    write_fault(path, json.dumps(base_coco(), indent=1), fault)
    for argv in (["validate-data", good_root], ["stats", good_root], ["split", good_root, "--out", tmp_path / "s"]):
        assert str(path) in refused(argv, capsys, tmp_path, absent=(tmp_path / "s",))


def test_annotation_file_that_is_a_folder_is_refused(good_root, capsys):
    path = good_root / data.TRAIN_JSON
    path.unlink()
    path.mkdir()
    assert "is a folder" in refused(["validate-data", good_root], capsys)


@pytest.mark.parametrize("case", sorted(k for k in DATA_CASES if k.startswith(("images[", "categories", "no-images",
                                                                               "no-categories", "images-is",
                                                                               "top-level"))))
def test_test_json_mutations_are_refused_and_blamed(case, good_root, tmp_path, capsys):
    """The same image / category faults in test.json: validate-data and validate-submission name test.json."""
    doc = DATA_CASES[case]
    if isinstance(doc, dict):
        doc = {k: v for k, v in doc.items() if k != "annotations"}
    (good_root / data.TEST_JSON).write_text(json.dumps(doc))
    line = refused(["validate-data", good_root, "--skip-images"], capsys, tmp_path)
    assert data.TEST_JSON in line
    submission = tmp_path / "sub.json"
    submission.write_text("[]")
    line = refused(["validate-submission", good_root / data.TEST_JSON, submission], capsys, tmp_path)
    assert line.startswith(f"error: {good_root / data.TEST_JSON}") and "sub.json" not in line


def test_image_symlinked_out_of_the_root_is_refused(good_root, tmp_path, capsys):
    outside = tmp_path / "outside.jpg"
    (good_root / data.TRAIN_IMAGES / "a.jpg").rename(outside)
    (good_root / data.TRAIN_IMAGES / "a.jpg").symlink_to(outside)
    line = refused(["validate-data", good_root], capsys)
    assert "image id 10" in line and "outside the image folder" in line


# --------------------------------------------------------------------------- ground truth and results

SIZES = {1: (30, 40), 2: (20, 24)}
CATEGORIES = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]


def square_mask(h: int, w: int) -> np.ndarray:
    mask = np.zeros((h, w), bool)
    mask[2:12, 3:13] = True
    return mask


def ground_truth() -> dict:
    images = [{"id": i, "file_name": f"{i}.jpg", "height": h, "width": w} for i, (h, w) in SIZES.items()]
    polygon = [[3, 2, 13, 2, 13, 12, 3, 12]]
    annotations = [
        {"id": 1, "image_id": 1, "category_id": 1, "segmentation": polygon, "area": 100.0, "bbox": [3, 2, 10, 10],
         "iscrowd": 0},
        {"id": 2, "image_id": 2, "category_id": 2, "segmentation": mask_to_rle(square_mask(20, 24)), "area": 100.0,
         "bbox": [3, 2, 10, 10], "iscrowd": 0},
    ]
    return {"images": images, "annotations": annotations, "categories": CATEGORIES}


def results(with_bbox: bool = False, with_segm: bool = True) -> list[dict]:
    out = []
    for image_id, (h, w) in SIZES.items():
        entry = {"image_id": image_id, "category_id": image_id, "score": 0.9}
        if with_segm:
            entry["segmentation"] = mask_to_rle(square_mask(h, w))
        if with_bbox:
            entry["bbox"] = [3.0, 2.0, 10.0, 10.0]
        out.append(entry)
    return out


# image 1 of the ground truth is 30x40 like the data root's image 10, so the same segmentations are bad
GT_ANN_BAD = {**_polygon_ann_bad(), "image_id": ["1", None, [1], 999, True], "category_id": ["1", None, 999, [1]]}


def gt_cases() -> Iterator[tuple[str, Any]]:
    gt = ground_truth()
    yield from section_mutations(gt, ("images", "annotations", "categories"))
    yield from entry_mutations(gt, "images", 0, {k: v for k, v in IMAGE_BAD.items() if k != "file_name"} |
                               {"id": ["1", 1.5, None, [1], True, 2], "file_name": ["", 3, None, "../1.jpg", "2.jpg"]},
                               ("id", "file_name", "height", "width"))
    yield from entry_mutations(gt, "annotations", 0, GT_ANN_BAD,
                               ("id", "image_id", "category_id", "iscrowd", "area", "bbox", "segmentation"))
    yield from entry_mutations(gt, "categories", 0, {"id": ["1", None, [1], 2], "name": ["", 3, None, "dog"]},
                               ("id", "name"))


GT_CASES = dict(gt_cases())

RESULT_BAD = {
    "image_id": ["1", 1.5, None, [1], True, 999],
    "category_id": ["1", 1.5, None, [1], 99, True],
    "score": ["0.9", None, [0.9], True, float("nan"), float("inf"), -0.1, 1.5],
    "segmentation": [None, "x", [], [[3, 2, 13, 2, 13, 12]], {}, {"size": [30, 40]}, {"counts": "x"},
                     {"size": [40, 30], "counts": mask_to_rle(square_mask(40, 30))["counts"]},
                     {"size": [30, 40], "counts": [1200]}, {"size": [30, 40], "counts": "!!"},
                     {"size": [30, 40], "counts": "o"}, {"size": [30, 40], "counts": "52"},
                     {"size": [30, 40], "counts": 5}, {"size": [30], "counts": "52"},
                     {"size": ["30", "40"], "counts": "52"}],
}
BBOX_BAD = {"bbox": ["x", [1, 2], ["3", "2", "10", "10"], None, [3, 2, -1, 10], [3, 2, float("inf"), 1]]}


def results_cases() -> Iterator[tuple[str, str, Any]]:
    """(case id, iou type, results document)."""
    segm = results()
    wrapped = {"x": segm}  # entry_mutations walks a section of a document
    for name, doc in entry_mutations(wrapped, "x", 0, RESULT_BAD, ("image_id", "category_id", "segmentation", "score")):
        yield name.replace("x[", "results["), "segm", doc["x"]
    boxes = {"x": results(with_bbox=True, with_segm=False)}
    bad = {**{k: v for k, v in RESULT_BAD.items() if k != "segmentation"}, **BBOX_BAD}
    for name, doc in entry_mutations(boxes, "x", 0, bad, ("image_id", "category_id", "score", "bbox")):
        yield "bbox-" + name.replace("x[", "results["), "bbox", doc["x"]
    partial = results(with_bbox=True)
    del partial[1]["bbox"]
    yield "bbox-only-in-entry-0", "segm", partial
    yield "not-a-list", "segm", {"results": segm}
    yield "null", "segm", None
    yield "boxes-for-segm", "segm", results(with_bbox=True, with_segm=False)


RESULT_CASES = {name: (iou, doc) for name, iou, doc in results_cases()}


@pytest.fixture
def eval_files(tmp_path) -> tuple[Path, Path]:
    gt, res = tmp_path / "gt.json", tmp_path / "results.json"
    gt.write_text(json.dumps(ground_truth()))
    res.write_text(json.dumps(results()))
    return gt, res


def test_valid_eval_files_evaluate(eval_files, tmp_path, capsys):
    gt, res = eval_files
    assert main(["evaluate", str(gt), str(res), "--out", str(tmp_path / "m.json")]) == 0
    assert json.loads((tmp_path / "m.json").read_text())["AP50"] == pytest.approx(1.0)
    (tmp_path / "boxes.json").write_text(json.dumps(results(with_bbox=True, with_segm=False)))
    assert main(["evaluate", str(gt), str(tmp_path / "boxes.json"), "--iou-type", "bbox"]) == 0
    capsys.readouterr()


@pytest.mark.parametrize("case", sorted(GT_CASES))
def test_ground_truth_mutations_are_refused(case, eval_files, tmp_path, capsys):
    gt, res = eval_files
    gt.write_text(json.dumps(GT_CASES[case]))
    out = tmp_path / "metrics.json"
    for iou in ("segm", "bbox"):
        line = refused(["evaluate", gt, res, "--iou-type", iou, "--out", out], capsys, tmp_path, absent=(out,))
        assert str(gt) in line


@pytest.mark.parametrize("case", sorted(RESULT_CASES))
def test_results_mutations_are_refused(case, eval_files, tmp_path, capsys):
    gt, res = eval_files
    iou, doc = RESULT_CASES[case]
    res.write_text(json.dumps(doc))
    out = tmp_path / "metrics.json"
    line = refused(["evaluate", gt, res, "--iou-type", iou, "--out", out], capsys, tmp_path, absent=(out,))
    assert str(res) in line
    if iou == "segm" and isinstance(doc, list) and all(isinstance(e, dict) and "bbox" not in e for e in doc):
        # what the grader's validator says about the same file (against a test file of the same images)
        test = tmp_path / "test.json"
        test.write_text(json.dumps({k: v for k, v in ground_truth().items() if k != "annotations"}))
        assert str(res) in refused(["validate-submission", test, res], capsys, tmp_path)


@pytest.mark.parametrize("fault", sorted(TEXT_FAULTS))
@pytest.mark.parametrize("which", ["gt", "results"])
def test_eval_text_faults_are_refused(fault, which, eval_files, tmp_path, capsys):
    gt, res = eval_files
    path = gt if which == "gt" else res
    write_fault(path, json.dumps(ground_truth() if which == "gt" else results(), indent=1), fault)
    if which == "results" and fault == "nan-literal":
        path.write_text(json.dumps(results()).replace('"score": 0.9', '"score": NaN', 1))
    assert str(path) in refused(["evaluate", gt, res], capsys, tmp_path)


def test_invalid_compressed_counts_never_get_an_ap(eval_files, capsys):
    """Counts that pycocotools would decode from uninitialised memory: refused, not scored."""
    gt, res = eval_files
    doc = results()
    doc[0]["segmentation"]["counts"] = doc[0]["segmentation"]["counts"][:-1]  # one run short
    res.write_text(json.dumps(doc))
    line = refused(["evaluate", gt, res], capsys)
    assert "entry 0: segmentation counts" in line


@pytest.mark.parametrize("where", ["folder", "missing-folder", "parent-is-file"])
def test_evaluate_out_is_checked_before_work(where, eval_files, tmp_path, capsys):
    gt, res = eval_files
    out = {"folder": tmp_path, "missing-folder": tmp_path / "nope" / "m.json",
           "parent-is-file": gt / "m.json"}[where]
    line = refused(["evaluate", gt, res, "--out", out], capsys, tmp_path)
    assert str(out) in line


def test_evaluate_out_in_a_read_only_folder_is_refused(eval_files, tmp_path, capsys, monkeypatch):
    import os

    gt, res = eval_files
    ro = tmp_path / "ro"
    ro.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **k: False if Path(p) == ro else real(p, mode, **k))
    assert "not writable" in refused(["evaluate", gt, res, "--out", ro / "m.json"], capsys, tmp_path)


# --------------------------------------------------------------------------- configs


def _bad_values(key: str, default: Any) -> list[Any]:
    """Values of the wrong type or outside the key's range, from its default's type."""
    if key == "SOLVER.WEIGHT_DECAY_BIAS":
        return ["x", -1.0, [0.1]]
    if isinstance(default, bool):
        return [1, "maybe", [True], None]
    if isinstance(default, int):
        values = ["abc", 1.5, [1], {"A": 1}, True, -1_000_000]
        return values + ([2**40] if key in ("MODEL.BACKBONE.FREEZE_AT", "SEED", "DATASETS.SPLIT_SEED",
                                            "DATALOADER.NUM_WORKERS") else [])
    if isinstance(default, float):
        values = ["fast", True, [0.1], {"A": 1}, -1e9, float("nan")]
        return values + ([1.5] if RANGES[key][1].endswith(("1.0]", "1.0)")) else [])
    if isinstance(default, str):
        values = [5, [], {"A": 1}]
        return values + (["bogus"] if RANGES[key][1].startswith(("one of", "'cpu'")) else []) + \
            (["", None] if key == "OUTPUT_DIR" else [])
    if isinstance(default, list):
        values = ["x", {"A": 1}, [None]]
        if key in ("SOLVER.STEPS",):
            values += [[300, 200], ["a"], [-5]]
        if key in ("INPUT.MIN_SIZE_TRAIN",):
            values += [[], [0], [-800]]
        if key.endswith("IOU_THRESHOLDS"):
            values += [[1.5], [0.7, 0.3]]
        return values
    raise AssertionError(f"no bad values for {key}")


CONFIG_CASES = {f"{key}={_label(v)}-{k}": (key, v) for key, default in DEFAULT_KEYS.items()
                for k, v in enumerate(_bad_values(key, default))}


def nested(key: str, value: Any) -> dict:
    tree: dict = {}
    node = tree
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return tree


def test_every_key_has_a_range_and_cases():
    assert set(RANGES) == set(DEFAULT_KEYS)
    assert {key for key, _ in CONFIG_CASES.values()} == set(DEFAULT_KEYS)


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_config_value_mutations_are_refused_before_a_run_folder(case, demo_root, tmp_path, capsys):
    key, value = CONFIG_CASES[case]
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump({"_BASE_": str(PROJECT_ROOT / "configs" / "demo.yaml"), **nested(key, value)}))
    run_dir = tmp_path / "run"
    line = refused(["train", "--config", config, "--data", demo_root, "--run-dir", run_dir], capsys, tmp_path,
                   absent=(run_dir,))
    assert key in line and "exp.yaml" in line


@pytest.mark.parametrize("case", sorted(c for c in CONFIG_CASES if not isinstance(CONFIG_CASES[c][1], dict)))
def test_config_override_mutations_are_refused_before_a_run_folder(case, demo_root, tmp_path, capsys):
    key, value = CONFIG_CASES[case]
    text = repr(value) if not isinstance(value, float) or math.isfinite(value) else "nan"
    run_dir = tmp_path / "run"
    line = refused(["train", "--config", PROJECT_ROOT / "configs" / "demo.yaml", "--data", demo_root,
                    "--run-dir", run_dir, key, text], capsys, tmp_path, absent=(run_dir,))
    assert key in line


YAML_FAULTS = {
    "syntax": "SOLVER: [unclosed\n",
    "deep-nesting": "[" * 100_000 + "]" * 100_000,
    "huge-integer": "SOLVER:\n  MAX_ITER: " + "9" * 5000 + "\n",
    "top-level-list": "- SOLVER\n",
    "python-tag": "SOLVER: !!python/object:os.system x\n",
    "recursive-alias": "MODEL:\n  ANCHOR_GENERATOR:\n    SIZES: &a [*a]\n",
    "unknown-key": "SOLVER:\n  MAX_ITR: 10\n",
    "mapping-under-leaf": "SOLVER:\n  MAX_ITER:\n    A: 1\n",
    "base-missing": '_BASE_: "nowhere.yaml"\n',
    "base-not-a-string": "_BASE_: [1, 2]\n",
}


@pytest.mark.parametrize("fault", sorted(YAML_FAULTS) + ["not-utf8", "folder"])
def test_config_file_faults_are_refused(fault, demo_root, tmp_path, capsys):
    config = tmp_path / "exp.yaml"
    if fault == "not-utf8":
        config.write_bytes(b"SOLVER:\n  BASE_LR: 0.1 \xff\xfe\n")
    elif fault == "folder":
        config.mkdir()
    else:
        config.write_text(YAML_FAULTS[fault])
    run_dir = tmp_path / "run"
    line = refused(["train", "--config", config, "--data", demo_root, "--run-dir", run_dir], capsys, tmp_path,
                   absent=(run_dir,))
    assert "exp.yaml" in line


def test_cross_key_consistency_is_checked(demo_root, tmp_path, capsys):
    run_dir = tmp_path / "run"
    line = refused(["train", "--config", PROJECT_ROOT / "configs" / "demo.yaml", "--data", demo_root,
                    "--run-dir", run_dir, "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS", "[[1.0], [2.0]]"], capsys,
                   absent=(run_dir,))
    assert "ASPECT_RATIOS has 2 levels" in line


# --------------------------------------------------------------------------- train options and run folders


def test_train_options_after_the_overrides_are_parsed(demo_root, tmp_path, capsys, monkeypatch):
    from helpers import experiment

    seen = {}
    monkeypatch.setattr(experiment, "train", lambda **kw: seen.update(kw) or Path(kw["run_dir"]))
    assert main(["train", "SOLVER.MAX_ITER", "3", "--config", "configs/demo.yaml", "--run-dir", str(tmp_path / "r"),
                 "SEED", "-1", "--resume", "--data=" + str(demo_root)]) == 0
    assert seen["config"] == "configs/demo.yaml" and seen["run_dir"] == str(tmp_path / "r") and seen["resume"]
    assert seen["data_root"] == str(demo_root) and seen["overrides"] == ["SOLVER.MAX_ITER", "3", "SEED", "-1"]
    capsys.readouterr()
    assert "unknown option '--run_dir'" in refused(["train", "--config", "c.yaml", "SEED", "1", "--run_dir", "x"],
                                                    capsys)
    assert "--config is required" in refused(["train", "SEED", "1"], capsys)
    assert "--run-dir needs a value" in refused(["train", "--config", "c.yaml", "SEED", "1", "--run-dir"], capsys)


def test_run_dir_that_is_a_file_is_refused(demo_root, tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.write_text("not a folder")
    line = refused(["train", "--config", PROJECT_ROOT / "configs" / "demo.yaml", "--data", demo_root,
                    "--run-dir", run_dir], capsys, tmp_path)
    assert str(run_dir) in line and "is a file" in line
    assert "a file" in refused(["predict", "--run-dir", run_dir, "--images", demo_root / data.TEST_JSON,
                                "--out", tmp_path / "s.json"], capsys, tmp_path, absent=(tmp_path / "s.json",))


def _fake_run(tmp_path: Path, demo_root: Path) -> Path:
    """A run folder as training leaves it, with a checkpoint that is not a checkpoint."""
    from helpers import runs
    from helpers.config import load_config

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    load_config(PROJECT_ROOT / "configs" / "demo.yaml", ["MODEL.ROI_HEADS.NUM_CLASSES", "5"]).save(run_dir / runs.CONFIG)
    split = data.make_split(data.load_split(demo_root / data.TRAIN_JSON, check_images=False), run_dir / "data")
    runs.write_run_info(run_dir, engine="torchvision", data_root=str(demo_root), train_split=str(split.train),
                        val_split=str(split.val), status="finished")
    (run_dir / runs.FINAL).write_bytes(b"garbage, not a torch file")
    return run_dir


RUN_INFO_FAULTS = {
    "truncated": '{"engine": "torchvision", "train_sp',
    "empty": "",
    "list": "[]",
    "no-engine": '{"train_split": "x.json"}',
    "no-train-split": '{"engine": "torchvision"}',
    "unknown-engine": '{"engine": "tensorflow", "train_split": "x.json"}',
    "train-split-number": '{"engine": "torchvision", "train_split": 5}',
    "deep": "[" * 100_000,
}


@pytest.mark.parametrize("fault", sorted(RUN_INFO_FAULTS))
def test_damaged_run_json_is_one_line(fault, demo_root, tmp_path, capsys):
    from helpers import runs

    run_dir = _fake_run(tmp_path, demo_root)
    (run_dir / runs.RUN_INFO).write_text(RUN_INFO_FAULTS[fault])
    out = tmp_path / "sub.json"
    line = refused(["predict", "--run-dir", run_dir, "--images", demo_root / data.TEST_JSON, "--out", out], capsys,
                   tmp_path, absent=(out,))
    assert runs.RUN_INFO in line
    if fault in ("truncated", "list", "deep"):  # train refuses to resume over it, before any work
        assert runs.RUN_INFO in refused(["train", "--config", PROJECT_ROOT / "configs" / "demo.yaml", "--data",
                                         demo_root, "--run-dir", run_dir, "--resume"], capsys, tmp_path)


def test_damaged_config_yaml_in_a_run_is_one_line(demo_root, tmp_path, capsys):
    from helpers import runs

    run_dir = _fake_run(tmp_path, demo_root)
    (run_dir / runs.CONFIG).write_text("SOLVER:\n  BASE_LR: -1\n")
    line = refused(["predict", "--run-dir", run_dir, "--images", demo_root / data.TEST_JSON,
                    "--out", tmp_path / "s.json"], capsys, tmp_path)
    assert runs.CONFIG in line and "SOLVER.BASE_LR = -1" in line


@pytest.mark.slow
def test_garbage_weights_file_is_one_line(demo_root, tmp_path, capsys):
    from helpers import runs

    run_dir = _fake_run(tmp_path, demo_root)
    out = tmp_path / "sub.json"
    line = refused(["predict", "--run-dir", run_dir, "--images", demo_root / data.TEST_JSON, "--out", out,
                    "--checkpoint", "final"], capsys, tmp_path, absent=(out,))
    assert str(run_dir / runs.FINAL) in line and "not a PyTorch weights file" in line


@pytest.mark.parametrize("where", ["folder", "missing-folder"])
def test_predict_out_is_checked_before_work(where, demo_root, tmp_path, capsys):
    run_dir = _fake_run(tmp_path, demo_root)
    out = tmp_path if where == "folder" else tmp_path / "nope" / "sub.json"
    assert str(out) in refused(["predict", "--run-dir", run_dir, "--images", demo_root / data.TEST_JSON,
                                "--out", out], capsys, tmp_path)


def test_predict_with_missing_test_images_is_refused_before_work(demo_root, tmp_path, capsys):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(demo_root, root)
    first = json.loads((root / data.TEST_JSON).read_text())["images"][0]
    (root / data.TEST_IMAGES / first["file_name"]).unlink()
    run_dir = _fake_run(tmp_path, demo_root)
    out = tmp_path / "sub.json"
    line = refused(["predict", "--run-dir", run_dir, "--images", root / data.TEST_JSON, "--out", out], capsys,
                   tmp_path, absent=(out,))
    assert first["file_name"] in line


def test_split_out_that_is_a_file_is_refused(good_root, tmp_path, capsys):
    out = tmp_path / "split"
    out.write_text("x")
    assert "is a file" in refused(["split", good_root, "--out", out], capsys, tmp_path)


# --------------------------------------------------------------------------- the real process


@pytest.mark.parametrize("argv_of", [
    lambda root, tmp: ["validate-data", str(root / "nope")],
    lambda root, tmp: ["evaluate", str(root / data.TRAIN_JSON), str(tmp / "deep.json")],
    lambda root, tmp: ["train", "--config", str(tmp / "bad.yaml"), "--data", str(root), "--run-dir", str(tmp / "r")],
    lambda root, tmp: ["train", "--config", str(PROJECT_ROOT / "configs" / "demo.yaml"), "--data", str(root),
                       "--run-dir", str(tmp / "r"), "SOLVER.BASE_LR", "-0.1"],
])
def test_subprocess_exit_path(argv_of, good_root, tmp_path):
    (tmp_path / "deep.json").write_text("[" * 100_000)
    (tmp_path / "bad.yaml").write_bytes(b"\xff\xfe")
    proc = subprocess.run([sys.executable, "-m", "helpers", *argv_of(good_root, tmp_path)], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    assert not (tmp_path / "r").exists()


# --------------------------------------------------------------------------- errors after a progress bar


def test_error_during_prediction_starts_its_own_line(demo_root, tmp_path, capsys, monkeypatch):
    """A corrupt image found while the progress bar is drawn: the error line is not glued to the bar."""
    import shutil

    from helpers import experiment
    from helpers.engines.base import Predictor
    from helpers.instances import Instances

    root = tmp_path / "copy"
    shutil.copytree(demo_root, root)
    images = json.loads((root / data.TEST_JSON).read_text())["images"]
    broken = root / data.TEST_IMAGES / images[2]["file_name"]
    broken.write_bytes(broken.read_bytes()[:200])
    predictor = Predictor(lambda batch: [Instances.empty(im.shape[:2]) for im in batch], [{"id": 1, "name": "a"}],
                          0.5, "cpu")
    monkeypatch.setattr(experiment, "load_predictor", lambda *args, **kwargs: predictor)
    out = tmp_path / "sub.json"
    code = main(["predict", "--run-dir", str(tmp_path), "--images", str(root / data.TEST_JSON), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "predict" in err  # the bar was drawn
    last = err.split("\n")[-2]
    assert last.startswith("error: ") and broken.name in last and err.count("error:") == 1
    assert not out.exists()
