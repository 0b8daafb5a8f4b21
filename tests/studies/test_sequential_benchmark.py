"""The betting baseline of benchmarks/studies/sequential_certify.py against the paper's own recursion."""

import math

import numpy as np
import pytest
from scipy import stats

from benchmarks.studies.sequential_certify import (
    betting_decisions,
    hits_from_lower,
    one_look_oracle,
    perfect_record_floor,
)
from certify import sequential
from certify.bounds import clopper_pearson_lower
from certify.radius import mixture_radius as certify_mixture_radius


def _paper_first_rejection(x, t, alpha):
    """vvoracek/RS_conf_seq thresholds.get_upper_threshold, sample by sample: log Q (the KT mixture,
    Q *= (A + 1/2) / (N + 1) per success, (N - A + 1/2) / (N + 1) per failure) minus the log
    likelihood at t, compared with log(2 / alpha), with A >= t N."""
    log_q, A = 0.0, 0
    for N, xi in enumerate(x):
        log_q += math.log(((A + 0.5) if xi else (N - A + 0.5)) / (N + 1))
        A += int(xi)
        log_p = A * math.log(t) + (N + 1 - A) * math.log(1 - t)
        if log_q - log_p > math.log(2 / alpha) and A >= t * (N + 1):
            return N + 1
    return None


@pytest.mark.parametrize("p, t", [(1.0, 0.9), (0.95, 0.9), (0.99, 0.97), (1.0, 0.99865)])
def test_betting_matches_the_papers_recursion(p, t):
    x = (np.random.default_rng(0).random(20_000) < p).astype(np.float64)
    decided, stop, at = betting_decisions(x, np.array([t]), 1e-3, 10**9)
    assert decided == [True] and at[0] == stop == _paper_first_rejection(x, t, 1e-3)


def test_betting_refutes_only_with_the_mirrored_bound_and_drops_out_of_reach_radii():
    x = (np.random.default_rng(1).random(5_000) < 0.5).astype(np.float64)
    decided, _, _ = betting_decisions(x, np.array([0.84, 0.5]), 1e-3, 100_000)
    assert decided == [False, None]  # p = 1/2: below 0.84 and above 0.16; t = 1/2 is never decided
    ones = np.ones(200)
    decided, stop, _ = betting_decisions(ones, np.array([0.999999]), 1e-3, 100_000)
    assert decided == [None] and stop == 1  # 1 - t = 1e-6: out of reach of 100,000 samples


def test_betting_false_decision_rate_at_a_threshold():
    rng, alpha, runs, t = np.random.default_rng(2), 0.05, 300, 0.9
    wrong = sum(
        d is not None
        for d in (
            betting_decisions((rng.random(3000) < t).astype(float), np.array([t]), alpha, 3000)[0][0]
            for _ in range(runs)
        )
    )
    assert stats.binomtest(wrong, runs, alpha, alternative="greater").pvalue > 1e-3


def test_perfect_record_floor_is_where_clopper_pearson_first_certifies_a_perfect_record():
    t, alpha = stats.norm.cdf(3.0), 1e-3
    m = math.ceil(perfect_record_floor(t, alpha))
    assert 5_100 < m < 5_130  # ln(1000) / -ln Phi(3) = 5,116.9
    assert stats.beta.ppf(alpha, m, 1) > t >= stats.beta.ppf(alpha, m - 1, 1)  # alpha^(1/m)
    assert perfect_record_floor(1.0, alpha) == math.inf
    # the library's sequential rule spends alpha / K over K looks and two tails: never below the floor
    looks = sequential.look_schedule(100_000)
    first = sequential.max_misses_to_certify(looks, sequential.look_alphas(len(looks), alpha), np.array([t]))
    assert looks[int(np.argmax(first[:, 0] >= 0))] >= m


@pytest.mark.parametrize("hits", [0, 1, 50_000, 99_873, 99_999, 100_000])
def test_hits_are_recovered_from_the_logged_lower_bound(hits):
    n, alpha = 100_000, 1e-3
    lower = float(stats.beta.ppf(alpha, hits, n - hits + 1)) if hits else 0.0
    assert hits_from_lower(lower, n, alpha) == hits


def test_one_look_oracle_on_a_perfect_record_is_the_floor_and_undecidable_thresholds_take_n():
    t, alpha = stats.norm.cdf(3.0), 1e-3
    assert one_look_oracle(1.0, np.array([stats.norm.cdf(1.0), t]), alpha, 100_000) == math.ceil(
        perfect_record_floor(t, alpha)
    )
    assert one_look_oracle(0.999, np.array([0.999]), alpha, 100_000) == 100_000  # p on the threshold
    m = one_look_oracle(0.5, np.array([0.9]), alpha, 100_000)  # refuting: max(U, 1 - L) < 0.9
    h = round(0.5 * m)
    assert stats.beta.ppf(1 - alpha, h + 1, m - h) < 0.9 and m < 100


# ------------------------------------------------------------------------------ true mixtures
@pytest.mark.parametrize("p", [0.999, 0.99, 0.95, 0.8, 0.6])
def test_mixture_oracle_of_one_component_is_the_gaussian_oracle(p):
    from benchmarks.studies.sequential_certify import mixture_one_look_oracle

    sigma, radii, alpha, n = 0.25, (0.1, 0.25, 0.5), 1e-3, 100_000
    needs = stats.norm.cdf(np.asarray(radii) / sigma)
    gaussian = one_look_oracle(p, needs, alpha, n)
    assert mixture_one_look_oracle([p], (1.0,), (sigma,), radii, alpha, n) == gaussian
    assert mixture_one_look_oracle([p], (1.0,), (sigma,), radii, alpha, n, decidable_only=True) <= gaussian


def test_mixture_oracle_splits_alpha_over_components_and_the_decidable_only_oracle_skips_hopeless_radii():
    from benchmarks.studies.sequential_certify import halfspace_mixture_p, mixture_one_look_oracle

    weights, sigmas, alpha, n = (0.5, 0.5), (0.25, 0.5), 1e-3, 100_000
    p = halfspace_mixture_p(0.6, sigmas)  # exact certificate 0.6
    both = mixture_one_look_oracle(p, weights, sigmas, (0.25,), alpha, n)
    # one look at m: each component's one-sided bound at alpha / 2 on floor(m / 2) samples certifies 0.25
    m_k = both // 2
    lower = [clopper_pearson_lower(round(pk * m_k), m_k, alpha / 2) for pk in p]
    assert certify_mixture_radius(lower, weights, sigmas) > 0.25
    assert mixture_one_look_oracle(p, weights, sigmas, (0.25,), 2 * alpha, n) < both  # alpha / K costs samples
    # 0.6 + 1e-4 cannot be refuted at n: the Gaussian-style oracle takes n, the decidable-only one skips it
    assert mixture_one_look_oracle(p, weights, sigmas, (0.25, 0.6001), alpha, n) == n
    assert mixture_one_look_oracle(p, weights, sigmas, (0.25, 0.6001), alpha, n, decidable_only=True) == both


def test_mixture_study_smoke_run_writes_its_tables(tmp_path):
    import csv

    from benchmarks.studies.sequential_certify import MIXTURES, main

    assert main(["--mixture", "--out", str(tmp_path / "logs"), "--max-inputs", "3", "--n", "3000"]) == 0
    with open(tmp_path / "sequential_certify_mixture.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["mixture"] for r in rows] == list(MIXTURES)
    for r in rows:
        assert r["inputs"] == "3" and 0 < float(r["seq_over_oracle"]) and 0 < float(r["seq_over_decidable_oracle"])
        assert 100 < float(r["seq_samples_mean"]) <= 3100
    with open(tmp_path / "sequential_certify_mixture_inputs.csv") as f:
        assert len(list(csv.DictReader(f))) == 3 * len(MIXTURES)
    assert "decidable-only" in (tmp_path / "sequential_certify_mixture.md").read_text()
