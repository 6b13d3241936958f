"""The built-in example dataset for `tuneloop quickstart`: Acme support messages to intents.

Acme is a fictional company that sells software plans and ships hardware, so its inbox mixes
account, billing and delivery questions. Each example asks the model to name the intent of one
customer message:

    >>> ex = support_intents(n_per_label=1, seed=0)[0]
    >>> [m["role"] for m in ex.messages], ex.meta == {"label": ex.reference}
    (['system', 'user', 'assistant'], True)

and is written as one line of `messages` JSONL, for example:

    {"messages": [{"role": "system", "content": "Classify the Acme customer support message..."},
                  {"role": "user", "content": "Hi! I want my $135.50 back for order ACM-329385."},
                  {"role": "assistant", "content": "refund_request"}],
     "meta": {"label": "refund_request"}}

Messages are filled from hand-written templates per intent with random slots (products, order
numbers, amounts, devices), polite openers and closers, and the odd lowercase message or typo.
Most messages avoid the label's own words, so the task is not keyword matching, and a few sit
near the border of another intent on purpose (a double charge that asks for the money back is a
refund, one that asks why is a billing question).

Generation is deterministic: one seed gives the same bytes on every machine. Each label draws
from its own stream, so a larger `n_per_label` only adds messages. No two messages share a body
(the text before openers, closers, case and typos are added), so a held-out split never holds a
training message in different dress; two bodies can still share a template and differ in a slot.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

from tuneloop.data.records import Example, normalize_text

SUPPORT_LABELS: list[str] = [
    "reset_password",
    "cancel_subscription",
    "refund_request",
    "shipping_status",
    "billing_question",
    "bug_report",
    "feature_request",
    "delete_account",
]

SUPPORT_INSTRUCTION: str = (
    "Classify the Acme customer support message into exactly one intent. "
    f"Allowed labels: {', '.join(SUPPORT_LABELS)}. "
    "Answer with the label only."
)

MIN_WORDS, MAX_WORDS = 5, 40
_TRIES_PER_TEMPLATE = 50

# Per intent, the body of a message. `{slot}` fields are filled by `_Slots` below; a slot used
# twice in one template gets the same value both times.
_TEMPLATES: dict[str, list[str]] = {
    "reset_password": [
        "Can't log in to {product} again.",
        "Locked out of {product} on {browser}, please help.",
        "I can't log into my {product} account anymore, it keeps saying my credentials are wrong.",
        "Forgot my login details for {product}. How do I get back in?",
        "I'm locked out after too many sign-in attempts on my {device}.",
        "The link to set a new password never shows up in my inbox at {email}.",
        "Changed phones and now I can't get past the sign-in screen in {product}.",
        "How do I change my {product} password? I think someone else knows it.",
        "my login stopped working {when}, what do i do to get back in",
        "It says 'invalid credentials' every time I try to sign in on {browser}.",
        "I don't remember what I used to log in to {product}. Can you help me regain access?",
        "Can you send me a new sign-in link? The one from {when} expired before I used it.",
        "My old email is gone, so I can't get into {product} anymore. How do I recover access?",
        "I keep typing my passcode for {product} and it's rejected. I need to set a new one.",
        "Locked out of {product} on my {device} and the recovery email isn't reaching {email}.",
        "What's the process for recovering my {product} login if I forgot it?",
        "Tried signing in {count} times and now it won't let me. How do I regain access?",
    ],
    "cancel_subscription": [
        "Don't renew my {plan} after {date}.",
        "Please stop my {plan} from renewing next month.",
        "I don't want to be billed for {product} anymore, how do I end my plan?",
        "I'd like to end my {plan} at the end of this cycle.",
        "How do I turn off auto-renew for {product}? I won't need it after {date}.",
        "We're moving to another tool, so please stop the {plan} for our team.",
        "My free trial ends on {date} and I don't want it to turn into a paid {plan}.",
        "Can you make sure I'm not charged again? I'm done with {product} after this month.",
        "I want to go back to the free tier and stop paying for the {plan}.",
        "Not using {product} enough to justify {amount} a month. Please end it.",
        "where do i stop my membership? can't find the option in the {screen}",
        "Please end my {plan} today, but keep my account and files.",
        "Don't renew my {plan} please, money is tight right now.",
        "How can I opt out of the yearly renewal of my {plan}?",
        "Stop my {product} membership. I'll keep using the free version.",
    ],
    "refund_request": [
        "I want my {amount} back for order {order}.",
        "I sent back the {item} on {date} but haven't gotten my money back yet.",
        "I was charged {amount} for a {plan} I never used. I want that money returned.",
        "The {item} arrived broken. I'd like my money back rather than a replacement.",
        "Can I get reimbursed for order {order}? It wasn't what was described.",
        "You took payment twice for order {order}, please return the extra {amount}.",
        "I ended my plan before it renewed but was still charged {amount}. Please reverse it.",
        "Order {order} never arrived and I'd rather have the {amount} back than keep waiting.",
        "I want my money back for the {plan}, it doesn't do what I need on my {device}.",
        "How long until the {amount} for my returned {item} shows up on my card?",
        "The {item} I got is the wrong size and I just want a full reimbursement.",
        "I bought the annual {plan} instead of monthly by accident. Can I get the difference back?",
        "please put the {amount} back on my card for order {order}, the {item} was defective",
        "I was promised compensation for the late delivery of {order}. When will I see it?",
        "Charged {amount} after my trial ended even though I stopped it. I want it returned.",
    ],
    "shipping_status": [
        "Where's my {item}? Order {order}.",
        "Where is my order {order}? It was supposed to arrive {date}.",
        "The tracking for {order} hasn't updated in {days} days.",
        "Has my {item} left yet? I ordered it {when}.",
        "When will the {item} from order {order} be delivered?",
        "The courier says delivered but there's no box at my door. Order {order}.",
        "Can you give me a tracking number for order {order}?",
        "My parcel seems stuck in customs, order {order}. Any update?",
        "Is there any way to know when the {item} will get here? I need it by {date}.",
        "Order {order} still says processing after {days} days. Is it on its way?",
        "how long does delivery usually take to {city}? waiting on my {item}",
        "Just checking in on order {order}, haven't heard anything since I paid {when}.",
        "The estimated arrival for my {item} keeps moving back. What's going on?",
        "Did my {item} leave the warehouse yet? Order {order}.",
        "I got only one of the two boxes for order {order}. Where's the other one?",
    ],
    "billing_question": [
        "What's this {amount} charge from Acme?",
        "What is the {amount} charge from Acme on my statement from {date}?",
        "How do I update the card you have on file for my {plan}?",
        "Can I get an invoice with my company name on it for the {plan}?",
        "Why did my monthly price go up to {amount}?",
        "Is VAT included in the {amount} price of the {plan}?",
        "Can I switch to paying yearly instead of monthly for {product}?",
        "When exactly will I be charged for the next period of my {plan}?",
        "Do you accept PayPal, or only credit cards, for {product}?",
        "My card expired. Will the payment for my {plan} still go through on {date}?",
        "I see two different amounts on my receipts, {amount} and {amount2}. Which one is right?",
        "Can receipts for {product} be sent to {email} instead of my personal address?",
        "Is there a discount for nonprofits or students on the {plan}?",
        "Where can I download past receipts for {product}?",
        "I was charged {amount} {when} but thought the {plan} cost less. Can you explain why?",
    ],
    "bug_report": [
        "{product} won't even open on my {device} now.",
        "The {product} app crashes every time I open the {screen} on my {device}.",
        "Getting error {error} when I try to upload a file on {browser}.",
        "The {screen} is just a blank white page since the last update.",
        "Clicking save in {product} does nothing, and my changes are lost.",
        "Sync between my {device} and my laptop stopped working {when}.",
        "Search results in {product} still show items I removed weeks ago.",
        "When I export to PDF from {product} the text comes out garbled.",
        "The checkout button is greyed out on {browser} even with items in my cart.",
        "Notifications from {product} arrive twice on my {device}.",
        "{product} freezes for about {seconds} seconds whenever I switch tabs.",
        "Dates show up in the wrong time zone in the {screen}.",
        "I get kicked out of the {product} app on my {device} every few minutes.",
        "The dark theme makes text in the {screen} unreadable, it's black on black.",
        "Something is broken: the {screen} shows error {error} since I updated {product}.",
    ],
    "feature_request": [
        "Please add {feature} to {product}.",
        "It would be great if {product} had {feature}.",
        "Any plans to add {feature}? That would save me a lot of time.",
        "Could you consider supporting {feature} in a future version?",
        "I'd love to see {feature} in the {screen}.",
        "Our team would pay extra for {feature} in {product}.",
        "Is {feature} on the roadmap? Other tools already have it.",
        "Suggestion: let us use {feature} on the {device} too.",
        "Please think about adding {feature}, it's the one thing missing for me.",
        "Would be nice to schedule exports from {product} to run automatically every week.",
        "Can you make it possible to share folders in {product} with people outside my team?",
        "wish {product} had {feature}, would use it every day",
        "Idea for {product}: {feature} would make it much easier for new users.",
        "Not a complaint, but {feature} would really help in the {screen}.",
        "My only wish for the next {product} update is {feature}.",
    ],
    "delete_account": [
        "Erase my {product} account completely, please.",
        "Please remove my {product} account and all the data you hold about me.",
        "I want everything erased: my profile, order history, all of it. My email is {email}.",
        "Under GDPR I'm asking you to erase all personal data linked to {email}.",
        "How do I permanently close my {product} account? I won't be coming back.",
        "Close my {product} profile for good and don't keep {email} on file.",
        "I no longer want an Acme login at all, I stopped using {product} {when}. Wipe it please.",
        "Can you get rid of my {product} account entirely? Not just pause it like I did {when}.",
        "I'd like all my {product} data removed from your servers, including backups.",
        "please erase my user profile, i dont want to be in your system anymore. email is {email}",
        "Can I remove my {product} account for good from the {screen}? I can't find how.",
        "Stop emailing {email} and wipe my details from {product}, I'm done with Acme for good.",
        "I made a second account by mistake with {email}, please remove that one completely.",
        "Privacy concern: I want my {product} account and the history of order {order} gone.",
        "How long does it take to fully erase my data once I close my {product} account?",
        "Moving to {city} and won't use Acme there. Please close my account and erase my info.",
    ],
}

_PRODUCTS = ["Acme Cloud", "Acme Notes", "Acme Sync", "Acme Desk", "Acme Photos", "Acme Mail"]
_PLANS = ["Pro plan", "Team plan", "Premium plan", "Family plan", "annual plan", "Starter plan"]
_ITEMS = [
    "wireless keyboard",
    "desk lamp",
    "phone case",
    "USB-C hub",
    "coffee grinder",
    "backpack",
    "webcam",
    "standing desk mat",
    "noise cancelling headphones",
    "smart plug",
]
_DEVICES = ["iPhone", "Pixel 8", "Galaxy S23", "iPad", "MacBook", "Windows laptop", "Chromebook"]
_BROWSERS = ["Chrome", "Firefox", "Safari", "Edge"]
_SCREENS = ["settings page", "dashboard", "billing page", "profile screen", "search page", "inbox"]
_FEATURES = [
    "a dark mode",
    "CSV export",
    "a calendar integration",
    "offline mode",
    "bulk editing",
    "a Slack integration",
    "keyboard shortcuts",
    "two-factor login with a hardware key",
    "shared templates",
    "an API for reports",
    "custom tags",
    "larger file uploads",
]
_CITIES = ["Leeds", "Austin", "Lyon", "Toronto", "Melbourne", "Dublin", "Denver", "Porto"]
_MONTHS = ["Jan", "Feb", "March", "April", "May", "June", "July", "Aug", "Sept", "Oct", "Nov"]
_WHEN = ["yesterday", "last Friday", "two weeks ago", "on Monday", "last week", "this morning"]
_NAMES = ["Maria", "Tom", "Priya", "Kenji", "Ana", "Sam", "Olu", "Lena", "Diego", "Fatima"]
_EMAIL_USERS = ["jdoe", "maria.k", "tom_w", "priya88", "kenji.s", "ana.lopez", "sam.r"]
_EMAIL_HOSTS = ["example.com", "mail.example.org", "example.net"]

_OPENERS = ["Hi!", "Hello!", "Hey there.", "Hi Acme team!", "Good morning.", "Hi support team."]
_CLOSERS = [
    "Thanks!",
    "Thank you.",
    "Any help appreciated.",
    "Please advise.",
    "Cheers",
    "Thanks in advance.",
    "This is urgent.",
    "Appreciate it.",
]


class _Slots(dict):
    """Fills template fields on first use, so a field repeated in one template agrees."""

    def __init__(self, rng: random.Random):
        super().__init__()
        self.rng = rng

    def __missing__(self, key: str) -> str:
        value = self._draw(key)
        self[key] = value
        return value

    def _draw(self, key: str) -> str:
        r = self.rng
        if key in ("amount", "amount2"):
            symbol = r.choice(["$", "$", "€", "£"])
            cents = r.choice(["", ".99", ".00", ".50"])
            return f"{symbol}{r.randint(5, 240)}{cents}"
        if key == "order":
            digits = r.randint(10_000, 999_999)
            return r.choice([f"#{digits}", f"ACM-{digits}", f"A{digits}"])
        if key == "date":
            day = r.randint(1, 28)
            return r.choice([f"{r.choice(_MONTHS)} {day}", f"the {_ordinal(day)}"])
        if key == "email":
            return f"{r.choice(_EMAIL_USERS)}@{r.choice(_EMAIL_HOSTS)}"
        if key == "error":
            return r.choice([f"E-{r.randint(1000, 9999)}", f"{r.choice([500, 502, 403])}"])
        if key == "days":
            return str(r.randint(3, 14))
        if key == "seconds":
            return str(r.choice([10, 15, 20, 30, 45]))
        if key == "count":
            return r.choice(["three", "five", "a dozen", "4", "6"])
        pools = {
            "product": _PRODUCTS,
            "plan": _PLANS,
            "item": _ITEMS,
            "device": _DEVICES,
            "browser": _BROWSERS,
            "screen": _SCREENS,
            "feature": _FEATURES,
            "city": _CITIES,
            "when": _WHEN,
        }
        return r.choice(pools[key])


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _typo(text: str, rng: random.Random) -> str:
    """Swap two inner letters of one longer lowercase word: "account" -> "accuont"."""
    words = text.split(" ")
    candidates = [i for i, w in enumerate(words) if len(w) >= 5 and w.isalpha() and w.islower()]
    if not candidates:
        return text
    i = rng.choice(candidates)
    w = words[i]
    j = rng.randint(1, len(w) - 3)
    words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2 :]
    return " ".join(words)


def _dress(body: str, rng: random.Random) -> str:
    """Wrap a body the way people write: greeting, thanks, a name, sometimes no care for case."""
    parts = []
    if rng.random() < 0.45:
        parts.append(rng.choice(_OPENERS))
    parts.append(body)
    if rng.random() < 0.35:
        parts.append(rng.choice(_CLOSERS))
    if rng.random() < 0.15:
        parts.append(f"- {rng.choice(_NAMES)}")
    text = " ".join(parts)
    if rng.random() < 0.12:
        text = _typo(text, rng)
    if rng.random() < 0.15:
        text = text.lower().rstrip(".")
    return text


def _messages_for(label: str, n: int, seed: int, taken: set[str]) -> list[str]:
    # One stream per label (a string seed is hashed with SHA-512, stable across runs and
    # machines), so asking for more examples extends each label's list instead of reshuffling it.
    rng = random.Random(f"support_intents:{seed}:{label}")
    # Take templates in turn rather than at random, so every phrasing is used about equally
    # often; a template that keeps producing bodies already taken is retired.
    templates = list(_TEMPLATES[label])
    rng.shuffle(templates)
    out: list[str] = []
    turn = 0
    while len(out) < n:
        if not templates:
            raise ValueError(
                f"support_intents: found only {len(out)} distinct messages for {label!r}, "
                f"but n_per_label={n}; ask for at most {len(out)} per label"
            )
        template = templates[turn % len(templates)]
        for _ in range(_TRIES_PER_TEMPLATE):
            body = template.format_map(_Slots(rng))
            # Deduplicate on the body, not the dressed message: "Hi! Where is #123?" and
            # "Where is #123? Thanks!" would otherwise land on both sides of a split.
            key = normalize_text(body).casefold()
            text = _dress(body, rng)
            if key not in taken and MIN_WORDS <= len(text.split()) <= MAX_WORDS:
                taken.add(key)
                out.append(text)
                turn += 1
                break
        else:
            templates.remove(template)
    return out


def support_intents(n_per_label: int = 40, seed: int = 0) -> list[Example]:
    """Build the Acme support-intent dataset: `n_per_label` unique messages for each label.

    The result is shuffled (with `random.Random(seed)`), so labels are interleaved.

        >>> data = support_intents(n_per_label=2, seed=0)
        >>> len(data), sorted({ex.label for ex in data}) == sorted(SUPPORT_LABELS)
        (16, True)
        >>> data[0].messages[0]["content"] == SUPPORT_INSTRUCTION
        True
    """
    if n_per_label < 1:
        raise ValueError(f"n_per_label must be at least 1, got {n_per_label}")
    taken: set[str] = set()
    pairs = [
        (text, label)
        for label in SUPPORT_LABELS
        for text in _messages_for(label, n_per_label, seed, taken)
    ]
    random.Random(seed).shuffle(pairs)
    return [
        Example(
            messages=[
                {"role": "system", "content": SUPPORT_INSTRUCTION},
                {"role": "user", "content": text},
                {"role": "assistant", "content": label},
            ],
            meta={"label": label},
            source=f"support_intents(seed={seed})[{i}]",
        )
        for i, (text, label) in enumerate(pairs)
    ]


def write_support_intents(path: str | os.PathLike, n_per_label: int = 40, seed: int = 0) -> Path:
    """Write `support_intents(n_per_label, seed)` as `messages` JSONL at `path`; return the path.

    The file is written to a temporary file beside `path` and moved into place, so a reader
    never sees half a file. Parent directories are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps(ex.to_json(), ensure_ascii=False) + "\n"
        for ex in support_intents(n_per_label, seed)
    ]
    # Not tempfile.mkstemp: its 0600 mode would survive the rename; open() honours the umask.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.writelines(lines)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
