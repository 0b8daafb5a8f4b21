"""Dual randomized smoothing (``certify.dual``): soundness against a closed-form truth, the memory-free
construction it replaces failing the same test, the combined region on hand-computed cases, bad input.

The closed-form problem (d = 2). Selector: the half-space s(x) = 0 iff x_2 <= 0 (``HalfSpace``); under
any Gaussian noise its smoothed vote is the same half-space, h(x) = 0 iff x_2 <= 0 (x_2 = 0 is a tie,
resolved to 0 like the base selector; the tests use closures, so the tie does not matter). Classifier:
the slab F(x) = 1 iff 0 < x_1 < 1. Under noise whose scale along x_1 is t, P(F(x + eps) = 1) =
Phi((1 - x_1) / t) - Phi(-x_1 / t), symmetric about x_1 = 1/2 and decreasing away from it, so the
smoothed classifier g is 1 exactly on |x_1 - 1/2| < s(t) (s solves P = 1/2; no such set when
P(1/2) <= 1/2) and 0 elsewhere. Dictionary: entry 0 diagonal (0.25, 0.6) (g_0 = 1 on a slab), entry 1
isotropic 1.0 (g_1 = 0 everywhere). The deployed memory-free classifier G(x) = g_{h(x)}(x) is 1 on the
slab below x_2 = 0 and 0 elsewhere.

Where G differs from a label c is a union of axis-aligned boxes (a half-plane of the selector times an
interval of x_1). Every region certified here is centred at x and axis-aligned (a ball, an axis-aligned
ellipsoid or their intersection), and its norm is a sum of increasing functions of |y_i - x_i|; so the
region meets a closed box iff it contains the box's point nearest x coordinate-wise (x clamped into the
box). That decides exactly whether a certificate reaches past the truth.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import brentq
from scipy.stats import binomtest, norm

from certify import (
    ABSTAIN,
    DiagonalGaussian,
    DualSmooth,
    Ellipsoid,
    FullGaussian,
    IsotropicGaussian,
    LogitsError,
    MixtureOfGaussians,
    Smooth,
    capped_ellipsoid,
    own_norm_radii,
)
from tests.classifiers import HalfSpace

SIGMA_E = 0.25
DICTIONARY = [DiagonalGaussian([0.25, 0.6]), IsotropicGaussian(1.0)]
SCALE_X1 = [0.25, 1.0]  # each entry's scale along x_1
RUNS = 2000
N0_SEL, N_SEL, N0, N = 10, 100, 10, 100
ALPHA_SEL = ALPHA_CLS = 0.025  # the dual certificate's failure probability: 0.05
ALPHA_TOTAL = ALPHA_SEL + ALPHA_CLS


class Slab(torch.nn.Module):
    """Class 1 iff 0 < x_1 < 1 (first coordinate), class 0 elsewhere (float64 logits)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("unit", torch.ones((), dtype=torch.float64))

    def forward(self, x):
        t = x.reshape(x.shape[0], -1)[:, 0]
        inside = torch.minimum(t, 1.0 - t) * self.unit  # > 0 on the slab
        return torch.stack([-inside, inside], dim=1) * 1e6


class Constant(torch.nn.Module):
    """Always the same class out of ``width``."""

    def __init__(self, label, width):
        super().__init__()
        logits = torch.zeros(width, dtype=torch.float64)
        logits[label] = 1.0
        self.register_buffer("logits", logits)

    def forward(self, x):
        return self.logits.expand(x.shape[0], -1)


def slab_half_width(t):
    """s(t): g = 1 exactly on |x_1 - 1/2| < s(t) under scale t along x_1; None if g is 0 everywhere."""

    def p1(x1):
        return norm.cdf((1 - x1) / t) - norm.cdf(-x1 / t)

    if p1(0.5) <= 0.5:
        return None
    return brentq(lambda u: p1(0.5 + u) - 0.5, 0.0, 0.5 + 20 * t, xtol=1e-14)


HALF_WIDTHS = [slab_half_width(t) for t in SCALE_X1]
SELECTOR_HALF = [(-math.inf, 0.0), (0.0, math.inf)]  # closed x_2 ranges where h = 0, h = 1


def bad_boxes(label, half_widths=HALF_WIDTHS):
    """Closed boxes (x_1 range, x_2 range) covering {y : G(y) != label} (entry k's slab half-width
    ``half_widths[k]``, None: g_k is 0 everywhere)."""
    boxes = []
    for k, s in enumerate(half_widths):
        j = SELECTOR_HALF[k]
        if label == 0:
            if s is not None:
                boxes.append(((0.5 - s, 0.5 + s), j))
        elif s is None:
            boxes.append(((-math.inf, math.inf), j))
        else:
            boxes.append(((-math.inf, 0.5 - s), j))
            boxes.append(((0.5 + s, math.inf), j))
    return boxes


def reaches_past_truth(contains, x, label, half_widths=HALF_WIDTHS):
    """True iff the certified region (``contains``, about x, axis-aligned) meets {G != label}."""
    for i, j in bad_boxes(label, half_widths):
        nearest = np.array([np.clip(x[0], *i), np.clip(x[1], *j)])
        if contains(nearest - x):
            return True
    return False


def inputs(runs, seed=0):
    """Inputs across the slab and beyond; a quarter exactly ON the selector's boundary x_2 = 0."""
    rng = np.random.default_rng(seed)
    x1 = rng.uniform(-0.3, 1.3, size=runs)
    x2 = rng.normal(0.0, 0.3, size=runs)
    x2[rng.uniform(size=runs) < 0.25] = 0.0
    return np.stack([x1, x2], axis=1)


def certify_all(certify_one, xs, seed):
    """Every input's certificate: ``certify_one(x, generator)`` for input i, its generator seeded seed + i."""
    return [certify_one(x, torch.Generator().manual_seed(seed + i)) for i, x in enumerate(xs)]


def count_violations(xs, certs, contains=lambda cert: cert.contains):
    """(violations, certified): how many certificates that did not abstain reach past the truth (their
    region's test ``contains(cert)``), and how many did not abstain."""
    kept = [(x, cert) for x, cert in zip(xs, certs) if not cert.abstained]
    return sum(reaches_past_truth(contains(cert), x, cert.prediction) for x, cert in kept), len(kept)


def dual():
    return DualSmooth(Slab().eval(), HalfSpace([0.0, 1.0], 0.0).eval(), DICTIONARY, 2, IsotropicGaussian(SIGMA_E))


def test_closed_form_truth():
    s0, s1 = HALF_WIDTHS
    assert s1 is None  # g_1 is 0 everywhere (P(1) = 2 Phi(1/2) - 1 = 0.38 at the slab's centre)
    assert 0.3 < s0 < 0.5  # g_0 is 1 on a slab narrower than the base slab
    p = norm.cdf((1 - (0.5 + s0)) / 0.25) - norm.cdf(-(0.5 + s0) / 0.25)
    assert p == pytest.approx(0.5, abs=1e-12)
    x = np.array([0.5, -0.05])  # G = 1 here; 0.05 above, G = 0
    assert reaches_past_truth(lambda d: np.linalg.norm(d) <= 0.06, x, 1)
    assert not reaches_past_truth(lambda d: np.linalg.norm(d) <= 0.04, x, 1)
    assert reaches_past_truth(lambda d: np.linalg.norm(d) <= 0.04, x, 0)  # x itself is not class 0


def test_dual_certificate_sound_binomial():
    """(a) Over 2,000 seeded runs (a quarter on the selector's boundary) the combined region reaches
    past the true region of G no more often than alpha_sel + alpha_cls = 0.05 allows."""
    model = dual()
    xs = inputs(RUNS)
    certs = certify_all(
        lambda x, gen: model.certify(torch.as_tensor(x), N0_SEL, N_SEL, ALPHA_SEL, N0, N, ALPHA_CLS, generator=gen),
        xs,
        1000,
    )
    assert all(cert.alpha == pytest.approx(ALPHA_TOTAL) for cert in certs)
    violations, certified = count_violations(xs, certs)
    on_boundary_certified = sum(x[1] == 0.0 and not cert.abstained for x, cert in zip(xs, certs))
    without_ball, _ = count_violations(xs, certs, lambda cert: cert.classifier.contains)
    rate = violations / RUNS
    pvalue = binomtest(violations, RUNS, ALPHA_TOTAL, alternative="greater").pvalue
    print(f"dual: {violations} violations in {RUNS} runs ({rate:.4f}), {certified} certified, p = {pvalue:.3g}")
    assert certified > RUNS // 3  # the test is not vacuous
    assert pvalue > 1e-3, (violations, RUNS)
    assert rate <= ALPHA_TOTAL
    assert on_boundary_certified > 0  # some certificates on the boundary (each with prob <= alpha_sel)
    # the same runs without the selector's ball (the classifier's ellipsoid alone) are not sound: the
    # ball is what makes the certificate a statement about G
    print(f"dual without the ball: {without_ball} violations in {RUNS} runs")
    assert binomtest(without_ball, RUNS, ALPHA_TOTAL, alternative="greater").pvalue < 1e-6


def test_memory_free_construction_fails_binomial():
    """(b) The construction dual RS replaces: k chosen from x by the base selector (no smoothing, no
    ball), then the classifier's own certificate under dictionary[k] at the same total alpha. It is a
    statement about g_k, not about the deployed G, and the same test rejects it."""
    selector = HalfSpace([0.0, 1.0], 0.0).eval()

    def memory_free(x, gen):
        xt = torch.as_tensor(x)
        k = int(selector(xt[None]).argmax(dim=1))
        return Smooth(Slab().eval(), DICTIONARY[k], 2).certify(xt, N0, N, ALPHA_TOTAL, generator=gen)

    xs = inputs(RUNS)
    violations, _ = count_violations(xs, certify_all(memory_free, xs, 1000))
    pvalue = binomtest(violations, RUNS, ALPHA_TOTAL, alternative="greater").pvalue
    print(f"memory-free: {violations} violations in {RUNS} runs ({violations / RUNS:.4f}), p = {pvalue:.3g}")
    assert pvalue < 1e-6, (violations, RUNS)


def test_dual_on_boundary_abstains_mostly():
    model = dual()
    x = torch.tensor([0.5, 0.0], dtype=torch.float64)
    abstained = 0
    for i in range(200):
        cert = model.certify(x, N0_SEL, N_SEL, ALPHA_SEL, N0, N, ALPHA_CLS, generator=torch.Generator().manual_seed(i))
        abstained += cert.abstained and cert.abstained_by == "selector"
    assert abstained >= 180  # the selector's p is exactly 1/2 there: it certifies with prob <= alpha_sel


@st.composite
def mixed_problem(draw):
    """Two entries, each isotropic or diagonal (scales 0.1-1.5), any sigma_e, any input."""
    entries, along_x1 = [], []
    for _ in range(2):
        if draw(st.booleans()):
            sigma = draw(st.floats(0.1, 1.5))
            entries.append(IsotropicGaussian(sigma))
            along_x1.append(sigma)
        else:
            theta = [draw(st.floats(0.1, 1.5)), draw(st.floats(0.1, 1.5))]
            entries.append(DiagonalGaussian(theta))
            along_x1.append(theta[0])
    sigma_e = draw(st.floats(0.05, 1.0))
    side = draw(st.sampled_from([-1.0, 1.0]))  # which entry; x_2 = 0 (a tie) is tested above
    x = np.array([draw(st.floats(-0.5, 1.5)), side * draw(st.floats(0.02, 1.0))])
    return entries, [slab_half_width(t) for t in along_x1], sigma_e, x, draw(st.integers(0, 2**31 - 1))


@settings(max_examples=40)
@given(mixed_problem())
def test_mixed_dictionaries_sound_and_consistent(p):
    """Dictionaries mixing isotropic and diagonal entries: at alpha_sel = alpha_cls = 1e-4 no certificate
    reaches past the truth (a false one has probability <= 2e-4 per example), and the combined region's
    numbers agree with its parts: l2 radius = min(R_sel, classifier's), the capped ellipsoid inside both."""
    entries, half_widths, sigma_e, x, seed = p
    model = DualSmooth(Slab().eval(), HalfSpace([0.0, 1.0], 0.0).eval(), entries, 2, IsotropicGaussian(sigma_e))
    gen = torch.Generator().manual_seed(seed)
    cert = model.certify(torch.as_tensor(x), 50, 2000, 1e-4, 50, 2000, 1e-4, generator=gen, batch_size=2000)
    if cert.abstained:
        assert not cert.contains(np.zeros(2))
        return
    assert cert.selected == (0 if x[1] <= 0 else 1)  # the smoothed selector is the half-space itself
    assert not reaches_past_truth(cert.contains, x, cert.prediction, half_widths)
    assert cert.classifier is not None and cert.region is not None
    assert cert.l2_radius == pytest.approx(min(cert.selector_radius, cert.classifier.l2_radius), rel=1e-12)
    assert cert.region.l2_radius == pytest.approx(cert.l2_radius, rel=1e-12)
    assert cert.proxy_radius <= min(cert.selector_radius, cert.classifier.proxy_radius) * (1 + 1e-12)
    assert cert.selector_radius == pytest.approx(sigma_e * norm.ppf(cert.selector_p_lower), rel=1e-12)
    assert cert.selector_radius < abs(x[1])  # sound for the selector's own half-space
    u = np.random.default_rng(seed).normal(size=(200, 2))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    assert all(cert.contains(q * (1 - 1e-9)) for q in u * _axes(cert.region))


def _axes(region):
    """Semi-axes of an axis-aligned region in coordinate order."""
    values, vecs = region.axes
    assert vecs is None
    return region.radius * values


# ---------------------------------------------------------------------- (c) hand-computed regions


def test_constant_models_exact_radii_and_contains():
    """Constant selector (entry 0) and classifier (class 1): every count is n, so p_lower = alpha^(1/n)
    exactly (Clopper-Pearson with all successes), and every number below follows by hand."""
    entry = DiagonalGaussian([0.5, 2.0])
    model = DualSmooth(
        Constant(1, 2).eval(), Constant(0, 2).eval(), [entry, IsotropicGaussian(3.0)], 2, IsotropicGaussian(1.0)
    )
    gen = torch.Generator().manual_seed(0)
    cert = model.certify(torch.zeros(2, dtype=torch.float64), 5, 100, 0.05, 5, 100, 0.05, generator=gen)
    q = norm.ppf(0.05 ** (1 / 100))  # 1.8887...
    assert q == pytest.approx(1.8887, abs=1e-3)
    assert cert.prediction == 1 and cert.selected == 0 and cert.abstained_by is None
    assert cert.selector_p_lower == pytest.approx(0.05 ** (1 / 100), rel=1e-9)
    assert cert.selector_radius == pytest.approx(1.0 * q, rel=1e-9)
    assert cert.classifier is not None and cert.classifier.radius == pytest.approx(q, rel=1e-9)
    # semi-axes of the classifier's ellipsoid: 0.5 q = 0.944 and 2 q = 3.78; the ball: q = 1.889
    assert cert.l2_radius == pytest.approx(0.5 * q, rel=1e-9)
    assert cert.region is not None
    np.testing.assert_allclose(cert.region.semi_axes, [0.5 * q, q], rtol=1e-9)
    assert cert.proxy_radius == pytest.approx(math.sqrt(0.5 * q * q), rel=1e-9)
    assert cert.alpha == pytest.approx(0.1)
    assert cert.contains([0.0, 0.0])
    assert cert.contains([0.0, 1.85])  # in the ball (1.889) and the ellipsoid (3.78 along x_2)
    assert not cert.contains([0.0, 1.95])  # in the ellipsoid, outside the ball
    assert cert.contains([0.9, 0.0])
    assert not cert.contains([0.96, 0.0])  # in the ball, outside the ellipsoid (0.944 along x_1)
    assert cert.contains(torch.tensor([0.7, 1.7]))  # ellipsoid norm 1.64, l2 norm 1.84: both below 1.889
    assert not cert.contains([0.75, 1.75])  # ellipsoid norm 1.74, l2 norm 1.904 > 1.889
    # the capped ellipsoid is inside the combined region
    rng = np.random.default_rng(0)
    u = rng.normal(size=(500, 2))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    on_capped = u * cert.region.semi_axes  # the capped ellipsoid's boundary (axis-aligned here)
    assert all(cert.contains(p * (1 - 1e-9)) for p in on_capped)


def test_capped_ellipsoid_hand_cases():
    c = np.zeros(2)
    # ball larger than the cap: becomes the cap's ball
    ball = capped_ellipsoid(Ellipsoid(c, 1.0, 3.0), 2.0)
    assert ball.kind == "ball" and ball.l2_radius == pytest.approx(2.0) and ball.proxy_radius == pytest.approx(2.0)
    # ball smaller than the cap: unchanged
    assert capped_ellipsoid(Ellipsoid(c, 0.5, 2.0), 5.0).l2_radius == pytest.approx(1.0)
    # diagonal: semi-axes (1, 3) capped at 2 -> (1, 2); proxy sqrt(2)
    diag = capped_ellipsoid(Ellipsoid(c, np.array([1.0, 3.0]), 1.0), 2.0)
    np.testing.assert_allclose(diag.semi_axes, [1.0, 2.0])
    assert diag.proxy_radius == pytest.approx(math.sqrt(2.0))
    assert diag.contains_delta([0.0, 1.99]) and not diag.contains_delta([0.0, 2.01])
    # full, rotated by 45 degrees: semi-axes 0.5 along v1, 2 along v2, capped at 1
    v1, v2 = np.array([1.0, 1.0]) / math.sqrt(2), np.array([1.0, -1.0]) / math.sqrt(2)
    C = 0.5 * np.outer(v1, v1) + 2.0 * np.outer(v2, v2)
    full_region = FullGaussian(C).region(c, 1.0)
    full = capped_ellipsoid(full_region, 1.0)
    np.testing.assert_allclose(full.semi_axes, [0.5, 1.0])
    assert full.proxy_radius == pytest.approx(math.sqrt(0.5))
    assert full.contains_delta(0.99 * v2) and not full.contains_delta(1.01 * v2)
    assert full.contains_delta(0.49 * v1) and not full.contains_delta(0.51 * v1)
    # inside both the original ellipsoid and the ball of the cap
    rng = np.random.default_rng(1)
    pts = rng.uniform(-2, 2, size=(4000, 2))
    inside = full.contains_delta(pts)
    assert inside.any()
    assert np.all(full_region.contains_delta(pts[inside]))
    assert np.all(np.linalg.norm(pts[inside], axis=1) <= 1.0 + 1e-12)
    with pytest.raises(ValueError, match="cap"):
        capped_ellipsoid(full_region, 0.0)


def test_classifier_abstains():
    # the classifier's boundary passes through x: p = 1/2, so its CERTIFY abstains (with prob >= 1 - alpha)
    model = DualSmooth(
        HalfSpace([1.0, 0.0], 0.5).eval(), Constant(0, 1).eval(), [IsotropicGaussian(0.5)], 2, IsotropicGaussian(1.0)
    )
    x = torch.tensor([0.5, 0.0], dtype=torch.float64)
    cert = model.certify(x, 10, 100, 0.01, 10, 100, 0.01, generator=torch.Generator().manual_seed(3))
    assert cert.abstained and cert.abstained_by == "classifier" and cert.selected == 0
    assert cert.prediction == ABSTAIN and cert.l2_radius == 0.0 and cert.region is None
    assert cert.selector_radius > 0
    assert not cert.contains([0.0, 0.0])


def test_predict():
    model = dual()
    gen = torch.Generator().manual_seed(0)
    below = torch.tensor([0.5, -0.3], dtype=torch.float64)  # h = 0 (p = 0.88), g_0 = 1 (p = 0.95)
    above = torch.tensor([0.5, 0.3], dtype=torch.float64)  # h = 1, g_1 = 0 (p = 0.62)
    assert model.select(below, 1000, 0.01, generator=gen) == 0
    assert model.predict(below, 1000, 0.01, 1000, 0.01, generator=gen) == 1
    assert model.predict(above, 1000, 0.01, 1000, 0.01, generator=gen) == 0
    boundary = torch.tensor([0.5, 0.0], dtype=torch.float64)  # the selector's vote is a tie
    abstained = sum(
        model.predict(boundary, 200, 0.05, 200, 0.05, generator=torch.Generator().manual_seed(i)) == ABSTAIN
        for i in range(50)
    )
    assert abstained >= 45


# ---------------------------------------------------------------------- (d) bad input


def test_bad_input_errors():
    sel, noise = HalfSpace([0.0, 1.0], 0.0).eval(), IsotropicGaussian(0.25)
    with pytest.raises(ValueError, match="dictionary"):
        DualSmooth(Slab().eval(), sel, [], 2, noise)
    with pytest.raises(TypeError, match=r"dictionary\[1\]"):
        DualSmooth(Slab().eval(), sel, [IsotropicGaussian(1.0), 0.5], 2, noise)
    with pytest.raises(TypeError, match="dictionary"):
        DualSmooth(Slab().eval(), sel, IsotropicGaussian(1.0), 2, noise)
    with pytest.raises(TypeError, match="selector_noise"):
        DualSmooth(Slab().eval(), sel, DICTIONARY, 2, DiagonalGaussian([0.25, 0.25]))
    with pytest.raises(TypeError, match="selector_noise"):
        DualSmooth(Slab().eval(), sel, DICTIONARY, 2, MixtureOfGaussians([0.25, 0.5]))
    with pytest.raises(TypeError, match="selector"):
        DualSmooth(Slab().eval(), "not a model", DICTIONARY, 2, noise)
    with pytest.raises(ValueError, match="num_classes"):
        DualSmooth(Slab().eval(), sel, DICTIONARY, 0, noise)
    x = torch.tensor([0.5, -0.3], dtype=torch.float64)
    # selector width mismatch: scores over 2 entries, dictionary of 3
    wide = DualSmooth(Slab().eval(), sel, DICTIONARY + [IsotropicGaussian(0.5)], 2, noise)
    with pytest.raises(LogitsError, match=r"selector.*len\(dictionary\) = 3"):
        wide.certify(x, 10, 100, 0.05, 10, 100, 0.05)
    with pytest.raises(LogitsError, match=r"selector.*len\(dictionary\) = 3"):
        wide.predict(x, 100, 0.05, 100, 0.05)
    model = dual()
    for kwargs, name in [
        (dict(alpha_sel=0.0), "alpha_sel"),
        (dict(alpha_sel=1.5), "alpha_sel"),
        (dict(alpha=1.0), "alpha"),
        (dict(alpha=-0.1), "alpha"),
        (dict(n_sel=0), "n_sel"),
        (dict(n0_sel=0), "n0_sel"),
        (dict(n=0), "n"),
        (dict(n0=0), "n0"),
    ]:
        args = dict(n0_sel=10, n_sel=100, alpha_sel=0.05, n0=10, n=100, alpha=0.05) | kwargs
        with pytest.raises(ValueError, match=rf"^{name} must"):
            model.certify(x, **args)
    with pytest.raises(ValueError, match="^alpha_sel must"):
        model.predict(x, 100, 0.0, 100, 0.05)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        model.certify(np.zeros(2), 10, 100, 0.05, 10, 100, 0.05)


# ---------------------------------------------------------------------- sequential mode


def test_sequential_selector_stops_early_and_classifier_radii():
    model = dual()
    x = torch.tensor([0.5, -0.8], dtype=torch.float64)  # the selector's p = Phi(3.2) = 0.9993
    cert = model.certify(
        x,
        10,
        100_000,
        0.001,
        10,
        100_000,
        0.001,
        generator=torch.Generator().manual_seed(0),
        selector_radii=[0.1],
        radii=[0.5],
    )
    assert cert.selected == 0 and cert.prediction == 1
    assert cert.selector.decided == (True,) and cert.selector.samples < 2000
    assert cert.selector_radius > 0.1
    assert cert.classifier is not None and cert.classifier.decided == (True,)
    assert cert.classifier.samples < 2000 and cert.classifier.radius > 0.5
    assert cert.l2_radius == pytest.approx(min(cert.selector_radius, cert.classifier.l2_radius))


SEQ_RUNS = 500


def test_sequential_selector_sound_binomial():
    """The binomial test of (a) with the selector's vote in sequential mode (up to 2,000 samples)."""
    model = dual()
    xs = inputs(SEQ_RUNS, seed=1)
    certs = certify_all(
        lambda x, gen: model.certify(
            torch.as_tensor(x), N0_SEL, 2000, ALPHA_SEL, N0, N, ALPHA_CLS, generator=gen, selector_radii=[0.05, 0.2]
        ),
        xs,
        5000,
    )
    violations, certified = count_violations(xs, certs)
    pvalue = binomtest(violations, SEQ_RUNS, ALPHA_TOTAL, alternative="greater").pvalue
    print(f"sequential: {violations} violations in {SEQ_RUNS} runs, {certified} certified, p = {pvalue:.3g}")
    assert certified > SEQ_RUNS // 3
    assert pvalue > 1e-3, (violations, SEQ_RUNS)


def test_constant_models_full_and_mixture_entries():
    """A full (rotated) entry and a true-mixture entry, with constant models: exact numbers again."""
    v1, v2 = np.array([1.0, 1.0]) / math.sqrt(2), np.array([1.0, -1.0]) / math.sqrt(2)
    full = FullGaussian(0.5 * np.outer(v1, v1) + 2.0 * np.outer(v2, v2))
    mixture = MixtureOfGaussians([0.25, 0.5])
    x = torch.zeros(2, dtype=torch.float64)
    q = norm.ppf(0.05 ** (1 / 100))
    cert = DualSmooth(Constant(1, 2).eval(), Constant(0, 2).eval(), [full, mixture], 2, IsotropicGaussian(1.0)).certify(
        x, 5, 100, 0.05, 5, 100, 0.05, generator=torch.Generator().manual_seed(0)
    )
    assert cert.selected == 0 and cert.region is not None and cert.region.kind == "full"
    np.testing.assert_allclose(cert.region.semi_axes, [0.5 * q, q], rtol=1e-9)
    assert cert.contains(0.99 * q * v2) and not cert.contains(1.01 * q * v2)  # cut by the ball
    assert cert.contains(0.49 * q * v1) and not cert.contains(0.51 * q * v1)  # cut by the ellipsoid
    cert = DualSmooth(Constant(1, 2).eval(), Constant(1, 2).eval(), [full, mixture], 2, IsotropicGaussian(0.1)).certify(
        x, 5, 100, 0.05, 5, 100, 0.05, generator=torch.Generator().manual_seed(0)
    )
    assert cert.selected == 1 and cert.classifier is not None and cert.region is not None
    assert cert.region.kind == "ball"  # a true mixture certifies an l2 ball
    assert cert.l2_radius == pytest.approx(min(0.1 * q, cert.classifier.l2_radius), rel=1e-12)
    assert cert.l2_radius == pytest.approx(0.1 * q, rel=1e-9)  # the mixture's ball is larger here


# ---------------------------------------------------------------------- one classifier per entry, l2 decisions


def test_one_classifier_per_entry():
    """Entry k certifies with its own classifier F_k: below the selector's boundary the slab under entry
    0, above it the constant class 0 under entry 1 (where the shared slab would give class 0 by g_1 = 0
    too, so the constant's certificate, p_lower = alpha^(1/n), shows which network ran)."""
    model = DualSmooth(
        [Slab().eval(), Constant(0, 2).eval()], HalfSpace([0.0, 1.0], 0.0).eval(), DICTIONARY, 2,
        IsotropicGaussian(SIGMA_E),
    )  # fmt: skip
    above = model.certify(torch.tensor([0.5, 0.8], dtype=torch.float64), 10, 200, 0.01, 10, 200, 0.01,
                          generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert above.selected == 1 and above.prediction == 0
    assert above.classifier is not None and above.classifier.p_lower == pytest.approx(0.01 ** (1 / 200), rel=1e-9)
    below = model.certify(torch.tensor([0.5, -0.8], dtype=torch.float64), 10, 200, 0.01, 10, 200, 0.01,
                          generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert below.selected == 0 and below.prediction == 1
    assert below.noise == "diagonal" and below.min_sigma == pytest.approx(0.25)
    assert below.samples == below.selector.samples + below.classifier.samples == 420
    sel = HalfSpace([0.0, 1.0], 0.0).eval()
    with pytest.raises(ValueError, match="classifier must give one callable per dictionary entry"):
        DualSmooth([Slab().eval()], sel, DICTIONARY, 2, IsotropicGaussian(SIGMA_E))
    with pytest.raises(TypeError, match=r"classifier\[1\] must be callable"):
        DualSmooth([Slab().eval(), 3], sel, DICTIONARY, 2, IsotropicGaussian(SIGMA_E))
    with pytest.raises(TypeError, match="classifier must be callable or a sequence"):
        DualSmooth(3, sel, DICTIONARY, 2, IsotropicGaussian(SIGMA_E))


def test_own_norm_radii():
    assert own_norm_radii(IsotropicGaussian(0.5), [0.1, 0.2]) == (0.1, 0.2)
    assert own_norm_radii(MixtureOfGaussians([0.25, 0.5]), [0.3]) == (0.3,)
    assert own_norm_radii(DiagonalGaussian([0.25, 0.5]), [0.1, 0.2]) == pytest.approx((0.4, 0.8))


L2_RADII = (0.05, 0.1, 0.2, 0.4)


def test_sequential_l2_decisions_sound_binomial():
    """``certify(l2_radii=...)``: over 2,000 seeded runs (a quarter on the selector's boundary) a radius
    decided certified whose l2 ball reaches past the true region of G happens no more often than
    alpha_sel + alpha_cls = 0.05 allows, and a radius is certified only where both stages decided it
    (as in ``certify.sequential``, a decision is valid jointly with the stopping look's bound, which may
    itself be smaller or abstain); easy inputs stop early."""
    model = dual()
    xs = inputs(RUNS, seed=1)
    certs = certify_all(
        lambda x, gen: model.certify(
            torch.as_tensor(x), N0_SEL, 400, ALPHA_SEL, N0, 400, ALPHA_CLS, generator=gen, l2_radii=L2_RADII
        ),
        xs,
        5000,
    )
    false, certified = 0, 0
    for x, cert in zip(xs, certs):
        assert cert.radii == L2_RADII and len(cert.decided) == len(L2_RADII)
        wrong = False
        for r, d in zip(L2_RADII, cert.decided):
            if d:
                certified += 1
                i = L2_RADII.index(r)
                assert cert.selector.decided[i] and cert.classifier is not None and cert.classifier.decided[i]
                wrong |= reaches_past_truth(lambda delta, r=r: np.linalg.norm(delta) <= r, x, cert.prediction)
        false += wrong
    pvalue = binomtest(false, RUNS, ALPHA_TOTAL, alternative="greater").pvalue
    print(f"dual sequential: {false} runs with a false decision in {RUNS}, {certified} certified decisions")
    assert certified > RUNS // 2 and false / RUNS <= ALPHA_TOTAL and pvalue > 1e-3
    # the sequential stages stop early on easy inputs
    assert np.mean([c.samples for c in certs]) < 0.8 * (N0_SEL + 400 + N0 + 400)
    with pytest.raises(ValueError, match="l2_radii replaces"):
        model.certify(torch.zeros(2, dtype=torch.float64), 10, 100, 0.05, 10, 100, 0.05, l2_radii=[0.1], radii=[0.1])


def test_inner_region_keeps_an_uncapped_region_and_stays_sound_above_the_dense_limit():
    """``inner_region``: a region whose semi-axes all lie within the cap is its own inner region (structured or not);
    a structured one above ``DENSE_LIMIT`` whose semi-axes pass the cap (no dense form to cap) is replaced by its
    inscribed ball, which lies in both the region and the cap's ball."""
    from certify import SpikedGaussian
    from certify.dual import inner_region
    from certify.structured import DENSE_LIMIT

    c = np.zeros(2)
    diag = Ellipsoid(c, np.array([1.0, 3.0]), 1.0)
    assert inner_region(diag, 3.0) is diag and inner_region(diag, 2.0).outer_radius == pytest.approx(2.0)
    d = DENSE_LIMIT + 4
    U = np.zeros((d, 1))
    U[7, 0] = 1.0
    region = SpikedGaussian(1.0, U, [3.0]).region(np.zeros(d), 0.5)  # semi-axes 0.5 (d - 1 of them) and 1.5
    assert inner_region(region, 2.0) is region
    ball = inner_region(region, 1.0)  # 1.5 passes the cap; no dense form at this d
    assert ball.kind == "ball" and ball.l2_radius == pytest.approx(0.5) and ball.proxy_radius == pytest.approx(0.5)
    rng = np.random.default_rng(0)
    u = rng.normal(size=(50, d))
    u *= 0.5 * (1 - 1e-12) / np.linalg.norm(u, axis=1, keepdims=True)  # on the inner ball's boundary
    assert np.all(region.contains_delta(u)) and np.all(np.linalg.norm(u, axis=1) <= 1.0)


@given(st.floats(1e-3, 1e3), st.floats(1e-3, 1e3))
@settings(max_examples=300, deadline=None)
def test_capped_semi_axes_never_pass_the_cap_by_rounding(r, cap):
    region = Ellipsoid(np.zeros(3), np.array([cap / r * 0.5, cap / r, cap / r * 7.0]), r)
    assert float(capped_ellipsoid(region, cap).semi_axes.max()) <= cap


def test_sequential_decisions_of_an_abstaining_selector_are_never_certified():
    """A selector whose vote is split at x (its half-space through x) abstains: no radius is certified, and a
    radius the selector leaves open is undecided (the classifier stage never ran), not "not robust"."""
    model = DualSmooth(
        Constant(1, 2).eval(), HalfSpace([1.0, 0.0], 0.0).eval(), [IsotropicGaussian(0.5)] * 2, 2,
        IsotropicGaussian(1.0),
    )  # fmt: skip
    x = torch.zeros(2, dtype=torch.float64)
    cert = model.certify(
        x, 10, 2000, 0.01, 10, 2000, 0.01, generator=torch.Generator().manual_seed(4), l2_radii=[0.0, 2.0]
    )
    assert cert.abstained and cert.abstained_by == "selector" and cert.classifier is None
    assert cert.decided is not None and True not in cert.decided
    assert cert.selector.decided is not None
    for sel, both in zip(cert.selector.decided, cert.decided):
        assert both == (False if sel is False else None)


def test_failure_probabilities_must_sum_below_one():
    model = DualSmooth(
        Constant(1, 2).eval(), Constant(0, 1).eval(), [IsotropicGaussian(0.5)], 2, IsotropicGaussian(1.0)
    )
    with pytest.raises(ValueError, match="alpha_sel \\+ alpha"):
        model.certify(torch.zeros(2, dtype=torch.float64), 5, 10, 0.6, 5, 10, 0.5)
