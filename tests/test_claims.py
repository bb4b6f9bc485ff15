"""Claims as data (common.claims): the verdict follows the numbers, over seeds a gap must clear its SE."""

import math

import pytest

from common.claims import Claim, SeedStats, over_seeds, summary_lines


def test_seed_stats_mean_and_standard_error():
    stats = SeedStats((1.0, 2.0, 3.0, 4.0))
    assert stats.mean == 2.5
    # sample sd of 1..4 is sqrt(5/3); SE = sd / sqrt(4)
    assert math.isclose(stats.se, math.sqrt(5 / 3) / 2)


def test_over_seeds_handles_floats_and_dicts():
    assert over_seeds(lambda s: float(s), [0, 1, 2]).values == (0.0, 1.0, 2.0)
    both = over_seeds(lambda s: {"a": s, "b": -s}, [1, 3])
    assert both["a"].mean == 2.0 and both["b"].mean == -2.0


@pytest.mark.parametrize("measured, op, reference, tol, expected", [
    (1.0, "<", 2.0, 0.0, True), (3.0, "<", 2.0, 0.0, False), (2.5, "<", 2.0, 1.0, True),
    (3.0, ">", 2.0, 0.0, True), (3.0, ">", 2.0, 1.5, False),
    (1.05, "within", 1.0, 0.1, True), (1.2, "within", 1.0, 0.1, False),
    (1.05, "within_rel", 1.0, 0.1, True), (-1.2, "within_rel", -1.0, 0.1, False),
    (1.9, "ratio<", 1.0, 2.0, True), (2.1, "ratio<", 1.0, 2.0, False),
    (float("nan"), "<", 1.0, 0.0, False),
])
def test_verdicts_follow_the_numbers(measured, op, reference, tol, expected):
    assert Claim("k", "s", measured, op, reference, tol).holds is expected


def test_a_gap_between_seed_means_must_clear_two_standard_errors():
    a = SeedStats((1.0, 1.2, 0.8))       # mean 1.0, SE 0.115
    close = SeedStats((1.1, 1.3, 0.9))   # mean 1.1: gap 0.1 < 2 SE of the difference (0.33)
    far = SeedStats((2.0, 2.2, 1.8))     # mean 2.0: gap 1.0 > 0.33
    assert not Claim("k", "s", a, "<", close).holds
    assert Claim("k", "s", a, "<", far).holds


def test_unknown_comparison_is_refused():
    with pytest.raises(ValueError):
        Claim("k", "s", 1.0, "<<", 2.0)


def test_quick_claims_are_marked_and_summarised():
    claims = [Claim("a", "first", 1.0, "<", 2.0, meaningful=False), Claim("b", "second", 3.0, "<", 2.0)]
    lines = summary_lines(claims)
    assert lines[0].startswith("Claims: 1 of 2 hold")
    assert "not meaningful" in lines[1] and lines[2].endswith("FAILS")
    record = claims[1].to_json()
    assert record["holds"] is False and record["meaningful"] is True and record["measured"] == 3.0


def test_a_tolerance_shifts_the_reference_and_is_shown_with_its_sign():
    margin = Claim("k", "s", 3.0, ">", 2.0, 0.5)   # 3 > 2 + 0.5
    slack = Claim("k", "s", 1.8, ">", 2.0, -0.5)   # 1.8 > 2 - 0.5
    assert margin.holds and slack.holds and not Claim("k", "s", 2.4, ">", 2.0, 0.5).holds
    assert "> 2 + 0.5" in margin.line() and "> 2 - 0.5" in slack.line()
