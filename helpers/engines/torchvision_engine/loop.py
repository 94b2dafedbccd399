"""The training loop: optimizer (detectron2's parameter groups), gradient clipping, and the iteration loop
with evaluation, metrics, TensorBoard events and checkpoints, resumable at any iteration."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from ... import data, runs
from ...config import Config
from ...errors import EngineError
from ...schedule import learning_rate
from .. import base
from .device import _amp_dtype, _autocast, _Dist, _to_device
from .frozen_norm import fold_frozen_norms
from .model import NORM_TYPES, build_model
from .predict import _predictor
from .train_data import _collate, _TrainImages

log = logging.getLogger(__name__)

def _param_groups(cfg: Config, model: nn.Module) -> list[dict]:
    """detectron2's groups: norm weights get WEIGHT_DECAY_NORM; biases (norm biases too) get
    WEIGHT_DECAY_BIAS when set and BIAS_LR_FACTOR; every other weight WEIGHT_DECAY."""
    decay, decay_norm, decay_bias = cfg["SOLVER.WEIGHT_DECAY"], cfg["SOLVER.WEIGHT_DECAY_NORM"], cfg["SOLVER.WEIGHT_DECAY_BIAS"]
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            lr_factor, wd = 1.0, decay_norm if isinstance(module, NORM_TYPES) else decay
            if name == "bias":
                lr_factor = cfg["SOLVER.BIAS_LR_FACTOR"]
                wd = wd if decay_bias is None else decay_bias
            groups.setdefault((lr_factor, wd), []).append(param)
    return [{"params": params, "lr_factor": f, "weight_decay": wd} for (f, wd), params in groups.items()]


def _optimizer(cfg: Config, model: nn.Module) -> torch.optim.SGD:
    return torch.optim.SGD(
        _param_groups(cfg, model),
        lr=cfg["SOLVER.BASE_LR"],
        momentum=cfg["SOLVER.MOMENTUM"],
        nesterov=cfg["SOLVER.NESTEROV"],
        weight_decay=cfg["SOLVER.WEIGHT_DECAY"],
    )


def _clip_gradients(cfg: Config, optimizer: torch.optim.Optimizer) -> None:
    """SOLVER.CLIP_GRADIENTS as detectron2 applies it: "value" clamps every gradient element,
    "norm" rescales each parameter's gradient to at most CLIP_VALUE on its own."""
    params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    limit = cfg["SOLVER.CLIP_GRADIENTS.CLIP_VALUE"]
    if cfg["SOLVER.CLIP_GRADIENTS.CLIP_TYPE"] == "value":
        nn.utils.clip_grad_value_(params, limit)
    else:
        for p in params:
            nn.utils.clip_grad_norm_(p, limit, cfg["SOLVER.CLIP_GRADIENTS.NORM_TYPE"])


# ---------------------------------------------------------------------------------- the loop


class _Trainer:
    """One training run: model, optimizer and data built once, then the iteration loop."""

    def __init__(self, cfg: Config, splits: data.SplitPaths, run_dir: Path, ctx: _Dist):
        self.cfg, self.splits, self.run_dir, self.ctx = cfg, splits, run_dir, ctx
        self.seed = base.effective_seed(cfg)
        self.split = data.load_split(splits.train, check_images=False)
        self.max_iter = cfg["SOLVER.MAX_ITER"]
        self.amp = _amp_dtype(cfg, ctx.device)

    def run(self, resume: bool, progress: bool) -> dict:
        """Train from scratch or from the last checkpoint up to MAX_ITER; the final val metrics."""
        checkpoint = runs.resume_checkpoint(self.run_dir) if resume else None  # verified: falls back past damage
        start = self.build(checkpoint)
        if start < self.max_iter:
            self._loop(start, progress)
        if self.ctx.is_main and start < self.max_iter:
            runs.save_checkpoint(self.run_dir, runs.FINAL, self._state(self.max_iter - 1))
        return self._final_metrics()

    def build(self, checkpoint: Path | None = None) -> int:
        """Model (seeded initial weights, or the checkpoint's), optimizer, scaler and the net the loop
        runs (DDP under torchrun); the first iteration to run."""
        torch.manual_seed(self.seed)
        self.model = build_model(self.cfg, len(self.split.categories), load_weights=checkpoint is None)
        if self.cfg["MODEL.RESNETS.NORM"] == "SyncBN" and self.ctx.world > 1:
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.model = _to_device(fold_frozen_norms(self.model), self.ctx.device)  # same keys, fewer passes
        self.optimizer = _optimizer(self.cfg, self.model)
        self.scaler = torch.amp.GradScaler(self.ctx.device.type, enabled=self.amp == torch.float16)
        start = self._restore(checkpoint) if checkpoint else 0
        self.net = self.model
        if self.ctx.world > 1:
            ids = [self.ctx.device.index] if self.ctx.device.type == "cuda" else None
            self.net = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        return start

    def _restore(self, checkpoint: Path) -> int:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state.get("scaler", {}))
        log.info("resuming from %s (iteration %d)", checkpoint, state["iteration"])
        return state["iteration"] + 1

    def _state(self, iteration: int) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(), "iteration": iteration}

    def _loader(self, start: int) -> torch.utils.data.DataLoader:
        cfg = self.cfg
        dataset = _TrainImages(self.split, cfg["DATALOADER.FILTER_EMPTY_ANNOTATIONS"], cfg["INPUT.RANDOM_FLIP"] == "horizontal", self.seed)
        sampler = base.iteration_batches(len(dataset), cfg["SOLVER.IMS_PER_BATCH"], self.seed, start, self.max_iter,
                                         self.ctx.rank, self.ctx.world)
        workers = cfg["DATALOADER.NUM_WORKERS"]
        return torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=workers, collate_fn=_collate,
                                           pin_memory=self.ctx.device.type == "cuda", persistent_workers=False,
                                           prefetch_factor=2 if workers else None)

    def _loop(self, start: int, progress: bool) -> None:
        from ...progress import Progress

        main = self.ctx.is_main
        metrics = runs.MetricsLog(self.run_dir, start) if main else None
        writer = _summary_writer(self.run_dir, start) if main else None
        bar = Progress(self.max_iter, "train", initial=start, enabled=progress and main)
        self.model.train()
        try:
            batches = iter(self._loader(start))
            for it in range(start, self.max_iter):
                tic = time.perf_counter()
                batch_it, images, targets = next(batches)
                assert batch_it == it, f"data loader is at iteration {batch_it}, the loop at {it}"
                data_time = time.perf_counter() - tic
                row = {"iteration": it, **self._step(it, images, targets)}
                row.update(time=time.perf_counter() - tic, data_time=data_time)
                self._after_step(it, row, metrics, writer)
                bar.update(**{k: v for k, v in row.items() if k.startswith("loss") or k in ("total_loss", "lr")})
                if any(k.startswith("segm/") for k in row):
                    bar.note(base.eval_line(it, row))
        finally:
            bar.close()
            if main:
                metrics.close()
                writer.close()

    def _step(self, it: int, images: list[torch.Tensor], targets: list[dict]) -> dict[str, float]:
        """One SGD step; the losses (averaged over processes) and the learning rate used."""
        device = self.ctx.device
        lr = learning_rate(self.cfg, it)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group["lr_factor"]
        torch.manual_seed(base.iteration_seed(self.seed, it, base.TORCH_STREAM, self.ctx.rank))
        images = [img.to(device, non_blocking=True).float().div_(255) for img in images]
        targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]
        with _autocast(device, self.amp):
            losses = self.net(images, targets)
        total = sum(losses.values())
        values = self._reduce(losses)
        if not all(math.isfinite(v) for v in values.values()):
            self._diverged(it, values)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        if self.cfg["SOLVER.CLIP_GRADIENTS.ENABLED"]:
            self.scaler.unscale_(self.optimizer)
            _clip_gradients(self.cfg, self.optimizer)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return {**values, "total_loss": sum(values.values()), "lr": lr}

    def _reduce(self, losses: dict[str, torch.Tensor]) -> dict[str, float]:
        """Loss values as floats, averaged over the processes of a DDP run."""
        vector = torch.stack([v.detach().float() for v in losses.values()])
        if self.ctx.world > 1:
            dist.all_reduce(vector)
            vector /= self.ctx.world
        return dict(zip(losses, vector.tolist()))

    def _diverged(self, it: int, values: dict[str, float]) -> None:
        bad = ", ".join(f"{k} = {v}" for k, v in values.items() if not math.isfinite(v))
        last = runs.last_checkpoint(self.run_dir)
        where = f"the last good checkpoint is {last}" if last else "no checkpoint was saved yet"
        raise EngineError(f"training diverged: loss became nan or inf at iteration {it} ({bad}); {where}. "
                          f"Try a lower SOLVER.BASE_LR, a longer SOLVER.WARMUP_ITERS or SOLVER.CLIP_GRADIENTS.ENABLED True")

    def _after_step(self, it: int, row: dict, metrics: runs.MetricsLog | None, writer) -> None:
        """Evaluate when due, then log the row, then checkpoint: a kill between any two leaves a
        run that resumes at the right iteration with each metrics row written once."""
        period, done = self.cfg["TEST.EVAL_PERIOD"], it + 1
        has_val = self.cfg["DATASETS.VAL_FRACTION"] > 0  # 0: trained on every image, nothing to evaluate on
        if has_val and ((period > 0 and done % period == 0) or done == self.max_iter):
            if self.ctx.is_main:
                row.update(self._evaluate())
            if self.ctx.world > 1:
                dist.barrier()
        if not self.ctx.is_main:
            return
        metrics.write(row)
        for key, value in row.items():
            if key != "iteration":
                writer.add_scalar(key, value, it)
        best = runs.best_metric(self.cfg)  # TEST.BEST_METRIC, segm/AP50 by default
        if best in row and runs.is_new_best(self.run_dir, row[best], best):
            runs.save_checkpoint(self.run_dir, runs.BEST, self._state(it), tag_last=False)
            runs.record_best(self.run_dir, it, row[best], best)
        if done % self.cfg["SOLVER.CHECKPOINT_PERIOD"] == 0:
            runs.save_checkpoint(self.run_dir, runs.checkpoint_name(it), self._state(it))

    def _evaluate(self) -> dict[str, float]:
        """Val metrics of the current weights (eval mode, test sizes), then back to training."""
        self.model.eval()
        try:
            predictor = _predictor(self.model, self.cfg, self.split.categories, self.ctx.device)
            return base.evaluate_on_split(predictor, self.splits.val)
        finally:
            self.model.train()

    def _final_metrics(self) -> dict:
        """The val metrics of the last evaluated iteration, as metrics.json recorded them."""
        if not self.ctx.is_main:
            return {}
        rows = runs.eval_rows(runs.read_metrics(self.run_dir))
        return {k: v for k, v in rows[-1].items() if k.startswith(("segm/", "bbox/"))} if rows else {}


def _summary_writer(run_dir: Path, start: int):
    """TensorBoard events in the run folder; events from ``start`` on are dropped from older files."""
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(run_dir), purge_step=start)


