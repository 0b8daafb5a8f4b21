"""Network-boundedness of the optimisers: samples per second an optimisation step pushes through the
network (forward + backward), divided by the bare forward+backward throughput of the same model at
the same batch size, measured in one run (best of k, interleaved). Target >= 0.8 for each method.

Small CNN (RDDRS paper) on 28x28 inputs, random weights (timing does not depend on them).
Configurations: DDRS and ANCER steps on a batch of 32 inputs x 100 samples (their papers' sample
count), RDDRS steps on one input x 20,000 samples (the seed paper's) and on 8 inputs x 2,500.

    python3 -m benchmarks.studies.optimise_cost [--quick] [--skip-batched-rddrs]
Writes runs/optimise_cost/optimise_cost.csv and .png (``--results``: benchmarks/results/).
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import torch

from benchmarks.analysis.outputs import add_output_args, prepare

RESULTS_DIR = Path(__file__).resolve().parents[1] / "results"


def _bare_fwd_bwd(model, batch: torch.Tensor) -> float:
    batch = batch.detach().requires_grad_(True)
    start = time.perf_counter()
    out = torch.softmax(model(batch), dim=1)[:, 0].sum()
    out.backward()
    return time.perf_counter() - start


def _one_step(method, model, x, generator) -> float:
    """Wall time of one optimisation step of ``method`` (sample, forward, backward, geometry)."""
    import manifolds
    from ddrs.objectives import EigenvalueFloor, Radius, ancer_objective
    from ddrs.optimizers import AdamAscent, RiemannianAscent

    B, d = x.shape[0], x[0].numel()
    sigma = torch.full((B,), 0.25, dtype=torch.float64)
    if isinstance(method, ddrs_module().DDRS):
        manifold, point, objective, rule = manifolds.get_manifold("scalar", d), sigma, Radius(), AdamAscent(method.lr)
    elif isinstance(method, ddrs_module().ANCER):
        manifold = manifolds.get_manifold("diagonal", d)
        point, objective, rule = sigma[:, None].expand(-1, d).clone(), ancer_objective(2.0), AdamAscent(method.lr)
    else:
        manifold = manifolds.get_manifold("spd", d, metric=method.metric)
        point = sigma[:, None, None] * torch.eye(d, dtype=torch.float64)
        objective = ancer_objective(method.kappa)
        rule = RiemannianAscent(method.step_size, method=method.method, max_step_norm=method.max_step_norm)
    estimator = method._estimator()
    floor = EigenvalueFloor(sigma)
    start = time.perf_counter()
    z = estimator.draw(B, d, generator, x.device, x.dtype)
    value, egrad, _ = estimator.evaluate(model, manifold, x, point, objective, z)
    point = floor.project(manifold, rule.update(manifold, point, egrad))
    return time.perf_counter() - start


def ddrs_module():
    import ddrs

    return ddrs


def run(
    quick: bool = False, repeats: int = 3, out_dir: Path | None = RESULTS_DIR, batched_rddrs: bool = True
) -> list[dict]:
    from ddrs_app.models import SmallCNN

    import ddrs

    torch.manual_seed(0)
    model = SmallCNN().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    configs = [
        ("ddrs", 32, 100, lambda s, it: ddrs.DDRS(iterations=it, samples=s)),
        ("ancer", 32, 100, lambda s, it: ddrs.ANCER(iterations=it, samples=s)),
        (
            "rddrs (1 x 20000, exp)",
            1,
            5000 if quick else 20000,
            lambda s, it: ddrs.RDDRS(iterations=it, samples=s, chunk_size=s),
        ),
        (
            "rddrs (8 x 2500, retr)",
            8,
            1000 if quick else 2500,
            lambda s, it: ddrs.RDDRS(iterations=it, samples=s, method="retr", chunk_size=8 * s),
        ),
    ]
    if not batched_rddrs:
        configs = configs[:3]
    rows = []
    for name, B, samples, make in configs:
        x = torch.rand(B, 1, 28, 28)
        g = torch.Generator().manual_seed(0)
        best_step, best_bare = float("inf"), float("inf")
        batch = torch.rand(B * samples, 1, 28, 28)
        for _ in range(repeats):
            best_step = min(best_step, _one_step(make(samples, 1), model, x, g))
            best_bare = min(best_bare, _bare_fwd_bwd(model, batch))
        thr_step = B * samples / best_step
        thr_bare = B * samples / best_bare
        rows.append(
            {
                "method": name,
                "inputs": B,
                "samples_per_input": samples,
                "step_seconds": best_step,
                "bare_fwd_bwd_seconds": best_bare,
                "ratio": thr_step / thr_bare,
            }
        )
        print(
            f"{name:26s} B={B:3d} n={samples:6d}  step {best_step:7.3f} s  bare fwd+bwd {best_bare:7.3f} s  "
            f"ratio {thr_step / thr_bare:5.2f}  (target >= 0.8)"
        )
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        with open(out_dir / "optimise_cost.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 3.2))
        ax.barh([r["method"] for r in rows], [r["ratio"] for r in rows], color="tab:blue")
        ax.axvline(0.8, color="red", ls="--", label="target 0.8")
        ax.set_xlabel("step throughput / bare forward+backward throughput")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out_dir / "optimise_cost.png", dpi=110)
        plt.close(fig)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--skip-batched-rddrs",
        action="store_true",
        help="skip the 8 x 2,500 RDDRS configuration (on the CPU build of torch 2.14 here, its batched "
        "784 x 784 LU solves print MKL 'DLASWP parameter 6' errors and run very slowly)",
    )
    add_output_args(p, "optimise_cost")
    args = p.parse_args(argv)
    csv_path, _ = prepare("optimise_cost", ["optimise_cost.csv", "optimise_cost.png"], args.results, args.out_dir)
    run(quick=args.quick, repeats=args.repeats, out_dir=csv_path.parent, batched_rddrs=not args.skip_batched_rddrs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
