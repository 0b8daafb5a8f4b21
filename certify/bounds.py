"""Confidence bounds used by the certifiers (one formula per function, with its source)."""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import beta, binomtest


def check_alpha(alpha: float, name: str = "alpha") -> float:
    """Validate a failure probability: a float strictly between 0 and 1."""
    try:
        alpha = float(alpha)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a float in (0, 1), got {alpha!r}") from None
    if not (0.0 < alpha < 1.0):
        raise ValueError(f"{name} must lie in (0, 1), got {alpha}")
    return alpha


ALTERNATIVES = ("two-sided", "lower", "upper")


def clopper_pearson(successes, trials, alpha, alternative: str = "two-sided") -> tuple[np.ndarray, np.ndarray]:
    """Clopper-Pearson confidence bounds (L, U) on a binomial proportion, vectorised over numpy
    broadcasting of ``successes``, ``trials`` and ``alpha`` (Clopper and Pearson 1934).

    L is the t-quantile of Beta(k, n - k + 1) (0 where k = 0), U the (1 - t)-quantile of
    Beta(k + 1, n - k) (1 where k = n), with t the tail level: ``"two-sided"`` puts alpha / 2 in each
    tail (P(p outside [L, U]) <= alpha); ``"lower"`` is the one-sided lower bound at alpha (U = 1),
    Cohen et al. 2019, `core.py` (``proportion_confint(k, n, alpha=2 alpha, method="beta")[0]``);
    ``"upper"`` the one-sided upper bound at alpha (L = 0). Returns float64 arrays of the broadcast
    shape (0-d for scalars). The one formula behind ``clopper_pearson_lower`` / ``_upper``, the
    sequential looks (``certify.sequential``) and the noise selection (``ddrs.selection``)."""
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {ALTERNATIVES}, got {alternative!r}")
    k = np.asarray(successes, dtype=np.float64)
    n = np.asarray(trials, dtype=np.float64)
    tail = np.asarray(alpha, dtype=np.float64) / 2 if alternative == "two-sided" else np.asarray(alpha, np.float64)
    shape = np.broadcast_shapes(k.shape, n.shape, tail.shape)
    lower = np.zeros(shape)
    upper = np.ones(shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        if alternative != "upper":
            lower = np.where(k > 0, beta.ppf(tail, np.maximum(k, 1), n - k + 1), 0.0)
        if alternative != "lower":
            upper = np.where(k < n, beta.ppf(1 - tail, k + 1, np.maximum(n - k, 1)), 1.0)
    return np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)


def clopper_pearson_lower(successes: int, trials: int, alpha: float) -> float:
    """One-sided (1 - alpha) Clopper-Pearson lower bound on a binomial proportion (``clopper_pearson``
    with ``alternative="lower"``): the alpha-quantile of Beta(k, n - k + 1); 0 when k = 0."""
    if trials < 1:
        return 0.0
    return float(clopper_pearson(successes, trials, alpha, "lower")[0])


def clopper_pearson_upper(successes: int, trials: int, alpha: float) -> float:
    """One-sided (1 - alpha) Clopper-Pearson upper bound (used by tests and PREDICT diagnostics)."""
    if trials < 1:
        return 1.0
    return float(clopper_pearson(successes, trials, alpha, "upper")[1])


def binomial_test_pvalue(successes: int, trials: int) -> float:
    """Two-sided exact binomial test of p = 1/2 (Cohen et al. 2019 PREDICT; scipy's binomtest)."""
    return float(binomtest(int(successes), int(trials), 0.5).pvalue)


def hoeffding_lower(mean: float, trials: int, alpha: float) -> float:
    """Hoeffding lower bound for the mean of n i.i.d. variables in [0, 1]: mean - sqrt(log(1/alpha) / 2n)."""
    return float(mean - math.sqrt(math.log(1.0 / alpha) / (2.0 * trials)))


def empirical_bernstein_lower(mean: float, sample_var: float, trials: int, alpha: float) -> float:
    """Empirical Bernstein lower bound for the mean of n i.i.d. variables in [0, 1].

    Maurer and Pontil 2009, Theorem 4: with probability >= 1 - alpha,
    E >= mean - sqrt(2 V ln(2/alpha) / n) - 7 ln(2/alpha) / (3 (n - 1)), V the unbiased sample variance.
    """
    if trials < 2:
        return 0.0
    log_term = math.log(2.0 / alpha)
    return float(
        mean - math.sqrt(2.0 * max(sample_var, 0.0) * log_term / trials) - 7.0 * log_term / (3.0 * (trials - 1))
    )


def soft_lower(mean: float, sample_var: float, trials: int, alpha: float, method: str) -> float:
    """Lower confidence bound on a [0, 1]-valued mean by 'hoeffding' or 'bernstein'; clipped to [0, 1]."""
    if method == "hoeffding":
        value = hoeffding_lower(mean, trials, alpha)
    elif method == "bernstein":
        value = empirical_bernstein_lower(mean, sample_var, trials, alpha)
    else:
        raise ValueError(f"soft_bound must be 'hoeffding' or 'bernstein', got {method!r}")
    return float(np.clip(value, 0.0, 1.0))
