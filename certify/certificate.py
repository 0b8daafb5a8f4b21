"""The result of CERTIFY as plain data, and the certificate a lower bound gives (``certificate_from_bound``)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np

from .region import Region

if TYPE_CHECKING:
    from .noise import GaussianNoise

ABSTAIN = -1


@dataclass
class Certificate:
    """A certificate for one input.

    ``prediction`` is the smoothed classifier's class or ``ABSTAIN`` (-1); ``p_lower`` the lower
    confidence bound used; ``radius`` the radius in the noise's own norm (the region is
    ``{x + delta : ||S^{-1} delta|| <= radius}``, ``S`` the noise scale); ``l2_radius`` the largest
    inscribed l2 ball; ``proxy_radius`` the l2 ball of equal volume (ANCER's proxy).

    Method-specific fields (None where the method does not set them):

    * mixture of Gaussians (``certify.Smooth``): ``paper_radius``, the MoG paper's max-sigma number,
      with ``paper_radius_is_certificate`` saying whether it is sound (convolution: yes; a true
      mixture: no); ``component_p_lowers``, a true mixture's per-component lower bounds.
    * sequential mode (``certify.sequential``): ``decided``, per asked radius True (certified), False
      (not robust there) or None (undecided); ``radii``, the radii asked; ``looks``, the look it
      stopped at; ``decided_at``, per radius the samples (n0 included) after which it was decided.
    * the memory-based certifier (``certify.Memory``): ``memory_action`` (adopted / shrunk /
      abstained; None: the certificate left the memory unchanged), ``memory_reason`` (the stored
      inputs' idx that caused it), ``memory_source`` (adopted: the idx whose region was taken) and
      ``memory_why`` (abstained: "inside" or "shrunk to nothing").
    """

    prediction: int
    p_lower: float
    radius: float
    l2_radius: float
    proxy_radius: float
    region: Region | None
    n0: int = 0
    n: int = 0
    alpha: float = 0.0
    noise: str = ""
    min_sigma: float = 0.0
    gm_sigma: float = 0.0
    seconds: float = 0.0
    paper_radius: float | None = None
    paper_radius_is_certificate: bool | None = None
    component_p_lowers: tuple[float, ...] | None = None
    decided: tuple[bool | None, ...] | None = None
    radii: tuple[float, ...] | None = None
    looks: int | None = None
    decided_at: tuple[int, ...] | None = None
    memory_action: str | None = None
    memory_reason: tuple[int, ...] | None = None
    memory_source: int | None = None
    memory_why: str | None = None

    def __repr__(self) -> str:  # short: the region (d x d scale) and the method fields are not printed
        if self.abstained:
            return f"Certificate(abstain, p_lower={self.p_lower:.4g}, noise={self.noise!r})"
        return (
            f"Certificate(prediction={self.prediction}, radius={self.radius:.4g}, l2_radius={self.l2_radius:.4g}, "
            f"proxy_radius={self.proxy_radius:.4g}, p_lower={self.p_lower:.4g}, noise={self.noise!r})"
        )

    @property
    def samples(self) -> int:
        """Samples drawn for this certificate, n0 included (sequential mode stops early: n is then
        the number drawn after the selection)."""
        return int(self.n0 + self.n)

    @property
    def extras(self) -> dict[str, Any]:
        """Deprecated: the method-specific fields that are set, as the former free-form dict
        (plus ``samples`` in sequential mode). Read the fields instead."""
        warnings.warn(
            "Certificate.extras is deprecated; read the typed fields (paper_radius, decided, memory_action, ...)",
            DeprecationWarning,
            stacklevel=2,
        )
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name in METHOD_FIELDS}
        out = {k: v for k, v in out.items() if v is not None}
        if self.decided is not None:
            out["samples"] = self.samples
        return out

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
        if self.paper_radius is not None:
            row["paper_radius"] = self.paper_radius
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


#: The fields that only some methods set (None elsewhere); ``Certificate.extras`` lists them.
METHOD_FIELDS = (
    "paper_radius",
    "paper_radius_is_certificate",
    "component_p_lowers",
    "decided",
    "radii",
    "looks",
    "decided_at",
    "memory_action",
    "memory_reason",
    "memory_source",
    "memory_why",
)


def certificate_from_bound(
    noise: GaussianNoise,
    center: np.ndarray,
    label: int,
    p_lower: float,
    radius: float,
    *,
    n0: int,
    n: int,
    alpha: float,
    seconds: float = 0.0,
    **method_fields: Any,
) -> Certificate:
    """The certificate a lower bound ``p_lower`` on the probability of ``label`` gives under
    ``noise``: the region ``noise.region(center, radius)`` (``radius`` in the noise's own norm, e.g.
    ``certify.radius.gaussian_radius(p_lower)``), or abstention when radius <= 0. ``center`` is the
    flattened float64 input; ``method_fields`` are ``Certificate`` fields (``paper_radius``,
    ``decided``, ...). The noise's kind and its smallest and geometric-mean axes are recorded."""
    common: dict[str, Any] = dict(n0=n0, n=n, alpha=alpha, noise=noise.kind, seconds=seconds, **noise.scale_summary())
    if radius <= 0.0:
        return Certificate.abstain(p_lower=p_lower, **common, **method_fields)
    region = noise.region(center, radius)
    return Certificate(
        prediction=label,
        p_lower=p_lower,
        radius=radius,
        l2_radius=region.l2_radius,
        proxy_radius=region.proxy_radius,
        region=region,
        **common,
        **method_fields,
    )
