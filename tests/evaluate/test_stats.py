import numpy as np
import pytest

from tuneloop.evaluate.stats import is_binary, mcnemar_exact, mean_ci, paired_bootstrap


def test_wilson_interval_matches_the_formula():
    # Wilson score interval for 8/10 at 95%: centre (p + z²/2n) / (1 + z²/n), hand-computed.
    z, n, p = 1.959963984540054, 10, 0.8
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    ci = mean_ci([1.0] * 8 + [0.0] * 2)
    assert ci.method == "wilson"
    assert ci.low == pytest.approx(centre - half, abs=1e-9)
    assert ci.high == pytest.approx(centre + half, abs=1e-9)


def test_wilson_is_not_a_point_at_zero_or_one():
    ci = mean_ci([0.0] * 20)
    assert ci.value == 0.0 and ci.low == 0.0 and ci.high > 0.1


def test_bootstrap_interval_for_continuous_scores_contains_the_mean():
    rng = np.random.default_rng(1)
    values = rng.uniform(0, 1, size=200).tolist()
    ci = mean_ci(values, seed=0)
    assert ci.method == "bootstrap"
    assert ci.low < ci.value < ci.high
    assert ci.high - ci.low < 0.2  # about 4 standard errors of a uniform mean, n=200


def test_paired_bootstrap_sees_what_two_separate_intervals_miss():
    # B is right on every item A gets right, plus 8 more out of 100: the separate Wilson
    # intervals overlap, but the paired difference is clearly positive.
    a = [1.0] * 50 + [0.0] * 50
    b = [1.0] * 58 + [0.0] * 42
    ca, cb = mean_ci(a), mean_ci(b)
    assert ca.high > cb.low  # overlapping
    d = paired_bootstrap(a, b, seed=0)
    assert d.diff == pytest.approx(0.08)
    assert d.low > 0


def test_paired_bootstrap_of_identical_systems_is_zero():
    a = [1.0, 0.0, 1.0, 1.0]
    d = paired_bootstrap(a, a)
    assert (d.diff, d.low, d.high) == (0.0, 0.0, 0.0)


def test_mcnemar_exact_against_the_binomial_by_hand():
    # 1 item only A right, 6 items only B right: p = 2 * P(X <= 1), X ~ Bin(7, 1/2) = 16/128.
    a = [1] + [0] * 6 + [1] * 5
    b = [0] + [1] * 6 + [1] * 5
    m = mcnemar_exact(a, b)
    assert (m.a_only, m.b_only) == (1, 6)
    assert m.p_value == pytest.approx(16 / 128)


def test_mcnemar_without_discordant_items_is_p_one():
    assert mcnemar_exact([1, 0], [1, 0]).p_value == 1.0


def test_errors():
    with pytest.raises(ValueError, match="equal lengths"):
        paired_bootstrap([1.0], [1.0, 0.0])
    with pytest.raises(ValueError, match="0/1"):
        mcnemar_exact([0.5], [1.0])
    with pytest.raises(ValueError, match="empty"):
        mean_ci([])
    assert is_binary([0.0, 1.0]) and not is_binary([0.5])
