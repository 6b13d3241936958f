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


def test_paired_test_verdicts_follow_the_interval_and_agree_with_the_p_value():
    import numpy as np

    from tuneloop.evaluate.stats import paired_test

    rng = np.random.default_rng(0)
    for _ in range(40):
        n = int(rng.integers(20, 120))
        a = (rng.random(n) < rng.uniform(0.2, 0.8)).astype(float)
        b = np.where(rng.random(n) < 0.3, 1 - a, a)  # flip 30% of items
        t = paired_test(a, b, bound=-0.05, seed=1)
        assert t.low <= t.estimate <= t.high
        expected = "pass" if t.low > -0.05 else "fail" if t.high < -0.05 else "inconclusive"
        assert t.status == expected
        if t.status == "pass":  # the CI's lower end above the bound: the test rejects at 2.5%
            assert t.p_value <= 0.025 + 1e-9
        if t.status == "inconclusive":
            assert t.p_value > 0.02
            if t.estimate > -0.05:
                assert t.items_needed is not None


def test_the_items_needed_give_the_promised_power():
    """Simulated: paired 0/1 scores whose true change is +8 points against a margin of +2; at
    the computed n, about 80% of experiments pass the gate."""
    import numpy as np

    from tuneloop.evaluate.stats import items_for_power, paired_test

    # discordant items: b alone right 14%, a alone right 6%: change +8, sd of differences
    p_b, p_a = 0.14, 0.06
    sd = float(np.sqrt(p_b + p_a - (p_b - p_a) ** 2))
    n = items_for_power(p_b - p_a, sd, 0.02)
    assert 300 < n < 500
    rng = np.random.default_rng(0)
    passes = 0
    for _ in range(300):
        u = rng.random(n)
        a = (u < p_a).astype(float)
        b = ((u >= p_a) & (u < p_a + p_b)).astype(float)
        passes += (
            paired_test(a, b, 0.02, n_boot=400, seed=int(rng.integers(1 << 30))).status == "pass"
        )
    assert 0.72 < passes / 300 < 0.88
