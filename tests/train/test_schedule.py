import pytest

from tuneloop.train.schedule import lr_factor


@pytest.mark.parametrize("kind", ["cosine", "linear", "constant"])
def test_warmup_rises_to_peak(kind):
    assert [lr_factor(s, 100, 4, kind) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]


def test_decays():
    assert lr_factor(4, 100, 4, "cosine") == pytest.approx(1.0)
    assert lr_factor(52, 100, 4, "cosine") == pytest.approx(0.5)
    assert lr_factor(100, 100, 4, "cosine") == pytest.approx(0.0)
    assert lr_factor(52, 100, 4, "linear") == pytest.approx(0.5)
    assert lr_factor(99, 100, 4, "constant") == 1.0
