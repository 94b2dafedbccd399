"""helpers.cpu_memory: freed memory is reused (no new page faults) once the setting is on.

The setting is process-wide, so each case runs in its own Python process.
"""

import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Rounds of "allocate tensors of a training iteration's mixed sizes, then free them all"; prints the
# minor page faults of each round. Without the setting every round maps its memory afresh.
ROUNDS = """
import resource, sys, torch
from helpers import cpu_memory
print("applied", cpu_memory.keep_freed_memory(sys.argv[1]))
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(6):
    before = faults()
    tensors = [torch.ones(mb * 2**18) for mb in (50, 3, 120, 7, 64, 200, 1, 33)]  # MiB of float32
    del tensors
    print("faults", faults() - before)
"""

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def rounds(device: str) -> tuple[bool, list[int]]:
    out = subprocess.run([sys.executable, "-c", ROUNDS, device], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    lines = [line.split() for line in out.splitlines()]
    return lines[0][1] == "True", [int(n) for key, n in lines[1:] if key == "faults"]


@pytest.mark.skipif(not GLIBC, reason="the setting is glibc's mallopt: Linux with glibc only")
def test_cpu_run_reuses_freed_memory():
    applied, faults = rounds("cpu")
    assert applied
    # 478 MiB per round = ~122k pages: the first rounds grow the heap, the last ones reuse it
    assert faults[0] > 100_000
    assert max(faults[-2:]) < 1_000, faults


@pytest.mark.skipif(not GLIBC, reason="compares against glibc's default behaviour")
def test_gpu_run_leaves_malloc_as_it_is():
    applied, faults = rounds("cuda")
    assert not applied
    assert min(faults[-2:]) > 100_000, faults  # every round maps its memory afresh, as by default


def test_not_applied_off_glibc(monkeypatch):
    from helpers import cpu_memory

    monkeypatch.setattr(cpu_memory, "_applied", False)
    monkeypatch.setattr(cpu_memory.platform, "libc_ver", lambda: ("", ""))
    assert cpu_memory.keep_freed_memory("cpu") is False


def test_training_and_prediction_ask_for_it_with_their_device(project_root, demo_root, tmp_path, monkeypatch):
    from helpers import cpu_memory, experiment
    from tiny_schedule import tiny_overrides

    asked = []
    monkeypatch.setattr(cpu_memory, "keep_freed_memory", lambda device: asked.append(device) or False)
    run_dir = experiment.train(project_root / "configs" / "demo.yaml", tiny_overrides(**{"SOLVER.MAX_ITER": "1"}),
                               data_root=demo_root, run_dir=tmp_path / "run", progress=False)
    assert asked == ["cpu"]
    experiment.load_predictor(run_dir, checkpoint="final")
    assert asked == ["cpu", "cpu"]
