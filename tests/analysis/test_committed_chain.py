"""On every committed `ddrs compare` result, no data-dependent stage ends below the stage it
started from: at every sigma, proxy ACR of RS <= DDRS <= ANCER and DDRS <= RDDRS (up to the summary's rounding); and,
for the results made with the containment constraint, no stage is significantly below its start at any l2 radius."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

import certify
from benchmarks.analysis.paired import align, paired_difference

COMPARE = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "compare"
CHAIN = ("rs", "ddrs", "ancer", "rddrs")
#: (start, stage): ``ddrs compare`` starts ANCER and RDDRS from DDRS (RDDRS cold, not from ANCER), so ANCER vs RDDRS
#: is a comparison with intervals (results README), not a guarantee held here.
STARTS = (("rs", "ddrs"), ("ddrs", "ancer"), ("ddrs", "rddrs"))
MARGIN = 1e-4  # one unit of the summary CSV's last digit: a stage that kept its start everywhere rounds alike
SUMMARIES = sorted(COMPARE.glob("*/summary.csv"))
#: grids being recomputed on committed models (benchmarks/results/in-progress/): held to the chain as they grow
IN_PROGRESS = sorted((COMPARE.parent / "in-progress").glob("*/summary.csv"))


def _name(summary: Path) -> str:
    return str(summary.parent.relative_to(COMPARE.parent))


def test_the_committed_results_are_there():
    assert {p.parent.name for p in SUMMARIES} >= {"digits", "toy2d", "fashion-mnist"}


@pytest.mark.parametrize("summary", SUMMARIES + IN_PROGRESS, ids=_name)
def test_every_stage_ends_at_or_above_its_predecessor(summary):
    by_sigma: dict[str, dict[str, float]] = {}
    for row in csv.DictReader(summary.open()):
        if row["method"] in CHAIN:
            by_sigma.setdefault(row["sigma"], {})[row["method"]] = float(row["acr_proxy"])
    checked = 0
    for sigma, acr in by_sigma.items():
        for before, after in STARTS:  # each stage against the stage it starts from
            if before in acr and after in acr:
                assert acr[after] >= acr[before] - MARGIN - 1e-9, (summary.parent.name, sigma, before, after, acr)
                checked += 1
    assert checked >= 3  # at least one full chain per committed data set


# ---- the l2 chain: certified accuracy at every l2 radius of the tables, with paired intervals ----------------
L2_PAIRS = STARTS


def _keeps_ball(log: Path) -> bool:
    """Whether the log's ANCER / RDDRS stage ran with the containment constraint (its fingerprint's presets)."""
    fingerprint = json.loads(Path(str(log) + ".fingerprint.json").read_text())
    presets = fingerprint.get("presets", {})
    return all("keep_ball=True" in presets.get(stage, "") for stage in ("ancer", "rddrs") if stage in presets) and bool(
        presets
    )


def _anisotropic_logs(summary: Path) -> list[Path]:
    return [p for p in (summary.parent / "logs").glob("*.tsv") if p.name.split("_sigma")[0] in ("ancer", "rddrs")]


def _constrained(summary: Path) -> bool:
    logs = _anisotropic_logs(summary)
    return bool(logs) and all(_keeps_ball(p) for p in logs)


def _l2_radii(summary: Path) -> list[float]:
    header = next(csv.reader(summary.open()))
    return [float(c.split("@")[1]) for c in header if c.startswith("l2@")]


def _volume_only(summary: Path) -> bool:
    """ANCER / RDDRS logs made without the containment constraint (a folder with none is held to the chain)."""
    return bool(_anisotropic_logs(summary)) and not _constrained(summary)


@pytest.mark.parametrize("summary", [s for s in SUMMARIES + IN_PROGRESS if not _volume_only(s)], ids=_name)
def test_no_stage_is_significantly_below_its_start_at_any_l2_radius(summary):
    """RS <= DDRS <= ANCER and DDRS <= RDDRS in certified accuracy at every l2 radius of the table: no paired 95 %
    interval of a later-minus-earlier difference lies entirely below 0 (with the exact McNemar test agreeing;
    ``benchmarks.analysis.paired``). A pair with an unfinished log (fewer rows than its partner) waits."""
    logs = summary.parent / "logs"
    checked = 0
    for log_after in sorted(logs.glob("*.tsv")):
        method, sigma = log_after.name[: -len(".tsv")].split("_sigma")
        for before, after in L2_PAIRS:
            if method != after or not (logs / f"{before}_sigma{sigma}.tsv").is_file():
                continue
            a, b = certify.read_log(log_after), certify.read_log(logs / f"{before}_sigma{sigma}.tsv")
            if len(a.rows()) != len(b.rows()):
                continue
            for r in _l2_radii(summary):
                d = paired_difference(a, b, column="l2_radius", radius=r, resamples=2000)
                assert d.verdict != "not reproduced", (summary.parent.name, sigma, f"{after} vs {before}", r, d)
                checked += 1
    assert checked >= 3 * len(_l2_radii(summary))


def test_results_before_the_constraint_are_named():
    """A committed comparison whose ANCER / RDDRS ran without the containment constraint (the volume-only form
    that gives up the DDRS ball) is named as such in the results README."""
    older = sorted(s.parent.name for s in SUMMARIES if _volume_only(s))
    readme = (COMPARE.parent / "README.md").read_text()
    for name in older:
        assert f"`compare/{name}/` (volume-only" in readme, name


#: an input certified at radius r by the start but not by the later stage is explained by fresh samples when the
#: start certified r only just (its radius below NEAR x r): the later stage certifies on its own draws, and a noise at
#: least as good then falls below r with a probability that is not small. Anything else would be a lost ball.
NEAR = 1.05


@pytest.mark.parametrize("summary", SUMMARIES + IN_PROGRESS, ids=_name)
def test_per_input_l2_radii_dominate_but_where_fresh_samples_explain_it(summary):
    """Per input, at every l2 radius of the table, a later stage certifies what its start certified, except where the
    start's radius was within 5 % above r (a near-threshold Monte Carlo outcome on either side; sequential runs stop as
    soon as r is decided) or the memory-based certifier changed the later certificate (overlapping regions, toy2d);
    and such losses stay few against the gains."""
    if not _constrained(summary):
        pytest.skip("volume-only ANCER / RDDRS (the form that gives up the ball)")
    logs = summary.parent / "logs"
    checked = 0
    for log_after in sorted(logs.glob("*.tsv")):
        method, sigma = log_after.name[: -len(".tsv")].split("_sigma")
        for before, after in L2_PAIRS:
            start = logs / f"{before}_sigma{sigma}.tsv"
            if method != after or not start.is_file():
                continue
            a, b = certify.read_log(log_after), certify.read_log(start)
            if len(a.rows()) != len(b.rows()):
                continue
            ia, ib = align(a, b)
            ra = np.where(a["correct"] == 1, np.asarray(a["l2_radius"], dtype=float), 0.0)[ia]
            rb = np.where(b["correct"] == 1, np.asarray(b["l2_radius"], dtype=float), 0.0)[ib]
            memory = np.asarray([str(v) not in ("", "-", "kept", "None") for v in a["memory_action"]])[ia]
            losses = gains = 0
            for r in (v for v in _l2_radii(summary) if v > 0):
                lost = (rb >= r) & (ra < r) & ~memory  # the memory shrinks overlapping regions: not a lost ball
                losses += int(lost.sum())
                gains += int(((ra >= r) & (rb < r)).sum())
                assert np.all(rb[lost] < NEAR * r), (summary.parent.name, sigma, after, before, r, rb[lost], ra[lost])
            assert losses <= max(3, gains // 5), (summary.parent.name, sigma, after, before, losses, gains)
            checked += 1
    assert checked >= 3
