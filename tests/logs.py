"""Certification logs made in memory for the tests of the analysis scripts."""

from __future__ import annotations

import numpy as np

import certify


def log_of(idx, radius, proxy, correct) -> certify.Log:
    """A ``certify.Log`` with the columns the analyses read: idx, correct, radius (l2) and proxy_radius."""
    return certify.Log(
        {
            "idx": np.asarray(idx),
            "correct": np.asarray(correct),
            "radius": np.asarray(radius, dtype=float),
            "proxy_radius": np.asarray(proxy, dtype=float),
        }
    )
