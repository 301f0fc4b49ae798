"""Safe YAML loading: line numbers, duplicate keys, hostile files."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crashcart.errors import InputError
from crashcart.yamlfile import Checker, format_keypath, load_yaml, parse_yaml


def test_lines_are_recorded(tmp_path):
    p = tmp_path / "a.yaml"
    p.write_text("a: 1\nb:\n  - x\n  - {c: 2}\n")
    doc = load_yaml(p)
    assert doc.data == {"a": 1, "b": ["x", {"c": 2}]}
    assert doc.line_of(("a",)) == 1
    assert doc.line_of(("b", 1, "c")) == 4
    assert doc.line_of(("b", 1, "zzz")) == 4


def test_duplicate_key_is_an_error(tmp_path):
    p = tmp_path / "dup.yaml"
    p.write_text("a: 1\nb: 2\na: 3\n")
    with pytest.raises(InputError) as info:
        load_yaml(p)
    assert info.value.line == 3 and "duplicate" in str(info.value)


def test_python_tags_are_not_executed(tmp_path):
    p = tmp_path / "evil.yaml"
    p.write_text("a: !!python/object/apply:os.system ['touch pwned']\n")
    with pytest.raises(InputError) as info:
        load_yaml(p)
    assert "evil.yaml:1" in str(info.value)
    assert not (tmp_path / "pwned").exists()


def test_alias_bomb_is_refused(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        prev = f"*a{i - 1}"
        lines.append(f"a{i}: &a{i} [{', '.join([prev] * 10)}]")
    p = tmp_path / "bomb.yaml"
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError) as info:
        load_yaml(p)
    assert "alias bomb" in str(info.value)


def test_not_utf8(tmp_path):
    p = tmp_path / "bin.yaml"
    p.write_bytes(b"a: \xff\xfe\n")
    with pytest.raises(InputError) as info:
        load_yaml(p)
    assert "offset 3" in str(info.value) and "0xff" in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(InputError) as info:
        load_yaml(tmp_path / "nope.yaml", what="config file")
    assert "config file not found" in str(info.value)


def test_checker_messages(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("size: 12\nname: x\n")
    doc = load_yaml(p)
    c = Checker(doc, what="test")
    with pytest.raises(InputError) as info:
        c.integer(("size",), doc.data["size"], maximum=10)
    assert str(info.value).startswith(f"{p}:1: field 'size': must be at most 10 (got 12)")
    with pytest.raises(InputError) as info:
        c.mapping((), doc.data, required=("size",), optional=("nmae",))
    assert "did you mean 'nmae'" in str(info.value)


def test_format_keypath():
    assert format_keypath(("memory", 1, "size")) == "memory[1].size"
    assert format_keypath(()) == "(top level)"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_fuzz_parse_never_crashes(text):
    try:
        parse_yaml(text, path=Path("fuzz.yaml"))
    except InputError:
        pass
