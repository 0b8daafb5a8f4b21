"""Logs: Cohen et al.'s published tables reproduced byte for byte, resumable writer, accuracy columns."""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
import pytest
import torch

from certify import (
    COHEN_COLUMNS,
    IsotropicGaussian,
    LogWriter,
    Smooth,
    abstention_rate,
    average_certified_radius,
    certified_accuracy,
    cohen_markdown_table,
    read_log,
)
from certify.log import format_seconds, parse_time

# Cohen et al.'s published logs and tables, copied unchanged into the repository (tests/data/README.md).
SHARED = Path(__file__).resolve().parents[1] / "data" / "cohen2019"


def _cohen_logs(dataset, arch, sigmas):
    return {
        f"&sigma; = {s}": read_log(SHARED / "certify" / dataset / arch / f"noise_{s}" / "test" / f"sigma_{s}")
        for s in sigmas
    }


def test_vary_noise_cifar10_table_exact():
    logs = _cohen_logs("cifar10", "resnet110", ["0.12", "0.25", "0.50", "1.00"])
    radii = [0.25 * i for i in range(1, 7)]
    expected = (SHARED / "analysis" / "markdown" / "vary_noise_cifar10").read_bytes()
    assert cohen_markdown_table(logs, radii).encode("utf-8") == expected


def test_vary_noise_imagenet_table_exact():
    logs = _cohen_logs("imagenet", "resnet50", ["0.25", "0.50", "1.00"])
    radii = [0.5 * i for i in range(1, 7)]
    expected = (SHARED / "analysis" / "markdown" / "vary_noise_imagenet").read_bytes()
    assert cohen_markdown_table(logs, radii).encode("utf-8") == expected


def test_cohen_logs_read_as_is():
    logs = _cohen_logs("imagenet", "resnet50", ["0.25", "0.50", "1.00"])
    assert [len(v) for v in logs.values()] == [427, 500, 500]  # README: sigma = 0.25 has 427 rows
    cifar = _cohen_logs("cifar10", "resnet110", ["0.12", "0.25", "0.50", "1.00"])
    log = cifar["&sigma; = 0.12"]
    assert len(log) == 500
    assert list(log.columns) == list(COHEN_COLUMNS)
    assert log["idx"][:2].tolist() == [0.0, 20.0]
    assert log["time"][0] == pytest.approx(13.736080)
    # published numbers (anchors-rs section 1): certified accuracy at r = 0 and abstention rate
    assert certified_accuracy(log, [0.0])[0] == pytest.approx(0.81, abs=0.005)
    assert abstention_rate(log) == pytest.approx(0.038, abs=0.0005)
    assert average_certified_radius(cifar["&sigma; = 0.50"]) == pytest.approx(0.538, abs=0.0005)


def test_parse_and_format_time():
    assert parse_time("0:00:13.736080") == pytest.approx(13.73608)
    assert parse_time("13.5") == 13.5
    assert parse_time("1 day, 2:03:04.5") == pytest.approx(86400 + 7200 + 184.5)
    for s in [0.0, 13.73608, 3725.25, 90061.000001]:
        assert format_seconds(s) == str(datetime.timedelta(seconds=s))
        assert parse_time(format_seconds(s)) == pytest.approx(s, abs=1e-6)


COLUMNS = list(COHEN_COLUMNS) + ["proxy_radius", "p_lower", "noise"]


def _row(i):
    return {
        "idx": i,
        "label": i % 3,
        "predict": -1 if i % 4 == 3 else i % 3,
        "radius": 0.1 * i,
        "correct": int(i % 4 != 3),
        "time": 1.5 + i,
        "proxy_radius": 0.25 * i,
        "p_lower": 0.5 + 0.01 * i,
        "noise": "diagonal",
    }


def test_log_writer_resume_after_crash_equals_uninterrupted(tmp_path):
    full = tmp_path / "full.tsv"
    with LogWriter(full, COLUMNS) as w:
        for i in range(10):
            w.write(_row(i))

    crashed = tmp_path / "sub" / "crashed.tsv"
    w = LogWriter(crashed, COLUMNS)
    for i in range(5):
        w.write(_row(i))
    w.close()
    whole_line = full.read_text().split("\n")[6]  # header + rows 0..4, then row 5
    with open(crashed, "a", encoding="utf-8") as f:
        f.write(whole_line[: len(whole_line) // 2])  # the crash leaves half of row 5

    with LogWriter(crashed, COLUMNS) as w:
        assert w.done == {0, 1, 2, 3, 4}
        for i in range(10):
            if i not in w.done:
                w.write(_row(i))
    assert crashed.read_bytes() == full.read_bytes()

    # resuming a finished log does nothing
    with LogWriter(crashed, COLUMNS) as w:
        assert w.done == set(range(10))
    assert crashed.read_bytes() == full.read_bytes()


def test_log_writer_refuses_other_header_and_missing_columns(tmp_path):
    path = tmp_path / "log.tsv"
    with LogWriter(path, COLUMNS) as w:
        w.write(_row(0))
        with pytest.raises(ValueError, match="missing"):
            w.write({"idx": 1})
    with pytest.raises(ValueError, match="header"):
        LogWriter(path, list(COHEN_COLUMNS))
    with LogWriter(path, list(COHEN_COLUMNS), resume=False) as w:  # explicit restart
        assert w.done == set()
    assert path.read_text() == "\t".join(COHEN_COLUMNS) + "\n"


def test_round_trip_and_proxy_radius_accuracy(tmp_path):
    path = tmp_path / "log.tsv"
    with LogWriter(path, COLUMNS) as w:
        for i in range(8):
            w.write(_row(i))
    log = read_log(path)
    assert len(log) == 8
    np.testing.assert_allclose(log["radius"], [0.1 * i for i in range(8)])
    np.testing.assert_allclose(log["time"], [1.5 + i for i in range(8)])
    assert list(log["noise"]) == ["diagonal"] * 8
    # correct rows: i in {0,1,2,4,5,6}; radius 0.1 i, proxy 0.25 i
    radii = [0.0, 0.3, 0.5, 1.0, 1.3, 2.0]
    np.testing.assert_allclose(certified_accuracy(log, radii), [6, 3, 2, 0, 0, 0] / np.float64(8))
    np.testing.assert_allclose(
        certified_accuracy(log, radii, column="proxy_radius"), [6, 4, 4, 3, 1, 0] / np.float64(8)
    )
    assert average_certified_radius(log, "proxy_radius") == pytest.approx(0.25 * 18 / 8)
    assert abstention_rate(log) == pytest.approx(2 / 8)


def test_certificate_rows_through_the_writer(tmp_path):
    class Half(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("w", torch.tensor([1.0, 0.0], dtype=torch.float64))

        def forward(self, x):
            z = x @ self.w - 0.4
            return torch.stack([-z, z], 1) * 1e6

    smooth = Smooth(Half(), IsotropicGaussian(0.25), 2)
    path = tmp_path / "certs.tsv"
    certs = []
    cols = list(COHEN_COLUMNS) + ["l2_radius", "proxy_radius", "p_lower", "noise", "min_sigma", "gm_sigma"]
    with LogWriter(path, cols) as w:
        for i, x0 in enumerate([0.0, 0.4, 0.8]):
            cert = smooth.certify(
                torch.tensor([x0, 0.0], dtype=torch.float64), 50, 2000, 0.01, generator=torch.Generator().manual_seed(i)
            )
            certs.append(cert)
            w.write(
                {
                    "idx": i,
                    "label": 0,
                    "predict": cert.prediction,
                    "radius": cert.l2_radius,
                    "correct": cert.prediction == 0,
                    "time": cert.seconds,
                    **cert.log_row(),
                }
            )
    log = read_log(path)
    assert log["predict"].tolist() == [0, -1, 1]
    assert log["correct"].tolist() == [1, 0, 0]
    np.testing.assert_allclose(log["radius"], [c.l2_radius for c in certs], rtol=1e-5)
    assert list(log["noise"]) == ["isotropic"] * 3
