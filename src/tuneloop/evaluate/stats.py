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


def bootstrap_means(x: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """The means of `n_boot` resamples of `x` (items drawn with replacement), seeded: every
    interval and test here reads its quantiles from these."""
    rng = np.random.default_rng(seed)
    return x[rng.integers(0, len(x), size=(n_boot, len(x)))].mean(axis=1)


def mean_ci(
    values: Sequence[float],
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
    bootstrap: bool = False,
) -> Interval:
    """The mean with a confidence interval: Wilson's score interval for 0/1 scores (good even
    at 0% or 100%, where a bootstrap collapses to a point), else a percentile bootstrap.
    `bootstrap=True` asks for the bootstrap whatever the values (a mean of quantities that
    merely happen to be 0 or 1, such as reward margins, is no proportion).

        >>> ci = mean_ci([1.0] * 8 + [0.0] * 2)
        >>> ci.value, round(ci.low, 3), round(ci.high, 3), ci.method
        (0.8, 0.49, 0.943, 'wilson')
    """
    _check_nonempty(values)
    x = np.asarray(values, dtype=float)
    if is_binary(values) and not bootstrap:
        from scipy.stats import binomtest

        k = int(x.sum())
        ci = binomtest(k, len(x)).proportion_ci(confidence_level=confidence, method="wilson")
        return Interval(float(x.mean()), float(ci.low), float(ci.high), len(x), "wilson")
    means = bootstrap_means(x, n_boot, seed)
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
    means = bootstrap_means(d, n_boot, seed)
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


@dataclass
class PairedTest:
    """Is the paired change `b - a` above `bound`? The estimate, its interval, a one-sided test.

    Every gate condition is one of these, in the direction where larger is better:

    - superiority (the task): `bound` is the margin, e.g. +0.02, and a pass needs the whole
      interval above it;
    - non-inferiority (general skills, safety, over-refusal): `bound` is minus the tolerance,
      e.g. -0.05, and a pass needs the interval's lower end above it (Piaggio et al., "Reporting
      of noninferiority and equivalence randomized trials", JAMA 2012: the CI against the margin).

    The verdict follows the interval: `pass` when it lies above `bound`, `fail` when it lies
    below, `inconclusive` when it straddles `bound`: then `items_needed` says how many paired
    items in all would show the observed change clear of the bound at `power` (None when the
    observed change is not on the passing side, so no number of items can show it).

    `p_value` is the one-sided paired-bootstrap test of H0: true change <= bound, read from the
    same resamples as the interval, so the two agree: p < (1 - confidence) / 2 exactly when the
    lower end is above the bound.
    """

    estimate: float
    low: float
    high: float
    bound: float
    p_value: float
    n: int
    confidence: float
    items_needed: int | None
    test: str = "paired bootstrap, one-sided"

    @property
    def status(self) -> str:
        if self.low > self.bound:
            return "pass"
        if self.high < self.bound:
            return "fail"
        return "inconclusive"

    def to_dict(self) -> dict:
        return {**asdict(self), "status": self.status}


def paired_test(
    a: Sequence[float],
    b: Sequence[float],
    bound: float,
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
    power: float = 0.8,
) -> PairedTest:
    """The paired change mean(b) - mean(a) tested against `bound` (see `PairedTest`).

    >>> same = [1.0] * 30 + [0.0] * 70
    >>> paired_test(same, same, bound=-0.05).status      # an identical copy: no false alarm
    'pass'
    >>> worse = [0.0] * 30 + [0.0] * 70
    >>> t = paired_test(same, worse, bound=-0.05)         # lost 30 points of 100
    >>> t.status, round(t.estimate, 2), t.high < -0.05
    ('fail', -0.3, True)
    >>> small = [1.0] * 3 + [0.0] * 17
    >>> t = paired_test(small, [0.0] * 20, bound=-0.05)   # -15 points on 20 items: noise?
    >>> t.status, t.items_needed is None
    ('inconclusive', True)
    """
    if len(a) != len(b):
        raise ValueError(f"paired scores need equal lengths, got {len(a)} and {len(b)}")
    _check_nonempty(a)
    d = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    means = bootstrap_means(d, n_boot, seed)
    alpha = (1 - confidence) / 2
    low, high = (float(x) for x in np.quantile(means, [alpha, 1 - alpha]))
    # (k + 1) / (B + 1): the bootstrap p-value never claims 0 (Davison & Hinkley 1997, 4.4).
    p_value = float((np.sum(means <= bound + 1e-12) + 1) / (n_boot + 1))
    estimate = float(d.mean())
    needed = None
    if not (low > bound or high < bound):
        needed = items_for_power(
            estimate, float(d.std(ddof=1)) if len(d) > 1 else 0.0, bound, confidence, power
        )
    return PairedTest(estimate, low, high, bound, p_value, len(d), confidence, needed)


def items_for_power(
    change: float, sd: float, bound: float, confidence: float = 0.95, power: float = 0.8
) -> int | None:
    """Paired items needed to show a true mean change `change` above `bound` at `power`.

    The normal approximation for a one-sided test at level (1 - confidence) / 2 on paired
    differences with standard deviation `sd` (Chow, Shao & Wang, *Sample Size Calculations in
    Clinical Research*, 2008, sec. 3.1): n = ((z_(1-alpha) + z_power) * sd / (change - bound))^2.
    None when `change` is not above `bound`: no number of items shows it.

        >>> items_for_power(0.10, 0.45, 0.02)     # a 10-point gain, 2-point margin
        249
        >>> items_for_power(0.01, 0.45, 0.02) is None
        True
    """
    from scipy.stats import norm

    if change <= bound:
        return None
    z = norm.ppf(1 - (1 - confidence) / 2) + norm.ppf(power)
    return max(1, int(np.ceil((z * sd / (change - bound)) ** 2)))


def paired_sd_bound(p_a: float, p_b: float) -> float:
    """An upper bound on the standard deviation of paired 0/1 differences with success rates
    p_a and p_b, before any pairing is seen: sqrt(p_a(1-p_a) + p_b(1-p_b)), the variance of the
    difference when the two systems are independent; positively correlated systems (the usual
    case: the same items are hard for both) vary less, so a sample size from it is conservative.

        >>> round(paired_sd_bound(0.8, 0.9), 3)
        0.5
    """
    return float(np.sqrt(p_a * (1 - p_a) + p_b * (1 - p_b)))
