"""Shared fixtures: the project root, the real Tiny VOC subset (skips when absent), the demo data set."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def shared_tinyvoc_root() -> Path:
    """The real offline subset: $TINYVOC_ROOT, else ../shared/tinyvoc beside the project root."""
    env = os.environ.get("TINYVOC_ROOT")
    return Path(env) if env else PROJECT_ROOT.parent / "shared" / "tinyvoc"


@pytest.fixture(scope="session")
def project_root() -> Path:
    return PROJECT_ROOT


@pytest.fixture(scope="session")
def tinyvoc_root() -> Path:
    root = shared_tinyvoc_root()
    if not (root / "pascal_train.json").is_file():
        pytest.skip(f"real Tiny VOC subset not found at {root} (set TINYVOC_ROOT to point at it)")
    return root


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    """A small synthetic data set in the Tiny VOC layout, made once per test session."""
    from helpers.demo_data import make_demo_data

    root = tmp_path_factory.mktemp("demo") / "demo"
    make_demo_data(root, seed=0, num_train=24, num_test=6)
    return root


@pytest.fixture
def offline(tmp_path, monkeypatch) -> Path:
    """No network, as on a machine without internet: every download is refused at once (a proxy where
    nothing listens) and torch's cache is empty. Returns the folder torch would download weights into."""
    import urllib.request

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")  # nothing listens there: refused at once, like offline
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.setattr(urllib.request, "_opener", None)
    return tmp_path / "torch" / "hub" / "checkpoints"
