"""The pair-test cost study: its quick run writes a CSV whose structured and dense verdicts agree."""

from __future__ import annotations

import csv

from benchmarks.studies import pair_test_cost


def test_the_quick_run_compares_every_pair_with_the_dense_test(tmp_path):
    assert pair_test_cost.main(["--quick", "--out-dir", str(tmp_path)]) == 0
    rows = list(csv.DictReader(open(tmp_path / "pair_test_cost.csv")))
    assert {r["structure"] for r in rows} == {"kronecker", "lowrank"}
    for r in rows:
        done, total = r["same_verdict_and_radius"].split("/")
        assert done == total == r["dense_pairs"] == r["pairs"]
        assert float(r["structured_ms_median"]) > 0 and float(r["dense_ms_median"]) > 0
    assert (tmp_path / "pair_test_cost.png").stat().st_size > 0
