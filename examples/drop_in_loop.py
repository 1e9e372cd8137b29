"""FBR in your own training loop: scikit-learn's digits, 40% of the labels resampled, 50 clean labels.

    python examples/drop_in_loop.py [--seed 0] [--epochs 100]

The loop is yours (model, optimiser, batches); the method object gives the step's loss.  The same
MLP is trained twice from the same initialisation — plain cross-entropy, then FBR — and both test
accuracies are printed, with FBR's mean weight of the clean and of the mislabelled samples.
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.datasets import load_digits

from fastreweight.training import FBR


def make_data(seed: int, noise: float = 0.4, clean_per_class: int = 5):
    X, y = load_digits(return_X_y=True)
    X, y = torch.tensor(X / 16.0, dtype=torch.float32), torch.tensor(y)
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(y), generator=g)
    train, held = perm[:1400], perm[1400:]
    # the clean subset: 5 true-labelled samples per class of the held-out rows; the rest is the test set
    clean = torch.cat([held[y[held] == c][:clean_per_class] for c in range(10)])
    test = held[~torch.isin(held, clean)]
    noisy = y[train].clone()
    flip = torch.rand(len(train), generator=g) < noise
    noisy[flip] = torch.randint(0, 10, (int(flip.sum()),), generator=g)  # may hit the true class
    return (X[train], noisy, y[train]), (X[clean], y[clean]), (X[test], y[test])


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(64, 128), nn.ReLU())
        self.head = nn.Linear(128, 10)  # FBR reads the head's input: the penultimate features

    def forward(self, x):
        return self.head(self.body(x))


def run(data, seed: int, epochs: int, use_fbr: bool):
    (xs, ys, _), (cx, cy), (tx, ty) = data
    torch.manual_seed(seed)
    model = MLP()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    fbr = FBR(warmup=20).bind(model, opt, (cx, cy), num_samples=len(ys), epochs=epochs) if use_fbr else None
    g = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        if fbr:
            fbr.begin_epoch(epoch)  # warm-up state; the clean features are refreshed once per epoch
        for idx in torch.randperm(len(ys), generator=g).split(64):
            if fbr:
                loss, _ = fbr.loss(xs[idx], ys[idx], idx)  # forward, FBR weights, weighted cross-entropy
            else:
                loss = F.cross_entropy(model(xs[idx]), ys[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        if fbr:
            fbr.end_epoch(epoch)
    if fbr:
        fbr.close()
    with torch.no_grad():
        acc = (model(tx).argmax(1) == ty).float().mean().item()
    return acc, (fbr.sample_weights if fbr else None)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=100)
    args = ap.parse_args(argv)
    data = make_data(args.seed)
    (_, ys, ys_true), (cx, _), (tx, _) = data
    wrong = ys != ys_true
    print(f"digits: {len(ys)} training rows ({wrong.float().mean():.0%} labels wrong), {len(cx)} clean labels, "
          f"{len(tx)} test rows; {args.epochs} epochs, FBR warm-up 20")
    for name in ("erm", "fbr"):
        t0 = time.perf_counter()
        acc, w = run(data, args.seed, args.epochs, use_fbr=name == "fbr")
        extra = "" if w is None else f"  mean weight: clean {w[~wrong].mean():.2f}, mislabelled {w[wrong].mean():.2f}"
        print(f" {name}: test accuracy {acc:.3f}  ({time.perf_counter() - t0:.1f} s){extra}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
