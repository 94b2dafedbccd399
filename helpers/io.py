"""Atomic file writes: a killed run never leaves a half-written file behind, and a write that fails
(disk full, permission denied) is one :class:`~helpers.errors.WriteError` line naming the file."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

from .errors import HelpersError, WriteError


def os_error_in(exc: BaseException | None) -> OSError | None:
    """The OSError behind an exception: itself, or one in its cause / context chain (torch's zip
    writer, for one, turns a failed write into a RuntimeError whose context is the OSError)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def write_error(path: Path, error: OSError) -> WriteError:
    """One line: which file, and why the system refused it."""
    code = errno.errorcode.get(error.errno, "") if error.errno else ""
    why = error.strerror or str(error) or type(error).__name__
    hint = {"ENOSPC": "; free some space, then run again (a training run resumes with --resume)",
            "EDQUOT": "; free some space, then run again (a training run resumes with --resume)",
            "EACCES": "; choose a folder you can write to", "EPERM": "; choose a folder you can write to",
            "EROFS": "; choose a folder you can write to", "EISDIR": "; a folder is in the way"}.get(code, "")
    return WriteError(f"cannot write {path}: {why}{f' ({code})' if code else ''}; the previous file, if any, "
                      f"is kept{hint}")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temp file beside ``path``; on success fsync it and rename it over ``path``.

    On any exception the temp file is removed and ``path`` keeps its previous content; a failure to
    write (disk full, permission denied, ...) is raised as a one-line WriteError naming ``path``.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise write_error(path, e) from None
    binary = "b" in mode
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, mode, encoding=None if binary else encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        cause = None if isinstance(e, HelpersError) else os_error_in(e)
        if cause is not None:
            raise write_error(path, cause) from None
        raise


def check_output_path(path: str | os.PathLike, what: str = "output") -> Path:
    """Refuse, before any work, an output file that is a folder or sits in a missing or read-only folder."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise WriteError(f"{path}: the {what} file is a folder; give a file name")
    parent = path.parent
    if not parent.is_dir():
        raise WriteError(f"{path}: the {what} file's folder {parent} does not exist" +
                         (" (it is a file)" if parent.exists() else ""))
    if not os.access(parent, os.W_OK | os.X_OK):
        raise WriteError(f"{path}: cannot write the {what} file: folder {parent} is not writable")
    return path


def check_output_dir(path: str | os.PathLike, what: str = "output") -> Path:
    """Refuse, before any work, an output folder that is a file or cannot be created or written."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise WriteError(f"{path}: the {what} folder is a file")
    existing = path
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise WriteError(f"{path}: cannot create the {what} folder: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise WriteError(f"{path}: cannot write the {what} folder: {existing} is not writable")
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_write(path) as f:
        f.write(text)
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = None) -> Path:
    with atomic_write(path) as f:
        json.dump(obj, f, indent=indent)
    return Path(path)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_write(path, "wb") as f:
        f.write(data)
    return Path(path)
