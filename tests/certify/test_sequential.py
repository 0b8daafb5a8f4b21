"""Anytime-valid sequential certification (certify.sequential) on classifiers with known p_A."""

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.stats import norm

import certify
from certify.sequential import look_alphas, look_schedule, max_misses_to_certify, run_looks
from tests.classifiers import HalfSpace


def _halfspace_at(p, d=2):
    """x = 0 and a half-space whose class-0 probability under N(0, sigma^2 I) is exactly p."""
    sigma = 0.25
    b = sigma * norm.ppf(p)  # P(w.eps <= b) = Phi(b / sigma) with ||w|| = 1
    w = np.zeros(d)
    w[0] = 1.0
    return HalfSpace(w, b).eval(), torch.zeros(d, dtype=torch.float64), sigma


def test_alpha_spending_sums_to_alpha_and_schedule_ends_at_n():
    for spending in ("uniform", "voracek"):
        a = look_alphas(40, 1e-3, spending)
        assert np.all(a > 0) and a.sum() == pytest.approx(1e-3, rel=1e-12)
    assert look_alphas(40, 1e-3, "voracek")[0] == pytest.approx(1e-3 / 6)
    with pytest.raises(ValueError, match="spending"):
        look_alphas(40, 1e-3, "bonferroni")
    looks = look_schedule(100_000)
    assert looks[0] == 100 and looks[-1] == 100_000 and all(np.diff(looks) > 0)
    assert all(b <= 1.1 * a + 1 for a, b in zip(looks[:-2], looks[1:-1]))


def test_easy_inputs_stop_early_and_decide_every_radius():
    model, x, sigma = _halfspace_at(0.999)
    sm = certify.Smooth(model, certify.IsotropicGaussian(sigma), 2)
    radii = [0.25, 0.5]
    cert = sm.certify(x, 100, 100_000, 1e-3, batch_size=10_000, generator=torch.Generator().manual_seed(0), radii=radii)
    assert cert.decided == (True, True) and cert.samples < 2_000
    assert cert.l2_radius >= 0.5
    model, x, sigma = _halfspace_at(0.5)
    cert = certify.Smooth(model, certify.IsotropicGaussian(sigma), 2).certify(
        x, 100, 100_000, 1e-3, batch_size=10_000, generator=torch.Generator().manual_seed(0), radii=radii
    )
    assert cert.decided == (False, False) and cert.samples < 2_000


def test_decisions_agree_with_fixed_n_cohen_when_both_decide():
    radii = [0.1, 0.3, 0.5]
    for p in (0.7, 0.9, 0.97, 0.995):
        model, x, sigma = _halfspace_at(p)
        sm = certify.Smooth(model, certify.IsotropicGaussian(sigma), 2)
        fixed = sm.certify(x, 100, 100_000, 1e-3, batch_size=20_000, generator=torch.Generator().manual_seed(1))
        seq = sm.certify(
            x, 100, 100_000, 1e-3, batch_size=20_000, generator=torch.Generator().manual_seed(2), radii=radii
        )
        for r, dec in zip(radii, seq.decided):
            if dec is True:
                assert fixed.l2_radius >= r or abs(sigma * norm.ppf(p) - r) < 0.02
            if dec is False:
                assert fixed.l2_radius < r
        assert seq.samples <= 100_100


def test_false_decision_rate_is_below_alpha_at_a_threshold():
    # p_A exactly at the threshold of r = 0.5: certifying 0.5 (True) is right, but a True at the next
    # radius, or False at 0.5, would be wrong; p placed at Phi(0.5 / sigma) - tiny makes True at 0.5 wrong.
    alpha, runs = 0.05, 400
    sigma = 0.25
    p = norm.cdf(0.5 / sigma) - 1e-9
    model, x, _ = _halfspace_at(p)
    sm = certify.Smooth(model, certify.IsotropicGaussian(sigma), 2)
    gen = torch.Generator().manual_seed(5)
    wrong = 0
    for _ in range(runs):
        cert = sm.certify(x, 20, 3_000, alpha, batch_size=3_000, generator=gen, radii=[0.25, 0.5])
        wrong += cert.decided[0] is False or cert.decided[1] is True or cert.l2_radius >= 0.5
    # one-sided binomial test: the false-decision rate is not above alpha
    assert stats.binomtest(wrong, runs, alpha, alternative="greater").pvalue > 1e-3, wrong


@pytest.mark.parametrize(
    "radii, match",
    [
        ([-0.1, 0.2], ">= 0"),
        ([0.5, 0.25], "increasing"),
        ([float("nan")], "finite"),
        ([], "at least one"),
        ([0.2, 0.2], "increasing"),
    ],
)
def test_bad_radii_are_refused_by_name(radii, match):
    model, x, sigma = _halfspace_at(0.9)
    sm = certify.Smooth(model, certify.IsotropicGaussian(sigma), 2)
    with pytest.raises(ValueError, match=match):
        sm.certify(x, 10, 100, 0.01, radii=radii)


def test_anisotropic_radii_use_the_own_norm():
    # (true mixtures: tests/certify/test_sequential_mixture.py)
    # diagonal noise with theta = sigma on the boundary axis: own-norm radius r = l2 radius / sigma
    model, x, sigma = _halfspace_at(0.999)
    sm = certify.Smooth(model, certify.DiagonalGaussian(torch.tensor([sigma, 1.0], dtype=torch.float64)), 2)
    cert = sm.certify(
        x, 100, 100_000, 1e-3, batch_size=10_000, generator=torch.Generator().manual_seed(0), radii=[1.0, 2.5, 3.5]
    )
    # own-norm radius of this input: Phi^-1(0.999) = 3.09; 3.5 is refuted or dropped once out of reach
    assert cert.decided[:2] == (True, True) and cert.decided[2] is not True and cert.samples < 100_100


# ---------------------------------------------------------------- simulated streams, same decision code
def _simulate(p_top, need, *, n0=10, n=20_000, alpha=0.01, runs=4000, seed=0, alphas=None):
    """``runs`` two-class inputs whose top class has probability ``p_top`` (>= 1/2): the class is
    guessed from n0 draws (so it is often wrong near 1/2), then the guessed class's Bernoulli stream
    goes through ``run_looks``. Returns (wrong decision per run, samples per run)."""
    rng = np.random.default_rng(seed)
    k = rng.binomial(n0, p_top, runs)
    right = (k > n0 / 2) | ((k == n0 / 2) & (rng.random(runs) < 0.5))
    p_label = np.where(right, p_top, 1.0 - p_top)
    out = run_looks(lambda m: rng.binomial(m, p_label), n, alpha, need, alphas=alphas)
    need = np.asarray(need)
    wrong_true = (out.decided == 1) & (p_label[:, None] <= need[None, :])
    wrong_false = (out.decided == -1) & (p_top >= need[None, :])  # p_A = p_top here
    return np.any(wrong_true | wrong_false, axis=1), out


NEED = norm.cdf(np.array([0.0, 0.25, 0.5, 0.75]) / 0.25)  # t = 1/2, Phi(1), Phi(2), Phi(3)


@pytest.mark.parametrize("p_top", [NEED[1], NEED[2], NEED[3], 0.55, 0.5 + 1e-12])
def test_simulated_false_decision_rate_is_at_most_alpha_with_p_at_a_threshold(p_top):
    # p exactly at a threshold: both decisions at that radius are wrong (certifying claims more than
    # p_A gives, "not robust" denies what it gives); 0.55 with n0 = 10 guesses the wrong class ~26 % of
    # the time, and refuting r = 0 from the wrong class's stream (p_label = 0.45 < 1/2) would be wrong.
    alpha, runs = 0.01, 4000
    wrong, out = _simulate(p_top, NEED, alpha=alpha, runs=runs)
    assert stats.binomtest(int(wrong.sum()), runs, alpha, alternative="greater").pvalue > 1e-3, wrong.sum()
    # the decisions that are allowed do happen (the test is not vacuous): far radii get refuted
    assert np.mean(out.decided != 0) > 0.3


def test_simulation_detects_alpha_spent_at_every_look():
    # the harness has teeth: alpha at every look (no spending) exceeds alpha at a threshold
    alpha, runs = 0.01, 4000
    looks = len(look_schedule(20_000))
    wrong, _ = _simulate(NEED[1], NEED, alpha=alpha, runs=runs, alphas=np.full(looks, alpha))
    assert stats.binomtest(int(wrong.sum()), runs, alpha, alternative="greater").pvalue < 1e-6, wrong.sum()


def test_simulated_decisions_agree_with_fixed_n_cohen_whenever_both_decide():
    # fixed n: certified iff the one-sided Clopper-Pearson lower bound at alpha exceeds t, "not robust"
    # iff the upper bound on p_A does; each procedure is wrong w.p. <= alpha, so they disagree w.p. <= 2 alpha
    from certify.bounds import clopper_pearson_lower, clopper_pearson_upper

    alpha, runs, n = 0.01, 1000, 20_000
    disagree = total = 0
    rng = np.random.default_rng(3)
    for p in np.concatenate([NEED[1:3] + 0.002, NEED[1:] - 0.002, [NEED[3] + 0.0005, 0.6, 0.9, 0.99, 0.999]]):
        _, out = _simulate(p, NEED[1:], alpha=alpha, runs=runs, n0=100, n=n, seed=int(p * 1e6))
        hits = rng.binomial(n, p, runs)
        lo = np.array([clopper_pearson_lower(int(h), n, alpha) for h in hits])
        up = np.array([max(clopper_pearson_upper(int(h), n, alpha), 1 - lo_) for h, lo_ in zip(hits, lo)])
        fixed = np.where(lo[:, None] > NEED[None, 1:], 1, np.where(up[:, None] < NEED[None, 1:], -1, 0))
        both = (fixed != 0) & (out.decided != 0)
        disagree += int(np.any(both & (fixed != out.decided), axis=1).sum())
        total += runs
    assert stats.binomtest(disagree, total, 2 * alpha, alternative="greater").pvalue > 1e-3, disagree


@pytest.mark.parametrize("p_top, most", [(0.999, 1_000), (0.5, 500), (0.6, 500)])
def test_simulated_easy_inputs_stop_within_a_few_hundred_samples(p_top, most):
    # radii 0.25 / 0.5 at sigma 0.25: p = 0.999 certifies both, p = 0.5 / 0.6 refutes both
    _, out = _simulate(p_top, NEED[1:3], alpha=0.001, runs=500, n0=100, n=100_000)
    assert np.all(out.decided != 0)
    assert np.median(out.drawn) <= most and np.percentile(out.drawn, 90) <= 2 * most


@pytest.mark.parametrize("spending", ["uniform", "voracek"])
def test_simulated_false_decision_rate_with_either_spending(spending):
    alpha, runs = 0.01, 4000
    for p_top in (NEED[2], 0.55):
        rng = np.random.default_rng(11)
        k = rng.binomial(10, p_top, runs)
        p_label = np.where(k > 5, p_top, np.where(k < 5, 1 - p_top, np.where(rng.random(runs) < 0.5, p_top, 1 - p_top)))
        out = run_looks(lambda m: rng.binomial(m, p_label), 20_000, alpha, NEED, spending=spending)
        wrong = np.any(
            ((out.decided == 1) & (p_label[:, None] <= NEED)) | ((out.decided == -1) & (p_top >= NEED)), axis=1
        )
        assert stats.binomtest(int(wrong.sum()), runs, alpha, alternative="greater").pvalue > 1e-3


def test_out_of_reach_radii_stop_early_without_changing_any_certified_radius():
    # r = 4 sigma needs p_A > Phi(4) = 0.99997: not certifiable with 100,000 samples at alpha = 0.001
    need = norm.cdf(np.array([1.0, 2.0, 4.0]))
    assert (
        max_misses_to_certify(look_schedule(100_000), look_alphas(len(look_schedule(100_000)), 1e-3), need)[:, 2].max()
        == -1
    )
    for p in (1.0, 0.99999, 0.999, 0.98, 0.9):
        a = run_looks(
            lambda m: np.random.default_rng(int(p * 1e5) + m).binomial(m, np.full(300, p)), 100_000, 1e-3, need
        )
        b = run_looks(
            lambda m: np.random.default_rng(int(p * 1e5) + m).binomial(m, np.full(300, p)),
            100_000,
            1e-3,
            need,
            stop_out_of_reach=False,
        )
        assert np.array_equal(a.decided == 1, b.decided == 1)  # same streams, same certified radii
        assert np.all(a.drawn <= b.drawn) and np.all(a.decided[b.decided == 0] == 0)
        if p >= 0.99999:  # p_A ~ 1: r = sigma, 2 sigma certified within ~10,000 samples, 4 sigma dropped
            assert np.all(a.decided[:, :2] == 1) and np.all(a.decided[:, 2] == 0)
            assert np.median(a.drawn) < 10_000 and np.all(b.drawn == 100_000)


def test_closed_at_is_what_a_single_radius_run_draws_on_the_same_stream():
    need = norm.cdf(np.array([1.0, 2.0, 3.0, 4.0]))
    for p in (0.5, 0.9, 0.99, 0.999, 1.0):
        stream = lambda k: np.random.default_rng(k).binomial(k, np.full(50, p))  # noqa: E731
        both = run_looks(stream, 100_000, 1e-3, need)
        assert np.array_equal(both.closed_at.max(axis=1), both.drawn)
        for i in range(need.size):
            alone = run_looks(
                stream, 100_000, 1e-3, need[i : i + 1], alphas=look_alphas(len(look_schedule(100_000)), 1e-3)
            )
            assert np.array_equal(alone.closed_at[:, 0], both.closed_at[:, i]), (p, i)
            # the same decision, except that a radius dropped as out of reach may still be refuted
            # while the joint run samples on for the other radii
            d = alone.decided[:, 0] != 0
            assert np.array_equal(alone.decided[d, 0], both.decided[d, i])
            assert np.all(both.decided[~d, i] <= 0)


def test_the_reported_lower_bound_is_the_best_look_and_covers_every_certified_radius():
    """A stream that hits at first and then misses: its last look's Clopper-Pearson bound is lower than an earlier
    one. The bound reported is the largest of the looks taken (all hold at once), so a radius decided certified at an
    early look is never outside the reported certificate."""
    from certify.bounds import clopper_pearson

    n, alpha = 2000, 1e-3
    looks = look_schedule(n)
    alphas = look_alphas(len(looks), alpha)
    drawn = {"m": 0}

    def stream(k: int) -> np.ndarray:
        start, drawn["m"] = drawn["m"], drawn["m"] + k
        return np.array([sum(1 for i in range(start, start + k) if i < 300 or i % 2 == 0)])  # then half misses

    need = np.array([0.9, 0.999999])  # the first is decided early; the second once misses come
    out = run_looks(stream, n, alpha, need, stop_out_of_reach=False)
    assert out.decided[0, 0] == 1
    hits, lowers = 0, []
    for j, m in enumerate(looks[: int(out.look[0])]):
        hits = sum(1 for i in range(m) if i < 300 or i % 2 == 0)
        lowers.append(float(clopper_pearson(np.array([hits]), m, alphas[j], "two-sided")[0][0]))
    assert lowers[-1] < max(lowers)  # the last look is not the best here
    assert float(out.lower[0]) == max(lowers) and float(out.lower[0]) > need[0]
