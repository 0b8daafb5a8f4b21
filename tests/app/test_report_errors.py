"""``ddrs report`` on bad logs (one line naming the file and the line, exit 2), on another radius column
(``--column``), plot titles inside their figures, and progress bars with a total (so that they show an
ETA)."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from types import SimpleNamespace

import matplotlib
import numpy as np
import pytest
import torch
from ddrs_app import plots
from ddrs_app.cli import main
from ddrs_app.report import write_report
from hypothesis import given, settings
from hypothesis import strategies as st

import certify
from certify.log import LogFormatError

COHEN = Path(__file__).resolve().parents[1] / "data" / "cohen2019" / "certify"

# a log in Cohen's format with abstentions (predict -1, radius 0: legal) on lines 3 and 7
GOOD = (
    "idx\tlabel\tpredict\tradius\tcorrect\ttime\n"
    "0\t3\t3\t0.378\t1\t0:00:15.400000\n"
    "20\t7\t-1\t0.0\t0\t0:00:15.600000\n"
    "40\t4\t4\t0.341\t1\t0:00:15.700000\n"
    "60\t7\t7\t0.941\t1\t0:00:15.800000\n"
    "80\t8\t8\t0.755\t1\t15.9\n"
    "100\t4\t-1\t0.0\t0\t0:00:15.900000\n"
    "120\t8\t8\t0.163\t1\t0:00:16\n"
)

# ours: Cohen's columns, then proxy radius, a text column and paper_radius (nan: none reported)
OURS = (
    "idx\tlabel\tpredict\tradius\tcorrect\ttime\tproxy_radius\tnoise\tpaper_radius\n"
    "0\t1\t1\t0.2\t1\t0:00:01\t0.6\tanisotropic\tnan\n"
    "1\t0\t0\t0.1\t1\t0:00:01\t0.3\tanisotropic\t0.4\n"
    "2\t2\t-1\t0.0\t0\t0:00:01\t0.0\tanisotropic\tnan\n"
    "3\t2\t2\t0.5\t1\t0:00:01\t0.9\tanisotropic\tnan\n"
)


def _report(capsys, *args) -> tuple[int, str, str]:
    code = main(["report", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def _replace_field(text: str, line: int, column: int, value: str) -> str:
    lines = text.split("\n")
    fields = lines[line - 1].split("\t")
    fields[column] = value
    lines[line - 1] = "\t".join(fields)
    return "\n".join(lines)


def _one_line_error(err: str, path: Path, line: int) -> str:
    assert err.endswith("\n") and err.count("\n") == 1, err  # one line, no traceback
    assert err.startswith(f"ddrs report: error: {path} line {line}: "), err
    return err


# ---------------------------------------------------------------------------------- nan radius
@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "-0.5"])
def test_a_nan_radius_is_one_line_naming_file_and_line(tmp_path, capsys, value):
    log = tmp_path / "x.tsv"
    log.write_text(_replace_field(GOOD, 7, 3, value))
    code, out, err = _report(capsys, log, "--out-dir", tmp_path / "rep", "--no-plot")
    assert code == 2 and out == ""
    assert _one_line_error(err, log, 7).startswith(f"ddrs report: error: {log} line 7: radius is {value}")
    assert not (tmp_path / "rep" / "report.md").exists()  # no ACR of nan written anywhere
    with pytest.raises(LogFormatError) as info:
        certify.read_log(log)
    assert isinstance(info.value, ValueError) and (info.value.path, info.value.line) == (str(log), 7)


def test_abstentions_with_radius_zero_stay_legal(tmp_path, capsys):
    log = tmp_path / "x.tsv"
    log.write_text(GOOD)
    code, out, err = _report(capsys, log, "--radii", "0.25", "0.5", "--out-dir", tmp_path / "rep", "--no-plot")
    assert code == 0 and err == ""
    rows = list(csv.DictReader(open(tmp_path / "rep" / "report.csv", encoding="utf-8")))
    assert float(rows[0]["abstention"]) == pytest.approx(2 / 7)
    assert float(rows[0]["acr"]) == pytest.approx((0.378 + 0.341 + 0.941 + 0.755 + 0.163) / 7)
    assert float(rows[0]["r=0.5"]) == pytest.approx(2 / 7)


# ---------------------------------------------------------------------------------- malformed logs
def _cut(text: str, line: int, keep: int) -> str:
    """The file as if the write of ``line`` had stopped after ``keep`` characters."""
    lines = text.split("\n")
    return "\n".join(lines[: line - 1] + [lines[line - 1][:keep]])


CORRUPTIONS = {
    # name: (the bytes of the log, the line the error names, a word the error holds)
    "truncated last line": (_cut(GOOD, 8, 9).encode(), 8, "fields"),
    "truncated last field": (_cut(GOOD, 8, len("120\t8\t8\t0.16")).encode(), 8, "fields"),
    "missing column": (GOOD.replace("40\t4\t4\t0.341\t1\t", "40\t4\t4\t0.341\t").encode(), 4, "fields"),
    "extra column": (_replace_field(GOOD, 5, 5, "0:00:15\t9").encode(), 5, "fields"),
    "empty field": (_replace_field(GOOD, 4, 3, "").encode(), 4, "radius is ''"),
    "non-numeric radius": (_replace_field(GOOD, 6, 3, "0.7x5").encode(), 6, "radius is '0.7x5', not a number"),
    "non-numeric idx": (_replace_field(GOOD, 2, 0, "zero").encode(), 2, "idx"),
    "fractional label": (_replace_field(GOOD, 3, 1, "7.5").encode(), 3, "not an integer"),
    "correct not 0 or 1": (_replace_field(GOOD, 5, 4, "2").encode(), 5, "correct"),
    "garbled time": (_replace_field(GOOD, 6, 5, "0:00").encode(), 6, "time"),
    "empty file": (b"", 1, "empty"),
    "blank file": (b"\n \n", 1, "empty"),
    "header only": (GOOD.split("\n")[0].encode() + b"\n", 2, "no rows"),
    "binary junk": (bytes(range(256)) * 4, 1, "not text"),
    "invalid utf-8 on line 5": (GOOD.encode().replace(b"60\t7", b"6\xff\t7"), 5, "not text"),
    "NUL bytes on line 3": (GOOD.encode().replace(b"20\t7", b"2\x00\x00\t7"), 3, "not text"),
    "gzip file": (b"\x1f\x8b\x08\x00" + bytes(60), 1, "not text"),
    "wrong header": (b"a\tb\n1\t2\n", 1, "not a certification log"),
    "space-separated": (GOOD.replace("\t", " ").encode(), 1, "not a certification log"),
    "columns swapped": (GOOD.replace("predict\tradius", "radius\tpredict", 1).encode(), 1, "not a certification log"),
    "csv": (GOOD.replace("\t", ",").encode(), 1, "not a certification log"),
    "column twice": ((b"idx\tlabel\tpredict\tradius\tcorrect\tradius\n0\t1\t1\t0.5\t1\t0.5\n"), 1, "twice"),
}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_every_malformed_log_is_one_line_naming_file_and_line(tmp_path, capsys, name):
    data, line, word = CORRUPTIONS[name]
    log = tmp_path / "x.tsv"
    log.write_bytes(data)
    code, out, err = _report(capsys, log, "--out-dir", tmp_path / "rep")
    assert code == 2 and out == "", err
    assert word in _one_line_error(err, log, line)


def test_the_first_bad_line_is_the_one_named(tmp_path):
    log = tmp_path / "x.tsv"
    log.write_text(_replace_field(_replace_field(GOOD, 8, 0, "x"), 4, 3, "nan"))  # idx (line 8) before radius
    with pytest.raises(LogFormatError, match=r" line 4: radius is nan"):
        certify.read_log(log)


def test_windows_line_ends_and_a_byte_order_mark_read_like_the_plain_log(tmp_path):
    plain, windows = tmp_path / "plain.tsv", tmp_path / "windows.tsv"
    plain.write_text(GOOD)
    windows.write_bytes(b"\xef\xbb\xbf" + GOOD.replace("\n", "\r\n").encode())
    a, b = certify.read_log(plain), certify.read_log(windows)
    assert list(a.columns) == list(b.columns)
    assert all(np.array_equal(a[c], b[c]) for c in a.columns)
    assert a.lines.tolist() == list(range(2, 9))


def _naive_read(path: Path) -> dict[str, list[float]]:
    """Cohen's own reading (``pd.read_csv(sep='\\t')`` of numbers), without any check."""
    lines = path.read_text().splitlines()
    header = lines[0].split("\t")
    rows = [ln.split("\t") for ln in lines[1:]]
    return {
        c: [certify.log.parse_time(r[j]) if c == "time" else float(r[j]) for r in rows] for j, c in enumerate(header)
    }


def test_cohens_logs_read_exactly_as_before():
    paths = sorted(p for p in COHEN.rglob("sigma_*") if p.is_file())
    assert len(paths) == 7
    for path in paths:
        log, expected = certify.read_log(path), _naive_read(path)
        assert list(log.columns) == list(expected)
        for column, values in expected.items():
            assert log[column].dtype == np.float64 and log[column].tolist() == values, (path, column)


@settings(max_examples=150)
@given(
    edits=st.lists(
        st.tuples(st.integers(0, len(OURS.encode())), st.integers(0, 3), st.binary(max_size=3)), min_size=1, max_size=3
    )
)
def test_any_damaged_log_reads_or_is_one_line_naming_file_and_line(tmp_path_factory, edits):
    """Random byte edits (delete up to 3 bytes, insert up to 3) of a good log: the report either reads it
    (then every radius is a finite number >= 0) or fails with one line naming the file and a line of it."""
    data = OURS.encode()
    for at, delete, insert in edits:
        data = data[:at] + insert + data[at + delete :]
    log = tmp_path_factory.mktemp("fuzz") / "x.tsv"
    log.write_bytes(data)
    try:
        files = write_report([log], log.parent / "rep", radii=[0.25], plot=False, column="proxy_radius")
    except ValueError as err:
        message = str(err)
        assert "\n" not in message and str(log) in message
        number = int(message.split(" line ", 1)[1].split(":", 1)[0])
        assert 1 <= number <= data.count(b"\n") + 2
        return
    rows = list(csv.DictReader(open(files["csv"], encoding="utf-8")))
    assert math.isfinite(float(rows[0]["acr"]))
    read = certify.read_log(log)
    assert np.isfinite(read["radius"]).all() and (read["radius"] >= 0).all()
    assert np.isfinite(read["proxy_radius"]).all()


# ---------------------------------------------------------------------------------- --column
def test_column_proxy_radius_counts_that_column_and_says_so(tmp_path, capsys, kept_figures):
    log = tmp_path / "ours.tsv"
    log.write_text(OURS)
    code, out, err = _report(capsys, log, "--column", "proxy_radius", "--radii", "0.25", "0.5", "--out-dir", tmp_path)
    assert code == 0, err
    read = certify.read_log(log)
    acc = certify.certified_accuracy(read, [0.25, 0.5], column="proxy_radius")
    assert acc.tolist() == [0.75, 0.5]
    assert certify.certified_accuracy(read, [0.25, 0.5]).tolist() == [0.25, 0.25]  # by the l2 radius
    md = (tmp_path / "report.md").read_text()
    assert md.startswith("# Certified accuracy at proxy_radius >= r (ANCER's proxy radius")
    assert "<b> ours.tsv </b>| 0.75<b>*</b> |0.50<b>*</b> |" in md
    assert "and proxy_radius >= r" in md and "ACR: mean of proxy_radius * correct" in md
    assert "proxy_radius" in out.split("\n")[0]
    rows = list(csv.DictReader(open(tmp_path / "report.csv", encoding="utf-8")))
    assert rows[0]["column"] == "proxy_radius"
    assert float(rows[0]["acr"]) == pytest.approx((0.6 + 0.3 + 0.9) / 4)
    assert float(rows[0]["r=0.5"]) == 0.5
    (fig,) = kept_figures
    assert "proxy_radius" in fig.axes[0].get_xlabel() and "proxy_radius" in fig._suptitle.get_text()
    _assert_titles_inside(fig)


def test_column_default_is_radius_and_the_report_says_so(tmp_path, capsys):
    log = tmp_path / "ours.tsv"
    log.write_text(OURS)
    assert _report(capsys, log, "--radii", "0.25", "--out-dir", tmp_path, "--no-plot")[0] == 0
    assert (tmp_path / "report.md").read_text().startswith("# Certified accuracy at radius >= r (the certified l2")
    assert list(csv.DictReader(open(tmp_path / "report.csv", encoding="utf-8")))[0]["column"] == "radius"


def test_column_errors_name_the_option(tmp_path, capsys):
    ours, cohen = tmp_path / "ours.tsv", tmp_path / "cohen.tsv"
    ours.write_text(OURS)
    cohen.write_text(GOOD)
    code, _, err = _report(capsys, ours, cohen, "--column", "proxy_radius", "--out-dir", tmp_path / "a")
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(
        f"ddrs report: error: --column proxy_radius: {cohen} line 1: the header has no column proxy_radius"
    )
    code, _, err = _report(capsys, ours, "--column", "noise", "--out-dir", tmp_path / "b")
    expected = f"--column noise: {ours} line 2: noise is 'anisotropic', not a number"
    assert code == 2 and err == f"ddrs report: error: {expected}\n"
    code, _, err = _report(capsys, ours, "--column", "paper_radius", "--out-dir", tmp_path / "c")
    expected = f"--column paper_radius: {ours} line 2: paper_radius is nan (expected a radius >= 0)"
    assert code == 2 and err == f"ddrs report: error: {expected}\n"
    bad = tmp_path / "bad.tsv"
    bad.write_text(_replace_field(OURS, 4, 6, "nan"))
    code, _, err = _report(capsys, bad, "--column", "proxy_radius", "--out-dir", tmp_path / "d")
    assert code == 2 and err == f"ddrs report: error: {bad} line 4: proxy_radius is nan (expected a finite number)\n"


# ---------------------------------------------------------------------------------- plot titles
@pytest.fixture
def kept_figures(monkeypatch):
    """Figures the plotting code closes are kept for the test (and closed after it)."""
    import matplotlib.pyplot as plt

    kept: list = []
    close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig=None: kept.append(fig))
    yield kept
    for fig in kept:
        close(fig)


def _assert_titles_inside(fig) -> None:
    """Every title (the figure's and each panel's) lies inside the figure, as rendered by Agg."""
    assert isinstance(fig.canvas, matplotlib.backends.backend_agg.FigureCanvasAgg)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    titles = [t for t in [fig._suptitle] + [ax.title for ax in fig.axes] if t is not None and t.get_text()]
    assert titles
    for title in titles:
        box = title.get_window_extent(renderer)
        inside = fig.bbox
        assert box.x0 >= inside.x0 - 0.5 and box.x1 <= inside.x1 + 0.5, (title.get_text(), box, inside)
        assert box.y0 >= inside.y0 - 0.5 and box.y1 <= inside.y1 + 0.5, (title.get_text(), box, inside)


def test_one_sigma_plots_keep_their_titles_inside(tmp_path, kept_figures):
    log = tmp_path / "ours.tsv"
    log.write_text(OURS)
    logs = {("ddrs", 0.25): log, ("rddrs", 0.25): log}
    budget = SimpleNamespace(n=100_000, alpha=0.001)
    written = plots.write_all("fashion-mnist", [{"inputs": 500}], logs, tmp_path, [0.25], sigmas=(0.25,), budget=budget)
    assert [p.name for p in written] == ["certified_accuracy_l2.png", "certified_accuracy_proxy.png"]
    assert len(kept_figures) == 2
    for fig, kind in zip(kept_figures, ["l2", "proxy"]):
        expected = f"fashion-mnist: certified accuracy vs {kind} radius (n = 100000, alpha = 0.001, 500 inputs)"
        assert " ".join(fig._suptitle.get_text().split()) == expected  # wrapped, not cut
        _assert_titles_inside(fig)


def test_one_mixture_and_one_log_report_keep_their_titles_inside(tmp_path, kept_figures):
    log = tmp_path / "mog.tsv"
    log.write_text(OURS)
    plots.mog_panels(
        {("mog-mixture-K2-[0.12,0.5]", 0.25): log},
        tmp_path / "mixture.png",
        "cifar10: mixture-of-Gaussians smoothing (n = 100000, alpha = 0.001, 500 inputs)",
    )
    write_report([COHEN / "cifar10" / "resnet110" / "noise_0.25" / "test" / "sigma_0.25"], tmp_path / "rep")
    assert len(kept_figures) == 2
    for fig in kept_figures:
        _assert_titles_inside(fig)


# ---------------------------------------------------------------------------------- progress totals
class FakeBar:
    """A stand-in for tqdm that records its total (also one set later by ``reset``) and its count."""

    made: list[FakeBar] = []

    def __init__(self, *args, total=None, disable=False, desc="", initial=0, **kwargs):
        self.total, self.disable, self.desc, self.n = total, disable, desc, initial
        FakeBar.made.append(self)

    def update(self, n=1):
        assert self.total is not None, f"{self.desc}: updated without a total (no ETA)"
        self.n += n

    def reset(self, total=None):
        self.n = 0
        if total is not None:
            self.total = total

    def set_postfix(self, **kwargs):
        pass

    def close(self):
        pass


@pytest.fixture
def fake_tqdm(monkeypatch):
    import ddrs_app.runs
    import ddrs_app.training

    FakeBar.made = []
    monkeypatch.setattr(ddrs_app.runs, "tqdm", FakeBar)
    monkeypatch.setattr(ddrs_app.training, "tqdm", FakeBar)
    return FakeBar.made


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    from ddrs_app.data import load_dataset, subset
    from ddrs_app.training import load_or_train

    model, _ = load_or_train("toy2d", 0.1, model_dir=str(tmp_path_factory.mktemp("models")), progress=False)
    return model, subset(load_dataset("toy2d", "test"), 40, 5)


DD = dict(iterations=3, samples=8)
RUN = dict(n0=20, n=100, alpha=0.001, batch_size=100, opt_batch=2, seed=1, progress=True)


def _noise_bar(made: list[FakeBar]) -> FakeBar:
    (bar,) = [b for b in made if "choosing noise" in b.desc]
    return bar


def test_choosing_noise_has_a_total_of_all_ascent_steps(toy, tmp_path, fake_tqdm):
    from ddrs_app.runs import MethodConfig, run_certification

    model, data = toy  # 5 inputs in batches of 2: 3 batches
    rddrs = MethodConfig(
        "rddrs", sigma=0.1, ddrs_options=DD, options=dict(iterations=2, samples=8, warm_start="ancer", ancer_options=DD)
    )
    run_certification(rddrs, model, data, tmp_path / "rddrs.tsv", **RUN)
    bar = _noise_bar(fake_tqdm)  # per batch: DDRS 3 + 1, ANCER 3 + 1 (the best iterate is evaluated), RDDRS 2 + 1
    assert not bar.disable and bar.total == 3 * (4 + 4 + 3) and bar.n == bar.total
    # a comparison: DDRS's sigma_x* and ANCER's Theta from earlier methods are not recomputed, nor counted
    star, theta = {}, {}
    for config in [
        MethodConfig("ddrs", sigma=0.1, ddrs_options=DD),
        MethodConfig("ancer", sigma=0.1, ddrs_options=DD, options=DD),
    ]:
        out = tmp_path / f"{config.method}.tsv"
        run_certification(config, model, data, out, sigma_star_cache=star, stage_cache=theta, **RUN)
    fake_tqdm.clear()
    run_certification(rddrs, model, data, tmp_path / "rddrs2.tsv", sigma_star_cache=star, stage_cache=theta, **RUN)
    assert _noise_bar(fake_tqdm).total == 3 * 3 == _noise_bar(fake_tqdm).n


def test_choosing_noise_counts_the_batches_left_and_fills_up_after_an_early_stop(toy, tmp_path, fake_tqdm):
    from ddrs_app.runs import MethodConfig, run_certification

    model, data = toy
    config = MethodConfig("ddrs", sigma=0.1, ddrs_options=dict(iterations=40, samples=8, early_stop=(1, 10.0)))
    out = tmp_path / "ddrs.tsv"
    run_certification(config, model, data, out, **RUN)
    bar = _noise_bar(fake_tqdm)
    assert bar.total == 3 * 41 and bar.n == bar.total  # stopped early; the bar still ends full
    lines = out.read_text().split("\n")
    out.write_text("\n".join(lines[:4]) + "\n")  # inputs 0..2 kept: batch [2, 3] and [4] are left
    fake_tqdm.clear()
    run_certification(config, model, data, out, **RUN)
    assert _noise_bar(fake_tqdm).total == 2 * 41


def test_methods_without_noise_choice_show_no_noise_bar(toy, tmp_path, fake_tqdm):
    from ddrs_app.runs import MethodConfig, run_certification

    model, data = toy
    run_certification(MethodConfig("rs", sigma=0.1), model, data, tmp_path / "rs.tsv", **RUN)
    assert _noise_bar(fake_tqdm).disable
    (inputs,) = [b for b in fake_tqdm if b.desc.startswith("certify")]
    assert inputs.total == 5 and inputs.n == 5


def test_fit_and_certify_inputs_text_bars_have_totals(toy, monkeypatch):
    import ddrs
    import ddrs.progress

    made = []

    class Recording(ddrs.progress.TextBar):
        def __init__(self, total, desc="", **kwargs):
            super().__init__(total, desc, **kwargs)
            made.append(self)

    monkeypatch.setattr(ddrs.progress, "TextBar", Recording)
    model, data = toy
    x = data.X[:3]
    res = ddrs.DDRS(sigma0=0.1, **DD).fit(model, x, generator=torch.Generator().manual_seed(0), progress=True)
    ddrs.certify_inputs(model, x, res, data.num_classes, n0=10, n=50, progress=True)
    assert [(b.total, b.count) for b in made] == [(4, 4), (3, 3)]
    assert ddrs.DDRS(**DD).progress_steps == 4 and ddrs.DDRS(iterations=3, keep_best=False).progress_steps == 3


def test_training_bar_has_a_total(fake_tqdm):
    from ddrs_app.training import train

    train("toy2d", 0.1, epochs=1, seed=0, progress=True, save=False)
    (bar,) = fake_tqdm
    assert bar.total is not None and bar.total == bar.n > 0
