"""Throughput of ``certify.Smooth.certify`` relative to bare forward passes.

For the small CNN on 28x28 inputs (d = 784) and n = 10,000 estimation samples (plus n0 = 100
selection samples), prints the wall time of ``Smooth(model, noise, 10).certify`` divided by the
wall time of the same number of bare forward passes (pre-built inputs, same batch sizes, no
noise), for isotropic, diagonal and full-covariance noise. Both are measured in one run,
interleaved, best of k. Targets: <= 1.10 isotropic and diagonal, <= 1.5 full covariance.
Also reported: ``ratio_inline_median``, certify's wall time divided by the time its own forward
passes took inside that call (median over repeats; robust to load changing between the bare and
the certify measurement on a shared machine), and the time of drawing the noise alone (``noise.sample`` for the same batches), which
is the main overhead certify adds on top of the forward passes.

Writes ``runs/certify_throughput/certify_throughput.csv`` and ``.png`` (``--results``: ``benchmarks/results/``) (matplotlib, Agg). When a
target is missed, a cProfile of that certify call is printed.

The model is the cached fashion-mnist sigma=0.25 SmallCNN (``ddrs_app.training.load_or_train``)
on test image 0 when that cache file exists, else a randomly initialised ``SmallCNN`` on a random
input (timing does not depend on the weights, only on whether certify abstains).

    python3 -m benchmarks.studies.certify_throughput [--quick] [--n 10000] [--batch-size 1000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import cProfile
import csv
import io
import math
import pstats
import time
from pathlib import Path

import torch

from benchmarks.analysis.outputs import add_output_args, prepare

TARGETS = {"isotropic": 1.10, "diagonal": 1.10, "full": 1.5}
RESULTS_DIR = Path(__file__).resolve().parents[1] / "results"


def _batches(n0: int, n: int, batch_size: int) -> list[int]:
    """The batch sizes certify uses: n0 in chunks, then n in chunks."""
    out = []
    for total in (n0, n):
        while total > 0:
            b = min(batch_size, total)
            out.append(b)
            total -= b
    return out


def make_noises(d: int, seed: int = 0) -> dict:
    from certify import DiagonalGaussian, FullGaussian, IsotropicGaussian

    g = torch.Generator().manual_seed(seed)
    theta = 0.1 + 0.4 * torch.rand(d, generator=g, dtype=torch.float64)
    Q, R = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    Q = Q * torch.sign(torch.diagonal(R))[None, :]
    lam = 0.1 + 0.4 * torch.rand(d, generator=g, dtype=torch.float64)
    C = (Q * lam[None, :]) @ Q.T
    return {"isotropic": IsotropicGaussian(0.25), "diagonal": DiagonalGaussian(theta), "full": FullGaussian(C)}


def _model_and_input(shape, seed):
    """The cached fashion-mnist sigma=0.25 model and test image 0 when available (so certify
    certifies and builds its region, as in real runs), else a random SmallCNN and input."""
    from ddrs_app.models import SmallCNN

    try:
        from ddrs_app.data import load_dataset
        from ddrs_app.training import cache_key, cache_path, load_or_train

        key = cache_key("fashion-mnist", 0.25, None, 0, None, None, None, "adam")
        if cache_path(key).is_file():
            model, _ = load_or_train("fashion-mnist", 0.25, progress=False)
            x = load_dataset("fashion-mnist", "test").X[0]
            return model.eval(), x, f"trained fashion-mnist sigma=0.25 ({cache_path(key).name}), test image 0"
    except Exception as exc:  # no files / no cache: timing does not depend on the weights
        print(f"(no trained model: {type(exc).__name__}: {exc})")
    torch.manual_seed(seed)
    model = SmallCNN(shape, 10).float().eval()
    return model, torch.rand(shape, generator=torch.Generator().manual_seed(seed + 1)), "random SmallCNN, random input"


def run(
    *,
    n: int,
    n0: int,
    batch_size: int,
    repeats: int,
    seed: int,
    out_dir: Path | None = RESULTS_DIR,
    profile_misses: bool = True,
    verbose: bool = True,
) -> list[dict]:
    """Time certify against bare forward passes for each noise: one row per noise (also written to
    ``out_dir`` unless None). The sizes have no defaults here: ``main``'s options hold them."""
    from certify import Smooth

    shape = (1, 28, 28)
    d = math.prod(shape)
    model, x, source = _model_and_input(shape, seed)
    if verbose:
        print(f"model: {source}")
    sizes = _batches(n0, n, batch_size)
    inputs = {b: torch.rand((b,) + shape) for b in set(sizes)}
    noises = make_noises(d, seed)
    outcome: dict[str, str] = {}

    def bare() -> float:
        t = time.perf_counter()
        with torch.no_grad():
            for b in sizes:
                model(inputs[b]).argmax(dim=1)
        return time.perf_counter() - t

    class Timed(torch.nn.Module):
        """The model, accumulating the wall time of its forward passes inside certify."""

        def __init__(self, inner):
            super().__init__()
            self.inner, self.seconds = inner, 0.0

        def forward(self, inp):
            t0 = time.perf_counter()
            out = self.inner(inp)
            self.seconds += time.perf_counter() - t0
            return out

    timed = Timed(model)
    inline: dict[str, list] = {k: [] for k in noises}

    def cert(noise) -> float:
        gen = torch.Generator().manual_seed(seed + 2)
        smooth = Smooth(timed, noise, 10)
        timed.seconds = 0.0
        t = time.perf_counter()
        c = smooth.certify(x, n0, n, 0.001, batch_size=batch_size, generator=gen)
        dt = time.perf_counter() - t
        inline[noise.kind].append(dt / timed.seconds)
        outcome[noise.kind] = "abstain" if c.radius <= 0 else f"class {c.prediction}, radius {c.radius:.3f}"
        return dt

    def sample(noise) -> float:
        gen = torch.Generator().manual_seed(seed + 3)
        t = time.perf_counter()
        for b in sizes:
            noise.sample(b, d, gen, torch.device("cpu"), torch.float32)
        return time.perf_counter() - t

    # warm-up (allocator, oneDNN primitives, the noise's dtype cache)
    bare()
    for noise in noises.values():
        cert(noise)
        sample(noise)
    t_bare = {k: [] for k in noises}
    t_cert = {k: [] for k in noises}
    t_samp = {k: [] for k in noises}
    for r in range(repeats):
        for kind, noise in noises.items():  # interleaved: bare, certify, sample for each noise
            t_bare[kind].append(bare())
            t_cert[kind].append(cert(noise))
            t_samp[kind].append(sample(noise))
        if verbose:
            print(f"  repeat {r + 1}/{repeats} done", flush=True)
    best_bare_all = min(min(v) for v in t_bare.values())
    rows = []
    for kind in noises:
        bb, bc, bs = min(t_bare[kind]), min(t_cert[kind]), min(t_samp[kind])
        ratio = bc / bb
        rows.append(
            {
                "noise": kind,
                "d": d,
                "n0": n0,
                "n": n,
                "batch_size": batch_size,
                "repeats": repeats,
                "threads": torch.get_num_threads(),
                "bare_best_s": bb,
                "certify_best_s": bc,
                "sample_best_s": bs,
                "ratio": ratio,
                "ratio_vs_best_bare": bc / best_bare_all,
                "ratio_inline_median": sorted(inline[kind])[len(inline[kind]) // 2],
                "target": TARGETS[kind],
                "meets_target": ratio <= TARGETS[kind],
                "certificate": outcome.get(kind, ""),
            }
        )
    if verbose:
        print(
            f"\nSmallCNN 28x28 (d={d}), n0={n0}, n={n}, batch={batch_size}, best of {repeats}, "
            f"{torch.get_num_threads()} threads"
        )
        print(
            f"{'noise':<10} {'bare s':>8} {'certify s':>10} {'sample s':>9} {'ratio':>7} {'inline':>7} {'target':>7}  ok"
        )
        for row in rows:
            print(
                f"{row['noise']:<10} {row['bare_best_s']:8.3f} {row['certify_best_s']:10.3f} "
                f"{row['sample_best_s']:9.3f} {row['ratio']:7.3f} {row['ratio_inline_median']:7.3f} {row['target']:7.2f}  "
                f"{'yes' if row['meets_target'] else 'NO'}   {row['certificate']}"
            )
    if out_dir is not None:
        write_outputs(rows, Path(out_dir))
    if profile_misses:
        for row in rows:
            if not row["meets_target"]:
                print(f"\n--- target missed for {row['noise']}: cProfile of one certify call ---")
                pr = cProfile.Profile()
                pr.enable()
                cert(noises[row["noise"]])
                pr.disable()
                s = io.StringIO()
                pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(15)
                print(s.getvalue())
    return rows


def write_outputs(rows: list[dict], out_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "certify_throughput.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    kinds = [r["noise"] for r in rows]
    ax.bar(kinds, [r["ratio"] for r in rows], color=["tab:green" if r["meets_target"] else "tab:red" for r in rows])
    for i, r in enumerate(rows):
        ax.hlines(r["target"], i - 0.4, i + 0.4, colors="k", linestyles="--")
        ax.text(i, r["ratio"], f"{r['ratio']:.3f}", ha="center", va="bottom", fontsize=9)
    ax.axhline(1.0, color="gray", lw=0.8)
    ax.set_ylabel("certify time / bare forward time")
    ax.set_title(f"SmallCNN d=784, n={rows[0]['n']}, batch {rows[0]['batch_size']} (dashed: target)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out_dir / "certify_throughput.png", dpi=120)
    plt.close(fig)
    print(f"wrote {out_dir / 'certify_throughput.csv'} and .png")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--quick", action="store_true", help="n=2000, 2 repeats (smoke run)")
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--n0", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    add_output_args(p, "certify_throughput")
    p.add_argument("--no-profile", action="store_true", help="skip the cProfile of missed targets")
    a = p.parse_args(argv)
    csv_path, _ = prepare(
        "certify_throughput", ["certify_throughput.csv", "certify_throughput.png"], a.results, a.out_dir
    )
    torch.set_num_threads(a.threads)
    n, repeats = (2000, 2) if a.quick else (a.n, a.repeats)
    rows = run(
        n=n,
        n0=a.n0,
        batch_size=a.batch_size,
        repeats=repeats,
        seed=a.seed,
        out_dir=csv_path.parent,
        profile_misses=not a.no_profile,
    )
    return 0 if all(r["meets_target"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
