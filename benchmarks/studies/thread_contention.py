"""CPU time of ``ddrs compare`` on an idle machine and beside a busy loop on every core, per thread count.

Torch's CPU thread pool (OpenMP) spins while it waits for work; with tiny networks a run with more
threads than free cores burns its CPU time spinning whenever another process holds a core. This script
runs the quick-start ``ddrs compare`` (digits and toy2d, every method, empty model cache: training
included) as a child process

* idle, and
* beside ``busy`` processes that each spin on one core (``while True: pass``), one per core,

at the default (``--threads 1``, one process per core: ``--jobs`` default), at one thread in one process,
and at ``--threads 2`` in one process (what torch takes on a 2-core machine when nobody sets it: the
behaviour before the thread count was fixed), and reports each run's wall time and CPU time (user +
system of the child and its children) and the ratio busy / idle per setting. Target: busy / idle CPU
time <= 1.5 at the default, with the idle wall time no worse than the 2-thread run's.

    python -m benchmarks.studies.thread_contention [--quick] [--results | --out-dir DIR]

Writes ``thread_contention.csv`` and ``thread_contention.png``.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.analysis.outputs import add_output_args, prepare

COMPARE = ["compare", "--quiet"]
#: (threads, jobs) run idle; None: the command's default. (2, 1) is what ran before the thread count was
#: fixed: torch's own default (one thread per core) in one process.
SETTINGS = [(1, None), (1, 1), (2, 1)]
BUSY_SETTINGS = [(1, None), (2, 1)]
QUICK = ["compare", "--quiet", "--dataset", "toy2d", "--methods", "rs", "ddrs", "--sigmas", "0.1", "--max-inputs", "20"]
BUSY = "while True:\n    pass\n"


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _process_cpu(pid: int) -> float:
    """User + system seconds of a live process and its reaped children (Linux ``/proc/PID/stat``)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def run_compare(args: list[str], threads: int, jobs: int | None, busy: int, timeout: float | None = None) -> dict:
    """One ``ddrs compare`` in a child process with an empty model cache and out-dir, beside ``busy``
    spinning processes; its wall and CPU seconds (the spinners' CPU is not counted: they are killed and
    reaped after the compare's usage is read). ``jobs`` None: the command's default. A run still going after
    ``timeout`` seconds is stopped and reported with the CPU time it had used (``complete`` False: a lower
    bound)."""
    spinners = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(busy)]
    try:
        time.sleep(0.5 if busy else 0.0)
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, "-m", "ddrs_app.cli", *args, "--threads", str(threads)]
            cmd += [] if jobs is None else ["--jobs", str(jobs)]
            cmd += ["--model-dir", f"{tmp}/models", "--out-dir", f"{tmp}/out"]
            before = _children_cpu()
            start = time.perf_counter()
            child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
            try:
                child.wait(timeout=timeout)
                complete = True
            except subprocess.TimeoutExpired:  # a run that spins for ever: its CPU so far, a lower bound
                complete, cut_cpu = False, _process_cpu(child.pid)
                child.kill()
                child.wait()
            wall = time.perf_counter() - start
            cpu = _children_cpu() - before if complete else cut_cpu
            if complete and child.returncode != 0:
                raise subprocess.CalledProcessError(child.returncode, cmd)
    finally:
        for p in spinners:
            p.kill()
        for p in spinners:
            p.wait()
    return {"setting": _name(threads, jobs), "threads": threads, "jobs": "default" if jobs is None else jobs,
            "busy_processes": busy, "wall_s": wall, "cpu_s": cpu, "complete": complete}  # fmt: skip


def _name(threads: int, jobs: int | None) -> str:
    if jobs is None:
        return (
            f"{threads} thread{'s' * (threads > 1)}, default jobs (the default)"
            if threads == 1
            else f"{threads} threads"
        )
    return f"{threads} thread{'s' * (threads > 1)} x {jobs} job{'s' * (jobs > 1)}"


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6), constrained_layout=True)
    labels = [
        f"{r['threads']} thread{'s' * (r['threads'] > 1)}\n{'busy' if r['busy_processes'] else 'idle'}" for r in rows
    ]
    x = range(len(rows))
    ax.bar([i - 0.2 for i in x], [r["cpu_s"] for r in rows], width=0.4, label="CPU time (s)")
    ax.bar([i + 0.2 for i in x], [r["wall_s"] for r in rows], width=0.4, label="wall time (s)")
    ax.set_xticks(list(x), labels)
    ax.set_ylabel("seconds")
    ax.set_title("ddrs compare idle and beside a busy loop on every core")
    ax.legend()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("--quick", action="store_true", help="a small toy2d compare instead of the quick start")
    parser.add_argument(
        "--busy-timeout", type=float, default=1200.0, help="stop a busy run after this many seconds (default 1200)"
    )
    add_output_args(parser, "thread_contention")
    a = parser.parse_args(argv)
    csv_path, png_path = prepare(
        "thread_contention", ["thread_contention.csv", "thread_contention.png"], a.results, a.out_dir
    )
    cores = os.cpu_count() or 1
    args = QUICK if a.quick else COMPARE
    rows = []
    for busy, settings in ((0, SETTINGS), (cores, BUSY_SETTINGS)):  # the idle runs first, back to back
        for threads, jobs in settings:
            row = run_compare(args, threads, jobs, busy, timeout=a.busy_timeout if busy else None)
            rows.append(row)
            print(f"{row['setting']}, {busy} busy processes: wall {row['wall_s']:.1f} s, CPU {row['cpu_s']:.1f} s")
        print("idle runs done" if not busy else "busy runs done", flush=True)
    idle = {r["setting"]: r for r in rows if r["busy_processes"] == 0}
    for r in rows:
        r["cpu_vs_idle"] = r["cpu_s"] / idle[r["setting"]]["cpu_s"]
        r["wall_vs_idle"] = r["wall_s"] / idle[r["setting"]]["wall_s"]
        r["command"] = "ddrs " + " ".join(args)
        r["machine"] = f"{platform.machine()}, {cores} cores"
    rows.sort(key=lambda r: (r["setting"], r["busy_processes"]))
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.3f}" if isinstance(v, float) else v) for k, v in r.items()})
    plot(rows, png_path)
    for r in rows:
        if r["busy_processes"]:
            print(f"{r['setting']}: busy / idle CPU time {r['cpu_vs_idle']:.2f} (target <= 1.5 at the default)")
    print(f"wrote {csv_path} and {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
