"""Paired A/B/C of the stateful FBR step's loss on the CPU MLP presets:

* ``fbr, fused loss op``: scores, Reweighter update and ``Σ coef_i·CE_i`` in one op with its own
  backward (``train._FUSED_WEIGHTED_CE = True``, the default since it exists);
* ``fbr, loss from coefficients``: the op without the loss, then ``cross_entropy`` and one ``dot``
  with the coefficients that come with the weights (``_FUSED_WEIGHTED_CE = False``);
* ``fbr, weighted_loss``: ``cross_entropy`` and ``weighted_loss`` (three more tensor ops;
  ``_LOSS_FROM_COEFFICIENTS = False``).

    python benchmarks/bench_fused_loss.py [--rounds 41] [--epochs 4] [--datasets digits mnist5k]

Per round, in a fresh random (seeded) order: ERM and the FBR paths — each a new model trained for
``--epochs`` epochs with reweighting from the first step; a run's time is its median epoch time
without the first epoch.  Reported per dataset: each FBR path over ERM (ratio of the medians, and the
median of the within-round ratios) and the within-round ratios between the paths (median).  Appends
one JSON record per dataset to ``benchmarks/results/fused_loss_ab.jsonl`` (records before the fused
loss op hold the last two paths only, as ``on``/``off``).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import fastreweight.train as T  # noqa: E402
from fastreweight import data as D  # noqa: E402
from fastreweight import models as Mo  # noqa: E402
from fastreweight import presets as P  # noqa: E402
from harness import environment  # noqa: E402

RESULTS = os.path.join(os.path.dirname(__file__), "results")


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=41)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--datasets", nargs="+", default=["digits", "mnist5k"])
    ap.add_argument("--out", default=os.path.join(RESULTS, "fused_loss_ab.jsonl"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    env = environment(torch.device("cpu"))
    rng = random.Random(0)
    for dataset in args.datasets:
        preset = P.get_preset("demo-digits" if dataset == "digits" else "demo-mnist")
        data = D.make_data(dataset, noise="sym", rate=0.4, clean_size=preset.clean_size, seed=0)
        times = {"erm": [], "fbr, fused loss op": [], "fbr, loss from coefficients": [], "fbr, weighted_loss": []}
        for _ in range(args.rounds):
            order = list(times)
            rng.shuffle(order)
            for name in order:
                T._LOSS_FROM_COEFFICIENTS = name != "fbr, weighted_loss"
                T._FUSED_WEIGHTED_CE = name == "fbr, fused loss op"
                torch.manual_seed(0)
                model = Mo.build_model(preset.model, tuple(data.x_train.shape[1:]), data.num_classes)
                opt = P.build_optimizer(preset, model.parameters())
                res = T.train(model, opt, data, method="erm" if name == "erm" else "fbr",
                              warmup=None if name == "erm" else 0, epochs=args.epochs,
                              batch_size=preset.batch_size, seed=0)
                times[name].append(statistics.median(res.epoch_seconds[1:]))
        T._LOSS_FROM_COEFFICIENTS = True
        T._FUSED_WEIGHTED_CE = True
        erm = times["erm"]
        fused = times["fbr, fused loss op"]
        on, off = times["fbr, loss from coefficients"], times["fbr, weighted_loss"]
        rec = dict(
            dataset=dataset, preset=preset.name, rounds=args.rounds, epochs=args.epochs,
            erm_ms_per_epoch=1e3 * statistics.median(erm),
            fused_over_erm=statistics.median(fused) / statistics.median(erm),
            fused_over_erm_paired=statistics.median(a / b for a, b in zip(fused, erm)),
            fused_over_on_paired=statistics.median(a / b for a, b in zip(fused, on)),
            on_over_erm=statistics.median(on) / statistics.median(erm),
            on_over_erm_paired=statistics.median(a / b for a, b in zip(on, erm)),
            off_over_erm=statistics.median(off) / statistics.median(erm),
            off_over_erm_paired=statistics.median(a / b for a, b in zip(off, erm)),
            on_over_off_paired=statistics.median(a / b for a, b in zip(on, off)),
            round_seconds=times, threads=1, env=env,
        )
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "a") as fh:
            fh.write(json.dumps(rec) + "\n")
        print(f"{dataset}: fused {rec['fused_over_erm']:.3f}x ERM (paired {rec['fused_over_erm_paired']:.3f}), "
              f"fused/coefficients paired {rec['fused_over_on_paired']:.3f}; "
              f"on {rec['on_over_erm']:.3f}x ERM (paired {rec['on_over_erm_paired']:.3f}), "
              f"off {rec['off_over_erm']:.3f}x (paired {rec['off_over_erm_paired']:.3f}), "
              f"on/off paired {rec['on_over_off_paired']:.3f}", flush=True)


if __name__ == "__main__":
    main()
