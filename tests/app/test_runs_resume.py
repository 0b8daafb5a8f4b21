"""Resume safety: fingerprints, validated rows and region files, interrupts."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from ddrs_app.cli import main
from ddrs_app.runs import FingerprintMismatch, Interrupted, fingerprint_path, run_certification
from test_runs import RUN, reference_configs, rows_without_time, toy  # noqa: F401  (fixture)

import certify

METHODS = ["rs", "ddrs", "ancer", "rddrs", "mog"]


def _run(config, toy, out, **kw):
    model, data = toy
    return run_certification(config, model, data, out, **dict(RUN, **kw))


@pytest.fixture(scope="module")
def full_logs(toy, tmp_path_factory):
    """Uninterrupted logs of every method (no shared stages: each run stands alone)."""
    d = tmp_path_factory.mktemp("full")
    return {c.method: _run(c, toy, d / f"{c.method}.tsv") for c in reference_configs()}


def _copy_run(src: Path, dst: Path) -> None:
    shutil.copy(src, dst)
    shutil.copy(fingerprint_path(src), fingerprint_path(dst))
    if Path(str(src) + ".regions").is_dir():
        shutil.copytree(str(src) + ".regions", str(dst) + ".regions")


@pytest.mark.parametrize("method", METHODS)
def test_resume_after_kill_deleted_region_corrupted_row_and_changed_option(toy, full_logs, tmp_path, method):
    config = dict((c.method, c) for c in reference_configs())[method]
    full = full_logs[method]
    want = rows_without_time(full)
    lines = full.read_text().splitlines(keepends=True)
    rng = random.Random(method)
    # 1. killed at a random input: k rows and half of the next
    k = rng.randrange(1, len(lines) - 1)
    part = tmp_path / "killed.tsv"
    _copy_run(full, part)
    part.write_text("".join(lines[: 1 + k]) + lines[1 + k][: len(lines[1 + k]) // 2])
    assert rows_without_time(_run(config, toy, part)) == want
    # 2. a region file deleted (data-dependent methods rebuild memory from them)
    gone = tmp_path / "region.tsv"
    _copy_run(full, gone)
    idx = lines[1 + rng.randrange(0, len(lines) - 1)].split("\t", 1)[0]
    if Path(str(gone) + ".regions").is_dir():
        os.remove(Path(str(gone) + ".regions") / f"{idx}.pt")
    assert rows_without_time(_run(config, toy, gone)) == want
    # 3. a corrupted row (cut to its idx, reproducer 4) and a non-finite number
    for damage in (lambda ln: ln.split("\t", 1)[0] + "\n", lambda ln: ln.replace("\t0.", "\tinf", 1)):
        bad = tmp_path / "bad.tsv"
        if bad.exists():
            os.remove(bad)
            shutil.rmtree(str(bad) + ".regions", ignore_errors=True)
        _copy_run(full, bad)
        j = 1 + rng.randrange(0, len(lines) - 1)
        bad.write_text("".join(lines[:j] + [damage(lines[j])] + lines[j + 1 :]))
        assert rows_without_time(_run(config, toy, bad)) == want
        assert len(certify.read_log(bad)) == len(lines) - 1
    # 4. one option changed: refused, naming the field and how to start anew
    with pytest.raises(FingerprintMismatch, match=r"differs in n \(400 -> 500\).*new --out"):
        _run(config, toy, part, n=500)
    assert rows_without_time(part) == want


def test_reproducer_1_a_log_of_another_run_is_not_appended_to(tmp_path, capsys):
    md = str(tmp_path / "models")
    out = str(tmp_path / "m.tsv")
    base = [
        "certify",
        "--dataset",
        "toy2d",
        "--model-dir",
        md,
        "--every",
        "40",
        "--n0",
        "20",
        "--batch-size",
        "400",
        "--quiet",
        "--out",
        out,
    ]
    assert main(base + ["--method", "rs", "--sigma", "0.1", "--max-inputs", "3", "--n", "400"]) == 0
    before = Path(out).read_text()
    assert main(base + ["--method", "ddrs", "--sigma", "0.2", "--max-inputs", "5", "--n", "200"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "new --out" in err
    for field in ("method", "sigma", "n ", "inputs"):
        assert field in err
    assert Path(out).read_text() == before
    assert (
        main(
            base[:-1]
            + [
                str(tmp_path / "d.tsv"),
                "--method",
                "rs",
                "--sigma",
                "0.1",
                "--max-inputs",
                "3",
                "--n",
                "400",
                "--dataset",
                "digits",
            ]
        )
        == 0
    )  # a new --out is fine
    fp = json.loads(Path(str(tmp_path / "d.tsv") + ".fingerprint.json").read_text())
    assert fp["dataset"] == "digits" and fp["n"] == 400 and len(fp["inputs_hash"]) == 16


def test_reproducer_3_missing_region_files_are_recomputed_not_skipped(toy, full_logs, tmp_path):
    config = dict((c.method, c) for c in reference_configs())["ancer"]
    copy = tmp_path / "copy.tsv"
    shutil.copy(full_logs["ancer"], copy)  # the log copied without its <log>.regions/
    shutil.copy(fingerprint_path(full_logs["ancer"]), fingerprint_path(copy))
    assert rows_without_time(_run(config, toy, copy)) == rows_without_time(full_logs["ancer"])


def test_binary_or_garbled_log_names_the_file(toy, tmp_path):
    config = reference_configs()[0]
    out = tmp_path / "bin.tsv"
    _run(config, toy, out)
    out.write_bytes(b"\x80\x81\xff\n" * 10)
    with pytest.raises(ValueError, match="bin.tsv is not a text certification log"):
        _run(config, toy, out)
    with pytest.raises(ValueError, match="bin.tsv"):
        certify.read_log(out)


def _certify_argv(model_dir: str, max_inputs: int, n: int, batch_size: int, out: Path) -> list[str]:
    """``ddrs certify`` of toy2d with rs at sigma 0.1 (every 40th input, n0 = 20, quiet), the log
    ``out`` last."""
    return [
        "certify",
        "--dataset",
        "toy2d",
        "--method",
        "rs",
        "--sigma",
        "0.1",
        "--model-dir",
        model_dir,
        "--every",
        "40",
        "--max-inputs",
        str(max_inputs),
        "--n0",
        "20",
        "--n",
        str(n),
        "--batch-size",
        str(batch_size),
        "--quiet",
        "--out",
        str(out),
    ]


def test_ctrl_c_reports_progress_and_exits_130(toy, tmp_path, monkeypatch, capsys):
    import ddrs_app.runs as runs

    real, calls, when = runs.compute_batch, [], [2]

    def interrupted_second_time(*a, **kw):
        calls.append(1)
        if len(calls) == when[0]:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(runs, "compute_batch", interrupted_second_time)
    with pytest.raises(Interrupted, match="interrupted after 3 of 7 inputs; rerun the same command to resume"):
        _run(reference_configs()[0], toy, tmp_path / "c.tsv")
    calls.clear()
    when[0] = 1
    code = main(_certify_argv(str(tmp_path / "m"), max_inputs=3, n=100, batch_size=100, out=tmp_path / "cli.tsv"))
    assert code == 130
    assert "interrupted after 0 of 3 inputs; rerun the same command to resume" in capsys.readouterr().err


def test_sigkill_loses_at_most_the_input_in_flight(tmp_path):
    md, out = str(tmp_path / "m"), tmp_path / "k.tsv"
    args = [
        sys.executable,
        "-m",
        "ddrs_app.cli",
        *_certify_argv(md, max_inputs=12, n=300_000, batch_size=50_000, out=out),
    ]
    assert main(["train", "--dataset", "toy2d", "--sigma", "0.1", "--model-dir", md, "--quiet"]) == 0
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and (not out.is_file() or out.read_text().count("\n") < 3):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    rows_at_kill = out.read_text().count("\n") - 1
    assert 2 <= rows_at_kill < 12
    assert subprocess.run(args, env=env).returncode == 0
    assert subprocess.run(args[:-1] + [str(tmp_path / "full.tsv")], env=env).returncode == 0
    assert rows_without_time(out) == rows_without_time(tmp_path / "full.tsv")


def test_reproducer_1_compare_recomputes_stale_logs_and_its_csv_reads_with_pandas(tmp_path):
    pd = pytest.importorskip("pandas")
    from ddrs_app.compare import Budget, run_compare

    md = str(tmp_path / "models")
    small = dict(n0=20, batch_size=400, max_inputs=3, every=40, ddrs=dict(iterations=2, samples=8))

    def compare(out_dir, n):
        budget = Budget(n=n, **small)
        return run_compare(
            "toy2d", out_dir, sigmas=(0.1,), budget=budget, model_dir=md, progress=False, methods=("rs", "ddrs")
        )

    a = compare(tmp_path, 200)
    b = compare(tmp_path, 400)
    for name in ("rs_sigma0.1", "ddrs_sigma0.1"):
        log = b["out_dir"] / "logs" / f"{name}.tsv"
        assert json.loads(Path(str(log) + ".fingerprint.json").read_text())["n"] == 400
    fresh = compare(tmp_path / "fresh", 400)
    for name in ("rs_sigma0.1", "ddrs_sigma0.1"):
        assert rows_without_time(b["out_dir"] / "logs" / f"{name}.tsv") == rows_without_time(
            fresh["out_dir"] / "logs" / f"{name}.tsv"
        )
    table = pd.read_csv(b["csv"])
    assert list(table["method"]) == ["rs", "ddrs"] and table["inputs"].tolist() == [3, 3]
    assert "command:" in (b["out_dir"] / "summary.provenance.txt").read_text()
    assert json.loads((b["out_dir"] / "fingerprint.json").read_text())["budget"]["n"] == 400
    assert "`l2@r` (the headline) certified accuracy" in Path(b["markdown"]).read_text()
    del a


def _field(line: str, column: str, value: str) -> str:
    from ddrs_app.runs import LOG_COLUMNS

    fields = line.rstrip("\n").split("\t")
    fields[LOG_COLUMNS.index(column)] = value
    return "\t".join(fields) + "\n"


ROW_DAMAGE = {
    "type": (lambda lines, j: _field(lines[j], "label", "abc"), "unreadable value"),
    "idx not an input": (lambda lines, j: _field(lines[j], "idx", "99999"), "is not one of this run's inputs"),
    "repeated row": (lambda lines, j: lines[j - 1], "out of order or repeated"),
    "correct": (
        lambda lines, j: _field(lines[j], "correct", str(1 - int(lines[j].split("\t")[4]))),
        "correct does not match",
    ),
    "memory_action": (lambda lines, j: _field(lines[j], "memory_action", "eaten"), "memory_action 'eaten' unknown"),
    "nan": (lambda lines, j: _field(lines[j], "p_lower", "nan"), "p_lower is not finite"),
}


@pytest.mark.parametrize("damage", sorted(ROW_DAMAGE))
def test_every_kind_of_bad_row_is_named_and_recomputed(toy, full_logs, tmp_path, damage, capsys):
    """resume validates column count, types, finite numbers, idx in the run's inputs, order;
    the first bad row is named (file and line) and everything from it on is recomputed exactly."""
    config = dict((c.method, c) for c in reference_configs())["ancer"]
    full = full_logs["ancer"]
    lines = full.read_text().splitlines(keepends=True)
    bad = tmp_path / "bad.tsv"
    _copy_run(full, bad)
    change, reason = ROW_DAMAGE[damage]
    j = 3
    bad.write_text("".join(lines[:j] + [change(lines, j)] + lines[j + 1 :]))
    capsys.readouterr()
    assert rows_without_time(_run(config, toy, bad)) == rows_without_time(full)
    err = capsys.readouterr().err
    assert f"bad.tsv line {j + 1}: " in err and reason in err and "recomputing from this input on" in err


@pytest.mark.parametrize(
    "write,reason",
    [
        (lambda p: p.write_bytes(b"not a torch file"), "is unreadable"),
        (lambda p: torch.save({"x": 1}, p), "is not a region record"),
    ],
    ids=["garbled", "not-a-record"],
)
def test_a_bad_region_file_is_named_and_its_row_recomputed(toy, full_logs, tmp_path, write, reason, capsys):
    config = dict((c.method, c) for c in reference_configs())["ddrs"]
    full = full_logs["ddrs"]
    copy = tmp_path / "copy.tsv"
    _copy_run(full, copy)
    idx = full.read_text().splitlines()[2].split("\t", 1)[0]
    write(Path(str(copy) + ".regions") / f"{idx}.pt")
    capsys.readouterr()
    assert rows_without_time(_run(config, toy, copy)) == rows_without_time(full)
    err = capsys.readouterr().err
    assert "copy.tsv line 3: region file" in err and reason in err
