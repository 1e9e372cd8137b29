"""End-to-end training-step cost of every method, as ratios to ERM measured in the same run.

    python benchmarks/bench_e2e.py [--rounds 3] [--epochs 3] [--device cpu]

MLP of the ``demo-mnist`` preset on MNIST-5k (40% symmetric noise, 100 clean labels), batch 64, one
thread by default.  Reweighting is active from the first step (no warm-up), so the time is that of a
reweighted step.  Methods run interleaved in ``rounds`` rounds (erm, fbr, ... then again) so slow drift
of the machine hits all alike; a method's time is the median over rounds of its median epoch time,
divided by the number of training steps per epoch.  Epoch times include each method's clean passes
(none unless the method's settings say so).  Appends to ``benchmarks/results/e2e_cpu.jsonl``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from fastreweight import data as D  # noqa: E402
from fastreweight import models as Mo  # noqa: E402
from fastreweight import presets as P  # noqa: E402
from fastreweight.bench import environment  # noqa: E402
from fastreweight.train import train  # noqa: E402

METHODS = {
    "erm": dict(method="erm"),
    "fbr (default: stateful, cache)": dict(method="fbr", warmup=0),
    "fbr clean_features=batch": dict(method="fbr", warmup=0, clean_features="batch"),
    "fbr clean_features=prototype": dict(method="fbr", warmup=0, clean_features="prototype"),
    "fbr recipe=paper (eval forward, 5 clean passes)": dict(method="fbr", recipe="paper", skip_epochs=-1, clean_passes=5),
    "erm + 5 clean passes": dict(method="erm", clean_passes=5),
    "fbr recipe=paper, train features": dict(method="fbr", recipe="paper", skip_epochs=-1, clean_passes=5, batch_features="train"),
    "meta": dict(method="meta", warmup=0),
    "l2r": dict(method="l2r", warmup=0),
    "coteaching": dict(method="coteaching"),
}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "e2e_cpu.jsonl"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    preset = P.get_preset("demo-mnist")
    data = D.make_data("mnist5k", noise="sym", rate=0.4, clean_size=100, seed=0)
    steps = -(-len(data.y_train) // preset.batch_size)
    times = {name: [] for name in METHODS}
    for _ in range(args.rounds):
        for name, kw in METHODS.items():
            torch.manual_seed(0)
            shape = tuple(data.x_train.shape[1:])
            model = Mo.build_model(preset.model, shape, data.num_classes)
            opt = P.build_optimizer(preset, model.parameters())
            extra = {}
            if kw["method"] == "coteaching":
                extra["model2"] = Mo.build_model(preset.model, shape, data.num_classes)
                extra["optimizer2"] = P.build_optimizer(preset, extra["model2"].parameters())
            res = train(model, opt, data, epochs=args.epochs, batch_size=preset.batch_size, device=args.device, **kw, **extra)
            times[name].append(statistics.median(res.epoch_seconds[1:] or res.epoch_seconds))
    env = environment(torch.device(args.device))
    erm = statistics.median(times["erm"])
    with open(args.out, "a") as fh:
        for name, ts in times.items():
            t = statistics.median(ts)
            rec = dict(method=name, seconds_per_epoch=t, ms_per_step=1e3 * t / steps, ratio_to_erm=t / erm,
                       steps_per_epoch=steps, rounds=args.rounds, epochs=args.epochs, threads=args.threads,
                       model="mlp (demo-mnist)", batch_size=preset.batch_size, env=env)
            fh.write(json.dumps(rec) + "\n")
            print(f"{name:>48}: {rec['ms_per_step']:.3f} ms/step  ×{rec['ratio_to_erm']:.2f} ERM", flush=True)


if __name__ == "__main__":
    main()
