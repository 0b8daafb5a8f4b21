"""RDDRS at a fraction of the cost: the seed paper's recipe against cheap recipes, on the same inputs
and base model, every one certified with the same fresh-sample Cohen procedure.

Every recipe runs input by input and appends one JSON line per input to its own log
(``benchmarks/results/rddrs_efficiency_logs/<dataset>_sigma<s>/<recipe>.jsonl``), so a run can be
stopped and resumed (finished inputs are skipped) and the long paper recipe can run in the background
while the summary is rebuilt from whatever the logs hold. Per recipe the summary reports network
evaluations per input (forward + backward sample passes, every stage included), wall seconds per input,
median / mean proxy radius (0 for a wrong or abstained input), certified accuracy at proxy radii,
abstentions, and (uncapped paper recipe) the eigenvalue ratios lambda / sigma_x*.

    python -m benchmarks.studies.rddrs_efficiency --dataset digits --sigma 0.25 --inputs 50 --recipes paper-capped
    python -m benchmarks.studies.rddrs_efficiency --dataset digits --summary      # tables and plot from the logs
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from manifolds import noise_for

RESULTS_DIR = Path(__file__).resolve().parents[1] / "results"
LOG_ROOT = Path(os.environ.get("RDDRS_EFFICIENCY_LOGS", RESULTS_DIR / "rddrs_efficiency_logs"))
PROXY_RADII = (0.25, 0.5, 0.75, 1.0)
N_CERT = 10_000
MAIN = ("paper-capped", "paper-uncapped", "new-default", "old-fast", "ancer", "ddrs")


def recipes() -> dict:
    """name -> list of stage presets (DDRS first; an ANCER stage warm-starts the next RDDRS stage)."""
    from dataclasses import replace

    import ddrs

    gap = dict(select=False)
    paper_dd = ddrs.DDRS(objective=ddrs.Radius("gap"), **gap)  # the DDRS package's 900 x 100 Adam steps
    paper = lambda **kw: ddrs.RDDRS.paper(objective=ddrs.paper_objective("rddrs", 1e-8), **kw)  # noqa: E731
    old_dd = ddrs.DDRS(iterations=150, samples=64, objective=ddrs.Radius("gap"), **gap)
    old_an = ddrs.ANCER(iterations=100, samples=64, objective=ddrs.paper_objective("ancer"), **gap)
    old_rd = ddrs.RDDRS(  # the compare budget before the cold-start default (exp-map ascent, ANCER warm start)
        iterations=60,
        samples=128,
        step_size=0.5,
        kappa=2.0,
        max_ratio=4.0,
        objective=ddrs.paper_objective("rddrs", 2.0),
        adaptive=False,
        method="exp",
        **gap,
    )
    dd = ddrs.DDRS(iterations=DDRS_STEPS)  # the new default's DDRS stage (100 of the package's 900 steps)
    new = ddrs.RDDRS()
    out = {
        "paper-capped": [paper_dd, paper(max_ratio=4.0, select=False)],
        "paper-uncapped": [paper_dd, paper(select=False)],
        "new-default": [dd, new],
        "old-fast": [old_dd, old_an, old_rd],
        "ancer": [ddrs.DDRS(), ddrs.ANCER()],
        "ddrs": [ddrs.DDRS()],
        # the default with its early-stop switch on (patience 4 steps, 0.5 % relative gain)
        "new-default+early-stop": [dd, replace(new, early_stop=(4, 0.005))],
        # ANCER with the new default's DDRS stage and its RDDRS stage's budget (36 x 1,000 + selection)
        "ancer-equal": [dd, ddrs.ANCER(iterations=new.iterations, samples=new.samples)],
    }
    # ablation: one lever of the new default switched at a time
    out["abl: gap objective (papers')"] = [replace(dd, objective=ddrs.Radius("gap")), replace(new, objective="gap")]
    out["abl: no selection"] = [replace(dd, select=False), replace(new, select=False)]
    out["abl: antithetic"] = [dd, replace(new, antithetic=True)]
    out["abl: exp map"] = [dd, replace(new, method="exp")]
    out["abl: common random numbers"] = [dd, replace(new, common_random_numbers=True)]
    out["abl: ANCER warm start"] = [dd, ddrs.ANCER(), new]
    out["abl: DDRS stage 900 steps"] = [ddrs.DDRS(), new]
    out["abl: plain RGD (no Adam, step 1 clip 2)"] = [
        dd,
        replace(new, adaptive=False, step_size=1.0, max_step_norm=2.0),
    ]
    out["abl: Adam unclipped"] = [dd, replace(new, max_step_norm=None)]
    out["abl: Adam one second moment per matrix (geoopt)"] = [dd, replace(new, per_direction=False)]
    out["abl: no shared eigenframe"] = [dd, replace(new, shared_frame=False)]
    out["abl: schedule 250->2500"] = [dd, replace(new, schedule=(250, 2500))]
    out["abl: early stop (4, 0.5 %)"] = [dd, replace(new, early_stop=(4, 0.005))]
    out["abl: kappa 2"] = [dd, replace(new, kappa=2.0)]
    out["abl: rotation lr 0.015"] = [dd, replace(new, rotation_lr=0.015)]  # ~ lr sqrt(64 / 784)
    out["abl: rotation lr 0.015 unclipped"] = [dd, replace(new, rotation_lr=0.015, max_step_norm=None)]
    out["abl: rotation lr 0.005 unclipped"] = [dd, replace(new, rotation_lr=0.005, max_step_norm=None)]
    out["abl: lr 0.1 rotation lr 0.015 unclipped"] = [dd, replace(new, lr=0.1, rotation_lr=0.015, max_step_norm=None)]
    out["abl: rotation lr 0"] = [dd, replace(new, rotation_lr=0.0)]  # eigenvalues only, in the first frame
    out["abl: moonshot 18 x 500"] = [dd, replace(new, iterations=18, samples=500, selection_samples=500)]
    return out


#: the DDRS stage of the new default (``ddrs compare`` uses its own budget)
DDRS_STEPS = 100


def log_dir(dataset: str, sigma: float) -> Path:
    return LOG_ROOT / f"{dataset}_sigma{sigma:g}"


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def read(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def fit_one(stages, model, x, generator):
    """Run the stages on one input; returns the last result, the summed (forward, backward) and the
    last stage's own (forward, backward)."""
    results = []
    for stage in stages:
        results.append(stage.fit(model, x, init=results[-1] if results else None, generator=generator))
    last = results[-1].network
    return (
        results[-1],
        sum(r.network.forward for r in results),
        sum(r.network.backward for r in results),
        (last.forward, last.backward),
    )


def run(
    dataset: str,
    sigma: float,
    inputs: int = 50,
    names=MAIN,
    seed: int = 0,
    n: int = N_CERT,
    shard: tuple[int, int] = (0, 1),
) -> None:
    """Fit and certify every recipe in ``names`` on the grid's first ``inputs`` inputs; with ``shard``
    (k, m) only the inputs at positions k, k + m, k + 2m, ... (so m processes can share one recipe)."""
    from ddrs_app.data import load_dataset, subset
    from ddrs_app.training import load_or_train

    import certify
    import ddrs

    model, _ = load_or_train(dataset, sigma, seed=seed, progress=False)
    model.eval()
    test = load_dataset(dataset, "test")
    # one fixed grid per data set (digits: the 50-input grid), so that --inputs 10 is its first 10
    every = 500 if dataset in ("fashion-mnist", "mnist") else max(1, len(test) // 50)
    data = subset(test, every, inputs)
    table = recipes()
    out = log_dir(dataset, sigma)
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        stages = table[name]
        path = out / f"{_slug(name)}.jsonl"
        done = {r["idx"] for r in read(path)}
        for k, (idx, xi, yi) in enumerate(zip(data.indices.tolist(), data.X, data.y)):
            if idx in done or k % shard[1] != shard[0]:
                continue
            x = xi.unsqueeze(0)
            t0 = time.perf_counter()
            res, fwd, bwd, (last_fwd, last_bwd) = fit_one(
                stages, model, x, torch.Generator().manual_seed(1000 * seed + idx)
            )
            fit_seconds = time.perf_counter() - t0
            noise = res.noises()[0]
            cert = certify.Smooth(model, noise, data.num_classes).certify(
                xi, 100, n, 0.001, batch_size=min(n, 10_000), generator=torch.Generator().manual_seed(10_000_019 + idx)
            )
            eig = noise_for(res.manifold).eigenvalues(res.points[0]).flatten()
            star = float(res.sigma_star.flatten()[0])
            row = {
                "idx": idx,
                "label": int(yi),
                "prediction": int(cert.prediction),
                "correct": int(cert.prediction == int(yi)),
                "proxy": float(cert.proxy_radius),
                "l2": float(cert.l2_radius),
                "p_lower": float(cert.p_lower),
                "forward": int(fwd),
                "backward": int(bwd),
                "last_stage_forward": int(last_fwd),
                "last_stage_backward": int(last_bwd),
                "steps": None if res.trace is None else len(res.trace),
                "fit_seconds": fit_seconds,
                "seconds": time.perf_counter() - t0,
                "sigma_star": star,
                "eig_min_ratio": float(eig.min()) / star,
                "eig_max_ratio": float(eig.max()) / star,
                "kept_new": None if res.kept_new is None else bool(res.kept_new[0]),
            }
            with open(path, "a") as f:
                f.write(json.dumps(row) + "\n")
            print(
                f"{dataset} sigma {sigma:g} {name} [{k + 1}/{len(data)}] idx {idx}: proxy {row['proxy']:.3f} "
                f"evals {fwd + bwd} {row['seconds']:.1f}s",
                flush=True,
            )
    del ddrs


def summarise_rows(dataset: str, sigma: float, names=None, limit: set | None = None) -> list[dict]:
    """One row per recipe log (restricted to the inputs in ``limit`` if given)."""
    out = log_dir(dataset, sigma)
    rows = []
    known = list(recipes())
    paths = sorted(out.glob("*.jsonl"), key=lambda p: next((i for i, k in enumerate(known) if _slug(k) == p.stem), 99))
    slug_to_name = {_slug(k): k for k in known}
    for path in paths:
        name = slug_to_name.get(path.stem, path.stem)
        if names and name not in names:
            continue
        log = [r for r in read(path) if limit is None or r["idx"] in limit]
        if not log:
            continue
        correct = np.array([r["correct"] for r in log], dtype=bool)
        proxy = np.array([r["proxy"] for r in log]) * correct
        row = {
            "recipe": name,
            "inputs": len(log),
            "evals_per_input": float(np.mean([r["forward"] + r["backward"] for r in log])),
            "stage_evals_per_input": float(
                np.mean([r.get("last_stage_forward", np.nan) + r.get("last_stage_backward", np.nan) for r in log])
            ),
            "seconds_per_input": float(np.mean([r["seconds"] for r in log])),
            "median_proxy": float(np.median(proxy)),
            "mean_proxy": float(np.mean(proxy)),
        }
        for q in PROXY_RADII:
            row[f"acc@{q:g}"] = float(np.mean(correct & (proxy >= q)))
        row["abstain"] = float(np.mean([r["prediction"] < 0 for r in log]))
        row["eig_min_ratio_median"] = float(np.median([r["eig_min_ratio"] for r in log]))
        row["eig_max_ratio_median"] = float(np.median([r["eig_max_ratio"] for r in log]))
        rows.append(row)
    default = {r["idx"]: r for r in read(out / "new-default.jsonl")}
    for row in rows:  # the new default on exactly this recipe's inputs (ablations run on 10 of them)
        log = [r for r in read(out / f"{_slug(row['recipe'])}.jsonl") if limit is None or r["idx"] in limit]
        same = [default[r["idx"]] for r in log if r["idx"] in default]
        ok = len(same) == len(log) and same
        row["vs_new_default"] = (
            row["median_proxy"] / float(np.median([r["proxy"] * r["correct"] for r in same])) if ok else float("nan")
        )
    ref = next((r for r in rows if r["recipe"] == "paper-capped"), None)
    for r in rows:
        r["evals_ratio"] = r["evals_per_input"] / ref["evals_per_input"] if ref else float("nan")
        r["stage_evals_ratio"] = r["stage_evals_per_input"] / ref["stage_evals_per_input"] if ref else float("nan")
        r["median_ratio"] = r["median_proxy"] / ref["median_proxy"] if ref and ref["median_proxy"] > 0 else float("nan")
    return rows


def equal_evaluations(dataset: str, sigma: float) -> str:
    """`new-default` against `ancer-equal` (same DDRS stage, same evaluations) on the inputs both finished."""
    out = log_dir(dataset, sigma)
    nd = {r["idx"]: r for r in read(out / "new-default.jsonl")}
    an = {r["idx"]: r for r in read(out / "ancer-equal.jsonl")}
    common = sorted(set(nd) & set(an))
    if not common:
        return ""
    a = np.array([nd[i]["proxy"] * nd[i]["correct"] for i in common])
    b = np.array([an[i]["proxy"] * an[i]["correct"] for i in common])
    ev_a = np.mean([nd[i]["forward"] + nd[i]["backward"] for i in common])
    ev_b = np.mean([an[i]["forward"] + an[i]["backward"] for i in common])
    return (
        f"**Equal evaluations, sigma {sigma:g}:** `new-default` (RDDRS, cold start) median / mean proxy radius "
        f"{np.median(a):.3f} / {a.mean():.3f} against `ancer-equal` {np.median(b):.3f} / {b.mean():.3f} on the "
        f"{len(common)} inputs both have finished ({ev_a:,.0f} vs {ev_b:,.0f} evaluations per input); RDDRS "
        f"larger on {int((a > b).sum())}, smaller on {int((a < b).sum())}.\n"
    )


def write_summary(dataset: str, sigmas=(0.12, 0.25), head: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    md = RESULTS_DIR / f"rddrs_efficiency_{dataset}.md"
    all_rows = []
    fig, axes = plt.subplots(1, len(sigmas), figsize=(5.5 * len(sigmas), 4), squeeze=False)
    with open(md, "w") as f:
        f.write(
            "```\n" + head + f"certification: Cohen CERTIFY, n0 = 100, n = {N_CERT}, alpha = 0.001, fresh "
            "samples; one input at a time, one torch thread, machine shared (seconds are indicative)\n```\n"
        )
        for ax, sigma in zip(axes[0], sigmas):
            full = summarise_rows(dataset, sigma)
            ref = next((r for r in full if r["recipe"] == "paper-capped"), None)
            rows = full
            if ref is not None:  # ratios on the inputs the reference has finished
                idxs = {r["idx"] for r in read(log_dir(dataset, sigma) / "paper-capped.jsonl")}
                rows = summarise_rows(dataset, sigma, limit=idxs)
            if not rows:
                continue
            f.write(f"\n## sigma = {sigma:g}\n\n")
            if ref is not None:
                f.write(
                    f"Ratios are to `paper-capped` on the {ref['inputs']} inputs it has finished "
                    "(every recipe restricted to the same inputs).\n\n"
                )
            keys = list(rows[0])
            f.write("| " + " | ".join(keys) + " |\n|" + "---|" * len(keys) + "\n")
            for r in rows:
                f.write(
                    "| " + " | ".join(f"{r[k]:.4g}" if isinstance(r[k], float) else str(r[k]) for k in keys) + " |\n"
                )
                all_rows.append({"sigma": sigma, **r})
            nd = next((r for r in rows if r["recipe"] == "new-default"), None)
            if ref is not None and nd is not None:
                goal = (
                    f"**Goal, sigma {sigma:g}:** `new-default` reaches {100 * nd['median_ratio']:.1f} % of "
                    f"`paper-capped`'s median proxy radius at {100 * nd['stage_evals_ratio']:.2f} % of its RDDRS "
                    f"stage's network evaluations ({100 * nd['evals_ratio']:.2f} % counting the DDRS stages too), "
                    f"on the {nd['inputs']} inputs both have finished.\n"
                )
                f.write("\n" + goal)
                print(goal, flush=True)
            duel = equal_evaluations(dataset, sigma)
            if duel:
                f.write("\n" + duel)
                print(duel, flush=True)
            for r in rows:
                abl = r["recipe"].startswith("abl")
                ax.scatter(r["evals_per_input"], r["median_proxy"], marker="x" if abl else "o", s=30)
                ax.annotate(r["recipe"], (r["evals_per_input"], r["median_proxy"]), fontsize=6)
            ax.set_xscale("log")
            ax.set_xlabel("network evaluations per input (fwd + bwd, log)")
            ax.set_ylabel("median proxy radius")
            ax.set_title(f"{dataset}, sigma {sigma:g}")
            ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(RESULTS_DIR / f"rddrs_efficiency_{dataset}.png", dpi=110)
    plt.close(fig)
    if all_rows:
        with open(RESULTS_DIR / f"rddrs_efficiency_{dataset}.csv", "w", newline="") as f:
            keys = list(all_rows[0])
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(all_rows)
    return md


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    p.add_argument("--dataset", default="digits")
    p.add_argument("--sigma", type=float, action="append", help="repeatable; default 0.12 and 0.25")
    p.add_argument("--inputs", type=int, default=50)
    p.add_argument(
        "--recipes", default=",".join(MAIN), help="comma-separated names; 'all': every recipe; 'abl': the ablations"
    )
    p.add_argument("--summary", action="store_true", help="only rebuild tables and plot from the logs")
    p.add_argument(
        "--shard", default="0/1", help="K/M: only inputs at positions K, K+M, ... (M processes share a recipe)"
    )
    args = p.parse_args(argv)
    try:
        shard = tuple(int(v) for v in args.shard.split("/"))
        if len(shard) != 2 or not 0 <= shard[0] < shard[1]:
            raise ValueError
    except ValueError:
        p.error(f"--shard must be K/M with 0 <= K < M, got {args.shard!r}")
    torch.set_num_threads(1)
    sigmas = args.sigma or [0.12, 0.25]
    if args.recipes in ("all", "abl"):  # everything, or the ablation table (names hold commas)
        names = [n for n in recipes() if args.recipes == "all" or n.startswith("abl:")]
    else:
        names = [s for s in args.recipes.split(",") if s]
    if not args.summary:
        for sigma in sigmas:
            run(args.dataset, sigma, args.inputs, names, shard=shard)
    from ddrs_app.compare import header

    md = write_summary(
        args.dataset, tuple(sigmas), header(f"python -m benchmarks.studies.rddrs_efficiency --dataset {args.dataset}")
    )
    print(md.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
