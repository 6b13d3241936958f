"""The content checks of lint: personal data, characters, system prompts, token lengths,
conflicting answers, near-duplicates and leakage; and the table's per-code limit."""

from __future__ import annotations

import pytest

from tuneloop.data.encoding import clean_text, text_problems
from tuneloop.data.lint import Finding, LintOptions, format_findings, lint_examples
from tuneloop.data.pii import find_pii
from tuneloop.data.records import Example

NO_NEAR = LintOptions(near_threshold=None)


def ex(user: str, answer: str = "ok", source: str = "d.jsonl:1", system: str | None = None):
    messages = [{"role": "system", "content": system}] if system else []
    messages += [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    return Example(messages, {}, source)


def only(findings: list[Finding], code: str) -> list[Finding]:
    return [f for f in findings if f.code == code]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("write to jane.doe@acme.io please", [("email", "j***@acme.io")]),
        ("call me on +1 415 555 0100", [("phone", "+* *** *** **00")]),
        ("or (020) 7946-0958 after six", [("phone", "(***) ****-**58")]),
        ("card 4111-1111-1111-1111 got declined", [("card", "****-****-****-1111")]),
        ("order 4111 1111 1111 1112 (fails Luhn)", []),
        ("the docs use bob@example.com", []),  # reserved for examples
        ("order number 123456789", []),  # no separators: not taken for a phone
        ("paid 1299.00 on 2024-01-31", []),
    ],
)
def test_pii_patterns(text, expected):
    assert find_pii(text) == expected


def test_pii_finding_names_the_turn_and_masks_the_value():
    [finding] = only(lint_examples([ex("mail me: ann.lee@gmail.com")], options=NO_NEAR), "pii")
    assert (finding.severity, finding.where, finding.field) == (
        "warning",
        "d.jsonl:1",
        "messages[0] (user)",
    )
    assert "a***@gmail.com" in finding.message and "ann.lee" not in finding.message


def test_encoding_problems_and_the_cleaner():
    assert text_problems("fine text, café") == []
    assert text_problems("bell\x07") == ["control-char"]
    assert text_problems("zero\u200bwidth") == ["invisible-char"]
    assert text_problems("caf\ufffd") == ["replacement-char"]
    assert text_problems("donâ€™t") == ["mojibake"]
    assert clean_text("a\x00b\u200bc\td") == ("abc\td", [
        "removed 1 control character",
        "removed 1 invisible character",
    ])  # fmt: skip


def test_system_prompt_variant_is_named_once_at_its_first_example():
    train = [ex(f"q{i}", system="Classify.", source=f"t:{i + 1}") for i in range(8)]
    train[5] = ex("q5", system="Be a pirate.", source="t:6")
    train[6] = ex("q6", system="Be a pirate.", source="t:7")
    [finding] = only(lint_examples(train, options=NO_NEAR), "system-prompt")
    assert finding.where == "t:6" and finding.related == "t:1"
    assert "2 example(s) have the system prompt 'Be a pirate.', while 6 have 'Classify.'" in (
        finding.message
    )


def test_heldout_only_system_prompt_is_called_out():
    train = [ex(f"q{i}", system="Classify.", source=f"t:{i + 1}") for i in range(6)]
    heldout = [ex("h", system="Other.", source="h:1")]
    [finding] = only(lint_examples(train, heldout, NO_NEAR), "system-prompt")
    assert finding.where == "h:1" and "held-out only" in finding.message


def test_task_instruction_fills_missing_system_prompts():
    train = [ex("a", system="Classify.", source="t:1"), ex("b", source="t:2")]
    [mixed] = only(lint_examples(train, options=NO_NEAR), "system-prompt")
    assert "1 example(s) have no system prompt while 1 have one" in mixed.message
    train.append(ex("c", source="t:3"))
    [variant] = only(lint_examples(train, options=NO_NEAR), "system-prompt")  # 2 of 3 have none
    assert variant.where == "t:1"
    opts = LintOptions(near_threshold=None, instruction="Classify.")
    assert only(lint_examples(train, options=opts), "system-prompt") == []


def test_per_example_system_prompts_are_not_a_mistake():
    train = [ex(f"q{i}", system=f"Persona {i}.", source=f"t:{i}") for i in range(10)]
    assert only(lint_examples(train, options=NO_NEAR), "system-prompt") == []


def test_conflicting_answers_to_the_same_prompt():
    train = [ex("where is my card", "card_arrival", "t:1"), ex("where is my card", "lost", "t:2")]
    [finding] = only(lint_examples(train, options=NO_NEAR), "conflicting-answers")
    assert (finding.where, finding.related) == ("t:2", "t:1")


def test_near_duplicates_and_near_leakage():
    base = "How long does a transfer to another bank take to arrive"
    train = [ex(base, source="t:1"), ex("Something else entirely, I lost my PIN", source="t:2")]
    train.append(ex(base + "?", source="t:3"))
    heldout = [ex(base.lower() + " please", source="h:1")]
    findings = lint_examples(train, heldout)
    [near] = only(findings, "near-duplicate")
    assert (near.where, near.related, near.severity) == ("t:3", "t:1", "warning")
    [leak] = only(findings, "near-leakage")
    assert (leak.where, leak.related) == ("h:1", "t:1")
    assert only(lint_examples(train, heldout, NO_NEAR), "near-duplicate") == []


def test_token_lengths_with_the_real_chat_template(tiny_tokenizer):
    short = ex("hi", "ok", "t:1")
    long_prompt = ex("word " * 200, "ok", "t:2")  # the answer sits past max_length
    long_answer = ex("hi", "word " * 200, "t:3")
    train = [short, long_prompt, long_answer]

    def run(policy: str) -> list[Finding]:
        opts = LintOptions(
            near_threshold=None, tokenizer=tiny_tokenizer, max_length=64, truncation=policy
        )
        return [
            f for f in lint_examples(train, options=opts) if f.code in ("too-long", "target-lost")
        ]

    right = run("truncate_right")
    assert [(f.code, f.where) for f in right] == [("target-lost", "t:2"), ("too-long", "t:3")]
    assert "no answer token is left" in right[0].message
    left = run("truncate_left")
    assert [(f.code, f.where) for f in left] == [("too-long", "t:2"), ("too-long", "t:3")]
    drop = run("drop")
    assert all("drops it" in f.message for f in drop) and len(drop) == 2


def test_no_trainable_examples_is_an_error(tiny_tokenizer):
    opts = LintOptions(near_threshold=None, tokenizer=tiny_tokenizer, max_length=16)
    findings = lint_examples([ex("word " * 50, "ok", "t:1")], options=opts)
    assert findings[0].code == "no-trainable-examples" and findings[0].severity == "error"


def test_table_limits_each_code_and_counts_the_rest():
    findings = [Finding("pii", "warning", f"t:{i}", "possible e-mail") for i in range(5)]
    findings.append(Finding("leakage", "error", "h:1", "leak", column=3))
    table = format_findings(findings, max_per_code=2).splitlines()
    assert len([r for r in table if " pii " in r]) == 3  # two findings and the count
    assert "... and 3 more" in table[3]
    assert "h:1:3" in table[-2]
    assert table[-1] == "1 error, 5 warnings"


def test_volatile_facts_are_flagged_with_examples_share_and_advice():
    train = [ex(f"question {i}", f"topic_{i % 4}", f"t:{i + 1}") for i in range(20)]
    train[3] = ex("How much is the Pro plan?", "The Pro plan costs $19.99 a month.", "t:4")
    train[8] = ex("Which release should I use?", "The latest release is version 4.2.", "t:9")
    train[12] = ex("When did it launch?", "It launched on March 3, 2024.", "t:13")
    [finding] = only(lint_examples(train, options=NO_NEAR), "volatile-facts")
    assert (finding.severity, finding.where, finding.related) == ("warning", "t:4", "t:9")
    assert "3 of 20 training answers (15%)" in finding.message
    assert "t:4 ('$19.99')" in finding.message and "t:13 ('March 3, 2024')" in finding.message
    assert "retrieval, not in the weights" in finding.fix


def test_volatile_facts_threshold_and_no_false_positives():
    labels = [ex(f"my card {i} was declined", "card_declined", f"t:{i + 1}") for i in range(30)]
    counts = [ex(f"how many in basket {i}", "You have 2 items in your cart.", f"c:{i}")
              for i in range(30)]  # fmt: skip
    # Copying a date from the prompt is extraction, not a fact kept in the weights.
    copied = [ex(f"Order placed 2024-05-0{i}, when?", f"Placed on 2024-05-0{i}.", f"e:{i}")
              for i in range(1, 9)]  # fmt: skip
    assert only(lint_examples(labels + counts + copied, options=NO_NEAR), "volatile-facts") == []
    # Two answers in 62 are under the threshold (3 answers and 5%); three are over it.
    stale = [
        ex(f"price {i}?", f"It costs {10 + i} dollars as of today.", f"p:{i}") for i in range(3)
    ]
    assert only(lint_examples(labels + counts + stale[:2], options=NO_NEAR), "volatile-facts") == []
    assert len(only(lint_examples(labels[:20] + stale, options=NO_NEAR), "volatile-facts")) == 1
    assert only(lint_examples(labels + counts + stale, options=NO_NEAR), "volatile-facts") == []


def test_lint_docstring_examples():
    import doctest

    import tuneloop.data.lint as lint

    result = doctest.testmod(lint)
    assert result.failed == 0 and result.attempted > 0
