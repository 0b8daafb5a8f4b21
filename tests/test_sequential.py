"""Anytime-valid sequential certification (certify.sequential) on classifiers with known p_A."""

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.stats import norm

import certify
from certify.sequential import look_alphas, look_schedule
from tests.classifiers import HalfSpace


def _halfspace_at(p, d=2):
    """x = 0 and a half-space whose class-0 probability under N(0, sigma^2 I) is exactly p."""
    sigma = 0.25
    b = sigma * norm.ppf(p)  # P(w.eps <= b) = Phi(b / sigma) with ||w|| = 1
    w = np.zeros(d)
    w[0] = 1.0
    return HalfSpace(w, b).eval(), torch.zeros(d, dtype=torch.float64), sigma


def test_alpha_spending_sums_to_alpha_and_schedule_ends_at_n():
    a = look_alphas(40, 1e-3)
    assert np.all(a > 0) and a.sum() == pytest.approx(1e-3, rel=1e-12)
    looks = look_schedule(100_000)
    assert looks[0] == 100 and looks[-1] == 100_000 and all(np.diff(looks) > 0)
    assert all(b <= 1.1 * a + 1 for a, b in zip(looks[:-2], looks[1:-1]))


def test_easy_inputs_stop_early_and_decide_every_radius():
    model, x, sigma = _halfspace_at(0.999)
    sm = certify.Smooth(model, certify.IsotropicGaussian(sigma), 2)
    radii = [0.25, 0.5]
    cert = sm.certify(x, 100, 100_000, 1e-3, batch_size=10_000, generator=torch.Generator().manual_seed(0), radii=radii)
    assert cert.decided == (True, True) and cert.samples < 2_000
    assert cert.l2_radius >= 0.5
    model, x, sigma = _halfspace_at(0.5)
    cert = certify.Smooth(model, certify.IsotropicGaussian(sigma), 2).certify(
        x, 100, 100_000, 1e-3, batch_size=10_000, generator=torch.Generator().manual_seed(0), radii=radii
    )
    assert cert.decided == (False, False) and cert.samples < 2_000


def test_decisions_agree_with_fixed_n_cohen_when_both_decide():
    radii = [0.1, 0.3, 0.5]
    for p in (0.7, 0.9, 0.97, 0.995):
        model, x, sigma = _halfspace_at(p)
        sm = certify.Smooth(model, certify.IsotropicGaussian(sigma), 2)
        fixed = sm.certify(x, 100, 100_000, 1e-3, batch_size=20_000, generator=torch.Generator().manual_seed(1))
        seq = sm.certify(
            x, 100, 100_000, 1e-3, batch_size=20_000, generator=torch.Generator().manual_seed(2), radii=radii
        )
        for r, dec in zip(radii, seq.decided):
            if dec is True:
                assert fixed.l2_radius >= r or abs(sigma * norm.ppf(p) - r) < 0.02
            if dec is False:
                assert fixed.l2_radius < r
        assert seq.samples <= 100_100


def test_false_decision_rate_is_below_alpha_at_a_threshold():
    # p_A exactly at the threshold of r = 0.5: certifying 0.5 (True) is right, but a True at the next
    # radius, or False at 0.5, would be wrong; p placed at Phi(0.5 / sigma) - tiny makes True at 0.5 wrong.
    alpha, runs = 0.05, 400
    sigma = 0.25
    p = norm.cdf(0.5 / sigma) - 1e-9
    model, x, _ = _halfspace_at(p)
    sm = certify.Smooth(model, certify.IsotropicGaussian(sigma), 2)
    gen = torch.Generator().manual_seed(5)
    wrong = 0
    for _ in range(runs):
        cert = sm.certify(x, 20, 3_000, alpha, batch_size=3_000, generator=gen, radii=[0.25, 0.5])
        wrong += cert.decided[0] is False or cert.decided[1] is True or cert.l2_radius >= 0.5
    # one-sided binomial test: the false-decision rate is not above alpha
    assert stats.binomtest(wrong, runs, alpha, alternative="greater").pvalue > 1e-3, wrong


@pytest.mark.parametrize(
    "radii, match",
    [
        ([-0.1, 0.2], ">= 0"),
        ([0.5, 0.25], "increasing"),
        ([float("nan")], "finite"),
        ([], "at least one"),
        ([0.2, 0.2], "increasing"),
    ],
)
def test_bad_radii_are_refused_by_name(radii, match):
    model, x, sigma = _halfspace_at(0.9)
    sm = certify.Smooth(model, certify.IsotropicGaussian(sigma), 2)
    with pytest.raises(ValueError, match=match):
        sm.certify(x, 10, 100, 0.01, radii=radii)


def test_true_mixture_is_refused_and_anisotropic_radii_use_the_own_norm():
    model, x, sigma = _halfspace_at(0.9)
    mix = certify.Smooth(model, certify.MixtureOfGaussians([0.25, 0.5]), 2)
    with pytest.raises(ValueError, match="radii"):
        mix.certify(x, 10, 100, 0.01, radii=[0.1])
    # diagonal noise with theta = sigma on the boundary axis: own-norm radius r = l2 radius / sigma
    model, x, sigma = _halfspace_at(0.999)
    sm = certify.Smooth(model, certify.DiagonalGaussian(torch.tensor([sigma, 1.0], dtype=torch.float64)), 2)
    cert = sm.certify(
        x, 100, 100_000, 1e-3, batch_size=10_000, generator=torch.Generator().manual_seed(0), radii=[1.0, 2.5, 3.5]
    )
    assert cert.decided == (True, True, False)  # own-norm radius of this input: Phi^-1(0.999) = 3.09
