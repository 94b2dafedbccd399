"""``inspect``: one image through a trained run, stage by stage, for both engines.

A tiny run is trained per engine; the record of one val image is checked against the config
(FPN channels and levels, anchors per location and per level, NMS limits, pooler and mask
resolutions), against an independent IoU computation (the matched anchors), and against the
engine's predictor (the final detections). The figures are rendered. The detectron2 cases skip,
saying why, where detectron2 is not importable.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from helpers import data, experiment, plots_stages
from helpers.engines.inspect_record import box_iou_np
from helpers.errors import DataError
from helpers.inspect_run import inspect_run
from tiny_schedule import tiny_overrides

pytestmark = pytest.mark.slow
NO_D2 = importlib.util.find_spec("detectron2") is None
CASES = [
    pytest.param(("torchvision", "demo"), id="torchvision-demo"),
    pytest.param(("detectron2", "demo"), id="detectron2-demo", marks=[pytest.mark.detectron2, pytest.mark.skipif(
        NO_D2, reason="detectron2 is not importable: install it from source (README)")]),
    # the real data (JPEGs, 20 classes, VOC objects) with the same tiny model (skips without it)
    pytest.param(("torchvision", "tinyvoc"), id="torchvision-tinyvoc"),
]


@pytest.fixture(scope="module", params=CASES)
def run(request, project_root, tmp_path_factory):
    """(engine, run folder, its config, the record of its val split's first annotated image)."""
    engine, data_set = request.param
    run_dir = tmp_path_factory.mktemp(f"inspect_{engine}_{data_set}") / "run"
    root = request.getfixturevalue("demo_root" if data_set == "demo" else "tinyvoc_root")
    # 6 iterations leave 20 classes near 1/21 = 0.048 each: below the default 0.05 nothing would be detected
    extra = {} if data_set == "demo" else {"MODEL.ROI_HEADS.SCORE_THRESH_TEST": "0.01"}
    experiment.train(project_root / "configs" / "demo.yaml", tiny_overrides(**extra), engine=engine, data_root=root,
                     run_dir=run_dir, progress=False, match_num_classes=True)
    cfg, _ = experiment.load_run(run_dir)
    return engine, run_dir, cfg, inspect_run(run_dir)


def test_record_is_plain_data(run):
    def walk(value, where):
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{where}.{k}")
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                walk(v, f"{where}[{i}]")
        else:
            assert value is None or isinstance(value, (np.ndarray, np.generic, int, float, str, bool)), \
                f"{where} is a {type(value).__name__}"

    engine, _, _, record = run
    walk(record, "record")
    assert record["engine"] == engine


def test_input_is_resized_as_the_config_says(run):
    _, _, cfg, record = run
    inp = record["input"]
    (H, W), (h, w) = inp["original_size"], inp["size"]
    assert record["image"].shape == (H, W, 3) and inp["tensor"].shape == (3, h, w)
    assert min(h, w) == cfg["INPUT.MIN_SIZE_TEST"] or max(h, w) == cfg["INPUT.MAX_SIZE_TEST"]
    assert inp["scale"] == pytest.approx((h / H, w / W)) and abs(inp["scale"][0] - inp["scale"][1]) < 0.02
    assert inp["padded_shape"][1] % 32 == 0 and inp["padded_shape"][2] % 32 == 0
    assert inp["padded_shape"][1] >= h and inp["padded_shape"][2] >= w
    # normalised: undoing it gives back the resized image
    assert inp["image"].shape == (h, w, 3)
    assert np.abs(inp["image"].astype(float).mean((0, 1)) - record["image"].astype(float).mean((0, 1))).max() < 8


def test_feature_maps_follow_the_config(run):
    _, _, cfg, record = run
    assert [lv["name"] for lv in record["backbone"]] == ["res2", "res3", "res4", "res5"]
    assert [lv["name"] for lv in record["fpn"]] == ["p2", "p3", "p4", "p5", "p6"]
    assert [lv["stride"] for lv in record["fpn"]] == [4, 8, 16, 32, 64]
    assert [lv["stride"] for lv in record["backbone"]] == [4, 8, 16, 32]
    res2 = 64 if cfg["MODEL.RESNETS.DEPTH"] in (18, 34) else 256
    assert [lv["shape"][0] for lv in record["backbone"]] == [res2 * 2**i for i in range(4)]
    padded = record["input"]["padded_shape"]
    for lv in record["backbone"] + record["fpn"]:
        c, h, w = lv["shape"]
        assert (h, w) == (-(-padded[1] // lv["stride"]), -(-padded[2] // lv["stride"]))
        assert lv["channels"].shape == (len(lv["channel_index"]), h, w) and lv["mean_abs"].shape == (h, w)
        assert len(set(lv["channel_index"])) == len(lv["channel_index"]) and max(lv["channel_index"]) < c
    assert all(lv["shape"][0] == cfg["MODEL.FPN.OUT_CHANNELS"] for lv in record["fpn"])


def test_anchor_counts_are_grid_times_sizes_times_ratios(run):
    engine, _, cfg, record = run
    anchors = record["anchors"]
    sizes, ratios = cfg["MODEL.ANCHOR_GENERATOR.SIZES"], cfg["MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS"]
    for i, (lv, fpn) in enumerate(zip(anchors["levels"], record["fpn"])):
        level_sizes = sizes[i] if len(sizes) > 1 else sizes[0]
        level_ratios = ratios[i] if len(ratios) > 1 else ratios[0]
        a = len(level_sizes) * len(level_ratios)
        assert lv["per_location"] == a and lv["name"] == fpn["name"]
        assert lv["grid"] == tuple(fpn["shape"][1:]) and lv["count"] == fpn["shape"][1] * fpn["shape"][2] * a
        assert lv["centers"].shape == (fpn["shape"][1] * fpn["shape"][2], 2)
        # the anchors at one location: centred on it, of the level's size and aspect ratios (h / w)
        boxes = lv["at_location"]
        row, col = lv["location"]
        sy, sx = lv["stride"]
        assert (sy, sx) == (fpn["stride"],) * 2 or engine == "torchvision"  # torchvision: padded size // grid
        np.testing.assert_allclose((boxes[:, :2] + boxes[:, 2:]) / 2, [[col * sx, row * sy]] * a, atol=1)
        wh = boxes[:, 2:] - boxes[:, :2]
        np.testing.assert_allclose(np.sqrt(wh.prod(axis=1)), [s for s in level_sizes for _ in level_ratios], rtol=0.05)
        # torchvision rounds its base anchors to whole pixels (a 16 px anchor of ratio 2 is 12 x 22): the
        # ratio is right to about 2 px over the short side
        short = min(level_sizes) / np.sqrt(max(level_ratios))
        np.testing.assert_allclose(sorted(wh[:, 1] / wh[:, 0]), sorted(level_ratios), rtol=2 / short)
    assert anchors["total"] == sum(lv["count"] for lv in anchors["levels"])


def test_matched_anchors_follow_the_rpn_thresholds(run):
    _, _, cfg, record = run
    m = record["matching"]
    bg, fg = cfg["MODEL.RPN.IOU_THRESHOLDS"]
    assert m["thresholds"] == (bg, fg)
    assert m["positive_count"] == len(m["positive"]) >= 1
    assert m["positive_count_all"] + m["negative_count"] + m["ignored_count"] == record["anchors"]["total"]
    iou = box_iou_np(m["positive"], m["gt_boxes"])
    np.testing.assert_allclose(iou[:, m["gt_index"]], m["positive_iou"], atol=1e-5)
    for k, row in enumerate(iou):
        # a positive overlaps the object by IoU >= fg, or is the best anchor of some object (low-quality rule)
        assert row[m["gt_index"]] >= fg - 1e-6 or np.isclose(row, m["gt_best_iou"], atol=1e-5).any(), k
        assert m["low_quality"][k] == (m["positive_iou"][k] < fg)
    near = box_iou_np(m["near_negative"], m["gt_boxes"])
    assert len(near) and (near < bg).all() and (near[:, m["gt_index"]] > 0).all()
    # the object chosen by default is the image's largest
    areas = np.prod(m["gt_boxes"][:, 2:] - m["gt_boxes"][:, :2], axis=1)
    assert m["gt_index"] == int(np.argmax(areas))


def test_proposals_before_and_after_nms(run):
    _, _, cfg, record = run
    p = record["proposals"]
    assert p["post_nms_count"] <= cfg["MODEL.RPN.POST_NMS_TOPK_TEST"] and p["post_nms_count"] <= p["pre_nms_count"]
    assert p["pre_nms_count"] <= cfg["MODEL.RPN.PRE_NMS_TOPK_TEST"] * p["num_levels"]
    assert p["post_nms_count"] < p["pre_nms_count"]  # NMS removed something
    assert p["nms_thresh"] == cfg["MODEL.RPN.NMS_THRESH"]
    assert np.all(np.diff(p["post_nms_scores"]) <= 1e-7)  # ranked by objectness
    # every proposal kept by NMS was a proposal before it
    assert (box_iou_np(p["post_nms"], p["pre_nms"]).max(axis=1) > 1 - 1e-5).all()
    h, w = record["input"]["size"]
    assert (p["post_nms"][:, [0, 2]] <= w + 1e-3).all() and (p["post_nms"][:, [1, 3]] <= h + 1e-3).all()


def test_roi_align_and_box_head(run):
    _, _, cfg, record = run
    r, bh = record["roi_align"], record["box_head"]
    res = cfg["MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION"]
    assert r["shape"] == [cfg["MODEL.FPN.OUT_CHANNELS"], res, res]
    assert r["features"].shape == (len(r["boxes"]), res, res) and set(r["level"]) <= {"p2", "p3", "p4", "p5"}
    n = record["proposals"]["post_nms_count"]
    assert bh["scores"].shape == (n, cfg["MODEL.ROI_HEADS.NUM_CLASSES"]) and bh["refined"].shape == (n, 4)
    np.testing.assert_allclose(bh["scores"].sum(axis=1) + bh["background"], 1, atol=1e-4)
    np.testing.assert_array_equal(bh["proposals"], record["proposals"]["post_nms"])
    # the crops are of the proposals the head is surest of
    assert np.all(bh["best_score"][r["proposal_index"]] >= np.sort(bh["best_score"])[::-1][len(r["boxes"]) - 1] - 1e-7)


def test_mask_head_output_and_pasted_mask(run):
    _, _, cfg, record = run
    m = record["mask"]
    res = 2 * cfg["MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION"]
    assert m["resolution"] == res and m["probability"].shape == (res, res)
    assert m["pasted"].shape == record["image"].shape[:2] == m["binary"].shape
    np.testing.assert_array_equal(m["pasted"] >= m["threshold"], m["binary"])
    np.testing.assert_array_equal(record["detections"]["masks"][m["index"]], m["binary"])


def test_detections_are_the_predictors(run):
    _, run_dir, _, record = run
    predicted = experiment.load_predictor(run_dir)([data.read_image(record["file_name"])])[0]
    det = record["detections"]
    assert len(predicted.scores) == len(det["scores"]) > 0
    np.testing.assert_allclose(det["boxes"], predicted.boxes, atol=1e-4)
    np.testing.assert_allclose(det["scores"], predicted.scores, atol=1e-6)
    np.testing.assert_array_equal(det["category_ids"], predicted.category_ids)
    np.testing.assert_array_equal(det["masks"], predicted.masks)
    # the detections in input coordinates are the same boxes before the resize back
    sy, sx = record["input"]["scale"]
    np.testing.assert_allclose(det["boxes_input"] / [sx, sy, sx, sy], det["boxes"], atol=0.5)


def test_figures_render(run, tmp_path):
    _, _, _, record = run
    paths = plots_stages.save_stage_figures(record, tmp_path)
    assert [p.name for p in paths] == [f"02_stage{i}_{name}.png" for i, name in enumerate(plots_stages.STAGES, 1)]
    from PIL import Image

    for path in paths:
        assert path.stat().st_size > 10_000
        with Image.open(path) as im:
            assert im.width > 400 and im.height > 200


def test_inspect_run_picks_image_and_object(run):
    _, run_dir, _, record = run
    split = data.load_split(record["split"], check_images=False)
    other = inspect_run(run_dir, image=record["image_id"], object_index=0)
    assert other["matching"]["gt_index"] == 0 and other["image_id"] == record["image_id"]
    np.testing.assert_array_equal(other["detections"]["boxes"], record["detections"]["boxes"])
    by_file = inspect_run(run_dir, image=record["file_name"])
    assert by_file["image_id"] == record["image_id"] and by_file["matching"] is not None
    with pytest.raises(DataError, match="unknown image id"):
        inspect_run(run_dir, image=max(img["id"] for img in split.images) + 1000)
    objects = len([a for a in split.annotations_of(record["image_id"]) if not a.get("iscrowd", 0)])
    with pytest.raises(DataError, match=f"has {objects} annotated objects; object_index {objects} does not exist"):
        inspect_run(run_dir, image=record["image_id"], object_index=objects)


def test_an_image_without_annotations_has_no_matching_figure(run, tmp_path):
    _, run_dir, _, record = run
    path = tmp_path / "unlisted.png"
    from PIL import Image

    Image.fromarray(record["image"]).save(path)
    rec = inspect_run(run_dir, image=path)
    assert rec["matching"] is None and rec["image_id"] is None and rec["mask"] is not None
    assert "no ground truth" in plots_stages.plot_anchor_matching(rec).axes[0].texts[0].get_text()


def test_only_the_engines_import_model_libraries():
    root = Path(__file__).resolve().parents[1] / "helpers"
    for name in ("inspect_run.py", "plots_stages.py", "engines/inspect_record.py"):
        tree = ast.parse((root / name).read_text(encoding="utf-8"))
        imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not imported & {"torch", "torchvision", "detectron2"}, name


def test_a_record_without_detections_draws_a_message(run):
    _, _, _, record = run
    fig = plots_stages.plot_mask_head({**record, "mask": None})
    assert "no detection above the score threshold" in fig.axes[0].texts[0].get_text()


def test_stage_summary_states_the_records_numbers(run):
    _, _, _, record = run
    text = plots_stages.stage_summary(record)
    p = record["proposals"]
    assert f"proposals: {p['pre_nms_count']} before NMS -> {p['post_nms_count']} after" in text
    assert f"{record['anchors']['total']} in all" in text
    assert all(f"{lv['name']:>4}" in text for lv in record["fpn"])
    assert f"{record['matching']['positive_count']} positive anchors" in text
    assert f"{len(record['detections']['scores'])} detections" in text
