"""A fictional product handbook and questions only it answers: the knowledge-base example.

    python bench/knowledge/handbook.py --out /tmp/kb [--seed 0]

writes /tmp/kb/handbook/ (36 pages: products, error codes, firmware notes, support, policies,
accessories, company; 30 markdown, 3 text and 3 HTML) and /tmp/kb/questions.jsonl, 270
questions in the `messages` format with the page that answers each in its metadata:

    {"messages": [{"role": "user", "content": "How long is the standard warranty on the
                   Lugufir Rinosin?"}, {"role": "assistant", "content": "22 months"}],
     "meta": {"document": "products/lugufir-rinosin.md"}}

The company, its products and every fact (model and part numbers, error codes, firmware
versions, prices, hours, names) are invented from the seed, so a model cannot know them without
reading the page. Every answer is short and appears exactly once in the whole handbook,
compared casefolded as the `contains` metric compares, so each question has one answer on one
page; `write` checks this and fails otherwise. A question names its entity (the product, line,
region, plan, ...) but does not copy the page's sentence.
"""

from __future__ import annotations

import argparse
import html
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

FIRST_NAMES = ["Maren", "Idris", "Tobias", "Ilse", "Ravi", "Noor", "Callum", "Ines", "Oskar"]
CITIES = ["Lisbon", "Tallinn", "Glasgow", "Ghent", "Brno"]
WAREHOUSES = ["Rotterdam", "Leipzig", "Porto", "Gdansk"]
REGIONS = ["Nordic", "Iberian", "Benelux", "Alpine", "Baltic", "Adriatic"]
SERVICE_PLANS = ["Essential Care", "Priority Care", "Premier Care", "Enterprise Care"]
CAREPACKS = ["CarePack Basic", "CarePack Plus", "CarePack Max", "CarePack Site"]

LINES = [  # (category, plural, full name, accessories that fit the line)
    ("router", "routers", "branch-office router", ["rack mounting kit", "spare power supply"]),
    ("switch", "switches", "managed switch", ["spare fan tray", "stacking cable"]),
    ("access point", "access points", "wireless access point", ["ceiling mount", "antenna kit"]),
    ("storage box", "storage boxes", "network storage appliance", ["drive caddy", "battery pack"]),
    ("gateway", "gateways", "security gateway", ["console cable", "wall bracket"]),
]

ERRORS = [  # (how the page says it, how a question asks it)
    ("the cooling fan has stopped spinning", "its cooling fan stalls"),
    ("the supply voltage has dropped below the safe limit", "the input voltage is too low"),
    ("the firmware image failed its signature check", "a firmware image is not signed properly"),
    ("the internal temperature passed the shutdown threshold", "it overheats and shuts down"),
    ("the real-time clock lost its setting after a power cut", "its clock resets after an outage"),
    ("the licence for advanced features has expired", "its feature licence runs out"),
    ("a configuration backup could not be written to flash", "saving a config backup fails"),
    ("the management certificate is no longer trusted", "its management certificate is rejected"),
    ("a second device on the network claims the same address", "there is an IP address conflict"),
    ("the uplink port negotiated a lower speed than expected", "the uplink links at a slow speed"),
    ("the cloud controller stopped answering heartbeats", "it loses the cloud controller"),
    ("the reset button was held during start-up", "someone holds reset while it boots"),
]

FIXES = [  # (release note, how a question asks it)
    (
        "Fixed DHCP leases expiring an hour earlier than configured",
        "stopped DHCP leases expiring early",
    ),
    (
        "Resolved a memory leak in the web console after long sessions",
        "fixed the web console leaking memory",
    ),
    (
        "Corrected daylight-saving changes being applied twice",
        "stopped the clock jumping twice at daylight-saving changes",
    ),
    (
        "Restored SNMP traps after a warm restart",
        "brought back SNMP traps that vanished after a restart",
    ),
    (
        "Fixed VLAN tags being dropped on trunk ports under heavy load",
        "stopped busy trunk ports losing VLAN tags",
    ),
    (
        "Repaired scheduled reboots that skipped the last day of the month",
        "fixed scheduled reboots skipping month ends",
    ),
    (
        "Closed a flaw that let the guest portal show the admin login",
        "hid the admin login from the guest portal",
    ),
    (
        "Stopped the status light blinking amber after a successful update",
        "fixed the amber blinking light after updates",
    ),
    (
        "Fixed log export truncating files larger than a few megabytes",
        "stopped large log exports being cut short",
    ),
    (
        "Made IPv6 router advertisements honour the configured prefix lifetime",
        "made IPv6 advertisements respect the prefix lifetime",
    ),
]

FILLER = {
    "overview": [
        "It is designed to be installed by a single technician in under an hour, and it can be "
        "managed from the web console or from the central fleet dashboard.",
        "Customers usually deploy it in offices, clinics and small warehouses where there is no "
        "dedicated IT room and the device has to stay quiet.",
        "The enclosure is made of recycled aluminium and has no openings on the top, so it can "
        "sit on a shelf or under a desk without collecting dust.",
    ],
    "setup": [
        "Before you start, make sure the site has a grounded power outlet and that the upstream "
        "network hands out addresses by DHCP.",
        "The quick-start leaflet in the box walks through the first boot; the status light turns "
        "solid green once the device is ready to be configured.",
        "Change the administrator password on first login: the device will not accept remote "
        "management until you do.",
    ],
    "care": [
        "Keep the air vents clear and clean them with dry compressed air every few months.",
        "Updates are signed and can be installed from the web console without taking the "
        "device offline for more than a couple of minutes.",
        "If the device has to be shipped back, use the original packaging or an anti-static bag.",
    ],
}

PRODUCT_QUESTIONS = {  # fact -> ways to ask for it
    "model": [
        "What is the full model number of the {name}?",
        "Which model number identifies the {name}?",
        "What model number is on the label of the {name}?",
    ],
    "codename": [
        "What code name did the {name} have during development?",
        "Under which internal code name was the {name} developed?",
    ],
    "ports": [
        "How many ports does the {name} have?",
        "How many ports are on the front of the {name}?",
        "What is the port count of the {name}?",
    ],
    "adapter": [
        "What is the part number of the {name}'s power adapter?",
        "Which power adapter part number goes with the {name}?",
    ],
    "ip": [
        "What IP address does a new {name} use by default?",
        "At which address can I reach a factory-fresh {name}?",
        "What is the default IP address of the {name}?",
    ],
    "firmware": [
        "Which firmware version does the {name} ship with?",
        "What firmware is installed on a new {name}?",
    ],
    "price": ["What is the list price of the {name}?", "How much does the {name} cost before tax?"],
    "warranty": [
        "How long is the standard warranty on the {name}?",
        "For how long is a new {name} covered by warranty?",
        "What warranty period comes with the {name}?",
    ],
}


@dataclass
class Page:
    path: str  # relative to the handbook folder
    title: str
    sections: list[tuple[str, list[str]]] = field(default_factory=list)  # (heading, paragraphs)
    table: tuple[list[str], list[list[str]]] | None = None  # (header, rows); HTML pages only


@dataclass
class Line:
    """A product line: an invented name and one of the `LINES` categories."""

    name: str  # "Bubato"
    category: str  # "gateway"
    plural: str  # "gateways"
    full: str  # "security gateway"
    accessories: list[str]


@dataclass
class Handbook:
    pages: list[Page]
    questions: list[tuple[str, str, str]]  # (question, answer, page path)


class Facts:
    """Invents values none of which is a part of another (casefolded), so every answer can
    appear once in the handbook, and records the questions asked about them."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.used: list[str] = []
        self.questions: list[tuple[str, str, str]] = []

    def unique(self, make) -> str:
        for _ in range(10_000):
            value = make()
            low = value.casefold()
            if all(low not in u and u not in low for u in self.used):
                self.used.append(low)
                return value
        raise RuntimeError("ran out of distinct values; widen the range")

    def _syllables(self, n: int) -> str:
        return "".join(
            self.rng.choice("bdfgklmnprstvz") + self.rng.choice("aeiou") for _ in range(n)
        )

    def word(self, syllables: int | None = None) -> str:
        """An invented, pronounceable name ("Lumupa"). Names that are answers get three
        syllables, too long to be a part of an English word."""
        ending = lambda: self.rng.choice(["n", "r", "l", "s", "", ""])  # noqa: E731
        n = lambda: syllables or self.rng.randint(2, 3)  # noqa: E731
        return self.unique(lambda: (self._syllables(n()) + ending()).capitalize())

    def person(self) -> str:
        return self.unique(lambda: f"{self.rng.choice(FIRST_NAMES)} {self.word_part()}")

    def word_part(self) -> str:
        return self._syllables(3).capitalize() + self.rng.choice("kns")

    def number(self, lo: int, hi: int, fmt: str = "{}", step: int = 1) -> str:
        return self.unique(lambda: fmt.format(self.rng.randrange(lo, hi + 1, step)))

    def version(self) -> str:
        r = self.rng
        return self.unique(lambda: f"{r.randint(1, 9)}.{r.randint(0, 29)}.{r.randint(0, 40)}")

    def clock(self, hours: tuple[int, int], minutes: list[int]) -> str:
        r = self.rng
        return self.unique(lambda: f"{r.randint(*hours):02d}:{r.choice(minutes):02d}")

    def ask(self, templates: list[str], answer: str, page: Page, **names: str) -> None:
        """One question about `answer`, in one of the `templates` phrasings."""
        question = self.rng.choice(templates).format(**names)
        self.questions.append((question, answer, page.path))


# ---------------------------------------------------------------------------- pages


def _product_page(f: Facts, company: str, code: str, line: Line) -> Page:
    product = f.word()
    name = f"{line.name} {product}"
    page = Page(f"products/{line.name.lower()}-{product.lower()}.md", f"{name} {line.full}")
    r = f.rng
    fact = {
        "model": f.number(1000, 9899, line.name[:2].upper() + "-{}"),
        "codename": f.word(syllables=3),
        "ports": f.number(10, 64, "{} ports"),
        "adapter": f.number(10000, 99999, code + "-{}"),
        "ip": f.unique(lambda: f"10.{r.randint(10, 250)}.{r.randint(10, 250)}.1"),
        "firmware": f.version(),
        "price": f.unique(lambda: f"${r.randrange(149, 4999, 10):,}"),
        "warranty": f.number(12, 60, "{} months"),
    }
    page.sections = [
        (
            "Overview",
            [
                f"The {name} is a {line.full} of the {line.name} line from {company}. Its full "
                f"model number is {fact['model']}, printed on the label under the device next "
                "to the serial number. " + r.choice(FILLER["overview"]),
                f"While it was being developed, the {name} went by the internal code name "
                f"{fact['codename']}; you may still see that name in older support tickets.",
            ],
        ),
        (
            "Hardware",
            [
                f"On the front panel the {name} has {fact['ports']}, each with its own link "
                f"light. It runs from the external power adapter, part number {fact['adapter']}; "
                "other adapters may look alike but deliver the wrong voltage."
            ],
        ),
        (
            "Setting up",
            [
                r.choice(FILLER["setup"]),
                f"Out of the box the {name} answers at {fact['ip']} and runs firmware "
                f"{fact['firmware']}. Connect a laptop directly, open that address in a browser "
                "and follow the wizard.",
            ],
        ),
        (
            "Price and warranty",
            [
                f"The {name} lists at {fact['price']} before tax. Every unit is covered by a "
                f"standard warranty of {fact['warranty']} from the date on the invoice. "
                + r.choice(FILLER["care"])
            ],
        ),
    ]
    for key, value in fact.items():
        f.ask(PRODUCT_QUESTIONS[key], value, page, name=name)
    return page


def _errors_page(f: Facts, line: Line) -> Page:
    page = Page(f"errors/{line.name.lower()}-error-codes.md", f"{line.name} error codes")
    entries = []
    for said, asked in f.rng.sample(ERRORS, 6):
        error = f.number(100, 899, "E-{}")
        entries.append(f"- **{error}**: on a {line.name} unit, {said}.")
        device = f"{line.name} {line.category}"
        asks = [
            f"Which error code does a {device} show when {asked}?",
            f"What code does a {line.name} device report if {asked}?",
            f"On a {device}, which error appears when {asked}?",
        ]
        f.ask(asks, error, page)
    intro = (
        f"Every {line.name} {line.category} shows a code on its status screen and in the system "
        "log when something goes wrong. Look the code up below before you call support: most "
        "problems can be solved on site."
    )
    page.sections = [("What the codes mean", [intro]), ("Codes", ["\n".join(entries)])]
    return page


def _firmware_page(f: Facts, line: Line) -> Page:
    title = f"{line.name} firmware release notes"
    page = Page(f"firmware/{line.name.lower()}-release-notes.md", title)
    notes = []
    for said, asked in f.rng.sample(FIXES, 5):
        version = f.version()
        notes.append(f"- {line.name} firmware {version}: {said}.")
        asks = [
            f"Which {line.name} firmware release {asked}?",
            f"Which firmware version for {line.name} devices {asked}?",
            f"What {line.name} firmware version {asked}?",
        ]
        f.ask(asks, version, page)
    intro = (
        f"This page lists the maintenance releases for the whole {line.name} {line.category} "
        "family. Install the newest release unless support asks you to stay on an older one; "
        "releases can be installed in any order."
    )
    page.sections = [("About these notes", [intro]), ("Releases", ["\n".join(notes)])]
    return page


def _hours_page(f: Facts, company: str) -> Page:
    page = Page("support/hours.txt", "Support desk hours")
    lines = []
    for region in REGIONS:
        opens = f.clock((6, 9), [0, 15, 30, 45])
        closes = f.clock((15, 20), [0, 15, 30, 45])
        lines.append(
            f"The {region} desk takes calls from {opens} until {closes} local time, "
            "Monday to Friday."
        )
        f.ask(
            [
                f"What time does the {region} support desk open?",
                f"When can I first reach the {region} desk in the morning?",
            ],
            opens,
            page,
        )
        f.ask(
            [
                f"When does the {region} support desk close?",
                f"Until what time does the {region} desk take calls?",
            ],
            closes,
            page,
        )
    intro = (
        f"{company} runs its telephone support from regional desks, so that customers are "
        "answered in their own language and time zone. Outside these hours, open a ticket on "
        "the support portal and the next desk to open will pick it up."
    )
    page.sections = [("Regional desks", [intro, "\n".join(lines)])]
    return page


def _extensions_page(f: Facts, company: str) -> Page:
    page = Page("support/extensions.html", "Phone extensions")
    teams = [
        ("Billing and invoices", "a question about an invoice"),
        ("Returns desk", "arranging a return"),
        ("Licensing", "a problem with a licence key"),
        ("Storage specialists", "help with a storage box"),
        ("Press office", "a journalist's enquiry"),
        ("Partner programme", "joining the reseller programme"),
        ("Recycling service", "recycling old equipment"),
        ("Accessibility line", "support in an accessible format"),
    ]
    rows = []
    for team, asked in teams:
        extension = f.number(2000, 8999)
        rows.append([team, extension])
        asks = [
            f"Which phone extension handles {asked}?",
            f"What extension should I dial for {asked}?",
        ]
        f.ask(asks, extension, page)
    intro = (
        f"Call the {company} switchboard and dial the extension of the team you need. The table "
        "below is kept up to date by the customer service office."
    )
    page.sections = [("Reaching the right team", [intro])]
    page.table = (["Team", "Extension"], rows)
    return page


def _by_number(values: list[str]) -> list[str]:
    """Values like "12 hours", the largest first."""
    return sorted(values, key=lambda v: -int(v.split()[0]))


def _service_levels_page(f: Facts) -> Page:
    page = Page("support/service-levels.md", "Service levels")
    # Better plans answer sooner: the values drawn, longest first.
    responses = _by_number([f.number(2, 48, "{} hours") for _ in SERVICE_PLANS])
    visits = _by_number([f.number(1, 9, "{} business days") for _ in SERVICE_PLANS])
    paragraphs = []
    for plan, response, visit in zip(SERVICE_PLANS, responses, visits, strict=True):
        paragraphs.append(
            f"Under {plan}, a support engineer sends a first response within {response} of a "
            "ticket being opened, and if hardware must be replaced on site an engineer arrives "
            f"within {visit}."
        )
        asks = [
            f"How quickly does {plan} promise a first response?",
            f"What is the first-response time under {plan}?",
        ]
        f.ask(asks, response, page)
        asks = [
            f"Within how long does an engineer come on site under {plan}?",
            f"How soon is an on-site visit under {plan}?",
        ]
        f.ask(asks, visit, page)
    page.sections = [("Response times by plan", paragraphs)]
    return page


def _returns_page(f: Facts, company: str) -> Page:
    page = Page("policies/returns.md", "Returns and refunds")
    paragraphs = [
        f"{company} accepts returns from customers and resellers. The time you have depends on "
        "what you are sending back, and is counted from the day of delivery."
    ]
    kinds = [  # (what is sent back, whether a restocking fee applies)
        ("unopened items", False),
        ("opened items", True),
        ("refurbished units", True),
        ("items bought from a reseller", False),
        ("business orders of ten units or more", True),
    ]
    for kind, fee in kinds:
        window = f.number(14, 99, "{} days")
        text = f"For {kind}, the return window is {window}."
        asks = [
            f"How long is the return window for {kind}?",
            f"How many days do I have to send back {kind}?",
        ]
        f.ask(asks, window, page)
        if fee:
            percent = f.number(5, 30, "{}%")
            text += f" A restocking fee of {percent} of the price is deducted from the refund."
            asks = [
                f"What restocking fee applies to {kind}?",
                f"How much is deducted as a restocking fee on {kind}?",
            ]
            f.ask(asks, percent, page)
        paragraphs.append(text)
    page.sections = [("Return windows", paragraphs)]
    return page


def _carepack_page(f: Facts) -> Page:
    page = Page("policies/carepack-plans.html", "CarePack extended cover")
    rows = []
    for plan in CAREPACKS:
        price = f.number(29, 899, "${}", step=10)
        extra = f.number(12, 60, "{} months")
        rows.append([plan, f"{price} per year", f"adds {extra} of cover"])
        asks = [f"How much does {plan} cost per year?", f"What is the yearly price of {plan}?"]
        f.ask(asks, price, page)
        asks = [
            f"By how long does {plan} extend the cover?",
            f"How much extra cover does {plan} add?",
        ]
        f.ask(asks, extra, page)
    intro = (
        "A CarePack extends the standard warranty of a device and adds advance replacement: the "
        "new unit is shipped before the faulty one comes back. A CarePack must be bought within "
        "the standard warranty period."
    )
    page.sections = [("Extend your cover", [intro])]
    page.table = (["Plan", "Price", "Cover"], rows)
    return page


def _shipping_page(f: Facts) -> Page:
    page = Page("policies/shipping.txt", "Shipping")
    lines = []
    for city in WAREHOUSES:
        code = f.number(100, 999, "WH-{}")
        cutoff = f.clock((11, 16), [10, 20, 40, 50])
        lines.append(
            f"Orders served from the {city} warehouse (warehouse code {code}) leave the same day "
            f"when they are confirmed before {cutoff}."
        )
        asks = [
            f"What is the warehouse code of the {city} warehouse?",
            f"Which code identifies the {city} warehouse?",
        ]
        f.ask(asks, code, page)
        asks = [
            f"What is the same-day dispatch cut-off at the {city} warehouse?",
            f"By what time must an order reach the {city} warehouse to ship that day?",
        ]
        f.ask(asks, cutoff, page)
    intro = (
        "Orders are shipped from the warehouse closest to the delivery address that has the "
        "goods in stock. Tracking links are sent by e-mail as soon as the parcel is collected."
    )
    page.sections = [("Warehouses and cut-off times", [intro, "\n".join(lines)])]
    return page


def _catalog_page(f: Facts, code: str, lines: list[Line]) -> Page:
    page = Page("accessories/catalog.html", "Accessories catalogue")
    rows = []
    for line in lines:
        for accessory in line.accessories:
            part = f.number(10000, 99999, code + "-{}")
            rows.append([accessory.capitalize(), f"{line.name} {line.plural}", part])
            asks = [
                f"What is the part number of the {accessory} for {line.name} devices?",
                f"Which part number should I order for a {line.name} {accessory}?",
            ]
            f.ask(asks, part, page)
    intro = (
        "Only genuine accessories keep the warranty valid. Order them from the web shop or from "
        "any authorised reseller, quoting the part number."
    )
    page.sections = [("Genuine accessories", [intro])]
    page.table = (["Accessory", "Fits", "Part number"], rows)
    return page


def _history_page(f: Facts, company: str, lines: list[Line]) -> Page:
    page = Page("company/history.md", f"The history of {company}")
    founder, founded, first = f.person(), f.number(1979, 1999), f.word(syllables=3)
    ceo, since = f.person(), f.number(2005, 2019)
    staff = f.number(300, 4900, "{:,} employees", step=10)
    names = [line.name for line in lines]
    page.sections = [
        (
            "Beginnings",
            [
                f"{company} was started in {founded} by {founder}, an engineer who had spent "
                "years repairing office networks and thought the equipment could be simpler.",
                f"The company's very first product was a modem called the {first}, sold mainly "
                "to libraries and schools.",
            ],
        ),
        (
            "Today",
            [
                f"{ceo} has been chief executive since {since}. The company now has {staff} "
                "and sells through resellers in most of Europe. Its product lines are "
                + ", ".join(names[:-1])
                + f" and {names[-1]}."
            ],
        ),
    ]
    f.ask([f"Who founded {company}?", f"Which engineer started {company}?"], founder, page)
    f.ask([f"In what year was {company} founded?", f"When was {company} started?"], founded, page)
    asks = [
        f"What was the name of {company}'s first product?",
        f"Which modem did {company} sell first?",
    ]
    f.ask(asks, first, page)
    f.ask([f"Who is the chief executive of {company}?", f"Who runs {company} as CEO?"], ceo, page)
    f.ask([f"Since which year has {ceo} been chief executive of {company}?"], since, page)
    f.ask([f"How many people work at {company}?", f"What is {company}'s headcount?"], staff, page)
    return page


def _offices_page(f: Facts, company: str) -> Page:
    page = Page("company/offices.txt", "Offices")
    lines = []
    for city in CITIES:
        building = f.word(syllables=3) + " House"
        manager = f.person()
        lines.append(f"The {city} office is in {building}, and {manager} is its office manager.")
        asks = [
            f"In which building is the {city} office?",
            f"What is the name of the building that houses the {city} office?",
        ]
        f.ask(asks, building, page)
        f.ask(
            [f"Who is the office manager in {city}?", f"Who manages the {city} office?"],
            manager,
            page,
        )
    intro = f"{company} has offices in five cities. Visitors should report to reception."
    page.sections = [("Where to find us", [intro, "\n".join(lines)])]
    return page


def _training_page(f: Facts, lines: list[Line]) -> Page:
    page = Page("training/courses.md", "Training courses")
    paragraphs = [
        "Courses are run online and at the offices. Each ends with a short practical exam; "
        "passing it counts towards the certified installer badge."
    ]
    topics = [f"installing {line.name} {line.plural}" for line in lines[:4]]
    topics += ["troubleshooting with error codes", "planning firmware updates"]
    for topic in topics:
        course = f.number(100, 999, "TC-{}")
        duration = f.number(3, 40, "{} hours")
        paragraphs.append(f"The course on {topic} has the code {course} and takes {duration}.")
        asks = [
            f"What is the course code for {topic}?",
            f"Which code does the training on {topic} have?",
        ]
        f.ask(asks, course, page)
        asks = [
            f"How long does the course on {topic} take?",
            f"How many hours is the training on {topic}?",
        ]
        f.ask(asks, duration, page)
    page.sections = [("Courses", paragraphs)]
    return page


def _compliance_page(f: Facts, lines: list[Line]) -> Page:
    page = Page("compliance/declarations.md", "Declarations of conformity")
    paragraphs = [
        "Each product line has one declaration of conformity covering all its models. Ask the "
        "compliance team for a signed copy."
    ]
    for line in lines:
        number = f.number(10000, 99999, "DoC-{}")
        paragraphs.append(f"All {line.name} {line.plural} are covered by declaration {number}.")
        asks = [
            f"What is the declaration of conformity number for the {line.name} line?",
            f"Which conformity declaration covers {line.name} {line.plural}?",
        ]
        f.ask(asks, number, page)
    page.sections = [("Declarations", paragraphs)]
    return page


def generate(seed: int = 0) -> Handbook:
    """The handbook and its questions, the same for the same seed."""
    f = Facts(seed)
    company = f.word() + " " + f.rng.choice(["Networks", "Systems", "Devices"])
    code = company[0] + company.split()[1][0]  # part numbers' prefix: "VS-12684"
    lines = [Line(f.word(), *spec) for spec in LINES]
    pages = [_product_page(f, company, code, line) for line in lines for _ in range(3)]
    pages += [_errors_page(f, line) for line in lines]
    pages += [_firmware_page(f, line) for line in lines]
    pages += [_hours_page(f, company), _extensions_page(f, company), _service_levels_page(f)]
    pages += [_returns_page(f, company), _carepack_page(f), _shipping_page(f)]
    pages += [_catalog_page(f, code, lines)]
    pages += [_history_page(f, company, lines), _offices_page(f, company)]
    pages += [_training_page(f, lines), _compliance_page(f, lines)]
    return Handbook(pages, f.questions)


# ---------------------------------------------------------------------------- writing


def render(page: Page) -> str:
    """A page as markdown, plain text or HTML, by its suffix."""
    if page.path.endswith(".html"):
        return _render_html(page)
    if page.path.endswith(".txt"):
        parts = [page.title.upper() + "\n" + "=" * len(page.title)]
        for heading, paragraphs in page.sections:
            parts += [heading + "\n" + "-" * len(heading), *paragraphs]
        return "\n\n".join(parts) + "\n"
    parts = [f"# {page.title}"]
    for heading, paragraphs in page.sections:
        parts += [f"## {heading}", *paragraphs]
    return "\n\n".join(parts) + "\n"


def _render_html(page: Page) -> str:
    e = html.escape
    body = [f"<h1>{e(page.title)}</h1>"]
    for heading, paragraphs in page.sections:
        body.append(f"<h2>{e(heading)}</h2>")
        body += [f"<p>{e(p)}</p>" for p in paragraphs]
    if page.table:
        header, rows = page.table
        body.append("<table>\n<tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>")
        body += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows]
        body.append("</table>")
    head = (
        f"<meta charset='utf-8'><title>{e(page.title)}</title>\n"
        "<style>table { border-collapse: collapse; } td, th { padding: 4px; }</style>\n"
        "<script>document.documentElement.className = 'js';</script>"
    )
    body_html = "\n".join(body)
    return f"<!DOCTYPE html>\n<html><head>{head}</head>\n<body>\n{body_html}\n</body></html>\n"


def check(handbook: Handbook, texts: dict[str, str]) -> None:
    """Every answer appears exactly once in the handbook (casefolded), on its own page."""
    whole = "\n".join(texts.values()).casefold()
    for question, answer, path in handbook.questions:
        count = whole.count(answer.casefold())
        if count != 1 or answer.casefold() not in texts[path].casefold():
            raise RuntimeError(f"{answer!r} ({question}) appears {count} times in the handbook")


def write(out: Path, seed: int = 0) -> dict:
    """Write out/handbook/... and out/questions.jsonl; return the counts."""
    handbook = generate(seed)
    texts = {page.path: render(page) for page in handbook.pages}
    check(handbook, texts)
    for path, text in texts.items():
        file = out / "handbook" / path
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(text, encoding="utf-8")
    with open(out / "questions.jsonl", "w", encoding="utf-8") as fh:
        for question, answer, path in handbook.questions:
            messages = [
                {"role": "user", "content": question},
                {"role": "assistant", "content": answer},
            ]
            record = {"messages": messages, "meta": {"document": path}}
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    suffixes = Counter(Path(p).suffix for p in texts)
    return {"pages": len(texts), "by_suffix": dict(suffixes), "questions": len(handbook.questions)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder to write into")
    parser.add_argument("--seed", type=int, default=0, help="another seed, another company")
    args = parser.parse_args()
    counts = write(args.out, args.seed)
    print(
        f"wrote {counts['pages']} pages {counts['by_suffix']} to {args.out / 'handbook'} and "
        f"{counts['questions']} questions to {args.out / 'questions.jsonl'}"
    )


if __name__ == "__main__":
    main()
