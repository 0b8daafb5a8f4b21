"""The structured-RDDRS study's runner and summary on a tiny digits run (a linear model, a few ascent steps)."""

from __future__ import annotations

import pytest
import torch

from benchmarks.studies import structured_rddrs as study


@pytest.fixture
def tiny(monkeypatch):
    import ddrs_app.training

    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    monkeypatch.setattr(ddrs_app.training, "load_or_train", lambda *a, **k: (model, None))
    return model


def test_run_and_summary_cover_every_structure(tiny):
    small = dict(iterations=2, samples=16, selection_samples=50)
    rows, geometry = study.run(
        2, 200, 0.25, (2,), dataset="digits", rddrs_options=small, ddrs_options=dict(iterations=2, samples=8)
    )
    names = ["rs", "ddrs", "full", "kronecker", "low-rank-k2", "spiked-k2"]
    assert [r["structure"] for r in rows[:6]] == names and len(rows) == 12
    assert set(geometry) == set(names[2:]) and all(v > 0 for v in geometry.values())
    summary = {r["structure"]: r for r in study.summarise(rows, geometry)}
    assert summary["full"]["geometry_vs_full"] == 1.0
    for name in names[3:]:
        assert "proxy_acr_vs_full" in summary[name] and "worst_l2_acc_minus_rs" in summary[name]
    for r in rows:
        assert r["l2_radius"] <= r["proxy_radius"] + 1e-12 or r["structure"] in ("rs", "ddrs")


def test_committed_results_are_not_overwritten_without_results(tmp_path):
    from benchmarks.analysis.outputs import RESULTS_DIR

    if not (RESULTS_DIR / study.FILES[0]).exists():
        pytest.skip("no committed structured_rddrs results")
    with pytest.raises(SystemExit) as info:
        study.main(["--out-dir", str(RESULTS_DIR), "--inputs", "1"])
    assert info.value.code == 2
