"""The ``ddrs`` command line and the benchmark runner: resume, argument errors, tables and plots."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
import torch
from ddrs_app.cli import main
from ddrs_app.compare import run_compare

import certify
from tests.classifiers import tiny_budget

TINY = ["--n0", "50", "--n", "400", "--batch-size", "400", "--every", "40", "--max-inputs", "6", "--quiet"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("models"))


def _rows_without_time(path: Path) -> list[list[str]]:
    lines = Path(path).read_text().splitlines()
    header = lines[0].split("\t")
    drop = {header.index(c) for c in ("time", "choose_seconds")}
    return [[v for j, v in enumerate(line.split("\t")) if j not in drop] for line in lines]


@pytest.mark.parametrize("method", ["rs", "ancer"])
def test_certify_resumes_a_half_written_log_to_the_same_result(tmp_path, model_dir, method):
    args = (
        ["certify", "--dataset", "toy2d", "--method", method, "--sigma", "0.1", "--model-dir", model_dir]
        + (["--iterations", "5", "--samples", "16"] if method != "rs" else [])
        + TINY
    )
    full = tmp_path / "full.tsv"
    assert main(args + ["--out", str(full)]) == 0
    lines = full.read_text().splitlines(keepends=True)
    assert len(lines) == 7
    # simulate a crash after three finished rows and half of the fourth
    part = tmp_path / "part.tsv"
    part.write_text("".join(lines[:4]) + lines[4][: len(lines[4]) // 2])
    shutil.copy(str(full) + ".fingerprint.json", str(part) + ".fingerprint.json")
    regions = Path(str(full) + ".regions")
    if regions.is_dir():
        keep = {line.split("\t", 1)[0] for line in lines[1:4]}
        target = Path(str(part) + ".regions")
        target.mkdir()
        for f in regions.iterdir():
            if f.stem in keep:
                shutil.copy(f, target / f.name)
    assert main(args + ["--out", str(part)]) == 0
    assert _rows_without_time(part) == _rows_without_time(full)


def test_data_dependent_runs_log_what_memory_did(tmp_path, model_dir):
    out = tmp_path / "ddrs.tsv"
    main(
        [
            "certify",
            "--dataset",
            "toy2d",
            "--method",
            "ddrs",
            "--sigma",
            "0.1",
            "--model-dir",
            model_dir,
            "--iterations",
            "5",
            "--samples",
            "16",
            "--out",
            str(out),
        ]
        + TINY
    )
    log = certify.read_log(out)
    assert len(log) == 6
    assert set(log["memory_action"]) <= {"kept", "shrunk", "adopted", "abstained"}


@pytest.mark.parametrize(
    "argv, name",
    [
        (["certify", "--method", "rs", "--sigma", "-1", "--out", "x.tsv"], "--sigma"),
        (["certify", "--method", "rs", "--alpha", "1.5", "--out", "x.tsv"], "--alpha"),
        (["certify", "--method", "rs", "--n", "0", "--out", "x.tsv"], "--n"),
        (["certify", "--method", "rs", "--n0", "zero", "--out", "x.tsv"], "--n0"),
        (["certify", "--method", "nope", "--out", "x.tsv"], "--method"),
        (["certify", "--method", "rs"], "--out"),
        (["certify", "--dataset", "cifar", "--method", "rs", "--out", "x.tsv"], "--dataset"),
        (["certify", "--method", "rddrs", "--metric", "euclid", "--out", "x.tsv"], "--metric"),
        (["certify", "--method", "mog", "--sigmas", "0.25", "-0.5", "--out", "x.tsv"], "--sigmas"),
        (["certify", "--method", "rs", "--every", "0", "--out", "x.tsv"], "--every"),
        (["train", "--sigma", "0", "--dataset", "digits"], "--sigma"),
        (["train", "--dataset", "digits"], "--sigma"),
        (["compare", "--max-inputs", "-3"], "--max-inputs"),
        (["compare", "--dataset", "imagenet"], "--dataset"),
    ],
)
def test_every_subcommand_rejects_bad_arguments_naming_them(argv, name, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code != 0
    assert name in capsys.readouterr().err


def test_mog_without_sigmas_is_refused(capsys):
    with pytest.raises(SystemExit) as info:
        main(["certify", "--method", "mog", "--out", "x.tsv", "--quiet"])
    assert "--sigmas" in str(info.value.code)


def test_compare_writes_tables_and_plots_with_every_method(tmp_path, model_dir):
    budget = tiny_budget(n=400, batch_size=400, rddrs=dict(iterations=5, samples=16, step_size=0.3, kappa=2.0))
    result = run_compare(
        "toy2d",
        tmp_path,
        sigmas=(0.1,),
        budget=budget,
        model_dir=model_dir,
        progress=False,
        methods=("rs", "ddrs", "ancer", "rddrs", "mog"),
    )
    with open(result["csv"]) as f:
        rows = list(csv.DictReader(f))
    methods = {r["method"] for r in rows}
    assert {"rs", "ddrs", "ancer", "rddrs"} <= methods
    assert any(m.startswith("mog-mixture-K10") for m in methods)
    md = Path(result["markdown"]).read_text()
    assert "command:" in md and "versions:" in md and "machine:" in md
    for m in ("rs", "ddrs", "ancer", "rddrs"):
        assert f"| {m} |" in md
    names = {Path(f).name for f in result["figures"]}
    assert {"certified_accuracy_l2.png", "certified_accuracy_proxy.png", "mixture.png", "toy2d_regions.png"} <= names
    for f in result["figures"]:
        assert Path(f).stat().st_size > 10_000  # a real picture, not an empty canvas
    # mixture rows report the paper's max-sigma claim beside the sound value
    mog = [r for r in rows if r["method"].startswith("mog-mixture-K10")]
    assert mog and all(r.get("paper_claim_l2@0.1", "") != "" for r in mog)


def test_reproducer_5_abbreviated_options_are_errors_not_other_options(tmp_path, capsys):
    # `--model my_net.pt` was taken as `--model-dir my_net.pt`; every parser now has allow_abbrev=False
    target = tmp_path / "my_net.pt"
    for abbrev in ("--model-d", "--max-in", "--out-d"):
        argv = [
            "certify",
            "--dataset",
            "toy2d",
            "--method",
            "rs",
            abbrev,
            str(target),
            "--out",
            str(tmp_path / "x.tsv"),
            "--quiet",
        ]
        if abbrev == "--out-d":
            argv = ["compare", abbrev, str(target), "--quiet"]
        with pytest.raises(SystemExit) as err:
            main(argv)
        assert err.value.code == 2
        assert "unrecognized arguments" in capsys.readouterr().err
    assert not target.exists()


@pytest.mark.parametrize(
    "method,option",
    [
        ("rs", ["--sigmas", "0.1", "0.2"]),
        ("ddrs", ["--backend", "rgd"]),
        ("ancer", ["--metric", "log-euclidean"]),
        ("rs", ["--iterations", "3"]),
        ("mog", ["--no-memory"]),
        ("rs", ["--kind=convolution"]),
    ],
)
def test_options_that_do_not_apply_to_the_method_are_errors(tmp_path, method, option):
    out = tmp_path / "x.tsv"
    sig = ["--sigmas", "0.1"] if method == "mog" and option[0] != "--sigmas" else []
    with pytest.raises(SystemExit, match=f"{option[0].split('=')[0]} does not apply to --method {method}"):
        main(["certify", "--dataset", "toy2d", "--method", method, "--out", str(out), "--quiet"] + sig + option)
    assert not out.exists()


def test_reproducer_4_a_row_cut_to_its_idx_is_recomputed(tmp_path, model_dir):
    """a row cut down to its idx counted as done and ``read_log`` then failed."""
    args = ["certify", "--dataset", "toy2d", "--method", "rs", "--sigma", "0.1", "--model-dir", model_dir] + TINY
    full = tmp_path / "full.tsv"
    assert main(args + ["--out", str(full)]) == 0
    lines = full.read_text().splitlines(keepends=True)
    cut = tmp_path / "cut.tsv"
    shutil.copy(str(full) + ".fingerprint.json", str(cut) + ".fingerprint.json")
    cut.write_text("".join(lines[:3] + [lines[3].split("\t", 1)[0] + "\n"] + lines[4:]))
    assert main(args + ["--out", str(cut)]) == 0
    assert _rows_without_time(cut) == _rows_without_time(full)
    assert len(certify.read_log(cut)) == len(lines) - 1


@pytest.mark.parametrize("device", ["cuda:7", "bogus", "tpu"])
def test_train_device_that_torch_cannot_use_is_one_line_exit_2(device, tmp_path, capsys):
    if device == "cuda:7" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    code = main(["train", "--dataset", "toy2d", "--sigma", "0.1", "--device", device, "--model-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("ddrs train: error: --device:")
    assert list(tmp_path.iterdir()) == []  # nothing trained, nothing cached


def test_train_device_cpu_reuses_the_cpu_cache_and_other_devices_have_their_own_key(tmp_path, model_dir, capsys):
    from ddrs_app.training import cache_key, cache_path

    argv = ["train", "--dataset", "toy2d", "--sigma", "0.1", "--model-dir", model_dir, "--quiet"]
    assert main(argv + ["--device", "cpu"]) == 0
    assert main(argv + ["--device", "cpu"]) == 0
    assert "reused cached model" in capsys.readouterr().out.splitlines()[-1]
    cpu = cache_key("toy2d", 0.1, None, 0, None, None, None, "adam")
    assert "device" not in cpu  # CPU keys (and every cached file so far) unchanged
    assert cache_key("toy2d", 0.1, None, 0, None, None, None, "adam", torch.device("cpu")) == cpu
    for other in ("cuda", "cuda:1", "mps"):
        key = cache_key("toy2d", 0.1, None, 0, None, None, None, "adam", torch.device(other))
        assert key["device"] == torch.device(other).type
        assert cache_path(key, model_dir) != cache_path(cpu, model_dir)
        assert f"-{key['device']}-" in cache_path(key, model_dir).name
    same = cache_key("toy2d", 0.1, None, 0, None, None, None, "adam", torch.device("cuda:1"))
    assert cache_path(same) == cache_path(cache_key("toy2d", 0.1, None, 0, None, None, None, "adam", "cuda:0"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device (torch.cuda.is_available() is False)")
def test_train_on_the_gpu_is_cached_under_its_own_key(tmp_path, capsys):
    argv = ["train", "--dataset", "toy2d", "--sigma", "0.1", "--model-dir", str(tmp_path), "--quiet"]
    assert main(argv + ["--device", "cuda"]) == 0
    assert "trained on cuda" in capsys.readouterr().out
    assert main(argv + ["--device", "cuda"]) == 0
    assert "reused cached model" in capsys.readouterr().out
    assert len(list(tmp_path.glob("toy2d-cuda-*.pt"))) == 1


def test_every_parser_in_the_benchmarks_has_allow_abbrev_false():
    """``allow_abbrev=False`` on every parser (an abbreviation silently meant another option)."""
    import ast

    missing = []
    for path in sorted(Path(__file__).resolve().parents[2].joinpath("benchmarks").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "attr", getattr(node.func, "id", ""))
            if name in ("ArgumentParser", "add_parser"):
                kw = {k.arg: k.value for k in node.keywords}
                if not (isinstance(kw.get("allow_abbrev"), ast.Constant) and kw["allow_abbrev"].value is False):
                    missing.append(f"{path.name}:{node.lineno}")
    assert missing == []


def test_toy2d_regions_share_class_colours_with_axis_labels_legend_and_budget(tmp_path, model_dir, monkeypatch):
    """points and regions in one colour per class, labelled axes, a
    legend naming the classes and the methods, n / alpha / inputs in the title."""
    from ddrs_app import plots
    from ddrs_app.data import load_dataset, subset
    from matplotlib.colors import to_hex

    kept = []
    monkeypatch.setattr(plots.plt, "close", lambda fig: kept.append(fig))
    test = subset(load_dataset("toy2d", "test"), 40, 6)  # the inputs TINY certifies
    log = tmp_path / "rs.tsv"
    assert main(["certify", "--dataset", "toy2d", "--method", "rs", "--sigma", "0.1", "--model-dir", model_dir]
                + TINY + ["--out", str(log)]) == 0  # fmt: skip
    plots.toy2d_regions({("rs", 0.1): log}, test, tmp_path / "r.png", 0.1, model_dir, suffix="n = 400, alpha = 0.001")
    (ax,) = kept[0].axes
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("x1", "x2")
    assert "n = 400, alpha = 0.001" in ax.get_title()
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[:3] == ["class 0", "class 1", "class 2"] and "rs" in legend
    from matplotlib.collections import PathCollection

    points = {to_hex(c.get_facecolor()[0], keep_alpha=False) for c in ax.collections if isinstance(c, PathCollection)}
    assert points == {to_hex(c) for c in plots.CLASS_COLORS}
    handles = ax.get_legend().legend_handles[:3]
    assert [to_hex(h.get_edgecolor(), keep_alpha=False) for h in handles] == [to_hex(c) for c in plots.CLASS_COLORS]
