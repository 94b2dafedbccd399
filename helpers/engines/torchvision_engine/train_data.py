"""Training samples: an image, its targets and its flip, keyed by (iteration, index) alone."""

from __future__ import annotations

import numpy as np
import torch

from ... import data
from ...errors import EngineError
from .. import base

class _TrainImages(torch.utils.data.Dataset):
    """Training samples keyed by (iteration, index): image, targets, and a horizontal flip that
    depends only on (seed, iteration, index), so any worker and any restart sees the same sample."""

    def __init__(self, split: data.Split, filter_empty: bool, flip: bool, seed: int):
        label = {cat["id"]: i + 1 for i, cat in enumerate(split.categories)}
        self.records = []  # plain data, cheap to send to worker processes
        # in image id order, as detectron2's COCO loader lists them: the batch of (SEED, iteration) then
        # holds the same images in both engines, whatever order the JSON file lists them in
        for img in sorted(split.images, key=lambda img: img["id"]):
            anns = [(a, label[a["category_id"]]) for a in split.annotations_of(img["id"]) if _usable(a)]
            if anns or not filter_empty:
                self.records.append((str(split.image_path(img)), anns))
        if not self.records:
            raise EngineError(f"{split.json_path}: no image with a usable annotation to train on")
        self.flip, self.seed = flip, seed

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: tuple[int, int]) -> tuple[int, torch.Tensor, dict[str, torch.Tensor]]:
        iteration, index = key
        path, anns = self.records[index]
        image = data.read_image(path)
        h, w = image.shape[:2]
        masks = np.stack([data.annotation_mask(a, h, w) for a, _ in anns]) if anns else np.zeros((0, h, w), bool)
        boxes = np.array([[x, y, x + bw, y + bh] for (x, y, bw, bh) in (a["bbox"] for a, _ in anns)], np.float32).reshape(-1, 4)
        if self.flip and np.random.default_rng(base.iteration_seed(self.seed, iteration, base.AUGMENT_STREAM, index)).random() < 0.5:
            image, masks = image[:, ::-1], masks[:, :, ::-1]
            boxes = np.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], axis=1)
        target = {
            "boxes": torch.from_numpy(boxes),
            "labels": torch.tensor([lab for _, lab in anns], dtype=torch.int64),
            "masks": torch.from_numpy(np.ascontiguousarray(masks, dtype=np.uint8)),
        }
        return iteration, torch.from_numpy(np.array(image)).permute(2, 0, 1), target


def _usable(ann: dict) -> bool:
    """Annotations a training target can hold: not crowd, a box of positive width and height."""
    return not ann.get("iscrowd", 0) and ann["bbox"][2] > 0 and ann["bbox"][3] > 0


def _collate(samples: list) -> tuple[int, list[torch.Tensor], list[dict]]:
    return samples[0][0], [s[1] for s in samples], [s[2] for s in samples]


