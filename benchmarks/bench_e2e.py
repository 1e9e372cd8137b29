"""End-to-end training-step cost of every method, as ratios to ERM measured in the same run.

    python benchmarks/bench_e2e.py [--suite cpu-mlp|cpu-mlp-digits|gpu-preact18|gpu-resnet34-paper] [--rounds 3] [--epochs 3]

Suites:

* ``cpu-mlp`` (default): the MLP of the ``demo-mnist`` preset on MNIST-5k (40% symmetric noise, 100
  clean labels), batch 64, one CPU thread.  Appends to ``benchmarks/results/e2e_cpu.jsonl``.
* ``cpu-mlp-digits``: the same on scikit-learn's digits with the ``demo-digits`` preset (40% symmetric
  noise, 50 clean labels, 22 steps of batch 64 per epoch: fixed per-epoch work weighs most here).
  Appends to ``benchmarks/results/e2e_cpu_digits.jsonl``.
* ``gpu-preact18``: PreAct-ResNet-18, batch 128, on random 3×32×32 inputs (3840 training samples = 30
  steps per epoch, 500 clean samples, 10 classes), every method.  Appends to ``e2e_gpu.jsonl``.
* ``gpu-resnet34-paper``: the published CIFAR recipe's step cost (SPEC §7, preset ``paper-cifar``:
  ResNet-34, batch 256, 30 clean passes of batch 128 per epoch) at one tenth of CIFAR's scale (4500
  training and 200 clean samples, which keeps the ratio of training steps to clean-pass steps and to
  the eval-mode clean forward), random 3×32×32 inputs: ERM, ERM with the same clean passes,
  ``recipe="paper"`` and its faster variants.  Appends to ``e2e_gpu.jsonl``.

Reweighting is active from the first step (no warm-up), so the time is that of a reweighted step.
Methods run interleaved in ``rounds`` rounds, in a new random (seeded) order each round, so slow drift
of the machine hits all alike; a method's time is the median over rounds of its median epoch time (the first epoch,
with compilation and autotuning, is dropped), divided by the number of training steps per epoch.
Each record also carries the within-round ratio to ERM (median over rounds), the ratio of the
minima, and every round's epoch time (``round_seconds``); on the CPU also the step cost alone
(``step_gap_ms``: the median time between consecutive training steps of the last epoch, from callback
timestamps, so without the epoch's fixed work such as clean passes and the clean-feature refresh) and
its within-round ratio to ERM's (``step_gap_ratio_paired``).
Epoch times include each method's clean passes; on CUDA the trainer synchronises once at the end of
each epoch, so queued kernels are counted.
"""
from __future__ import annotations

import argparse
import json
import random
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from fastreweight import data as D  # noqa: E402
from fastreweight import models as Mo  # noqa: E402
from fastreweight import presets as P  # noqa: E402
from harness import environment  # noqa: E402
from fastreweight.train import train  # noqa: E402

RESULTS = os.path.join(os.path.dirname(__file__), "results")

ALL_METHODS = {
    "erm": dict(method="erm"),
    "fbr (default: stateful, cache)": dict(method="fbr", warmup=0),
    "fbr feature_whiten=auto (cache)": dict(method="fbr", warmup=0, feature_whiten="auto"),
    "fbr feature_whiten=auto, refit every 5th refresh": dict(method="fbr", warmup=0, feature_whiten="auto",
                                                             feature_whiten_every=5),
    "fbr feature_whiten=auto, refit every 10th refresh": dict(method="fbr", warmup=0, feature_whiten="auto",
                                                              feature_whiten_every=10),
    "fbr clean_features=batch": dict(method="fbr", warmup=0, clean_features="batch"),
    "fbr clean_features=prototype": dict(method="fbr", warmup=0, clean_features="prototype"),
    "fbr recipe=paper (eval forward, 5 clean passes)": dict(method="fbr", recipe="paper", skip_epochs=-1, clean_passes=5),
    "erm + 5 clean passes": dict(method="erm", clean_passes=5),
    "fbr recipe=paper, train features": dict(method="fbr", recipe="paper", skip_epochs=-1, clean_passes=5, batch_features="train"),
    "erm + 5 clean passes mixed in": dict(method="erm", clean_mix=5),
    "fbr recipe=paper, train features, clean mixed in": dict(method="fbr", recipe="paper", skip_epochs=-1,
                                                            clean_mix=5, batch_features="train"),
    "fbr recipe=paper, train features, whitened (a+w)": dict(method="fbr", recipe="paper", skip_epochs=-1,
                                                            clean_passes=5, batch_features="train",
                                                            feature_whiten="auto"),
    "meta": dict(method="meta", warmup=0),
    "l2r": dict(method="l2r", warmup=0),
    "coteaching": dict(method="coteaching"),
}

PAPER_METHODS = {
    "erm": dict(method="erm"),
    "erm + 30 clean passes": dict(method="erm", clean_passes=30),
    "fbr recipe=paper (eval forward, 30 clean passes)": dict(method="fbr", recipe="paper", skip_epochs=-1, clean_passes=30),
    "fbr recipe=paper, train features (variant a)": dict(method="fbr", recipe="paper", skip_epochs=-1, clean_passes=30,
                                                         batch_features="train"),
    "fbr recipe=paper, train features, 5 clean passes (variant b)": dict(method="fbr", recipe="paper", skip_epochs=-1,
                                                                        clean_passes=5, batch_features="train"),
    "fbr stateful, cache (variant c)": dict(method="fbr", warmup=0),
    # the variant that meets the recipe issue's CPU targets (fbr+whiten/10 of variants.jsonl)
    "fbr stateful, cache, whitened, refit every 10th refresh": dict(method="fbr", warmup=0, feature_whiten="auto",
                                                                    feature_whiten_every=10),
}


def synthetic_images(n_train: int, clean: int, num_classes: int = 10, seed: int = 0) -> D.NoisyData:
    g = torch.Generator().manual_seed(seed)
    n = n_train + clean
    x = torch.randn(n, 3, 32, 32, generator=g)
    y = torch.arange(n) % num_classes
    return D.make_split(x, y, num_classes=num_classes, noise="sym", rate=0.4, clean_size=clean, test_size=0,
                        dataset="random-32x32", seed=seed)


def suite(name: str, args):
    """(data, model name, batch size, optimiser preset, methods, model label, results file)."""
    if name == "cpu-mlp":
        preset = P.get_preset("demo-mnist")
        data = D.make_data("mnist5k", noise="sym", rate=0.4, clean_size=100, seed=0)
        return data, preset.model, preset.batch_size, preset, ALL_METHODS, "mlp (demo-mnist)", "e2e_cpu.jsonl"
    if name == "cpu-mlp-digits":
        preset = P.get_preset("demo-digits")
        data = D.make_data("digits", noise="sym", rate=0.4, clean_size=preset.clean_size, seed=0)
        return (data, preset.model, preset.batch_size, preset, ALL_METHODS, "mlp (demo-digits)",
                "e2e_cpu_digits.jsonl")
    if name == "gpu-preact18":
        preset = P.get_preset("paper-cifar")
        data = synthetic_images(30 * 128 // args.shrink, 500 // args.shrink)
        return data, "preact-resnet18", 128, preset, ALL_METHODS, "preact-resnet18 (random 3x32x32)", "e2e_gpu.jsonl"
    if name == "gpu-resnet34-paper":
        preset = P.get_preset("paper-cifar")
        data = synthetic_images(4500 // args.shrink, 200 // args.shrink)
        return (data, preset.model, preset.batch_size, preset, PAPER_METHODS,
                "resnet34 paper-cifar at 1/10 scale (random 3x32x32)", "e2e_gpu.jsonl")
    raise ValueError(f"unknown suite {name!r}")


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--suite", default="cpu-mlp", choices=("cpu-mlp", "cpu-mlp-digits", "gpu-preact18",
                                                            "gpu-resnet34-paper"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default=None, help="default: cpu for cpu-mlp, cuda for the gpu suites")
    ap.add_argument("--amp", default=None, choices=(None, "bf16", "fp16"))
    ap.add_argument("--methods", default=None, help="subset of the suite's method names, separated by ';' (or ',' when no name holds one)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--budget-s", type=float, default=None,
                    help="start no new round after this many seconds (the rounds done are written)")
    ap.add_argument("--shrink", type=int, default=1, help="divide the gpu suites' sample counts (script checks only)")
    args = ap.parse_args(argv)
    device = args.device or ("cpu" if args.suite.startswith("cpu-") else "cuda")
    if device == "cpu":
        torch.set_num_threads(args.threads)
    else:
        torch.backends.cudnn.benchmark = True
    data, model_name, batch_size, preset, methods, model_label, out_name = suite(args.suite, args)
    if args.methods:
        sep = ";" if ";" in args.methods else ","  # method names may hold commas: separate them by ';'
        keep = [m.strip() for m in args.methods.split(sep)]
        unknown = [m for m in keep if m not in methods]
        if unknown:
            raise SystemExit(f"unknown method name(s) {unknown}; the suite has {list(methods)}")
        methods = {k: v for k, v in methods.items() if k in keep}
    out = args.out or os.path.join(RESULTS, out_name)
    steps = -(-len(data.y_train) // batch_size)
    shape = tuple(data.x_train.shape[1:])
    times = {name: [] for name in methods}
    steps_gap = {name: [] for name in methods}
    t_start = time.perf_counter()
    rounds_done = 0
    order_rng = random.Random(0)
    for _ in range(args.rounds):
        if rounds_done and args.budget_s is not None and time.perf_counter() - t_start > args.budget_s:
            break
        # a fresh (seeded) order every round: a machine whose speed drifts periodically must not
        # favour the methods that happen to run at the same point of every round
        order = list(methods.items())
        order_rng.shuffle(order)
        for name, kw in order:
            torch.manual_seed(0)
            model = Mo.build_model(model_name, shape, data.num_classes)
            opt = P.build_optimizer(preset, model.parameters())
            extra = {}
            if kw["method"] == "coteaching":
                extra["model2"] = Mo.build_model(model_name, shape, data.num_classes)
                extra["optimizer2"] = P.build_optimizer(preset, extra["model2"].parameters())
            stamps = []
            # on the CPU, also the time between consecutive training steps (callback timestamps): the
            # step cost alone, without the epoch's fixed work (clean passes, clean-feature refresh)
            cb = (lambda ev: stamps.append((ev["phase"], ev["epoch"], time.perf_counter()))) if device == "cpu" else None
            res = train(model, opt, data, epochs=args.epochs, batch_size=batch_size, device=device, amp=args.amp,
                        callback=cb, **kw, **extra)
            times[name].append(statistics.median(res.epoch_seconds[1:] or res.epoch_seconds))
            last_epoch = [t for ph, ep, t in stamps if ph == "train" and ep == args.epochs - 1]
            if len(last_epoch) > 1:  # a gap needs two steps (a shrunk script check may have one per epoch)
                steps_gap[name].append(statistics.median(b - a for a, b in zip(last_epoch, last_epoch[1:])))
        rounds_done += 1
    env = environment(torch.device(device))
    erm = statistics.median(times["erm"])
    erm_min = min(times["erm"])
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "a") as fh:
        for name, ts in times.items():
            t = statistics.median(ts)
            # three estimators of the cost ratio, because a shared machine drifts: the ratio of the
            # medians; the median over rounds of the ratio within a round (methods of one round run
            # back to back, so slow phases hit them alike); the ratio of the minima (the least
            # disturbed epoch of each method, the usual estimator for a deterministic workload)
            paired = statistics.median(a / b for a, b in zip(ts, times["erm"]))
            gaps = steps_gap[name]
            step_stats = {}
            if gaps and len(gaps) == len(steps_gap["erm"]) == len(ts):
                # per round the median gap between the last epoch's training steps; then the median over
                # rounds, and the median over rounds of the ratio to ERM's in the same round
                step_stats = dict(step_gap_ms=1e3 * statistics.median(gaps),
                                  step_gap_ratio_paired=statistics.median(a / b for a, b in zip(gaps, steps_gap["erm"])))
            rec = dict(suite=args.suite, method=name, seconds_per_epoch=t, ms_per_step=1e3 * t / steps, **step_stats,
                       ratio_to_erm=t / erm, ratio_to_erm_paired=paired, ms_per_step_min=1e3 * min(ts) / steps,
                       ratio_to_erm_min=min(ts) / erm_min, round_seconds=ts,
                       steps_per_epoch=steps, rounds=rounds_done, epochs=args.epochs,
                       threads=args.threads if device == "cpu" else None, amp=args.amp, model=model_label,
                       batch_size=batch_size, train_samples=len(data.y_train), clean_samples=len(data.y_clean),
                       settings=dict(methods[name]), env=env)
            fh.write(json.dumps(rec) + "\n")
            print(f"{name:>62}: {rec['ms_per_step']:8.3f} ms/step  x{rec['ratio_to_erm']:.2f} ERM "
                  f"(paired x{paired:.2f}, min x{rec['ratio_to_erm_min']:.2f})"
                  + (f"  step gap {step_stats['step_gap_ms']:.3f} ms x{step_stats['step_gap_ratio_paired']:.2f}"
                     if step_stats else ""), flush=True)


if __name__ == "__main__":
    main()
