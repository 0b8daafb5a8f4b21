"""Mixture-of-Gaussians certificates: the sound mixture radius vs the MoG paper's max-sigma formula."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy.stats import norm

from certify import IsotropicGaussian, MixtureOfGaussians, Smooth, max_sigma_radius, mixture_radius
from certify.radius import mixture_lower_bound_at
from tests.classifiers import HalfSpace  # noqa: E402


def smoothed_p0(t, weights, sigmas):
    """Exact mixture-smoothed P(class 0) at signed l2 distance t from the plane (t > 0: class-0 side)."""
    return float(sum(w * norm.cdf(t / s) for w, s in zip(weights, sigmas)))


# ------------------------------------------------------------------ the errata example


def test_errata_example_exact_probabilities():
    sigmas, weights, t = [0.25, 0.5], [0.5, 0.5], 0.5
    exact = [norm.cdf(t / s) for s in sigmas]
    assert mixture_radius(exact, weights, sigmas) == pytest.approx(0.5, abs=1e-9)
    assert mixture_radius(exact, weights, sigmas) <= 0.5
    pA = smoothed_p0(t, weights, sigmas)
    paper = max_sigma_radius(pA, sigmas)
    assert paper == pytest.approx(0.668, abs=2e-3)  # errata: "the formula gives 0.67"
    # the paper's ball reaches across the smoothed boundary: at distance 0.55 < 0.668 from x the
    # smoothed classifier already predicts class 1
    assert smoothed_p0(t - 0.55, weights, sigmas) < 0.5


def test_errata_example_through_certify():
    sigmas, t = [0.25, 0.5], 0.5
    smooth = Smooth(HalfSpace([0.0, 1.0, 0.0], t), MixtureOfGaussians(sigmas, [0.5, 0.5]), 2)
    cert = smooth.certify(
        torch.zeros(3, dtype=torch.float64),
        100,
        100_000,
        0.001,
        batch_size=100_000,
        generator=torch.Generator().manual_seed(0),
    )
    assert cert.prediction == 0
    assert cert.l2_radius < t and cert.radius == cert.l2_radius
    assert cert.l2_radius > 0.9 * t
    assert not cert.contains(np.array([0.0, t, 0.0]))
    assert cert.paper_radius_is_certificate is False
    assert cert.paper_radius > t + 0.1  # ~0.66: NOT a certificate
    assert cert.log_row()["paper_radius"] == cert.paper_radius
    assert cert.log_row()["l2_radius"] == cert.l2_radius


# ------------------------------------------------------------------ mixture_radius directly


@st.composite
def mixture_case(draw):
    k = draw(st.integers(1, 4))
    sigmas = draw(st.lists(st.floats(0.05, 2.0), min_size=k, max_size=k))
    raw = draw(st.lists(st.floats(0.01, 1.0), min_size=k, max_size=k))
    weights = [r / sum(raw) for r in raw]
    t = draw(st.floats(0.01, 5.0)) * min(sigmas)  # t / sigma_k <= 5: p_k < 1 in float64
    return sigmas, weights, t


@settings(max_examples=100)
@given(mixture_case())
def test_mixture_radius_exact_probabilities_is_halfspace_distance(case):
    sigmas, weights, t = case
    exact = [norm.cdf(t / s) for s in sigmas]
    r = mixture_radius(exact, weights, sigmas)
    assert r <= t * (1 + 1e-9)
    assert r == pytest.approx(t, rel=1e-7, abs=1e-9)
    # and L(r) >= 1/2: the returned radius is on the certified side of the root
    assert mixture_lower_bound_at(r, exact, weights, sigmas) >= 0.5


@settings(max_examples=100)
@given(mixture_case(), st.lists(st.floats(0.0, 1.0), min_size=4, max_size=4))
def test_mixture_radius_monotone_and_sound_under_lower_bounds(case, shrink):
    """Any valid lower bounds (p_lower_k <= p_k) give a radius <= the true distance, and a larger
    bound never gives a smaller radius."""
    sigmas, weights, t = case
    exact = [norm.cdf(t / s) for s in sigmas]
    lowers = [p * (1 - 0.3 * f) for p, f in zip(exact, shrink)]
    r_low = mixture_radius(lowers, weights, sigmas)
    assert 0.0 <= r_low <= mixture_radius(exact, weights, sigmas) + 1e-12
    assert r_low <= t * (1 + 1e-9)
    if r_low > 0:
        assert mixture_lower_bound_at(r_low, lowers, weights, sigmas) >= 0.5
    else:
        assert mixture_lower_bound_at(0.0, lowers, weights, sigmas) <= 0.5 + 1e-9


@settings(max_examples=100)
@given(mixture_case())
def test_paper_formula_overclaims_whenever_sigmas_differ(case):
    """Exact probabilities: the max-sigma formula is >= the true distance, and strictly larger
    (by more than rounding) as soon as two used sigmas differ; it equals Cohen for K = 1."""
    sigmas, weights, t = case
    pA = smoothed_p0(t, weights, sigmas)
    assume(pA < 1 - 1e-9)
    paper = max_sigma_radius(pA, sigmas)
    assert paper >= t * (1 - 1e-7)
    if len(set(sigmas)) == 1:
        assert paper == pytest.approx(t, rel=1e-6)


def test_mixture_radius_abstains_below_half():
    assert mixture_radius([0.5, 0.5], [0.5, 0.5], [0.25, 0.5]) == 0.0
    assert mixture_radius([0.9, 0.05], [0.5, 0.5], [0.25, 0.5]) == 0.0  # L(0) = 0.475
    assert mixture_radius([0.0, 0.0], [0.5, 0.5], [0.25, 0.5]) == 0.0


def test_mixture_radius_single_component_is_cohen():
    for p in [0.51, 0.7, 0.9, 0.999, 0.9999999]:
        for s in [0.12, 0.5, 2.0]:
            assert mixture_radius([p], [1.0], [s]) == pytest.approx(s * norm.ppf(p), rel=1e-9, abs=1e-12)
            assert mixture_radius([p], [1.0], [s]) <= s * norm.ppf(p)


def test_max_sigma_radius_formula():
    assert max_sigma_radius(0.9, [0.25, 0.5, 0.1]) == pytest.approx(0.5 * norm.ppf(0.9))
    assert max_sigma_radius(0.4, [0.25, 0.5]) == 0.0


def test_convolution_is_one_gaussian_with_effective_sigma():
    """README, Errata M1: the sum of N(0, s_k^2 I) is N(0, sum s_k^2 I); certify like Cohen there."""
    sigmas = [0.3, 0.4]
    noise = MixtureOfGaussians(sigmas, kind="convolution")
    assert noise.effective_sigma == pytest.approx(0.5)
    assert noise.num_components == 1
    x = torch.zeros(2, dtype=torch.float64)
    model = HalfSpace([1.0, 0.0], 0.5)
    a = Smooth(model, noise, 2).certify(
        x, 50, 20_000, 0.01, batch_size=20_000, generator=torch.Generator().manual_seed(3)
    )
    b = Smooth(model, IsotropicGaussian(0.5), 2).certify(
        x, 50, 20_000, 0.01, batch_size=20_000, generator=torch.Generator().manual_seed(3)
    )
    assert a.p_lower == b.p_lower
    assert a.l2_radius == pytest.approx(b.l2_radius, rel=1e-12)
    assert a.paper_radius == pytest.approx(0.4 * norm.ppf(a.p_lower))
    # sample variance of the convolution is sum sigma_k^2
    eps, comp = noise.sample(200_000, 1, torch.Generator().manual_seed(0), "cpu", torch.float64)
    assert comp is None
    assert float(eps.var()) == pytest.approx(0.25, rel=0.01)


def test_mixture_sampler_draws_components_by_weight():
    noise = MixtureOfGaussians([0.1, 1.0, 3.0], weights=[0.2, 0.5, 0.3])
    eps, comp = noise.sample(200_000, 2, torch.Generator().manual_seed(0), "cpu", torch.float64)
    freq = torch.bincount(comp, minlength=3).double() / comp.numel()
    np.testing.assert_allclose(freq.numpy(), [0.2, 0.5, 0.3], atol=0.005)
    for k, s in enumerate([0.1, 1.0, 3.0]):
        assert float(eps[comp == k].std()) == pytest.approx(s, rel=0.02)
