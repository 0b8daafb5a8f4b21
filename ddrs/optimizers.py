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

from .eigenframe import EigenFrame
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

    def update_frame(self, frame: EigenFrame, egrad: torch.Tensor) -> torch.Tensor:
        """The same step for the affine-invariant metric, in the point's frame (no decomposition)."""
        w = self.step_size * frame.whiten_gradient(egrad)
        return frame.move(_clip_frobenius(w, self.max_step_norm), self.method)


def _clip_frobenius(w: torch.Tensor, max_norm: float | None) -> torch.Tensor:
    """Whitened step w with its Frobenius (= affine-invariant) norm clipped at ``max_norm``."""
    if max_norm is None:
        return w
    n = torch.linalg.matrix_norm(w).clamp_min(torch.finfo(w.dtype).tiny)
    return w * (max_norm / n).clamp(max=1.0)[..., None, None]


@dataclass
class RiemannianAdam(StepRule):
    """Adam on SPD(d) with the affine-invariant metric, in the point's eigenframe (the RDDRS default).

    The Riemannian gradient is read in whitened frame coordinates (``EigenFrame.whiten_gradient``), where
    the metric is Frobenius. The first moment is carried between points in X^-1/2 U X^-1/2 coordinates (an
    isometric vector transport); the second moment is kept per direction of the current eigenbasis
    (``per_direction=True``: eigenvalue directions on the diagonal, rotations off it; moved to the next
    eigenbasis as ``ddrs.eigenframe.transport_second_moment`` does) or as one scalar per matrix
    (``per_direction=False``, geoopt's RiemannianAdam: momentum RSGD with a normalised step). Step
    lr * m_hat / (sqrt(v_hat) + eps) (Kingma and Ba 2015; Becigneul and Ganea 2019 for the Riemannian
    form), its norm clipped at ``max_step_norm``, then ``method``: 'retr' (second-order retraction) or 'exp'."""

    lr: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    per_direction: bool = True
    method: str = "retr"
    max_step_norm: float | None = 2.0
    rotation_lr: float | None = None  # step of the off-diagonal (rotation) coordinates; None: lr
    _m: torch.Tensor | None = field(default=None, repr=False)
    _v: torch.Tensor | None = field(default=None, repr=False)
    _vec: torch.Tensor | None = field(default=None, repr=False)
    _t: int = field(default=0, repr=False)

    def __post_init__(self) -> None:
        self.lr = _positive(self.lr, "lr")
        if self.method not in ("exp", "retr"):
            raise ValueError(f"method must be 'exp' or 'retr', got {self.method!r}")
        if self.max_step_norm is not None:
            self.max_step_norm = _positive(self.max_step_norm, "max_step_norm")
        if self.rotation_lr is not None and not (math.isfinite(self.rotation_lr) and self.rotation_lr >= 0):
            raise ValueError(f"rotation_lr must be None or a finite float >= 0, got {self.rotation_lr!r}")
        b1, b2 = self.betas
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise ValueError(f"betas must lie in [0, 1), got {self.betas}")

    def reset(self) -> None:
        self._m = self._v = self._vec = None
        self._t = 0

    def update(self, manifold, point, egrad):
        """Without a shared frame: decompose the point here (what ``shared_frame=False`` measures)."""
        _require_affine_invariant(manifold)
        return self.update_frame(EigenFrame.of(point), egrad)

    def update_frame(self, frame: EigenFrame, egrad: torch.Tensor) -> torch.Tensor:
        if self._t < 2 and self.per_direction:
            frame = _align_ties(frame, egrad)
        g = frame.whiten_gradient(egrad)
        b1, b2 = self.betas
        self._t += 1
        # moments live in the current frame's coordinates; R = V_new^T V_old moves them between frames
        # (for the first moment this is the isometric X^-1/2 U X^-1/2 identification: m -> R m R^T)
        r = None if self._vec is None else frame.vec.transpose(-1, -2) @ self._vec
        if self._m is None or r is None:
            self._m = (1 - b1) * g
        else:
            self._m = b1 * (r @ self._m @ r.transpose(-1, -2)) + (1 - b1) * g
        if self.per_direction:
            v = g * g
            if self._v is not None and r is not None:
                q = r * r
                v = b2 * (q @ self._v @ q.transpose(-1, -2)) + (1 - b2) * v
            else:
                v = (1 - b2) * v
        else:
            v = (g * g).sum((-2, -1))[..., None, None]
            v = (1 - b2) * v if self._v is None else b2 * self._v + (1 - b2) * v
        self._v, self._vec = v, frame.vec
        m_hat = self._m / (1 - b1**self._t)
        v_hat = v / (1 - b2**self._t)
        w = m_hat / (v_hat.clamp_min(0).sqrt() + self.eps)
        if self.rotation_lr is None:
            w = self.lr * w
        else:  # eigenvalue coordinates (diagonal) at lr, rotations (off-diagonal) at rotation_lr
            eye = torch.eye(w.shape[-1], dtype=w.dtype, device=w.device)
            w = w * (self.rotation_lr + (self.lr - self.rotation_lr) * eye)
        return frame.move(_clip_frobenius(w, self.max_step_norm), self.method)


def _align_ties(frame: EigenFrame, egrad: torch.Tensor, rtol: float = 1e-6) -> EigenFrame:
    """Within a group of tied eigenvalues every orthonormal basis of the group is an eigenbasis; take the one
    that diagonalises the gradient's block there, so that per-direction moments do not depend on eigh's
    arbitrary (and, for near-ties, roundoff-driven) choice. Ties come from the isotropic start sigma I and
    from Adam's sign-like first step (every coordinate moves by +-lr, up to eps): aligning the first two
    steps makes the rule commute with rotations of the problem, as the paper's gradient ascent does.
    Eigenvalues within ``rtol`` (relative) of their neighbour count as tied and are set to the group's
    mean (the point moves by at most rtol relative)."""
    g = frame.whiten_gradient(egrad)
    lam, vec = frame.lam, frame.vec
    new_lam, new_vec = None, None
    for b in range(lam.shape[0]):
        gap = (lam[b, 1:] - lam[b, :-1]) > rtol * lam[b, 1:].abs()
        cuts = [0] + (gap.nonzero().flatten() + 1).tolist() + [lam.shape[1]]
        for s, e in zip(cuts[:-1], cuts[1:]):
            if e - s > 1:
                q = torch.linalg.eigh(g[b, s:e, s:e])[1]
                if new_lam is None or new_vec is None:
                    new_lam, new_vec = lam.clone(), vec.clone()
                new_vec[b, :, s:e] = vec[b, :, s:e] @ q
                new_lam[b, s:e] = lam[b, s:e].mean()
    if new_lam is None or new_vec is None:
        return frame
    point = 0.5 * ((new_vec * new_lam.unsqueeze(-2)) @ new_vec.transpose(-1, -2))
    return EigenFrame(point + point.transpose(-1, -2), new_lam, new_vec)


def uses_frame(manifold, rule: StepRule) -> bool:
    """True iff ``rule`` can step in an ``EigenFrame`` on ``manifold`` (SPD, exactly the affine-invariant metric)."""
    return hasattr(rule, "update_frame") and _is_affine_invariant(manifold)


def _is_affine_invariant(manifold) -> bool:
    """SPD with exactly the shipped affine-invariant geometry (no user override the frame would bypass)."""
    from manifolds import SPD

    return isinstance(manifold, SPD) and manifold.plain_affine_invariant()


def _require_affine_invariant(manifold) -> None:
    if not _is_affine_invariant(manifold):
        raise ValueError(
            f"RiemannianAdam steps in the affine-invariant eigenframe; got {manifold!r} "
            "(use RiemannianAscent for other metrics and manifolds)"
        )


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


def sample_schedule(iterations: int, samples: int, schedule: tuple[int, int] | None) -> list[int]:
    """Samples per evaluation (iterations + 1 of them, the last one without gradient): ``samples``
    every step, or a geometric ramp from schedule[0] to schedule[1] (few samples far from the optimum,
    many near it; the mean is (b - a) / ln(b / a) for a ramp from a to b)."""
    if schedule is None:
        return [samples] * (iterations + 1)
    first, last = schedule
    for v, name in ((first, "schedule[0]"), (last, "schedule[1]")):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an int >= 1, got {v!r}")
    ratio = last / first
    span = max(1, iterations - 1)
    return [max(1, round(first * ratio ** (min(k, span) / span))) for k in range(iterations + 1)]


def _check_early_stop(early_stop: tuple[int, float] | None) -> None:
    if early_stop is None:
        return
    if not isinstance(early_stop, (tuple, list)) or len(early_stop) != 2:
        raise ValueError(f"early_stop must be None or (patience, relative_tolerance), got {early_stop!r}")
    patience, tol = early_stop
    if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
        raise ValueError(f"early_stop patience must be an int >= 1, got {patience!r}")
    if not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol >= 0):
        raise ValueError(f"early_stop tolerance must be a finite float >= 0, got {tol!r}")


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
    schedule: tuple[int, int] | None = None,
    early_stop: tuple[int, float] | None = None,
    shared_frame: bool = True,
) -> tuple[torch.Tensor, Trace]:
    """Maximise ``objective`` over the noise parameter, one point per input (batched).

    Every step draws fresh noise from ``generator`` (or reuses one draw if ``common_random_numbers``),
    evaluates objective and Euclidean gradient, records the trace, then steps and projects on
    ``constraint``. Returns the best evaluated iterate per input (``keep_best``) or the last one.

    ``schedule``: (first, last) samples per step, a geometric ramp (``sample_schedule``); ``early_stop``:
    (patience, tol): stop once no input's best objective has risen by more than tol * |best| for
    ``patience`` steps (with ``keep_best``, the best evaluated iterate is returned). ``shared_frame``:
    for a rule with ``update_frame`` on the affine-invariant SPD manifold, one eigendecomposition per step
    serves floor, volume, smallest eigenvalue, gradient and move (``ddrs.eigenframe``); the iterates are
    the same as without it up to rounding.
    """
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
        raise ValueError(f"iterations must be an int >= 0, got {iterations!r}")
    if common_random_numbers and schedule is not None:
        raise ValueError("common_random_numbers needs a fixed sample count: pass schedule=None")
    _check_early_stop(early_stop)
    counts = sample_schedule(iterations, estimator.samples, schedule)
    rule.reset()
    B = x.shape[0]
    d = x[0].numel()
    trace = Trace()
    point = point.detach().to(torch.float64)
    frame = None
    if shared_frame and uses_frame(manifold, rule):
        frame = EigenFrame.of(point)
        if constraint is not None:
            frame = frame.clamp(constraint.floor, constraint.ceiling)
        point = frame.point
    elif constraint is not None:
        point = constraint.project(manifold, point)
    best_point, best_value = point.clone(), torch.full((B,), -math.inf, dtype=torch.float64, device=point.device)
    last_gain = torch.zeros(B, dtype=torch.long, device=point.device)
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
            z = estimator.draw(B, d, generator, x.device, x.dtype, samples=counts[step])
        value, egrad, terms = estimator.evaluate(
            model, manifold, x, point, objective, z, num_classes, with_grad=not last, frame=frame
        )
        if not torch.isfinite(value).all() or (egrad is not None and not torch.isfinite(egrad).all()):
            bad = (~torch.isfinite(value)).nonzero().flatten().tolist()
            raise FloatingPointError(
                f"objective or its gradient is not finite at step {step} "
                f"(inputs {bad or 'gradient only'}); stopping instead of returning garbage"
            )
        trace.record(value, terms)
        if early_stop is not None:
            gained = value > best_value + early_stop[1] * best_value.abs().nan_to_num(0.0, posinf=0.0, neginf=0.0)
            last_gain = torch.where(gained, torch.full_like(last_gain, step), last_gain)
        better = value > best_value
        best_value = torch.where(better, value, best_value)
        best_point[better] = point[better]
        if callback is not None:
            callback(step, point, value, terms)
        if last or egrad is None:
            break
        if early_stop is not None and bool((step - last_gain >= early_stop[0]).all()):
            break  # every input has stalled: the current iterate is evaluated, the best is kept
        if frame is not None:
            frame = EigenFrame.of(rule.update_frame(frame, egrad).detach())  # type: ignore[attr-defined]
            if constraint is not None:
                frame = frame.clamp(constraint.floor, constraint.ceiling)
            point = frame.point
        else:
            point = rule.update(manifold, point, egrad).detach()
            if constraint is not None:
                point = constraint.project(manifold, point)
    return (best_point if keep_best else point), trace
