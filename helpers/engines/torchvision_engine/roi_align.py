"""Multi-level RoIAlign that uses every CPU thread: torchvision's own kernels, the RoIs split across threads.

Why this is written here: torchvision's CPU ``roi_align`` and its backward loop over the RoIs on a single
thread. On the homework config that made box and mask RoIAlign 1-1.5 s of a 2-core training iteration,
with one core idle (bench/PROFILE.md). This module changes only who runs the kernels. Forward: the RoIs
of a level are cut into one contiguous chunk per thread, each chunk goes through
``torchvision::roi_align``, and the rows are concatenated. Backward: each image's RoIs go through
``torchvision::_roi_align_backward`` on their own thread, into that image's slice of the gradient. Both
kernels release the GIL, so Python threads run them in parallel.

Each RoI is computed by the same kernel, in the same order, as one call would compute it. So the output
is bit-identical, and the features' gradient is bit-identical as long as the batch holds as many images as
there are threads (tests/test_roi_align.py). With fewer images, the partial gradients of the RoI chunks
are summed, which equals the gradient to float rounding.

The level mapping, the scales and the box format are torchvision's: ``ThreadedMultiScaleRoIAlign`` is a
``MultiScaleRoIAlign`` and calls torchvision's own helpers for them. Under CPU autocast (SOLVER.AMP.ENABLED:
bfloat16 features) it does what torchvision's autocast rule for ``roi_align`` does: the kernels run on the
features cast to float32, and the pooled rows are cast back to the features' dtype. It falls back to
torchvision's forward where threads cannot help: features off the CPU, in another dtype (float64, or
half precision outside autocast), one thread, a torchvision without those helpers, or TorchScript.
"""

from __future__ import annotations

import concurrent.futures
import os

import torch
from torchvision.ops import MultiScaleRoIAlign

try:  # torchvision's own level mapping and box conversion (present in torchvision 0.13 to at least 0.29)
    from torchvision.ops.poolers import _convert_to_roi_format, _filter_input, _setup_scales
except ImportError:  # pragma: no cover - a torchvision that moved them: plain MultiScaleRoIAlign
    _setup_scales = None

_executor: concurrent.futures.ThreadPoolExecutor | None = None
_executor_threads = 0


def _forget_executor() -> None:
    """A forked child has none of its parent's threads: it starts its own pool when it needs one."""
    global _executor, _executor_threads
    _executor, _executor_threads = None, 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_executor)


def _threads() -> int:
    return torch.get_num_threads()


def _map(fn, items: list) -> list:
    """``fn`` over ``items`` on up to ``_threads()`` worker threads, in order."""
    global _executor, _executor_threads
    if len(items) == 1:
        return [fn(items[0])]
    if _executor is None or _executor_threads < _threads():
        _executor_threads = _threads()
        _executor = concurrent.futures.ThreadPoolExecutor(max_workers=_executor_threads, thread_name_prefix="roi_align")
    return list(_executor.map(fn, items))


def _cpu_autocast() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # torch before 2.4
        return torch.is_autocast_cpu_enabled()


class _ThreadedRoIAlign(torch.autograd.Function):
    """``torchvision.ops.roi_align`` (rois in (batch index, x1, y1, x2, y2) format), run on several threads."""

    @staticmethod
    def forward(ctx, features, rois, output_size, spatial_scale, sampling_ratio, aligned):
        features = features.contiguous()  # what each kernel call would otherwise do itself, once per chunk
        height, width = output_size

        def pool(chunk):
            return torch.ops.torchvision.roi_align(features, chunk, spatial_scale, height, width, sampling_ratio, aligned)

        chunks = [c for c in rois.tensor_split(min(_threads(), len(rois))) if len(c)]
        ctx.save_for_backward(rois)
        ctx.args = (features.shape, output_size, spatial_scale, sampling_ratio, aligned)
        return torch.cat(_map(pool, chunks))

    @staticmethod
    def backward(ctx, grad):
        (rois,) = ctx.saved_tensors
        (batch, channels, fh, fw), (height, width), scale, sampling_ratio, aligned = ctx.args
        grad = grad.contiguous()

        def gradient(rows, kernel_rois, images):
            """The features' gradient (``images`` of them) from the RoIs ``rows``, given to the kernel as ``kernel_rois``."""
            return torch.ops.torchvision._roi_align_backward(grad[rows], kernel_rois, scale, height, width, images,
                                                             channels, fh, fw, sampling_ratio, aligned)

        if batch >= _threads():  # one image per task: each fills its own slice, nothing to sum
            image_of_roi = rois[:, 0].long()

            def one_image(b):
                rows = torch.nonzero(image_of_roi == b).squeeze(1)
                own = rois[rows].clone()
                own[:, 0] = 0  # this image is batch index 0 of a one-image gradient
                return gradient(rows, own, 1)

            return torch.cat(_map(one_image, list(range(batch)))), None, None, None, None, None
        rows = [r for r in torch.arange(len(rois), device=rois.device).tensor_split(_threads()) if len(r)]
        parts = _map(lambda r: gradient(r, rois[r], batch), rows)
        total = parts[0]
        for part in parts[1:]:
            total += part
        return total, None, None, None, None, None


def _threaded(features: list[torch.Tensor], autocast: bool) -> bool:
    dtypes = (torch.float32, torch.bfloat16, torch.float16) if autocast else (torch.float32,)
    return (_threads() > 1 and not torch.jit.is_scripting()
            and all(f.device.type == "cpu" and f.dtype in dtypes for f in features))


class ThreadedMultiScaleRoIAlign(MultiScaleRoIAlign):
    """torchvision's ``MultiScaleRoIAlign``, same arguments and results, with RoIAlign on every CPU thread."""

    def forward(self, x: dict[str, torch.Tensor], boxes: list[torch.Tensor], image_shapes: list[tuple[int, int]]):
        if _setup_scales is None:
            return super().forward(x, boxes, image_shapes)
        features = _filter_input(x, self.featmap_names)
        autocast = _cpu_autocast()
        if not _threaded(features, autocast) or any(b.dtype != torch.float32 for b in boxes):
            return super().forward(x, boxes, image_shapes)
        if self.scales is None or self.map_levels is None:
            self.scales, self.map_levels = _setup_scales(features, image_shapes, self.canonical_scale,
                                                         self.canonical_level)
        rois = _convert_to_roi_format(boxes)
        levels = self.map_levels(boxes) if len(features) > 1 else torch.zeros(len(rois), dtype=torch.int64)
        first = features[0]
        out = first.new_zeros((len(rois), first.shape[1], *self.output_size))
        for level, (feature, scale) in enumerate(zip(features, self.scales)):
            rows = torch.nonzero(levels == level).squeeze(1)
            if len(rows):  # under autocast: float32 in, the features' dtype out, as torchvision's autocast rule
                if autocast:  # one pass: cast and made contiguous, as the kernels need it
                    feature = feature.to(torch.float32, memory_format=torch.contiguous_format)
                pooled = _ThreadedRoIAlign.apply(feature, rois[rows],
                                                 tuple(self.output_size), scale, self.sampling_ratio, False)
                out[rows] = pooled.to(out.dtype)
        return out
