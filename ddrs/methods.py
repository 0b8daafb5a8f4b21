"""The four methods of the seed papers as presets: RS, DDRS, ANCER, RDDRS.

Each preset takes its parameters in ``__init__`` (the papers' defaults) and does its work in
``fit(model, x, init=None, generator=None)`` for a batch of inputs x (B, *shape), returning a
``SmoothingResult`` whose ``noises()`` are the ``certify`` noise objects, one per input. Chaining is
explicit: ``RS(0.25) -> DDRS -> ANCER / RDDRS`` with ``init=`` the previous stage's result (or use
``run_chain``). Choosing the noise uses its own samples; certification (``certify_inputs``) draws
fresh ones through ``certify.Smooth``, which is what keeps Cohen's statistics valid.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

import certify
import manifolds
from certify.sampling import model_device_dtype, untouched

from .estimator import PROBABILITY_CLAMP, NetworkCounter, SoftSmoothingEstimator
from .objectives import EigenvalueFloor, KeepBall, Objective, Radius, Sum, ancer_objective, paper_objective
from .optimizers import (
    AdamAscent,
    EuclideanAscent,
    RiemannianAdam,
    RiemannianAscent,
    StepRule,
    Trace,
    ascend,
    sample_schedule,
)
from .problem import Problem
from .progress import callback as progress_callback
from .pymanopt_ascent import pymanopt_ascend
from .selection import select as _select


@dataclass
class SmoothingResult:
    """Noise chosen for a batch of inputs: the points on the manifold, the stage's sigma_x* (the
    isotropic sigma it started from, used as floor by later stages), its trace and cost.

    Attributes
    ----------
    method : str
        The stage that chose the noise: 'rs', 'ddrs', 'ancer' or 'rddrs'.
    manifold : manifolds.Manifold
        The geometry the points live on.
    points : torch.Tensor
        One noise parameter per input, float64: sigma (B,) for RS and DDRS, the diagonal Theta (B, d) for
        ANCER, the SPD matrix C (B, d, d) for RDDRS (noise x + C z, covariance C^2; README, Errata R3), or
        blockdiag(s, C_1, ..., C_m) for ``RDDRS(structure='kronecker')`` (``manifolds.KroneckerSPD``), or the packed
        (U, e, a) of shape (B, d, rank + 2) for ``structure='low-rank'`` / ``'spiked'`` (``manifolds.LowRankSPD``).
    sigma_star : torch.Tensor
        (B,) float64: the isotropic sigma_x* of each input (RS: sigma; DDRS: its own result; ANCER and RDDRS:
        the sigma_x* they started from). The next stage starts from it and keeps it as eigenvalue floor.
    trace : Trace or None, default None
        Per-step objective, gap, log-volume and smallest eigenvalue of the ascent; None for RS.
    network : NetworkCounter
        Per-sample forward and backward network evaluations spent choosing the noise (ascent and
        selection; certification not included).
    seconds : float, default 0.0
        Wall-clock time of ``fit``.
    kept_new : torch.Tensor or None, default None
        (B,) bool: True where the selection kept the optimised noise, False where it kept the start; None
        when no selection ran (``select=False``, ``iterations=0`` or RS).
    step_rule : str, default ''
        The step rule that ran and how (e.g. in which eigenframe); '' for RS.
    noise : manifolds.NoiseMap or None, default None
        What a point means for smoothing (``noises()``); None: ``manifolds.noise_for(manifold)``.
    """

    method: str
    manifold: Any
    points: torch.Tensor
    sigma_star: torch.Tensor
    trace: Trace | None = None
    network: NetworkCounter = field(default_factory=NetworkCounter)
    seconds: float = 0.0
    kept_new: torch.Tensor | None = None  # per input: the selection kept the optimised point (None: no selection)
    step_rule: str = ""  # the step rule that ran and how (e.g. its eigenframe); "" for RS
    noise: manifolds.NoiseMap | None = None  # None: manifolds.noise_for(manifold)

    @property
    def noise_map(self) -> manifolds.NoiseMap:
        """The noise map of the points (``noise``, or the manifold's shipped one)."""
        return manifolds.as_noise_map(self.manifold if self.noise is None else self.noise)

    def noises(self) -> list[certify.GaussianNoise]:
        """One certify noise object per input."""
        return [self.noise_map.to_noise(p) for p in self.points]

    def __len__(self) -> int:
        return self.points.shape[0]


def _check_batch(x: torch.Tensor) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.ndim < 2:
        raise ValueError("x must be a batch of inputs, a tensor of shape (B, *input_shape)")
    if not torch.isfinite(x).all():
        raise ValueError("x contains NaN or infinite entries")
    return x


def _sigma_from(init, x: torch.Tensor, default: float | None) -> torch.Tensor:
    """Per-input isotropic sigma from a previous result, a float or a (B,) tensor."""
    B = x.shape[0]
    if init is None:
        if default is None:
            raise ValueError("init is required: pass the previous stage's SmoothingResult or sigmas")
        init = default
    if isinstance(init, SmoothingResult):
        sig = init.sigma_star if init.points.ndim != 1 else init.points
    else:
        sig = torch.as_tensor(init, dtype=torch.float64)
    sig = sig.detach().to(device=x.device, dtype=torch.float64).reshape(-1)  # on the model's device
    if sig.numel() == 1:
        sig = sig.expand(B).clone()
    if sig.numel() != B:
        raise ValueError(f"init has {sig.numel()} sigmas for a batch of {B} inputs")
    if not (sig > 0).all():
        raise ValueError(f"sigma must be positive, got min {float(sig.min()):g}")
    return sig


def _model_dtype(model, x):
    """x on the model's device and in its floating dtype (the network runs in its own dtype)."""
    device, dtype = model_device_dtype(model, x)
    return x.to(device=device, dtype=dtype)


def _on_model(model, x) -> torch.Tensor:
    """A checked batch on the model's device (every tensor of a step is then made beside it)."""
    return _model_dtype(model, _check_batch(x))


class _BatchGuard:
    """The model, with its first failure reworded: the usual cause is ONE input passed where a batch
    (B, *input_shape) is expected (e.g. an image (C, H, W) read as C inputs of shape (H, W))."""

    def __init__(self, model: Callable, shape: tuple):
        self.model, self.shape, self.ok = model, shape, False

    def __call__(self, v: torch.Tensor):
        if self.ok:
            return self.model(v)
        try:
            out = self.model(v)
        except (RuntimeError, ValueError, TypeError, IndexError) as err:
            raise ValueError(
                f"the model failed on noisy copies of the batch x of shape {self.shape}: x must be a BATCH "
                f"of inputs (B, *input_shape); for one input pass x[None]. Model error: {err}"
            ) from err
        self.ok = True
        return out


def _check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


@dataclass
class RS:
    """Randomized smoothing with one fixed sigma (Cohen et al. 2019).

    Parameters
    ----------
    sigma : float, default 0.25
        Standard deviation of the isotropic Gaussian noise, the same for every input (must be positive).
        The certified l2 radius is sigma Phi^-1(p_A_lower) (Cohen et al. Thm 1). ``fit`` takes no optimisation
        steps and ignores ``init``.
    """

    sigma: float = 0.25

    def __post_init__(self) -> None:
        certify.IsotropicGaussian(self.sigma)  # validates

    def fit(self, model, x, init=None, generator=None) -> SmoothingResult:
        """Sigma for every input of the batch x (B, *input_shape); ``model``, ``init`` and ``generator`` are
        accepted for the presets' common interface and unused. Returns a ``SmoothingResult``."""
        x = _check_batch(x)
        sig = torch.full((x.shape[0],), float(self.sigma), dtype=torch.float64)
        return SmoothingResult("rs", manifolds.get_manifold("scalar", x[0].numel()), sig, sig.clone())


@dataclass
class _Optimised:
    """The fields shared by the optimised presets (DDRS, ANCER, RDDRS); each preset documents them."""

    iterations: int = 100
    samples: int = 100
    clamp: float = PROBABILITY_CLAMP
    chunk_size: int = 20000
    keep_best: bool = True
    num_classes: int | None = None
    antithetic: bool = False
    select: bool = True  # keep the start unless the optimised noise is better on fresh samples
    selection_samples: int = 1000
    selection_alpha: float = 0.001
    common_random_numbers: bool = False  # one noise draw for every step (deterministic objective)
    schedule: tuple[int, int] | None = None  # (first, last) samples per step, geometric ramp; None: ``samples``
    early_stop: tuple[int, float] | None = None  # (patience, tol): stop when every input's best stalls

    def _validate(self) -> None:
        _check_int(self.iterations, "iterations", 0)
        _check_int(self.samples, "samples", 1)
        _check_int(self.selection_samples, "selection_samples", 1)
        if self.schedule is not None:
            sample_schedule(self.iterations, self.samples, self.schedule)  # validates
        if not (0 < self.selection_alpha < 1):
            raise ValueError(f"selection_alpha must lie in (0, 1), got {self.selection_alpha}")

    def step_rule_for(self, dim: int) -> str:
        """The step rule ``fit`` runs on inputs of ``dim`` entries, and how (``SmoothingResult.step_rule``)."""
        raise NotImplementedError

    def manifold_for(self, shape: tuple[int, ...]) -> manifolds.Manifold:
        """The manifold ``fit`` optimises on for inputs of ``shape`` (one input's shape, no batch axis)."""
        raise NotImplementedError

    @property
    def progress_steps(self) -> int:
        """How many ascent steps ``fit`` reports to ``progress`` (fewer if ``early_stop`` ends it)."""
        return self.iterations + 1 if self.keep_best else self.iterations

    def _estimator(self) -> SoftSmoothingEstimator:
        return SoftSmoothingEstimator(
            samples=self.samples, chunk_size=self.chunk_size, clamp=self.clamp, antithetic=self.antithetic
        )

    def _run(
        self,
        name: str,
        model: Callable,
        x: torch.Tensor,
        manifold: manifolds.Manifold,
        point: torch.Tensor,
        sigma_star: torch.Tensor,
        objective: Callable,
        rule: StepRule | None,
        constraint: EigenvalueFloor | None,
        generator: torch.Generator | None,
        progress: Any = None,
        driver: Callable = ascend,
        step_rule: str | None = None,
        **driver_options: Any,
    ) -> SmoothingResult:
        start = time.perf_counter()
        x = _model_dtype(model, _check_batch(x))
        estimator = self._estimator()
        if self.schedule is not None:
            driver_options["schedule"] = tuple(self.schedule)
        if self.early_stop is not None:
            driver_options["early_stop"] = tuple(self.early_stop)
        if driver_options and driver is not ascend:
            raise ValueError(f"{sorted(driver_options)} need backend='rgd'")
        on_step, close_bar = progress_callback(progress, self.progress_steps, f"{name} fit ({x.shape[0]} inputs)")
        noise = getattr(self, "noise", None)
        keep_ball = bool(getattr(self, "keep_ball", False))
        if keep_ball:  # the containment constraint, in what the ascent sees (and in which iterates compete)
            objective = Sum(objective, KeepBall())
        guarded = _BatchGuard(model, tuple(x.shape))
        problem = Problem(guarded, x, manifold, objective, estimator, noise, constraint, self.num_classes, keep_ball)
        try:
            with untouched(model):  # warns in training mode; buffers (BatchNorm stats) restored
                best, trace, kept = self._ascend_and_select(
                    name, problem, point, rule, generator, on_step, driver, driver_options
                )
        finally:
            close_bar()
        if step_rule is None:
            assert rule is not None
            step_rule = rule.describe(manifold)
        return SmoothingResult(
            name, manifold, best, sigma_star, trace, estimator.counter, time.perf_counter() - start, kept, step_rule,
            problem.noise,
        )  # fmt: skip

    def _ascend_and_select(
        self,
        name: str,
        problem: Problem,
        point: torch.Tensor,
        rule: StepRule | None,
        generator: torch.Generator | None,
        progress: Callable | None,
        driver: Callable,
        driver_options: dict[str, Any],
    ) -> tuple[torch.Tensor, Trace, torch.Tensor | None]:
        best, trace = driver(
            problem,
            point,
            rule,
            self.iterations,
            generator,
            keep_best=self.keep_best,
            common_random_numbers=self.common_random_numbers,
            callback=progress,
            **driver_options,
        )
        kept = None
        if self.select and self.iterations > 0:
            x = problem.inputs
            draw = lambda: SoftSmoothingEstimator(samples=self.selection_samples).draw(  # noqa: E731
                len(problem), problem.noise_map.normals, generator, x.device, x.dtype
            )
            start_point = problem.project(point.detach().to(torch.float64))
            best, kept = _select(
                problem.model,
                problem.noise_map,
                x,
                start_point,
                best,
                draw,
                self.selection_alpha,
                "l2" if name == "ddrs" else "proxy",
                problem.estimator.counter,
                self.chunk_size,
                keep_ball=problem.keep_ball,
            )
        return best, trace, kept


def _objective(objective, method: str, kappa: float = 2.0) -> Objective:
    """An Objective, or a name: 'certificate' (the default, Phi^-1(p_A)) or 'gap' (the paper's)."""
    if objective is None or objective == "certificate":
        return Radius() if method == "ddrs" else ancer_objective(kappa)
    if objective == "gap":
        return paper_objective(method, kappa)
    if isinstance(objective, str):
        raise ValueError(f"objective must be an Objective, 'certificate' or 'gap', got {objective!r}")
    return objective


def _step_rule(step: str | StepRule, lr: float) -> StepRule:
    if isinstance(step, StepRule):
        return step
    rules = {
        "adam": lambda: AdamAscent(lr),
        "euclidean": lambda: EuclideanAscent(lr),
        "riemannian": lambda: RiemannianAscent(lr, method="exp"),
        "retraction": lambda: RiemannianAscent(lr, method="retr"),
    }
    if step not in rules:
        raise ValueError(f"step must be one of {sorted(rules)} or a StepRule, got {step!r}")
    return rules[step]()


#: numpydoc entries the optimised presets share, written once (``_shared_parameters`` fills them in)
_SHARED_PARAMETERS = {
    "fit_inputs": """Choose the noise for every input of the batch x.

        Parameters
        ----------
        model : Callable
            The base classifier: a batch (N, *input_shape) to logits (N, C), run in its own device and dtype (a
            model in training mode draws a warning; its buffers, e.g. BatchNorm statistics, are restored afterwards).
        x : torch.Tensor
            A batch of inputs (B, *input_shape); for one input pass x[None].""",
    "fit_outputs": """generator : torch.Generator or None, default None
            Source of every noise draw of the ascent and the selection (None: torch's global generator). Keep it apart
            from the certification's (README, Errata R5).
        progress : bool, object or callable, default None
            None / False: nothing; True: a text bar on stderr; an object with ``update(n)`` (e.g. tqdm); or a callable
            ``(step, point, value, terms)`` after every ascent step (``ddrs.progress``).

        Returns
        -------
        SmoothingResult
            The chosen noise per input, its sigma_x*, trace and cost.""",
    "estimate_parameters": """    Monte Carlo noise draws per input and step for the soft-smoothing estimate
        of the objective and its gradient (``SoftSmoothingEstimator``). More samples: a less noisy ascent, cost linear
        in ``samples``.
    clamp : float, default 1e-3
        The soft probabilities are clamped to [clamp, 1 - clamp] before Phi^-1 (``PROBABILITY_CLAMP``, the DDRS/ANCER
        package value); this bounds the gap by 2 Phi^-1(1 - clamp) and keeps gradients finite. Used only while choosing
        the noise; the certificate is computed from hard votes.
    chunk_size : int, default 20000
        Most noisy copies per network call, over all inputs of the batch (also during selection). Memory only: the
        estimate is the same up to rounding.
    keep_best : bool, default True
        Return, per input, the best evaluated iterate (the final one is evaluated too: iterations + 1 evaluations);
        False returns the last iterate.
    num_classes : int or None, default None
        Number of classes the model's logits must have (checked at every ascent step); None accepts any C >= 2.
    antithetic : bool, default False
        Draw half of each step's samples and use them with both signs (z, -z): still N(0, I) marginally, lower variance
        for the odd part of the integrand.""",
    "selection_parameters": """selection_samples : int, default 1000
        Fresh noise draws per input for ``select``.
    selection_alpha : float, default 0.001
        Level of the Clopper-Pearson lower bound p_A_lower used by ``select``; must lie in (0, 1).
    common_random_numbers : bool, default False
        Draw the noise once and reuse it at every step (a deterministic objective, e.g. for line searches); incompatible
        with ``schedule``.
    schedule : tuple of (int, int) or None, default None
        (first, last) samples per step, a geometric ramp from first to last (``sample_schedule``) replacing ``samples``
        during the ascent (RDDRS: ``backend='rgd'`` only). None: ``samples`` at every step.
    early_stop : tuple of (int, float) or None, default None
        (patience, tol): stop once no input's best objective has risen by more than tol * abs(best) for ``patience``
        steps; with ``keep_best`` the best evaluated iterate is returned (RDDRS: ``backend='rgd'`` only). None: run
        all ``iterations``.""",
    "noise_parameters": """noise : manifolds.NoiseMap or None, default None
        What a point means for smoothing (the noise it draws, its smallest scale, volume, floor and certificate); None:
        ``manifolds.noise_for(manifold)``, the shipped map that reads the point as the noise scale. Pass one with a
        manifold whose points mean something else (geometry and noise are apart: ``manifolds/README.md``).""",
}


def _shared_parameters(cls: type) -> type:
    """Fill the shared numpydoc entries (``_SHARED_PARAMETERS``) into a preset's and its ``fit``'s docstrings."""
    cls.__doc__ = (cls.__doc__ or "").format(**_SHARED_PARAMETERS)
    fit = cls.__dict__["fit"]
    fit.__doc__ = (fit.__doc__ or "").format(**_SHARED_PARAMETERS)
    return cls


@_shared_parameters
@dataclass
class DDRS(_Optimised):
    """Per-input sigma_x maximising the isotropic radius sigma R / 2 (Alfarra et al.).

    Defaults are the DDRS package's (``ddsmoothing``): 900 Adam steps, lr 0.04, 100 samples per
    input and step, clamp 1e-3, starting from ``sigma0`` (or ``init``); the best iterate is kept.
    ``step``: 'adam' | 'euclidean' (the paper code's plain ascent) | 'riemannian' (exp map of the
    scalar manifold's metric) | a StepRule.

    The noise is chosen from its own samples; ``certify_inputs`` certifies it on fresh ones. Whether a
    data-dependent certificate holds for a deployed classifier: README, What each certificate guarantees.

    Parameters
    ----------
    iterations : int, default 900
        Ascent steps per input (Alfarra et al.'s package: 900). 0 returns the start point (no step, no selection).
    samples : int, default 100
    {estimate_parameters}
    select : bool, default True
        After the ascent, keep the start (projected onto the constraint) unless the optimised noise has a strictly
        larger hard-vote certified radius (l2: sigma Phi^-1(p_A_lower)) on ``selection_samples`` fresh draws common to
        both candidates (``ddrs.selection``). These draws come from the fitting generator, never from the certification
        samples (README, Errata R5). The result's ``kept_new`` says which was kept.
    {selection_parameters}
    lr : float, default 0.04
        Step of the rule named by ``step`` ('adam', 'euclidean', and the step size of 'riemannian' and 'retraction');
        ignored when ``step`` is a ``StepRule``.
    sigma0 : float, default 0.12
        Starting sigma when ``fit`` gets no ``init``; an ``init`` (a previous stage's result, a float or a (B,) tensor
        of sigmas) replaces it.
    step : str or StepRule, default 'adam'
        'adam' (``AdamAscent`` on sigma, the DDRS package), 'euclidean' (``EuclideanAscent``, the paper code's plain
        ascent), 'riemannian' (``RiemannianAscent``, exp map of ``manifold``'s metric), 'retraction' (the same with the
        metric's retraction) or any ``StepRule``.
    objective : Objective or str, default Radius()
        What is maximised per input: ``Radius()`` or 'certificate' (sigma Phi^-1(p_A), the radius the certificate
        reports; Cohen et al. Thm 1), 'gap' (``Radius("gap")``: sigma R / 2 with the soft runner-up, Alfarra et al.) or
        any ``Objective``.
    max_ratio : float or None, default 2.0
        Ceiling sigma_x <= max_ratio * starting sigma, a projection after every step (with a floor of 1e-6): the
        certified radius is then at most max_ratio * start * Phi^-1(p_A_lower), at noise levels near those the model was
        trained on. None: unbounded, as the DDRS package.
    manifold : manifolds.Manifold or None, default None
        The geometry of sigma: any ``manifolds.Manifold`` with scalar points (``point_ndim`` 0) and the inputs'
        dimension; None: ``manifolds.PositiveScalar`` with the affine-invariant metric. It shapes the Riemannian rules'
        steps; 'adam' and 'euclidean' step on the raw sigma.
    {noise_parameters}
    """

    iterations: int = 900
    lr: float = 0.04
    sigma0: float = 0.12
    step: Any = "adam"
    objective: Objective = field(default_factory=Radius)
    max_ratio: float | None = 2.0  # sigma_x <= max_ratio * start (None: unbounded, as the package)
    manifold: manifolds.Manifold | None = None  # any scalar-point Manifold (default PositiveScalar)
    noise: manifolds.NoiseMap | None = None  # None: manifolds.noise_for(manifold)

    def step_rule_for(self, dim: int) -> str:
        return _step_rule(self.step, self.lr).describe(manifolds.resolve_manifold(self.manifold, "scalar", dim))

    def manifold_for(self, shape: tuple[int, ...]) -> manifolds.Manifold:
        return manifolds.resolve_manifold(self.manifold, "scalar", math.prod(shape))

    def fit(self, model, x, init=None, generator=None, progress=None) -> SmoothingResult:
        """{fit_inputs}
        init : SmoothingResult, float, torch.Tensor or None, default None
            The starting sigma: a previous stage's result (RS), a float or a (B,) tensor; None: ``sigma0``.
        {fit_outputs}
        """
        self._validate()
        x = _on_model(model, x)
        sig0 = _sigma_from(init, x, self.sigma0)
        manifold = self.manifold_for(tuple(x.shape[1:]))
        noise = _noise_of(self.noise, manifold)
        bounds = None if self.max_ratio is None else EigenvalueFloor(1e-6, self.max_ratio * sig0)
        result = self._run(
            "ddrs",
            model,
            x,
            manifold,
            noise.from_scales(sig0[:, None].expand(-1, x[0].numel())),
            sig0,
            _objective(self.objective, "ddrs"),
            _step_rule(self.step, self.lr),
            bounds,
            generator,
            progress,
        )
        result.sigma_star = (
            noise.min_eigenvalue(result.points).detach().clone()
        )  # the chosen sigma (its smallest scale)
        return result


@_shared_parameters
@dataclass
class ANCER(_Optimised):
    """Per-input diagonal Theta_x maximising R P + kappa K R (Eiras et al.), initialised at the
    DDRS sigma_x* and projected after every step onto Theta >= sigma_x*. The floor alone does not keep the
    DDRS ball (r(x, Theta) drops as the noise grows); ``keep_ball`` (the default) keeps it, in the ascent and the
    selection.
    Defaults: the ANCER code's (Adam, lr 0.04, 100 steps, 100 samples, kappa 2). ``fit`` needs ``init``: the
    DDRS result (or sigmas) that gives sigma_x*.

    Parameters
    ----------
    iterations : int, default 100
        Ascent steps per input (the ANCER code: 100). 0 returns the start point (no step, no selection).
    samples : int, default 100
    {estimate_parameters}
    select : bool, default True
        After the ascent, keep the start (projected onto the constraint) unless the optimised noise has a strictly
        larger hard-vote certified radius (proxy: the geometric mean of Theta times Phi^-1(p_A_lower)) on
        ``selection_samples`` fresh draws common to both candidates (``ddrs.selection``). These draws come from the
        fitting generator, never from the certification samples (README, Errata R5). The result's ``kept_new`` says
        which was kept.
    {selection_parameters}
    lr : float, default 0.04
        Step of the rule named by ``step`` (the step size of 'riemannian' and 'retraction'); ignored when ``step`` is a
        ``StepRule``.
    kappa : float, default 2.0
        Weight of the term kappa K R (K the smallest axis) in H = R P + kappa K R: larger keeps the inscribed (DDRS)
        ball larger against the volume proxy R P. Used by the default and 'gap' objectives; ignored when ``objective``
        is an ``Objective``.
    step : str or StepRule, default 'adam'
        'adam' (``AdamAscent`` on Theta, the ANCER code), 'euclidean' (``EuclideanAscent``), 'riemannian'
        (``RiemannianAscent``, exp map of ``manifold``'s metric), 'retraction' (its retraction) or any ``StepRule``.
    objective : Objective, str or None, default None
        None or 'certificate': ``ancer_objective(kappa)``, R P + kappa K R with R = Phi^-1(p_A) (R P is then the proxy
        radius the certificate reports); 'gap': Eiras et al.'s, R the top-two gap; or any ``Objective``.
    max_ratio : float or None, default 4.0
        Ceiling Theta_i <= max_ratio * sigma_x* (must be >= 1), projected after every step together with the floor
        Theta_i >= sigma_x*: keeps every axis near the noise levels the model was trained on. None: unbounded, as the
        ANCER code.
    keep_ball : bool, default True
        The containment constraint min_i theta_i r(x, Theta) >= r_iso* of Eiras et al.'s eq. (4), which the floor
        Theta_i >= sigma_x* alone does not give (r(x, Theta) drops as the noise grows). The ascent sees it
        (``KeepBall``: a penalty below the start's estimated l2 radius; only iterates whose estimate keeps it
        compete for the best) and, with ``select``, the optimised Theta is kept only if, on the same fresh draws, its
        certified l2 radius (inscribed ball, min_i Theta_i Phi^-1(p_A_lower)) is also at least the start's (the DDRS
        ball sigma_x* Phi^-1(p_A_lower); ``ddrs.selection``). False: the volume proxy alone decides, as the ANCER
        code (the papers' volume-only numbers).
    manifold : manifolds.Manifold or None, default None
        The geometry of Theta: any ``manifolds.Manifold`` with diagonal points (``point_ndim`` 1) and the inputs'
        dimension; None: ``manifolds.PositiveDiagonal`` with the affine-invariant metric. It shapes the Riemannian
        rules' steps; 'adam' and 'euclidean' step on the raw Theta.
    {noise_parameters}
    """

    iterations: int = 100
    lr: float = 0.04
    kappa: float = 2.0
    step: Any = "adam"
    objective: Objective | None = None
    max_ratio: float | None = 4.0  # every axis <= max_ratio * sigma_x* (None: unbounded, as the ANCER code)
    keep_ball: bool = True  # containment constraint (ANCER eq. (4)): ascent and selection keep the l2 ball
    manifold: manifolds.Manifold | None = None  # any diagonal-point Manifold (default PositiveDiagonal)
    noise: manifolds.NoiseMap | None = None  # None: manifolds.noise_for(manifold)

    def step_rule_for(self, dim: int) -> str:
        return _step_rule(self.step, self.lr).describe(manifolds.resolve_manifold(self.manifold, "diagonal", dim))

    def manifold_for(self, shape: tuple[int, ...]) -> manifolds.Manifold:
        return manifolds.resolve_manifold(self.manifold, "diagonal", math.prod(shape))

    def fit(self, model, x, init=None, generator=None, progress=None) -> SmoothingResult:
        """{fit_inputs}
        init : SmoothingResult, float or torch.Tensor
            Required: sigma_x*, as the DDRS result, a float or a (B,) tensor; start, floor and ceiling scale with it.
        {fit_outputs}
        """
        self._validate()
        x = _on_model(model, x)
        sigma_star = _sigma_from(init, x, None)
        d = x[0].numel()
        manifold = self.manifold_for(tuple(x.shape[1:]))
        theta0 = _noise_of(self.noise, manifold).from_scales(sigma_star[:, None].expand(-1, d).clone())
        objective = _objective(self.objective, "ancer", self.kappa)
        return self._run(
            "ancer",
            model,
            x,
            manifold,
            theta0,
            sigma_star,
            objective,
            _step_rule(self.step, self.lr),
            _bounds(sigma_star, self.max_ratio),
            generator,
            progress,
        )


@_shared_parameters
@dataclass
class RDDRS(_Optimised):
    """Per-input SPD C_x maximising H(C) = R(C) P(C) + kappa K(C) R(C) on the SPD manifold
    (Labarbarie, Hajri, Arnaudon 2022), initialised at sigma_x* I with the eigenvalue floor
    lambda_i >= sigma_x* (and, by default, the ceiling lambda_i <= 4 sigma_x*).

    The default starts cold at sigma_x* I from the DDRS stage (no ANCER stage needed) and takes
    36 Riemannian Adam steps (``adaptive``; lr 0.05, per-direction second moments, ``RiemannianAdam``) of
    1,000 samples each, with the metric's retraction and one eigendecomposition per step (``shared_frame``,
    ``manifolds.eigenframe``), then keeps the start unless the new noise is better on fresh samples
    (``select``). The step rule is the same whatever the metric, manifold or backend: every shipped SPD metric
    (affine-invariant, log-Euclidean, Bures-Wasserstein) has an eigenframe in which Adam keeps its
    per-direction moments; a manifold or metric without one (a user's subclass, a Geomstats metric) gets
    geoopt's form of Riemannian Adam; ``SmoothingResult.step_rule`` says which ran (``step_rule_for``).

    ``step``: None (``adaptive``: 'adam', else 'riemannian'), 'adam' (``RiemannianAdam`` from ``lr``,
    ``per_direction``, ``rotation_lr``, ``method``, ``max_step_norm``), 'riemannian' (plain Riemannian gradient
    ascent, ``RiemannianAscent`` from ``step_size``, ``method``, ``max_step_norm``) or any ``StepRule``.
    ``RDDRS.paper()`` is the seed paper's recipe.

    ``structure``: 'full' (a dense C, d x d) or 'kronecker': C = s C_1 (x) ... (x) C_m over the axes of the
    inputs (e.g. channel (x) height (x) width), ``manifolds.KroneckerSPD(x.shape[1:], metric)`` with
    ``manifolds.KroneckerNoise``: sampling O(d sum_i n_i), no d x d matrix, the same cold start sigma_x* I, floor,
    objective and selection, Adam per direction in each factor's eigenframe (``manifolds.kronecker``).
    'low-rank': covariance diag(a^2) + abar^2 U diag(e^2) U^T with U on St(d, ``rank``) and 'spiked' its form with
    a = s 1 (``manifolds.LowRankSPD``, ``manifolds.LowRankNoise``): sampling O(d rank) from d + rank normals, the same
    cold start (sigma_x* I with a negligible spike, ``manifolds.low_rank``), floor (on min a, a sound lower bound of the
    smallest scale, exact when spiked), objective and selection, Adam with one second moment per factor of the product
    St(d, k) x R^k x (0, inf)^d (each e_j and each a_i its own). 'signed-spiked': the scale s (I - U U^T) +
    s U diag(exp(e)) U^T (``manifolds.SignedSpikedSPD``, ``certify.SpikedGaussian``), whose spikes may also shrink the
    noise (along the directions the model is sensitive to, while s grows elsewhere); its cold start e = 0 is exact.

    ``metric``: 'affine-invariant' (the paper) | 'log-euclidean' | 'bures-wasserstein' | a
    ``manifolds.SPDMetric`` | a Geomstats SPD metric; ``manifold``: any ``manifolds.Manifold`` with matrix
    points, overriding ``metric``; ``backend``: 'rgd' (ours) | 'pymanopt'. With ``pymanopt_solver="sgd"`` (the
    default) Pymanopt's SteepestDescent loop moves by this step rule (the same iterates as 'rgd');
    'steepest' / 'cg' are Pymanopt's own directions and line searches (deterministic objectives only), which
    replace the step rule: they refuse an explicit ``step`` and the result names the solver.

    ``init``: a DDRS result or sigmas (C0 = sigma_x* I, the paper), or an ANCER result (C0 =
    diag(Theta_x), floor still at its sigma_x*): a warm start that refines ANCER's axis-aligned
    ellipsoid by rotating and reshaping it.

    Parameters
    ----------
    iterations : int, default 36
        Ascent steps per input (``RDDRS.paper()``: 98). 0 returns the start point (no step, no selection).
    samples : int, default 1000
    {estimate_parameters}
    select : bool, default True
        After the ascent, keep the start (projected onto the constraint) unless the optimised noise has a strictly
        larger hard-vote certified radius (proxy: the geometric mean of the eigenvalues of C times Phi^-1(p_A_lower)) on
        ``selection_samples`` fresh draws common to both candidates (``ddrs.selection``). These draws come from the
        fitting generator, never from the certification samples (README, Errata R5). The result's ``kept_new`` says
        which was kept.
    {selection_parameters}
    step_size : float, default 1.0
        Step of plain Riemannian gradient ascent (``RiemannianAscent``: ``step='riemannian'`` or ``adaptive=False``);
        unused by Adam.
    kappa : float, default 1e-8
        Weight of the term kappa K R in H = R P + kappa K R (the RDDRS paper's value: in effect the volume proxy R P
        alone). Used by the default and 'gap' objectives; ignored when ``objective`` is an ``Objective``.
    metric : str, SPDMetric or Geomstats metric, default 'affine-invariant'
        The SPD manifold's metric: 'affine-invariant' (the paper), 'log-euclidean', 'bures-wasserstein', a
        ``manifolds.SPDMetric`` or a Geomstats SPD metric. It changes the geometry of the steps only: the objective and
        the certificate of a given C do not depend on it. Ignored when ``manifold`` is given.
    method : str, default 'retr'
        How a step moves along its tangent vector: 'retr' (the metric's retraction) or 'exp' (its exponential map, the
        paper).
    max_step_norm : float or None, default 2.0
        Each step's length in the metric's own norm is clipped here (or to the injectivity radius where that is
        smaller), so a large step stays in the SPD cone. None: no clipping.
    backend : str, default 'rgd'
        'rgd': this package's ascent loop (``ddrs.optimizers.ascend``); 'pymanopt': Pymanopt's solver loop
        (``pymanopt_solver``), which takes neither ``schedule`` nor ``early_stop``.
    pymanopt_solver : str, default 'sgd'
        With ``backend='pymanopt'``: 'sgd' (Pymanopt's SteepestDescent loop moving by the step rule: the same iterates
        as 'rgd'), 'steepest' or 'cg' (Pymanopt's own directions and line searches, for deterministic objectives, e.g.
        ``common_random_numbers``; they replace the step rule and refuse an explicit ``step``).
    objective : Objective, str or None, default None
        None or 'certificate': ``ancer_objective(kappa)``, R P + kappa K R with R = Phi^-1(p_A) (R P is then the proxy
        radius the certificate reports); 'gap': the paper's eq. (5), R the top-two gap; or any ``Objective``.
    max_ratio : float or None, default 4.0
        Eigenvalue ceiling lambda_i <= max_ratio * sigma_x* (must be >= 1), projected after every step together with the
        floor lambda_i >= sigma_x*: keeps every axis near the noise levels the model was trained on. None: no ceiling
        (the paper).
    keep_ball : bool, default True
        The containment constraint lambda_min(C) r(x, C) >= sigma_x* r_iso(x), the SPD counterpart of Eiras et al.'s
        eq. (4), which the floor lambda_i >= sigma_x* alone does not give. The ascent sees it (``KeepBall``: a penalty
        below the start's estimated l2 radius; only iterates whose estimate keeps it compete for the best) and, with
        ``select``, the optimised C is kept only if, on the same fresh draws, its certified l2 radius (inscribed
        ball, lambda_min(C) Phi^-1(p_A_lower); README, Errata R3) is also at least the start's (from a DDRS result,
        the DDRS ball; ``ddrs.selection``). False: the volume proxy alone decides (the paper; ``RDDRS.paper()``
        selects nothing).
    manifold : manifolds.Manifold or None, default None
        Any ``manifolds.Manifold`` with matrix points (``point_ndim`` 2) and the inputs' dimension, overriding
        ``metric`` and ``structure``; None: ``manifolds.SPD(d, metric)`` or, with ``structure='kronecker'``,
        ``manifolds.KroneckerSPD(input_shape, metric)``, with 'low-rank' / 'spiked' ``manifolds.LowRankSPD(d, rank)``
        ('signed-spiked': ``manifolds.SignedSpikedSPD(d, rank)``).
    {noise_parameters}
    structure : str, default 'full'
        'full': the noise scale is any SPD C (d x d); 'kronecker': s C_1 (x) ... (x) C_m over the input's axes
        (``manifolds.KroneckerSPD``; metric 'affine-invariant' or 'log-euclidean'). An ANCER warm start is refused
        unless its Theta is itself a Kronecker product of per-axis scales. 'low-rank': covariance diag(a^2) +
        abar^2 U diag(e^2) U^T, U on St(d, ``rank``); 'spiked': the same with a = s 1 (an ANCER warm start is refused
        unless isotropic); 'signed-spiked': scale s (I - U U^T) + s U diag(exp(e)) U^T, spikes larger or smaller
        than s (isotropic warm starts only). Their geometry is fixed (``manifolds.LowRankSPD``): ``metric`` must be
        'affine-invariant' or 'log-euclidean' (which coincide on the diagonal part).
    rank : int or None, default None
        The number of spikes k of 'low-rank', 'spiked' and 'signed-spiked' (None: ``DEFAULT_RANK``); other structures
        refuse it.
    adaptive : bool, default True
        With ``step=None``: Riemannian Adam (True) or plain Riemannian gradient ascent (False). False together with an
        explicit ``step`` is an error.
    lr : float, default 0.05
        Riemannian Adam's step.
    per_direction : bool, default True
        Adam's second moment per coordinate of the eigenframe (eigenvalue directions on the diagonal, rotations off it);
        False: one per point. Without an eigenframe Adam keeps one per point either way.
    rotation_lr : float or None, default None
        Adam's step for the rotations (off-diagonal coordinates of the eigenframe; 0: only the eigenvalues move); None:
        ``lr``. Needs a manifold with an eigenframe.
    shared_frame : bool, default True
        One eigendecomposition per step serves the constraint, the objective's volume and smallest-eigenvalue terms, the
        gradient and the move (``Stepper``); False decomposes in each (the same iterates up to rounding, slower).
    step : str, StepRule or None, default None
        None ('adam' if ``adaptive`` else 'riemannian'), 'adam' (``RiemannianAdam`` from ``lr``, ``per_direction``,
        ``rotation_lr``, ``method``, ``max_step_norm``), 'riemannian' (``RiemannianAscent`` from ``step_size``,
        ``method``, ``max_step_norm``) or any ``StepRule``.
    """

    iterations: int = 36
    step_size: float = 1.0  # plain Riemannian gradient ascent (step 'riemannian' / adaptive=False)
    samples: int = 1000
    kappa: float = 1e-8
    metric: Any = "affine-invariant"
    method: str = "retr"
    max_step_norm: float | None = 2.0
    backend: str = "rgd"
    pymanopt_solver: str = "sgd"
    objective: Objective | str | None = None
    max_ratio: float | None = 4.0  # every eigenvalue <= max_ratio * sigma_x* (None: unbounded, the paper)
    keep_ball: bool = True  # containment constraint (SPD counterpart): ascent and selection keep the l2 ball
    manifold: manifolds.Manifold | None = None  # any matrix-point Manifold (overrides ``metric``)
    noise: manifolds.NoiseMap | None = None  # None: manifolds.noise_for(manifold)
    adaptive: bool = True  # step None: Riemannian Adam (True) or plain Riemannian gradient ascent (False)
    lr: float = 0.05  # Adam's step
    per_direction: bool = True  # Adam's second moment per coordinate of the eigenframe (False: one per point)
    rotation_lr: float | None = None  # Adam's step for rotations (off-diagonal in the eigenframe); None: lr
    shared_frame: bool = True  # one eigendecomposition per step (a manifold with an eigenframe)
    step: Any = None  # None ('adam' if adaptive else 'riemannian'), 'adam', 'riemannian' or a StepRule
    structure: str = "full"  # 'full' (dense C), 'kronecker', 'low-rank' or 'spiked' (STRUCTURES)
    rank: int | None = None  # spikes of 'low-rank' / 'spiked' / 'signed-spiked' (None: DEFAULT_RANK)

    def __repr__(self) -> str:
        """The dataclass repr, ``rank`` left out while None: a preset's repr is recorded in every log's fingerprint,
        and the presets that do not use ``rank`` keep the repr (and the fingerprints) they had."""
        shown = [f for f in dataclasses.fields(self) if f.repr and not (f.name == "rank" and self.rank is None)]
        return f"{type(self).__qualname__}({', '.join(f'{f.name}={getattr(self, f.name)!r}' for f in shown)})"

    @classmethod
    def paper(cls, **overrides: Any) -> RDDRS:
        """The seed paper's recipe: 98 exp-map steps of plain Riemannian gradient ascent, step 1 (clipped
        at norm 2 to stay in the cone), 20,000 samples per step, kappa 1e-8, the top-two gap objective,
        the last iterate, no selection and no eigenvalue ceiling."""
        params: dict[str, Any] = dict(
            iterations=98,
            step_size=1.0,
            samples=20000,
            kappa=1e-8,
            method="exp",
            keep_best=False,
            max_ratio=None,
            objective="gap",
            select=False,
            keep_ball=False,
            max_step_norm=2.0,
            adaptive=False,
        )
        if overrides.get("step") is not None:  # an explicit rule replaces adaptive=False
            params.pop("adaptive")
        params.update(overrides)
        return cls(**params)

    def _solver_steps(self) -> bool:
        """True when Pymanopt's solver chooses the steps (backend 'pymanopt', solver 'steepest' or 'cg')."""
        return self.backend == "pymanopt" and self.pymanopt_solver != "sgd"

    def step_rule(self, manifold: manifolds.Manifold | None = None) -> StepRule:
        """The step rule ``fit`` runs: ``step``, or RiemannianAdam (``adaptive``) / RiemannianAscent from the
        fields. The same on every metric, manifold and backend; how it runs on ``manifold``:
        ``rule.describe(manifold)`` (``step_rule_for``)."""
        step = self.step
        if step is None:
            step = "adam" if self.adaptive else "riemannian"
        elif not self.adaptive:
            raise ValueError("adaptive=False is step='riemannian': give step= or adaptive=False, not both")
        if isinstance(step, StepRule):
            return step
        if step not in ("adam", "riemannian"):
            raise ValueError(f"step must be None, 'adam', 'riemannian' or a StepRule, got {step!r}")
        rules = {  # both built: every field is validated, whichever runs
            "adam": RiemannianAdam(
                self.lr,
                per_direction=self.per_direction,
                method=self.method,
                max_step_norm=self.max_step_norm,
                rotation_lr=self.rotation_lr,
            ),
            "riemannian": RiemannianAscent(self.step_size, method=self.method, max_step_norm=self.max_step_norm),
        }
        return rules[step]

    def _manifold(self, dim: int, shape: tuple[int, ...] | None = None) -> manifolds.Manifold:
        """The manifold ``fit`` runs on for inputs of ``dim`` entries and ``shape`` (None: (dim,))."""
        if self.structure not in STRUCTURES:
            raise ValueError(f"structure must be one of {STRUCTURES}, got {self.structure!r}")
        if self.rank is not None and self.structure not in LOW_RANK_STRUCTURES:
            raise ValueError(
                f"rank={self.rank!r} sets the spikes of structure 'low-rank' or 'spiked', not {self.structure!r}"
            )
        if self.structure == "kronecker" and self.manifold is None:
            return manifolds.KroneckerSPD(shape if shape is not None else (dim,), self.metric)
        if self.structure == "kronecker" and not isinstance(self.manifold, manifolds.KroneckerSPD):
            raise ValueError(f"structure='kronecker' with manifold={self.manifold!r}: pass one of them")
        if self.structure in LOW_RANK_STRUCTURES:
            return self._low_rank_manifold(dim)
        return manifolds.resolve_manifold(self.manifold, "spd", dim, self.metric)

    def _low_rank_manifold(self, dim: int) -> manifolds.Manifold:
        """``LowRankSPD(dim, rank, spiked)`` (or the user's, checked) for the low-rank structures."""
        from manifolds.diagonal import check_metric

        rank = DEFAULT_RANK if self.rank is None else self.rank
        if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= dim:
            raise ValueError(f"rank must be an int with 1 <= rank <= d = {dim} (the inputs' size), got {rank!r}")
        spiked = self.structure in ("spiked", "signed-spiked")
        kind = manifolds.SignedSpikedSPD if self.structure == "signed-spiked" else manifolds.LowRankSPD
        if self.manifold is not None:
            m = self.manifold
            signed = isinstance(m, manifolds.SignedSpikedSPD)
            if (
                not isinstance(m, manifolds.LowRankSPD)
                or m.spiked != spiked
                or m.dim != dim
                or signed != (self.structure == "signed-spiked")
            ):
                raise ValueError(
                    f"structure={self.structure!r} with manifold={m!r}: pass one of them (or a LowRankSPD of the "
                    f"inputs' dimension {dim} with spiked={spiked})"
                )
            return m
        try:
            check_metric(self.metric)
        except ValueError:
            raise ValueError(
                f"metric {self.metric!r}: structure {self.structure!r} has its own geometry (canonical Stiefel x "
                "Euclidean x log-diagonal); its metric may only be 'affine-invariant' or 'log-euclidean' (equal on the "
                "diagonal part)"
            ) from None
        if kind is manifolds.SignedSpikedSPD:
            return manifolds.SignedSpikedSPD(dim, rank)
        return manifolds.LowRankSPD(dim, rank, spiked=spiked)

    def _describe(self, manifold: manifolds.Manifold) -> str:
        if self._solver_steps():
            name = {"steepest": "SteepestDescent (Armijo line search)", "cg": "ConjugateGradient"}.get(
                self.pymanopt_solver, self.pymanopt_solver
            )
            return (
                f"pymanopt {name}: Pymanopt's own directions and step sizes, no step rule "
                f"(moves: {self.method} clipped at {self.max_step_norm} in {manifold!r})"
            )
        described = self.step_rule(manifold).describe(manifold)
        if self.backend == "pymanopt":
            return f"pymanopt SteepestDescent loop stepping by {described}"
        return described

    def step_rule_for(self, dim: int, shape: tuple[int, ...] | None = None) -> str:
        return self._describe(self._manifold(dim, shape))

    def manifold_for(self, shape: tuple[int, ...]) -> manifolds.Manifold:
        return self._manifold(math.prod(shape), tuple(shape))

    def fit(self, model, x, init=None, generator=None, progress=None) -> SmoothingResult:
        """{fit_inputs}
        init : SmoothingResult, float or torch.Tensor
            Required: a DDRS result or sigmas (start sigma_x* I), or an ANCER result (start diag(Theta_x), floor at its
            sigma_x*).
        {fit_outputs}
        """
        self._validate()
        if self.backend not in ("rgd", "pymanopt"):
            raise ValueError(f"backend must be 'rgd' or 'pymanopt', got {self.backend!r}")
        x = _on_model(model, x)
        sigma_star = _sigma_from(init, x, None)
        d = x[0].numel()
        manifold = self.manifold_for(tuple(x.shape[1:]))
        noise = _noise_of(self.noise, manifold)
        C0 = noise.from_scales(sigma_star[:, None].expand(-1, d))  # sigma_x* I
        if isinstance(init, SmoothingResult) and init.points.ndim == 2:  # warm start from ANCER's Theta
            C0 = noise.from_scales(init.points.to(device=x.device, dtype=torch.float64))
        objective = _objective(self.objective, "rddrs", self.kappa)
        floor = _bounds(sigma_star, self.max_ratio)
        rule: StepRule | None
        driver: Callable = ascend
        options: dict[str, Any] = {}
        if self._solver_steps():
            if self.step is not None:
                raise ValueError(
                    f"pymanopt_solver={self.pymanopt_solver!r} chooses its own steps and cannot run step="
                    f"{self.step!r}; use pymanopt_solver='sgd' (Pymanopt's loop moving by the step rule) or leave "
                    "step=None"
                )
            rule = None
            driver = functools.partial(
                pymanopt_ascend, solver=self.pymanopt_solver, method=self.method, max_norm=self.max_step_norm
            )
        else:
            rule = self.step_rule(manifold)
            if self.backend == "pymanopt":  # Pymanopt's loop, moving by the step rule
                driver = functools.partial(pymanopt_ascend, solver="sgd", shared_frame=self.shared_frame)
            elif not self.shared_frame:
                options["shared_frame"] = False
        return self._run(
            "rddrs",
            model,
            x,
            manifold,
            C0,
            sigma_star,
            objective,
            rule,
            floor,
            generator,
            progress,
            driver,
            step_rule=self._describe(manifold),
            **options,
        )


#: the noise structures of ``RDDRS(structure=...)``
STRUCTURES = ("full", "kronecker", "low-rank", "spiked", "signed-spiked")
#: the structures whose points are ``manifolds.LowRankSPD`` (``rank`` spikes)
LOW_RANK_STRUCTURES = ("low-rank", "spiked", "signed-spiked")
#: spikes of ``RDDRS(structure='low-rank' / 'spiked')`` when ``rank`` is None
DEFAULT_RANK = 8


def _noise_of(noise: manifolds.NoiseMap | None, manifold: manifolds.Manifold) -> manifolds.NoiseMap:
    """The preset's noise map: ``noise``, or the shipped one of ``manifold``'s point shape."""
    return manifolds.as_noise_map(manifold if noise is None else noise)


def _bounds(sigma_star: torch.Tensor, max_ratio: float | None) -> EigenvalueFloor:
    """Floor at sigma_x* (the ball of radius sigma_x* r(x, C); the DDRS ball only with ``keep_ball``),
    optional ceiling at max_ratio * sigma_x*."""
    if max_ratio is not None and not (max_ratio >= 1):
        raise ValueError(f"max_ratio must be >= 1 or None, got {max_ratio}")
    return EigenvalueFloor(sigma_star, None if max_ratio is None else max_ratio * sigma_star)


def run_chain(model, x, stages: Sequence, generator: torch.Generator | None = None) -> list[SmoothingResult]:
    """Run stages in order, each initialised from the previous one (e.g. [RS(0.25), DDRS(), RDDRS()])."""
    results: list[SmoothingResult] = []
    for stage in stages:
        results.append(stage.fit(model, x, init=results[-1] if results else None, generator=generator))
    return results


def certify_inputs(
    model,
    x: torch.Tensor,
    result: SmoothingResult,
    num_classes: int,
    n0: int = 100,
    n: int = 100_000,
    alpha: float = 0.001,
    batch_size: int = 1000,
    generator: torch.Generator | None = None,
    progress: Any = None,
) -> list[certify.Certificate]:
    """Cohen's CERTIFY for each input with the noise chosen for it, on FRESH samples. ``progress``:
    ``True`` (a text bar on stderr), a bar with ``update(n)`` (e.g. tqdm) or a callable ``(i, certificate)``."""
    x = _check_batch(x)
    if len(result) != x.shape[0]:
        raise ValueError(f"result holds noise for {len(result)} inputs but x is a batch of {x.shape[0]}")
    on_input, close = progress_callback(progress, x.shape[0], f"certify {result.method} ({x.shape[0]} inputs)")
    out = []
    try:
        for i, (xi, noise) in enumerate(zip(x, result.noises())):
            out.append(
                certify.Smooth(model, noise, num_classes).certify(
                    xi, n0, n, alpha, batch_size=batch_size, generator=generator
                )
            )
            if on_input is not None:
                on_input(i, out[-1])
    finally:
        close()
    return out
