"""Base classifiers with smoothed decision boundaries known in closed form (shared by the tests)."""

from __future__ import annotations

import numpy as np
import torch


class HalfSpace(torch.nn.Module):
    """Logits (-z, z) * scale with z = w.x - b: class 0 iff w.x <= b (float64).

    Under Gaussian noise of covariance S^2, P(class 0) = Phi((b - w.x) / ||S w||): the smoothed
    boundary is the same plane for every noise kind (and for isotropic mixtures)."""

    def __init__(self, w, b, scale=1e6):
        super().__init__()
        self.register_buffer("w", torch.as_tensor(np.asarray(w, dtype=np.float64)))
        self.b = float(b)
        self.scale = scale

    def forward(self, x):
        z = x.reshape(x.shape[0], -1) @ self.w - self.b
        return torch.stack([-z, z], dim=1) * self.scale


def tiny_budget(**changes):
    """A ``ddrs compare`` budget small enough for a test (5 toy2d inputs, a few ascent steps); ``changes`` override."""
    from ddrs_app.compare import Budget

    small = dict(
        n0=50, max_inputs=5, every=40, ddrs=dict(iterations=5, samples=16), ancer=dict(iterations=5, samples=16)
    )
    return Budget(**(small | changes))


def separable_linear_images() -> tuple[torch.nn.Module, torch.Tensor]:
    """A 3-class linear model on 1x8x8 images whose sensitivity is a separable (row x column) profile, and three
    inputs near its boundary: the structured-RDDRS tests' toy (separable by construction, so it tests the machinery,
    not which structure fits images)."""
    rows, cols = torch.linspace(0.05, 1.0, 8), torch.linspace(1.0, 0.05, 8)
    profile = (rows[:, None] * cols[None, :]).reshape(-1)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
    with torch.no_grad():
        model[1].weight.copy_(torch.stack([profile, -profile, 0 * profile]))
        model[1].bias.copy_(torch.tensor([0.0, 0.0, -0.3]))
    direction = 0.4 * profile / profile.norm()
    x = torch.stack([direction, direction, -direction]).reshape(3, 1, 8, 8)
    x = x + 0.01 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    return model.eval(), x


class Ellipse(torch.nn.Module):
    """Class 0 inside the ellipsoid ||diag(1/a) R^T x|| < 1 (robust along the long axes)."""

    def __init__(self, axes, rotation=None, scale=30.0):
        super().__init__()
        axes = torch.as_tensor(axes, dtype=torch.float64)
        R = torch.eye(len(axes), dtype=torch.float64) if rotation is None else torch.as_tensor(rotation)
        self.register_buffer("A", R / axes)  # x -> diag(1/a) R^T x as x @ (R / a)
        self.scale = scale

    def forward(self, x):
        q = (x.reshape(x.shape[0], -1) @ self.A).pow(2).sum(1)
        s = (q - 1.0) * self.scale
        return torch.stack([-s, s], dim=1)
