"""Where benchmark scripts write: never over committed results unless told.

Every speed script writes into ``runs/<script>/`` by default; ``--results`` writes into
``benchmarks/results/`` (the committed CSVs and plots the README quotes), and ``--out-dir DIR`` anywhere
else. A file inside ``benchmarks/results/`` that already exists is only overwritten with ``--results``,
whatever path was given, so a smoke run (``python -m benchmarks.studies.manifold_ops --quick``) can no longer
rewrite a tracked CSV.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parents[1] / "results"


class WouldOverwrite(SystemExit):
    """A committed result would be overwritten without ``--results`` (exit code 2, one line)."""

    def __init__(self, path: Path):
        super().__init__(
            f"error: {path} is a committed result; pass --results to regenerate it, or --out-dir DIR to write elsewhere"
        )
        self.path = path
        self.code = 2


def add_output_args(parser: argparse.ArgumentParser, script: str) -> None:
    """``--results`` and ``--out-dir DIR`` (default ``runs/<script>/``)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--results",
        action="store_true",
        help=f"write into {RESULTS_DIR.relative_to(RESULTS_DIR.parents[1])}/ (overwrites the committed results)",
    )
    group.add_argument("--out-dir", type=Path, default=None, help=f"where to write (default runs/{script}/)")


def output_dir(script: str, results: bool = False, out_dir: str | os.PathLike | None = None) -> Path:
    """``out_dir`` if given, ``benchmarks/results/`` with ``results``, else ``runs/<script>/``."""
    if out_dir is not None:
        return Path(out_dir)
    return RESULTS_DIR if results else Path("runs") / script


def _inside_results(path: Path) -> bool:
    try:
        path.resolve().relative_to(RESULTS_DIR)
    except ValueError:
        return False
    return True


def check_writable(paths: Iterable[str | os.PathLike], results: bool = False) -> list[Path]:
    """Raise :class:`WouldOverwrite` for the first existing file under ``benchmarks/results/`` among
    ``paths`` unless ``results``; call it BEFORE measuring (no time is wasted on a refused run)."""
    out = [Path(p) for p in paths]
    if not results:
        for p in out:
            if p.exists() and _inside_results(p):
                raise WouldOverwrite(p)
    return out


def prepare(script: str, names: Iterable[str], results: bool = False, out_dir=None) -> list[Path]:
    """The output files ``names`` of ``script`` (see :func:`output_dir`), checked and with their directory
    made."""
    directory = output_dir(script, results, out_dir)
    paths = check_writable([directory / n for n in names], results)
    directory.mkdir(parents=True, exist_ok=True)
    return paths


def write_csv(rows: list[dict], path: str | os.PathLike) -> None:
    """``rows`` (dicts with the same keys, in column order) as a CSV with a header."""
    import csv

    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def pyplot():
    """matplotlib's pyplot on the headless Agg backend (what every study's PNG is drawn with)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
