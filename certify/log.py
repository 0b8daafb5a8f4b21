"""Per-input certification logs (Cohen et al.'s columns first) and certified accuracy from them.

Cohen's `certify.py` writes ``idx label predict radius correct time`` (tab-separated; time as
``h:mm:ss.micro`` or, in older logs, plain seconds; predict -1 = abstain). We write the same columns
first (``radius`` = the certified l2 radius) and then ours (``proxy_radius``, ``p_lower``, ...).
"""

from __future__ import annotations

import datetime
import math
import os
import re
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
    """A certification log as columns of numpy arrays (numbers) or lists (text); ``lines[i]`` is the
    line of the file that row i came from (``read_log``; None for a log made in memory)."""

    columns: dict[str, np.ndarray]
    path: str = ""
    lines: np.ndarray | None = None

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def rows(self) -> list[dict[str, Any]]:
        names = list(self.columns)
        return [{k: self.columns[k][i] for k in names} for i in range(len(self))]


class LogFormatError(ValueError):
    """A malformed certification log: ``str()`` is one line, ``<path> line <n>: <problem>``."""

    def __init__(self, path: str, line: int, problem: str):
        self.path, self.line, self.problem = path, line, problem
        super().__init__(f"{path} line {line}: {problem}")


#: Columns that must hold integers (Cohen's) and finite numbers (Cohen's radius, ours from
#: ``Certificate.log_row``) on every row; ``paper_radius`` must be a number (nan = not reported).
INTEGER_COLUMNS = ("idx", "label", "predict", "correct")
FINITE_COLUMNS = ("radius", "time", "l2_radius", "proxy_radius", "p_lower", "min_sigma", "gm_sigma")
NUMBER_COLUMNS = ("paper_radius",)


#: Control bytes but tab and line ends, and the bytes ``surrogateescape`` kept from invalid UTF-8.
_NOT_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\udc80-\udcff]|\r(?!\n)")


def _shown(text: str, limit: int = 40) -> str:
    """``text`` for a one-line message: ASCII-escaped, cut at ``limit`` characters."""
    return ascii(text if len(text) <= limit else text[:limit] + "...")


def _plain(text: str) -> str:
    """A field as written when it is a plain word or number, else quoted and escaped."""
    return text.strip() if re.fullmatch(r"\s*[\w.+-]{1,24}\s*", text, re.ASCII) else _shown(text)


def _number(path: str, lineno: int, name: str, text: str, finite: bool) -> float:
    try:
        value = parse_time(text) if name == "time" else float(text)
    except ValueError:
        what = "a time (h:mm:ss or seconds)" if name == "time" else "a number"
        raise LogFormatError(path, lineno, f"{name} is {_shown(text)}, not {what}") from None
    if finite and not math.isfinite(value):
        raise LogFormatError(path, lineno, f"{name} is {_plain(text)} (expected a finite number)")
    return value


def read_log(path: str | os.PathLike) -> Log:
    """Read a Cohen-format (or our extended) log; numeric columns become float arrays.

    The header must start with ``idx label predict radius correct``; every row must have one field per
    column; Cohen's ``idx label predict correct`` must be integers (correct 0 or 1), ``radius`` a finite
    number >= 0 (an abstention is radius 0 with predict -1), ``time`` Cohen's time, and our certificate
    columns (``FINITE_COLUMNS``) finite numbers (``paper_radius`` a number; nan = none). Anything else
    raises :class:`LogFormatError` (a ValueError), ``<path> line <n>: <problem>``. Other columns are
    numbers if every row holds one, else text. Blank lines are skipped; ``Log.lines`` holds each row's
    line number."""
    name = os.fspath(path)
    with open(path, "rb") as f:
        raw = f.read()
    text = raw.decode("utf-8", "surrogateescape").removeprefix("\ufeff")  # a byte-order mark some editors write
    bad = _NOT_TEXT.search(text)  # the first byte that is not UTF-8 or is a control byte
    if bad is not None:
        char = bad.group()[0]
        byte = ord(char) - 0xDC00 if ord(char) >= 0xDC80 else ord(char)
        line = text.count("\n", 0, bad.start()) + 1
        raise LogFormatError(name, line, f"not text (binary or garbled bytes: 0x{byte:02x})")
    physical = text.split("\n")
    if physical and physical[-1] == "":
        physical.pop()  # the newline ending the last line
    rows: list[tuple[int, list[str]]] = []
    header: list[str] | None = None
    for lineno, ln in enumerate(physical, start=1):
        ln = ln[:-1] if ln.endswith("\r") else ln  # Windows line ends
        if not ln.strip():
            continue
        if header is None:
            header = ln.split("\t")
            if tuple(header[:5]) != COHEN_COLUMNS[:5]:
                raise LogFormatError(
                    name,
                    lineno,
                    f"not a certification log (header {_shown(ln, 60)}; expected it to start with "
                    f"{' '.join(COHEN_COLUMNS[:5])}, tab-separated)",
                )
            twice = sorted({c for c in header if header.count(c) > 1})
            if twice or "" in header:
                problem = f"column {twice[0]} appears twice" if twice else "a column has no name"
                raise LogFormatError(name, lineno, f"{problem} in the header")
            continue
        fields = ln.split("\t")
        if len(fields) != len(header):
            cut = " (a line cut short?)" if len(fields) < len(header) else ""
            raise LogFormatError(name, lineno, f"{len(fields)} fields, expected {len(header)}{cut}")
        rows.append((lineno, fields))
    if header is None:
        raise LogFormatError(name, 1, "empty log (no header)")
    known = INTEGER_COLUMNS + FINITE_COLUMNS + NUMBER_COLUMNS
    strict = [(j, c) for j, c in enumerate(header) if c in known]
    numbers: dict[str, list[float]] = {c: [] for _, c in strict}
    for n, fields in rows:  # line by line, so that the first bad line is the one named
        for j, column in strict:
            value = _number(name, n, column, fields[j], finite=column not in NUMBER_COLUMNS)
            if column in INTEGER_COLUMNS and value != int(value):
                raise LogFormatError(name, n, f"{column} is {_plain(fields[j])}, not an integer")
            if (column == "correct" and value not in (0, 1)) or (column == "radius" and value < 0):
                expected = "0 or 1" if column == "correct" else "a radius >= 0"
                raise LogFormatError(name, n, f"{column} is {_plain(fields[j])} (expected {expected})")
            numbers[column].append(value)
    columns: dict[str, np.ndarray] = {}
    for j, column in enumerate(header):
        if column in numbers:
            columns[column] = np.array(numbers[column], dtype=np.float64)
            continue
        try:
            columns[column] = np.array([float(r[j]) for _, r in rows], dtype=np.float64)
        except ValueError:
            columns[column] = np.array([r[j] for _, r in rows], dtype=object)
    return Log(columns, name, np.array([n for n, _ in rows], dtype=np.int64))


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


def cohen_markdown_table(logs: Mapping[str, Log], radii: Sequence[float], column: str = "radius") -> str:
    """Cohen's ``markdown_table_certified_accuracy`` output, byte for byte: one row per legend,
    the best value per radius marked (first maximum wins); ``column``: the radius column used."""
    acc = np.array([certified_accuracy(log, radii, column=column) for log in logs.values()])
    out = ["|  | " + "".join(f"r = {r:.3} |" for r in radii), "| --- | " + " --- |" * len(radii)]
    for i, legend in enumerate(logs):
        cells = "".join(
            f"{acc[i, j]:.2f}<b>*</b> |" if i == acc[:, j].argmax() else f"{acc[i, j]:.2f} |" for j in range(len(radii))
        )
        out.append(f"<b> {legend} </b>| " + cells)
    return "\n".join(out) + "\n"
