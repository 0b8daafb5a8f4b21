"""On every committed `ddrs compare` result, no data-dependent stage ends below the stage it
started from: at every sigma, proxy ACR of RS <= DDRS <= ANCER <= RDDRS (stated margin: 0)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

COMPARE = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "compare"
CHAIN = ("rs", "ddrs", "ancer", "rddrs")
MARGIN = 0.0
SUMMARIES = sorted(COMPARE.glob("*/summary.csv"))


def test_the_committed_results_are_there():
    assert {p.parent.name for p in SUMMARIES} >= {"digits", "toy2d", "fashion-mnist"}


@pytest.mark.parametrize("summary", SUMMARIES, ids=lambda p: p.parent.name)
def test_every_stage_ends_at_or_above_its_predecessor(summary):
    by_sigma: dict[str, dict[str, float]] = {}
    for row in csv.DictReader(summary.open()):
        if row["method"] in CHAIN:
            by_sigma.setdefault(row["sigma"], {})[row["method"]] = float(row["acr_proxy"])
    checked = 0
    for sigma, acr in by_sigma.items():
        present = [m for m in CHAIN if m in acr]
        for before, after in zip(present, present[1:]):
            assert acr[after] >= acr[before] - MARGIN, (summary.parent.name, sigma, before, after, acr)
            checked += 1
    assert checked >= 3  # at least one full chain per committed data set
