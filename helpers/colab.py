"""Colab setup: what every notebook's first cell calls (``colab.setup()``).

On Colab it
1. enables Colab's custom widget manager (ipywidgets render only after it);
2. installs what the course needs and Colab lacks (never the Jupyter server stack, never a
   different ipywidgets major: the course works with Colab's own, so no runtime restart);
3. mounts Google Drive and makes ``data/`` and ``runs/`` links into ``MyDrive/maskrcnn-tinyvoc/``,
   so a disconnect loses nothing: a fresh VM (empty ``/content``, same Drive) continues from the
   checkpoints there;
4. reads the course settings (:mod:`helpers.course`, kept in ``runs/`` on Drive) and installs
   detectron2 only when the course's engine is detectron2;
5. downloads Tiny VOC when the course's data root is empty and ``tinyvoc_url`` is set.

Elsewhere it only makes :class:`helpers.errors.HelpersError` show as one ``error:`` line in Jupyter.
"""

from __future__ import annotations

import errno
import filecmp
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .errors import HelpersError
from .paths import PROJECT_ROOT

REPO_URL = "https://github.com/tinyvoc-course/maskrcnn-tinyvoc"
DETECTRON2_GIT = "git+https://github.com/facebookresearch/detectron2.git"
# Where Colab mounts Drive. HELPERS_DRIVE_MOUNT moves it, for tests that play Colab elsewhere.
DRIVE_MOUNT = Path(os.environ.get("HELPERS_DRIVE_MOUNT", "/content/drive"))
DRIVE_FOLDER = "maskrcnn-tinyvoc"
LINKED = ("data", "runs")
# import name -> what the course needs on top of Colab's stock image (pyproject.toml's core list)
REQUIRED_MODULES = {"torch": "torch", "torchvision": "torchvision", "numpy": "numpy", "PIL": "pillow",
                    "pycocotools": "pycocotools", "shapely": "shapely", "matplotlib": "matplotlib",
                    "yaml": "pyyaml", "tqdm": "tqdm", "ipywidgets": "ipywidgets", "tensorboard": "tensorboard"}


def on_colab() -> bool:
    return "google.colab" in sys.modules


def drive_home() -> Path:
    return DRIVE_MOUNT / "MyDrive" / DRIVE_FOLDER


def setup(drive: bool = True, install: bool = True) -> None:
    """Prepare this runtime for the course (see the module docstring). Returns nothing, so the cell
    shows only what it did."""
    one_line_errors()
    if not on_colab():
        return
    enable_widgets()
    if install:
        install_missing()
    if drive:
        link_to_drive(LINKED)
    else:
        print("data/ and runs/ stay on this VM (drive=False): a disconnect loses them")
    from . import course

    c = course.load(quiet=True)
    if c.engine == "detectron2":
        install_detectron2()
    else:
        print(f"engine {c.engine}: detectron2 is not needed, so it is not installed "
              f"(set `engine: detectron2` in {c.file} to use it)")
    if c.tinyvoc_url:
        fetch_tinyvoc(c.data_root, c.tinyvoc_url)
    print(c.summary())


def one_line_errors() -> None:
    """In IPython, show the project's errors (HelpersError) as one ``error:`` line, not a traceback.
    The cell still fails (papermill and "Run all" stop there)."""
    try:
        shell = get_ipython()  # type: ignore[name-defined]  # noqa: F821
    except NameError:
        return
    if shell is None or not hasattr(shell, "set_custom_exc"):
        return

    def handler(shell, etype, value, _tb, tb_offset=None):
        stb = [f"error: {value}"]
        shell._showtraceback(etype, value, stb)  # the cell's error output: a kernel sends it as ename/evalue
        return stb

    shell.set_custom_exc(tuple(_subclasses(HelpersError)), handler)


def _subclasses(cls: type) -> list[type]:
    out = [cls]
    for sub in cls.__subclasses__():
        out += _subclasses(sub)
    return out


def enable_widgets() -> None:
    """Colab renders ipywidgets only through its custom widget manager."""
    from google.colab import output  # type: ignore[import-not-found]

    output.enable_custom_widget_manager()


def missing_modules() -> list[str]:
    """The distributions of REQUIRED_MODULES that cannot be imported here."""
    return sorted({dist for mod, dist in REQUIRED_MODULES.items() if importlib.util.find_spec(mod) is None})


def install_missing(project: Path = PROJECT_ROOT) -> None:
    """pip-install this package when a requirement is missing (its core list: no Jupyter server,
    ipywidgets within Colab's 7.x, so nothing Colab already imported changes)."""
    missing = missing_modules()
    if not missing:
        return
    print(f"installing {', '.join(missing)} (once per runtime)...", flush=True)
    _run([sys.executable, "-m", "pip", "install", "-q", "-e", str(project)], "installing the course's requirements")


def install_detectron2() -> None:
    """detectron2's official way: build from source (about 5 minutes on Colab).

    ``--no-build-isolation`` lets its build see the installed torch (recent pip otherwise fails
    with "No module named 'torch'").
    """
    if importlib.util.find_spec("detectron2") is not None:
        print("engine detectron2: already installed")
        return
    print("engine detectron2: building it from source (about 5 minutes, once per runtime)...", flush=True)
    _run([sys.executable, "-m", "pip", "install", "-q", "--no-build-isolation", DETECTRON2_GIT],
         "building detectron2 (see https://detectron2.readthedocs.io/en/latest/tutorials/install.html)")


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()
        raise HelpersError(f"{what} failed (exit {proc.returncode}): {tail[-1] if tail else 'no output'}")


# ------------------------------------------------------------------------------ Google Drive


def mount_drive() -> Path:
    """Mount Drive at DRIVE_MOUNT (when not mounted yet); returns MyDrive/maskrcnn-tinyvoc."""
    if not (DRIVE_MOUNT / "MyDrive").is_dir():
        try:
            from google.colab import drive  # type: ignore[import-not-found]

            drive.mount(str(DRIVE_MOUNT))
        except Exception as e:  # Colab raises its own MessageError / ValueError / TimeoutError
            raise HelpersError(f"could not mount Google Drive at {DRIVE_MOUNT}: {str(e).strip() or type(e).__name__}; "
                               "allow access when asked, or call colab.setup(drive=False) to keep data/ and runs/ "
                               "on this VM (lost on disconnect)") from None
        if not (DRIVE_MOUNT / "MyDrive").is_dir():
            raise HelpersError(f"Google Drive is mounted at {DRIVE_MOUNT} but has no MyDrive folder")
    home = drive_home()
    home.mkdir(parents=True, exist_ok=True)
    return home


def link_to_drive(names: tuple[str, ...] = LINKED, project: Path = PROJECT_ROOT) -> None:
    """Make each project folder a link into Drive, moving what it holds there first.

    Idempotent: a second call, or a fresh VM whose clone has an empty ``runs/`` while Drive holds the
    last session's, keeps Drive's files and links to them.
    """
    home = mount_drive()
    for name in names:
        target = home / name
        target.mkdir(parents=True, exist_ok=True)
        local = project / name
        if local.is_symlink():
            if local.resolve() == target.resolve():
                continue
            local.unlink()
        elif local.is_dir():
            merge_into(local, target)
            shutil.rmtree(local)
        elif local.exists():
            raise HelpersError(f"{local} is a file, not a folder: move it away and run setup again")
        local.symlink_to(target, target_is_directory=True)
        print(f"{local} -> {target} (on Google Drive)")


def merge_into(src: Path, dst: Path) -> None:
    """Move everything in folder ``src`` into folder ``dst``, which may be on another filesystem.

    What ``dst`` already has wins: an identical local file is dropped, a different one is kept beside
    it as ``NAME.local``. Why not shutil.move: across filesystems it copies a file in place, so a VM
    that dies mid-copy leaves a truncated file on Drive under the real name; here a file appears
    whole (copy to a temp name on Drive, then rename there) or not at all.
    """
    dst.mkdir(parents=True, exist_ok=True)
    for child in sorted(src.iterdir()):
        dest = dst / child.name
        if child.is_dir() and not child.is_symlink():
            merge_into(child, dest)
            continue
        if dest.exists():
            if dest.is_file() and filecmp.cmp(child, dest, shallow=False):
                child.unlink()
                continue
            dest = dst / f"{child.name}.local"
            print(f"{dst / child.name} already exists on Drive: keeping it, and this VM's copy as {dest}")
        move_file(child, dest)


def move_file(src: Path, dest: Path) -> None:
    """Rename, or where that crosses filesystems (EXDEV), copy to a temp file beside ``dest``,
    rename it into place and remove ``src``."""
    try:
        os.rename(src, dest)
        return
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    try:
        shutil.copy2(src, tmp)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    src.unlink()


# ------------------------------------------------------------------------------ Tiny VOC


def fetch_tinyvoc(root: Path, url: str) -> Path:
    """Download Tiny VOC into ``root`` when it has no ``pascal_train.json``: ``url`` is the course's
    Google Drive folder link (gdown). The files appear in ``root`` only once the download is complete
    and holds the Tiny VOC layout."""
    from . import data

    root = Path(root)
    if (root / data.TRAIN_JSON).is_file():
        return root
    if importlib.util.find_spec("gdown") is None:
        _run([sys.executable, "-m", "pip", "install", "-q", "gdown"], "installing gdown")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".download", dir=root.parent))
    try:
        print(f"downloading Tiny VOC from {url} into {root}...", flush=True)
        _run([sys.executable, "-m", "gdown", "--folder", url, "-O", str(tmp)], f"downloading Tiny VOC from {url}")
        found = [p.parent for p in tmp.rglob(data.TRAIN_JSON)]
        if not found:
            raise HelpersError(f"the download from {url} has no {data.TRAIN_JSON}: is it the course's Tiny VOC folder?")
        _unpack_zips(found[0])
        data.validate_root(found[0], check_images=False)
        if root.exists():
            merge_into(found[0], root)
        else:
            os.replace(found[0], root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def _unpack_zips(folder: Path) -> None:
    """The course's folder may hold train_images.zip / test_images.zip instead of the folders."""
    import zipfile

    for name in ("train_images", "test_images"):
        archive = folder / f"{name}.zip"
        if archive.is_file() and not (folder / name).is_dir():
            try:
                with zipfile.ZipFile(archive) as z:
                    z.extractall(folder)
            except (zipfile.BadZipFile, OSError) as e:
                raise HelpersError(f"{archive}: cannot unpack: {e}") from None
            archive.unlink()
