"""IFEval: does a response follow the verifiable instructions its prompt gave?

IFEval (Zhou et al. 2023, "Instruction-Following Evaluation for Large Language Models",
arXiv:2311.07911) gives prompts that carry one to three instructions a program can check, such as
"no commas", "at least 300 words" or "wrap the whole reply in double quotes". Each instruction
has an id (`punctuation:no_comma`) and a dict of arguments (`{"relation": "at least",
"num_words": 300}`). These checkers are our own code, written from the paper's descriptions;
where the paper leaves a detail open we follow the authors' published scoring, and the few
places we differ are named in the checker's docstring.

Scores are "strict" (the response as it is) or "loose" (the paper's upper bound: the response
is also tried with its first line, its last line or both removed, and with every `*` removed;
one passing variant is enough). An empty response follows no instruction.

    >>> row = {"key": 1, "prompt": "Describe rain. Do not use commas and write at least 5 words.",
    ...        "instruction_id_list": ["punctuation:no_comma", "length_constraints:number_words"],
    ...        "kwargs": [{}, {"relation": "at least", "num_words": 5}]}
    >>> follows(row, "Rain is water that falls from clouds.")
    [True, True]
    >>> follows(row, "Rain, mostly.")
    [False, False]
    >>> check_instruction("startend:quotation", {}, "", '"Quoted, all of it."')
    True
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from tuneloop.data.jsonlines import parse_jsonl, read_text
from tuneloop.errors import DataError, UserError

# ---------------------------------------------------------------- text units


@functools.cache
def _word_regex() -> re.Pattern[str]:
    # Python's \w leaves out combining marks, which would cut Hindi "है" (ह + ै) in two.
    marks = "".join(chr(c) for c in range(0x300, 0x10000) if unicodedata.category(chr(c))[0] == "M")
    return re.compile(rf"\w[\w{re.escape(marks)}]*")


def _words(text: str) -> list[str]:
    """Runs of letters, digits and their marks, as the paper's word count: "don't" is two words."""
    return _word_regex().findall(text)


# Periods after these do not end a sentence ("Dr. Smith", "e.g. this").
_ABBREVIATIONS = frozenset(
    ["mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "e.g", "i.e", "eg", "ie", "inc"]
    + ["ltd", "fig", "approx", "u.s", "a.m", "p.m"]
)
_SENTENCE_END = re.compile(r"[.!?]+[\"'”’)\]]*(?=\s|$)")


def _sentences(text: str) -> list[str]:
    """Sentences: text up to `.`, `!` or `?` followed by a space, or up to a blank line."""
    sentences = []
    for block in re.split(r"\n\s*\n", text):
        start = 0
        for end in _SENTENCE_END.finditer(block):
            before = block[start : end.start()].split()
            last = before[-1].lstrip("\"'(“‘").lower() if before else ""
            # "Dr." and initials such as "J." are not sentence ends; "..." and "!" always are.
            abbreviated = last in _ABBREVIATIONS or (len(last) == 1 and last.isalpha())
            if abbreviated and end.group().startswith(".") and not end.group().startswith(".."):
                continue
            sentences.append(block[start : end.end()])
            start = end.end()
        sentences.append(block[start:])
    return [s.strip() for s in sentences if re.search(r"\w", s)]


def _compare(count: int, relation: str, n: int) -> bool:
    # The paper's two relations; `_problem` has already rejected any other.
    return count < n if relation == "less than" else count >= n


def _whole_word(phrase: str) -> re.Pattern[str]:
    # Whole words or phrases only: "art" must not match inside "start".
    return re.compile(rf"(?<!\w){re.escape(phrase)}(?!\w)", re.IGNORECASE)


# ---------------------------------------------------------------- language


# Script of each Unicode block that a target language of IFEval is written in.
_SCRIPT_RANGES = [
    ("latin", 0x0041, 0x024F),
    ("latin", 0x1E00, 0x1EFF),
    ("cyrillic", 0x0400, 0x04FF),
    ("arabic", 0x0600, 0x06FF),
    ("arabic", 0x0750, 0x077F),
    ("arabic", 0xFB50, 0xFEFF),
    ("devanagari", 0x0900, 0x097F),
    ("bengali", 0x0980, 0x09FF),
    ("gurmukhi", 0x0A00, 0x0A7F),
    ("gujarati", 0x0A80, 0x0AFF),
    ("tamil", 0x0B80, 0x0BFF),
    ("telugu", 0x0C00, 0x0C7F),
    ("kannada", 0x0C80, 0x0CFF),
    ("thai", 0x0E00, 0x0E7F),
    ("hangul", 0x1100, 0x11FF),
    ("hangul", 0x3130, 0x318F),
    ("hangul", 0xAC00, 0xD7AF),
]

# The script each language is written in. es, fr and nl are never a target in IFEval; they are
# rivals, so that Spanish is not taken for Portuguese, nor French for Italian.
_SCRIPT_OF = {
    **dict.fromkeys(["en", "de", "fi", "it", "pt", "sw", "vi", "es", "fr", "nl"], "latin"),
    **dict.fromkeys(["ru", "bg"], "cyrillic"),
    **dict.fromkeys(["ar", "fa", "ur"], "arabic"),
    **dict.fromkeys(["hi", "mr", "ne"], "devanagari"),
    "bn": "bengali",
    "pa": "gurmukhi",
    "gu": "gujarati",
    "ta": "tamil",
    "te": "telugu",
    "kn": "kannada",
    "th": "thai",
    "ko": "hangul",
}
_RIVALS = frozenset({"es", "fr", "nl"})
LANGUAGES: frozenset[str] = frozenset(_SCRIPT_OF) - _RIVALS

# Frequent short words of each language that shares its script with another.
_COMMON_WORDS = {
    "en": "the and is are of to that it you for with this be was have your not they will",
    "de": "der die und das ist nicht ein eine zu den mit von sie ich auf für sich dem auch wir",
    "fi": "ja on ei että se hän oli ovat mutta kun myös tai kuin tämä voi joka ole olla mitä",
    "it": "il di che e la per non sono con del della è gli le si ma anche questo un una nel",
    "pt": "o os de que e do da em um uma para com não é são mas ao no na dos das se você",
    "sw": "na ya wa kwa za ni katika kuwa hii cha kama lakini pia sana yake hiyo watu huu",
    "vi": "và của là có không những được một các trong cho với người này để đã khi bạn",
    "es": "el los las de que y del en un una es por con para pero se su no más como está",
    "fr": "le la les et est de des un une que pour dans pas vous il qui sur au du avec ce",
    "nl": "de het een en van is niet dat op te zijn voor met ik je ook maar er om",
    "ru": "и в не на что я с он как это по но к у из за то все так его для вы",
    "bg": "и в на е за да се от с че са не това като по но ще си във със",
    "ar": "في من على أن إلى التي الذي هذا عن مع هو هي كان لا ما هذه",
    "fa": "و در به از که این را با است برای آن یک می تا هم شما",
    "ur": "کے میں کی ہے اور سے کو کا پر یہ نہیں ہیں بھی ایک",
    "hi": "है हैं के में की और का से को यह नहीं भी पर लिए था",
    "mr": "आहे आणि या हे ते आहेत नाही मध्ये व की तर एक होते",
    "ne": "छ र मा को हो पनि छन् गर्न भएको यो लागि गरेको हुन्छ थियो",
}

# Letters a language uses and its same-script neighbours rarely do.
_PECULIAR_LETTERS = {
    "de": "ß",
    "pt": "ãõ",
    "es": "ñ¿¡",
    "vi": "đươạảấầẩẫậắằẳẵặẹẻẽếềểễệỉịọỏốồổỗộớờởỡợụủứừửữựỳỵỷỹ",
    "ru": "ыэё",
    "bg": "ъ",
    "ar": "ةيكى",
    "fa": "ژ",
    "ur": "ٹڈڑںےۓہھ",
    "mr": "ळ",
}


def _script(char: str) -> str | None:
    code = ord(char)
    for name, low, high in _SCRIPT_RANGES:
        if low <= code <= high and (name != "latin" or char.isalpha()):
            return name
    return None


def detect_language(text: str) -> str | None:
    """The language `text` is written in, as an ISO 639-1 code, or None when unsure.

    An honest small detector, not a statistical model such as langdetect (which the paper used).
    First the script: over half of the letters must be in one script. A script that only one
    supported language uses decides alone (Korean, Thai, Bengali, Tamil, Telugu, Kannada,
    Gujarati, Punjabi in Gurmukhi). Otherwise the languages of that script vote: one point for
    each frequent short word of theirs and for each word holding a letter peculiar to them
    (Russian ы, Urdu ے, Vietnamese ư and its tone marks...). A tie, or no evidence, gives None.

    Limits: it knows only IFEval's languages (en, de, fi, it, pt, sw, vi, ru, bg, ar, fa, ur, hi,
    mr, ne, bn, pa, gu, ta, te, kn, th, ko) and, as rivals only, es, fr and nl. A reply in
    another language of the same script with many shared function words (Galician for
    Portuguese, Catalan for Italian) can be taken for the target; a reply of a few words often
    gives None and so fails; a reply mixing two languages of one script goes to the one with
    more votes, and Vietnamese, whose words nearly all carry a peculiar letter, wins such mixes
    easily.

    >>> detect_language("Dies ist ein kurzer Text und er ist auf Deutsch.")
    'de'
    >>> detect_language("Это короткий текст на русском языке, и он простой.")
    'ru'
    >>> detect_language("안녕하세요")
    'ko'
    """
    text = unicodedata.normalize("NFC", text).lower()
    scripts = Counter(s for s in map(_script, text) if s is not None)
    if not scripts:
        return None
    script, count = scripts.most_common(1)[0]
    if count * 2 <= sum(scripts.values()):
        return None
    candidates = [code for code, s in _SCRIPT_OF.items() if s == script]
    if len(candidates) == 1:
        return candidates[0]
    words = _words(text)
    votes = Counter()
    for code in candidates:
        common_words = set(_COMMON_WORDS[code].split())
        letters = _PECULIAR_LETTERS.get(code, "")
        votes[code] = sum(w in common_words or any(c in letters for c in w) for w in words)
    (best, top), *rest = votes.most_common()
    return best if top > 0 and (not rest or rest[0][1] < top) else None


# ---------------------------------------------------------------- checkers
# Each takes the response and the instruction's arguments (Nones removed, required ones present).


def _response_language(text: str, args: dict) -> bool:
    """Written in `language`; see `detect_language` for how and for its limits."""
    return detect_language(text) == args["language"]


def _english_capital(text: str, args: dict) -> bool:
    """All letters upper case, and English (by `detect_language`)."""
    return text.isupper() and detect_language(text) == "en"


def _english_lowercase(text: str, args: dict) -> bool:
    """All letters lower case, and English (by `detect_language`)."""
    return text.islower() and detect_language(text) == "en"


def _capital_word_frequency(text: str, args: dict) -> bool:
    """Words in capitals ("NASA", "I") `capital_relation` `capital_frequency`."""
    count = sum(w.isupper() for w in _words(text))
    return _compare(count, args["capital_relation"], args["capital_frequency"])


def _repeat_prompt(text: str, args: dict) -> bool:
    """Starts with the request repeated word for word (case and outer spaces aside)."""
    return text.strip().lower().startswith(args["prompt_to_repeat"].strip().lower())


def _two_responses(text: str, args: dict) -> bool:
    """Two different answers separated by six asterisks, and nothing else.

    Blank text is allowed only before the first or after the last separator.
    """
    parts = re.split(r"\*{6}", text)
    if any(not p.strip() for p in parts[1:-1]):
        return False
    answers = [p.strip() for p in parts if p.strip()]
    return len(answers) == 2 and answers[0] != answers[1]


def _number_placeholders(text: str, args: dict) -> bool:
    """At least `num_placeholders` non-empty placeholders in square brackets, like [address]."""
    return len(re.findall(r"\[[^\[\]\n]*\S[^\[\]\n]*\]", text)) >= args["num_placeholders"]


def _postscript(text: str, args: dict) -> bool:
    """A line starts with the postscript marker ("P.S.", "P.P.S"; spaces inside allowed).

    As the paper's scoring does, the postscript is found on any line, not only near the end.
    """
    marker = args["postscript_marker"].strip().lower()
    # "P. P. S." and "P.P.S." are the same marker: allow a space after each inner dot.
    parts = [re.escape(part) for part in marker.rstrip(".").split(".")]
    pattern = r"\.\s?".join(parts) + (r"\." if marker.endswith(".") else "")
    return re.search(rf"^\s*{pattern}", text.lower(), re.MULTILINE) is not None


def _constrained_response(text: str, args: dict) -> bool:
    """Contains exactly one of "My answer is yes.", "My answer is no.", "My answer is maybe."."""
    options = ("My answer is yes.", "My answer is no.", "My answer is maybe.")
    return sum(option in text for option in options) == 1


def _json_format(text: str, args: dict) -> bool:
    """The whole response is one JSON object or array, optionally in a ``` code fence.

    Stricter than the paper's scoring, which takes any JSON value: a bare number or string is
    not a reply "wrapped in JSON format".
    """
    body = re.sub(r"^```(?:json)?\s*|\s*```$", "", text.strip(), flags=re.IGNORECASE)
    try:
        value = json.loads(body)
    except ValueError:
        return False
    return isinstance(value, dict | list)


def _multiple_sections(text: str, args: dict) -> bool:
    """At least `num_sections` section marks "<splitter> <number>", e.g. "SECTION 1".

    The splitter's case must match, as in the paper's scoring, which also counts "at least".
    """
    mark = rf"(?<!\w){re.escape(args['section_spliter'].strip())}\s*\d+"
    return len(re.findall(mark, text)) >= args["num_sections"]


def _number_bullet_lists(text: str, args: dict) -> bool:
    """Exactly `num_bullets` markdown bullets: lines starting "* " or "- "."""
    return len(re.findall(r"^[ \t]*[*-][ \t]+\S", text, re.MULTILINE)) == args["num_bullets"]


def _number_highlighted_sections(text: str, args: dict) -> bool:
    """At least `num_highlights` spans highlighted *like this* or **like this** on one line."""
    # As in markdown, the text inside touches both stars, so a "* " bullet opens no highlight.
    inside = r"(?=[^\s*])[^\n*]*(?<=[^\s*])"
    bold = rf"\*\*{inside}\*\*"
    count = len(re.findall(bold, text))
    italic = rf"\*{inside}\*"
    # Bold spans are removed before the single-star search so none is counted twice.
    count += len(re.findall(italic, re.sub(bold, " ", text)))
    return count >= args["num_highlights"]


def _title(text: str, args: dict) -> bool:
    """A title in double angular brackets, <<like this>>, on one line."""
    return re.search(r"<<[^\n]*[^\s<>][^\n]*>>", text) is not None


def _existence(text: str, args: dict) -> bool:
    """Every keyword appears as a word or phrase, ignoring case.

    The paper's scoring also accepts a keyword inside a longer word ("art" in "start"); we ask
    for whole words, as "include the keyword" means.
    """
    return all(_whole_word(k).search(text) for k in args["keywords"])


def _forbidden_words(text: str, args: dict) -> bool:
    """None of the forbidden words appears as a whole word, ignoring case."""
    return not any(_whole_word(w).search(text) for w in args["forbidden_words"])


def _keyword_frequency(text: str, args: dict) -> bool:
    """`keyword` appears as a whole word `relation` `frequency` times, ignoring case.

    Whole words, unlike the paper's scoring, which would count "the" inside "there".
    """
    count = len(_whole_word(args["keyword"]).findall(text))
    return _compare(count, args["relation"], args["frequency"])


def _letter_frequency(text: str, args: dict) -> bool:
    """The character `letter` (any case) appears `let_relation` `let_frequency` times."""
    count = text.lower().count(args["letter"].lower())
    return _compare(count, args["let_relation"], args["let_frequency"])


def _paragraphs(text: str) -> list[str]:
    """Paragraphs split by blank lines; blank-line runs of any length count as one."""
    return [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]


def _nth_paragraph_first_word(text: str, args: dict) -> bool:
    """Exactly `num_paragraphs` paragraphs (split by blank lines) and paragraph `nth_paragraph`
    starts with `first_word` (case, leading quotes and markdown aside)."""
    paragraphs = _paragraphs(text)
    nth = args["nth_paragraph"]
    if len(paragraphs) != args["num_paragraphs"] or not 1 <= nth <= len(paragraphs):
        return False
    first = re.match(r"\W*(\w+)", paragraphs[nth - 1])
    return first is not None and first.group(1).lower() == args["first_word"].strip().lower()


def _number_paragraphs(text: str, args: dict) -> bool:
    """Exactly `num_paragraphs` paragraphs separated by the markdown divider ***.

    A divider is *** with space or an edge on both sides, so ***bold italic*** is not one; an
    empty paragraph between two dividers fails, a divider at the very start or end is allowed.
    """
    parts = re.split(r"(?:^|\s)\*\*\*(?=\s|$)", text)
    if any(not p.strip() for p in parts[1:-1]):
        return False
    return sum(bool(p.strip()) for p in parts) == args["num_paragraphs"]


def _number_sentences(text: str, args: dict) -> bool:
    """Sentences `relation` `num_sentences`; see `_sentences` for what a sentence is."""
    return _compare(len(_sentences(text)), args["relation"], args["num_sentences"])


def _number_words(text: str, args: dict) -> bool:
    """Words (runs of letters and digits) `relation` `num_words`."""
    return _compare(len(_words(text)), args["relation"], args["num_words"])


def _no_comma(text: str, args: dict) -> bool:
    """No comma at all (the ASCII one, as in the paper)."""
    return "," not in text


def _end_checker(text: str, args: dict) -> bool:
    """Ends with `end_phrase` and nothing after it, ignoring case, outer spaces and a closing
    double quote (so it combines with "wrap your answer in quotes")."""
    end = text.strip().rstrip('"”').rstrip().lower()
    return end.endswith(args["end_phrase"].strip().lower())


def _quotation(text: str, args: dict) -> bool:
    """The whole response is wrapped in double quotes, straight ("...") or curly (“...”)."""
    text = text.strip()
    return len(text) > 1 and text[0] in '"“' and text[-1] in '"”'


_Checker = Callable[[str, dict], bool]

# Instruction id -> (checker, the arguments it needs).
_CHECKERS: dict[str, tuple[_Checker, tuple[str, ...]]] = {
    "change_case:capital_word_frequency": (
        _capital_word_frequency,
        ("capital_relation", "capital_frequency"),
    ),
    "change_case:english_capital": (_english_capital, ()),
    "change_case:english_lowercase": (_english_lowercase, ()),
    "combination:repeat_prompt": (_repeat_prompt, ("prompt_to_repeat",)),
    "combination:two_responses": (_two_responses, ()),
    "detectable_content:number_placeholders": (_number_placeholders, ("num_placeholders",)),
    "detectable_content:postscript": (_postscript, ("postscript_marker",)),
    "detectable_format:constrained_response": (_constrained_response, ()),
    "detectable_format:json_format": (_json_format, ()),
    "detectable_format:multiple_sections": (
        _multiple_sections,
        ("section_spliter", "num_sections"),
    ),
    "detectable_format:number_bullet_lists": (_number_bullet_lists, ("num_bullets",)),
    "detectable_format:number_highlighted_sections": (
        _number_highlighted_sections,
        ("num_highlights",),
    ),
    "detectable_format:title": (_title, ()),
    "keywords:existence": (_existence, ("keywords",)),
    "keywords:forbidden_words": (_forbidden_words, ("forbidden_words",)),
    "keywords:frequency": (_keyword_frequency, ("relation", "keyword", "frequency")),
    "keywords:letter_frequency": (_letter_frequency, ("let_relation", "letter", "let_frequency")),
    "language:response_language": (_response_language, ("language",)),
    "length_constraints:nth_paragraph_first_word": (
        _nth_paragraph_first_word,
        ("first_word", "num_paragraphs", "nth_paragraph"),
    ),
    "length_constraints:number_paragraphs": (_number_paragraphs, ("num_paragraphs",)),
    "length_constraints:number_sentences": (_number_sentences, ("relation", "num_sentences")),
    "length_constraints:number_words": (_number_words, ("relation", "num_words")),
    "punctuation:no_comma": (_no_comma, ()),
    "startend:end_checker": (_end_checker, ("end_phrase",)),
    "startend:quotation": (_quotation, ()),
}

INSTRUCTION_TYPES: frozenset[str] = frozenset(_CHECKERS)

_RELATIONS = ("less than", "at least")


def _problem(instruction_id: str, kwargs: dict) -> str | None:
    """What is wrong with an instruction and its arguments, or None when it can be checked."""
    if instruction_id not in _CHECKERS:
        return f"unknown IFEval instruction {instruction_id!r}"
    _, required = _CHECKERS[instruction_id]
    missing = [k for k in required if kwargs.get(k) is None]
    if missing:
        return f"{instruction_id} needs the argument(s) {', '.join(missing)}"
    for key in ("relation", "capital_relation", "let_relation"):
        if key in required and kwargs[key] not in _RELATIONS:
            return f"{instruction_id}: {key} is {kwargs[key]!r}, not one of {_RELATIONS}"
    if "language" in required and kwargs["language"] not in LANGUAGES:
        return f"{instruction_id}: cannot detect language {kwargs['language']!r}"
    return None


def check_instruction(instruction_id: str, kwargs: dict, prompt: str, response: str) -> bool:
    """Whether `response` follows one instruction (the strict check).

    `kwargs` are the instruction's arguments; None values are ignored. `prompt` is used only by
    combination:repeat_prompt when its `prompt_to_repeat` is not given.

    >>> check_instruction("keywords:frequency", {"relation": "at least", "keyword": "rain",
    ...     "frequency": 2, "language": None}, "", "Rain, rain, go away.")
    True
    """
    args = {k: v for k, v in kwargs.items() if v is not None}
    if instruction_id == "combination:repeat_prompt":
        args.setdefault("prompt_to_repeat", prompt)
    problem = _problem(instruction_id, args)
    if problem:
        raise UserError(
            problem, fix=f"use one of the supported ids: {', '.join(sorted(INSTRUCTION_TYPES))}"
        )
    # An empty reply follows nothing, not even "do not use commas".
    if not response.strip():
        return False
    checker, _ = _CHECKERS[instruction_id]
    return checker(response, args)


def _loose_variants(response: str) -> list[str]:
    """The paper's loose variants: first/last/both lines removed, each also without `*`."""
    lines = response.split("\n")
    cut = [response, "\n".join(lines[1:]), "\n".join(lines[:-1]), "\n".join(lines[1:-1])]
    cut = [v.strip() if i else v for i, v in enumerate(cut)]
    return cut + [v.replace("*", "") for v in cut]


def follows(row: dict, response: str, loose: bool = False) -> list[bool]:
    """One bool per instruction of `row` (a line of input_data.jsonl): is it followed?

    With `loose`, an instruction counts as followed when any loose variant of the response
    follows it (Zhou et al. 2023, section 2.2).
    """
    variants = _loose_variants(response) if loose else [response]
    return [
        any(check_instruction(iid, kwargs, row["prompt"], v) for v in variants)
        for iid, kwargs in zip(row["instruction_id_list"], row["kwargs"], strict=True)
    ]


def load_rows(path: str | Path) -> list[dict]:
    """The rows of an IFEval input_data.jsonl, each checked to have instructions we can check."""
    path = Path(path)
    rows = []
    for number, row in parse_jsonl(path, read_text(path)):  # a broken line: DataError with it
        problem = _row_problem(row)
        if problem:
            raise DataError(path, number, problem, fix="give an unchanged IFEval input_data.jsonl")
        rows.append(row)
    return rows


def _row_problem(row: object) -> str | None:
    if not isinstance(row, dict):
        return "a line must be a JSON object"
    missing = [k for k in ("key", "prompt", "instruction_id_list", "kwargs") if k not in row]
    if missing:
        return f"missing field(s) {', '.join(missing)}"
    ids, kwargs = row["instruction_id_list"], row["kwargs"]
    if not isinstance(row["prompt"], str) or not isinstance(ids, list):
        return "prompt must be a string and instruction_id_list a list"
    if not isinstance(kwargs, list) or len(kwargs) != len(ids):
        return f"kwargs must be a list of {len(ids)} dicts, one per instruction"
    for iid, args in zip(ids, kwargs, strict=True):
        if not isinstance(args, dict):
            return f"the kwargs of {iid!r} must be a JSON object"
        clean = {k: v for k, v in args.items() if v is not None}
        if iid == "combination:repeat_prompt":
            clean.setdefault("prompt_to_repeat", row["prompt"])
        problem = _problem(iid, clean)
        if problem:
            return problem
    return None
