"""Objective ablation: the certificate's own objective (the default: Phi^-1(p_A), the form the
certificate uses) against the papers' top-two gap, for every data-dependent stage, on every data set.

Each objective runs the `ddrs compare` chain RS -> DDRS -> ANCER -> RDDRS with the data set's compare
budget; only the stages' ``objective`` differs ("certificate" or "gap"). Fashion-MNIST runs on a subset of
the compare's 100 images (``--images``, every 10,000 / images-th test image) at fixed n. Runs resume from
their logs like ``ddrs compare``.

    python -m benchmarks.studies.objective_ablation --dataset digits --dataset toy2d
    python -m benchmarks.studies.objective_ablation --dataset fashion-mnist --objective gap --images 10
    python -m benchmarks.studies.objective_ablation --summary
"""

from __future__ import annotations

import argparse
import csv
from dataclasses import replace
from pathlib import Path

import torch
from ddrs_app.compare import BUDGETS, Budget, run_compare
from ddrs_app.methods import compare_names

RESULTS_DIR = Path(__file__).resolve().parents[1] / "results"
OUT = RESULTS_DIR / "objective_ablation"
OBJECTIVES = ("certificate", "gap")
DATASETS = ("toy2d", "digits", "fashion-mnist")


def budget_for(dataset: str, objective: str, images: int = 10):
    """The compare budget of ``dataset`` with every data-dependent stage on ``objective``."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    b = BUDGETS.get(dataset, Budget())
    if dataset in ("fashion-mnist", "mnist"):
        b = replace(b, max_inputs=images, every=10_000 // images)
    with_objective = lambda opts: {**opts, "objective": objective}  # noqa: E731
    return replace(b, ddrs=with_objective(b.ddrs), ancer=with_objective(b.ancer), rddrs=with_objective(b.rddrs))


def sigmas_for(dataset: str) -> tuple:
    from ddrs_app.cli import DEFAULT_SIGMAS

    return (0.25,) if dataset == "fashion-mnist" else DEFAULT_SIGMAS[dataset]


def run(dataset: str, objective: str, images: int = 10) -> None:
    run_compare(
        dataset,
        OUT / objective,
        sigmas=sigmas_for(dataset),
        methods=compare_names(),  # the compare chain, in order
        budget=budget_for(dataset, objective, images),
        progress=False,
        command=f"python -m benchmarks.studies.objective_ablation --dataset {dataset} --objective {objective}",
    )


def read_summary(path: Path) -> dict:
    """(sigma, method) -> (proxy ACR, abstention rate) from a compare summary.csv."""
    out = {}
    if path.is_file():
        for r in csv.DictReader(path.open()):
            out[(float(r["sigma"]), r["method"])] = (float(r["acr_proxy"]), float(r["abstain"]), int(r["inputs"]))
    return out


def table() -> list[dict]:
    """One row per (data set, sigma, method): proxy ACR and abstentions under each objective."""
    rows = []
    for dataset in DATASETS:
        res = {o: read_summary(OUT / o / dataset / "summary.csv") for o in OBJECTIVES}
        keys = sorted(set(res["certificate"]) & set(res["gap"]), key=lambda k: (k[0], compare_names().index(k[1])))
        for sigma, method in keys:
            (c, ca, n), (g, ga, _) = res["certificate"][(sigma, method)], res["gap"][(sigma, method)]
            rows.append(
                dict(
                    dataset=dataset,
                    sigma=sigma,
                    method=method,
                    inputs=n,
                    acr_certificate=c,
                    acr_gap=g,
                    ratio=c / g if g > 0 else float("inf"),
                    abstain_certificate=ca,
                    abstain_gap=ga,
                )
            )
    return rows


def write_summary() -> Path:
    rows = table()
    OUT.mkdir(parents=True, exist_ok=True)
    md = OUT / "summary.md"
    with open(md, "w") as f:
        f.write(
            "Proxy ACR (l2 ACR for RS and DDRS) with every data-dependent stage on the certificate's objective "
            "(default) or the papers' top-two gap; same inputs, models, budgets and seeds (`python -m "
            "benchmarks.studies.objective_ablation`). RS does not optimise: its two columns are the same run twice.\n\n"
        )
        f.write("| data set | sigma | method | inputs | ACR certificate | ACR gap | ratio | abstain cert. / gap |\n")
        f.write("|---|---|---|---|---|---|---|---|\n")
        for r in rows:
            f.write(
                f"| {r['dataset']} | {r['sigma']:g} | {r['method']} | {r['inputs']} | {r['acr_certificate']:.3f} | "
                f"{r['acr_gap']:.3f} | {r['ratio']:.2f} | {100 * r['abstain_certificate']:.0f} / "
                f"{100 * r['abstain_gap']:.0f} % |\n"
            )
    if rows:
        with open(OUT / "summary.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    return md


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    p.add_argument("--dataset", action="append", choices=DATASETS, help="repeatable; default all three")
    p.add_argument("--objective", action="append", choices=OBJECTIVES, help="repeatable; default both")
    p.add_argument("--images", type=int, default=10, help="Fashion-MNIST images (every 10,000 / images-th)")
    p.add_argument("--summary", action="store_true", help="only rebuild the table from the runs")
    args = p.parse_args(argv)
    if args.images < 1:
        p.error(f"--images must be >= 1, got {args.images}")
    torch.set_num_threads(1)
    if not args.summary:
        for dataset in args.dataset or DATASETS:
            for objective in args.objective or OBJECTIVES:
                run(dataset, objective, args.images)
    print(write_summary().read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
