"""The problem every driver solves: maximise an objective of the smoothing noise, one point per input.

Pymanopt keeps the problem (cost, manifold) apart from the solver; so does this package. A ``Problem``
holds what does not change while a driver runs (the network, the inputs, the geometry, the noise map,
the objective, its Monte Carlo estimator, the constraint); a driver (``ddrs.ascend``, ``ddrs.pymanopt_ascend``)
takes the problem, a start point, a step rule, a step count and a generator, with the same signature.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from manifolds import Manifold, NoiseMap, as_noise_map
from manifolds.eigenframe import EigenFrame

from .estimator import Normals, SoftSmoothingEstimator, Terms
from .objectives import EigenvalueFloor


@dataclass(frozen=True)
class Problem:
    """Maximise ``objective`` of the noise points of a batch of inputs.

    Parameters
    ----------
    model : callable
        The base classifier: a batch of inputs (N, *shape) to logits (N, C).
    inputs : torch.Tensor
        The batch x (B, *shape), on the model's device and in its dtype.
    manifold : manifolds.Manifold
        The geometry of the points (inner product, Riemannian gradient, exp/retraction).
    objective : callable
        ``Terms`` -> (B,) values to maximise (e.g. ``ddrs.Radius()``, ``ddrs.ancer_objective(2.0)``).
    estimator : SoftSmoothingEstimator
        The Monte Carlo estimate of the objective and its Euclidean gradient.
    noise : manifolds.NoiseMap or None, default None
        What a point means for smoothing (noise, floor, volume, certificate); None: ``manifolds.noise_for(manifold)``,
        the shipped map of the manifold's point shape (the point is the noise scale).
    constraint : EigenvalueFloor or None, default None
        The floor (and ceiling) applied after every step through ``noise.project_floor``; None: none.
    num_classes : int or None, default None
        Number of classes when the model's output width should be checked; None: the model's.
    keep_ball : bool, default False
        The containment constraint (ANCER's eq. (4), its SPD counterpart): the drivers take the start's estimated
        certified l2 radius as each input's target (``Terms.l2_target``, which ``KeepBall`` penalises falling
        below) and let only iterates whose estimate keeps it compete for the best.
    """

    model: Callable
    inputs: torch.Tensor
    manifold: Manifold
    objective: Callable[[Terms], torch.Tensor]
    estimator: SoftSmoothingEstimator
    noise: NoiseMap | None = None
    constraint: EigenvalueFloor | None = None
    num_classes: int | None = None
    keep_ball: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.manifold, Manifold):
            raise TypeError(f"manifold must be a manifolds.Manifold, got {type(self.manifold).__name__}")
        noise = as_noise_map(self.manifold if self.noise is None else self.noise)
        if noise.point_ndim != self.manifold.point_ndim:
            raise ValueError(
                f"noise {noise!r} has point_ndim {noise.point_ndim}, "
                f"manifold {self.manifold!r} {self.manifold.point_ndim}"
            )
        if not isinstance(self.inputs, torch.Tensor) or self.inputs.ndim < 2:
            raise ValueError("inputs must be a batch of inputs, a tensor of shape (B, *input_shape)")
        if noise.dim != self.inputs[0].numel():
            raise ValueError(
                f"noise {noise!r} has dim {noise.dim}, but the inputs have {self.inputs[0].numel()} entries"
            )
        object.__setattr__(self, "noise", noise)

    @property
    def noise_map(self) -> NoiseMap:
        """The resolved noise map (never None)."""
        assert self.noise is not None
        return self.noise

    def __len__(self) -> int:
        return self.inputs.shape[0]

    def draw(self, generator: torch.Generator | None, samples: int | None = None) -> Normals:
        """Standard normal draws (B, samples, noise.normals) for the estimator (``SoftSmoothingEstimator.draw``; a
        ``LazyNormals`` where they would not fit in memory)."""
        x = self.inputs
        return self.estimator.draw(len(self), self.noise_map.normals, generator, x.device, x.dtype, samples=samples)

    def evaluate(
        self,
        point: torch.Tensor,
        z: Normals,
        with_grad: bool = True,
        frame: EigenFrame | None = None,
        l2_target: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, Terms]:
        """Objective values (B,), Euclidean gradient (or None) and terms at ``point`` on draws ``z``
        (``SoftSmoothingEstimator.evaluate``; ``l2_target`` reaches the objective as ``Terms.l2_target``)."""
        return self.estimator.evaluate(
            self.model, self.noise_map, self.inputs, point, self.objective, z, self.num_classes, with_grad, frame,
            l2_target,
        )  # fmt: skip

    def l2_target(self, terms: Terms, target: torch.Tensor | None) -> torch.Tensor | None:
        """The target a driver carries: None without ``keep_ball``; else ``target``, or, at the first evaluation
        (``target`` None, the start), the start's estimated certified l2 radius."""
        if not self.keep_ball:
            return None
        return terms.l2_radius.detach().clone() if target is None else target

    @staticmethod
    def feasible(terms: Terms, target: torch.Tensor | None) -> torch.Tensor | bool:
        """Per input, whether an iterate may compete for the best: its estimated l2 radius keeps ``target``
        (always True without one; the start keeps its own exactly)."""
        return True if target is None else terms.l2_radius >= target

    def project(self, point: torch.Tensor) -> torch.Tensor:
        """``point`` with the constraint applied (itself when there is none)."""
        return point if self.constraint is None else self.constraint.project(self.noise_map, point)
