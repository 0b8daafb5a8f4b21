"""The CIFAR- and ImageNet-shaped photo-crop data sets: shapes, labels, ranges, reproducibility, disjoint splits,
and models that take them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ddrs_app import data
from ddrs_app.data import PHOTO_SETS, PHOTOS, load_dataset
from ddrs_app.models import PooledCNN, SmallCNN, make_model


@pytest.mark.parametrize("name", ["photos-32", "photos-224"])
def test_each_split_has_the_stated_shape_balanced_labels_and_pixels_in_the_unit_interval(name):
    side, counts = PHOTO_SETS[name]
    for split in ("train", "test"):
        ds = load_dataset(name, split)
        assert ds.X.shape == (counts[split], 3, side, side) and ds.X.dtype == torch.float32
        assert ds.input_shape == (3, side, side) and ds.num_classes == len(PHOTOS) == 10
        assert torch.bincount(ds.y, minlength=10).tolist() == [counts[split] // 10] * 10
        assert float(ds.X.min()) >= 0.0 and float(ds.X.max()) <= 1.0
        assert float(ds.X.std()) > 0.05  # real images, not constants
    again = load_dataset(name, "test")
    assert torch.equal(again.X, load_dataset(name, "test").X)  # seeded: the same crops every time


def test_train_and_test_crops_come_from_disjoint_parts_of_each_photo(monkeypatch):
    """Photos painted black left of 70 % of their width and white right of it: every train crop is black, every
    test crop white."""
    painted = []
    for p in data._photos():
        m = np.zeros_like(p)
        m[:, int(0.7 * p.shape[1]) :, :] = 255
        painted.append(m)
    monkeypatch.setattr(data, "_photos", lambda: tuple(painted))
    train, _ = data._photo_crops("photos-32", "train")
    test, _ = data._photo_crops("photos-32", "test")
    assert float(train.max()) == 0.0 and float(test.min()) == 1.0


def test_the_models_take_the_shapes():
    assert isinstance(make_model("photos-32", 10, (3, 32, 32)), SmallCNN)
    model = make_model("photos-224", 10, (3, 224, 224))
    assert isinstance(model, PooledCNN)
    assert model(torch.rand(2, 3, 224, 224)).shape == (2, 10)
