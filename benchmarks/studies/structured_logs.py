"""Structured RDDRS against full RDDRS and RS from comparison logs: the 50-image check of the structured-noise work.

Reads the structured RDDRS logs of one folder (``rddrs-<structure>_sigma<s>.tsv``, ``ddrs compare --rddrs-structure``)
and the RS, DDRS and full RDDRS logs of another on the same base model (the grid's), keeps the inputs the structured
logs hold, and reports per structure: proxy ACR and its ratio to full RDDRS's with the paired 95 % interval of the mean
per-input difference, certified accuracy at the l2 radii (inscribed ball) and at proxy radii, and the lowest paired
interval bound against RS at any l2 radius (never below RS: no interval entirely below 0). Writes a CSV, a Markdown
table and a plot (certified accuracy against l2 and proxy radius).

    python -m benchmarks.studies.structured_logs \
        --structured benchmarks/results/in-progress/fashion-mnist-structured/logs \
        --grid benchmarks/results/compare/fashion-mnist/logs --sigma 0.25 --results
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

import certify
from benchmarks.analysis.outputs import add_output_args, check_writable, output_dir
from benchmarks.analysis.paired import paired_difference

L2_RADII = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5)
PROXY_RADII = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5)


def restricted(log: certify.Log, idx: np.ndarray) -> certify.Log:
    """The rows of ``log`` whose ``idx`` is in ``idx``, in ``idx``'s order (every one must be there)."""
    where = {int(i): k for k, i in enumerate(np.asarray(log["idx"]))}
    missing = [int(i) for i in idx if int(i) not in where]
    if missing:
        raise SystemExit(f"error: {log.path} lacks inputs {missing[:5]}")
    rows = np.array([where[int(i)] for i in idx])
    return certify.Log({k: (np.asarray(v)[rows]) for k, v in log.columns.items()}, log.path)


def accuracy(log: certify.Log, column: str, r: float) -> float:
    return float(np.mean((np.asarray(log["correct"]) == 1) & (np.asarray(log[column], dtype=float) >= r)))


def summarise(logs: dict[str, certify.Log]) -> list[dict]:
    """One row per method: ACRs, certified accuracy at the radii, and (structures) the comparisons."""
    rows = []
    for name, log in logs.items():
        correct = np.asarray(log["correct"]) == 1
        row: dict = {
            "method": name,
            "inputs": len(log),
            "proxy_acr": float(np.mean(np.where(correct, np.asarray(log["proxy_radius"], dtype=float), 0.0))),
            "l2_acr": float(np.mean(np.where(correct, np.asarray(log["radius"], dtype=float), 0.0))),
        }
        row |= {f"l2@{r:g}": accuracy(log, "radius", r) for r in L2_RADII}
        row |= {f"proxy@{r:g}": accuracy(log, "proxy_radius", r) for r in PROXY_RADII}
        if name not in ("rs", "ddrs", "full"):
            d = paired_difference(log, logs["full"], column="proxy_radius", radius=None)
            row |= {"vs_full_ratio": d.a / d.b, "vs_full_diff": d.difference, "vs_full_low": d.low}
            row["vs_full_high"] = d.high
            lows = [paired_difference(log, logs["rs"], radius=r).low for r in L2_RADII[1:]]
            diffs = [paired_difference(log, logs["rs"], radius=r).difference for r in L2_RADII[1:]]
            row |= {"vs_rs_worst_diff": min(diffs), "vs_rs_worst_low": min(lows)}
        rows.append(row)
    return rows


def plot(rows: list[dict], path: Path, title: str) -> None:
    from benchmarks.studies.structured_rddrs import plot as plot_curves

    plot_curves(rows, path, key="method", l2_radii=L2_RADII, proxy_radii=PROXY_RADII, title=title)


def markdown(rows: list[dict], subset: str) -> str:
    out = [
        f"{subset}. Certified accuracy at l2 radius (inscribed ball) first, then proxy ACR; structures against full "
        "RDDRS (proxy ACR ratio, paired 95 % interval of the per-input difference) and against RS (the worst l2 "
        "radius: difference and the lower end of its paired interval).",
        "",
        "| method | " + " | ".join(f"l2 {r:g}" for r in L2_RADII) + " | proxy ACR | vs full | vs RS, worst l2 radius |",
        "|---|" + "---|" * (len(L2_RADII) + 3),
    ]
    for row in rows:
        cells = [row["method"], *(f"{row[f'l2@{r:g}']:.2f}" for r in L2_RADII), f"{row['proxy_acr']:.3f}"]
        if "vs_full_ratio" in row:
            cells.append(
                f"{row['vs_full_ratio']:.2f} ({row['vs_full_diff']:+.3f} [{row['vs_full_low']:+.3f}, "
                f"{row['vs_full_high']:+.3f}])"
            )
            cells.append(f"{row['vs_rs_worst_diff']:+.2f} (low {row['vs_rs_worst_low']:+.2f})")
        else:
            cells += ["", ""]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.studies.structured_logs", allow_abbrev=False)
    p.add_argument("--structured", type=Path, required=True, help="folder of rddrs-<structure>_sigma<s>.tsv logs")
    p.add_argument("--grid", type=Path, required=True, help="folder of the rs, ddrs and rddrs logs on the same model")
    p.add_argument("--sigma", type=float, default=0.25)
    p.add_argument("--dataset", default="fashion-mnist")
    add_output_args(p, "structured_logs")
    args = p.parse_args(argv)
    out = output_dir("structured_logs", args.results, args.out_dir)
    stem = f"structured_{args.dataset}_sigma{args.sigma:g}"
    paths = [out / f"{stem}.csv", out / f"{stem}.md", out / f"{stem}.png"]
    check_writable(paths, args.results)
    structured = {
        path.name.split("_sigma")[0][len("rddrs-") :]: certify.read_log(path)
        for path in sorted(args.structured.glob(f"rddrs-*_sigma{args.sigma:g}.tsv"))
    }
    if not structured:
        raise SystemExit(f"error: {args.structured} holds no rddrs-<structure>_sigma{args.sigma:g}.tsv")
    n = min(len(log) for log in structured.values())
    idx = np.asarray(next(iter(structured.values()))["idx"])[:n]
    logs = {
        "rs": certify.read_log(args.grid / f"rs_sigma{args.sigma:g}.tsv"),
        "ddrs": certify.read_log(args.grid / f"ddrs_sigma{args.sigma:g}.tsv"),
        "full": certify.read_log(args.grid / f"rddrs_sigma{args.sigma:g}.tsv"),
    } | structured
    logs = {name: restricted(log, idx) for name, log in logs.items()}
    rows = summarise(logs)
    out.mkdir(parents=True, exist_ok=True)
    with open(paths[0], "w", newline="") as f:
        keys: list[str] = []
        for r in rows:
            keys += [k for k in r if k not in keys]
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    subset = f"{args.dataset}, sigma {args.sigma:g}, the first {n} inputs of the grid's logs"
    paths[1].write_text(markdown(rows, subset))
    plot(rows, paths[2], f"{subset}: structured vs full RDDRS")
    print(paths[1].read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
