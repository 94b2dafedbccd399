"""helpers.submission: exact mask <-> RLE round trips, files pycocotools accepts, a strict validator."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
import pytest
from pycocotools.coco import COCO

from helpers.__main__ import main
from helpers.errors import DataError, SubmissionError
from helpers.instances import Instances
from helpers.submission import (
    format_summary,
    instances_to_results,
    mask_to_rle,
    masks_to_rles,
    rle_problem,
    rle_run_lengths,
    rle_to_mask,
    validate_submission,
    write_submission,
)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# pycocotools' mask.decode predates numpy 2's __array__(copy=...) protocol; harmless
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")
SIZES = {1: (5, 7), 2: (33, 20), 7: (1, 9)}  # image id -> (height, width)


# --------------------------------------------------------------------------- builders


def make_test_file(sizes: dict[int, tuple[int, int]] = SIZES) -> dict:
    """A test.json-like file: images and categories, no annotations."""
    return {"images": [{"id": i, "file_name": f"{i}.jpg", "height": h, "width": w} for i, (h, w) in sizes.items()],
            "categories": [{"id": c, "name": n} for c, n in ((1, "cat"), (2, "dog"), (3, "bus"))]}


def blob(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A random axis-aligned rectangle (possibly empty)."""
    y0, y1 = sorted(rng.integers(0, h + 1, 2))
    x0, x1 = sorted(rng.integers(0, w + 1, 2))
    mask = np.zeros((h, w), bool)
    mask[y0:y1, x0:x1] = True
    return mask


def valid_submission(sizes: dict[int, tuple[int, int]] = SIZES, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"image_id": image_id, "category_id": int(rng.integers(1, 4)), "segmentation": mask_to_rle(blob(h, w, rng)),
             "score": float(rng.random())}
            for image_id, (h, w) in sizes.items() for _ in range(3)]


def reference_runs(mask: np.ndarray) -> list[int]:
    """Run lengths of the column-major mask, background first (numpy, independent of pycocotools)."""
    flat = mask.ravel(order="F").astype(np.int8)
    edges = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
    return ([0] if flat.size and flat[0] else []) + runs


def edge_masks() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    masks = [np.zeros((4, 6), bool), np.ones((7, 3), bool), np.zeros((1, 1), bool), np.ones((1, 1), bool),
             np.ones((1, 17), bool), np.zeros((13, 1), bool), np.ones((500, 500), bool), np.zeros((375, 500), bool)]
    one_pixel = np.zeros((9, 11), bool)
    one_pixel[8, 10] = True
    masks.append(one_pixel)
    for _ in range(200):
        h, w = (int(v) for v in rng.integers(1, 40, 2))
        masks.append(rng.random((h, w)) < rng.random())
    masks += [blob(333, 500, rng) for _ in range(20)]
    return masks


# --------------------------------------------------------------------------- masks <-> RLE


def test_round_trip_is_exact():
    for mask in edge_masks():
        rle = mask_to_rle(mask)
        assert rle["size"] == list(mask.shape) and isinstance(rle["counts"], str)
        back = rle_to_mask(rle)
        assert back.dtype == bool and np.array_equal(back, mask)
        assert np.array_equal(rle_to_mask({"size": rle["size"], "counts": rle["counts"].encode()}), mask)


def test_rle_is_what_pycocotools_encodes_and_runs_parse_exactly():
    for mask in edge_masks():
        expected = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"].decode()
        counts = mask_to_rle(mask)["counts"]
        assert counts == expected
        assert rle_run_lengths(counts) == reference_runs(mask)
        assert rle_problem(counts, *mask.shape) is None


def test_non_binary_masks_count_any_nonzero_as_foreground():
    mask = np.array([[0, 255, 1], [7, 0, 0]], np.uint8)
    assert np.array_equal(rle_to_mask(mask_to_rle(mask)), mask != 0)


def test_stack_encoding_matches_single_masks():
    rng = np.random.default_rng(1)
    stack = np.stack([blob(21, 34, rng) for _ in range(5)])
    assert masks_to_rles(stack) == [mask_to_rle(m) for m in stack]
    assert masks_to_rles(np.zeros((0, 21, 34), bool)) == []
    with pytest.raises(ValueError):
        mask_to_rle(stack)


@pytest.mark.parametrize("counts, match", [
    ("", "cover 0 pixels"),
    ("52", "cover 7 pixels"),          # short: pycocotools would leave the rest uninitialised
    ("<1", "cover 13 pixels"),         # 12 + 1 > 3 * 4
    ("a!", "not an RLE character"),
    ("ab\x7f", "not an RLE character"),
    ("é", "not an RLE character"),
    ("o", "ends in the middle"),
    ("ooooooo0", "more than 6 characters"),
    ("O", "negative length"),
])
def test_malformed_counts_are_rejected_before_pycocotools(counts, match):
    problem = rle_problem(counts, 3, 4)
    assert problem is not None and match in problem
    with pytest.raises(SubmissionError, match="invalid RLE"):
        rle_to_mask({"size": [3, 4], "counts": counts})


def test_accepted_counts_decode_consistently_in_pycocotools():
    """Any string the checker accepts (canonical or not) decodes safely to the mask its runs describe."""
    rng = np.random.default_rng(2)
    alphabet = [chr(c) for c in range(48, 112)]
    accepted = 0
    for _ in range(3000):
        counts = "".join(rng.choice(alphabet, int(rng.integers(1, 6))))
        try:
            runs = rle_run_lengths(counts)
        except ValueError:
            continue
        h, w = 1, sum(runs)
        if w == 0 or rle_problem(counts, h, w) is not None:
            continue
        accepted += 1
        expected = np.repeat(np.arange(len(runs)) % 2, runs).astype(bool)[None]
        assert np.array_equal(rle_to_mask({"size": [h, w], "counts": counts}), expected)
    assert accepted > 100


# --------------------------------------------------------------------------- writing


def make_instances(h: int = 33, w: int = 20, n: int = 3) -> Instances:
    rng = np.random.default_rng(3)
    masks = np.stack([blob(h, w, rng) for _ in range(n)]) if n else np.zeros((0, h, w), bool)
    return Instances(boxes=np.zeros((n, 4)), masks=masks, scores=rng.random(n).astype(np.float32),
                     category_ids=rng.integers(1, 4, n), image_size=(h, w))


def test_instances_to_results_is_plain_grader_format():
    inst = make_instances()
    results = instances_to_results(np.int64(2), inst)
    assert len(results) == 3
    for entry, mask, score, category in zip(results, inst.masks, inst.scores, inst.category_ids, strict=True):
        assert set(entry) == {"image_id", "category_id", "segmentation", "score"}
        assert type(entry["image_id"]) is int and type(entry["category_id"]) is int
        assert type(entry["score"]) is float and entry["score"] == float(score)
        assert entry["category_id"] == category and np.array_equal(rle_to_mask(entry["segmentation"]), mask)
    json.dumps(results)
    assert instances_to_results(2, make_instances(n=0)) == []


def test_written_file_is_accepted_by_loadres_on_a_gt_without_annotations(tmp_path):
    test_json = tmp_path / "test.json"
    test_json.write_text(json.dumps(make_test_file()))
    inst = make_instances()
    path = write_submission(tmp_path / "sub.json", instances_to_results(2, inst))
    assert path == tmp_path / "sub.json" and not list(tmp_path.glob(".sub.json.*"))
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(test_json))
        res = coco.loadRes(str(path))
    assert len(res.anns) == 3
    for ann, mask in zip(res.dataset["annotations"], inst.masks, strict=True):
        assert np.array_equal(res.annToMask(ann).astype(bool), mask)
    assert validate_submission(test_json, path)["detections"] == 3


# --------------------------------------------------------------------------- validation


def test_valid_submission_summary():
    test, sub = make_test_file(), valid_submission()
    summary = validate_submission(test, sub)
    assert summary["detections"] == 9 and summary["images_covered"] == summary["images_total"] == 3
    assert sum(summary["per_class"].values()) == 9 and list(summary["per_class"]) == ["cat", "dog", "bus"]
    scores = [e["score"] for e in sub]
    assert (summary["score_min"], summary["score_max"]) == (min(scores), max(scores))
    assert summary["warnings"] == []
    text = format_summary(summary)
    assert "9 detections on 3 of 3 images" in text and "bus" in text and "warning" not in text


def test_empty_submission_is_valid_with_a_warning():
    summary = validate_submission(make_test_file(), [])
    assert summary["detections"] == 0 and summary["score_min"] is None
    assert any("0 detections" in w for w in summary["warnings"])
    assert "warning: 0 detections" in format_summary(summary)


def test_summary_warnings():
    sub = valid_submission()
    sub = [dict(e, bbox=[0.0, 0.0, 1.0, 1.0]) for e in sub if e["image_id"] != 7]
    sub += [dict(sub[0], category_id=1)] * 101
    warnings = " | ".join(validate_submission(make_test_file(), sub)["warnings"])
    assert "1 of 3 images have no detections" in warnings
    assert "detections of one class in one image: COCOeval scores only the 100 highest-scoring" in warnings
    assert "extra keys ['bbox']" in warnings


def with_entry(index: int, **changes) -> list:
    sub = valid_submission()
    sub[index] = copy.deepcopy(sub[index])
    for key, value in changes.items():
        if key == "drop":
            del sub[index][value]
        elif key in ("size", "counts"):
            sub[index]["segmentation"][key] = value
        else:
            sub[index][key] = value
    return sub


FOREIGN_COUNTS = mask_to_rle(np.ones((33, 21), bool))["counts"]  # image 2 is 33x20

BAD_SUBMISSIONS = {
    "not-a-list": ({"detections": []}, "a submission is a JSON list of detections, got an object"),
    "entry-not-object": ([[1, 2]], "entry 0: must be an object, got a list"),
    "missing-image_id": (with_entry(1, drop="image_id"), "entry 1: missing key 'image_id'"),
    "missing-category_id": (with_entry(1, drop="category_id"), "entry 1: missing key 'category_id'"),
    "missing-segmentation": (with_entry(1, drop="segmentation"), "entry 1: missing key 'segmentation'"),
    "missing-score": (with_entry(4, drop="score"), "entry 4: missing key 'score'"),
    "image_id-str": (with_entry(2, image_id="1"), "entry 2: image_id must be an integer"),
    "image_id-float": (with_entry(2, image_id=1.0), "entry 2: image_id must be an integer"),
    "image_id-bool": (with_entry(2, image_id=True), "entry 2: image_id must be an integer"),
    "image_id-unknown": (with_entry(2, image_id=999), "entry 2: image_id 999 is not an image"),
    "category-unknown": (with_entry(3, category_id=21),
                         "entry 3: category_id 21 is not a category of the test file (1..3)"),
    "category-zero": (with_entry(3, category_id=0), "entry 3: category_id 0"),
    "category-str": (with_entry(3, category_id="1"), "entry 3: category_id '1'"),
    "score-nan": (with_entry(0, score=math.nan), "entry 0: score must be a finite number, got nan"),
    "score-inf": (with_entry(0, score=math.inf), "entry 0: score must be a finite number, got inf"),
    "score-negative": (with_entry(0, score=-0.1), "entry 0: score -0.1 is outside [0, 1]"),
    "score-above-one": (with_entry(0, score=1.5), "entry 0: score 1.5 is outside [0, 1]"),
    "score-str": (with_entry(0, score="0.5"), "entry 0: score must be a finite number"),
    "segmentation-polygon": (with_entry(0, segmentation=[[1, 1, 3, 1, 3, 3]]),
                             "entry 0: segmentation must be an RLE object"),
    "size-wrong": (with_entry(3, size=[34, 20]),
                   "entry 3: segmentation size [34, 20] differs from image 2's [height, width] [33, 20]"),
    "size-malformed": (with_entry(3, size=[33]), "entry 3: segmentation size must be [height, width]"),
    "counts-list": (with_entry(3, counts=[660]), "entry 3: segmentation counts must be a str"),
    "counts-garbage": (with_entry(3, counts="!!!"), "entry 3: segmentation counts are not a compressed RLE"),
    "counts-truncated": (with_entry(3, counts="o"), "entry 3: segmentation counts are not a compressed RLE"),
    "counts-short": (with_entry(3, counts="52"), "entry 3: segmentation counts cover 7 pixels, a 33x20 mask has 660"),
    "counts-other-size": (with_entry(3, counts=FOREIGN_COUNTS), "counts cover 693 pixels"),
    "bbox-partial": ([dict(e, bbox=[0.0, 0.0, 1.0, 1.0]) for e in valid_submission()[:2]] + valid_submission()[2:],
                     "entry 2: missing key 'bbox' (entry 0 has a 'bbox', so every entry needs one)"),
    "bbox-strings": ([dict(e, bbox=["0", "0", "1", "1"]) for e in valid_submission()],
                     "entry 0: bbox must be [x, y, width, height]"),
}


@pytest.fixture
def test_json(tmp_path) -> Path:
    path = tmp_path / "test.json"
    path.write_text(json.dumps(make_test_file()))
    return path


@pytest.mark.parametrize("case", sorted(BAD_SUBMISSIONS))
def test_bad_submission_is_rejected(case, test_json, tmp_path):
    content, match = BAD_SUBMISSIONS[case]
    path = tmp_path / "sub.json"
    path.write_text(json.dumps(content))
    with pytest.raises(SubmissionError) as info:
        validate_submission(test_json, path)
    message = str(info.value)
    assert match in message and message.startswith(str(path)) and "\n" not in message


@pytest.mark.parametrize("content, match", [(None, "file not found"), ("[{]", "invalid JSON")])
def test_unreadable_submission_file(test_json, tmp_path, content, match):
    path = tmp_path / "sub.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(SubmissionError, match=match):
        validate_submission(test_json, path)


def test_unreadable_test_file(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        validate_submission(tmp_path / "nope.json", [])
    with pytest.raises(DataError, match="test json: image id 1: missing key 'file_name'"):
        validate_submission({"images": [{"id": 1}], "categories": [{"id": 1, "name": "cat"}]}, [])


def test_broken_test_file_is_blamed_not_the_submission(tmp_path):
    test = make_test_file()
    test["images"][1]["id"] = "2"  # a string id: every entry for image 2 would look unknown
    path = tmp_path / "test.json"
    path.write_text(json.dumps(test))
    with pytest.raises(DataError) as info:
        validate_submission(path, valid_submission())
    assert str(info.value).startswith(f"{path}: images[1]: 'id' must be an integer")


# --------------------------------------------------------------------------- CLI


@pytest.mark.parametrize("case", sorted(BAD_SUBMISSIONS))
def test_cli_rejects_bad_file_with_one_error_line(case, test_json, tmp_path, capsys):
    path = tmp_path / "sub.json"
    path.write_text(json.dumps(BAD_SUBMISSIONS[case][0]))
    assert main(["validate-submission", str(test_json), str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: ") and err.count("\n") == 1


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "helpers", "validate-submission", *args], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=120)


def test_cli_subprocess_valid_and_invalid(test_json, tmp_path):
    good = write_submission(tmp_path / "good.json", valid_submission())
    proc = run_cli(str(test_json), str(good))
    assert proc.returncode == 0, proc.stderr
    assert "valid submission: 9 detections on 3 of 3 images" in proc.stdout
    for name, content in (("bad.json", "{oops"), ("nan.json", json.dumps(BAD_SUBMISSIONS["score-nan"][0]))):
        (tmp_path / name).write_text(content)
        proc = run_cli(str(test_json), str(tmp_path / name))
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1


# --------------------------------------------------------------------------- real test.json


@pytest.fixture(scope="module")
def real_test_json(tinyvoc_root) -> Path:
    return tinyvoc_root / "test.json"


def real_sizes(path: Path) -> dict[int, tuple[int, int]]:
    return {img["id"]: (img["height"], img["width"]) for img in json.loads(path.read_text())["images"]}


def test_real_test_json_submission_validates_and_loads(real_test_json, tmp_path):
    sizes = real_sizes(real_test_json)
    sub = write_submission(tmp_path / "sub.json", valid_submission(sizes, seed=5))
    summary = validate_submission(real_test_json, sub)
    assert summary["detections"] == 3 * len(sizes) == 300 and summary["images_covered"] == 100
    assert len(summary["per_class"]) == 20
    with contextlib.redirect_stdout(io.StringIO()):
        assert len(COCO(str(real_test_json)).loadRes(str(sub)).anns) == 300


def test_real_test_json_wrong_size_is_rejected(real_test_json):
    sizes = real_sizes(real_test_json)
    image_id, (h, w) = next(iter(sizes.items()))
    sub = valid_submission({image_id: (w, h) if h != w else (h + 1, w)}, seed=6)
    with pytest.raises(SubmissionError, match=f"differs from image {image_id}'s"):
        validate_submission(real_test_json, sub)
