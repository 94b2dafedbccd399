"""helpers.evaluate gives exactly what pycocotools' COCOeval gives, on hand-built and real data."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from helpers.errors import DataError, SubmissionError
from helpers.evaluate import METRIC_NAMES, evaluate, format_table, per_image_errors, precision_recall

FIXTURES = Path(__file__).parent / "fixtures" / "eval"
PROJECT_ROOT = Path(__file__).resolve().parents[1]
# pycocotools' mask.decode predates numpy 2's __array__(copy=...) protocol; harmless
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")
IOU_TYPES = ["segm", "bbox"]

# cat and dog have ground truth and detections; unicorn only detections; bus only ground truth.
CATEGORIES = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}, {"id": 4, "name": "unicorn"},
              {"id": 7, "name": "bus"}]
GT_CLASSES, DET_ONLY_CLASS, GT_ONLY_CLASS = (1, 2, 7), 4, 7
IMAGE_SIZES = [(97, 131), (120, 160), (64, 48), (150, 113), (80, 80), (33, 201)]
EMPTY_IMAGE = 2  # index of an image without ground truth


# --------------------------------------------------------------------------- fixture builders


def encode(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def ellipse(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    cy, cx = rng.uniform(0, h), rng.uniform(0, w)
    ry, rx = rng.uniform(2, h / 2), rng.uniform(2, w / 2)
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1


def rectangle_polygon(h: int, w: int, rng: np.random.Generator) -> list[list[float]]:
    x0, x1 = sorted(rng.uniform(0, w, 2))
    y0, y1 = sorted(rng.uniform(0, h, 2))
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's crowd format: run lengths (background first) of the column-major mask."""
    flat = mask.ravel(order="F").astype(np.int8)
    edges = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
    return {"size": list(mask.shape), "counts": ([0] if flat[0] else []) + runs}


def annotation(ann_id: int, image: dict, category_id: int, segmentation, iscrowd: int = 0) -> dict:
    h, w = image["height"], image["width"]
    if isinstance(segmentation, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, h, w))
    elif isinstance(segmentation["counts"], list):
        rle = mask_utils.frPyObjects(segmentation, h, w)
    else:
        rle = segmentation
    return {"id": ann_id, "image_id": image["id"], "category_id": category_id, "segmentation": segmentation,
            "area": float(mask_utils.area(rle)), "bbox": mask_utils.toBbox(rle).tolist(), "iscrowd": iscrowd}


def make_gt(seed: int) -> dict:
    """Polygons, compressed RLE and crowd (uncompressed RLE) ground truth over odd-sized images."""
    rng = np.random.default_rng(seed)
    images = [{"id": 10 + i, "file_name": f"img{i}.jpg", "height": h, "width": w}
              for i, (h, w) in enumerate(IMAGE_SIZES)]
    anns: list[dict] = []
    for i, image in enumerate(images):
        h, w = image["height"], image["width"]
        for _ in range(0 if i == EMPTY_IMAGE else int(rng.integers(1, 5))):
            category = int(rng.choice(GT_CLASSES))
            segm = rectangle_polygon(h, w, rng) if rng.random() < 0.5 else encode(ellipse(h, w, rng))
            anns.append(annotation(len(anns) + 1, image, category, segm))
        if i % 3 == 0:
            anns.append(annotation(len(anns) + 1, image, 1, uncompressed_rle(ellipse(h, w, rng)), iscrowd=1))
    return {"images": images, "categories": CATEGORIES, "annotations": anns}


def shifted(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    dy, dx = rng.integers(-4, 5, 2)
    return np.roll(mask, (int(dy), int(dx)), axis=(0, 1))


def make_results(gt: dict, seed: int) -> list[dict]:
    """Shifted copies of most ground truth (some with a wrong class), detections on crowd regions,
    random false positives, tied scores, and more than 100 detections of one class in one image."""
    rng = np.random.default_rng(seed)
    coco = quiet(COCO)
    coco.dataset = copy.deepcopy(gt)
    quiet(coco.createIndex)
    images = {img["id"]: img for img in gt["images"]}
    results = []

    def add(image_id: int, category_id: int, mask: np.ndarray, score: float) -> None:
        results.append({"image_id": image_id, "category_id": category_id, "segmentation": encode(mask),
                        "score": float(score)})

    for ann in gt["annotations"]:
        if ann["category_id"] == GT_ONLY_CLASS or rng.random() < 0.15:
            continue
        category = ann["category_id"] if rng.random() < 0.85 else int(rng.choice([1, 2]))
        add(ann["image_id"], category, shifted(coco.annToMask(ann), rng), round(rng.random(), 1))
    for image in gt["images"]:
        h, w = image["height"], image["width"]
        for _ in range(int(rng.integers(0, 4))):
            add(image["id"], int(rng.choice([1, 2, DET_ONLY_CLASS])), ellipse(h, w, rng), rng.random())
    crowded = images[gt["images"][0]["id"]]
    for _ in range(105):
        add(crowded["id"], 2, ellipse(crowded["height"], crowded["width"], rng), rng.random())
    return results


# --------------------------------------------------------------------------- the reference


def quiet(fn, *args):
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args)


def reference(gt_path: Path, results_path: Path, iou_type: str) -> COCOeval:
    """The grader's run: COCO(file).loadRes(file), COCOeval, evaluate, accumulate, summarize."""
    coco_gt = quiet(COCO, str(gt_path))
    ev = COCOeval(coco_gt, quiet(coco_gt.loadRes, str(results_path)), iou_type)
    for step in (ev.evaluate, ev.accumulate, ev.summarize):
        quiet(step)
    return ev


def write(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj))
    return path


def assert_stats_equal(metrics: dict, ev: COCOeval) -> None:
    assert [metrics[name] for name in METRIC_NAMES] == [float(v) for v in ev.stats]


@pytest.fixture(params=[0, 1, 2], ids=lambda s: f"seed{s}")
def scene(request, tmp_path):
    """(gt path, results path, gt dict, results list) of one seeded hand-built scene."""
    gt = make_gt(request.param)
    results = make_results(gt, request.param + 100)
    return write(tmp_path / "gt.json", gt), write(tmp_path / "res.json", results), gt, results


# --------------------------------------------------------------------------- equality with COCOeval


@pytest.mark.parametrize("iou_type", IOU_TYPES)
def test_metrics_equal_cocoeval(scene, iou_type):
    gt_path, res_path, gt, results = scene
    ev = reference(gt_path, res_path, iou_type)
    assert_stats_equal(evaluate(gt_path, res_path, iou_type), ev)
    assert_stats_equal(evaluate(str(gt_path), results, iou_type), ev)
    assert_stats_equal(evaluate(gt, results, iou_type), ev)


@pytest.mark.parametrize("iou_type", IOU_TYPES)
def test_external_fixture_equals_cocoeval(iou_type):
    gt_path, res_path = FIXTURES / "gt.json", FIXTURES / "results.json"
    metrics = evaluate(gt_path, res_path, iou_type)
    assert_stats_equal(metrics, reference(gt_path, res_path, iou_type))
    assert -1.0 < metrics["AP"] < 1.0 and metrics["APl"] == -1.0


def test_meta_keys(scene):
    gt_path, res_path, gt, results = scene
    metrics = evaluate(gt_path, res_path)
    assert metrics["iou_type"] == "segm"
    assert metrics["num_images"] == len(gt["images"])
    assert metrics["num_detections"] == len(results)
    assert list(metrics["per_class"]) == [c["name"] for c in CATEGORIES]


def test_per_class_ap_from_precision_array(scene):
    gt_path, res_path, _, _ = scene
    ev = reference(gt_path, res_path, "segm")
    per_class = evaluate(gt_path, res_path)["per_class"]
    precision = ev.eval["precision"]  # [IoU, recall, class, area, maxDets]
    for k, category in enumerate(CATEGORIES):
        p = precision[:, :, k, 0, -1]
        if category["id"] == DET_ONLY_CLASS:
            assert per_class[category["name"]] == {"AP": -1.0, "AP50": -1.0}
        else:
            assert per_class[category["name"]]["AP"] == pytest.approx(float(np.mean(p)), abs=1e-12)
            assert per_class[category["name"]]["AP50"] == pytest.approx(float(np.mean(p[0])), abs=1e-12)
    assert per_class["bus"] == {"AP": 0.0, "AP50": 0.0}
    with_gt = [v["AP"] for v in per_class.values() if v["AP"] != -1.0]
    assert np.mean(with_gt) == pytest.approx(ev.stats[0], abs=1e-12)


@pytest.mark.parametrize("iou_type", IOU_TYPES)
def test_empty_results_score_like_cocoeval_without_detections(scene, tmp_path, iou_type):
    gt_path, _, gt, _ = scene
    # COCOeval ignores categories absent from the ground truth: one such detection = no detections
    ignored = [{"image_id": gt["images"][0]["id"], "category_id": 999, "bbox": [1.0, 1.0, 5.0, 5.0],
                "segmentation": encode(np.ones((IMAGE_SIZES[0]), bool)), "score": 0.5}]
    ev = reference(gt_path, write(tmp_path / "ignored.json", ignored), iou_type)
    metrics = evaluate(gt_path, [], iou_type)
    assert_stats_equal(metrics, ev)
    assert metrics["AP"] == 0.0 and metrics["num_detections"] == 0
    assert evaluate(gt_path, write(tmp_path / "empty.json", []), iou_type)["AP"] == 0.0


def test_inputs_are_not_modified(scene):
    gt_path, _, gt, results = scene
    gt_before, results_before = copy.deepcopy(gt), copy.deepcopy(results)
    first = evaluate(gt, results, "segm")
    assert evaluate(gt, results, "segm") == first
    evaluate(gt, results, "bbox")
    assert gt == gt_before and results == results_before


def test_ground_truth_as_coco_object(scene):
    gt_path, res_path, _, _ = scene
    coco = quiet(COCO, str(gt_path))
    assert_stats_equal(evaluate(coco, res_path), reference(gt_path, res_path, "segm"))


# --------------------------------------------------------------------------- errors


def test_results_for_unknown_image_name_it(scene):
    gt_path, _, _, results = scene
    with pytest.raises(SubmissionError, match="image_id 424242"):
        evaluate(gt_path, results + [dict(results[0], image_id=424242)])


@pytest.mark.parametrize("content, error, match", [
    (None, DataError, "file not found"),
    ("{not json", DataError, "invalid JSON at line 1"),
    ('{"images": [], "categories": [{"id": 1, "name": "a"}]}', DataError,
     r"missing key 'annotations' \(a test file\? evaluation needs ground truth\)"),
    ("[]", DataError, "top level must be a JSON object"),
])
def test_bad_ground_truth_file(tmp_path, content, error, match):
    path = tmp_path / "gt.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(error, match=match) as info:
        evaluate(path, [])
    assert str(path) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("content, match", [
    (None, "file not found"),
    ("[{", "invalid JSON"),
    ('{"a": 1}', "JSON list"),
    ('[{"image_id": 10, "category_id": 1, "segmentation": {}}]', "entry 0: missing key 'score'"),
    ('[{"image_id": 10, "category_id": 1, "score": 1}]', "entry 0: missing key 'segmentation'"),
    ('[7]', "entry 0: must be an object"),
    ('[{"image_id": 10, "category_id": 1, "score": 1, "segmentation": [[1, 1, 5, 1, 5, 5]]}]',
     "entry 0: segmentation must be an RLE object"),
    ('[{"image_id": 10, "category_id": 1, "score": 1, "bbox": [1, 1, 5, 5], "segmentation": "SEG"}, '
     '{"image_id": 10, "category_id": 1, "score": 1, "segmentation": "SEG"}]', "entry 1: missing key 'bbox'"),
    ('[{"image_id": 10, "category_id": 1, "score": 1, "segmentation": {"size": [97, 131], "counts": "0000"}}]',
     "entry 0: segmentation counts cover 0 pixels"),
    ('[{"image_id": 10, "category_id": 1, "score": "high", "segmentation": "SEG"}]',
     "entry 0: score must be a finite number"),
    ('[{"image_id": 10, "category_id": 1, "score": null, "segmentation": "SEG"}]',
     "entry 0: score must be a finite number"),
    ('[{"image_id": [10], "category_id": 1, "score": 0.5, "segmentation": "SEG"}]',
     "entry 0: image_id must be an integer"),
    ('[{"image_id": 10, "category_id": 1, "score": 0.5, "segmentation": {"size": [97, 131], "counts": [12707]}}]',
     "entry 0: segmentation counts must be a str"),
])
def test_bad_results_file(scene, tmp_path, content, match):
    gt_path = scene[0]
    path = tmp_path / "bad.json"
    if content is not None:
        path.write_text(content.replace('"SEG"', json.dumps(encode(np.zeros((97, 131), bool)))))
    with pytest.raises(SubmissionError, match=match) as info:
        evaluate(gt_path, path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_bad_arguments(scene):
    gt_path, res_path, _, _ = scene
    with pytest.raises(ValueError, match="iou_type"):
        evaluate(gt_path, res_path, "keypoints")
    with pytest.raises(ValueError, match="thresholds"):
        precision_recall(gt_path, res_path, iou=0.52)


# --------------------------------------------------------------------------- curves and per-image errors


@pytest.mark.parametrize("iou, t", [(0.5, 0), (0.75, 5)])
def test_precision_recall_reads_cocoeval(scene, iou, t):
    gt_path, res_path, _, _ = scene
    precision = reference(gt_path, res_path, "segm").eval["precision"]
    curves = precision_recall(gt_path, res_path, iou=iou)
    assert list(curves) == [c["name"] for c in CATEGORIES]
    for k, category in enumerate(CATEGORIES):
        curve = curves[category["name"]]
        if category["id"] == DET_ONLY_CLASS:
            assert curve == {"recall": [], "precision": [], "ap": -1.0}
            continue
        assert curve["recall"] == pytest.approx(np.linspace(0, 1, 101))
        assert curve["precision"] == precision[t, :, k, 0, -1].tolist()
        assert curve["ap"] == pytest.approx(float(np.mean(precision[t, :, k, 0, -1])))
    per_class = evaluate(gt_path, res_path)["per_class"]
    if iou == 0.5:
        assert all(curves[name]["ap"] == pytest.approx(v["AP50"]) for name, v in per_class.items())


def test_per_image_errors_on_external_fixture():
    rows = per_image_errors(FIXTURES / "gt.json", FIXTURES / "results.json")
    # image 2: its small circle is found too far off; image 3: one detection lies on a crowd region
    assert rows == [
        {"image_id": 2, "file_name": "b.jpg", "num_gt": 2, "num_det": 3, "matched": 1, "missed": 1,
         "false_positives": 2},
        {"image_id": 1, "file_name": "a.jpg", "num_gt": 2, "num_det": 4, "matched": 2, "missed": 0,
         "false_positives": 2},
        {"image_id": 3, "file_name": "c.jpg", "num_gt": 2, "num_det": 4, "matched": 2, "missed": 0,
         "false_positives": 1},
    ]
    high = per_image_errors(FIXTURES / "gt.json", FIXTURES / "results.json", score_thresh=0.8)
    assert {r["image_id"]: (r["num_det"], r["matched"], r["false_positives"]) for r in high} == \
        {1: (2, 2, 0), 2: (1, 1, 0), 3: (1, 0, 0)}


def test_per_image_errors_agree_with_cocoeval_matching(scene):
    gt_path, res_path, gt, _ = scene
    ev = reference(gt_path, res_path, "segm")
    rows = per_image_errors(gt_path, res_path)
    assert sorted(r["image_id"] for r in rows) == [img["id"] for img in gt["images"]]
    keys = [r["missed"] + r["false_positives"] for r in rows]
    assert keys == sorted(keys, reverse=True)
    non_crowd = sum(1 for a in gt["annotations"] if not a["iscrowd"])
    assert sum(r["num_gt"] for r in rows) == non_crowd
    # matched detections at IoU 0.5 = COCOeval's true positives, read from its evalImgs directly
    true_positives = sum(int(((e["dtMatches"][0] > 0) & (e["dtIgnore"][0] == 0)).sum())
                         for e in ev.evalImgs if e is not None and e["aRng"] == ev.params.areaRng[0])
    assert sum(r["matched"] for r in rows) == true_positives
    assert all(r["matched"] + r["missed"] == r["num_gt"] for r in rows)
    assert all(r["num_det"] <= 100 * len(CATEGORIES) for r in rows)
    nothing = per_image_errors(gt_path, res_path, score_thresh=1.01)
    assert all(r["num_det"] == r["matched"] == r["false_positives"] == 0 and r["missed"] == r["num_gt"]
               for r in nothing)


# --------------------------------------------------------------------------- table and CLI


def test_format_table_lists_metrics_and_classes():
    metrics = evaluate(FIXTURES / "gt.json", FIXTURES / "results.json")
    table = format_table(metrics, title="val")
    for word in METRIC_NAMES + ["circle", "square", "triangle", "n/a", "val"]:
        assert word in table
    assert f"{metrics['AP']:.4f}" in table


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "helpers", *args], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=120)


def test_cli_evaluate_prints_table_and_writes_json(tmp_path):
    gt_path, res_path, out = FIXTURES / "gt.json", FIXTURES / "results.json", tmp_path / "m.json"
    proc = run_cli("evaluate", str(gt_path), str(res_path), "--iou-type", "segm", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "AP50" in proc.stdout and "circle" in proc.stdout
    assert "index created" not in proc.stdout  # pycocotools' own prints are silenced
    written = json.loads(out.read_text())
    assert set(written) == set(METRIC_NAMES) | {"per_class", "iou_type", "num_images", "num_detections"}
    assert written == json.loads(json.dumps(evaluate(gt_path, res_path)))


def test_cli_evaluate_error_is_one_line(tmp_path):
    proc = run_cli("evaluate", str(FIXTURES / "gt.json"), str(tmp_path / "missing.json"))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("error: ")
    assert "Traceback" not in proc.stderr


# --------------------------------------------------------------------------- real Tiny VOC subset


@pytest.fixture(scope="module")
def real_gt(tinyvoc_root):
    return tinyvoc_root / "pascal_train.json"


def ground_truth_as_results(gt_path: Path, seed: int | None) -> list[dict]:
    """The ground-truth masks as detections; with a seed, perturbed (dropped, shifted, relabelled)."""
    coco = quiet(COCO, str(gt_path))
    rng = np.random.default_rng(seed)
    results = []
    for ann in coco.dataset["annotations"]:
        mask, category, score = coco.annToMask(ann), ann["category_id"], 1.0
        if seed is not None:
            if rng.random() < 0.1:
                continue
            mask, score = shifted(mask, rng), float(rng.random())
            category = category if rng.random() < 0.9 else int(rng.integers(1, 21))
        results.append({"image_id": ann["image_id"], "category_id": category, "segmentation": encode(mask),
                        "score": score})
    return results


def test_real_ground_truth_as_detections_scores_one(real_gt, tmp_path):
    results = ground_truth_as_results(real_gt, seed=None)
    metrics = evaluate(real_gt, results)
    assert_stats_equal(metrics, reference(real_gt, write(tmp_path / "res.json", results), "segm"))
    assert metrics["AP"] == 1.0 and metrics["AP50"] == 1.0
    assert all(v["AP"] == 1.0 for v in metrics["per_class"].values())


@pytest.mark.parametrize("iou_type", IOU_TYPES)
def test_real_perturbed_detections_equal_cocoeval(real_gt, tmp_path, iou_type):
    results = ground_truth_as_results(real_gt, seed=3)
    metrics = evaluate(real_gt, results, iou_type)
    assert_stats_equal(metrics, reference(real_gt, write(tmp_path / "res.json", results), iou_type))
    assert 0.0 < metrics["AP"] < 1.0
