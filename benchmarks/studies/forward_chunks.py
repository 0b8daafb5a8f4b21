"""Certification throughput on the CPU against the rows per network call (``certify.sampling.CPU_FORWARD_ROWS``).

``certify.sample_statistics`` draws the noise in batches of ``batch_size`` (2,000 in ``ddrs compare``) and, for a
float32 model on the CPU, evaluates each batch in near-equal chunks of at most ``CPU_FORWARD_ROWS`` rows. This study
times ``sample_statistics`` (isotropic noise, n noisy copies of one input) for the built-in networks (the
Fashion-MNIST CNN, the digits MLP, the CIFAR-shaped CNN; random weights: the time does not depend on them) at chunk
sizes from one call per batch down to 64 rows (the digits MLP too, which the library leaves unchunked: its inputs
have fewer than ``CPU_CHUNK_MIN_FEATURES`` numbers), all in one run, interleaved, best of ``repeats``, and checks
that every chunk size gives the same counts (``tests/certify/test_forward_chunks.py`` checks the logits bit for
bit). Reported: samples per second and the speed-up over one call per batch.

Writes ``runs/forward_chunks/forward_chunks.csv`` and ``.png`` (``--results``: ``benchmarks/results/``).

    python -m benchmarks.studies.forward_chunks [--n 10000] [--repeats 3] [--threads 1] [--results]
"""

from __future__ import annotations

import argparse
import time

import torch

import certify
from benchmarks.analysis.outputs import add_output_args, prepare, write_csv
from certify import sampling

#: rows per call; None = one call per noise batch (the library before chunking)
CHUNKS = (None, 1024, 512, 256, 128, 64)


def networks() -> dict[str, tuple[torch.nn.Module, tuple[int, ...]]]:
    from ddrs_app.models import make_model

    torch.manual_seed(0)
    return {
        "fashion-mnist CNN (1x28x28)": (make_model("fashion-mnist", 10, (1, 28, 28)), (1, 28, 28)),
        "digits MLP (64)": (make_model("digits", 10, (64,)), (64,)),
        "photos-32 CNN (3x32x32)": (make_model("photos-32", 10, (3, 32, 32)), (3, 32, 32)),
    }


def run(n: int, batch_size: int, repeats: int) -> list[dict]:
    rows, default, floor = [], sampling.CPU_FORWARD_ROWS, sampling.CPU_CHUNK_MIN_FEATURES
    sampling.CPU_CHUNK_MIN_FEATURES = 0  # measure the small vector model chunked too: why the library has the floor
    try:
        for name, (model, shape) in networks().items():
            model = model.float().eval()
            x = torch.rand(shape, generator=torch.Generator().manual_seed(1))
            noise = certify.IsotropicGaussian(0.25)
            best: dict = {c: float("inf") for c in CHUNKS}
            counts: dict = {}
            for _ in range(repeats):
                for c in CHUNKS:
                    sampling.CPU_FORWARD_ROWS = 10**12 if c is None else c
                    g = torch.Generator().manual_seed(0)
                    t = time.perf_counter()
                    stats = certify.sample_statistics(model, noise, x, n, 10, batch_size=batch_size, generator=g)
                    best[c] = min(best[c], time.perf_counter() - t)
                    counts[c] = stats.counts
            base = best[None]
            for c in CHUNKS:
                rows.append(
                    {
                        "network": name,
                        "rows_per_call": "one call per batch" if c is None else c,
                        "batch_size": batch_size,
                        "n": n,
                        "seconds": round(best[c], 4),
                        "samples_per_second": round(n / best[c]),
                        "speedup": round(base / best[c], 3),
                        "same_counts": bool(torch.equal(counts[c], counts[None])),
                    }
                )
    finally:
        sampling.CPU_FORWARD_ROWS, sampling.CPU_CHUNK_MIN_FEATURES = default, floor
    return rows


def plot(rows: list[dict], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    labels = [str(r) for r in dict.fromkeys(r["rows_per_call"] for r in rows)]
    for name in dict.fromkeys(r["network"] for r in rows):
        ys = [r["speedup"] for r in rows if r["network"] == name]
        ax.plot(labels, ys, marker="o", label=name)
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xlabel(f"rows per network call (noise batches of {rows[0]['batch_size']})")
    ax.set_ylabel("speed-up over one call per batch")
    ax.set_title("certification throughput on the CPU, one run, best of repeats")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.studies.forward_chunks", description=__doc__.split("\n")[0], allow_abbrev=False
    )
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--batch-size", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    add_output_args(p, "forward_chunks")
    a = p.parse_args(argv)
    csv_path, png_path = prepare("forward_chunks", ["forward_chunks.csv", "forward_chunks.png"], a.results, a.out_dir)
    torch.set_num_threads(a.threads)
    rows = run(a.n, a.batch_size, a.repeats)
    write_csv(rows, csv_path)
    plot(rows, png_path)
    for r in rows:
        print(r)
    print(f"wrote {csv_path} and {png_path}")
    return 0 if all(r["same_counts"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
