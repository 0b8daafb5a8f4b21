"""SPD geometry: invariances, metric agreement, gradients at sigma I, floor, restrictions, pitfalls."""

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import manifolds
from manifolds import SPD, PositiveDiagonal, PositiveScalar, noise_for
from manifolds.testing import commuting_spd_pair, gl_matrices, spd_points

F64 = torch.float64
settings.register_profile(
    "manifolds-spd",
    max_examples=15,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
PROFILE = settings.get_profile("manifolds-spd")

SIZES = st.sampled_from([2, 3, 5])


def _m(n, metric):
    return _CACHE.setdefault((n, metric), SPD(n, metric))


_CACHE: dict = {}


def _sym_from(seed, n):
    a = torch.randn(n, n, generator=torch.Generator().manual_seed(seed), dtype=F64)
    return a + a.T


@PROFILE
@given(data=st.data(), n=SIZES, ill=st.booleans())
def test_affine_invariance(data, n, ill):
    m = _m(n, "affine-invariant")
    x = data.draw(spd_points(n, max_log_eig=5.0 if ill else 1.0))
    y = data.draw(spd_points(n, max_log_eig=5.0 if ill else 1.0))
    a = data.draw(gl_matrices(n))
    d = m.dist(x, y)
    assert torch.allclose(m.dist(a @ x @ a.T, a @ y @ a.T), d, rtol=1e-8, atol=1e-8)
    assert torch.allclose(m.dist(torch.linalg.inv(x), torch.linalg.inv(y)), d, rtol=1e-8, atol=1e-8)


@PROFILE
@given(data=st.data(), n=SIZES)
def test_log_euclidean_orthogonal_invariance_and_scale(data, n):
    m = _m(n, "log-euclidean")
    x, y = data.draw(spd_points(n)), data.draw(spd_points(n))
    q = data.draw(gl_matrices(n))
    q = torch.linalg.eigh(q + q.T)[1]
    d = m.dist(x, y)
    assert torch.allclose(m.dist(q @ x @ q.T, q @ y @ q.T), d, rtol=1e-8, atol=1e-8)
    assert torch.allclose(m.dist(3.0 * x, 3.0 * y), d, rtol=1e-8, atol=1e-8)


@PROFILE
@given(data=st.data(), n=SIZES)
def test_metrics_agree_on_commuting_matrices(data, n):
    x, y = data.draw(commuting_spd_pair(n))
    d_ai, d_le = _m(n, "affine-invariant").dist(x, y), _m(n, "log-euclidean").dist(x, y)
    ly = torch.linalg.eigvalsh(y)
    # both equal the l2 distance of log-eigenvalues paired by the shared eigenvectors; a generic
    # combination of the commuting pair has them even when x has repeated eigenvalues (x = I)
    q = torch.linalg.eigh(x + 0.6180339887 * y)[1]
    lx_paired, ly_paired = torch.diagonal(q.T @ x @ q), torch.diagonal(q.T @ y @ q)
    ref = (lx_paired.log() - ly_paired.log()).norm()
    assert torch.allclose(d_ai, ref, rtol=1e-8, atol=1e-9) and torch.allclose(d_le, ref, rtol=1e-8, atol=1e-9)
    assert ly.numel() == n


@PROFILE
@given(data=st.data(), n=SIZES)
def test_ai_distance_dominates_le(data, n):
    x, y = data.draw(spd_points(n)), data.draw(spd_points(n))
    assert _m(n, "affine-invariant").dist(x, y) >= _m(n, "log-euclidean").dist(x, y) - 1e-9  # Bhatia 6.8


@PROFILE
@given(
    data=st.data(),
    n=SIZES,
    metric=st.sampled_from(["affine-invariant", "log-euclidean", "bures-wasserstein"]),
    sigma=st.floats(0.1, 10.0),
    seed=st.integers(0, 10**6),
)
def test_rgrad_matches_geodesic_finite_difference_at_sigma_identity(data, n, metric, sigma, seed):
    m = _m(n, metric)
    x = sigma * torch.eye(n, dtype=F64)
    target = data.draw(spd_points(n, max_log_eig=1.0, log_scale=1.0))

    def f(c):  # log-volume (custom spectral backward) plus a smooth data term
        return (
            noise_for(m).log_volume(c)
            - 0.5 * torch.trace(torch.linalg.solve(target, c)) / n
            + noise_for(m).min_eigenvalue(c) * 0
        )

    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(f(xr), xr)
    assert torch.isfinite(g).all()
    rg = m.egrad2rgrad(x, g)
    u = _sym_from(seed, n) * sigma * 0.1
    t = 1e-5
    fd = (f(m.exp(x, t * u)) - f(m.exp(x, -t * u))) / (2 * t)
    assert abs(float(fd) - float(m.inner(x, rg, u))) <= 1e-6 * max(1.0, abs(float(fd)))


@pytest.mark.parametrize("metric", ["affine-invariant", "log-euclidean", "bures-wasserstein"])
def test_egrad2rgrad_defining_property(metric):
    m = SPD(4, metric)
    x = m.random_point(3, generator=torch.Generator().manual_seed(1))
    g, v = _sym_from(2, 4).expand(3, 4, 4) * 1.0, torch.stack([_sym_from(k, 4) for k in range(3)])
    g = g + torch.randn(3, 4, 4, generator=torch.Generator().manual_seed(3), dtype=F64)  # non-symmetric G
    lhs = m.inner(x, m.egrad2rgrad(x, g), v)
    rhs = (0.5 * (g + g.mT) * v).sum((-2, -1))
    assert torch.allclose(lhs, rhs, rtol=1e-10, atol=1e-10)
    # closed forms agree with the generic Gram-matrix solve used for arbitrary Geomstats metrics
    generic = manifolds.GeomstatsMetric(_gs_metric(4, metric))
    assert torch.allclose(m.egrad2rgrad(x, g), generic.egrad2rgrad(x, g), rtol=1e-9, atol=1e-10)


def _gs_metric(n, name):
    """The Geomstats instance of a shipped metric, for reference values."""
    from manifolds.geomstats_adapter import spd_module

    mod = spd_module()
    cls = {
        "affine-invariant": mod.SPDAffineMetric,
        "log-euclidean": mod.SPDLogEuclideanMetric,
        "bures-wasserstein": mod.SPDBuresWassersteinMetric,
    }[name]
    space = mod.SPDMatrices(n, equip=False)
    space.equip_with_metric(cls)
    return space.metric


def test_own_ai_inner_matches_geomstats_to_1e10():
    m = SPD(5)
    x = m.random_point(4, generator=torch.Generator().manual_seed(0))
    u, v = torch.stack([_sym_from(k, 5) for k in range(4)]), torch.stack([_sym_from(k + 9, 5) for k in range(4)])
    ref = _gs_metric(5, "affine-invariant").inner_product(u, v, x)
    assert torch.allclose(m.inner(x, u, v), ref, rtol=1e-10, atol=1e-10)


@PROFILE
@given(data=st.data(), n=SIZES, seed=st.integers(0, 10**6))
def test_ai_retraction_is_second_order(data, n, seed):
    m = _m(n, "affine-invariant")
    x = data.draw(spd_points(n, max_log_eig=2.0))
    w = _sym_from(seed, n)
    w = w / w.norm()
    lam, q = torch.linalg.eigh(x)
    u = (q * lam.sqrt()) @ q.T @ w @ (q * lam.sqrt()) @ q.T  # ||u||_x = 1
    errs = [float((m.retr(x, t * u) - m.exp(x, t * u)).norm()) for t in (1e-1, 1e-2, 1e-3)]
    slope = math.log10(errs[0] / max(errs[1], 1e-300))
    scale = float(x.norm())
    assert errs[1] < 1e-5 * scale and (slope >= 2.7 or errs[0] < 1e-12 * scale), errs


@PROFILE
@given(data=st.data(), n=SIZES, frac=st.floats(0.0, 1.0))
def test_floor_keeps_eigenvectors_idempotent_identity_above(data, n, frac):
    m = _m(n, "affine-invariant")
    x = data.draw(spd_points(n, max_log_eig=3.0))
    lam, q = torch.linalg.eigh(x)
    level = float(lam[0] + frac * (lam[-1] - lam[0]))
    f = noise_for(m).project_floor(x, level)
    ref = (q * lam.clamp(min=level)) @ q.T
    assert torch.allclose(f, ref, rtol=1e-10, atol=1e-10 * float(lam[-1]))
    assert torch.allclose(noise_for(m).project_floor(f, level), f, rtol=1e-12, atol=1e-12 * float(lam[-1]))
    assert torch.equal(noise_for(m).project_floor(x, 0.99 * float(lam[0])), x)
    # batched with a per-point floor
    xb = torch.stack([x, 2 * x])
    fb = noise_for(m).project_floor(xb, torch.tensor([level, 2 * level], dtype=F64))
    assert torch.allclose(fb[1], 2 * f, rtol=1e-10, atol=1e-10 * float(lam[-1]))


@PROFILE
@given(
    theta=st.lists(st.floats(-2, 2), min_size=2, max_size=5),
    other=st.lists(st.floats(-2, 2), min_size=5, max_size=5),
    g=st.lists(st.floats(-3, 3), min_size=5, max_size=5),
    lm=st.floats(0.1, 5.0),
)
def test_diagonal_and_scalar_agree_with_spd(theta, other, g, lm):
    n = len(theta)
    th, ot = torch.tensor(theta, dtype=F64).exp(), torch.tensor(other[:n], dtype=F64).exp()
    gv, u = torch.tensor(g[:n], dtype=F64), torch.tensor(g[:n], dtype=F64) * 0.3
    spd, diag, scal = _m(n, "affine-invariant"), PositiveDiagonal(n), PositiveScalar(n)
    D = torch.diag_embed
    close = lambda a, b: torch.allclose(a, b, rtol=1e-9, atol=1e-10)  # noqa: E731
    assert close(D(diag.exp(th, u)), spd.exp(D(th), D(u)))
    assert close(D(diag.retr(th, u)), spd.retr(D(th), D(u)))
    assert close(D(diag.log(th, ot)), spd.log(D(th), D(ot)))
    assert close(diag.dist(th, ot), spd.dist(D(th), D(ot)))
    assert close(diag.inner(th, u, gv), spd.inner(D(th), D(u), D(gv)))
    assert close(D(diag.egrad2rgrad(th, gv)), spd.egrad2rgrad(D(th), D(gv)))
    assert close(D(noise_for(diag).project_floor(th, lm)), noise_for(spd).project_floor(D(th), lm))
    assert close(noise_for(diag).log_volume(th), noise_for(spd).log_volume(D(th)))
    assert close(noise_for(diag).min_eigenvalue(th), noise_for(spd).min_eigenvalue(D(th)))
    assert close(noise_for(diag).eigenvalues(th), noise_for(spd).eigenvalues(D(th)))
    # scalar sigma == SPD at sigma I; its tangent u stands for u I and its egrad for d f / d sigma = tr G
    s, t, us = th[0], ot[0], u[0]
    eye = torch.eye(n, dtype=F64)
    assert close(scal.exp(s, us) * eye, spd.exp(s * eye, us * eye))
    assert close(scal.retr(s, us) * eye, spd.retr(s * eye, us * eye))
    assert close(scal.log(s, t) * eye, spd.log(s * eye, t * eye))
    assert close(scal.dist(s, t), spd.dist(s * eye, t * eye))
    assert close(scal.inner(s, us, gv[0]), spd.inner(s * eye, us * eye, gv[0] * eye))
    G = D(gv)  # f(sigma) = F(sigma I): df/dsigma = tr G; rgrad_SPD projected on span(I) = rgrad_scalar I
    assert close(scal.egrad2rgrad(s, torch.trace(G)) * eye, torch.diagonal(spd.egrad2rgrad(s * eye, G)).mean() * eye)
    assert close(noise_for(scal).log_volume(s), noise_for(spd).log_volume(s * eye))
    assert close(noise_for(scal).project_floor(s, lm) * eye, noise_for(spd).project_floor(s * eye, lm))


@pytest.mark.parametrize("n", [2, 4])
def test_spectral_gradients_finite_and_correct_at_sigma_identity(n):
    m = SPD(n)
    x = (1.7 * torch.eye(n, dtype=F64)).requires_grad_(True)
    (g,) = torch.autograd.grad(noise_for(m).log_volume(x), x)
    assert torch.allclose(g, torch.eye(n, dtype=F64) / (1.7 * n), atol=1e-14)  # C^-1 / d
    (g,) = torch.autograd.grad(noise_for(m).min_eigenvalue(x), x)
    assert torch.isfinite(g).all() and torch.allclose(g, torch.eye(n, dtype=F64) / n, atol=1e-12)
    # plain eigh autograd is NaN here: the pitfall the custom backwards avoid
    xe = x.detach().clone().requires_grad_(True)
    (ge,) = torch.autograd.grad(torch.linalg.eigh(xe)[0].log().mean() + torch.linalg.eigh(xe)[1].sum(), xe)
    assert not torch.isfinite(ge).all()
    # a generic point: log_volume gradient vs autograd through slogdet
    y = m.random_point(generator=torch.Generator().manual_seed(4)).requires_grad_(True)
    (g1,) = torch.autograd.grad(noise_for(m).log_volume(y), y)
    (g2,) = torch.autograd.grad(torch.linalg.slogdet(y)[1] / n, y)
    assert torch.allclose(g1, g2, atol=1e-12)


def test_min_eigenvalue_subgradient_diagonal_ties():
    d = PositiveDiagonal(4)
    th = torch.tensor([0.5, 2.0, 0.5, 3.0], dtype=F64, requires_grad=True)
    (g,) = torch.autograd.grad(noise_for(d).min_eigenvalue(th), th)
    assert torch.allclose(g, torch.tensor([0.5, 0, 0.5, 0], dtype=F64))
    assert float(noise_for(d).min_eigenvalue(th.detach())) == 0.5


def test_float32_inputs_kept_in_float64_geometry():
    """float32 AI log/dist break down by kappa 1e4-1e6; the geometry casts to float64."""
    n = 8
    q = torch.linalg.eigh(_sym_from(5, n))[1]
    x = (q * torch.logspace(0, 6, n, dtype=F64)) @ q.T
    x = 0.5 * (x + x.T)
    y = torch.eye(n, dtype=F64)
    m = SPD(n)
    ref = m.dist(x, y)
    got = m.dist(x.float(), y.float())
    assert got.dtype == F64 and torch.isfinite(got)
    assert abs(float(got - ref)) <= 1e-5 * float(ref)
    assert m.log(x.float(), y.float()).dtype == F64 and torch.isfinite(m.log(x.float(), y.float())).all()
    # noise for a float32 model stays float32 and differentiable w.r.t. the float64 point
    xr = x.clone().requires_grad_(True)
    z = torch.randn(1, 4, n, dtype=torch.float32)
    out = noise_for(m).apply(xr.unsqueeze(0), z)
    assert out.dtype == torch.float32
    out.sum().backward()
    assert xr.grad.dtype == F64 and torch.isfinite(xr.grad).all()


def test_large_exp_step_bounded_in_metric_norm():
    n = 6
    m = SPD(n)
    q = torch.linalg.eigh(_sym_from(7, n))[1]
    x = (q * torch.linspace(0.05, 0.14, n, dtype=F64)) @ q.T
    x = 0.5 * (x + x.T)
    g = torch.eye(n, dtype=F64) * -1.0 + 0.2 * _sym_from(8, n)
    rg = m.egrad2rgrad(x, g) * 1e4  # a huge gradient: norm in the metric ~ 1e2
    unbounded = m.step(x, rg, 1.0, method="exp")
    with pytest.raises(ValueError):  # numerically off the cone (or inf/NaN)
        m.check_point(unbounded)
    for method in ("exp", "retr"):
        y = m.step(x, rg, 1.0, method=method, max_norm=2.0)
        m.check_point(y)
    assert abs(float(m.dist(x, m.step(x, rg, 1.0, max_norm=2.0))) - 2.0) < 1e-8


def test_log_euclidean_exp_step_is_sgd_on_log():
    n = 4
    m = SPD(n, "log-euclidean")
    x = m.random_point(generator=torch.Generator().manual_seed(2))
    g = _sym_from(3, n) * 0.1
    y = m.step(x, m.egrad2rgrad(x, g), 0.5, method="exp")
    # Euclidean SGD on L = log C with C = expm(L): L' = L + 0.5 * dF/dL, dF/dL = Dexp_L^*[G] = Dlog_C^-1[G]
    lam, q = torch.linalg.eigh(x)
    logx = (q * lam.log()) @ q.T
    L = logx.clone().requires_grad_(True)
    (gl,) = torch.autograd.grad((torch.linalg.matrix_exp(L) * g).sum(), L)
    ly, qy = torch.linalg.eigh(y)
    assert torch.allclose((qy * ly.log()) @ qy.T, logx + 0.5 * gl, atol=1e-10)


def test_check_point_messages():
    m = SPD(3)
    with pytest.raises(ValueError, match="symmetric"):
        m.check_point(torch.tensor([[1.0, 2.0, 0], [0, 1, 0], [0, 0, 1]], dtype=F64))
    with pytest.raises(ValueError, match="positive definite"):
        m.check_point(torch.diag(torch.tensor([1.0, -1.0, 2.0], dtype=F64)))
    with pytest.raises(ValueError, match="shape"):
        m.check_point(torch.eye(4, dtype=F64))
    with pytest.raises(ValueError, match="NaN"):
        m.check_point(torch.full((3, 3), float("nan"), dtype=F64))
    with pytest.raises(ValueError, match="positive"):
        PositiveDiagonal(3).check_point(torch.tensor([1.0, 0.0, 2.0]))
    with pytest.raises(ValueError, match="positive"):
        PositiveScalar(3).check_point(torch.tensor(-1.0))
    with pytest.raises(ValueError, match="shape"):
        PositiveScalar(3).check_point(torch.ones(2, 2))


def test_symmetry_check_is_relative_per_point():
    m = SPD(2)
    tiny = 1e-10 * torch.tensor([[1.0, 0.5], [0.4, 1.0]], dtype=F64)  # 20 % asymmetric, 1e-11 in absolute terms
    with pytest.raises(ValueError, match="symmetric"):
        m.check_point(tiny)
    with pytest.raises(ValueError, match="symmetric"):  # a batch: the tiny point is named, not hidden by a big one
        m.check_point(torch.stack([1e6 * torch.eye(2, dtype=F64), tiny]))
    big = 1e6 * torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=F64)
    big[0, 1] += 1e-4  # rounding-level asymmetry: 5e-11 of the largest entry
    m.check_point(big)


def test_to_noise_types_and_factory():
    import certify

    x = SPD(3).random_point(2)
    assert isinstance(noise_for(SPD(3)).to_noise(x[0]), certify.FullGaussian)
    assert [type(o) for o in noise_for(SPD(3)).to_noise(x)] == [certify.FullGaussian] * 2
    assert isinstance(noise_for(PositiveDiagonal(3)).to_noise(torch.ones(3)), certify.DiagonalGaussian)
    assert noise_for(PositiveScalar(3)).to_noise(torch.tensor(0.25)).sigma == 0.25
    assert isinstance(manifolds.get_manifold("spd", 3, metric="log-euclidean"), SPD)
    assert manifolds.get_manifold("scalar", 3).dim == 3
    with pytest.raises(ValueError):
        manifolds.get_manifold("stiefel", 3)
    with pytest.raises(ValueError):
        PositiveDiagonal(3, metric="bures-wasserstein")


def test_geomstats_metric_class_and_instance():
    from manifolds.geomstats_adapter import spd_module

    mod = spd_module()
    by_class = SPD(3, mod.SPDBuresWassersteinMetric)
    gs_instance = _gs_metric(3, "bures-wasserstein")
    by_instance = SPD(3, gs_instance)
    assert isinstance(by_class.metric, manifolds.BuresWasserstein)
    assert isinstance(by_instance.metric, manifolds.BuresWasserstein)
    assert by_class.metric_name == by_instance.metric_name == "bures-wasserstein"
    x, y = by_class.random_point(generator=torch.Generator().manual_seed(0)), torch.eye(3, dtype=F64)
    assert torch.allclose(by_class.dist(x, y), by_instance.dist(x, y))
    assert torch.allclose(by_class.dist(x, y), gs_instance.dist(x, y), rtol=1e-12)
    with pytest.raises(ValueError):
        SPD(4, gs_instance)  # dimension mismatch
    with pytest.raises(ValueError):
        SPD(3, "poincare")
