"""Test-time augmentation for the torchvision engine, merged as detectron2's ``GeneralizedRCNNWithTTA``
merges (``TEST.AUG.*``), so that both engines mean the same thing by ``TEST.AUG.ENABLED``:

1. every augmentation (each of ``TEST.AUG.MIN_SIZES`` under ``TEST.AUG.MAX_SIZE``, each also flipped
   horizontally when ``TEST.AUG.FLIP``) detects boxes with the box head alone; the boxes are mapped back
   to the original image;
2. the union is merged per class: clipped to the image, non-maximum suppression at
   ``MODEL.ROI_HEADS.NMS_THRESH_TEST``, the ``TEST.DETECTIONS_PER_IMAGE`` best kept;
3. every augmentation runs the mask head on the merged boxes (mapped into its own coordinates); the
   28x28 mask probabilities are un-flipped and averaged, then pasted into the image.

torchvision has no TTA of its own, which is why this module exists. The backbone runs twice per
augmentation (once for boxes, once for masks), as in detectron2, so no feature maps are held across
augmentations: memory stays that of one image at the largest size.
"""

from __future__ import annotations

import torch
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.roi_heads import maskrcnn_inference
from torchvision.ops import batched_nms, clip_boxes_to_image

from .paste import paste_masks

MERGE_SCORE_FLOOR = 1e-8  # detectron2's merge keeps every box scoring above this (each pass already applied SCORE_THRESH_TEST)


def augmentations(min_sizes: list[int], flip: bool) -> list[tuple[int, bool]]:
    """(shortest edge, flipped) for every augmented copy, in detectron2's order."""
    return [(size, flipped) for size in min_sizes for flipped in ((False, True) if flip else (False,))]


def _flip_boxes(boxes: torch.Tensor, width: float) -> torch.Tensor:
    x1, y1, x2, y2 = boxes.unbind(1)
    return torch.stack([width - x2, y1, width - x1, y2], dim=1)


class _Augmented:
    """One augmented copy of an image: its size, flip and the scale between it and the original."""

    def __init__(self, model: MaskRCNN, image: torch.Tensor, size: int, flipped: bool, max_size: int):
        self.model, self.flipped = model, flipped
        self.image = image.flip(-1) if flipped else image
        self.height, self.width = image.shape[-2:]
        transform = model.transform
        saved = transform.min_size, transform.max_size
        transform.min_size, transform.max_size = (size,), max_size
        try:
            self.batch, _ = transform([self.image])
        finally:
            transform.min_size, transform.max_size = saved
        h, w = self.batch.image_sizes[0]
        self.scale = torch.tensor([w / self.width, h / self.height] * 2, device=image.device)

    def features(self) -> dict[str, torch.Tensor]:
        return self.model.backbone(self.batch.tensors)

    def to_original(self, boxes: torch.Tensor) -> torch.Tensor:
        boxes = boxes / self.scale
        return _flip_boxes(boxes, self.width) if self.flipped else boxes

    def from_original(self, boxes: torch.Tensor) -> torch.Tensor:
        boxes = _flip_boxes(boxes, self.width) if self.flipped else boxes
        return boxes * self.scale

    def detect(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Boxes (in original coordinates), scores and labels of the box head alone."""
        heads = self.model.roi_heads
        features = self.features()
        proposals, _ = self.model.rpn(self.batch, features)
        pooled = heads.box_head(heads.box_roi_pool(features, proposals, self.batch.image_sizes))
        logits, deltas = heads.box_predictor(pooled)
        boxes, scores, labels = heads.postprocess_detections(logits, deltas, proposals, self.batch.image_sizes)
        return self.to_original(boxes[0].float()), scores[0].float(), labels[0]

    def mask_probabilities(self, boxes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """N x 1 x M x M mask probabilities of ``labels`` inside ``boxes`` (original coordinates), un-flipped."""
        heads = self.model.roi_heads
        features = self.features()
        pooled = heads.mask_head(heads.mask_roi_pool(features, [self.from_original(boxes)], self.batch.image_sizes))
        probs = maskrcnn_inference(heads.mask_predictor(pooled), [labels])[0].float()
        return probs.flip(-1) if self.flipped else probs


def predict_one(model: MaskRCNN, image: torch.Tensor, min_sizes: list[int], max_size: int, flip: bool,
                nms_thresh: float, detections_per_image: int) -> dict[str, torch.Tensor]:
    """The TTA prediction of one 3xHxW image (floats 0..1), in torchvision's output format
    (``boxes``, ``labels``, ``scores``, ``masks`` N x 1 x H x W: probabilities, or booleans when the
    model's transform has a ``paste_threshold``). ``model`` is in eval mode."""
    augmented = [_Augmented(model, image, size, flipped, max_size) for size, flipped in augmentations(min_sizes, flip)]
    found = [aug.detect() for aug in augmented]
    boxes = clip_boxes_to_image(torch.cat([b for b, _, _ in found]), (augmented[0].height, augmented[0].width))
    scores = torch.cat([s for _, s, _ in found])
    labels = torch.cat([lab for _, _, lab in found])
    keep = scores > MERGE_SCORE_FLOOR
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    keep = batched_nms(boxes, scores, labels, nms_thresh)[:detections_per_image]  # sorted by score
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    height, width = image.shape[-2:]
    if len(boxes):
        probs = torch.stack([aug.mask_probabilities(boxes, labels) for aug in augmented]).mean(dim=0)
    else:
        probs = torch.zeros((0, 1, 1, 1), device=image.device)
    masks = paste_masks(probs, boxes, (height, width), getattr(model.transform, "paste_threshold", None))
    return {"boxes": boxes, "labels": labels, "scores": scores, "masks": masks}
