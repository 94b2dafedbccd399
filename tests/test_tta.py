"""Test-time augmentation (TEST.AUG.*): the torchvision engine's merge, its agreement with plain
prediction, flip symmetry, and 04's measurement with and without (tta.json)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from helpers import experiment, inference_checks
from helpers.config import load_config
from helpers.engines import torchvision_engine as tv
from helpers.engines.torchvision_engine import predict as tv_predict
from helpers.engines.torchvision_engine import tta
from helpers.paths import CONFIGS
from tiny_schedule import TINY, tiny_overrides


def test_augmentations_are_every_size_then_its_flip():
    assert tta.augmentations([96, 128], flip=True) == [(96, False), (96, True), (128, False), (128, True)]
    assert tta.augmentations([96, 128], flip=False) == [(96, False), (128, False)]


@pytest.fixture(scope="module")
def model():
    """A random-init tiny model in eval mode: every class scores about 1/6, so there are detections."""
    cfg = load_config(CONFIGS / "demo.yaml", tiny_overrides(**{"MODEL.ROI_HEADS.SCORE_THRESH_TEST": "0.0"}))
    cfg = tv.prepare_config(cfg)
    torch.manual_seed(0)
    return cfg, tv.build_model(cfg, 5, load_weights=False).eval()


def _image(seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (90, 130, 3), dtype=np.uint8)  # not square: a wrong axis shows
    image[20:60, 10:50] = (250, 30, 30)
    return tv_predict._image_tensor(image, torch.device("cpu"))


def _tta(cfg, model, image, sizes, flip):
    with torch.inference_mode():
        return tta.predict_one(model, image, sizes, cfg["INPUT.MAX_SIZE_TEST"], flip,
                               cfg["MODEL.ROI_HEADS.NMS_THRESH_TEST"], cfg["TEST.DETECTIONS_PER_IMAGE"])


def test_boxes_map_to_an_augmented_copy_and_back(model):
    cfg, net = model
    image = _image()
    for flipped in (False, True):
        aug = tta._Augmented(net, image, 64, flipped, 1000)
        boxes = torch.tensor([[3.0, 5.0, 40.0, 70.0], [100.0, 0.0, 130.0, 90.0]])
        assert torch.allclose(aug.to_original(aug.from_original(boxes)), boxes, atol=1e-4)
        h, w = aug.batch.image_sizes[0]
        assert min(h, w) == 64 and aug.image.shape == image.shape
        inside = aug.from_original(torch.tensor([[0.0, 0.0, 130.0, 90.0]]))[0]
        assert torch.allclose(inside, torch.tensor([0.0, 0.0, w, h]), atol=1e-3)  # the whole image maps onto the whole copy


def test_one_size_without_flip_is_the_plain_prediction(model):
    """TTA of one pass at MIN_SIZE_TEST merges nothing: it must equal the model's own prediction."""
    cfg, net = model
    image = _image()
    with torch.inference_mode():
        plain = net([image])[0]
    merged = _tta(cfg, net, image, [cfg["INPUT.MIN_SIZE_TEST"]], flip=False)
    assert len(plain["boxes"]) > 0
    assert torch.equal(merged["labels"], plain["labels"])
    assert torch.allclose(merged["scores"], plain["scores"], atol=1e-6)
    assert torch.allclose(merged["boxes"], plain["boxes"], atol=1e-3)
    assert merged["masks"].shape == plain["masks"].shape
    assert torch.allclose(merged["masks"], plain["masks"], atol=1e-4)


def test_flipping_the_image_mirrors_the_merged_prediction(model):
    """With FLIP the passes of an image and of its mirror image are the same set: predictions mirror."""
    cfg, net = model
    image = _image(1)
    width = image.shape[-1]
    a = _tta(cfg, net, image, [64, 96], flip=True)
    b = _tta(cfg, net, image.flip(-1), [64, 96], flip=True)
    assert len(a["boxes"]) > 0 and len(a["boxes"]) == len(b["boxes"])
    assert torch.allclose(a["scores"], b["scores"], atol=1e-4)
    mirrored = tta._flip_boxes(b["boxes"], width)
    assert torch.allclose(a["boxes"], mirrored, atol=1e-2)
    # pasting rounds box edges to whole pixels, which mirroring moves by up to a pixel: compare the masks by IoU
    ma, mb = a["masks"][:, 0] >= 0.5, b["masks"][:, 0].flip(-1) >= 0.5
    union = (ma | mb).flatten(1).sum(1)
    iou = (ma & mb).flatten(1).sum(1)[union > 0] / union[union > 0]
    assert len(iou) > 0 and iou.min() > 0.8, iou


def test_merged_output_is_capped_sorted_and_inside_the_image(model):
    cfg, net = model
    image = _image(2)
    out = _tta(cfg, net, image, [64, 96, 128], flip=True)
    n = len(out["boxes"])
    assert 0 < n <= cfg["TEST.DETECTIONS_PER_IMAGE"]
    assert torch.all(out["scores"][:-1] >= out["scores"][1:])
    assert out["masks"].shape == (n, 1, 90, 130) and out["masks"].min() >= 0 and out["masks"].max() <= 1
    assert out["boxes"][:, [0, 2]].min() >= 0 and out["boxes"][:, [0, 2]].max() <= 130
    assert out["boxes"][:, [1, 3]].min() >= 0 and out["boxes"][:, [1, 3]].max() <= 90
    # more passes than the plain prediction: the union before NMS is larger, the cap still holds
    plain = _tta(cfg, net, image, [cfg["INPUT.MIN_SIZE_TEST"]], flip=False)
    assert len(plain["boxes"]) <= cfg["TEST.DETECTIONS_PER_IMAGE"]


def test_bad_tta_sizes_are_refused_in_one_line():
    from helpers.errors import ConfigError

    for key, value in (("TEST.AUG.MIN_SIZES", "[]"), ("TEST.AUG.MIN_SIZES", "[0, 128]"), ("TEST.AUG.MAX_SIZE", "-1")):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load_config(CONFIGS / "demo.yaml", [key, value])


@pytest.mark.slow
def test_04_measures_tta_with_and_without_on_val(demo_root, tmp_path):
    from helpers import data
    from helpers.engines.base import predict_split
    from helpers.evaluate import evaluate

    run = experiment.train(CONFIGS / "demo.yaml", tiny_overrides(**{"TEST.AUG.MIN_SIZES": "[80, 96]"}),
                           data_root=demo_root, run_dir=tmp_path / "train", progress=False)
    report = inference_checks.measure_tta(run, tmp_path)
    assert json.loads((tmp_path / inference_checks.TTA).read_text()) == report
    assert [r["tta"] for r in report["rows"]] == [False, True]
    assert report["min_sizes"] == [80, 96] and report["flip"] is True and report["augmentations"] == 4
    assert all(r["seconds_per_image"] > 0 for r in report["rows"])
    split = data.load_split(json.loads((run / "run.json").read_text())["val_split"], check_images=False)
    with_tta = predict_split(experiment.load_predictor(run, tta=True), split)
    assert report["rows"][1]["segm/AP50"] == evaluate(split.coco, with_tta)["AP50"]
    assert report["rows"][1]["detections"] == len(with_tta)
    assert report["gain"]["segm/AP50"] == report["rows"][1]["segm/AP50"] - report["rows"][0]["segm/AP50"]
    assert "4 passes per image" in inference_checks.format_tta(report)
    assert TINY["INPUT.MIN_SIZE_TEST"] == "96"  # the plain row predicts at 96, one of the TTA sizes
