"""The scaling benchmark's pause of background jobs: stopped inside, resumed after, and resumed by the
watchdog even when the benchmark never gets to resume them (it died)."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from benchmarks.studies import cluster_scaling


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def _wait_state(pid: int, want: str, timeout: float = 10.0) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline and _state(pid) != want:
        time.sleep(0.02)
    return _state(pid)


def test_background_jobs_are_stopped_inside_and_resumed_after_even_without_exit(tmp_path, monkeypatch):
    job = subprocess.Popen(["sh", "-c", "sleep 60 & wait"])  # a job with a child
    try:
        time.sleep(0.2)
        child = cluster_scaling._descendants([job.pid])[1]
        pids = tmp_path / "bg-pids.txt"
        pids.write_text(f"{job.pid} someone a long job\n\nnot-a-pid line\n")
        with cluster_scaling.PausedBackground(pids, limit=30) as paused:
            assert sorted(paused.pids) == sorted([job.pid, child])
            assert _wait_state(job.pid, "T") == "T" and _wait_state(child, "T") == "T"
        assert _wait_state(job.pid, "S") == "S" and _wait_state(child, "S") == "S"
        # the benchmark dies inside: no __exit__, the detached watchdog resumes the jobs after `limit`
        abandoned = cluster_scaling.PausedBackground(pids, limit=1).__enter__()
        assert _wait_state(job.pid, "T") == "T"
        assert _wait_state(job.pid, "S", timeout=15) == "S" and _wait_state(child, "S") == "S"
        abandoned.watchdog.wait()
        signal.signal(signal.SIGTERM, abandoned.previous)
        disabled = cluster_scaling.PausedBackground(None).__enter__()
        assert disabled.pids == [] and _state(job.pid) == "S"
    finally:
        for p in cluster_scaling._descendants([job.pid])[::-1]:
            subprocess.run(["kill", "-CONT", str(p)])
            subprocess.run(["kill", str(p)])
        job.wait()
