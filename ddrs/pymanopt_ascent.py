"""``ascend`` with Pymanopt's solver loop (RDDRS ``backend="pymanopt"``).

Same contract as ``ddrs.optimizers.ascend``: every evaluation draws fresh noise, is recorded in the
trace and competes for the best iterate (per input). What Pymanopt changes depends on the solver:

* ``solver="sgd"``: Pymanopt's SteepestDescent loop, whose line search is the step rule (ANY ``StepRule``:
  Riemannian Adam, plain ascent, ...) followed by the constraint's projection, driven by the same
  ``Stepper`` as ``ascend`` (state, eigenframe). Iterates, trace and result are those of ``ascend`` with the
  same rule and generator; Pymanopt contributes the loop (and its log).
* ``solver="steepest"`` (Armijo backtracking) or ``"cg"`` (conjugate gradient): Pymanopt chooses directions
  and step sizes itself; there is no step rule (``rule`` must be None). Each move is the manifold's clipped
  ``method`` step (``max_norm`` in the metric's norm) followed by the projection. Their line searches compare
  costs, so they are for deterministic objectives (``common_random_numbers``): on Monte Carlo costs Armijo
  rejects steps that only look worse by noise (``manifolds/README.md``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from .estimator import Normals
from .optimizers import Stepper, StepRule, Trace, ascend
from .problem import Problem

F64 = torch.float64


class _RuleLineSearcher:
    """Pymanopt line searcher that moves by the step rule: ``search`` ignores Pymanopt's direction (the
    Riemannian gradient the rule also sees) and returns the ``Stepper``'s next point. Not copied by Pymanopt's
    ``deepcopy`` of its line searcher: the driver's ``Stepper`` (state, frame) is the one that runs."""

    def __init__(self, advance: Callable[[Any], np.ndarray], norm: Callable[[Any, Any], float]):
        self.advance, self.norm = advance, norm

    def __deepcopy__(self, memo: dict) -> _RuleLineSearcher:
        return self

    def search(self, objective: Any, manifold: Any, x: Any, d: Any, f0: Any, df0: Any) -> tuple[float, Any]:
        return self.norm(x, d), self.advance(x)


def pymanopt_ascend(
    problem: Problem,
    point: torch.Tensor,
    rule: StepRule | None,
    iterations: int,
    generator: torch.Generator | None = None,
    *,
    keep_best: bool = True,
    common_random_numbers: bool = False,
    callback: Callable | None = None,
    solver: str = "sgd",
    shared_frame: bool = True,
    method: str = "retr",
    max_norm: float | None = 2.0,
) -> tuple[torch.Tensor, Trace]:
    """Maximise ``problem``'s objective with ``manifolds.pymanopt_backend.maximize``; returns (best or last
    point, trace). The signature of ``ddrs.ascend`` (problem, start, rule, iterations, generator), with
    Pymanopt's options.

    ``solver="sgd"`` moves by ``rule`` (any ``StepRule``; ``shared_frame`` as in ``ascend``); 'steepest' and 'cg'
    take ``rule=None`` and move by the manifold's ``method`` step clipped at ``max_norm``."""
    from manifolds import pymanopt_backend

    if solver not in ("sgd", "steepest", "cg"):
        raise ValueError(f"solver must be 'sgd', 'steepest' or 'cg', got {solver!r}")
    if solver == "sgd" and rule is None:
        raise ValueError("solver 'sgd' moves by a step rule: pass one (e.g. ddrs.RiemannianAdam())")
    if solver != "sgd" and rule is not None:
        raise ValueError(
            f"solver {solver!r} chooses its own directions and step sizes: pass rule=None (or solver='sgd' to "
            f"move by {type(rule).__name__})"
        )
    if iterations == 0:  # Pymanopt always takes one step; nothing to drive
        from .optimizers import RiemannianAscent

        plain = rule if rule is not None else RiemannianAscent(method=method, max_step_norm=max_norm)
        return ascend(
            problem, point, plain, 0, generator,
            keep_best=keep_best, common_random_numbers=common_random_numbers, callback=callback,
        )  # fmt: skip
    manifold, constraint = problem.manifold, problem.constraint
    B = len(problem)
    shape = point.shape
    stepper = None if rule is None else Stepper(rule, manifold, point, constraint, shared_frame, problem.noise)
    project = None if constraint is None else (lambda p: problem.project(p.reshape(shape)))
    point = point.detach().to(F64)
    if stepper is not None:
        point = stepper.point
    elif project is not None:
        point = project(point)
    trace = Trace()
    best = {"point": point.clone(), "value": torch.full((B,), -math.inf, dtype=F64, device=point.device)}
    fixed: dict[str, Normals] = {}
    egrads: dict[str, torch.Tensor] = {}
    targets: dict[str, torch.Tensor] = {}  # with keep_ball: the start's estimated l2 radius, per input

    def current(c: torch.Tensor) -> bool:
        """``c`` (Pymanopt's iterate) is the stepper's point: its frame and gradient belong to it."""
        return stepper is not None and c.shape == stepper.point.shape and torch.equal(c, stepper.point)

    def cost_and_rgrad(c: torch.Tensor) -> tuple[float, torch.Tensor]:
        c = c.reshape(shape).to(point.device)  # Pymanopt's iterate (host) beside the model
        step = len(trace)
        if common_random_numbers:
            z = fixed.setdefault("z", problem.draw(generator))
        else:
            z = problem.draw(generator)
        last = solver == "sgd" and step == iterations  # Pymanopt's final cost call needs no gradient
        frame = stepper.frame if stepper is not None and current(c) else None
        value, egrad, terms = problem.evaluate(c, z, with_grad=not last, frame=frame, l2_target=targets.get("l2"))
        target = problem.l2_target(terms, targets.get("l2"))
        if target is not None:
            targets["l2"] = target
        if not torch.isfinite(value).all() or (egrad is not None and not torch.isfinite(egrad).all()):
            raise FloatingPointError(f"objective or its gradient is not finite at step {step} (pymanopt backend)")
        trace.record(value, terms)
        better = (value > best["value"]) & problem.feasible(terms, targets.get("l2"))
        best["value"] = torch.where(better, value, best["value"])
        best["point"][better] = c[better]
        if callback is not None:
            callback(step, c, value, terms)
        if egrad is not None:
            egrads["last"] = egrad
        rgrad = torch.zeros_like(c) if egrad is None else manifold.egrad2rgrad(c, egrad)
        return float(value.sum()), rgrad

    line_searcher = None
    if stepper is not None:

        def advance(x_np: Any) -> np.ndarray:
            c = torch.as_tensor(np.asarray(x_np), dtype=F64).reshape(shape).to(point.device)
            if not current(c) or "last" not in egrads:
                raise RuntimeError("Pymanopt asked to move from a point the step rule did not reach")
            return stepper.step(egrads.pop("last")).detach().cpu().numpy()

        def norm(x_np: Any, d_np: Any) -> float:
            u = torch.as_tensor(np.asarray(d_np), dtype=F64).reshape(shape)
            return float(manifold.norm(torch.as_tensor(np.asarray(x_np), dtype=F64).reshape(shape), u).sum())

        line_searcher = _RuleLineSearcher(advance, norm)
    last_point, _ = pymanopt_backend.maximize(
        cost_and_rgrad,
        point,
        manifold,
        solver=solver,
        max_iterations=iterations,
        max_norm=max_norm,
        method=method,
        project=project,
        line_searcher=line_searcher,
    )
    return (best["point"] if keep_best else last_point.reshape(shape)), trace
