"""The RDDRS efficiency benchmark's runner: sharded runs split the inputs and change no result."""

from __future__ import annotations

import pytest
import torch

import ddrs
from benchmarks.studies import rddrs_efficiency as eff


def _tiny_model() -> torch.nn.Module:
    torch.manual_seed(3)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))


@pytest.fixture
def tiny_runner(monkeypatch, tmp_path):
    import ddrs_app.training

    monkeypatch.setattr(eff, "LOG_ROOT", tmp_path)
    monkeypatch.setattr(ddrs_app.training, "load_or_train", lambda *a, **k: (_tiny_model(), None))
    monkeypatch.setattr(eff, "recipes", lambda: {"tiny": [ddrs.DDRS(iterations=2, samples=8)]})
    return tmp_path


def _rows(path) -> dict:
    drop = ("seconds", "fit_seconds")
    return {r["idx"]: {k: v for k, v in r.items() if k not in drop} for r in eff.read(path)}


def test_shards_partition_the_inputs_and_reproduce_the_unsharded_run(tiny_runner):
    eff.run("digits", 0.25, inputs=5, names=["tiny"], n=200, shard=(0, 2))
    log = eff.log_dir("digits", 0.25) / "tiny.jsonl"
    first = _rows(log)
    assert len(first) == 3  # positions 0, 2, 4
    eff.run("digits", 0.25, inputs=5, names=["tiny"], n=200, shard=(1, 2))
    sharded = _rows(log)
    assert len(sharded) == 5 and set(first) < set(sharded)
    log.rename(log.with_suffix(".sharded"))
    eff.run("digits", 0.25, inputs=5, names=["tiny"], n=200)
    assert _rows(log) == sharded  # per-input seeds: the split changes nothing


@pytest.mark.parametrize("bad", ["2/2", "1", "a/b", "-1/2"])
def test_bad_shard_is_refused_naming_the_option(bad, capsys):
    with pytest.raises(SystemExit) as e:
        eff.main(["--summary", "--shard", bad])
    assert e.value.code == 2 and "--shard" in capsys.readouterr().err
