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
largest lower bound of the looks taken is a valid bound for the certificate (it is reported, so that every
radius decided certified lies within the certificate's radius): P(any wrong decision or wrong
certificate about this input) <= alpha, with no extra alpha for looking many times (``run_looks``).

Decisions, per radius: True (certified: the certificate's radius exceeds r), False (not robust at r:
p_A = max_c P(f(x + eps) = c) < t_r, so no certificate of Cohen's form reaches r at any n), None
(undecided: the maximum n was reached, or no outcome of the remaining samples could certify r).
Sampling stops as soon as every radius is decided either way or out of the budget's reach. The class
is guessed from n0 separate samples, as in Cohen's CERTIFY; a wrong guess can only lead to abstaining
or to undecided radii, never to a wrong decision.

Mixtures: a true mixture (``MixtureOfGaussians(kind="mixture")``) is certified by the one formula of
the fixed-n mode, ``certify.radius.mixture_radius``, applied to one lower bound per component; its
sequential mode (``run_mixture_looks``) keeps one confidence sequence per component (the same
Clopper-Pearson looks, each component's at alpha / K, the fixed-n split) and draws each component's
samples from that component (a fixed share floor(w_k m) of the m samples of a look). Radii are l2
(the mixture's certificate is an l2 ball). The union bound runs over the K components and the looks:
P(any wrong decision or wrong certificate about this input) <= alpha. The convolution kind is one
Gaussian, certified as such.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from scipy.special import ndtr, ndtri
from scipy.stats import binom, norm

from .bounds import clopper_pearson, clopper_pearson_lower
from .certificate import Certificate, certificate_from_bound
from .noise import GaussianNoise, IsotropicGaussian, MixtureOfGaussians
from .radius import gaussian_radius, max_sigma_radius, mixture_lower_bound_at, mixture_radius
from .sampling import SampleStatistics, sample_statistics


class Sampler(Protocol):
    """What sequential certification needs of a smoothed classifier (``certify.Smooth`` is one):
    its noise and smoothing, and ``sample_statistics`` (``certify.sampling``); for a true mixture also
    its model and number of classes (each component's samples are drawn from that component)."""

    noise: GaussianNoise
    smoothing: str
    model: Callable
    num_classes: int

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
    if isinstance(noise, MixtureOfGaussians):
        if noise.kind == "mixture":
            raise ValueError("a true mixture has no single threshold on p_A (run_mixture_looks decides it)")
        return norm.cdf(radii / noise.effective_sigma)
    return norm.cdf(radii)


@dataclass
class Looks:
    """Outcome of ``run_looks`` for R parallel streams: ``decided`` (R, k) int8 (1 certified, -1 not
    robust, 0 undecided), ``drawn`` (R,) samples drawn after selection, ``hits`` (R,), ``lower`` (R,)
    the largest Clopper-Pearson lower bound on p_label of the looks up to the stopping one (so that every radius
    decided certified lies within the radius reported), ``look`` (R,) the stopping look's number, and
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


def _look_options(
    start: int = 100,
    growth: float = 1.1,
    alphas: np.ndarray | None = None,
    spending: str = "uniform",
    stop_out_of_reach: bool = True,
) -> tuple[int, float, np.ndarray | None, str, bool]:
    """``run_mixture_looks``'s keyword options with ``run_looks``'s defaults (an unknown name is a TypeError)."""
    return start, growth, alphas, spending, stop_out_of_reach


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
    lower bound reported (the largest of the looks' lower bounds up to the stopping look): P(any wrong
    decision or wrong certificate) <= alpha however the stopping look is chosen (Voracek, NeurIPS 2024, Sec. 4,
    for this construction). No alpha is split between the two kinds of decision beyond the two tails of each
    interval, and one interval serves every radius."""
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
        drawn[active], look[active] = m, j + 1
        lower[active] = np.maximum(lower[active], lo)  # every interval holds at once: so does the best of them
        if not open_.any():
            break
    assert decided is not None
    return Looks(decided=decided, drawn=drawn, hits=hits, lower=lower, look=look, closed_at=closed_at)


# --------------------------------------------------------------------------- true mixtures
def check_mixture(weights: Sequence[float], sigmas: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Validate a true mixture's ``weights`` (finite, >= 0, summing to 1 within 1e-6; returned
    normalised) and ``sigmas`` (finite, > 0), one of each per component. Float64 copies."""
    out = []
    for name, value in (("weights", weights), ("sigmas", sigmas)):
        try:
            a = np.asarray([float(v) for v in np.asarray(value, dtype=object).reshape(-1)], dtype=np.float64)
        except (TypeError, ValueError):
            raise TypeError(f"{name} must be a sequence of numbers, got {value!r}") from None
        if a.size == 0:
            raise ValueError(f"{name} must hold at least one component")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name} must be finite numbers, got {a.tolist()}")
        out.append(a)
    w, s = out
    if w.size != s.size:
        raise ValueError(f"weights has {w.size} entries but sigmas has {s.size} (one of each per component)")
    if np.any(w < 0) or abs(float(w.sum()) - 1.0) > 1e-6:
        raise ValueError(f"weights must be a probability distribution (non-negative, sum 1), got {w.tolist()}")
    if np.any(s <= 0):
        raise ValueError(f"sigmas must all be positive, got {s.tolist()}")
    return w / w.sum(), s


def component_counts(m: int, weights: np.ndarray) -> np.ndarray:
    """Samples of each component after m samples in all: floor(w_k m) (int64; +1e-9 against w_k m
    rounding just below an integer). Never more than m in all, and non-decreasing in m, so that each
    component's samples at the looks are nested (its own fixed look schedule)."""
    return np.floor(np.asarray(weights, dtype=np.float64) * m + 1e-9).astype(np.int64)


def mixture_bound_screen(t: np.ndarray, p: np.ndarray, weights: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """``certify.radius.mixture_lower_bound_at`` for many bound vectors ``p`` (R, K) at many radii
    ``t`` (k,) at once: (R, k). A screen only: ``run_mixture_looks`` uses it to skip the streams and
    radii on which the scalar formula cannot decide anything; every decision it takes is the scalar
    formula's (``mixture_radius`` to certify, ``mixture_lower_bound_at`` to refute or drop)."""
    p = np.minimum(np.asarray(p, dtype=np.float64), 1.0)
    use = (np.asarray(weights)[None, :] > 0) & (p > 0)
    z = ndtri(np.where(use, p, 0.5))
    terms = ndtr(z[:, None, :] - np.asarray(t, dtype=np.float64)[None, :, None] / np.asarray(sigmas)[None, None, :])
    return np.sum(np.where(use[:, None, :], np.asarray(weights)[None, None, :] * terms, 0.0), axis=2)


@dataclass
class MixtureLooks:
    """Outcome of ``run_mixture_looks`` for R parallel inputs of a K-component mixture: ``decided``
    (R, k) int8 (1 certified, -1 not certifiable at r at any n, 0 undecided), ``drawn`` (R,) samples
    drawn after selection, ``counts`` and ``hits`` (R, K) per component, ``lower`` / ``upper`` (R, K)
    each component's confidence-sequence bounds at the stopping look (the running max / min over the
    looks), ``look`` (R,) the stopping look's number, ``closed_at`` (R, k) the samples after which
    each radius was decided or dropped as out of reach."""

    decided: np.ndarray
    drawn: np.ndarray
    counts: np.ndarray
    hits: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    look: np.ndarray
    closed_at: np.ndarray


def run_mixture_looks(
    draw: Callable[[np.ndarray], np.ndarray],
    n: int,
    alpha: float,
    weights: Sequence[float],
    sigmas: Sequence[float],
    radii: Sequence[float],
    **options: Any,
) -> MixtureLooks:
    """The sequential decision rule for a true mixture (l2 ``radii``), for R independent inputs at once.
    ``options``: ``run_looks``'s keyword options (``start``, ``growth``, ``alphas``, ``spending``,
    ``stop_out_of_reach``), with its defaults.

    Sampling: at look j (the m_j of ``look_schedule``, as in ``run_looks``) component k has drawn
    ``component_counts(m_j, weights)[k]`` = floor(w_k m_j) samples from its own Gaussian N(x,
    sigma_k^2 I); ``draw(new)`` gets the new samples per component (K,) and returns, per input and
    component (R, K), how many of them were of the guessed class.

    Confidence sequences: component k's two-sided Clopper-Pearson interval [L_kj, U_kj] for p_k (its
    probability of the guessed class) at look j has level a_j / K, with a_j = ``look_alphas`` (the
    Gaussian mode's spending; ``alphas`` overrides a_j / K). The bounds used at look j are the running
    max of the lower and min of the upper bounds.

    Decisions at radius r, through the mixture's one certificate: certified once
    ``mixture_radius(L)`` > r (the fixed-n certificate's formula, with these bounds in place of the
    fixed-n ones); not certifiable at r once mixture_lower_bound_at(r, U) < 1/2 and
    mixture_lower_bound_at(r, 1 - L) < 1/2: the exact certificate (``mixture_radius`` at the true
    p_k) of the guessed class is below r (the bound is increasing in each p_k <= U_k), and so is any
    other class's (its p_ck <= 1 - p_k <= 1 - L_k). Like the Gaussian mode's "not robust", this is a
    statement about the certificate, and a wrong class guess can only delay or prevent decisions.

    Guarantee: each component's sequence fails (p_k outside some [L_kj, U_kj]) with probability at
    most sum_j a_j / K = alpha / K, whatever the stopping rule (its looks are fixed in advance by n,
    the schedule and the weights). By the union bound over the K components, with probability
    >= 1 - alpha every interval of every component at every look holds, and then every decision
    taken at any look is right and ``mixture_radius(lower)`` at the stopping look is a valid
    certificate (below the exact one): P(any wrong decision or wrong certificate) <= alpha. This is
    the fixed-n certificate's own union bound (alpha / K per component), spread over the looks.

    Stopping: an input stops once every radius is decided or out of reach: not certifiable even if
    every remaining sample of every component were a hit, at the largest level of any later look
    (an optimistic bound on any later L_k, with one miss of slack), so dropping it never changes
    the set of certified radii (``stop_out_of_reach=False`` samples on to n instead)."""
    start, growth, alphas, spending, stop_out_of_reach = _look_options(**options)
    w, s = check_mixture(weights, sigmas)
    r = np.asarray(radii, dtype=np.float64).reshape(-1)
    K = w.size
    looks = look_schedule(n, start, growth)
    J = len(looks)
    a = look_alphas(J, alpha / K, spending) if alphas is None else np.asarray(alphas, dtype=np.float64)
    if len(a) < J:
        raise ValueError(f"alphas: need one level per look ({J}), got {len(a)}")
    per = np.stack([component_counts(m, w) for m in looks])  # (J, K), nested
    final = per[-1]
    later = np.maximum.accumulate(a[:J][::-1])[::-1]  # later[j + 1]: the largest level after look j
    wl, sl = w.tolist(), s.tolist()

    def bound(t: float, p: np.ndarray) -> float:
        return mixture_lower_bound_at(float(t), p.tolist(), wl, sl)

    decided = np.zeros((0, r.size), dtype=np.int8)
    open_ = gone = np.zeros((0, r.size), dtype=bool)
    closed_at = np.zeros((0, r.size), dtype=np.int64)
    hits = counts = lower = upper = np.zeros((0, K))
    drawn = look = np.zeros(0, dtype=np.int64)
    prev = np.zeros(K, dtype=np.int64)
    for j in range(J):
        got = np.asarray(draw(per[j] - prev), dtype=np.int64)
        prev = per[j]
        if j == 0:
            got = got.reshape(-1, K)
            R = got.shape[0]
            decided = np.zeros((R, r.size), dtype=np.int8)
            open_, gone = np.ones((R, r.size), dtype=bool), np.zeros((R, r.size), dtype=bool)
            closed_at = np.zeros((R, r.size), dtype=np.int64)
            hits, counts = np.zeros((R, K), dtype=np.int64), np.zeros((R, K), dtype=np.int64)
            lower, upper = np.zeros((R, K)), np.ones((R, K))
            drawn, look = np.zeros(R, dtype=np.int64), np.zeros(R, dtype=np.int64)
        act = np.flatnonzero(open_.any(axis=1))
        hits[act] += got.reshape(-1, K)[act]
        lo, up = clopper_pearson(hits[act], per[j][None, :], a[j], "two-sided")
        L = lower[act] = np.maximum(lower[act], lo)
        U = upper[act] = np.minimum(upper[act], up)
        sub = decided[act]
        # certified at r: the certificate of these bounds exceeds r (screen: its bound at r is > 1/2)
        cand = (sub == 0) & (mixture_bound_screen(r, L, w, s) > 0.5)
        for i in np.flatnonzero(cand.any(axis=1)):
            radius = mixture_radius(L[i].tolist(), wl, sl)
            sub[i, (sub[i] == 0) & (r < radius)] = 1
        # not certifiable at r by any class's exact certificate
        cand = (sub == 0) & (mixture_bound_screen(r, U, w, s) < 0.5) & (mixture_bound_screen(r, 1.0 - L, w, s) < 0.5)
        for i, q in zip(*np.nonzero(cand)):
            if bound(r[q], U[i]) < 0.5 and bound(r[q], 1.0 - L[i]) < 0.5:
                sub[i, q] = -1
        decided[act] = sub
        # out of reach (for good: the bound below covers every later look, so it stays out of reach)
        out_of_reach = gone[act]
        if j + 1 < J:
            misses = per[j][None, :] - hits[act]
            best_hits = np.minimum(final[None, :], final[None, :] - misses + 1)  # one miss of slack
            best = np.maximum(L, clopper_pearson(best_hits, final[None, :], later[j + 1], "two-sided")[0])
            cand = (sub == 0) & ~out_of_reach & (mixture_bound_screen(r, best, w, s) <= 0.5)
            for i, q in zip(*np.nonzero(cand)):
                out_of_reach[i, q] = bound(r[q], best[i]) <= 0.5
        else:
            out_of_reach[:] = True  # after the last look nothing is in reach
        gone[act] = out_of_reach
        was_open = open_[act]
        now_open = (sub == 0) & ~(out_of_reach & stop_out_of_reach)
        open_[act] = now_open
        total = int(per[j].sum())
        closed = closed_at[act]
        closed[(was_open & ~now_open) | now_open] = total
        closed_at[act] = closed
        drawn[act], look[act], counts[act] = total, j + 1, per[j]
        if not open_.any():
            break
    return MixtureLooks(
        decided=decided,
        drawn=drawn,
        counts=counts,
        hits=hits,
        lower=lower,
        upper=upper,
        look=look,
        closed_at=closed_at,
    )


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
    of samples. A true mixture (kind='mixture') goes through ``run_mixture_looks`` (l2 radii, one
    confidence sequence per component at alpha / K, each component sampled on its own)."""
    r = check_radii(radii)
    noise = smooth.noise
    if smooth.smoothing != "hard":
        raise ValueError("radii: sequential certification needs smoothing='hard' (counts)")
    if not (growth > 1.0):
        raise ValueError(f"growth must be > 1, got {growth}")
    if isinstance(noise, MixtureOfGaussians) and noise.kind == "mixture":
        looks = dict(start=start, growth=growth, spending=spending)
        return _certify_mixture(smooth, x, r, (n0, n, alpha, batch_size, generator), looks)
    t0 = time.perf_counter()
    selection = smooth.sample_statistics(x, n0, batch_size, generator)
    label = int(selection.scores().argmax())

    def draw(k: int) -> np.ndarray:
        stats = smooth.sample_statistics(x, k, batch_size, generator)
        return np.array([int(stats.counts.sum(dim=0)[label])])

    out = run_looks(draw, n, alpha, thresholds(noise, r), start=start, growth=growth, spending=spending)
    lower = float(out.lower[0])
    return _sequential_certificate(noise, x, label, lower, gaussian_radius(lower), out, t0, n0, alpha, r)


def _certify_mixture(smooth: Sampler, x: torch.Tensor, r: np.ndarray, budget: tuple, looks: dict) -> Certificate:
    """Sequential CERTIFY of a true mixture (``budget``: ``certify_sequential``'s (n0, n, alpha, batch_size,
    generator); ``looks``: its start, growth and spending): the class guessed from n0 samples of the mixture, then
    ``run_mixture_looks`` with each component's samples drawn from N(x, sigma_k^2 I). The certificate
    is ``mixture_radius`` of the per-component lower bounds at the stopping look (valid with
    probability >= 1 - alpha jointly with every decision, see ``run_mixture_looks``), reported with the
    same fields as the fixed-n mixture certificate (``component_p_lowers``; ``paper_radius``, the
    max-sigma number of the pooled samples at alpha, labelled as not a certificate)."""
    noise = smooth.noise
    assert isinstance(noise, MixtureOfGaussians)
    n0, n, alpha, batch_size, generator = budget
    weights, sigmas = noise.weights.tolist(), noise.sigmas.tolist()
    t0 = time.perf_counter()
    selection = smooth.sample_statistics(x, n0, batch_size, generator)
    label = int(selection.scores().argmax())
    components = [IsotropicGaussian(v) for v in sigmas]  # component k alone: N(x, sigma_k^2 I)

    def draw(new: np.ndarray) -> np.ndarray:
        hits = np.zeros((1, len(components)), dtype=np.int64)
        for k, (component, m) in enumerate(zip(components, new.tolist())):
            if m > 0:
                stats = sample_statistics(
                    smooth.model,
                    component,
                    x,
                    int(m),
                    smooth.num_classes,
                    smoothing="hard",
                    batch_size=batch_size,
                    generator=generator,
                )
                hits[0, k] = int(stats.counts[0, label])
        return hits

    out = run_mixture_looks(draw, n, alpha, weights, sigmas, r.tolist(), **looks)
    lowers = [float(v) for v in out.lower[0]]
    pooled = clopper_pearson_lower(int(out.hits[0].sum()), int(out.drawn[0]), alpha)
    bound = float(sum(w * p for w, p in zip(weights, lowers)))
    return _sequential_certificate(
        noise, x, label, bound, mixture_radius(lowers, weights, sigmas), out, t0, n0, alpha, r,
        component_p_lowers=tuple(lowers),
        paper_radius=max_sigma_radius(pooled, sigmas),
        paper_radius_is_certificate=False,
    )  # fmt: skip


def _sequential_certificate(
    noise: GaussianNoise,
    x: torch.Tensor,
    label: int,
    lower: float,
    radius: float,
    out: Any,
    t0: float,
    n0: int,
    alpha: float,
    r: np.ndarray,
    **fields: Any,
) -> Certificate:
    """The certificate of a sequential run ``out`` (``Looks`` or ``MixtureLooks`` of one input) started at
    ``t0``: the bound and radius at the stopping look, the decision per radius (True certified, False not
    certifiable, None undecided), the looks taken and where each radius was decided (n0 included);
    ``fields``: the mixture's extra fields."""
    return certificate_from_bound(
        noise, x.detach().reshape(-1).to("cpu", torch.float64).numpy(), label, lower, radius,
        n0=n0,
        n=int(out.drawn[0]),  # samples drawn after the selection: cert.samples = n0 + drawn
        alpha=alpha,
        seconds=time.perf_counter() - t0,
        decided=tuple(None if d == 0 else bool(d > 0) for d in out.decided[0]),
        radii=tuple(r.tolist()),
        looks=int(out.look[0]),
        decided_at=tuple(n0 + int(v) for v in out.closed_at[0]),
        **fields,
    )  # fmt: skip
