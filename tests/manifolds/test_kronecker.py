"""Kronecker-structured SPD noise (``manifolds.kronecker``): the manifold and the noise map against both batteries,
and every exact claim against the dense d x d path at small d.

The dense reference of a point blockdiag(s, C_1, ..., C_m) is the scale S = s C_1 (x) ... (x) C_m (``torch.kron``):
its SPD(d) distance (the manifold's metric is the one SPD(d) induces on Kronecker matrices), its eigenvalues (the
noise's smallest scale and volume), S^2 (the covariance) and, for a half-space classifier, the closed form
P(class 0) = Phi((b - w.x) / ||S w||) (README of ``certify``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import binomtest
from scipy.stats import norm as normal

import ddrs
import manifolds
from certify import KroneckerGaussian, Smooth
from manifolds import SPD, KroneckerNoise, KroneckerSPD, MatrixNoise
from manifolds.testing import check_manifold, check_noise_map
from tests.classifiers import HalfSpace

F64 = torch.float64


def _dense(noise: KroneckerNoise, x: torch.Tensor) -> torch.Tensor:
    """The dense scale s (x)_i C_i of one point."""
    s, factors = noise.factors(x)
    out = torch.ones(1, 1, dtype=F64)
    for c in factors:
        out = torch.kron(out, c)
    return s * out


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------------- batteries
@pytest.mark.parametrize(
    ("shape", "metric"),
    [((2, 3), "affine-invariant"), ((2, 3), "log-euclidean"), ((1, 2, 3), "affine-invariant"), ((4,), "ai")],
)
def test_both_batteries(shape, metric):
    m = KroneckerSPD(shape, metric)
    check_manifold(m, max_examples=10)
    check_noise_map(KroneckerNoise(shape), m, max_examples=10)
    assert isinstance(manifolds.noise_for(m), KroneckerNoise)  # the map RDDRS picks for these points


def test_the_noise_battery_catches_a_floor_that_misses_the_product():
    class FactorwiseFloor(KroneckerNoise):  # floors every factor at the level: the product falls below it
        def project_floor(self, x, lambda_min, lambda_max=None):
            s, factors = self.factors(x.to(F64))
            lam = [torch.linalg.eigvalsh(c)[..., 0] for c in factors]
            return super().project_floor(x, min(float(v.min()) for v in lam) * float(s.min()))

    with pytest.raises(AssertionError, match="floor"):
        check_noise_map(FactorwiseFloor((2, 3)), KroneckerSPD((2, 3)), max_examples=10, shrink=False)


# ---------------------------------------------------------------------------------------------- geometry
@pytest.mark.parametrize("metric", ["affine-invariant", "log-euclidean"])
def test_distance_exp_and_norm_are_those_of_spd_d(metric):
    """The Kronecker matrices are totally geodesic in SPD(d) and carry its metric: dist, Exp and ||.|| agree with
    SPD(d)'s on the dense products."""
    m, noise, full = KroneckerSPD((2, 3, 2), metric), KroneckerNoise((2, 3, 2)), SPD(12, metric)
    x, y = m.random_point(2, generator=_gen(0))
    torch.testing.assert_close(m.dist(x, y), full.dist(_dense(noise, x), _dense(noise, y)), rtol=1e-9, atol=1e-12)
    u = m.log(x, y)
    torch.testing.assert_close(
        _dense(noise, m.exp(x, 0.7 * u)), full.exp(_dense(noise, x), 0.7 * _dense_tangent(noise, x, u))
    )
    torch.testing.assert_close(
        m.norm(x, u), full.norm(_dense(noise, x), _dense_tangent(noise, x, u)), rtol=1e-9, atol=0
    )


def _dense_tangent(noise: KroneckerNoise, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """dS of a tangent (u_s, U_1, ..., U_m): the derivative of s (x)_i C_i (product rule)."""
    xr = x.clone().requires_grad_(True)
    t = torch.zeros((), dtype=F64, requires_grad=True)
    dense = _dense(noise, xr + t * u)
    return torch.stack([torch.autograd.grad(v, t, retain_graph=True)[0] for v in dense.reshape(-1)]).reshape(
        dense.shape
    )


def test_points_scale_ambiguity_and_refusals():
    m = KroneckerSPD((2, 3))
    a = torch.tensor([[2.0, 0.3], [0.3, 1.0]], dtype=F64)
    b = torch.tensor([[1.0, 0.1, 0.0], [0.1, 3.0, 0.2], [0.0, 0.2, 0.5]], dtype=F64)
    p, q = m.from_factors([a, b]), m.from_factors([4 * a, b / 4])  # (a C_1) (x) (C_2 / a): one point
    torch.testing.assert_close(p, q)
    noise = KroneckerNoise((2, 3))
    torch.testing.assert_close(_dense(noise, p), torch.kron(a, b))
    with pytest.raises(ValueError, match="determinant 1"):
        m.check_point(m.layout.pack(torch.tensor(1.0, dtype=F64), [a, b]))
    bad = p.clone()
    bad[0, 3] = bad[3, 0] = 0.1
    with pytest.raises(ValueError, match="outside the blocks"):
        m.check_point(bad)
    with pytest.raises(ValueError, match="Bures-Wasserstein"):
        KroneckerSPD((2, 3), "bures-wasserstein")
    for shape in ((), 6, (2, 0), (2, 1.5)):
        with pytest.raises(ValueError, match="shape"):
            KroneckerSPD(shape)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="axis 1 needs"):
        m.from_factors([a, a])


def test_frame_steps_are_the_manifold_steps():
    """The per-factor eigenframe (the step rules' fast path) takes the manifold's own steps, clipped in its metric."""
    m = KroneckerSPD((2, 3, 4))
    x = m.random_point(3, generator=_gen(0))
    g = torch.randn(x.shape, dtype=F64, generator=_gen(1))
    frame = m.eigenframe(x)
    assert frame is not None and "per factor" in frame.metric_name
    rgrad, w = m.egrad2rgrad(x, g), frame.whiten_gradient(g)
    torch.testing.assert_close(frame.tangent(w), rgrad)
    torch.testing.assert_close(frame.norm(w), m.norm(x, rgrad))
    for method in ("exp", "retr"):
        rule = ddrs.RiemannianAscent(0.3, method=method, max_step_norm=0.5)
        torch.testing.assert_close(rule.update(m, x, g, frame=frame), rule.update(m, x, g, frame=None))
    adam, state, p = ddrs.RiemannianAdam(0.05), ddrs.RiemannianAdam(0.05).init_state(), x
    for _ in range(3):
        p = adam.update(m, p, g, state, m.eigenframe(p))
        m.check_point(p)
    assert float(m.dist(x, p).min()) > 0


# ---------------------------------------------------------------------------------------------- noise map
def test_spectral_terms_are_exact():
    m, noise = KroneckerSPD((3, 2, 2), log_eig_range=2.0), KroneckerNoise((3, 2, 2))
    x = m.random_point(4, generator=_gen(2))
    eig = torch.linalg.eigvalsh(torch.stack([_dense(noise, p) for p in x]))
    torch.testing.assert_close(noise.min_eigenvalue(x), eig[:, 0], rtol=1e-12, atol=0)
    torch.testing.assert_close(noise.log_volume(x), eig.log().mean(-1), rtol=1e-12, atol=1e-14)


def test_covariance_is_the_dense_square_and_the_samples_have_it():
    m, noise = KroneckerSPD((2, 3)), KroneckerNoise((2, 3))
    x = m.random_point(generator=_gen(3))
    S = _dense(noise, x)
    obj = noise.to_noise(x)
    assert isinstance(obj, KroneckerGaussian)
    np.testing.assert_allclose(obj.covariance(), (S @ S).numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(obj.scale(), S.numpy(), rtol=1e-10, atol=1e-12)
    n = 40_000
    z = torch.randn(1, n, 6, dtype=F64, generator=_gen(4))
    eps = noise.apply(x.unsqueeze(0), z)[0]
    torch.testing.assert_close(eps, z[0] @ S)
    cov = S @ S
    emp = eps.T @ eps / n
    se = ((torch.diagonal(cov)[:, None] * torch.diagonal(cov)[None, :] + cov.square()) / n).sqrt()
    assert float(((emp - cov).abs() / se).max()) < 5.0  # 21 entries, each ~N(0, 1): P(max > 5) < 1e-5


def test_floor_keeps_structure_and_bounds():
    m, noise = KroneckerSPD((3, 4), log_eig_range=1.5), KroneckerNoise((3, 4))
    x = m.random_point(5, generator=_gen(5))
    eig = torch.linalg.eigvalsh(torch.stack([_dense(noise, p) for p in x]))
    lo = eig[:, 0] * torch.linspace(0.5, 3.0, 5, dtype=F64)
    hi = lo * torch.tensor([100.0, 10.0, 3.0, 1.5, 1.0], dtype=F64)
    f = noise.project_floor(x, lo, hi)
    m.check_point(f)
    ef = torch.linalg.eigvalsh(torch.stack([_dense(noise, p) for p in f]))
    assert bool((ef[:, 0] >= lo * (1 - 1e-10)).all()) and bool((ef[:, -1] <= hi * (1 + 1e-10)).all())
    torch.testing.assert_close(noise.min_eigenvalue(f), ef[:, 0], rtol=1e-12, atol=0)
    # the factors keep their eigenvectors: each floored factor commutes with the original one
    for c, cf in zip(noise.factors(x)[1], noise.factors(f)[1]):
        torch.testing.assert_close(c @ cf, cf @ c)
    assert torch.equal(noise.project_floor(x, 0.5 * eig[:, 0]), x)  # the identity above the floor
    torch.testing.assert_close(noise.project_floor(f, lo, hi), f)


def test_one_factor_floor_is_the_dense_clamp():
    m, noise = KroneckerSPD((5,), log_eig_range=1.5), KroneckerNoise((5,))
    x = m.random_point(3, generator=_gen(6))
    dense = torch.stack([_dense(noise, p) for p in x])
    lam = torch.linalg.eigvalsh(dense)
    lo, hi = lam[:, 1], lam[:, 3]
    ours = torch.stack([_dense(noise, p) for p in noise.project_floor(x, lo, hi)])
    torch.testing.assert_close(ours, MatrixNoise(5).project_floor(dense, lo, hi))


def test_from_scales_takes_separable_theta_and_refuses_others():
    noise = KroneckerNoise((2, 3))
    rows, cols = torch.tensor([0.5, 2.0], dtype=F64), torch.tensor([1.0, 3.0, 0.2], dtype=F64)
    theta = torch.stack([0.3 * torch.ones(6, dtype=F64), 0.7 * torch.kron(rows, cols)])
    x = noise.from_scales(theta)
    KroneckerSPD((2, 3)).check_point(x)
    torch.testing.assert_close(torch.stack([torch.diagonal(_dense(noise, p)) for p in x]), theta)
    with pytest.raises(ValueError, match="not a Kronecker product"):
        noise.from_scales(torch.tensor([[1.0, 1.0, 1.0, 1.0, 1.0, 2.0]], dtype=F64))


# ---------------------------------------------------------------------------------------------- soundness
def test_halfspace_probability_is_the_closed_form_and_radii_stay_below_the_truth():
    """Under the noise of a point, a half-space's class-0 frequency is Phi(margin / ||S w||) (binomial test), and
    Cohen's CERTIFY through the point's ``certify`` noise never certifies an l2 ball beyond the plane."""
    shape, d = (2, 2, 3), 12
    m, noise = KroneckerSPD(shape, log_eig_range=0.7), KroneckerNoise(shape)
    rng = np.random.default_rng(7)
    points = m.random_point(6, generator=_gen(7))
    n, certified = 4000, 0
    for k, x in enumerate(points):
        S = _dense(noise, x).numpy()
        w = rng.normal(size=d)
        c = rng.normal(size=d)
        b = float(w @ c + 1.2 * np.linalg.norm(S @ w) * (k % 3 - 0.5))  # margins of both signs
        p0 = float(normal.cdf((b - w @ c) / np.linalg.norm(S @ w)))
        z = torch.randn(1, n, d, dtype=F64, generator=_gen(100 + k))
        eps = noise.apply(x.unsqueeze(0), z)[0].numpy()
        hits = int(((c + eps) @ w <= b).sum())
        assert binomtest(hits, n, p0).pvalue > 1e-4
        cert = Smooth(HalfSpace(w, b).eval(), noise.to_noise(x), 2).certify(
            torch.as_tensor(c), 100, 20_000, 1e-3, generator=_gen(200 + k)
        )
        if cert.prediction >= 0:
            certified += 1
            truth = abs(b - w @ c) / np.linalg.norm(w)
            assert cert.prediction == int(w @ c > b)
            assert cert.l2_radius <= truth * (1 + 1e-9)
            assert cert.l2_radius == pytest.approx(cert.radius * float(noise.min_eigenvalue(x)), rel=1e-9)
            assert math.isfinite(cert.proxy_radius)
    assert certified >= 3
