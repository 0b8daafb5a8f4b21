"""Memory-based certification: invariants, constructed conflicts, log post-processing, speed."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_memory_intersection import dense_scale, ellipsoids, verified_disjoint

from certify.certificate import ABSTAIN, Certificate
from certify.log import LogWriter, read_log
from certify.memory import (
    ABSTAINED,
    ADOPTED,
    KEPT,
    SHRUNK,
    Memory,
    _as_certificate,
    alpha_schedule,
    apply_memory_to_log,
    memory_failure_bound,
    per_certificate_alpha,
)
from certify.region import Ellipsoid


def cert(k, region):
    """The certificate of class ``k`` with ``region`` (abstaining for ``ABSTAIN``): the memory's own
    reading of a ``(prediction, region)`` record."""
    return _as_certificate((k, region))


def ball(center, r, k):
    return cert(k, Ellipsoid(np.asarray(center, dtype=float), 1.0, r))


def check_sound(memory):
    """Independent pairwise check of the invariants over the stored entries."""
    es = memory.entries
    for i, a in enumerate(es):
        for b in es[i + 1 :]:
            if a.prediction == b.prediction:
                continue
            for p, q in ((a, b), (b, a)):
                if q.prediction != ABSTAIN and q.region.radius > 0:
                    assert q.region.norm(p.region.center - q.region.center) > q.region.radius, (
                        f"input {p.idx} lies in region {q.idx} of another class"
                    )
            if ABSTAIN not in (a.prediction, b.prediction) and a.region.radius > 0 and b.region.radius > 0:
                assert verified_disjoint(a.region, b.region), f"regions {a.idx}, {b.idx} intersect"


@st.composite
def sequences(draw):
    d = draw(st.integers(2, 4))
    n = draw(st.integers(2, 12))
    items = []
    for _ in range(n):
        e = draw(ellipsoids(d, thin=False, center_scale=0.7))
        k = draw(st.sampled_from([ABSTAIN, 0, 1, 2]))
        items.append((k, e))
    return items


@settings(max_examples=80)
@given(sequences(), st.sampled_from(["adopt", "abstain"]), st.booleans())
def test_invariants_after_any_sequence(items, policy, constrain):
    m = Memory(policy=policy, abstentions_constrain=constrain)
    for i, (k, e) in enumerate(items):
        c = cert(k, e)
        res = m.add(c, x=e.center, idx=i)
        new = res.certificate
        if res.action == KEPT:
            assert new is c
        elif res.action == SHRUNK:
            assert new.prediction == k and 0 < new.region.radius < e.radius
            assert np.array_equal(new.region.center, e.center) and new.region.scale is e.scale
            assert res.reason
        elif res.action == ADOPTED:
            assert policy == "adopt" and new.prediction != k and new.prediction != ABSTAIN
            src = next(s for s in m.entries if s.idx == new.memory_source)
            assert src.prediction == new.prediction
            assert src.region.contains_point(e.center) or src.region.norm(
                e.center - src.region.center
            ) <= src.region.radius * (1 + 1e-6)
            # the adopted region lies inside the source region (sampled boundary points)
            rng = np.random.default_rng(i)
            u = rng.normal(size=(64, e.dim))
            u /= np.linalg.norm(u, axis=1, keepdims=True)
            pts = new.region.center + new.region.radius * u @ dense_scale(new.region)
            assert np.all(src.region.norm(pts - src.region.center) <= src.region.radius * (1 + 1e-6))
        else:
            assert new.prediction == ABSTAIN and new.region is None and res.reason
        check_sound(m)
    m.check_invariants()
    # the deployed classifier answers each stored class everywhere in its region
    for entry in m.entries:
        if entry.prediction != ABSTAIN and entry.region.radius > 0:
            k, _ = m.lookup(entry.region.center)
            assert k == entry.prediction


def test_input_inside_another_class_region_adopt_and_abstain():
    for policy, expected in (("adopt", (ADOPTED, 0)), ("abstain", (ABSTAINED, ABSTAIN))):
        m = Memory(policy=policy)
        m.add(ball([0.0, 0.0], 2.0, 0), idx=10)
        res = m.add(ball([0.5, 0.0], 1.0, 1), idx=11)
        assert (res.action, res.certificate.prediction) == expected
        assert res.reason == (10,)
        if policy == "adopt":
            assert res.certificate.region.radius == pytest.approx(1.5)  # DDRS: R_j - d_j
            assert res.certificate.l2_radius == pytest.approx(1.5)
            assert res.stored and len(m) == 2
        else:
            assert not res.stored and len(m) == 1
        # an own abstention inside a stored region is answered by the region too
        res = m.add(Certificate.abstain(), x=np.array([-0.5, 0.0]), idx=12)
        assert res.certificate.prediction == expected[1]
        m.check_invariants()


def test_adopted_region_keeps_source_shape_for_rotated_ellipsoid():
    rot = np.array([[1.0, 1.0], [-1.0, 1.0]]) / math.sqrt(2)
    s = (rot * np.array([0.2, 2.0])) @ rot.T
    m = Memory()
    m.add(cert(3, Ellipsoid(np.zeros(2), s, 1.0)), idx=0)
    x = np.array([0.5, 0.5])  # along the long axis
    res = m.add(ball(x, 0.3, 4), idx=1)
    assert res.action == ADOPTED and res.certificate.prediction == 3
    stored = m.entries[0].region
    assert res.certificate.region.radius == pytest.approx(1.0 - stored.norm(x))
    assert res.certificate.region.kind == "full"


def test_two_overlapping_balls_and_ellipsoids_shrink_exactly():
    m = Memory()
    m.add(ball([0.0, 0.0], 1.0, 0), idx=0)
    res = m.add(ball([3.0, 0.0], 2.5, 1), idx=1)
    assert res.action == SHRUNK and res.reason == (0,)
    assert res.certificate.radius == pytest.approx(2.0, rel=1e-6) and res.certificate.radius <= 2.0
    # axis-aligned ellipsoid against a rotated one: shape kept, tangent radius
    rot = np.array([[1.0, 1.0], [-1.0, 1.0]]) / math.sqrt(2)
    s = (rot * np.array([0.5, 1.5])) @ rot.T
    m = Memory()
    m.add(cert(0, Ellipsoid(np.array([0.0, 5.0]), s, 1.0)), idx=0)
    new = Ellipsoid(np.array([0.0, 0.0]), np.array([1.0, 3.0]), 3.0)
    res = m.add(cert(1, new), idx=1)
    assert res.action == SHRUNK
    r = res.certificate.region.radius
    assert 0 < r < 3.0
    assert verified_disjoint(res.certificate.region, m.entries[0].region)
    assert not verified_disjoint(new.with_radius(r * 1.001), m.entries[0].region)
    assert res.certificate.l2_radius == pytest.approx(r * 1.0) and res.certificate.proxy_radius == pytest.approx(
        r * math.sqrt(3.0)
    )


def test_chain_of_three():
    m = Memory()
    a = m.add(ball([0.0], 1.0, 0), idx=0)
    b = m.add(ball([1.5], 1.0, 1), idx=1)  # overlaps a: shrunk to 0.5 -> [1.0, 2.0]
    c = m.add(ball([2.6], 1.0, 0), idx=2)  # overlaps b's shrunk region: shrunk to 0.6
    d = m.add(ball([1.9], 1.0, 2), idx=3)  # inside b's shrunk region: adopts 1
    assert a.action == KEPT
    assert b.action == SHRUNK and b.certificate.radius == pytest.approx(0.5, rel=1e-6)
    assert c.action == SHRUNK and c.reason == (1,) and c.certificate.radius == pytest.approx(0.6, rel=1e-6)
    assert d.action == ADOPTED and d.certificate.prediction == 1 and d.certificate.radius == pytest.approx(0.1)
    m.check_invariants()
    check_sound(m)


def test_abstentions_constrain_later_regions():
    m = Memory(abstentions_constrain=True)
    m.add(Certificate.abstain(), x=np.array([1.0, 0.0]), idx=0)
    res = m.add(ball([0.0, 0.0], 2.0, 1), idx=1)
    assert res.action == SHRUNK and res.certificate.radius == pytest.approx(1.0, rel=1e-6)
    assert res.certificate.radius < 1.0
    m2 = Memory(abstentions_constrain=False)
    m2.add(Certificate.abstain(), x=np.array([1.0, 0.0]), idx=0)
    assert m2.add(ball([0.0, 0.0], 2.0, 1), idx=1).action == KEPT
    # centre on a stored abstention: nothing is left
    res = m.add(ball([1.0, 0.0], 0.5, 2), idx=2)
    assert res.action == ABSTAINED and res.certificate.prediction == ABSTAIN


def test_same_class_overlaps_are_kept():
    m = Memory()
    m.add(ball([0.0, 0.0], 1.0, 0))
    assert m.add(ball([0.5, 0.0], 1.0, 0)).action == KEPT
    assert len(m) == 2


def test_alpha_budget():
    assert per_certificate_alpha(0.01, 1000) == pytest.approx(1e-5)
    assert memory_failure_bound(1e-3, 500) == pytest.approx(0.5)
    assert memory_failure_bound(1e-3, 5000) == 1.0
    total = sum(alpha_schedule(0.01, i) for i in range(1, 200000))
    assert total <= 0.01 and total == pytest.approx(0.01, rel=1e-4)
    with pytest.raises(ValueError):
        alpha_schedule(0.01, 0)


def _write_log(path, rows, cols):
    with LogWriter(path, cols, resume=False) as w:
        for r in rows:
            w.write(r)


def test_apply_memory_to_log(tmp_path):
    regions = [
        Ellipsoid(np.array([0.0, 0.0]), 1.0, 1.0),
        Ellipsoid(np.array([1.5, 0.0]), 1.0, 1.0),
        None,
        Ellipsoid(np.array([10.0, 0.0]), np.array([1.0, 2.0]), 1.0),
        Ellipsoid(np.array([0.2, 0.0]), 1.0, 0.5),
    ]
    preds = [0, 1, ABSTAIN, 2, 3]
    labels = [0, 1, 1, 2, 0]
    cols = ["idx", "label", "predict", "radius", "correct", "time", "l2_radius", "proxy_radius", "noise"]
    rows = []
    for i, (e, k, y) in enumerate(zip(regions, preds, labels)):
        rows.append(
            {
                "idx": 100 + i,
                "label": y,
                "predict": k,
                "radius": 0.0 if e is None else e.l2_radius,
                "correct": int(k == y),
                "time": 0.5,
                "l2_radius": 0.0 if e is None else e.l2_radius,
                "proxy_radius": 0.0 if e is None else e.proxy_radius,
                "noise": "iso",
            }
        )
    src = tmp_path / "log.tsv"
    _write_log(src, rows, cols)
    records = {100 + i: (k, e) for i, (e, k) in enumerate(zip(regions, preds))}
    out = tmp_path / "memory.tsv"
    result = apply_memory_to_log(src, records, out, inputs={102: np.array([5.0, 5.0])})
    assert result.n_changed == 2
    assert result.counts == {KEPT: 3, SHRUNK: 1, ADOPTED: 1, ABSTAINED: 0}
    back = read_log(out)
    assert list(back.columns)[:6] == ["idx", "label", "predict", "radius", "correct", "time"]
    assert list(back["memory_action"]) == [KEPT, SHRUNK, KEPT, KEPT, ADOPTED]
    assert list(back["memory_reason"]) == ["-", "100", "-", "-", "100"]
    assert back["radius"][1] == pytest.approx(0.5, rel=1e-5)
    assert back["predict"][4] == 0 and back["correct"][4] == 1  # adopted class 0 = label
    assert back["l2_radius"][4] == pytest.approx(0.8, rel=1e-5)
    assert list(back["noise"]) == ["iso"] * 5
    assert back["idx"].tolist() == [100, 101, 102, 103, 104]
    # no conflicts: zero is a valid answer; aligned sequences are accepted
    far = [Ellipsoid(np.array([10.0 * i, 0.0]), 1.0, 1.0) for i in range(3)]
    frows = [{"idx": i, "label": 0, "predict": i, "radius": 1.0, "correct": int(i == 0), "time": 0.1} for i in range(3)]
    res0 = apply_memory_to_log(frows, [cert(i, e) for i, e in enumerate(far)])
    assert res0.n_changed == 0 and list(res0.log["memory_action"]) == [KEPT] * 3
    # misaligned certificates are caught
    with pytest.raises(ValueError):
        apply_memory_to_log(frows, [cert((i + 1) % 3, e) for i, e in enumerate(far)])
    with pytest.raises(ValueError):  # right predictions, wrong regions
        apply_memory_to_log(frows, [cert(i, Ellipsoid(e.center, 1.0, 2.0)) for i, e in enumerate(far)])


def test_speed_selfcheck_mnist_scale():
    """2000 stored balls / diagonal ellipsoids at d = 784 plus 50 conflicting queries (not timed;
    kept well under a few seconds on a laptop core)."""
    rng = np.random.default_rng(0)
    d = 784
    basis = np.linalg.qr(rng.normal(size=(d, 20)))[0]
    m = Memory()
    for i in range(2000):
        c = basis @ rng.normal(size=20) * 3 + rng.normal(size=d) * 0.05
        scale = rng.uniform(0.1, 0.3) if i % 2 else rng.uniform(0.1, 0.3, d)
        m.add(cert(int(rng.integers(10)), Ellipsoid(c, scale, rng.uniform(0.5, 2))), idx=i)
    actions = []
    for i in range(50):
        c = m.entries[i * 7].region.center + rng.normal(size=d) * 0.01
        res = m.add(cert(int(rng.integers(10)), Ellipsoid(c, rng.uniform(0.1, 0.3, d), 1.0)), idx=2000 + i)
        actions.append(res.action)
        for j in range(len(m) - 1):  # the new region respects every stored region of another class
            e = m.entries[j]
            if res.stored and e.prediction != m.entries[-1].prediction and m.entries[-1].region.radius > 0:
                dist = np.linalg.norm(e.region.center - c)
                if dist <= e.region.outer_radius + m.entries[-1].region.outer_radius:
                    assert verified_disjoint(e.region, m.entries[-1].region)
    assert set(actions) <= {KEPT, SHRUNK, ADOPTED, ABSTAINED} and ADOPTED in actions
