"""Swapping the metric or the backend swaps the geometry, not the optimiser: RDDRS with the defaults a user
gets, ``RDDRS(metric=...)`` and ``RDDRS(metric=..., backend="pymanopt")``, on the digits compare budget.

    python -m benchmarks.studies.metric_swap                 # writes runs/metric_swap/metric_swap.{csv,md} (+ logs)
    python -m benchmarks.studies.metric_swap --results       # the committed benchmarks/results/ copies

Every row is one ``ddrs compare`` run (``ddrs_app.runs.run_certification``: the same inputs, base model,
DDRS stage, seed, memory-based certifier and Cohen certification with n = 10,000 fresh samples as the
``digits`` comparison, ``ddrs_app.compare.BUDGETS["digits"]``: 50 test inputs, every 9th) at sigma 0.25,
with the RDDRS options left at their defaults except the metric and the backend; the step rule that ran is
read from the log's fingerprint. Acceptance: every default row reaches >= 90 % of the best default row's proxy
ACR and of its certified accuracy at each of the table's proxy radii. The two ``former default`` rows rerun the
rule the log-Euclidean and Bures-Wasserstein metrics (and the Pymanopt backend) used to get silently, plain
Riemannian gradient ascent (``step="riemannian"``: step 1, clipped at 2), for comparison.
"""

from __future__ import annotations

import argparse
import csv
import json
from dataclasses import replace

import torch
from ddrs_app.compare import BUDGETS, L2_RADII, header, summarise
from ddrs_app.data import load_dataset, subset
from ddrs_app.runs import MethodConfig, fingerprint_path, run_certification
from ddrs_app.training import load_or_train

from benchmarks.analysis.outputs import add_output_args, output_dir, prepare

METRICS = ("affine-invariant", "log-euclidean", "bures-wasserstein")
BACKENDS = ("rgd", "pymanopt")
SIGMA = 0.25
TARGET = 0.9
SHORT = {"affine-invariant": "ai", "log-euclidean": "le", "bures-wasserstein": "bw"}


def configs(budget, former: bool = True) -> list[tuple[str, MethodConfig]]:
    """(row name, config): the defaults on both backends, then the former plain-ascent rule (LE, BW)."""
    base = dict(sigma=SIGMA, ddrs_options=dict(budget.ddrs))
    out = [
        (f"{SHORT[m]}-{b}", MethodConfig("rddrs", metric=m, backend=b, options=dict(budget.rddrs), **base))
        for m in METRICS
        for b in BACKENDS
    ]
    if former:
        out += [
            (f"{SHORT[m]}-rgd-former", MethodConfig("rddrs", metric=m, options=dict(step="riemannian"), **base))
            for m in METRICS[1:]
        ]
    return out


def acceptance(rows: list[dict], radii) -> dict:
    """Each default row's ratio to the best default row (by proxy ACR): proxy ACR and certified accuracy at every
    proxy radius (1 where both are 0); ``ok`` when every ratio is >= TARGET."""
    default = [r for r in rows if r["rule"] == "default"]
    best = max(default, key=lambda r: r["acr_proxy"])
    ratio = lambda a, b: 1.0 if b == 0 and a == 0 else (a / b if b > 0 else 0.0)  # noqa: E731
    for r in rows:
        r["acr_ratio"] = ratio(r["acr_proxy"], best["acr_proxy"])
        r["acc_ratio"] = min(ratio(r[f"proxy@{x:g}"], best[f"proxy@{x:g}"]) for x in radii)
        r["ok"] = r["acr_ratio"] >= TARGET and r["acc_ratio"] >= TARGET
    return {"best": best["row"], "ok": all(r["ok"] for r in default)}


def run(args) -> tuple[list[dict], dict, str]:
    budget = BUDGETS["digits"]
    if args.max_inputs is not None:
        budget = replace(budget, max_inputs=args.max_inputs)
    data = subset(load_dataset("digits", "test", data_dir=args.data_dir), budget.every, budget.max_inputs)
    model, _ = load_or_train("digits", SIGMA, model_dir=args.model_dir, progress=not args.quiet)
    radii = L2_RADII["digits"]
    log_dir = output_dir("metric_swap", args.results, args.out_dir) / "metric_swap_logs"
    # the DDRS stage (identical options) is shared by every row, as in ``ddrs compare``: its own run first fills
    # the cache, so every RDDRS row starts from the same sigma_x* and the same generator state (the default
    # row then reproduces the comparison's RDDRS log at sigma 0.25)
    star_cache: dict = {}
    rows: list[dict] = []
    stage = MethodConfig("ddrs", sigma=SIGMA, ddrs_options=dict(budget.ddrs))
    for name, config in [("ddrs", stage)] + configs(budget, former=not args.no_former):
        log = log_dir / f"{name}.tsv"
        run_certification(
            config,
            model,
            data,
            log,
            n0=budget.n0,
            n=budget.n,
            alpha=budget.alpha,
            batch_size=budget.batch_size,
            opt_batch=budget.opt_batch,
            seed=0,
            progress=not args.quiet,
            restart_on_mismatch=True,
            sigma_star_cache=star_cache,
        )
        if config.method == "ddrs":
            continue
        rule = json.loads(fingerprint_path(log).read_text())["step_rule"]["rddrs"]
        row = {
            "row": name,
            "metric": config.metric,
            "backend": config.backend,
            "rule": "former" if name.endswith("former") else "default",
            "step_rule": rule,
        }
        row.update(summarise(log, radii, radii))
        rows.append(row)
        if not args.quiet:
            print(f"{name}: proxy ACR {row['acr_proxy']:.3f}  ({rule})", flush=True)
    verdict = acceptance(rows, radii[1:])
    return rows, verdict, f"{len(data)} test inputs (every {budget.every}), n = {budget.n:,}"


def markdown(rows: list[dict], verdict: dict, inputs: str) -> str:
    radii = [k for k in rows[0] if k.startswith("proxy@")]
    lines = [
        f"RDDRS with its default step rule per metric and backend, digits, sigma {SIGMA}, {inputs}, 1 torch thread "
        "(`python -m benchmarks.studies.metric_swap`). Ratios: to the best default row by proxy ACR "
        f"(`{verdict['best']}`); `acc ratio` the smallest over the proxy radii {', '.join(r[6:] for r in radii[1:])}; "
        "`s / input` the logs' seconds per input (RDDRS stage and certification; 2 shared CPU cores, indicative).",
        "",
        "| metric | backend | rule | proxy ACR | l2 ACR | "
        + " | ".join(radii)
        + " | ACR ratio | acc ratio | >= 90 % | s / input |",
        "|---|---|---|---:|---:|" + "---:|" * len(radii) + "---:|---:|---|---:|",
    ]
    for r in rows:
        rule = "default" if r["rule"] == "default" else "former: plain ascent"
        lines.append(
            f"| {r['metric']} | {r['backend']} | {rule} | {r['acr_proxy']:.3f} | {r['acr']:.3f} | "
            + " | ".join(f"{r[k]:.2f}" for k in radii)
            + f" | {r['acr_ratio']:.3f} | {r['acc_ratio']:.3f} | {'yes' if r['ok'] else 'no'}"
            + f" | {r['sec_per_input']:.2f} |"
        )
    rules = sorted({r["step_rule"] for r in rows})
    lines += ["", f"Every default row >= 90 %: {'yes' if verdict['ok'] else 'NO'}.", "", "Step rules that ran:", ""]
    lines += [f"- `{rule}`" for rule in rules]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    ap.add_argument("--max-inputs", type=int, default=None, help="fewer inputs than the digits budget's 50")
    ap.add_argument("--no-former", action="store_true", help="skip the former plain-ascent rows")
    ap.add_argument("--model-dir", default=None)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--quiet", action="store_true")
    add_output_args(ap, "metric_swap")
    args = ap.parse_args(argv)
    csv_path, md_path = prepare("metric_swap", ["metric_swap.csv", "metric_swap.md"], args.results, args.out_dir)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        command = "python -m benchmarks.studies.metric_swap" + (
            f" --max-inputs {args.max_inputs}" if args.max_inputs else ""
        )
        head = header(command)
        rows, verdict, inputs = run(args)
    finally:
        torch.set_num_threads(threads)
    with open(csv_path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows)
    text = markdown(rows, verdict, inputs)
    md_path.write_text("```\n" + head + "```\n\n" + text + "\n")
    print("\n" + text)
    print(f"wrote {csv_path} and {md_path}")
    return 0 if verdict["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
