"""Checkpoint and resume a run: stop after some epochs, resume from the checkpoint, and get exactly the
run that was never interrupted.

    python examples/resume.py [--epochs 6] [--stop 3] [--dir DIR]
"""
from __future__ import annotations

import argparse
import os
import tempfile

import torch

from fastreweight import data as D
from fastreweight import models as Mo
from fastreweight.training import FBR, CleanSet, TensorLoader, Trainer


def run(split, epochs: int, checkpoint_dir: str, resume: str | None = None):
    torch.manual_seed(0)
    model = Mo.build_model("mlp", split.input_shape, split.num_classes)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[4], gamma=0.1)
    loader = TensorLoader(split.x_train, split.y_train, 64, generator=torch.Generator().manual_seed(0))
    trainer = Trainer(model, optimizer, FBR(warmup=1), CleanSet(split.x_clean, split.y_clean, passes=1),
                      scheduler=scheduler)
    test = TensorLoader(split.x_test, split.y_test, 512)
    result = trainer.fit(loader, epochs, checkpoint_dir=checkpoint_dir, resume=resume, eval_loader=test)
    return model, result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--stop", type=int, default=3, help="the epoch after which the first run 'crashes'")
    ap.add_argument("--dir", default=None, help="where checkpoints go (default: a temporary directory)")
    args = ap.parse_args(argv)
    split = D.make_data("digits", noise="sym", rate=0.4, clean_size=50, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.dir or tmp
        whole, _ = run(split, args.epochs, os.path.join(root, "uninterrupted"))
        run(split, args.stop, os.path.join(root, "interrupted"))  # stops after --stop epochs
        ckpt = os.path.join(root, "interrupted", f"epoch-{args.stop:04d}.pt")
        resumed, result = run(split, args.epochs, os.path.join(root, "resumed"), resume=ckpt)
        same = all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()))
        print(f"resumed from {os.path.basename(ckpt)} to epoch {args.epochs}: last test accuracy "
              f"{result.last_acc:.3f}; parameters identical to the uninterrupted run: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
