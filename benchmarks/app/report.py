"""``ddrs report``: certified-accuracy tables and a plot for any set of Cohen-format logs.

Like Cohen et al.'s ``analyze.py``: a log is any tab-separated file whose header starts with
``idx label predict radius correct`` (theirs, or ours, which add columns). Certified accuracy at r is
the fraction of rows with ``correct == 1`` and ``radius >= r`` (or another radius column, ``column``:
e.g. ``proxy_radius``, the ANCER/RDDRS papers' metric). ``write_report`` writes, into ``out_dir``:

* ``report.md``: a title naming the column, Cohen's Markdown table (byte for byte what their
  ``markdown_table_certified_accuracy`` prints for the same logs, legends and radii), then a summary
  table (rows, abstention rate, average certified radius, certified accuracy at r = 0);
* ``report.csv``: one row per log: label, path, column, rows, abstention, ACR, accuracy at every radius;
* ``certified_accuracy.png``: certified accuracy against the radius of ``column``, one line per log.

A malformed log is a ValueError naming the file and line (``certify.read_log``).
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

import certify

from .data import check_nonnegative

#: Cohen et al.'s CIFAR-10 radii (their ImageNet table uses 0.5 .. 3.0).
DEFAULT_RADII = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5)

#: What a radius column holds (any other column is named as it is), and its axis label.
COLUMN_MEANINGS = {
    "radius": "the certified l2 radius",
    "l2_radius": "the certified l2 radius",
    "proxy_radius": "ANCER's proxy radius, the l2 ball of the certified region's volume",
}
AXIS_LABELS = {"radius": "l2 radius", "l2_radius": "l2 radius", "proxy_radius": "proxy radius"}


def column_title(column: str) -> str:
    """``Certified accuracy at proxy_radius >= r (ANCER's proxy radius, ...)``: what a report measures."""
    meaning = COLUMN_MEANINGS.get(column)
    return f"Certified accuracy at {column} >= r" + (f" ({meaning})" if meaning else "")


def check_column(log: certify.Log, column: str) -> None:
    """ValueError naming ``--column``, the file and the line unless every row of ``column`` is a number
    >= 0 (nan and inf included: they would give a wrong certified accuracy and a nan ACR)."""
    if column not in log.columns:
        raise ValueError(
            f"--column {column}: {log.path} line 1: the header has no column {column} "
            f"(its columns: {' '.join(log.columns)})"
        )
    lines = log.lines if log.lines is not None else np.arange(len(log)) + 2
    for i, value in enumerate(log[column]):
        where = f"--column {column}: {log.path} line {lines[i]}: {column} is"
        out_of_range = lambda _: f"{where} {value} (expected a radius >= 0)"  # noqa: B023 (called at once)
        check_nonnegative(value, f"{where} {value!r}, not a number", out_of_range)


def default_label(path: str | os.PathLike) -> str:
    """``&sigma; = S`` for Cohen's ``sigma_S`` file names (their legends), else the file name."""
    name = Path(path).name
    match = re.fullmatch(r"sigma_([0-9.]+)", name)
    return f"&sigma; = {match.group(1)}" if match else name


def read_logs(
    paths: Sequence[str | os.PathLike], labels: Sequence[str] | None = None, column: str = "radius"
) -> dict[str, certify.Log]:
    """Read every log; labels default to :func:`default_label`, made unique by the parent folders.
    Every log must hold ``column`` as radii (:func:`check_column`)."""
    if not paths:
        raise ValueError("LOG: give at least one log file")
    if labels is not None and len(labels) != len(paths):
        raise ValueError(f"--labels: expected one label per log ({len(paths)}), got {len(labels)}")
    logs: dict[str, certify.Log] = {}
    names = list(labels) if labels is not None else [default_label(p) for p in paths]
    if labels is None and len(set(names)) < len(names):
        names = [f"{Path(p).parent.name}/{n}" for p, n in zip(paths, names)]
    if len(set(names)) < len(names):
        raise ValueError(f"--labels: labels must be unique, got {names}")
    for path, name in zip(paths, names):
        if not Path(path).is_file():
            raise FileNotFoundError(f"LOG: {path} is not a file")
        log = certify.read_log(path)
        if len(log) == 0:
            end = len(Path(path).read_bytes().splitlines()) + 1
            raise ValueError(f"{path} line {end}: no rows after the header")
        check_column(log, column)
        logs[name] = log
    return logs


def summary_rows(logs: dict[str, certify.Log], radii: Sequence[float], column: str = "radius") -> list[dict]:
    """One dict per log: label, path, column, rows, abstention, ACR and certified accuracy at each
    radius (ACR and accuracies of ``column``)."""
    rows = []
    for label, log in logs.items():
        acc = certify.certified_accuracy(log, radii, column=column)
        row = {
            "label": label,
            "path": log.path,
            "column": column,
            "rows": len(log),
            "abstention": certify.abstention_rate(log),
            "acr": certify.average_certified_radius(log, column=column),
            "accuracy_r0": float(certify.certified_accuracy(log, [0.0], column=column)[0]),
        }
        row.update({f"r={r:g}": float(a) for r, a in zip(radii, acc)})
        rows.append(row)
    return rows


def markdown_report(logs: dict[str, certify.Log], radii: Sequence[float], column: str = "radius") -> str:
    """A title naming the column, Cohen's table, then a summary table."""
    lines = [
        f"# {column_title(column)}",
        "",
        certify.cohen_markdown_table(logs, radii, column=column),
        "",
        "| log | rows | abstention | ACR | accuracy at r = 0 |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in summary_rows(logs, radii, column):
        lines.append(
            f"| {row['label']} | {row['rows']} | {row['abstention']:.3f} | {row['acr']:.3f} "
            f"| {row['accuracy_r0']:.3f} |"
        )
    lines += [
        "",
        f"Certified accuracy at r: fraction of rows with correct = 1 and {column} >= r "
        f"(Cohen et al.'s analyze.py); ACR: mean of {column} * correct; * marks the best value per radius.",
    ]
    return "\n".join(lines) + "\n"


def plot_report(logs: dict[str, certify.Log], out: Path, column: str = "radius") -> Path:
    """Certified accuracy against the radius of ``column``, one line per log (PNG)."""
    from .plots import plt, save_figure, style_accuracy_axis

    top = max(float(np.max(log[column])) for log in logs.values())
    grid = np.linspace(0, max(top, 1e-3) * 1.05, 300)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for label, log in logs.items():
        ax.plot(grid, certify.certified_accuracy(log, grid, column=column), label=label.replace("&sigma;", "sigma"))
    style_accuracy_axis(ax, "", f"{AXIS_LABELS.get(column, column)} (column {column})", 8)
    return save_figure(fig, out, column_title(column))


def write_report(
    paths: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike = "runs/report",
    radii: Sequence[float] = DEFAULT_RADII,
    labels: Sequence[str] | None = None,
    plot: bool = True,
    column: str = "radius",
) -> dict[str, Path]:
    """Tables (Markdown, CSV) and a plot for the logs ``paths``, certified accuracy by the radius
    column ``column`` (``radius``: Cohen's certified l2 radius; ``proxy_radius``: ANCER's); returns
    the files written."""
    radii = [float(r) for r in radii]
    if not radii or any(not np.isfinite(r) or r < 0 for r in radii):
        raise ValueError(f"--radii: expected finite radii >= 0, got {radii}")
    logs = read_logs(paths, labels, column)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md = out_dir / "report.md"
    md.write_text(markdown_report(logs, radii, column), encoding="utf-8")
    rows = summary_rows(logs, radii, column)
    csv_path = out_dir / "report.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    files = {"markdown": md, "csv": csv_path}
    if plot:
        files["plot"] = plot_report(logs, out_dir / "certified_accuracy.png", column)
    return files
