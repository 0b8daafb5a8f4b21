"""The sample and iteration budgets of ``ddrs compare``, one per built-in data set (documented in the README)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Budget:
    """Sample and iteration budget of a comparison (documented per data set in the README)."""

    n0: int = 100
    n: int = 10_000
    alpha: float = 0.001
    batch_size: int = 10_000
    max_inputs: int = 40
    every: int = 1
    ddrs: dict = field(default_factory=lambda: dict(iterations=150, samples=64))
    ancer: dict = field(default_factory=lambda: dict(iterations=100, samples=64))
    rddrs: dict = field(default_factory=dict)  # RDDRS() defaults: cold start at sigma_x* I, 36 Adam steps x 1,000
    opt_batch: int = 64


BUDGETS = {
    "toy2d": Budget(max_inputs=60, every=10),
    "digits": Budget(max_inputs=50, every=9),
    "fashion-mnist": Budget(
        n=10_000,
        batch_size=2_000,
        max_inputs=100,  # every 100th test image (the 20-image run's numbers: results README)
        every=100,
        opt_batch=20,
        ddrs=dict(iterations=100, samples=64),
        ancer=dict(iterations=60, samples=64),
        rddrs={},  # the default RDDRS() (cold start, Riemannian Adam): ahead of ANCER on Fashion-MNIST (results README)
    ),
    "mnist": Budget(
        n=10_000,
        batch_size=2_000,
        max_inputs=20,
        every=500,
        opt_batch=20,
        ddrs=dict(iterations=100, samples=64),
        ancer=dict(iterations=60, samples=64),
        rddrs={},  # the default RDDRS() (cold start, Riemannian Adam): ahead of ANCER on Fashion-MNIST (results README)
    ),
    # the photo crops: CIFAR-10-shaped (every 10th of 1,000 test crops) and ImageNet-shaped (every 10th of 100)
    "photos-32": Budget(n=10_000, batch_size=2_000, max_inputs=100, every=10, opt_batch=20,
                        ddrs=dict(iterations=100, samples=64), ancer=dict(iterations=60, samples=64), rddrs={}),
    "photos-224": Budget(n=10_000, batch_size=500, max_inputs=10, every=10, opt_batch=5,
                         ddrs=dict(iterations=100, samples=64), ancer=dict(iterations=60, samples=64), rddrs={}),
}  # fmt: skip


__all__ = ["BUDGETS", "Budget"]
