"""IFEval checkers: a passing and a failing response per instruction type, then the real file."""

import doctest
import json
from pathlib import Path

import pytest

from tuneloop.errors import UserError
from tuneloop.evaluate import ifeval
from tuneloop.evaluate.ifeval import (
    INSTRUCTION_TYPES,
    check_instruction,
    detect_language,
    follows,
    load_rows,
)

IFEVAL = (
    Path(__file__).resolve().parents[2].parent
    / "shared"
    / "data"
    / "evalsuites"
    / "ifeval"
    / "input_data.jsonl"
)

REPEAT = "Tell me about owls."

# (instruction id, kwargs, a response that follows it, a response that does not)
CASES = [
    (
        "change_case:capital_word_frequency",
        {"capital_relation": "at least", "capital_frequency": 2},
        "The NASA and ESA teams met.",
        "The NASA team met alone.",
    ),
    (
        "change_case:capital_word_frequency",
        {"capital_relation": "less than", "capital_frequency": 2},
        "Only NASA is shouting here.",
        "NASA and ESA are shouting.",
    ),
    (
        "change_case:english_capital",
        {},
        "THE OWL IS AWAKE AND IT IS HUNTING FOR MICE.",
        "The owl is awake and it is hunting for mice.",
    ),
    (
        "change_case:english_lowercase",
        {},
        "the owl is awake and it is hunting for mice.",
        "the owl is awake and it is hunting for Mice.",
    ),
    (
        "combination:repeat_prompt",
        {"prompt_to_repeat": REPEAT},
        "tell me about owls.  Owls hunt at night.",
        "Owls hunt at night. Tell me about owls.",
    ),
    (
        "combination:two_responses",
        {},
        "Owls are birds.\n******\nOwls hunt at night.",
        "Owls are birds.\n******\nOwls are birds.",
    ),
    (
        "detectable_content:number_placeholders",
        {"num_placeholders": 2},
        "Send it to [name] at [address].",
        "Send it to [name] at the usual place [].",
    ),
    (
        "detectable_content:postscript",
        {"postscript_marker": "P.S."},
        "Owls are quiet.\n\nP.S. They also have good ears.",
        "Owls are quiet. PS they also have good ears.",
    ),
    (
        "detectable_content:postscript",
        {"postscript_marker": "P.P.S"},
        "Owls are quiet.\nP. P. S. Really quiet.",
        "Owls are quiet.\nP.S. Really quiet.",
    ),
    (
        "detectable_format:constrained_response",
        {},
        "Owls can turn their heads far. My answer is yes.",
        "My answer is yes. Or rather, My answer is maybe.",
    ),
    (
        "detectable_format:json_format",
        {},
        '```json\n{"bird": "owl", "nocturnal": true}\n```',
        'Here you go: {"bird": "owl"}',
    ),
    (
        "detectable_format:multiple_sections",
        {"section_spliter": "SECTION", "num_sections": 2},
        "SECTION 1\nOwls hunt.\nSECTION 2\nOwls sleep.",
        "Section 1\nOwls hunt.\nSection 2\nOwls sleep.",
    ),
    (
        "detectable_format:number_bullet_lists",
        {"num_bullets": 2},
        "Facts:\n* Owls hunt at night.\n- Owls have soft feathers.",
        "Facts:\n* Owls hunt at night.\n* Owls have soft feathers.\n* Owls hoot.\n---",
    ),
    (
        "detectable_format:number_highlighted_sections",
        {"num_highlights": 2},
        "Owls have *silent flight* and **sharp eyes**.",
        "* Owls have *silent flight* and ** ** nothing else.",
    ),
    (
        "detectable_format:title",
        {},
        "<<Night Hunters>>\nOwls hunt at night.",
        "Night Hunters\nOwls hunt at night. <<>>",
    ),
    (
        "keywords:existence",
        {"keywords": ["talon", "night"]},
        "A talon strikes at Night.",
        "Talons strike in the dark at night.",
    ),
    (
        "keywords:forbidden_words",
        {"forbidden_words": ["bird", "fly"]},
        "Owls are birds that can flyover fields.",
        "An owl is a Bird.",
    ),
    (
        "keywords:frequency",
        {"relation": "at least", "keyword": "owl", "frequency": 2},
        "An owl met another Owl.",
        "An owl met some owls.",
    ),
    (
        "keywords:frequency",
        {"relation": "less than", "keyword": "the", "frequency": 2},
        "The owl is there, then gone.",
        "The owl saw the mouse.",
    ),
    (
        "keywords:letter_frequency",
        {"let_relation": "at least", "letter": "o", "let_frequency": 3},
        "Owls hoot.",
        "Owls hunt.",
    ),
    (
        "keywords:letter_frequency",
        {"let_relation": "less than", "letter": "!", "let_frequency": 2},
        "Owls hoot!",
        "Owls hoot! Loudly!",
    ),
    (
        "language:response_language",
        {"language": "de"},
        "Die Eule ist ein Vogel und sie jagt in der Nacht.",
        "The owl is a bird and it hunts at night.",
    ),
    (
        "language:response_language",
        {"language": "hi"},
        "उल्लू एक पक्षी है और यह रात में शिकार करता है।",
        "उल्लू हा एक पक्षी आहे आणि तो रात्री शिकार करतो.",  # Marathi, not Hindi
    ),
    (
        "length_constraints:nth_paragraph_first_word",
        {"first_word": "owls", "num_paragraphs": 2, "nth_paragraph": 2},
        "Birds of prey are many.\n\n**Owls** hunt at night.",
        "Birds of prey are many.\n\nHawks hunt by day.",
    ),
    (
        "length_constraints:number_paragraphs",
        {"num_paragraphs": 3},
        "Owls hunt.\n***\nOwls sleep.\n***\nOwls hoot.",
        "Owls hunt.\n***\n***\nOwls hoot.",
    ),
    (
        "length_constraints:number_sentences",
        {"relation": "less than", "num_sentences": 3},
        "Dr. Hoot studies owls. They hunt at 9.30 p.m. most nights.",
        "Owls hunt. Owls sleep! Owls hoot?",
    ),
    (
        "length_constraints:number_sentences",
        {"relation": "at least", "num_sentences": 2},
        "Owls hunt at night. They sleep by day.",
        "Owls hunt at night and sleep by day.",
    ),
    (
        "length_constraints:number_words",
        {"relation": "at least", "num_words": 5},
        "Owls don't hunt by day.",
        "Owls hunt at night.",
    ),
    (
        "length_constraints:number_words",
        {"relation": "less than", "num_words": 5},
        "Owls hunt at night.",
        "Owls don't hunt by day.",
    ),
    ("punctuation:no_comma", {}, "Owls hunt at night.", "Owls, it seems, hunt at night."),
    (
        "startend:end_checker",
        {"end_phrase": "Any other questions?"},
        '"Owls hunt at night. any other questions?"\n',
        "Owls hunt at night. Any other questions? Bye.",
    ),
    ("startend:quotation", {}, '  "Owls hunt at night."  ', '"Owls hunt at night.'),
]


def test_every_instruction_type_has_a_case():
    assert {case[0] for case in CASES} == INSTRUCTION_TYPES
    assert len(INSTRUCTION_TYPES) == 25


@pytest.mark.parametrize(("iid", "kwargs", "good", "bad"), CASES, ids=[c[0] for c in CASES])
def test_checker_passes_and_fails(iid, kwargs, good, bad):
    assert check_instruction(iid, kwargs, REPEAT, good)
    assert not check_instruction(iid, kwargs, REPEAT, bad)


def test_docstring_examples_are_true():
    result = doctest.testmod(ifeval)
    assert result.failed == 0 and result.attempted > 0


def test_case_instructions_also_ask_for_english():
    german = "DIES IST EIN TEXT UND ER IST AUF DEUTSCH."
    assert not check_instruction("change_case:english_capital", {}, "", german)
    assert not check_instruction("change_case:english_lowercase", {}, "", german.lower())


def test_empty_response_follows_nothing():
    assert not check_instruction("punctuation:no_comma", {}, "", "  \n")


def test_none_kwargs_are_ignored_and_prompt_is_the_default_to_repeat():
    kwargs = {"prompt_to_repeat": None, "num_words": None}
    assert check_instruction("combination:repeat_prompt", kwargs, REPEAT, REPEAT + " Owls hoot.")


def test_unknown_id_and_bad_arguments_are_errors():
    with pytest.raises(UserError, match="unknown IFEval instruction 'punctuation:no_dots'"):
        check_instruction("punctuation:no_dots", {}, "", "Hi.")
    with pytest.raises(UserError, match="needs the argument.*num_words"):
        check_instruction("length_constraints:number_words", {"relation": "at least"}, "", "Hi.")
    with pytest.raises(UserError, match="'about'"):
        check_instruction(
            "length_constraints:number_words", {"relation": "about", "num_words": 3}, "", "Hi."
        )
    with pytest.raises(UserError, match="cannot detect language 'xx'"):
        check_instruction("language:response_language", {"language": "xx"}, "", "Hi.")


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("Dies ist ein kurzer Text und er ist auf Deutsch.", "de"),
        ("Questo è un testo breve e non è difficile da leggere.", "it"),
        ("Este é um texto curto e não é difícil de ler para você.", "pt"),
        ("Este es un texto corto y no es difícil de leer para usted.", "es"),
        ("Tämä on lyhyt teksti ja se ei ole vaikea.", "fi"),
        ("Hii ni hadithi fupi na ni rahisi sana kwa watu wote.", "sw"),
        ("Đây là một đoạn văn ngắn và không khó đọc.", "vi"),
        ("Това е кратък текст на български и не е труден.", "bg"),
        ("هذا نص قصير في اللغة العربية وهو سهل.", "ar"),
        ("این یک متن کوتاه به زبان فارسی است.", "fa"),
        ("یہ ایک مختصر متن ہے اور یہ اردو میں ہے۔", "ur"),
        ("यो छोटो पाठ हो र यो नेपालीमा लेखिएको छ।", "ne"),
        ("এটি একটি ছোট লেখা।", "bn"),
        ("นี่คือข้อความสั้น", "th"),
        ("12345 !!!", None),
    ],
)
def test_detect_language(text, code):
    assert detect_language(text) == code


def test_loose_accepts_a_chatty_first_line_and_markdown_stars():
    row = {
        "key": 1,
        "prompt": "Wrap it in quotes. End with 'Hoot.'",
        "instruction_id_list": ["startend:quotation", "startend:end_checker"],
        "kwargs": [{}, {"end_phrase": "Hoot."}],
    }
    response = 'Sure! Here it is:\n"Owls say **Hoot.**"'
    assert follows(row, response) == [False, False]
    assert follows(row, response, loose=True) == [True, True]
    assert follows(row, "", loose=True) == [False, False]


def test_load_rows_names_file_and_line(tmp_path):
    good = {
        "key": 1,
        "prompt": "p",
        "instruction_id_list": ["punctuation:no_comma"],
        "kwargs": [{}],
    }
    path = tmp_path / "input_data.jsonl"
    path.write_text(json.dumps(good) + "\n{not json\n")
    with pytest.raises(UserError, match=r"input_data.jsonl:2: invalid JSON"):
        load_rows(path)
    unknown = dict(good, instruction_id_list=["punctuation:no_dots"])
    path.write_text(json.dumps(good) + "\n\n" + json.dumps(unknown) + "\n")
    with pytest.raises(UserError, match=r"input_data.jsonl:3: unknown IFEval instruction"):
        load_rows(path)
    path.write_text(json.dumps(good) + "\n")
    assert load_rows(path) == [good]


@pytest.mark.skipif(not IFEVAL.exists(), reason="the shared IFEval data is not on this machine")
def test_every_row_of_the_real_file_can_be_checked():
    rows = load_rows(IFEVAL)
    assert len(rows) == 541
    assert {iid for row in rows for iid in row["instruction_id_list"]} <= INSTRUCTION_TYPES
    plausible = '"<<Answer>>\nSECTION 1\n* A *point* at [place].\n\nP.S. My answer is yes."'
    for row in rows:
        for loose in (False, True):
            assert follows(row, "", loose) == [False] * len(row["instruction_id_list"])
            assert len(follows(row, plausible, loose)) == len(row["instruction_id_list"])
