"""A property battery for step rules, like ``manifolds.testing.check_manifold`` for manifolds.

    from ddrs.testing import check_step_rule
    def test_my_rule():
        check_step_rule(MyRule(), manifolds.SPD(3, metric="log-euclidean"))

The rule is driven by the same ``Stepper`` as ``ddrs.ascend`` (its state, the eigenframe, the constraint) on a
deterministic objective with a unique maximiser, f(x) = mean log eigenvalue of C(x) - tr(T^-1 C(x)) / d, C(x) the
noise matrix of the point x and T = C(target) (maximal at x = target; concave along the geodesics of every
shipped metric). The batch holds a random start and the isotropic start sigma I (tied eigenvalues).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable

import torch

from manifolds import Manifold, NoiseMap, as_noise_map
from manifolds.testing import run_properties

from .objectives import EigenvalueFloor
from .optimizers import Stepper, StepRule

F64 = torch.float64


def _noise_matrix(noise: NoiseMap, x: torch.Tensor) -> torch.Tensor:
    """C(x) (B, d, d) for a batch of points: the noise's scale (A A^T)^(1/2), A(x) = the noise of the rows of the
    identity (normals x d); A itself when it is square and symmetric (every shipped map)."""
    n = noise.normals
    eye = torch.eye(n, dtype=F64, device=x.device).expand(x.shape[0], n, n)
    a = noise.apply(x, eye)
    if n == noise.dim and torch.allclose(a, a.transpose(-1, -2), rtol=0, atol=1e-12 * float(a.detach().abs().max())):
        return a
    lam, vec = torch.linalg.eigh(a.transpose(-1, -2) @ a)
    return (vec * lam.clamp_min(0).sqrt().unsqueeze(-2)) @ vec.transpose(-1, -2)


def _scales(noise: NoiseMap, x: torch.Tensor) -> torch.Tensor:
    """The scales of the noise of each point (its singular values), ascending, (B, d)."""
    return torch.linalg.eigvalsh(_noise_matrix(noise, x.reshape((-1,) + tuple(x.shape[1:]))))


def _covariance(noise: NoiseMap, x: torch.Tensor) -> torch.Tensor:
    """S(x) = A A^T (B, d, d), A(x) the noise of the rows of the identity (normals x d)."""
    n = noise.normals
    a = noise.apply(x, torch.eye(n, dtype=F64, device=x.device).expand(x.shape[0], n, n))
    return a.transpose(-1, -2) @ a


def concave_objective(noise: NoiseMap | Manifold, target: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """f(x) = mean log eigenvalue of C(x) - tr(T^-1 C(x)) / d per point (B,), maximal at x = target (``noise``: a
    ``manifolds.NoiseMap``, or a manifold whose points are the noise scale). A noise drawn from more normals than d
    (``normals`` > ``dim``, e.g. ``manifolds.LowRankNoise``) takes the covariance form (log det S(x) - tr(T^-1 S(x))) /
    2d, S = A A^T and T = S(target), also maximal at x = target: no matrix square root, whose derivative has no value
    at the tied scales such noises always have (a spiked covariance)."""
    noise = as_noise_map(noise)
    if noise.normals != noise.dim:
        s_inv = torch.linalg.inv(_covariance(noise, target))

        def f_cov(x: torch.Tensor) -> torch.Tensor:
            return noise.log_volume(x) - 0.5 * (s_inv * _covariance(noise, x)).sum((-2, -1)) / noise.dim

        return f_cov
    t_inv = torch.linalg.inv(_noise_matrix(noise, target))

    def f(x: torch.Tensor) -> torch.Tensor:
        c = _noise_matrix(noise, x)
        return noise.log_volume(x) - (t_inv * c).sum((-2, -1)) / noise.dim

    return f


def euclidean_gradient(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    xr = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(f(xr).sum(), xr)
    return g


def ascend_points(
    rule: StepRule,
    manifold,
    start: torch.Tensor,
    gradient: Callable[[torch.Tensor, int], torch.Tensor],
    steps: int,
    constraint: EigenvalueFloor | None = None,
    shared_frame: bool = True,
    noise: NoiseMap | None = None,
) -> list[torch.Tensor]:
    """The start (constraint applied) and ``steps`` iterates of ``rule`` driven by a ``Stepper``;
    ``gradient(point, k)`` is the Euclidean gradient at step k."""
    stepper = Stepper(rule, manifold, start, constraint, shared_frame, noise)
    points = [stepper.point]
    for k in range(steps):
        points.append(stepper.step(gradient(stepper.point, k)))
    return points


def _starts(manifold, noise: NoiseMap, seed: int, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """(start, target): a random start and the isotropic start sigma I (its largest scale), a random target."""
    gen = torch.Generator().manual_seed(seed)
    start = manifold.random_point(batch, generator=gen)
    target = manifold.random_point(batch, generator=gen)
    top = _scales(noise, start[1:2]).amax()
    start[1:2] = noise.project_floor(start[1:2], float(top))  # every scale = top: sigma I
    return start, target


def _exact(noise: NoiseMap, target: torch.Tensor) -> Callable[[torch.Tensor, int], torch.Tensor]:
    """The Euclidean gradient of ``concave_objective(noise, target)`` as a ``gradient(point, k)``."""
    f = concave_objective(noise, target)
    return lambda x, k: euclidean_gradient(f, x)


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(p, q) for p, q in zip(a, b))
    return bool(a == b)


def _configuration(rule: StepRule) -> dict:
    names: list[str] = [f.name for f in dataclasses.fields(rule)] if dataclasses.is_dataclass(rule) else []
    return {name: getattr(rule, name) for name in names} | dict(vars(rule))


def check_step_rule(
    rule: StepRule, manifold, steps: int = 30, seed: int = 0, rtol: float = 1e-6, noise: NoiseMap | None = None
) -> None:
    """Run the battery on ``rule`` x ``manifold`` (with ``noise``, default ``manifolds.noise_for(manifold)``, for the
    objective and the floor); raises AssertionError naming the failed property.

    A combination the rule does not support must say so up front: ``rule.check(manifold)`` raises ValueError
    (re-raised here as it is). Properties:

    * ``ascends``: from both starts, ``steps`` steps raise the objective (last > start, by at least a tenth of the
      gap to the maximum), with and without a constraint;
    * ``on_manifold``: every iterate is a point of the manifold (``check_point``); with an eigenvalue floor and
      ceiling every iterate's eigenvalues lie between them;
    * ``deterministic``: the same seed (a noisy gradient) gives the same iterates bit for bit;
    * ``stateless``: the rule's configuration is unchanged by fits, ``init_state`` gives a fresh state, and
      state does not leak: a fit after another one, or interleaved with another one, takes the iterates of a
      fresh copy of the rule;
    * ``shared_frame``: carrying the eigenframe between steps changes iterates by rounding only (``rtol``);
    * ``batched``: a batch takes the iterates of its inputs run one by one (up to ``rtol``).
    """
    rule.check(manifold)
    nm = as_noise_map(manifold if noise is None else noise)
    before = copy.deepcopy(rule)
    fresh = copy.deepcopy(rule)
    start, target = _starts(manifold, nm, seed)
    f = concave_objective(nm, target)

    def exact(x: torch.Tensor, k: int) -> torch.Tensor:
        return euclidean_gradient(f, x)

    lam = _scales(nm, torch.cat([start, target]))
    floor = EigenvalueFloor(0.5 * float(lam.amin()), 2.0 * float(lam.amax()))

    def ascends() -> None:
        for constraint in (None, floor):
            path = ascend_points(rule, manifold, start, exact, steps, constraint, noise=nm)
            first, last, best = f(path[0]), f(path[-1]), f(target)
            gain = last - first
            assert bool((gain > 0.1 * (best - first)).all()), (
                f"objective did not rise (constraint {constraint is not None}): start {first.tolist()}, "
                f"after {steps} steps {last.tolist()}, maximum {best.tolist()}"
            )

    def on_manifold() -> None:
        for constraint in (None, floor):
            for k, p in enumerate(ascend_points(rule, manifold, start, exact, steps, constraint, noise=nm)):
                try:
                    manifold.check_point(p)
                except ValueError as err:
                    raise AssertionError(f"iterate {k} is not on the manifold: {err}") from err
                if constraint is not None:
                    ev = _scales(nm, p)
                    lo, hi = float(constraint.floor), float(constraint.ceiling)  # type: ignore[arg-type]
                    assert float(ev.amin()) >= lo * (1 - 1e-9) and float(ev.amax()) <= hi * (1 + 1e-9), (
                        f"iterate {k} leaves [floor, ceiling] = [{lo:.4g}, {hi:.4g}]: "
                        f"eigenvalues in [{float(ev.amin()):.4g}, {float(ev.amax()):.4g}]"
                    )

    def stateless() -> None:
        s1, s2 = rule.init_state(), rule.init_state()
        assert s1 is not s2 and s1.step == 0 and not s1.buffers, "init_state must return a fresh, empty state"
        other_start, other_target = _starts(manifold, nm, seed + 1)
        g = concave_objective(nm, other_target)
        ascend_points(
            rule, manifold, other_start, lambda x, k: euclidean_gradient(g, x), steps, noise=nm
        )  # an earlier fit
        after = ascend_points(rule, manifold, start, exact, steps, noise=nm)
        clean = ascend_points(fresh, manifold, start, exact, steps, noise=nm)
        assert all(torch.equal(a, b) for a, b in zip(after, clean)), "state leaked from an earlier fit"
        assert _same(_configuration(rule), _configuration(before)), (
            f"the rule's configuration changed during fits: {before!r} -> {rule!r}"
        )
        one = Stepper(rule, manifold, start, noise=nm)
        two = Stepper(rule, manifold, other_start, noise=nm)
        for _ in range(steps):  # two fits at once with one rule object
            one.step(exact(one.point, 0))
            two.step(euclidean_gradient(g, two.point))
        assert torch.equal(one.point, clean[-1]), "two interleaved fits with one rule object interfere"

    def noisy(seed_: int) -> Callable[[torch.Tensor, int], torch.Tensor]:
        gen = torch.Generator().manual_seed(seed_)

        def grad(x: torch.Tensor, k: int) -> torch.Tensor:
            g = euclidean_gradient(f, x)
            noise = torch.randn(g.shape, generator=gen, dtype=F64)
            if manifold.point_ndim == 2 and noise.shape[-1] == noise.shape[-2]:  # square (symmetric) points only
                noise = 0.5 * (noise + noise.transpose(-1, -2))
            return g + 0.3 * g.abs().amax() * noise

        return grad

    def deterministic() -> None:  # fresh copies: a leak between fits is ``stateless``'s to report
        a = ascend_points(copy.deepcopy(before), manifold, start, noisy(seed + 7), steps, floor, noise=nm)
        b = ascend_points(copy.deepcopy(before), manifold, start, noisy(seed + 7), steps, floor, noise=nm)
        assert all(torch.equal(p, q) for p, q in zip(a, b)), "the same seed gave other iterates"

    def _close(a: list[torch.Tensor], b: list[torch.Tensor], what: str) -> None:
        for k, (p, q) in enumerate(zip(a, b)):
            err = float((p - q).abs().max())
            scale = float(q.abs().max())
            assert err <= rtol * scale, f"{what}: iterate {k} differs by {err:.3g} (> {rtol:g} x {scale:.3g})"

    def shared_frame() -> None:
        for constraint in (None, floor):
            carried = ascend_points(rule, manifold, start, exact, steps, constraint, shared_frame=True, noise=nm)
            alone = ascend_points(rule, manifold, start, exact, steps, constraint, shared_frame=False, noise=nm)
            _close(carried, alone, "shared frame vs none")

    def batched() -> None:
        together = ascend_points(rule, manifold, start, exact, steps, floor, noise=nm)
        for i in range(start.shape[0]):
            single = ascend_points(
                rule, manifold, start[i : i + 1], _exact(nm, target[i : i + 1]), steps, floor, noise=nm
            )
            _close([p[i : i + 1] for p in together], single, f"batch vs input {i} alone")

    properties = [
        ("ascends", ascends),
        ("on_manifold", on_manifold),
        ("deterministic", deterministic),
        ("stateless", stateless),
        ("shared_frame", shared_frame),
        ("batched", batched),
    ]
    run_properties(f"{rule!r} on {manifold!r}", properties)
