"""Personal data that should not be trained into a model: e-mail addresses, phone numbers and
payment card numbers, found by pattern and reported as warnings (with the value masked).

    >>> find_pii("Mail jane.doe@acme.co.uk or call +44 20 7946 0958 (not x@example.com)")
    [('email', 'j***@acme.co.uk'), ('phone', '+** ** **** **58')]
    >>> find_pii("card 4111 1111 1111 1111, order 4111 1111 1111 1112")  # one passes Luhn
    [('card', '**** **** **** 1111')]

A card number is 13 to 19 digits that pass the Luhn checksum; a phone number is 9 to 15 digits
written with a leading "+" or with separators ("020 7946 0958", "(555) 010-4477"), so plain
order or account numbers are not taken for phones. Addresses at the domains reserved for
examples (example.com, .test; RFC 2606) are not personal data and are skipped. Patterns cannot
be complete: a clean lint is no proof that a dataset holds no personal data.
"""

from __future__ import annotations

import re

from tuneloop.data.findings import Finding, LintOptions, field_of
from tuneloop.data.records import Example, message_text

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_NUMBER = re.compile(r"(?<![\w+])\+?\(?\d[\d ().-]{7,22}\d(?!\w)")
_SEPARATOR = re.compile(r"\d[ ().-]+\d")
# Dates (2024-01-31) and amounts (1299.00) are digits with separators too, but not phones.
_NOT_PHONE = re.compile(r"\b\d{4}-\d{2}-\d{2}\b|\.\d{2}(?!\d)")
_KINDS = {"email": "e-mail address", "phone": "phone number", "card": "payment card number"}


def find_pii(text: str) -> list[tuple[str, str]]:
    """(kind, masked value) for every e-mail, phone or card number in `text`."""
    found = []
    if "@" in text:
        emails = (m.group() for m in _EMAIL.finditer(text))
        found += [("email", _mask_email(e)) for e in emails if not _reserved(e)]
    for m in _NUMBER.finditer(text):
        value = m.group()
        digits = re.sub(r"\D", "", value)
        if 13 <= len(digits) <= 19 and _luhn(digits):
            found.append(("card", _mask_digits(value, keep=4)))
        elif (
            9 <= len(digits) <= 15
            and (value.startswith("+") or _SEPARATOR.search(value))
            and not _NOT_PHONE.search(value)
        ):
            found.append(("phone", _mask_digits(value, keep=2)))
    return found


def check_pii(train: list[Example], heldout: list[Example], options: LintOptions) -> list[Finding]:
    """A warning for each message (its tool calls' arguments included) that holds an e-mail,
    phone or card number."""
    findings = []
    for ex in [*train, *heldout]:
        for i, message in enumerate(ex.messages):
            hits = find_pii(message_text(message))
            if not hits:
                continue
            kinds = dict.fromkeys(kind for kind, _ in hits)
            values = ", ".join(masked for _, masked in hits[:3])
            findings.append(
                Finding(
                    "pii",
                    "warning",
                    ex.source,
                    f"possible {' and '.join(_KINDS[k] for k in kinds)} ({values})",
                    field=field_of(ex, i),
                    fix="replace personal data with placeholders such as <EMAIL> or <PHONE>, "
                    "or drop the example",
                )
            )
    return findings


def _reserved(email: str) -> bool:
    """Domains reserved for examples and tests (RFC 2606), which no real person uses."""
    domain = email.rpartition("@")[2].lower()
    labels = domain.split(".")
    return "example" in labels[-2:] or labels[-1] in ("test", "invalid", "localhost")


def _luhn(digits: str) -> bool:
    total = 0
    for i, d in enumerate(reversed(digits)):
        n = int(d) * (2 if i % 2 else 1)
        total += n - 9 if n > 9 else n
    return total % 10 == 0


def _mask_email(value: str) -> str:
    user, _, domain = value.partition("@")
    return f"{user[:1]}***@{domain}"


def _mask_digits(value: str, keep: int) -> str:
    """Every digit but the last `keep` as '*', separators kept."""
    total = sum(c.isdigit() for c in value)
    out, seen = [], 0
    for c in value:
        if c.isdigit():
            seen += 1
            out.append(c if seen > total - keep else "*")
        else:
            out.append(c)
    return "".join(out)
