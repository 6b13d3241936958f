"""Metrics for free-text answers: contains, token F1, ROUGE-L, BLEU, chrF and distinct-n.

`contains` and `token_f1` are the reading-comprehension scores (SQuAD's F1, Rajpurkar et al.
2016): a short factual reference ("18 months", "E-417") found in a longer answer, and the word
overlap of the two.

ROUGE-L and sentence-level chrF are per item (so two runs can be compared item by item);
BLEU is a corpus score, as it is meant to be, and distinct-n measures the variety of the
answers as a whole: a tuned model that says the same thing to everyone (mode collapse) has a
low distinct-2.

    >>> rouge_l(["the cat sat on the mat"], ["the cat is on the mat"])
    [0.8333]
    >>> round(distinct_n(["I can help.", "I can help.", "Sure thing."], 1), 4)
    0.5455
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_WORD = re.compile(r"\w+|[^\w\s]")


def words(text: str) -> list[str]:
    """Casefolded word and punctuation tokens.

    >>> words("Hello, World!")
    ['hello', ',', 'world', '!']
    """
    return _WORD.findall(text.casefold())


def _bare(text: str) -> list[str]:
    """Casefolded words without punctuation or English articles: SQuAD's answer normal form."""
    return [w for w in _WORD.findall(text.casefold()) if w.isalnum() or "_" in w
            if w not in ("a", "an", "the")]  # fmt: skip


def contains(preds: Sequence[str], refs: Sequence[str]) -> list[float]:
    """1.0 where the reference's words appear, in order and adjacent, in the answer.

    >>> contains(["The warranty lasts 18 months.", "180 months", "Code E-417"],
    ...          ["18 months", "18 months", "e-417"])
    [1.0, 0.0, 1.0]
    """
    out = []
    for pred, ref in zip(preds, refs, strict=True):
        p, r = _bare(pred), _bare(ref)
        found = bool(r) and any(p[i : i + len(r)] == r for i in range(len(p) - len(r) + 1))
        out.append(float(found))
    return out


def token_f1(preds: Sequence[str], refs: Sequence[str]) -> list[float]:
    """Word-overlap F1 of answer and reference (SQuAD's F1), rounded to 4 places.

    >>> token_f1(["it lasts 18 months", "no idea"], ["18 months", "24 months"])
    [0.6667, 0.0]
    """
    from collections import Counter

    out = []
    for pred, ref in zip(preds, refs, strict=True):
        p, r = _bare(pred), _bare(ref)
        common = sum((Counter(p) & Counter(r)).values())
        if not p or not r or not common:
            out.append(float(p == r))
            continue
        precision, recall = common / len(p), common / len(r)
        out.append(round(2 * precision * recall / (precision + recall), 4))
    return out


def _lcs(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence, by dynamic programming over one row."""
    row = [0] * (len(b) + 1)
    for x in a:
        prev_diag = 0
        for j, y in enumerate(b, start=1):
            prev_diag, row[j] = row[j], prev_diag + 1 if x == y else max(row[j], row[j - 1])
    return row[-1]


def rouge_l(preds: Sequence[str], refs: Sequence[str]) -> list[float]:
    """ROUGE-L F1 per item: LCS-based precision and recall over word tokens, rounded to 4 places.

    F1 = 2PR / (P + R) with P = LCS / len(pred) and R = LCS / len(ref) (Lin, 2004). Two empty
    texts score 1, one empty text scores 0.

        >>> rouge_l(["a b c d", "", "x"], ["a c d e", "", "y"])
        [0.75, 1.0, 0.0]
    """
    if len(preds) != len(refs):
        raise ValueError(f"got {len(preds)} predictions but {len(refs)} references")
    scores = []
    for p, r in zip(preds, refs, strict=True):
        pw, rw = words(p), words(r)
        if not pw or not rw:
            scores.append(float(pw == rw))
            continue
        lcs = _lcs(pw, rw)
        precision, recall = lcs / len(pw), lcs / len(rw)
        f1 = 2 * precision * recall / (precision + recall) if lcs else 0.0
        scores.append(round(f1, 4))
    return scores


def bleu(preds: Sequence[str], refs: Sequence[str]) -> float:
    """Corpus BLEU (sacrebleu, 0-100) of the predictions against one reference each.

    >>> round(bleu(["the cat sat on the mat"], ["the cat sat on the mat"]), 1)
    100.0
    """
    import sacrebleu

    return float(sacrebleu.corpus_bleu(list(preds), [list(refs)]).score)


def chrf(preds: Sequence[str], refs: Sequence[str]) -> list[float]:
    """Sentence-level chrF (sacrebleu, rescaled to 0-1) per item: character n-gram F-score.

    >>> chrf(["hello world", "abc"], ["hello world", "xyz"])
    [1.0, 0.0]
    """
    import sacrebleu

    metric = sacrebleu.metrics.CHRF()
    return [
        round(metric.sentence_score(p, [r]).score / 100, 4)
        for p, r in zip(preds, refs, strict=True)
    ]


def distinct_n(texts: Sequence[str], n: int = 2) -> float:
    """Distinct n-grams over all n-grams of all answers (Li et al., 2016); 0 when there are none.

    >>> distinct_n(["a b a b", "a b"], 2)
    0.5
    """
    grams = [tuple(w[i : i + n]) for w in map(words, texts) for i in range(len(w) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0
