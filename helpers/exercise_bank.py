"""The course's exercises: inputs, the computed answer, the typical mistakes (see helpers.exercises).

Every answer and every typical wrong answer is computed from the exercise's inputs, mostly by
:mod:`helpers.concepts`; nothing here is a typed-in result.
"""

from __future__ import annotations

import math

from . import concepts
from .config import Config
from .error_analysis import ERROR_TYPES, error_type
from .exercises import Exercise, Mistake

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
               "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")


def _cfg(**overrides) -> Config:
    return Config().merge(overrides)


def _box_parts(v: dict) -> dict:
    return concepts.box_iou_example(v["box_a"], v["box_b"])


def _level(v: dict) -> dict:
    rows = concepts.anchors_per_level(v["cfg"], v["input_size"])
    return next(r for r in rows if r["level"] == v["level"])


def _padded(v: dict) -> tuple[int, int]:
    return tuple(math.ceil(s / concepts.SIZE_DIVISIBILITY) * concepts.SIZE_DIVISIBILITY for s in v["input_size"])


def _level_with_stride(v: dict, stride: int, padded: bool = True) -> int:
    h, w = (math.ceil(s / stride) for s in (_padded(v) if padded else v["input_size"]))
    return h * w * _level(v)["anchors_per_location"]


def _apply_threshold(v: dict, threshold: float) -> float:
    kept = [tp for score, tp in v["detections"] if score >= threshold]
    return concepts.coco_ap(kept, v["num_gt"])


def _threshold_effect(v: dict) -> str:
    low, high = (_apply_threshold(v, t) for t in v["thresholds"])
    return "up" if high > low else "down" if high < low else "same"


def _tp_at(v: dict) -> int:
    return sum(bool(t) for t in v["is_tp"][: v["rank"]])


def _ap_compare(v: dict) -> str:
    result = concepts.ap_by_iou(v["scores"], v["ious"], v["num_gt"])
    return "AP50" if result["AP50"] > result["AP"] else "AP" if result["AP"] > result["AP50"] else "equal"


def _rle_sum_hint(answer: list, v: dict) -> str | None:
    total, pixels = sum(answer), len(v["mask"]) * len(v["mask"][0])
    if total != pixels:
        return f"your runs cover {total} pixels, the mask has {pixels}: every pixel is in exactly one run."
    return None


_EXERCISES = [
    # ----------------------------------------------------------------------- 01 data exploration
    Exercise(
        "area_bucket", "01_data_exploration",
        prompt=lambda v: f"A mask fills a {v['width']} x {v['height']} pixel rectangle. Is it a COCO 'small', "
                         "'medium' or 'large' object (the APs / APm / APl buckets)?",
        defaults=lambda: {"width": 100, "height": 50},
        solve=lambda v: concepts.area_bucket(v["width"] * v["height"]),
        kind="choice", choices=("small", "medium", "large"),
        mistakes=(Mistake(lambda v: concepts.area_bucket(max(v["width"], v["height"]) ** 2),
                          "COCO compares the mask's AREA with 32² = 1024 and 96² = 9216 pixels, "
                          "not its longest side with 32 or 96."),
                  Mistake(lambda v: concepts.area_bucket(min(v["width"], v["height"]) ** 2),
                          "COCO compares the mask's AREA with 32² = 1024 and 96² = 9216 pixels, "
                          "not its shortest side with 32 or 96.")),
        hint="compute the area (width × height pixels) and compare it with 32² and 96².",
        explain=lambda v: f"Area = {v['width']} × {v['height']} = {v['width'] * v['height']} px²; small < 1024 ≤ "
                          f"medium < 9216 ≤ large.",
    ),
    Exercise(
        "segmentation_format", "01_data_exploration",
        prompt=lambda v: f"An annotation's segmentation is {v['segmentation']!r}. Is it a 'polygon' or an 'rle'?",
        defaults=lambda: {"segmentation": [[10, 10, 60, 10, 60, 40, 10, 40]]},
        solve=lambda v: "rle" if isinstance(v["segmentation"], dict) else "polygon",
        kind="choice", choices=("polygon", "rle"),
        mistakes=(Mistake(lambda v: "polygon" if isinstance(v["segmentation"], dict) else "rle",
                          "a list of [x1, y1, x2, y2, ...] lists is polygons (one list per part); an RLE is a "
                          "dict with 'size' and 'counts'."),),
        hint="look at the type: list of coordinate lists, or a dict with 'counts'?",
        explain=lambda v: "Polygons are lists of flat [x, y, x, y, ...] coordinate lists; COCO RLE is "
                          "{'size': [h, w], 'counts': ...} (used for crowd regions and for predictions).",
    ),
    Exercise(
        "polygon_vertices", "01_data_exploration",
        prompt=lambda v: f"How many vertices has the polygon {v['polygon']}?",
        defaults=lambda: {"polygon": [10, 10, 60, 10, 60, 40, 35, 55, 10, 40]},
        solve=lambda v: len(v["polygon"]) // 2,
        kind="int",
        mistakes=(Mistake(lambda v: len(v["polygon"]), "each vertex is two numbers (x, y): count the pairs."),),
        hint="a COCO polygon is a flat list x1, y1, x2, y2, ...",
        explain=lambda v: f"{len(v['polygon'])} numbers = {len(v['polygon']) // 2} (x, y) pairs.",
    ),
    Exercise(
        "instances_per_image", "01_data_exploration",
        prompt=lambda v: f"A split has images {v['image_ids']} and annotations on images {v['annotation_image_ids']} "
                         "(one entry per instance). What is the mean number of instances per image?",
        defaults=lambda: {"image_ids": [1, 2, 3, 4, 5], "annotation_image_ids": [1, 1, 1, 2, 4, 4]},
        solve=lambda v: len(v["annotation_image_ids"]) / len(v["image_ids"]),
        kind="number",
        mistakes=(Mistake(lambda v: len(v["annotation_image_ids"]) / len(set(v["annotation_image_ids"])),
                          "images without any annotation count too: divide by all images of the split."),),
        hint="count the instances and divide by the number of images.",
        explain=lambda v: f"{len(v['annotation_image_ids'])} instances / {len(v['image_ids'])} images.",
    ),
    # ----------------------------------------------------------------------- 02 training
    Exercise(
        "box_iou", "02_training",
        prompt=lambda v: f"What is the IoU of the boxes A = {v['box_a']} and B = {v['box_b']} (x1, y1, x2, y2)?",
        defaults=lambda: {"box_a": (0, 0, 4, 4), "box_b": (2, 2, 6, 6)},
        solve=lambda v: _box_parts(v)["iou"],
        kind="number",
        mistakes=(Mistake(lambda v: _box_parts(v)["intersection"] / _box_parts(v)["area_a"],
                          "you divided by the first box's area: IoU divides the intersection by the UNION "
                          "(area A + area B - intersection)."),
                  Mistake(lambda v: _box_parts(v)["intersection"] / (_box_parts(v)["area_a"] + _box_parts(v)["area_b"]),
                          "the union counts the overlap once: subtract the intersection from area A + area B."),
                  Mistake(lambda v: _box_parts(v)["intersection"],
                          "that is the intersection's area: IoU is a ratio, intersection / union.")),
        hint="intersection = overlap width × height; union = area A + area B - intersection.",
        explain=lambda v: (lambda p: f"Intersection {p['intersection_box']} has area {p['intersection']:g}; union = "
                           f"{p['area_a']:g} + {p['area_b']:g} - {p['intersection']:g} = {p['union']:g}; IoU = "
                           f"{p['intersection']:g} / {p['union']:g} = {p['iou']!r}.")(_box_parts(v)),
    ),
    Exercise(
        "anchors_per_level", "02_training",
        prompt=lambda v: (lambda r: f"The network input is {v['input_size'][0]} x {v['input_size'][1]} pixels "
                          f"(the engines pad it to a multiple of 32: {_padded(v)[0]} x {_padded(v)[1]}). Level "
                          f"{v['level']} has stride {r['stride']}, anchor sizes "
                          f"{r['sizes']} and aspect ratios {r['aspect_ratios']} (MODEL.ANCHOR_GENERATOR of the "
                          f"config). How many anchors does {v['level']} have?")(_level(v)),
        defaults=lambda: {"cfg": Config(), "level": "p3", "input_size": (800, 1088)},
        solve=lambda v: _level(v)["anchors"],
        kind="int",
        mistakes=(Mistake(lambda v: _level(v)["anchors"] // len(_level(v)["aspect_ratios"]),
                          "you left out the aspect ratios: every anchor size comes in len(ASPECT_RATIOS) shapes "
                          "at each location."),
                  Mistake(lambda v: _level(v)["feature_size"][0] * _level(v)["feature_size"][1],
                          "that is the number of locations: each location has len(SIZES) × len(ASPECT_RATIOS) anchors."),
                  Mistake(lambda v: _level_with_stride(v, _level(v)["stride"] // 2),
                          "check the stride: p2 has stride 4, p3 8, p4 16, p5 32, p6 64."),
                  Mistake(lambda v: _level_with_stride(v, _level(v)["stride"] * 2),
                          "check the stride: p2 has stride 4, p3 8, p4 16, p5 32, p6 64."),
                  Mistake(lambda v: _level_with_stride(v, _level(v)["stride"], padded=False),
                          "the feature maps come from the PADDED input (a multiple of 32), not the resized image.")),
        hint="locations = (padded height / stride) × (padded width / stride); anchors = locations × sizes × "
             "aspect ratios.",
        explain=lambda v: (lambda r: f"Feature map {r['feature_size'][0]} x {r['feature_size'][1]} = "
                           f"{r['feature_size'][0] * r['feature_size'][1]} locations × {len(r['sizes'])} size × "
                           f"{len(r['aspect_ratios'])} ratios = {r['anchors']}.")(_level(v)),
    ),
    Exercise(
        "warmup_lr", "02_training",
        prompt=lambda v: f"With SOLVER.BASE_LR {v['cfg']['SOLVER.BASE_LR']}, WARMUP_ITERS {v['cfg']['SOLVER.WARMUP_ITERS']}, "
                         f"WARMUP_FACTOR {v['cfg']['SOLVER.WARMUP_FACTOR']} and WARMUP_METHOD "
                         f"{v['cfg']['SOLVER.WARMUP_METHOD']!r}, what is the learning rate at iteration {v['iteration']}?",
        defaults=lambda: {"cfg": _cfg(**{"SOLVER.BASE_LR": 0.00025}), "iteration": 500},
        solve=lambda v: concepts.learning_rate(v["cfg"], v["iteration"]),
        kind="number",
        mistakes=(Mistake(lambda v: v["cfg"]["SOLVER.BASE_LR"],
                          "that ignores the warm-up: before WARMUP_ITERS the rate is only part of BASE_LR."),
                  Mistake(lambda v: v["cfg"]["SOLVER.BASE_LR"] * v["iteration"] / v["cfg"]["SOLVER.WARMUP_ITERS"],
                          "close: the linear ramp starts at WARMUP_FACTOR × BASE_LR, not at 0 "
                          "(factor = WARMUP_FACTOR × (1 - α) + α, α = iteration / WARMUP_ITERS)."),
                  Mistake(lambda v: v["cfg"]["SOLVER.BASE_LR"] * v["cfg"]["SOLVER.WARMUP_FACTOR"],
                          "that is the rate at iteration 0: the linear warm-up grows the factor to 1 over WARMUP_ITERS.")),
        hint="factor = WARMUP_FACTOR × (1 - α) + α with α = iteration / WARMUP_ITERS; lr = BASE_LR × factor.",
        explain=lambda v: f"α = {v['iteration']} / {v['cfg']['SOLVER.WARMUP_ITERS']}; lr = BASE_LR × "
                          f"(WARMUP_FACTOR × (1 - α) + α) = {concepts.learning_rate(v['cfg'], v['iteration'])!r}.",
        rtol=1e-9,
    ),
    Exercise(
        "lr_after_step", "02_training",
        prompt=lambda v: f"With SOLVER.BASE_LR {v['cfg']['SOLVER.BASE_LR']}, STEPS {v['cfg']['SOLVER.STEPS']}, GAMMA "
                         f"{v['cfg']['SOLVER.GAMMA']} and WARMUP_ITERS {v['cfg']['SOLVER.WARMUP_ITERS']}, what is the "
                         f"learning rate at iteration {v['iteration']}?",
        defaults=lambda: {"cfg": _cfg(**{"SOLVER.BASE_LR": 0.015, "SOLVER.STEPS": [240, 280], "SOLVER.MAX_ITER": 300,
                                         "SOLVER.WARMUP_ITERS": 50}), "iteration": 250},
        solve=lambda v: concepts.learning_rate(v["cfg"], v["iteration"]),
        kind="number",
        mistakes=(Mistake(lambda v: v["cfg"]["SOLVER.BASE_LR"],
                          "each step in SOLVER.STEPS that the iteration has reached multiplies the rate by GAMMA."),
                  Mistake(lambda v: v["cfg"]["SOLVER.BASE_LR"] * v["cfg"]["SOLVER.GAMMA"] ** len(v["cfg"]["SOLVER.STEPS"]),
                          "only the steps at or before this iteration count, not all of SOLVER.STEPS.")),
        hint="lr = BASE_LR × GAMMA^(number of STEPS ≤ iteration), after the warm-up.",
        explain=lambda v: f"{sum(s <= v['iteration'] for s in v['cfg']['SOLVER.STEPS'])} step(s) passed: "
                          f"lr = {concepts.learning_rate(v['cfg'], v['iteration'])!r}.",
        rtol=1e-9,
    ),
    # ----------------------------------------------------------------------- 03 weight-decay ablation
    Exercise(
        "shrink_factor", "03_weight_decay_ablation",
        prompt=lambda v: f"SGD with learning rate {v['lr']} and weight decay λ = {v['weight_decay']}: by what factor "
                         f"does the decay alone shrink a weight over {v['steps']} steps?",
        defaults=lambda: {"lr": 0.00025, "weight_decay": 0.0001, "steps": 30000},
        solve=lambda v: concepts.shrink_factor(v["lr"], v["weight_decay"], v["steps"]),
        kind="number",
        mistakes=(Mistake(lambda v: 1 - v["lr"] * v["weight_decay"],
                          "that is one step: the weight is multiplied by (1 - lr·λ) at EVERY step, so raise it to "
                          "the power of the number of steps."),
                  Mistake(lambda v: (1 - v["weight_decay"]) ** v["steps"],
                          "the decay step is lr·λ·w, not λ·w: the learning rate multiplies it."),
                  Mistake(lambda v: v["lr"] * v["weight_decay"],
                          "that is the fraction removed per step; the question asks what is LEFT after all steps.")),
        hint="each step: w ← w - lr·λ·w = (1 - lr·λ)·w.",
        explain=lambda v: f"(1 - {v['lr']} × {v['weight_decay']})^{v['steps']} = "
                          f"{concepts.shrink_factor(v['lr'], v['weight_decay'], v['steps'])!r}.",
    ),
    Exercise(
        "bias_shrink_factor", "03_weight_decay_ablation",
        prompt=lambda v: f"Under SOLVER.WEIGHT_DECAY {v['cfg']['SOLVER.WEIGHT_DECAY']} and WEIGHT_DECAY_BIAS "
                         f"{v['cfg']['SOLVER.WEIGHT_DECAY_BIAS']}, at a constant learning rate "
                         f"{v['cfg']['SOLVER.BASE_LR']}, what is left of a BIAS after {v['cfg']['SOLVER.MAX_ITER']} "
                         "steps of decay alone?",
        defaults=lambda: {"cfg": _cfg(**{"SOLVER.BASE_LR": 0.00025, "SOLVER.WEIGHT_DECAY_BIAS": 0.01,
                                         "SOLVER.MAX_ITER": 30000})},
        solve=lambda v: concepts.shrink_factor(v["cfg"]["SOLVER.BASE_LR"], concepts.weight_decay_groups(v["cfg"])["biases"],
                                               v["cfg"]["SOLVER.MAX_ITER"]),
        kind="number",
        mistakes=(Mistake(lambda v: concepts.shrink_factor(v["cfg"]["SOLVER.BASE_LR"], v["cfg"]["SOLVER.WEIGHT_DECAY"],
                                                           v["cfg"]["SOLVER.MAX_ITER"]),
                          "biases form their own parameter group: they get SOLVER.WEIGHT_DECAY_BIAS when it is set, "
                          "not WEIGHT_DECAY."),),
        hint="(1 - lr·λ_bias)^T, with λ_bias the bias group's decay.",
        explain=lambda v: f"λ_bias = {concepts.weight_decay_groups(v['cfg'])['biases']}: "
                          f"(1 - lr·λ_bias)^T = {concepts.shrink_factor(v['cfg']['SOLVER.BASE_LR'], concepts.weight_decay_groups(v['cfg'])['biases'], v['cfg']['SOLVER.MAX_ITER'])!r}.",
    ),
    Exercise(
        "norm_weight_decay", "03_weight_decay_ablation",
        prompt=lambda v: f"The config sets SOLVER.WEIGHT_DECAY {v['cfg']['SOLVER.WEIGHT_DECAY']}, WEIGHT_DECAY_BIAS "
                         f"{v['cfg']['SOLVER.WEIGHT_DECAY_BIAS']} and WEIGHT_DECAY_NORM {v['cfg']['SOLVER.WEIGHT_DECAY_NORM']}. "
                         "Which weight decay do the WEIGHTS (scales) of the normalisation layers get?",
        defaults=lambda: {"cfg": _cfg(**{"SOLVER.WEIGHT_DECAY_BIAS": 0.01})},
        solve=lambda v: concepts.weight_decay_groups(v["cfg"])["norm weights"],
        kind="number",
        mistakes=(Mistake(lambda v: v["cfg"]["SOLVER.WEIGHT_DECAY"],
                          "normalisation layers form their own parameter group, decayed by SOLVER.WEIGHT_DECAY_NORM "
                          "(0 by default: shrinking a norm's scale changes what the layer computes)."),
                  Mistake(lambda v: concepts.weight_decay_groups(v["cfg"])["biases"],
                          "WEIGHT_DECAY_BIAS is for the biases (norm biases included); norm WEIGHTS get WEIGHT_DECAY_NORM.")),
        hint="detectron2's parameter groups: weights, biases, norm layers.",
        explain=lambda v: f"Norm weights get WEIGHT_DECAY_NORM = {v['cfg']['SOLVER.WEIGHT_DECAY_NORM']}; groups: "
                          f"{concepts.weight_decay_groups(v['cfg'])}.",
    ),
    Exercise(
        "linear_scaling_lr", "03_weight_decay_ablation",
        prompt=lambda v: f"A schedule tuned at batch {v['reference_batch']} uses learning rate {v['reference_lr']}. By the "
                         f"linear scaling rule (Goyal et al.), what rate suits batch {v['batch']}?",
        defaults=lambda: {"reference_lr": 0.02, "reference_batch": 16, "batch": 2},
        solve=lambda v: v["reference_lr"] * v["batch"] / v["reference_batch"],
        kind="number",
        mistakes=(Mistake(lambda v: v["reference_lr"],
                          "the rule scales the rate with the batch size: a smaller batch takes a proportionally "
                          "smaller rate."),
                  Mistake(lambda v: v["reference_lr"] * v["reference_batch"] / v["batch"],
                          "the ratio is upside down: a smaller batch takes a SMALLER rate (lr × batch / reference batch).")),
        hint="lr = reference lr × batch / reference batch.",
        explain=lambda v: f"{v['reference_lr']} × {v['batch']} / {v['reference_batch']} = "
                          f"{v['reference_lr'] * v['batch'] / v['reference_batch']!r}.",
    ),
    # ----------------------------------------------------------------------- 04 inference
    Exercise(
        "rle_4x4", "04_inference",
        prompt=lambda v: "Write COCO's uncompressed RLE counts (run lengths, background run first) of the mask\n"
                         + "\n".join("    " + " ".join(str(p) for p in row) for row in v["mask"]),
        defaults=lambda: {"mask": [[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]]},
        solve=lambda v: concepts.rle_by_hand(v["mask"]),
        kind="ints",
        mistakes=(Mistake(lambda v: concepts.rle_example(v["mask"])["runs_row_major"],
                          "you read the mask row by row: COCO RLE reads it column by column (column-major, as "
                          "Fortran stores arrays): down the first column, then down the second, ..."),
                  Mistake(lambda v: concepts.rle_by_hand(v["mask"])[1:],
                          "the counts always start with a BACKGROUND run: write 0 first when the first pixel is "
                          "foreground.")),
        diagnose=_rle_sum_hint,
        hint="read the pixels column by column and write the length of each run, starting with background.",
        explain=lambda v: (lambda e: f"Column-major pixels {e['column_major']} give runs {e['runs']}; pycocotools "
                           f"compresses them to {e['counts']!r} (the same string as encoding the mask: {e['agree']}).")(
                               concepts.rle_example(v["mask"])),
    ),
    Exercise(
        "score_threshold_effect", "04_inference",
        prompt=lambda v: f"One class has {v['num_gt']} objects and detections (score, true positive?) "
                         f"{v['detections']}. Raising the score threshold from {v['thresholds'][0]} to "
                         f"{v['thresholds'][1]}: does its AP go 'up', 'down' or stay the 'same'?",
        defaults=lambda: {"detections": [(0.95, True), (0.9, False), (0.7, True), (0.45, True), (0.3, False),
                                         (0.1, True)], "num_gt": 5, "thresholds": (0.05, 0.5)},
        solve=_threshold_effect,
        kind="choice", choices=("up", "down", "same"),
        mistakes=(Mistake(lambda v: "up",
                          "dropping low-score detections only cuts the tail of the ranked list: precision at the "
                          "recalls you keep is unchanged and the recall of the dropped true positives is lost, so "
                          "AP cannot rise (this is why mAP wants a LOW threshold)."),
                  Mistake(lambda v: "same",
                          "the true positives scoring below the new threshold added recall: losing them lowers AP.")),
        hint="compute the precision-recall curve with and without the low-score detections.",
        explain=lambda v: f"AP at {v['thresholds'][0]}: {_apply_threshold(v, v['thresholds'][0])!r}; at "
                          f"{v['thresholds'][1]}: {_apply_threshold(v, v['thresholds'][1])!r}.",
    ),
    Exercise(
        "channel_order", "04_inference",
        prompt=lambda v: f"PIL reads a pixel as (R, G, B) = {tuple(v['pixel_rgb'])}. The model was trained on "
                         f"{v['input_format']} images. Which values must its channels 0, 1, 2 hold?",
        defaults=lambda: {"input_format": "BGR", "pixel_rgb": (200, 30, 10)},
        solve=lambda v: list(v["pixel_rgb"])[::-1] if v["input_format"] == "BGR" else list(v["pixel_rgb"]),
        kind="numbers",
        mistakes=(Mistake(lambda v: list(v["pixel_rgb"]) if v["input_format"] == "BGR" else list(v["pixel_rgb"])[::-1],
                          "feed the channel order the model was trained on: BGR means channel 0 is blue, so an RGB "
                          "image is reversed (image[:, :, ::-1]); the homework fed RGB to a BGR-trained model."),),
        hint="match the channel order the model was trained on (detectron2: INPUT.FORMAT; torchvision: RGB).",
        explain=lambda v: f"Trained on {v['input_format']}: channels hold "
                          f"{list(v['pixel_rgb'])[::-1] if v['input_format'] == 'BGR' else list(v['pixel_rgb'])}.",
    ),
    Exercise(
        "category_id", "04_inference",
        prompt=lambda v: f"detectron2 predicts class index {v['pred_class']} (pred_classes are 0-based over the "
                         "categories in order). Which category_id goes into the submission? Categories: "
                         + ", ".join(f"{c['id']}: {c['name']}" for c in v["categories"]),
        defaults=lambda: {"categories": [{"id": k + 1, "name": n} for k, n in enumerate(VOC_CLASSES)], "pred_class": 14},
        solve=lambda v: v["categories"][v["pred_class"]]["id"],
        kind="int",
        mistakes=(Mistake(lambda v: v["pred_class"],
                          "off by one: pred_classes index the categories from 0, category ids start at 1 "
                          "(the homework wrote pred_class + 1)."),),
        hint="look the index up in the category list.",
        explain=lambda v: f"Index {v['pred_class']} is {v['categories'][v['pred_class']]['name']!r}, "
                          f"id {v['categories'][v['pred_class']]['id']}.",
    ),
    # ----------------------------------------------------------------------- 05 visualization
    Exercise(
        "precision_at_rank", "05_visualization",
        prompt=lambda v: f"A class has {v['num_gt']} objects; its detections, in descending score, are true positives "
                         f"{v['is_tp']}. What is the precision after the first {v['rank']} detections?",
        defaults=lambda: {"is_tp": [True, False, True, True, False, True], "num_gt": 5, "rank": 4},
        solve=lambda v: _tp_at(v) / v["rank"],
        kind="number",
        mistakes=(Mistake(lambda v: _tp_at(v) / v["num_gt"],
                          "that is the recall (true positives / objects); precision divides by the detections so far."),
                  Mistake(lambda v: (v["rank"] - _tp_at(v)) / v["rank"],
                          "that is the share of false positives: precision counts the true ones.")),
        hint="precision at rank k = true positives among the first k / k.",
        explain=lambda v: f"{_tp_at(v)} true positives among the first {v['rank']}: {_tp_at(v) / v['rank']!r}.",
    ),
    Exercise(
        "recall_at_rank", "05_visualization",
        prompt=lambda v: f"A class has {v['num_gt']} objects; its detections, in descending score, are true positives "
                         f"{v['is_tp']}. What is the recall after the first {v['rank']} detections?",
        defaults=lambda: {"is_tp": [True, False, True, True, False, True, True], "num_gt": 6, "rank": 4},
        solve=lambda v: _tp_at(v) / v["num_gt"],
        kind="number",
        mistakes=(Mistake(lambda v: _tp_at(v) / v["rank"],
                          "that is the precision; recall divides by the number of OBJECTS, found or not."),
                  Mistake(lambda v: _tp_at(v) / sum(bool(t) for t in v["is_tp"]),
                          "recall divides by all objects of the class, not only by those some detection found.")),
        hint="recall at rank k = true positives among the first k / number of objects.",
        explain=lambda v: f"{_tp_at(v)} of {v['num_gt']} objects found: {_tp_at(v) / v['num_gt']!r}.",
    ),
    Exercise(
        "ap50_vs_ap", "05_visualization",
        prompt=lambda v: f"A class has {v['num_gt']} objects; its detections have scores {v['scores']} and IoUs "
                         f"{v['ious']} with their objects. Which is larger: 'AP50', 'AP' (@[.5:.95]) or are they "
                         "'equal'?",
        defaults=lambda: {"scores": [0.9, 0.8, 0.7, 0.6], "ious": [0.92, 0.55, 0.81, 0.67], "num_gt": 5},
        solve=_ap_compare,
        kind="choice", choices=("AP50", "AP", "equal"),
        mistakes=(Mistake(lambda v: "AP",
                          "a detection that counts at IoU 0.95 counts at 0.5 too: AP@[.5:.95] averages AP over "
                          "stricter thresholds, so it is never above AP50 (the leaderboard's mAP@0.5)."),
                  Mistake(lambda v: "equal",
                          "they are equal only when every true positive has IoU ≥ 0.95; these do not.")),
        hint="a detection is a true positive at threshold t when its IoU ≥ t.",
        explain=lambda v: (lambda r: f"AP50 = {r['AP50']!r}, AP75 = {r['AP75']!r}, AP@[.5:.95] = {r['AP']!r}.")(
            concepts.ap_by_iou(v["scores"], v["ious"], v["num_gt"])),
    ),
    Exercise(
        "error_type", "05_visualization",
        prompt=lambda v: f"A false positive overlaps an object of its own class at IoU {v['iou_same']} and objects of "
                         f"other classes at most at IoU {v['iou_other']}. Which TIDE error is it: "
                         + ", ".join(repr(k) for k in ERROR_TYPES) + "?",
        defaults=lambda: {"iou_same": 0.3, "iou_other": 0.05},
        solve=lambda v: error_type(v["iou_same"], v["iou_other"]),
        kind="choice", choices=ERROR_TYPES,
        mistakes=(Mistake(lambda v: "background",
                          "background means IoU below 0.1 with EVERY object; this one overlaps an object more."),
                  Mistake(lambda v: "missed",
                          "'missed' is an object no detection found: it is counted on the ground-truth side, and "
                          "this is a detection."),
                  Mistake(lambda v: "duplicate",
                          "a duplicate overlaps an object that another detection already found at IoU ≥ 0.5."),
                  Mistake(lambda v: "both",
                          "'both' is the wrong class AND a poor fit; check which object it overlaps most."),
                  Mistake(lambda v: "classification",
                          "a classification error overlaps an object of ANOTHER class at IoU ≥ 0.5."),
                  Mistake(lambda v: "localisation",
                          "a localisation error has the right class and 0.1 ≤ IoU < 0.5 with its object.")),
        hint="compare the IoUs with the background (0.1) and foreground (0.5) thresholds.",
        explain=lambda v: f"Best IoU {v['iou_same']} with its own class, {v['iou_other']} with others; checked in order "
                          "background (all < 0.1), localisation (0.1 ≤ own < 0.5), classification (other ≥ 0.5), "
                          f"duplicate (own ≥ 0.5), both: {error_type(v['iou_same'], v['iou_other'])!r}.",
    ),
]

EXERCISES: dict[str, Exercise] = {ex.name: ex for ex in _EXERCISES}
