"""The torchvision engine's mask paste gives torchvision's pixels exactly, as probabilities and as booleans."""

from __future__ import annotations

import pytest
import torch
from torchvision.models.detection.roi_heads import paste_masks_in_image
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import clip_boxes_to_image

from helpers.engines.torchvision_engine.model import _InputTransform
from helpers.engines.torchvision_engine.paste import paste_masks
from helpers.engines.torchvision_engine.predict import MASK_THRESHOLD


def _boxes(gen: torch.Generator, n: int, height: int, width: int) -> torch.Tensor:
    """Boxes of every kind a detector gives (clipped to the image, as torchvision's box head clips them):
    fractional corners, some on the image's edges, some under a pixel wide, some the whole image."""
    x0 = torch.rand(n, generator=gen) * width * 1.1 - width * 0.05
    y0 = torch.rand(n, generator=gen) * height * 1.1 - height * 0.05
    w = torch.rand(n, generator=gen) ** 2 * width
    h = torch.rand(n, generator=gen) ** 2 * height
    boxes = torch.stack([x0, y0, x0 + w, y0 + h], dim=1)
    boxes[: n // 8, 2:] = boxes[: n // 8, :2] + 0.3  # thinner than a pixel
    boxes[n // 8 : n // 4] = torch.tensor([0.0, 0.0, width, height])  # the whole image
    return clip_boxes_to_image(boxes, (height, width))


@pytest.mark.parametrize("resolution", [28, 14, 7])
@pytest.mark.parametrize("size", [(375, 500), (1, 1), (64, 33)])
def test_paste_matches_torchvision(resolution, size):
    gen = torch.Generator().manual_seed(resolution * 1000 + size[0])
    probs = torch.rand((40, 1, resolution, resolution), generator=gen)
    boxes = _boxes(gen, 40, *size)
    expected = paste_masks_in_image(probs, boxes, size)
    assert torch.equal(paste_masks(probs, boxes, size), expected)
    binary = paste_masks(probs, boxes, size, MASK_THRESHOLD)
    assert binary.dtype == torch.bool and torch.equal(binary, expected >= MASK_THRESHOLD)


def test_no_detections_gives_an_empty_stack_of_the_right_kind():
    probs, boxes = torch.zeros((0, 1, 28, 28)), torch.zeros((0, 4))
    assert paste_masks(probs, boxes, (5, 7)).shape == (0, 1, 5, 7)
    assert paste_masks(probs, boxes, (5, 7), 0.5).dtype == torch.bool


def test_a_box_wholly_outside_the_image_pastes_nothing():
    probs = torch.ones((2, 1, 28, 28))
    boxes = torch.tensor([[200.0, 10.0, 260.0, 40.0], [-90.0, -90.0, -50.0, -40.0]])
    assert not paste_masks(probs, boxes, (100, 150), 0.5).any()


def test_the_engine_postprocess_matches_torchvision_postprocess():
    """Boxes rescaled to the original image and masks pasted: the same as torchvision's own transform."""
    gen = torch.Generator().manual_seed(3)
    ours = _InputTransform((96,), 160, 96, 160).eval()
    theirs = GeneralizedRCNNTransform(96, 160, [0.0] * 3, [1.0] * 3).eval()

    def result():
        return [{"boxes": _boxes(gen, 30, 96, 128), "masks": torch.rand((30, 1, 28, 28), generator=gen),
                 "scores": torch.rand(30, generator=gen), "labels": torch.ones(30, dtype=torch.int64)}]

    for threshold in (None, MASK_THRESHOLD):
        ours.paste_threshold = threshold
        pred = result()
        copy = [{k: v.clone() for k, v in pred[0].items()}]
        got = ours.postprocess(pred, [(96, 128)], [(375, 500)])[0]
        want = theirs.postprocess(copy, [(96, 128)], [(375, 500)])[0]
        assert torch.equal(got["boxes"], want["boxes"])
        assert torch.equal(got["masks"], want["masks"] if threshold is None else want["masks"] >= threshold)
