"""Base classifiers for the benchmarks (float32, return logits).

* ``toy2d``, ``digits``: a small MLP (flatten, two hidden ReLU layers).
* 28x28 images (``fashion-mnist``, ``mnist``): the RDDRS paper's small CNN: conv 16 channels 5x5,
  ReLU, conv 32 channels 5x5, ReLU, 2x2 max-pool, linear to the classes. (The paper applies a
  softmax at the end; here the model returns logits, which have the same argmax.)

Each model has an ``arch`` string attribute that identifies its architecture in training-cache
keys.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .data import DATASETS, check_name

MLP_HIDDEN = {"toy2d": (64, 64), "digits": (256, 256)}


class MLP(nn.Module):
    def __init__(self, input_shape, num_classes: int, hidden=(256, 256)):
        super().__init__()
        d = math.prod(input_shape)
        layers: list[nn.Module] = [nn.Flatten()]
        for h in hidden:
            layers += [nn.Linear(d, h), nn.ReLU()]
            d = h
        layers.append(nn.Linear(d, num_classes))
        self.net = nn.Sequential(*layers)
        self.arch = f"mlp-{math.prod(input_shape)}-{'-'.join(map(str, hidden))}-{num_classes}"

    def forward(self, x):
        return self.net(x)


class SmallCNN(nn.Module):
    """RDDRS's MNIST CNN: conv(16, 5x5) - ReLU - conv(32, 5x5) - ReLU - maxpool 2 - linear."""

    def __init__(self, input_shape=(1, 28, 28), num_classes: int = 10):
        super().__init__()
        c, h, w = input_shape
        self.conv1 = nn.Conv2d(c, 16, 5)
        self.conv2 = nn.Conv2d(16, 32, 5)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(32 * ((h - 8) // 2) * ((w - 8) // 2), num_classes)
        self.arch = f"smallcnn-{c}x{h}x{w}-16-32-{num_classes}"

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        x = self.pool(torch.relu(self.conv2(x)))
        return self.fc(x.flatten(1))


class PooledCNN(nn.Module):
    """For ImageNet-shaped inputs on CPUs: average pooling by ``pool`` (224 -> 32), then the small CNN. The noise
    and the certificates stay at the full input size; the network's cost is that of a 32x32 one."""

    def __init__(self, input_shape=(3, 224, 224), num_classes: int = 10, pool: int = 7):
        super().__init__()
        c, h, w = input_shape
        self.pool = nn.AvgPool2d(pool)
        self.cnn = SmallCNN((c, h // pool, w // pool), num_classes)
        self.arch = f"pooled{pool}-{self.cnn.arch}"

    def forward(self, x):
        return self.cnn(self.pool(x))


def make_model(dataset_name: str, num_classes: int, input_shape) -> nn.Module:
    """The benchmark's base classifier for ``dataset_name`` (one of ``ddrs_app.data.DATASETS``):
    the small CNN for 28x28 and 32x32 image data sets, the pooled one for 224x224, an MLP otherwise. float32, in
    train mode."""
    name = check_name(dataset_name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    input_shape = tuple(int(s) for s in input_shape)
    if name in ("fashion-mnist", "mnist"):
        if len(input_shape) != 3 or input_shape[1] < 10 or input_shape[2] < 10:
            raise ValueError(f"input_shape must be (channels, H, W) with H, W >= 10 for {name}, got {input_shape}")
        model = SmallCNN(input_shape, num_classes)
    elif name == "photos-32":
        model = SmallCNN(input_shape, num_classes)
    elif name == "photos-224":
        model = PooledCNN(input_shape, num_classes)
    else:
        model = MLP(input_shape, num_classes, MLP_HIDDEN[name])
    return model.float()


__all__ = ["DATASETS", "MLP", "PooledCNN", "SmallCNN", "make_model"]
