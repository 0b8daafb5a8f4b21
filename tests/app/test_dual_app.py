"""``ddrs certify --method dual`` and ``ddrs compare --methods ... dual``: the selector's cache, log columns,
the combined certificate's numbers, sequential decisions, resume, and the options it refuses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from ddrs_app.cli import main
from ddrs_app.compare import Budget, run_compare
from ddrs_app.dual import DualModel, SelectorRecipe, load_or_train_dual
from ddrs_app.runs import log_columns

import certify

SIGMAS = ["0.12", "0.25", "0.5"]
TINY = ["--n0", "50", "--n", "2000", "--batch-size", "1000", "--every", "30", "--max-inputs", "8", "--quiet"]
RECIPE = SelectorRecipe(inputs=300, epochs=5)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("models"))


def _dual(out: Path, model_dir: str, extra=()) -> int:
    base = ["certify", "--dataset", "digits", "--method", "dual", "--sigmas", *SIGMAS, "--model-dir", model_dir]
    return main(base + TINY + list(extra) + ["--out", str(out)])


def _rows_without_time(path: Path) -> list[list[str]]:
    lines = Path(path).read_text().splitlines()
    drop = {lines[0].split("\t").index(c) for c in ("time", "choose_seconds")}
    return [[v for j, v in enumerate(ln.split("\t")) if j not in drop] for ln in lines]


def test_selector_is_cached_and_its_model_holds_one_classifier_per_sigma(model_dir):
    first, info = load_or_train_dual("digits", (0.12, 0.25, 0.5), RECIPE, model_dir=model_dir, progress=False)
    again, info2 = load_or_train_dual("digits", (0.12, 0.25, 0.5), RECIPE, model_dir=model_dir, progress=False)
    assert not info["cached"] and info2["cached"]
    assert sum(info["label_counts"]) == 300  # every 4th of the 1,347 training digits, at most 300
    assert isinstance(first, DualModel) and len(first.classifiers) == 3 and first.sigma_e == 0.5
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values()))
    with pytest.raises(TypeError, match="not a classifier"):
        first(torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="sigmas must be distinct positive numbers in increasing order"):
        load_or_train_dual("digits", (0.5, 0.25), RECIPE, model_dir=model_dir, progress=False)
    smooth = first.smooth(10)
    assert [n.sigma for n in smooth.dictionary] == [0.12, 0.25, 0.5] and smooth.selector_noise.sigma == 0.5


def test_dual_log_columns_numbers_and_resume(tmp_path, model_dir):
    full, half = tmp_path / "full.tsv", tmp_path / "half.tsv"
    assert _dual(full, model_dir) == 0
    header = full.read_text().splitlines()[0].split("\t")
    assert header == log_columns() + ["selected", "selector_radius", "selector_p_lower", "selector_samples"]
    log = certify.read_log(full)
    assert len(log) == 8
    kept = log["predict"] >= 0
    assert kept.sum() >= 4  # digits are easy at these sigmas: the test is not vacuous
    assert set(log["selected"][kept].tolist()) <= {0, 1, 2}
    # the combined l2 radius is the smaller of the selector's ball and the classifier's (below the ball)
    assert np.all(log["radius"][kept] <= log["selector_radius"][kept] + 1e-12)
    sigma_of = np.array([0.12, 0.25, 0.5])[log["selected"][kept].astype(int)]
    assert np.allclose(log["min_sigma"][kept], sigma_of)
    assert np.all(log["selector_samples"] == 50 + 2000)
    assert _dual(half, model_dir) == 0
    lines = half.read_text().splitlines(keepends=True)
    half.write_text("".join(lines[:4]) + lines[4][:9])  # three rows and a cut-off fourth
    assert _dual(half, model_dir) == 0
    assert _rows_without_time(half) == _rows_without_time(full)


def test_dual_sequential_decisions_need_both_stages(tmp_path, model_dir):
    out = tmp_path / "seq.tsv"
    assert _dual(out, model_dir, ["--sequential", "--radii", "0", "0.25", "0.5"]) == 0
    log = certify.read_log(out)
    header = out.read_text().splitlines()[0].split("\t")
    assert header[: len(log_columns((0.0, 0.25, 0.5)))] == log_columns((0.0, 0.25, 0.5))
    assert np.all(log["samples"] >= log["selector_samples"])  # both stages' draws
    assert np.any(log["selector_samples"] < 50 + 2000)  # the selector stopped early somewhere
    for r in (0.25, 0.5):
        certified = np.array([str(v).startswith("1") for v in log[f"cert@{r:g}"]])
        # a decision needs the selector's ball: its final radius may differ, its decision at r held
        assert not np.any(certified & (log["predict"] < 0) & (log["selector_radius"] == 0))


def test_dual_refuses_what_it_cannot_do(tmp_path, model_dir, capsys):
    base = [
        "certify",
        "--dataset",
        "digits",
        "--method",
        "dual",
        "--model-dir",
        model_dir,
        "--out",
        str(tmp_path / "x"),
    ]
    with pytest.raises(SystemExit, match="--sigmas is required for --method dual"):
        main(base + TINY)
    with pytest.raises(SystemExit, match="not with --model"):
        main(base + TINY + ["--sigmas", "0.25", "--model", "x.pt"])
    rs = ["certify", "--dataset", "digits", "--method", "rs", "--sigma-e", "0.5", "--out", str(tmp_path / "y")]
    with pytest.raises(SystemExit, match="--sigma-e does not apply to --method rs"):
        main(rs + TINY)


def test_compare_runs_one_dual_row_over_its_sigmas(tmp_path, model_dir):
    budget = Budget(n0=50, n=1000, batch_size=1000, max_inputs=6, every=30, opt_batch=6)
    result = run_compare(
        "digits", tmp_path, sigmas=(0.25, 0.5), methods=("rs", "dual"), budget=budget, model_dir=model_dir,
        progress=False,
    )  # fmt: skip
    logs = sorted(p.name for p in (tmp_path / "digits" / "logs").glob("*.tsv"))
    assert logs == ["dual-K2-[0.25,0.5]_sigma0.5.tsv", "rs_sigma0.25.tsv", "rs_sigma0.5.tsv"]
    summary = (tmp_path / "digits" / "summary.csv").read_text()
    assert "dual-K2-[0.25,0.5]" in summary
    assert result is not None


def test_tables_only_summarises_the_finished_logs_and_names_the_rest(tmp_path, model_dir, capsys):
    budget = Budget(n0=50, n=500, batch_size=500, max_inputs=4, every=30, opt_batch=4)
    run_compare("digits", tmp_path, sigmas=(0.25,), methods=("rs",), budget=budget, model_dir=model_dir, progress=False)
    capsys.readouterr()
    result = run_compare(
        "digits", tmp_path, sigmas=(0.25,), methods=("rs", "ddrs"), budget=budget, model_dir=model_dir,
        progress=False, run=False,
    )  # fmt: skip
    assert [row["method"] for row in result["rows"]] == ["rs"]
    assert "left out ddrs sigma=0.25: 0/4 rows" in capsys.readouterr().err
    assert not (tmp_path / "digits" / "logs" / "ddrs_sigma0.25.tsv").exists()  # nothing was certified


def test_prefer_volume_keeps_the_ball_then_grows_the_volume():
    from ddrs_app.dual import prefer_volume

    l2 = torch.tensor([[0.5, 0.45, 0.3], [0.2, 0.2, 0.2], [0.0, 0.0, 0.0]], dtype=torch.float64)
    proxy = torch.tensor([[0.5, 0.9, 2.0], [0.2, 0.3, 0.3], [0.0, 0.0, 0.0]], dtype=torch.float64)
    # row 0: entry 2 has the most volume but loses 0.2 of ball (> tie 0.1); entry 1 loses 0.05 and wins
    # then the most common choice (1) wherever it keeps the ball and loses < 0.1 of proxy radius: row 2 too
    assert prefer_volume(l2, proxy, 0.1).tolist() == [1, 1, 1]
    assert prefer_volume(l2, proxy, 0.0).tolist() == [0, 1, 0]


def test_ancer_dictionary_adds_centres_to_the_sigmas_and_is_cached(model_dir):
    recipe = SelectorRecipe(inputs=100, epochs=3, dictionary="ancer", entries=2, dictionary_inputs=8)
    first, info = load_or_train_dual("digits", (0.25, 0.5), recipe, model_dir=model_dir, progress=False)
    again, info2 = load_or_train_dual("digits", (0.25, 0.5), recipe, model_dir=model_dir, progress=False)
    assert not info["cached"] and info2["cached"] and len(info["label_counts"]) == 4
    noises = first.smooth(10).dictionary
    assert all(isinstance(n, certify.DiagonalGaussian) for n in noises)
    assert [float(n.theta.min()) for n in noises[:2]] == [0.25, 0.5]  # the sigmas, as diagonal entries
    assert [float(n.theta.max()) for n in noises[:2]] == [0.25, 0.5]
    assert len({tuple(n.theta.tolist()) for n in noises}) == 4  # two centres of the chosen noises beside the sigmas
    assert first.classifiers[2] is first.classifiers[1] and first.classifiers[3] is first.classifiers[1]
    for a, b in zip(noises, again.smooth(10).dictionary):
        assert torch.equal(a.theta, b.theta)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values()))
    x = torch.zeros(1, 1, 8, 8)
    cert = first.smooth(10).certify(x, 20, 200, 0.01, 20, 200, 0.01, generator=torch.Generator().manual_seed(0))
    assert cert.abstained or cert.proxy_radius >= cert.l2_radius > 0
    with pytest.raises(ValueError, match="dictionary must be one of"):
        SelectorRecipe(dictionary="spd")
    with pytest.raises(ValueError, match="entries"):
        SelectorRecipe(dictionary="ancer", entries=9)


def test_compare_names_each_dual_dictionary_its_own_row(capsys):
    from ddrs_app.compare import configs_for

    configs = configs_for(Budget(), (0.25, 0.5), ("dual",), dual_dictionaries=("isotropic", "ancer"), dual_entries=3)
    assert [c.label for _, c in configs] == ["dual-K2-[0.25,0.5]", "dual-ancer3-K2-[0.25,0.5]"]
    assert configs[1][1].options["dictionary"] == "ancer" and configs[1][1].options["entries"] == 3
    with pytest.raises(SystemExit):
        main(["compare", "--dataset", "digits", "--methods", "dual", "--dual-entries", "3", "--tables-only"])
    assert "--dual-entries sets the centres of --dual-dictionary ancer / rddrs" in capsys.readouterr().err


def test_compare_runs_one_dual_row_per_selector_noise_and_names_it(capsys):
    """``--dual-sigma-e`` sweeps the selector's noise: one row (and log) each, its label naming sigma_e; the default
    (the largest sigma) keeps the older label, so that committed logs still resume."""
    from ddrs_app.compare import configs_for

    configs = configs_for(
        Budget(), (0.25, 0.5), ("dual",), dual_dictionaries=("isotropic", "ancer"), dual_sigma_es=(None, 1.0)
    )
    assert [c.label for _, c in configs] == [
        "dual-K2-[0.25,0.5]",
        "dual-K2-[0.25,0.5]-e1",
        "dual-ancer4-K2-[0.25,0.5]",
        "dual-ancer4-K2-[0.25,0.5]-e1",
    ]
    assert configs[0][1].options["sigma_e"] is None and configs[3][1].options["sigma_e"] == 1.0
    assert SelectorRecipe.from_options(configs[3][1].options).resolved_sigma_e((0.25, 0.5)) == 1.0
    with pytest.raises(SystemExit):
        main(["compare", "--dataset", "digits", "--methods", "rs", "--dual-sigma-e", "1.0", "--tables-only"])
    assert "--dual-sigma-e: only used when --methods runs dual" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["compare", "--dataset", "digits", "--methods", "dual", "--dual-sigma-e", "0", "--tables-only"])
    assert "--dual-sigma-e" in capsys.readouterr().err
