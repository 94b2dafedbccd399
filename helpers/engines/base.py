"""What both engines share: the predictor interface, val evaluation, per-iteration seeding."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from ..instances import Instances

log = logging.getLogger("helpers.engines")
_warned: set[str] = set()

# An engine's batch function: RGB uint8 HxWx3 images -> one Instances per image.
PredictFn = Callable[[Sequence[np.ndarray]], list[Instances]]


class Predictor:
    """Given images, per-image :class:`Instances` (boxes, masks, scores, category ids).

    Images are read once, as RGB, with :func:`helpers.data.read_image`; the engine converts them
    to the channel order its model was trained with.
    """

    def __init__(self, predict_fn: PredictFn, categories: list[dict], score_thresh: float, device: str):
        self._predict_fn = predict_fn
        self.categories = sorted(categories, key=lambda c: c["id"])
        self.class_names = [c["name"] for c in self.categories]
        self.score_thresh = score_thresh
        self.device = device
        # True: the model gets the channel order opposite to its training order (to measure that mistake)
        self.swap_channels = False

    def __call__(self, images: Sequence[np.ndarray]) -> list[Instances]:
        """Predict a batch of RGB uint8 images."""
        if self.swap_channels:
            images = [np.ascontiguousarray(image[:, :, ::-1]) for image in images]
        return self._predict_fn(list(images))

    def predict_paths(self, paths: Iterable[str | Path], batch_size: int = 1, progress: bool = True,
                      desc: str = "predict") -> Iterator[tuple[Path, Instances]]:
        """Yield (path, instances) for image files, reading each image once."""
        from ..data import read_image
        from ..progress import Progress

        paths = [Path(p) for p in paths]
        with Progress(len(paths), desc, unit="img", enabled=progress) as bar:
            for start in range(0, len(paths), batch_size):
                chunk = paths[start:start + batch_size]
                for path, inst in zip(chunk, self([read_image(p) for p in chunk])):
                    yield path, inst
                bar.update(len(chunk))


def predict_split(predictor: Predictor, split, progress: bool = False) -> list[dict]:
    """COCO results (the submission format) for every image of a loaded split."""
    from ..submission import instances_to_results

    by_path = {split.image_path(img): img["id"] for img in split.images}
    results: list[dict] = []
    for path, inst in predictor.predict_paths(list(by_path), progress=progress, desc=f"predict {split.name}"):
        results.extend(instances_to_results(by_path[path], inst))
    return results


def evaluate_on_split(predictor: Predictor, split_json: Path, progress: bool = False) -> dict[str, float]:
    """Val metrics as flat ``segm/AP``, ``bbox/AP50``... keys (0-1, as pycocotools reports them)."""
    from ..data import load_split
    from ..evaluate import METRIC_NAMES, evaluate

    split = load_split(split_json, check_images=False)
    results = predict_split(predictor, split, progress=progress)
    flat: dict[str, float] = {}
    for iou_type in ("segm", "bbox"):
        metrics = evaluate(split.coco, results, iou_type=iou_type)
        flat.update({f"{iou_type}/{k}": float(metrics[k]) for k in METRIC_NAMES})
    return flat


def eval_line(iteration: int, row: dict) -> str:
    """One progress line for a val evaluation: the leaderboard's metric first, AP@[.5:.95] beside it."""
    parts = [f"iteration {iteration + 1}: val mask mAP@0.5 (segm AP50) {row['segm/AP50']!r}"]
    parts += [f"{label} {row[key]!r}" for key, label in (("segm/AP", "segm AP@[.5:.95]"), ("bbox/AP50", "bbox AP50"))
              if key in row]
    return ", ".join(parts)


# Tags that keep the per-iteration random streams apart: which batch, torch's RNG (RPN/ROI sampling,
# multi-scale choice), per-sample augmentation (flip).
BATCH_STREAM, TORCH_STREAM, AUGMENT_STREAM = 1, 2, 3


def iteration_seed(seed: int, iteration: int, *extra: int) -> int:
    """A 31-bit seed that depends only on (seed, iteration, extra): what makes resume bit-exact."""
    digest = hashlib.sha256(repr((seed, iteration) + extra).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def batch_indices(num_items: int, batch_size: int, iteration: int, seed: int) -> list[int]:
    """Dataset indices of the batch at ``iteration``: a seeded permutation per epoch, read in order.

    Depends only on its arguments, never on when a run was (re)started.
    """
    out = []
    for k in range(iteration * batch_size, (iteration + 1) * batch_size):
        epoch, pos = divmod(k, num_items)
        perm = np.random.default_rng(iteration_seed(seed, epoch, BATCH_STREAM)).permutation(num_items)
        out.append(int(perm[pos]))
    return out


def effective_seed(cfg) -> int:
    """SEED, where detectron2's -1 ("random") becomes a fixed 0 so runs are reproducible."""
    seed = int(cfg["SEED"])
    return seed if seed >= 0 else 0


def iteration_batches(num_items: int, batch_size: int, seed: int, start: int, stop: int | None = None,
                      rank: int = 0, world: int = 1):
    """A torch batch sampler: for iterations ``start`` .. ``stop - 1`` (forever when ``stop`` is None),
    this process's share of :func:`batch_indices`, as ``(iteration, index)`` keys."""
    import itertools

    import torch

    from ..errors import ConfigError

    if batch_size % world:
        raise ConfigError(f"SOLVER.IMS_PER_BATCH {batch_size} (the total batch) must divide among {world} processes")

    class IterationBatches(torch.utils.data.Sampler):
        def __iter__(self):
            its = itertools.count(start) if stop is None else range(start, stop)
            for it in its:
                yield [(it, i) for i in batch_indices(num_items, batch_size, it, seed)[rank::world]]

        def __len__(self) -> int:
            if stop is None:
                raise TypeError("an endless sampler has no length")
            return max(0, stop - start)

    return IterationBatches()


def warn_once(message: str) -> None:
    """Log a warning the first time ``message`` comes up in this process."""
    if message not in _warned:
        _warned.add(message)
        log.warning(message)


def trainable_norm_for_random_init(cfg):
    """Random init (MODEL.WEIGHTS "") with a FrozenBN backbone diverges: use BN and train every stage.

    Changes ``cfg`` in place (the engines call it on their copy) and says so once.
    """
    if cfg["MODEL.WEIGHTS"] == "" and cfg["MODEL.RESNETS.NORM"] == "FrozenBN":
        cfg["MODEL.RESNETS.NORM"] = "BN"
        cfg["MODEL.BACKBONE.FREEZE_AT"] = 0
        warn_once("MODEL.WEIGHTS is '' (random init): using MODEL.RESNETS.NORM BN and MODEL.BACKBONE.FREEZE_AT 0, "
                  "since a FrozenBN backbone with random weights diverges")
    return cfg
