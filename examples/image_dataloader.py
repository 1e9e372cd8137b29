"""FBR over an image DataLoader with transforms: MNIST-5k as 1×28×28 images, a CNN, 40% noisy labels.

    python examples/image_dataloader.py [--epochs 15] [--limit N]

A practitioner's setting: a Dataset of images with a random augmentation, a DataLoader, the noisy
labels only (no true labels reach the trainer), a small clean subset, and a held-out test set.  The
augmentation is torchvision's ``RandomCrop(28, padding=2)`` where torchvision is installed, and the
same transform written with torch ops where it is not (a CPU-only PyTorch build such as this
project's CI cannot load torchvision's compiled ops).
"""
from __future__ import annotations

import argparse

import torch
from torch.utils.data import DataLoader, Dataset

from fastreweight import data as D
from fastreweight import models as Mo
from fastreweight.training import FBR, CleanSet, Trainer, with_index


def random_crop(padding: int = 2):
    """``RandomCrop(28, padding)`` of a [1, 28, 28] tensor: torchvision's, or the same with torch ops."""
    try:
        from torchvision import transforms

        return transforms.RandomCrop(28, padding=padding), "torchvision RandomCrop"
    except Exception:  # noqa: BLE001 - absent, or its compiled ops do not load with this torch build
        def crop(img):
            padded = torch.nn.functional.pad(img, (padding,) * 4)
            i, j = torch.randint(0, 2 * padding + 1, (2,)).tolist()
            return padded[:, i:i + 28, j:j + 28]

        return crop, "RandomCrop written with torch ops (torchvision not loadable)"


class DigitImages(Dataset):
    """``(image [1, 28, 28], label)`` items with an optional transform, as a torchvision dataset."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, transform=None):
        self.x, self.y, self.transform = x.reshape(-1, 1, 28, 28), y, transform

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        img = self.x[i]
        return (self.transform(img) if self.transform else img), int(self.y[i])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--limit", type=int, default=None, help="use only the first N training rows (a quick run)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    split = D.make_data("mnist5k", noise="sym", rate=0.4, clean_size=100, seed=args.seed)  # 5000 real digits
    n = args.limit or len(split.y_train)
    augment, which = random_crop()
    train_set = DigitImages(split.x_train[:n], split.y_train[:n], transform=augment)  # noisy labels only
    loader = DataLoader(with_index(train_set), batch_size=64, shuffle=True,
                        generator=torch.Generator().manual_seed(args.seed))
    test_loader = DataLoader(DigitImages(split.x_test, split.y_test), batch_size=256)
    clean = CleanSet.from_dataset(DigitImages(split.x_clean, split.y_clean))  # read once, never augmented

    torch.manual_seed(args.seed)
    model = Mo.build_model("cnn", (1, 28, 28), 10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    method = FBR(whiten="auto", whiten_every=10)
    result = Trainer(model, optimizer, method, clean).fit(loader, args.epochs, eval_loader=test_loader)

    wrong = split.y_train[:n] != split.y_train_true[:n]  # known here only because the noise is synthetic
    w = result.final_weights
    print(f"MNIST-5k images: {n} training rows ({wrong.float().mean():.0%} labels wrong), {len(clean)} clean; "
          f"augmentation: {which}")
    print(f"FBR: test accuracy {result.last_acc:.3f} (best {result.best_acc:.3f}), reweighting from epoch "
          f"{result.reweight_start_epoch}; mean weight clean {w[~wrong].mean():.2f}, mislabelled {w[wrong].mean():.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
