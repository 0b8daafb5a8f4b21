"""``benchmarks.studies.structured_logs``: the table's numbers are the logs' own, on the structured logs' inputs."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.studies import structured_logs
from tests.logs import log_of


def test_summary_on_the_common_inputs():
    grid_idx = [0, 100, 200, 300]
    logs = {
        "rs": log_of(grid_idx, [0.3, 0.3, 0.0, 0.9], [0.3, 0.3, 0.0, 0.9], [1, 1, 0, 1]),
        "ddrs": log_of(grid_idx, [0.4, 0.3, 0.0, 0.9], [0.4, 0.3, 0.0, 0.9], [1, 1, 0, 1]),
        "full": log_of(grid_idx, [0.5, 0.4, 0.0, 0.9], [1.0, 2.0, 0.0, 9.0], [1, 1, 0, 1]),
        "kronecker": log_of([100, 0], [0.4, 0.5], [1.5, 1.5], [1, 1]),
    }
    idx = np.asarray(logs["kronecker"]["idx"])
    logs = {k: structured_logs.restricted(v, idx) for k, v in logs.items()}
    assert logs["full"]["proxy_radius"].tolist() == [2.0, 1.0]  # the structured log's order
    rows = {r["method"]: r for r in structured_logs.summarise(logs)}
    assert rows["kronecker"]["proxy_acr"] == 1.5 and rows["full"]["proxy_acr"] == 1.5
    assert rows["kronecker"]["vs_full_ratio"] == pytest.approx(1.0)
    assert rows["kronecker"]["l2@0.5"] == 0.5 and rows["rs"]["l2@0.5"] == 0.0
    assert rows["kronecker"]["vs_rs_worst_diff"] >= 0.0
    with pytest.raises(SystemExit, match="lacks inputs"):
        structured_logs.restricted(logs["rs"], np.asarray([999]))
