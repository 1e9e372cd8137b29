"""Accuracy / epoch-time experiments on the CPU, appended to benchmarks/results/*.jsonl.

    python benchmarks/run_experiments.py variants  [--seeds 0 1 2] [--datasets mnist5k digits]
    python benchmarks/run_experiments.py ablation  [--seeds 0 1 2]
    python benchmarks/run_experiments.py cleanpasses [--seeds 0 1 2] [--datasets mnist5k digits]
    python benchmarks/run_experiments.py refresh [--seeds 0 1 2] [--datasets mnist5k digits]
    python benchmarks/run_experiments.py whiten [--seeds 0 1 2] [--datasets mnist5k digits]

* ``variants`` (the published recipe and our faster variants, SPEC §7): for every cell
  (dataset × {20/40/60% symmetric, 40% asymmetric} noise) and seed, from one initialisation:
  ``erm`` (no clean passes), ``erm+cp`` (ERM with the recipe's clean passes), ``l2r``, the library's
  default ``fbr``, ``paper`` (recipe="paper", SPEC §7), and the variants (a) batch features from the
  training forward, (b) one clean pass instead of five, (c) the stateful Reweighter in place of
  threshold_weights, (d) running class prototypes; (e) = (a) with the five clean passes' worth of clean
  samples mixed into the training batches (``clean_mix=5``: the same clean visits, no extra steps),
  next to ``erm+mix``, ERM given the same mixed-in clean samples; (a+b) = (a) with two or three clean
  passes instead of five; (a+w) = (a) with the clean features whitened (``feature_whiten="auto"``);
  ``fbr+whiten`` = the library's default FBR with ``feature_whiten="auto"`` — (a), (c) and no clean
  passes at all, with whitened clean features; ``fbr+whiten/k`` = the same with the whitening refitted
  at every k-th refresh only (``feature_whiten_every=k``; the refreshes between shrink the new class
  means by the last fit).
  Epoch time is the median training-epoch time of each run; ratios to ERM are formed per cell and
  seed (same process, back to back).
* ``ablation`` (stateful FBR, MNIST-5k, 40% symmetric and 40% asymmetric): shift, Reweighter lr, warm-up,
  clean-subset size and clean-feature policy, one at a time around the defaults.
* ``cleanpasses`` (every cell of ``variants``): ERM, bi-level L2R and the default FBR, each without and
  with five clean passes per epoch — the clean subset used for training as well as for weighting, given
  to every method alike; and ERM and FBR with the same clean visits mixed into the training batches
  (``clean_mix=5``).
* ``whiten`` (every cell of ``variants``): the default FBR with ``feature_whiten="auto"``, without and
  with five clean passes, next to ERM, L2R and the default FBR (``fastreweight.whiten``).
* ``whiten-size`` (MNIST-5k, every noise cell): the default FBR and ``feature_whiten="auto"`` with
  25, 100 and 400 clean samples.
* ``whiten-cnn`` (MNIST-5k; ``--cells`` to choose): ERM, the default FBR and ``feature_whiten="auto"``
  on the small CNN of ``fastreweight.models`` (20 epochs).
* ``instance`` (MNIST-5k and digits × instance-dependent noise ``confusion`` / ``boundary`` / ``cluster``
  at 30%, ``fastreweight.noise``): every method — ``erm``, ``erm+cp``, ``l2r``, ``meta`` (each also with
  two epochs of ERM first, ``/warmup2``), ``paper``, ``fbr-default``, ``fbr+whiten/10`` and ``relabel``
  (``NeighbourRelabel``, docs/instance-noise.md).
* ``instance-cc`` (every cell of ``variants``): ``erm``, ``fbr+whiten/10`` and ``relabel`` on the
  class-conditional cells, same machine and invocation as ``instance``'s ERM.
* ``instance-cnn`` (MNIST-5k 1×28×28 on the small CNN, the instance cells; ``--epochs``, default 10):
  the same methods as ``instance``.
* ``refresh`` (every cell of ``variants``): the default stateful FBR with the clean-feature cache
  refreshed every ceil(4·M/B) steps (the default), 2× and 4× that, and once per epoch.

Settings come from the ``demo-mnist`` / ``demo-digits`` presets (MLP, SGD) unless a run overrides them.
Accuracy is the test accuracy after the last epoch (no model selection on the test set); the best
epoch's accuracy is recorded too.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from fastreweight import data as D  # noqa: E402
from fastreweight import models as Mo  # noqa: E402
from fastreweight import presets as P  # noqa: E402
from harness import environment  # noqa: E402
from fastreweight.train import train  # noqa: E402

RESULTS = os.path.join(os.path.dirname(__file__), "results")
NOISE_CELLS = [("sym", 0.2), ("sym", 0.4), ("sym", 0.6), ("asym", 0.4)]
INSTANCE_CELLS = [("confusion", 0.3), ("boundary", 0.3), ("cluster", 0.3)]


def paper_kw(skip):
    return dict(method="fbr", recipe="paper", clean_passes=5, skip_epochs=skip, alpha_epochs=10, batch_features="eval")


def variants(preset_name):
    skip = 2 if preset_name == "demo-mnist" else "auto"
    paper = paper_kw(skip)
    warm = skip + 1 if isinstance(skip, int) else "auto"
    stateful = dict(method="fbr", recipe="stateful", clean_passes=5, warmup=warm, shift="second", batch_features="train")
    return {
        "erm": dict(method="erm", clean_passes=0),
        "erm+cp": dict(method="erm", clean_passes=5),
        "l2r": dict(method="l2r", clean_passes=0),
        "fbr-default": dict(method="fbr"),
        "paper": paper,
        "a:train-features": {**paper, "batch_features": "train"},
        "b:1-clean-pass": {**paper, "clean_passes": 1},
        "c:stateful": stateful,
        "d:prototypes": {**stateful, "clean_features": "prototype"},
        "erm+mix": dict(method="erm", clean_mix=5),
        "e:mixed-clean": {**paper, "batch_features": "train", "clean_passes": 0, "clean_mix": 5},
        "a+b:2-clean-passes": {**paper, "batch_features": "train", "clean_passes": 2},
        "a+b:3-clean-passes": {**paper, "batch_features": "train", "clean_passes": 3},
        "a+w:whitened": {**paper, "batch_features": "train", "feature_whiten": "auto"},
        "fbr+whiten": dict(method="fbr", feature_whiten="auto"),
        "fbr+whiten/5": dict(method="fbr", feature_whiten="auto", feature_whiten_every=5),
        "fbr+whiten/10": dict(method="fbr", feature_whiten="auto", feature_whiten_every=10),
    }


def clean_pass_runs():
    """Every method given the same five clean passes per epoch (SPEC §6's fair comparison), next to the
    same methods without them."""
    return {
        "erm": dict(method="erm"),
        "erm+cp": dict(method="erm", clean_passes=5),
        "l2r": dict(method="l2r"),
        "l2r+cp": dict(method="l2r", clean_passes=5),
        "fbr-default": dict(method="fbr"),
        "fbr+cp": dict(method="fbr", clean_passes=5),
        "erm+mix": dict(method="erm", clean_mix=5),
        "fbr+mix": dict(method="fbr", clean_mix=5),
    }


def whiten_runs():
    """The default stateful FBR with ``feature_whiten="auto"`` (the cached clean features whitened by
    their own covariance, folded into the class means, strength by leave-one-out at each refresh),
    without and with five clean passes, next to ERM, bi-level L2R and the default."""
    return {
        "erm": dict(method="erm"),
        "l2r": dict(method="l2r"),
        "fbr-default": dict(method="fbr"),
        "fbr+whiten": dict(method="fbr", feature_whiten="auto"),
        "fbr+cp": dict(method="fbr", clean_passes=5),
        "fbr+whiten+cp": dict(method="fbr", feature_whiten="auto", clean_passes=5),
    }


def whiten_size_runs():
    """``feature_whiten="auto"`` against the default FBR for clean subsets of 25, 100 and 400 samples
    (MNIST-5k): with few clean rows per class the covariance and the class means are rough."""
    runs = {"erm": dict(method="erm")}
    for m in (25, 100, 400):
        runs[f"fbr-default, M={m}"] = dict(method="fbr", _clean_size=m)
        runs[f"fbr+whiten, M={m}"] = dict(method="fbr", feature_whiten="auto", _clean_size=m)
    return runs


def whiten_cnn_runs():
    """``feature_whiten="auto"`` on another architecture: the small CNN on MNIST-5k (20 epochs)."""
    cnn = dict(_model="cnn", _epochs=20)
    return {"erm": dict(method="erm", **cnn), "fbr-default": dict(method="fbr", **cnn),
            "fbr+whiten": dict(method="fbr", feature_whiten="auto", **cnn)}


def instance_runs(preset_name):
    """Every method of the issue on the instance-dependent cells: ERM without and with the recipe's
    clean passes, L2R, the meta direction, the published recipe, the library's FBR defaults and its
    whitened variant, and neighbour relabelling (``method="relabel"``)."""
    skip = 2 if preset_name == "demo-mnist" else "auto"
    return {
        "erm": dict(method="erm"),
        "erm+cp": dict(method="erm", clean_passes=5),
        "l2r": dict(method="l2r"),
        "meta": dict(method="meta"),
        # the published recipe's two epochs of ERM before reweighting, given to the bi-level baselines
        # too (from a random init they collapse on the CNN: instance_cnn_runs)
        "l2r/warmup2": dict(method="l2r", warmup=2),
        "meta/warmup2": dict(method="meta", warmup=2),
        "paper": paper_kw(skip),
        "fbr-default": dict(method="fbr"),
        "fbr+whiten/10": dict(method="fbr", feature_whiten="auto", feature_whiten_every=10),
        "relabel": dict(method="relabel"),
        "relabel/hard-target": dict(method="relabel", relabel_options=dict(vote_target=0.0)),
    }


def instance_cc_runs():
    return {"erm": dict(method="erm"),
            "fbr+whiten/10": dict(method="fbr", feature_whiten="auto", feature_whiten_every=10),
            "relabel": dict(method="relabel"),
            "relabel/hard-target": dict(method="relabel", relabel_options=dict(vote_target=0.0))}


def instance_cnn_runs(epochs):
    cnn = dict(_model="cnn", _epochs=epochs)
    return {"erm": dict(method="erm", **cnn), "erm+cp": dict(method="erm", clean_passes=5, **cnn),
            "l2r": dict(method="l2r", **cnn), "meta": dict(method="meta", **cnn),
            # from a random init both collapse on the CNN (every prediction one class by the first
            # epoch's end, lr 0.05): the same two epochs of ERM first that the published recipe gets
            "l2r/warmup2": dict(method="l2r", warmup=2, **cnn), "meta/warmup2": dict(method="meta", warmup=2, **cnn),
            "paper": {**paper_kw(2), **cnn}, "fbr-default": dict(method="fbr", **cnn),
            "fbr+whiten/10": dict(method="fbr", feature_whiten="auto", feature_whiten_every=10, **cnn),
            "relabel": dict(method="relabel", **cnn)}


def refresh_runs():
    """The cache policy's refresh interval R (SPEC §5), in multiples of the default ceil(4·M/B):
    ``R=k·auto`` is ceil(4k·M/B) steps; ``R=epoch`` refreshes once per epoch (ceil(N/B) steps)."""
    return {
        "erm": dict(method="erm"),
        "fbr-default": dict(method="fbr"),
        "R=2·auto": dict(method="fbr", _refresh=2),
        "R=4·auto": dict(method="fbr", _refresh=4),
        "R=epoch": dict(method="fbr", _refresh="epoch"),
    }


def ablation_runs():
    base = dict(method="fbr")  # trainer defaults: stateful, shift="max", lr=0.1, warmup="auto", cache
    runs = {"erm": dict(method="erm"), "fbr-default": base}
    for s in ("second", "mean", "none"):
        runs[f"shift={s}"] = {**base, "shift": s}
    for lr in (0.5, 1.0):
        runs[f"lr={lr}"] = {**base, "lr": lr}
    for w in (0, 2, 10):
        runs[f"warmup={w}"] = {**base, "warmup": w}
    for pol in ("batch", "prototype"):
        runs[f"clean_features={pol}"] = {**base, "clean_features": pol}
    for m in (25, 400):
        runs[f"clean_size={m}"] = {**base, "_clean_size": m}
    return runs


def run_one(preset_name, dataset, noise, rate, seed, name, kw, clean_size=None):
    preset = P.get_preset(preset_name)
    kw = dict(kw)
    clean_size = kw.pop("_clean_size", clean_size or preset.clean_size)
    data = D.make_data(dataset, noise=noise, rate=rate, clean_size=clean_size, seed=seed)
    refresh = kw.pop("_refresh", None)
    model_name = kw.pop("_model", preset.model)
    epochs = kw.pop("_epochs", None)
    if refresh == "epoch":
        kw["refresh_every"] = -(-len(data.y_train) // preset.batch_size)
    elif refresh is not None:
        kw["refresh_every"] = max(1, -(-4 * refresh * clean_size // preset.batch_size))
    torch.manual_seed(seed)
    model = Mo.build_model(model_name, tuple(data.x_train.shape[1:]), data.num_classes)
    opt = P.build_optimizer(preset, model.parameters())
    tk = P.train_kwargs(preset)
    for k in list(tk):
        if k not in ("epochs", "batch_size", "lr_milestones", "lr_gamma"):
            tk.pop(k)
    tk.update(kw)
    if epochs is not None:
        tk["epochs"] = epochs
    res = train(model, opt, data, seed=seed, **tk)
    cw, nw = res.mean_weights()
    return dict(
        run=name, dataset=dataset, noise=noise, rate=rate, seed=seed, clean_size=clean_size, model=model_name,
        last_acc=res.last_acc, best_acc=res.best_acc, clean_weight=cw, noisy_weight=nw,
        epoch_s_median=statistics.median(res.epoch_seconds), epoch_s_mean=res.seconds_per_epoch,
        epochs=len(res.epoch_seconds), reweight_start_epoch=res.reweight_start_epoch,
        config={k: v for k, v in kw.items()},
    )


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("suite", choices=("variants", "ablation", "cleanpasses", "refresh", "whiten", "whiten-size",
                                          "whiten-cnn", "instance", "instance-cc", "instance-cnn"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--datasets", nargs="+", default=["mnist5k", "digits"])
    ap.add_argument("--cells", nargs="+", default=None, help="e.g. sym:0.4 asym:0.4")
    ap.add_argument("--only", nargs="+", default=None, help="run names to run")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=10, help="instance-cnn's epochs")
    ap.add_argument("--out", default=None)
    ap.add_argument("--concurrent-runs", type=int, default=1,
                    help="how many such processes share the machine (recorded with the timings)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    env = environment(torch.device("cpu"))
    default_out = {"instance": "instance_grid.jsonl", "instance-cc": "instance_cc.jsonl",
                   "instance-cnn": "instance_cnn.jsonl"}.get(args.suite, f"{args.suite}.jsonl")
    out = args.out or os.path.join(RESULTS, default_out)
    cells = NOISE_CELLS if args.cells is None else [(c.split(":")[0], float(c.split(":")[1])) for c in args.cells]
    jobs = []
    if args.suite == "variants":
        for dataset in args.datasets:
            preset = "demo-mnist" if dataset == "mnist5k" else "demo-digits"
            for noise, rate in cells:
                for seed in args.seeds:
                    for name, kw in variants(preset).items():
                        jobs.append((preset, dataset, noise, rate, seed, name, kw))
    elif args.suite in ("instance", "instance-cc", "instance-cnn"):
        if args.suite == "instance-cnn" and args.datasets == ["mnist5k", "digits"]:
            args.datasets = ["mnist5k"]
        icells = INSTANCE_CELLS if args.cells is None else cells
        for dataset in args.datasets:
            preset = "demo-mnist" if dataset == "mnist5k" else "demo-digits"
            runs = {"instance": lambda: instance_runs(preset), "instance-cc": instance_cc_runs,
                    "instance-cnn": lambda: instance_cnn_runs(args.epochs)}[args.suite]()
            for noise, rate in (NOISE_CELLS if args.suite == "instance-cc" and args.cells is None else icells):
                for seed in args.seeds:
                    for name, kw in runs.items():
                        jobs.append((preset, dataset, noise, rate, seed, name, kw))
    elif args.suite in ("cleanpasses", "refresh", "whiten", "whiten-size", "whiten-cnn"):
        runs = {"cleanpasses": clean_pass_runs, "refresh": refresh_runs, "whiten": whiten_runs,
                "whiten-size": whiten_size_runs, "whiten-cnn": whiten_cnn_runs}[args.suite]()
        if args.suite in ("whiten-size", "whiten-cnn") and args.datasets == ["mnist5k", "digits"]:
            args.datasets = ["mnist5k"]
        for dataset in args.datasets:
            preset = "demo-mnist" if dataset == "mnist5k" else "demo-digits"
            for noise, rate in cells:
                for seed in args.seeds:
                    for name, kw in runs.items():
                        jobs.append((preset, dataset, noise, rate, seed, name, kw))
    else:
        cells = [("sym", 0.4), ("asym", 0.4)] if args.cells is None else cells
        for noise, rate in cells:
            for seed in args.seeds:
                for name, kw in ablation_runs().items():
                    jobs.append(("demo-mnist", "mnist5k", noise, rate, seed, name, kw))
    if args.only:
        jobs = [j for j in jobs if j[5] in args.only]
    t0 = time.time()
    # time ratios pair a run with the ERM run of the same invocation (cell and seed): runs of another
    # invocation met another state of the machine
    invocation = uuid.uuid4().hex[:12]
    for i, (preset, dataset, noise, rate, seed, name, kw) in enumerate(jobs):
        rec = run_one(preset, dataset, noise, rate, seed, name, kw)
        rec.update(suite=args.suite, preset=preset, threads=args.threads, concurrent_runs=args.concurrent_runs,
                   invocation=invocation, env=env)
        with open(out, "a") as fh:
            fh.write(json.dumps(rec) + "\n")
        print(f"[{i + 1}/{len(jobs)} {time.time() - t0:.0f}s] {dataset} {noise}{rate} s{seed} {name:>18}: "
              f"last {rec['last_acc']:.3f} best {rec['best_acc']:.3f} w(clean) {rec['clean_weight']:.2f} "
              f"w(noisy) {rec['noisy_weight']:.2f} {rec['epoch_s_median']:.3f}s/epoch", flush=True)


if __name__ == "__main__":
    main()
