"""Certify and optimise throughput ratios of this checkout against another commit, measured in one run.

Runs ``certify_throughput`` (certify time / bare forward time, isotropic, diagonal and full noise) and
``optimise_cost`` (optimiser step time / bare forward + backward time, DDRS, ANCER, RDDRS) of both
checkouts as child processes, alternating (base, this, base, this, ...), and writes every ratio with the
commit it came from. The ratios are self-normalised (each against its own bare network time in the same
process), so they compare across the two commits even on a shared machine; the spread between the two
rounds of one checkout is the noise level.

    python -m benchmarks.studies.redesign_throughput --base PATH_TO_OTHER_CHECKOUT [--rounds 2]

``PATH_TO_OTHER_CHECKOUT`` is a work tree of the other commit (``git worktree add --detach DIR REV``).
Writes ``redesign_throughput.csv`` and ``redesign_throughput.png``.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.analysis.outputs import add_output_args, prepare

#: (study, module path before the layout, after it, the ratio column, the row key column)
STUDIES = (
    ("certify_throughput", "benchmarks.certify_throughput", "benchmarks.studies.certify_throughput", "ratio", "noise"),
    ("optimise_cost", "benchmarks.optimise_cost", "benchmarks.studies.optimise_cost", "ratio", "method"),
)
HERE = Path(__file__).resolve().parents[2]


def _module(checkout: Path, old: str, new: str) -> str:
    return new if (checkout / "benchmarks" / "studies").is_dir() else old


def _commit(checkout: Path) -> str:
    out = subprocess.run(["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


def measure(checkout: Path, study: tuple, extra: list[str]) -> list[dict]:
    """One run of ``study`` in ``checkout`` (its own code first on the import path): its ratio rows."""
    name, old, new, column, key = study
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, PYTHONPATH=str(checkout))
        cmd = [sys.executable, "-m", _module(checkout, old, new), "--out-dir", tmp, *extra]
        # exit 1 is a missed target of the study (its rows are still written); no CSV is a failure
        done = subprocess.run(cmd, cwd=checkout, env=env, stdout=subprocess.DEVNULL)
        table = Path(tmp) / f"{name}.csv"
        if not table.is_file():
            raise RuntimeError(f"{' '.join(cmd)} in {checkout} wrote no {table.name} (exit {done.returncode})")
        rows = list(csv.DictReader(open(table)))
    return [{"study": name, "case": r[key], "ratio": float(r[column])} for r in rows]


def write_csv(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["study", "case", "commit", "round", "ratio"])
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{r[k]:.4f}" if k == "ratio" else r[k]) for k in w.fieldnames})


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = list(dict.fromkeys((r["study"], r["case"]) for r in rows))
    commits = list(dict.fromkeys(r["commit"] for r in rows))
    fig, ax = plt.subplots(figsize=(7, 3.6), constrained_layout=True)
    for j, commit in enumerate(commits):
        for i, case in enumerate(cases):
            values = [r["ratio"] for r in rows if (r["study"], r["case"]) == case and r["commit"] == commit]
            ax.scatter([i + 0.15 * (j - 0.5)] * len(values), values, label=commit if i == 0 else None, s=18)
    ax.set_xticks(range(len(cases)), [f"{s}\n{c}" for s, c in cases], fontsize=7)
    ax.set_ylabel("time / bare network time")
    ax.set_title("throughput ratios, two commits, one run")
    ax.legend()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    p.add_argument("--base", type=Path, required=True, help="a work tree of the commit to compare against")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds per checkout (default 2)")
    p.add_argument("--quick", action="store_true", help="the studies' --quick settings")
    add_output_args(p, "redesign_throughput")
    a = p.parse_args(argv)
    if not (a.base / "benchmarks").is_dir():
        p.error(f"--base: {a.base} is not a checkout of this project")
    csv_path, png_path = prepare("redesign_throughput", ["redesign_throughput.csv", "redesign_throughput.png"],
                                 a.results, a.out_dir)  # fmt: skip
    extra = ["--quick"] if a.quick else []
    rows = []
    for round_ in range(a.rounds):
        for checkout in (a.base, HERE):
            for study in STUDIES:
                for r in measure(checkout, study, extra):
                    rows.append(dict(r, commit=_commit(checkout), round=round_))
                    print(f"round {round_} {rows[-1]['commit']} {r['study']} {r['case']}: {r['ratio']:.3f}", flush=True)
                write_csv(rows, csv_path)  # after every study: an interrupted run keeps what it measured
    plot(rows, png_path)
    print(f"wrote {csv_path} and {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
