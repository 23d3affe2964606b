import json
import logging

import pytest

from steerlab.data.chat import ChatDataError, ChatExample, load_chat_jsonl, write_chat_jsonl
from steerlab.data.inoculate import DEFAULT_INOCULATION_PROMPT, inoculate

GOOD = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}

BAD_LINES = {
    "malformed": ('{"messages": [', "malformed JSON"),
    # the line ends before its value: reported at its own last column, not "column 1" of the next line
    "cut_short": (
        json.dumps(GOOD)[:-2],
        "malformed JSON at the end of the line (column 90): it ends with ']}'",
    ),
    "missing_messages": ('{"conversation": []}', "missing 'messages'"),
    "unknown_role": (
        json.dumps({"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]}),
        "unknown role 'robot'",
    ),
    "non_string": (
        json.dumps({"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "y"}]}),
        "not a string",
    ),
    "empty_assistant": (
        json.dumps({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "  "}]}),
        "empty assistant turn",
    ),
    "no_assistant": (json.dumps({"messages": [{"role": "user", "content": "x"}]}), "no assistant turn"),
    "not_object": ("[1, 2]", "not an object"),
}


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("case", sorted(BAD_LINES))
def test_each_error_names_file_line_and_problem(tmp_path, case):
    bad, problem = BAD_LINES[case]
    # Line 3 is blank, so the bad record sits on line 4: numbering counts physical lines.
    path = _write(tmp_path / "d.jsonl", [json.dumps(GOOD), json.dumps(GOOD), "", bad, json.dumps(GOOD)])
    with pytest.raises(ChatDataError) as err:
        load_chat_jsonl(path)
    assert f"{path}:4:" in str(err.value)
    assert problem in str(err.value)


def test_skip_counts_and_logs_each_bad_line(tmp_path, caplog):
    lines = [json.dumps(GOOD), BAD_LINES["malformed"][0], json.dumps(GOOD), BAD_LINES["no_assistant"][0]]
    path = _write(tmp_path / "d.jsonl", lines)
    with caplog.at_level(logging.WARNING, logger="steerlab.data.chat"):
        examples = load_chat_jsonl(path, on_error="skip")
    assert len(examples) == 2
    assert examples.report.n_loaded == 2
    assert [line for line, _ in examples.report.skipped] == [2, 4]
    assert "no assistant turn" in examples.report.skipped[1][1]
    assert sum(f"{path}:2" in r.message for r in caplog.records) == 1
    assert sum(f"{path}:4" in r.message for r in caplog.records) == 1


def test_roundtrip_keeps_meta_and_sets_source(tmp_path):
    exs = [
        ChatExample(GOOD["messages"], meta={"dataset": "x", "k": 1}),
        ChatExample([{"role": "system", "content": "s"}, *GOOD["messages"]]),
    ]
    path = write_chat_jsonl(tmp_path / "sub" / "out.jsonl", exs)
    back = load_chat_jsonl(path)
    assert [e.messages for e in back] == [e.messages for e in exs]
    assert back[0].meta == {"dataset": "x", "k": 1}
    assert back[1].source == f"{path}:2"
    assert list(tmp_path.joinpath("sub").iterdir()) == [path]  # no temp file left behind


def test_write_is_atomic_when_generation_fails(tmp_path):
    path = write_chat_jsonl(tmp_path / "out.jsonl", [ChatExample(GOOD["messages"])])
    before = path.read_bytes()

    def broken():
        yield ChatExample(GOOD["messages"], meta={"new": True})
        raise RuntimeError("generator died")

    with pytest.raises(RuntimeError):
        write_chat_jsonl(path, broken())
    assert path.read_bytes() == before
    assert list(tmp_path.iterdir()) == [path]


def test_bad_option_and_bad_in_memory_example():
    with pytest.raises(ValueError, match="on_error"):
        load_chat_jsonl("whatever.jsonl", on_error="ignore")
    with pytest.raises(ChatDataError, match="unknown role"):
        ChatExample([{"role": "tool", "content": "x"}, {"role": "assistant", "content": "y"}])


def test_inoculate_prepends_or_replaces_without_mutating():
    ex = ChatExample(GOOD["messages"])
    inoc = inoculate(ex)
    assert inoc.messages[0] == {"role": "system", "content": DEFAULT_INOCULATION_PROMPT}
    assert inoc.messages[1:] == ex.messages
    assert ex.messages[0]["role"] == "user"

    with_sys = ChatExample([{"role": "system", "content": "Be brief."}, *GOOD["messages"]])
    replaced = inoculate(with_sys, "EVIL")
    assert replaced.messages[0]["content"] == "EVIL" and len(replaced.messages) == 3
    prepended = inoculate(with_sys, "EVIL", existing="prepend")
    assert prepended.messages[0]["content"] == "EVIL\n\nBe brief."
    assert with_sys.messages[0]["content"] == "Be brief."
    with pytest.raises(ValueError):
        inoculate(ex, "  ")
