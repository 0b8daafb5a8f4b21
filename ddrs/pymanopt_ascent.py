"""``ascend`` with a Pymanopt solver driving the moves (RDDRS ``backend="pymanopt"``).

Same contract as ``ddrs.optimizers.ascend``: every evaluation draws fresh noise, is recorded in the
trace and competes for the best iterate (per input); every move is the step rule's clipped exp or
retraction followed by the constraint's projection, inside Pymanopt's loop (the adapter's retraction).
With ``solver="sgd"`` the iterates are those of ``ascend`` with the same rule and generator.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .estimator import SoftSmoothingEstimator
from .objectives import EigenvalueFloor
from .optimizers import RiemannianAscent, StepRule, Trace, ascend


def pymanopt_ascend(
    model: Callable,
    manifold,
    x: torch.Tensor,
    point: torch.Tensor,
    objective: Callable,
    estimator: SoftSmoothingEstimator,
    rule: StepRule,
    iterations: int,
    generator: torch.Generator | None = None,
    constraint: EigenvalueFloor | None = None,
    num_classes: int | None = None,
    keep_best: bool = True,
    common_random_numbers: bool = False,
    callback: Callable | None = None,
    solver: str = "sgd",
) -> tuple[torch.Tensor, Trace]:
    """Maximise ``objective`` with ``manifolds.pymanopt_backend.maximize``; returns (best or last point, trace)."""
    from manifolds import pymanopt_backend

    if not isinstance(rule, RiemannianAscent):
        raise ValueError(f"the pymanopt backend needs a RiemannianAscent step rule, got {type(rule).__name__}")
    if iterations == 0:  # Pymanopt always takes one step; nothing to drive
        return ascend(model, manifold, x, point, objective, estimator, rule, 0, generator, constraint, num_classes,
                      keep_best, common_random_numbers, callback)  # fmt: skip
    B, d = x.shape[0], x[0].numel()
    shape = point.shape
    project = None if constraint is None else (lambda p: constraint.project(manifold, p.reshape(shape)))
    point = point.detach().to(torch.float64)
    if project is not None:
        point = project(point)
    trace = Trace()
    best = {"point": point.clone(), "value": torch.full((B,), -math.inf, dtype=torch.float64, device=point.device)}
    fixed: dict[str, torch.Tensor] = {}

    def cost_and_rgrad(c: torch.Tensor) -> tuple[float, torch.Tensor]:
        c = c.reshape(shape).to(point.device)  # Pymanopt's iterate (host) beside the model
        step = len(trace)
        if common_random_numbers:
            z = fixed.setdefault("z", estimator.draw(B, d, generator, x.device, x.dtype))
        else:
            z = estimator.draw(B, d, generator, x.device, x.dtype)
        last = solver == "sgd" and step == iterations  # Pymanopt's final cost call needs no gradient
        value, egrad, terms = estimator.evaluate(model, manifold, x, c, objective, z, num_classes, with_grad=not last)
        if not torch.isfinite(value).all() or (egrad is not None and not torch.isfinite(egrad).all()):
            raise FloatingPointError(f"objective or its gradient is not finite at step {step} (pymanopt backend)")
        trace.record(value, terms)
        better = value > best["value"]
        best["value"] = torch.where(better, value, best["value"])
        best["point"][better] = c[better]
        if callback is not None:
            callback(step, c, value, terms)
        rgrad = torch.zeros_like(c) if egrad is None else manifold.egrad2rgrad(c, egrad)
        return float(value.sum()), rgrad

    last_point, _ = pymanopt_backend.maximize(
        cost_and_rgrad,
        point,
        manifold,
        solver=solver,
        step_size=rule.step_size,
        max_iterations=iterations,
        max_norm=rule.max_step_norm,
        method=rule.method,
        project=project,
    )
    return (best["point"] if keep_best else last_point.reshape(shape)), trace
