"""Reusable Hypothesis property suites for any ``manifolds.Manifold`` and any ``manifolds.NoiseMap`` (the
user's own included).

    from manifolds.testing import check_manifold, check_noise_map
    def test_my_manifold():
        check_manifold(MyManifold(4))
        check_noise_map(MyNoise(4), MyManifold(4))

Strategies for well- and ill-conditioned SPD matrices (bounded log-eigenvalues, random orthogonal
eigenvectors) are exported too: ``spd_points``, ``commuting_spd_pair``, ``gl_matrices``; ``kronecker_points`` draws
points of a ``manifolds.KroneckerSPD`` and ``low_rank_points`` those of a
``manifolds.LowRankSPD``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from .base import F64, Manifold
from .noise_map import NoiseMap

_SEEDS = st.integers(min_value=0, max_value=2**31 - 1)


# ---- strategies -------------------------------------------------------------------------
def _orthogonal_from(entries: list[float], n: int) -> torch.Tensor:
    """Orthogonal Q: eigenvectors of the symmetrised Hypothesis-drawn matrix (all zeros shrink to Q = I)."""
    a = torch.tensor(entries, dtype=F64).reshape(n, n)
    return torch.linalg.eigh(a + a.T)[1]


@st.composite
def spd_points(
    draw: st.DrawFn,
    n: int,
    max_log_eig: float = 2.0,
    log_scale: float = 2.0,
    eigvals: Sequence[float] | None = None,
) -> torch.Tensor:
    """SPD Q diag(exp(lambda)) Q^T: |lambda_i| <= max_log_eig around a shift in [-log_scale, log_scale].

    Condition number <= exp(2 max_log_eig) (max_log_eig = 7 gives ill-conditioned kappa ~ 1e6).
    Shrinks towards equal eigenvalues, i.e. the degenerate C = sigma I.
    """
    q = _orthogonal_from(draw(st.lists(st.floats(-1, 1), min_size=n * n, max_size=n * n)), n)
    shift = draw(st.floats(-log_scale, log_scale))
    lam = torch.tensor(
        eigvals
        if eigvals is not None
        else draw(st.lists(st.floats(-max_log_eig, max_log_eig), min_size=n, max_size=n)),
        dtype=F64,
    )
    x = (q * (lam + shift).exp()) @ q.T
    return 0.5 * (x + x.T)


@st.composite
def commuting_spd_pair(draw: st.DrawFn, n: int, max_log_eig: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two SPD matrices sharing eigenvectors."""
    q = _orthogonal_from(draw(st.lists(st.floats(-1, 1), min_size=n * n, max_size=n * n)), n)
    out = []
    for _ in range(2):
        lam = torch.tensor(draw(st.lists(st.floats(-max_log_eig, max_log_eig), min_size=n, max_size=n)), dtype=F64)
        x = (q * lam.exp()) @ q.T
        out.append(0.5 * (x + x.T))
    return out[0], out[1]


@st.composite
def gl_matrices(draw: st.DrawFn, n: int) -> torch.Tensor:
    """Invertible A = Q1 diag(s) Q2 with s in [0.5, 2]."""
    q1 = _orthogonal_from(draw(st.lists(st.floats(-1, 1), min_size=n * n, max_size=n * n)), n)
    q2 = _orthogonal_from(draw(st.lists(st.floats(-1, 1), min_size=n * n, max_size=n * n)), n)
    s = torch.tensor(draw(st.lists(st.floats(0.5, 2.0), min_size=n, max_size=n)), dtype=F64)
    return (q1 * s) @ q2


@st.composite
def manifold_points(draw: st.DrawFn, manifold: Manifold, max_condition: float = 1e6) -> torch.Tensor:
    """Generic points: ``random_point`` from a drawn seed, the isotropic sigma I (via the floor), and for
    matrix manifolds ill-conditioned SPD points (condition number up to ``max_condition``). A ``KroneckerSPD``
    draws ``kronecker_points`` (its points are block-diagonal, not d x d)."""
    from .kronecker import KroneckerSPD
    from .low_rank import LowRankSPD

    if isinstance(manifold, KroneckerSPD):
        return draw(kronecker_points(manifold, max_log_eig=0.25 * math.log(max_condition) / len(manifold.shape)))
    if isinstance(manifold, LowRankSPD):
        return draw(low_rank_points(manifold, max_log_eig=0.25 * math.log(max_condition)))
    x = manifold.random_point(generator=torch.Generator().manual_seed(draw(_SEEDS)))
    if manifold.point_ndim == 2 and draw(st.booleans()):  # ill-conditioned: condition number exactly max_condition
        n, half = manifold.dim, 0.5 * math.log(max_condition)
        inner = draw(st.lists(st.floats(-half, half), min_size=max(n - 2, 0), max_size=max(n - 2, 0)))
        return draw(spd_points(n, max_log_eig=half, log_scale=1.0, eigvals=([-half, half] + inner)[:n]))
    if draw(st.booleans()):  # C = sigma I (the isotropic point, tied eigenvalues) when it is a point here
        iso = _isotropic(manifold, float(x.abs().max()) * draw(st.floats(1.0, 2.0)))
        if iso is not None:
            return iso
    return x


@st.composite
def kronecker_points(draw: st.DrawFn, manifold: Manifold, max_log_eig: float = 3.0) -> torch.Tensor:
    """Points of a ``manifolds.KroneckerSPD``: its ``random_point`` from a drawn seed, the isotropic sigma I (every
    factor I, tied spectrum), or ill-conditioned factors (each factor's log-eigenvalues within +-``max_log_eig``,
    drawn by ``spd_points``; the product's condition number reaches exp(2 m max_log_eig))."""
    kind = draw(st.sampled_from(["random", "isotropic", "factors"]))
    if kind == "random":
        return manifold.random_point(generator=torch.Generator().manual_seed(draw(_SEEDS)))
    sigma = math.exp(draw(st.floats(-2.0, 1.0)))
    if kind == "isotropic":
        return manifold.isotropic(sigma)  # type: ignore[attr-defined]
    factors = [draw(spd_points(n, max_log_eig=max_log_eig, log_scale=1.0)) for n in manifold.shape]  # type: ignore[attr-defined]
    return manifold.from_factors(factors, sigma)  # type: ignore[attr-defined]


@st.composite
def low_rank_points(draw: st.DrawFn, manifold: Manifold, max_log_eig: float = 3.0) -> torch.Tensor:
    """Points of a ``manifolds.LowRankSPD``: its ``random_point`` from a drawn seed, the cold start at sigma I (e at
    its tiny start value), or spread ones (log a within +-``max_log_eig``, spikes e up to exp(``max_log_eig``), either
    sign; U within canonical distance 1 of the start basis, where the logarithm's iteration converges)."""
    kind = draw(st.sampled_from(["random", "isotropic", "spread"]))
    if kind == "random":
        return manifold.random_point(generator=torch.Generator().manual_seed(draw(_SEEDS)))
    sigma = math.exp(draw(st.floats(-2.0, 1.0)))
    if kind == "isotropic":
        return manifold.isotropic(sigma)  # type: ignore[attr-defined]
    x = manifold.random_point(generator=torch.Generator().manual_seed(draw(_SEEDS)))
    lay = manifold.layout  # type: ignore[attr-defined]
    d, k = manifold.dim, lay.rank
    n_a = 1 if manifold.spiked else d  # type: ignore[attr-defined]
    logs = torch.tensor(draw(st.lists(st.floats(-max_log_eig, max_log_eig), min_size=n_a, max_size=n_a)), dtype=F64)
    e = torch.tensor(draw(st.lists(st.floats(-1.0, 1.0), min_size=k, max_size=k)), dtype=F64)
    e = e * (max_log_eig if type(manifold).__name__ == "SignedSpikedSPD" else math.exp(max_log_eig))  # e a log-scale
    a = (sigma * logs.exp()).expand(d)
    return lay.pack(lay.frame(x), e, a)


def _isotropic(manifold: Manifold, sigma: float) -> torch.Tensor | None:
    """sigma I in ``manifold``'s point shape (sigma, sigma * ones or sigma * eye), or None when that is not one of
    its points."""
    d = manifold.dim
    iso = {0: torch.tensor(sigma, dtype=F64), 1: torch.full((d,), sigma, dtype=F64)}.get(
        manifold.point_ndim, sigma * torch.eye(d, dtype=F64) if manifold.point_ndim == 2 else None
    )
    if iso is None:
        return None
    try:
        manifold.check_point(iso)
    except ValueError:
        return None
    return iso


def _tangent(manifold: Manifold, x: torch.Tensor, seed: int, radius: float) -> torch.Tensor:
    """A tangent vector at x with Riemannian norm ``radius`` (random Euclidean direction mapped by egrad2rgrad)."""
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed), dtype=F64)
    u = manifold.egrad2rgrad(x, g)
    n = manifold.norm(x, u)
    return u * (radius / n.clamp_min(1e-300)).reshape(n.shape + (1,) * manifold.point_ndim)


def _settings(max_examples: int, derandomize: bool, shrink: bool) -> settings:
    """The batteries' Hypothesis settings: no deadline, no database, every health check off, shrinking optional."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=derandomize,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[p for p in Phase if shrink or p is not Phase.shrink],
    )


def run_properties(subject: str, properties: list[tuple[str, Callable[[], None]]]) -> None:
    """Run each named property; the first failure is an AssertionError naming ``subject`` and the property
    (so a battery reports which law broke, whatever the exception)."""
    for name, prop in properties:
        try:
            prop()
        except Exception as err:  # noqa: BLE001 - any failure is reported with the property's name
            kind = "" if isinstance(err, AssertionError) else f"{type(err).__name__}: "
            raise AssertionError(f"{subject}: property {name!r} failed: {kind}{err}") from err


def _close(
    a: torch.Tensor | float, b: torch.Tensor | float, rtol: float, what: str, scale: float | None = None
) -> None:
    a, b = torch.as_tensor(a, dtype=F64), torch.as_tensor(b, dtype=F64)
    ref = scale if scale is not None else max(1.0, float(b.abs().max()) if b.numel() else 1.0)
    err = float((a - b).abs().max()) if a.numel() else 0.0
    assert err <= rtol * ref, f"{what}: max error {err:.3g} > {rtol:.1g} * {ref:.3g}"


# ---- the suite ------------------------------------------------------------------------------
def check_manifold(
    manifold: Manifold,
    points: st.SearchStrategy | None = None,
    max_examples: int = 20,
    tangent_radius: float = 0.5,
    rtol: float = 1e-9,
    derandomize: bool = True,
    shrink: bool = True,
    retraction_order: int = 2,
) -> None:
    """Run the property suite on ``manifold``; raises AssertionError naming the failed property.

    ``points``: a strategy of single float64 points (default: ``manifold_points``, which includes
    sigma I). Tangent vectors have Riemannian norm <= ``tangent_radius``. Properties (geometry only; the noise a
    point stands for has its own battery, ``check_noise_map``): point validity, exp/log inverse, distance axioms,
    retraction order (slope test), Riemannian gradient vs a central finite difference along the geodesic,
    batching, step clipping, and torch's default dtype left unchanged.
    ``shrink=False`` skips Hypothesis' shrinking (faster failure, less minimal counterexample).
    ``rtol`` is the float64 relative tolerance (exp/log round trips get ``1e3 * rtol``, distances
    ``1e2 * rtol``); ``retraction_order=1`` accepts a valid first-order retraction. Any exception
    (not only AssertionError) is re-raised as AssertionError naming the property.
    """
    if retraction_order not in (1, 2):
        raise ValueError(f"retraction_order must be 1 or 2, got {retraction_order!r}")
    order = retraction_order  # the property below is also called retraction_order
    pts = points if points is not None else manifold_points(manifold)
    cfg = _settings(max_examples, derandomize, shrink)
    radii = st.floats(0.05, tangent_radius)
    dtype_before = torch.get_default_dtype()
    m = manifold

    @cfg
    @given(x=pts, seed=_SEEDS, r=radii)
    def points_and_exp(x, seed, r):
        m.check_point(x)
        u = _tangent(m, x, seed, r)
        for y in (m.exp(x, u), m.retr(x, u)):
            m.check_point(y)
        wrong_shape = x.reshape((1, 1) + tuple(x.shape))
        for bad, what in ((x * float("nan"), "a NaN point"), (wrong_shape, "a point of another shape")):
            try:
                m.check_point(bad)
            except ValueError:
                continue
            raise AssertionError(f"check_point accepted {what}")

    @cfg
    @given(x=pts, y=pts, seed=_SEEDS, r=radii)
    def exp_log_inverse(x, y, seed, r):
        u = _tangent(m, x, seed, r)
        v = m.log(x, m.exp(x, u))
        assert float(m.norm(x, v - u)) <= 1e3 * rtol * r, "log(x, exp(x, u)) != u"
        _close(m.exp(x, m.log(x, y)), y, 1e3 * rtol, "exp(x, log(x, y)) != y")

    @cfg
    @given(x=pts, y=pts, z=pts, seed=_SEEDS, r=radii)
    def distance_axioms(x, y, z, seed, r):
        dxy, dyx = float(m.dist(x, y)), float(m.dist(y, x))
        assert abs(dxy - dyx) <= 1e2 * rtol * max(1.0, dxy), f"dist not symmetric: {dxy} vs {dyx}"
        assert float(m.dist(x, x)) <= 1e-5, "dist(x, x) != 0"
        if float((x - y).abs().max()) > 1e-6 * float(x.abs().max()):
            assert dxy > 0, "dist(x, y) = 0 for x != y"
        assert float(m.dist(x, z)) <= dxy + float(m.dist(y, z)) + 1e2 * rtol * (1 + dxy), "triangle inequality"
        r = min(r, 0.5 * float(m.injectivity_radius(x)))  # exp is a minimising geodesic only inside it
        u = _tangent(m, x, seed, r)
        assert abs(float(m.dist(x, m.exp(x, u))) - r) <= 1e2 * rtol * max(1.0, r), "dist(x, exp(x, u)) != ||u||_x"

    @cfg
    @given(x=pts, seed=_SEEDS)
    def retraction(x, seed):
        u = _tangent(m, x, seed, 1.0)
        _close(m.retr(x, 0 * u), x, 1e-12, "retr(x, 0) != x")
        err = [float((m.retr(x, t * u) - m.exp(x, t * u)).abs().max()) for t in (1e-1, 1e-2)]
        floor = 1e-13 * max(1.0, float(x.abs().max()))
        if order == 2 and err[0] > 1e3 * floor:  # slope test: a second-order retraction differs from exp by O(t^3)
            assert err[1] <= err[0] * 10**-2.5 + 10 * floor, f"retraction not second order: {err}"
        first = [float((m.retr(x, t * u) - x - t * u).abs().max()) for t in (1e-2, 1e-3)]
        assert first[1] <= first[0] * 10**-1.5 + 10 * floor, f"retraction not first order: {first}"

    def _test_fn(x: torch.Tensor, seed: int) -> Callable[[torch.Tensor], torch.Tensor]:
        w = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed), dtype=F64)
        scale = 1.0 / max(1.0, float(x.abs().max()))  # entries of order one at most: a smooth, bounded test function
        return lambda p: (torch.tanh(scale * p) * w).sum() + (scale * p).square().sum()

    @cfg
    @given(x=pts, seed=_SEEDS)
    def riemannian_gradient(x, seed):
        f = _test_fn(x, seed)
        xr = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(f(xr), xr)
        assert torch.isfinite(g).all(), "non-finite Euclidean gradient"
        rg = m.egrad2rgrad(x, g)
        u = _tangent(m, x, seed + 1, 1.0)
        t = 1e-5
        with torch.no_grad():
            fd = (f(m.exp(x, t * u)) - f(m.exp(x, -t * u))) / (2 * t)
        an = float(m.inner(x, rg, u))
        assert abs(float(fd) - an) <= 1e-5 * max(1.0, abs(an), float(m.norm(x, rg))), (
            f"<rgrad, u>_x = {an} but the finite difference along the geodesic is {float(fd)}"
        )

    @cfg
    @given(x=pts, y=pts, seed=_SEEDS)
    def batching(x, y, seed):
        xb, yb = torch.stack([x, y]), torch.stack([y, x])
        ub = torch.stack([_tangent(m, x, seed, 0.3), _tangent(m, y, seed, 0.3)])
        for name, fn, args in (
            ("exp", m.exp, (xb, ub)),
            ("retr", m.retr, (xb, ub)),
            ("log", m.log, (xb, yb)),
            ("dist", m.dist, (xb, yb)),
            ("inner", lambda a, b: m.inner(a, b, b), (xb, ub)),
            ("egrad2rgrad", m.egrad2rgrad, (xb, ub)),
        ):
            out = fn(*args)
            single = torch.stack([fn(*(a[i] for a in args)) for i in range(2)])
            tol = 1e-7 if name == "dist" else 1e-9  # sqrt amplifies round-off near dist = 0
            _close(out, single, tol, f"batched {name} != stacked single results")

    @cfg
    @given(x=pts, seed=_SEEDS)
    def step(x, seed):
        u = _tangent(m, x, seed, 2.0)
        y = m.step(x, u, 1.0, method="exp", max_norm=0.5)
        limit = float(m.step_limit(x, 0.5))  # <= 0.5 and inside the injectivity radius
        assert limit <= 0.5 * (1 + 1e-12) and limit <= float(m.injectivity_radius(x)), "step_limit too long"
        assert abs(float(m.dist(x, y)) - limit) <= 1e2 * rtol, "step not clipped to max_norm in the metric"
        m.check_point(m.step(x, u, 0.1, method="retr"))

    properties: list[tuple[str, Callable[[], None]]] = [
        ("points_and_exp", points_and_exp),
        ("exp_log_inverse", exp_log_inverse),
        ("distance_axioms", distance_axioms),
        ("retraction_order", retraction),
        ("riemannian_gradient", riemannian_gradient),
        ("batching", batching),
        ("step", step),
    ]
    run_properties(repr(manifold), properties)
    assert torch.get_default_dtype() == dtype_before, "the manifold changed torch's default dtype"


def _dense_scales(noise: NoiseMap, x: torch.Tensor) -> torch.Tensor:
    """The singular values of the noise's A(x) (batch + (dim,), ascending), from the dense d x normals matrix: the
    reference every noise map is held against."""
    n = noise.normals
    eye = torch.eye(n, dtype=F64).expand(x.shape[: x.ndim - noise.point_ndim] + (n, n))
    a = noise.apply(x, eye)  # rows: A e_i, (.., normals, dim)
    return torch.linalg.svdvals(a).flip(-1)


def check_noise_map(
    noise: NoiseMap,
    manifold: Manifold,
    points: st.SearchStrategy | None = None,
    max_examples: int = 20,
    rtol: float = 1e-9,
    derandomize: bool = True,
    shrink: bool = True,
) -> None:
    """Run the noise-map property suite on ``noise`` over points of ``manifold``; raises AssertionError naming the
    failed property.

    Every property is held against the dense path: A(x) built from ``apply`` on the rows of the identity, its
    singular values the noise's scales. Properties: ``apply`` shapes and dtype; ``min_eigenvalue`` a lower bound on
    the smallest scale (exact where the map lists ``eigenvalues``) with a finite gradient; ``log_volume`` the mean log
    scale with a finite gradient that matches a finite difference along the manifold's geodesic; the floor (a point
    of the manifold whose smallest scale is at least the level, idempotent, the identity above it; with a ceiling
    every scale at most it); batching; the ``certify`` noise draws what ``apply`` draws.
    """
    pts = points if points is not None else manifold_points(manifold)
    cfg = _settings(max_examples, derandomize, shrink)
    nm, m = noise, manifold
    if nm.point_ndim != m.point_ndim or nm.dim != m.dim:
        raise ValueError(f"{nm!r} does not fit the points of {m!r} (point_ndim, dim)")

    def listed(x: torch.Tensor) -> torch.Tensor | None:
        try:
            return nm.eigenvalues(x)
        except NotImplementedError:
            return None

    @cfg
    @given(x=pts, seed=_SEEDS)
    def apply_shapes(x, seed):
        for dtype in (torch.float32, F64):
            z = torch.randn((2, 3, nm.normals), generator=torch.Generator().manual_seed(seed), dtype=dtype)
            eps = nm.apply(torch.stack([x, x]).to(dtype), z)
            assert eps.shape == (2, 3, nm.dim) and eps.dtype == dtype, f"apply gave {tuple(eps.shape)} {eps.dtype}"

    @cfg
    @given(x=pts, seed=_SEEDS)
    def spectral_terms(x, seed):
        scales = _dense_scales(nm, x)
        lo = float(nm.min_eigenvalue(x))
        assert lo <= float(scales.min()) * (1 + 1e-9), (
            f"min_eigenvalue {lo:.6g} > smallest scale {float(scales.min()):.6g}"
        )
        assert lo > 0, "min_eigenvalue must be positive"
        _close(nm.log_volume(x), scales.log().mean(), 1e-9, "log_volume != mean log scale")
        lam = listed(x)
        if lam is not None:
            assert bool((lam[1:] >= lam[:-1]).all()), "eigenvalues not ascending"
            _close(lam, scales, 1e-9, "eigenvalues != the dense scales", scale=float(scales.max()))
            _close(lo, lam.min(), 1e-10, "min_eigenvalue != the smallest listed eigenvalue", scale=float(lam.max()))
        u = _tangent(m, x, seed, 1.0)
        for fn in (nm.log_volume, nm.min_eigenvalue):
            xr = x.clone().requires_grad_(True)
            (g,) = torch.autograd.grad(fn(xr), xr)
            assert torch.isfinite(g).all(), f"{fn.__name__}: non-finite gradient"
        xr = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(nm.log_volume(xr), xr)
        t = 1e-4  # log det is linear along AI geodesics: rounding (~kappa * eps / t) dominates, not truncation
        with torch.no_grad():
            fd = (nm.log_volume(m.exp(x, t * u)) - nm.log_volume(m.exp(x, -t * u))) / (2 * t)
        an = float((g * u).sum())
        assert abs(float(fd) - an) <= 1e-5 * max(1.0, abs(an)), (
            f"log_volume gradient {an} vs finite difference {float(fd)}"
        )

    @cfg
    @given(x=pts, frac=st.floats(0.0, 1.0))
    def floor(x, frac):
        scales = _dense_scales(nm, x)
        smin, smax = float(scales.min()), float(scales.max())
        level = smin + frac * (smax - smin)
        f = nm.project_floor(x, level)
        m.check_point(f)
        assert float(nm.min_eigenvalue(f)) >= level * (1 - 1e-9), "floor: min_eigenvalue below the level"
        assert float(_dense_scales(nm, f).min()) >= level * (1 - 1e-9), "floor: a scale below the level"
        _close(nm.project_floor(f, level), f, 1e-12, "floor not idempotent", scale=smax)
        assert torch.equal(nm.project_floor(x, 0.5 * float(nm.min_eigenvalue(x))), x), "floor changed a point above it"
        lo, hi = smin + 0.25 * frac * (smax - smin), smax - 0.25 * (1 - frac) * (smax - smin)
        c = nm.project_floor(x, lo, hi)
        m.check_point(c)
        sc = _dense_scales(nm, c)
        assert float(sc.min()) >= lo * (1 - 1e-9) and float(sc.max()) <= hi * (1 + 1e-9), "floor with a ceiling"
        lam, lam_f, lam_c = listed(x), listed(f), listed(c)
        if lam is not None and lam_f is not None and lam_c is not None:  # the shipped maps clamp eigenvalues
            _close(lam_f, lam.clamp(min=level), 1e-9, "floor eigenvalues != clamp", scale=smax)
            _close(lam_c, lam.clamp(min=lo, max=hi), 1e-9, "floor with a ceiling != clamp", scale=smax)
            if nm.point_ndim == 2 and x.shape[-1] == x.shape[-2]:  # a square point is the scale matrix itself
                _close(f @ x, x @ f, 1e-9, "floor changed eigenvectors", scale=smax**2)

    @cfg
    @given(x=pts, y=pts, seed=_SEEDS)
    def batching(x, y, seed):
        xb = torch.stack([x, y])
        z = torch.randn((2, 3, nm.normals), generator=torch.Generator().manual_seed(seed), dtype=F64)
        for name, fn, args in (
            ("apply", nm.apply, (xb, z)),
            ("log_volume", nm.log_volume, (xb,)),
            ("min_eigenvalue", nm.min_eigenvalue, (xb,)),
        ):
            out = fn(*args)
            single = torch.stack([fn(*(a[i : i + 1] if name == "apply" else a[i] for a in args)) for i in range(2)])
            _close(out, single.reshape(out.shape), 1e-9, f"batched {name} != stacked single results")
        lm = torch.stack([nm.min_eigenvalue(x), nm.min_eigenvalue(y)]) * 1.5
        _close(
            nm.project_floor(xb, lm),
            torch.stack([nm.project_floor(x, lm[0]), nm.project_floor(y, lm[1])]),
            1e-9,
            "batched floor",
        )

    @cfg
    @given(x=pts, seed=_SEEDS)
    def certify_noise(x, seed):
        obj = nm.to_noise(x)
        eps, _ = obj.sample(5, nm.dim, torch.Generator().manual_seed(seed), "cpu", F64)
        z = torch.randn((5, nm.normals), generator=torch.Generator().manual_seed(seed), dtype=F64)
        _close(eps, nm.apply(x.unsqueeze(0), z.unsqueeze(0))[0], 1e-10, "to_noise draws other noise than apply")
        assert len(nm.to_noise(torch.stack([x, x]))) == 2, "to_noise of a batch must return a list"

    properties: list[tuple[str, Callable[[], None]]] = [
        ("apply_shapes", apply_shapes),
        ("spectral_terms", spectral_terms),
        ("floor", floor),
        ("batching", batching),
        ("certify_noise", certify_noise),
    ]
    run_properties(f"{nm!r} on {m!r}", properties)
