"""Structured noise (``certify.structured``): Kronecker and low-rank-plus-diagonal covariances.

Each structure is held against the dense ``FullGaussian`` path with the dense scale (Kronecker: the
Kronecker product of the factors; low rank: the symmetric square root of Sigma): the same draws on the
same seed where the sampling is the same (Kronecker), the same regions given the same p_lower (radii,
norms, membership), and soundness by the half-space's closed form (README of ``certify``: for noise of
covariance Sigma, P(class 0) = Phi((b - w.x) / sqrt(w^T Sigma w)), so the largest certifiable region
{delta^T Sigma^-1 delta <= r^2} has r = (b - w.x) / sqrt(w^T Sigma w)).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy.stats import norm as normal

from certify import (
    FullGaussian,
    KroneckerEllipsoid,
    KroneckerGaussian,
    LowRankEllipsoid,
    LowRankGaussian,
    Memory,
    Smooth,
    certificate_from_bound,
    clopper_pearson_lower,
    gaussian_radius,
)
from certify.intersection import separation_gap
from certify.pairs import (
    ellipsoids_intersect,
    intersection_value,
    kronecker_ellipsoids_intersect,
    kronecker_separating_direction,
    kronecker_separation_gap,
)
from certify.structured import DENSE_LIMIT
from tests.classifiers import HalfSpace


def _spd(rng: np.random.Generator, n: int, log_cond: float, scale: float = 1.0) -> np.ndarray:
    """A random SPD matrix with eigenvalues spread over exp([-log_cond/2, log_cond/2]) * scale."""
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    if n == 1:
        vals = np.array([scale])
    else:
        vals = scale * np.exp(np.linspace(-log_cond / 2, log_cond / 2, n)[rng.permutation(n)])
    c = (q * vals) @ q.T
    return 0.5 * (c + c.T)


def _dense_root(cov: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh(cov)
    root = (vecs * np.sqrt(vals)) @ vecs.T
    return 0.5 * (root + root.T)


@st.composite
def kronecker_problem(draw, max_factors=3, max_side=4):
    shape = tuple(draw(st.lists(st.integers(1, max_side), min_size=1, max_size=max_factors)))
    seed = draw(st.integers(0, 2**31 - 1))
    cond = draw(st.floats(1.0, 1e4))  # condition number of the whole scale S
    rng = np.random.default_rng(seed)
    per = math.log(cond) / len(shape)
    factors = [_spd(rng, n, per, scale=float(np.exp(rng.uniform(-0.5, 0.5)))) for n in shape]
    return KroneckerGaussian(factors), factors, rng


@st.composite
def lowrank_problem(draw, max_dim=12):
    d = draw(st.integers(2, max_dim))
    k = draw(st.integers(1, min(d, 4)))
    spiked = draw(st.booleans())
    seed = draw(st.integers(0, 2**31 - 1))
    cond = draw(st.floats(1.0, 1e4))  # of Sigma's scale: lam up to cond^2 * min D
    rng = np.random.default_rng(seed)
    U, _ = np.linalg.qr(rng.normal(size=(d, k)))
    base = float(np.exp(rng.uniform(-2.0, 0.5)))
    diag = base if spiked else base * np.exp(rng.uniform(0.0, 1.0, size=d))
    lam = base * np.exp(rng.uniform(0.0, 2.0 * math.log(cond), size=k))
    return LowRankGaussian(diag, U, lam), rng


def _deltas(rng: np.random.Generator, region, dense, count=64):
    """Random displacements whose dense own norm is spread around the radius (0.5 to 1.5 times it)."""
    v = rng.normal(size=(count, region.dim))
    n = dense.norm(v)
    return v / n[:, None] * region.radius * rng.uniform(0.5, 1.5, size=count)[:, None]


def _agree_on_membership(region, dense, deltas):
    ref = dense.norm(deltas)
    clear = np.abs(ref - dense.radius) > 1e-6 * dense.radius  # away from the boundary's rounding
    got = np.array([region.contains_delta(d) for d in deltas])
    want = np.array([dense.contains_delta(d) for d in deltas])
    assert np.array_equal(got[clear], want[clear])
    assert np.array_equal(region.contains_delta(deltas)[clear], want[clear])  # batched


def _same_certificate(structured, dense, rng):
    """Two certificates of one p_lower, structured and dense: the same radius, l2 and proxy radii, and
    the same membership (``contains``) of 200 displacements away from the boundary's rounding."""
    assert structured.radius == dense.radius
    assert structured.l2_radius == pytest.approx(dense.l2_radius, rel=1e-9)
    assert structured.proxy_radius == pytest.approx(dense.proxy_radius, rel=1e-9)
    assert dense.region is not None and structured.region is not None
    deltas = _deltas(rng, structured.region, dense.region, 200)
    clear = np.abs(dense.region.norm(deltas) - dense.radius) > 1e-6 * dense.radius
    assert [structured.contains(d) for d in deltas[clear]] == [dense.contains(d) for d in deltas[clear]]


# ------------------------------------------------------------------------------------ Kronecker vs dense
@settings(max_examples=60)
@given(kronecker_problem())
def test_kronecker_matches_dense(problem):
    noise, factors, rng = problem
    dense_scale = factors[0]
    for f in factors[1:]:
        dense_scale = np.kron(dense_scale, f)
    np.testing.assert_allclose(noise.scale(), dense_scale, rtol=0, atol=1e-12 * np.abs(dense_scale).max())
    np.testing.assert_allclose(noise.covariance(), dense_scale @ dense_scale, rtol=1e-9, atol=1e-12)
    full = FullGaussian(dense_scale)
    eig = np.linalg.eigvalsh(dense_scale)
    summary = noise.scale_summary()
    assert summary["min_sigma"] == pytest.approx(eig[0], rel=1e-7)
    assert summary["gm_sigma"] == pytest.approx(float(np.exp(np.mean(np.log(eig)))), rel=1e-9)
    assert summary["gm_sigma"] == pytest.approx(full.scale_summary()["gm_sigma"], rel=1e-9)
    assert noise.log_det_covariance() == pytest.approx(np.linalg.slogdet(dense_scale @ dense_scale)[1], abs=1e-8)

    center = rng.normal(size=noise.dim)
    radius = float(rng.uniform(0.1, 3.0))
    region, dense = noise.region(center, radius), full.region(center, radius)
    assert isinstance(region, KroneckerEllipsoid)
    assert region.l2_radius == pytest.approx(dense.l2_radius, rel=1e-7)
    assert region.proxy_radius == pytest.approx(dense.proxy_radius, rel=1e-9)
    assert region.outer_radius == pytest.approx(dense.outer_radius, rel=1e-7)
    deltas = _deltas(rng, region, dense)
    np.testing.assert_allclose(region.norm(deltas), dense.norm(deltas), rtol=1e-7)
    _agree_on_membership(region, dense, deltas)
    v = rng.normal(size=noise.dim)
    assert region.support(v) == pytest.approx(dense.support(v), rel=1e-9, abs=1e-9)
    back = region.to_ellipsoid()
    np.testing.assert_allclose(back.norm(deltas), dense.norm(deltas), rtol=1e-7)
    assert back.l2_radius == pytest.approx(dense.l2_radius, rel=1e-7)
    assert region.with_radius(2 * radius).proxy_radius == pytest.approx(2 * region.proxy_radius)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_kronecker_draws_are_the_dense_draws(dtype):
    """d standard normals per draw, then the factors along their axes: on the same seed the draws are
    FullGaussian's with the dense scale, up to the rounding of the products."""
    rng = np.random.default_rng(3)
    factors = [_spd(rng, 3, 1.0), _spd(rng, 4, 2.0), _spd(rng, 2, 0.5)]
    noise = KroneckerGaussian(factors)
    full = FullGaussian(noise.scale())
    a, ca = noise.sample(257, 24, torch.Generator().manual_seed(11), "cpu", dtype)
    b, cb = full.sample(257, 24, torch.Generator().manual_seed(11), "cpu", dtype)
    assert ca is None and cb is None
    assert a.shape == (257, 24) and a.dtype == dtype and a.device.type == "cpu"
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(a, b, rtol=tol, atol=tol)


def test_kronecker_certificate_equals_dense_path():
    """Smooth.certify through the Kronecker noise and through FullGaussian(dense scale) on the same seed:
    the same counts (float64 half-space), hence the same p_lower and radius, and the same region."""
    rng = np.random.default_rng(5)
    factors = [_spd(rng, 2, 1.0, 0.5), _spd(rng, 3, 2.0, 0.7), _spd(rng, 2, 0.3)]
    noise = KroneckerGaussian(factors)
    full = FullGaussian(noise.scale())
    w = rng.normal(size=12)
    x = torch.tensor(rng.normal(size=(2, 3, 2)))
    cov = noise.covariance()
    b = float(w @ x.numpy().reshape(-1) + 1.3 * math.sqrt(w @ cov @ w))  # own-norm distance 1.3
    model = HalfSpace(w, b).eval()
    certs = [
        Smooth(model, nz, 2).certify(x, 100, 20_000, 0.001, batch_size=5000, generator=torch.Generator().manual_seed(7))
        for nz in (noise, full)
    ]
    kron, dense = certs
    assert kron.prediction == dense.prediction == 0
    assert kron.p_lower == dense.p_lower
    _same_certificate(kron, dense, rng)
    assert kron.min_sigma == pytest.approx(dense.min_sigma, rel=1e-9)
    assert kron.gm_sigma == pytest.approx(dense.gm_sigma, rel=1e-9)
    assert kron.noise == "kronecker"
    assert kron.radius < 1.3


def test_kronecker_at_image_size_without_dense_matrices():
    """(3, 64, 64): d = 12288 > DENSE_LIMIT. Sampling, the region and the summary never form d x d."""
    rng = np.random.default_rng(0)
    shape = (3, 64, 64)
    factors = [_spd(rng, n, 1.0, 0.25) for n in shape]
    noise = KroneckerGaussian(factors)
    d = noise.dim
    assert d == 12288 > DENSE_LIMIT
    eps, comp = noise.sample(8, d, torch.Generator().manual_seed(0), "cpu", torch.float32)
    assert eps.shape == (8, d) and eps.dtype == torch.float32 and comp is None
    with pytest.raises(ValueError, match="dense"):
        noise.covariance()
    with pytest.raises(ValueError, match="dense"):
        noise.scale()
    region = noise.region(np.zeros(d), 1.0)
    with pytest.raises(ValueError, match="dense"):
        region.to_ellipsoid()
    mins = [np.linalg.eigvalsh(f)[0] for f in factors]
    assert region.l2_radius == pytest.approx(float(np.prod(mins)), rel=1e-9)
    # the Kronecker-structured whitening inverts the sampler: S^-1 (S z) = z
    z = rng.normal(size=(2, d))
    np.testing.assert_allclose(region.whiten(region.apply_scale(z)), z, rtol=1e-8, atol=1e-8)
    # one axis at a time: C_1 (x) C_2 (x) C_3 applied to a unit vector e_(a,b,c) is the outer product of columns
    e = np.zeros(d)
    e[np.ravel_multi_index((1, 2, 3), shape)] = 1.0
    got = region.apply_scale(e).reshape(shape)
    want = np.einsum("a,b,c->abc", factors[0][:, 1], factors[1][:, 2], factors[2][:, 3])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


def test_kronecker_rejects_bad_factors():
    with pytest.raises(TypeError):
        KroneckerGaussian([])
    with pytest.raises(TypeError):
        KroneckerGaussian(np.eye(3))
    with pytest.raises(ValueError, match="square"):
        KroneckerGaussian([np.ones((2, 3))])
    with pytest.raises(ValueError, match="symmetric"):
        KroneckerGaussian([np.eye(2), np.array([[1.0, 0.5], [0.0, 1.0]])])
    with pytest.raises(ValueError, match="positive definite"):
        KroneckerGaussian([np.diag([1.0, -1.0])])
    noise = KroneckerGaussian([np.eye(2), np.eye(3)])
    with pytest.raises(ValueError, match="shape mismatch"):
        noise.check_dim(7)
    with pytest.raises(ValueError, match="entries"):
        noise.region(np.zeros(5), 1.0)


# ------------------------------------------------------------------------------------ low rank vs dense
@settings(max_examples=60)
@given(lowrank_problem())
def test_lowrank_matches_dense_square_root(problem):
    noise, rng = problem
    d = noise.dim
    diag, U, lam = noise.diag.numpy(), noise.U.numpy(), noise.lam.numpy()
    cov = np.diag(diag) + (U * lam) @ U.T
    np.testing.assert_allclose(noise.covariance(), cov, rtol=1e-12, atol=1e-14 * np.abs(cov).max())
    root = noise.scale()
    np.testing.assert_allclose(root @ root, cov, rtol=1e-8, atol=1e-10 * np.abs(cov).max())
    full = FullGaussian(_dense_root(cov))
    assert noise.log_det_covariance() == pytest.approx(np.linalg.slogdet(cov)[1], abs=1e-8)
    eig = np.linalg.eigvalsh(cov)
    summary, dense_summary = noise.scale_summary(), full.scale_summary()
    assert summary["gm_sigma"] == pytest.approx(dense_summary["gm_sigma"], rel=1e-8)
    assert summary["min_sigma"] <= math.sqrt(eig[0]) * (1 + 1e-9)  # a lower bound on sqrt(lambda_min)
    if noise.spiked and noise.rank < d:  # exact then; with k = d only min D is claimed (a sound lower bound)
        assert summary["min_sigma"] == pytest.approx(dense_summary["min_sigma"], rel=1e-7)

    center = rng.normal(size=d)
    radius = float(rng.uniform(0.1, 3.0))
    region, dense = noise.region(center, radius), full.region(center, radius)
    assert isinstance(region, LowRankEllipsoid)
    assert region.proxy_radius == pytest.approx(dense.proxy_radius, rel=1e-8)
    assert region.l2_radius <= dense.l2_radius * (1 + 1e-9)
    if noise.spiked and noise.rank < d:
        assert region.l2_radius == pytest.approx(dense.l2_radius, rel=1e-7)
    assert region.outer_radius >= dense.outer_radius * (1 - 1e-9)
    deltas = _deltas(rng, region, dense)
    np.testing.assert_allclose(region.norm(deltas), dense.norm(deltas), rtol=1e-6)
    _agree_on_membership(region, dense, deltas)
    v = rng.normal(size=d)
    assert region.support(v) == pytest.approx(dense.support(v), rel=1e-8, abs=1e-8)
    back = region.to_ellipsoid()
    np.testing.assert_allclose(back.norm(deltas), dense.norm(deltas), rtol=1e-6)


def test_lowrank_draws_d_plus_k_normals_through_its_own_sampler():
    """Smooth routes every draw through noise.sample, so a sampler that draws d + k normals per sample is
    fine: the draws are sqrt(D) z_d + W z_k with z = one (count, d + k) draw, z_d first."""
    rng = np.random.default_rng(1)
    U, _ = np.linalg.qr(rng.normal(size=(6, 2)))
    noise = LowRankGaussian(rng.uniform(0.5, 1.0, size=6), U, [4.0, 0.25])
    eps, comp = noise.sample(5, 6, torch.Generator().manual_seed(2), "cpu", torch.float64)
    z = torch.randn((5, 8), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    want = z[:, :6] * noise.diag.sqrt() + z[:, 6:] @ (noise.U * noise.lam.sqrt()).T
    assert comp is None
    torch.testing.assert_close(eps, want, rtol=1e-14, atol=1e-14)
    eps32, _ = noise.sample(5, 6, torch.Generator().manual_seed(2), "cpu", torch.float32)
    assert eps32.dtype == torch.float32 and eps32.shape == (5, 6)
    with pytest.raises(ValueError, match="dim"):
        noise.sample(5, 7, None, "cpu", torch.float64)


def test_lowrank_certificate_statistically_equals_dense_path():
    """Not the same draws as FullGaussian(Sigma^1/2) (d + k normals against d), the same distribution: the
    estimated p of both paths is within a few standard errors of the exact p_A, and the same p_lower
    gives the same certificate."""
    rng = np.random.default_rng(9)
    d, k = 10, 3
    U, _ = np.linalg.qr(rng.normal(size=(d, k)))
    noise = LowRankGaussian(0.3, U, [9.0, 2.0, 0.5])
    cov = noise.covariance()
    full = FullGaussian(_dense_root(cov))
    w = rng.normal(size=d)
    x = torch.tensor(rng.normal(size=d))
    r_true = 1.0
    b = float(w @ x.numpy() + r_true * math.sqrt(w @ cov @ w))
    p_exact = float(normal.cdf(r_true))
    n = 40_000
    for nz in (noise, full):
        smooth = Smooth(HalfSpace(w, b).eval(), nz, 2)
        stats = smooth.sample_statistics(x, n, 10_000, torch.Generator().manual_seed(4))
        p_hat = int(stats.counts[0, 0]) / n
        assert abs(p_hat - p_exact) < 5 * math.sqrt(p_exact * (1 - p_exact) / n)
        cert = smooth.certify(x, 100, n, 0.001, batch_size=10_000, generator=torch.Generator().manual_seed(4))
        assert cert.prediction == 0 and 0.8 * r_true < cert.radius <= r_true
    # radii exact given the same p_lower
    for p_lower in (0.6, 0.9, 0.999):
        a = certificate_from_bound(noise, x.numpy(), 0, p_lower, gaussian_radius(p_lower), n0=1, n=1, alpha=0.1)
        c = certificate_from_bound(full, x.numpy(), 0, p_lower, gaussian_radius(p_lower), n0=1, n=1, alpha=0.1)
        _same_certificate(a, c, rng)  # spiked: the l2 radius is exact


def test_lowrank_rejects_bad_parameters():
    U, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(5, 2)))
    with pytest.raises(ValueError, match="orthonormal"):
        LowRankGaussian(1.0, 2 * U, [1.0, 1.0])
    with pytest.raises(ValueError, match="lam"):
        LowRankGaussian(1.0, U, [1.0, 0.0])
    with pytest.raises(ValueError, match="lam"):
        LowRankGaussian(1.0, U, [1.0])
    with pytest.raises(ValueError, match="diag"):
        LowRankGaussian(np.ones(4), U, [1.0, 1.0])
    with pytest.raises(ValueError, match="diag"):
        LowRankGaussian(-1.0, U, [1.0, 1.0])
    with pytest.raises(ValueError, match="U must"):
        LowRankGaussian(1.0, np.ones((2, 3)), [1.0, 1.0, 1.0])
    assert LowRankGaussian(0.5, U, [1.0, 2.0]).spiked
    assert LowRankGaussian(np.full(5, 0.5), U, [1.0, 2.0]).spiked
    assert not LowRankGaussian(np.linspace(0.5, 1.0, 5), U, [1.0, 2.0]).spiked


def test_lowrank_at_image_size():
    """d = 3072 (CIFAR-10), k = 16: sampling and norms are O(d k); the spiked l2 radius is exact."""
    rng = np.random.default_rng(0)
    d, k = 3072, 16
    U, _ = np.linalg.qr(rng.normal(size=(d, k)))
    noise = LowRankGaussian(0.0625, U, np.linspace(0.5, 4.0, k))
    eps, _ = noise.sample(4, d, torch.Generator().manual_seed(0), "cpu", torch.float32)
    assert eps.shape == (4, d)
    region = noise.region(np.zeros(d), 2.0)
    assert region.l2_radius == pytest.approx(2.0 * 0.25)
    # along a spike u_j: norm of t u_j is t / sqrt(s + lam_j); off the spikes: t / sqrt(s)
    lam = noise.lam.numpy()
    assert region.norm(3.0 * U[:, 5]) == pytest.approx(3.0 / math.sqrt(0.0625 + lam[5]), rel=1e-10)
    off = rng.normal(size=d)
    off -= U @ (U.T @ off)
    assert region.norm(off) == pytest.approx(np.linalg.norm(off) / 0.25, rel=1e-10)


# ------------------------------------------------------------------------------------ soundness
@st.composite
def any_structured(draw):
    if draw(st.booleans()):
        noise, _, rng = draw(kronecker_problem(max_factors=3, max_side=3))
    else:
        noise, rng = draw(lowrank_problem())
    return noise, rng


@settings(max_examples=80)
@given(any_structured(), st.floats(0.2, 3.0), st.sampled_from([1_000, 100_000]))
def test_no_certified_radius_above_the_truth(problem, r_true, n):
    """Half-space at own-norm distance r_true: p_A = Phi(r_true) exactly. With a Clopper-Pearson bound
    from simulated counts, whenever p_lower <= p_A (the 1 - alpha event) the radius is <= r_true, the
    region stays on class 0 (support function <= b) and the point where the largest region touches the
    plane is outside the certified region."""
    noise, rng = problem
    d = noise.dim
    cov = noise.covariance()
    w = rng.normal(size=d)
    x = rng.normal(size=d)
    spread = math.sqrt(float(w @ cov @ w))
    b = float(w @ x + r_true * spread)
    p_exact = float(normal.cdf(r_true))
    count = int(rng.binomial(n, p_exact))
    p_lower = clopper_pearson_lower(count, n, 0.001)
    assume(p_lower <= p_exact)
    cert = certificate_from_bound(noise, x, 0, p_lower, gaussian_radius(p_lower), n0=1, n=n, alpha=0.001)
    touch = r_true * (cov @ w) / spread  # argmax of w.delta over the region of radius r_true: on the plane
    region = noise.region(x, 1.0)
    assert float(region.norm(touch)) == pytest.approx(r_true, rel=1e-6)
    if cert.abstained:
        return
    assert cert.radius <= r_true
    assert cert.l2_radius <= (b - w @ x) / np.linalg.norm(w) * (1 + 1e-9)
    assert cert.region is not None
    assert cert.region.support(w) <= b + 1e-9 * (abs(b) + spread)  # type: ignore[attr-defined]
    assert not cert.contains(touch * (1 + 1e-6))
    # exact p_A certifies exactly the true distance
    exact = noise.region(x, gaussian_radius(p_exact))
    assert exact.radius == pytest.approx(r_true, rel=1e-9)


@pytest.mark.parametrize("which", ["kronecker", "lowrank"])
def test_smooth_certify_is_sound_on_a_halfspace(which):
    """The whole path (Smooth.certify with the noise's own sampler) on a half-space: radius <= truth."""
    rng = np.random.default_rng(21)
    if which == "kronecker":
        noise = KroneckerGaussian([_spd(rng, 3, 2.0, 0.5), _spd(rng, 4, 3.0)])
    else:
        U, _ = np.linalg.qr(rng.normal(size=(12, 3)))
        noise = LowRankGaussian(rng.uniform(0.1, 0.4, size=12), U, [20.0, 3.0, 1.0])
    cov = noise.covariance()
    for trial in range(3):
        w = rng.normal(size=12)
        x = rng.normal(size=12)
        r_true = 0.5 + trial
        b = float(w @ x + r_true * math.sqrt(w @ cov @ w))
        cert = Smooth(HalfSpace(w, b).eval(), noise, 2).certify(
            torch.tensor(x), 100, 20_000, 0.001, batch_size=10_000, generator=torch.Generator().manual_seed(trial)
        )
        assert cert.prediction == 0
        assert 0.8 * r_true < cert.radius <= r_true


@pytest.mark.parametrize("which", ["kronecker", "lowrank"])
def test_sample_covariance_matches(which):
    """200,000 draws at d = 12: every entry of the sample covariance within 5 standard errors of
    covariance() (the standard error of entry (i, j) is sqrt((S_ii S_jj + S_ij^2) / n))."""
    rng = np.random.default_rng(17)
    if which == "kronecker":
        noise = KroneckerGaussian([_spd(rng, 2, 1.5), _spd(rng, 3, 2.5), _spd(rng, 2, 0.7)])
    else:
        U, _ = np.linalg.qr(rng.normal(size=(12, 4)))
        noise = LowRankGaussian(rng.uniform(0.2, 1.0, size=12), U, [8.0, 3.0, 1.0, 0.1])
    cov = noise.covariance()
    n = 200_000
    eps, _ = noise.sample(n, 12, torch.Generator().manual_seed(123), "cpu", torch.float64)
    e = eps.numpy()
    sample = e.T @ e / n  # zero mean known
    se = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / n)
    assert np.all(np.abs(sample - cov) < 5 * se), np.max(np.abs(sample - cov) / se)
    assert np.abs(e.mean(axis=0)).max() < 5 * np.sqrt(np.diag(cov).max() / n)


def test_sequential_mode_with_structured_noise():
    """Radii in the noise's own norm (thresholds Phi(r)); a half-space at own-norm distance 2 decides 0.5."""
    rng = np.random.default_rng(2)
    noise = KroneckerGaussian([_spd(rng, 2, 1.0, 0.5), _spd(rng, 3, 1.0)])
    cov = noise.covariance()
    w, x = rng.normal(size=6), rng.normal(size=6)
    b = float(w @ x + 2.0 * math.sqrt(w @ cov @ w))
    cert = Smooth(HalfSpace(w, b).eval(), noise, 2).certify(
        torch.tensor(x), 100, 100_000, 0.001, batch_size=1000, generator=torch.Generator().manual_seed(0), radii=[0.5]
    )
    assert cert.decided == (True,)
    assert cert.samples < 10_000


def test_memory_takes_structured_regions_as_they_are_and_refuses_what_is_no_region():
    """The memory stores a structured region itself (its pair test is ``certify.pairs``'s) and refuses an
    object without the region interface, naming what it needs."""
    rng = np.random.default_rng(4)
    noise = KroneckerGaussian([_spd(rng, 2, 1.0), _spd(rng, 2, 1.0)])
    cert = certificate_from_bound(noise, np.zeros(4), 0, 0.9, gaussian_radius(0.9), n0=1, n=1, alpha=0.1)
    answer = Memory().add(cert)
    assert answer.certificate.prediction == 0 and answer.certificate.region is cert.region
    cert.region = object()  # type: ignore[assignment]
    with pytest.raises(TypeError, match="structured region"):
        Memory().add(cert)


# ------------------------------------------------------------------------------------ Kronecker pairs
@st.composite
def kronecker_pair(draw):
    shape = draw(st.sampled_from([(3,), (2, 3), (1, 5), (4, 4), (2, 2, 4), (4, 4, 4), (2, 1, 3)]))
    seed = draw(st.integers(0, 2**31 - 1))
    log_cond = math.log(draw(st.floats(1.0, 1e3))) / len(shape)
    target = draw(st.floats(0.5, 2.0))  # max_t F of the pair: > 1 disjoint, < 1 intersecting
    assume(abs(target - 1.0) > 1e-3)
    rng = np.random.default_rng(seed)
    d = math.prod(shape)
    k1 = KroneckerEllipsoid(rng.normal(size=d), [_spd(rng, n, log_cond) for n in shape], rng.uniform(0.2, 2.0))
    c2 = k1.center + rng.normal(size=d) * rng.uniform(0.2, 3.0)
    k2 = KroneckerEllipsoid(c2, [_spd(rng, n, log_cond) for n in shape], rng.uniform(0.2, 2.0))
    value, _ = intersection_value(k1.to_ellipsoid(), k2.to_ellipsoid())
    s = math.sqrt(value / target)  # F scales as 1 / s^2 when both radii scale by s
    return k1.with_radius(k1.radius * s), k2.with_radius(k2.radius * s), target


@settings(max_examples=150)
@given(kronecker_pair())
def test_kronecker_pair_test_matches_dense(pair):
    """The factor-wise test agrees with the dense one (away from touching), is symmetric, and every
    "disjoint" carries a direction that the dense, independent rounding-safe check also accepts."""
    k1, k2, target = pair
    e1, e2 = k1.to_ellipsoid(), k2.to_ellipsoid()
    got = kronecker_ellipsoids_intersect(k1, k2)
    assert got == ellipsoids_intersect(e1, e2)
    assert got == (target < 1.0)
    assert got == kronecker_ellipsoids_intersect(k2, k1)
    v = kronecker_separating_direction(k1, k2)
    assert (v is None) == got
    if v is not None:
        assert separation_gap(e1, e2, v) > 0
        assert kronecker_separation_gap(k1, k2, v) > 0
        assert k1.support(v) < -k2.support(-v)
        w = kronecker_separating_direction(k2, k1)
        assert w is not None and separation_gap(e2, e1, w) > 0


def test_kronecker_pair_touching_is_intersecting():
    """Two translates of one region at own-norm distance exactly 2r touch: never "disjoint"; a little
    further apart they are proved disjoint."""
    rng = np.random.default_rng(8)
    shape = (2, 3, 4)
    k1 = KroneckerEllipsoid(np.zeros(24), [_spd(rng, n, 2.0) for n in shape], 0.7)
    u = rng.normal(size=24)
    u = u / k1.norm(u)  # own norm 1
    for factor, want in ((1.0, True), (1.0 - 1e-9, True), (1.0 + 1e-4, False)):
        k2 = KroneckerEllipsoid(2 * 0.7 * factor * u, k1.factors, 0.7)
        assert kronecker_ellipsoids_intersect(k1, k2) is want
        assert ellipsoids_intersect(k1.to_ellipsoid(), k2.to_ellipsoid()) is want


def test_kronecker_pair_rejects_other_shapes():
    a = KroneckerEllipsoid(np.zeros(6), [np.eye(2), np.eye(3)], 1.0)
    b = KroneckerEllipsoid(np.zeros(6), [np.eye(3), np.eye(2)], 1.0)
    with pytest.raises(ValueError, match="factor shapes"):
        kronecker_ellipsoids_intersect(a, b)
    with pytest.raises(TypeError):
        kronecker_ellipsoids_intersect(a, a.to_ellipsoid())  # type: ignore[arg-type]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device (torch.cuda.is_available() is False)")
def test_structured_sampling_on_cuda():
    """Drawn on the generator's device (CUDA), in the asked dtype; the Kronecker draws are the dense ones."""
    rng = np.random.default_rng(0)
    kron = KroneckerGaussian([_spd(rng, 3, 1.0), _spd(rng, 8, 1.0), _spd(rng, 8, 1.0)])
    U, _ = np.linalg.qr(rng.normal(size=(192, 4)))
    low = LowRankGaussian(0.1, U, [1.0, 2.0, 3.0, 4.0])
    for noise in (kron, low):
        eps, _ = noise.sample(64, 192, torch.Generator(device="cuda").manual_seed(0), "cuda", torch.float32)
        assert eps.device.type == "cuda" and eps.dtype == torch.float32 and eps.shape == (64, 192)
    a, _ = kron.sample(64, 192, torch.Generator(device="cuda").manual_seed(1), "cuda", torch.float64)
    b, _ = FullGaussian(kron.scale()).sample(
        64, 192, torch.Generator(device="cuda").manual_seed(1), "cuda", torch.float64
    )
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
