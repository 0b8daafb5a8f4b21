"""Step rules (Riemannian exp/retraction ascent, Euclidean ascent, Adam, Pymanopt) and the ascent loop.

A step rule only talks to the manifold interface (``egrad2rgrad``, ``step``, ``project_floor``), like
geoopt's optimisers; the loop draws noise, evaluates the objective, keeps the trace and the best iterate.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from .estimator import SoftSmoothingEstimator, Terms
from .objectives import EigenvalueFloor


def _positive(value: float, name: str) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a positive float, got {value!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be positive and finite, got {value}")
    return value


class StepRule:
    """One ascent step from the Euclidean gradient ``egrad`` of the objective at ``point``."""

    def reset(self) -> None:
        pass

    def update(self, manifold, point: torch.Tensor, egrad: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


@dataclass
class RiemannianAscent(StepRule):
    """x <- Exp_x(step_size * rgrad) (``method="exp"``, RDDRS) or the metric's retraction
    (``"retr"``); the step's length in the metric's own norm is clipped to ``max_step_norm``
    (keeps a large step from leaving the SPD cone numerically)."""

    step_size: float = 1.0
    method: str = "exp"
    max_step_norm: float | None = 2.0

    def __post_init__(self) -> None:
        self.step_size = _positive(self.step_size, "step_size")
        if self.method not in ("exp", "retr"):
            raise ValueError(f"method must be 'exp' or 'retr', got {self.method!r}")
        if self.max_step_norm is not None:
            self.max_step_norm = _positive(self.max_step_norm, "max_step_norm")

    def update(self, manifold, point, egrad):
        rgrad = manifold.egrad2rgrad(point, egrad)
        return manifold.step(point, rgrad, self.step_size, method=self.method, max_norm=self.max_step_norm)


@dataclass
class EuclideanAscent(StepRule):
    """x <- x + lr * egrad on the raw parameter (DDRS paper code); only for the scalar and
    diagonal parameterisations, followed by the floor projection (and positivity)."""

    lr: float = 0.04

    def __post_init__(self) -> None:
        self.lr = _positive(self.lr, "lr")

    def update(self, manifold, point, egrad):
        return _keep_positive(manifold, point + self.lr * egrad)


@dataclass
class AdamAscent(StepRule):
    """Adam on the raw parameter, maximising (ANCER and the DDRS package use Adam, lr 0.04)."""

    lr: float = 0.04
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    _m: torch.Tensor | None = field(default=None, repr=False)
    _v: torch.Tensor | None = field(default=None, repr=False)
    _t: int = field(default=0, repr=False)

    def __post_init__(self) -> None:
        self.lr = _positive(self.lr, "lr")

    def reset(self) -> None:
        self._m = self._v = None
        self._t = 0

    def update(self, manifold, point, egrad):
        if self._m is None:
            self._m = torch.zeros_like(egrad)
            self._v = torch.zeros_like(egrad)
        b1, b2 = self.betas
        self._t += 1
        self._m = b1 * self._m + (1 - b1) * egrad
        self._v = b2 * self._v + (1 - b2) * egrad * egrad
        m_hat = self._m / (1 - b1**self._t)
        v_hat = self._v / (1 - b2**self._t)
        return _keep_positive(manifold, point + self.lr * m_hat / (v_hat.sqrt() + self.eps))


def _keep_positive(manifold, point: torch.Tensor) -> torch.Tensor:
    if getattr(manifold, "point_ndim", 0) >= 2 or point.ndim >= 3:  # any matrix manifold, batched or not
        raise ValueError(
            "Euclidean and Adam steps are for the scalar and diagonal parameterisations; "
            "use RiemannianAscent (or the pymanopt backend) for SPD matrices"
        )
    return point.clamp_min(1e-6)


@dataclass
class Trace:
    """Per-step record, arrays of shape (steps, B): objective, gap, log-volume, min eigenvalue."""

    objective: list = field(default_factory=list)
    gap: list = field(default_factory=list)
    log_volume: list = field(default_factory=list)
    min_eigenvalue: list = field(default_factory=list)

    def record(self, value: torch.Tensor, terms: Terms) -> None:
        self.objective.append(value.detach().cpu().numpy().copy())
        self.gap.append(terms.gap.detach().cpu().numpy().copy())
        self.log_volume.append(terms.log_volume.detach().cpu().numpy().copy())
        self.min_eigenvalue.append(terms.min_eigenvalue.detach().cpu().numpy().copy())

    def as_arrays(self) -> dict[str, np.ndarray]:
        return {k: np.array(v) for k, v in self.__dict__.items()}

    def __len__(self) -> int:
        return len(self.objective)


def ascend(
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
) -> tuple[torch.Tensor, Trace]:
    """Maximise ``objective`` over the noise parameter, one point per input (batched).

    Every step draws fresh noise from ``generator`` (or reuses one draw if ``common_random_numbers``),
    evaluates objective and Euclidean gradient, records the trace, then steps and projects on
    ``constraint``. Returns the best evaluated iterate per input (``keep_best``) or the last one.
    """
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
        raise ValueError(f"iterations must be an int >= 0, got {iterations!r}")
    rule.reset()
    B = x.shape[0]
    d = x[0].numel()
    trace = Trace()
    point = point.detach().to(torch.float64)
    if constraint is not None:
        point = constraint.project(manifold, point)
    best_point, best_value = point.clone(), torch.full((B,), -math.inf, dtype=torch.float64, device=point.device)
    fixed_z = None
    for step in range(iterations + 1):
        last = step == iterations
        if last and not keep_best:  # the final iterate needs no evaluation
            break
        if common_random_numbers:
            if fixed_z is None:
                fixed_z = estimator.draw(B, d, generator, x.device, x.dtype)
            z = fixed_z
        else:
            z = estimator.draw(B, d, generator, x.device, x.dtype)
        value, egrad, terms = estimator.evaluate(
            model, manifold, x, point, objective, z, num_classes, with_grad=not last
        )
        if not torch.isfinite(value).all() or (egrad is not None and not torch.isfinite(egrad).all()):
            bad = (~torch.isfinite(value)).nonzero().flatten().tolist()
            raise FloatingPointError(
                f"objective or its gradient is not finite at step {step} "
                f"(inputs {bad or 'gradient only'}); stopping instead of returning garbage"
            )
        trace.record(value, terms)
        better = value > best_value
        best_value = torch.where(better, value, best_value)
        best_point[better] = point[better]
        if callback is not None:
            callback(step, point, value, terms)
        if last:
            break
        point = rule.update(manifold, point, egrad).detach()
        if constraint is not None:
            point = constraint.project(manifold, point)
    return (best_point if keep_best else point), trace
