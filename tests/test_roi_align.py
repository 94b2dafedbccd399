"""The threaded multi-level RoIAlign gives torchvision's MultiScaleRoIAlign results, forward and backward."""

import pytest
import torch
from torchvision.ops import MultiScaleRoIAlign

from helpers.engines.torchvision_engine import roi_align as tv_roi

NAMES = ["0", "1", "2", "3"]
IMAGE = (512, 640)


def _features(batch: int, channels_last: bool) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    feats = {n: torch.randn(batch, 8, IMAGE[0] // 2 ** (i + 2), IMAGE[1] // 2 ** (i + 2), generator=g)
             for i, n in enumerate(NAMES)}
    if channels_last:
        feats = {n: f.contiguous(memory_format=torch.channels_last) for n, f in feats.items()}
    return feats


def _boxes(batch: int, n: int) -> list[torch.Tensor]:
    """Boxes of every size (so every level gets some), a few degenerate and a few over the border."""
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(batch):
        xy = torch.rand(n, 2, generator=g) * torch.tensor([IMAGE[1], IMAGE[0]])
        wh = torch.rand(n, 2, generator=g) ** 2 * torch.tensor([IMAGE[1], IMAGE[0]]) * 1.2
        wh[:3] = 0  # degenerate
        out.append(torch.cat([xy, xy + wh], 1))
    return out


def _run(pooler, feats, boxes):
    feats = {k: v.detach().clone().requires_grad_(True) for k, v in feats.items()}
    out = pooler(feats, boxes, [IMAGE] * len(boxes))
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(2))
    (out * weights).sum().backward()
    return out.detach(), [feats[n].grad for n in NAMES]


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("batch,threads,exact_grad", [(2, 2, True), (3, 2, True), (1, 2, False), (2, 3, False)])
def test_same_as_torchvision(batch, threads, exact_grad, channels_last, monkeypatch):
    monkeypatch.setattr(tv_roi, "_threads", lambda: threads)
    feats, boxes = _features(batch, channels_last), _boxes(batch, 60)
    ref_out, ref_grads = _run(MultiScaleRoIAlign(NAMES, (7, 5), 0), feats, boxes)
    calls = []
    real = tv_roi._ThreadedRoIAlign.apply
    monkeypatch.setattr(tv_roi._ThreadedRoIAlign, "apply", lambda *a: calls.append(len(a[1])) or real(*a))
    out, grads = _run(tv_roi.ThreadedMultiScaleRoIAlign(NAMES, (7, 5), 0), feats, boxes)
    assert len(calls) == 4 and sum(calls) == 60 * batch  # the threaded path ran, on every level
    assert torch.equal(out, ref_out)
    for grad, ref in zip(grads, ref_grads):
        if exact_grad:
            assert torch.equal(grad, ref)
        else:
            torch.testing.assert_close(grad, ref, rtol=1e-5, atol=1e-6)


def test_sampling_ratio_and_no_grad_inference(monkeypatch):
    monkeypatch.setattr(tv_roi, "_threads", lambda: 2)
    feats, boxes = _features(1, True), _boxes(1, 100)
    with torch.inference_mode():
        ref = MultiScaleRoIAlign(NAMES, 14, 2)(feats, boxes, [IMAGE])
        out = tv_roi.ThreadedMultiScaleRoIAlign(NAMES, 14, 2)(feats, boxes, [IMAGE])
    assert torch.equal(out, ref)


@pytest.mark.parametrize("case", ["one thread", "float64"])
def test_falls_back_to_torchvision(case, monkeypatch):
    monkeypatch.setattr(tv_roi, "_threads", lambda: 1 if case == "one thread" else 2)
    monkeypatch.setattr(tv_roi._ThreadedRoIAlign, "apply", lambda *a: pytest.fail("threaded path taken"))
    feats, boxes = _features(2, False), _boxes(2, 20)
    if case == "float64":  # any dtype but float32 (autocast's included) goes to torchvision as it is
        feats = {k: v.double() for k, v in feats.items()}
        boxes = [b.double() for b in boxes]
    out = tv_roi.ThreadedMultiScaleRoIAlign(NAMES, 7, 0)(feats, boxes, [IMAGE] * 2)
    assert torch.equal(out, MultiScaleRoIAlign(NAMES, 7, 0)(feats, boxes, [IMAGE] * 2))


@pytest.mark.parametrize("channels_last", [False, True])
def test_under_cpu_autocast_same_as_torchvisions_autocast_rule(channels_last, monkeypatch):
    """Under bfloat16 autocast (bfloat16 features, as the convs give them) the threaded path runs the kernels
    on float32 copies and casts the rows back, as torchvision's autocast rule for roi_align does: the same
    output and the same bfloat16 gradients."""
    monkeypatch.setattr(tv_roi, "_threads", lambda: 2)
    feats = {k: v.bfloat16() for k, v in _features(2, channels_last).items()}
    boxes = _boxes(2, 40)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref_out, ref_grads = _run(MultiScaleRoIAlign(NAMES, 7, 2), feats, boxes)
        calls = []
        real = tv_roi._ThreadedRoIAlign.apply
        monkeypatch.setattr(tv_roi._ThreadedRoIAlign, "apply", lambda *a: calls.append(a[0].dtype) or real(*a))
        out, grads = _run(tv_roi.ThreadedMultiScaleRoIAlign(NAMES, 7, 2), feats, boxes)
    assert calls and set(calls) == {torch.float32}  # threaded, on float32 copies
    assert out.dtype == ref_out.dtype == torch.bfloat16 and torch.equal(out, ref_out)
    for grad, ref in zip(grads, ref_grads):
        assert grad.dtype == torch.bfloat16 and torch.equal(grad, ref)


def test_half_precision_features_take_the_threaded_path_only_under_autocast(monkeypatch):
    """Outside autocast, bfloat16 features go to torchvision as they are (its CPU kernel then says it has no
    bfloat16 implementation, as it would without this module)."""
    monkeypatch.setattr(tv_roi, "_threads", lambda: 2)
    feats = [v.bfloat16() for v in _features(1, False).values()]
    assert tv_roi._threaded(feats, autocast=True) and not tv_roi._threaded(feats, autocast=False)
    assert not tv_roi._threaded([f.double() for f in feats], autocast=True)


def _pool_in_child(queue):
    torch.set_num_threads(1)  # as DataLoader workers do: OpenMP regions hang in a child forked after the parent used them
    feats, boxes = _features(2, False), _boxes(2, 30)
    queue.put(tuple(tv_roi.ThreadedMultiScaleRoIAlign(NAMES, 7, 0)(feats, boxes, [IMAGE] * 2).shape))


@pytest.mark.skipif("fork" not in __import__("multiprocessing").get_all_start_methods(), reason="no fork here")
def test_a_forked_child_gets_its_own_threads(monkeypatch):
    """The parent's pool threads do not exist in a forked child (a DataLoader worker, say): it must not wait on them."""
    import multiprocessing

    monkeypatch.setattr(tv_roi, "_threads", lambda: 2)
    feats, boxes = _features(2, False), _boxes(2, 30)
    tv_roi.ThreadedMultiScaleRoIAlign(NAMES, 7, 0)(feats, boxes, [IMAGE] * 2)  # the parent's pool now exists
    assert tv_roi._executor is not None
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_pool_in_child, args=(queue,))
    child.start()
    child.join(120)
    if child.is_alive():
        child.kill()
        pytest.fail("the forked child hung on its parent's RoIAlign threads")
    assert child.exitcode == 0 and queue.get(timeout=5) == (60, 8, 7, 7)


def test_an_image_without_rois_on_a_level(monkeypatch):
    """Image 1 has only small boxes, so the coarse levels' RoIs all come from image 0; image 2 has none at all."""
    monkeypatch.setattr(tv_roi, "_threads", lambda: 2)
    feats = _features(3, True)
    big, small = _boxes(1, 40)[0], torch.tensor([[10.0, 10, 30, 40], [100, 50, 120, 60]])
    boxes = [big, small, torch.zeros((0, 4))]
    ref_out, ref_grads = _run(MultiScaleRoIAlign(NAMES, 7, 0), feats, boxes)
    out, grads = _run(tv_roi.ThreadedMultiScaleRoIAlign(NAMES, 7, 0), feats, boxes)
    assert torch.equal(out, ref_out)
    for grad, ref in zip(grads, ref_grads):
        assert torch.equal(grad, ref)
