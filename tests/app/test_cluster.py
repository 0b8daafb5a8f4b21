"""Certification on a local 2-worker Ray cluster: the single-process log, byte for byte
apart from the time columns; every idx exactly once when a worker dies or raises; resume after the
driver is killed; Ray never imported without --workers."""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from ddrs_app.cli import main  # noqa: E402
from ddrs_app.cluster import CachedModel, Cluster, ClusterError, Unit, plan_units, start_local_ray  # noqa: E402
from ddrs_app.data import BadInput, load_dataset, subset  # noqa: E402
from ddrs_app.runs import FingerprintMismatch, MethodConfig, plan_batches, run_certification  # noqa: E402
from ddrs_app.training import load_or_train, model_hash  # noqa: E402
from test_runs import rows_without_time  # noqa: E402

# the fault-injecting loaders below run on the workers: ship this module's functions by value
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

DD = dict(iterations=3, samples=8)
RUN = dict(n0=50, n=400, alpha=0.001, batch_size=400, opt_batch=2, seed=1, progress=False)
CONFIGS = {
    "rs": MethodConfig("rs", sigma=0.1),
    "ddrs": MethodConfig("ddrs", sigma=0.1, ddrs_options=DD),
    "ancer": MethodConfig("ancer", sigma=0.1, ddrs_options=DD, options=dict(DD)),
    "rddrs": MethodConfig(
        "rddrs", sigma=0.1, ddrs_options=DD, options=dict(DD, warm_start="ancer", ancer_options=dict(DD))
    ),
    "mog": MethodConfig("mog", sigma=0.1, sigmas=(0.05, 0.1)),
}


@pytest.fixture(scope="module")
def ray_address():
    """One local Ray instance for the module (2 CPUs, no dashboard)."""
    start_local_ray(2)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def cluster(ray_address):
    """Two workers (1 thread each) for the module's tests; a test that needs the CPUs pauses them."""
    with Cluster(2) as cl:
        yield cl


@contextlib.contextmanager
def paused(cluster):
    """The module cluster's actors stopped (their CPUs free for another driver), then restarted."""
    cluster.stop()
    try:
        yield
    finally:
        cluster.start()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    md = tmp_path_factory.mktemp("models")
    toy, toy_info = load_or_train("toy2d", 0.1, model_dir=str(md), progress=False)
    digits, digits_info = load_or_train("digits", 0.25, epochs=2, model_dir=str(md), progress=False)
    return {
        "toy2d": (toy, subset(load_dataset("toy2d", "test"), 40, 7), toy_info["path"]),
        "digits": (digits, subset(load_dataset("digits", "test"), 9, 7), digits_info["path"]),
        "dir": str(md),
    }


def _single_and_cluster(cluster, model, data, tmp_path, methods, **kw):
    """Logs of each method (a comparison chain sharing stages) without and with the cluster."""
    logs = {}
    for where, cl in (("single", None), ("cluster", cluster)):
        star, theta = {}, {}
        for m in methods:
            out = tmp_path / where / f"{m}.tsv"
            run = dict(RUN, **kw)
            logs[where, m] = run_certification(
                CONFIGS[m], model, data, out, sigma_star_cache=star, stage_cache=theta, cluster=cl, **run
            )
    return logs


@pytest.mark.parametrize("dataset", ["toy2d", "digits"])
def test_cluster_logs_equal_the_single_process_logs(cluster, models, tmp_path, dataset):
    model, data, path = models[dataset]
    methods = ["rs", "ddrs", "ancer", "rddrs"] + (["mog"] if dataset == "toy2d" else [])
    cluster.register_cache_file(model, path)
    logs = _single_and_cluster(cluster, model, data, tmp_path, methods)
    held = ray.get([a.loaded.remote() for a in cluster.actors])
    for m in methods:
        single, distributed = logs["single", m], logs["cluster", m]
        assert rows_without_time(distributed) == rows_without_time(single), m
        assert len(rows_without_time(single)) == 1 + len(data)
    # the memory-based certifier ran (data-dependent methods) and the region files agree
    header = rows_without_time(logs["single", "rddrs"])[0]
    actions = [r[header.index("memory_action")] for r in rows_without_time(logs["cluster", "rddrs"])[1:]]
    assert set(actions) <= {"kept", "shrunk", "adopted", "abstained"} and actions
    for m in ("ddrs", "rddrs"):
        single_regions = sorted(p.name for p in Path(str(logs["single", m]) + ".regions").iterdir())
        assert single_regions == sorted(p.name for p in Path(str(logs["cluster", m]) + ".regions").iterdir())
        assert len(single_regions) == len(data)
    # one replica per actor, loaded once from the cache file
    assert all(model_hash(model) in h for h in held)
    # sequential certification (its samples and decision columns) is the same on the cluster too
    seq = {}
    for where, cl in (("single", None), ("cluster", cluster)):
        seq[where] = run_certification(
            CONFIGS["ddrs"], model, data, tmp_path / f"seq-{where}.tsv", radii=(0.05, 0.1), cluster=cl, **RUN
        )
    assert rows_without_time(seq["cluster"]) == rows_without_time(seq["single"])
    assert "samples" in rows_without_time(seq["single"])[0]


def test_rs_batches_split_into_units_with_the_same_seeds(models):
    _, data, _ = models["toy2d"]
    batches = [(p, p) for p in plan_batches(data, 64)]
    units = plan_units("rs", batches, lambda p: (None, None), 2)
    assert [u.certify for u in units] == [[0], [1], [2], [3], [4], [5], [6]]  # ceil(7 / 8) = 1 per unit
    assert all(u.positions == list(range(7)) for u in units)  # the batch (its seed) is unchanged
    dd = plan_units("ddrs", [([0, 1], [1]), ([2, 3], [])], lambda p: ([0.1] * 2, None), 2)
    assert dd == [Unit([0, 1], [1], [0.1, 0.1], None)]  # a finished batch is not sent again


def _watch(out: Path, rows: int, then, timeout: float = 300.0) -> threading.Thread:
    def run():
        deadline = time.time() + timeout
        while time.time() < deadline and (not out.is_file() or out.read_text().count("\n") < 1 + rows):
            time.sleep(0.005)
        then()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_killed_worker_loses_nothing_and_duplicates_nothing(cluster, models, tmp_path):
    model, data, _ = models["digits"]
    config = CONFIGS["ddrs"]
    # about a second per batch, one input per batch: after the first row, six batches are left for two
    # workers, so the victim is busy when it is killed, whatever ran before (the order is shuffled in CI)
    run = dict(RUN, n=40000, batch_size=4000, opt_batch=1)
    single = run_certification(config, model, data, tmp_path / "single.tsv", **run)
    out = tmp_path / "killed.tsv"
    failures, victim = cluster.failures, cluster.actors[1]
    watcher = _watch(out, 1, lambda: ray.kill(victim))
    run_certification(config, model, data, out, cluster=cluster, **run)
    watcher.join()
    assert cluster.failures == failures + 1 and victim not in cluster.actors and len(cluster.actors) == 2
    rows = rows_without_time(out)
    assert [int(r[0]) for r in rows[1:]] == data.indices.tolist()  # every idx exactly once, in order
    assert rows == rows_without_time(single)


def _flaky_forward(forward, flag: str, x):
    try:
        os.close(os.open(flag, os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return forward(x)
    raise RuntimeError("injected fault: the first forward pass on the cluster fails")


def _flaky_loader(path: str, flag: str):
    model = CachedModel(path)()
    model.forward = functools.partial(_flaky_forward, model.forward, flag)  # same weights, same hash
    return model


def _always_fails(path: str):
    raise OSError("this node cannot read the checkpoint")


def _flaky_scaled_loader(path: str, flag: str, scale: float):
    model = _flaky_loader(path, flag)
    next(model.parameters()).data.mul_(scale)
    return model


def test_a_batch_that_raises_is_retried_a_foreign_model_refused_a_hopeless_batch_stops(cluster, models, tmp_path):
    model, data, path = models["toy2d"]
    config = CONFIGS["ancer"]
    single = run_certification(config, model, data, tmp_path / "single.tsv", **RUN)
    flag = tmp_path / "fault.flag"
    other = copy.deepcopy(model)  # weights no worker holds yet
    next(other.parameters()).data.mul_(1.5)
    cluster.register(other, functools.partial(_flaky_loader, path, str(flag)))
    # (the flaky loader returns the cached weights: their hash is not `other`'s) -> refused, not retried
    with pytest.raises(FingerprintMismatch, match="is not the run's"):
        run_certification(config, other, data, tmp_path / "foreign.tsv", cluster=cluster, **RUN)
    assert (tmp_path / "foreign.tsv").read_text().count("\n") == 1  # the header only
    # a forward pass raising on one worker: the batch is retried on another, the log is unchanged
    third = copy.deepcopy(model)
    next(third.parameters()).data.mul_(0.5)
    flaky = functools.partial(_flaky_scaled_loader, path, str(flag), 0.5)
    cluster.register(third, flaky)
    single = run_certification(config, third, data, tmp_path / "single3.tsv", **RUN)
    failures = cluster.failures
    out = run_certification(config, third, data, tmp_path / "raised.tsv", cluster=cluster, **RUN)
    assert flag.is_file() and cluster.failures == failures  # the actor lived on
    assert rows_without_time(out) == rows_without_time(single)
    # a batch that fails on every attempt stops the run with its error
    cluster.max_attempts, attempts = 2, cluster.max_attempts
    fourth = copy.deepcopy(model)
    next(fourth.parameters()).data.mul_(0.25)
    cluster.register(fourth, functools.partial(_always_fails, path))
    try:
        with pytest.raises(ClusterError, match="failed on 2 attempts.*cannot read the checkpoint"):
            run_certification(CONFIGS["rs"], fourth, data, tmp_path / "x.tsv", cluster=cluster, **RUN)
    finally:
        cluster.max_attempts = attempts


def test_a_killed_driver_resumes_on_the_cluster(cluster, ray_address, models, tmp_path):
    """The driver (another process, joining this Ray cluster) is SIGKILLed mid-run; rerun here, the
    log ends as the single-process one, every idx once, with the memory rebuilt from region files."""
    model, data, path = models["digits"]
    config = CONFIGS["rddrs"]
    out = tmp_path / "resumed.tsv"
    script = f"""
import sys
import torch
torch.set_num_threads(1)  # the test session's count (tests/conftest.py): the fixture's cached model
from ddrs_app.cluster import Cluster
from ddrs_app.data import load_dataset, subset
from ddrs_app.training import load_or_train
from ddrs_app.runs import MethodConfig, run_certification
model, info = load_or_train("digits", 0.25, epochs=2, model_dir={models["dir"]!r}, progress=False)
data = subset(load_dataset("digits", "test"), 9, 7)
config = MethodConfig("rddrs", sigma=0.1, ddrs_options={DD!r}, options={CONFIGS["rddrs"].options!r})
run = dict({RUN!r}, n=40000, batch_size=4000)
with Cluster(2, address={ray_address!r}) as cluster:
    run_certification(config, model, data, {str(out)!r}, cluster=cluster, **run)
"""
    env = dict(os.environ, PYTHONPATH=os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with paused(cluster):  # the other driver's two actors take the two CPUs
        proc = subprocess.Popen([sys.executable, "-c", script], env=env)
        deadline = time.time() + 300
        while time.time() < deadline and (not out.is_file() or out.read_text().count("\n") < 3):
            assert proc.poll() is None, "the driver ended before it was killed"
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    rows_at_kill = out.read_text().count("\n") - 1
    assert 2 <= rows_at_kill < len(data)
    run = dict(RUN, n=40000, batch_size=4000)
    full = run_certification(config, model, data, tmp_path / "full.tsv", **run)
    # resumed here: the killed driver's actors died with it (Ray: an actor's owner died)
    resumed = run_certification(config, model, data, out, cluster=cluster, **run)
    assert rows_without_time(resumed) == rows_without_time(full)


def test_cli_certify_and_compare_with_workers_write_the_single_process_logs(cluster, ray_address, models, tmp_path):
    md = models["dir"]
    base = ["certify", "--dataset", "toy2d", "--method", "ddrs", "--sigma", "0.1", "--model-dir", md]
    base += ["--every", "40", "--max-inputs", "5", "--n", "300", "--iterations", "3", "--samples", "8", "--quiet"]
    small = ["compare", "--dataset", "toy2d", "--sigmas", "0.1", "--methods", "rs", "ddrs", "--max-inputs", "4"]
    small += ["--n", "200", "--model-dir", md, "--quiet"]
    assert main(base + ["--out", str(tmp_path / "one.tsv")]) == 0
    assert main(small + ["--out-dir", str(tmp_path / "c1")]) == 0
    with paused(cluster):  # the commands start their own two workers (in this process's Ray)
        assert main(base + ["--out", str(tmp_path / "two.tsv"), "--workers", "2", "--ray-address", ray_address]) == 0
        assert main(small + ["--out-dir", str(tmp_path / "c2"), "--workers", "2"]) == 0
    assert ray.is_initialized()  # a command that joined Ray leaves it as it found it
    assert rows_without_time(tmp_path / "two.tsv") == rows_without_time(tmp_path / "one.tsv")
    for name in ("rs_sigma0.1.tsv", "ddrs_sigma0.1.tsv"):
        one, two = (tmp_path / c / "toy2d" / "logs" / name for c in ("c1", "c2"))
        assert rows_without_time(two) == rows_without_time(one), name


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--ray-address", "auto"], "--ray-address: only used with --workers"),
        (["--threads", "0"], "--threads must be >= 1"),
        (["--workers", "2", "--device", "mps"], "--device: mps cannot be shared by Ray workers"),
        (["--workers", "0"], "--workers must be >= 1"),
    ],
)
def test_cluster_options_are_checked_before_anything_runs(tmp_path, capsys, extra, message):
    args = ["certify", "--dataset", "toy2d", "--method", "rs", "--out", str(tmp_path / "x.tsv")]
    try:
        code = main(args + extra)
    except SystemExit as exit:
        code = exit.code
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "x.tsv").exists()
    with pytest.raises(BadInput, match="--threads"):
        Cluster(2, threads=0)


def test_without_workers_ray_is_never_imported(tmp_path, models):
    code = f"""
import sys
from ddrs_app.cli import main
assert main(["certify", "--dataset", "toy2d", "--method", "ddrs", "--sigma", "0.1", "--model-dir", {models["dir"]!r},
             "--every", "40", "--max-inputs", "2", "--n", "100", "--iterations", "2", "--quiet",
             "--out", {str(tmp_path / "plain.tsv")!r}]) == 0
assert "ray" not in sys.modules, "ray was imported"
print("no ray")
"""
    env = dict(os.environ, PYTHONPATH=os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0 and "no ray" in done.stdout, done.stderr[-2000:]


def test_rddrs_on_two_workers_writes_the_single_process_log_training_included(cluster, ray_address, tmp_path):
    """An RDDRS run on digits (fresh model cache: the base model is trained in the command) gives the same
    log on one process and on two workers, at the default thread count, and the same fingerprint."""
    base = ["certify", "--dataset", "digits", "--method", "rddrs", "--sigma", "0.25", "--every", "45"]
    base += ["--max-inputs", "4", "--n", "300", "--iterations", "3", "--samples", "16", "--quiet"]
    one, two = tmp_path / "one.tsv", tmp_path / "two.tsv"
    assert main(base + ["--model-dir", str(tmp_path / "m1"), "--out", str(one)]) == 0
    with paused(cluster):
        args = ["--model-dir", str(tmp_path / "m2"), "--out", str(two), "--workers", "2", "--ray-address", ray_address]
        assert main(base + args) == 0
    assert rows_without_time(two) == rows_without_time(one)
    fp = [json.loads(Path(str(p) + ".fingerprint.json").read_text()) for p in (one, two)]
    assert fp[0]["threads"] == 1 and fp[0] == fp[1]
