"""helpers.concepts: each worked example against a library or an independent count."""

from __future__ import annotations

import contextlib
import io

import matplotlib
import numpy as np
import pycocotools.mask as mask_utils
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

matplotlib.use("Agg")

from helpers import concepts  # noqa: E402
from helpers.config import Config, load_config  # noqa: E402
from helpers.masks import rle_run_lengths  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")


def test_box_iou_steps_and_pycocotools():
    ex = concepts.box_iou_example((0, 0, 4, 4), (2, 2, 6, 6))
    assert (ex["intersection"], ex["area_a"], ex["area_b"], ex["union"]) == (4.0, 16.0, 16.0, 28.0)
    assert ex["intersection_box"] == [2.0, 2.0, 4.0, 4.0]
    assert ex["iou"] == pytest.approx(4 / 28) and ex["iou_pycocotools"] == pytest.approx(ex["iou"])
    apart = concepts.box_iou_example((0, 0, 1, 1), (5, 5, 6, 7))
    assert apart["iou"] == 0.0 and apart["intersection_box"] is None
    rng = np.random.default_rng(0)
    for _ in range(50):
        a = np.sort(rng.uniform(0, 50, (2, 2)), axis=0).T.ravel()[[0, 2, 1, 3]]
        b = np.sort(rng.uniform(0, 50, (2, 2)), axis=0).T.ravel()[[0, 2, 1, 3]]
        ex = concepts.box_iou_example(a, b)
        assert ex["iou"] == pytest.approx(ex["iou_pycocotools"], abs=1e-12)
        assert concepts.box_iou(a, b) == ex["iou"]


def test_mask_iou_counts_pixels_like_pycocotools():
    a = np.zeros((6, 7), bool)
    b = np.zeros((6, 7), bool)
    a[1:4, 1:5] = True   # 12 pixels
    b[2:6, 3:7] = True   # 16 pixels, 4 shared
    ex = concepts.mask_iou_example(a, b)
    assert (ex["area_a"], ex["area_b"], ex["intersection"], ex["union"]) == (12, 16, 4, 24)
    assert ex["iou"] == pytest.approx(1 / 6) and ex["iou_pycocotools"] == pytest.approx(1 / 6)
    with pytest.raises(ValueError):
        concepts.mask_iou_example(a, b[:5])


def test_area_buckets_follow_coco():
    assert [concepts.area_bucket(v) for v in (1023, 1024, 9215, 9216)] == ["small", "medium", "medium", "large"]


def test_anchors_per_level_for_the_default_config():
    rows = concepts.anchors_per_level(Config(), input_size=(800, 1067))
    assert [r["level"] for r in rows] == ["p2", "p3", "p4", "p5", "p6"]
    assert [r["sizes"] for r in rows] == [[32], [64], [128], [256], [512]]
    assert all(r["anchors_per_location"] == 3 for r in rows)
    # 800 x 1067 pads to 800 x 1088; p2 = 200 x 272, ..., p6 = ceil(25/2) x ceil(34/2)
    assert [r["feature_size"] for r in rows] == [[200, 272], [100, 136], [50, 68], [25, 34], [13, 17]]
    assert [r["anchors"] for r in rows] == [200 * 272 * 3, 100 * 136 * 3, 50 * 68 * 3, 25 * 34 * 3, 13 * 17 * 3]
    assert "anchors" not in concepts.anchors_per_level(Config())[0]


def test_anchors_follow_the_config_in_use(project_root):
    cfg = load_config(project_root / "configs" / "demo.yaml",
                      {"MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS": [[0.5, 1.0, 2.0, 4.0]]})
    rows = concepts.anchors_per_level(cfg, input_size=(160, 213))
    assert rows[0]["sizes"] == [16] and rows[0]["anchors_per_location"] == 4
    assert rows[0]["feature_size"] == [40, 56] and rows[0]["anchors"] == 40 * 56 * 4


def test_anchor_grid_matches_torchvision():
    """The count per level is what torchvision's AnchorGenerator makes for the same feature maps."""
    torch = pytest.importorskip("torch")
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.image_list import ImageList

    rows = concepts.anchors_per_level(Config(), input_size=(100, 150))
    gen = AnchorGenerator(tuple(tuple(r["sizes"]) for r in rows), tuple(tuple(r["aspect_ratios"]) for r in rows))
    h, w = (int(np.ceil(v / 32) * 32) for v in (100, 150))
    images = ImageList(torch.zeros(1, 3, h, w), [(100, 150)])
    features = [torch.zeros(1, 1, *r["feature_size"]) for r in rows]
    anchors = gen(images, features)[0]
    assert anchors.shape[0] == sum(r["anchors"] for r in rows)


def test_learning_rate_warmup_and_steps():
    cfg = Config().merge({"SOLVER.BASE_LR": 0.01, "SOLVER.WARMUP_ITERS": 100, "SOLVER.WARMUP_FACTOR": 0.001,
                          "SOLVER.STEPS": [300, 400], "SOLVER.MAX_ITER": 500, "SOLVER.GAMMA": 0.1})
    assert concepts.learning_rate(cfg, 0) == pytest.approx(0.01 * 0.001)
    assert concepts.learning_rate(cfg, 50) == pytest.approx(0.01 * (0.001 * 0.5 + 0.5))
    assert concepts.learning_rate(cfg, 100) == pytest.approx(0.01)
    assert concepts.learning_rate(cfg, 299) == pytest.approx(0.01)
    assert concepts.learning_rate(cfg, 300) == pytest.approx(0.001)
    assert concepts.learning_rate(cfg, 450) == pytest.approx(0.0001)
    constant = cfg.copy().merge({"SOLVER.WARMUP_METHOD": "constant"})
    assert concepts.learning_rate(constant, 99) == pytest.approx(0.01 * 0.001)
    schedule = concepts.lr_schedule(cfg)
    assert schedule["iteration"][0] == 0 and schedule["iteration"][-1] == 499
    assert {100, 299, 300, 399, 400} <= set(schedule["iteration"])
    assert schedule["steps"] == [300, 400]
    fig = concepts.plot_lr_schedule(cfg)
    line = fig.axes[0].lines[0]
    assert list(line.get_ydata()) == schedule["lr"]


def test_learning_rate_is_the_torchvision_engines(project_root):
    from helpers.engines.torchvision_engine.loop import learning_rate as engine_lr

    cfg = load_config(project_root / "configs" / "demo.yaml")
    for it in (0, 1, 25, 49, 50, 239, 240, 279, 280, 299):
        assert concepts.learning_rate(cfg, it) == engine_lr(cfg, it)


def test_weight_decay_groups_and_shrink_factor(project_root):
    homework = load_config(project_root / "configs" / "homework.yaml")
    groups = concepts.weight_decay_groups(homework)
    assert groups == {"weights": 1e-4, "biases": 0.01, "norm weights": 0.0, "norm biases": 0.01}
    assert concepts.weight_decay_groups(Config())["biases"] == 1e-4  # WEIGHT_DECAY_BIAS None: same as weights
    w = 1.0
    for _ in range(1000):
        w -= 2.5e-4 * 1e-4 * w  # SGD's decay term alone, step by step
    assert concepts.shrink_factor(2.5e-4, 1e-4, 1000) == pytest.approx(w, rel=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_rle_by_hand_is_pycocotools(seed):
    mask = np.random.default_rng(seed).random((4, 4)) < 0.5
    ex = concepts.rle_example(mask)
    assert ex["agree"] and ex["counts"] == mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"].decode()
    assert ex["runs"] == rle_run_lengths(ex["counts"])  # the project's decoder reads the same runs back
    assert sum(ex["runs"]) == 16


def test_rle_example_by_hand():
    mask = np.array([[0, 0, 1, 1], [0, 1, 1, 1], [0, 0, 1, 0], [0, 0, 0, 0]])
    ex = concepts.rle_example(mask)
    assert ex["column_major"] == [0, 0, 0, 0, 0, 1, 0, 0, 1, 1, 1, 0, 1, 1, 0, 0]
    assert ex["runs"] == [5, 1, 2, 3, 1, 2, 2]
    assert ex["runs_row_major"] == [2, 2, 1, 3, 2, 1, 5]
    assert concepts.rle_by_hand(np.ones((2, 2))) == [0, 4]


def test_precision_recall_at_ranks():
    rows = concepts.precision_recall_at_ranks([True, False, True, True, False], num_gt=4)
    assert [(r["precision"], r["recall"]) for r in rows] == [(1.0, 0.25), (0.5, 0.25), (2 / 3, 0.5),
                                                             (0.75, 0.75), (0.6, 0.75)]
    with pytest.raises(ValueError):
        concepts.precision_recall_at_ranks([True], 0)


def _coco_stats(boxes_gt, boxes_dt, scores):
    gt = {"images": [{"id": 1, "height": 200, "width": 400}], "categories": [{"id": 1, "name": "x"}],
          "annotations": [{"id": k + 1, "image_id": 1, "category_id": 1, "bbox": b, "area": b[2] * b[3], "iscrowd": 0}
                          for k, b in enumerate(boxes_gt)]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        dt = coco.loadRes([{"image_id": 1, "category_id": 1, "bbox": b, "score": s} for b, s in zip(boxes_dt, scores)])
        ev = COCOeval(coco, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def test_ap50_vs_ap_agrees_with_pycocotools():
    # five objects far apart; detections shifted right by d: IoU = (20 - d) / (20 + d)
    gts = [[40 * k + 5, 10, 20, 20] for k in range(5)]
    shifts, scores = [0, 2, 4, 7, 12], [0.9, 0.3, 0.8, 0.6, 0.7]
    dts = [[g[0] + d, g[1], g[2], g[3]] for g, d in zip(gts, shifts)]
    ious = [concepts.box_iou((g[0], g[1], g[0] + 20, g[1] + 20), (t[0], t[1], t[0] + 20, t[1] + 20))
            for g, t in zip(gts, dts)]
    result = concepts.ap_by_iou(scores, ious, num_gt=6)  # one object more, never detected
    stats = _coco_stats(gts + [[300, 150, 20, 20]], dts, scores)
    assert result["AP"] == pytest.approx(stats[0], abs=1e-12)
    assert result["AP50"] == pytest.approx(stats[1], abs=1e-12)
    assert result["AP75"] == pytest.approx(stats[2], abs=1e-12)
    assert result["AP50"] > result["AP"]
    assert concepts.coco_ap([True, False, True], 2) == pytest.approx((51 * 1 + 50 * 2 / 3) / 101)


def test_resized_input_size_follows_resize_shortest_edge():
    assert concepts.resized_input_size(333, 500, 800, 1333) == (800, 1201)
    assert concepts.resized_input_size(100, 1000, 800, 1333) == (133, 1333)  # the long side caps the scale
    assert concepts.resized_input_size(160, 213, 160, 256) == (160, 213)


def test_anchor_config_must_name_every_level():
    cfg = Config().merge({"MODEL.ANCHOR_GENERATOR.SIZES": [[32], [64]]})
    with pytest.raises(ValueError, match="expected 5 anchor sizes"):
        concepts.anchors_per_level(cfg)


def test_optimizer_groups_read_a_real_optimizer():
    torch = pytest.importorskip("torch")
    conv, norm = torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)
    opt = torch.optim.SGD([{"params": [conv.weight], "weight_decay": 1e-4},
                           {"params": [conv.bias, norm.bias], "weight_decay": 0.01},
                           {"params": [norm.weight], "weight_decay": 0.0}], lr=0.02, momentum=0.9)
    rows = concepts.optimizer_groups(opt)
    assert [(r["weight_decay"], r["tensors"], r["values"]) for r in rows] == [(1e-4, 1, 108), (0.01, 2, 8), (0.0, 1, 4)]
    assert all(r["lr"] == 0.02 for r in rows)


def test_plot_pr_example_draws_the_ranks():
    fig = concepts.plot_pr_example([True, False, True, True, False], 4)
    ax = fig.axes[0]
    points = ax.collections[0].get_offsets()
    assert [tuple(p) for p in points] == [(0.25, 1.0), (0.25, 0.5), (0.5, 2 / 3), (0.75, 0.75), (0.75, 0.6)]
    assert f"AP = {concepts.coco_ap([True, False, True, True, False], 4):.4g}" in ax.get_title()
    fig.canvas.draw()


def test_loss_terms_say_what_each_trains_and_how_much_it_fell():
    rows = [{"iteration": i, "loss_mask": 1.0 - i / 100, "loss_cls": 2.0, "lr": 0.1} for i in range(30)]
    terms = {t["loss"]: t for t in concepts.loss_terms(rows, window=10)}
    assert set(terms) == {"loss_mask", "loss_cls"}
    assert terms["loss_mask"]["first"] == pytest.approx(1.0 - 4.5 / 100) and terms["loss_mask"]["last"] == pytest.approx(1.0 - 24.5 / 100)
    assert "mask head" in terms["loss_mask"]["trains"] and "box head" in terms["loss_cls"]["trains"]
    for name in ("loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "loss_rpn_cls", "loss_rpn_loc"):
        assert name in concepts.LOSS_TERMS
