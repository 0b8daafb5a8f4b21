"""False-certification and PREDICT error rates over many seeded repetitions, against exact truth.

Each test repeats CERTIFY/PREDICT with independent seeds in a setting where the true probability is
known exactly and asserts, with a one-sided exact binomial test at significance 1e-3, that the
observed failure count is consistent with a failure rate <= alpha.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import quad
from scipy.stats import binomtest, norm

from certify import ABSTAIN, IsotropicGaussian, MixtureOfGaussians, Smooth

SIGNIFICANCE = 1e-3


from tests.classifiers import HalfSpace  # noqa: E402


def assert_rate_at_most(failures: int, reps: int, alpha: float) -> None:
    p = binomtest(failures, reps, alpha, alternative="greater").pvalue
    assert p >= SIGNIFICANCE, f"{failures}/{reps} failures: rate > {alpha} (binomial p = {p:.2g})"


def test_binomial_harness_has_power():
    """The harness rejects an unsound rate: 25 failures in 150 at alpha = 0.05 (expected 7.5)."""
    with pytest.raises(AssertionError):
        assert_rate_at_most(25, 150, 0.05)
    assert_rate_at_most(10, 150, 0.05)


def test_hard_isotropic_false_certification_rate():
    sigma, pA, alpha, reps = 0.5, 0.75, 0.1, 400
    b = sigma * norm.ppf(pA)  # x = 0, w = e1: P(class 0) = Phi(b / sigma) = pA exactly
    smooth = Smooth(HalfSpace([1.0, 0.0], b), IsotropicGaussian(sigma), 2)
    x = torch.zeros(2, dtype=torch.float64)
    false, certified = 0, 0
    for rep in range(reps):
        cert = smooth.certify(x, 10, 100, alpha, generator=torch.Generator().manual_seed(rep))
        if cert.prediction == 1:
            false += 1  # a certificate for the wrong class
        elif cert.prediction == 0:
            certified += 1
            # radius > truth  <=>  p_lower > pA
            false += cert.l2_radius > b or cert.p_lower > pA
    assert certified >= 0.7 * reps  # the setting is non-trivial
    assert_rate_at_most(false, reps, alpha)


@pytest.mark.parametrize("soft_bound", ["bernstein", "hoeffding"])
def test_soft_false_certification_rate(soft_bound):
    """Genuinely soft scores: E[softmax_0] = E[sigmoid(-2 z)], z ~ N(w.x - b, sigma^2) by quadrature."""
    sigma, b, scale, alpha, reps = 0.5, 0.6, 2.0, 0.1, 200
    f = lambda z: norm.pdf(z) / (1.0 + math.exp(2 * scale * (sigma * z - b)))
    pA = quad(f, -12, 12, epsabs=1e-13)[0]
    assert 0.75 < pA < 0.95
    smooth = Smooth(
        HalfSpace([1.0], b, scale=scale), IsotropicGaussian(sigma), 2, smoothing="soft", soft_bound=soft_bound
    )
    x = torch.zeros(1, dtype=torch.float64)
    false = 0
    lowers = []
    for rep in range(reps):
        cert = smooth.certify(x, 10, 200, alpha, generator=torch.Generator().manual_seed(rep))
        lowers.append(cert.p_lower)
        false += cert.prediction == 1 or cert.p_lower > pA
        if cert.prediction == 0:
            assert cert.l2_radius == pytest.approx(sigma * norm.ppf(cert.p_lower))
    assert np.mean(lowers) > 0.5  # bounds are informative, not trivially 0
    assert_rate_at_most(false, reps, alpha)


def test_mixture_false_certification_rate():
    """Per-component lower bounds vs exact per-component probabilities, and radius vs distance."""
    sigmas, weights = [0.25, 0.5, 1.0], [0.5, 0.3, 0.2]
    t, alpha, reps = 0.3, 0.1, 300
    exact = [norm.cdf(t / s) for s in sigmas]
    smooth = Smooth(HalfSpace([1.0, 0.0], t), MixtureOfGaussians(sigmas, weights), 2)
    x = torch.zeros(2, dtype=torch.float64)
    comp_false, radius_false, certified = 0, 0, 0
    for rep in range(reps):
        cert = smooth.certify(x, 10, 300, alpha, generator=torch.Generator().manual_seed(rep))
        lowers = cert.component_p_lowers
        comp_false += any(pl > p for pl, p in zip(lowers, exact))
        assert cert.p_lower == pytest.approx(sum(w * pl for w, pl in zip(weights, lowers)))
        radius_false += cert.prediction == 1 or cert.l2_radius >= t
        certified += cert.prediction == 0
    assert certified >= 0.5 * reps
    assert_rate_at_most(comp_false, reps, alpha)
    assert_rate_at_most(radius_false, reps, alpha)


# ---------------------------------------------------------------------------------- PREDICT


def _predict_many(smooth, x, n, alpha, reps):
    return np.array([smooth.predict(x, n, alpha, generator=torch.Generator().manual_seed(rep)) for rep in range(reps)])


def test_predict_far_from_boundary_returns_true_class():
    sigma, alpha, reps = 0.5, 0.05, 200
    smooth = Smooth(HalfSpace([1.0, 0.0], sigma * norm.ppf(0.95)), IsotropicGaussian(sigma), 2)
    preds = _predict_many(smooth, torch.zeros(2, dtype=torch.float64), 100, alpha, reps)
    assert_rate_at_most(int(np.sum(preds == 1)), reps, alpha)
    assert np.mean(preds == 0) >= 0.95


def test_predict_wrong_class_rate_close_to_boundary():
    """True class 1 with probability 0.6: class 0 is returned with probability <= alpha."""
    sigma, alpha, reps = 0.5, 0.1, 300
    smooth = Smooth(HalfSpace([1.0], -sigma * norm.ppf(0.6)), IsotropicGaussian(sigma), 2)
    preds = _predict_many(smooth, torch.zeros(1, dtype=torch.float64), 100, alpha, reps)
    assert_rate_at_most(int(np.sum(preds == 0)), reps, alpha)
    assert np.any(preds == 1)


@pytest.mark.parametrize("smoothing", ["hard", "soft"])
def test_predict_abstains_on_the_boundary(smoothing):
    """On the plane P(class 0) = 1/2 exactly (hard and, by symmetry, soft): a non-abstaining answer
    is an error, so PREDICT must abstain with probability >= 1 - alpha."""
    alpha, reps = 0.1, 300
    scale = 1e6 if smoothing == "hard" else 3.0
    smooth = Smooth(HalfSpace([1.0, 1.0], 0.0, scale=scale), IsotropicGaussian(0.5), 2, smoothing=smoothing)
    preds = _predict_many(smooth, torch.zeros(2, dtype=torch.float64), 100, alpha, reps)
    assert set(np.unique(preds)) <= {ABSTAIN, 0, 1}
    assert_rate_at_most(int(np.sum(preds != ABSTAIN)), reps, alpha)


def test_certify_abstains_on_the_boundary():
    alpha, reps = 0.1, 300
    smooth = Smooth(HalfSpace([1.0], 0.0), IsotropicGaussian(0.5), 2)
    x = torch.zeros(1, dtype=torch.float64)
    answered = 0
    for rep in range(reps):
        cert = smooth.certify(x, 10, 100, alpha, generator=torch.Generator().manual_seed(rep))
        answered += not cert.abstained
        if cert.abstained:
            assert cert.radius == 0 and cert.l2_radius == 0 and cert.region is None
            assert not cert.contains(np.zeros(1))
    assert_rate_at_most(answered, reps, alpha)


def test_seeded_runs_are_reproducible():
    smooth = Smooth(HalfSpace([1.0, 0.0], 0.3), MixtureOfGaussians([0.25, 0.5]), 2)
    x = torch.zeros(2, dtype=torch.float64)
    a = smooth.certify(x, 10, 1000, 0.01, batch_size=300, generator=torch.Generator().manual_seed(5))
    b = smooth.certify(x, 10, 1000, 0.01, batch_size=300, generator=torch.Generator().manual_seed(5))
    assert a.p_lower == b.p_lower and a.l2_radius == b.l2_radius
    assert a.component_p_lowers == b.component_p_lowers
