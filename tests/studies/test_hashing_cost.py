"""Fingerprint hashing: memoised per live tensors (sound under in-place changes), and the cost script's
instrumentation counts every call and restores the functions."""

from __future__ import annotations

import gc

import torch
from ddrs_app import compare, runs, training
from ddrs_app.data import load_dataset, subset
from ddrs_app.training import _HASHES, dataset_hash

from benchmarks.studies import hashing_cost


def test_dataset_hash_is_memoised_per_live_tensors_and_sees_in_place_changes():
    data = subset(load_dataset("toy2d", "test"), 3, 7)
    first = dataset_hash(data)
    assert dataset_hash(data) == first
    old = data.X[0, 0].item()
    data.X[0, 0] += 1.0  # in place: the version counter moves, the hash is recomputed
    changed = dataset_hash(data)
    assert changed != first
    data.X[0, 0] = old
    assert dataset_hash(data) == first
    copy = subset(load_dataset("toy2d", "test"), 3, 7)  # other tensors, same content: same digest
    assert dataset_hash(copy) == first
    size = len(_HASHES)
    del data
    gc.collect()
    assert len(_HASHES) < size  # entries go with their tensors


def test_instrumentation_counts_hash_calls_and_restores_the_functions():
    real = (training.dataset_hash, training.model_hash, runs.dataset_hash, compare.model_hash)
    with hashing_cost.instrumented() as (hashing, loads):
        training.load_or_train  # noqa: B018  (untouched)
        runs.dataset_hash(subset(load_dataset("toy2d", "test"), 50, 3))
        compare.model_hash(torch.nn.Linear(2, 2))
        training.load_dataset("toy2d", "train")
    assert hashing.calls == 2 and hashing.seconds > 0
    assert loads.calls == 1
    assert (training.dataset_hash, training.model_hash, runs.dataset_hash, compare.model_hash) == real
    assert training.load_dataset is load_dataset
