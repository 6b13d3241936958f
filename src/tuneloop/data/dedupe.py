"""Near-duplicate search with MinHash and locality-sensitive hashing (the `datasketch` library).

Two examples are near-duplicates when the Jaccard similarity of the character 5-grams of their
prompts (the user-visible input, system prompt left out) reaches a threshold, 0.8 by default.
Similarities of banking77 prompts:

    "How do I top up my card?"  ~  "How do I top-up my card??"                      1.00
    "Is there a reason my new card hasn't arrived?"  ~  "... hasn't arrived yet?"   0.91
    "How can I find your exchange rates?"  ~  "Where can I find your exchange rates?"  0.77

Text is compared lower-cased, with punctuation as spaces. Every prompt gets a 64-permutation
MinHash signature; an LSH index over the signatures proposes candidate pairs in about constant
time per example, and each candidate is confirmed on its exact Jaccard similarity. The search
therefore grows about linearly with the data instead of comparing every pair. It never reports
a pair below the threshold, and can miss one just above it (LSH is probabilistic: at 0.8, a
pair of similarity 0.85 is proposed with probability 0.92, one of 0.9 with 0.99).

    >>> near = find_near_duplicates(train, heldout, threshold=0.8)   # doctest: +SKIP
    >>> near.within[0]      # (example, its earlier near-twin, similarity)  # doctest: +SKIP
    (89, 45, 0.89)          # indices into train
    >>> near.across[0]      # (held-out example, its train near-twin, similarity)  # doctest: +SKIP
    (31, 63, 0.8)
"""

from __future__ import annotations

import gc
import re
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from tuneloop.data.findings import DEFAULT_NEAR_THRESHOLD
from tuneloop.data.records import Example, message_text

NUM_PERM = 64  # enough to find candidates; similarity is then computed exactly
SHINGLE = 5  # characters
MAX_CHARS = 4000  # long prompts are compared on their first characters: cost stays per example
_NOT_WORD = re.compile(r"[\W_]+")


@dataclass
class NearDuplicates:
    """Index pairs: `within` train (later example, earliest near-twin before it), and
    `across` (held-out example, earliest near-twin in train); each with its similarity."""

    within: list[tuple[int, int, float]] = field(default_factory=list)
    across: list[tuple[int, int, float]] = field(default_factory=list)


def prompt_text(example: Example) -> str:
    """What near-duplicate search compares: the non-system turns before the answer (tool
    calls and results included)."""
    return "\n".join(message_text(m) for m in example.prompt_messages if m["role"] != "system")


def normalize(text: str) -> str:
    """Lower-cased, punctuation as spaces, whitespace collapsed, at most `MAX_CHARS`.

    >>> normalize("How do I top-up my card??")
    'how do i top up my card'
    """
    flat = " ".join(_NOT_WORD.sub(" ", unicodedata.normalize("NFC", text).lower()).split())
    return flat[:MAX_CHARS]


def shingles(text: str):
    """32-bit hashes of the character 5-grams of `normalize(text)` (a numpy array; a text
    shorter than 5 characters is one shingle). Computed with numpy as a polynomial hash of the
    code points: deterministic across runs, unlike Python's `hash`, and faster than hashing
    each 5-gram as bytes one by one.

    >>> len(shingles("Top-up!")), len(set(shingles("abcabcabc")))   # "top up": 2 five-grams
    (2, 3)
    """
    import numpy as np

    codes = np.frombuffer(normalize(text).encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    n = max(len(codes) - SHINGLE + 1, 1)
    h = np.zeros(n, dtype=np.uint64)
    for k in range(min(SHINGLE, len(codes))):
        h = h * np.uint64(1_000_003) + codes[k : k + n]
    return ((h ^ (h >> np.uint64(32))) & np.uint64(0xFFFFFFFF)).astype(np.uint32)


def signatures(texts: list[str]) -> list:
    """One MinHash per text (`datasketch.MinHash`, computed in bulk over the shingle hashes)."""
    from datasketch import MinHash

    return MinHash.bulk((shingles(t).tolist() for t in texts), num_perm=NUM_PERM, hashfunc=int)


def _index(threshold: float):
    """The LSH index. Its bands are chosen to favour recall (weights 0.2 on false positives,
    0.8 on false negatives): at 0.8, 8 bands of 8 rows propose a pair of similarity 0.85 with
    probability 0.92 and one of 0.9 with probability 0.99 (0.60 and 0.85 with datasketch's
    equal weights), and a pair at 0.5 with probability 0.03, which the exact similarity check
    then rejects."""
    from datasketch import MinHashLSH

    return MinHashLSH(threshold=threshold, num_perm=NUM_PERM, weights=(0.2, 0.8))


@contextmanager
def _no_gc_pauses() -> Iterator[None]:
    """Pause the cyclic garbage collector: the search allocates hundreds of thousands of
    small objects and none of them form cycles, but each collection would rescan them all,
    which makes the search grow faster than the data."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class _Index:
    """An LSH index over the signatures added so far. Candidates are confirmed on the exact
    Jaccard similarity of the shingle sets (kept as sorted arrays), so an estimate's noise
    neither adds nor drops a pair; the MinHash objects themselves are not kept."""

    def __init__(self, threshold: float):
        self.threshold, self.lsh = threshold, _index(threshold)
        self.sets: list = []

    def add(self, key: int, shingle_set, sig) -> None:
        self.sets.append(shingle_set)
        self.lsh.insert(key, sig, check_duplication=False)

    def candidates(self, sig) -> list[int]:
        return sorted(self.lsh.query(sig))

    def similarity(self, shingle_set, key: int) -> float:
        """The Jaccard similarity |A & B| / |A | B| of two shingle sets."""
        import numpy as np

        other = self.sets[key]
        common = np.intersect1d(shingle_set, other, assume_unique=True).size
        return common / (shingle_set.size + other.size - common)


def _signature_stream(texts: list[str]):
    """(sorted unique shingle hashes, MinHash) for each text, in order."""
    import numpy as np
    from datasketch import MinHash

    template = MinHash(num_perm=NUM_PERM, hashfunc=int)
    for text in texts:
        shingle_set = np.unique(shingles(text))
        sig = template.copy()
        sig.update_batch(shingle_set.tolist())
        yield shingle_set, sig


@_no_gc_pauses()
def find_near_duplicates(
    train: list[Example],
    heldout: list[Example] | None = None,
    threshold: float = DEFAULT_NEAR_THRESHOLD,
) -> NearDuplicates:
    """Near-duplicate pairs inside `train` and between `heldout` and `train`.

    Each example is reported once, against its earliest near-twin (the one a reader would keep).
    Pairs whose prompts are identical after normalisation are left out: the exact-duplicate and
    leakage checks report those."""
    _check_threshold(threshold)
    heldout = heldout or []
    texts = [prompt_text(ex) for ex in train]
    keys = [_exact_key(t) for t in texts]
    index = _Index(threshold)
    out = NearDuplicates()
    for i, (shingle_set, sig) in enumerate(_signature_stream(texts)):
        twin = _earliest(index, shingle_set, sig, keys, keys[i])
        if twin is not None:
            out.within.append((i, *twin))
        index.add(i, shingle_set, sig)
    held_texts = [prompt_text(ex) for ex in heldout]
    for h, (shingle_set, sig) in enumerate(_signature_stream(held_texts)):
        twin = _earliest(index, shingle_set, sig, keys, _exact_key(held_texts[h]))
        if twin is not None:
            out.across.append((h, *twin))
    return out


@_no_gc_pauses()
def near_duplicate_groups(
    examples: list[Example], threshold: float = DEFAULT_NEAR_THRESHOLD
) -> list[tuple[int, int]]:
    """Edges (i, j) joining every example to each earlier near-duplicate that is not yet in
    its group: union them and near-twins form connected groups (for a split that keeps
    near-twins on one side). Candidates already joined are not compared again, so a large
    cluster costs about one comparison per member."""
    _check_threshold(threshold)
    texts = [prompt_text(ex) for ex in examples]
    index = _Index(threshold)
    sets = DisjointSets(len(examples))
    edges = []
    for i, (shingle_set, sig) in enumerate(_signature_stream(texts)):
        for j in index.candidates(sig):
            if sets.find(i) != sets.find(j) and index.similarity(shingle_set, j) >= threshold:
                sets.union(i, j)
                edges.append((i, j))
        index.add(i, shingle_set, sig)
    return edges


class DisjointSets:
    """Union-find over 0..n-1 with path halving: which items have been joined into a group."""

    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        parent = self.parent
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        self.parent[self.find(i)] = self.find(j)

    def groups(self) -> list[list[int]]:
        """Members of each group, groups in order of their first member."""
        out: dict[int, list[int]] = {}
        for i in range(len(self.parent)):
            out.setdefault(self.find(i), []).append(i)
        return list(out.values())


def _earliest(
    index: _Index, shingle_set, sig, keys: list[str], key: str
) -> tuple[int, float] | None:
    for j in index.candidates(sig):
        if keys[j] == key:
            continue  # the same prompt exactly: not a *near* duplicate
        similarity = index.similarity(shingle_set, j)
        if similarity >= index.threshold:
            return j, round(similarity, 2)
    return None


def _exact_key(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).split())


def _check_threshold(threshold: float) -> None:
    if not 0 < threshold <= 1:
        from tuneloop.errors import UserError

        raise UserError(
            f"near-duplicate threshold must be in (0, 1], got {threshold}",
            "--near-threshold",
            f"use a Jaccard similarity such as {DEFAULT_NEAR_THRESHOLD}",
        )
