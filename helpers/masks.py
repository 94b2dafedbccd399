"""Binary masks <-> COCO compressed RLE (pycocotools underneath), with a strict counts reader.

pycocotools' decoder returns uninitialised memory for counts that cover fewer than h*w pixels,
so every RLE that comes from a file is read here first.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pycocotools.mask as mask_utils

from .errors import SubmissionError

# Compressed RLE counts: each run length is delta-coded against the run two places earlier
# (from the fourth run on) and written 5 bits per character, least significant first, as
# chr(48 + bits), with 0x20 set on every character but a value's last and 0x10 of that last
# character the sign. Six characters (30 bits) hold any real image's run lengths and keep
# pycocotools' own parser within well-defined integer arithmetic.
_RLE_FIRST_CHAR, _RLE_ALPHABET_SIZE = 48, 64
_RLE_MORE, _RLE_SIGN, _RLE_BITS = 0x20, 0x10, 5
_RLE_MAX_CHARS = 6


def masks_to_rles(masks: np.ndarray) -> list[dict]:
    """Compressed RLEs ``{"size": [h, w], "counts": str}`` of an (N, H, W) stack of masks.

    Any non-zero pixel is foreground.
    """
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"expected an (N, H, W) stack of masks, got shape {masks.shape}")
    if len(masks) == 0:
        return []
    stacked = np.asfortranarray((masks != 0).transpose(1, 2, 0).astype(np.uint8))
    rles = mask_utils.encode(stacked)
    return [{"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")} for rle in rles]


def mask_to_rle(mask: np.ndarray) -> dict:
    """The compressed RLE ``{"size": [h, w], "counts": str}`` of one HxW mask (non-zero = foreground)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"expected an HxW mask, got shape {mask.shape}")
    return masks_to_rles(mask[None])[0]


def rle_to_mask(rle: dict) -> np.ndarray:
    """The bool HxW mask of a compressed RLE (``counts`` as ``str`` or ``bytes``).

    Malformed counts raise :class:`SubmissionError` instead of reaching pycocotools, whose decoder
    returns uninitialised memory for counts that cover fewer than h*w pixels.
    """
    height, width = (int(v) for v in rle["size"])
    counts = rle["counts"]
    text = counts.decode("ascii", errors="replace") if isinstance(counts, bytes) else counts
    problem = rle_problem(text, height, width)
    if problem:
        raise SubmissionError(f"invalid RLE: {problem}")
    return mask_utils.decode({"size": [height, width], "counts": text}).astype(bool)


def rle_run_lengths(counts: str) -> list[int]:
    """The run lengths (background first, alternating) coded in a compressed counts string.

    Raises ValueError naming what is wrong when the string is not a well-formed encoding.
    """
    runs: list[int] = []
    value = shift = used = 0
    for char in counts:
        code = ord(char) - _RLE_FIRST_CHAR
        if not 0 <= code < _RLE_ALPHABET_SIZE:
            raise ValueError(f"character {char!r} is not an RLE character ('0' to 'o')")
        value |= (code & (_RLE_MORE - 1)) << shift
        shift += _RLE_BITS
        used += 1
        if code & _RLE_MORE:
            if used == _RLE_MAX_CHARS:
                raise ValueError(f"a run length spans more than {_RLE_MAX_CHARS} characters")
            continue
        if code & _RLE_SIGN:
            value -= 1 << shift
        if len(runs) > 2:
            value += runs[-2]
        if value < 0:
            raise ValueError(f"run {len(runs)} has a negative length")
        runs.append(value)
        value = shift = used = 0
    if used:
        raise ValueError("it ends in the middle of a run length")
    return runs


def rle_problem(counts: Any, height: int, width: int) -> str | None:
    """Why ``counts`` is not a compressed RLE of an ``height`` x ``width`` mask, or None if it is."""
    if not isinstance(counts, str):
        return f"counts must be a str (compressed RLE), got {type(counts).__name__}"
    try:
        runs = rle_run_lengths(counts)
    except ValueError as e:
        return f"counts are not a compressed RLE: {e}"
    if sum(runs) != height * width:
        return (f"counts cover {sum(runs)} pixels, a {height}x{width} mask has {height * width}")
    return None


def runs_problem(runs: Any, height: int, width: int) -> str | None:
    """Why ``runs`` are not the uncompressed RLE counts (COCO's crowd format) of an ``height`` x ``width``
    mask, or None: non-negative integers, background first, covering exactly the h*w pixels."""
    if not isinstance(runs, list) or not all(isinstance(r, int) and not isinstance(r, bool) and r >= 0 for r in runs):
        return "'counts' holds a negative or non-integer run"
    if sum(runs) != height * width:
        return f"'counts' cover {sum(runs)} pixels, the {height}x{width} image has {height * width}"
    return None
