"""The result of CERTIFY as plain data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .region import Ellipsoid

ABSTAIN = -1


@dataclass
class Certificate:
    """A certificate for one input.

    ``prediction`` is the smoothed classifier's class or ``ABSTAIN`` (-1); ``p_lower`` the lower
    confidence bound used; ``radius`` the radius in the noise's own norm (the region is
    ``{x + delta : ||S^{-1} delta|| <= radius}``, ``S`` the noise scale); ``l2_radius`` the largest
    inscribed l2 ball; ``proxy_radius`` the l2 ball of equal volume (ANCER's proxy).
    ``extras`` holds method-specific data, e.g. the MoG paper's max-sigma number under
    ``paper_radius`` with ``paper_radius_is_certificate`` saying whether it is sound.
    """

    prediction: int
    p_lower: float
    radius: float
    l2_radius: float
    proxy_radius: float
    region: Ellipsoid | None
    n0: int = 0
    n: int = 0
    alpha: float = 0.0
    noise: str = ""
    min_sigma: float = 0.0
    gm_sigma: float = 0.0
    seconds: float = 0.0
    extras: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:  # short: the region (d x d scale) and extras are not printed
        if self.abstained:
            return f"Certificate(abstain, p_lower={self.p_lower:.4g}, noise={self.noise!r})"
        return (
            f"Certificate(prediction={self.prediction}, radius={self.radius:.4g}, l2_radius={self.l2_radius:.4g}, "
            f"proxy_radius={self.proxy_radius:.4g}, p_lower={self.p_lower:.4g}, noise={self.noise!r})"
        )

    @property
    def samples(self) -> int:
        """Samples drawn for this certificate, n0 included (sequential mode stops early)."""
        return int(self.extras.get("samples", self.n0 + self.n))

    @property
    def decided(self) -> tuple | None:
        """Sequential mode: per asked radius True (certified), False (not robust there), None (undecided)."""
        return self.extras.get("decided")

    @property
    def abstained(self) -> bool:
        return self.prediction == ABSTAIN

    def contains(self, delta) -> bool:
        """True iff ``x + delta`` lies in the certified region (always False after abstaining)."""
        if self.region is None or self.abstained:
            return False
        if hasattr(delta, "detach"):
            delta = delta.detach().cpu().numpy()
        return bool(self.region.contains_delta(np.asarray(delta, dtype=np.float64)))

    def log_row(self) -> dict[str, Any]:
        """Our log columns (after Cohen's), see ``certify.log``."""
        row = {
            "l2_radius": self.l2_radius,
            "proxy_radius": self.proxy_radius,
            "p_lower": self.p_lower,
            "noise": self.noise,
            "min_sigma": self.min_sigma,
            "gm_sigma": self.gm_sigma,
        }
        if "paper_radius" in self.extras:
            row["paper_radius"] = self.extras["paper_radius"]
        return row

    @classmethod
    def abstain(cls, **kwargs) -> Certificate:
        return cls(
            prediction=ABSTAIN,
            p_lower=kwargs.pop("p_lower", 0.0),
            radius=0.0,
            l2_radius=0.0,
            proxy_radius=0.0,
            region=None,
            **kwargs,
        )
