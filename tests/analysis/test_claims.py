"""Claims table: constructed compare out-dirs whose verdicts are known."""

import json
import math

import numpy as np
import pytest

from benchmarks.analysis import claims
from benchmarks.analysis.paired import bootstrap

FP = dict(n0=100, n=10_000, alpha=0.001, seed=0, version="0.1.0", inputs_hash="h", model_hash="m")


def write_log(root, dataset, name, proxy, radius=None, correct=None, actions=None, fp=FP, **fp_changes):
    """A compare log ``root/dataset/logs/name.tsv`` (idx 0..m-1) with a fingerprint unless fp is None."""
    m = len(proxy)
    radius = proxy if radius is None else radius
    correct = np.ones(m) if correct is None else correct
    actions = ["kept"] * m if actions is None else actions
    logs = root / dataset / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    lines = ["idx\tlabel\tpredict\tradius\tcorrect\ttime\tproxy_radius\tmemory_action"]
    for i in range(m):
        lines.append(f"{i}\t1\t1\t{radius[i]:.6g}\t{int(correct[i])}\t0:00:01\t{proxy[i]:.6g}\t{actions[i]}")
    path = logs / f"{name}.tsv"
    path.write_text("\n".join(lines) + "\n")
    if fp is not None:
        side = dict(fp, inputs=m, method=name.split("_")[0], options={}, sigma=0.12, **fp_changes)
        (logs / f"{name}.tsv.fingerprint.json").write_text(json.dumps(side))
    return path


def by_claim(results, claim, statistic=None):
    rows = [r for r in results if r.claim == claim and (statistic is None or r.statistic == statistic)]
    assert rows, f"no row for {claim!r} {statistic!r}"
    return rows


def test_chain_verdicts_follow_the_constructed_orderings(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.uniform(0.1, 0.6, 60)
    write_log(tmp_path, "digits", "rddrs_sigma0.12", base + 0.4)  # far above ANCER
    write_log(tmp_path, "digits", "ancer_sigma0.12", base)
    write_log(tmp_path, "digits", "ddrs_sigma0.12", base)  # identical to ANCER: no difference
    write_log(tmp_path, "digits", "rs_sigma0.12", base + 0.2)  # above DDRS: the claim DDRS > RS fails
    res = claims.evaluate(tmp_path)
    acr = "ACR (proxy)"
    assert by_claim(res, "RDDRS > ANCER, sigma 0.12", acr)[0].verdict == "reproduced"
    assert by_claim(res, "ANCER > DDRS, sigma 0.12", acr)[0].verdict == "not significant at this size"
    d = by_claim(res, "DDRS > RS, sigma 0.12", acr)[0]
    assert d.verdict == "not reproduced" and d.difference == pytest.approx(-0.2)
    assert d.ci_high < 0 and d.n == 60
    # certified accuracy at proxy radius 0.5: RDDRS certifies every input, ANCER only those above 0.5
    r = by_claim(res, "RDDRS > ANCER, sigma 0.12", "cert. acc. @ proxy 0.5")[0]
    assert r.a == 1.0 and r.b == pytest.approx(np.mean(base >= 0.5)) and r.verdict == "reproduced"
    # every table radius > 0 and the ACR, for each of the three links; the l2 family beside them
    assert len([x for x in res if x.family == "chain"]) == 3 * (1 + len(claims.table_radii("digits")))
    assert {x.claim for x in res if x.family == "l2"} == {
        "DDRS > ANCER in l2, sigma 0.12",
        "DDRS > RDDRS in l2, sigma 0.12",
    }


def test_few_discordant_inputs_are_not_significant_even_if_the_bootstrap_excludes_zero(tmp_path):
    a = np.where(np.arange(50) < 4, 1.0, 0.0)  # 4 inputs certified at 0.5 by a only: McNemar p = 0.125
    write_log(tmp_path, "digits", "rddrs_sigma0.12", a)
    write_log(tmp_path, "digits", "ancer_sigma0.12", np.zeros(50))
    r = by_claim(claims.evaluate(tmp_path), "RDDRS > ANCER, sigma 0.12", "cert. acc. @ proxy 0.5")[0]
    assert r.ci_low > 0  # the percentile interval alone would call it
    assert r.p_value == pytest.approx(0.125) and r.verdict == "not significant at this size"


def test_differing_budgets_are_not_comparable_and_partial_logs_are_marked(tmp_path):
    x = np.linspace(0.1, 1.0, 30)
    write_log(tmp_path, "digits", "rddrs_sigma0.12", x + 1, n=100_000)
    write_log(tmp_path, "digits", "ancer_sigma0.12", x)
    r = by_claim(claims.evaluate(tmp_path), "RDDRS > ANCER, sigma 0.12", "ACR (proxy)")[0]
    assert r.verdict == "not comparable" and "n" in r.note.split("differ in ")[1]
    path = write_log(tmp_path, "digits", "rddrs_sigma0.12", x + 1)
    side = json.loads(path.with_name(path.name + ".fingerprint.json").read_text())
    side["inputs"] = 100
    path.with_name(path.name + ".fingerprint.json").write_text(json.dumps(side))
    r = by_claim(claims.evaluate(tmp_path), "RDDRS > ANCER, sigma 0.12", "ACR (proxy)")[0]
    assert r.verdict == "reproduced" and "partial: digits/rddrs 30 of 100 inputs" in r.note


def _rotation_dirs(tmp_path, rddrs_rot_shift, rot_fp=FP):
    rng = np.random.default_rng(1)
    base = rng.uniform(0.3, 0.9, 50)
    for d, fp, ancer, rddrs in (
        ("digits", FP, base, base + 0.2),
        ("digits-rot7", rot_fp, 0.6 * base, base + 0.2 + rddrs_rot_shift),
    ):
        write_log(tmp_path, d, "ancer_sigma0.12", ancer, fp=fp)
        write_log(tmp_path, d, "rddrs_sigma0.12", rddrs, fp=fp)
        write_log(tmp_path, d, "rs_sigma0.12", base, fp=fp)
    return claims.evaluate(tmp_path)


def test_rotation_claims_on_a_constructed_invariant_and_a_non_invariant_method(tmp_path):
    res = _rotation_dirs(tmp_path, 0.0)
    rot = {r.claim: r for r in res if r.family == "rotation"}
    assert rot["ANCER loses under rotation, sigma 0.12"].verdict == "reproduced"
    less = rot["RDDRS loses less than ANCER under rotation, sigma 0.12"]
    assert less.verdict == "reproduced" and less.b == 0.0 and less.a == pytest.approx(less.difference)
    same = rot["RDDRS unchanged under rotation (within 10 %), sigma 0.12"]
    assert same.verdict == "reproduced" and same.difference == 0.0
    assert rot["RS unchanged under rotation (within 10 %) (control), sigma 0.12"].verdict == "reproduced"


def test_rotation_claim_fails_when_the_rotated_rddrs_loses_more_than_the_margin(tmp_path):
    res = _rotation_dirs(tmp_path, -0.4)
    same = by_claim(res, "RDDRS unchanged under rotation (within 10 %), sigma 0.12")[0]
    assert same.verdict == "not reproduced" and same.ci_high < -0.1 * same.b


def test_rotation_without_fingerprints_is_not_comparable(tmp_path):
    res = _rotation_dirs(tmp_path, 0.0, rot_fp=None)
    rot = [r for r in res if r.family == "rotation"]
    assert rot and all(r.verdict == "not comparable" for r in rot)
    assert all("no fingerprint (older run): digits-rot7/" in r.note for r in rot)
    # within one out-dir the same stale logs are still compared, with the note
    chain = by_claim(res, "RDDRS > ANCER, sigma 0.12", "ACR (proxy)")
    assert {r.dataset: r.verdict for r in chain} == {"digits": "reproduced", "digits-rot7": "reproduced"}


def test_equivalence_verdict_boundaries():
    assert claims.equivalence_verdict(-0.05, 0.05, 0.1) == "reproduced"
    assert claims.equivalence_verdict(-0.05, 0.15, 0.1) == "not significant at this size"
    assert claims.equivalence_verdict(0.1, 0.3, 0.1) == "not reproduced"
    assert claims.equivalence_verdict(-0.3, -0.1, 0.1) == "not reproduced"


def test_mixture_gain_at_intermediate_radii_and_cost_at_the_largest(tmp_path):
    m = 60
    mix = np.where(np.arange(m) < 40, 0.6, 0.3)  # the mixture certifies all at 0.25, 40 at 0.5, none at 1.5
    single_small = np.where(np.arange(m) < 10, 2.0, 0.1)  # the single Gaussian 10 at every radius, the rest none
    write_log(tmp_path, "digits", "mog-mixture-K1-[0.25,0.5]_sigma0.5", single_small)
    write_log(tmp_path, "digits", "mog-mixture-K2-[0.25,0.5]_sigma0.5", mix)
    res = [r for r in claims.evaluate(tmp_path) if r.family == "mixture"]
    gain = {r.statistic: r for r in res if r.claim == "mixture K=2 [0.25, 0.5] > single sigma 0.5"}
    assert set(gain) == {"cert. acc. @ l2 0.25", "cert. acc. @ l2 0.5"}  # radii up to the range's top
    assert gain["cert. acc. @ l2 0.25"].verdict == "reproduced" and gain["cert. acc. @ l2 0.25"].a == 1.0
    assert gain["cert. acc. @ l2 0.5"].a == pytest.approx(40 / 60)
    cost = by_claim(res, "single sigma 0.5 > mixture K=2 [0.25, 0.5] (cost at the largest radius)")[0]
    assert cost.statistic == "cert. acc. @ l2 1.5" and cost.a == pytest.approx(10 / 60) and cost.b == 0.0
    assert cost.verdict == "reproduced"  # 10 discordant inputs, all one way: p = 2^-9


@pytest.mark.parametrize(
    "dataset, changed, m, verdict",
    [
        ("digits", 0, 50, "reproduced"),  # Clopper-Pearson upper 0.071 < 0.10
        ("digits", 0, 20, "not significant at this size"),  # upper 0.168
        ("digits", 30, 50, "not reproduced"),
        ("toy2d", 10, 60, "reproduced"),  # d = 2: the memory changes some
        ("toy2d", 0, 60, "not significant at this size"),  # "some" can be shown, never refuted
    ],
)
def test_memory_rates_against_their_thresholds(tmp_path, dataset, changed, m, verdict):
    actions = ["shrunk"] * changed + ["kept"] * (m - changed)
    write_log(tmp_path, dataset, "ancer_sigma0.12", np.ones(m), actions=actions)
    (r,) = [r for r in claims.evaluate(tmp_path) if r.family == "memory"]
    assert r.verdict == verdict and r.n == m and r.a == pytest.approx(changed / m)


def test_holm_adjustment_matches_hand_computation():
    got = claims.holm([0.01, 0.04, 0.03, math.nan])
    np.testing.assert_allclose(got[:3], [0.03, 0.06, 0.06])
    assert math.isnan(got[3])


def test_bootstrap_p_value_is_never_zero():
    low, high, p = bootstrap(np.ones(40), resamples=999)
    assert (low, high) == (1.0, 1.0) and p == pytest.approx(2 / 1000)


def test_cli_writes_csv_and_markdown_with_one_row_per_claim(tmp_path, capsys):
    x = np.linspace(0.1, 1.0, 30)
    write_log(tmp_path, "digits", "rddrs_sigma0.12", x + 1)
    write_log(tmp_path, "digits", "ancer_sigma0.12", x)
    assert claims.main(["--root", str(tmp_path), "--out-dir", str(tmp_path / "out")]) == 0
    rows = (tmp_path / "out" / "claims.csv").read_text().strip().split("\n")
    assert len(rows) == 1 + 1 + len(claims.table_radii("digits")) + 2  # header, chain ACR + radii, 2 memory
    md = (tmp_path / "out" / "claims.md").read_text()
    assert "| chain | digits | " in md and '"n": 10000' in md and "RDDRS > ANCER, sigma 0.12" in md
    with pytest.raises(SystemExit):
        claims.main(["--root", str(tmp_path / "nope")])
    assert "--root" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        claims.main(["--root", str(tmp_path), "--datasets", "fashion-mnist"])
    assert "fashion-mnist" in capsys.readouterr().err


def test_claims_never_rewrite_a_committed_table_without_results(tmp_path, monkeypatch, capsys):
    """The default out-dir is runs/claims/ (under the working directory), and a committed table is only
    overwritten with --results."""
    import shutil

    from benchmarks.analysis.outputs import RESULTS_DIR

    committed = RESULTS_DIR / "compare" / "claims.md"
    before = committed.read_bytes()
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "compare"
    shutil.copytree(RESULTS_DIR / "compare" / "toy2d", root / "toy2d")
    assert claims.main(["--root", str(root), "--datasets", "toy2d"]) == 0
    assert (tmp_path / "runs" / "claims" / "claims.md").is_file()
    assert claims.main(["--root", str(RESULTS_DIR / "compare"), "--out-dir", str(RESULTS_DIR / "compare")]) == 2
    assert "pass --results" in capsys.readouterr().err
    assert committed.read_bytes() == before
