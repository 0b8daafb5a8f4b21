"""Benchmark scripts never overwrite committed results unless told (benchmarks.analysis.outputs)."""

from __future__ import annotations

import hashlib
import importlib

import pytest

from benchmarks.analysis import outputs
from benchmarks.analysis.outputs import RESULTS_DIR, WouldOverwrite, check_writable, output_dir, prepare

SCRIPTS = {
    "manifold_ops": ["manifold_ops.csv"],
    "certify_throughput": ["certify_throughput.csv", "certify_throughput.png"],
    "optimise_cost": ["optimise_cost.csv", "optimise_cost.png"],
    "cluster_scaling": ["cluster_scaling.csv", "cluster_scaling.png"],
}


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


def test_default_is_runs_script_results_only_when_told(tmp_path):
    assert output_dir("manifold_ops") == outputs.Path("runs/manifold_ops")
    assert output_dir("manifold_ops", results=True) == RESULTS_DIR
    assert output_dir("manifold_ops", results=True, out_dir=tmp_path) == tmp_path
    committed = RESULTS_DIR / "manifold_ops.csv"
    assert committed.is_file()
    with pytest.raises(WouldOverwrite, match="committed result; pass --results") as err:
        check_writable([tmp_path / "x.csv", committed])
    assert err.value.code == 2
    assert check_writable([committed], results=True) == [committed]
    assert check_writable([RESULTS_DIR / "not-there-yet.csv"]) == [RESULTS_DIR / "not-there-yet.csv"]
    assert prepare("s", ["a.csv"], out_dir=tmp_path / "new") == [tmp_path / "new" / "a.csv"]
    assert (tmp_path / "new").is_dir()


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_every_speed_script_refuses_to_overwrite_committed_results_before_measuring(script, monkeypatch):
    module = importlib.import_module(f"benchmarks.studies.{script}")
    files = [RESULTS_DIR / f for f in SCRIPTS[script]]
    before = [_digest(f) for f in files]
    for name in ("run", "measure", "op_rows", "rddrs_step_rows"):  # measuring would be a bug here
        if hasattr(module, name):
            monkeypatch.setattr(module, name, lambda *a, **k: pytest.fail("measured before refusing"))
    with pytest.raises(SystemExit) as err:
        module.main(["--quick", "--out-dir", str(RESULTS_DIR)])
    assert err.value.code == 2 and "pass --results" in str(err.value)
    assert [_digest(f) for f in files] == before


def test_manifold_ops_quick_writes_under_runs_not_the_tracked_csv(tmp_path, monkeypatch):
    """The issue's reproducer: ``python -m benchmarks.studies.manifold_ops --quick`` rewrote the tracked CSV."""
    from benchmarks.studies import manifold_ops

    tracked = RESULTS_DIR / "manifold_ops.csv"
    before = _digest(tracked)
    row = dict(section="op", metric="m", d=2, op="exp", n="", median_ms=1.0, geometry_share="")
    monkeypatch.setattr(manifold_ops, "op_rows", lambda *a, **k: [row])
    monkeypatch.setattr(manifold_ops, "rddrs_step_rows", lambda *a, **k: [])
    monkeypatch.chdir(tmp_path)
    assert manifold_ops.main(["--quick"]) == 0
    assert (tmp_path / "runs" / "manifold_ops" / "manifold_ops.csv").is_file()
    assert _digest(tracked) == before
    with pytest.raises(SystemExit, match="pass --results"):
        manifold_ops.main(["--quick", "--out", str(tracked)])
    assert _digest(tracked) == before
