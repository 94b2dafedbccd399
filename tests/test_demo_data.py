"""helpers.demo_data: deterministic, valid and occlusion-correct synthetic data in the Tiny VOC layout."""

from __future__ import annotations

import json
from itertools import combinations

import numpy as np
import pytest
from shapely.geometry import Polygon
from shapely.ops import unary_union

from helpers import data, demo_data
from helpers.errors import DataError


def files_of(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def demo_split(demo_root):
    return data.load_root(demo_root).train


def annotated_images(split):
    for image in split.images:
        yield image, split.annotations_of(image["id"])


def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
    first = files_of(demo_data.make_demo_data(tmp_path / "a", seed=5, num_train=6, num_test=2))
    assert first == files_of(demo_data.make_demo_data(tmp_path / "b", seed=5, num_train=6, num_test=2))
    other = files_of(demo_data.make_demo_data(tmp_path / "c", seed=6, num_train=6, num_test=2))
    assert other.keys() == first.keys()
    assert all(other[name] != first[name] for name in first if name.endswith(".jpg"))
    assert other[data.TRAIN_JSON] != first[data.TRAIN_JSON]


def test_layout_and_validation(demo_root):
    summary = data.validate_root(demo_root)
    assert summary["train"]["images"] == 24 and summary["test"]["images"] == 6
    assert summary["train"]["annotations"] >= 24
    test = json.loads((demo_root / data.TEST_JSON).read_text())
    assert set(test) == {"images", "categories"}
    root = data.load_root(demo_root)
    assert root.train.class_names == demo_data.DEMO_CLASSES == root.test.class_names
    assert root.train.category_ids == list(range(1, len(demo_data.DEMO_CLASSES) + 1))
    train_ids, test_ids = {i["id"] for i in root.train.images}, {i["id"] for i in root.test.images}
    assert not train_ids & test_ids


def test_visible_parts_are_disjoint_and_inside_the_image(demo_split):
    for image, anns in annotated_images(demo_split):
        h, w = image["height"], image["width"]
        shapes = [unary_union([Polygon(np.reshape(p, (-1, 2))) for p in a["segmentation"]]) for a in anns]
        for a, b in combinations(shapes, 2):
            assert a.intersection(b).area < 0.5  # coordinates are rounded to 0.01 px
        masks = [data.annotation_mask(a, h, w) for a in anns]
        assert all(m.any() for m in masks)
        assert (np.sum(masks, axis=0) > 1).sum() <= 0.01 * sum(m.sum() for m in masks)  # rasterised edges only
        for a in anns:
            x, y, bw, bh = a["bbox"]
            assert x >= 0 and y >= 0 and x + bw <= w and y + bh <= h
            points = np.concatenate([np.reshape(p, (-1, 2)) for p in a["segmentation"]])
            assert points.min() >= 0 and (points.max(axis=0) <= [w, h]).all()


def _interior(mask: np.ndarray) -> np.ndarray:
    """The mask eroded by one pixel (4-neighbourhood), away from JPEG-blurred edges."""
    inner = mask.copy()
    inner[1:] &= mask[:-1]
    inner[:-1] &= mask[1:]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return inner


def test_pixels_inside_each_visible_mask_have_one_colour(demo_split):
    """An annotation that covered an occluding shape would mix two colours inside its mask."""
    checked = 0
    for image, anns in annotated_images(demo_split):
        pixels = data.read_image(demo_split.image_path(image)).astype(float)
        for a in anns:
            inner = _interior(data.annotation_mask(a, image["height"], image["width"]))
            if inner.sum() >= 20:
                assert pixels[inner].std(axis=0).max() < 15, a["id"]
                checked += 1
    assert checked >= 20


def test_variety_of_classes_sizes_and_occlusion(demo_split):
    stats = data.dataset_stats(demo_split)
    assert sum(c["instances"] > 0 for c in stats["per_class"].values()) >= 4
    assert stats["mask_area"]["small"] > 0 and stats["mask_area"]["medium"] > 0
    assert min(stats["areas"]) >= demo_data.MIN_VISIBLE_AREA - 10
    assert any(len(a["segmentation"]) > 1 for a in demo_split.annotations)
    assert stats["instances_per_image"]["max"] > 1 and stats["num_crowd"] == 0
    widths, heights = stats["image_sizes"]["widths"], stats["image_sizes"]["heights"]
    assert len(set(zip(widths, heights))) > 10
    assert demo_data.WIDTHS[0] <= min(widths) and max(heights) <= demo_data.HEIGHTS[1]


def test_complete_set_is_reused_and_stale_files_removed(tmp_path):
    root = demo_data.make_demo_data(tmp_path / "d", seed=1, num_train=5, num_test=1)
    stamp = (root / data.TRAIN_JSON).stat().st_mtime_ns
    demo_data.make_demo_data(root, seed=1, num_train=5, num_test=1)
    assert (root / data.TRAIN_JSON).stat().st_mtime_ns == stamp
    demo_data.make_demo_data(root, seed=1, num_train=3, num_test=1)
    assert len(list((root / data.TRAIN_IMAGES).iterdir())) == 3
    assert json.loads((root / data.TRAIN_JSON).read_text())["info"]["num_train"] == 3


def test_killed_run_leaves_no_complete_looking_root(tmp_path, monkeypatch):
    def killed(path, obj, indent=None):
        if path.name == data.TRAIN_JSON:
            raise KeyboardInterrupt
        return real_write_json(path, obj, indent)

    real_write_json = demo_data.write_json
    monkeypatch.setattr(demo_data, "write_json", killed)
    with pytest.raises(KeyboardInterrupt):
        demo_data.make_demo_data(tmp_path / "d", num_train=3, num_test=1)
    with pytest.raises(DataError):
        data.load_root(tmp_path / "d")
    monkeypatch.undo()
    data.validate_root(demo_data.make_demo_data(tmp_path / "d", num_train=3, num_test=1))


def test_refuses_to_overwrite_another_data_set(tmp_path):
    root = tmp_path / "real"
    root.mkdir()
    (root / data.TRAIN_JSON).write_text('{"images": [], "annotations": [], "categories": []}')
    with pytest.raises(DataError, match="not a demo data set"):
        demo_data.make_demo_data(root, num_train=2, num_test=1)
    assert not (root / data.TRAIN_IMAGES).exists()


def test_each_class_paints_in_its_own_band_of_hues(demo_split):
    """The hue cue that makes the set learnable in minutes: a mask's mean colour sits in its class's band."""
    import colorsys

    checked = 0
    for image, anns in annotated_images(demo_split):
        pixels = data.read_image(demo_split.image_path(image)).astype(float) / 255
        for a in anns:
            inner = _interior(data.annotation_mask(a, image["height"], image["width"]))
            if inner.sum() < 20:
                continue
            hue = colorsys.rgb_to_hsv(*pixels[inner].mean(axis=0))[0]
            centre = demo_split.category_ids.index(a["category_id"]) / len(demo_data.DEMO_CLASSES)
            distance = min(abs(hue - centre), 1 - abs(hue - centre))
            assert distance <= demo_data.CLASS_HUE_SPREAD + 0.03, (a["id"], hue, centre)
            checked += 1
    assert checked >= 20
