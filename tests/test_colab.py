"""Colab as it behaves: google.colab present, Drive on another filesystem, reconnects on a fresh VM.

The stand-in `google.colab` lives in tests/colab_standin/ (see its README). Drive is put on /dev/shm
(a tmpfs, a real other filesystem from the project's) where there is one, and the stand-in makes
renames across the mount fail with EXDEV in any case, as Colab's FUSE mount does.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import colab, course, data
from helpers.errors import HelpersError
from helpers.pipeline import NOTEBOOK_ORDER

STANDIN = Path(__file__).resolve().parent / "colab_standin"
PROJECT = Path(__file__).resolve().parents[1]


@pytest.fixture
def drive_mount(tmp_path):
    """A folder for the Drive mount, on another filesystem than tmp_path where the machine has one."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and os.stat(shm).st_dev != os.stat(tmp_path).st_dev:
        base = Path(shm / f"colab-test-{os.getpid()}-{tmp_path.name}")
    else:
        base = tmp_path / "other-fs"
    mount = base / "drive"
    mount.mkdir(parents=True)
    yield mount
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def on_colab(drive_mount, monkeypatch):
    """This process as a Colab kernel: the stand-in google.colab imported, Drive at drive_mount."""
    monkeypatch.syspath_prepend(str(STANDIN))
    monkeypatch.setattr(colab, "DRIVE_MOUNT", drive_mount)
    import google.colab  # noqa: F401

    yield drive_mount
    for name in [m for m in sys.modules if m.startswith("google.colab")]:
        del sys.modules[name]


def _exdev_rename(monkeypatch, mount: Path):
    """os.rename as Colab's Drive has it: across the mount it fails with EXDEV."""
    real = os.rename

    def rename(src, dst):
        inside = [str(Path(p).resolve()).startswith(str(mount.resolve())) for p in (src, dst)]
        if inside[0] != inside[1]:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real(src, dst)

    monkeypatch.setattr(os, "rename", rename)


def _fake_project(root: Path) -> Path:
    (root / "data").mkdir(parents=True)
    (root / "data" / "README.md").write_text("where data roots live\n")
    return root


def test_moving_into_drive_works_across_filesystems_and_is_idempotent(on_colab, tmp_path, monkeypatch, capsys):
    _exdev_rename(monkeypatch, on_colab)
    project = _fake_project(tmp_path / "content" / "maskrcnn-tinyvoc")
    (project / "runs" / "demo" / "train").mkdir(parents=True)
    (project / "runs" / "demo" / "train" / "model_final.pth").write_bytes(b"weights")
    colab.link_to_drive(("data", "runs"), project)
    home = colab.drive_home()
    for name in ("data", "runs"):
        assert (project / name).is_symlink() and (project / name).resolve() == (home / name).resolve()
    assert (home / "data" / "README.md").read_text() == "where data roots live\n"
    assert (home / "runs" / "demo" / "train" / "model_final.pth").read_bytes() == b"weights"
    assert not list(home.rglob("*.tmp"))
    colab.link_to_drive(("data", "runs"), project)  # a second run of the setup cell
    assert (project / "runs").resolve() == (home / "runs").resolve()
    assert (home / "runs" / "demo" / "train" / "model_final.pth").read_bytes() == b"weights"


def test_a_reconnect_keeps_what_drive_holds(on_colab, tmp_path, monkeypatch, capsys):
    _exdev_rename(monkeypatch, on_colab)
    project = _fake_project(tmp_path / "vm1" / "maskrcnn-tinyvoc")
    colab.link_to_drive(("data", "runs"), project)
    (project / "runs" / "demo").mkdir()
    (project / "runs" / "demo" / "metrics.json").write_text("{}\n")
    # a fresh VM: a new clone, Drive as it was
    fresh = _fake_project(tmp_path / "vm2" / "maskrcnn-tinyvoc")
    (fresh / "data" / "README.md").write_text("a newer README\n")
    colab.link_to_drive(("data", "runs"), fresh)
    home = colab.drive_home()
    assert (fresh / "runs" / "demo" / "metrics.json").read_text() == "{}\n"
    assert (home / "data" / "README.md").read_text() == "where data roots live\n"  # Drive's wins ...
    assert (home / "data" / "README.md.local").read_text() == "a newer README\n"  # ... the VM's is kept
    assert "already exists on Drive" in capsys.readouterr().out


def test_move_file_copies_whole_or_not_at_all_across_filesystems(drive_mount, tmp_path, monkeypatch):
    _exdev_rename(monkeypatch, drive_mount)
    src = tmp_path / "ckpt.pth"
    src.write_bytes(b"x" * 1000)
    dest = drive_mount / "ckpt.pth"

    def broken_copy(a, b):
        Path(b).write_bytes(b"x" * 10)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shutil, "copy2", broken_copy)
    with pytest.raises(OSError):
        colab.move_file(src, dest)
    assert src.read_bytes() == b"x" * 1000 and not dest.exists() and not list(drive_mount.iterdir())


def test_drive_that_cannot_be_mounted_is_one_line(on_colab, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_COLAB_MOUNT_ERROR", "mount failed: authorisation was refused")
    with pytest.raises(HelpersError) as e:
        colab.link_to_drive(("data",), _fake_project(tmp_path / "p"))
    assert "could not mount Google Drive" in str(e.value) and "drive=False" in str(e.value)
    assert "\n" not in str(e.value)


def test_setup_enables_widgets_and_installs_detectron2_only_for_its_engine(on_colab, tmp_path, monkeypatch, capsys):
    log = tmp_path / "colab.log"
    monkeypatch.setenv("FAKE_COLAB_LOG", str(log))
    calls = []
    monkeypatch.setattr(colab, "_run", lambda cmd, what: calls.append(cmd))
    monkeypatch.setattr(colab, "link_to_drive", lambda names: None)
    settings = tmp_path / "course.yaml"
    monkeypatch.setenv(course.ENV_FILE, str(settings))
    course.write_course_file(settings, "demo")
    assert colab.setup() is None  # nothing for the cell to echo
    assert log.read_text() == "enable_custom_widget_manager\n"
    assert not any("detectron2" in " ".join(c) for c in calls)
    assert "detectron2 is not needed" in capsys.readouterr().out
    course.write_course_file(settings, "demo", engine="detectron2")
    monkeypatch.setattr(colab.importlib.util, "find_spec", lambda name: None if name == "detectron2" else object())
    colab.setup()
    assert any("--no-build-isolation" in c and colab.DETECTRON2_GIT in c for c in calls)


def test_setup_installs_nothing_when_the_requirements_are_there(monkeypatch):
    calls = []
    monkeypatch.setattr(colab, "_run", lambda cmd, what: calls.append(cmd))
    assert colab.missing_modules() == []
    colab.install_missing()
    assert calls == []


def test_setup_does_nothing_off_colab(monkeypatch):
    monkeypatch.setattr(colab, "link_to_drive", lambda *a: pytest.fail("touched Drive off Colab"))
    assert "google.colab" not in sys.modules
    assert colab.setup() is None


def test_a_failed_download_leaves_nothing_behind(tmp_path, monkeypatch):
    root = tmp_path / "data" / "tinyvoc"

    def gdown_fails(cmd, what):
        if "gdown" in cmd and "--folder" in cmd:
            out = Path(cmd[cmd.index("-O") + 1])
            (out / "Tiny VOC").mkdir(parents=True)
            (out / "Tiny VOC" / "pascal_train.json").write_text("{")  # cut off mid-download
            raise HelpersError(f"{what} failed (exit 1): Access denied with the following error")

    monkeypatch.setattr(colab, "_run", gdown_fails)
    monkeypatch.setattr(colab.importlib.util, "find_spec", lambda name: object())
    with pytest.raises(HelpersError, match="downloading Tiny VOC from https://x failed"):
        colab.fetch_tinyvoc(root, "https://x")
    assert not root.exists() and list(root.parent.iterdir()) == []


def test_a_download_that_is_not_tiny_voc_is_refused(tmp_path, monkeypatch):
    root = tmp_path / "tinyvoc"

    def gdown_other(cmd, what):
        out = Path(cmd[cmd.index("-O") + 1])
        (out / "holiday").mkdir(parents=True)
        (out / "holiday" / "photo.jpg").write_bytes(b"jpeg")

    monkeypatch.setattr(colab, "_run", gdown_other)
    monkeypatch.setattr(colab.importlib.util, "find_spec", lambda name: object())
    with pytest.raises(HelpersError, match="has no pascal_train.json"):
        colab.fetch_tinyvoc(root, "https://x")
    assert not root.exists()


def test_a_download_lands_whole(demo_root, tmp_path, monkeypatch):
    root = tmp_path / "tinyvoc"

    def gdown_ok(cmd, what):
        out = Path(cmd[cmd.index("-O") + 1])
        shutil.copytree(demo_root, out / "Tiny VOC")

    monkeypatch.setattr(colab, "_run", gdown_ok)
    monkeypatch.setattr(colab.importlib.util, "find_spec", lambda name: object())
    colab.fetch_tinyvoc(root, "https://x")
    assert data.validate_root(root)
    assert [p.name for p in root.parent.iterdir()] == ["tinyvoc"]


# ------------------------------------------------------------------ the course, clicked through as on Colab


def _clone(dest: Path) -> Path:
    """A fresh clone of the committed project (what the setup cell's git clone gives)."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=PROJECT, capture_output=True, check=True).stdout
    for rel in files.decode().split("\0"):
        if rel and (PROJECT / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(PROJECT / rel, dest / rel)
    return dest


def _run_all(home: Path, env: dict, keep: Path) -> None:
    """Every notebook, top to bottom, with its parameters as committed: "Run all" in each, in order
    (the executed copies go to ``keep``)."""
    import nbformat
    from nbclient import NotebookClient

    keep.mkdir(parents=True, exist_ok=True)
    for name in NOTEBOOK_ORDER:
        nb = nbformat.read(home / "notebooks" / f"{name}.ipynb", as_version=4)
        client = NotebookClient(nb, timeout=1200, kernel_name="python3",
                                resources={"metadata": {"path": str(home / "notebooks")}})
        try:
            client.execute(env=env)  # the kernel's environment: Colab's stand-in and Drive
        finally:
            nbformat.write(nb, keep / f"{name}.ipynb")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_the_course_runs_on_colab_with_its_defaults_and_a_reconnect_resumes(drive_mount, tmp_path):
    """A student clicks "Run all" in 01..05 on Colab with the committed defaults (the demo course),
    then the runtime disconnects: a fresh VM, a fresh clone, the same Drive. Everything is run again:
    nothing retrains, the numbers are the same."""
    content = tmp_path / "content"
    home = content / "maskrcnn-tinyvoc"
    log = tmp_path / "colab.log"
    env = {**os.environ, "PYTHONPATH": str(STANDIN), "COURSE_HOME": str(home), "HELPERS_DRIVE_MOUNT": str(drive_mount),
           "FAKE_COLAB_LOG": str(log)}
    for key in ("HELPERS_HEADLESS", course.ENV_FILE):
        env.pop(key, None)
    _clone(home)
    _run_all(home, env, (tmp_path / "first").resolve())
    drive_runs = drive_mount / "MyDrive" / colab.DRIVE_FOLDER / "runs"
    assert (home / "runs").is_symlink() and (home / "runs").resolve() == drive_runs.resolve()
    train = drive_runs / "demo" / "train"
    assert (train / "model_final.pth").is_file() and json.loads((train / "run.json").read_text())["status"] == "finished"
    assert (drive_runs / "course.yaml").is_file()  # the settings survive on Drive
    assert log.read_text().count("enable_custom_widget_manager") == len(NOTEBOOK_ORDER)
    weights = {p.relative_to(drive_runs): _digest(p) for p in drive_runs.rglob("*.pth")}
    metrics = (train / "metrics.json").read_text()
    val = json.loads((drive_runs / "demo" / "val_metrics.json").read_text())
    submission = _digest(drive_runs / "demo" / "submission.json")
    texts = [o.get("text", "") for o in json.loads((tmp_path / "first" / "02_training.ipynb").read_text())["cells"][1]["outputs"]]
    setup_out = "".join("".join(t) if isinstance(t, list) else t for t in texts)  # nbformat stores text as lines
    assert "detectron2 is not needed" in setup_out and "False" not in setup_out

    shutil.rmtree(content)  # the reconnect: /content is empty again
    _clone(home)
    _run_all(home, env, (tmp_path / "again").resolve())
    assert {p.relative_to(drive_runs): _digest(p) for p in drive_runs.rglob("*.pth")} == weights  # nothing retrained
    assert (train / "metrics.json").read_text() == metrics
    again = json.loads((drive_runs / "demo" / "val_metrics.json").read_text())
    assert again["segm"]["AP50"] == val["segm"]["AP50"] and again["segm"]["AP"] == val["segm"]["AP"]
    assert _digest(drive_runs / "demo" / "submission.json") == submission
