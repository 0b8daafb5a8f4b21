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
about this input) <= alpha, with no extra alpha for looking many times. The class is guessed from n0
separate samples, as in Cohen's CERTIFY; a wrong guess can only lead to abstaining or refuting.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
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
    looks, m = [], float(min(start, n))
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
    """Sequential CERTIFY (see the module docstring); ``n`` is the maximum number of samples."""
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
    need = thresholds(noise, r)
    looks = look_schedule(n, start, growth)
    alphas = look_alphas(len(looks), alpha)
    decided: list[bool | None] = [None] * len(r)
    drawn, hits, lower = 0, 0, 0.0
    for m, a_k in zip(looks, alphas):
        stats = smooth._statistics(x, m - drawn, batch_size, generator)
        hits += int(stats["counts"].sum(dim=0)[label])
        drawn = m
        # two-sided Clopper-Pearson at level a_k: each tail a_k / 2
        lower = float(beta.ppf(a_k / 2, hits, m - hits + 1)) if hits > 0 else 0.0
        upper = float(beta.ppf(1 - a_k / 2, hits + 1, m - hits)) if hits < m else 1.0
        for j in range(len(r)):
            if decided[j] is None:
                if lower > need[j]:
                    decided[j] = True
                elif upper < need[j]:
                    decided[j] = False
        if all(d is not None for d in decided):
            break
    common = dict(n0=n0, n=drawn, alpha=alpha, noise=noise.kind, **noise.scale_summary())
    extras = {
        "samples": n0 + drawn,
        "decided": tuple(decided),
        "radii": tuple(r.tolist()),
        "looks": looks.index(drawn) + 1,
    }
    radius = gaussian_radius(lower)
    seconds = time.perf_counter() - t0
    center = x.detach().reshape(-1).to("cpu", torch.float64).numpy()
    return certificate_for(noise, center, label, lower, radius, seconds, extras, common)
