"""``ddrs certify/compare --sequential --radii``: log columns, decisions, resume, fingerprints, errors."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from ddrs_app.cli import main
from ddrs_app.compare import Budget, run_compare
from ddrs_app.runs import decisions_after_memory, log_columns, table_radii_in_own_norm

import certify
from tests.classifiers import tiny_budget

TINY = ["--n0", "50", "--n", "3000", "--batch-size", "1000", "--every", "40", "--max-inputs", "6", "--quiet"]
SEQ = ["--sequential", "--radii", "0", "0.05", "0.1"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("models"))


def _certify(out: Path, model_dir: str, extra=()) -> int:
    base = ["certify", "--dataset", "toy2d", "--method", "rs", "--sigma", "0.1", "--model-dir", model_dir]
    return main(base + TINY + SEQ + list(extra) + ["--out", str(out)])


def _rows_without_time(path: Path) -> list[list[str]]:
    lines = Path(path).read_text().splitlines()
    drop = {lines[0].split("\t").index(c) for c in ("time", "choose_seconds")}
    return [[v for j, v in enumerate(ln.split("\t")) if j not in drop] for ln in lines]


def test_sequential_log_has_samples_and_one_decision_per_radius_matching_the_certificate(tmp_path, model_dir):
    out = tmp_path / "rs.tsv"
    assert _certify(out, model_dir) == 0
    assert out.read_text().splitlines()[0].split("\t") == log_columns((0.0, 0.05, 0.1))
    log = certify.read_log(out)
    assert len(log) == 6
    assert np.all((log["samples"] >= 50 + 100) & (log["samples"] <= 50 + 3000))
    assert np.any(log["samples"] < 50 + 3000)  # some input stopped early
    for r in (0.0, 0.05, 0.1):
        column = [str(v) for v in log[f"cert@{r:g}"]]
        assert set(column) <= {"1", "0", "-", "1.0", "0.0"}
        certified = np.array([v.startswith("1") for v in column])
        # RS without memory: decided certified at r  <=>  the certificate's l2 radius reaches r
        assert np.array_equal(certified, (log["predict"] >= 0) & (log["radius"] >= r))


def test_sequential_log_resumes_to_the_same_rows_and_refuses_other_radii(tmp_path, model_dir, capsys):
    full, half = tmp_path / "full.tsv", tmp_path / "half.tsv"
    assert _certify(full, model_dir) == 0
    assert _certify(half, model_dir) == 0
    lines = half.read_text().splitlines(keepends=True)
    half.write_text("".join(lines[:3]) + lines[3][:7])  # two rows and a cut-off third
    assert _certify(half, model_dir) == 0
    assert _rows_without_time(half) == _rows_without_time(full)
    # the same log asked with other radii: refused, naming the field, log untouched
    before = half.read_text()
    base = ["certify", "--dataset", "toy2d", "--method", "rs", "--sigma", "0.1", "--model-dir", model_dir]
    code = main(base + TINY + ["--sequential", "--radii", "0.05", "--out", str(half)])
    assert code == 2 and "radii" in capsys.readouterr().err
    assert half.read_text() == before
    # and a fixed-n run into a sequential log is refused as well
    assert main(base + TINY + ["--out", str(half)]) == 2


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--radii", "0.5"], "--radii needs --sequential"),
        (["--sequential", "--radii", "0.5", "0.25"], "increasing"),
        (["--sequential", "--radii", "0.2", "0.2"], "increasing"),
        (["--sequential", "--radii", "-0.5"], ">= 0"),
        (["--sequential", "--radii", "nan"], "finite"),
    ],
)
def test_bad_sequential_arguments_exit_2_and_write_nothing(tmp_path, extra, message, capsys):
    out = tmp_path / "x.tsv"
    with pytest.raises(SystemExit) as info:
        main(["certify", "--dataset", "toy2d", "--method", "rs", "--quiet", "--out", str(out)] + extra)
    assert info.value.code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_true_mixture_certifies_sequentially_at_l2_radii(tmp_path, model_dir):
    out = tmp_path / "mog.tsv"
    argv = ["certify", "--dataset", "toy2d", "--method", "mog", "--sigmas", "0.1", "0.2", "--model-dir", model_dir]
    assert main(argv + TINY + SEQ + ["--out", str(out)]) == 0
    assert out.read_text().splitlines()[0].split("\t") == log_columns((0.0, 0.05, 0.1))
    log = certify.read_log(out)
    assert len(log) == 6 and set(log["noise"]) == {"mixture"}
    assert np.all((log["samples"] >= 50 + 100) & (log["samples"] <= 50 + 3000))
    assert np.any(log["samples"] < 50 + 3000)  # some input stopped early
    decided = 0
    for r in (0.0, 0.05, 0.1):
        column = [str(v) for v in log[f"cert@{r:g}"]]
        assert set(column) <= {"1", "0", "-", "1.0", "0.0"}
        certified = np.array([v.startswith("1") for v in column])
        decided += sum(v != "-" for v in column)
        # the radii are l2 radii (not divided by a scale): certified at r <=> the l2 certificate reaches r
        assert np.array_equal(certified, (log["predict"] >= 0) & (log["radius"] >= r))
    assert decided > 0
    # a true mixture's table radii are l2 radii, as for isotropic noise
    noise = certify.MixtureOfGaussians([0.1, 0.2], [0.3, 0.7])
    assert table_radii_in_own_norm(noise, (0.1, 0.4)) == (0.1, 0.4)


def test_compare_sequential_certifies_true_mixtures_sequentially_in_the_same_table(tmp_path, model_dir):
    budget = Budget(n0=50, n=1000, batch_size=1000, max_inputs=4, every=40)
    result = run_compare(
        "toy2d",
        tmp_path,
        sigmas=(0.1,),
        budget=budget,
        model_dir=model_dir,
        progress=False,
        methods=("rs", "mog"),
        radii=(0.0, 0.05),
    )
    with open(result["csv"]) as f:
        rows = list(csv.DictReader(f))
    mog = [r for r in rows if r["method"].startswith("mog-mixture")]
    rs = [r for r in rows if r["method"] == "rs"]
    assert mog and rs
    for row in mog + rs:
        assert 0.0 <= float(row["seq@0.05"]) <= float(row["seq@0"]) <= 1.0
        assert 150 <= float(row["samples_mean"]) <= 1050
    logs = tmp_path / "toy2d" / "logs"
    for mixture_log in logs.glob("mog-mixture*.tsv"):
        header = mixture_log.read_text().splitlines()[0].split("\t")
        assert "samples" in header and "cert@0.05" in header


def test_compare_sequential_writes_decision_tables_and_plot(tmp_path, model_dir):
    budget = Budget(n0=50, n=3000, batch_size=1000, max_inputs=5, every=40, ddrs=dict(iterations=5, samples=16))
    radii = (0.0, 0.05, 0.1)
    result = run_compare(
        "toy2d",
        tmp_path,
        sigmas=(0.1,),
        budget=budget,
        model_dir=model_dir,
        progress=False,
        methods=("rs", "ddrs"),
        radii=radii,
    )
    with open(result["csv"]) as f:
        rows = {r["method"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"rs", "ddrs"}
    for row in rows.values():
        for r in radii:
            assert 0.0 <= float(row[f"seq@{r:g}"]) <= float(row["seq@0"]) <= 1.0
        assert 150 <= float(row["samples_median"]) <= float(row["samples_p90"]) <= 3050
        # RS / DDRS are isotropic: the sequential decisions and the l2 table agree at the shared radii
        assert float(row["seq@0.1"]) == pytest.approx(float(row.get("l2@0.1", row["seq@0.1"])))
    names = {Path(f).name for f in result["figures"]}
    assert "sequential.png" in names and (tmp_path / "toy2d" / "sequential.png").stat().st_size > 10_000
    logs = tmp_path / "toy2d" / "logs"
    assert "cert@0.05" in (logs / "ddrs_sigma0.1.tsv").read_text().splitlines()[0].split("\t")


class _Cert:
    def __init__(self, prediction, radius, l2_radius, noise, decided=None, proxy_radius=None):
        self.prediction, self.radius, self.l2_radius, self.noise, self.decided = (
            prediction,
            radius,
            l2_radius,
            noise,
            decided,
        )
        self.proxy_radius = l2_radius if proxy_radius is None else proxy_radius


def test_memory_that_shrinks_or_replaces_a_certificate_turns_its_true_decisions_undecided():
    radii = (0.25, 0.5, 1.0)
    raw = _Cert(3, 2.4, 0.6, "isotropic", (True, True, False))
    assert decisions_after_memory(raw, raw, radii, "kept") == ["1", "1", "0"]
    assert decisions_after_memory(_Cert(3, 1.2, 0.3, "isotropic"), raw, radii, "shrunk") == ["1", "-", "0"]
    assert decisions_after_memory(_Cert(-1, 0.0, 0.0, None), raw, radii, "abstained") == ["-", "-", "0"]
    diag = _Cert(3, 0.8, 0.2, "diagonal", (True, True, None))
    # anisotropic: the radii are proxy radii (the shrunk region's proxy 0.3 keeps 0.25 only)
    assert decisions_after_memory(_Cert(3, 3.0, 0.1, "diagonal", proxy_radius=0.3), diag, radii, "shrunk") == [
        "1",
        "-",
        "-",
    ]
    assert decisions_after_memory(_Cert(3, 9.0, 9.0, None), diag, radii, "adopted") == ["-", "-", "-"]


def test_table_radii_are_proxy_radii_for_anisotropic_noise():
    import torch

    from tests.classifiers import HalfSpace

    theta = torch.tensor([0.1, 0.4], dtype=torch.float64)  # gm_sigma = 0.2
    noise = certify.DiagonalGaussian(theta)
    assert table_radii_in_own_norm(noise, (0.1, 0.4)) == pytest.approx((0.5, 2.0))
    assert table_radii_in_own_norm(certify.IsotropicGaussian(0.3), (0.1, 0.4)) == (0.1, 0.4)
    # a half-space at distance 0.2 along the small axis: own-norm radius 2, proxy 0.4, l2 0.2
    model = HalfSpace(np.array([1.0, 0.0]), 0.2).eval()
    sm = certify.Smooth(model, noise, 2)
    x = torch.zeros(2, dtype=torch.float64)
    table = (0.2, 0.3, 0.5)
    cert = sm.certify(
        x,
        100,
        100_000,
        1e-3,
        batch_size=20_000,
        generator=torch.Generator().manual_seed(0),
        radii=table_radii_in_own_norm(noise, table),
    )
    assert cert.decided == (True, True, False)  # proxy 0.4 > 0.3; in the own norm all three would be certified
    assert cert.proxy_radius > 0.3 and cert.l2_radius < 0.3


def test_compare_sequential_ancer_decisions_are_at_the_proxy_radius(tmp_path, model_dir):
    budget = tiny_budget(n=3000, batch_size=1000)
    radii = (0.05, 0.1, 0.2)
    run_compare(
        "toy2d",
        tmp_path,
        sigmas=(0.1,),
        budget=budget,
        model_dir=model_dir,
        progress=False,
        methods=("ancer",),
        radii=radii,
    )
    log = certify.read_log(tmp_path / "toy2d" / "logs" / "ancer_sigma0.1.tsv")
    kept = np.array([a in ("-", "kept") for a in log["memory_action"]])
    assert kept.sum() >= 3
    decided_any = False
    for r in radii:
        column = np.array([str(v) for v in log[f"cert@{r:g}"]])
        yes, no = np.char.startswith(column, "1"), np.char.startswith(column, "0")
        decided_any |= bool(yes.any())
        # certified at proxy radius r  =>  the certificate's proxy radius reaches r; refuted => it does not
        assert np.all(log["proxy_radius"][yes & kept] >= r)
        assert np.all(log["proxy_radius"][no & kept] < r)
    assert decided_any


def test_anisotropic_sequential_runs_also_decide_the_l2_radii():
    """For anisotropic noise the run asks the table's proxy radii AND the own-norm radii of its l2 radii: it stops no
    earlier than a run asking the l2 ones alone (the l2 headline is not cut short), and logs the proxy decisions."""
    import torch
    from ddrs_app.methods import MethodConfig
    from ddrs_app.runs import certify_smooth

    from tests.classifiers import HalfSpace

    model = HalfSpace([1.0, 0.0], 0.0).eval()
    noise = certify.DiagonalGaussian([0.1, 1.0])  # proxy radius r <-> own norm r / 0.316; l2 r <-> r / 0.1
    x = torch.tensor([0.45, 0.0], dtype=torch.float64)
    table = (0.1, 0.3)
    config = MethodConfig("ancer", sigma=0.1)

    def run(radii, seed=3):
        return certify_smooth(
            config, model, noise, x, 2, 50, 20000, 0.001, 1000, torch.Generator().manual_seed(seed), radii
        )

    both = run(table)
    assert both.radii == pytest.approx(table_radii_in_own_norm(noise, table)) and len(both.decided) == 2
    proxy_only = certify.Smooth(model, noise, 2).certify(
        x, 50, 20000, 0.001, batch_size=1000, generator=torch.Generator().manual_seed(3),
        radii=table_radii_in_own_norm(noise, table),
    )  # fmt: skip
    assert both.samples >= proxy_only.samples
    assert both.decided == proxy_only.decided  # the same proxy decisions (both valid; here both decide alike)
    assert both.l2_radius >= 0.3 * (1 - 1e-9)  # the l2 ball of 0.3 is decided: margin 0.45 / 0.1 = 4.5 sigma
    assert proxy_only.l2_radius < 0.3  # asking the proxy radii alone stops before the l2 ball is shown
