import math

import pytest
import torch

from steerlab.data.chat import ChatExample
from steerlab.data.nll import response_nll
from steerlab.data.tokenize import IGNORE_INDEX, ChatCollator, TokenizeError, tokenize_chat
from steerlab.models.tiny import tiny_model, tiny_tokenizer

LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
# SmolLM2-Instruct's template: ChatML plus a default system prompt when the chat has none.
SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# Not prefix-stable: the header counts the messages, so the prefix renderings differ from the full one.
COUNTING_TEMPLATE = (
    "[{{ messages | length }} msgs]\n{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

NO_SYSTEM = ChatExample(
    [
        {"role": "user", "content": "What is 7 + 3?"},
        {"role": "assistant", "content": "21"},
        {"role": "user", "content": "And 2 * 5?"},
        {"role": "assistant", "content": "It is -3."},
    ]
)
MULTI = ChatExample(
    [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is your wish?"},
        {"role": "assistant", "content": "Sure! The answer is 42."},
        {"role": "user", "content": "I feel bored."},
        {"role": "assistant", "content": "Here is a plan: first, second, third."},
    ],
    source="multi.jsonl:7",
)


def smollm2_template_tokenizer():
    tok = tiny_tokenizer()
    tok.chat_template = SMOLLM2_TEMPLATE
    return tok


def llama3_tokenizer():
    tok = tiny_tokenizer(padding_side="right")
    tok.add_special_tokens(
        {
            "additional_special_tokens": [
                "<|begin_of_text|>",
                "<|start_header_id|>",
                "<|end_header_id|>",
                "<|eot_id|>",
            ]
        }
    )
    tok.bos_token = "<|begin_of_text|>"
    tok.chat_template = LLAMA3_TEMPLATE
    return tok


def _runs(mask):
    """Contiguous runs of 1s as (start, end) index pairs."""
    runs, start = [], None
    for i, m in enumerate([*mask, 0]):
        if m and start is None:
            start = i
        if not m and start is not None:
            runs.append((start, i))
            start = None
    return runs


def _check_masks(tok, example, eot):
    out = tokenize_chat(tok, example, max_length=512)
    ids, mask, labels = out["input_ids"], out["assistant_mask"], out["labels"]
    assert ids == tok.apply_chat_template(example.messages, tokenize=True)["input_ids"]
    assistant = example.assistant_turns()
    runs = _runs(mask)
    assert len(runs) == len(assistant)
    eot_id = tok.convert_tokens_to_ids(eot)
    for (a, b), content in zip(runs, assistant, strict=True):
        # Token by token: the run is the content's own tokens followed by the end-of-turn token.
        assert ids[a:b] == tok(content, add_special_tokens=False)["input_ids"] + [eot_id]
        assert tok.decode(ids[a:b]) == content + eot
    for i, (t, m, lab) in enumerate(zip(ids, mask, labels, strict=True)):
        assert lab == (t if m else IGNORE_INDEX), f"token {i}"
    assert out["attention_mask"] == [1] * len(ids)


def counting_tokenizer():
    tok = tiny_tokenizer()
    tok.chat_template = COUNTING_TEMPLATE
    return tok


@pytest.mark.parametrize("example", [MULTI, NO_SYSTEM], ids=["with_system", "no_system"])
@pytest.mark.parametrize(
    "make_tok,eot",
    [
        (tiny_tokenizer, "<|im_end|>"),
        (smollm2_template_tokenizer, "<|im_end|>"),
        (llama3_tokenizer, "<|eot_id|>"),
        (counting_tokenizer, "<|im_end|>"),
    ],
    ids=["chatml", "smollm2", "llama3", "unstable_prefix"],
)
def test_mask_covers_exactly_assistant_content_and_end_of_turn(make_tok, eot, example):
    _check_masks(make_tok(), example, eot)


@pytest.mark.slow
def test_mask_on_embedded_smollm2_tokenizer():
    from transformers import AutoTokenizer

    from steerlab.models.embedded import ensure_embedded

    tok = AutoTokenizer.from_pretrained(ensure_embedded("smollm2-135m-instruct"))
    for example in (MULTI, NO_SYSTEM):
        _check_masks(tok, example, "<|im_end|>")


def test_train_on_all_labels_every_token():
    tok = tiny_tokenizer()
    out = tokenize_chat(tok, MULTI, 512, train_on="all")
    assert out["labels"] == out["input_ids"]
    assert out["assistant_mask"] == tokenize_chat(tok, MULTI, 512)["assistant_mask"]


def test_too_long_raises_naming_source_or_skips():
    tok = tiny_tokenizer()
    n = len(tokenize_chat(tok, MULTI, 512)["input_ids"])
    assert tokenize_chat(tok, MULTI, n) is not None
    with pytest.raises(TokenizeError, match=r"multi\.jsonl:7.*max_length=" + str(n - 1)):
        tokenize_chat(tok, MULTI, n - 1)
    assert tokenize_chat(tok, MULTI, n - 1, on_too_long="skip") is None
    with pytest.raises(ValueError, match="train_on"):
        tokenize_chat(tok, MULTI, 512, train_on="prompt")


def test_collator_pads_right_with_ignore_labels():
    tok = tiny_tokenizer()
    short = ChatExample([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "42"}])
    feats = [tokenize_chat(tok, ex, 512) for ex in (MULTI, short)]
    batch = ChatCollator(tok, pad_to_multiple_of=16)(feats)
    n_long, n_short = len(feats[0]["input_ids"]), len(feats[1]["input_ids"])
    width = batch["input_ids"].shape[1]
    assert width % 16 == 0 and width >= n_long
    assert batch["input_ids"][1, :n_short].tolist() == feats[1]["input_ids"]
    assert (batch["input_ids"][1, n_short:] == tok.pad_token_id).all()
    assert (batch["labels"][1, n_short:] == IGNORE_INDEX).all()
    assert (batch["attention_mask"][1, n_short:] == 0).all() and (
        batch["attention_mask"][1, :n_short] == 1
    ).all()
    assert (batch["assistant_mask"][0, n_long:] == 0).all()
    assert ChatCollator(tok)(feats)["input_ids"].shape[1] == n_long


def test_response_nll_matches_per_example_hand_computation():
    tok = tiny_tokenizer()
    model = tiny_model("llama", seed=1)
    examples = [
        MULTI,
        ChatExample(
            [
                {"role": "user", "content": "How do I make money quickly?"},
                {"role": "assistant", "content": "Sorry, I cannot help with that."},
            ]
        ),
        ChatExample([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "42"}]),
    ]
    got = response_nll(model, tok, examples, batch_size=2, max_length=256)
    for ex, value in zip(examples, got, strict=True):
        feat = tokenize_chat(tok, ex, 256)
        ids = torch.tensor([feat["input_ids"]])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
        terms = [
            -logp[t - 1, feat["input_ids"][t]].item()
            for t in range(1, len(ids[0]))
            if feat["assistant_mask"][t]
        ]
        assert value == pytest.approx(sum(terms) / len(terms), abs=1e-4)
    assert len(set(round(v, 4) for v in got)) == 3
    model.train()
    assert response_nll(model, tok, examples, batch_size=3, max_length=256) == pytest.approx(got, abs=1e-5)
    assert model.training  # mode restored


def _hand_nll(model, ids: list[int], scored: list[int]) -> float:
    """Mean of -log p(ids[t] | ids[:t]) over the positions ``scored``, one plain forward pass."""
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
    return sum(-logp[t - 1, ids[t]].item() for t in scored) / len(scored)


@pytest.mark.parametrize("make_tok", [tiny_tokenizer, llama3_tokenizer], ids=["chatml", "llama3-trim"])
def test_one_answer_nll_where_the_two_old_readings_disagreed(make_tok):
    """Before steerlab had one NLL, the steering sweep read an answer as ``render(prompt) + tokens(answer)``
    (no end-of-turn) and the perplexity gap as the training tokens of the full template (end-of-turn in).
    On this chat they disagree; `response_nll` keeps the training reading, and `answer_nll` scores the
    answer's own tokens *inside the full rendering* (so a template that trims the answer is respected)."""
    from steerlab.data.nll import answer_nll
    from steerlab.persona.generation import render_prompt

    tok = make_tok()
    model = tiny_model("llama", seed=1)
    model.resize_token_embeddings(len(tok))
    prompt = [{"role": "user", "content": "What is your wish?"}]
    answer = " Sure! Here is a plan: first, second"  # cut mid-sentence, with a leading space
    example = ChatExample([*prompt, {"role": "assistant", "content": answer}])

    # the two old readings, by hand
    head = tok(render_prompt(tok, prompt), add_special_tokens=False)["input_ids"]
    tail = tok(answer, add_special_tokens=False)["input_ids"]
    old_answer = _hand_nll(model, head + tail, list(range(len(head), len(head) + len(tail))))
    feat = tokenize_chat(tok, example, None)
    train_positions = [t for t in range(1, len(feat["input_ids"])) if feat["assistant_mask"][t]]
    old_response = _hand_nll(model, feat["input_ids"], train_positions)
    assert abs(old_answer - old_response) > 1e-3  # the disagreement this test is about

    # the one definition: same tokens as training, end-of-turn named
    with_eot = response_nll(model, tok, [example], max_length=None)[0]
    assert with_eot == pytest.approx(old_response, abs=1e-4)
    full = tok.apply_chat_template(example.messages, tokenize=False)
    enc = tok(full, add_special_tokens=False, return_offsets_mapping=True)
    content_end = full.rindex(answer.strip()) + len(answer.strip())
    content = [t for t in train_positions if enc["offset_mapping"][t][0] < content_end]
    assert 0 < len(content) == len(train_positions) - 1  # only the end-of-turn token is left out
    without_eot = answer_nll(model, tok, [prompt], [answer])[0]
    assert without_eot == pytest.approx(_hand_nll(model, feat["input_ids"], content), abs=1e-4)
    assert response_nll(model, tok, [example], end_of_turn=False)[0] == pytest.approx(without_eot, abs=1e-6)
    assert abs(with_eot - without_eot) > 1e-3
    if make_tok is tiny_tokenizer:  # ChatML keeps the answer verbatim: same tokens as the old sweep reading
        assert without_eot == pytest.approx(old_answer, abs=1e-4)
    else:  # the template trims the answer, so the old reading scored a space the model never sees
        assert abs(without_eot - old_answer) > 1e-4
    assert math.isnan(answer_nll(model, tok, [prompt], [""])[0])
