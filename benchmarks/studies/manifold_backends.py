"""RDDRS on one fixed problem for every metric x backend x method (the acceptance table in manifolds/README.md).

    python -m benchmarks.studies.manifold_backends            # writes runs/manifold_backends/manifold_backends.{csv,md}
    python -m benchmarks.studies.manifold_backends --results  # the committed benchmarks/results/ copies

The fixed problem (the issue's item 1 reproducer, as tests/manifolds/test_manifolds_rddrs.py): a linear classifier on
R^16 (3 classes, weights N(0, 1), seed 0), two inputs 0.3 N(0, I) (seed 1), RS(0.25) -> DDRS(100 steps)
(generator seed 2) giving sigma_x*, then RDDRS from sigma_x* I with floor sigma_x* and ceiling 4 sigma_x*,
plain Riemannian gradient ascent (``adaptive=False``: the same step rule on both backends; Pymanopt's
``sgd`` solver drives the same clipped, projected moves), ``iterations`` steps of ``samples`` Monte-Carlo
samples (generator seed 3), best evaluated iterate kept, no selection. Each returned point is scored on ONE
common draw of 20,000 samples (seed 9) with the objective it was optimised for; a row's ``ratio`` is the
smaller over the two inputs of (its objective) / (the best row's objective) for that objective and step rule.

Step rules (``--steps``):

* ``normalised`` (the default, the acceptance table): every step has the same length ``r`` in the metric's
  own norm, ``step = r * rgrad / ||rgrad||_x`` (``RDDRS(step_size=1e6, max_step_norm=r)``: the clip always
  binds; Bures-Wasserstein's own limit sqrt(lambda_min) (1 - exp(-r / 2)) keeps its steps the same relative
  size as AI/LE's, ``BuresWasserstein.step_limit``). A fixed step size is not comparable across metrics: at
  C = sigma I an AI step of size t moves the eigenvalues by a relative t sigma ||G||, a Bures-Wasserstein one
  by 4 t ||G||, 16 x more at sigma = 0.25; with the certificate objective's small gradients AI/LE then
  crawl (0.76 of BW at step size 1).
* ``step1``: the fixed step size 1 (clip 2), for comparison.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import ddrs  # noqa: E402
import manifolds  # noqa: E402
from benchmarks.analysis.outputs import add_output_args, prepare  # noqa: E402

F64 = torch.float64
D = 16
METRICS = ("affine-invariant", "log-euclidean", "bures-wasserstein")
BACKENDS = ("rgd", "pymanopt")
METHODS = ("exp", "retr")
KAPPA = 1e-8  # RDDRS's default (and the paper's)
EVAL_SAMPLES = 20000
STEP_RULES = {  # name -> (step_size, max_step_norm)
    "normalised": (1e6, 0.4),
    "step1": (1.0, 2.0),
}


class Linear(torch.nn.Module):
    """A fixed linear classifier on R^16 (3 classes)."""

    def __init__(self, d: int = D, k: int = 3):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.register_buffer("w", torch.randn(k, d, generator=g, dtype=F64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.w.T


def problem() -> tuple[Linear, torch.Tensor, ddrs.SmoothingResult]:
    """The model, the two inputs and their DDRS result (sigma_x*)."""
    model = Linear()
    x = torch.randn(2, D, generator=torch.Generator().manual_seed(1), dtype=F64) * 0.3
    chain = ddrs.run_chain(
        model, x, [ddrs.RS(0.25), ddrs.DDRS(iterations=100)], generator=torch.Generator().manual_seed(2)
    )
    return model, x, chain[-1]


def objective_of(form: str) -> ddrs.Objective:
    """RDDRS's objective R P + kappa K R with R = Phi^-1(p_A) ("certificate") or the papers' gap ("gap")."""
    return ddrs.ancer_objective(KAPPA, form) if form == "certificate" else ddrs.paper_objective("rddrs", KAPPA)


def run(forms, steps, iterations: int, samples: int) -> list[dict]:
    model, x, start = problem()
    est = ddrs.SoftSmoothingEstimator(samples=EVAL_SAMPLES, chunk_size=100_000)
    z = est.draw(2, D, torch.Generator().manual_seed(9), x.device, x.dtype)
    scorer = manifolds.SPD(D)
    rows = []
    for form in forms:
        for rule in steps:
            step_size, max_norm = STEP_RULES[rule]
            for metric in METRICS:
                for backend in BACKENDS:
                    for method in METHODS:
                        r = ddrs.RDDRS(
                            iterations=iterations,
                            samples=samples,
                            step_size=step_size,
                            max_step_norm=max_norm,
                            metric=metric,
                            method=method,
                            backend=backend,
                            adaptive=False,
                            select=False,
                            objective=form,
                        )
                        t0 = time.perf_counter()
                        res = r.fit(model, x, init=start, generator=torch.Generator().manual_seed(3))
                        seconds = time.perf_counter() - t0
                        value = est.evaluate(model, scorer, x, res.points, objective_of(form), z, with_grad=False)[0]
                        rows.append(
                            {
                                "objective": form,
                                "steps": rule,
                                "step_size": step_size,
                                "max_step_norm": max_norm,
                                "metric": metric,
                                "backend": backend,
                                "method": method,
                                "input0": round(float(value[0]), 5),
                                "input1": round(float(value[1]), 5),
                                "seconds": round(seconds, 2),
                            }
                        )
                        print(
                            f"  {form:11s} {rule:10s} {metric:17s} {backend:8s} {method:4s} "
                            f"{float(value[0]):.4f} {float(value[1]):.4f}  {seconds:6.2f} s",
                            flush=True,
                        )
    for form in forms:
        for rule in steps:
            group = [r for r in rows if r["objective"] == form and r["steps"] == rule]
            best = [max(r[f"input{i}"] for r in group) for i in (0, 1)]
            for r in group:
                r["ratio"] = round(min(r[f"input{i}"] / best[i] for i in (0, 1)), 4)
    return rows


def markdown(rows: list[dict], iterations: int, samples: int) -> str:
    lines = [
        f"RDDRS on the fixed problem (linear 16-d classifier, 3 classes, 2 inputs, RS 0.25 -> DDRS 100 steps -> "
        f"RDDRS from sigma_x* I, floor sigma_x*, ceiling 4 sigma_x*, kappa {KAPPA:g}); budget: {iterations} "
        f"plain Riemannian ascent steps x {samples} samples, best iterate kept, no selection; objective scored "
        f"on one common draw of {EVAL_SAMPLES} samples; ratio = min over the two inputs of value / best row's "
        "value (same objective and step rule). `python -m benchmarks.studies.manifold_backends`.",
        "",
    ]
    for form in dict.fromkeys(r["objective"] for r in rows):
        for rule in dict.fromkeys(r["steps"] for r in rows):
            group = [r for r in rows if r["objective"] == form and r["steps"] == rule]
            if not group:
                continue
            g0 = group[0]
            how = (
                f"normalised: every step of length {g0['max_step_norm']} in the metric's own norm"
                if rule == "normalised"
                else f"fixed step size {g0['step_size']:g}, clipped at {g0['max_step_norm']:g}"
            )
            worst = min(r["ratio"] for r in group)
            lines += [
                f"**objective {form}, {how}** (worst ratio {worst:.3f})",
                "",
                "| metric | backend | method | input 0 | input 1 | ratio to best | seconds |",
                "|---|---|---|---:|---:|---:|---:|",
            ]
            lines += [
                f"| {r['metric']} | {r['backend']} | {r['method']} | {r['input0']:.4f} | {r['input1']:.4f} | "
                f"{r['ratio']:.3f} | {r['seconds']:.2f} |"
                for r in group
            ]
            lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    ap.add_argument("--iterations", type=int, default=98, help="RDDRS steps (default 98, the paper's)")
    ap.add_argument("--samples", type=int, default=2000, help="Monte-Carlo samples per step (default 2000)")
    ap.add_argument("--objectives", default="certificate,gap", help="comma-separated: certificate, gap")
    ap.add_argument("--steps", default="normalised,step1", help=f"comma-separated: {', '.join(STEP_RULES)}")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    add_output_args(ap, "manifold_backends")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    forms = [f for f in args.objectives.split(",") if f]
    steps = [s for s in args.steps.split(",") if s]
    for s in steps:
        if s not in STEP_RULES:
            ap.error(f"--steps: unknown step rule {s!r}; choose from {sorted(STEP_RULES)}")
    for f in forms:
        if f not in ("certificate", "gap"):
            ap.error(f"--objectives: unknown objective {f!r}; choose certificate or gap")
    csv_path, md_path = prepare(
        "manifold_backends", ["manifold_backends.csv", "manifold_backends.md"], args.results, args.out_dir
    )
    rows = run(forms, steps, args.iterations, args.samples)
    with open(csv_path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    text = markdown(rows, args.iterations, args.samples)
    md_path.write_text(text + "\n")
    print("\n" + text)
    print(f"wrote {csv_path} and {md_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
