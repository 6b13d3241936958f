"""Text that decoded but is still wrong: control characters, invisible characters, U+FFFD left
by an earlier lossy decode, and mojibake (UTF-8 read as Windows-1252 and saved again).

    >>> text_problems("caf\\u00c3\\u00a9 \\u200bmenu\\x07")
    ['control-char', 'invisible-char', 'mojibake']
    >>> clean_text("caf\\u00e9 \\u200bmenu\\x07")
    ('café menu', ['removed 1 control character', 'removed 1 invisible character'])

Control and invisible characters are removed by `tuneloop data lint --fix`; the other two need
the source re-exported (the original characters are lost or ambiguous), so they are only reported.
"""

from __future__ import annotations

import re

from tuneloop.data.findings import Finding, LintOptions, field_of
from tuneloop.data.records import Example, message_text

# C0 and C1 controls except tab, line feed and carriage return.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# Zero-width space/joiners, word joiner, and a byte-order mark inside the text.
_INVISIBLE = re.compile(r"[\u200b-\u200d\u2060\ufeff]")
# "é" read as Windows-1252 is "Ã©"; "’" is "â€™": a lead byte glyph followed by a
# continuation-byte glyph.
_MOJIBAKE = re.compile(r"[ÂÃ][\u0080-\u00bf]|â€.")
_ANY = re.compile(f"{_CONTROL.pattern}|{_INVISIBLE.pattern}|\ufffd|{_MOJIBAKE.pattern}")

_MESSAGES = {
    "control-char": (
        "holds control characters (such as NUL or BEL) that no text should contain",
        "`tuneloop data lint --fix OUT` removes them",
    ),
    "invisible-char": (
        "holds invisible characters (zero-width space or joiner, or a byte-order mark)",
        "`tuneloop data lint --fix OUT` removes them",
    ),
    "replacement-char": (
        "holds U+FFFD '\ufffd': bytes were lost when this text was decoded before it was saved",
        "re-export the source data as UTF-8; the original characters cannot be recovered here",
    ),
    "mojibake": (
        "looks like UTF-8 text decoded as Windows-1252 ('Ã©' for 'é', 'â€™' for '’')",
        "re-export the source as UTF-8, or repair the text with `ftfy.fix_text`",
    ),
}


def text_problems(text: str) -> list[str]:
    """The codes of the problems `text` has, in a fixed order."""
    if not _ANY.search(text):
        return []
    found = []
    if _CONTROL.search(text):
        found.append("control-char")
    if _INVISIBLE.search(text):
        found.append("invisible-char")
    if "\ufffd" in text:
        found.append("replacement-char")
    if _MOJIBAKE.search(text):
        found.append("mojibake")
    return found


def clean_text(text: str) -> tuple[str, list[str]]:
    """`text` without control and invisible characters, and what was removed."""
    changes = []
    for pattern, name in ((_CONTROL, "control"), (_INVISIBLE, "invisible")):
        text, n = pattern.subn("", text)
        if n:
            changes.append(f"removed {n} {name} character{'s' if n > 1 else ''}")
    return text, changes


def check_encoding(
    train: list[Example], heldout: list[Example], options: LintOptions
) -> list[Finding]:
    """A warning for each message with suspicious characters, one per kind of problem."""
    findings = []
    for ex in [*train, *heldout]:
        for i, message in enumerate(ex.messages):
            for code in text_problems(message_text(message)):
                what, fix = _MESSAGES[code]
                findings.append(Finding(code, "warning", ex.source, what, field_of(ex, i), fix=fix))
    return findings
