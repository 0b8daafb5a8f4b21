"""``benchmarks.studies.dual_comparison`` on a tiny comparison: its table's numbers are the logs' own."""

from __future__ import annotations

import numpy as np
import pytest
from ddrs_app.compare import Budget, run_compare

import certify
from benchmarks.studies import dual_comparison
from tests.logs import log_of


def test_table_against_rs_and_ddrs(tmp_path):
    budget = Budget(
        n0=50, n=500, batch_size=500, max_inputs=6, every=30, opt_batch=6, ddrs=dict(iterations=3, samples=8)
    )
    models = str(tmp_path / "models")
    run_compare("digits", tmp_path, sigmas=(0.25, 0.5), methods=("rs", "ddrs", "dual"), budget=budget,
                model_dir=models, progress=False)  # fmt: skip
    folder = tmp_path / "digits"
    rows, cost = dual_comparison.compare(folder, radii=(0.0, 0.25), model_dir=models)
    logs = folder / "logs"
    dual = certify.read_log(next(logs.glob("dual-*.tsv")))
    for row in rows:
        r = row["radius"]
        assert row["dual"] == pytest.approx(np.mean((dual["correct"] == 1) & (dual["radius"] >= r)))
        best = max(row["rs@0.25"], row["rs@0.5"])
        assert row[f"rs@{row['best_rs_sigma']:g}"] == best
        assert row["dual-best_rs_low"] <= row["dual-best_rs"] <= row["dual-best_rs_high"]
    assert cost["inputs"] == 6 and cost["dual_samples_mean"] >= cost["dual_selector_samples_mean"]
    assert cost["selector_label_seconds"] >= 0 and sum(cost["selector_label_counts"]) > 0
    text = dual_comparison.markdown(rows, cost, "every 30th")
    assert "Dual - best RS" in text and "every 30th" in text


def test_dictionaries_table_is_the_logs_own_numbers():
    iso = log_of(range(4), [0.3, 0.6, 0.0, 0.2], [0.3, 0.6, 0.0, 0.2], [1, 1, 0, 1])
    aniso = log_of(range(4), [0.3, 0.45, 0.0, 0.2], [0.9, 1.2, 0.0, 0.2], [1, 1, 0, 1])
    rows = dual_comparison.compare_dictionaries(iso, aniso, radii=(0.0, 0.5, 1.0))
    at = {row["radius"]: row for row in rows}
    assert at[0.5]["l2_aniso"] == 0.0 and at[0.5]["l2_iso"] == 0.25 and at[0.5]["l2_diff"] == -0.25
    assert at[1.0]["proxy_aniso"] == 0.25 and at[1.0]["proxy_iso"] == 0.0
    assert at["ACR"]["proxy_aniso"] == pytest.approx((0.9 + 1.2 + 0.2) / 4)
    assert all(row["proxy_low"] <= row["proxy_diff"] <= row["proxy_high"] for row in rows)
