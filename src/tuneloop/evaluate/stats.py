"""Statistics that decide: confidence intervals of a score, and of the difference of two
systems scored on the same items.

Scores are per item, so two systems evaluated on the same held-out items are *paired*: the
honest uncertainty of their difference comes from resampling items, not from two separate
intervals (which overlap far more often than the difference is in doubt).

    >>> a = [1.0] * 60 + [0.0] * 40          # base: 60% right
    >>> b = [1.0] * 60 + [1.0] * 25 + [0.0] * 15  # tuned: the same 60, and 25 more
    >>> d = paired_bootstrap(a, b, seed=0)
    >>> round(d.diff, 2), d.low > 0
    (0.25, True)
    >>> mcnemar_exact(a, b).p_value < 1e-6
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class Interval:
    """An estimate and its confidence interval, e.g. accuracy 0.81 [0.72, 0.88]."""

    value: float
    low: float
    high: float
    n: int
    method: str

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.value:.1%} [{self.low:.1%}, {self.high:.1%}]"


@dataclass
class PairedDiff:
    """mean(b) - mean(a) over paired items, with a paired bootstrap interval."""

    mean_a: float
    mean_b: float
    diff: float
    low: float
    high: float
    n: int
    confidence: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class McNemar:
    """Exact McNemar test on paired binary scores.

    `a_only`: items a got right and b wrong; `b_only`: the reverse. Under the null hypothesis
    (both systems equally good) each discordant item is a fair coin, so the p-value is the
    two-sided binomial test of `b_only` successes in `a_only + b_only` trials with p = 1/2.
    """

    a_only: int
    b_only: int
    p_value: float

    def to_dict(self) -> dict:
        return asdict(self)


def is_binary(values: Sequence[float]) -> bool:
    return all(v in (0.0, 1.0) for v in values)


def _check_nonempty(values: Sequence[float]) -> None:
    if len(values) == 0:
        raise ValueError("no scores to summarise; the evaluation set is empty")


def mean_ci(
    values: Sequence[float], confidence: float = 0.95, n_boot: int = 2000, seed: int = 0
) -> Interval:
    """The mean with a confidence interval: Wilson's score interval for 0/1 scores (good even
    at 0% or 100%, where a bootstrap collapses to a point), else a percentile bootstrap.

        >>> ci = mean_ci([1.0] * 8 + [0.0] * 2)
        >>> ci.value, round(ci.low, 3), round(ci.high, 3), ci.method
        (0.8, 0.49, 0.943, 'wilson')
    """
    _check_nonempty(values)
    x = np.asarray(values, dtype=float)
    if is_binary(values):
        from scipy.stats import binomtest

        k = int(x.sum())
        ci = binomtest(k, len(x)).proportion_ci(confidence_level=confidence, method="wilson")
        return Interval(float(x.mean()), float(ci.low), float(ci.high), len(x), "wilson")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(n_boot, len(x)))].mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return Interval(float(x.mean()), float(low), float(high), len(x), "bootstrap")


def paired_bootstrap(
    a: Sequence[float],
    b: Sequence[float],
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> PairedDiff:
    """Percentile bootstrap interval of mean(b) - mean(a), resampling items (pairs) together.

    Each resample draws n item indices with replacement and takes the mean of the per-item
    differences b_i - a_i over them; the interval is the (alpha/2, 1 - alpha/2) quantiles.
    """
    if len(a) != len(b):
        raise ValueError(f"paired scores need equal lengths, got {len(a)} and {len(b)}")
    _check_nonempty(a)
    xa, xb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    d = xb - xa
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return PairedDiff(
        float(xa.mean()),
        float(xb.mean()),
        float(d.mean()),
        float(low),
        float(high),
        len(d),
        confidence,
    )


def mcnemar_exact(a: Sequence[float], b: Sequence[float]) -> McNemar:
    """Exact (binomial) McNemar test of two systems' 0/1 scores on the same items.

    >>> mcnemar_exact([1, 1, 0, 0, 1], [1, 0, 1, 1, 1])
    McNemar(a_only=1, b_only=2, p_value=1.0)
    """
    if len(a) != len(b):
        raise ValueError(f"paired scores need equal lengths, got {len(a)} and {len(b)}")
    if not (is_binary(a) and is_binary(b)):
        raise ValueError("McNemar's test needs 0/1 scores; use paired_bootstrap for others")
    from scipy.stats import binomtest

    a_only = sum(1 for x, y in zip(a, b, strict=True) if x == 1 and y == 0)
    b_only = sum(1 for x, y in zip(a, b, strict=True) if x == 0 and y == 1)
    n = a_only + b_only
    p = 1.0 if n == 0 else float(binomtest(b_only, n, 0.5).pvalue)
    return McNemar(a_only, b_only, p)
