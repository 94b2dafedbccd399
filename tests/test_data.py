"""helpers.data: one-line errors for bad data, unusual-but-valid data, the split, statistics, CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from helpers import data
from helpers.__main__ import main
from helpers.errors import DataError

VOC_CLASSES = [
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
]  # fmt: skip


# ------------------------------------------------------------------------------ fixture roots


def square(x: int, y: int, side: int) -> list[int]:
    return [x, y, x + side, y, x + side, y + side, x, y + side]


def ann(ann_id, image_id, cat_id, polygons, iscrowd=0) -> dict:
    xs = [v for p in polygons for v in p[0::2]]
    ys = [v for p in polygons for v in p[1::2]]
    bbox = [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
    return {"id": ann_id, "image_id": image_id, "category_id": cat_id, "segmentation": polygons,
            "area": 0, "bbox": bbox, "iscrowd": iscrowd}  # fmt: skip


def base_coco() -> dict:
    """3 images (one without annotations), 4 annotations, category ids 3/7/11 listed out of order.

    Mask areas: 100 and 125 (multi-part) in image 10; 10000 and 1600 in image 20.
    """
    return {
        "images": [
            {"id": 10, "file_name": "a.jpg", "height": 30, "width": 40},
            {"id": 20, "file_name": "b.png", "height": 100, "width": 100},
            {"id": 30, "file_name": "c.jpg", "height": 32, "width": 32},
        ],
        "annotations": [
            ann(1, 10, 3, [square(2, 2, 10)]),
            ann(2, 10, 7, [square(20, 2, 5), square(30, 20, 10)]),  # touches the bottom border
            ann(3, 20, 11, [square(0, 0, 100)]),
            ann(4, 20, 3, [square(10, 10, 40)]),
        ],
        "categories": [
            {"id": 11, "name": "cow", "supercategory": "animal"},
            {"id": 3, "name": "cat", "supercategory": "animal"},
            {"id": 7, "name": "dog", "supercategory": "animal"},
        ],
    }


def save_image(path, w, h, mode="RGB", **save_args):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(pixels).convert(mode).save(path, **save_args)


def write_root(root, coco=None, test=True):
    """A data root with image files of the JSON sizes; test split of one image unless test=False."""
    coco = base_coco() if coco is None else coco
    (root / data.TRAIN_IMAGES).mkdir(parents=True)
    (root / data.TRAIN_JSON).write_text(json.dumps(coco))
    for image in base_coco()["images"]:
        save_image(root / data.TRAIN_IMAGES / image["file_name"], image["width"], image["height"])
    if test:
        images = [{"id": 100, "file_name": "t.jpg", "height": 20, "width": 24}]
        (root / data.TEST_JSON).write_text(json.dumps({"images": images, "categories": base_coco()["categories"]}))
        save_image(root / data.TEST_IMAGES / "t.jpg", 24, 20)
    return root


def error_of(call, *args, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def _ann(coco, ann_id):
    return next(a for a in coco["annotations"] if a["id"] == ann_id)


def _img(coco, image_id):
    return next(i for i in coco["images"] if i["id"] == image_id)


# --------------------------------------------------------------------------------- bad inputs

BAD_JSON_ENTRIES = {
    "missing images": (lambda c: c.pop("images"), ["top level", "'images'"]),
    "missing annotations": (lambda c: c.pop("annotations"), ["top level", "'annotations'"]),
    "empty categories": (lambda c: c.update(categories=[]), ["'categories' is empty"]),
    "entry not an object": (lambda c: c["images"].append(5), ["images[3]", "JSON object"]),
    "string image id": (lambda c: _img(c, 10).update(id="10"), ["images[0]", "'id' must be an integer"]),
    "image without width": (lambda c: _img(c, 20).pop("width"), ["image id 20", "'width'"]),
    "annotation without bbox": (lambda c: _ann(c, 2).pop("bbox"), ["annotation id 2", "'bbox'"]),
    "annotation without iscrowd": (lambda c: _ann(c, 4).pop("iscrowd"), ["annotation id 4", "'iscrowd'"]),
    "category without name": (lambda c: c["categories"][0].pop("name"), ["category id 11", "'name'"]),
    "duplicate image id": (
        lambda c: c["images"].append(dict(_img(c, 10), file_name="d.jpg")),
        ["image id 10", "duplicate image id"],
    ),
    "duplicate file name": (lambda c: _img(c, 30).update(file_name="a.jpg"), ["image id 30", "duplicate file_name"]),
    "duplicate annotation id": (lambda c: c["annotations"].append(dict(_ann(c, 1))), ["annotation id 1", "duplicate"]),
    "duplicate category name": (lambda c: c["categories"][1].update(name="cow"), ["category id 3", "'cow'"]),
    "unknown image": (lambda c: _ann(c, 2).update(image_id=99), ["annotation id 2", "image_id 99"]),
    "unknown category": (lambda c: _ann(c, 1).update(category_id=5), ["annotation id 1", "category_id 5", "3, 7, 11"]),
    "two-point polygon": (
        lambda c: _ann(c, 1).update(segmentation=[[2, 2, 12, 2]]),
        ["annotation id 1", "polygon 0 has 4 coordinates"],
    ),
    "odd coordinates": (
        lambda c: _ann(c, 2).update(segmentation=[square(20, 2, 5), [2, 2, 12, 2, 12]]),
        ["annotation id 2", "polygon 1 has 5 coordinates"],
    ),
    "zero-area polygon": (
        lambda c: _ann(c, 1).update(segmentation=[[2, 2, 6, 2, 12, 2]]),
        ["annotation id 1", "covers no pixel"],
    ),
    "empty segmentation": (lambda c: _ann(c, 1).update(segmentation=[]), ["annotation id 1", "empty polygon list"]),
    "flat segmentation": (lambda c: _ann(c, 1).update(segmentation=[2, 2, 12, 2, 12, 12]), ["polygon 0"]),
    "bbox outside": (lambda c: _ann(c, 1).update(bbox=[30, 2, 15, 10]), ["annotation id 1", "'bbox'", "outside"]),
    "negative bbox": (lambda c: _ann(c, 1).update(bbox=[2, 2, -1, 10]), ["annotation id 1", "negative"]),
    "short bbox": (lambda c: _ann(c, 1).update(bbox=[2, 2, 10]), ["annotation id 1", "'bbox' must be"]),
    "polygon outside": (
        lambda c: _ann(c, 1).update(segmentation=[[2, 2, 45, 2, 12, 12]]),
        ["annotation id 1", "point (45, 2)"],
    ),
    "iscrowd 2": (lambda c: _ann(c, 1).update(iscrowd=2), ["annotation id 1", "'iscrowd'"]),
    "negative area": (lambda c: _ann(c, 1).update(area=-5), ["annotation id 1", "'area'"]),
    "RLE size": (
        lambda c: _ann(c, 1).update(segmentation={"size": [10, 10], "counts": [5, 95]}),
        ["annotation id 1", "RLE 'size'"],
    ),
    "RLE counts too long": (
        lambda c: _ann(c, 1).update(segmentation={"size": [30, 40], "counts": [5, 3, 2000]}),
        ["annotation id 1", "cover 2008 pixels"],
    ),
    "RLE string garbage": (
        lambda c: _ann(c, 1).update(segmentation={"size": [30, 40], "counts": "\x01\x02"}),
        ["annotation id 1", "is not an RLE character"],
    ),
}


@pytest.mark.parametrize("case", BAD_JSON_ENTRIES)
def test_bad_json_entry_names_file_and_entry(tmp_path, case):
    mutate, expected = BAD_JSON_ENTRIES[case]
    coco = base_coco()
    mutate(coco)
    root = write_root(tmp_path / "root", coco)
    message = error_of(data.load_root, root)
    assert str(root / data.TRAIN_JSON) in message
    for text in expected:
        assert text in message


def test_missing_root(tmp_path):
    assert "data root not found" in error_of(data.load_root, tmp_path / "nowhere")


def test_missing_train_json(tmp_path):
    root = write_root(tmp_path / "root")
    (root / data.TRAIN_JSON).unlink()
    assert f"{data.TRAIN_JSON}: file not found" in error_of(data.load_root, root)


def test_missing_image_folder(tmp_path):
    root = write_root(tmp_path / "root")
    for path in (root / data.TEST_IMAGES).iterdir():
        path.unlink()
    (root / data.TEST_IMAGES).rmdir()
    message = error_of(data.load_root, root)
    assert data.TEST_IMAGES in message and "image folder not found" in message


def test_invalid_json_says_line_and_column(tmp_path):
    root = write_root(tmp_path / "root")
    (root / data.TRAIN_JSON).write_text('{\n  "images": [,]\n}')
    message = error_of(data.load_root, root)
    assert data.TRAIN_JSON in message and "invalid JSON at line 2, column 14" in message


def test_top_level_must_be_an_object(tmp_path):
    root = write_root(tmp_path / "root")
    (root / data.TRAIN_JSON).write_text("[]")
    assert "top level must be a JSON object" in error_of(data.load_root, root)


def test_test_categories_must_match_train(tmp_path):
    root = write_root(tmp_path / "root")
    test = json.loads((root / data.TEST_JSON).read_text())
    test["categories"][0]["name"] = "bull"
    (root / data.TEST_JSON).write_text(json.dumps(test))
    message = error_of(data.load_root, root)
    assert data.TEST_JSON in message and "categories differ" in message


def test_missing_image_file(tmp_path):
    root = write_root(tmp_path / "root")
    (root / data.TRAIN_IMAGES / "b.png").unlink()
    message = error_of(data.load_root, root)
    assert "image id 20" in message and "'b.png' not found" in message
    data.load_root(root, check_images=False)  # the JSON alone is fine


def test_image_size_differs_from_json(tmp_path):
    coco = base_coco()
    _img(coco, 10)["width"] = 41
    message = error_of(data.load_root, write_root(tmp_path / "root", coco))
    assert "image id 10" in message and "41x30 differs from the file's 40x30" in message


def test_corrupt_image_file(tmp_path):
    root = write_root(tmp_path / "root")
    (root / data.TRAIN_IMAGES / "a.jpg").write_bytes(b"not a jpeg at all")
    message = error_of(data.load_root, root)
    assert "a.jpg" in message and "cannot read image" in message


def test_truncated_jpeg(tmp_path):
    root = write_root(tmp_path / "root")
    path = root / data.TRAIN_IMAGES / "c.jpg"
    path.write_bytes(path.read_bytes()[:-400])
    message = error_of(data.load_root, root)
    assert "c.jpg" in message and "truncated" in message
    assert data.image_size(path) == (32, 32)  # the header alone still reads


# ------------------------------------------------------------------------- unusual but valid


def test_valid_root_loads_and_indexes(tmp_path):
    root = data.load_root(write_root(tmp_path / "root"))
    train = root.train
    assert train.has_annotations and root.test is not None and not root.test.has_annotations
    assert train.category_ids == [3, 7, 11] and train.class_names == ["cat", "dog", "cow"]
    assert train.category_name(11) == "cow"
    assert [a["id"] for a in train.annotations_of(10)] == [1, 2] and train.annotations_of(30) == []
    assert train.image_path(20) == root.root / data.TRAIN_IMAGES / "b.png"
    assert train.image_path(train.image_by_id(30)).name == "c.jpg"
    assert root.test.annotations == [] and root.test.image_by_id(100)["file_name"] == "t.jpg"
    assert "unknown image id 99" in error_of(train.image_by_id, 99)


def test_root_without_test_split(tmp_path):
    root = write_root(tmp_path / "root", test=False)
    assert data.load_root(root).test is None
    summary = data.validate_root(root)
    assert summary["test"] is None and "test   absent" in data.format_summary(summary)


def test_rle_and_crowd_annotations(tmp_path):
    full = np.zeros((100, 100), np.uint8, order="F")
    full[60:70, 55:95] = 1
    compressed = mask_utils.encode(full)
    coco = base_coco()
    _ann(coco, 3).update(segmentation={"size": [100, 100], "counts": compressed["counts"].decode()}, iscrowd=1)
    _ann(coco, 4).update(segmentation={"size": [100, 100], "counts": [1010, 40, 8950]}, iscrowd=1)
    split = data.load_root(write_root(tmp_path / "root", coco)).train
    assert data.annotation_mask(_ann(coco, 3), 100, 100).sum() == 400
    column_major = data.annotation_mask(_ann(coco, 4), 100, 100)
    assert column_major.sum() == 40 and column_major[:, 10].sum() == 40
    assert data.validate_root(split.json_path.parent)["train"]["crowd"] == 2


def test_annotation_mask_polygons_and_bytes_rle():
    polygon = {"id": 1, "segmentation": [square(2, 2, 10), square(20, 5, 4)]}
    mask = data.annotation_mask(polygon, 30, 40)
    assert mask.dtype == bool and mask.shape == (30, 40) and mask.sum() == 116
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    assert (data.annotation_mask({"segmentation": rle}, 30, 40) == mask).all()
    assert "annotation id 1" in error_of(data.annotation_mask, {"id": 1, "segmentation": [[1, 2, 3, 4]]}, 30, 40)


def test_border_tolerance_accepts_real_voc_boxes(tmp_path):
    coco = base_coco()
    _ann(coco, 1)["bbox"] = [-0.5, -0.5, 40.9, 30.9]
    data.load_root(write_root(tmp_path / "root", coco))


@pytest.mark.parametrize(
    "mode, name, extra",
    [("L", "g.png", {}), ("P", "p.png", {"transparency": 0}), ("RGBA", "r.png", {}),
     ("CMYK", "k.jpg", {}), ("I;16", "d.png", {}), ("LA", "la.png", {})],
)  # fmt: skip
def test_read_image_converts_modes_to_rgb(tmp_path, mode, name, extra):
    path = tmp_path / name
    save_image(path, 24, 18, mode, **extra)
    pixels = data.read_image(path)
    assert pixels.shape == (18, 24, 3) and pixels.dtype == np.uint8
    assert data.image_size(path) == (18, 24)


def test_exif_rotated_jpeg(tmp_path):
    coco = base_coco()
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] != 10]
    root = write_root(tmp_path / "root", coco)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees: the stored 40x30 pixels display as 30x40
    save_image(root / data.TRAIN_IMAGES / "a.jpg", 40, 30, exif=exif.tobytes())
    path = root / data.TRAIN_IMAGES / "a.jpg"
    assert data.image_size(path) == (40, 30) and data.read_image(path).shape == (40, 30, 3)
    message = error_of(data.load_root, root)  # the JSON still says 40 wide, 30 high
    assert "image id 10" in message and "40x30 differs from the file's 30x40" in message
    _img(coco, 10).update(width=30, height=40)
    (root / data.TRAIN_JSON).write_text(json.dumps(coco))
    data.load_root(root)


def test_read_image_errors_name_the_file(tmp_path):
    assert "missing.jpg" in error_of(data.read_image, tmp_path / "missing.jpg")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG garbage")
    assert "bad.png" in error_of(data.read_image, tmp_path / "bad.png")


def test_default_data_root(monkeypatch, project_root):
    monkeypatch.delenv("TINYVOC_ROOT", raising=False)
    assert data.default_data_root() == project_root / "data" / "tinyvoc"
    monkeypatch.setenv("TINYVOC_ROOT", "/somewhere/else")
    assert str(data.default_data_root()) == "/somewhere/else"


def test_load_split_needs_an_image_dir(tmp_path):
    path = tmp_path / "custom.json"
    path.write_text(json.dumps(base_coco()))
    assert "no image folder" in error_of(data.load_split, path)
    split = data.load_split(path, tmp_path, check_images=False)
    assert split.name == "custom" and split.has_annotations
    ignored = data.load_split(path, tmp_path, require_annotations=False, check_images=False)
    assert not ignored.has_annotations and ignored.annotations == []


# ------------------------------------------------------------------------------- statistics


def test_stats_on_hand_built_fixture(tmp_path):
    stats = data.dataset_stats(data.load_root(write_root(tmp_path / "root")).train)
    assert json.loads(json.dumps(stats)) == stats
    assert (stats["num_images"], stats["num_annotations"], stats["num_crowd"]) == (3, 4, 0)
    assert stats["images_without_annotations"] == 1
    assert stats["instances_per_image"] == {"histogram": [1, 0, 2], "mean": 1.333, "max": 2}
    assert list(stats["per_class"]) == ["cat", "dog", "cow"]
    assert stats["per_class"]["cat"] == {"id": 3, "instances": 2, "images": 2}
    assert stats["per_class"]["cow"] == {"id": 11, "instances": 1, "images": 1}
    assert stats["mask_area"] == {"small": 2, "medium": 1, "large": 1}
    assert stats["areas"] == [100, 125, 1600, 10000]  # from the masks: every JSON "area" is 0
    assert stats["image_sizes"] == {"widths": [40, 100, 32], "heights": [30, 100, 32],
                                    "most_common": [[32, 32, 1], [40, 30, 1], [100, 100, 1]]}  # fmt: skip
    table = data.format_stats(stats)
    assert "cow" in table and "small 2, medium 1, large 1" in table


def test_stats_need_annotations(tmp_path):
    root = data.load_root(write_root(tmp_path / "root"))
    assert "no annotations" in error_of(data.dataset_stats, root.test)


# ------------------------------------------------------------------------------------ split


def split_coco() -> dict:
    """60 annotated images over 5 classes of very different frequency, plus 4 unannotated ones.

    class 1: every image; class 2: every 3rd; class 3: every 10th; class 4: images 7 and 40 only;
    class 5: image 13 only.
    """
    images, annotations = [], []
    for i in range(1, 65):
        images.append({"id": i, "file_name": f"{i}.jpg", "height": 50, "width": 50})
        if i > 60:
            continue
        classes = [1] + [2] * (i % 3 == 0) + [3] * (i % 10 == 0) + [4] * (i in (7, 40)) + [5] * (i == 13)
        for c in classes:
            annotations.append(ann(len(annotations) + 1, i, c, [square(c, c, 10)]))
    categories = [{"id": c, "name": f"class{c}"} for c in range(1, 6)]
    return {"images": images, "annotations": annotations, "categories": categories}


@pytest.fixture
def split_source(tmp_path):
    path = tmp_path / "src" / "pascal_train.json"
    path.parent.mkdir()
    path.write_text(json.dumps(split_coco()))
    return data.load_split(path, check_images=False)


def read_split(paths):
    return json.loads(paths.train.read_text()), json.loads(paths.val.read_text())


def classes_of(coco) -> dict[int, int]:
    """class id -> number of images holding it."""
    pairs = {(a["category_id"], a["image_id"]) for a in coco["annotations"]}
    return {c: sum(1 for cc, _ in pairs if cc == c) for c in {c for c, _ in pairs}}


def test_split_is_stratified_and_respects_the_fraction(split_source, tmp_path):
    train, val = read_split(data.make_split(split_source, tmp_path / "split", val_fraction=0.2, seed=0))
    assert len(val["images"]) == 12  # round(0.2 * 60 annotated images)
    train_ids, val_ids = {i["id"] for i in train["images"]}, {i["id"] for i in val["images"]}
    assert not train_ids & val_ids and train_ids | val_ids == set(range(1, 65))
    assert {61, 62, 63, 64} <= train_ids  # images without annotations stay in train
    train_classes, val_classes = classes_of(train), classes_of(val)
    assert set(val_classes) == {1, 2, 3, 4} and set(train_classes) == {1, 2, 3, 4, 5}
    assert 3 <= val_classes[2] <= 5  # about a fifth of class 2's 20 images
    assert val["categories"] == split_source.categories
    source = {a["id"]: a for a in split_source.annotations}
    assert all(source[a["id"]] == a for a in train["annotations"] + val["annotations"])
    assert val["info"]["split"] == "val" and val["info"]["seed"] == 0 and val["info"]["val_fraction"] == 0.2
    assert val["info"]["image_dir"] == str(split_source.image_dir.resolve())


def test_split_is_deterministic_and_seeded(split_source, tmp_path):
    first = data.make_split(split_source, tmp_path / "a", val_fraction=0.2, seed=3)
    second = data.make_split(split_source, tmp_path / "b", val_fraction=0.2, seed=3)
    assert first.val.read_bytes() == second.val.read_bytes()
    assert first.train.read_bytes() == second.train.read_bytes()
    other = data.make_split(split_source, tmp_path / "c", val_fraction=0.2, seed=4)
    assert read_split(other)[1]["images"] != read_split(first)[1]["images"]
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["train.json", "val.json"]  # no temp files left


def test_split_reuses_matching_files_and_rewrites_others(split_source, tmp_path):
    out = tmp_path / "split"
    paths = data.make_split(split_source, out, val_fraction=0.2, seed=0)
    paths.val.write_text(paths.val.read_text().replace('"split": "val"', '"split": "val", "x": 1', 1))
    marked = paths.val.read_text()
    assert data.make_split(split_source, out, val_fraction=0.2, seed=0) == paths
    assert paths.val.read_text() != marked  # info differs ("x"), so it was rewritten
    kept = paths.val.stat().st_mtime_ns
    data.make_split(split_source, out, val_fraction=0.2, seed=0)
    assert paths.val.stat().st_mtime_ns == kept  # reused as it is
    data.make_split(split_source, out, val_fraction=0.1, seed=0)
    assert len(read_split(paths)[1]["images"]) == 6


def test_split_files_load_back(split_source, tmp_path):
    paths = data.make_split(split_source, tmp_path / "split", val_fraction=0.2, seed=0)
    val = data.load_split(paths.val, check_images=False)
    assert val.name == "val" and val.image_dir == split_source.image_dir.resolve() and len(val.images) == 12


def test_split_edge_fractions(split_source, tmp_path):
    _, val = read_split(data.make_split(split_source, tmp_path / "zero", val_fraction=0.0))
    assert val["images"] == []
    _, val = read_split(data.make_split(split_source, tmp_path / "tiny", val_fraction=0.001))
    assert len(val["images"]) == 1
    assert "val_fraction" in error_of(data.make_split, split_source, tmp_path / "bad", val_fraction=1.0)


# ------------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def real_root(tinyvoc_root):
    return data.load_root(tinyvoc_root)


def test_real_data_loads(real_root):
    train, test = real_root.train, real_root.test
    assert (len(train.images), len(train.annotations), len(train.categories)) == (135, 303, 20)
    assert train.class_names == VOC_CLASSES and train.category_ids == list(range(1, 21))
    assert len(test.images) == 100 and not test.has_annotations and test.class_names == VOC_CLASSES


def test_real_data_validates(tinyvoc_root):
    summary = data.validate_root(tinyvoc_root)
    assert summary["train"]["annotations"] == 303 and summary["test"]["images"] == 100
    assert "OK" in data.format_summary(summary)


def test_real_masks_decode(real_root):
    train = real_root.train
    for image in train.images[:10]:
        for a in train.annotations_of(image["id"]):
            mask = data.annotation_mask(a, image["height"], image["width"])
            assert mask.shape == (image["height"], image["width"]) and mask.any()
    assert data.read_image(train.image_path(train.images[0])).shape[2] == 3


def test_real_stats(real_root):
    stats = data.dataset_stats(real_root.train)
    assert stats["num_annotations"] == 303 and stats["images_without_annotations"] == 0
    assert sum(c["instances"] for c in stats["per_class"].values()) == 303
    assert sum(stats["mask_area"].values()) == 303 and all(n > 0 for n in stats["mask_area"].values())
    assert max(stats["image_sizes"]["widths"]) == 500


def test_real_split_covers_every_class(real_root, tmp_path):
    train, val = read_split(data.make_split(real_root.train, tmp_path, val_fraction=0.2, seed=0))
    assert len(val["images"]) == 27
    multi = [c for c, n in classes_of({"annotations": real_root.train.annotations}).items() if n >= 2]
    assert set(multi) <= set(classes_of(val)) and set(multi) <= set(classes_of(train))


# -------------------------------------------------------------------------------------- CLI


def test_cli_validate_data_prints_counts(tmp_path, capsys):
    root = write_root(tmp_path / "root")
    assert main(["validate-data", str(root)]) == 0
    out = capsys.readouterr().out
    assert "3 images, 4 annotations, 3 categories" in out and "1 images without annotations" in out


def _corrupt_json(root):
    (root / data.TRAIN_JSON).write_text("{")


def _bad_bbox(root):
    coco = base_coco()
    _ann(coco, 2)["bbox"] = [0, 0, 400, 10]
    (root / data.TRAIN_JSON).write_text(json.dumps(coco))


def _truncated_image(root):
    path = root / data.TRAIN_IMAGES / "c.jpg"
    path.write_bytes(path.read_bytes()[:-400])


def _no_images_folder(root):
    for path in (root / data.TRAIN_IMAGES).iterdir():
        path.unlink()
    (root / data.TRAIN_IMAGES).rmdir()


@pytest.mark.parametrize(
    "spoil, expected",
    [(_corrupt_json, "invalid JSON"), (_bad_bbox, "annotation id 2"), (_truncated_image, "c.jpg"),
     (_no_images_folder, "image folder not found")],
)  # fmt: skip
def test_cli_validate_data_reports_one_line(tmp_path, capsys, spoil, expected):
    root = write_root(tmp_path / "root")
    spoil(root)
    assert main(["validate-data", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and expected in err


def test_cli_subprocess_has_no_traceback(tmp_path, project_root):
    root = write_root(tmp_path / "root")
    run = [sys.executable, "-m", "helpers", "validate-data", str(root)]
    ok = subprocess.run(run, cwd=project_root, capture_output=True, text=True)
    assert ok.returncode == 0 and "OK" in ok.stdout
    _bad_bbox(root)
    bad = subprocess.run(run, cwd=project_root, capture_output=True, text=True)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and bad.stderr.startswith("error: ")
    missing = subprocess.run(run[:-1] + [str(tmp_path / "nowhere")], cwd=project_root, capture_output=True, text=True)
    assert missing.returncode == 2 and "data root not found" in missing.stderr


def test_cli_stats_and_split(tmp_path, capsys):
    root = write_root(tmp_path / "root")
    assert main(["stats", str(root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["num_annotations"] == 4
    assert main(["split", str(root), "--out", str(tmp_path / "split"), "--val-fraction", "0.5"]) == 0
    assert (tmp_path / "split" / "val.json").is_file()
