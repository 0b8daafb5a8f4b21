"""Certified radii from lower confidence bounds (one formula each, with its source)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from scipy.optimize import brentq
from scipy.stats import norm


def gaussian_radius(p_lower: float) -> float:
    """Radius in the noise's own norm: Phi^-1(pA_lower) (Cohen et al. 2019 Thm 1 with pB <= 1 - pA;
    ANCER Thm for anisotropic noise, README, Errata R2). 0 when p_lower <= 1/2 (abstain)."""
    if p_lower <= 0.5:
        return 0.0
    return float(norm.ppf(p_lower))


def mixture_lower_bound_at(
    t: float, p_lowers: Sequence[float], weights: Sequence[float], sigmas: Sequence[float]
) -> float:
    """Lower bound on p_A(x + delta) for every ||delta||_2 <= t under the mixture noise.

    p_A = sum_k w_k p_k with p_k the component-k smoothed score; Phi^-1(p_k) is 1/sigma_k-Lipschitz
    (Salman et al. 2019, Lemma 2), so p_k(x + delta) >= Phi(Phi^-1(p_k_lower) - t / sigma_k).
    """
    total = 0.0
    for p, w, s in zip(p_lowers, weights, sigmas):
        if w <= 0 or p <= 0:
            continue
        total += w * norm.cdf(norm.ppf(min(p, 1.0)) - t / s)
    return float(total)


def mixture_radius(p_lowers: Sequence[float], weights: Sequence[float], sigmas: Sequence[float]) -> float:
    """Certified l2 radius of the true mixture (one component per sample).

    Derivation: with probability >= 1 - alpha every component bound p_k >= p_k_lower holds (union
    bound, each at alpha / K). Then for ||delta|| <= t, p_A(x + delta) >= L(t) :=
    sum_k w_k Phi(Phi^-1(p_k_lower) - t / sigma_k) (``mixture_lower_bound_at``), and class A keeps
    probability > 1/2, hence stays the smoothed prediction, while L(t) > 1/2. L is continuous and
    strictly decreasing, so the radius is the root of L(t) = 1/2 (0 if L(0) <= 1/2). The root is
    bracketed and returned from below (brentq's interval, minus its tolerance): never larger than
    the exact root. For a half-space base classifier with exact p_k the bound is tight: L(t) is then
    exactly p_A at distance t toward the plane, so the radius equals the true distance.
    """
    p_lowers = [min(float(p), 1.0 - 1e-15) for p in p_lowers]  # a bound of exactly 1: treat as 1 - 1e-15 (smaller)
    if mixture_lower_bound_at(0.0, p_lowers, weights, sigmas) <= 0.5:
        return 0.0
    # L(t_hi) <= 1/2 once every term has Phi(.) <= 1/2, i.e. t_hi >= sigma_k Phi^-1(p_k_lower) for all k.
    t_hi = max(s * max(norm.ppf(min(p, 1.0)), 0.0) for p, w, s in zip(p_lowers, weights, sigmas) if w > 0 and p > 0)
    if not math.isfinite(t_hi) or t_hi <= 0:
        return 0.0
    f = lambda t: mixture_lower_bound_at(t, p_lowers, weights, sigmas) - 0.5
    if f(t_hi) >= 0:  # only when all mass sits exactly at the bracket end
        return float(t_hi)
    xtol = 1e-12 * max(1.0, t_hi)
    root = brentq(f, 0.0, t_hi, xtol=xtol, rtol=1e-12, maxiter=500)
    root = max(0.0, root - 2 * xtol)
    while root > 0 and f(root) < 0:  # guarantee L(root) >= 1/2
        root = max(0.0, root - 4 * xtol - 1e-9 * root)
    return float(root)


def max_sigma_radius(p_lower: float, sigmas: Sequence[float]) -> float:
    """The MoG paper's Theorem 2 radius max_k sigma_k Phi^-1(pA_lower).

    Proven for the *convolution* (sum) of the Gaussians, where it is weaker than the exact
    sqrt(sum sigma_k^2) Phi^-1(pA_lower). NOT a certificate for the true mixture (README, Errata M2):
    the library only reports it beside the sound radius, labelled as such.
    """
    return float(max(sigmas) * gaussian_radius(p_lower))
