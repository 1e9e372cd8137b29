"""Paired A/B of the two ways the stateful FBR step gets its batch features, on the CPU MLP presets:

* ``fbr``: the default — batch features and logits from the model's ``features_and_logits``
  (``capture.split_forward``);
* ``fbr, features by a hook``: the features through a forward pre-hook on the head
  (``capture.FeatureTap``, what the trainer does for a model without ``features_and_logits``).

    python benchmarks/bench_step_paths.py [--rounds 41] [--epochs 4] [--datasets digits mnist5k]

Per round, in a fresh random (seeded) order: ERM and the FBR paths — each a new model trained for
``--epochs`` epochs with reweighting from the first step; a run's time is its median epoch time
without the first epoch, and its step time the median gap between consecutive training steps of the
last epoch (callback timestamps: the step alone, without the once-per-epoch clean-feature refresh).
Reported per dataset and path: over ERM and over ``fbr`` (medians of the within-round ratios), for
the epoch and for the step alone.  Appends one JSON record per dataset to
``benchmarks/results/step_paths_ab.jsonl``.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import fastreweight.train as T  # noqa: E402
from fastreweight import capture  # noqa: E402
from fastreweight import data as D  # noqa: E402
from fastreweight import models as Mo  # noqa: E402
from fastreweight import presets as P  # noqa: E402
from harness import environment  # noqa: E402

RESULTS = os.path.join(os.path.dirname(__file__), "results")
PATHS = ("erm", "fbr", "fbr, features by a hook")


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=41)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--datasets", nargs="+", default=["digits", "mnist5k"])
    ap.add_argument("--out", default=os.path.join(RESULTS, "step_paths_ab.jsonl"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    env = environment(torch.device("cpu"))
    rng = random.Random(0)
    real_split = capture.split_forward
    for dataset in args.datasets:
        preset = P.get_preset("demo-digits" if dataset == "digits" else "demo-mnist")
        data = D.make_data(dataset, noise="sym", rate=0.4, clean_size=preset.clean_size, seed=0)
        times = {name: [] for name in PATHS}
        gaps = {name: [] for name in PATHS}
        try:
            for _ in range(args.rounds):
                order = list(PATHS)
                rng.shuffle(order)
                for name in order:
                    capture.split_forward = (lambda model: None) if name == "fbr, features by a hook" else real_split
                    torch.manual_seed(0)
                    model = Mo.build_model(preset.model, tuple(data.x_train.shape[1:]), data.num_classes)
                    opt = P.build_optimizer(preset, model.parameters())
                    stamps = []
                    res = T.train(model, opt, data, method="erm" if name == "erm" else "fbr",
                                  warmup=None if name == "erm" else 0, epochs=args.epochs,
                                  batch_size=preset.batch_size, seed=0,
                                  callback=lambda ev: stamps.append((ev["phase"], ev["epoch"], time.perf_counter())))
                    times[name].append(statistics.median(res.epoch_seconds[1:]))
                    last = [t for ph, ep, t in stamps if ph == "train" and ep == args.epochs - 1]
                    gaps[name].append(statistics.median(b - a for a, b in zip(last, last[1:])))
        finally:
            capture.split_forward = real_split

        def paired(a, b):
            return statistics.median(x / y for x, y in zip(a, b))

        rec = dict(dataset=dataset, preset=preset.name, rounds=args.rounds, epochs=args.epochs,
                   erm_ms_per_epoch=1e3 * statistics.median(times["erm"]),
                   erm_step_ms=1e3 * statistics.median(gaps["erm"]),
                   paths={name: dict(over_erm_paired=paired(times[name], times["erm"]),
                                     over_fbr_paired=paired(times[name], times["fbr"]),
                                     step_over_erm_paired=paired(gaps[name], gaps["erm"]),
                                     step_over_fbr_paired=paired(gaps[name], gaps["fbr"]),
                                     step_us_minus_fbr=1e6 * statistics.median(
                                         a - b for a, b in zip(gaps[name], gaps["fbr"])))
                          for name in PATHS},
                   round_seconds=times, step_gaps=gaps, threads=1, env=env)
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "a") as fh:
            fh.write(json.dumps(rec) + "\n")
        for name in PATHS[1:]:
            p = rec["paths"][name]
            print(f"{dataset}: {name:>28}: epoch x{p['over_erm_paired']:.3f} ERM, x{p['over_fbr_paired']:.3f} fbr; "
                  f"step x{p['step_over_erm_paired']:.3f} ERM, x{p['step_over_fbr_paired']:.3f} fbr "
                  f"({p['step_us_minus_fbr']:+.1f} us)", flush=True)


if __name__ == "__main__":
    main()
