"""The two-commit throughput study checks its arguments and never overwrites committed results before it
measures (the measurement itself runs both checkouts' studies: minutes, so it is not run here)."""

from __future__ import annotations

import pytest

from benchmarks.analysis.outputs import RESULTS_DIR
from benchmarks.studies import redesign_throughput


def test_base_must_be_a_checkout(tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        redesign_throughput.main(["--base", str(tmp_path), "--out-dir", str(tmp_path / "out")])
    assert err.value.code == 2 and "--base" in capsys.readouterr().err


def test_committed_results_are_refused_before_measuring(monkeypatch):
    if not (RESULTS_DIR / "redesign_throughput.csv").exists():
        pytest.skip("no committed redesign_throughput.csv yet")
    monkeypatch.setattr(redesign_throughput, "measure", lambda *a, **k: pytest.fail("measured before refusing"))
    base = str(RESULTS_DIR.parents[1])
    with pytest.raises(SystemExit) as err:
        redesign_throughput.main(["--base", base, "--out-dir", str(RESULTS_DIR)])
    assert err.value.code == 2 and "pass --results" in str(err.value)
