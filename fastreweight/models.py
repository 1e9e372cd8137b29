"""Models for the trainer.  Every model ends in an ``nn.Linear`` head (``model.head``), whose input
is the penultimate feature vector FBR uses (SPEC §7); ``fastreweight.capture.find_head`` finds it.
Each also defines ``features_and_logits(x)`` -> (that input, the output): the forward of ``forward``
with the head's input returned alongside, which the trainer uses instead of a hook on the head
(``capture.split_forward``).

* ``MLP`` — flattens its input; hidden ReLU layers.
* ``SmallCNN`` — two conv blocks and a hidden linear layer, for small images.
* ``PreActResNet18`` and ``ResNet34`` — CIFAR-style (3×3 stem, no max-pool, 32×32 inputs).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch.nn as nn
import torch.nn.functional as F

__all__ = ["MLP", "SmallCNN", "PreActResNet18", "ResNet34", "build_model", "MODELS"]


class MLP(nn.Module):
    def __init__(self, in_features: int, num_classes: int, hidden: Sequence[int] = (256,)):
        super().__init__()
        layers: list[nn.Module] = []
        d = in_features
        for h in hidden:
            layers += [nn.Linear(d, h), nn.ReLU()]
            d = h
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(d, num_classes)

    def forward(self, x):
        return self.head(self.body(x.flatten(1)))

    def features_and_logits(self, x):
        f = self.body(x.flatten(1))
        return f, self.head(f)


class SmallCNN(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, image_size: int = 28, width: int = 32, hidden: int = 128):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(), nn.MaxPool2d(2),
        )
        s = image_size // 4
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(2 * width * s * s, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x):
        return self.head(self.fc(self.features(x)))

    def features_and_logits(self, x):
        f = self.fc(self.features(x))
        return f, self.head(f)


class _PreActBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.shortcut = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride, bias=False)

    def forward(self, x):
        out = F.relu(self.bn1(x))
        sc = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + sc


class PreActResNet18(nn.Module):
    """Pre-activation ResNet-18 for 32×32 inputs (He et al. 2016), as in the noisy-label literature."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        planes, layers, in_planes = (64, 128, 256, 512), [], 64
        for i, p in enumerate(planes):
            for j in range(2):
                layers.append(_PreActBlock(in_planes, p, 2 if (j == 0 and i > 0) else 1))
                in_planes = p
        self.layers = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(512)
        self.head = nn.Linear(512, num_classes)

    def forward(self, x):
        return self.features_and_logits(x)[1]

    def features_and_logits(self, x):
        out = F.relu(self.bn(self.layers(self.conv1(x))))
        f = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return f, self.head(f)


class _BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet34(nn.Module):
    """ResNet-34 for 32×32 inputs (3×3 stem, no max-pool; blocks 3/4/6/3), the model of SPEC §7."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        layers, in_planes = [], 64
        for i, (p, n) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3))):
            for j in range(n):
                layers.append(_BasicBlock(in_planes, p, 2 if (j == 0 and i > 0) else 1))
                in_planes = p
        self.layers = nn.Sequential(*layers)
        self.head = nn.Linear(512, num_classes)

    def forward(self, x):
        return self.features_and_logits(x)[1]

    def features_and_logits(self, x):
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        f = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return f, self.head(f)


MODELS = ("mlp", "cnn", "preact-resnet18", "resnet34")


def build_model(name: str, input_shape: Sequence[int], num_classes: int, **kw) -> nn.Module:
    """``name`` in ``MODELS``; ``input_shape`` without the batch dimension.

    Flat inputs are reshaped to square single-channel images for the CNN when they are square
    (e.g. 784 → 1×28×28); the ResNets need [C, H, W] inputs."""
    input_shape = tuple(int(s) for s in input_shape)
    if name == "mlp":
        return MLP(math.prod(input_shape), num_classes, **kw)
    if name == "cnn":
        if len(input_shape) == 1:
            side = int(round(math.sqrt(input_shape[0])))
            if side * side != input_shape[0]:
                raise ValueError(f"cnn needs image inputs; {input_shape[0]} features are not a square image")
            return nn.Sequential(nn.Unflatten(1, (1, side, side)), SmallCNN(1, num_classes, side, **kw))
        return SmallCNN(input_shape[0], num_classes, input_shape[-1], **kw)
    if name in ("preact-resnet18", "resnet34"):
        if len(input_shape) != 3:
            raise ValueError(f"{name} needs [C, H, W] image inputs, got {input_shape}")
        cls = PreActResNet18 if name == "preact-resnet18" else ResNet34
        return cls(num_classes, in_channels=input_shape[0], **kw)
    raise ValueError(f"unknown model {name!r}; expected one of {', '.join(MODELS)}")
