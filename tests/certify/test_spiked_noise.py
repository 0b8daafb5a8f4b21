"""``certify.SpikedGaussian`` (scale s (I - U U^T) + U diag(t) U^T, spikes of either sign) against the dense
``FullGaussian`` path: the same draws, regions, radii; and the closed-form half-space check."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binomtest
from scipy.stats import norm as normal

import certify
from certify import FullGaussian, Smooth, SpikedGaussian
from tests.classifiers import HalfSpace

F64 = torch.float64


def _noise(d: int = 7, k: int = 3, seed: int = 0) -> SpikedGaussian:
    g = torch.Generator().manual_seed(seed)
    u = torch.linalg.qr(torch.randn(d, k, dtype=F64, generator=g))[0]
    return SpikedGaussian(0.4, u, torch.tensor([0.1, 0.4, 1.3][:k], dtype=F64))  # below, at and above s


def test_dense_scale_draws_and_region_are_the_full_path():
    noise = _noise()
    s = noise.scale()
    lam = np.linalg.eigvalsh(s)
    np.testing.assert_allclose(lam, np.sort([0.4] * 4 + [0.1, 0.4, 1.3]), atol=1e-12)
    np.testing.assert_allclose(noise.covariance(), s @ s, atol=1e-12)
    full = FullGaussian(s)
    a, _ = noise.sample(6, 7, torch.Generator().manual_seed(1), "cpu", F64)
    b, _ = full.sample(6, 7, torch.Generator().manual_seed(1), "cpu", F64)
    torch.testing.assert_close(a, b)
    c = np.random.default_rng(2).normal(size=7)
    ours, dense = noise.region(c, 0.8), full.region(c, 0.8)
    for name in ("l2_radius", "proxy_radius", "outer_radius"):
        assert getattr(ours, name) == pytest.approx(getattr(dense, name), rel=1e-10)
    deltas = np.random.default_rng(3).normal(size=(20, 7))
    np.testing.assert_allclose(ours.norm(deltas), dense.norm(deltas), rtol=1e-10)
    v = deltas[0]
    assert ours.support(v) == pytest.approx(dense.support(v), rel=1e-10)
    np.testing.assert_allclose(ours.to_ellipsoid().scale, s, atol=1e-12)
    summary = noise.scale_summary()
    assert summary["min_sigma"] == pytest.approx(0.1) and math.isclose(
        summary["gm_sigma"], math.exp(np.log(lam).mean()), rel_tol=1e-12
    )
    assert noise.log_det_covariance() == pytest.approx(2 * np.log(lam).sum(), rel=1e-12)


def test_refusals_name_the_argument():
    u = torch.eye(5, 2, dtype=F64)
    with pytest.raises(ValueError, match="orthonormal"):
        SpikedGaussian(1.0, 2 * u, [1.0, 1.0])
    with pytest.raises(ValueError, match="spikes must be positive"):
        SpikedGaussian(1.0, u, [1.0, 0.0])
    with pytest.raises(ValueError, match="scale must be one positive number"):
        SpikedGaussian(-1.0, u, [1.0, 1.0])
    with pytest.raises(ValueError, match="spikes has 3 entries"):
        SpikedGaussian(1.0, u, [1.0, 1.0, 1.0])


def test_halfspace_closed_form_and_radii_below_the_truth():
    """p_A = Phi(margin / ||S w||) (binomial test); CERTIFY never certifies an l2 ball beyond the plane, with a spike
    below s along the plane's normal (the direction a shrinking spike is for)."""
    d = 10
    rng = np.random.default_rng(5)
    certified = 0
    for i in range(6):
        g = torch.Generator().manual_seed(10 + i)
        u = torch.linalg.qr(torch.randn(d, 2, dtype=F64, generator=g))[0]
        noise = SpikedGaussian(0.5, u, [0.1, 1.5])
        s = noise.scale()
        w = u[:, 0].numpy() + 0.2 * rng.normal(size=d)
        c = rng.normal(size=d)
        sd = float(np.linalg.norm(s @ w))
        b = float(w @ c + 1.2 * sd * (i % 3 - 0.5))
        p0 = float(normal.cdf((b - w @ c) / sd))
        eps, _ = noise.sample(4000, d, torch.Generator().manual_seed(100 + i), "cpu", F64)
        hits = int(((c + eps.numpy()) @ w <= b).sum())
        assert binomtest(hits, 4000, p0).pvalue > 1e-4
        cert = Smooth(HalfSpace(w, b).eval(), noise, 2).certify(
            torch.as_tensor(c), 100, 20_000, 1e-3, generator=torch.Generator().manual_seed(200 + i)
        )
        if cert.prediction >= 0:
            certified += 1
            assert cert.l2_radius <= abs(b - w @ c) / np.linalg.norm(w) * (1 + 1e-9)
            assert isinstance(cert.region, certify.SpikedEllipsoid)
    assert certified >= 3


@given(
    st.integers(0, 2**31 - 1),
    st.floats(1e-8, 1e8),
    st.floats(0.0, 0.99e-8),
)
@settings(max_examples=60, deadline=None)
def test_no_radius_above_the_truth_for_a_basis_orthonormal_only_to_1e_8(seed, ratio, wobble):
    """U within 1e-8 of orthonormal (what the check admits) and spikes up to 1e8 smaller or larger than the scale:
    the l2 radius never exceeds the true inscribed ball of the S that is sampled, the outer radius never falls short
    of the true enclosing ball, and ``norm`` is the dense S^-1 norm."""
    rng = np.random.default_rng(seed)
    d, k = 12, 2
    Q, _ = np.linalg.qr(rng.normal(size=(d, k)))
    U = Q * np.sqrt(1.0 + wobble)  # columns longer by up to 0.5e-8
    noise = SpikedGaussian(1.0, U, [ratio, 1.0 / math.sqrt(ratio)])
    region = noise.region(np.zeros(d), 1.0)
    S = noise.scale()
    ev = np.linalg.eigvalsh(0.5 * (S + S.T))
    slack = 1e-14 * ev[-1]  # eigvalsh's own backward error
    assert region.l2_radius <= ev[0] + slack and region.outer_radius >= ev[-1] - slack
    draws = noise.sample(20_000, d, torch.Generator().manual_seed(seed % 1000), "cpu", torch.float64)[0]
    np.testing.assert_allclose(np.cov(draws.numpy().T), S @ S, atol=0.05 * ev[-1] ** 2)  # the S it samples with
    delta = rng.normal(size=(4, d))
    dense = np.linalg.norm(np.linalg.solve(S, delta.T).T, axis=1)
    np.testing.assert_allclose(region.norm(delta), dense, rtol=max(1e-9, 1e-14 * ev[-1] / ev[0]))  # solve's error


def test_a_region_built_directly_checks_and_owns_its_data():
    rng = np.random.default_rng(0)
    U, _ = np.linalg.qr(rng.normal(size=(6, 2)))
    t = np.array([0.5, 2.0])
    region = certify.SpikedEllipsoid(np.zeros(6), 1.0, U, t, 1.0)
    U[:] = 0.0  # the caller's arrays change; the region's do not
    t[:] = -1.0
    assert region.l2_radius == pytest.approx(0.5) and not region.basis.flags.writeable
    bad = np.zeros((6, 1))
    bad[0, 0] = math.sqrt(1.0 + 0.99e-8)  # a spike of 1e-8 on this basis: lambda_min is 1e-10, not 1e-8
    with pytest.raises(ValueError, match="basis is too far from orthonormal"):
        certify.SpikedEllipsoid(np.zeros(6), 1.0, bad, np.array([1e-8]), 1.0)
    with pytest.raises(ValueError, match="spikes must be"):
        certify.SpikedEllipsoid(np.zeros(6), 1.0, U + np.eye(6, 2), np.array([1.0, 0.0]), 1.0)
    with pytest.raises(ValueError, match="scale must be"):
        certify.SpikedEllipsoid(np.zeros(6), -1.0, np.eye(6, 2), np.array([1.0, 1.0]), 1.0)
