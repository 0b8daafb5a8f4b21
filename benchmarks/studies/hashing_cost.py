"""What fingerprints cost a ``ddrs compare``: hashing the inputs and the models, measured in one run.

Every log and out-dir carries a fingerprint: a sha256 of the inputs certified and of the model,
and the model cache is keyed on a sha256 of the training data. This script runs ``ddrs compare``
workloads (cached models, fresh out-dirs) with every ``dataset_hash`` / ``model_hash`` call timed, and
the training-set loads that only feed the cache key timed too, so that the ratio

    hashing seconds / compare seconds          (and: hashing + those loads / compare seconds)

comes from the same run. Target: <= 2 %.

    python -m benchmarks.studies.hashing_cost [--quick] [--results | --out-dir DIR]

Writes ``hashing_cost.csv`` and ``hashing_cost.png`` to ``runs/hashing_cost/`` (``--results``:
``benchmarks/results/``).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from ddrs_app import compare, runs, training

from benchmarks.analysis.outputs import add_output_args, prepare, pyplot, write_csv

#: (name, ddrs compare arguments); models are trained/cached before the timed run.
WORKLOADS = {
    "digits (rs ddrs ancer rddrs, sigma 0.25, 50 inputs, n 10,000)": (
        "digits",
        ["--dataset", "digits", "--methods", "rs", "ddrs", "ancer", "rddrs", "--sigmas", "0.25"],
    ),
    "toy2d (rs ddrs ancer rddrs, sigma 0.1, 60 inputs, n 10,000)": (
        "toy2d",
        ["--dataset", "toy2d", "--methods", "rs", "ddrs", "ancer", "rddrs", "--sigmas", "0.1"],
    ),
    "fashion-mnist (rs ddrs, sigma 0.25, 10 inputs, n 10,000)": (
        "fashion-mnist",
        ["--dataset", "fashion-mnist", "--methods", "rs", "ddrs", "--sigmas", "0.25", "--max-inputs", "10"],
    ),
}
QUICK = {"toy2d (rs ddrs, sigma 0.1, 20 inputs, n 2,000)": ("toy2d", ["--dataset", "toy2d", "--methods", "rs", "ddrs",
         "--sigmas", "0.1", "--max-inputs", "20", "--n", "2000"])}  # fmt: skip


class Timer:
    """Seconds and calls spent in wrapped functions (nested calls counted once)."""

    def __init__(self):
        self.seconds, self.calls, self._depth = 0.0, 0, 0

    def wrap(self, fn):
        def timed(*args, **kwargs):
            if self._depth:
                return fn(*args, **kwargs)
            self._depth += 1
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start
                self.calls += 1
                self._depth -= 1

        return timed


@contextmanager
def instrumented():
    """Time every dataset_hash / model_hash call (wherever imported) and every training-set load made
    by ``load_or_train`` (with a cached model it only feeds the cache key)."""
    hashing, loads = Timer(), Timer()
    patches = []
    for module in (training, runs, compare):
        for name in ("dataset_hash", "model_hash"):
            if hasattr(module, name):
                patches.append((module, name, getattr(module, name)))
    real_load = training.load_dataset

    def load(name, split, *args, **kwargs):
        return (loads.wrap(real_load) if split == "train" else real_load)(name, split, *args, **kwargs)

    try:
        for module, name, fn in patches:
            setattr(module, name, hashing.wrap(fn))
        training.load_dataset = load
        yield hashing, loads
    finally:
        for module, name, fn in patches:
            setattr(module, name, fn)
        training.load_dataset = real_load


def measure(workloads: dict) -> list[dict]:
    from ddrs_app.cli import DEFAULT_SIGMAS, main

    rows = []
    for label, (dataset, argv) in workloads.items():
        sigmas = [float(s) for s in argv[argv.index("--sigmas") + 1 :][:1]] or list(DEFAULT_SIGMAS[dataset])
        for sigma in sigmas:  # train / load the models outside the timed run
            training.load_or_train(dataset, sigma, progress=False)
        with tempfile.TemporaryDirectory() as tmp, instrumented() as (hashing, loads):
            start = time.perf_counter()
            code = main(["compare", *argv, "--out-dir", tmp, "--quiet", "--device", "cpu"])
            total = time.perf_counter() - start
        if code != 0:
            raise SystemExit(f"ddrs compare {' '.join(argv)} exited with {code}")
        rows.append(
            {
                "workload": label,
                "compare_seconds": round(total, 3),
                "hash_calls": hashing.calls,
                "hash_seconds": round(hashing.seconds, 4),
                "train_loads": loads.calls,
                "train_load_seconds": round(loads.seconds, 4),
                "hash_share_pct": round(100 * hashing.seconds / total, 3),
                "hash_and_load_share_pct": round(100 * (hashing.seconds + loads.seconds) / total, 3),
                "torch_threads": torch.get_num_threads(),
                "load_average": round(os.getloadavg()[0], 2),
                "machine": f"{platform.machine()} x{os.cpu_count()}",
            }
        )
        r = rows[-1]
        print(
            f"{label}: compare {total:.1f} s; hashing {r['hash_seconds']:.3f} s in {r['hash_calls']} calls "
            f"({r['hash_share_pct']:.2f} %); with the cache-key training-set loads "
            f"{r['hash_and_load_share_pct']:.2f} %",
            flush=True,
        )
    return rows


def write(rows: list[dict], csv_path: Path, png_path: Path) -> None:
    write_csv(rows, csv_path)
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(8, 0.9 + 0.7 * len(rows)))
    names = [r["workload"] for r in rows]
    y = range(len(rows))
    ax.barh([i + 0.2 for i in y], [r["hash_share_pct"] for r in rows], 0.4, label="hashing (inputs, models, data)")
    ax.barh(
        [i - 0.2 for i in y],
        [r["hash_and_load_share_pct"] for r in rows],
        0.4,
        label="hashing + training-set loads for the cache key",
    )
    ax.axvline(2.0, color="red", ls="--", label="target 2 %")
    ax.set_yticks(list(y), names, fontsize=8)
    ax.set_xlabel("% of the ddrs compare wall time (same run)")
    ax.set_title("Fingerprint cost in ddrs compare (1 torch thread)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    p.add_argument("--quick", action="store_true", help="one small toy2d workload (a smoke run)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    add_output_args(p, "hashing_cost")
    args = p.parse_args(argv)
    csv_path, png_path = prepare("hashing_cost", ["hashing_cost.csv", "hashing_cost.png"], args.results, args.out_dir)
    torch.set_num_threads(args.threads)
    rows = measure(QUICK if args.quick else WORKLOADS)
    write(rows, csv_path, png_path)
    print(f"wrote {csv_path} and {png_path}")
    return 0 if all(r["hash_share_pct"] <= 2.0 for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
