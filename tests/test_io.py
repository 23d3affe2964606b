"""steerlab.io: the one JSONL layer (torn tails dropped on read and cut before the next append)."""

from __future__ import annotations

import json

import pytest
import yaml

from steerlab.io import JsonlError, append_jsonl, read_json, read_jsonl, read_keyed


def test_append_after_a_torn_tail_starts_on_a_fresh_line(tmp_path):
    path = tmp_path / "log" / "a.jsonl"
    append_jsonl(path, [{"key": "a", "x": "é"}, {"key": "b"}])
    assert "é" in path.read_text(encoding="utf-8")  # UTF-8, not ASCII-escaped
    with path.open("a", encoding="utf-8") as f:
        f.write('{"key": "c", "x"')  # a kill in the middle of a write
    assert [obj["key"] for _, obj in read_jsonl(path, torn_tail=True)] == ["a", "b"]
    with pytest.raises(JsonlError, match=r"a.jsonl:3: not valid JSON"):
        read_jsonl(path)
    append_jsonl(path, [{"key": "c"}])
    assert [json.loads(line)["key"] for line in path.read_text().splitlines()] == ["a", "b", "c"]


def test_bad_lines_can_be_handed_over_while_the_rest_is_kept(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"key": "a"}\n{oops\n{"key": "c"}\n{"key": "d", "x')
    bad: list[ValueError] = []
    kept = read_jsonl(path, torn_tail=True, on_bad_line=bad.append)
    assert [n for n, _ in kept] == [1, 3] and [str(e) for e in bad] == [
        f"{path}:2: not valid JSON at column 2: Expecting property name enclosed in double quotes"
    ]
    with pytest.raises(JsonlError, match=r"a.jsonl:2: not valid JSON"):
        read_jsonl(path, torn_tail=True)  # without a handler the first bad line still raises


def test_a_torn_first_line_is_cut_whole(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"key": "a"' + " " * 70_000)  # longer than one block of the backwards scan
    append_jsonl(path, [{"key": "b"}])
    assert path.read_text() == '{"key": "b"}\n'


def test_read_keyed_names_the_line_of_a_bad_record(tmp_path):
    path = tmp_path / "k.jsonl"
    assert read_keyed(path) == {}
    path.write_text('{"key": "a", "answer": 1}\n{"key": "b"}\n')
    assert set(read_keyed(path)) == {"a", "b"}
    with pytest.raises(ValueError, match=r"k.jsonl:2: a row must be an object with 'key' and 'answer'"):
        read_keyed(path, required=("key", "answer"), what="row", error=ValueError)
    path.write_text('{"key": "a"}\n[1]\n')
    with pytest.raises(JsonlError, match=r"k.jsonl:2: a record must be an object with 'key'"):
        read_keyed(path)
    path.write_text('{"key": "a"}\n{"key": "a"}\n')
    with pytest.raises(JsonlError, match=r"k.jsonl:2: duplicate key 'a'"):
        read_keyed(path)


def test_read_json_names_the_missing_file_and_the_bad_line(tmp_path):
    class SidecarError(ValueError):
        pass

    path = tmp_path / "meta.json"
    with pytest.raises(SidecarError, match=r"meta\.json: file does not exist"):
        read_json(path, error=SidecarError)
    path.write_text('{\n  "a": 1,\n  "b": \n}\n')
    with pytest.raises(SidecarError, match=r"meta\.json: invalid JSON at line 4, column 1"):
        read_json(path, error=SidecarError)
    path.write_text('{"a": [1, 2]}')
    assert read_json(path) == {"a": [1, 2]}


def test_a_path_setting_is_the_same_where_the_content_is(tmp_path):
    from steerlab.io import same_setting

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for folder in ("a", "b"):
        (tmp_path / folder / "x.jsonl").write_text('{"q": 1}\n')
        (tmp_path / folder / "sub").mkdir()
        (tmp_path / folder / "sub" / "y.txt").write_text("y")
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    assert same_setting(a, b) and same_setting(f"{a}/x.jsonl", f"{b}/x.jsonl")
    (tmp_path / "b" / "sub" / "y.txt").write_text("z")  # one byte deep in the folder
    assert not same_setting(a, b)
    (tmp_path / "b" / "sub" / "y.txt").write_text("y")
    (tmp_path / "b" / "sub" / "y.txt").rename(tmp_path / "b" / "sub" / "w.txt")  # a renamed file
    assert not same_setting(a, b)
    assert not same_setting(f"{a}/x.jsonl", str(tmp_path / "gone" / "x.jsonl"))  # gone: cannot be checked
    assert not same_setting("org/model", "org/other") and same_setting(3, 3) and not same_setting(0.1, 0.2)
    assert same_setting([a, 1], [b, 1]) is False  # b's sub/ differs now
    (tmp_path / "b" / "sub" / "w.txt").rename(tmp_path / "b" / "sub" / "y.txt")
    assert same_setting([a, 1], [b, 1]) and not same_setting([a], [b, 1])
    from steerlab.io import vanished_path

    assert vanished_path([1, str(tmp_path / "gone")]) and not vanished_path([a, "org/model"])


def test_a_line_cut_short_is_reported_at_its_end_with_what_it_lacks(tmp_path):
    """json points past the end of a line that ends before its value does (column 1 of the next line after
    a newline): the message gives the line's last column and the brackets left open."""
    line = '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}'
    path = tmp_path / "a.jsonl"
    path.write_text(f'{{"a": 1}}\n{line}\n{{"b": 2}}\n')
    with pytest.raises(JsonlError) as caught:
        read_jsonl(path)
    assert str(caught.value) == (
        f"{path}:2: not valid JSON at the end of the line (column {len(line)}): it ends with ']}}' still to "
        "close (Expecting ',' delimiter)"
    )
    path.write_text('{"a": 1}\n{"a": [1, x]}\n')  # inside the line: json's own column
    with pytest.raises(JsonlError, match=r"a\.jsonl:2: not valid JSON at column 11: Expecting value"):
        read_jsonl(path)
    sidecar = tmp_path / "meta.json"
    sidecar.write_text('{\n  "a": [1,\n  2\n\n')
    with pytest.raises(ValueError, match=r"at the end of the file \(line 3, column 3\): it ends with '\]\}'"):
        read_json(sidecar)


def test_a_key_given_twice_in_a_yaml_mapping_is_named_with_both_lines(tmp_path):
    """PyYAML keeps the last of two equal keys: a second `sft:` arm would silently replace the baseline."""
    from steerlab.experiment.grid import load_grid
    from steerlab.io import load_yaml
    from steerlab.train.config import ConfigError

    grid = tmp_path / "grid.yaml"
    grid.write_text("name: g\nmodel: tiny:llama\narms:\n  sft: {sft: {}}\n  kl: {kl: {}}\n  sft: {kl: {}}\n")
    with pytest.raises(
        ConfigError, match=r"grid.yaml: invalid YAML at line 6: duplicate key 'sft' \(first given at line 4\)"
    ):
        load_grid(grid)
    with pytest.raises(yaml.YAMLError, match="duplicate key 'a'"):
        load_yaml("{a: 1, a: 2}")
    merged = load_yaml("base: &b {x: 1}\nuse:\n  <<: *b\n  x: 2\n")  # a merged key overridden: legal
    assert merged == {"base": {"x": 1}, "use": {"x": 2}}
