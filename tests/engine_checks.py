"""Checks both engines' tests make of what a predictor returns."""

import numpy as np


def assert_instances_fit_images(images: list, outputs: list, valid_ids: set) -> None:
    """One Instances per image: full-size bool masks, XYXY float32 boxes, sorted scores, the data set's ids."""
    assert len(outputs) == len(images)
    for image, inst in zip(images, outputs):
        h, w = image.shape[:2]
        assert inst.image_size == (h, w) and len(inst) > 0
        assert inst.masks.shape == (len(inst), h, w) and inst.masks.dtype == bool
        assert inst.boxes.shape == (len(inst), 4) and inst.boxes.dtype == np.float32
        assert inst.scores.dtype == np.float32 and np.all(np.diff(inst.scores) <= 0)
        assert set(inst.category_ids.tolist()) <= valid_ids
