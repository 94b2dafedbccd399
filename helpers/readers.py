"""Reading files safely: JSON, YAML and images, every failure one HelpersError line naming the file.

Python's parsers fail in more ways than a syntax error: deep nesting raises RecursionError, an
integer past the interpreter's digit limit raises ValueError, a file that is not UTF-8 raises
UnicodeDecodeError, a directory or a file without read permission raises OSError. Every reader
here turns each of those into the caller's :class:`~helpers.errors.HelpersError` subclass, so a
command refuses bad input in one line instead of a traceback.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from .errors import DataError, HelpersError

# What PIL raises on bad image files (DecompressionBombError: an image of absurd pixel count).
_IMAGE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)
_EXIF_ORIENTATION = 0x0112
_SWAPPED_ORIENTATIONS = {5, 6, 7, 8}  # EXIF orientations that swap width and height


def _read_text(path: Path, error: type[HelpersError], what: str) -> str:
    """The UTF-8 text of a file; a missing file, a folder, a permission or encoding problem is ``error``."""
    if path.is_dir():
        raise error(f"{path}: is a folder, not a {what} file")
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{path}: file not found") from None
    except UnicodeDecodeError as e:
        raise error(f"{path}: not UTF-8 text (byte {e.start}: {e.reason}); is it a {what} file?") from None
    except OSError as e:
        raise error(f"{path}: cannot read it ({e.strerror or type(e).__name__})") from None


def parse_json(text: str, name: str, error: type[HelpersError] = HelpersError) -> Any:
    """``json.loads`` with every failure (syntax, nesting depth, huge integers) as one ``error`` line."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise error(f"{name}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    except RecursionError:
        raise error(f"{name}: invalid JSON: nested too deeply to read") from None
    except ValueError as e:  # an integer with more digits than int() accepts
        raise error(f"{name}: invalid JSON: {str(e).split(';')[0]}") from None


def read_json(path: str | os.PathLike, error: type[HelpersError] = HelpersError) -> Any:
    """The JSON document of a file; any failure raises ``error`` with a one-line message naming it."""
    path = Path(path)
    return parse_json(_read_text(path, error, "JSON"), str(path), error)


def load_json(source: Any, error: type[HelpersError] = HelpersError) -> Any:
    """The JSON document at a path, or ``source`` itself when it is already loaded."""
    if isinstance(source, (str, os.PathLike)):
        return read_json(source, error)
    return source


def read_yaml(path: str | os.PathLike, error: type[HelpersError] = HelpersError) -> Any:
    """The YAML document of a file (``yaml.safe_load``); any failure raises ``error`` naming it."""
    import yaml

    path = Path(path)
    text = _read_text(path, error, "YAML")
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(e, "problem", None) or type(e).__name__
        raise error(f"{path}: invalid YAML{where}: {problem}") from None
    except RecursionError:
        raise error(f"{path}: invalid YAML: nested too deeply to read") from None
    except ValueError as e:  # an integer with more digits than int() accepts
        raise error(f"{path}: invalid YAML: {str(e).split(';')[0]}") from None


# --------------------------------------------------------------------------------------- images


def open_image(path: str | os.PathLike) -> Image.Image:
    """``Image.open`` with every failure turned into a DataError naming the file."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a folder, not an image file")
    try:
        return Image.open(path)
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except _IMAGE_ERRORS as e:
        raise DataError(f"{path}: cannot read image ({e})") from None


def oriented_size(im: Image.Image) -> tuple[int, int]:
    """(h, w) of an opened image as displayed, i.e. after its EXIF orientation."""
    w, h = im.size
    try:
        orientation = im.getexif().get(_EXIF_ORIENTATION, 1)
    except _IMAGE_ERRORS:  # unreadable EXIF block: treat as not rotated
        orientation = 1
    return (w, h) if orientation in _SWAPPED_ORIENTATIONS else (h, w)


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(h, w) of an image file from its header only, EXIF orientation applied."""
    with open_image(path) as im:
        return oriented_size(im)


def decode_fully(path: str | os.PathLike) -> tuple[int, int]:
    """Decode every pixel (truncated files only fail here); return the oriented (h, w)."""
    with open_image(path) as im:
        try:
            im.load()
        except _IMAGE_ERRORS as e:
            raise DataError(f"{path}: corrupt or truncated image ({e})") from None
        return oriented_size(im)


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode as 8-bit RGB (alpha dropped, 16/32-bit grayscale rescaled)."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(im, dtype=np.float64)
        top = values.max() if values.size else 0.0
        scaled = values * (255.0 / top) if top > 255 else values
        im = Image.fromarray(np.clip(scaled, 0, 255).astype(np.uint8))
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    return im.convert("RGB")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """The image as an HxWx3 uint8 RGB array, EXIF orientation applied, any mode converted."""
    with open_image(path) as im:
        try:
            im.load()
            rgb = _to_rgb(ImageOps.exif_transpose(im))
        except _IMAGE_ERRORS as e:
            raise DataError(f"{path}: corrupt, truncated or unconvertible image ({e})") from None
        return np.asarray(rgb, dtype=np.uint8)
