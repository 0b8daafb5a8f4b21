"""Per-input certification logs (Cohen et al.'s columns first) and certified accuracy from them.

Cohen's `certify.py` writes ``idx label predict radius correct time`` (tab-separated; time as
``h:mm:ss.micro`` or, in older logs, plain seconds; predict -1 = abstain). We write the same columns
first (``radius`` = the certified l2 radius) and then ours (``proxy_radius``, ``p_lower``, ...).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

COHEN_COLUMNS = ("idx", "label", "predict", "radius", "correct", "time")


def format_seconds(seconds: float) -> str:
    """Cohen's time format: ``str(datetime.timedelta(seconds=...))``."""
    return str(datetime.timedelta(seconds=float(seconds)))


def parse_time(text: str) -> float:
    """Seconds from ``h:mm:ss.micro`` (Cohen) or plain seconds (older Cohen logs)."""
    if ":" not in text:
        return float(text)
    days = 0.0
    if "day" in text:
        head, text = text.split(",")
        days = float(head.split()[0])
    h, m, s = text.strip().split(":")
    return days * 86400 + float(h) * 3600 + float(m) * 60 + float(s)


def _format_value(value: Any) -> str:
    if isinstance(value, (bool, np.bool_)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.6g}"
    return str(value)


class LogWriter:
    """Append rows to a tab-separated log, flushed line by line; resumable.

    If ``path`` exists with the same header, ``done`` holds the finished ``idx`` values so that a run
    can skip them; a trailing partial line (from an interrupted write) is dropped.
    """

    def __init__(self, path: str | os.PathLike, columns: Sequence[str], resume: bool = True):
        columns = list(columns)
        if tuple(columns[: len(COHEN_COLUMNS)]) != COHEN_COLUMNS:
            raise ValueError(f"columns must start with Cohen's {COHEN_COLUMNS}, got {columns[:6]}")
        self.path = os.fspath(path)
        self.columns = columns
        self.done: set[int] = set()
        if (
            resume
            and os.path.exists(self.path)
            and os.path.getsize(self.path) > 0
            and b"\n" in open(self.path, "rb").read(1 << 16)
        ):  # a header cut short = start over
            try:
                with open(self.path, encoding="utf-8") as f:
                    text = f.read()
            except UnicodeDecodeError:
                raise ValueError(f"cannot resume {self.path}: not a text log (binary or garbled bytes)") from None
            lines = text.split("\n")
            if lines[0].split("\t") != columns:
                raise ValueError(
                    f"cannot resume {self.path}: its header {lines[0].split(chr(9))} differs "
                    f"from the expected {columns}"
                )
            complete = [ln for ln in lines[1:-1] if ln]  # the last piece after '\n' may be a partial line
            if lines[-1]:
                complete_text = "\n".join([lines[0]] + complete) + "\n"
                with open(self.path, "w", encoding="utf-8") as f:
                    f.write(complete_text)
            for ln in complete:
                self.done.add(int(ln.split("\t", 1)[0]))
            self._file = open(self.path, "a", encoding="utf-8")
        else:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            self._file = open(self.path, "w", encoding="utf-8")
            self._file.write("\t".join(columns) + "\n")
            self._file.flush()

    def write(self, row: Mapping[str, Any]) -> None:
        missing = [c for c in self.columns if c not in row]
        if missing:
            raise ValueError(f"row is missing columns {missing}")
        values = [format_seconds(row[c]) if c == "time" else _format_value(row[c]) for c in self.columns]
        self._file.write("\t".join(values) + "\n")
        self._file.flush()
        self.done.add(int(row["idx"]))

    def close(self) -> None:
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@dataclass
class Log:
    """A certification log as columns of numpy arrays (numbers) or lists (text)."""

    columns: dict[str, np.ndarray]
    path: str = ""

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def rows(self) -> list[dict[str, Any]]:
        names = list(self.columns)
        return [{k: self.columns[k][i] for k in names} for i in range(len(self))]


def read_log(path: str | os.PathLike) -> Log:
    """Read a Cohen-format (or our extended) log; numeric columns become float arrays."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = [ln.rstrip("\n") for ln in f if ln.strip()]
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not a text certification log (binary or garbled bytes)") from None
    if not lines:
        raise ValueError(f"{path} is empty")
    header = lines[0].split("\t")
    if tuple(header[:5]) != COHEN_COLUMNS[:5]:
        raise ValueError(f"{path} is not a certification log (header {header})")
    raw = [ln.split("\t") for ln in lines[1:]]
    columns: dict[str, np.ndarray] = {}
    for j, name in enumerate(header):
        values = [r[j] if j < len(r) else "" for r in raw]
        if name == "time":
            columns[name] = np.array([parse_time(v) for v in values], dtype=np.float64)
            continue
        try:
            columns[name] = np.array([float(v) for v in values], dtype=np.float64)
        except ValueError:
            columns[name] = np.array(values, dtype=object)
    return Log(columns, os.fspath(path))


def certified_accuracy(log: Log, radii: Iterable[float], column: str = "radius") -> np.ndarray:
    """Fraction of rows with ``correct == 1`` and ``column >= r`` for each r (Cohen's analyze.py).

    ``column="proxy_radius"`` gives certified accuracy at a proxy radius (ANCER)."""
    correct = log["correct"] == 1
    values = log[column]
    return np.array([float(np.mean(correct & (values >= r))) for r in radii])


def average_certified_radius(log: Log, column: str = "radius") -> float:
    """Mean of radius * correct over the rows."""
    return float(np.mean(log[column] * (log["correct"] == 1)))


def abstention_rate(log: Log) -> float:
    return float(np.mean(log["predict"] == -1))


def cohen_markdown_table(logs: Mapping[str, Log], radii: Sequence[float]) -> str:
    """Cohen's ``markdown_table_certified_accuracy`` output, byte for byte: one row per legend,
    the best value per radius marked (first maximum wins)."""
    acc = np.array([certified_accuracy(log, radii) for log in logs.values()])
    out = ["|  | " + "".join(f"r = {r:.3} |" for r in radii), "| --- | " + " --- |" * len(radii)]
    for i, legend in enumerate(logs):
        cells = "".join(
            f"{acc[i, j]:.2f}<b>*</b> |" if i == acc[:, j].argmax() else f"{acc[i, j]:.2f} |" for j in range(len(radii))
        )
        out.append(f"<b> {legend} </b>| " + cells)
    return "\n".join(out) + "\n"
