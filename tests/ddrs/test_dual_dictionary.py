"""The dual-RS dictionary and selector (``ddrs.dual_dictionary``): closed forms and planted truths.

* Karcher mean: for commuting SPD points P diag(l_i) P^T the affine-invariant and log-Euclidean Frechet mean is
  P diag(exp(mean log l_i)) P^T; for any points the mean tangent at the result vanishes.
* k-means: planted, well-separated clusters are recovered on SPD(3) (affine-invariant) and on scalars; on
  scalars the metric is sqrt(dim) |log s - log t|, so Riemannian k-means IS 1-D k-means on log sigma (same
  seeds: the same Lloyd iterates), and on planted data it reaches the exact 1-D optimum (dynamic programme).
* Labels: the half-space class 0 iff w.x <= b at margin m has P(correct vote) = Phi(m / ||S w||) under noise S z.
  Entries A = s I, B = s w w^T + 4 s (I - w w^T) (stretched orthogonally to w) and C = (s/2) I at m = 6 s: every
  vote is correct (P(z > 6) ~ 1e-9), so the hard-vote bound is alpha^(1/n) exactly and the radii are closed form:
  l2 = lambda_min q (A = B = s q, C = s q / 2), proxy = det^(1/d) q (B = 2 s q), q = Phi^-1(alpha^(1/n)).
  On common draws A and B tie in l2 (smallest index wins; for the SPD entries up to rounding of B's
  eigenvalues, ``TIE_RTOL``); B wins in proxy.
* End to end: a half-space, inputs near it (|x_1| ~ 0.3) and far from it (|x_1| ~ 3): DDRS's per-input sigmas
  cluster into a small and a large noise, the labels are "far", the selector learns them and
  ``certify.DualSmooth`` certifies with the entry the labels chose, within the true radius |x_1|.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

import certify
import ddrs
import manifolds
from ddrs.dual_dictionary import MAX_ENTRIES, kmeans_plus_plus
from tests.classifiers import HalfSpace

F64 = torch.float64


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def rotation(dim, seed):
    return manifolds.spd.random_orthogonal(dim=dim, generator=gen(seed))


def spd_from(q, log_eigs):
    """q diag(exp(log_eigs)) q^T, batched over the rows of log_eigs."""
    return manifolds.sym((q * log_eigs.exp().unsqueeze(-2)) @ q.mT)


def sqrtm(c):
    lam, v = torch.linalg.eigh(c)
    return (v * lam.sqrt().unsqueeze(-2)) @ v.mT


# ---- Frechet mean ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["affine-invariant", "log-euclidean"])
def test_frechet_mean_of_commuting_spd_points_is_exp_of_mean_log(metric):
    q = rotation(4, 1)
    log_eigs = torch.rand(7, 4, generator=gen(2), dtype=F64) * 4 - 2
    mean = ddrs.frechet_mean(manifolds.SPD(4, metric), spd_from(q, log_eigs))
    assert torch.allclose(mean, spd_from(q, log_eigs.mean(0)), rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", ["scalar", "diagonal"])
def test_frechet_mean_of_positive_entries_is_exp_of_mean_log(kind):
    m = manifolds.get_manifold(kind, 3)
    points = torch.rand((9,) + m.point_shape, generator=gen(3), dtype=F64).mul(6).sub(3).exp()
    mean = ddrs.frechet_mean(m, points)
    assert torch.allclose(mean, points.log().mean(0).exp(), rtol=1e-13, atol=0)


def test_frechet_mean_of_non_commuting_points_is_a_critical_point():
    m = manifolds.SPD(3)
    points = m.random_point(6, generator=gen(4))
    mean = ddrs.frechet_mean(m, points)
    m.check_point(mean)
    grad = m.log(mean.expand_as(points), points).mean(0)  # minus the gradient of half the mean squared distance
    assert float(m.norm(mean, grad)) < 1e-10
    spread = float(m.dist(mean.expand_as(points), points).max())
    assert spread > 0.5  # a genuine spread, not a degenerate case
    shifted = m.exp(mean, 0.05 * m.log(mean, points[0]))  # any other point has a larger mean squared distance
    assert float(m.dist(shifted.expand_as(points), points).square().mean()) > float(
        m.dist(mean.expand_as(points), points).square().mean()
    )


# ---- k-means ----------------------------------------------------------------------------------------------------


def planted_spd(per_cluster=15, radius=0.15):
    """Three SPD(3) centres >= 2 apart (affine-invariant), each with points at geodesic distance <= radius."""
    q = rotation(3, 5)
    centres = torch.stack(
        [
            torch.eye(3, dtype=F64),
            spd_from(q, torch.tensor([2.0, -1.0, 0.0], dtype=F64)),
            spd_from(rotation(3, 6), torch.tensor([-2.0, 1.5, 0.5], dtype=F64)),
        ]
    )
    points, truth = [], []
    for k, c in enumerate(centres):
        u = torch.randn(per_cluster, 3, 3, generator=gen(10 + k), dtype=F64)
        u = manifolds.sym(u)
        u = (
            radius
            * torch.rand(per_cluster, 1, 1, generator=gen(20 + k), dtype=F64)
            * u
            / u.norm(dim=(-2, -1))[:, None, None]
        )
        half = sqrtm(c)
        points.append(half @ torch.linalg.matrix_exp(u) @ half)  # Exp_c(c^1/2 u c^1/2): distance ||u||_F
        truth += [k] * per_cluster
    return centres, manifolds.sym(torch.cat(points)), torch.tensor(truth)


def same_partition(a, b):
    """a and b are the same partition up to renaming."""
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


@pytest.mark.parametrize("metric", ["affine-invariant", "log-euclidean", "bures-wasserstein"])
def test_kmeans_recovers_planted_spd_clusters(metric):
    m = manifolds.SPD(3, metric)
    ai = manifolds.SPD(3)
    centres, points, truth = planted_spd()
    assert float(ai.dist(centres[[0, 0, 1]], centres[[1, 2, 2]]).min()) > 2.0
    fit = ddrs.RiemannianKMeans(3).fit(m, points, gen(7))
    assert fit.converged and same_partition(fit.labels, truth)
    m.check_point(fit.centres)
    for k in range(3):
        members = points[fit.labels == k]
        # a Lloyd fixed point: each centre is its cluster's Karcher mean, close to the planted centre
        assert torch.allclose(fit.centres[k], ddrs.frechet_mean(m, members), rtol=0, atol=1e-9)
        planted = int(truth[fit.labels == k][0])
        assert float(ai.dist(fit.centres[k], centres[planted])) < 0.1  # measured: 0.025-0.027 for the three metrics
    if metric == "affine-invariant":
        assert fit.inertia < 3 * 15 * 0.15**2  # every point within 0.15 of its planted centre


def lloyd_1d(values, centres, iterations=100):
    """Plain 1-D Lloyd (numpy), nearest centre ties to the smallest index, an empty cluster keeps its centre."""
    for _ in range(iterations):
        labels = np.abs(values[:, None] - centres[None, :]).argmin(1)
        new = np.array([values[labels == k].mean() if (labels == k).any() else c for k, c in enumerate(centres)])
        if np.array_equal(new, centres):
            break
        centres = new
    return np.abs(values[:, None] - centres[None, :]).argmin(1), centres


def optimal_1d(values, K):
    """The exact 1-D k-means optimum (dynamic programme over the sorted values): (sum of squares, centres)."""
    v = np.sort(values)
    n = len(v)

    def sse(i, j):
        return float(((v[i:j] - v[i:j].mean()) ** 2).sum())

    best = {(0, 0): (0.0, [])}
    for k in range(1, K + 1):
        for j in range(k, n + 1):
            options = [
                (best[(k - 1, i)][0] + sse(i, j), best[(k - 1, i)][1] + [v[i:j].mean()])
                for i in range(k - 1, j)
                if (k - 1, i) in best
            ]
            best[(k, j)] = min(options, key=lambda t: t[0])
    return best[(K, n)][0], np.array(best[(K, n)][1])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scalar_kmeans_is_1d_kmeans_on_log_sigma(seed):
    m = manifolds.PositiveScalar(5)
    sigma = torch.randn(40, generator=gen(30 + seed), dtype=F64).mul(0.6).exp() * 0.3  # no planted structure
    fit = ddrs.RiemannianKMeans(3).fit(m, sigma, gen(seed))
    logs = sigma.log().numpy()
    labels, centres = lloyd_1d(logs, logs[fit.seeds.numpy()])
    assert fit.labels.tolist() == labels.tolist()
    assert np.allclose(fit.centres.log().numpy(), centres, rtol=0, atol=1e-12)
    m.check_point(fit.centres)


def test_scalar_kmeans_reaches_the_1d_optimum_on_planted_clusters():
    m = manifolds.PositiveScalar(2)
    planted = torch.tensor([0.1, 0.4, 1.6], dtype=F64)
    jitter = torch.randn(3, 12, generator=gen(8), dtype=F64) * 0.1
    sigma = (planted.log()[:, None] + jitter).exp().reshape(-1)
    fit = ddrs.RiemannianKMeans(3).fit(m, sigma, gen(9))
    sse, centres = optimal_1d(sigma.log().numpy(), 3)
    assert np.allclose(np.sort(fit.centres.log().numpy()), centres, rtol=0, atol=1e-12)
    assert math.isclose(fit.inertia, 2 * sse, rel_tol=1e-12)  # squared distance = dim (log difference)^2
    assert same_partition(fit.labels, torch.arange(3).repeat_interleave(12))


def test_kmeans_is_deterministic_from_the_seed():
    m = manifolds.SPD(3)
    _, points, _ = planted_spd()
    a = ddrs.RiemannianKMeans(3).fit(m, points, gen(11))
    b = ddrs.RiemannianKMeans(3).fit(m, points, gen(11))
    assert torch.equal(a.centres, b.centres) and torch.equal(a.labels, b.labels) and torch.equal(a.seeds, b.seeds)


def test_kmeans_plus_plus_never_seeds_a_duplicate_and_refuses_too_few_distinct_points():
    m = manifolds.PositiveScalar(1)
    sigma = torch.tensor([0.5, 0.5, 0.5, 2.0, 2.0], dtype=F64)
    for seed in range(20):
        seeds = kmeans_plus_plus(m, sigma, 2, gen(seed))
        assert sigma[seeds[0]] != sigma[seeds[1]]
    with pytest.raises(ValueError, match="fewer than 3 distinct"):
        kmeans_plus_plus(m, sigma, 3, gen(0))


# ---- the dictionary ------------------------------------------------------------------------------------------------


def scalar_result(sigma, dim=2):
    return ddrs.SmoothingResult("ddrs", manifolds.PositiveScalar(dim), sigma, sigma.clone())


def test_dictionary_from_a_result_clusters_orders_and_gives_certify_noises():
    sigma = torch.tensor([1.5, 0.2, 1.6, 0.21, 1.4, 0.19, 0.2], dtype=F64)
    dictionary = ddrs.NoiseDictionary.from_result(scalar_result(sigma), 2, gen(0))
    assert len(dictionary) == 2
    expected = torch.stack([sigma[[1, 3, 5, 6]].log().mean().exp(), sigma[[0, 2, 4]].log().mean().exp()])
    assert torch.allclose(dictionary.points, expected, rtol=1e-13, atol=0)  # ascending: entry 0 the smaller noise
    assert dictionary.clustering is not None
    assert dictionary.clustering.labels.tolist() == [1, 0, 1, 0, 1, 0, 0]  # renumbered to the entries' order
    noises = dictionary.noises()
    assert all(isinstance(n, certify.IsotropicGaussian) for n in noises)
    assert [n.sigma for n in noises] == pytest.approx(expected.tolist(), rel=1e-13)


def test_dictionary_refuses_bad_points_and_sizes():
    sigma = torch.tensor([0.2, 0.3, 0.4, 0.5], dtype=F64)
    with pytest.raises(ValueError, match="at most 8"):
        ddrs.NoiseDictionary.from_result(scalar_result(sigma), MAX_ENTRIES + 1, gen(0))
    with pytest.raises(ValueError, match="cannot seed 5"):
        ddrs.NoiseDictionary.from_result(scalar_result(sigma), 5, gen(0))
    spd = manifolds.SPD(2)
    with pytest.raises(ValueError, match="positive definite"):
        ddrs.NoiseDictionary.from_points([torch.eye(2, dtype=F64), torch.diag(torch.tensor([1.0, -1.0]))], spd)
    with pytest.raises(ValueError, match="non-empty"):
        ddrs.NoiseDictionary.from_points([], spd)
    diagonal = ddrs.NoiseDictionary.from_points([[0.5, 0.5], [0.5, 2.0]], manifolds.PositiveDiagonal(2))
    assert [type(n).__name__ for n in diagonal.noises()] == ["DiagonalGaussian", "DiagonalGaussian"]


# ---- labels --------------------------------------------------------------------------------------------------------

S, N_LABEL, ALPHA = 0.5, 400, 1e-3
Q = float(norm.ppf(ALPHA ** (1 / N_LABEL)))  # every vote correct: p_lower = alpha^(1/n)


def halfspace_case(kind):
    """(model, inputs at margin 6 s on both sides, dictionary [A, B, C]) for a diagonal or rotated SPD noise."""
    if kind == "diagonal":
        w = torch.tensor([1.0, 0.0], dtype=F64)
        entries = [[S, S], [S, 4 * S], [S / 2, S / 2]]
        dictionary = ddrs.NoiseDictionary.from_points(entries, manifolds.PositiveDiagonal(2))
    else:
        t = 0.7
        w = torch.tensor([math.cos(t), math.sin(t)], dtype=F64)
        ww = torch.outer(w, w)
        eye = torch.eye(2, dtype=F64)
        entries = [S * eye, S * ww + 4 * S * (eye - ww), S / 2 * eye]
        dictionary = ddrs.NoiseDictionary.from_points(entries, manifolds.SPD(2))
    b = 0.3
    perp = torch.stack([-w[1], w[0]])
    offsets = torch.tensor([-6 * S, -6 * S, 6 * S, 6 * S], dtype=F64)
    x = (b + offsets)[:, None] * w + torch.tensor([0.0, 1.0, -2.0, 0.5], dtype=F64)[:, None] * perp
    return HalfSpace(w.tolist(), b).eval(), x, dictionary


@pytest.mark.parametrize("kind", ["diagonal", "spd"])
def test_labels_on_a_halfspace_match_the_closed_form(kind):
    model, x, dictionary = halfspace_case(kind)
    l2 = ddrs.label_inputs(model, x, dictionary, N_LABEL, ALPHA, gen(0), kind="l2")
    expected_l2 = torch.tensor([S * Q, S * Q, S * Q / 2], dtype=F64).expand(4, 3)
    assert torch.allclose(l2.radii, expected_l2, rtol=1e-9, atol=0)
    assert l2.labels.tolist() == [0, 0, 0, 0]  # A and B tie in l2: the smaller index
    proxy = ddrs.label_inputs(model, x, dictionary, N_LABEL, ALPHA, gen(0), kind="proxy")
    expected_proxy = torch.tensor([S * Q, 2 * S * Q, S * Q / 2], dtype=F64).expand(4, 3)
    assert torch.allclose(proxy.radii, expected_proxy, rtol=1e-9, atol=0)  # det(B)^(1/2) = 2 s
    assert proxy.labels.tolist() == [1, 1, 1, 1] and not bool(proxy.abstained.any())
    swapped = ddrs.NoiseDictionary.from_points(dictionary.points[[1, 0, 2]], dictionary.manifold)
    assert ddrs.label_inputs(model, x, swapped, N_LABEL, ALPHA, gen(0), kind="l2").labels.tolist() == [0, 0, 0, 0]


def test_labels_pick_the_noise_that_fits_the_margin_and_are_reproducible():
    model = HalfSpace([1.0, 0.0], 0.0).eval()
    x = torch.tensor([[-0.3, 0.0], [0.3, 0.5], [-3.0, 0.0], [3.0, -0.5]], dtype=F64)
    dictionary = ddrs.NoiseDictionary.from_points(torch.tensor([0.25, 1.0], dtype=F64), manifolds.PositiveScalar(2))
    a = ddrs.label_inputs(model, x, dictionary, 500, ALPHA, gen(1), batch_size=3)
    b = ddrs.label_inputs(model, x, dictionary, 500, ALPHA, gen(1), batch_size=3)
    assert a.labels.tolist() == [0, 0, 1, 1]  # near the boundary the small noise, far from it the large one
    assert torch.equal(a.radii, b.radii)
    assert bool((a.radii[:2, 0] <= 0.3).all()) and bool((a.radii[2:, 1] > 2.0).all())  # below the true margins
    assert (a.radii.shape, a.kind, a.samples, a.alpha) == ((4, 2), "l2", 500, ALPHA)


def test_labels_with_one_model_per_entry():
    """Entry k's radius comes from its own model: the same half-space under both entries, except that
    entry 1's model is the half-space flipped, so on the inputs of class 0 (x_1 < 0) entry 1 certifies
    the other side's class and the labels follow the per-entry models."""
    x = torch.tensor([[-3.0, 0.0], [3.0, 0.5]], dtype=F64)
    dictionary = ddrs.NoiseDictionary.from_points(torch.tensor([0.25, 1.0], dtype=F64), manifolds.PositiveScalar(2))
    same = ddrs.label_inputs(HalfSpace([1.0, 0.0], 0.0).eval(), x, dictionary, 500, ALPHA, gen(1))
    models = [HalfSpace([1.0, 0.0], 0.0).eval(), HalfSpace([1.0, 0.0], 0.0).eval()]
    listed = ddrs.label_inputs(models, x, dictionary, 500, ALPHA, gen(1))
    assert torch.equal(same.radii, listed.radii)  # one model given once or per entry: the same numbers
    wide = [HalfSpace([1.0, 0.0], 0.0).eval(), HalfSpace([1.0, 0.0], -10.0).eval()]  # entry 1: x_1 > -10 only
    per = ddrs.label_inputs(wide, x, dictionary, 500, ALPHA, gen(1))
    assert per.labels.tolist() == [1, 1] and bool((per.radii[:, 1] > 2.0).all())
    with pytest.raises(ValueError, match="model must give one callable per dictionary entry"):
        ddrs.label_inputs(models[:1], x, dictionary, 500, ALPHA, gen(1))


def test_labels_count_only_the_true_class():
    """With ``targets`` an entry whose vote is not the input's class certifies nothing there: the radius is 0
    and the label moves to an entry that gets the class right."""
    x = torch.tensor([[-3.0, 0.0], [3.0, 0.5]], dtype=F64)
    dictionary = ddrs.NoiseDictionary.from_points(torch.tensor([0.25, 1.0], dtype=F64), manifolds.PositiveScalar(2))
    models = [HalfSpace([1.0, 0.0], 0.0).eval(), HalfSpace([1.0, 0.0], -10.0).eval()]  # entry 1: class 1 always
    free = ddrs.label_inputs(models, x, dictionary, 500, ALPHA, gen(1))
    assert free.labels.tolist() == [1, 1]  # entry 1 has the larger radius, for class 1, on both inputs
    true = ddrs.label_inputs(models, x, dictionary, 500, ALPHA, gen(1), targets=torch.tensor([0, 1]))
    assert true.labels.tolist() == [0, 1]  # input 0 is class 0: entry 1's certificate is of the wrong class
    assert float(true.radii[0, 1]) == 0.0 and torch.equal(true.radii[1], free.radii[1])
    with pytest.raises(ValueError, match="targets must hold one class per input"):
        ddrs.label_inputs(models, x, dictionary, 500, ALPHA, gen(1), targets=torch.tensor([0]))


# ---- the selector --------------------------------------------------------------------------------------------------

BLOBS = torch.tensor([[-2.0, 0.0], [2.0, 0.0], [0.0, 2.5]], dtype=F64)


def blobs(n, seed):
    labels = torch.randint(3, (n,), generator=gen(seed))
    return BLOBS[labels] + 0.4 * torch.randn(n, 2, generator=gen(seed + 1), dtype=F64), labels


def test_selector_learns_a_separable_problem_reproducibly():
    x, labels = blobs(300, 40)
    state = torch.get_rng_state()
    selector = ddrs.train_selector(x, labels, 3, 0.25, 20, gen(3))
    assert torch.equal(torch.get_rng_state(), state)  # the global generator is left as it was
    assert not selector.training
    test_x, test_labels = blobs(300, 50)
    with torch.no_grad():
        clean = (selector(test_x).argmax(1) == test_labels).double().mean()
        noisy = (
            (selector(test_x + 0.25 * torch.randn(test_x.shape, generator=gen(9), dtype=F64)).argmax(1) == test_labels)
            .double()
            .mean()
        )
    assert float(clean) >= 0.9 and float(noisy) >= 0.9
    again = ddrs.train_selector(x, labels, 3, 0.25, 20, gen(3))
    assert all(torch.equal(p, q) for p, q in zip(selector.state_dict().values(), again.state_dict().values()))


def test_selector_trains_a_users_module_and_refuses_bad_labels():
    x, labels = blobs(200, 60)
    with torch.random.fork_rng(devices=[]):  # the module's initial weights, whatever ran before
        torch.manual_seed(5)
        module = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2, 3, dtype=F64))
    trained = ddrs.train_selector(x, labels, 3, 0.1, 100, gen(4), module=module)
    assert trained is module and not trained.training
    with torch.no_grad():  # a linear selector from 30 random initial weights: 1.000 after 100 epochs (30: 0.455)
        assert float((trained(x).argmax(1) == labels).double().mean()) >= 0.9
    with pytest.raises(ValueError, match="0..2"):
        ddrs.train_selector(x, labels + 1, 3, 0.1, 1, gen(0))
    with pytest.raises(ValueError, match="sigma_e"):
        ddrs.train_selector(x, labels, 3, 0.0, 1, gen(0))


def test_utilities_weigh_a_mistake_by_its_cost_where_labels_count_it_once():
    """Indistinguishable inputs (one noisy cloud): entry 0 is best on 70 % of them by 0.1, entry 1 on 30 % by 1.0.
    The labels' majority is 0; the expected utility of always choosing 1 is higher (0.3 * 1.0 > 0.7 * 0.1), which
    the regret loss finds and cross-entropy cannot."""
    n = 400
    x = 0.01 * torch.randn(n, 2, generator=gen(90), dtype=F64)
    one_best = torch.rand(n, generator=gen(91)) < 0.3
    utilities = torch.where(one_best[:, None], torch.tensor([0.0, 1.0], dtype=F64), torch.tensor([0.1, 0.0], dtype=F64))
    by_labels = ddrs.train_selector(x, utilities.argmax(1), 2, 0.01, 30, gen(92))
    by_utility = ddrs.train_selector(x, utilities, 2, 0.01, 30, gen(92))
    with torch.no_grad():
        assert float((by_labels(x).argmax(1) == 0).double().mean()) == 1.0
        assert float((by_utility(x).argmax(1) == 1).double().mean()) == 1.0
    with pytest.raises(ValueError, match="utilities"):
        ddrs.train_selector(x, utilities[:, :1], 2, 0.01, 1, gen(0))
    with pytest.raises(ValueError, match="finite"):
        ddrs.train_selector(x, utilities.clone().fill_(float("nan")), 2, 0.01, 1, gen(0))


def test_model_feature_selector_reads_a_frozen_classifier_and_learns_what_pixels_hide():
    """The entry to pick is 'far from the classifier's boundary' (|x_1| > 1), not linear in x: a selector on the
    classifier's confidence profile learns it; the classifier itself is never trained or put in train mode."""
    features = torch.nn.Sequential(torch.nn.Linear(2, 2, dtype=torch.float32), torch.nn.Dropout(0.5))
    with torch.no_grad():
        features[0].weight.copy_(torch.tensor([[-1.0, 0.0], [1.0, 0.0]]))
        features[0].bias.zero_()
    before = {k: v.clone() for k, v in features.state_dict().items()}
    x = torch.rand(600, 2, generator=gen(93)) * 6 - 3
    labels = (x[:, 0].abs() > 1).long()
    selector = ddrs.ModelFeatureSelector(features, 2, 2, gen(94), hidden=(16,))
    assert selector.profile(x[:3]).shape == (3, 4)
    profile = selector.profile(x[:3])
    assert torch.allclose(profile[:, 2:], profile[:, :2].sort(dim=1, descending=True).values)
    trained = ddrs.train_selector(x, labels, 2, 0.05, 60, gen(95), module=selector)
    assert trained is selector and not features.training  # dropout stayed off while the head trained
    assert all(torch.equal(before[k], v) for k, v in features.state_dict().items())
    test_x = torch.rand(600, 2, generator=gen(96)) * 6 - 3
    with torch.no_grad():
        accuracy = float((trained(test_x).argmax(1) == (test_x[:, 0].abs() > 1).long()).double().mean())
        linear = ddrs.train_selector(x, labels, 2, 0.05, 60, gen(95), hidden=())
        linear_accuracy = float((linear(test_x).argmax(1) == (test_x[:, 0].abs() > 1).long()).double().mean())
    assert accuracy >= 0.95 and linear_accuracy <= 0.8  # 0.99 and 0.61 here
    with pytest.raises(ValueError, match="logits"):
        ddrs.ModelFeatureSelector(features, 3, 2, gen(0)).profile(x[:2])
    with pytest.raises(TypeError, match="features"):
        ddrs.ModelFeatureSelector(lambda v: v, 2, 2, gen(0))


# ---- end to end ----------------------------------------------------------------------------------------------------


def margin_inputs(n, seed):
    """2-D inputs on both sides of x_1 = 0, half near it (|x_1| ~ 0.3), half far (|x_1| ~ 3)."""
    g = gen(seed)
    side = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0).to(F64)
    far = torch.rand(n, generator=g) < 0.5
    x1 = side * torch.where(far, 3.0, 0.3).to(F64) + 0.05 * torch.randn(n, generator=g, dtype=F64)
    x2 = torch.rand(n, generator=g, dtype=F64) * 2 - 1
    return torch.stack([x1, x2], dim=1), far


def test_dictionary_labels_and_selector_plug_into_dual_smooth():
    model = HalfSpace([1.0, 0.0], 0.0).eval()
    x, far = margin_inputs(80, 70)
    fitted = ddrs.DDRS(iterations=40, samples=64, max_ratio=4.0).fit(model, x, init=0.4, generator=gen(1))
    dictionary = ddrs.NoiseDictionary.from_result(fitted, 2, gen(2))
    small, large = dictionary.points.tolist()
    assert small < 0.5 < 1.0 < large  # the near inputs' noise and the far inputs' noise
    labels = ddrs.label_inputs(model, x, dictionary, 500, ALPHA, gen(3))
    assert torch.equal(labels.labels, far.long())
    sigma_e = 0.25
    selector = ddrs.train_selector(x, labels.labels, len(dictionary), sigma_e, 40, gen(4))
    dual = certify.DualSmooth(model, selector, dictionary.noises(), 2, certify.IsotropicGaussian(sigma_e))
    test_x, test_far = margin_inputs(12, 80)
    certs = [dual.certify(xi, 50, 500, 1e-4, 50, 1000, 1e-4, generator=gen(100 + i)) for i, xi in enumerate(test_x)]
    kept = [c for c in certs if not c.abstained]
    assert len(kept) >= 11
    assert all(c.prediction == int(xi[0] > 0) for c, xi in zip(certs, test_x) if not c.abstained)
    assert all(c.selected == int(f) for c, f in zip(certs, test_far) if not c.abstained)
    # sound against the truth: the true l2 radius of the half-space is |x_1|
    assert all(0 < c.l2_radius <= abs(float(xi[0])) for c, xi in zip(certs, test_x) if not c.abstained)
    # far from the boundary the selector's ball binds (its radius sigma_e Phi^-1(p_sel_lower) < |x_1|)
    assert all(c.l2_radius == c.selector_radius < c.classifier.l2_radius for c, f in zip(certs, test_far) if f)
