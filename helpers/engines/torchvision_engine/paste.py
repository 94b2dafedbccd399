"""Pasting the mask head's M x M probabilities into the original image, for the torchvision engine.

torchvision's ``paste_masks_in_image`` gives each detection its own zero-filled float image, pastes the
resized mask into it and stacks the images: per image with 100 detections that is 100 full-size float
fills plus a concatenation of them, the largest single cost of prediction on a CPU (bench/PROFILE.md:
1.39 s of postprocessing per image against detectron2's 0.80 s). This module writes the same result
with one allocation: every detection's resized mask goes straight into its slice of one preallocated
output, and with a ``threshold`` that output is boolean (4x smaller, and what the predictor keeps).

The geometry is torchvision's, so the result is identical (tests/test_paste.py compares them): the
M x M mask gets a one-pixel zero border, its box is widened by (M + 2) / M about its centre and
truncated to integer pixels, the padded mask is resized bilinearly (align_corners False) to that box's
integer size (x1 - x0 + 1 by y1 - y0 + 1), and the part inside the image is written.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

PADDING = 1  # pixels of zero border around each M x M mask before it is resized


def expanded_boxes(boxes: torch.Tensor, mask_size: int) -> list[list[int]]:
    """Each box widened about its centre by (M + 2) / M, truncated to integer pixels."""
    scale = (mask_size + 2 * PADDING) / mask_size
    half_w = (boxes[:, 2] - boxes[:, 0]) * 0.5 * scale
    half_h = (boxes[:, 3] - boxes[:, 1]) * 0.5 * scale
    centre_x = (boxes[:, 2] + boxes[:, 0]) * 0.5
    centre_y = (boxes[:, 3] + boxes[:, 1]) * 0.5
    widened = torch.stack([centre_x - half_w, centre_y - half_h, centre_x + half_w, centre_y + half_h], dim=1)
    return widened.to(torch.int64).tolist()


def paste_masks(probs: torch.Tensor, boxes: torch.Tensor, image_size: tuple[int, int],
                threshold: float | None = None) -> torch.Tensor:
    """N x 1 x M x M mask probabilities and their N x 4 boxes (x0, y0, x1, y1 in the image) -> N x 1 x H x W.

    threshold None: the probabilities (zero outside each box); a number: boolean masks, probability >= it.
    """
    height, width = image_size
    dtype = torch.bool if threshold is not None else probs.dtype
    out = torch.zeros((probs.shape[0], 1, height, width), dtype=dtype, device=probs.device)
    if probs.shape[0] == 0:
        return out
    padded = F.pad(probs, (PADDING,) * 4)
    for i, (x0, y0, x1, y1) in enumerate(expanded_boxes(boxes, probs.shape[-1])):
        left, right = max(x0, 0), min(x1 + 1, width)
        top, bottom = max(y0, 0), min(y1 + 1, height)
        if left >= right or top >= bottom:  # the box lies outside the image
            continue
        size = (max(y1 - y0 + 1, 1), max(x1 - x0 + 1, 1))
        resized = F.interpolate(padded[i : i + 1], size=size, mode="bilinear", align_corners=False)[0, 0]
        crop = resized[top - y0 : bottom - y0, left - x0 : right - x0]
        out[i, 0, top:bottom, left:right] = crop if threshold is None else crop >= threshold
    return out
