"""The torch thread count: the CLI runs at ``--threads`` (default 1) whatever the machine, restores the
caller's count afterwards, and records the count in the log's fingerprint and the model cache key, so
that a log or a cached model made at one count is never resumed or reused at another."""

from __future__ import annotations

import json

import torch
from ddrs_app.cli import main
from test_runs import rows_without_time

RDDRS = ["certify", "--dataset", "digits", "--method", "rddrs", "--sigma", "0.25", "--every", "45"]
RDDRS += ["--max-inputs", "3", "--n", "300", "--n0", "50", "--iterations", "3", "--samples", "16", "--quiet"]
TRAIN = ["train", "--dataset", "digits", "--sigma", "0.25", "--epochs", "2", "--quiet"]


def _fingerprint(path):
    return json.loads(path.with_name(path.name + ".fingerprint.json").read_text())


def test_the_cli_restores_the_callers_thread_count(tmp_path):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert main(TRAIN + ["--model-dir", str(tmp_path), "--threads", "1"]) == 0
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_training_at_two_threads_is_cached_under_its_own_key(tmp_path):
    md = str(tmp_path / "models")
    assert main(TRAIN + ["--model-dir", md]) == 0
    assert main(TRAIN + ["--model-dir", md]) == 0  # the default (1 thread) again: a cache hit
    assert len(list((tmp_path / "models").glob("*.pt"))) == 1
    assert main(TRAIN + ["--model-dir", md, "--threads", "2"]) == 0
    files = sorted((tmp_path / "models").glob("*.pt"))
    assert len(files) == 2
    keys = [torch.load(f, weights_only=True)["key"] for f in files]
    assert sorted(k["threads"] for k in keys) == [1, 2]
    assert {k: v for k, v in keys[0].items() if k != "threads"} == {k: v for k, v in keys[1].items() if k != "threads"}


def test_rddrs_logs_record_the_thread_count_and_resume_refuses_another(tmp_path, capsys):
    md = ["--model-dir", str(tmp_path / "models")]
    one, two = tmp_path / "one.tsv", tmp_path / "two.tsv"
    assert main(RDDRS + md + ["--out", str(one)]) == 0
    assert main(RDDRS + md + ["--out", str(two), "--threads", "2"]) == 0
    fp1, fp2 = _fingerprint(one), _fingerprint(two)
    assert (fp1["threads"], fp2["threads"]) == (1, 2)
    assert {k for k in fp1 if fp1[k] != fp2[k]} <= {"threads", "model_hash"}
    rows = one.read_text()
    capsys.readouterr()
    assert main(RDDRS + md + ["--out", str(one), "--threads", "2"]) == 2
    assert "threads (1 -> 2)" in capsys.readouterr().err
    assert one.read_text() == rows  # refused: nothing rewritten
    # the same command at the same count resumes (nothing to do) and reproduces the log
    again = tmp_path / "again.tsv"
    assert main(RDDRS + md + ["--out", str(again)]) == 0
    assert rows_without_time(again) == rows_without_time(one)


def test_compare_in_two_processes_writes_the_one_process_logs(tmp_path):
    small = ["compare", "--dataset", "toy2d", "--sigmas", "0.1", "0.2", "--methods", "rs", "ddrs", "ancer"]
    small += ["--max-inputs", "6", "--n", "300", "--model-dir", str(tmp_path / "models"), "--quiet"]
    assert main(small + ["--out-dir", str(tmp_path / "one"), "--jobs", "1"]) == 0
    assert main(small + ["--out-dir", str(tmp_path / "two"), "--jobs", "2"]) == 0
    one = sorted((tmp_path / "one" / "toy2d" / "logs").glob("*.tsv"))
    assert len(one) == 6
    for log in one:
        assert rows_without_time(tmp_path / "two" / "toy2d" / "logs" / log.name) == rows_without_time(log), log.name
        assert _fingerprint(tmp_path / "two" / "toy2d" / "logs" / log.name) == _fingerprint(log)


def test_jobs_is_refused_where_it_cannot_apply(tmp_path, capsys):
    args = ["compare", "--dataset", "toy2d", "--jobs", "2", "--model", "nope:make", "--out-dir", str(tmp_path)]
    try:
        code = main(args)
    except SystemExit as exit:
        code = exit.code
    assert (
        code == 2 and "--jobs: only for the project's models on the CPU (not with --model)" in capsys.readouterr().err
    )
    assert not any(tmp_path.iterdir())
