"""Text metrics against hand-computed examples, and the Wilson interval against its defining equation."""

import math

import numpy as np
import pytest

from dglm_cli import metrics


def test_distinct_n_pools_ngrams_over_texts_by_hand():
    texts = ["the cat sat on the mat", "the cat ran"]
    # unigrams: 6 + 3 = 9, distinct {the, cat, sat, on, mat, ran} = 6
    assert metrics.distinct_n(texts, 1) == pytest.approx(6 / 9)
    # bigrams: 5 + 2 = 7, "the cat" twice -> 6 distinct
    assert metrics.distinct_n(texts, 2) == pytest.approx(6 / 7)
    # trigrams: 4 + 1 = 5, all distinct
    assert metrics.distinct_n(texts, 3) == 1.0


def test_distinct_n_never_joins_two_texts_and_is_undefined_without_ngrams():
    assert metrics.distinct_n(["a b", "b a"], 2) == 1.0  # "a b b a" joined would add the bigram (b, b)
    assert metrics.distinct_n(["a b", "a b"], 2) == 0.5
    assert metrics.distinct_n(["", "single"], 2) is None
    assert metrics.distinct_n([], 1) is None


def test_tokens_are_whitespace_separated_and_case_sensitive():
    assert metrics.words("  Hello,  world!\nhello ") == ["Hello,", "world!", "hello"]
    assert metrics.distinct_n(["Hello hello"], 1) == 1.0


def test_repetition_rate_by_hand():
    # bigrams ab, ba, ab, ba, ab: 2 distinct of 5
    assert metrics.repetition_rate("a b a b a b") == pytest.approx(0.6)
    # bigrams: to be, be or, or not, not to, to be -> 4 distinct of 5
    assert metrics.repetition_rate("to be or not to be") == pytest.approx(0.2)
    assert metrics.repetition_rate("to be or not to be", n=1) == pytest.approx(2 / 6)
    assert metrics.repetition_rate("no repeats at all here") == 0.0
    assert metrics.repetition_rate("one") is None
    assert metrics.repetition_rate("") is None


@pytest.mark.parametrize("successes,trials", [(8, 10), (1, 40), (37, 50), (500, 1000)])
def test_wilson_interval_solves_its_defining_quadratic(successes, trials):
    # the Wilson bounds are the p with (p_hat - p)^2 = z^2 p (1 - p) / n
    z, p_hat = 1.959963984540054, successes / trials
    a = 1 + z * z / trials
    roots = sorted(np.roots([a, -(2 * p_hat + z * z / trials), p_hat * p_hat]).real)
    assert metrics.wilson_interval(successes, trials) == pytest.approx(tuple(roots), abs=1e-9)


def test_wilson_interval_known_value_and_edges():
    low, high = metrics.wilson_interval(8, 10)
    assert (round(low, 4), round(high, 4)) == (0.4902, 0.9433)
    assert metrics.wilson_interval(0, 5) == (0.0, pytest.approx(0.4345, abs=1e-4))
    assert metrics.wilson_interval(5, 5)[1] == 1.0
    assert metrics.wilson_interval(0, 0) is None


def test_mean_and_median_skip_undefined_values():
    assert metrics.mean([1.0, None, 3.0]) == 2.0
    assert metrics.median([5.0, None, 1.0, 2.0]) == 2.0
    assert metrics.mean([None]) is None and metrics.median([]) is None
    assert math.isclose(metrics.mean([0.1] * 10), 0.1)
