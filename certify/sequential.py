"""Anytime-valid sequential certification: stop drawing samples once every asked radius is decided.

For radii r_1 < ... < r_k the question "is x certified at r_j?" is "is p_A > t_j?" with t_j the
probability the certificate needs: Phi(r_j / sigma) for isotropic noise (radii in l2), Phi(r_j) for
anisotropic noise (radii in the noise's own norm ||S^-1 delta||, as ``Certificate.radius``). One
confidence sequence for p_A therefore decides every radius at once.

Confidence sequence: two-sided Clopper-Pearson intervals at looks n_1 < n_2 < ... < n_K = n on a
geometric grid (ratio ``growth``, default 1.1), look k at level alpha_k with sum_k alpha_k = alpha:
by default alpha / K each (a Bonferroni split over the K looks, which the maximum n fixes in advance),
or Voracek's alpha_k = 5 alpha / ((k + 4)(k + 5)) with the remainder at the last look
(``spending="voracek"``; "Treatment of statistical estimation problems in randomized smoothing",
NeurIPS 2024, Sec. 4). By the union bound, with probability >= 1 - alpha every interval of every look
holds simultaneously, so every decision taken at any (data-dependent) stopping look is right, and the
lower bound at the stopping look is a valid bound for the certificate: P(any wrong decision or wrong
certificate about this input) <= alpha, with no extra alpha for looking many times (``run_looks``).

Decisions, per radius: True (certified: the certificate's radius exceeds r), False (not robust at r:
p_A = max_c P(f(x + eps) = c) < t_r, so no certificate of Cohen's form reaches r at any n), None
(undecided: the maximum n was reached, or no outcome of the remaining samples could certify r).
Sampling stops as soon as every radius is decided either way or out of the budget's reach. The class
is guessed from n0 separate samples, as in Cohen's CERTIFY; a wrong guess can only lead to abstaining
or to undecided radii, never to a wrong decision.

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
from typing import Protocol

import numpy as np
import torch
from scipy.stats import binom, norm

from .bounds import clopper_pearson
from .certificate import Certificate, certificate_from_bound
from .noise import GaussianNoise, IsotropicGaussian, MixtureOfGaussians
from .radius import gaussian_radius
from .sampling import SampleStatistics


class Sampler(Protocol):
    """What sequential certification needs of a smoothed classifier (``certify.Smooth`` is one):
    its noise and smoothing, and ``sample_statistics`` (``certify.sampling``)."""

    noise: GaussianNoise
    smoothing: str

    def sample_statistics(
        self, x: torch.Tensor, num: int, batch_size: int = ..., generator: torch.Generator | None = ...
    ) -> SampleStatistics: ...


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


SPENDINGS = ("uniform", "voracek")


def look_alphas(num_looks: int, alpha: float, spending: str = "uniform") -> np.ndarray:
    """Level of each look; they sum to alpha. ``"uniform"``: alpha / K at each of the K looks (a
    Bonferroni split, valid because the maximum n fixes the number of looks in advance).
    ``"voracek"``: alpha_k = 5 alpha / ((k + 4)(k + 5)) for looks k = 1..K-1 (Voracek, NeurIPS 2024,
    Sec. 4; designed for an unbounded number of looks) and the unspent remainder at the last look.
    Uniform spends less on the first looks, where easy inputs are decided anyway, and more where the
    hard ones are: 10-20 % fewer samples in simulations at alpha = 0.001, n = 100,000 (p in 0.8..1)."""
    if spending == "uniform":
        return np.full(num_looks, alpha / num_looks)
    if spending != "voracek":
        raise ValueError(f"spending must be one of {SPENDINGS}, got {spending!r}")
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


@dataclass
class Looks:
    """Outcome of ``run_looks`` for R parallel streams: ``decided`` (R, k) int8 (1 certified, -1 not
    robust, 0 undecided), ``drawn`` (R,) samples drawn after selection, ``hits`` (R,), ``lower`` (R,)
    the Clopper-Pearson lower bound on p_label at the stopping look, ``look`` (R,) its number, and
    ``closed_at`` (R, k) the samples after which each radius was decided or dropped as out of reach
    (what a run asking only that radius would have drawn on the same stream)."""

    decided: np.ndarray
    drawn: np.ndarray
    hits: np.ndarray
    lower: np.ndarray
    look: np.ndarray
    closed_at: np.ndarray


def max_misses_to_certify(looks: list[int], alphas: np.ndarray, need: np.ndarray) -> np.ndarray:
    """(looks, radii) table: the largest number of misses with which look j still certifies radius i
    (L > t_i), -1 if none. By Clopper-Pearson's duality L(h, m, a) > t iff P_t(Bin(m, t) >= h) < a / 2,
    which is decreasing in the misses m - h; found by bisection."""
    m = np.asarray(looks, dtype=np.float64)[:, None]
    half = np.asarray(alphas, dtype=np.float64)[:, None] / 2
    t = np.asarray(need, dtype=np.float64)[None, :]
    lo = np.full((m.shape[0], t.shape[1]), -1.0)  # invariant: lo certifies (or is -1), hi does not
    hi = np.broadcast_to(m, lo.shape).copy()
    while np.any(hi - lo > 1):
        mid = np.floor((lo + hi) / 2)
        ok = binom.sf(m - mid - 1, m, t) < half  # P(X >= m - mid) under t
        lo, hi = np.where(ok, mid, lo), np.where(ok, hi, mid)
    return lo.astype(np.int64)


def run_looks(
    draw: Callable[[int], np.ndarray],
    n: int,
    alpha: float,
    need: np.ndarray,
    *,
    start: int = 100,
    growth: float = 1.1,
    alphas: np.ndarray | None = None,
    spending: str = "uniform",
    stop_out_of_reach: bool = True,
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

    Stopping: a stream stops once each radius is decided, or can no longer be certified at any
    remaining look even if every remaining sample were a hit (``max_misses_to_certify``; e.g. r = 4
    sigma at n = 100,000 and alpha = 0.001 is out of reach from the start). Such a radius stays None
    unless decided "not robust" before the stream stops; it could never have become True, so the set
    of certified radii is the same as with sampling on to the maximum n (``stop_out_of_reach=False``).

    Alpha: the events "p_label outside [L_j, U_j]" have probabilities <= a_j (two tails of a_j / 2
    each) and sum_j a_j = alpha (``look_alphas``). By the union bound all intervals hold at once with
    probability >= 1 - alpha, and then every decision of either kind at every look is right, as is the
    lower bound reported at the stopping look: P(any wrong decision or wrong certificate) <= alpha
    however the stopping look is chosen (Voracek, NeurIPS 2024, Sec. 4, for this construction). No
    alpha is split between the two kinds of decision beyond the two tails of each interval, and one
    interval serves every radius."""
    need = np.asarray(need, dtype=np.float64)
    looks = look_schedule(n, start, growth)
    alphas = look_alphas(len(looks), alpha, spending) if alphas is None else np.asarray(alphas, dtype=np.float64)
    if len(alphas) < len(looks):
        raise ValueError(f"alphas: need one level per look ({len(looks)}), got {len(alphas)}")
    # reach[j, i]: most misses with which some look after j can still certify radius i (-1: none)
    kmax = max_misses_to_certify(looks, alphas[: len(looks)], need)
    reach = np.full_like(kmax, -1)
    reach[:-1] = np.maximum.accumulate(kmax[::-1], axis=0)[::-1][1:]
    decided: np.ndarray | None = None
    open_ = np.zeros((0, need.size), dtype=bool)
    closed_at = np.zeros((0, need.size), dtype=np.int64)
    drawn = hits = lower = look = np.zeros(0)
    prev = 0
    for j, (m, a) in enumerate(zip(looks, alphas)):
        new = np.asarray(draw(m - prev), dtype=np.int64).reshape(-1)
        if decided is None:
            R = new.size
            decided = np.zeros((R, need.size), dtype=np.int8)
            open_ = np.ones((R, need.size), dtype=bool)  # undecided and still reachable
            drawn, hits = np.zeros(R, dtype=np.int64), np.zeros(R, dtype=np.int64)
            lower, look = np.zeros(R), np.zeros(R, dtype=np.int64)
            closed_at = np.zeros((R, need.size), dtype=np.int64)
        active = np.any(open_, axis=1)
        hits = np.where(active, hits + new, hits)
        prev = m
        lo, up = clopper_pearson(hits[active], m, a, "two-sided")
        top = np.maximum(up, 1.0 - lo)  # upper bound on p_A = max_c p_c
        sub = decided[active]
        sub[(sub == 0) & (lo[:, None] > need[None, :])] = 1
        sub[(sub == 0) & (top[:, None] < need[None, :])] = -1
        decided[active] = sub
        misses = (m - hits[active])[:, None]
        out_of_reach = (reach[j][None, :] < 0) | (misses > reach[j][None, :] + 1)  # +1: a miss of slack
        was_open = open_[active]
        open_[active] = (sub == 0) & ~(out_of_reach & stop_out_of_reach)
        closed = closed_at[active]
        closed[was_open & ~open_[active]] = m
        closed[open_[active]] = m  # still open: so far
        closed_at[active] = closed
        drawn[active], lower[active], look[active] = m, lo, j + 1
        if not open_.any():
            break
    assert decided is not None
    return Looks(decided=decided, drawn=drawn, hits=hits, lower=lower, look=look, closed_at=closed_at)


def certify_sequential(
    smooth: Sampler,
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
    spending: str = "uniform",
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
    selection = smooth.sample_statistics(x, n0, batch_size, generator)
    label = int(selection.scores().argmax())

    def draw(k: int) -> np.ndarray:
        stats = smooth.sample_statistics(x, k, batch_size, generator)
        return np.array([int(stats.counts.sum(dim=0)[label])])

    out = run_looks(draw, n, alpha, thresholds(noise, r), start=start, growth=growth, spending=spending)
    decided: tuple[bool | None, ...] = tuple(None if d == 0 else bool(d > 0) for d in out.decided[0])
    drawn, lower = int(out.drawn[0]), float(out.lower[0])
    radius = gaussian_radius(lower)
    seconds = time.perf_counter() - t0
    center = x.detach().reshape(-1).to("cpu", torch.float64).numpy()
    return certificate_from_bound(
        noise,
        center,
        label,
        lower,
        radius,
        n0=n0,
        n=drawn,  # samples drawn after the selection: cert.samples = n0 + drawn
        alpha=alpha,
        seconds=seconds,
        decided=decided,
        radii=tuple(r.tolist()),
        looks=int(out.look[0]),
        decided_at=tuple(n0 + int(v) for v in out.closed_at[0]),  # per radius, n0 included
    )
