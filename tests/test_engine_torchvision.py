"""The torchvision engine on the CPU: run folder, bit-exact kill-and-resume, predictor, errors, CLI."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import data, experiment, runs
from helpers.config import load_config
from helpers.engines import torchvision_engine as tve
from helpers.engines.torchvision_engine import loop as tv_loop, predict as tv_predict, train_data as tv_data
from helpers.errors import ConfigError, EngineError
from engine_checks import assert_instances_fit_images, assert_run_folder_layout, assert_same_run
from tiny_schedule import MAX_ITER, tiny_overrides

pytestmark = pytest.mark.slow

def cli(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "helpers", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def train_command(project_root: Path, demo_root: Path, run_dir: Path, *flags: str, **overrides: str) -> list[str]:
    return [sys.executable, "-m", "helpers", "train", "--config", str(project_root / "configs" / "demo.yaml"),
            "--data", str(demo_root), "--run-dir", str(run_dir), *flags, *tiny_overrides(**overrides)]


@pytest.fixture(scope="module")
def reference_run(project_root, demo_root, tmp_path_factory) -> Path:
    """An uninterrupted CLI training run: the layout checks and the resume reference."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    done = subprocess.run(train_command(project_root, demo_root, run_dir), cwd=project_root, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return run_dir


# ------------------------------------------------------------------------------- training


def test_training_run_folder_layout(reference_run):
    assert_run_folder_layout(reference_run, set(), {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness",
                                                    "loss_rpn_box_reg", "total_loss", "lr", "time", "data_time"})
    cfg = load_config(reference_run / runs.CONFIG)
    assert cfg["SOLVER.MAX_ITER"] == MAX_ITER and cfg["MODEL.RESNETS.NORM"] == "BN"  # prepared: random init


def test_learning_rate_follows_warmup_and_steps(project_root):
    cfg = load_config(project_root / "configs" / "homework.yaml",
                      ["SOLVER.BASE_LR", "1.0", "SOLVER.WARMUP_ITERS", "10", "SOLVER.WARMUP_FACTOR", "0.1",
                       "SOLVER.STEPS", "(20, 30)", "SOLVER.GAMMA", "0.5"])
    assert tv_loop.learning_rate(cfg, 0) == pytest.approx(0.1)
    assert tv_loop.learning_rate(cfg, 5) == pytest.approx(0.55)
    assert [tv_loop.learning_rate(cfg, i) for i in (10, 19, 20, 29, 30)] == pytest.approx([1, 1, 0.5, 0.5, 0.25])
    cfg["SOLVER.WARMUP_METHOD"] = "constant"
    assert tv_loop.learning_rate(cfg, 9) == pytest.approx(0.1)


def test_param_groups_follow_detectron2(project_root):
    cfg = tve.prepare_config(load_config(project_root / "configs" / "demo.yaml",
                                         ["SOLVER.WEIGHT_DECAY_NORM", "0.0", "SOLVER.BIAS_LR_FACTOR", "2.0"]))
    model = tve.build_model(cfg, 5, load_weights=False)
    groups = {(g["lr_factor"], g["weight_decay"]): g["params"] for g in tv_loop._param_groups(cfg, model)}
    norm_weight = model.backbone.body.bn1.weight
    conv_weight, bias = model.backbone.body.conv1.weight, model.rpn.head.conv[0][0].bias
    assert any(p is norm_weight for p in groups[(1.0, 0.0)])
    assert any(p is conv_weight for p in groups[(1.0, 1e-4)])
    assert any(p is bias for p in groups[(2.0, 0.01)])  # WEIGHT_DECAY_BIAS 0.01 from homework.yaml
    assert sum(len(ps) for ps in groups.values()) == sum(p.requires_grad for p in model.parameters())


def _layer_counts(module: torch.nn.Module) -> dict[str, int]:
    kinds = {"conv": torch.nn.Conv2d, "linear": torch.nn.Linear, "gn": torch.nn.GroupNorm, "bn": torch.nn.BatchNorm2d}
    return {name: sum(isinstance(m, kind) for m in module.modules()) for name, kind in kinds.items()}


def test_heads_and_fpn_follow_detectron2_head_keys(project_root):
    cfg = tve.prepare_config(load_config(project_root / "configs" / "demo.yaml", [
        "MODEL.FPN.OUT_CHANNELS", "64", "MODEL.FPN.NORM", "GN",
        "MODEL.ROI_BOX_HEAD.NUM_CONV", "3", "MODEL.ROI_BOX_HEAD.CONV_DIM", "32", "MODEL.ROI_BOX_HEAD.NORM", "GN",
        "MODEL.ROI_BOX_HEAD.NUM_FC", "1", "MODEL.ROI_BOX_HEAD.FC_DIM", "48",
        "MODEL.ROI_MASK_HEAD.NUM_CONV", "2", "MODEL.ROI_MASK_HEAD.CONV_DIM", "32", "MODEL.ROI_MASK_HEAD.NORM", "BN"]))
    model = tve.build_model(cfg, 5, load_weights=False)
    heads = model.roi_heads
    assert _layer_counts(heads.box_head) == {"conv": 3, "linear": 1, "gn": 3, "bn": 0}
    assert heads.box_predictor.cls_score.in_features == 48
    assert _layer_counts(heads.mask_head) == {"conv": 2, "linear": 0, "gn": 0, "bn": 2}
    fpn = _layer_counts(model.backbone.fpn)
    assert fpn["conv"] == 8 and fpn["gn"] == 8  # a lateral and an output conv per level, each normalised
    assert all(m.num_groups == 32 for m in model.modules() if isinstance(m, torch.nn.GroupNorm))
    image = torch.rand(3, 96, 128)
    model.eval()
    with torch.inference_mode():
        out = model([image])[0]
    assert set(out) == {"boxes", "labels", "scores", "masks"}


@pytest.mark.parametrize("box, mask", [(None, None), ("2", "3")])
def test_pooler_sampling_ratio_keys_reach_both_roialigns(project_root, box, mask):
    overrides = [] if box is None else ["MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO", box,
                                        "MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO", mask]
    cfg = tve.prepare_config(load_config(project_root / "configs" / "homework.yaml", ["MODEL.WEIGHTS", "", *overrides]))
    heads = tve.build_model(cfg, 20, load_weights=False).roi_heads
    # detectron2's default 0 is adaptive sampling, as torchvision's 0
    assert (heads.box_roi_pool.sampling_ratio, heads.mask_roi_pool.sampling_ratio) == (int(box or 0), int(mask or 0))


def test_default_heads_are_detectron2s(project_root):
    cfg = tve.prepare_config(load_config(project_root / "configs" / "homework.yaml", ["MODEL.WEIGHTS", ""]))
    model = tve.build_model(cfg, 20, load_weights=False)
    assert _layer_counts(model.roi_heads.box_head) == {"conv": 0, "linear": 2, "gn": 0, "bn": 0}
    assert model.roi_heads.box_predictor.cls_score.in_features == 1024
    assert _layer_counts(model.roi_heads.mask_head) == {"conv": 4, "linear": 0, "gn": 0, "bn": 0}
    assert _layer_counts(model.backbone.fpn)["gn"] == 0


def test_box_head_without_fc_layers_feeds_the_predictor_its_flat_conv_output(project_root):
    cfg = tve.prepare_config(load_config(project_root / "configs" / "demo.yaml", [
        "MODEL.ROI_BOX_HEAD.NUM_CONV", "1", "MODEL.ROI_BOX_HEAD.CONV_DIM", "32", "MODEL.ROI_BOX_HEAD.NUM_FC", "0"]))
    model = tve.build_model(cfg, 5, load_weights=False)
    assert model.roi_heads.box_predictor.cls_score.in_features == 32 * 7 * 7


def test_class_agnostic_box_and_mask_are_shared_by_every_class(project_root, demo_root):
    cfg = tve.prepare_config(load_config(project_root / "configs" / "demo.yaml", [
        "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG", "True", "MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK", "True"]))
    model = tve.build_model(cfg, 5, load_weights=False)
    box, mask = model.roi_heads.box_predictor, model.roi_heads.mask_predictor
    assert box.bbox_pred.out_features == 4 and mask.mask_fcn_logits.out_channels == 1
    scores, deltas = box(torch.randn(3, box.cls_score.in_features))
    assert scores.shape == (3, 6) and deltas.shape == (3, 24)
    assert torch.equal(deltas[:, :4], deltas[:, 8:12])
    logits = mask(torch.randn(2, mask.conv5_mask.in_channels, 14, 14))
    assert logits.shape == (2, 6, 28, 28) and torch.equal(logits[:, 1], logits[:, 5])
    # one training step's losses reach the shared layers
    split = data.load_split(demo_root / data.TRAIN_JSON, check_images=False)
    sample = tv_data._TrainImages(split, True, False, 0)[(0, 0)]
    losses = model([sample[1].float() / 255], [sample[2]])
    sum(losses.values()).backward()
    assert box.bbox_pred.weight.grad.abs().sum() > 0 and mask.mask_fcn_logits.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("overrides, message", [
    (["MODEL.ROI_BOX_HEAD.NUM_CONV", "0", "MODEL.ROI_BOX_HEAD.NUM_FC", "0"], "at least one layer"),
    (["MODEL.FPN.NORM", "GN", "MODEL.FPN.OUT_CHANNELS", "48"], "divisible by 32"),
])
def test_impossible_heads_are_config_errors(project_root, overrides, message):
    cfg = tve.prepare_config(load_config(project_root / "configs" / "demo.yaml", overrides))
    with pytest.raises(ConfigError, match=message):
        tve.build_model(cfg, 5, load_weights=False)


def _kill_when(command: list[str], cwd: Path, ready, timeout: float = 120) -> None:
    """Start ``command`` and SIGKILL it as soon as ``ready()`` is true; fail if it ends first."""
    proc = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
            assert time.monotonic() < deadline, "timed out waiting to kill the run"
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()


def _resume(project_root: Path, demo_root: Path, run_dir: Path) -> None:
    done = subprocess.run(train_command(project_root, demo_root, run_dir, "--resume"), cwd=project_root,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


def test_killed_after_a_checkpoint_resumes_bit_identically(project_root, demo_root, reference_run, tmp_path):
    run_dir = tmp_path / "run"
    _kill_when(train_command(project_root, demo_root, run_dir), project_root,
               lambda: runs.last_checkpoint(run_dir) is not None)
    assert not (run_dir / runs.FINAL).exists()
    _resume(project_root, demo_root, run_dir)
    assert_same_run(run_dir, reference_run)


def test_killed_while_writing_a_checkpoint_resumes_bit_identically(project_root, demo_root, reference_run, tmp_path):
    run_dir = tmp_path / "run"

    def writing_checkpoint() -> bool:
        return run_dir.is_dir() and any(n.startswith(".model_") and n.endswith(".tmp") for n in os.listdir(run_dir))

    _kill_when(train_command(project_root, demo_root, run_dir), project_root, writing_checkpoint)
    assert not (run_dir / runs.FINAL).exists()
    _resume(project_root, demo_root, run_dir)
    assert_same_run(run_dir, reference_run)


def test_nan_loss_stops_with_the_iteration_and_keeps_the_last_checkpoint(project_root, demo_root, tmp_path, monkeypatch):
    real = tv_loop.learning_rate
    monkeypatch.setattr(tv_loop, "learning_rate", lambda cfg, it: float("nan") if it >= 3 else real(cfg, it))
    run_dir = tmp_path / "run"
    with pytest.raises(EngineError, match=r"nan or inf at iteration 4 .*model_0000002\.pth"):
        experiment.train(project_root / "configs" / "demo.yaml", tiny_overrides(), data_root=demo_root,
                         run_dir=run_dir, progress=False)
    assert runs.last_checkpoint(run_dir) == run_dir / "model_0000002.pth"
    assert not (run_dir / runs.FINAL).exists() and not (run_dir / "model_0000005.pth").exists()
    assert [r["iteration"] for r in runs.read_metrics(run_dir)] == [0, 1, 2, 3]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="this torch is built without torch.distributed")
def test_two_process_ddp_on_cpu(project_root, demo_root, tmp_path):
    """torchrun-style: WORLD_SIZE 2, gloo; rank 0 writes a complete run folder."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run_dir = tmp_path / "run"
    procs = []
    for rank in range(2):
        env = {**os.environ, "WORLD_SIZE": "2", "RANK": str(rank), "LOCAL_RANK": str(rank),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen(train_command(project_root, demo_root, run_dir, **{"SOLVER.MAX_ITER": "4"}),
                                      cwd=project_root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    try:
        codes = [p.wait(timeout=300) for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        pytest.fail("2-process DDP did not finish in 300 s: the ranks are likely deadlocked (a 4-iteration run "
                    "takes under a minute on 2 cores)")
    assert codes == [0, 0], procs[0].stderr.read().decode()[-2000:] + procs[1].stderr.read().decode()[-2000:]
    assert [r["iteration"] for r in runs.read_metrics(run_dir)] == [0, 1, 2, 3]
    assert (run_dir / runs.FINAL).is_file() and runs.is_finished(run_dir)


def test_only_rank_0_writes_the_run_folder(project_root, demo_root, tmp_path, monkeypatch):
    """A rank other than 0 names the split files and the run folder but writes neither."""
    monkeypatch.setenv("RANK", "1")
    run_dir = tmp_path / "run"
    cfg, splits, resolved = experiment.setup_run(project_root / "configs" / "demo.yaml", tiny_overrides(),
                                                 data_root=demo_root, run_dir=run_dir)
    assert resolved == run_dir.resolve() and splits.train == run_dir.resolve() / "data" / "train.json"
    assert not run_dir.exists()
    monkeypatch.setenv("RANK", "0")
    experiment.setup_run(project_root / "configs" / "demo.yaml", tiny_overrides(), data_root=demo_root, run_dir=run_dir)
    assert splits.train.is_file() and splits.val.is_file()


# ----------------------------------------------------------------------------- prediction


def test_predictor_returns_instances_with_dataset_ids(reference_run, demo_root):
    predictor = experiment.load_predictor(reference_run, score_thresh=0.0)
    split = data.load_split(demo_root / data.TEST_JSON, check_images=False)
    images = [data.read_image(split.image_path(img)) for img in split.images[:2]]
    assert predictor.device == "cpu"
    assert_instances_fit_images(images, predictor(images), {c["id"] for c in split.categories})


def test_labels_map_back_to_category_ids():
    out = {"boxes": torch.tensor([[0.0, 0, 2, 2], [1, 1, 3, 3]]), "scores": torch.tensor([0.9, 0.4]),
           "labels": torch.tensor([2, 1]), "masks": torch.tensor([0.7, 0.2]).reshape(2, 1, 1, 1).expand(2, 1, 4, 5)}
    inst = tv_predict._instances(out, (4, 5), np.array([10, 30]))
    assert inst.category_ids.tolist() == [30, 10]
    assert inst.masks[0].all() and not inst.masks[1].any()


def test_architecture_lists_the_pipeline_in_order(project_root, demo_root):
    cfg = tve.prepare_config(load_config(project_root / "configs" / "demo.yaml"))
    split = data.load_split(demo_root / data.TRAIN_JSON, check_images=False)
    image = data.read_image(split.image_path(split.images[0]))
    rows = tve.architecture(cfg, split.categories, image)
    stages = [r["stage"] for r in rows]
    assert stages[:6] == ["input", "backbone.stem", "backbone.res2", "backbone.res3", "backbone.res4", "backbone.res5"]
    assert stages.index("fpn.p6") < stages.index("rpn.proposals") < stages.index("roi_heads.box_head") \
        < stages.index("roi_heads.mask_head") < stages.index("output.masks")
    shapes = {r["stage"]: r["shape"] for r in rows}
    assert shapes["fpn.p2"][1] == cfg["MODEL.FPN.OUT_CHANNELS"]
    assert shapes["roi_heads.mask_predictor"][1:] == [len(split.categories) + 1, 28, 28]
    assert shapes["output.masks"][2:] == list(image.shape[:2])


# -------------------------------------------------------------------------------- weights and errors


def test_imagenet_weights_offline_fail_fast_with_instructions(project_root, offline):
    cfg = load_config(project_root / "configs" / "demo.yaml", ["MODEL.WEIGHTS", "imagenet", "MODEL.RESNETS.NORM", "FrozenBN"])
    start = time.monotonic()
    with pytest.raises(EngineError) as err:
        tve.build_model(cfg, 5)
    assert time.monotonic() - start < 30
    message = str(err.value)
    assert "resnet18-f37072fd.pth" in message and str(offline) in message
    assert "MODEL.WEIGHTS ''" in message


def test_backbone_state_dict_loads_into_the_backbone(project_root, tmp_path):
    import torchvision

    resnet = torchvision.models.resnet18()
    path = tmp_path / "r18.pth"
    torch.save(resnet.state_dict(), path)
    cfg = tve.prepare_config(load_config(project_root / "configs" / "demo.yaml", ["MODEL.WEIGHTS", str(path)]))
    model = tve.build_model(cfg, 5)
    assert torch.equal(model.backbone.body.layer3[0].conv1.weight, resnet.layer3[0].conv1.weight)


def test_missing_weights_file_is_an_engine_error(project_root, tmp_path):
    cfg = load_config(project_root / "configs" / "demo.yaml", ["MODEL.WEIGHTS", str(tmp_path / "absent.pth")])
    with pytest.raises(EngineError, match="no such file"):
        tve.build_model(cfg, 5)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_device_without_cuda_is_a_clear_error(project_root, demo_root, tmp_path):
    with pytest.raises(EngineError, match="pass MODEL.DEVICE cpu"):
        experiment.train(project_root / "configs" / "demo.yaml", tiny_overrides(**{"MODEL.DEVICE": "cuda"}),
                         data_root=demo_root, run_dir=tmp_path / "run", progress=False)
    cfg = load_config(project_root / "configs" / "demo.yaml", ["MODEL.DEVICE", "cuda"])
    with pytest.raises(EngineError, match="pass MODEL.DEVICE cpu"):
        tve.load_predictor(cfg, tmp_path / "none.pth", [{"id": 1, "name": "a"}])


# ------------------------------------------------------------------------------------------ CLI


def test_cli_predict_and_validate_submission(project_root, demo_root, reference_run, tmp_path):
    sub = tmp_path / "sub.json"
    done = cli("predict", "--run-dir", str(reference_run), "--images", str(demo_root / data.TEST_JSON),
               "--out", str(sub), "--score-thresh", "0.0", cwd=project_root)
    assert done.returncode == 0, done.stderr
    assert json.loads(sub.read_text())
    done = cli("validate-submission", str(demo_root / data.TEST_JSON), str(sub), cwd=project_root)
    assert done.returncode == 0, done.stderr


def test_cli_train_error_is_one_line(project_root, demo_root, tmp_path):
    done = cli("train", "--config", str(project_root / "configs" / "demo.yaml"), "--data", str(demo_root),
               "--run-dir", str(tmp_path / "run"), "SOLVER.BASE_RL", "0.1", cwd=project_root)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["error: unknown config key SOLVER.BASE_RL; did you mean SOLVER.BASE_LR?"]


def test_build_optimizer_has_detectron2s_weight_decay_groups(project_root, demo_root):
    """The groups weight decay acts on, as training builds them: weights, biases and norms."""
    from engine_checks import weight_decay_groups_of

    groups = weight_decay_groups_of(tve, project_root, demo_root)
    model = tve.build_model(tve.prepare_config(load_config(project_root / "configs" / "demo.yaml")), 5, load_weights=False)
    assert sum(g["values"] for g in groups) == sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_training_steps_replay_the_runs_iterations(reference_run):
    from engine_checks import assert_training_steps_replay

    assert_training_steps_replay(tve, reference_run)


@pytest.mark.parametrize("channels_last", [True, False])
def test_rpn_head_runs_both_1x1_convs_as_one_with_torchvisions_results(channels_last):
    from torchvision.models.detection.rpn import RPNHead, concat_box_prediction_layers

    from helpers.engines.torchvision_engine.model import _RPNHead

    torch.manual_seed(0)
    ours, reference = _RPNHead(32, 3), RPNHead(32, 3)
    reference.load_state_dict(ours.state_dict())  # the same modules and keys: checkpoints load either way
    layout = torch.channels_last if channels_last else torch.contiguous_format
    features = [torch.randn(2, 32, h, w).contiguous(memory_format=layout) for h, w in ((40, 56), (20, 28), (5, 7))]
    outputs = {}
    for name, head in (("ours", ours), ("reference", reference)):
        logits, deltas = head(features)
        flat_logits, flat_deltas = concat_box_prediction_layers(logits, deltas)  # what torchvision's RPN does next
        (flat_logits.square().sum() + flat_deltas.abs().sum()).backward()
        outputs[name] = (flat_logits, flat_deltas, [p.grad for p in head.parameters()])
    for got, want in zip(outputs["ours"][:2], outputs["reference"][:2]):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for got, want in zip(outputs["ours"][2], outputs["reference"][2]):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, deltas = ours(features)
    assert {t.dtype for t in logits + deltas} == {torch.float32}


def test_training_images_are_in_id_order_whatever_the_json_lists(demo_root, tmp_path):
    """detectron2's COCO loader orders images by id; the torchvision engine does too, so the batch of
    (SEED, iteration) holds the same images in both engines even when the JSON lists them shuffled."""
    doc = json.loads((demo_root / data.TRAIN_JSON).read_text())
    doc["images"] = list(reversed(doc["images"]))
    doc["images"][0], doc["images"][-1] = doc["images"][-1], doc["images"][0]
    shuffled = tmp_path / "train.json"
    shuffled.write_text(json.dumps(doc))
    split = data.load_split(shuffled, demo_root / data.TRAIN_IMAGES, check_images=False)
    dataset = tv_data._TrainImages(split, True, False, 0)
    by_id = sorted(split.images, key=lambda img: img["id"])
    assert [path for path, _ in dataset.records] == [str(split.image_path(img)) for img in by_id]
    assert [path for path, _ in dataset.records] != [str(split.image_path(img)) for img in split.images]
