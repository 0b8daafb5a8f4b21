"""Low-rank plus diagonal and spiked noise (``manifolds.low_rank``): the manifold and the noise map against both
batteries, and every claim against the dense d x d path at small d.

The dense reference of a point (U, e, a) is the covariance Sigma = diag(a^2) + abar^2 U diag(e^2) U^T: its
eigenvalues (the smallest scale is sqrt(lambda_min), bounded below by min a and equal to it in the spiked form), its
log-determinant (the volume) and, for a half-space classifier, the closed form P(class 0) = Phi((b - w.x) /
sqrt(w^T Sigma w)) (README of ``certify``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import binomtest
from scipy.stats import norm as normal

import manifolds
from certify import LowRankGaussian, Smooth
from manifolds import LowRankNoise, LowRankSPD, SignedSpikedNoise, SignedSpikedSPD
from manifolds.low_rank import SPIKE_START, start_basis, stiefel_exp, stiefel_inner, stiefel_log, stiefel_proj
from manifolds.testing import check_manifold, check_noise_map
from tests.classifiers import HalfSpace

F64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _dense_cov(noise: LowRankNoise, x: torch.Tensor) -> torch.Tensor:
    u, e, a, abar = noise.parts(x)
    w = u * (abar[..., None] * e).unsqueeze(-2)
    return torch.diag_embed(a.square()) + w @ w.transpose(-1, -2)


# ---------------------------------------------------------------------------------------------- batteries
@pytest.mark.parametrize(("dim", "rank", "spiked"), [(6, 2, False), (6, 2, True), (4, 4, False), (5, 1, True)])
def test_both_batteries(dim, rank, spiked):
    """QR retraction: first order (``retraction_order=1``)."""
    m = LowRankSPD(dim, rank, spiked=spiked)
    check_manifold(m, max_examples=8, retraction_order=1)
    check_noise_map(LowRankNoise(dim, rank, spiked), m, max_examples=8)
    assert isinstance(manifolds.noise_for(m), LowRankNoise)


def test_the_noise_battery_catches_a_floor_that_ignores_the_diagonal():
    class SpikeOnlyFloor(LowRankNoise):  # caps the spikes but leaves a below the level
        def project_floor(self, x, lambda_min, lambda_max=None):
            return x if lambda_max is None else super().project_floor(x, 0.0 * torch.as_tensor(lambda_min), lambda_max)

    with pytest.raises(AssertionError, match="floor"):
        check_noise_map(SpikeOnlyFloor(6, 2), LowRankSPD(6, 2), max_examples=10, shrink=False)


# ---------------------------------------------------------------------------------------------- geometry
def test_stiefel_canonical_exp_log_and_distance():
    """Edelman's geodesic stays on St(d, k), has the speed of its tangent, and Zimmermann's log inverts it."""
    u0 = start_basis(9, 3)
    g = torch.randn(4, 9, 3, dtype=F64, generator=_gen(0))
    t = stiefel_proj(u0, g)
    t = 0.8 * t / stiefel_inner(u0, t, t).sqrt()[:, None, None]
    y = stiefel_exp(u0, t)
    torch.testing.assert_close(y.transpose(-1, -2) @ y, torch.eye(3, dtype=F64).expand(4, 3, 3), atol=1e-12, rtol=0)
    torch.testing.assert_close(stiefel_log(u0, y), t, atol=1e-9, rtol=0)
    # geodesic speed: the curve's length over [0, 1] in the canonical metric is ||t|| (= 0.8)
    steps = torch.linspace(0, 1, 201, dtype=F64)
    pts = torch.stack([stiefel_exp(u0, s * t[0]) for s in steps])
    diff = (pts[1:] - pts[:-1]) / (steps[1] - steps[0])
    mid = 0.5 * (pts[1:] + pts[:-1])
    speed = stiefel_inner(mid, diff, diff).sqrt()
    assert float((speed - 0.8).abs().max()) < 1e-3


def test_rgd_step_in_the_point_is_tangent_and_projects():
    m = LowRankSPD(7, 3)
    x = m.random_point(2, generator=_gen(1))
    g = torch.randn(x.shape, dtype=F64, generator=_gen(2))
    r = m.egrad2rgrad(x, g)
    torch.testing.assert_close(m.proj(x, r), r)
    u = m.layout.frame(x)
    skew = u.transpose(-1, -2) @ m.layout.frame(r)
    torch.testing.assert_close(skew, -skew.transpose(-1, -2))
    for method in ("exp", "retr"):
        m.check_point(m.step(x, r, 0.3, method=method, max_norm=0.5))


def test_points_and_refusals():
    m = LowRankSPD(5, 2, spiked=True)
    p = m.from_parts(start_basis(5, 2), torch.tensor([0.5, -2.0], dtype=F64), 0.3)
    torch.testing.assert_close(m.layout.diagonal(p), torch.full((5,), 0.3, dtype=F64))
    bad = p.clone()
    bad[2, 2] = 0.1  # the e column's padding
    with pytest.raises(ValueError, match="must be zero"):
        m.check_point(bad)
    bad = p.clone()
    bad[0, 3] = 0.5  # a not constant in the spiked form
    with pytest.raises(ValueError, match="spiked"):
        m.check_point(bad)
    bad = p.clone()
    bad[:, 0] *= 2
    with pytest.raises(ValueError, match="orthonormal"):
        m.check_point(bad)
    for rank in (0, 6, 1.5, True):
        with pytest.raises(ValueError, match="rank"):
            LowRankSPD(5, rank)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="isotropic"):
        LowRankNoise(5, 2, spiked=True).from_scales(torch.tensor([[1.0, 1, 1, 1, 2]], dtype=F64))


# ---------------------------------------------------------------------------------------------- noise map
@pytest.mark.parametrize("spiked", [False, True])
def test_spectral_terms_against_the_dense_covariance(spiked):
    m, noise = LowRankSPD(8, 3, spiked=spiked, log_eig_range=1.5), LowRankNoise(8, 3, spiked)
    x = m.random_point(4, generator=_gen(3))
    eig = torch.linalg.eigvalsh(_dense_cov(noise, x))
    torch.testing.assert_close(noise.log_volume(x), 0.5 * eig.log().mean(-1), rtol=1e-12, atol=1e-13)
    low = noise.min_eigenvalue(x)
    assert bool((low <= eig[:, 0].sqrt() * (1 + 1e-12)).all())
    if spiked:  # exact: the spikes only add variance, the complement keeps s^2
        torch.testing.assert_close(low, eig[:, 0].sqrt(), rtol=1e-12, atol=0)


def test_covariance_is_the_dense_one_and_the_samples_have_it():
    m, noise = LowRankSPD(6, 2, log_eig_range=0.8), LowRankNoise(6, 2)
    x = m.random_point(generator=_gen(4))
    cov = _dense_cov(noise, x)
    obj = noise.to_noise(x)
    assert isinstance(obj, LowRankGaussian)
    np.testing.assert_allclose(obj.covariance(), cov.numpy(), rtol=1e-10, atol=1e-12)
    n = 40_000
    z = torch.randn(1, n, 8, dtype=F64, generator=_gen(5))
    eps = noise.apply(x.unsqueeze(0), z)[0]
    emp = eps.T @ eps / n
    se = ((torch.diagonal(cov)[:, None] * torch.diagonal(cov)[None, :] + cov.square()) / n).sqrt()
    assert float(((emp - cov).abs() / se).max()) < 5.0  # 21 entries, each ~N(0, 1): P(max > 5) < 1e-5
    # the certify object draws the same noise from the same generator
    draw, _ = obj.sample(5, 6, _gen(6), "cpu", F64)
    zz = torch.randn(5, 8, dtype=F64, generator=_gen(6))
    torch.testing.assert_close(draw, noise.apply(x.unsqueeze(0), zz.unsqueeze(0))[0])


def test_floor_and_ceiling_bound_the_dense_spectrum():
    m, noise = LowRankSPD(8, 3, log_eig_range=1.5), LowRankNoise(8, 3)
    x = m.random_point(5, generator=_gen(7))
    eig = torch.linalg.eigvalsh(_dense_cov(noise, x)).sqrt()
    lo = eig[:, 0] * torch.linspace(0.5, 3.0, 5, dtype=F64)
    hi = lo * torch.tensor([100.0, 10.0, 3.0, 1.5, 1.0], dtype=F64)
    f = noise.project_floor(x, lo, hi)
    m.check_point(f)
    ef = torch.linalg.eigvalsh(_dense_cov(noise, f)).sqrt()
    assert bool((ef[:, 0] >= lo * (1 - 1e-10)).all()) and bool((ef[:, -1] <= hi * (1 + 1e-10)).all())
    torch.testing.assert_close(m.layout.frame(f), m.layout.frame(x))  # U kept
    torch.testing.assert_close(noise.project_floor(f, lo, hi), f)


def test_cold_start_is_sigma_identity_up_to_a_negligible_spike():
    noise = LowRankNoise(784, 8, spiked=True)
    x = noise.from_scales(torch.full((2, 784), 0.25, dtype=F64))
    LowRankSPD(784, 8, spiked=True).check_point(x)
    torch.testing.assert_close(noise.min_eigenvalue(x), torch.full((2,), 0.25, dtype=F64), rtol=0, atol=0)
    gain = float(noise.log_volume(x)[0]) - math.log(0.25)
    assert 0 < gain <= 8 / (2 * 784) * SPIKE_START**2 * (1 + 1e-6)
    torch.testing.assert_close(x[0], x[1])  # deterministic U


def test_rotation_equivariance_of_the_spiked_form():
    """The spiked form's noise follows a rotation of the inputs: rotating U by Q gives noise Q eps (same z)."""
    d, k = 6, 2
    m, noise = LowRankSPD(d, k, spiked=True), LowRankNoise(d, k, spiked=True)
    x = m.random_point(generator=_gen(8))
    q = torch.linalg.qr(torch.randn(d, d, dtype=F64, generator=_gen(9)))[0]
    rotated = m.layout.pack(q @ m.layout.frame(x), m.layout.spikes(x), m.layout.diagonal(x))
    m.check_point(rotated)
    torch.testing.assert_close(_dense_cov(noise, rotated), q @ _dense_cov(noise, x) @ q.T)
    torch.testing.assert_close(noise.log_volume(rotated), noise.log_volume(x))
    torch.testing.assert_close(noise.min_eigenvalue(rotated), noise.min_eigenvalue(x))


# ---------------------------------------------------------------------------------------------- soundness
@pytest.mark.parametrize("spiked", [False, True])
def test_halfspace_probability_is_the_closed_form_and_radii_stay_below_the_truth(spiked):
    """Under a point's noise a half-space's class-0 frequency is Phi(margin / sqrt(w^T Sigma w)) (binomial test), and
    Cohen's CERTIFY through the point's ``certify`` noise never certifies an l2 ball beyond the plane."""
    d, k = 12, 3
    m, noise = LowRankSPD(d, k, spiked=spiked, log_eig_range=0.7), LowRankNoise(d, k, spiked)
    rng = np.random.default_rng(11)
    points = m.random_point(6, generator=_gen(12))
    n, certified = 4000, 0
    for i, x in enumerate(points):
        cov = _dense_cov(noise, x).numpy()
        w = rng.normal(size=d)
        if i % 2:  # a plane along a spike: the direction the noise is largest in
            w = m.layout.frame(x)[:, 0].numpy() + 0.1 * w
        c = rng.normal(size=d)
        sd = math.sqrt(float(w @ cov @ w))
        b = float(w @ c + 1.2 * sd * (i % 3 - 0.5))  # margins of both signs
        p0 = float(normal.cdf((b - w @ c) / sd))
        z = torch.randn(1, n, d + k, dtype=F64, generator=_gen(100 + i))
        eps = noise.apply(x.unsqueeze(0), z)[0].numpy()
        hits = int(((c + eps) @ w <= b).sum())
        assert binomtest(hits, n, p0).pvalue > 1e-4
        cert = Smooth(HalfSpace(w, b).eval(), noise.to_noise(x), 2).certify(
            torch.as_tensor(c), 100, 20_000, 1e-3, generator=_gen(200 + i)
        )
        if cert.prediction >= 0:
            certified += 1
            truth = abs(b - w @ c) / np.linalg.norm(w)
            assert cert.prediction == int(w @ c > b)
            assert cert.l2_radius <= truth * (1 + 1e-9)
            assert cert.l2_radius == pytest.approx(cert.radius * float(noise.min_eigenvalue(x)), rel=1e-9)
            assert math.isfinite(cert.proxy_radius)
    assert certified >= 3


def test_components_split_the_metric_for_per_factor_adam():
    """``component_inner`` sums to ``inner`` and ``scale_components`` scales each factor's block (U, each e_j, each a_i
    or s): what ``RiemannianAdam`` keeps its per-factor second moments with."""
    for spiked in (False, True):
        m = LowRankSPD(6, 2, spiked=spiked)
        x = m.random_point(3, generator=_gen(20))
        u = m.egrad2rgrad(x, torch.randn(x.shape, dtype=F64, generator=_gen(21)))
        parts = m.component_inner(x, u, u)
        assert parts.shape == (3, m.components) == (3, 1 + 2 + (1 if spiked else 6))
        torch.testing.assert_close(parts.sum(-1), m.inner(x, u, u))
        c = torch.rand(3, m.components, dtype=F64, generator=_gen(22)) + 0.5
        scaled = m.scale_components(u, c)
        torch.testing.assert_close(m.component_inner(x, scaled, scaled), parts * c.square())
        torch.testing.assert_close(m.scale_components(u, torch.ones_like(c)), u)


def test_nothing_of_size_d_by_d_at_imagenet_size():
    """Every operation of a step runs at d = 150,528 (3 x 224 x 224; a d x d float64 matrix would be 181 GB)."""
    d, k = 3 * 224 * 224, 2
    m, noise = LowRankSPD(d, k), LowRankNoise(d, k)
    x = noise.from_scales(torch.full((1, d), 0.25, dtype=F64))
    g = torch.randn(x.shape, dtype=F64, generator=_gen(30))
    r = m.egrad2rgrad(x, g)
    for method in ("exp", "retr"):
        m.check_point(m.step(x, r, 0.1, method=method, max_norm=0.5))
    m.check_point(noise.project_floor(x, 0.3, 1.0))
    assert noise.apply(x, torch.randn(1, 4, d + k, generator=_gen(31))).shape == (1, 4, d)
    assert float(noise.min_eigenvalue(x)) == 0.25 and abs(float(noise.log_volume(x)) - math.log(0.25)) < 1e-9
    assert m.component_inner(x, r, r).shape == (1, m.components)


# ---------------------------------------------------------------------------------------------- spikes of either sign
@pytest.mark.parametrize(("dim", "rank"), [(6, 2), (4, 4)])
def test_signed_spiked_batteries(dim, rank):
    """The signed spiked map lists its eigenvalues: the battery then holds them, the floor (an eigenvalue clamp) and
    the smallest scale exactly against the dense path."""
    m = SignedSpikedSPD(dim, rank)
    check_manifold(m, max_examples=8, retraction_order=1)
    check_noise_map(SignedSpikedNoise(dim, rank), m, max_examples=8)
    assert isinstance(manifolds.noise_for(m), SignedSpikedNoise)


def test_signed_spiked_cold_start_is_exactly_isotropic_and_shrinks_along_a_spike():
    noise = SignedSpikedNoise(784, 8)
    x = noise.from_scales(torch.full((1, 784), 0.25, dtype=F64))
    assert float(noise.min_eigenvalue(x)) == 0.25 and float(noise.log_volume(x)) == math.log(0.25)
    m = SignedSpikedSPD(12, 2)
    p = m.from_parts(start_basis(12, 2), torch.tensor([-1.0, 0.5], dtype=F64), 0.3)
    eig = torch.linalg.eigvalsh(torch.as_tensor(m.default_noise().to_noise(p).scale()))
    torch.testing.assert_close(
        eig, torch.sort(torch.tensor([0.3] * 10 + [0.3 * math.exp(-1), 0.3 * math.exp(0.5)], dtype=F64)).values
    )
    assert float(m.default_noise().min_eigenvalue(p)) == pytest.approx(0.3 * math.exp(-1.0), rel=1e-12)
