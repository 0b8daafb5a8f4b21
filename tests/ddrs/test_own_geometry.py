"""A user adds a manifold by implementing only the geometry interface plus a noise map, and runs RDDRS-style
ascent (own loop and Pymanopt's) on it.

The example: symmetric matrices S with the flat (Frobenius) geometry, read as the noise expm(S) (log
coordinates of the SPD cone). Nothing in it is shipped: it inherits only ``manifolds.Manifold`` and
``manifolds.NoiseMap``.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import strategies as st

import certify
import ddrs
import manifolds
from manifolds.testing import check_manifold, check_noise_map

F64 = torch.float64


def _sym(a: torch.Tensor) -> torch.Tensor:
    return 0.5 * (a + a.transpose(-1, -2))


class FlatSymmetric(manifolds.Manifold):
    """Symmetric d x d matrices with <U, V> = tr(U V): the six methods of the geometry interface."""

    point_ndim = 2

    def inner(self, x, u, v):
        return (u.to(F64) * v.to(F64)).sum((-2, -1))

    def egrad2rgrad(self, x, g):
        return _sym(g.to(F64))

    def exp(self, x, u):
        return x.to(F64) + _sym(u.to(F64))

    def log(self, x, y):
        return y.to(F64) - x.to(F64)

    def random_point(self, *batch_shape, generator=None):
        a = torch.randn(*batch_shape, self.dim, self.dim, generator=generator, dtype=F64)
        return 0.3 * _sym(a)

    def check_values(self, x):
        if float((x - x.transpose(-1, -2)).abs().amax()) > 1e-12 * max(1.0, float(x.abs().amax())):
            raise ValueError("S must be symmetric")


class ExpmNoise(manifolds.NoiseMap):
    """eps = expm(S) z: log det = tr S (no decomposition), smallest scale exp(lambda_min(S))."""

    point_ndim = 2

    def apply(self, x, z):
        return z @ torch.linalg.matrix_exp(x.to(F64)).to(z.dtype)

    def min_eigenvalue(self, x):
        return torch.linalg.eigvalsh(x.to(F64))[..., 0].exp()

    def log_volume(self, x):
        return torch.diagonal(x.to(F64), dim1=-2, dim2=-1).sum(-1) / self.dim

    def project_floor(self, x, lambda_min, lambda_max=None):
        x = x.to(F64)
        lam, vec = torch.linalg.eigh(x)
        lo = torch.as_tensor(lambda_min, dtype=F64).log()
        lo = lo[..., None] if lo.ndim else lo
        hi = None
        if lambda_max is not None:
            hi = torch.as_tensor(lambda_max, dtype=F64).log()
            hi = hi[..., None] if hi.ndim else hi
        inside = (lam >= lo) if hi is None else (lam >= lo) & (lam <= hi)
        if bool(inside.all()):
            return x
        clamped = lam.clamp(min=lo, max=hi)
        return _sym((vec * clamped.unsqueeze(-2)) @ vec.transpose(-1, -2))

    def point_noise(self, x):
        return certify.FullGaussian(_sym(torch.linalg.matrix_exp(x.to(F64))))

    def from_scales(self, theta):
        return torch.diag_embed(theta.to(F64).log())


def _points(m: FlatSymmetric) -> st.SearchStrategy:
    """Random symmetric S and the isotropic log(sigma) I (tied spectrum)."""
    random = st.integers(0, 2**31 - 1).map(lambda s: m.random_point(generator=torch.Generator().manual_seed(s)))
    iso = st.floats(-1.5, 0.5).map(lambda v: v * torch.eye(m.dim, dtype=F64))
    return st.one_of(random, iso)


def test_the_user_classes_pass_both_batteries():
    m = FlatSymmetric(3)
    check_manifold(m, points=_points(m), max_examples=10)
    check_noise_map(ExpmNoise(3), m, points=_points(m), max_examples=10)


def test_the_noise_battery_holds_a_lower_bound_to_the_dense_path():
    class OverClaims(ExpmNoise):
        def min_eigenvalue(self, x):
            return 1.01 * super().min_eigenvalue(x)

    with pytest.raises(AssertionError, match="spectral_terms"):
        check_noise_map(OverClaims(3), FlatSymmetric(3), points=_points(FlatSymmetric(3)), max_examples=5, shrink=False)


def _linear_model(d: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(3, d, generator=gen)
    w[:, : d // 2] *= 0.05  # insensitive directions: anisotropic noise pays
    model = torch.nn.Linear(d, 3, bias=False)
    with torch.no_grad():
        model.weight.copy_(w)
    x = 0.3 * torch.randn(2, d, generator=gen)
    return model.eval(), x


@pytest.mark.parametrize("backend", ["rgd", "pymanopt"])
def test_rddrs_runs_on_the_user_geometry_and_noise(backend):
    d = 8
    model, x = _linear_model(d)
    start = torch.full((2,), 0.25, dtype=F64)
    preset = ddrs.RDDRS(
        iterations=15, samples=64, select=False, manifold=FlatSymmetric(d), noise=ExpmNoise(d), backend=backend
    )
    r = preset.fit(model, x, init=start, generator=torch.Generator().manual_seed(0))
    assert isinstance(r.manifold, FlatSymmetric) and isinstance(r.noise_map, ExpmNoise)
    assert r.points.shape == (2, d, d)
    torch.testing.assert_close(r.points, r.points.transpose(-1, -2))
    # the floor held in the noise map's own terms: every scale of expm(S) >= sigma_x*
    scales = torch.linalg.eigvalsh(torch.linalg.matrix_exp(r.points))
    assert bool((scales >= 0.25 * (1 - 1e-9)).all())
    trace = r.trace.as_arrays()
    assert trace["objective"].shape[1] == 2 and bool((trace["objective"].max(0) > trace["objective"][0]).all())
    noises = r.noises()
    assert all(isinstance(n, certify.FullGaussian) for n in noises)
    torch.testing.assert_close(noises[0].C, _sym(torch.linalg.matrix_exp(r.points[0])))
    assert "geoopt" in r.step_rule or "per point" in r.step_rule  # no eigenframe: said, not swapped silently


def test_the_same_rule_gives_the_same_iterates_on_both_drivers():
    """Pymanopt's loop moving by the step rule takes the own loop's iterates on the user geometry."""
    d = 6
    model, x = _linear_model(d, seed=1)
    start = torch.full((2,), 0.2, dtype=F64)
    out = {}
    for backend in ("rgd", "pymanopt"):
        preset = ddrs.RDDRS(
            iterations=6, samples=32, select=False, manifold=FlatSymmetric(d), noise=ExpmNoise(d), backend=backend
        )
        out[backend] = preset.fit(model, x, init=start, generator=torch.Generator().manual_seed(3)).points
    torch.testing.assert_close(out["rgd"], out["pymanopt"], rtol=1e-10, atol=1e-12)


def test_a_noise_map_that_does_not_fit_the_manifold_is_refused():
    model, x = _linear_model(8)
    with pytest.raises(ValueError, match="dim"):
        ddrs.RDDRS(iterations=1, manifold=FlatSymmetric(8), noise=ExpmNoise(5)).fit(model, x, init=0.25)
    with pytest.raises(ValueError, match="point_ndim"):
        ddrs.RDDRS(iterations=1, manifold=FlatSymmetric(8), noise=manifolds.DiagonalNoise(8)).fit(model, x, init=0.25)
    with pytest.raises(TypeError, match="NoiseMap"):
        ddrs.RDDRS(iterations=1, manifold=FlatSymmetric(8), noise="expm").fit(model, x, init=0.25)


@pytest.mark.parametrize(
    "stage, structure",
    [
        (ddrs.DDRS(iterations=2, samples=8), manifolds.PositiveScalar),
        (ddrs.ANCER(iterations=2, samples=8), manifolds.PositiveDiagonal),
        (ddrs.RDDRS(iterations=2, samples=8), manifolds.SPD),
        (ddrs.RDDRS(iterations=2, samples=8, structure="kronecker"), manifolds.KroneckerSPD),
        (ddrs.RDDRS(iterations=2, samples=8, structure="low-rank", rank=2), manifolds.LowRankSPD),
    ],
    ids=["ddrs", "ancer", "rddrs", "kronecker", "low-rank"],
)
def test_manifold_for_names_the_manifold_fit_runs_on(stage, structure):
    """``manifold_for(shape)`` is the public answer to "where does ``fit`` optimise": the dual's dictionaries build
    their centres on it, so it must be the fit's own manifold (type and size), not a copy of its rules."""
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2 * 3 * 3, 3)).eval()
    x = 0.3 * torch.randn(2, 2, 3, 3, generator=torch.Generator().manual_seed(0))
    m = stage.manifold_for((2, 3, 3))
    r = stage.fit(model, x, init=torch.full((2,), 0.25, dtype=F64), generator=torch.Generator().manual_seed(1))
    assert isinstance(m, structure) and type(r.manifold) is type(m) and r.manifold.dim == m.dim
    assert r.points.shape[1:] == m.random_point(1, generator=torch.Generator().manual_seed(2)).shape[1:]
