"""Pymanopt solvers on our manifolds (float64 numpy at the boundary; we MAXIMISE).

When to use which solver:
* ``"sgd"``: SteepestDescent with a fixed-step line searcher = Riemannian SGD, or with any
  ``line_searcher`` passed in (``ddrs`` passes one that moves by its step rule, e.g. Riemannian Adam:
  then Pymanopt runs the loop and the rule chooses every move). Use it for Monte-Carlo objectives
  (the certification-radius surrogate): Armijo backtracking compares noisy costs and stalls with
  "min step_size reached".
* ``"steepest"`` (Armijo backtracking) and ``"cg"`` (conjugate gradient, adaptive line search):
  deterministic objectives only (fixed samples / closed-form costs).

Every manifold (any metric, scalar, diagonal, user-defined) runs through one thin adapter whose
retraction is ``manifold.step`` (``method`` 'exp' or 'retr', the step clipped to ``max_norm`` in the
metric's own norm) followed by the optional ``project`` (e.g. the eigenvalue floor and ceiling):
the constraints hold at every iterate Pymanopt sees, not only at the end.
The model keeps its own dtype: the callback receives a float64 torch tensor and casts itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from .base import F64, Manifold


class FixedStepLineSearcher:
    """Constant step: retract x along ``step_size * d`` (turns SteepestDescent into Riemannian SGD);
    the adapter's retraction clips and projects."""

    def __init__(self, step_size: float):
        self.step_size = float(step_size)

    def search(self, objective: Any, manifold: Any, x: Any, d: Any, f0: Any, df0: Any) -> tuple[float, Any]:
        step = self.step_size * d
        return manifold.norm(x, step), manifold.retraction(x, step)


def _pymanopt_adapter(
    manifold: Manifold,
    batch: int | None,
    method: str = "retr",
    max_norm: float | None = None,
    project: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Any:
    """A pymanopt ``Manifold`` backed by our torch operations (points as float64 numpy); its retraction is
    ``manifold.step(x, u, 1, method, max_norm)`` then ``project``."""
    import pymanopt.manifolds.manifold as pm

    t = lambda a: torch.as_tensor(np.asarray(a), dtype=F64)  # noqa: E731
    n = lambda a: a.detach().cpu().numpy()  # noqa: E731

    class _Adapter(pm.Manifold):
        def __init__(self):
            dim = {0: 1, 1: manifold.dim, 2: manifold.dim * (manifold.dim + 1) // 2}[manifold.point_ndim]
            super().__init__(f"ddrs:{manifold!r}", dim * (batch or 1))

        @property
        def typical_dist(self):
            return float(np.sqrt(self.dim))

        def inner_product(self, x, u, v):
            return float(manifold.inner(t(x), t(u), t(v)).sum())

        def norm(self, x, u):
            return float(np.sqrt(max(self.inner_product(x, u, u), 0.0)))

        def projection(self, x, u):
            own = getattr(manifold, "proj", None)  # a manifold with its own tangent projection (structured points)
            if own is not None:
                return n(own(t(x), t(u)))
            u = np.asarray(u)
            return 0.5 * (u + np.swapaxes(u, -1, -2)) if manifold.point_ndim == 2 else u

        to_tangent_space = projection

        def euclidean_to_riemannian_gradient(self, x, g):
            return n(manifold.egrad2rgrad(t(x), t(g)))

        def retraction(self, x, u):
            y = manifold.step(t(x), t(u), 1.0, method=method, max_norm=max_norm)
            return n(project(y) if project is not None else y)

        def exp(self, x, u):
            return n(manifold.exp(t(x), t(u)))

        def log(self, x, y):
            return n(manifold.log(t(x), t(y)))

        def dist(self, x, y):
            return float(manifold.dist(t(x), t(y)).square().sum().sqrt())

        def random_point(self):
            return n(manifold.random_point(*(() if batch is None else (batch,))))

        def random_tangent_vector(self, x):
            u = manifold.egrad2rgrad(t(x), torch.randn(np.shape(x), dtype=F64))
            return n(u / self.norm(x, n(u)))

        def zero_vector(self, x):
            return np.zeros_like(x)

        def transport(self, x1, x2, u):
            return u  # identity transport (all tangent spaces are the same vector space)

    return _Adapter()


def maximize(
    cost_and_rgrad: Callable[[torch.Tensor], tuple[float, torch.Tensor]],
    x0: torch.Tensor,
    manifold: Manifold,
    solver: str = "sgd",
    step_size: float = 0.1,
    max_iterations: int = 100,
    callback: Callable[[int, torch.Tensor, float], None] | None = None,
    max_norm: float | None = None,
    verbosity: int = 0,
    method: str = "retr",
    project: Callable[[torch.Tensor], torch.Tensor] | None = None,
    line_searcher: Any = None,
) -> tuple[torch.Tensor, list[dict]]:
    """Maximise ``cost_and_rgrad(x) -> (value, Riemannian gradient)`` from ``x0`` with a Pymanopt solver.

    Every move is ``manifold.step(x, u, 1, method, max_norm)`` (``method`` 'exp' or 'retr', clipped to
    ``max_norm`` in the metric's norm) followed by ``project`` (e.g. a floor), inside Pymanopt's loop.

    ``line_searcher`` (solver ``"sgd"`` only): a Pymanopt line searcher that replaces the fixed step, e.g. one
    that moves by an optimiser's step rule (``ddrs.pymanopt_ascent``: Riemannian Adam inside Pymanopt's loop).
    Pymanopt's wall-clock limit is lifted (``max_time``): ``max_iterations`` ends the run.

    Returns the final point (float64 torch tensor, shape of x0) and a trace (one dict per iteration:
    iteration, objective, grad_norm). The value and gradient of an iterate are computed once and cached,
    so pymanopt's separate cost and gradient calls see the same Monte-Carlo samples.
    """
    import pymanopt
    from pymanopt.optimizers import ConjugateGradient, SteepestDescent

    if method not in ("exp", "retr"):
        raise ValueError(f"method must be 'exp' or 'retr', got {method!r}")
    x0 = x0.detach().to(F64).cpu()
    manifold.check_point(x0)
    batched = x0.ndim > manifold.point_ndim
    batch = x0.shape[0] if batched else None
    pm_manifold = _pymanopt_adapter(manifold, batch, method, max_norm, project)
    x0_np = x0.numpy()

    cache: dict[bytes, tuple[float, np.ndarray]] = {}
    trace: list[dict] = []

    def evaluate(x_np: np.ndarray) -> tuple[float, np.ndarray]:
        key = np.ascontiguousarray(x_np).tobytes()
        if key not in cache:
            cache.clear()  # keep only the current iterate
            x = torch.as_tensor(np.array(x_np), dtype=F64)
            value, rgrad = cost_and_rgrad(x)
            value = float(value)
            rgrad_np = rgrad.detach().to(F64).cpu().numpy().reshape(x_np.shape)
            cache[key] = (value, rgrad_np)
            grad_norm = float(manifold.norm(x, torch.as_tensor(rgrad_np)).square().sum().sqrt())
            trace.append({"iteration": len(trace), "objective": value, "grad_norm": grad_norm})
            if callback is not None:
                callback(len(trace) - 1, x, value)
        return cache[key]

    @pymanopt.function.numpy(pm_manifold)
    def cost(x):
        return -evaluate(x)[0]  # pymanopt minimises

    @pymanopt.function.numpy(pm_manifold)
    def rgrad(x):
        return -evaluate(x)[1]

    problem = pymanopt.Problem(pm_manifold, cost, riemannian_gradient=rgrad)
    if line_searcher is not None and solver != "sgd":
        raise ValueError(f"line_searcher replaces the fixed step of solver 'sgd'; solver {solver!r} has its own")
    common = dict(max_iterations=int(max_iterations), verbosity=verbosity, max_time=float("inf"))
    if solver == "sgd":
        opt = SteepestDescent(
            line_searcher=FixedStepLineSearcher(step_size) if line_searcher is None else line_searcher,
            min_gradient_norm=0.0,
            min_step_size=0.0,
            **common,
        )
    elif solver == "steepest":
        opt = SteepestDescent(**common)
    elif solver == "cg":
        opt = ConjugateGradient(**common)
    else:
        raise ValueError(f"solver must be 'sgd', 'steepest' or 'cg', got {solver!r}")
    result = opt.run(problem, initial_point=x0_np)
    point = torch.as_tensor(np.array(result.point), dtype=F64).reshape(x0.shape)
    return point, trace
