"""A small preference set written by us, for DPO demonstrations and tests: Acme support replies.

Each pair takes a customer message of the quickstart's support dataset (`data/examples.py`) and
two replies. The chosen reply acknowledges the problem and gives the next step for the message's
intent; the rejected one is either curt and unhelpful, or courteous but about another intent
(a reply that did not read the message):

    {"prompt": [{"role": "system", "content": "You are Acme's support assistant. ..."},
                {"role": "user", "content": "Hi! I can't log in, the password is not accepted."}],
     "chosen": "Sorry you're locked out! Choose 'Forgot password' on the sign-in page ...",
     "rejected": "Not something we can help with.",
     "meta": {"label": "reset_password", "rejected_kind": "curt"}}

Generation is deterministic given the seed.
"""

from __future__ import annotations

import random
from pathlib import Path

from tuneloop.data.examples import SUPPORT_LABELS, support_intents
from tuneloop.data.preference import PreferencePair, write_preferences

SUPPORT_SYSTEM = "You are Acme's support assistant. Reply to the customer in one or two sentences."

_HELPFUL = {
    "reset_password": [
        "Sorry you're locked out! Choose 'Forgot password' on the sign-in page and follow the "
        "link we email you to set a new password.",
        "I can help with that: use 'Forgot password' on the sign-in page, and the reset link "
        "will arrive by email within a few minutes.",
    ],
    "cancel_subscription": [
        "I'm sorry to see you go. You can cancel any time under Settings > Billing > Cancel "
        "plan, and you keep access until the end of the period.",
        "Of course: open Settings > Billing and choose Cancel plan; no further charges will be "
        "made after this period.",
    ],
    "refund_request": [
        "Sorry about that! I've opened a refund request for this order; the money will be back "
        "on your card within 5 business days.",
        "I understand. I've started the refund, and you'll get a confirmation email once it is "
        "processed, usually within 5 business days.",
    ],
    "shipping_status": [
        "Thanks for your patience! Your tracking link is in the order confirmation email; I can "
        "also check the latest carrier update for you.",
        "Let me help: the order page shows the carrier's latest scan, and I'll follow up with "
        "the carrier if it hasn't moved in three days.",
    ],
    "billing_question": [
        "Happy to explain the charge: your invoices are under Settings > Billing, and each line "
        "shows the plan and period it covers.",
        "Good question! I've checked your billing history; I'll send you a breakdown of the "
        "charge by email right away.",
    ],
    "bug_report": [
        "Thanks for reporting this! I've passed the details to our engineers; a screenshot and "
        "your app version would help us fix it faster.",
        "Sorry for the trouble. I've logged the bug with our team; meanwhile, updating to the "
        "latest version may work around it.",
    ],
    "feature_request": [
        "Thanks for the idea! I've added it to our feature requests, and the product team "
        "reviews these every month.",
        "Great suggestion, thank you. I've shared it with the product team and will let you "
        "know if it makes the roadmap.",
    ],
    "delete_account": [
        "I can help with that. Go to Settings > Account > Delete account; your data is removed "
        "within 30 days, and we'll email a confirmation.",
        "Understood. You can delete your account under Settings > Account; once confirmed, all "
        "your data is erased within 30 days.",
    ],
}

_CURT = [
    "Not something we can help with.",
    "Read the FAQ.",
    "That's not our problem.",
    "Try again later.",
    "We don't handle that here.",
    "No.",
]


def support_preferences(n_per_label: int = 12, seed: int = 0) -> list[PreferencePair]:
    """`8 * n_per_label` pairs, one per support message, labels interleaved.

    >>> pairs = support_preferences(n_per_label=1)
    >>> len(pairs), pairs[0].prompt[0]["content"] == SUPPORT_SYSTEM
    (8, True)
    """
    rng = random.Random(f"preferences:{seed}")
    pairs = []
    for i, ex in enumerate(support_intents(n_per_label, seed)):
        label = ex.label
        chosen = rng.choice(_HELPFUL[label])
        if rng.random() < 0.5:
            rejected, kind = rng.choice(_CURT), "curt"
        else:
            other = rng.choice([x for x in SUPPORT_LABELS if x != label])
            rejected, kind = rng.choice(_HELPFUL[other]), "off_topic"
        prompt = [
            {"role": "system", "content": SUPPORT_SYSTEM},
            {"role": "user", "content": ex.messages[1]["content"]},
        ]
        meta = {"label": label, "rejected_kind": kind}
        pairs.append(PreferencePair(prompt, chosen, rejected, meta, f"support_preferences[{i}]"))
    return pairs


def write_support_preferences(path: str | Path, n_per_label: int = 12, seed: int = 0) -> Path:
    """Write `support_preferences(...)` as prompt/chosen/rejected JSONL (atomically)."""
    return write_preferences(path, support_preferences(n_per_label, seed))
