"""Colab setup: install detectron2, keep data and runs on Google Drive, fetch the data set.

Called from every notebook's first cell. Outside Colab it does nothing, so the same notebooks
run in Jupyter, under papermill and on Colab.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .paths import PROJECT_ROOT

REPO_URL = "https://github.com/tinyvoc-course/maskrcnn-tinyvoc"
DETECTRON2_GIT = "git+https://github.com/facebookresearch/detectron2.git"
DRIVE_MOUNT = Path("/content/drive")
DRIVE_HOME = DRIVE_MOUNT / "MyDrive" / "maskrcnn-tinyvoc"


def on_colab() -> bool:
    return "google.colab" in sys.modules


def setup(install_detectron2: bool = True, use_drive: bool = True, data_url: str = "") -> bool:
    """On Colab: install detectron2 (optional), put data/ and runs/ on Drive, fetch Tiny VOC.

    Returns True when it ran (on Colab), False elsewhere.
    """
    if not on_colab():
        return False
    if install_detectron2:
        install_detectron2_from_source()
    if use_drive:
        link_to_drive(("data", "runs"))
    fetch_tinyvoc(PROJECT_ROOT / "data" / "tinyvoc", data_url)
    return True


def install_detectron2_from_source() -> None:
    """detectron2's official way: build from source (about 5 minutes on Colab).

    ``--no-build-isolation`` lets its build see the installed torch (recent pip otherwise fails
    with "No module named 'torch'").
    """
    try:
        import detectron2  # noqa: F401

        return
    except ImportError:
        pass
    print("installing detectron2 from source (about 5 minutes)...", flush=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-build-isolation", DETECTRON2_GIT],
                   check=True)


def link_to_drive(names: tuple[str, ...]) -> None:
    """Mount Drive and make each project folder a link into it, so a disconnect loses nothing:
    training resumes from the checkpoints on Drive."""
    from google.colab import drive  # type: ignore[import-not-found]

    if not (DRIVE_MOUNT / "MyDrive").is_dir():
        drive.mount(str(DRIVE_MOUNT))
    for name in names:
        target = DRIVE_HOME / name
        target.mkdir(parents=True, exist_ok=True)
        local = PROJECT_ROOT / name
        if local.is_symlink():
            continue
        if local.exists():
            for child in local.iterdir():  # keep what is already there (e.g. data/README.md)
                dest = target / child.name
                if not dest.exists():
                    child.rename(dest)
            subprocess.run(["rm", "-rf", str(local)], check=True)
        local.symlink_to(target, target_is_directory=True)
        print(f"{local} -> {target}")


def fetch_tinyvoc(root: Path, data_url: str = "") -> None:
    """Download Tiny VOC into ``root`` when missing: ``data_url`` is the course's Google Drive
    folder link (gdown); without one, say where to put the files."""
    if (root / "pascal_train.json").is_file():
        return
    if not data_url:
        print(f"Tiny VOC not found at {root}. Copy the course's Google Drive folder (pascal_train.json, "
              f"train_images/, test.json, test_images/) to {DRIVE_HOME / 'data' / 'tinyvoc'}, or pass its "
              "link as data_url. The demo data set works without it.")
        return
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "gdown"], check=True)
    root.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "gdown", "--folder", data_url, "-O", str(root)], check=True)
    os.sync()
