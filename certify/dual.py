"""Dual randomized smoothing: input-dependent noise from a finite dictionary, sound without memory.

Source: Sun, Mao and Vechev, "Dual Randomized Smoothing: Beyond Global Noise Variance", ICLR 2026
(arXiv 2512.01782): RS stays valid with an input-dependent noise that is locally constant around each
input (their Theorems 4.1 and 4.2), and a noise selector smoothed by its own RS makes it so.

Setting. ``dictionary`` = (N_0, ..., N_{K-1}), K >= 1 noises of ``certify.noise`` (isotropic,
diagonal, full, mixtures of Gaussians; any mix; a true mixture's E_k below is the l2 ball of
``certify.radius.mixture_radius``). F_k is the base classifier of entry k (one network for every entry,
or one per entry, e.g. each trained under its own noise), s the base selector (scores over the K
entries), e ~ N(0, sigma_e^2 I) the selector's own noise. The smoothed selector and the smoothed
classifiers are

    h(x)   = argmax_k P(s(x + e) = k)                      (ties: smallest k)
    g_k(x) = argmax_c P(F_k(x + eps) = c),  eps ~ N_k       (Cohen et al. 2019)

and the deployed, memory-free classifier is G(x) = g_{h(x)}(x): a deterministic function of its input
only, whatever was queried before.

Theorem (the certificate ``DualSmooth.certify`` returns). Let the selector's CERTIFY (``certify.Smooth``
with noise sigma_e) return index k and a lower bound p_sel_lower > 1/2 at level alpha_sel, and let the
classifier's CERTIFY with noise N_k, run on samples drawn independently of the selector's, return class
c and the region E_k = {x + delta : ||S_k^-1 delta|| <= r_cls} (S_k the scale of N_k; ANCER's theorem,
Cohen's ball for isotropic N_k) at level alpha_cls. Let R_sel = sigma_e Phi^-1(p_sel_lower). Then with
probability >= 1 - alpha_sel - alpha_cls (over the Monte Carlo draws of both):

    G(x + delta) = c   for every delta with ||delta||_2 <= R_sel and x + delta in E_k.

Proof. (1) With probability >= 1 - alpha_sel the selector's bound holds, P(s(x + e) = k) >= p_sel_lower
> 1/2; then Cohen et al.'s Theorem 1 applied to s gives h(x + delta) = k for ||delta|| < R_sel. (2)
Conditionally on k (a function of the selector's draws only), the classifier's draws are fresh, so
with probability >= 1 - alpha_cls its bound holds and g_k(x + delta) = c on E_k. (3) On both events,
for delta in the ball and in E_k, G(x + delta) = g_{h(x + delta)}(x + delta) = g_k(x + delta) = c.
Union bound over the two failures. (The boundary sphere ||delta|| = R_sel is a null set; like every
region of this library, ``contains`` includes it.)

Conditions, and what does not bind:

* The selector's noise must be isotropic Gaussian: its certificate is then a ball, whatever the
  dictionary holds. Anisotropic selector noise would certify an ellipsoid by the same argument (ANCER),
  but it is not implemented here and is refused (``TypeError``).
* No relation between sigma_e and the dictionary entries is needed for soundness, for isotropic or
  anisotropic entries alike: the selector's ball and the classifier's ellipsoid are two certificates
  about two different smoothed functions (h and g_k), each valid on its own region, and the proof uses
  only that both hold at once on their intersection. How sigma_e compares with the entries' scales
  decides only which of the two regions is smaller (utility), not whether the combined region is
  valid. In particular the classifier's ellipsoid E_k may reach far beyond the ball along a long axis
  of an anisotropic N_k: that part is cut off by the intersection, which is exactly where the selection
  could change and the memory-free construction fails (Sukenik et al., ICML 2022).
* The selector must see the same input as the classifier, in the same coordinates: step (3) evaluates
  h and g at the same point x + delta, and the ball's radius is measured in the classifier's input
  space. A selector that reads a transformed input t(x) is the selector s o t on x (smooth that
  composite, noise added to x); a selector smoothed in another space would need the Lipschitz
  constant of the map to carry its radius over, and is not supported.
  The selection is made once per query, on the query itself (h(x'), then g_{h(x')} at x'); choosing a
  noise per noisy sample would smooth another classifier, which this theorem does not cover.
* The two Monte Carlo stages must use disjoint draws (here: consecutive draws of one generator), and
  alpha_sel + alpha_cls is the failure probability of the combined certificate for this one input.
* The selector's abstention (p_sel_lower <= 1/2) or the classifier's makes the whole certificate
  abstain.
* A one-entry dictionary is allowed (the selector then scores one entry, h is constant and the ball is
  only conservative: ``certify.Smooth`` with that noise certifies the same classifier without it).

Region reported. The combined region B(x, R_sel) cap E_k is not an ellipsoid. ``DualCertificate``
reports its exact membership test (``contains``), its largest inscribed l2 ball (``l2_radius =
min(R_sel, classifier l2 radius)``) and, as a proxy, the *capped ellipsoid* ``region``: E_k's own
ellipsoid (same centre and principal axes) with every semi-axis a_i replaced by min(a_i, R_sel). It lies
inside E_k (each semi-axis no longer, same axes) and inside the ball (no semi-axis longer than R_sel),
so inside the combined region; ``proxy_radius`` is its volume-equivalent ball radius
(prod_i min(a_i, R_sel))^(1/d) (ANCER's proxy, of the capped ellipsoid), a lower bound on the combined
region's volume-equivalent radius. When no semi-axis passes R_sel the region is E_k itself, structured or not;
a structured E_k above d = 4096 whose semi-axes pass R_sel (no dense form to cap) is reported by its inscribed
ball (``inner_region``): sound, its proxy then its l2 radius.

Sequential decisions (``l2_radii``): certified at r iff both stages certify r and neither abstains in the end;
not robust if either stage shows r out of reach; else undecided (a stage that did not run decides nothing).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .bounds import check_alpha
from .certificate import ABSTAIN, Certificate
from .noise import GaussianNoise, IsotropicGaussian
from .region import Ellipsoid, Region
from .sampling import LogitsError, check_count
from .sequential import check_radii
from .smooth import Smooth
from .structured import DENSE_LIMIT

__all__ = ["DualCertificate", "DualSmooth", "capped_ellipsoid", "inner_region", "own_norm_radii"]


def capped_ellipsoid(region: Ellipsoid, cap: float) -> Ellipsoid:
    """``region`` with every semi-axis a_i replaced by min(a_i, cap): same centre and principal axes.

    It lies inside ``region`` and inside the ball of radius ``cap`` about the same centre (the inner
    ellipsoid of ``certify.dual``'s combined region). Returned with the same radius as ``region``, the
    scale capped at cap / radius."""
    cap = float(cap)
    if not (np.isfinite(cap) and cap > 0):
        raise ValueError(f"cap must be positive and finite, got {cap}")
    r = region.radius
    if r <= 0:
        raise ValueError("a region of radius 0 has no capped ellipsoid")
    limit = cap / r  # semi-axis r * s <= cap  <=>  s <= cap / r
    while r * limit > cap:  # rounding: no capped semi-axis may pass the cap, not by one ulp
        limit = float(np.nextafter(limit, 0.0))
    if region.kind == "ball":
        return Ellipsoid(region.center, min(float(region.scale), limit), r)
    if region.kind == "diagonal":
        return Ellipsoid(region.center, np.minimum(np.asarray(region.scale), limit), r)
    vals, vecs = region.eigh
    assert vecs is not None  # a full scale always has its eigenvectors
    capped = np.minimum(vals, limit)
    scale = (vecs * capped) @ vecs.T
    scale = 0.5 * (scale + scale.T)
    return Ellipsoid(region.center, scale, r, _eig=(capped, vecs))


def inner_region(region: Region, cap: float) -> Region:
    """A region inside both ``region`` and the ball of radius ``cap`` about its centre (``DualCertificate.region``):
    ``region`` itself when no semi-axis passes the cap (its ``outer_radius``, exact or an upper bound, is at most
    ``cap``); else ``capped_ellipsoid`` of its dense form; above d = ``certify.structured.DENSE_LIMIT``, where a
    structured region has no dense form, its inscribed ball of radius min(cap, ``region.l2_radius``) (sound; its
    proxy is then that l2 radius, giving up the volume the cap would have kept)."""
    if region.outer_radius <= cap:
        return region
    if isinstance(region, Ellipsoid):
        return capped_ellipsoid(region, cap)
    if region.dim <= DENSE_LIMIT:
        return capped_ellipsoid(region.to_ellipsoid(), cap)
    return Ellipsoid(region.center, 1.0, min(float(cap), region.l2_radius))


def _sampling(generator: torch.Generator | None = None, batch_size: int = 1000) -> tuple[torch.Generator | None, int]:
    """``predict``'s sampling options with ``certify``'s defaults (an unknown name is a TypeError)."""
    return generator, batch_size


def per_entry(
    classifier: Callable | Sequence[Callable], entries: int, name: str = "classifier"
) -> tuple[Callable, ...]:
    """One callable for every dictionary entry, or a sequence of ``entries`` callables, as one per entry (checked;
    the errors name the argument ``name``)."""
    if callable(classifier):
        return (classifier,) * entries
    if isinstance(classifier, (str, bytes)) or not isinstance(classifier, Sequence):
        raise TypeError(f"{name} must be callable or a sequence of callables, got {type(classifier).__name__}")
    found = list(classifier)
    if len(found) != entries:
        raise ValueError(f"{name} must give one callable per dictionary entry ({entries}), got {len(found)}")
    for i, c in enumerate(found):
        if not callable(c):
            raise TypeError(f"{name}[{i}] must be callable, got {type(c).__name__}")
    return tuple(found)


def own_norm_radii(noise: GaussianNoise, l2_radii: Sequence[float]) -> tuple[float, ...]:
    """The radii in ``noise``'s own norm ||S^-1 delta|| (what ``Smooth.certify(radii=)`` takes) whose regions
    contain the l2 balls of ``l2_radii``: l2 radii themselves for noise whose regions are l2 balls (isotropic,
    mixtures), r / min_sigma otherwise (an own-norm radius rho contains the l2 ball of rho * min_sigma,
    min_sigma a lower bound on S's smallest scale, ``scale_summary``)."""
    if noise.kind in ("isotropic", "mixture", "convolution"):
        return tuple(float(r) for r in l2_radii)
    smallest = float(noise.scale_summary()["min_sigma"])
    return tuple(float(r) / smallest for r in l2_radii)


def _both(selector: bool | None, classifier: bool | None) -> bool | None:
    """The combined sequential decision at one l2 radius: certified iff both stages certify it, not robust
    if either is not (the combined region is their intersection), else undecided."""
    if selector is False or classifier is False:
        return False
    if selector and classifier:
        return True
    return None


def _checked_stages(n_sel, alpha_sel, n, alpha, batch_size) -> tuple[int, float, int, float, int]:
    """The selector's and the classifier's sample counts and levels and the batch size, checked (the
    errors name ``DualSmooth``'s arguments)."""
    alpha_sel, alpha = check_alpha(alpha_sel, "alpha_sel"), check_alpha(alpha, "alpha")
    if not alpha_sel + alpha < 1:
        raise ValueError(
            f"alpha_sel + alpha is the certificate's failure probability and must be below 1, got {alpha_sel} + {alpha}"
        )
    return check_count(n_sel, "n_sel"), alpha_sel, check_count(n, "n"), alpha, check_count(batch_size, "batch_size")


@dataclass
class DualCertificate:
    """The result of ``DualSmooth.certify`` for one input (see ``certify.dual`` for the theorem).

    ``prediction``: the class c, or ``ABSTAIN`` when either stage abstained (``abstained_by`` says
    which: "selector" or "classifier"). ``selected``: the dictionary index k (``ABSTAIN`` if the
    selector abstained). ``selector``: the selector's own certificate (a ball of radius
    ``selector_radius`` = sigma_e Phi^-1(``selector_p_lower``)). ``classifier``: the classifier's
    certificate under dictionary[k] (None if the selector abstained). ``l2_radius``: min(R_sel,
    classifier l2 radius), the combined region's largest inscribed ball. ``region``: the capped
    ellipsoid (inside the combined region), ``proxy_radius`` its volume-equivalent radius. ``alpha``:
    alpha_sel + alpha_cls, the failure probability of the whole certificate.

    Sequential mode (``certify(l2_radii=...)``): ``radii`` the l2 radii asked and ``decided`` per radius True
    (both stages certified it), False (either stage showed it cannot) or None. ``p_lower``, ``noise``,
    ``min_sigma`` and ``gm_sigma`` are the classifier stage's (0 / "" without one), ``samples`` both stages'
    draws, as a log row reads a ``Certificate``."""

    prediction: int
    selected: int
    selector: Certificate
    classifier: Certificate | None
    selector_p_lower: float
    selector_radius: float
    l2_radius: float
    proxy_radius: float
    region: Region | None
    alpha: float
    abstained_by: str | None = None
    seconds: float = 0.0
    decided: tuple[bool | None, ...] | None = None
    radii: tuple[float, ...] | None = None
    paper_radius: float | None = None  # no mixture paper's number (a log row reads it)

    @property
    def abstained(self) -> bool:
        return self.prediction == ABSTAIN

    @property
    def samples(self) -> int:
        """Draws of both stages, their n0 included."""
        return self.selector.samples + (0 if self.classifier is None else self.classifier.samples)

    @property
    def p_lower(self) -> float:
        return 0.0 if self.classifier is None else self.classifier.p_lower

    @property
    def noise(self) -> str:
        return "" if self.classifier is None else self.classifier.noise

    @property
    def min_sigma(self) -> float:
        return 0.0 if self.classifier is None else self.classifier.min_sigma

    @property
    def gm_sigma(self) -> float:
        return 0.0 if self.classifier is None else self.classifier.gm_sigma

    def contains(self, delta) -> bool:
        """True iff ``x + delta`` lies in the combined region: ||delta||_2 <= R_sel and x + delta in the
        classifier's certified region (always False after abstaining)."""
        if self.abstained or self.classifier is None:
            return False
        if hasattr(delta, "detach"):
            delta = delta.detach().cpu().numpy()
        delta = np.asarray(delta, dtype=np.float64).reshape(-1)
        return bool(np.linalg.norm(delta) <= self.selector_radius and self.classifier.contains(delta))

    def __repr__(self) -> str:
        if self.abstained:
            return f"DualCertificate(abstain by {self.abstained_by}, selected={self.selected})"
        return (
            f"DualCertificate(prediction={self.prediction}, selected={self.selected}, "
            f"selector_radius={self.selector_radius:.4g}, l2_radius={self.l2_radius:.4g}, "
            f"proxy_radius={self.proxy_radius:.4g}, alpha={self.alpha:g})"
        )


class DualSmooth:
    """Dual randomized smoothing (Sun, Mao and Vechev, ICLR 2026): a smoothed selector picks one of a
    finite dictionary of noises, the classifier is smoothed with that noise.

    ``classifier``: the base classifier (logits over ``num_classes``), one callable for every entry or a
    sequence of ``len(dictionary)`` callables, entry k's classifier F_k (e.g. each trained under its own
    noise). ``selector``: the base selector
    (scores over ``len(dictionary)`` entries, on the same input as the classifier). ``dictionary``: a
    non-empty sequence of ``certify`` noises. ``selector_noise``: the selector's own
    ``IsotropicGaussian(sigma_e)``."""

    def __init__(
        self,
        classifier: Callable,
        selector: Callable,
        dictionary: Sequence[GaussianNoise],
        num_classes: int,
        selector_noise: GaussianNoise,
    ):
        if not callable(selector):
            raise TypeError(f"selector must be callable, got {type(selector).__name__}")
        if isinstance(dictionary, GaussianNoise) or not isinstance(dictionary, Sequence):
            raise TypeError(f"dictionary must be a sequence (list) of noise objects, got {type(dictionary).__name__}")
        entries = list(dictionary)
        if not entries:
            raise ValueError("dictionary must hold at least one noise (got an empty dictionary)")
        for i, entry in enumerate(entries):
            if not isinstance(entry, GaussianNoise):
                raise TypeError(f"dictionary[{i}] must be a certify noise object, got {type(entry).__name__}")
        if not isinstance(selector_noise, IsotropicGaussian):
            raise TypeError(
                "selector_noise must be IsotropicGaussian(sigma_e): the dual certificate uses the "
                "selector's l2 ball (Cohen et al. 2019); anisotropic selector noise is not supported, "
                f"got {type(selector_noise).__name__}"
            )
        self.num_classes = check_count(num_classes, "num_classes")
        self.classifiers: tuple[Callable, ...] = per_entry(classifier, len(entries))
        self.selector = selector
        self.dictionary: tuple[GaussianNoise, ...] = tuple(entries)
        self.selector_noise = selector_noise
        # the selector's smoothed vote: one "class" per dictionary entry
        self._selector_smooth = Smooth(selector, selector_noise, len(entries))

    def classifier_smooth(self, k: int) -> Smooth:
        """The fixed smoothed classifier g_k: the classifier with dictionary[k]."""
        return Smooth(self.classifiers[k], self.dictionary[k], self.num_classes)

    def certify(
        self,
        x: torch.Tensor,
        n0_sel: int,
        n_sel: int,
        alpha_sel: float,
        n0: int,
        n: int,
        alpha: float,
        generator: torch.Generator | None = None,
        batch_size: int = 1000,
        *,
        selector_radii: Sequence[float] | None = None,
        radii: Sequence[float] | None = None,
        l2_radii: Sequence[float] | None = None,
    ) -> DualCertificate:
        """Certify x: the selector's CERTIFY (n0_sel, n_sel, alpha_sel) picks k and its ball R_sel, then
        the classifier's CERTIFY with dictionary[k] (n0, n, alpha) on fresh draws from ``generator``.
        Wrong with probability <= alpha_sel + alpha (``certify.dual``'s theorem).

        Sequential mode (``certify.sequential``, through ``certify.Smooth``): with ``selector_radii``
        (l2) the selector's vote stops drawing once each asked ball radius is decided (n_sel is then its
        maximum; ``selector.decided`` / ``selector.samples`` report it); with ``radii`` (the noise's own
        norm for an anisotropic entry, as ``Smooth.certify``) the classifier's does. Each stage is still
        wrong with probability <= its alpha, so the theorem and its alpha_sel + alpha are unchanged. With
        ``l2_radii`` (instead of both) the two stages are sequential at the same l2 radii (the classifier's in
        its own norm, ``own_norm_radii``) and ``decided`` holds the combined decision per radius."""
        if l2_radii is not None:
            if selector_radii is not None or radii is not None:
                raise ValueError("l2_radii replaces selector_radii and radii: give either, not both")
            l2_radii = tuple(float(r) for r in check_radii(l2_radii))
            selector_radii = l2_radii
        n0_sel = check_count(n0_sel, "n0_sel")
        n0 = check_count(n0, "n0")
        n_sel, alpha_sel, n, alpha, batch_size = _checked_stages(n_sel, alpha_sel, n, alpha, batch_size)
        start = time.perf_counter()
        with self._selector_errors():
            sel = self._selector_smooth.certify(
                x, n0_sel, n_sel, alpha_sel, batch_size=batch_size, generator=generator, radii=selector_radii
            )
        cls: Certificate | None = None
        inner: Region | None = None
        if not sel.abstained:
            if l2_radii is not None:
                radii = own_norm_radii(self.dictionary[sel.prediction], l2_radii)
            cls = self.classifier_smooth(sel.prediction).certify(
                x, n0, n, alpha, batch_size=batch_size, generator=generator, radii=radii
            )
            if not cls.abstained and cls.region is not None:
                inner = inner_region(cls.region, sel.l2_radius)
        r_sel = 0.0 if sel.abstained else sel.l2_radius  # sigma_e Phi^-1(p_sel_lower): the selector's ball
        if cls is None or inner is None:  # the selector abstained (no classifier stage), or the classifier
            prediction, l2_radius, abstained_by = ABSTAIN, 0.0, "selector" if cls is None else "classifier"
        else:
            prediction, l2_radius, abstained_by = cls.prediction, min(r_sel, cls.l2_radius), None
        decided = None
        if l2_radii is not None:
            # a stage that did not run (or decided nothing) is undecided, not "not robust"; and no radius is
            # certified by a certificate that abstains, whatever an earlier look of one stage decided
            none: tuple[bool | None, ...] = (None,) * len(l2_radii)
            sel_decided = sel.decided or none
            cls_decided = none if cls is None or cls.decided is None else cls.decided
            decided = tuple(_both(a, b) for a, b in zip(sel_decided, cls_decided))
            if prediction == ABSTAIN:
                decided = tuple(None if v else v for v in decided)
        return DualCertificate(
            prediction=prediction,
            selected=sel.prediction,  # ABSTAIN when the selector abstained
            selector=sel,
            classifier=cls,
            selector_p_lower=sel.p_lower,
            selector_radius=r_sel,
            l2_radius=l2_radius,
            proxy_radius=0.0 if inner is None else inner.proxy_radius,
            region=inner,
            alpha=alpha_sel + alpha,
            abstained_by=abstained_by,
            seconds=time.perf_counter() - start,
            decided=decided,
            radii=l2_radii,
        )

    def select(
        self,
        x: torch.Tensor,
        n: int,
        alpha: float,
        batch_size: int = 1000,
        generator: torch.Generator | None = None,
    ) -> int:
        """Cohen's PREDICT on the selector: h(x) or ``ABSTAIN``, wrong with probability <= alpha."""
        with self._selector_errors():
            return self._selector_smooth.predict(x, n, alpha, batch_size=batch_size, generator=generator)

    @contextlib.contextmanager
    def _selector_errors(self) -> Iterator[None]:
        # the selector's bad output is reported as the selector's, with the width it must have
        try:
            yield
        except LogitsError as err:
            raise LogitsError(
                f"selector: {err} (the selector must return one score per dictionary entry, "
                f"len(dictionary) = {len(self.dictionary)})"
            ) from err

    def predict(self, x: torch.Tensor, n_sel: int, alpha_sel: float, n: int, alpha: float, **sampling: Any) -> int:
        """The deployed classifier G(x) = g_{h(x)}(x): the selector's PREDICT (n_sel, alpha_sel), then
        the classifier's PREDICT with the selected noise (n, alpha). Returns G(x) or ``ABSTAIN``; wrong
        (a class other than G(x)) with probability <= alpha_sel + alpha. ``sampling``: ``generator``
        (torch.Generator or None, default None) and ``batch_size`` (int, default 1000), as in ``certify``."""
        generator, batch_size = _sampling(**sampling)
        n_sel, alpha_sel, n, alpha, batch_size = _checked_stages(n_sel, alpha_sel, n, alpha, batch_size)
        k = self.select(x, n_sel, alpha_sel, batch_size, generator)
        if k == ABSTAIN:
            return ABSTAIN
        return self.classifier_smooth(k).predict(x, n, alpha, batch_size=batch_size, generator=generator)
