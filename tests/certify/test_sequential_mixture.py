"""Anytime-valid sequential certification of true Gaussian mixtures (certify.sequential.run_mixture_looks)
on mixtures of half-space classifiers, whose component probabilities and exact certificate are known.

For a half-space at distance d (class 0 on x's side) under N(x, s^2 I), p_k = Phi(d / s_k) exactly, and
the mixture certificate at the exact p_k (``mixture_radius``) is d itself (it is tight for half-spaces)."""

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.stats import norm

import certify
from certify.radius import mixture_lower_bound_at, mixture_radius
from certify.sequential import (
    check_mixture,
    component_counts,
    look_alphas,
    look_schedule,
    mixture_bound_screen,
    run_mixture_looks,
)
from tests.classifiers import HalfSpace

PAIR = ((0.5, 0.5), (0.25, 0.5))  # (weights, sigmas): the MoG paper's [0.25, 0.5] with K = 2
TRIPLE = ((0.2, 0.5, 0.3), (0.12, 0.25, 0.5))


def _halfspace(d, dim=2):
    """x = 0 and a half-space at distance d from it (class 0 on x's side for d > 0)."""
    w = np.zeros(dim)
    w[0] = 1.0
    return HalfSpace(w, d).eval(), torch.zeros(dim, dtype=torch.float64)


def _exact_radius(p, weights, sigmas):
    return mixture_radius(list(p), list(weights), list(sigmas))


def _simulate(d, mixture, radii, *, n0=10, n=3_000, alpha=0.05, runs=1_000, seed=0, alphas=None):
    """``runs`` inputs at distance d from a half-space: the class guessed from n0 samples of the mixture
    (often wrong near d = 0), then each component's Bernoulli stream of the guessed class through
    ``run_mixture_looks`` (the decision code of ``Smooth.certify``). Returns (wrong per run, looks)."""
    weights, sigmas = (np.asarray(v, dtype=np.float64) for v in mixture)
    radii = np.asarray(radii, dtype=np.float64)
    p0 = norm.cdf(d / sigmas)  # class 0's component probabilities
    rng = np.random.default_rng(seed)
    votes = rng.binomial(n0, float(weights @ p0), runs)
    guess0 = (votes > n0 / 2) | ((votes == n0 / 2) & (rng.random(runs) < 0.5))
    p_label = np.where(guess0[:, None], p0[None, :], 1.0 - p0[None, :])
    out = run_mixture_looks(
        lambda new: rng.binomial(new[None, :], p_label), n, alpha, weights, sigmas, radii, alphas=alphas
    )
    exact0, exact1 = _exact_radius(p0, weights, sigmas), _exact_radius(1.0 - p0, weights, sigmas)
    exact_label = np.where(guess0, exact0, exact1)[:, None]
    exact_top = max(exact0, exact1)
    tol = 1e-9  # at a threshold (exact radius = r up to the root's tolerance) both decisions count as wrong
    wrong_true = (out.decided == 1) & (exact_label <= radii[None, :] + tol)
    wrong_false = (out.decided == -1) & (exact_top >= radii[None, :] - tol)
    wrong_certificate = np.any(out.lower > p_label, axis=1)  # the reported bounds (and so the radius) fail
    return np.any(wrong_true | wrong_false, axis=1) | wrong_certificate, out


# ------------------------------------------------------------------------------ building blocks
def test_exact_certificate_of_a_halfspace_mixture_is_its_distance():
    for weights, sigmas in (PAIR, TRIPLE):
        for d in (0.05, 0.25, 0.6):
            p = norm.cdf(d / np.asarray(sigmas))
            assert _exact_radius(p, weights, sigmas) == pytest.approx(d, abs=1e-9)


def test_screen_is_the_scalar_formula_vectorised():
    rng = np.random.default_rng(0)
    weights, sigmas = np.array([0.2, 0.0, 0.5, 0.3]), np.array([0.12, 0.3, 0.25, 0.5])
    p = rng.random((50, 4))
    p[:5, 0], p[5:10, 2], p[10:15, 3] = 0.0, 1.0, 1.0 - 1e-13
    t = np.array([0.0, 0.07, 0.3, 1.5])
    screen = mixture_bound_screen(t, p, weights, sigmas)
    scalar = np.array(
        [[mixture_lower_bound_at(r, row.tolist(), weights.tolist(), sigmas.tolist()) for r in t] for row in p]
    )
    assert np.allclose(screen, scalar, rtol=0, atol=1e-14)


def test_component_counts_are_nested_and_never_exceed_the_look():
    w = np.array([1 / 3, 1 / 3, 1 / 3])
    looks = look_schedule(100_000)
    counts = np.stack([component_counts(m, w) for m in looks])
    assert np.all(np.diff(counts, axis=0) >= 0) and np.all(counts.sum(axis=1) <= looks)
    assert counts[-1].tolist() == [33_333, 33_333, 33_333] and component_counts(300, w).tolist() == [100, 100, 100]


# ------------------------------------------------------------------------------ soundness
@pytest.mark.parametrize(
    "d, mixture, radii",
    [
        (0.25, PAIR, (0.1, 0.25, 0.4)),  # exactly at r = 0.25: either decision there is wrong
        (0.25 - 1e-9, PAIR, (0.1, 0.25, 0.4)),  # just below: certifying 0.25 is wrong
        (0.25, TRIPLE, (0.1, 0.25, 0.4)),
        (0.0, PAIR, (0.0, 0.1)),  # on the plane: the class guess is a coin flip, r = 0 is the threshold
    ],
)
def test_simulated_false_decision_rate_is_at_most_alpha_at_a_threshold(d, mixture, radii):
    alpha, runs = 0.05, 1_000
    wrong, out = _simulate(d, mixture, radii, alpha=alpha, runs=runs, seed=int(1e3 * d) + len(mixture[0]))
    # one-sided binomial test of "false-decision rate <= alpha"
    assert stats.binomtest(int(wrong.sum()), runs, alpha, alternative="greater").pvalue > 1e-3, wrong.sum()
    # not vacuous: the radii away from the threshold do get decided
    assert np.mean(out.decided != 0) > 0.3


def test_simulation_detects_alpha_spent_at_every_look_and_component():
    # the harness has teeth: the full alpha at every look of every component breaks the guarantee
    alpha, runs = 0.05, 400
    looks = len(look_schedule(3_000))
    wrong, _ = _simulate(0.25, PAIR, (0.1, 0.25, 0.4), alpha=alpha, runs=runs, alphas=np.full(looks, alpha))
    assert stats.binomtest(int(wrong.sum()), runs, alpha, alternative="greater").pvalue < 1e-6, wrong.sum()


def test_false_decision_rate_through_smooth_certify_just_below_a_radius():
    # the real sampling path (each component sampled on its own) on a half-space 1e-9 inside r = 0.25
    alpha, runs = 0.05, 150
    model, x = _halfspace(0.25 - 1e-9)
    sm = certify.Smooth(model, certify.MixtureOfGaussians(*PAIR[::-1], kind="mixture"), 2)
    gen = torch.Generator().manual_seed(7)
    wrong = 0
    for _ in range(runs):
        cert = sm.certify(x, 10, 1_000, alpha, batch_size=1_000, generator=gen, radii=[0.1, 0.25])
        wrong += cert.decided[1] is True or cert.decided[0] is False or cert.l2_radius >= 0.25
    assert stats.binomtest(wrong, runs, alpha, alternative="greater").pvalue > 1e-3, wrong


# ------------------------------------------------------------------------------ agreement, stopping
def test_decisions_agree_with_fixed_n_on_clear_cases_with_fewer_samples():
    radii = [0.05, 0.3, 0.55, 0.85]
    noise = certify.MixtureOfGaussians([0.25, 0.5], [0.5, 0.5], kind="mixture")
    for d in (0.2, 0.45, 0.7):
        model, x = _halfspace(d)
        sm = certify.Smooth(model, noise, 2)
        fixed = sm.certify(x, 100, 100_000, 1e-3, batch_size=50_000, generator=torch.Generator().manual_seed(1))
        seq = sm.certify(
            x, 100, 100_000, 1e-3, batch_size=50_000, generator=torch.Generator().manual_seed(2), radii=radii
        )
        # every radius is at least 0.1 from d: both decide, the same way, and the sequential mode stops early
        assert seq.decided == tuple(r < d for r in radii), (d, seq.decided)
        assert [fixed.l2_radius >= r for r in radii] == [r < d for r in radii], (d, fixed.l2_radius)
        assert seq.samples < 20_000 < fixed.samples
        # the certificate: the mixture's one formula on the per-component bounds, beyond every certified radius
        assert seq.noise == "mixture" and len(seq.component_p_lowers) == 2
        assert seq.l2_radius == pytest.approx(mixture_radius(list(seq.component_p_lowers), [0.5, 0.5], [0.25, 0.5]))
        assert all(seq.l2_radius > r for r, dec in zip(radii, seq.decided) if dec)
        assert seq.paper_radius_is_certificate is False and seq.l2_radius < d


def test_simulated_decisions_agree_with_fixed_n_mixture_certificate_whenever_both_decide():
    # fixed n: component counts ~ Multinomial(n, w), one-sided Clopper-Pearson at alpha / K each (the
    # fixed-n certificate); it certifies r iff mixture_radius >= r. Each is wrong w.p. <= alpha.
    from certify.bounds import clopper_pearson_lower

    alpha, runs, n = 0.01, 60, 20_000
    weights, sigmas = PAIR
    radii = np.array([0.1, 0.3, 0.5])
    rng = np.random.default_rng(3)
    disagree = total = 0
    for d in (0.12, 0.28, 0.33, 0.48, 0.7):
        _, out = _simulate(d, PAIR, radii, n0=100, n=n, alpha=alpha, runs=runs, seed=int(d * 100))
        p = norm.cdf(d / np.asarray(sigmas))
        for row in out.decided:
            m = rng.multinomial(n, weights)
            lowers = [clopper_pearson_lower(int(rng.binomial(mk, pk)), int(mk), alpha / 2) for mk, pk in zip(m, p)]
            fixed = mixture_radius(lowers, list(weights), list(sigmas))
            disagree += bool(np.any(((row == 1) & (fixed < radii)) | ((row == -1) & (fixed >= radii))))
            total += 1
    assert stats.binomtest(disagree, total, 2 * alpha, alternative="greater").pvalue > 1e-3, disagree


@pytest.mark.parametrize("d, expect, most", [(1.5, 1, 3_000), (-0.1, -1, 3_000), (0.02, -1, 3_000)])
def test_easy_inputs_stop_early(d, expect, most):
    # far inside: every radius certified; near the plane (either side): every radius refuted
    _, out = _simulate(d, PAIR, (0.25, 0.5), n0=100, n=100_000, alpha=1e-3, runs=300)
    assert np.all(out.decided == expect)
    assert np.median(out.drawn) <= most


def test_out_of_reach_radii_stop_early_without_changing_any_certified_radius():
    weights, sigmas = PAIR
    need = np.array([0.25, 0.5, 3.0])  # 3.0: 6 sigma_max, far beyond what 10,000 samples can certify
    for d in (5.0, 1.0, 0.4):
        p = norm.cdf(d / np.asarray(sigmas))

        def stream(new, d=d, p=p):
            return np.random.default_rng(int(d * 1e3) + int(new.sum())).binomial(new[None, :], np.tile(p, (60, 1)))

        a = run_mixture_looks(stream, 10_000, 1e-3, weights, sigmas, need)
        b = run_mixture_looks(stream, 10_000, 1e-3, weights, sigmas, need, stop_out_of_reach=False)
        assert np.array_equal(a.decided == 1, b.decided == 1)  # same streams, same certified radii
        assert np.all(a.drawn <= b.drawn) and np.all(a.decided[:, 2] != 1)
        if d == 5.0:  # every sample a hit: 0.25 and 0.5 certified early, 3.0 dropped, not sampled for
            assert np.all(a.decided[:, :2] == 1) and np.all(a.decided[:, 2] == 0)
            assert np.all(a.drawn < 2_000) and np.all(b.drawn == 10_000)


def test_alpha_is_split_over_components_like_the_fixed_n_certificate():
    # each component's sequence spends alpha / K over the looks (the fixed-n certificate's alpha / K per
    # component): its bounds are the running max / min of two-sided Clopper-Pearson at look_alphas(J, alpha / K)
    from certify.bounds import clopper_pearson

    n, alpha = 2_000, 0.01
    weights, sigmas = TRIPLE
    looks = look_schedule(n)
    seen = []

    def stream(new):
        got = (new * np.array([0.9, 0.5, 0.7])).astype(np.int64)[None, :]
        seen.append(got[0])
        return got

    out = run_mixture_looks(stream, n, alpha, weights, sigmas, [0.0], stop_out_of_reach=False)
    assert 1 < out.look[0] < len(looks) and out.decided[0, 0] == 1  # certified at r = 0 after a few looks
    a = look_alphas(len(looks), alpha / 3)
    assert 3 * a.sum() == pytest.approx(alpha)
    J = int(out.look[0])
    hits = np.cumsum(seen, axis=0)[:J]
    counts = np.stack([component_counts(m, np.array(weights)) for m in looks[:J]])
    lo, up = clopper_pearson(hits, counts, a[:J, None], "two-sided")
    assert np.array_equal(out.counts[0], counts[-1]) and out.drawn[0] == counts[-1].sum()
    assert np.array_equal(out.lower[0], lo.max(axis=0)) and np.array_equal(out.upper[0], up.min(axis=0))
    assert mixture_radius(out.lower[0].tolist(), list(weights), list(sigmas)) > 0.0


def test_one_component_mixture_decides_like_the_gaussian_mode_on_the_same_samples():
    # K = 1: the same looks, levels, samples and decisions as run_looks; the certificate can only be
    # larger (the running max of the lower bounds instead of the last look's)
    for d in (0.1, 0.3, 0.45, 0.7):
        model, x = _halfspace(d)
        certs = [
            certify.Smooth(model, noise, 2).certify(
                x, 100, 20_000, 1e-3, batch_size=20_000, generator=torch.Generator().manual_seed(3), radii=[0.25, 0.5]
            )
            for noise in (certify.MixtureOfGaussians([0.25]), certify.IsotropicGaussian(0.25))
        ]
        mix, gauss = certs
        assert mix.decided == gauss.decided and mix.samples == gauss.samples and mix.looks == gauss.looks, d
        assert mix.l2_radius >= gauss.l2_radius - 1e-9 and mix.noise == "mixture"


# ------------------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    "weights, sigmas, match",
    [
        ([0.5, 0.6], [0.25, 0.5], "weights must be a probability distribution"),
        ([-0.5, 1.5], [0.25, 0.5], "weights must be a probability distribution"),
        ([1.0], [0.25, 0.5], "weights has 1 entries but sigmas has 2"),
        ([float("nan"), 0.5], [0.25, 0.5], "weights must be finite"),
        ([], [], "weights must hold at least one"),
        ([0.5, 0.5], [0.25, 0.0], "sigmas must all be positive"),
        ([0.5, 0.5], [0.25, float("inf")], "sigmas must be finite"),
    ],
)
def test_bad_weights_and_sigmas_are_refused_by_name(weights, sigmas, match):
    with pytest.raises(ValueError, match=match):
        check_mixture(weights, sigmas)
    with pytest.raises(ValueError, match=match):
        run_mixture_looks(lambda new: np.zeros((1, len(sigmas))), 100, 0.01, weights, sigmas, [0.1])


def test_non_numeric_weights_are_refused_by_name():
    with pytest.raises(TypeError, match="weights must be a sequence of numbers"):
        check_mixture(["a", 0.5], [0.25, 0.5])
    with pytest.raises(ValueError, match="weights"):  # the noise itself refuses them too
        certify.MixtureOfGaussians([0.25, 0.5], [0.7, 0.7])


@pytest.mark.parametrize(
    "radii, match",
    [([-0.1, 0.2], ">= 0"), ([0.5, 0.25], "increasing"), ([float("nan")], "finite"), ([], "at least one")],
)
def test_bad_radii_are_refused_by_name(radii, match):
    model, x = _halfspace(0.3)
    sm = certify.Smooth(model, certify.MixtureOfGaussians([0.25, 0.5]), 2)
    with pytest.raises(ValueError, match="radii") as info:
        sm.certify(x, 10, 100, 0.01, radii=radii)
    assert info.match(match)


def test_soft_smoothing_and_bad_growth_are_refused_for_mixtures_too():
    model, x = _halfspace(0.3)
    soft = certify.Smooth(model, certify.MixtureOfGaussians([0.25, 0.5]), 2, smoothing="soft")
    with pytest.raises(ValueError, match="radii: sequential certification needs smoothing='hard'"):
        soft.certify(x, 10, 100, 0.01, radii=[0.1])
    from certify.sequential import certify_sequential

    hard = certify.Smooth(model, certify.MixtureOfGaussians([0.25, 0.5]), 2)
    with pytest.raises(ValueError, match="growth"):
        certify_sequential(hard, x, 10, 100, 0.01, 100, None, [0.1], growth=1.0)
    with pytest.raises(ValueError, match="spending"):
        certify_sequential(hard, x, 10, 100, 0.01, 100, None, [0.1], spending="bonferroni")


def test_convolution_kind_stays_one_gaussian():
    # the convolution is N(0, (sum sigma^2) I): Cohen's thresholds at the effective sigma, one stream
    model, x = _halfspace(0.5)
    noise = certify.MixtureOfGaussians([0.25, 0.5], kind="convolution")
    cert = certify.Smooth(model, noise, 2).certify(
        x, 100, 100_000, 1e-3, batch_size=50_000, generator=torch.Generator().manual_seed(0), radii=[0.2, 0.8]
    )
    assert cert.decided == (True, False) and cert.component_p_lowers is None and cert.noise == "convolution"
