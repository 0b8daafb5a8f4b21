"""Reusable Hypothesis property suite for any ``manifolds.Manifold`` (the user's own included).

    from manifolds.testing import check_manifold
    def test_my_manifold():
        check_manifold(MyManifold(4))

Strategies for well- and ill-conditioned SPD matrices (bounded log-eigenvalues, random orthogonal
eigenvectors) are exported too: ``spd_points``, ``commuting_spd_pair``, ``gl_matrices``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from .base import F64, Manifold

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
    matrix manifolds ill-conditioned SPD points (condition number up to ``max_condition``)."""
    x = manifold.random_point(generator=torch.Generator().manual_seed(draw(_SEEDS)))
    if manifold.point_ndim == 2 and draw(st.booleans()):  # ill-conditioned: condition number exactly max_condition
        n, half = manifold.dim, 0.5 * math.log(max_condition)
        inner = draw(st.lists(st.floats(-half, half), min_size=max(n - 2, 0), max_size=max(n - 2, 0)))
        return draw(spd_points(n, max_log_eig=half, log_scale=1.0, eigvals=([-half, half] + inner)[:n]))
    if draw(st.booleans()):  # C = sigma I: every eigenvalue clamped up to sigma
        sigma = float(manifold.eigenvalues(x).max()) * draw(st.floats(1.0, 2.0))
        x = manifold.project_floor(x, sigma)
    return x


def _tangent(manifold: Manifold, x: torch.Tensor, seed: int, radius: float) -> torch.Tensor:
    """A tangent vector at x with Riemannian norm ``radius`` (random Euclidean direction mapped by egrad2rgrad)."""
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed), dtype=F64)
    u = manifold.egrad2rgrad(x, g)
    n = manifold.norm(x, u)
    return u * (radius / n.clamp_min(1e-300)).reshape(n.shape + (1,) * manifold.point_ndim)


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
    sigma I). Tangent vectors have Riemannian norm <= ``tangent_radius``. Properties: point validity,
    exp/log inverse, distance axioms, retraction order (slope test), Riemannian gradient vs a central
    finite difference along the geodesic, spectral functions and their gradients, the floor, batching,
    the certify noise, step clipping, and torch's default dtype left unchanged.
    ``shrink=False`` skips Hypothesis' shrinking (faster failure, less minimal counterexample).
    ``rtol`` is the float64 relative tolerance (exp/log round trips get ``1e3 * rtol``, distances
    ``1e2 * rtol``); ``retraction_order=1`` accepts a valid first-order retraction. Any exception
    (not only AssertionError) is re-raised as AssertionError naming the property.
    """
    if retraction_order not in (1, 2):
        raise ValueError(f"retraction_order must be 1 or 2, got {retraction_order!r}")
    order = retraction_order  # the property below is also called retraction_order
    pts = points if points is not None else manifold_points(manifold)
    cfg = settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=derandomize,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[p for p in Phase if shrink or p is not Phase.shrink],
    )
    radii = st.floats(0.05, tangent_radius)
    dtype_before = torch.get_default_dtype()
    m = manifold

    @cfg
    @given(x=pts, seed=_SEEDS, r=radii)
    def points_and_exp(x, seed, r):
        m.check_point(x)
        u = _tangent(m, x, seed, r)
        for name, y in (("exp", m.exp(x, u)), ("retr", m.retr(x, u))):
            m.check_point(y)
            assert float(m.min_eigenvalue(y)) > 0, f"{name} left the cone"
        try:
            m.check_point(-x)
        except ValueError:
            pass
        else:
            raise AssertionError("check_point accepted -x")

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
        gen = torch.Generator().manual_seed(seed)
        z = torch.randn(1, 3, m.dim, generator=gen, dtype=F64)
        w = torch.randn(1, 3, m.dim, generator=gen, dtype=F64)
        scale = 1.0 / float(m.eigenvalues(x).max())
        return lambda p: (torch.tanh(scale * m.noise_matrix_apply(p.unsqueeze(0), z)) * w).sum() + m.log_volume(p)

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
    @given(x=pts)
    def spectral_functions(x):
        lam = m.eigenvalues(x)
        assert bool((lam[1:] >= lam[:-1]).all()), "eigenvalues not ascending"
        _close(m.log_volume(x), lam.log().mean(), 1e-10, "log_volume != mean log eigenvalue")
        _close(m.min_eigenvalue(x), lam.min(), 1e-10 * float(lam.max()), "min_eigenvalue")
        for fn, expect in ((m.log_volume, 1.0), (m.min_eigenvalue, float(lam.min()))):
            xr = x.clone().requires_grad_(True)
            (g,) = torch.autograd.grad(fn(xr), xr)
            assert torch.isfinite(g).all(), f"{fn.__name__}: non-finite gradient"
            # Euler's identity for degree-0/1 homogeneous functions: d/dt f((1+t) x) at t = 0
            _close((g * x).sum(), expect, 1e-8, f"{fn.__name__}: <grad, x>", scale=max(1.0, abs(expect)))

    @cfg
    @given(x=pts, frac=st.floats(0.0, 1.0))
    def floor(x, frac):
        lam = m.eigenvalues(x)
        level = float(lam.min() + frac * (lam.max() - lam.min()))
        f = m.project_floor(x, level)
        m.check_point(f)
        _close(m.eigenvalues(f), lam.clamp(min=level), 1e-9, "floor eigenvalues != clamp", scale=float(lam.max()))
        _close(m.project_floor(f, level), f, 1e-12, "floor not idempotent", scale=float(lam.max()))
        assert torch.equal(m.project_floor(x, 0.5 * float(lam.min())), x), "floor changed a point above it"
        # the ceiling: eigenvalues clamped into [lo, hi], the identity inside
        lo = float(lam.min() + 0.25 * frac * (lam.max() - lam.min()))
        hi = float(lam.max() - 0.25 * (1 - frac) * (lam.max() - lam.min()))
        c = m.project_floor(x, lo, hi)
        m.check_point(c)
        _close(
            m.eigenvalues(c),
            lam.clamp(min=lo, max=hi),
            1e-9,
            "floor with lambda_max: eigenvalues != clamp(lambda_min, lambda_max)",
            scale=float(lam.max()),
        )
        assert float(m.eigenvalues(c).max()) <= hi * (1 + 1e-9), "lambda_max ceiling ignored"
        assert torch.equal(m.project_floor(x, 0.5 * float(lam.min()), 2 * float(lam.max())), x), (
            "floor with lambda_max changed a point inside the bounds"
        )
        if m.point_ndim == 2:  # eigenvectors kept <=> f commutes with x
            _close(f @ x, x @ f, 1e-9, "floor changed eigenvectors", scale=float(lam.max()) ** 2)

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
            ("log_volume", m.log_volume, (xb,)),
            ("min_eigenvalue", m.min_eigenvalue, (xb,)),
        ):
            out = fn(*args)
            single = torch.stack([fn(*(a[i] for a in args)) for i in range(2)])
            tol = 1e-7 if name == "dist" else 1e-9  # sqrt amplifies round-off near dist = 0
            _close(out, single, tol, f"batched {name} != stacked single results")
        lm = torch.stack([m.eigenvalues(x).mean(), m.eigenvalues(y).mean()])
        _close(
            m.project_floor(xb, lm),
            torch.stack([m.project_floor(x, lm[0]), m.project_floor(y, lm[1])]),
            1e-9,
            "batched floor",
        )

    @cfg
    @given(x=pts, seed=_SEEDS)
    def noise_and_step(x, seed):
        noise = m.to_noise(x)
        eps, _ = noise.sample(5, m.dim, torch.Generator().manual_seed(seed), "cpu", F64)
        z = torch.randn((5, m.dim), generator=torch.Generator().manual_seed(seed), dtype=F64)
        _close(eps, m.noise_matrix_apply(x.unsqueeze(0), z.unsqueeze(0))[0], 1e-10, "to_noise vs noise_matrix_apply")
        assert len(m.to_noise(torch.stack([x, x]))) == 2, "to_noise of a batch must return a list"
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
        ("spectral_functions", spectral_functions),
        ("floor", floor),
        ("batching", batching),
        ("noise_and_step", noise_and_step),
    ]
    run_properties(repr(manifold), properties)
    assert torch.get_default_dtype() == dtype_before, "the manifold changed torch's default dtype"
