"""Step rules (Riemannian exp/retraction ascent, Riemannian Adam, Euclidean ascent, Adam), the driver-side
``Stepper`` that carries a rule's state and the point's eigenframe, and the ascent loop.

A step rule is stateless configuration (a frozen dataclass): what it remembers between the steps of one fit
(moments, the step counter) lives in a ``StepState`` that the driver makes with ``rule.init_state()`` and owns,
so one rule object can serve any number of fits, one after the other or at once. A rule only talks to the
manifold interface (``egrad2rgrad``, ``inner``, ``step``, ``transp``, ``eigenframe``), like geoopt's optimisers;
the loop draws noise, evaluates the objective, keeps the trace and the best iterate.

Every step rule runs on every shipped manifold and metric. Where the manifold offers an eigenframe
(``Manifold.eigenframe``: SPD with the affine-invariant, log-Euclidean or Bures-Wasserstein metric) the
Riemannian rules step in its orthonormal coordinates (one decomposition per step, per-direction second moments
for Adam); elsewhere (scalar, diagonal, a user's manifold or metric, a Geomstats metric) they step through the
manifold's own operations, Adam with geoopt's one second moment per point. ``describe(manifold)`` says which.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from certify import positive_float
from manifolds import NoiseMap, as_noise_map
from manifolds.eigenframe import EigenFrame

from .estimator import Terms
from .objectives import EigenvalueFloor
from .problem import Problem

F64 = torch.float64


def _checked_move(method: str, max_step_norm: float | None) -> float | None:
    """``max_step_norm`` checked (None or a positive float) for a rule that moves by ``method`` ('exp' or 'retr')."""
    _method(method)
    return None if max_step_norm is None else positive_float(max_step_norm, "max_step_norm")


def _method(method: str) -> str:
    if method not in ("exp", "retr"):
        raise ValueError(f"method must be 'exp' or 'retr', got {method!r}")
    return method


@dataclass
class StepState:
    """What a step rule remembers between the steps of ONE fit: the number of steps taken and its buffers
    (e.g. Adam's moments). Made by ``StepRule.init_state()`` and owned by the driver; never stored on the rule.

    Parameters
    ----------
    step : int, default 0
        Steps taken so far in this fit (Adam's bias correction uses it).
    buffers : dict of str to Any, default {}
        The rule's own memory, by name (Adam: 'm', 'v' and the frame or point they were taken at).
    """

    step: int = 0
    buffers: dict[str, Any] = field(default_factory=dict)


class StepRule:
    """One ascent step from the Euclidean gradient ``egrad`` of the objective at ``point`` (a batch).

    Subclasses are frozen dataclasses (configuration only) and implement ``update``; a rule with state keeps it
    in the ``StepState`` it is handed. ``uses_frame``: the driver passes the point's eigenframe (when the
    manifold has one) so that one decomposition per step serves the constraint, the objective's spectral terms
    and the move.

    Attributes
    ----------
    uses_frame : bool, class attribute, default False
        True for a rule that can step in the point's eigenframe (``RiemannianAscent``, ``RiemannianAdam``).
    """

    uses_frame: ClassVar[bool] = False

    def init_state(self) -> StepState:
        """A fresh state for one fit."""
        return StepState()

    def check(self, manifold) -> None:
        """Raise ValueError (naming the reason) if this rule cannot step on ``manifold``."""

    def update(
        self, manifold, point: torch.Tensor, egrad: torch.Tensor, state: StepState | None = None, frame=None
    ) -> torch.Tensor:
        """The next point. ``state``: this fit's ``StepState`` (None: a fresh one, i.e. one isolated step);
        ``frame``: ``point``'s eigenframe when the driver carries one (``uses_frame``), else None."""
        raise NotImplementedError

    def describe(self, manifold) -> str:
        """The rule and how it runs on ``manifold`` (logged with every fit)."""
        return repr(self)

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)  # validation in __post_init__ of a frozen dataclass


def _frame_of(manifold, point: torch.Tensor) -> EigenFrame | None:
    eigenframe = getattr(manifold, "eigenframe", None)
    return None if eigenframe is None or point.ndim < 3 else eigenframe(point)


def _has_components(manifold) -> bool:
    """True when ``manifold`` splits its metric into parts for per-part Adam moments (e.g. ``manifolds.LowRankSPD``)."""
    return all(callable(getattr(manifold, n, None)) for n in ("component_inner", "scale_components"))


def _frame_name(manifold) -> str | None:
    frame_type = getattr(manifold, "frame_type", None)
    cls = None if frame_type is None else frame_type()
    return None if cls is None else cls.metric_name


@dataclass(frozen=True)
class RiemannianAscent(StepRule):
    """x <- Exp_x(step_size * rgrad) (``method="exp"``, RDDRS) or the metric's retraction
    (``"retr"``); the step's length in the metric's own norm is clipped to ``max_step_norm``
    (keeps a large step from leaving the SPD cone numerically). In an eigenframe the same step is taken
    in the frame's coordinates (the same iterates up to rounding).

    Parameters
    ----------
    step_size : float, default 1.0
        Multiplies the Riemannian gradient (positive).
    method : str, default 'exp'
        'exp' (exponential map, the RDDRS paper) or 'retr' (the metric's retraction).
    max_step_norm : float or None, default 2.0
        Clip of each step's length in the metric's norm (or less, inside the injectivity radius); None: no clip.
    """

    step_size: float = 1.0
    method: str = "exp"
    max_step_norm: float | None = 2.0
    uses_frame: ClassVar[bool] = True

    def __post_init__(self) -> None:
        self._set("step_size", positive_float(self.step_size, "step_size"))
        self._set("max_step_norm", _checked_move(self.method, self.max_step_norm))

    def update(self, manifold, point, egrad, state=None, frame=None):
        if state is not None:
            state.step += 1
        if frame is not None:
            w = self.step_size * frame.whiten_gradient(egrad)
            return frame.move(frame.clip(w, self.max_step_norm), self.method)
        rgrad = manifold.egrad2rgrad(point, egrad)
        return manifold.step(point, rgrad, self.step_size, method=self.method, max_norm=self.max_step_norm)

    def describe(self, manifold) -> str:
        name = _frame_name(manifold)
        where = f"in the {name} eigenframe" if name else "through the manifold's step"
        return f"{self!r} [{where}]"


@dataclass(frozen=True)
class RiemannianAdam(StepRule):
    """Riemannian Adam (Kingma and Ba 2015; Becigneul and Ganea 2019 for the Riemannian form), the RDDRS default.

    In an eigenframe (every shipped SPD metric): the Riemannian gradient is read in the frame's orthonormal
    coordinates (``EigenFrame.whiten_gradient``), the first moment is carried between points by the frames'
    rotation (``EigenFrame.carry``), and the second moment is kept per coordinate (``per_direction=True``:
    eigenvalue directions on the diagonal, rotations off it; moved as ``EigenFrame.carry_second_moment``) or
    as one scalar per point (``per_direction=False``); step lr * m_hat / (sqrt(v_hat) + eps), its norm clipped
    at the frame's ``step_limit(max_step_norm)``, then ``method``: the metric's retraction or exp.

    Without an eigenframe (scalar, diagonal, a user's manifold or metric, a Geomstats metric): geoopt's
    RiemannianAdam, i.e. the first moment of the Riemannian gradient moved by ``manifold.transp``, one second
    moment per point (the gradient's squared Riemannian norm), the step through ``manifold.step`` (clipped at
    ``max_step_norm``); on a product manifold that splits its metric into parts (``component_inner``,
    ``scale_components``: ``manifolds.LowRankSPD``) and with ``per_direction``, one second moment per part.
    ``rotation_lr`` needs a frame. ``describe(manifold)`` names the form that runs.

    Parameters
    ----------
    lr : float, default 0.05
        Step size (positive); in a frame, of the eigenvalue (diagonal) coordinates when ``rotation_lr`` is set.
    betas : tuple of (float, float), default (0.9, 0.999)
        Decay rates of the first and second moments, each in [0, 1).
    eps : float, default 1e-8
        Added to the square root of the second moment.
    per_direction : bool, default True
        In an eigenframe, one second moment per coordinate; without one, per part of a manifold that splits its
        metric (``component_inner``), else per point; False: one per point.
    method : str, default 'retr'
        'retr' (the metric's retraction) or 'exp' (its exponential map).
    max_step_norm : float or None, default 2.0
        Clip of each step's length in the metric's norm (the frame's ``step_limit``); None: no clip.
    rotation_lr : float or None, default None
        Step size of the off-diagonal (rotation) coordinates of the eigenframe (>= 0); None: ``lr``. Needs a manifold
        with an eigenframe.
    """

    lr: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    per_direction: bool = True
    method: str = "retr"
    max_step_norm: float | None = 2.0
    rotation_lr: float | None = None  # step of the off-diagonal (rotation) coordinates; None: lr
    uses_frame: ClassVar[bool] = True

    def __post_init__(self) -> None:
        self._set("lr", positive_float(self.lr, "lr"))
        self._set("max_step_norm", _checked_move(self.method, self.max_step_norm))
        if self.rotation_lr is not None and not (math.isfinite(self.rotation_lr) and self.rotation_lr >= 0):
            raise ValueError(f"rotation_lr must be None or a finite float >= 0, got {self.rotation_lr!r}")
        b1, b2 = self.betas
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise ValueError(f"betas must lie in [0, 1), got {self.betas}")
        self._set("betas", (float(b1), float(b2)))

    def check(self, manifold) -> None:
        if self.rotation_lr is not None and _frame_name(manifold) is None:
            raise ValueError(
                f"rotation_lr steps the off-diagonal coordinates of an eigenframe; {manifold!r} has none "
                "(leave rotation_lr=None)"
            )

    def describe(self, manifold) -> str:
        name = _frame_name(manifold)
        if name is None and self.per_direction and _has_components(manifold):
            form = (
                f"geoopt's form with one second moment per factor of the product manifold ({manifold.components} "
                f"parts): {manifold!r} has no eigenframe"
            )
        elif name is None:
            form = f"geoopt's form, one second moment per point: {manifold!r} has no eigenframe"
        elif self.per_direction:
            form = f"per-direction second moments in the {name} eigenframe"
        else:
            form = f"one second moment per point, in the {name} eigenframe"
        return f"{self!r} [{form}]"

    def update(self, manifold, point, egrad, state=None, frame=None):
        state = self.init_state() if state is None else state
        if frame is None:  # no frame carried by the driver: decompose here (what ``shared_frame=False`` measures)
            frame = _frame_of(manifold, point)
        if frame is None:
            self.check(manifold)
            return self._update_plain(manifold, point, egrad, state)
        return self._update_frame(frame, egrad, state)

    def _update_frame(self, frame: EigenFrame, egrad: torch.Tensor, state: StepState) -> torch.Tensor:
        if state.step < 2 and self.per_direction:
            frame = frame.align_ties(frame.whiten_gradient(egrad))
        g = frame.whiten_gradient(egrad)
        b1, b2 = self.betas
        state.step += 1
        t = state.step
        m, v, basis = (state.buffers.get(k) for k in ("m", "v", "basis"))
        # moments live in the current frame's coordinates and move between frames with R = V_new^T V_old
        if m is None or basis is None:
            m = (1 - b1) * g
        else:
            m = b1 * frame.carry(m, basis) + (1 - b1) * g
        if self.per_direction:
            sq = g * g
            if v is not None and basis is not None:
                v = b2 * frame.carry_second_moment(v, basis) + (1 - b2) * sq
            else:
                v = (1 - b2) * sq
        else:
            sq = (g * g).sum((-2, -1))[..., None, None]
            v = (1 - b2) * sq if v is None else b2 * v + (1 - b2) * sq
        state.buffers.update(m=m, v=v, basis=frame.vec)
        m_hat = m / (1 - b1**t)
        v_hat = v / (1 - b2**t)
        w = m_hat / (v_hat.clamp_min(0).sqrt() + self.eps)
        if self.rotation_lr is None:
            w = self.lr * w
        else:  # eigenvalue coordinates (diagonal) at lr, rotations (off-diagonal) at rotation_lr
            eye = torch.eye(w.shape[-1], dtype=w.dtype, device=w.device)
            w = w * (self.rotation_lr + (self.lr - self.rotation_lr) * eye)
        return frame.move(frame.clip(w, self.max_step_norm), self.method)

    def _update_plain(self, manifold, point: torch.Tensor, egrad: torch.Tensor, state: StepState) -> torch.Tensor:
        """geoopt's RiemannianAdam: moments of the Riemannian gradient, one second moment per point, or, on a product
        manifold that splits its metric into parts (``components``, ``component_inner``, ``scale_components``) with
        ``per_direction``, one per part (Becigneul and Ganea 2019, Sec. 4: an adaptive term per factor)."""
        point = point.detach().to(F64)
        g = manifold.egrad2rgrad(point, egrad).to(F64)
        b1, b2 = self.betas
        state.step += 1
        t = state.step
        m, v, at = (state.buffers.get(k) for k in ("m", "v", "at"))
        m = (1 - b1) * g if m is None else b1 * manifold.transp(at, point, m) + (1 - b1) * g
        parts = self.per_direction and _has_components(manifold)
        sq = manifold.component_inner(point, g, g) if parts else manifold.inner(point, g, g)
        v = (1 - b2) * sq if v is None else b2 * v + (1 - b2) * sq
        state.buffers.update(m=m, v=v, at=point)
        denom = (v / (1 - b2**t)).clamp_min(0).sqrt() + self.eps
        if parts:
            u = manifold.scale_components(m / (1 - b1**t), 1.0 / denom)
        else:
            u = (m / (1 - b1**t)) / denom.reshape(denom.shape + (1,) * (m.ndim - denom.ndim))
        return manifold.step(point, u, self.lr, method=self.method, max_norm=self.max_step_norm)


@dataclass(frozen=True)
class EuclideanAscent(StepRule):
    """x <- x + lr * egrad on the raw parameter (DDRS paper code); only for the scalar and
    diagonal parameterisations, followed by the floor projection (and positivity).

    Parameters
    ----------
    lr : float, default 0.04
        Multiplies the Euclidean gradient (positive).
    """

    lr: float = 0.04

    def __post_init__(self) -> None:
        self._set("lr", positive_float(self.lr, "lr"))

    def check(self, manifold) -> None:
        _check_flat(manifold)

    def update(self, manifold, point, egrad, state=None, frame=None):
        if state is not None:
            state.step += 1
        return _keeppositive_float(manifold, point + self.lr * egrad)


@dataclass(frozen=True)
class AdamAscent(StepRule):
    """Adam on the raw parameter, maximising (ANCER and the DDRS package use Adam, lr 0.04); only for the
    scalar and diagonal parameterisations.

    Parameters
    ----------
    lr : float, default 0.04
        Step size (positive).
    betas : tuple of (float, float), default (0.9, 0.999)
        Decay rates of the first and second moments, each in [0, 1).
    eps : float, default 1e-8
        Added to the square root of the second moment.
    """

    lr: float = 0.04
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8

    def __post_init__(self) -> None:
        self._set("lr", positive_float(self.lr, "lr"))
        b1, b2 = self.betas
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise ValueError(f"betas must lie in [0, 1), got {self.betas}")
        self._set("betas", (float(b1), float(b2)))

    def check(self, manifold) -> None:
        _check_flat(manifold)

    def update(self, manifold, point, egrad, state=None, frame=None):
        state = self.init_state() if state is None else state
        m, v = state.buffers.get("m"), state.buffers.get("v")
        if m is None or v is None:
            m, v = torch.zeros_like(egrad), torch.zeros_like(egrad)
        b1, b2 = self.betas
        state.step += 1
        t = state.step
        m = b1 * m + (1 - b1) * egrad
        v = b2 * v + (1 - b2) * egrad * egrad
        state.buffers.update(m=m, v=v)
        m_hat = m / (1 - b1**t)
        v_hat = v / (1 - b2**t)
        return _keeppositive_float(manifold, point + self.lr * m_hat / (v_hat.sqrt() + self.eps))


_FLAT_ERROR = (
    "Euclidean and Adam steps are for the scalar and diagonal parameterisations; "
    "use RiemannianAscent or RiemannianAdam (or the pymanopt backend) for SPD matrices"
)


def _check_flat(manifold) -> None:
    if getattr(manifold, "point_ndim", 0) >= 2:
        raise ValueError(_FLAT_ERROR)


def _keeppositive_float(manifold, point: torch.Tensor) -> torch.Tensor:
    if getattr(manifold, "point_ndim", 0) >= 2 or point.ndim >= 3:  # any matrix manifold, batched or not
        raise ValueError(_FLAT_ERROR)
    return point.clamp_min(1e-6)


class Stepper:
    """A step rule at work on one fit, owned by the driver: the rule (configuration), its ``StepState``, the
    current point (constraint applied) and, for a rule that ``uses_frame`` on a manifold that has one
    (``Manifold.eigenframe``) when ``shared_frame``, the point's eigenframe, so that one eigendecomposition
    per step serves the constraint, the objective's volume and smallest-eigenvalue terms (pass ``frame`` to
    the estimator), the Riemannian gradient and the move.

    Parameters
    ----------
    rule : StepRule
        The step rule (checked against ``manifold``).
    manifold : manifolds.Manifold
        The manifold the points live on.
    point : torch.Tensor
        The start, a batch of points (projected onto ``constraint``).
    constraint : EigenvalueFloor or None, default None
        Eigenvalue floor and ceiling applied after every step; None: none.
    shared_frame : bool, default True
        Carry the point's eigenframe when the rule ``uses_frame`` and the manifold has one; False: the rule decomposes
        on its own (the same iterates up to rounding).
    noise : manifolds.NoiseMap or None, default None
        The noise map whose ``project_floor`` applies ``constraint``; None: ``manifolds.noise_for(manifold)``.

    Attributes
    ----------
    state : StepState
        The rule's state for this fit.
    point : torch.Tensor
        The current point (float64, constraint applied).
    frame : EigenFrame or None
        The current point's eigenframe, or None when none is carried.
    """

    def __init__(
        self,
        rule: StepRule,
        manifold,
        point: torch.Tensor,
        constraint: EigenvalueFloor | None = None,
        shared_frame: bool = True,
        noise: NoiseMap | None = None,
    ):
        rule.check(manifold)
        self.rule, self.manifold, self.constraint = rule, manifold, constraint
        self.noise = as_noise_map(manifold if noise is None else noise)
        self.state = rule.init_state()
        point = point.detach().to(F64)
        self.frame = _frame_of(manifold, point) if shared_frame and rule.uses_frame else None
        if self.frame is not None:
            self.frame = self._constrained(self.frame)
            point = self.frame.point
        elif constraint is not None:
            point = constraint.project(self.noise, point)
        self.point = point

    def _constrained(self, frame: EigenFrame) -> EigenFrame:
        """``frame`` with the constraint applied: clamped in the frame when the noise map lets the frame stand in
        for its floor (``NoiseMap.frame_terms``), else the noise map's projection, decomposed again."""
        if self.constraint is None:
            return frame
        if self.noise.frame_terms(frame):
            return frame.clamp(self.constraint.floor, self.constraint.ceiling)
        return type(frame).of(self.constraint.project(self.noise, frame.point))

    def step(self, egrad: torch.Tensor) -> torch.Tensor:
        """Move from the current point along the rule's step for ``egrad``, apply the constraint; the new point."""
        new = self.rule.update(self.manifold, self.point, egrad, self.state, self.frame).detach()
        if self.frame is not None:
            self.frame = self._constrained(type(self.frame).of(new))
            self.point = self.frame.point
        else:
            self.point = new if self.constraint is None else self.constraint.project(self.noise, new)
        return self.point


def uses_frame(manifold, rule: StepRule) -> bool:
    """True iff the driver carries an eigenframe for ``rule`` on ``manifold`` (``Manifold.frame_type``)."""
    return rule.uses_frame and _frame_name(manifold) is not None


@dataclass
class Trace:
    """Per-step record, arrays of shape (steps, B): objective, gap, log-volume, min eigenvalue.

    Attributes
    ----------
    objective : list of numpy.ndarray
        Objective value per input at each evaluated step.
    gap : list of numpy.ndarray
        The papers' gap R at each evaluated step.
    log_volume : list of numpy.ndarray
        Mean log eigenvalue of the noise at each evaluated step.
    min_eigenvalue : list of numpy.ndarray
        Smallest eigenvalue of the noise at each evaluated step.
    """

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
    problem: Problem,
    point: torch.Tensor,
    rule: StepRule,
    iterations: int,
    generator: torch.Generator | None = None,
    *,
    keep_best: bool = True,
    common_random_numbers: bool = False,
    callback: Callable | None = None,
    schedule: tuple[int, int] | None = None,
    early_stop: tuple[int, float] | None = None,
    shared_frame: bool = True,
) -> tuple[torch.Tensor, Trace]:
    """Maximise ``problem``'s objective over the noise parameter, one point per input (batched).

    Every step draws fresh noise from ``generator`` (or reuses one draw if ``common_random_numbers``),
    evaluates objective and Euclidean gradient, records the trace, then steps by ``rule`` and applies the
    problem's constraint. Returns the best evaluated iterate per input (``keep_best``) or the last one.

    ``schedule``: (first, last) samples per step, a geometric ramp (``sample_schedule``); ``early_stop``:
    (patience, tol): stop once no input's best objective has risen by more than tol * |best| for
    ``patience`` steps (with ``keep_best``, the best evaluated iterate is returned). ``shared_frame``:
    for a rule that ``uses_frame`` on a manifold with an eigenframe (``Manifold.eigenframe``), one
    eigendecomposition per step serves floor, volume, smallest eigenvalue, gradient and move (``Stepper``);
    the iterates are the same as without it up to rounding. The rule's state lives in the ``Stepper`` of this
    call: nothing carries over from an earlier fit.
    """
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
        raise ValueError(f"iterations must be an int >= 0, got {iterations!r}")
    if common_random_numbers and schedule is not None:
        raise ValueError("common_random_numbers needs a fixed sample count: pass schedule=None")
    _check_early_stop(early_stop)
    counts = sample_schedule(iterations, problem.estimator.samples, schedule)
    B = len(problem)
    trace = Trace()
    stepper = Stepper(rule, problem.manifold, point, problem.constraint, shared_frame, problem.noise)
    point = stepper.point
    best_point, best_value = point.clone(), torch.full((B,), -math.inf, dtype=torch.float64, device=point.device)
    last_gain = torch.zeros(B, dtype=torch.long, device=point.device)
    fixed_z = None
    target: torch.Tensor | None = None  # with keep_ball: the start's estimated l2 radius, per input
    for step in range(iterations + 1):
        last = step == iterations
        if last and not keep_best:  # the final iterate needs no evaluation
            break
        if common_random_numbers:
            if fixed_z is None:
                fixed_z = problem.draw(generator)
            z = fixed_z
        else:
            z = problem.draw(generator, samples=counts[step])
        value, egrad, terms = problem.evaluate(point, z, with_grad=not last, frame=stepper.frame, l2_target=target)
        target = problem.l2_target(terms, target)
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
        better = (value > best_value) & problem.feasible(terms, target)
        best_value = torch.where(better, value, best_value)
        best_point[better] = point[better]
        if callback is not None:
            callback(step, point, value, terms)
        if last or egrad is None:
            break
        if early_stop is not None and bool((step - last_gain >= early_stop[0]).all()):
            break  # every input has stalled: the current iterate is evaluated, the best is kept
        point = stepper.step(egrad)
    return (best_point if keep_best else point), trace
