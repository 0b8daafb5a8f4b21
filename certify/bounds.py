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


def clopper_pearson_lower(successes: int, trials: int, alpha: float) -> float:
    """One-sided (1 - alpha) Clopper-Pearson lower bound on a binomial proportion.

    Cohen et al. 2019, `core.py` (`proportion_confint(k, n, alpha=2 alpha, method="beta")[0]`):
    the alpha-quantile of Beta(k, n - k + 1); 0 when k = 0.
    """
    if trials < 1:
        return 0.0
    if successes <= 0:
        return 0.0
    return float(beta.ppf(alpha, successes, trials - successes + 1))


def clopper_pearson_upper(successes: int, trials: int, alpha: float) -> float:
    """One-sided (1 - alpha) Clopper-Pearson upper bound (used by tests and PREDICT diagnostics)."""
    if trials < 1 or successes >= trials:
        return 1.0
    return float(beta.ppf(1.0 - alpha, successes + 1, trials - successes))


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
