"""One image through a trained run's model, stage by stage: what notebook 02 draws.

:func:`inspect_run` reads the run's config, categories and checkpoint, picks the image and the
ground-truth object, and asks the run's engine (``engine.inspect``) for the plain-data record
of every stage; :mod:`helpers.plots_stages` draws it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import data, runs
from .errors import DataError


def inspect_run(run_dir: str | Path, image: int | str | Path | None = None, checkpoint: str = "best",
                split: str | Path | None = None, object_index: int | None = None,
                score_thresh: float | None = None, device: str | None = None, **options) -> dict:
    """The stage-by-stage record of one image (see :mod:`helpers.engines.inspect_record`).

    image: an image id of ``split`` (default: the run's val split), an image file (its
        annotations are used when ``split`` lists its file name), or None for the split's first
        annotated image.
    object_index: which of the image's annotated objects the anchor matching shows (in the
        split's annotation order); default the largest.
    options: ``num_channels`` (feature channels per level), ``num_rois`` (RoIAlign crops).
    """
    from .engines import get_engine
    from .experiment import run_for_inference

    run_dir = Path(run_dir)
    cfg, info, categories = run_for_inference(run_dir, score_thresh, device)
    split_data = data.load_split(split or info["val_split"], check_images=False)
    entry, path = _pick_image(split_data, image)
    anns = [a for a in split_data.annotations_of(entry["id"]) if _usable(a)] if entry else []
    gt = None
    index = 0
    if anns:
        gt = {"boxes": [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)],
              "category_ids": [a["category_id"] for a in anns]}
        if object_index is None:
            index = int(np.argmax([a["bbox"][2] * a["bbox"][3] for a in anns]))
        elif not 0 <= object_index < len(anns):
            raise DataError(f"{split_data.json_path}: image {entry['id']} has {len(anns)} annotated objects; "
                            f"object_index {object_index} does not exist")
        else:
            index = object_index
    engine = get_engine(info.get("engine", "torchvision"))
    checkpoint_path = runs.resolve_checkpoint(run_dir, checkpoint)
    record = engine.inspect(cfg, checkpoint_path, categories, data.read_image(path), gt, gt_index=index, **options)
    record.update(image_id=None if entry is None else int(entry["id"]), file_name=str(path),
                  split=str(split_data.json_path))
    return record


def _usable(ann: dict) -> bool:
    """An annotation the RPN trains on: not crowd, a box of positive width and height."""
    return not ann.get("iscrowd", 0) and ann["bbox"][2] > 0 and ann["bbox"][3] > 0


def _pick_image(split: data.Split, image) -> tuple[dict | None, Path]:
    """(the split's entry or None, the file) for an image id, a file or None."""
    if image is None:
        annotated = [img for img in split.images if any(_usable(a) for a in split.annotations_of(img["id"]))]
        if not annotated:
            raise DataError(f"{split.json_path}: no image with an annotated object to inspect")
        entry = annotated[0]
        return entry, split.image_path(entry)
    if isinstance(image, (int, np.integer)) and not isinstance(image, bool):
        entry = split.image_by_id(int(image))
        return entry, split.image_path(entry)
    path = Path(image)
    if not path.is_file():
        raise DataError(f"{path}: no such image file (pass an image id of {split.json_path} or an image file)")
    by_name = {img["file_name"]: img for img in split.images}
    return by_name.get(path.name), path
