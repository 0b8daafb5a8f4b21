"""Anytime-valid sequential certification: stop drawing samples once every asked radius is decided.

For radii r_1 < ... < r_k the question "is x certified at r_j?" is "is p_A > t_j?" with t_j the
probability the certificate needs: Phi(r_j / sigma) for isotropic noise (radii in l2), Phi(r_j) for
anisotropic noise (radii in the noise's own norm ||S^-1 delta||, as ``Certificate.radius``). One
confidence sequence for p_A therefore decides every radius at once.

Confidence sequence: two-sided Clopper-Pearson intervals at looks n_1 < n_2 < ... on a geometric grid
(ratio ``growth``, default 1.1), look k spending alpha_k = 5 alpha / ((k + 4)(k + 5)) (these sum to
alpha over k >= 1; Voracek, "Treatment of statistical estimation problems in randomized smoothing",
NeurIPS 2024, Sec. 4), and the last look (at the maximum n) the whole unspent remainder. By the union
bound, with probability >= 1 - alpha every interval of every look holds simultaneously, so every
decision taken at any (data-dependent) stopping look is right, and the lower bound at the stopping look
is a valid Clopper-Pearson-type bound for the certificate: P(any wrong decision or wrong certificate
about this input) <= alpha, with no extra alpha for looking many times (``run_looks`` has the details).

Decisions, per radius: True (certified: the certificate's radius exceeds r), False (not robust at r:
p_A = max_c P(f(x + eps) = c) < t_r, so no certificate of Cohen's form reaches r at any n), None
(undecided when the maximum n is reached). Sampling stops as soon as every radius is decided either
way. The class is guessed from n0 separate samples, as in Cohen's CERTIFY; a wrong guess can only
lead to abstaining or to undecided radii, never to a wrong decision.

Mixtures: a true mixture (``MixtureOfGaussians(kind="mixture")``) is refused: its certificate
(``certify.radius.mixture_radius``) combines one bound per component, and this module has no
sequential version of that bound; certify it at a fixed n. (``ddrs compare --sequential`` does so for
its mixture rows.) The convolution kind is one Gaussian and is supported.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from scipy.stats import beta, norm

from .certificate import Certificate
from .noise import IsotropicGaussian, MixtureOfGaussians
from .radius import gaussian_radius
from .smooth import certificate_for

if TYPE_CHECKING:
    from .smooth import Smooth


def check_radii(radii: Sequence[float]) -> np.ndarray:
    """Validate ``radii``: a non-empty, strictly increasing sequence of finite numbers >= 0."""
    try:
        r = np.asarray([float(v) for v in radii], dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"radii must be a sequence of numbers, got {radii!r}") from None
    if r.size == 0:
        raise ValueError("radii must hold at least one radius")
    if not np.all(np.isfinite(r)):
        raise ValueError(f"radii must be finite numbers, got {r.tolist()}")
    if np.any(r < 0):
        raise ValueError(f"radii must be >= 0, got {r.tolist()}")
    if np.any(np.diff(r) <= 0):
        raise ValueError(f"radii must be strictly increasing (sorted, no repeats), got {r.tolist()}")
    return r


def look_schedule(n: int, start: int = 100, growth: float = 1.1) -> list[int]:
    """Cumulative sample counts of the looks: ceil(start * growth^k), capped at and ending with n."""
    looks: list[int] = []
    m = float(min(start, n))
    while int(math.ceil(m)) < n:
        c = int(math.ceil(m))
        if not looks or c > looks[-1]:
            looks.append(c)
        m *= growth
    looks.append(n)
    return looks


def look_alphas(num_looks: int, alpha: float) -> np.ndarray:
    """alpha_k = 5 alpha / ((k + 4)(k + 5)) for looks k = 1..K-1; the last look gets the remainder."""
    k = np.arange(1, num_looks, dtype=np.float64)
    spent = 5.0 * alpha / ((k + 4.0) * (k + 5.0))
    return np.append(spent, alpha - spent.sum())


def thresholds(noise, radii: np.ndarray) -> np.ndarray:
    """p_A each radius needs: Phi(r / sigma) for isotropic noise (l2 radii), else Phi(r) (own norm)."""
    if isinstance(noise, IsotropicGaussian):
        return norm.cdf(radii / noise.sigma)
    if isinstance(noise, MixtureOfGaussians):  # convolution only (the mixture kind is refused)
        return norm.cdf(radii / noise.effective_sigma)
    return norm.cdf(radii)


def clopper_pearson_interval(hits, m, a) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided Clopper-Pearson interval for ``hits`` successes of ``m`` at level ``a`` (each tail
    a / 2; Clopper and Pearson 1934): the a/2-quantile of Beta(hits, m - hits + 1) (0 if hits = 0) and
    the (1 - a/2)-quantile of Beta(hits + 1, m - hits) (1 if hits = m). Vectorised over ``hits``."""
    hits = np.asarray(hits, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        lower = np.where(hits > 0, beta.ppf(a / 2, np.maximum(hits, 1), m - hits + 1), 0.0)
        upper = np.where(hits < m, beta.ppf(1 - a / 2, hits + 1, np.maximum(m - hits, 1)), 1.0)
    return lower, upper


@dataclass
class Looks:
    """Outcome of ``run_looks`` for R parallel streams: ``decided`` (R, k) int8 (1 certified, -1 not
    robust, 0 undecided at the maximum n), ``drawn`` (R,) samples drawn after selection, ``hits`` (R,)
    and ``lower`` (R,) the Clopper-Pearson lower bound on p_label at the stopping look."""

    decided: np.ndarray
    drawn: np.ndarray
    hits: np.ndarray
    lower: np.ndarray
    look: np.ndarray


def run_looks(
    draw: Callable[[int], np.ndarray],
    n: int,
    alpha: float,
    need: np.ndarray,
    *,
    start: int = 100,
    growth: float = 1.1,
    alphas: np.ndarray | None = None,
) -> Looks:
    """The sequential decision rule, for R independent Bernoulli streams at once.

    ``draw(k)`` returns, per stream, the number of samples of the guessed class among k new ones
    (R = 1 for ``certify_sequential``; tests simulate thousands of streams through this same code).
    At look j (m_j samples, level a_j from ``look_alphas``): with [L, U] the two-sided Clopper-Pearson
    interval for p_label, radius i is decided certified once L > t_i and not robust once
    max(U, 1 - L) < t_i. The second bound is an upper bound on p_A = max_c p_c, the smoothed
    classifier's top-class probability, whichever class the n0 samples guessed: p_label <= U, and any
    other class has p_c <= 1 - p_label <= 1 - L. So "not robust at r" states that no certificate of
    Cohen's form (radius sigma Phi^-1(p_A)) reaches r, even at infinite n, and it cannot be made wrong
    by a wrong guess of the class (a wrong guess only delays the decision or leaves it undecided).

    Alpha: the events "p_label outside [L_j, U_j]" have probabilities <= a_j (two tails of a_j / 2
    each), and sum_j a_j = alpha (Voracek, NeurIPS 2024, Sec. 4: a_j = 5 alpha / ((j + 4)(j + 5)),
    whose sum over j >= 1 is alpha; the last look takes the unspent remainder). By the union bound
    all intervals hold at once with probability >= 1 - alpha, and then every decision of either
    kind at every look is right, as is the lower bound reported at the stopping look: P(any wrong
    decision or wrong certificate) <= alpha however the stopping look is chosen. No alpha is split
    between the two kinds of decision beyond the two tails of each interval, and one interval serves
    every radius."""
    need = np.asarray(need, dtype=np.float64)
    looks = look_schedule(n, start, growth)
    alphas = look_alphas(len(looks), alpha) if alphas is None else np.asarray(alphas, dtype=np.float64)
    if len(alphas) < len(looks):
        raise ValueError(f"alphas: need one level per look ({len(looks)}), got {len(alphas)}")
    decided: np.ndarray | None = None
    drawn = hits = lower = look = np.zeros(0)
    prev = 0
    for j, (m, a) in enumerate(zip(looks, alphas)):
        new = np.asarray(draw(m - prev), dtype=np.int64).reshape(-1)
        if decided is None:
            R = new.size
            decided = np.zeros((R, need.size), dtype=np.int8)
            drawn, hits = np.zeros(R, dtype=np.int64), np.zeros(R, dtype=np.int64)
            lower, look = np.zeros(R), np.zeros(R, dtype=np.int64)
        active = np.any(decided == 0, axis=1)
        hits = np.where(active, hits + new, hits)
        prev = m
        if not active.any():
            break
        lo, up = clopper_pearson_interval(hits[active], m, a)
        top = np.maximum(up, 1.0 - lo)  # upper bound on p_A = max_c p_c
        sub = decided[active]
        sub[(sub == 0) & (lo[:, None] > need[None, :])] = 1
        sub[(sub == 0) & (top[:, None] < need[None, :])] = -1
        decided[active] = sub
        drawn[active], lower[active], look[active] = m, lo, j + 1
        if not np.any(decided == 0):
            break
    assert decided is not None
    return Looks(decided=decided, drawn=drawn, hits=hits, lower=lower, look=look)


def certify_sequential(
    smooth: Smooth,
    x: torch.Tensor,
    n0: int,
    n: int,
    alpha: float,
    batch_size: int,
    generator: torch.Generator | None,
    radii: Sequence[float],
    *,
    start: int = 100,
    growth: float = 1.1,
) -> Certificate:
    """Sequential CERTIFY (see the module docstring and ``run_looks``); ``n`` is the maximum number
    of samples. A true mixture (kind='mixture') is refused: its certificate combines one bound per
    component, and no sequential version of that bound is implemented (certify it at fixed n)."""
    r = check_radii(radii)
    noise = smooth.noise
    if isinstance(noise, MixtureOfGaussians) and noise.kind == "mixture":
        raise ValueError(
            "radii: sequential certification of a true mixture (kind='mixture') is not "
            "supported; certify it with a fixed n (radii=None)"
        )
    if smooth.smoothing != "hard":
        raise ValueError("radii: sequential certification needs smoothing='hard' (counts)")
    if not (growth > 1.0):
        raise ValueError(f"growth must be > 1, got {growth}")
    t0 = time.perf_counter()
    selection = smooth._statistics(x, n0, batch_size, generator)
    label = int(smooth._scores(selection).argmax())

    def draw(k: int) -> np.ndarray:
        stats = smooth._statistics(x, k, batch_size, generator)
        return np.array([int(stats["counts"].sum(dim=0)[label])])

    out = run_looks(draw, n, alpha, thresholds(noise, r), start=start, growth=growth)
    decided: tuple[bool | None, ...] = tuple(None if d == 0 else bool(d > 0) for d in out.decided[0])
    drawn, lower = int(out.drawn[0]), float(out.lower[0])
    common = dict(n0=n0, n=drawn, alpha=alpha, noise=noise.kind, **noise.scale_summary())
    extras = {"samples": n0 + drawn, "decided": decided, "radii": tuple(r.tolist()), "looks": int(out.look[0])}
    radius = gaussian_radius(lower)
    seconds = time.perf_counter() - t0
    center = x.detach().reshape(-1).to("cpu", torch.float64).numpy()
    return certificate_for(noise, center, label, lower, radius, seconds, extras, common)
