"""The objective ablation's budgets differ from the compare budget in the stages' objective only, and its
table pairs the two objectives' runs row by row."""

from __future__ import annotations

import csv
from dataclasses import replace

import pytest
from ddrs_app.compare import BUDGETS

from benchmarks.studies import objective_ablation as abl


@pytest.mark.parametrize("dataset", ["toy2d", "digits", "fashion-mnist"])
@pytest.mark.parametrize("objective", ["certificate", "gap"])
def test_budget_changes_only_the_objective(dataset, objective):
    b = abl.budget_for(dataset, objective, images=10)
    for stage in ("ddrs", "ancer", "rddrs"):
        opts = dict(getattr(b, stage))
        assert opts.pop("objective") == objective
        assert opts == getattr(BUDGETS[dataset], stage)
    base = BUDGETS[dataset]
    if dataset == "fashion-mnist":
        base = replace(base, max_inputs=10, every=1000)
    assert replace(b, ddrs=base.ddrs, ancer=base.ancer, rddrs=base.rddrs) == base


def test_unknown_objective_is_refused():
    with pytest.raises(ValueError, match="objective"):
        abl.budget_for("digits", "margin")


def _summary(path, rows):
    path.parent.mkdir(parents=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["method", "sigma", "inputs", "acr_proxy", "abstain"])
        w.writeheader()
        w.writerows(rows)


def test_table_pairs_the_objectives(monkeypatch, tmp_path):
    monkeypatch.setattr(abl, "OUT", tmp_path)
    _summary(
        tmp_path / "certificate" / "digits" / "summary.csv",
        [
            dict(method="rddrs", sigma="0.25", inputs=50, acr_proxy=1.6, abstain=0.0),
            dict(method="ddrs", sigma="0.25", inputs=50, acr_proxy=0.5, abstain=0.02),
            dict(method="ddrs", sigma="0.5", inputs=50, acr_proxy=0.46, abstain=0.0),
        ],
    )
    _summary(
        tmp_path / "gap" / "digits" / "summary.csv",
        [
            dict(method="ddrs", sigma="0.25", inputs=50, acr_proxy=0.4, abstain=0.04),
            dict(method="rddrs", sigma="0.25", inputs=50, acr_proxy=0.8, abstain=0.1),
        ],
    )
    rows = abl.table()
    assert [(r["sigma"], r["method"]) for r in rows] == [(0.25, "ddrs"), (0.25, "rddrs")]  # chain order; 0.5 unpaired
    assert rows[0]["ratio"] == pytest.approx(1.25) and rows[1]["abstain_gap"] == pytest.approx(0.1)
    md = abl.write_summary().read_text()
    assert "| digits | 0.25 | rddrs | 50 | 1.600 | 0.800 | 2.00 | 0 / 10 % |" in md
