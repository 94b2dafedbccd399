"""SOLVER.AMP.ENABLED on the CPU: bfloat16 autocast in the torchvision engine's training step and prediction."""

from __future__ import annotations

import pytest
import torch

from helpers import data, experiment
from helpers.config import load_config
from helpers.engines import torchvision_engine as tve
from helpers.engines.torchvision_engine import device as tv_device, loop as tv_loop, predict as tv_predict
from tiny_schedule import tiny_overrides

CPU = torch.device("cpu")

# bfloat16 keeps 8 significant bits (a relative rounding of 2^-9, about 0.2 %, per operation). Through the
# backbone, FPN and heads these roundings add up to well under 1 % of a loss here (measured: <= 0.02 %
# at random init); 2 % allows for that with margin, while a head whose boxes are decoded in bfloat16
# (proposals rounded to whole pixels) moved loss_box_reg by about 18 % in the same step.
# The absolute part covers loss terms near zero (loss_rpn_box_reg is about 0.01).
REL_TOL, ABS_TOL = 2e-2, 1e-3


def _first_step(project_root, demo_root, run_dir, amp: bool) -> tuple[dict, dict]:
    """The losses of the engine's first training step, and the dtypes some layers computed in."""
    cfg, splits, run_dir = experiment.setup_run(project_root / "configs" / "demo.yaml",
                                                tiny_overrides(**{"SOLVER.AMP.ENABLED": str(amp)}),
                                                data_root=demo_root, run_dir=run_dir)
    trainer = tv_loop._Trainer(cfg, splits, run_dir, tv_device._Dist(CPU))
    assert trainer.build(None) == 0
    dtypes = _record_dtypes(trainer.model)
    _, images, targets = next(iter(trainer._loader(0)))
    losses = trainer._step(0, images, targets)
    assert trainer.scaler.is_enabled() is False  # bfloat16 needs no loss scaling
    return losses, dtypes


def _record_dtypes(model: torch.nn.Module) -> dict:
    """The dtype of the first tensor each watched layer put out, filled in as the model runs."""
    watched = {"res2": model.backbone.body.layer1, "rpn conv": model.rpn.head.conv, "rpn head": model.rpn.head,
               "box head": model.roi_heads.box_head, "box predictor": model.roi_heads.box_predictor,
               "mask head": model.roi_heads.mask_head, "mask predictor": model.roi_heads.mask_predictor}
    dtypes: dict = {}

    def first_tensor(out):
        while isinstance(out, (list, tuple)):
            out = out[0]
        return out

    def hook(name):
        def record(_module, _inputs, out) -> None:  # returns None: the output is kept as it is
            dtypes.setdefault(name, first_tensor(out).dtype)
        return record

    for name, module in watched.items():
        module.register_forward_hook(hook(name))
    return dtypes


def test_bf16_training_step_matches_fp32_within_bf16_precision(project_root, demo_root, tmp_path):
    full, full_dtypes = _first_step(project_root, demo_root, tmp_path / "fp32", amp=False)
    mixed, mixed_dtypes = _first_step(project_root, demo_root, tmp_path / "bf16", amp=True)
    assert set(full_dtypes.values()) == {torch.float32}
    # the convs and FC layers of every part ran in bfloat16; the heads hand float32 to box decoding and losses
    assert {k: mixed_dtypes[k] for k in ("res2", "rpn conv", "box head", "mask head")} == \
        dict.fromkeys(("res2", "rpn conv", "box head", "mask head"), torch.bfloat16)
    assert {k: mixed_dtypes[k] for k in ("rpn head", "box predictor", "mask predictor")} == \
        dict.fromkeys(("rpn head", "box predictor", "mask predictor"), torch.float32)
    loss_terms = [k for k in full if k.startswith("loss_")]
    assert len(loss_terms) == 5 and mixed["lr"] == full["lr"]
    for key in loss_terms:
        assert mixed[key] == pytest.approx(full[key], rel=REL_TOL, abs=ABS_TOL), key
    assert any(mixed[k] != full[k] for k in loss_terms)  # bfloat16 really ran: the values are not bit-equal


def test_bf16_prediction_returns_float32_from_every_head(project_root, demo_root):
    cfg = tve.prepare_config(load_config(project_root / "configs" / "demo.yaml",
                                         tiny_overrides(**{"SOLVER.AMP.ENABLED": "True", "MODEL.DEVICE": "cpu"})))
    split = data.load_split(demo_root / data.TEST_JSON, check_images=False)
    torch.manual_seed(0)
    model = tv_device._to_device(tve.build_model(cfg, len(split.categories), load_weights=False), CPU).eval()
    model.roi_heads.score_thresh = 0.0  # keep every detection, so the mask head runs
    dtypes = _record_dtypes(model)
    outputs: list = []
    model.register_forward_hook(lambda _m, _i, out: outputs.extend(out) and None)
    predictor = tv_predict._predictor(model, cfg, split.categories, CPU)
    image = data.read_image(split.image_path(split.images[0]))
    (inst,) = predictor([image])
    assert dtypes["res2"] == dtypes["box head"] == dtypes["mask head"] == torch.bfloat16
    assert dtypes["rpn head"] == dtypes["box predictor"] == dtypes["mask predictor"] == torch.float32
    (out,) = outputs
    assert len(out["boxes"]) > 0
    assert out["boxes"].dtype == out["scores"].dtype == torch.float32
    assert out["masks"].dtype == torch.bool  # the predictor's model pastes thresholded float32 probabilities
    assert inst.boxes.dtype.name == inst.scores.dtype.name == "float32" and inst.masks.dtype == bool
    assert inst.masks.shape == (len(inst), *image.shape[:2])


def test_amp_dtype_per_device(project_root):
    on = load_config(project_root / "configs" / "demo.yaml", ["SOLVER.AMP.ENABLED", "True"])
    off = load_config(project_root / "configs" / "demo.yaml")
    assert tv_device._amp_dtype(on, CPU) == torch.bfloat16 and tv_device._amp_dtype(on, torch.device("cuda")) == torch.float16
    assert tv_device._amp_dtype(off, CPU) is None and tv_device._amp_dtype(off, torch.device("cuda")) is None


def test_anchors_stay_float32_under_autocast_at_the_homework_size(project_root):
    """torchvision makes anchors in the feature maps' dtype: bfloat16 under autocast, which rounds an
    800x1088 input's coordinates to multiples of up to 8 px. The engine's anchors are float32 and equal
    to full precision's; torchvision's own generator shows what that guards against."""
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.image_list import ImageList

    cfg = tve.prepare_config(load_config(project_root / "configs" / "demo.yaml", tiny_overrides()))
    generator = tve.build_model(cfg, 3, load_weights=False).rpn.anchor_generator
    images = ImageList(torch.zeros(2, 3, 800, 1088), [(800, 1067), (750, 1088)])
    shapes = [(2, 8, 800 // s, 1088 // s) for s in (4, 8, 16, 32, 64)]
    full = [torch.zeros(shape) for shape in shapes]
    half = [torch.zeros(shape, dtype=torch.bfloat16) for shape in shapes]
    reference = generator(images, full)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = generator(images, half)
    assert all(m.dtype == torch.float32 and torch.equal(m, r) for m, r in zip(mixed, reference))
    assert reference[0].abs().max() > 1000  # coordinates where bfloat16 steps by 8
    stock = AnchorGenerator(generator.sizes, generator.aspect_ratios)
    assert stock(images, half)[0].dtype == torch.bfloat16
    assert not torch.equal(stock(images, half)[0].float(), reference[0])


def test_amp_on_a_cpu_without_native_bfloat16_warns_once(project_root, tmp_path, monkeypatch, caplog):
    from helpers.engines import base

    with_amx, without = tmp_path / "amx", tmp_path / "old"
    with_amx.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f amx_bf16 amx_tile\n")
    without.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f\n")
    assert tv_device.native_bf16_cpu(str(with_amx)) is True and tv_device.native_bf16_cpu(str(without)) is False
    assert tv_device.native_bf16_cpu(str(tmp_path / "absent")) is None
    on = load_config(project_root / "configs" / "demo.yaml", ["SOLVER.AMP.ENABLED", "True"])
    monkeypatch.setattr(base, "_warned", set())
    monkeypatch.setattr(tv_device, "CPUINFO", str(with_amx))
    with caplog.at_level("WARNING"):
        assert tv_device._amp_dtype(on, CPU) == torch.bfloat16
    assert "emulated" not in caplog.text
    monkeypatch.setattr(tv_device, "CPUINFO", str(without))
    with caplog.at_level("WARNING"):
        assert tv_device._amp_dtype(on, CPU) == torch.bfloat16  # still bfloat16: the user asked for it
        tv_device._amp_dtype(on, CPU)
    assert caplog.text.count("without AMX or AVX512-BF16") == 1
