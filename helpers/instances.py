"""The predictions of one image, as both engines return them and every consumer takes them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Instances:
    """Predicted instances of one image, plain numpy, engine-independent.

    boxes:        float32 (N, 4), XYXY in pixels of the original image
    masks:        bool    (N, H, W), full-image binary masks
    scores:       float32 (N,)
    category_ids: int64   (N,), the data set's category ids (1..20 for Tiny VOC)
    image_size:   (H, W) of the original image
    """

    boxes: np.ndarray
    masks: np.ndarray
    scores: np.ndarray
    category_ids: np.ndarray
    image_size: tuple[int, int]

    def __post_init__(self) -> None:
        h, w = (int(v) for v in self.image_size)
        self.image_size = (h, w)
        n = len(self.scores)
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(n, 4)
        self.masks = np.asarray(self.masks, dtype=bool).reshape(n, h, w)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(n)
        self.category_ids = np.asarray(self.category_ids, dtype=np.int64).reshape(n)

    def __len__(self) -> int:
        return len(self.scores)

    def select(self, keep) -> "Instances":
        """A subset by boolean mask or index array, order kept."""
        return Instances(self.boxes[keep], self.masks[keep], self.scores[keep], self.category_ids[keep], self.image_size)

    def above(self, score_thresh: float) -> "Instances":
        """Only the instances scoring at least ``score_thresh``."""
        return self.select(self.scores >= score_thresh)

    @classmethod
    def empty(cls, image_size: tuple[int, int]) -> "Instances":
        h, w = image_size
        return cls(np.zeros((0, 4)), np.zeros((0, h, w), bool), np.zeros(0), np.zeros(0, np.int64), (h, w))
