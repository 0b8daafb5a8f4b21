"""RDDRS's noise structure in the application: ``ddrs certify --method rddrs --structure {full,kronecker,low-rank,
spiked} [--rank K]`` and ``ddrs compare --rddrs-structure ... [--rddrs-rank K]``: the preset that runs, the log's
label and fingerprint, and the errors. Tiny digits runs (1x8x8 inputs, a few ascent steps)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from ddrs_app.cli import main
from ddrs_app.compare import configs_for, run_compare
from ddrs_app.methods import MethodConfig, spec_of

from tests.classifiers import tiny_budget

TINY = ["--n0", "50", "--n", "400", "--batch-size", "400", "--every", "90", "--max-inputs", "3", "--quiet"]
ASCENT = ["--iterations", "3", "--samples", "16"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("models"))


def test_labels_and_presets_follow_the_structure():
    assert MethodConfig("rddrs").label == "rddrs"  # the full structure keeps the label (and fingerprint) it had
    assert MethodConfig("rddrs", structure="kronecker").label == "rddrs-kronecker"
    assert MethodConfig("rddrs", structure="low-rank").label == "rddrs-low-rank-k8"
    assert MethodConfig("rddrs", structure="signed-spiked", rank=3).label == "rddrs-signed-spiked-k3"
    spiked = MethodConfig("rddrs", metric="log-euclidean", structure="spiked", rank=4)
    assert spiked.label == "rddrs-log-euclidean-spiked-k4"
    preset = spec_of("rddrs").stages(spiked)["rddrs"]
    assert preset.structure == "spiked" and preset.rank == 4
    with pytest.raises(ValueError, match="structure: only used with method rddrs"):
        MethodConfig("ancer", structure="kronecker")
    with pytest.raises(ValueError, match="rank: only used"):
        MethodConfig("rddrs", structure="kronecker", rank=3)
    with pytest.raises(ValueError, match="structure must be one of"):
        MethodConfig("rddrs", structure="diagonal")
    rows = configs_for(tiny_budget(), sigmas=(0.25,), methods=("rs", "rddrs"), rddrs_structures=("full", "spiked"))
    assert [c.label for _, c in rows] == ["rs", "rddrs", "rddrs-spiked-k8"]


@pytest.mark.parametrize(
    ("structure", "rank", "label"), [("low-rank", "3", "rddrs-low-rank-k3"), ("kronecker", None, "rddrs-kronecker")]
)
def test_certify_runs_the_structure_and_records_it(tmp_path, model_dir, structure, rank, label):
    out = tmp_path / f"{structure}.tsv"
    argv = ["certify", "--dataset", "digits", "--method", "rddrs", "--sigma", "0.25", "--model-dir", model_dir]
    argv += ["--structure", structure] + (["--rank", rank] if rank else []) + TINY + ASCENT + ["--out", str(out)]
    assert main(argv) == 0
    fingerprint = json.loads(Path(str(out) + ".fingerprint.json").read_text())
    assert fingerprint["label"] == label and fingerprint["structure"] == structure
    assert f"structure='{structure}'" in fingerprint["presets"]["rddrs"]
    if rank:
        assert fingerprint["rank"] == int(rank) and "LowRankSPD" in fingerprint["step_rule"]["rddrs"]
    lines = [ln for ln in out.read_text().splitlines() if not ln.startswith("#")]
    assert len(lines) == 1 + 3  # header and one row per input
    # another structure is another run: resuming this log with the full structure is refused
    again = argv[: argv.index("--structure")] + argv[argv.index("--structure") + (4 if rank else 2) :]
    assert main(again) == 2


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--method", "ancer", "--structure", "kronecker"], "--structure does not apply to --method ancer"),
        (["--method", "rddrs", "--rank", "3"], "--rank sets the spikes"),
        (["--method", "rddrs", "--structure", "banded"], "invalid choice"),
        (["--method", "rddrs", "--structure", "spiked", "--rank", "0"], "--rank"),
    ],
)
def test_bad_structure_arguments_exit_2_and_write_nothing(tmp_path, extra, message, capsys):
    out = tmp_path / "x.tsv"
    with pytest.raises(SystemExit) as info:
        main(["certify", "--dataset", "digits", *extra, "--out", str(out), "--quiet"])
    assert info.value.code not in (0, None)
    err = capsys.readouterr().err + str(info.value.code)
    assert message in err
    assert not out.exists()


def test_compare_runs_one_rddrs_row_per_structure(tmp_path, model_dir):
    budget = tiny_budget(n=400, batch_size=400, max_inputs=3, every=90, rddrs=dict(iterations=3, samples=16))
    result = run_compare(
        "digits",
        tmp_path,
        sigmas=(0.25,),
        budget=budget,
        model_dir=model_dir,
        progress=False,
        methods=("rs", "rddrs"),
        rddrs_structures=("kronecker", "spiked"),
        rddrs_rank=2,
    )
    with open(result["csv"]) as f:
        methods = [r["method"] for r in csv.DictReader(f)]
    assert methods == ["rs", "rddrs-kronecker", "rddrs-spiked-k2"]
    assert (tmp_path / "digits" / "logs" / "rddrs-spiked-k2_sigma0.25.tsv").exists()


def test_compare_refuses_structure_without_rddrs(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(
            [
                "compare",
                "--dataset",
                "digits",
                "--methods",
                "rs",
                "--rddrs-structure",
                "spiked",
                "--out-dir",
                str(tmp_path),
            ]
        )
    assert "only used when --methods runs rddrs" in capsys.readouterr().err


def test_a_run_stores_structured_regions_as_they_are_and_rebuilds_them_on_resume():
    """Above the dense limit too: the record keeps the structured region (its factors), not a d x d scale."""
    import numpy as np
    import torch
    from ddrs_app.runs import _region_record

    import certify
    from certify.structured import DENSE_LIMIT

    d = DENSE_LIMIT + 1
    big = certify.LowRankGaussian(0.04, torch.eye(d, 1, dtype=torch.float64), [0.1])
    region = big.region(np.zeros(d), 0.5)
    record = _region_record(1, region)
    assert record["scale"] is None and record["structured"] is region
    x = np.ones(d)
    rebuilt = record["structured"].recentred(x, record["radius"])
    assert np.array_equal(rebuilt.center, x) and rebuilt.radius == 0.5 and rebuilt.l2_radius == region.l2_radius
    memory = certify.Memory()
    cert = certify.Certificate(1, 0.9, 0.5, rebuilt.l2_radius, rebuilt.proxy_radius, rebuilt, noise="lowrank")
    assert memory.add(cert, idx=0).action == "kept"
    inside = certify.Certificate(2, 0.9, 0.5, rebuilt.l2_radius, rebuilt.proxy_radius, rebuilt.recentred(x + 1e-3, 0.5))
    answer = memory.add(inside, idx=1)
    assert answer.action == "adopted" and answer.certificate.prediction == 1
