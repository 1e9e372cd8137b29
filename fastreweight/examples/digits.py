"""FBR on scikit-learn's digits with 40% symmetric label noise and 50 clean labels (CPU, ~1 minute).

    python -m fastreweight.examples.digits [--seed 0] [--epochs 100] [--warmup 20]

Trains the same MLP twice from the same initialisation — plain cross-entropy, and cross-entropy
reweighted by ``fastreweight.weights`` (stateful FBR, SPEC §3) — and prints both test accuracies.
The warm-up (uniform weights) lasts long enough for the features to mean something (SPEC §3 notes).
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.datasets import load_digits

from fastreweight import capture
from fastreweight.scores import fbr_scores
from fastreweight.weights import Reweighter, weighted_loss


def make_data(seed: int, noise: float = 0.4, clean_per_class: int = 5):
    X, y = load_digits(return_X_y=True)
    X = torch.tensor(X / 16.0, dtype=torch.float32)
    y = torch.tensor(y)
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(y), generator=g)
    train, held = perm[:1400], perm[1400:]
    # clean subset: 5 true-labelled samples per class from the held-out rows; the rest is the test set
    clean = torch.cat([held[y[held] == c][:clean_per_class] for c in range(10)])
    test = held[~torch.isin(held, clean)]
    noisy = y[train].clone()
    flip = torch.rand(len(train), generator=g) < noise
    noisy[flip] = torch.randint(0, 10, (int(flip.sum()),), generator=g)  # symmetric: may hit the true class
    return (X[train], noisy, y[train]), (X[clean], y[clean]), (X[test], y[test])


def make_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10))


def run(method: str, data, epochs: int, warmup: int, seed: int) -> tuple[float, Reweighter | None]:
    (xs, ys, _), (cx, cy), (tx, ty) = data
    model = make_model(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    rw = Reweighter(len(ys), lr=0.5) if method == "fbr" else None
    g = torch.Generator().manual_seed(seed)
    # --- the training loop shown in README.md ------------------------------------------------
    for epoch in range(epochs):
        for idx in torch.randperm(len(ys), generator=g).split(64):
            feats, logits = capture.penultimate(model, xs[idx])          # features = head input
            losses = F.cross_entropy(logits, ys[idx], reduction="none")
            if rw is not None and epoch >= warmup:
                with torch.no_grad():
                    clean_feats, _ = capture.penultimate(model, cx)
                    d = fbr_scores(feats.detach(), ys[idx], clean_feats, cy, num_classes=10, shift="max")
                    w = rw.step(idx, d)                                 # clipped update of w[idx]
            else:
                w = torch.ones_like(losses)
            loss = weighted_loss(losses, w)
            opt.zero_grad()
            loss.backward()
            opt.step()
    # ---------------------------------------------------------------------------------------------
    with torch.no_grad():
        acc = (model(tx).argmax(1) == ty).float().mean().item()
    return acc, rw


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--noise", type=float, default=0.4)
    args = ap.parse_args(argv)
    data = make_data(args.seed, args.noise)
    (_, noisy, true), (cx, _), (tx, _) = data
    print(f"digits: {len(noisy)} training rows ({(noisy != true).float().mean():.0%} labels wrong), "
          f"{len(cx)} clean labels, {len(tx)} test rows; {args.epochs} epochs, FBR warm-up {args.warmup}")
    for method in ("erm", "fbr"):
        t0 = time.perf_counter()
        acc, rw = run(method, data, args.epochs, args.warmup, args.seed)
        line = f"{method:>4}: test accuracy {acc:.3f}  ({time.perf_counter() - t0:.1f} s)"
        if rw is not None:
            wrong = noisy != true
            line += (f"  mean weight: clean {rw.weights[~wrong].mean():.2f}, "
                     f"mislabelled {rw.weights[wrong].mean():.2f}")
        print(line)


if __name__ == "__main__":
    main()
