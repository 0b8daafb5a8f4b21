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
