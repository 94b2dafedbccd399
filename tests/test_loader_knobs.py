"""The torchvision engine's loader and cuDNN knobs: NUM_WORKERS keeps runs bit-exact, pinned memory, CUDNN_BENCHMARK."""

from __future__ import annotations

import pytest
import torch

from helpers import experiment, runs
from helpers.config import load_config
from helpers.engines.torchvision_engine import device as tv_device, loop as tv_loop
from engine_checks import final_state
from tiny_schedule import tiny_overrides


def _train(project_root, demo_root, run_dir, workers: int):
    overrides = tiny_overrides(**{"DATALOADER.NUM_WORKERS": str(workers), "SOLVER.MAX_ITER": "4",
                                  "SOLVER.CHECKPOINT_PERIOD": "4", "TEST.EVAL_PERIOD": "0",
                                  "DATASETS.VAL_FRACTION": "0.0"})
    experiment.train(project_root / "configs" / "demo.yaml", overrides, data_root=demo_root, run_dir=run_dir,
                     progress=False)
    return final_state(run_dir), runs.read_metrics(run_dir)


def test_loader_workers_give_the_same_run_as_none(project_root, demo_root, tmp_path):
    """Batches and flips come from (SEED, iteration, index), so two worker processes change nothing."""
    ours, our_rows = _train(project_root, demo_root, tmp_path / "workers2", workers=2)
    ref, ref_rows = _train(project_root, demo_root, tmp_path / "workers0", workers=0)
    assert ours.keys() == ref.keys()
    different = [k for k in ref if not torch.equal(ours[k], ref[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"
    assert [r["total_loss"] for r in our_rows] == [r["total_loss"] for r in ref_rows] and len(ref_rows) == 4


def test_loader_pins_memory_only_for_cuda(project_root, demo_root, tmp_path):
    cfg, splits, run_dir = experiment.setup_run(project_root / "configs" / "demo.yaml",
                                                tiny_overrides(**{"DATALOADER.NUM_WORKERS": "2"}),
                                                data_root=demo_root, run_dir=tmp_path / "run")
    for device, pinned in (("cpu", False), ("cuda", True)):  # building a loader touches no device
        loader = tv_loop._Trainer(cfg, splits, run_dir, tv_device._Dist(torch.device(device)))._loader(0)
        assert (loader.pin_memory, loader.num_workers) == (pinned, 2)


@pytest.fixture
def cudnn_benchmark_restored():
    before = torch.backends.cudnn.benchmark
    yield
    torch.backends.cudnn.benchmark = before


@pytest.mark.usefixtures("cudnn_benchmark_restored")
def test_cudnn_benchmark_is_set_on_cuda_only(project_root):
    cfg = load_config(project_root / "configs" / "demo.yaml", ["CUDNN_BENCHMARK", "True"])
    cfg.check_engine("torchvision")  # wired now: no longer rejected
    torch.backends.cudnn.benchmark = False
    tv_device._cudnn_benchmark(cfg, torch.device("cpu"))
    assert torch.backends.cudnn.benchmark is False
    tv_device._cudnn_benchmark(cfg, torch.device("cuda"))
    assert torch.backends.cudnn.benchmark is True
    tv_device._cudnn_benchmark(load_config(project_root / "configs" / "demo.yaml"), torch.device("cuda"))
    assert torch.backends.cudnn.benchmark is False
