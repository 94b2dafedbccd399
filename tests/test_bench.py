"""bench/bench_engines.py: runs every available engine and reports comparable numbers."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest
import torch

from helpers.engines import available_engines
from tiny_schedule import tiny_overrides


# Achieved FLOP/s over the measured matmul peak: at most 1 but for noise on a shared machine (the
# peak measured while something else ran) and convolution algorithms that do fewer multiply-adds
# than counted (Winograd); a counting or timing mistake by a factor of 2 or more is still caught.
FRACTION_BOUND = 1.5


def _bench_module(project_root, name="bench_engines"):
    spec = importlib.util.spec_from_file_location(name, project_root / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("amp", [False, True])
def test_bench_runs_every_available_engine_and_writes_its_numbers(project_root, demo_root, tmp_path, amp):
    """With SOLVER.AMP.ENABLED on the CPU the torchvision engine computes in bfloat16 (detectron2 in float32:
    its AMP needs CUDA), and its fraction of peak is against the bfloat16 peak."""
    out = tmp_path / "bench.json"
    overrides = tiny_overrides(**{"MODEL.DEVICE": "cpu", "SOLVER.AMP.ENABLED": str(amp)})
    done = subprocess.run([sys.executable, "bench/bench_engines.py", "--data", str(demo_root), "--iters", "5",
                           "--images", "2", "--peak-sizes", "2048", "--out", str(out), *overrides],
                          cwd=project_root, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    ran = {name for name, (ok, _) in available_engines().items() if ok}
    assert set(result["results"]) == ran and "torchvision" in ran
    dtypes = {name: "bfloat16" if amp and name == "torchvision" else "float32" for name in ran}
    assert set(result["peaks"]) == set(dtypes.values())
    for dtype, peak in result["peaks"].items():
        assert peak["flop_per_s"] > 1e8 and (peak["dtype"], peak["device"], peak["size"]) == (dtype, "cpu", 2048)
    for name, row in result["results"].items():
        assert row["dtype"] == dtypes[name]
        peak = result["peaks"][row["dtype"]]
        assert 0 < row["train_s_per_iter"] < 60 and 0 < row["predict_s_per_image"] < 60
        assert row["train_peak_mb"] > 50 and row["predict_peak_mb"] > 50
        assert row["train_flops_iterations"] == [3, 4]  # the timed iterations of 5, after 3 warm-up ones
        # a tiny Mask R-CNN: above 0.1 GFLOP per iteration / image, training several times a prediction
        assert row["train_flops_per_iter"] > 2 * row["predict_flops_per_image"] > 2e8
        for phase, seconds in (("train", row["train_s_per_iter"]), ("predict", row["predict_s_per_image"])):
            flops = row[f"{phase}_flops_per_iter" if phase == "train" else "predict_flops_per_image"]
            assert row[f"{phase}_flop_per_s"] == pytest.approx(flops / seconds)
            assert row[f"{phase}_fraction_of_peak"] == pytest.approx(row[f"{phase}_flop_per_s"] / peak["flop_per_s"])
            assert 0 < row[f"{phase}_fraction_of_peak"] < FRACTION_BOUND
    assert set(result["not_available"]) == set(available_engines()) - ran
    assert result["equal_work"][:2] == ["INPUT.MIN_SIZE_TRAIN", "(96,)"]  # the equal-work settings, by default
    assert result["overrides"] == overrides
    assert "train s/iter" in done.stdout and "torchvision" in done.stdout
    assert "train of peak" in done.stdout and f"GFLOP/s: best {dtypes['torchvision']} matmul" in done.stdout
    assert f"precision: torchvision in {dtypes['torchvision']}" in done.stdout
    assert ("not the same precision" in done.stdout) == (len(set(dtypes.values())) > 1)


def test_equal_work_settings_pin_sizes_proposals_and_detections(project_root):
    from helpers.config import load_config

    bench = _bench_module(project_root)
    homework = str(project_root / "configs" / "homework.yaml")
    pins = bench.equal_work_overrides(homework, ["MODEL.WEIGHTS", ""])
    cfg = load_config(homework, ["MODEL.WEIGHTS", "", *pins])  # valid settings
    assert cfg["INPUT.MIN_SIZE_TRAIN"] == [800]  # the largest of 640..800
    assert cfg["MODEL.RPN.NMS_THRESH"] == cfg["MODEL.ROI_HEADS.NMS_THRESH_TEST"] == 1.0
    assert cfg["MODEL.ROI_HEADS.SCORE_THRESH_TEST"] == 0.0
    assert cfg["MODEL.PIXEL_STD"] == [57.375, 57.12, 58.395]  # random init only
    assert "MODEL.PIXEL_STD" not in bench.equal_work_overrides(homework, [])  # ImageNet weights keep their std
    # an engine is not given a key it does not support (torchvision normalises its own way, picks sizes by choice)
    kept = dict(zip(pins[::2], pins[1::2]))
    assert cfg["MODEL.RESNETS.STRIDE_IN_1X1"] is False  # the ResNet torchvision builds
    # RoIAlign's cost no longer follows each model's random proposals
    assert cfg["MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO"] == cfg["MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO"] == 2
    assert cfg["MODEL.ROI_HEADS.IOU_THRESHOLDS"] == [0.99]  # the positives are the ground-truth boxes
    del kept["MODEL.PIXEL_STD"], kept["INPUT.MIN_SIZE_TRAIN_SAMPLING"], kept["MODEL.RESNETS.STRIDE_IN_1X1"]
    assert bench.engine_pins("torchvision", pins) == [item for pair in kept.items() for item in pair]
    assert bench.engine_pins("detectron2", pins) == pins


def test_table_gives_each_engine_its_ratio_to_the_first(project_root):
    bench = _bench_module(project_root)
    row = {"train_s_per_iter": 1.0, "predict_s_per_image": 0.5, "train_peak_mb": 100.0, "predict_peak_mb": 80.0}
    slower = {k: v * 2 for k, v in row.items()}
    table = bench.format_table({"torchvision": row, "detectron2": slower}, {"other": "not importable"})
    lines = table.splitlines()
    assert lines[1].split()[0] == "torchvision" and lines[2].split()[0] == "detectron2"
    assert lines[3].split() == ["detectron2/torchvision", "2.00x", "2.00x", "2.00x", "2.00x"]
    assert lines[4].startswith("other") and "not available: not importable" in lines[4]


def test_too_few_iterations_is_a_usage_error(project_root):
    bench = _bench_module(project_root)
    with pytest.raises(SystemExit):
        bench.parse_args(["--iters", str(bench.WARMUP_ITERS)])


def test_flop_counter_gives_the_known_counts_of_a_matmul_a_linear_and_a_conv(project_root):
    flops = _bench_module(project_root, "flops")
    m, k, n = 7, 11, 13
    assert flops.count_flops(lambda: torch.randn(m, k) @ torch.randn(k, n))[1] == 2 * m * n * k
    layer, x = torch.nn.Linear(k, n), torch.randn(m, k, requires_grad=True)
    # forward 2mnk; backward: the input's gradient and the weight's, 2mnk each
    assert flops.count_flops(lambda: layer(x).sum().backward())[1] == 3 * 2 * m * n * k
    conv = torch.nn.Conv2d(3, 8, 3, padding=1)
    with torch.inference_mode():
        out, counted = flops.count_flops(lambda: conv(torch.randn(2, 3, 16, 16)))
    assert counted == 2 * out.numel() * 3 * 3 * 3  # a multiply-add per output, input channel and kernel tap


def test_matmul_peak_is_the_best_rate_of_its_sizes(project_root):
    flops = _bench_module(project_root, "flops")
    peak = flops.matmul_peak("cpu", "float32", sizes=(64, 128))
    assert peak["flop_per_s"] > 0 and peak["size"] in (64, 128) and peak["sizes"] == [64, 128]
    assert (peak["dtype"], peak["device"], peak["threads"]) == ("float32", "cpu", torch.get_num_threads())
    assert flops.peak_dtype("cpu", amp=False) == "float32" and flops.peak_dtype("cpu", amp=True) == "bfloat16"


def test_compute_table_keeps_small_fractions_readable(project_root):
    bench = _bench_module(project_root)
    row = {"train_flops_per_iter": 5.6e9, "train_flop_per_s": 4.4e9, "train_fraction_of_peak": 0.000412,
           "predict_flops_per_image": 9.9e8, "predict_flop_per_s": 6.1e8, "predict_fraction_of_peak": 0.0103}
    peak = {"flop_per_s": 8.9e10, "dtype": "float32", "sizes": [2048], "device": "cpu", "threads": 2}
    lines = bench.format_compute_table({"torchvision": row}, {"float32": peak}).splitlines()
    assert lines[0].startswith("peak 89 GFLOP/s: best float32 matmul")
    assert lines[2].split() == ["torchvision", "float32", "5.6", "4.4", "0.000412", "0.99", "0.61", "0.0103"]


def test_compute_table_says_where_the_work_differs_and_the_ratio_per_flop(project_root):
    bench = _bench_module(project_root)
    tv = {"train_flops_per_iter": 100e9, "train_flop_per_s": 20e9, "train_fraction_of_peak": 0.5,
          "predict_flops_per_image": 40e9, "predict_flop_per_s": 16e9, "predict_fraction_of_peak": 0.4}
    d2 = {**tv, "train_flops_per_iter": 101e9, "train_flop_per_s": 16e9,
          "predict_flops_per_image": 30e9, "predict_flop_per_s": 10e9}
    peak = {"flop_per_s": 40e9, "dtype": "float32", "sizes": [2048], "device": "cpu", "threads": 2}
    lines = bench.format_compute_table({"torchvision": tv, "detectron2": d2}, {"float32": peak}).splitlines()
    assert lines[-2] == "train: detectron2 counts 1.01x torchvision's FLOPs per iteration; per FLOP torchvision is 1.25x as fast"
    assert lines[-1] == ("predict: detectron2 counts 0.75x torchvision's FLOPs per image: not the same work, compare per "
                         "FLOP; per FLOP torchvision is 1.6x as fast")
    assert bench.format_compute_table({"torchvision": tv}, {"float32": peak}).splitlines()[-1].startswith("torchvision")


def test_amp_on_a_cpu_is_bfloat16_for_torchvision_only_and_the_bench_says_so(project_root):
    """detectron2's AMPTrainer needs CUDA: with SOLVER.AMP.ENABLED on a CPU only the torchvision engine
    autocasts (bfloat16); each engine's fraction of peak is against the peak of its own dtype."""
    bench = _bench_module(project_root)
    homework = str(project_root / "configs" / "homework.yaml")
    args = bench.parse_args(["--config", homework, "MODEL.DEVICE", "cpu", "SOLVER.AMP.ENABLED", "True"])
    dtypes = bench.engine_dtypes(args, ["torchvision", "detectron2"])
    assert dtypes == {"torchvision": "bfloat16", "detectron2": "float32"}
    assert bench.precision_line(dtypes).startswith(
        "precision: torchvision in bfloat16, detectron2 in float32: not the same precision (SOLVER.AMP.ENABLED autocasts")
    fp32 = bench.parse_args(["--config", homework, "MODEL.DEVICE", "cpu"])
    assert bench.engine_dtypes(fp32, ["torchvision", "detectron2"]) == {"torchvision": "float32", "detectron2": "float32"}
    assert bench.precision_line({"torchvision": "float32", "detectron2": "float32"}) == (
        "precision: torchvision in float32, detectron2 in float32")
    peaks = {"bfloat16": {"flop_per_s": 4e10, "dtype": "bfloat16", "sizes": [64], "device": "cpu", "threads": 2},
             "float32": {"flop_per_s": 1e10, "dtype": "float32", "sizes": [64], "device": "cpu", "threads": 2}}
    row = {"train_flops_per_iter": 1e9, "train_flop_per_s": 2e9, "predict_flops_per_image": 1e9, "predict_flop_per_s": 2e9}
    tv = bench.add_fractions({**row, "dtype": "bfloat16"}, peaks["bfloat16"]["flop_per_s"])
    d2 = bench.add_fractions({**row, "dtype": "float32"}, peaks["float32"]["flop_per_s"])
    lines = bench.format_compute_table({"torchvision": tv, "detectron2": d2}, peaks).splitlines()
    assert lines[0].startswith("peak 40 GFLOP/s: best bfloat16") and lines[1].startswith("peak 10 GFLOP/s: best float32")
    assert lines[3].split()[:2] == ["torchvision", "bfloat16"] and lines[3].split()[4] == "0.05"
    assert lines[4].split()[:2] == ["detectron2", "float32"] and lines[4].split()[4] == "0.2"


def test_bad_peak_sizes_and_images_are_usage_errors(project_root):
    bench = _bench_module(project_root)
    for argv in (["--peak-sizes", "0"], ["--images", "0"]):
        with pytest.raises(SystemExit) as exc:
            bench.parse_args(argv)
        assert exc.value.code == 2


def test_gpu_check_smoke_runs_on_the_cpu_end_to_end(project_root, demo_root, tmp_path, capsys):
    """bench/gpu_check.py --device cpu --smoke: the torchvision engine in fp32 and with AMP (bfloat16
    autocast on the CPU), both run end to end."""
    out = tmp_path / "check" / "gpu_check.json"  # a missing folder is created
    # in this process (the CLI wrapper is the next test's); each phase still runs in a child process
    _bench_module(project_root, "gpu_check").main(["--device", "cpu", "--smoke", "--engines", "torchvision",
                                                   "--data", str(demo_root), "--out", str(out)])
    stdout = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert (result["config"], result["smoke"], result["device"]) == ("configs/homework.yaml", True, "cpu")
    fp32, amp = result["rows"]
    assert (fp32["engine"], fp32["precision"], fp32["status"]) == ("torchvision", "fp32", "ok")
    assert fp32["channels_last"].startswith("yes")
    # by default the stand-in weights: the homework's FrozenBN backbone with its stem and res2 frozen
    assert (fp32["backbone_norm"], fp32["freeze_at"], amp["backbone_norm"]) == ("FrozenBN", 2, "FrozenBN")
    assert result["weights"].startswith("stand-in")
    for phase in ("train", "predict"):
        assert fp32[f"{phase}_peak_mb"] > 50 and 0 < fp32[f"{phase}_fraction_of_peak"] < FRACTION_BOUND
    assert 0 < fp32["train_s_per_iter"] < 60 and 0 < fp32["predict_s_per_image"] < 60
    assert (amp["engine"], amp["precision"], amp["status"]) == ("torchvision", "amp", "ok")
    assert 0 < amp["train_s_per_iter"] < 60 and 0 < amp["predict_s_per_image"] < 60
    assert list(result["peaks"]) == ["fp32", "amp"] and result["peaks"]["fp32"]["flop_per_s"] > 0
    assert result["peaks"]["amp"]["dtype"] == "bfloat16"
    table = [line for line in stdout.splitlines() if line.startswith("|")]
    assert table[0].startswith("| engine | precision | channels-last | train s/iter") and len(table) == 4
    assert table[2].startswith("| torchvision | fp32 | yes | ") and table[2].endswith("| ok |")


def test_gpu_check_refuses_a_missing_gpu_data_root_or_engine_before_any_work(project_root, tmp_path):
    from helpers.errors import HelpersError

    check = _bench_module(project_root, "gpu_check")
    cases = [(["--device", "cpu", "--data", str(tmp_path)], "no pascal_train.json"),
             (["--device", "cpu", "--engines", "mmdet"], "--engines mmdet: unknown"),
             (["--device", "cpu", "--out", str(tmp_path)], "is a folder")]
    if not torch.cuda.is_available():
        cases.append(([], "CUDA is not available"))  # --device cuda, the default
    for argv, message in cases:
        with pytest.raises(HelpersError, match=message):
            check.check_inputs(check.parse_args(argv))
    with pytest.raises(SystemExit) as exc:
        check.parse_args(["--smoke", "--iters", "3"])
    assert exc.value.code == 2


def test_gpu_check_random_init_trains_from_no_weights_and_stand_in_sets_none(project_root):
    check = _bench_module(project_root, "gpu_check")
    random_init = check.run_overrides(check.parse_args(["--random-init"]), 20, amp=False)
    assert random_init[random_init.index("MODEL.WEIGHTS") + 1] == '""'
    assert "MODEL.WEIGHTS" not in check.run_overrides(check.parse_args([]), 20, amp=True)  # run_phase gives the stand-ins


def test_gpu_check_says_a_users_mistake_in_one_error_line(project_root, tmp_path):
    done = subprocess.run([sys.executable, "bench/gpu_check.py", "--device", "cpu", "--data", str(tmp_path)],
                          cwd=project_root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.startswith("error: --data ") and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_bench_on_a_cuda_config_without_cuda_is_one_error_before_any_work(project_root):
    from helpers.errors import EngineError

    bench = _bench_module(project_root)
    with pytest.raises(EngineError, match="MODEL.DEVICE is cuda but CUDA is not available"):
        bench.engine_dtypes(bench.parse_args(["--config", str(project_root / "configs" / "homework.yaml")]), ["torchvision"])


def test_profile_engines_splits_training_and_prediction_into_stages(project_root, demo_root, tmp_path, capsys):
    """bench/profile_engines.py on the torchvision engine at a tiny size (the demo's R18 and the tests'
    tiny heads): every pipeline stage of the forward pass, the backward of the backbone and the heads,
    and the optimizer get CPU time."""
    profile = _bench_module(project_root, "profile_engines")
    out = tmp_path / "profile.json"
    overrides = tiny_overrides(**{"MODEL.DEVICE": "cpu"})
    profile.main(["--engines", "torchvision", "--config", str(project_root / "configs" / "demo.yaml"),
                  "--data", str(demo_root), "--min-size", "96", "--warmup", "0",
                  "--iters", "1", "--images", "1", "--out", str(out), *overrides])
    result = json.loads(out.read_text())
    assert (result["min_size"], result["iters"], result["images"], result["score_thresh"]) == (96, 1, 1, 0.0)
    train, predict = result["results"]["torchvision"]["train"], result["results"]["torchvision"]["predict"]
    forward = ["backbone body (ResNet)", "FPN", "RPN head (convs)", "RPN anchors, proposals, NMS, loss",
               "box RoIAlign", "box head + predictor", "mask RoIAlign", "mask head + predictor"]
    for stage in [*forward, "data loading (in-process: NUM_WORKERS 0)", "optimizer (step, zero_grad)",
                  "backward: backbone body (ResNet)", "backward: FPN", "backward: mask head + predictor",
                  "backward: box RoIAlign"]:
        assert train["stages_ms"][stage] > 0, stage
    # score threshold 0: the mask head and the paste see every detection
    assert predict["detections_per_image"] > 0
    for stage in [*forward, "preprocess (normalize, resize, batch)", "postprocess (rescale boxes, paste masks)"]:
        assert predict["stages_ms"][stage] > 0, stage
    for phase in (train, predict):
        assert phase["total_ms"] == pytest.approx(sum(phase["stages_ms"].values()))
        assert all(v > 0 for v in phase["stages_ms"].values()) and phase["calls"] == 1
        # the attributed stages hold most of the time: little is left outside every stage
        named = sum(v for k, v in phase["stages_ms"].items() if not k.startswith(("outside", "backward: not")))
        assert named > 0.5 * phase["total_ms"]
        assert 0 < max(phase["top_ops_ms"].values()) <= phase["total_ms"]
    assert "torchvision ms" in capsys.readouterr().out


def test_profile_engines_refuses_bad_arguments_with_one_error_line(project_root, tmp_path):
    profile = _bench_module(project_root, "profile_engines")
    for argv in (["--min-size", "8"], ["--iters", "0"], ["--warmup", "-1"], ["--score-thresh", "2"]):
        with pytest.raises(SystemExit) as exc:
            profile.parse_args(argv)
        assert exc.value.code == 2
    done = subprocess.run([sys.executable, "bench/profile_engines.py", "--data", str(tmp_path)],
                          cwd=project_root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.startswith("error: no pascal_train.json") and done.stdout == ""


def test_bench_backbones_table_sets_the_published_map_beside_each_backbone(project_root):
    backbones = _bench_module(project_root, "bench_backbones")
    row = {"params": 44_000_000, "train_flops_per_iter": 1.68e11, "predict_flops_per_image": 1.148e11,
           "train_s_per_iter": 7.04, "predict_s_per_image": 1.96}
    lines = backbones.format_table({"R50": {"torchvision": row}, "X101-32x8d": {"torchvision": row}}).splitlines()
    assert "hidden test set, as graded, not measured here" in lines[0]
    assert lines[2].startswith("| R50 | torchvision | 44.00 | 168 | 114.8 | 7.04 | 1.96 | 0.47416 (the homework")
    assert "0.523 (Zonsor" in lines[3] and "0.557 (Avocado5818, X101, 120k it)" in lines[3]


def test_bench_backbones_refuses_bad_arguments(project_root):
    backbones = _bench_module(project_root, "bench_backbones")
    for argv in (["--backbones", "R18"], ["--min-size", "0"], ["--iters", "0"], ["--warmup", "-1"]):
        with pytest.raises(SystemExit) as exc:
            backbones.parse_args(argv)
        assert exc.value.code == 2


def test_try_compile_refuses_bad_arguments(project_root):
    for argv in (["--iters", "3"], ["--min-size", "8"]):
        done = subprocess.run([sys.executable, "bench/try_compile.py", *argv], cwd=project_root, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 2 and "--iters must be above 3" in done.stderr, argv
