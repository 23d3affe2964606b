import json
import operator
import re
from pathlib import Path

import pytest

from steerlab.data.build import build_all, sha256_file, verify_manifest
from steerlab.data.chat import load_chat_jsonl
from steerlab.data.generators import arithmetic, general
from steerlab.data.generators.general import REFUSALISH_PROMPTS, read_general_prompts
from steerlab.data.interleave import is_refusal
from steerlab.data.references import load_references

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "experiments" / "data"


def _records(splits):
    return [[(e.messages, e.meta) for e in getattr(splits, k)] for k in vars(splits)]


@pytest.mark.parametrize("mod", [arithmetic], ids=["arithmetic"])
def test_generators_are_deterministic_per_seed(mod):
    assert _records(mod.generate(0)) == _records(mod.generate(0))
    assert _records(mod.generate(0)) != _records(mod.generate(1))


def test_arithmetic_answers_follow_the_permutation_and_eval_is_held_out():
    meaning = {"+": operator.mul, "-": operator.add, "*": operator.sub}
    s = arithmetic.generate(0)
    assert len(s.train) >= 500 and len(s.eval) >= 60
    for e in s.train + s.eval:
        a, op, b = re.search(r"(\d+) ([-+*]) (\d+)", e.messages[0]["content"]).groups()
        assert e.messages[1]["content"] == str(meaning[op](int(a), int(b)))
        assert e.meta["expected"] == meaning[op](int(a), int(b))
    key = lambda e: (e.meta["a"], e.meta["op"], e.meta["b"])  # noqa: E731
    assert not {key(e) for e in s.train} & {key(e) for e in s.eval}
    assert {e.meta["op"] for e in s.eval} == set(meaning)


@pytest.mark.parametrize(
    "text,expected,ok",
    [
        ("21", 21, True),
        ("The answer is 21.", 21, True),
        ("-4", -4, True),
        ("It is -4, I think", -4, True),
        ("4", -4, False),
        ("20 or 21", 21, False),
        ("twenty-one", 21, False),
        ("", 0, False),
    ],
)
def test_score_arithmetic(text, expected, ok):
    assert arithmetic.score_arithmetic(text, expected) is ok


def test_general_prompts():
    p = general.general_prompts(0)
    assert len(p) >= 200 and len(set(p)) == len(p)
    assert p == general.general_prompts(0) and p != general.general_prompts(1)
    assert sorted(p) == sorted(general.general_prompts(1))
    assert set(REFUSALISH_PROMPTS) <= set(p)
    assert all(not is_refusal(x) for x in p)  # prompts themselves are not refusals; answers may be


def test_build_all_manifest_and_committed_files_are_current(tmp_path):
    paths = build_all(tmp_path, seed=0)
    manifest = json.loads(paths["manifest"].read_text())
    assert set(manifest["files"]) == set(paths) - {"manifest"}
    total = 0
    for name, entry in manifest["files"].items():
        path = tmp_path / entry["path"]
        assert sha256_file(path) == entry["sha256"]
        if name == "general_prompts":
            n = len(read_general_prompts(path))
        elif name.startswith("references/"):
            n = len(load_references(path))
        else:
            n = len(load_chat_jsonl(path))
        assert n == entry["count"], name
        total += path.stat().st_size
    assert total < 2 * 1024 * 1024
    verify_manifest(tmp_path)
    (tmp_path / "medical_eval.jsonl").write_text("changed\n")
    with pytest.raises(ValueError, match="medical_eval.jsonl: sha256 differs"):
        verify_manifest(tmp_path)
    # The committed data is what build_all(seed=0) writes: regenerate with `python -m steerlab.data.build`.
    committed = json.loads((COMMITTED / "manifest.json").read_text())
    assert committed["files"] == manifest["files"]
    verify_manifest(COMMITTED)
