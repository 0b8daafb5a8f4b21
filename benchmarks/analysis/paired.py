"""Paired comparisons of two certification logs over the same test inputs, with confidence intervals.

A claim such as "RDDRS certifies more than ANCER at proxy radius 0.5" is a statement about the
difference of two per-input statistics on the same inputs. This module aligns two logs on ``idx``,
computes that difference, a 95 % paired-bootstrap percentile interval over test inputs (seeded,
reproducible), and for certified accuracy an exact two-sided McNemar (sign) test on the discordant
inputs, and turns them into a verdict: ``reproduced`` (the interval excludes 0 in the claimed
direction), ``not reproduced`` (it excludes 0 in the other direction) or ``not significant at this
size``; for certified accuracy the exact McNemar test must reject at the same level too (the percentile
interval alone is liberal when few inputs are discordant). The interval describes the variability
over test inputs of this data set and base model; it does not include the Monte Carlo variability of
each certificate (which Clopper-Pearson already bounds on the conservative side).

    python -m benchmarks.analysis.paired A.tsv B.tsv --radius 0.5 --column proxy_radius
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

import certify

VERDICTS = ("reproduced", "not reproduced", "not significant at this size")


@dataclass(frozen=True)
class PairedDifference:
    """mean(stat_a - stat_b) over the inputs both logs hold, with a bootstrap interval."""

    statistic: str  # e.g. "certified accuracy @ proxy_radius 0.5" or "ACR (proxy_radius)"
    n_inputs: int
    a: float
    b: float
    difference: float
    low: float
    high: float
    level: float
    p_value: float  # exact McNemar for accuracies, paired bootstrap (two-sided) for ACR
    verdict: str  # for the claim "a > b"

    def row(self) -> dict:
        return {
            "statistic": self.statistic,
            "n": self.n_inputs,
            "a": self.a,
            "b": self.b,
            "difference": self.difference,
            "ci_low": self.low,
            "ci_high": self.high,
            "p_value": self.p_value,
            "verdict": self.verdict,
        }


def align(log_a: certify.Log, log_b: certify.Log) -> tuple[np.ndarray, np.ndarray]:
    """Row positions of the inputs both logs hold, in increasing idx; refuses duplicated idx."""
    for name, log in (("log_a", log_a), ("log_b", log_b)):
        idx = log["idx"]
        if len(np.unique(idx)) != len(idx):
            raise ValueError(f"{name} ({log.path}) holds some idx more than once")
    common = np.intersect1d(log_a["idx"], log_b["idx"])
    if len(common) == 0:
        raise ValueError(f"{log_a.path} and {log_b.path} share no idx")
    pos_a = {int(v): i for i, v in enumerate(log_a["idx"])}
    pos_b = {int(v): i for i, v in enumerate(log_b["idx"])}
    return (np.array([pos_a[int(v)] for v in common]), np.array([pos_b[int(v)] for v in common]))


def per_input(log: certify.Log, column: str, radius: float | None) -> np.ndarray:
    """Certified-and-correct at ``radius`` (0/1), or radius * correct when ``radius`` is None (ACR)."""
    correct = log["correct"] == 1
    values = np.asarray(log[column], dtype=np.float64)
    if radius is None:
        return np.where(correct, values, 0.0)
    return (correct & (values >= radius)).astype(np.float64)


def interval_verdict(low: float, high: float) -> str:
    """Verdict on the claim "a > b" from an interval of a - b."""
    if low > 0:
        return VERDICTS[0]
    if high < 0:
        return VERDICTS[1]
    return VERDICTS[2]


def mcnemar_exact(sa: np.ndarray, sb: np.ndarray) -> float:
    """Two-sided exact McNemar test on paired 0/1 outcomes (binomial test on the discordant pairs)."""
    b = int(np.sum((sa == 1) & (sb == 0)))
    c = int(np.sum((sa == 0) & (sb == 1)))
    if b + c == 0:
        return 1.0
    return float(stats.binomtest(b, b + c, 0.5).pvalue)


def bootstrap(
    diff: np.ndarray, *, level: float = 0.95, resamples: int = 10_000, seed: int = 0
) -> tuple[float, float, float]:
    """Percentile interval of the mean of per-input ``diff`` over ``resamples`` bootstrap resamples of
    the inputs (``numpy.random.default_rng(seed)``) and the two-sided bootstrap p-value of mean 0."""
    diff = np.asarray(diff, dtype=np.float64)
    m = len(diff)
    if m == 0:
        raise ValueError("diff must hold at least one input")
    rng = np.random.default_rng(seed)
    boot = diff[rng.integers(0, m, size=(resamples, m))].mean(axis=1)
    low, high = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    # two-sided bootstrap p-value: how often the resampled mean falls on the other side of 0, counted
    # as (k + 1) / (resamples + 1) so that it is never 0
    tail = min(np.sum(boot <= 0), np.sum(boot >= 0))
    p = float(min(1.0, 2 * (tail + 1) / (resamples + 1))) if diff.any() else 1.0
    return float(low), float(high), p


def paired_difference(
    log_a: certify.Log,
    log_b: certify.Log,
    *,
    column: str = "radius",
    radius: float | None = None,
    column_b: str | None = None,
    level: float = 0.95,
    resamples: int = 10_000,
    seed: int = 0,
) -> PairedDifference:
    """Difference a - b of certified accuracy at ``radius`` (or of ACR when ``radius`` is None).

    ``column`` names the radius column of ``log_a`` (``radius`` = l2, ``proxy_radius``); ``column_b``
    that of ``log_b`` (default the same). The interval is the percentile interval of ``resamples``
    paired bootstrap resamples of the inputs drawn with ``numpy.random.default_rng(seed)``."""
    if not (0 < level < 1):
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if resamples < 100:
        raise ValueError(f"resamples must be >= 100, got {resamples}")
    if radius is not None and not (math.isfinite(radius) and radius >= 0):
        raise ValueError(f"radius must be a finite number >= 0 or None, got {radius}")
    ia, ib = align(log_a, log_b)
    sa = per_input(log_a, column, radius)[ia]
    sb = per_input(log_b, column_b or column, radius)[ib]
    diff = sa - sb
    low, high, p = bootstrap(diff, level=level, resamples=resamples, seed=seed)
    verdict = interval_verdict(low, high)
    if radius is None:
        name = f"ACR ({column})"
    else:
        p = mcnemar_exact(sa, sb)
        name = f"certified accuracy @ {column} {radius:g}"
        if p >= 1 - level:  # few discordant inputs: the percentile interval is liberal, the exact test decides
            verdict = VERDICTS[2]
    return PairedDifference(
        name,
        len(diff),
        float(sa.mean()),
        float(sb.mean()),
        float(diff.mean()),
        low,
        high,
        level,
        p,
        verdict,
    )


def claims_table(rows: Sequence[tuple[str, PairedDifference]]) -> str:
    """A Markdown table: claim, statistic, a, b, difference [95 % CI], p, verdict."""
    out = [
        "| claim (a > b) | statistic | n | a | b | a - b [95 % CI] | p | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for claim, d in rows:
        out.append(
            f"| {claim} | {d.statistic} | {d.n_inputs} | {d.a:.3f} | {d.b:.3f} | "
            f"{d.difference:+.3f} [{d.low:+.3f}, {d.high:+.3f}] | {d.p_value:.3g} | {d.verdict} |"
        )
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.analysis.paired",
        allow_abbrev=False,
        description="paired difference of two certification logs (a - b)",
    )
    p.add_argument("log_a")
    p.add_argument("log_b")
    p.add_argument("--column", default="radius", help="radius column (radius = l2, proxy_radius)")
    p.add_argument("--radius", type=float, default=None, help="certified accuracy at this radius (default: ACR)")
    p.add_argument("--resamples", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    for name in ("log_a", "log_b"):
        if not os.path.isfile(getattr(args, name)):
            p.error(f"{name}: no such file {getattr(args, name)!r}")
    d = paired_difference(
        certify.read_log(args.log_a),
        certify.read_log(args.log_b),
        column=args.column,
        radius=args.radius,
        resamples=args.resamples,
        seed=args.seed,
    )
    print(claims_table([(f"{os.path.basename(args.log_a)} > {os.path.basename(args.log_b)}", d)]), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
