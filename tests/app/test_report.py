"""``ddrs report`` on Cohen et al.'s published logs (tests/data/cohen2019, unchanged copies) reproduces
the certified-accuracy tables they published from those logs, byte for byte."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from ddrs_app.cli import main
from ddrs_app.report import default_label, write_report

COHEN = Path(__file__).resolve().parents[1] / "data" / "cohen2019"


def _logs(dataset, arch, sigmas):
    return [str(COHEN / "certify" / dataset / arch / f"noise_{s}" / "test" / f"sigma_{s}") for s in sigmas]


def _cohen_table(report_md: Path) -> str:
    text = report_md.read_text(encoding="utf-8")
    return text.split("\n\n")[1] + "\n"  # the block after the title


@pytest.mark.parametrize(
    "dataset, arch, sigmas, step, name",
    [
        ("cifar10", "resnet110", ["0.12", "0.25", "0.50", "1.00"], 0.25, "vary_noise_cifar10"),
        ("imagenet", "resnet50", ["0.25", "0.50", "1.00"], 0.5, "vary_noise_imagenet"),
    ],
)
def test_report_reproduces_cohens_published_tables(tmp_path, dataset, arch, sigmas, step, name, capsys):
    radii = [f"{step * i:g}" for i in range(1, 7)]
    out = tmp_path / "rep"
    assert main(["report", *_logs(dataset, arch, sigmas), "--radii", *radii, "--out-dir", str(out)]) == 0
    expected = (COHEN / "analysis" / "markdown" / name).read_text(encoding="utf-8")
    assert _cohen_table(out / "report.md") == expected
    assert expected.strip() in capsys.readouterr().out
    assert (out / "certified_accuracy.png").stat().st_size > 10_000


def test_report_csv_holds_cohens_numbers(tmp_path):
    files = write_report(
        _logs("cifar10", "resnet110", ["0.12", "0.25", "0.50", "1.00"]), tmp_path, radii=[0.0, 0.5, 1.0], plot=False
    )
    rows = list(csv.DictReader(open(files["csv"], encoding="utf-8")))
    assert [r["label"] for r in rows] == ["&sigma; = 0.12", "&sigma; = 0.25", "&sigma; = 0.50", "&sigma; = 1.00"]
    assert [int(r["rows"]) for r in rows] == [500] * 4
    # the rows behind their vary_noise_cifar10 table (0.43 at r = 0.5 for sigma = 0.25, 0.23 at r = 1 for 0.50)
    assert float(rows[1]["r=0.5"]) == pytest.approx(0.428)
    assert float(rows[2]["r=1"]) == pytest.approx(0.234)
    assert float(rows[0]["r=0"]) == pytest.approx(0.814) and float(rows[0]["abstention"]) == pytest.approx(0.038)
    assert float(rows[2]["acr"]) == pytest.approx(0.537533, abs=1e-6)
    assert not (tmp_path / "certified_accuracy.png").exists()


def test_report_labels_and_errors(tmp_path, capsys):
    assert default_label("a/b/sigma_0.25") == "&sigma; = 0.25"
    assert default_label("runs/rs.tsv") == "rs.tsv"
    logs = _logs("cifar10", "resnet110", ["0.12"]) + _logs("imagenet", "resnet50", ["0.25"])
    files = write_report(
        logs + [_logs("cifar10", "resnet110", ["0.50"])[0]], tmp_path, plot=False, labels=["c12", "i25", "c50"]
    )
    assert "<b> i25 </b>" in files["markdown"].read_text()
    assert main(["report", str(tmp_path / "missing.tsv"), "--out-dir", str(tmp_path / "x")]) == 2
    assert "LOG" in capsys.readouterr().err
    bad = tmp_path / "bad.tsv"
    bad.write_text("a\tb\n1\t2\n")
    assert main(["report", str(bad), "--out-dir", str(tmp_path / "y")]) == 2
    assert "not a certification log" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["report", logs[0], "--radii", "-1"])
    assert info.value.code == 2 and "--radii" in capsys.readouterr().err
    assert main(["report", *logs, "--labels", "one", "--out-dir", str(tmp_path / "z")]) == 2
    assert "--labels" in capsys.readouterr().err
