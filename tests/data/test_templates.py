import copy

from tuneloop.data.records import Example
from tuneloop.data.templates import (
    IGNORE_INDEX,
    apply_truncation,
    render_prompt,
    tokenize_example,
)

CHAT = [
    {"role": "system", "content": "Classify."},
    {"role": "user", "content": "I forgot my password"},
    {"role": "assistant", "content": "reset_password"},
]


def _decode_supervised(tok, item):
    return tok.decode([t for t in item.labels if t != IGNORE_INDEX])


def test_mask_token_by_token(tiny_tokenizer):
    tok = tiny_tokenizer
    item = tokenize_example(tok, Example(CHAT))
    prompt_ids = tok(render_prompt(tok, CHAT[:-1]), add_special_tokens=False)["input_ids"]
    answer_ids = tok("reset_password", add_special_tokens=False)["input_ids"]
    eot = tok.convert_tokens_to_ids("<|im_end|>")
    newline = tok("\n", add_special_tokens=False)["input_ids"]
    # The full sequence is the prompt, the answer, the end-of-turn token and a newline.
    assert item.input_ids == prompt_ids + answer_ids + [eot] + newline
    # Token by token: nothing of the prompt is trained, the answer and <|im_end|> are, the
    # newline after it is not.
    expected = [IGNORE_INDEX] * len(prompt_ids) + answer_ids + [eot] + [IGNORE_INDEX] * len(newline)
    assert item.labels == expected
    assert _decode_supervised(tok, item) == "reset_password<|im_end|>"


def test_every_assistant_turn_is_supervised(tiny_tokenizer):
    chat = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "bye"},
        {"role": "assistant", "content": "ciao"},
    ]
    item = tokenize_example(tiny_tokenizer, Example(chat))
    assert _decode_supervised(tiny_tokenizer, item) == "hello<|im_end|>ciao<|im_end|>"


def test_template_without_end_token_gets_eos(tiny_tokenizer):
    plain = copy.deepcopy(tiny_tokenizer)
    plain.chat_template = (
        "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}"
    )
    item = tokenize_example(plain, Example(CHAT))
    assert _decode_supervised(plain, item).endswith("reset_password<|im_end|>")


def test_truncation_policies_are_counted(tiny_tokenizer):
    long_chat = [dict(m) for m in CHAT]
    long_chat[1]["content"] = "password " * 60
    items = [
        tokenize_example(tiny_tokenizer, Example(c, source=f"f:{i}"))
        for i, c in enumerate([CHAT, long_chat])
    ]
    max_len = len(items[0].input_ids) + 2

    kept, report = apply_truncation(items, max_len, "drop")
    assert len(kept) == 1 and report.dropped == 1 and report.dropped_sources == ["f:1"]

    kept, report = apply_truncation(items, max_len, "truncate_left")
    assert len(kept) == 2 and report.truncated == 1
    assert _decode_supervised(tiny_tokenizer, kept[1]) == "reset_password<|im_end|>"

    kept, report = apply_truncation(items, max_len, "truncate_right")
    # Cutting the end of a long prompt leaves no answer token: dropped, and counted as such.
    assert len(kept) == 1 and report.lost_target == 1
