"""Structured RDDRS at d = 784: full C against Kronecker and low-rank / spiked noise, on the same inputs, base model,
DDRS start and budgets, every noise certified by the same fresh-sample Cohen procedure (RS and DDRS beside them).

A SMOKE version of the 50-image acceptance check (Fashion-MNIST, sigma 0.25; the structured fits must reach >= 90 % of
full RDDRS's proxy ACR at <= 10 % of its geometry time per step, and never fall below RS in certified accuracy at any
l2 radius): few images by default (``--inputs 10``) and n = 10,000 certification samples, so its intervals are wide.

Per structure it reports, for each input: the certified l2 radius of the inscribed ball (the headline), the proxy
radius (ANCER's, from the volume), p_A's lower bound, the fit's network evaluations and seconds; and, per structure:
the geometry time per ascent step, measured as the seconds per step of the same fit with a null network (a linear
784 -> 10 map, whose cost is negligible) so that only the structure's own work remains (noise map, floor, volume and
smallest-scale terms, Riemannian gradient, move). Paired 95 % bootstrap intervals (``benchmarks.analysis.paired``) of
each structure minus full RDDRS (proxy radius) and minus RS (certified accuracy at each l2 radius).

The rank is fixed before running (``RANKS``: 8, ``RDDRS``'s default; ``--ranks`` runs others); every rank run is
reported.

    python -m benchmarks.studies.structured_rddrs --inputs 10            # into runs/structured_rddrs/
    python -m benchmarks.studies.structured_rddrs --inputs 10 --results  # into benchmarks/results/structured_rddrs/
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.analysis.outputs import add_output_args, prepare
from benchmarks.analysis.paired import bootstrap

SCRIPT = "structured_rddrs"
RANKS = (8,)
L2_RADII = (0.0, 0.25, 0.5, 0.75, 1.0)
PROXY_RADII = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5)
FILES = ("structured_rddrs/inputs.csv", "structured_rddrs/summary.csv", "structured_rddrs/structured_rddrs.png")


def structures(ranks=RANKS, only=None) -> dict:
    """name -> ``ddrs.RDDRS`` keywords (every other field the default); ``only``: the structures to keep (None: all
    but 'signed-spiked', which came after the committed run; ``--structures``)."""
    out: dict[str, dict] = {"full": {}, "kronecker": {"structure": "kronecker"}}
    for k in ranks:
        out[f"low-rank-k{k}"] = {"structure": "low-rank", "rank": k}
        out[f"spiked-k{k}"] = {"structure": "spiked", "rank": k}
        out[f"signed-spiked-k{k}"] = {"structure": "signed-spiked", "rank": k}
    keep = ("full", "kronecker", "low-rank", "spiked") if only is None else tuple(only)
    return {n: o for n, o in out.items() if o.get("structure", "full") in keep}


def null_model(dim: int, classes: int) -> torch.nn.Module:
    """A linear map whose cost is negligible beside the geometry's (fixed weights; the timing does not depend on
    them)."""
    g = torch.Generator().manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(dim, classes))
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(classes, dim, generator=g) / dim**0.5)
        model[1].bias.zero_()
    return model.eval()


def geometry_seconds_per_step(
    options: dict, x: torch.Tensor, sigma: float, iterations: int = 6, samples: int | None = None
) -> float:
    """Seconds per ascent step of RDDRS(**options) on one input with the null network (after one warm-up fit);
    ``samples`` per step (None: RDDRS's default)."""
    import ddrs

    model = null_model(x[0].numel(), 10)
    extra = {} if samples is None else {"samples": samples}
    preset = ddrs.RDDRS(iterations=iterations, select=False, keep_ball=False, **extra, **options)
    preset.fit(model, x, init=sigma, generator=torch.Generator().manual_seed(0))  # warm-up (allocations, caches)
    start = time.perf_counter()
    res = preset.fit(model, x, init=sigma, generator=torch.Generator().manual_seed(1))
    return (time.perf_counter() - start) / max(len(res.trace.objective), 1)


def run(
    inputs: int,
    n: int,
    sigma: float,
    ranks,
    seed: int = 0,
    dataset: str = "fashion-mnist",
    rddrs_options: dict | None = None,
    ddrs_options: dict | None = None,
    only=None,
) -> tuple[list[dict], dict]:
    """Fit and certify every structure (and RS, DDRS) on ``inputs`` test images of ``dataset``; ``rddrs_options``
    (None: the defaults) go to every RDDRS fit, ``ddrs_options`` (None: the data set's ``ddrs compare`` budget) to
    the DDRS start."""
    from ddrs_app.compare import BUDGETS
    from ddrs_app.data import load_dataset, subset
    from ddrs_app.training import load_or_train

    import certify
    import ddrs

    model, _ = load_or_train(dataset, sigma, seed=seed, progress=False)
    model.eval()
    data = load_dataset(dataset, "test")
    data = subset(data, max(1, len(data.y) // inputs), inputs)
    dd_options = dict(BUDGETS[dataset].ddrs) if ddrs_options is None else dict(ddrs_options)
    rd_options = dict(rddrs_options or {})
    rows: list[dict] = []
    geometry: dict[str, float] = {}
    plans = structures(ranks, only)
    for name, options in plans.items():
        geometry[name] = geometry_seconds_per_step(options, data.X[:1], sigma, samples=rd_options.get("samples"))
        print(f"geometry {name}: {geometry[name] * 1e3:.1f} ms per step", flush=True)
    for i in range(len(data.y)):
        x, label = data.X[i : i + 1], int(data.y[i])
        gen = torch.Generator().manual_seed(seed + i)
        start = time.perf_counter()
        dd = ddrs.DDRS(sigma0=sigma, **dd_options).fit(model, x, generator=gen)
        dd_seconds = time.perf_counter() - start
        fits = {
            "rs": (certify.IsotropicGaussian(sigma), 0, 0.0, 0),
            "ddrs": (dd.noises()[0], dd.network.forward, dd_seconds, 0),
        }
        for name, options in plans.items():
            start = time.perf_counter()
            preset = ddrs.RDDRS(**rd_options, **options)
            res = preset.fit(model, x, init=dd, generator=torch.Generator().manual_seed(seed + i))
            seconds = time.perf_counter() - start + dd_seconds
            work = dd.network.forward + res.network.forward
            fits[name] = (res.noises()[0], work, seconds, len(res.trace.objective))
        for name, (noise, work, seconds, steps) in fits.items():
            cert = certify.Smooth(model, noise, 10).certify(
                x[0], 100, n, 0.001, batch_size=1000, generator=torch.Generator().manual_seed(10_000 + i)
            )
            correct = cert.prediction == label
            rows.append(
                {
                    "structure": name,
                    "input": int(data.indices[i]),
                    "label": label,
                    "prediction": int(cert.prediction),
                    "correct": int(correct),
                    "l2_radius": cert.l2_radius if correct else 0.0,
                    "proxy_radius": cert.proxy_radius if correct else 0.0,
                    "p_lower": cert.p_lower,
                    "fit_seconds": seconds,
                    "network_forward": work,
                    "steps": steps,
                }
            )
        print(f"input {i + 1}/{len(data.y)} done", flush=True)
    return rows, geometry


def summarise(rows: list[dict], geometry: dict) -> list[dict]:
    """One row per structure: proxy ACR, certified accuracy at the l2 and proxy radii, p_A lower quartiles, cost, and
    the paired intervals against full RDDRS (proxy radius) and RS (certified accuracy at every l2 radius)."""
    by: dict[str, dict[int, dict]] = {}
    for r in rows:
        by.setdefault(r["structure"], {})[r["input"]] = r
    order = list(by)
    inputs = sorted(by["rs"])

    def col(name: str, key: str) -> np.ndarray:
        return np.array([float(by[name][i][key]) for i in inputs])

    out = []
    for name in order:
        proxy, l2 = col(name, "proxy_radius"), col(name, "l2_radius")
        row: dict = {"structure": name, "inputs": len(inputs), "proxy_acr": proxy.mean(), "l2_acr": l2.mean()}
        for r in L2_RADII:
            row[f"l2@{r:g}"] = float((l2 >= r).mean() if r > 0 else col(name, "correct").mean())
        for r in PROXY_RADII:
            row[f"proxy@{r:g}"] = float((proxy >= r).mean() if r > 0 else col(name, "correct").mean())
        q = np.quantile(col(name, "p_lower"), [0.25, 0.5, 0.75])
        row.update(p_lower_q25=q[0], p_lower_median=q[1], p_lower_q75=q[2])
        row["fit_seconds_mean"] = col(name, "fit_seconds").mean()
        row["network_forward_mean"] = col(name, "network_forward").mean()
        row["geometry_ms_per_step"] = geometry.get(name, float("nan")) * 1e3
        if name in geometry and "full" in geometry:
            row["geometry_vs_full"] = geometry[name] / geometry["full"]
        if "full" in by and name not in ("full", "rs", "ddrs"):
            full = col("full", "proxy_radius")
            low, high, _ = bootstrap(proxy - full)
            row.update(proxy_acr_vs_full=proxy.mean() / max(full.mean(), 1e-12), diff_full_low=low, diff_full_high=high)
        if name != "rs":
            worst = 0.0
            rs = col("rs", "l2_radius")
            for r in L2_RADII[1:]:
                low, high, _ = bootstrap((l2 >= r).astype(float) - (rs >= r).astype(float))
                worst = min(worst, (l2 >= r).mean() - (rs >= r).mean())
                row[f"vs_rs_l2@{r:g}_low"] = low
            row["worst_l2_acc_minus_rs"] = worst
        out.append(row)
    return out


def plot(
    summary: list[dict],
    path: Path,
    dataset: str = "fashion-mnist",
    sigma: float = 0.25,
    *,
    key: str = "structure",
    l2_radii=L2_RADII,
    proxy_radii=PROXY_RADII,
    title: str | None = None,
) -> None:
    """Certified accuracy against l2 radius and against proxy radius, one line per row (named by ``row[key]``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for row in summary:
        axes[0].plot(l2_radii, [row[f"l2@{r:g}"] for r in l2_radii], marker="o", label=row[key])
        axes[1].plot(proxy_radii, [row[f"proxy@{r:g}"] for r in proxy_radii], marker="o", label=row[key])
    axes[0].set(xlabel="l2 radius (inscribed ball)", ylabel="certified accuracy", title="certified accuracy, l2")
    axes[1].set(xlabel="proxy radius", title="certified accuracy, proxy radius")
    axes[1].legend(fontsize=8)
    n = summary[0]["inputs"]
    fig.suptitle(title or f"{dataset}, sigma {sigma:g}, {n} test images (smoke): structured vs full RDDRS")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_csv(path: Path, rows: list[dict]) -> None:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    parser.add_argument("--inputs", type=int, default=10)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--sigma", type=float, default=0.25)
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument(
        "--structures",
        nargs="+",
        choices=("full", "kronecker", "low-rank", "spiked", "signed-spiked"),
        default=None,
        help="RDDRS structures to run beside RS and DDRS (default: full kronecker low-rank spiked)",
    )
    parser.add_argument("--ranks", type=int, nargs="+", default=list(RANKS))
    parser.add_argument("--seed", type=int, default=0)
    add_output_args(parser, SCRIPT)
    args = parser.parse_args(argv)
    inputs_csv, summary_csv, png = prepare(SCRIPT, FILES, args.results, args.out_dir)
    inputs_csv.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rows, geometry = run(
        args.inputs, args.n, args.sigma, tuple(args.ranks), args.seed, args.dataset, only=args.structures
    )
    summary = summarise(rows, geometry)
    write_csv(inputs_csv, rows)
    write_csv(summary_csv, summary)
    plot(summary, png, args.dataset, args.sigma)
    for row in summary:
        print(
            f"{row['structure']:>14}: proxy ACR {row['proxy_acr']:.3f}  l2 ACR {row['l2_acr']:.3f}  "
            f"geometry {row['geometry_ms_per_step']:.1f} ms/step  fit {row['fit_seconds_mean']:.1f} s"
        )
    print(f"wrote {inputs_csv}, {summary_csv}, {png} in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
