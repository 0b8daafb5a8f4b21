"""RDDRS with low-rank plus diagonal and spiked noise (``RDDRS(structure='low-rank' | 'spiked', rank=k)``,
``manifolds.LowRankSPD``) on an image-shaped toy: a linear 3-class model on 1x8x8 inputs that reads a smooth profile
of the pixels (large on some, small on others), so that more noise on the pixels it hardly reads (the diagonal part)
and along directions orthogonal to the profile (the spikes) keeps its prediction. This toy tests the machinery; it
cannot judge structures against each other.
"""

from __future__ import annotations

import pytest
import torch

import certify
import ddrs
from ddrs.estimator import SoftSmoothingEstimator
from ddrs.selection import hard_vote_radii
from ddrs.testing import check_step_rule
from manifolds import LowRankNoise, LowRankSPD, SignedSpikedNoise, SignedSpikedSPD
from tests.classifiers import separable_linear_images

F64 = torch.float64
SHAPE = (1, 8, 8)
SIGMA = 0.25


def _dense_eigenvalues(noise, points: torch.Tensor) -> torch.Tensor:
    if isinstance(noise, SignedSpikedNoise):
        return noise.eigenvalues(points)
    u, e, a, abar = noise.parts(points)
    w = u * (abar[..., None] * e).unsqueeze(-2)
    return torch.linalg.eigvalsh(torch.diag_embed(a.square()) + w @ w.transpose(-1, -2)).sqrt()


@pytest.mark.parametrize("structure", ["low-rank", "spiked", "signed-spiked"])
def test_fit_keeps_floor_and_ceiling_and_beats_its_start_on_fresh_samples(structure):
    model, x = separable_linear_images()
    preset = ddrs.RDDRS(iterations=15, samples=128, structure=structure, rank=3, keep_ball=False)
    r = preset.fit(model, x, init=SIGMA, generator=torch.Generator().manual_seed(1))
    signed = structure == "signed-spiked"
    assert isinstance(r.manifold, SignedSpikedSPD if signed else LowRankSPD)
    assert isinstance(r.noise_map, SignedSpikedNoise if signed else LowRankNoise)
    assert r.manifold.spiked == (structure != "low-rank") and r.points.shape == (3, 64, 5)
    r.manifold.check_point(r.points)
    assert "one second moment per factor of the product manifold" in r.step_rule
    eig = _dense_eigenvalues(r.noise_map, r.points)
    assert bool((eig[:, 0] >= SIGMA * (1 - 1e-9)).all()) and bool((eig[:, -1] <= 4 * SIGMA * (1 + 1e-9)).all())
    assert bool((r.noise_map.min_eigenvalue(r.points) <= eig[:, 0] * (1 + 1e-12)).all())
    noises = r.noises()
    assert all(isinstance(n, certify.SpikedGaussian if signed else certify.LowRankGaussian) for n in noises)
    # fresh draws (another generator than the fit's): the kept noise's proxy radius is at least the start's
    start = r.manifold.isotropic(torch.full((3,), SIGMA, dtype=F64))
    normals = r.noise_map.normals
    z = SoftSmoothingEstimator(samples=2000).draw(3, normals, torch.Generator().manual_seed(99), "cpu", torch.float32)
    fresh_new = hard_vote_radii(model, r.noise_map, x, r.points, z, 1e-3)
    fresh_start = hard_vote_radii(model, r.noise_map, x, start, z, 1e-3)
    assert bool((fresh_new["proxy"] >= fresh_start["proxy"] * (1 - 1e-9)).all())
    if structure == "low-rank":  # more noise on the pixels the model hardly reads
        assert r.kept_new is not None and bool(r.kept_new.all())
        assert bool((fresh_new["proxy"] > 1.2 * fresh_start["proxy"]).all())


def test_both_drivers_take_the_same_iterates_and_the_convenience_is_the_explicit_spelling():
    model, x = separable_linear_images()
    common = dict(iterations=5, samples=64, select=False)
    out = {
        backend: ddrs.RDDRS(structure="spiked", rank=2, backend=backend, **common)
        .fit(model, x, init=SIGMA, generator=torch.Generator().manual_seed(3))
        .points
        for backend in ("rgd", "pymanopt")
    }
    torch.testing.assert_close(out["rgd"], out["pymanopt"], rtol=1e-10, atol=1e-12)
    explicit = ddrs.RDDRS(manifold=LowRankSPD(64, 2, spiked=True), noise=LowRankNoise(64, 2, True), **common).fit(
        model, x, init=SIGMA, generator=torch.Generator().manual_seed(3)
    )
    torch.testing.assert_close(explicit.points, out["rgd"])


def test_default_fit_runs_and_certifies():
    """The default recipe (keep_ball, selection, default rank), then certification through the structured noise."""
    model, x = separable_linear_images()
    r = ddrs.RDDRS(iterations=5, samples=64, selection_samples=200, structure="low-rank").fit(
        model, x, init=SIGMA, generator=torch.Generator().manual_seed(4)
    )
    assert r.manifold.rank == ddrs.methods.DEFAULT_RANK
    assert bool((r.noise_map.min_eigenvalue(r.points) >= SIGMA * (1 - 1e-9)).all())
    certs = ddrs.certify_inputs(model, x, r, 3, n0=50, n=500, generator=torch.Generator().manual_seed(5))
    for cert, point, label in zip(certs, r.points, model(x).argmax(1).tolist()):
        assert cert.prediction == label
        assert cert.l2_radius == pytest.approx(cert.radius * float(r.noise_map.min_eigenvalue(point)), rel=1e-9)


def test_ancer_warm_start_and_errors_name_the_argument():
    model, x = separable_linear_images()
    theta = torch.full((3, 64), SIGMA, dtype=F64)
    theta[:, 5] = 2 * SIGMA
    ancer = ddrs.SmoothingResult("ancer", None, theta, torch.full((3,), SIGMA, dtype=F64))
    r = ddrs.RDDRS(iterations=0, structure="low-rank", rank=2).fit(model, x, init=ancer)
    torch.testing.assert_close(r.manifold.layout.diagonal(r.points), theta)  # a = Theta
    with pytest.raises(ValueError, match="isotropic"):
        ddrs.RDDRS(iterations=1, structure="spiked").fit(model, x, init=ancer)
    with pytest.raises(ValueError, match="rank"):
        ddrs.RDDRS(iterations=1, structure="low-rank", rank=65).fit(model, x, init=SIGMA)
    with pytest.raises(ValueError, match="rank=2 sets the spikes"):
        ddrs.RDDRS(iterations=1, structure="kronecker", rank=2).fit(model, x, init=SIGMA)
    with pytest.raises(ValueError, match="metric"):
        ddrs.RDDRS(iterations=1, structure="spiked", metric="bures-wasserstein").fit(model, x, init=SIGMA)
    with pytest.raises(ValueError, match="structure='low-rank' with manifold"):
        ddrs.RDDRS(iterations=1, structure="low-rank", manifold=LowRankSPD(64, 2, spiked=True)).fit(
            model, x, init=SIGMA
        )


def test_repr_shows_rank_only_when_set():
    """A preset's repr is recorded in every log's fingerprint: the presets without a rank keep the repr they had."""
    assert "rank" not in repr(ddrs.RDDRS()) and repr(ddrs.RDDRS()).endswith("structure='full')")
    assert repr(ddrs.RDDRS(structure="spiked", rank=4)).endswith("structure='spiked', rank=4)")


@pytest.mark.parametrize("kind", ["low-rank", "spiked", "signed-spiked"])
@pytest.mark.parametrize("rule", [ddrs.RiemannianAdam(0.05), ddrs.RiemannianAscent(0.3, method="retr")], ids=repr)
def test_step_rule_battery(rule, kind):
    """The step-rule battery (ascends, stays on the manifold and in the floor, deterministic, stateless, batched)."""
    m = SignedSpikedSPD(6, 2) if kind == "signed-spiked" else LowRankSPD(6, 2, spiked=kind == "spiked")
    check_step_rule(rule, m)
