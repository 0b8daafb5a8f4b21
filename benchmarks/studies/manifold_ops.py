"""Benchmark the manifolds layer: per-operation timings and the geometry share of one RDDRS step.

    python -m benchmarks.studies.manifold_ops            # d = 64, 196, 784; CNN step at n = 20,000 (~ a few minutes)
    python -m benchmarks.studies.manifold_ops --quick    # d = 64, 196; CNN step at n = 2,000

Prints a table and writes runs/manifold_ops/manifold_ops.csv (``--results``: benchmarks/results/;
columns section, metric, d, op, n, median_ms, geometry_share). The target is a geometry share of at most
15 % of an RDDRS step at d = 784. The step is the ``SPD.step`` path of ``ddrs.optimizers.ascend``
(plain Riemannian ascent with ``shared_frame=False``, or any metric but affine-invariant; the default
affine-invariant RDDRS steps in ``manifolds.eigenframe`` instead): the point's eigendecomposition comes from the
previous step's floor (cached by ``manifolds.eigh``) and serves the volume terms, the norm and the move; the
timed geometry ends with the floor of the new point. Use ``--threads 1`` on a shared machine.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from manifolds import noise_for

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import manifolds  # noqa: E402
from benchmarks.analysis.outputs import add_output_args, check_writable, prepare  # noqa: E402

F64 = torch.float64
METRICS = ("affine-invariant", "log-euclidean", "bures-wasserstein")


def timeit(fn, repeats: int) -> float:
    """Median wall time in ms over ``repeats`` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def op_rows(dims, repeats_small: int, repeats_large: int) -> list[dict]:
    rows = []
    gen = torch.Generator().manual_seed(0)
    for d in dims:
        reps = repeats_large if d > 300 else repeats_small
        for metric in METRICS:
            m = manifolds.SPD(d, metric=metric)
            x = m.random_point(generator=gen)
            g = torch.randn(d, d, generator=gen, dtype=F64) / d
            rg = m.egrad2rgrad(x, g)
            u = rg * (0.1 / float(m.norm(x, rg)))
            ops = {
                "egrad2rgrad": lambda: m.egrad2rgrad(x, g),
                "retr": lambda: m.retr(x, u),
                "exp": lambda: m.exp(x, u),
                "step(exp, max_norm)": lambda: m.step(x, rg, 0.1, method="exp", max_norm=1.0),
                "project_floor": lambda: noise_for(m).project_floor(x, 1.0),
                "norm": lambda: m.norm(x, u),
            }
            if metric == "affine-invariant":
                ops["step(retr, max_norm)"] = lambda: m.step(x, rg, 0.1, method="retr", max_norm=1.0)
            for op, fn in ops.items():
                if metric != "affine-invariant" and op == "retr":
                    continue  # retr == exp for these metrics
                rows.append(
                    {
                        "section": "op",
                        "metric": metric,
                        "d": d,
                        "op": op,
                        "n": "",
                        "median_ms": round(timeit(fn, reps), 3),
                        "geometry_share": "",
                    }
                )
                print(f"  op d={d:4d} {metric:18s} {op:22s} {rows[-1]['median_ms']:10.2f} ms", flush=True)
    for d in (64, 784) if max(dims) >= 784 else (64,):  # per-matrix batching: 16 points at once
        m = manifolds.SPD(d)
        x = m.random_point(16 if d == 64 else 2, generator=gen)
        u = 0.01 * m.egrad2rgrad(x, torch.randn(x.shape, generator=gen, dtype=F64) / d)
        rows.append(
            {
                "section": "op",
                "metric": "affine-invariant",
                "d": d,
                "op": f"exp batch={x.shape[0]}",
                "n": "",
                "median_ms": round(timeit(lambda: m.exp(x, u), repeats_large), 3),
                "geometry_share": "",
            }
        )
    return rows


class SmallCNN(torch.nn.Module):
    """2 conv layers (16/32 channels, 5x5), max-pool, linear, on 28x28."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.c1 = torch.nn.Conv2d(1, 16, 5)
        self.c2 = torch.nn.Conv2d(16, 32, 5)
        self.fc = torch.nn.Linear(32 * 4 * 4, classes)

    def forward(self, x):
        x = torch.nn.functional.max_pool2d(torch.relu(self.c1(x)), 2)
        x = torch.nn.functional.max_pool2d(torch.relu(self.c2(x)), 2)
        return self.fc(x.flatten(1))


def rddrs_step_rows(n: int, chunk: int, repeats: int) -> list[dict]:
    """One RDDRS step on C (784 x 784): MC gradient through the CNN, then the geometry update."""
    d = 784
    torch.manual_seed(0)
    model = SmallCNN().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x_in = torch.rand(1, d)
    label = 3
    gen = torch.Generator().manual_seed(1)
    rows = []
    for metric, method in (("affine-invariant", "retr"), ("affine-invariant", "exp"), ("log-euclidean", "exp")):
        m = manifolds.SPD(d, metric=metric)
        C = 0.25 * torch.eye(d, dtype=F64)
        t_model, t_geo = [], []
        for _ in range(repeats):
            # the previous step ended with the floor, whose eigendecomposition of C this step reuses (the
            # estimator's detached view, the volume terms, the norm and the move share it; ddrs.optimizers.ascend)
            C = noise_for(m).project_floor(C, 0.05)
            t0 = time.perf_counter()
            Cr = C.detach().requires_grad_(True)
            total = 0.0
            for start in range(0, n, chunk):  # reparameterised MC: E[log p_y(x + C z)], C's grad by autograd
                z = torch.randn(1, min(chunk, n - start), d, generator=gen)
                eps = noise_for(m).apply(Cr.unsqueeze(0), z)[0]
                logits = model((x_in + eps).reshape(-1, 1, 28, 28))
                loss = torch.log_softmax(logits, -1)[:, label].sum() / n
                loss.backward()
                total += loss.item()
            t1 = time.perf_counter()
            # geometry: the objective's volume and smallest-eigenvalue terms with their gradients, egrad2rgrad,
            # the norm-clipped step and the eigenvalue floor of the new point
            Cv = C.detach().requires_grad_(True)
            (g_terms,) = torch.autograd.grad(
                0.1 * noise_for(m).log_volume(Cv) + 1e-8 * noise_for(m).min_eigenvalue(Cv), Cv
            )
            rg = m.egrad2rgrad(C, Cr.grad + g_terms)
            C_new = m.step(C, rg, 0.5, method=method, max_norm=0.5)
            C_new = noise_for(m).project_floor(C_new, 0.05)
            t2 = time.perf_counter()
            t_model.append(t1 - t0)
            t_geo.append(t2 - t1)
        tm, tg = 1e3 * statistics.median(t_model), 1e3 * statistics.median(t_geo)
        share = tg / (tm + tg)
        tag = f"RDDRS step ({method})"
        rows.append(
            {
                "section": "rddrs_step",
                "metric": metric,
                "d": d,
                "op": tag + " model+MC",
                "n": n,
                "median_ms": round(tm, 1),
                "geometry_share": "",
            }
        )
        rows.append(
            {
                "section": "rddrs_step",
                "metric": metric,
                "d": d,
                "op": tag + " geometry",
                "n": n,
                "median_ms": round(tg, 1),
                "geometry_share": round(share, 4),
            }
        )
        print(
            f"  RDDRS step n={n} {metric:18s} {method:5s} model+MC {tm:9.1f} ms  geometry {tg:8.1f} ms  "
            f"share {100 * share:5.1f} %",
            flush=True,
        )
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    ap.add_argument("--quick", action="store_true", help="d = 64, 196 and n = 2,000 (about a minute)")
    ap.add_argument("--n", type=int, default=None, help="MC samples in the RDDRS step (default 20,000)")
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: torch's). On a loaded 2-core machine use 1: MKL/OpenMP "
        "threads spin-wait under oversubscription and small eigh/Cholesky calls stall 100x",
    )
    ap.add_argument("--out", type=Path, default=None, help="the CSV (default manifold_ops.csv in the output directory)")
    add_output_args(ap, "manifold_ops")
    args = ap.parse_args(argv)
    if args.out is None:
        (args.out,) = prepare("manifold_ops", ["manifold_ops.csv"], args.results, args.out_dir)
    else:
        check_writable([args.out], args.results)
    if args.threads:
        torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    if load > (os.cpu_count() or 1) and torch.get_num_threads() > 1:
        print(
            f"warning: load average {load:.1f} exceeds {os.cpu_count()} cores; multi-threaded LAPACK "
            "calls stall under oversubscription -- consider --threads 1",
            flush=True,
        )
    dims = (64, 196) if args.quick else (64, 196, 784)
    n = args.n or (2000 if args.quick else 20000)
    print(
        f"manifolds benchmark: torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"load average {os.getloadavg()[0]:.1f}, dims {dims}, n = {n}",
        flush=True,
    )
    rows = op_rows(dims, repeats_small=5, repeats_large=3)
    rows += rddrs_step_rows(n, chunk=1000, repeats=1 if not args.quick else 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"\n{'section':11s} {'metric':18s} {'d':>4s} {'op':32s} {'n':>6s} {'ms':>10s} {'geo share':>9s}")
    for r in rows:
        share = f"{100 * r['geometry_share']:.1f} %" if r["geometry_share"] != "" else ""
        print(
            f"{r['section']:11s} {r['metric']:18s} {r['d']:4d} {r['op']:32s} {str(r['n']):>6s} "
            f"{r['median_ms']:10.2f} {share:>9s}"
        )
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
