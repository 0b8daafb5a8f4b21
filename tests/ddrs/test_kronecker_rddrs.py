"""RDDRS with Kronecker-structured noise (``RDDRS(structure='kronecker')``, ``manifolds.KroneckerSPD``) on an
image-shaped toy: a linear 3-class model on 1x8x8 inputs whose sensitivity is large along some rows and columns and
small along others (a separable profile, so that a channel (x) row (x) column noise can use it; this toy tests the
machinery, it cannot judge structures against each other).
"""

from __future__ import annotations

import pytest
import torch

import certify
import ddrs
import manifolds
from ddrs.estimator import SoftSmoothingEstimator
from ddrs.selection import hard_vote_radii
from manifolds import KroneckerNoise, KroneckerSPD
from tests.classifiers import separable_linear_images

F64 = torch.float64
SHAPE = (1, 8, 8)
SIGMA = 0.25


def _dense_eigenvalues(noise: KroneckerNoise, points: torch.Tensor) -> torch.Tensor:
    out = []
    for p in points:
        s, factors = noise.factors(p)
        dense = torch.ones(1, 1, dtype=F64)
        for c in factors:
            dense = torch.kron(dense, c)
        out.append(torch.linalg.eigvalsh(s * dense))
    return torch.stack(out)


@pytest.mark.parametrize("backend", ["rgd", "pymanopt"])
def test_fit_keeps_the_floor_and_beats_its_start_on_fresh_samples(backend):
    model, x = separable_linear_images()
    preset = ddrs.RDDRS(iterations=15, samples=128, structure="kronecker", keep_ball=False, backend=backend)
    r = preset.fit(model, x, init=SIGMA, generator=torch.Generator().manual_seed(1))
    assert isinstance(r.manifold, KroneckerSPD) and isinstance(r.noise_map, KroneckerNoise)
    assert r.points.shape == (3, 18, 18)
    r.manifold.check_point(r.points)
    assert "per-direction second moments in the Kronecker" in r.step_rule
    eig = _dense_eigenvalues(r.noise_map, r.points)
    assert bool((eig[:, 0] >= SIGMA * (1 - 1e-9)).all()) and bool((eig[:, -1] <= 4 * SIGMA * (1 + 1e-9)).all())
    torch.testing.assert_close(r.noise_map.min_eigenvalue(r.points), eig[:, 0], rtol=1e-12, atol=0)
    assert r.kept_new is not None and bool(r.kept_new.all())  # the toy rewards anisotropy: the new noise is kept
    noises = r.noises()
    assert all(isinstance(n, certify.KroneckerGaussian) for n in noises)
    # fresh draws (another generator than the fit's): the chosen noise's proxy radius is at least the start's
    start = r.manifold.isotropic(torch.full((3,), SIGMA, dtype=F64))
    z = SoftSmoothingEstimator(samples=2000).draw(3, 64, torch.Generator().manual_seed(99), "cpu", torch.float32)
    fresh_new = hard_vote_radii(model, r.noise_map, x, r.points, z, 1e-3)
    fresh_start = hard_vote_radii(model, r.noise_map, x, start, z, 1e-3)
    assert bool((fresh_new["proxy"] >= fresh_start["proxy"]).all())
    assert bool((fresh_new["proxy"] > 1.5 * fresh_start["proxy"]).any())


def test_both_drivers_take_the_same_iterates_and_the_convenience_is_the_explicit_spelling():
    model, x = separable_linear_images()
    common = dict(iterations=6, samples=64, select=False)
    out = {
        backend: ddrs.RDDRS(structure="kronecker", backend=backend, **common)
        .fit(model, x, init=SIGMA, generator=torch.Generator().manual_seed(3))
        .points
        for backend in ("rgd", "pymanopt")
    }
    torch.testing.assert_close(out["rgd"], out["pymanopt"], rtol=1e-10, atol=1e-12)
    explicit = ddrs.RDDRS(manifold=KroneckerSPD(SHAPE), noise=KroneckerNoise(SHAPE), **common).fit(
        model, x, init=SIGMA, generator=torch.Generator().manual_seed(3)
    )
    torch.testing.assert_close(explicit.points, out["rgd"])


@pytest.mark.parametrize("metric", ["log-euclidean", "affine-invariant"])
def test_default_fit_runs_and_certifies(metric):
    """The default recipe (keep_ball, selection) on either metric, then certification through the structured noise."""
    model, x = separable_linear_images()
    r = ddrs.RDDRS(iterations=5, samples=64, selection_samples=200, structure="kronecker", metric=metric).fit(
        model, x, init=SIGMA, generator=torch.Generator().manual_seed(4)
    )
    assert metric in r.step_rule
    assert bool((r.noise_map.min_eigenvalue(r.points) >= SIGMA * (1 - 1e-9)).all())
    certs = ddrs.certify_inputs(model, x, r, 3, n0=50, n=500, generator=torch.Generator().manual_seed(5))
    for cert, point, label in zip(certs, r.points, model(x).argmax(1).tolist()):
        assert cert.prediction == label
        assert cert.l2_radius == pytest.approx(cert.radius * float(r.noise_map.min_eigenvalue(point)), rel=1e-9)


def test_errors_name_the_argument():
    model, x = separable_linear_images()
    with pytest.raises(ValueError, match="structure"):
        ddrs.RDDRS(iterations=1, structure="kron").fit(model, x, init=SIGMA)
    with pytest.raises(ValueError, match="structure='kronecker' with manifold"):
        ddrs.RDDRS(iterations=1, structure="kronecker", manifold=manifolds.SPD(64)).fit(model, x, init=SIGMA)
    with pytest.raises(ValueError, match="Bures-Wasserstein"):
        ddrs.RDDRS(iterations=1, structure="kronecker", metric="bures-wasserstein").fit(model, x, init=SIGMA)
    theta = torch.full((3, 64), SIGMA, dtype=F64)
    theta[:, 5] = 2 * SIGMA  # an ANCER Theta that is no Kronecker product of per-axis scales
    ancer = ddrs.SmoothingResult("ancer", None, theta, torch.full((3,), SIGMA, dtype=F64))
    with pytest.raises(ValueError, match="not a Kronecker product"):
        ddrs.RDDRS(iterations=1, structure="kronecker").fit(model, x, init=ancer)
