"""Memory-based certification: a deployable classifier whose certificates hold for itself.

Why.  A certificate computed with noise chosen for the input x (sigma_x, Theta_x, C_x) is a statement
about the classifier smoothed with that one noise, g_x.  The classifier one deploys picks a different
noise at every point, so two inputs can receive overlapping certified regions with different
predictions, and then at least one certificate is false for the deployed classifier (DDRS Sec. 3.5,
ANCER; Sukenik et al. 2022).  ``Memory`` repairs this for balls, axis-aligned ellipsoids and
ellipsoids of any orientation (RDDRS), with an exact intersection test (``certify.pairs``, ``certify.intersection``).

The deployed classifier.  ``Memory`` keeps, in query order, every answered input x_i with its answer
k_i and region R_i (an ``Ellipsoid``, possibly of radius 0).  A new query x with its own fresh
certificate (prediction c, region R = {x + delta : ||S^{-1} delta|| <= r}) is answered as follows:

1. *Inside*: if x lies in a stored region R_j with k_j != c (k_j a class), the answer is forced.
   ``policy="adopt"`` (default, DDRS): answer k_j with the region
   ``{x + delta : ||S_j^{-1} delta|| <= r_j - ||S_j^{-1}(x - x_j)||}`` (R_j's shape about x; it lies
   inside R_j by the triangle inequality, so it is certified by R_j's certificate); if several such
   regions qualify, the one with the largest inscribed l2 ball.  ``policy="abstain"`` (ANCER
   lineage): abstain.  If x lies in regions of two different classes (only possible within the
   numerical tolerance) the answer is to abstain under either policy.
   Why adopt is the default: R_j certifies that the deployed classifier answers k_j *everywhere* on
   R_j; abstaining at x in R_j breaks that statement (it then only holds in the weaker form "never
   another class"), while adopting keeps every stored certificate literally true, makes the
   classifier deterministic on repeated queries, and is the rule DDRS describes.  "abstain" is the
   conservative choice when one would rather not answer with a class the fresh smoothing disputes.
2. *Shrink*: otherwise, if R intersects stored regions of other classes (and, with
   ``abstentions_constrain=True``, contains stored abstained inputs), R's radius is scaled down,
   keeping its centre and shape, to the largest r' <= r at which R is certified disjoint from every
   one of them (per conflict a bisection on r' with the exact test, answering from below; r' is the
   minimum).  "Disjoint" always comes with a separating direction whose support-function gap is
   checked against a rigorous float64 rounding bound (``certify.intersection``).  If nothing is
   left (r' = 0) the answer is to abstain.
3. *Keep*: otherwise the certificate is unchanged.

The answer is then stored, except answers that abstain *because* x lies in a stored region (they
are determined by that region and storing them could only contradict it).  Abstentions are stored
as points (radius-0 regions) when ``abstentions_constrain`` is True (default), so later regions must
avoid them; with False they are ignored (the behaviour of DDRS's and RANCER's scripts).

Invariants after every step (``check_invariants``): no two stored regions with different classes
intersect, and no stored input lies in a stored region of another class (abstentions count as a
class of their own when they are stored).  Consequently, once R_i is stored, every later query in R_i
is answered k_i (``adopt``; ``abstain``: k_i or abstention), and with ``abstentions_constrain`` no
earlier query in R_i was answered differently either.

What is (and is not) guaranteed.
* The classifier is *stateful and order dependent*: its answers and regions depend on the order of
  the queries; a certified accuracy computed by ``apply_memory_to_log`` is for the log's order.  It
  is not a property of any stateless g.
* Constancy on stored regions holds by construction (given the invariants, exact up to ``rtol``).
  What the Monte Carlo certificates add is that on R_i these answers coincide with those of the
  fixed-noise smoothed classifier g_{x_i}: "g_{x_i} predicts k_i on all of R_i" holds with
  probability >= 1 - alpha_i for each i.  The probability that *some* stored certificate is wrong
  grows with the memory: by the union bound it is <= sum_i alpha_i, i.e. M * alpha for M stored
  certificates at level alpha.  To keep the overall failure probability <= alpha_total, certify each
  input at ``per_certificate_alpha(alpha_total, M)`` = alpha_total / M when M is known in advance,
  or at ``alpha_schedule(alpha_total, i)`` = 6 alpha_total / (pi^2 i^2) for the i-th query of an
  open-ended stream (sum over i = alpha_total).  ``memory_failure_bound(alpha, M)`` gives min(1,
  M alpha).  (Empirically DDRS/ANCER report that conflicts essentially never happen in high
  dimension; the memory is what makes the claim checkable.)
* Cost: one vectorised bounding-ball screen over all stored centres per query (O(M d)), the exact
  test only on the survivors (O(d) for ball/diagonal pairs, O(d^2) against a full ellipsoid with its
  cached eigendecomposition, one d x d ``eigh`` for two full ellipsoids of different orientation).
  Stored regions are kept by reference: they are immutable (read-only data owned by the
  region), so no copies of full scale matrices are needed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .certificate import ABSTAIN, Certificate
from .intersection import DEFAULT_RTOL
from .log import Log, LogWriter, read_log
from .pairs import ellipsoids_intersect, max_disjoint_radius
from .region import Ellipsoid, Region

KEPT, SHRUNK, ADOPTED, ABSTAINED = "kept", "shrunk", "adopted", "abstained"
POLICIES = ("adopt", "abstain")
_PROJECT_AFTER = 256  # stored centres before the projection screen is built
_PROJECT_DIM = 32


# ---------------------------------------------------------------------------- alpha budget
def memory_failure_bound(alpha: float, memory_size: int) -> float:
    """Union bound on P(some of ``memory_size`` certificates at level ``alpha`` is wrong)."""
    return float(min(1.0, alpha * memory_size))


def per_certificate_alpha(alpha_total: float, memory_size: int) -> float:
    """Per-certificate alpha so that all ``memory_size`` stored certificates hold jointly with
    probability >= 1 - alpha_total (Bonferroni: alpha_total / memory_size)."""
    if memory_size < 1:
        raise ValueError("memory_size must be >= 1")
    return alpha_total / memory_size


def alpha_schedule(alpha_total: float, i: int) -> float:
    """Alpha for the i-th query (1-based) of an open-ended stream: 6 alpha_total / (pi^2 i^2),
    which sums to alpha_total over all i."""
    if i < 1:
        raise ValueError("i is 1-based")
    return 6.0 * alpha_total / (math.pi**2 * i * i)


# ---------------------------------------------------------------------------- results
@dataclass
class MemoryResult:
    """The memory's answer to one query: the corrected certificate and what memory did.

    ``action`` is ``kept``, ``shrunk``, ``adopted`` or ``abstained`` (``abstained`` only when memory
    caused it; an input whose own certificate abstains and that memory leaves alone is ``kept``);
    ``reason`` the idx of the stored inputs responsible; ``stored`` whether it entered the memory."""

    idx: int
    certificate: Certificate
    original: Certificate
    action: str
    reason: tuple = ()
    stored: bool = True

    @property
    def changed(self) -> bool:
        return self.action != KEPT


@dataclass
class _Entry:
    idx: int
    prediction: int
    region: Region


class Memory:
    """Stateful memory-based certifier (see the module docstring for the rules and guarantee).

    ``policy``: ``"adopt"`` (default) or ``"abstain"`` for queries inside another class's region.
    ``abstentions_constrain``: store abstentions as points that later regions must avoid.
    ``rtol``: relative tolerance of every geometric decision, always resolved towards "conflict".
    """

    def __init__(self, policy: str = "adopt", abstentions_constrain: bool = True, rtol: float = DEFAULT_RTOL):
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
        self.policy = policy
        self.abstentions_constrain = bool(abstentions_constrain)
        self.rtol = float(rtol)
        self.entries: list[_Entry] = []
        self._centers = np.zeros((0, 0))
        self._outer = np.zeros(0)
        self._pred = np.zeros(0, dtype=np.int64)
        self._cn2 = np.zeros(0)
        self._n = 0
        self._basis: np.ndarray | None = None  # projection screen (built once enough centres are stored)
        self._proj: np.ndarray | None = None

    def __len__(self) -> int:
        return self._n

    # ------------------------------------------------------------------ storage
    def _append(self, idx: int, prediction: int, region: Region) -> None:
        d = region.dim
        if self._n == 0 and self._centers.shape[1] != d:
            self._centers = np.zeros((16, d))
            self._outer = np.zeros(16)
            self._pred = np.zeros(16, dtype=np.int64)
            self._cn2 = np.zeros(16)
        if d != self._centers.shape[1]:
            raise ValueError(f"dimension {d} differs from the memory's {self._centers.shape[1]}")
        if self._n == len(self._outer):
            cap = 2 * self._n
            self._centers = np.concatenate([self._centers, np.zeros((cap - self._n, d))])
            self._outer = np.concatenate([self._outer, np.zeros(cap - self._n)])
            self._pred = np.concatenate([self._pred, np.zeros(cap - self._n, dtype=np.int64)])
            self._cn2 = np.concatenate([self._cn2, np.zeros(cap - self._n)])
            if self._proj is not None:
                self._proj = np.concatenate([self._proj, np.zeros((cap - self._n, _PROJECT_DIM))])
        self._centers[self._n] = region.center
        self._outer[self._n] = region.outer_radius
        self._cn2[self._n] = float(region.center @ region.center)
        if self._proj is not None:
            self._proj[self._n] = self._basis @ region.center
        self._max_outer = max(getattr(self, "_max_outer", 0.0), region.outer_radius)
        self._pred[self._n] = prediction
        self._n += 1
        self.entries.append(_Entry(int(idx), int(prediction), region))

    def _distances(self, x: np.ndarray, reach2: float = np.inf) -> np.ndarray:
        """Lower bounds of the squared distances from x to the stored centres (screens built on
        them never drop a candidate).  Two stages: distances after an orthonormal projection onto
        the top principal directions of the first stored centres (a projection only shortens
        distances), then exact distances (one BLAS product) for the rows that survive a generous
        threshold; the others keep their projected lower bound."""
        if x.shape[0] != self._centers.shape[1]:
            raise ValueError(f"input has {x.shape[0]} entries, the memory {self._centers.shape[1]}")
        n = self._n
        xn2 = float(x @ x)
        if self._basis is None and n >= _PROJECT_AFTER and x.shape[0] > 2 * _PROJECT_DIM:
            c = self._centers[:n]
            _, _, vt = np.linalg.svd(c - c.mean(axis=0), full_matrices=False)
            self._basis = np.ascontiguousarray(vt[:_PROJECT_DIM])
            self._proj = np.zeros((len(self._outer), _PROJECT_DIM))
            self._proj[:n] = c @ self._basis.T
        if self._basis is None or self._proj is None:
            rows = np.arange(n)
            d2 = np.empty(n)
        else:
            diff = self._proj[:n] - self._basis @ x
            d2 = np.einsum("ij,ij->i", diff, diff) * (1.0 - 1e-9) - 1e-300
            rows = np.nonzero(d2 <= reach2)[0]
        c = self._centers[rows]
        exact = self._cn2[rows] - 2.0 * (c @ x) + xn2
        d2[rows] = exact - 1e-10 * (self._cn2[rows] + xn2) - 1e-300
        return d2

    def _max_outer_or0(self) -> float:
        return getattr(self, "_max_outer", 0.0)

    def _near(self, x: np.ndarray, reach: float, d2: np.ndarray | None = None) -> np.ndarray:
        """Indices j whose bounding ball (outer_j) comes within ``reach`` of x (vectorised screen)."""
        if self._n == 0:
            return np.zeros(0, dtype=np.int64)
        if d2 is None:
            d2 = self._distances(x)
        bound = (self._outer[: self._n] + reach) * (1.0 + self.rtol) + 1e-12
        return np.nonzero(d2 <= bound * bound)[0]

    # ------------------------------------------------------------------ queries
    def lookup(self, x) -> tuple[int | None, tuple]:
        """The class forced at ``x`` by stored regions (None if none; ABSTAIN if two classes) and the
        idx of the stored inputs whose regions contain x."""
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        reach = self._max_outer_or0() * (1 + self.rtol) + 1e-12
        inside = self._inside(x, self._distances(x, reach * reach) if self._n else None)
        classes = {self.entries[j].prediction for j in inside}
        if not classes:
            return None, ()
        return (classes.pop() if len(classes) == 1 else ABSTAIN), tuple(self.entries[j].idx for j in inside)

    def _inside(self, x: np.ndarray, d2: np.ndarray | None = None) -> list[int]:
        out = []
        for j in self._near(x, 0.0, d2):
            e = self.entries[j]
            if e.prediction == ABSTAIN:
                continue
            # boundary counts as inside; the band (rtol / 4) is narrower than the shrink margin
            # (stored points sit at norm > r sqrt(1 + rtol)) so the two decisions never disagree.
            if e.region.norm(x - e.region.center) <= e.region.radius * (1.0 + 0.25 * self.rtol):
                out.append(int(j))
        return out

    def add(self, certificate: Certificate, x=None, idx: int | None = None) -> MemoryResult:
        """Answer one query online: ``certificate`` is the input's own fresh certificate, ``x`` the
        input (needed only when the certificate has no region), ``idx`` its name (default: the
        query number).  Returns the corrected certificate and stores the answer."""
        idx = len(self.entries) if idx is None else int(idx)
        if not isinstance(certificate, Certificate):
            raise TypeError(f"certificate must be a certify.Certificate, got {type(certificate).__name__}")
        region = certificate.region
        if region is not None and not isinstance(region, (Ellipsoid, Region)):  # Region: certify.region's interface
            raise TypeError(
                f"certificate.region must be a certify.Ellipsoid or a structured region (certify.structured), "
                f"got {type(region).__name__}"
            )
        dim = self._centers.shape[1] if self._n else None
        if region is not None and dim is not None and region.dim != dim:
            raise ValueError(f"certificate.region has dimension {region.dim}, the memory's inputs {dim}")
        if x is not None:
            x = np.array(x, dtype=np.float64).reshape(-1)  # a copy: the memory owns what it stores
            if not np.all(np.isfinite(x)):
                raise ValueError("x contains NaN or infinite entries")
            want = region.dim if region is not None else dim
            if want is not None and x.shape[0] != want:
                raise ValueError(
                    f"x has {x.shape[0]} entries but the "
                    f"{'certificate.region' if region is not None else 'memory'} has dimension {want}"
                )
        if region is not None:
            x = region.center
        elif x is None:
            raise ValueError("x is required for a certificate without a region")
        own = int(certificate.prediction)
        if own != ABSTAIN and region is None:
            region = Ellipsoid(x, 1.0, 0.0)

        reach = (self._max_outer_or0() + (region.outer_radius if region is not None else 0.0)) * (1 + self.rtol)
        d2 = self._distances(x, (reach + 1e-12) ** 2) if self._n else None
        # 1. inside a stored region of another class
        inside = [j for j in self._inside(x, d2) if self.entries[j].prediction != own]
        if inside:
            classes = {self.entries[j].prediction for j in inside}
            reason = tuple(self.entries[j].idx for j in inside)
            if self.policy == "abstain" or len(classes) > 1:
                new = _abstained(certificate, "inside")
                return MemoryResult(idx, new, certificate, ABSTAINED, reason, stored=False)
            best = None
            for j in inside:
                e = self.entries[j].region
                r = max(0.0, e.radius - float(e.norm(x - e.center)))
                adopted = e.recentred(x, r)
                if best is None or adopted.l2_radius > best[1].l2_radius:
                    best = (j, adopted)
            assert best is not None  # inside is not empty
            j, adopted = best
            new = replace(
                certificate,
                prediction=self.entries[j].prediction,
                radius=adopted.radius,
                l2_radius=adopted.l2_radius,
                proxy_radius=adopted.proxy_radius,
                region=adopted,
                memory_action=ADOPTED,
                memory_reason=reason,
                memory_source=self.entries[j].idx,
            )
            self._append(idx, new.prediction, adopted)
            return MemoryResult(idx, new, certificate, ADOPTED, reason)

        if own == ABSTAIN:
            if self.abstentions_constrain:
                self._append(idx, ABSTAIN, Ellipsoid(x, 1.0, 0.0))
            return MemoryResult(idx, certificate, certificate, KEPT, (), stored=self.abstentions_constrain)

        # 2. conflicts of the new region with stored regions of other classes
        assert region is not None  # set above for every prediction but ABSTAIN
        radius = region.radius
        conflicts = []
        for j in self._near(x, region.outer_radius, d2):
            e = self.entries[j]
            if e.prediction == own or (e.prediction == ABSTAIN and not self.abstentions_constrain):
                continue
            if radius > 0:  # one spectrum per pair: the full radius is returned iff proved disjoint
                r = max_disjoint_radius(region.with_radius(radius), e.region, self.rtol)
                if r < radius:
                    conflicts.append(int(j))
                    radius = r
        if conflicts:
            # a stored region of radius 0 touching x would leave nothing: re-check from below
            reason = tuple(self.entries[j].idx for j in conflicts)
            if radius <= 0.0:
                new = replace(_abstained(certificate, "shrunk to nothing"), memory_reason=reason)
                if self.abstentions_constrain:
                    self._append(idx, ABSTAIN, Ellipsoid(x, 1.0, 0.0))
                return MemoryResult(idx, new, certificate, ABSTAINED, reason, stored=self.abstentions_constrain)
            shrunk = region.with_radius(radius)
            factor = radius / region.radius
            new = replace(
                certificate,
                radius=certificate.radius * factor,
                l2_radius=shrunk.l2_radius,
                proxy_radius=shrunk.proxy_radius,
                region=shrunk,
                memory_action=SHRUNK,
                memory_reason=reason,
            )
            self._append(idx, own, shrunk)
            return MemoryResult(idx, new, certificate, SHRUNK, reason)

        # 3. keep
        self._append(idx, own, region)
        return MemoryResult(idx, certificate, certificate, KEPT, ())

    def extend(self, certificates: Iterable[Certificate]) -> list[MemoryResult]:
        """``add`` each certificate in order (each must carry a region or be skipped as abstention)."""
        return [self.add(c) for c in certificates]

    # ------------------------------------------------------------------ checks
    def violations(self) -> list[tuple[int, int, str]]:
        """All pairs breaking the invariants, as (idx_i, idx_j, what); empty when sound.  O(M^2)
        with the bounding screen; meant for tests and audits."""
        bad = []
        for a in range(self._n):
            ea = self.entries[a]
            for b in self._near(ea.region.center, ea.region.outer_radius):
                if b <= a:
                    continue
                eb = self.entries[b]
                if ea.prediction == eb.prediction:
                    continue
                for p, q in ((ea, eb), (eb, ea)):
                    if (
                        q.prediction != ABSTAIN
                        and q.region.radius > 0
                        and q.region.norm(p.region.center - q.region.center) <= q.region.radius
                    ):
                        bad.append((p.idx, q.idx, "input inside region of another class"))
                if ABSTAIN not in (ea.prediction, eb.prediction) and ellipsoids_intersect(
                    ea.region, eb.region, rtol=-self.rtol
                ):
                    bad.append((ea.idx, eb.idx, "regions of different classes intersect"))
        return bad

    def check_invariants(self) -> None:
        bad = self.violations()
        if bad:
            raise AssertionError(f"memory invariants violated: {bad[:5]}")


def _abstained(certificate: Certificate, why: str) -> Certificate:
    return replace(
        certificate,
        prediction=ABSTAIN,
        radius=0.0,
        l2_radius=0.0,
        proxy_radius=0.0,
        region=None,
        memory_action=ABSTAINED,
        memory_why=why,
    )


# ---------------------------------------------------------------------------- logs
MEMORY_COLUMNS = ("memory_action", "memory_reason")


@dataclass
class MemoryLogResult:
    """Output of ``apply_memory_to_log``: the corrected log, how many rows memory changed (also per
    action) and the per-row results."""

    log: Log
    n_changed: int
    counts: dict[str, int]
    results: list[MemoryResult] = field(repr=False)
    path: str = ""


def _as_rows(log) -> tuple[list[dict[str, Any]], list[str]]:
    if isinstance(log, (str, os.PathLike)):
        log = read_log(log)
    if isinstance(log, Log):
        return log.rows(), list(log.columns)
    rows = [dict(r) for r in log]
    return rows, (list(rows[0]) if rows else [])


def _as_certificate(record, x=None) -> Certificate:
    """A ``Certificate`` from a Certificate or a ``(prediction, Ellipsoid | None)`` record."""
    if isinstance(record, Certificate):
        return record
    if isinstance(record, Ellipsoid):
        raise TypeError("give (prediction, Ellipsoid) records or Certificates, not a bare Ellipsoid")
    prediction, region = record
    prediction = int(prediction)
    if prediction == ABSTAIN:
        return Certificate.abstain()
    if region is None:
        if x is None:
            raise ValueError("a non-abstaining record without a region needs its input")
        region = Ellipsoid(np.asarray(x, dtype=np.float64), 1.0, 0.0)
    return Certificate(
        prediction=prediction,
        p_lower=0.0,
        radius=region.radius,
        l2_radius=region.l2_radius,
        proxy_radius=region.proxy_radius,
        region=region,
    )


def apply_memory_to_log(
    log,
    certificates,
    out_path: str | os.PathLike | None = None,
    *,
    inputs: Mapping[int, Any] | Sequence | None = None,
    policy: str = "adopt",
    abstentions_constrain: bool = True,
    rtol: float = DEFAULT_RTOL,
    check: bool = True,
) -> MemoryLogResult:
    """Post-process a finished certification log with the memory, in the log's row order.

    ``log``: a ``Log``, a path, or a sequence of row dicts (Cohen's columns first).
    ``certificates``: per row, a ``Certificate`` or a ``(prediction, Ellipsoid | None)`` record;
    either a mapping idx -> record or a sequence aligned with the rows.  The log alone has no centres
    or shapes, which is why they are needed.  ``inputs`` (mapping idx -> x or aligned sequence)
    supplies the inputs of abstained rows so they can constrain later regions (without them,
    abstained rows are not stored).  ``check``: raise if a record's prediction differs from the row's
    ``predict`` or its l2 radius from the row's ``radius`` (catches misaligned inputs).

    The corrected rows update ``predict``, ``correct``, ``radius`` (= l2 radius, our log convention)
    and, when present, ``l2_radius`` and ``proxy_radius``; unchanged rows keep their values.  Two
    columns are appended: ``memory_action`` (kept / shrunk / adopted / abstained) and
    ``memory_reason`` (comma-separated idx of the stored inputs responsible, ``-`` if none).
    ``out_path`` writes the corrected log (tab-separated, via ``LogWriter``).  Returns the corrected
    ``Log``, ``n_changed`` (zero is a valid answer) and per-action counts.
    """
    rows, columns = _as_rows(log)
    if not rows:
        raise ValueError("the log has no rows")
    memory = Memory(policy=policy, abstentions_constrain=abstentions_constrain, rtol=rtol)

    def pick(source, i, idx):
        if source is None:
            return None
        if isinstance(source, Mapping):
            return source.get(idx)
        return source[i]

    if not isinstance(certificates, Mapping) and len(certificates) != len(rows):
        raise ValueError(f"{len(certificates)} certificates for {len(rows)} log rows")
    results, out_rows = [], []
    for i, row in enumerate(rows):
        idx = int(row["idx"])
        record = pick(certificates, i, idx)
        if record is None:
            raise KeyError(f"no certificate for idx {idx}")
        x = pick(inputs, i, idx)
        cert = _as_certificate(record, x)
        if check:
            if int(cert.prediction) != int(row["predict"]):
                raise ValueError(f"idx {idx}: certificate predicts {cert.prediction}, log says {row['predict']}")
            if cert.prediction != ABSTAIN and cert.region is not None:
                logged = float(row["radius"])
                if abs(logged - cert.l2_radius) > 1e-4 * max(1.0, abs(logged)):
                    raise ValueError(f"idx {idx}: certificate l2 radius {cert.l2_radius} vs log {logged}")
        if cert.region is None and x is None:
            if cert.prediction != ABSTAIN:
                raise ValueError(f"idx {idx}: certificate without region and no input")
            res = MemoryResult(idx, cert, cert, KEPT, (), stored=False)  # cannot be stored without x
        else:
            res = memory.add(cert, x=x, idx=idx)
        results.append(res)
        new_row = dict(row)
        if res.changed:
            c = res.certificate
            new_row["predict"] = int(c.prediction)
            if "label" in new_row:
                new_row["correct"] = int(c.prediction == int(row["label"]))
            new_row["radius"] = c.l2_radius
            if "l2_radius" in new_row:
                new_row["l2_radius"] = c.l2_radius
            if "proxy_radius" in new_row:
                new_row["proxy_radius"] = c.proxy_radius
        new_row["memory_action"] = res.action
        new_row["memory_reason"] = ",".join(str(r) for r in res.reason) if res.reason else "-"
        out_rows.append(new_row)

    out_columns = [c for c in columns if c not in MEMORY_COLUMNS] + list(MEMORY_COLUMNS)
    int_columns = {"idx", "label", "predict", "correct"}
    table = {}
    for col in out_columns:
        values = [r.get(col) for r in out_rows]
        if col in MEMORY_COLUMNS or any(isinstance(v, str) for v in values):
            table[col] = np.array(values, dtype=object)
        else:
            table[col] = np.array(values, dtype=np.float64)
    counts = {a: sum(r.action == a for r in results) for a in (KEPT, SHRUNK, ADOPTED, ABSTAINED)}
    n_changed = len(results) - counts[KEPT]
    path = ""
    if out_path is not None:
        path = os.fspath(out_path)
        with LogWriter(path, out_columns, resume=False) as writer:
            for r in out_rows:
                writer.write({c: (int(r[c]) if c in int_columns else r[c]) for c in out_columns})
    return MemoryLogResult(Log(table, path), n_changed, counts, results, path)
