"""Carve the held-out split before anything trains, and refuse leakage between the two sides.

    >>> train, heldout = split_examples(examples, heldout_fraction=0.1, seed=0)   # doctest: +SKIP
    >>> len(examples), len(train), len(heldout)                                   # doctest: +SKIP
    (10003, 9003, 1000)

The split is deterministic given the seed, stratified by label, and made of whole *groups*:
examples that are exact duplicates, or that share a prompt (the same question with two
answers), always land on the same side, so the split itself cannot leak. With
`near_threshold` (the recipe's `data.split.near_threshold`), near-duplicate prompts found by
MinHash/LSH (`data/dedupe.py`) join the same group too, so near-twins cannot straddle the split
either.
`write_split` stores both sides with a manifest of hashes, and `load_split` refuses files
edited after the fact:

    out/train.jsonl  out/heldout.jsonl  out/manifest.json
    manifest.json: {"seed": 0, "heldout_fraction": 0.1, "counts": {"train": 9003, "heldout": 1000},
                    "labels": {"train": {"card_arrival": 142, ...}, "heldout": {...}},
                    "files": {"train.jsonl": {"sha256": "9f2c..."}, ...},
                    "content_hashes": {"train": ["0a1b...", ...], "heldout": [...]}, ...}
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from pathlib import Path

from tuneloop.data.dedupe import DisjointSets, near_duplicate_groups
from tuneloop.data.formats import read_examples, write_examples
from tuneloop.data.records import Example, content_hash, normalize_text, prompt_hash
from tuneloop.errors import DataError, Problem, UserError
from tuneloop.files import sha256_file, write_text

MANIFEST_VERSION = 1
SPLIT_FILES = ("train.jsonl", "heldout.jsonl")
MAX_LISTED = 20  # leaks listed one by one in an error; the rest are counted


def split_examples(
    examples: list[Example],
    heldout_fraction: float,
    seed: int,
    stratify: str | None = "label",
    near_threshold: float | None = None,
) -> tuple[list[Example], list[Example]]:
    """Split into (train, heldout), each in input order.

    Strata: `meta[stratify]` when every example has it, else the normalised reference answer;
    either only when it takes few values (at most half as many as there are examples, as
    labels do), else the split is unstratified. `stratify=None` never stratifies. Each stratum
    sends `heldout_fraction` of its examples to held-out (largest-remainder rounding so the
    total is right) and keeps at least one in train; a stratum of one example stays in train.

    Examples are first grouped so that exact duplicates and examples with the same prompt
    (and, with `near_threshold`, near-duplicate prompts) stay together; groups, not examples,
    are drawn with `random.Random(seed)`.
    """
    if not 0 < heldout_fraction < 1:
        raise UserError(
            f"heldout_fraction must be between 0 and 1, got {heldout_fraction}",
            fix="use a fraction such as 0.1 (10% of the examples held out)",
        )
    if len(examples) < 2:
        raise UserError(
            f"cannot split {len(examples)} example(s) into train and held-out",
            fix="add examples: a useful held-out set needs dozens at least",
        )
    keys = _strata(examples, stratify)
    by_stratum: dict[str | None, list[list[int]]] = {}
    for group in _groups(examples, near_threshold):
        # A group can mix labels (one prompt, two answers); it counts under its commonest one.
        key = Counter(keys[i] for i in group).most_common(1)[0][0]
        by_stratum.setdefault(key, []).append(group)
    sizes = {key: sum(map(len, groups)) for key, groups in by_stratum.items()}
    quotas = _quotas(sizes, heldout_fraction)

    rng = random.Random(seed)
    held: set[int] = set()
    for key in sorted(by_stratum, key=lambda k: (k is not None, str(k))):
        groups = list(by_stratum[key])
        rng.shuffle(groups)
        taken = 0
        for group in groups:
            # quota <= size - 1, so whatever is left over keeps at least one train example.
            if taken + len(group) <= quotas[key]:
                held.update(group)
                taken += len(group)
    if not held:
        raise UserError(
            f"the held-out split would be empty ({len(examples)} examples, "
            f"heldout_fraction {heldout_fraction})",
            fix="add examples or raise heldout_fraction; examples that share a prompt stay "
            "together, and a label with a single example stays in train",
        )
    train = [ex for i, ex in enumerate(examples) if i not in held]
    heldout = [ex for i, ex in enumerate(examples) if i in held]
    return train, heldout


def _strata(examples: list[Example], stratify: str | None) -> list[str | None]:
    def few(values: list[str]) -> bool:
        return len(set(values)) <= len(values) / 2

    if stratify is None:
        return [None] * len(examples)
    if all(stratify in ex.meta for ex in examples):
        labels = [str(ex.meta[stratify]) for ex in examples]
        if few(labels):
            return labels
    references = [normalize_text(ex.reference) for ex in examples]
    if few(references):
        return references
    return [None] * len(examples)


def _groups(examples: list[Example], near_threshold: float | None = None) -> list[list[int]]:
    """Indices grouped by shared prompt (union-find), in order of each group's first member.
    Exact duplicates share their prompt too, so one hash catches both kinds of leak; with
    `near_threshold`, near-duplicate prompts are joined as well."""
    sets = DisjointSets(len(examples))
    first: dict[str, int] = {}
    for i, ex in enumerate(examples):
        sets.union(i, first.setdefault(prompt_hash(ex), i))
    if near_threshold:
        for i, j in near_duplicate_groups(examples, near_threshold):
            sets.union(i, j)
    return sets.groups()


def _quotas(sizes: dict[str | None, int], fraction: float) -> dict[str | None, int]:
    """Held-out count per stratum: floor of its share, then the remaining units of the rounded
    total to the largest remainders. A stratum keeps at least one train example."""
    cap = {k: max(n - 1, 0) for k, n in sizes.items()}
    share = {k: n * fraction if n >= 2 else 0.0 for k, n in sizes.items()}
    quota = {k: min(math.floor(s), cap[k]) for k, s in share.items()}
    missing = math.floor(sum(share.values()) + 0.5) - sum(quota.values())
    by_remainder = sorted(share, key=lambda k: (-(share[k] - math.floor(share[k])), str(k)))
    for k in by_remainder:
        if missing <= 0:
            break
        if quota[k] < cap[k]:
            quota[k] += 1
            missing -= 1
    return quota


# --------------------------------------------------------------------------------------------
# Leakage


def find_leaks(train: list[Example], heldout: list[Example]) -> list[tuple[Example, Example, str]]:
    """(held-out example, train example it leaks from, "content" or "prompt") for each held-out
    example that repeats a train example or its prompt."""
    by_content: dict[str, Example] = {}
    by_prompt: dict[str, Example] = {}
    for ex in train:
        by_content.setdefault(content_hash(ex), ex)
        by_prompt.setdefault(prompt_hash(ex), ex)
    leaks = []
    for ex in heldout:
        if (twin := by_content.get(content_hash(ex))) is not None:
            leaks.append((ex, twin, "content"))
        elif (twin := by_prompt.get(prompt_hash(ex))) is not None:
            leaks.append((ex, twin, "prompt"))
    return leaks


def check_no_leakage(train: list[Example], heldout: list[Example]) -> None:
    """Raise a `UserError` listing every held-out example found in train (same content after
    whitespace normalisation, or the same prompt), naming both sources."""
    leaks = find_leaks(train, heldout)
    if not leaks:
        return
    fix = (
        "remove it from one side, or let `tuneloop data split` make the split "
        "(it keeps duplicates and same-prompt examples on one side)"
    )
    problems = [
        Problem(
            f"the same example as train {twin.source}"
            if kind == "content"
            else f"the same prompt as train {twin.source}",
            where=ex.source or None,
            fix=fix,
        )
        for ex, twin, kind in leaks[:MAX_LISTED]
    ]
    if len(leaks) > MAX_LISTED:
        problems.append(Problem(f"... and {len(leaks) - MAX_LISTED} more"))
    raise UserError.many(
        problems, title=f"{len(leaks)} held-out example(s) leak from train (same content or prompt)"
    )


# --------------------------------------------------------------------------------------------
# Files


def write_split(
    out_dir: str | Path,
    train: list[Example],
    heldout: list[Example],
    *,
    seed: int,
    heldout_fraction: float,
    sources: list[str],
    near_threshold: float | None = None,
) -> Path:
    """Write `train.jsonl`, `heldout.jsonl` (messages format) and `manifest.json` into
    `out_dir`, each atomically, and return the manifest's path. A leaking split is refused.

    Any old manifest goes first and the new one is written last, so a manifest on disk always
    vouches for the files beside it."""
    check_no_leakage(train, heldout)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / "manifest.json"
    manifest_path.unlink(missing_ok=True)
    sides = {"train": train, "heldout": heldout}
    files = {}
    for name, side in zip(SPLIT_FILES, sides.values(), strict=True):
        write_examples(out / name, side, format="messages")
        files[name] = {"sha256": sha256_file(out / name)}
    manifest = {
        "version": MANIFEST_VERSION,
        "seed": seed,
        "heldout_fraction": heldout_fraction,
        "near_duplicate_threshold": near_threshold,
        "sources": [str(s) for s in sources],
        "counts": {k: len(v) for k, v in sides.items()},
        "labels": {k: _label_counts(v) for k, v in sides.items()},
        "files": files,
        "content_hashes": {k: [content_hash(ex) for ex in v] for k, v in sides.items()},
    }
    write_text(manifest_path, json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return manifest_path


def load_manifest(path: str | Path) -> dict:
    """Read a split's `manifest.json`, as `write_split` wrote it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(
            path, None, "split manifest not found", fix="make the split with `tuneloop data split`"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(
            path, None, f"not a valid manifest: {e}", fix="re-run `tuneloop data split`"
        ) from None
    needed = ("files", "counts", "content_hashes")
    if not isinstance(manifest, dict) or any(k not in manifest for k in needed):
        raise DataError(
            path,
            None,
            f"not a split manifest (it needs the keys {', '.join(needed)})",
            fix="re-run `tuneloop data split`",
        )
    return manifest


def verify_manifest(manifest: dict, train: list[Example], heldout: list[Example]) -> None:
    """Raise a `UserError` unless the examples are exactly those the manifest recorded."""
    problems = []
    for side, examples in (("train", train), ("heldout", heldout)):
        recorded = manifest["content_hashes"].get(side, [])
        actual = [content_hash(ex) for ex in examples]
        if actual != recorded:
            added = len(set(actual) - set(recorded))
            removed = len(set(recorded) - set(actual))
            problems.append(
                Problem(
                    f"the {side} examples differ from the split manifest ({len(actual)} now, "
                    f"{len(recorded)} recorded; {added} new, {removed} missing)",
                    where=side,
                    fix="re-run `tuneloop data split` rather than editing split files by hand",
                )
            )
    if problems:
        raise UserError.many(problems, title="the split does not match its manifest")


def load_split(out_dir: str | Path) -> tuple[list[Example], list[Example], dict]:
    """(train, heldout, manifest) from a folder `write_split` wrote, after checking that each
    file still has the hash the manifest recorded."""
    out = Path(out_dir)
    manifest = load_manifest(out / "manifest.json")
    problems = []
    for name in SPLIT_FILES:
        path = out / name
        recorded = manifest["files"].get(name, {}).get("sha256")
        actual = sha256_file(path) if path.is_file() else None
        if actual != recorded:
            what = "is missing" if actual is None else "was changed after the split was made"
            problems.append(
                Problem(
                    f"{name} {what} (its sha256 does not match manifest.json)",
                    where=str(path),
                    fix="re-run `tuneloop data split` rather than editing split files by hand",
                )
            )
    if problems:
        raise UserError.many(problems, title=f"the split in {out} does not match its manifest")
    train = read_examples(out / SPLIT_FILES[0], format="messages")
    heldout = read_examples(out / SPLIT_FILES[1], format="messages")
    verify_manifest(manifest, train, heldout)
    return train, heldout, manifest


def _label_counts(examples: list[Example]) -> dict[str, int]:
    counts = Counter(str(ex.label) for ex in examples if ex.label is not None)
    return dict(sorted(counts.items()))
