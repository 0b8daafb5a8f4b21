"""Dual randomized smoothing, the library side: the noise dictionary and the noise selector.

``certify.DualSmooth`` (Sun, Mao and Vechev, ICLR 2026) certifies with a finite dictionary of K noises and a
base selector s that scores the K entries; this module builds both from data:

* ``NoiseDictionary``: K points of one ``manifolds.Manifold`` with their ``manifolds.NoiseMap``;
  ``noises()`` gives the ``certify`` noise objects in order, what ``DualSmooth`` takes. Built from a user's
  points (``from_points``) or by clustering the per-input noises a preset chose (a ``SmoothingResult``'s
  points, ``from_result``) with ``RiemannianKMeans`` under the manifold's own metric: k-means++ seeding
  from an explicit generator, Lloyd iterations whose centres are Frechet (Karcher) means computed with the
  manifold's exp and log. The centres are points of the manifold (exp of a point is a point).
* ``label_inputs``: per training input, the entry with the largest hard-vote certified radius
  (``ddrs.selection.hard_vote_radii``; the draws are common to all entries, so the comparison is not
  swamped by Monte Carlo noise), ties to the smallest index.
* ``train_selector``: a small classifier of those labels, trained with Gaussian noise augmentation at the
  selector's own noise level sigma_e (``DualSmooth`` smooths it with N(0, sigma_e^2 I)).

Nothing here bears on soundness: ``DualSmooth``'s certificate holds for any dictionary and any selector
(``certify.dual``); a good dictionary and selector only make its regions larger.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

import certify
from certify.bounds import check_alpha
from certify.dual import per_entry as _per_entry
from certify.sampling import check_count, model_device_dtype, sampling_dtype
from manifolds import Manifold, NoiseMap, as_noise_map

from .methods import SmoothingResult
from .selection import KINDS, hard_vote_radii

__all__ = [
    "MAX_ENTRIES",
    "TIE_RTOL",
    "InputLabels",
    "KMeansResult",
    "ModelFeatureSelector",
    "NoiseDictionary",
    "RiemannianKMeans",
    "assign",
    "first_argmax",
    "cluster_means",
    "frechet_mean",
    "kmeans_plus_plus",
    "label_inputs",
    "selector_mlp",
    "train_selector",
]

F64 = torch.float64
#: the most entries ``NoiseDictionary.from_result`` clusters into (a selector over a few noises)
MAX_ENTRIES = 8
#: radii within this relative distance of an input's largest are a tie in ``label_inputs`` (the smallest index
#: wins): the same noise written two ways (a stretched SPD entry's eigenvalues) differs only by rounding
TIE_RTOL = 1e-12


# ---- Riemannian k-means ------------------------------------------------------------------------------


def _as_points(manifold: Manifold, points: torch.Tensor) -> torch.Tensor:
    """A checked batch (N, *point_shape) of float64 CPU points of ``manifold``, N >= 1."""
    if not isinstance(points, torch.Tensor):
        raise TypeError(f"points must be a torch.Tensor, got {type(points).__name__}")
    points = points.detach().to(device="cpu", dtype=F64)
    if points.ndim != manifold.point_ndim + 1 or points.shape[0] < 1:
        raise ValueError(
            f"points must be a non-empty batch (N, *{manifold.point_shape}) of {manifold!r}, got {tuple(points.shape)}"
        )
    manifold.check_point(points)
    return points


def _per_point(manifold: Manifold, values: torch.Tensor) -> torch.Tensor:
    """(N,) values reshaped to broadcast against points (N, *point_shape)."""
    return values.reshape(values.shape + (1,) * manifold.point_ndim)


def _dist_to(manifold: Manifold, centre: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """(N,) geodesic distances from one point ``centre`` to every point of ``points`` (N, ...)."""
    return manifold.dist(centre.expand_as(points).contiguous(), points)


def assign(manifold: Manifold, points: torch.Tensor, centres: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each point's nearest centre under the manifold's geodesic distance (ties to the smallest index) and the
    squared distance to it: (labels (N,) long, squared distances (N,) float64). One batched distance per
    centre."""
    d2 = torch.stack([_dist_to(manifold, c, points).square() for c in centres], dim=1)  # (N, K)
    best = d2.min(dim=1)
    return best.indices, best.values


def frechet_mean(
    manifold: Manifold, points: torch.Tensor, iterations: int = 50, tol: float = 1e-12, init: torch.Tensor | None = None
) -> torch.Tensor:
    """The Frechet (Karcher) mean of ``points`` (N, *point_shape): the fixed point of mu <- exp_mu(mean_i
    log_mu(x_i)), started at ``init`` (default the first point), stopped when the mean tangent's norm at mu is
    at most ``tol`` or after ``iterations`` steps."""
    points = _as_points(manifold, points)
    labels = torch.zeros(points.shape[0], dtype=torch.long)
    start = points[:1] if init is None else _as_points(manifold, init.reshape((1,) + manifold.point_shape))
    return cluster_means(manifold, points, labels, start, iterations, tol)[0]


def cluster_means(
    manifold: Manifold,
    points: torch.Tensor,
    labels: torch.Tensor,
    centres: torch.Tensor,
    iterations: int = 50,
    tol: float = 1e-12,
) -> torch.Tensor:
    """The Karcher mean of every cluster at once (clusters ``labels`` (N,) in 0..K-1, each started at its
    current centre ``centres`` (K, ...)). A cluster stops moving once its mean tangent's norm is at most
    ``tol``; an empty cluster keeps its centre. Returns (K, *point_shape)."""
    # Karcher mean by unit-step Riemannian gradient descent (Pennec 2006, J. Math. Imaging Vis. 25:127-154)
    K = centres.shape[0]
    counts = torch.bincount(labels, minlength=K).to(F64)
    moving = counts > 0
    for _ in range(iterations):
        tangents = manifold.log(centres[labels], points)  # (N, ...) at each point's own centre
        total = torch.zeros_like(centres).index_add_(0, labels, tangents)
        mean = total / _per_point(manifold, counts.clamp_min(1.0))
        moving = moving & (manifold.norm(centres, mean) > tol)
        if not bool(moving.any()):
            break
        stepped = manifold.exp(centres, mean)
        centres = torch.where(_per_point(manifold, moving), stepped, centres)
    return centres


def kmeans_plus_plus(manifold: Manifold, points: torch.Tensor, K: int, generator: torch.Generator) -> torch.Tensor:
    """K seed indices (K,) long by k-means++: the first uniformly, each next with probability proportional to
    its squared geodesic distance to the nearest seed so far (D^2 sampling), all from ``generator``. Raises
    ValueError when the points hold fewer than K distinct values."""
    # k-means++ seeding (Arthur and Vassilvitskii 2007), distances of the manifold's metric
    n = points.shape[0]
    if K > n:
        raise ValueError(f"cannot seed {K} clusters from {n} points")
    first = int(torch.randint(n, (1,), generator=generator))
    seeds = [first]
    d2 = _dist_to(manifold, points[first], points).square()
    for _ in range(1, K):
        cumulative = torch.cumsum(d2, 0)
        total = float(cumulative[-1])
        if not total > 0:
            raise ValueError(f"the points hold fewer than {K} distinct values: cannot seed {K} clusters")
        u = torch.rand((), generator=generator, dtype=F64) * total
        nxt = min(int(torch.searchsorted(cumulative, u, right=True)), n - 1)  # never a point of weight 0
        seeds.append(nxt)
        d2 = torch.minimum(d2, _dist_to(manifold, points[nxt], points).square())
    return torch.tensor(seeds, dtype=torch.long)


def _refill_empty(centres: torch.Tensor, points: torch.Tensor, labels: torch.Tensor, d2: torch.Tensor) -> torch.Tensor:
    """Centres with every empty cluster moved onto a point farthest from its own centre (a common Lloyd
    repair), the farthest point to the first empty cluster and so on."""
    counts = torch.bincount(labels, minlength=centres.shape[0])
    empty = (counts == 0).nonzero().flatten()
    if empty.numel() == 0:
        return centres
    far = torch.argsort(d2, descending=True, stable=True)[: empty.numel()]
    centres = centres.clone()
    centres[empty] = points[far]
    return centres


@dataclass
class KMeansResult:
    """The result of ``RiemannianKMeans.fit``.

    ``centres`` (K, *point_shape) float64: points of the manifold. ``labels`` (N,) long: each point's nearest
    centre. ``inertia``: the sum of squared geodesic distances to the nearest centre. ``iterations``: Lloyd
    iterations run. ``converged``: the assignment stopped changing and no centre moved by more than ``tol``
    within the budget. ``seeds`` (K,) long: the k-means++ seed indices into the points (in the order drawn;
    centre k grew from seed k)."""

    centres: torch.Tensor
    labels: torch.Tensor
    inertia: float
    iterations: int
    converged: bool
    seeds: torch.Tensor


@dataclass
class RiemannianKMeans:
    """k-means under a manifold's metric: k-means++ seeding, then Lloyd iterations (assign every point to its
    nearest centre by geodesic distance, move every centre to its cluster's Karcher mean).

    Parameters
    ----------
    n_clusters : int
        K >= 1.
    iterations : int, default 100
        Lloyd iterations at most.
    tol : float, default 1e-10
        Lloyd stops once the assignment is unchanged and no centre moved by more than ``tol`` (geodesic).
    mean_iterations : int, default 50
        Karcher steps at most per Lloyd iteration (each warm-started at the current centre).
    mean_tol : float, default 1e-12
        A Karcher mean stops once its mean tangent's norm is at most ``mean_tol``.
    """

    n_clusters: int
    iterations: int = 100
    tol: float = 1e-10
    mean_iterations: int = 50
    mean_tol: float = 1e-12

    def _validate(self) -> None:
        check_count(self.n_clusters, "n_clusters")
        check_count(self.iterations, "iterations")
        check_count(self.mean_iterations, "mean_iterations")
        for name in ("tol", "mean_tol"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite float >= 0, got {value!r}")

    def fit(self, manifold: Manifold, points: torch.Tensor, generator: torch.Generator) -> KMeansResult:
        """Cluster ``points`` (N, *point_shape) of ``manifold`` (float64 on the CPU; the seeding draws from
        ``generator``, a CPU generator). Deterministic given the generator's state."""
        self._validate()
        if not isinstance(manifold, Manifold):
            raise TypeError(f"manifold must be a manifolds.Manifold, got {type(manifold).__name__}")
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        points = _as_points(manifold, points)
        seeds = kmeans_plus_plus(manifold, points, self.n_clusters, generator)
        centres = points[seeds].clone()
        labels, d2 = assign(manifold, points, centres)
        converged, done = False, 0
        while done < self.iterations:
            done += 1
            new = cluster_means(manifold, points, labels, centres, self.mean_iterations, self.mean_tol)
            new = _refill_empty(new, points, labels, d2)
            shift = float(manifold.dist(centres, new).max())
            centres = new
            new_labels, d2 = assign(manifold, points, centres)
            unchanged = bool(torch.equal(new_labels, labels))
            labels = new_labels
            if unchanged and shift <= self.tol:
                converged = True
                break
        manifold.check_point(centres)
        return KMeansResult(centres, labels, float(d2.sum()), done, converged, seeds)


# ---- the dictionary -------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class NoiseDictionary:
    """K noise points of one manifold, in order: entry k is ``points[k]``, its ``certify`` noise
    ``noises()[k]`` (the dictionary ``certify.DualSmooth`` takes).

    ``manifold``: the geometry of the points. ``points`` (K, *point_shape): float64 points of it (checked).
    ``noise``: what a point means for smoothing (None: ``manifolds.noise_for(manifold)``, the point is the
    noise scale). ``clustering``: the k-means result it was built from (None for a user's points)."""

    manifold: Manifold
    points: torch.Tensor
    noise: NoiseMap | None = None
    clustering: KMeansResult | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.manifold, Manifold):
            raise TypeError(f"manifold must be a manifolds.Manifold, got {type(self.manifold).__name__}")
        object.__setattr__(self, "points", _as_points(self.manifold, self.points))
        noise_map = self.noise_map
        if noise_map.point_ndim != self.manifold.point_ndim or noise_map.dim != self.manifold.dim:
            raise ValueError(f"noise map {noise_map!r} does not read the points of {self.manifold!r}")

    @property
    def noise_map(self) -> NoiseMap:
        """The noise map of the points (``noise``, or the manifold's shipped one)."""
        return as_noise_map(self.manifold if self.noise is None else self.noise)

    def noises(self) -> list[certify.GaussianNoise]:
        """The ``certify`` noise object of every entry, in order."""
        return [self.noise_map.to_noise(p) for p in self.points]

    def __len__(self) -> int:
        return self.points.shape[0]

    @classmethod
    def from_points(
        cls, points: torch.Tensor | Sequence, manifold: Manifold, noise: NoiseMap | None = None
    ) -> NoiseDictionary:
        """A dictionary of a user's points (a (K, *point_shape) tensor or a list of K points), in the order
        given."""
        if not isinstance(points, torch.Tensor):
            points = torch.stack([torch.as_tensor(p, dtype=F64) for p in points]) if len(points) else torch.empty(0)
        return cls(manifold, points, noise)

    @classmethod
    def from_result(
        cls,
        result: SmoothingResult,
        n_entries: int,
        generator: torch.Generator,
        kmeans: RiemannianKMeans | None = None,
    ) -> NoiseDictionary:
        """The per-input noises a preset chose (``result.points`` on ``result.manifold``) clustered into
        ``n_entries`` <= ``MAX_ENTRIES`` centres by ``kmeans`` (default ``RiemannianKMeans(n_entries)``; its
        ``n_clusters`` is set to ``n_entries``). Entries are ordered by the noise's log-volume, then its
        smallest scale (ascending), so the order does not depend on the seeding; ``clustering`` holds the
        k-means result with labels and seeds renumbered to that order."""
        if not isinstance(result, SmoothingResult):
            raise TypeError(f"result must be a ddrs.SmoothingResult, got {type(result).__name__}")
        n_entries = check_count(n_entries, "n_entries")
        if n_entries > MAX_ENTRIES:
            raise ValueError(f"n_entries must be at most {MAX_ENTRIES}, got {n_entries}")
        km = RiemannianKMeans(n_entries) if kmeans is None else kmeans
        if not isinstance(km, RiemannianKMeans):
            raise TypeError(f"kmeans must be a RiemannianKMeans, got {type(km).__name__}")
        km = RiemannianKMeans(n_entries, km.iterations, km.tol, km.mean_iterations, km.mean_tol)
        fit = km.fit(result.manifold, result.points, generator)
        noise_map = result.noise_map
        volume = noise_map.log_volume(fit.centres).tolist()
        smallest = noise_map.min_eigenvalue(fit.centres).tolist()
        order = sorted(range(n_entries), key=lambda k: (volume[k], smallest[k], k))
        rank = torch.empty(n_entries, dtype=torch.long)
        rank[torch.tensor(order)] = torch.arange(n_entries)
        ordered = KMeansResult(
            fit.centres[order], rank[fit.labels], fit.inertia, fit.iterations, fit.converged, fit.seeds[order]
        )
        return cls(result.manifold, ordered.centres, result.noise, ordered)


# ---- labels for the selector -----------------------------------------------------------------------------


@dataclass
class InputLabels:
    """The result of ``label_inputs``.

    ``labels`` (B,) long: per input, the dictionary index with the largest radius of ``kind`` (ties, radii
    equal up to a relative ``TIE_RTOL``, to the smallest index; an input every entry abstains on gets 0).
    ``radii`` (B, K) float64: the hard-vote Clopper-Pearson radius of every input and entry (0 where that entry
    would abstain). ``kind``: 'l2' or 'proxy'. ``samples``, ``alpha``: the draws per input and entry, and the
    level. ``by_kind``: both kinds' radii (B, K), from the same votes ('l2' and 'proxy'; ``radii`` is one of them),
    for labels that weigh both (keep the ball, then grow the volume)."""

    labels: torch.Tensor
    radii: torch.Tensor
    kind: str
    samples: int
    alpha: float
    by_kind: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def abstained(self) -> torch.Tensor:
        """(B,) bool: every entry abstains on that input (its label is then 0 by the tie rule)."""
        return (self.radii <= 0).all(dim=1)


def first_argmax(values: torch.Tensor, rtol: float = TIE_RTOL) -> torch.Tensor:
    """Per row, the smallest index whose value is the row's maximum up to a relative ``rtol``."""
    index = torch.arange(values.shape[1], device=values.device).expand_as(values)
    top = values.max(dim=1, keepdim=True).values
    at_max = values >= top - rtol * top.abs()
    return torch.where(at_max, index, values.shape[1]).min(dim=1).values


def label_inputs(
    model: Callable | Sequence[Callable],
    x: torch.Tensor,
    dictionary: NoiseDictionary,
    samples: int,
    alpha: float,
    generator: torch.Generator,
    kind: str = "l2",
    batch_size: int = 64,
    chunk_size: int = 20000,
    targets: torch.Tensor | None = None,
) -> InputLabels:
    """The best dictionary entry of every input ``x`` (B, *input_shape; taken to the model's device and dtype;
    ``model`` one network for every entry or a sequence of one per entry, as ``certify.DualSmooth`` takes):
    per input the hard-vote certified radius of each entry (``ddrs.selection.hard_vote_radii``, ``kind`` 'l2' or
    'proxy') on ``samples`` standard normal draws from ``generator`` that are the SAME for every entry (common
    random numbers), and the entry with the largest one, ties (up to a relative ``TIE_RTOL``, rounding) to the
    smallest index. Inputs run ``batch_size`` at a time (one draw per batch, (b, samples, normals), then one
    batched call per entry); the network in chunks of ``chunk_size`` noisy copies.

    ``targets`` (B,) the inputs' classes, when known (training data): an entry whose vote is not the input's class
    gets radius 0 there, so the label prefers the entry that certifies the right class, not the one with the
    largest radius for any class. These are estimates on the labelling draws, for training a selector; no
    certificate is claimed."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if not isinstance(dictionary, NoiseDictionary):
        raise TypeError(f"dictionary must be a NoiseDictionary, got {type(dictionary).__name__}")
    if not isinstance(x, torch.Tensor) or x.ndim < 2 or x.shape[0] < 1:
        raise ValueError("x must be a non-empty batch of inputs, a tensor of shape (B, *input_shape)")
    if x[0].numel() != dictionary.noise_map.dim:
        raise ValueError(f"inputs have {x[0].numel()} entries, the dictionary's noise {dictionary.noise_map.dim}")
    samples = check_count(samples, "samples")
    alpha = check_alpha(alpha)
    batch_size = check_count(batch_size, "batch_size")
    models = _per_entry(model, len(dictionary), "model")
    device, dtype = model_device_dtype(models[0], x)
    x = x.to(device=device, dtype=dtype)
    noise_map = dictionary.noise_map
    points = dictionary.points.to(x.device)
    if targets is not None:
        targets = torch.as_tensor(targets).reshape(-1)
        if targets.shape[0] != x.shape[0]:
            raise ValueError(f"targets must hold one class per input: {targets.shape[0]} for {x.shape[0]} inputs")
    rows = []
    for start in range(0, x.shape[0], batch_size):
        xb = x[start : start + batch_size]
        tb = None if targets is None else targets[start : start + batch_size]
        b = xb.shape[0]
        z = torch.randn(
            (b, samples, noise_map.normals), generator=generator, device=generator.device, dtype=sampling_dtype(x.dtype)
        ).to(x.device)
        columns = [
            hard_vote_radii(f, noise_map, xb, p.expand((b,) + tuple(p.shape)), z, alpha, chunk_size, tb)
            for f, p in zip(models, points)
        ]
        rows.append({k: torch.stack([c[k] for c in columns], dim=1) for k in KINDS})
    by_kind = {k: torch.cat([r[k] for r in rows]).to(F64) for k in KINDS}
    radii = by_kind[kind]
    return InputLabels(first_argmax(radii), radii, kind, samples, alpha, by_kind)


# ---- the selector ----------------------------------------------------------------------------------------


def selector_mlp(
    dim: int,
    entries: int,
    generator: torch.Generator,
    hidden: Sequence[int] = (64, 64),
    dtype: torch.dtype = torch.float32,
) -> torch.nn.Module:
    """An MLP on flattened inputs: ``dim`` -> ``hidden`` (ReLU) -> ``entries`` scores, its weights drawn from
    ``generator`` (PyTorch's default Linear initialisation: uniform, bound 1 / sqrt(fan_in)); torch's global
    generator is left untouched."""
    widths = [check_count(dim, "dim"), *(check_count(h, "hidden") for h in hidden), check_count(entries, "entries")]
    layers: list[torch.nn.Module] = [torch.nn.Flatten()]
    for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
        with torch.random.fork_rng(devices=[]):  # Linear's own initialisation, overwritten, leaves no trace
            linear = torch.nn.Linear(fan_in, fan_out, dtype=dtype)
        bound = 1.0 / math.sqrt(fan_in)
        with torch.no_grad():
            linear.weight.copy_(torch.rand(linear.weight.shape, generator=generator, dtype=F64) * 2 * bound - bound)
            linear.bias.copy_(torch.rand(linear.bias.shape, generator=generator, dtype=F64) * 2 * bound - bound)
        layers.append(linear)
        if i < len(widths) - 2:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


class ModelFeatureSelector(torch.nn.Module):
    """A base selector that reads a trained classifier: the scores over the K entries are a small MLP ``head``
    of the classifier's class probabilities p = softmax(features(x)) and of the same probabilities sorted in
    decreasing order (the class-blind confidence profile: top-1, top-2, ...), 2 C numbers for C classes.

    Why: which noise certifies an input best is mostly a question of how robust the classifier is there (an
    input the network only just gets right is lost to large noise), which its confidence under noise shows and
    the raw input hides (an MLP on pixels learns little more than the most common entry). ``features`` is frozen
    (no gradient, kept in eval mode, even when the selector is put in train mode); train the head with
    ``train_selector(x, ..., module=ModelFeatureSelector(...))``. A good choice of ``features`` is the entry
    classifier trained with the selector's own noise sigma_e: the selector is smoothed with that noise, which
    the classifier has learnt to read through. Soundness does not depend on any of this (``certify.dual``)."""

    def __init__(
        self,
        features: torch.nn.Module,
        num_classes: int,
        entries: int,
        generator: torch.Generator,
        hidden: Sequence[int] = (32,),
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        if not isinstance(features, torch.nn.Module):
            raise TypeError(f"features must be a torch.nn.Module, got {type(features).__name__}")
        self.num_classes = check_count(num_classes, "num_classes")
        self.features = features
        for parameter in self.features.parameters():
            parameter.requires_grad_(False)
        self.features.eval()
        self.dtype = dtype
        self.head = selector_mlp(2 * self.num_classes, entries, generator, hidden, dtype)

    def train(self, mode: bool = True) -> ModelFeatureSelector:
        super().train(mode)
        self.features.eval()  # frozen: batch norm and dropout stay in inference mode
        return self

    def profile(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 2 C) the head's input: the class probabilities and the same sorted in decreasing order."""
        logits = self.features(x)
        if logits.ndim != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(f"features must map inputs to (B, {self.num_classes}) logits, got {tuple(logits.shape)}")
        p = torch.softmax(logits.to(self.dtype), dim=1)
        return torch.cat([p, p.sort(dim=1, descending=True).values], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.profile(x))


def _selector_loss(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy for labels (b,) long; the mean expected regret sum_k softmax(scores)_k (max_j u_j - u_k) for
    utilities u (b, K)."""
    if targets.ndim == 1:
        return torch.nn.functional.cross_entropy(scores, targets)
    regret = targets.max(dim=1, keepdim=True).values - targets
    return (torch.softmax(scores, dim=1) * regret.to(scores.dtype)).sum(dim=1).mean()


def train_selector(
    x: torch.Tensor,
    labels: torch.Tensor,
    K: int,
    sigma_e: float,
    epochs: int,
    generator: torch.Generator,
    module: torch.nn.Module | None = None,
    hidden: Sequence[int] = (64, 64),
    lr: float = 1e-2,
    batch_size: int = 128,
    weight_decay: float = 0.0,
) -> torch.nn.Module:
    """A base selector for ``certify.DualSmooth``: ``module`` (default ``selector_mlp`` of the flattened input,
    in x's dtype) trained by Adam on ``x + e``, e ~ N(0, sigma_e^2 I) drawn afresh for every batch (the noise the
    selector is smoothed with at test time), to predict ``labels``: either (B,) entry indices in 0..K-1
    (cross-entropy) or (B, K) finite utilities, what choosing entry k is worth for input i (e.g. its estimated
    certified radius), for the expected regret sum_k q_k (max_j u_ij - u_ik) with q = softmax(scores): a
    cost-sensitive loss that weighs a wrong choice by what it costs, where labels weigh every mistake alike.
    Shuffling, noise and the default module's weights come from ``generator``, and any other random operation
    of the module (dropout) from torch's global generator seeded from it and restored afterwards, so the same
    generator state gives the same selector bit for bit (on the same machine and thread count). Returns the
    module, trained, in eval mode, on x's device."""
    if not isinstance(x, torch.Tensor) or x.ndim < 2 or x.shape[0] < 1 or not x.is_floating_point():
        raise ValueError("x must be a non-empty floating batch of inputs, a tensor of shape (B, *input_shape)")
    K = check_count(K, "K")
    labels = torch.as_tensor(labels)
    if labels.ndim == 2:  # utilities (B, K)
        if labels.shape != (x.shape[0], K) or not labels.is_floating_point():
            raise ValueError(
                f"labels as utilities must be a floating (B, K) = ({x.shape[0]}, {K}) tensor, got "
                f"{labels.dtype} {tuple(labels.shape)}"
            )
        if not bool(torch.isfinite(labels).all()):
            raise ValueError("labels as utilities must be finite")
        labels = labels.to(device=x.device, dtype=torch.float64)
    else:
        labels = labels.to(device=x.device, dtype=torch.long).reshape(-1)
        if labels.shape[0] != x.shape[0]:
            raise ValueError(f"labels must hold one index per input: {labels.shape[0]} labels for {x.shape[0]} inputs")
        if bool(((labels < 0) | (labels >= K)).any()):
            raise ValueError(f"labels must lie in 0..{K - 1}")
    sigma_e = float(sigma_e)
    if not (math.isfinite(sigma_e) and sigma_e > 0):
        raise ValueError(f"sigma_e must be positive and finite, got {sigma_e}")
    epochs, batch_size = check_count(epochs, "epochs"), check_count(batch_size, "batch_size")
    if module is not None and not isinstance(module, torch.nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    seed = int(torch.randint(2**62, (1,), generator=generator))
    devices = [x.device.index or 0] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.enable_grad():
        torch.manual_seed(seed)  # a user module's own random operations (dropout) draw here
        if module is None:
            module = selector_mlp(x[0].numel(), K, generator, hidden, x.dtype)
        module = module.to(x.device)
        optimiser = torch.optim.Adam(module.parameters(), lr=lr, weight_decay=weight_decay)
        module.train()
        for _ in range(epochs):
            order = torch.randperm(x.shape[0], generator=generator, device=generator.device).to(x.device)
            for start in range(0, x.shape[0], batch_size):
                idx = order[start : start + batch_size]
                e = torch.randn(
                    (idx.shape[0],) + tuple(x.shape[1:]), generator=generator, device=generator.device, dtype=x.dtype
                )
                loss = _selector_loss(module(x[idx] + sigma_e * e.to(x.device)), labels[idx])
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
    return module.eval()
