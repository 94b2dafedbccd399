"""configs/README.md documents every config key and which engine supports it."""

from helpers.config import engine_key_table
from helpers.paths import CONFIGS


def test_config_reference_lists_every_key_with_its_engine_support():
    text = (CONFIGS / "README.md").read_text(encoding="utf-8")
    for key, default, tv, d2 in engine_key_table():
        assert f"| `{key}` | `{default!r}` | {tv} | {d2} |" in text, f"configs/README.md is stale for {key}"


def test_config_reference_lists_every_key_with_its_range():
    from helpers.config import value_range_table

    text = (CONFIGS / "README.md").read_text(encoding="utf-8")
    for key, allowed in value_range_table():
        assert f"| `{key}` | {allowed} |" in text, f"configs/README.md's value ranges are stale for {key}"
