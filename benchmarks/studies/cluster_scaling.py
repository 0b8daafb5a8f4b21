"""Inputs certified per second on 1 and 2 Ray workers (one torch thread each), and in one process.

Two workloads on the digits test set with the cached sigma = 0.25 base model: RS (240 inputs, n = 100,000 samples
per input; its batches split into units of inputs) and DDRS with the memory (150 Adam steps x 64
samples, then n = 10,000; batches of 4 inputs, the unit of work). Each is run three ways in one
invocation, interleaved: the single-process runner (1 thread), a 1-worker and a 2-worker cluster, all on
one local Ray instance of 2 CPUs whose actors have loaded the model and the inputs before the clock
starts. Reported: inputs per second, the 2-worker / 1-worker ratio (target >= 1.6 on this 2-core
machine), whether each cluster log equals the single-process log (time columns aside), and the machine
load during each measurement (the 1-minute load average and the busy fraction of all cores from
/proc/stat, which includes our own processes: 2 busy workers are 100 %).

On a shared machine, ``--pause-background FILE`` stops the jobs whose pids FILE lists, one per line (and
their children) with SIGSTOP for the measured part only and resumes them with SIGCONT in a ``finally`` block;
a detached watchdog resumes them after ``--pause-limit`` seconds (default 290) even if this script dies.

    python -m benchmarks.studies.cluster_scaling [--pause-background FILE] [--quick] [--results | --out-dir DIR]

Writes ``cluster_scaling.csv`` and ``cluster_scaling.png`` to ``runs/cluster_scaling/`` (``--results``:
``benchmarks/results/``, the committed ones; ``--out-dir DIR``: elsewhere; ``benchmarks.analysis.outputs``).
"""

from __future__ import annotations

import argparse
import csv
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import torch
from ddrs_app.data import load_dataset, subset
from ddrs_app.runs import MethodConfig, fingerprint, run_certification
from ddrs_app.training import load_or_train

from benchmarks.analysis.outputs import add_output_args, prepare

RESULTS_DIR = Path(__file__).resolve().parents[1] / "results"
TARGET = 1.6
TIME_COLUMNS = ("time", "choose_seconds")


def workloads(quick: bool) -> dict[str, dict]:
    """name -> (config, run keyword arguments, number of inputs)."""
    scale = 0.1 if quick else 1.0
    return {
        "rs": dict(
            config=MethodConfig("rs", sigma=0.25),
            run=dict(n0=100, n=100_000, alpha=0.001, batch_size=10_000, opt_batch=64, seed=0),
            inputs=max(8, int(240 * scale)),
        ),
        "ddrs": dict(
            config=MethodConfig("ddrs", sigma=0.25, ddrs_options=dict(iterations=150, samples=64)),
            run=dict(n0=100, n=10_000, alpha=0.001, batch_size=10_000, opt_batch=4, seed=0),
            inputs=max(8, int(120 * scale)),
        ),
    }


# ---------------------------------------------------------------------------------- machine load
def _cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies over all cores since boot."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


def _descendants(pids: list[int]) -> list[int]:
    """``pids`` and every process below them (from /proc/*/stat)."""
    parent = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parent[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    out, frontier = [], [p for p in pids if p in parent]
    while frontier:
        p = frontier.pop()
        if p not in out:
            out.append(p)
            frontier += [c for c, pp in parent.items() if pp == p]
    return out


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)  # unwinds through the finally blocks that resume the jobs


class PausedBackground:
    """SIGSTOP the background jobs whose pids ``pids_file`` lists (and their children) inside the ``with``;
    SIGCONT after, and by a detached watchdog after ``limit`` seconds whatever happens to this process.
    ``pids_file`` None: nothing is paused."""

    def __init__(self, pids_file: Path | None, limit: float = 290.0):
        self.pids_file, self.limit, self.pids, self.watchdog = pids_file, limit, [], None

    def __enter__(self) -> PausedBackground:
        if self.pids_file is None or not self.pids_file.is_file():
            return self
        listed = []
        for line in self.pids_file.read_text().splitlines():
            head = line.split(maxsplit=1)[0] if line.strip() else ""
            if head.isdigit() and int(head) != os.getpid():
                listed.append(int(head))
        self.pids = [p for p in _descendants(listed) if p != os.getpid()]
        if not self.pids:
            return self
        plist = " ".join(str(p) for p in self.pids)
        self.watchdog = subprocess.Popen(
            ["sh", "-c", f"sleep {self.limit:.0f}; kill -CONT {plist} 2>/dev/null"], start_new_session=True
        )
        self.previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
        for p in self.pids:
            try:
                os.kill(p, signal.SIGSTOP)
            except ProcessLookupError:
                pass
        return self

    def __exit__(self, *exc) -> None:
        for p in self.pids:
            try:
                os.kill(p, signal.SIGCONT)
            except ProcessLookupError:
                pass
        if self.watchdog is not None:
            self.watchdog.kill()
            self.watchdog.wait()
            signal.signal(signal.SIGTERM, self.previous)


# ---------------------------------------------------------------------------------- measurement
def _rows(path: Path) -> list[list[str]]:
    lines = path.read_text().splitlines()
    header = lines[0].split("\t")
    drop = {header.index(c) for c in TIME_COLUMNS}
    return [[v for j, v in enumerate(ln.split("\t")) if j not in drop] for ln in lines]


def _timed(*args, **kwargs) -> dict:
    """Wall time and machine load of ``run_certification(*args, **kwargs)``."""
    load0, (busy0, total0), t0 = os.getloadavg()[0], _cpu_times(), time.perf_counter()
    run_certification(*args, progress=False, **kwargs)
    seconds = time.perf_counter() - t0
    busy1, total1 = _cpu_times()
    return {
        "seconds": seconds,
        "load_1min_before": load0,
        "load_1min_after": os.getloadavg()[0],
        "cores_busy_pct": 100.0 * (busy1 - busy0) / max(1, total1 - total0),
        "ended": time.perf_counter(),
    }


def measure(quick: bool = False, pause: Path | None = None, pause_limit: float = 290.0) -> list[dict]:
    """The rows of the CSV (one per workload and mode)."""
    import ray
    from ddrs_app.cluster import Cluster, start_local_ray

    torch.set_num_threads(1)
    model, info = load_or_train("digits", 0.25, progress=False)
    test = load_dataset("digits", "test")
    # three logical CPUs so that both clusters' actors exist throughout (an idle actor uses no core)
    start_local_ray(3)
    rows: list[dict] = []
    work = workloads(quick)
    tmp = Path(tempfile.mkdtemp(prefix="cluster_scaling_"))
    clusters = {w: Cluster(w) for w in (1, 2)}
    try:
        for cl in clusters.values():
            cl.start()
            cl.register_cache_file(model, info["path"])
        with PausedBackground(pause, pause_limit) as paused:
            started = time.perf_counter()
            for name, spec in work.items():
                config, run, data = spec["config"], spec["run"], subset(test, 1, spec["inputs"])
                single = tmp / f"{name}_single.tsv"
                row = _timed(config, model, data, single, **run)
                rows.append(dict(workload=name, mode="single process", workers=0, **row))
                fp = fingerprint(config, model, data, memory=True, **run)
                for w, cl in clusters.items():
                    cl.prepare(model, data, fp)  # every actor holds the model and the inputs: not timed
                    out = tmp / f"{name}_{w}.tsv"
                    row = _timed(config, model, data, out, cluster=cl, **run)
                    row.update(workload=name, mode=f"{w} worker" + "s" * (w > 1), workers=w)
                    rows.append(dict(row, log_identical=_rows(out) == _rows(single)))
            measured = time.perf_counter() - started
            paused_jobs = len(paused.pids)
    finally:
        for cl in clusters.values():
            cl.stop()
        ray.shutdown()
    for r in rows:  # the watchdog resumed the jobs at `pause_limit`: later measurements had them running
        r["paused_throughout"] = bool(paused_jobs) and r.pop("ended") - started <= pause_limit
    for name, spec in work.items():
        mine = {r["mode"]: r for r in rows if r["workload"] == name}
        one = spec["inputs"] / mine["1 worker"]["seconds"]
        for r in mine.values():
            r["inputs"] = spec["inputs"]
            r["threads_per_process"] = 1
            r["inputs_per_second"] = spec["inputs"] / r["seconds"]
            r["speedup_vs_1_worker"] = r["inputs_per_second"] / one
            r["background_jobs_paused"] = paused_jobs
            r["measured_seconds_total"] = measured
            r.setdefault("log_identical", "")
    return rows


COLUMNS = [
    "workload",
    "mode",
    "workers",
    "threads_per_process",
    "inputs",
    "seconds",
    "inputs_per_second",
    "speedup_vs_1_worker",
    "log_identical",
    "load_1min_before",
    "load_1min_after",
    "cores_busy_pct",
    "background_jobs_paused",
    "paused_throughout",
    "measured_seconds_total",
]


def write(rows: list[dict], out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, png_path = out_dir / "cluster_scaling.csv", out_dir / "cluster_scaling.png"
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{r[k]:.4g}" if isinstance(r[k], float) else r[k]) for k in COLUMNS})
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["workload"] for r in rows))
    modes = list(dict.fromkeys(r["mode"] for r in rows))
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 4))
    width = 0.8 / len(modes)
    for k, mode in enumerate(modes):
        vals = [next(r["inputs_per_second"] for r in rows if r["workload"] == n and r["mode"] == mode) for n in names]
        ax.bar([i + k * width for i in range(len(names))], vals, width, label=mode)
    ax.set_xticks([i + width * (len(modes) - 1) / 2 for i in range(len(names))], names)
    ax.set_ylabel("inputs certified per second")
    ax.set_title("digits, 1 torch thread per process")
    ax.legend()
    for n in names:
        pts = sorted((r["workers"], r["speedup_vs_1_worker"]) for r in rows if r["workload"] == n and r["workers"])
        bx.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=n)
    bx.plot([1, 2], [1, 2], ":", color="grey", label="linear")
    bx.axhline(TARGET, color="red", lw=0.8, ls="--", label=f"target {TARGET}x at 2 workers")
    bx.set_xticks([1, 2])
    bx.set_xlabel("Ray workers")
    bx.set_ylabel("speed-up over 1 worker")
    load = max(r["cores_busy_pct"] for r in rows)
    bx.set_title(f"2-core machine (busiest measurement: {load:.0f} % of both cores)")
    bx.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return csv_path, png_path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    p.add_argument("--quick", action="store_true", help="a tenth of the inputs (a smoke run)")
    p.add_argument(
        "--pause-background", type=Path, default=None, metavar="FILE", help="SIGSTOP the jobs FILE lists meanwhile"
    )
    p.add_argument("--pause-limit", type=float, default=290.0, help="seconds after which they resume regardless")
    add_output_args(p, "cluster_scaling")
    args = p.parse_args(argv)
    csv_path, _ = prepare("cluster_scaling", ["cluster_scaling.csv", "cluster_scaling.png"], args.results, args.out_dir)
    out_dir = csv_path.parent
    rows = measure(args.quick, args.pause_background, args.pause_limit)
    for r in rows:
        print(
            f"{r['workload']:5s} {r['mode']:15s} {r['inputs_per_second']:7.2f} inputs/s  "
            f"x{r['speedup_vs_1_worker']:.2f}  busy {r['cores_busy_pct']:.0f} %  identical={r['log_identical']}"
        )
    print("wrote " + ", ".join(str(f) for f in write(rows, out_dir)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
