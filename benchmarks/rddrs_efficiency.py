"""RDDRS at a fraction of the cost: the seed paper's recipe against fast recipes, on the same inputs
and base model, both certified with the same fresh-sample Cohen procedure.

Reports per recipe: network evaluations per input (forward and backward separately, the shared DDRS
stage included), wall seconds per input, median / mean proxy radius, median l2 radius, certified
accuracy at proxy radii, and the ratios to the paper recipe, all from one run. Ablation rows switch
one lever each (antithetic noise, ANCER warm start, retraction vs exp, sample count).

    python3 -m benchmarks.rddrs_efficiency [--dataset fashion-mnist|digits] [--inputs 20] [--quick]
Writes benchmarks/results/rddrs_efficiency_<dataset>.{md,csv,png}.
"""
from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np
import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"
PROXY_RADII = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)


def recipes(quick: bool = False) -> dict:
    """name -> (uses ANCER warm start, RDDRS preset)."""
    import ddrs

    paper = ddrs.RDDRS.paper(samples=2000, iterations=20) if quick else ddrs.RDDRS.paper()
    fast = dict(iterations=30, samples=256, step_size=0.5, kappa=2.0, method="retr", antithetic=True,
                max_ratio=None, keep_best=True)
    return {
        "paper": (False, paper),
        "fast": (True, ddrs.RDDRS(**fast)),
        "fast - antithetic": (True, ddrs.RDDRS(**{**fast, "antithetic": False})),
        "fast - ANCER warm start": (False, ddrs.RDDRS(**fast)),
        "fast with exp map": (True, ddrs.RDDRS(**{**fast, "method": "exp"})),
        "fast, 64 samples": (True, ddrs.RDDRS(**{**fast, "samples": 64})),
    }


def run(dataset: str, inputs: int = 20, sigma: float = 0.25, n: int = 100_000, seed: int = 0,
        quick: bool = False, out_dir: Path | None = RESULTS_DIR, only=None) -> list[dict]:
    import certify
    import ddrs
    from benchmarks.compare import header
    from benchmarks.data import load_dataset, subset
    from benchmarks.training import load_or_train

    model, _ = load_or_train(dataset, sigma, seed=seed, progress=False)
    test = load_dataset(dataset, "test")
    data = subset(test, max(1, len(test) // inputs), inputs)
    print(f"{dataset}: test inputs {data.indices.tolist()}")
    x = data.X
    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    dd = ddrs.DDRS(sigma0=sigma).fit(model, x, generator=g)
    dd_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    an = ddrs.ANCER(max_ratio=None).fit(model, x, init=dd, generator=g)
    an_seconds = time.perf_counter() - t0
    rows = []
    for name, (warm, preset) in recipes(quick).items():
        if only and name not in only:
            continue
        t0 = time.perf_counter()
        res = preset.fit(model, x, init=an if warm else dd, generator=torch.Generator().manual_seed(seed + 1))
        seconds = time.perf_counter() - t0 + dd_seconds + (an_seconds if warm else 0.0)
        fwd = res.network.forward + dd.network.forward + (an.network.forward if warm else 0)
        bwd = res.network.backward + dd.network.backward + (an.network.backward if warm else 0)
        certs = ddrs.certify_inputs(model, x, res, data.num_classes, n0=100, n=n, alpha=0.001,
                                    batch_size=min(n, 10_000), generator=torch.Generator().manual_seed(seed + 2))
        correct = np.array([c.prediction == int(y) for c, y in zip(certs, data.y)])
        proxy = np.array([c.proxy_radius for c in certs])
        l2 = np.array([c.l2_radius for c in certs])
        row = {"recipe": name, "forward_per_input": fwd / len(x), "backward_per_input": bwd / len(x),
               "seconds_per_input": seconds / len(x), "median_proxy": float(np.median(proxy * correct)),
               "mean_proxy": float(np.mean(proxy * correct)), "median_l2": float(np.median(l2 * correct))}
        for r in PROXY_RADII:
            row[f"acc@proxy{r:g}"] = float(np.mean(correct & (proxy >= r)))
        rows.append(row)
        print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
    paper = next((r for r in rows if r["recipe"] == "paper"), None)
    if paper is not None:
        for r in rows:
            r["network_ratio"] = (r["forward_per_input"] + r["backward_per_input"]) / (
                paper["forward_per_input"] + paper["backward_per_input"])
            r["median_proxy_ratio"] = r["median_proxy"] / max(paper["median_proxy"], 1e-12)
            r["worst_accuracy_gap_pp"] = 100 * min(r[f"acc@proxy{q:g}"] - paper[f"acc@proxy{q:g}"] for q in PROXY_RADII)
    if out_dir is not None:
        write(rows, out_dir, dataset, header(f"python -m benchmarks.rddrs_efficiency --dataset {dataset} "
                                             f"--inputs {inputs}{' --quick' if quick else ''}"), n)
    return rows


def write(rows, out_dir: Path, dataset: str, head: str, n: int) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    keys = list(rows[0])
    with open(out_dir / f"rddrs_efficiency_{dataset}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    with open(out_dir / f"rddrs_efficiency_{dataset}.md", "w") as f:
        f.write("```\n" + head + f"certification: Cohen CERTIFY, n0 = 100, n = {n}, alpha = 0.001, fresh samples\n```\n\n")
        f.write("| " + " | ".join(keys) + " |\n|" + "---|" * len(keys) + "\n")
        for r in rows:
            f.write("| " + " | ".join(f"{r[k]:.4g}" if isinstance(r[k], float) else str(r[k]) for k in keys) + " |\n")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in rows:
        ax.plot(PROXY_RADII, [r[f"acc@proxy{q:g}"] for q in PROXY_RADII], marker="o", label=r["recipe"])
    ax.set_xlabel("proxy radius")
    ax.set_ylabel("certified accuracy")
    ax.set_title(f"RDDRS recipes on {dataset}")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_dir / f"rddrs_efficiency_{dataset}.png", dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default=None, help="default: fashion-mnist if its files exist, else digits")
    p.add_argument("--inputs", type=int, default=20)
    p.add_argument("--sigma", type=float, default=0.25)
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    dataset = args.dataset
    if dataset is None:
        dataset = "fashion-mnist" if Path("/usr/share/datasets/fashion-mnist").is_dir() else "digits"
    run(dataset, args.inputs, args.sigma, args.n, quick=args.quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
