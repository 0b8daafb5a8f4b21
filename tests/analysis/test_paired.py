"""Paired comparisons of certification logs: intervals, exact tests, verdicts."""

import numpy as np
import pytest
from scipy import stats

import certify
from benchmarks.analysis.paired import claims_table, mcnemar_exact, paired_difference


def _log(idx, correct, radius, proxy=None, path="x.tsv"):
    idx = np.asarray(idx, dtype=np.float64)
    cols = {
        "idx": idx,
        "label": np.zeros_like(idx),
        "predict": np.zeros_like(idx),
        "radius": np.asarray(radius, dtype=np.float64),
        "correct": np.asarray(correct, dtype=np.float64),
    }
    cols["proxy_radius"] = cols["radius"] if proxy is None else np.asarray(proxy, dtype=np.float64)
    return certify.Log(cols, path)


def test_identical_logs_give_zero_difference_and_no_verdict():
    a = _log(range(30), np.ones(30), np.linspace(0, 1, 30))
    d = paired_difference(a, a, radius=0.5)
    assert (d.difference, d.low, d.high, d.p_value) == (0.0, 0.0, 0.0, 1.0)
    assert d.verdict == "not significant at this size"


def test_dominating_log_is_reproduced_with_exact_mcnemar():
    a = _log(range(50), np.ones(50), np.ones(50))
    b = _log(range(50), np.ones(50), np.zeros(50))
    d = paired_difference(a, b, radius=0.5)
    assert d.difference == 1.0 and d.low == 1.0 and d.verdict == "reproduced"
    assert d.p_value == pytest.approx(2 * 0.5**50, rel=1e-9)
    r = paired_difference(b, a, radius=0.5)
    assert r.verdict == "not reproduced" and r.difference == -1.0


def test_mcnemar_matches_hand_computed_binomial():
    sa = np.array([1] * 8 + [0] * 1 + [1] * 5 + [0] * 6)  # 8 a-only, 1 b-only, 5 both, 6 neither
    sb = np.array([0] * 8 + [1] * 1 + [1] * 5 + [0] * 6)
    assert mcnemar_exact(sa, sb) == pytest.approx(2 * (1 + 9) / 2**9, rel=1e-12)


def test_alignment_uses_idx_not_row_order():
    a = _log([3, 1, 2], [1, 1, 1], [1.0, 0.0, 0.0])
    b = _log([1, 2, 3, 4], [1, 1, 1, 1], [0.0, 0.0, 0.0, 5.0])  # idx 4 only in b: ignored
    d = paired_difference(a, b)  # ACR over idx 1..3: a = 1/3, b = 0
    assert d.n_inputs == 3 and d.a == pytest.approx(1 / 3) and d.b == 0.0


def test_bad_logs_and_arguments_are_refused():
    a = _log([1, 1], [1, 1], [0.1, 0.2], path="dup.tsv")
    b = _log([1, 2], [1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="dup.tsv"):
        paired_difference(a, b)
    with pytest.raises(ValueError, match="share no idx"):
        paired_difference(b, _log([7], [1], [0.1]))
    with pytest.raises(ValueError, match="radius"):
        paired_difference(b, b, radius=float("nan"))


def test_bootstrap_interval_covers_the_true_difference_about_95_percent():
    rng = np.random.default_rng(1)
    m, reps, true = 80, 200, 0.1
    hits = 0
    for k in range(reps):
        # paired ACR-type statistics: a = b + noise with mean `true`
        base = rng.uniform(0, 1, m)
        a = _log(range(m), np.ones(m), base + true + rng.normal(0, 0.3, m))
        b = _log(range(m), np.ones(m), base)
        d = paired_difference(a, b, resamples=1000, seed=k)
        hits += d.low <= true <= d.high
    # percentile bootstrap at m = 80 is slightly liberal; accept 0.95 +- binomial slack
    assert stats.binomtest(hits, reps, 0.95).pvalue > 1e-3 or hits / reps > 0.95


def test_claims_table_has_one_row_per_claim():
    a = _log(range(10), np.ones(10), np.ones(10))
    b = _log(range(10), np.ones(10), np.zeros(10))
    table = claims_table([("A > B", paired_difference(a, b, radius=0.5))])
    assert table.count("\n") == 3 and "reproduced" in table and "+1.000 [+1.000, +1.000]" in table
