"""helpers.readers and helpers.validate: every way a JSON or YAML file can fail is one line naming it."""

from __future__ import annotations

import pytest

from helpers.errors import ConfigError, DataError
from helpers.readers import read_json, read_yaml
from helpers.validate import file_name_problem, is_int, is_number, short


@pytest.mark.parametrize("content, match", [
    (b"{", "invalid JSON at line 1, column 2"),
    (b"[" * 100_000, "nested too deeply"),
    (b'{"id": ' + b"9" * 5000 + b"}", "Exceeds the limit"),
    (b'{"name": "\xff"}', "not UTF-8 text"),
    (b"", "invalid JSON at line 1, column 1"),
])
def test_json_failures(tmp_path, content, match):
    path = tmp_path / "f.json"
    path.write_bytes(content)
    with pytest.raises(DataError, match=match) as info:
        read_json(path, DataError)
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def test_json_not_a_file(tmp_path):
    with pytest.raises(DataError, match="is a folder"):
        read_json(tmp_path, DataError)
    with pytest.raises(DataError, match="file not found"):
        read_json(tmp_path / "absent.json", DataError)


@pytest.mark.parametrize("content, match", [
    (b"a: [1\n", r"invalid YAML \(line 2, column 1\)"),
    (b"[" * 100_000, "nested too deeply"),
    (b"a: " + b"9" * 5000 + b"\n", "Exceeds the limit"),
    (b"a: 1 \xff\n", "not UTF-8 text"),
    (b"a: !!python/object:os.system x\n", "invalid YAML"),
])
def test_yaml_failures(tmp_path, content, match):
    path = tmp_path / "c.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=match) as info:
        read_yaml(path, ConfigError)
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


@pytest.mark.parametrize("name, bad", [
    ("a.jpg", False), ("sub/a.jpg", False), ("a..b.jpg", False),
    ("../a.jpg", True), ("sub/../../a.jpg", True), ("/etc/passwd", True), ("..\\a.jpg", True),
    ("C:\\a.jpg", True), ("\\\\server\\share\\a.jpg", True), ("a\x00.jpg", True),
])
def test_file_names_stay_inside_the_image_folder(name, bad):
    assert (file_name_problem(name) is not None) == bad


def test_one_rule_for_ints_and_numbers():
    assert is_int(3) and not is_int(True) and not is_int(3.0)
    assert is_number(3) and is_number(0.5) and not is_number(float("nan")) and not is_number(False)
    nested: list = []
    for _ in range(5000):
        nested = [nested]
    assert short(nested).endswith("...") or short(nested) == "<a deeply nested value>"
