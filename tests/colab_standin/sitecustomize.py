"""Colab as the course meets it: google.colab imported at start, Drive on another filesystem."""

import errno
import os

_MOUNT = os.path.realpath(os.environ.get("HELPERS_DRIVE_MOUNT", "/content/drive"))
_rename, _replace = os.rename, os.replace


def _on_drive(path) -> bool:
    real = os.path.realpath(os.fspath(path))
    return real == _MOUNT or real.startswith(_MOUNT + os.sep)


def _guard(fn):
    def moved(src, dst, *args, **kwargs):
        if _on_drive(src) != _on_drive(dst):
            raise OSError(errno.EXDEV, "Invalid cross-device link", os.fspath(src), None, os.fspath(dst))
        return fn(src, dst, *args, **kwargs)
    return moved


os.rename, os.replace = _guard(_rename), _guard(_replace)

import google.colab  # noqa: E402,F401  (Colab imports it at kernel start)
