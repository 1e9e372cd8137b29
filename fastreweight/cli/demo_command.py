"""``fastreweight demo``: ERM, L2R, meta, FBR and relabel on MNIST-5k at 40% symmetric and asymmetric
noise with 100 clean labels, printed as a table (``--out``: also ``demo.json`` and ``demo.png``)."""
from __future__ import annotations

import time

import torch

from .. import data as D
from .. import models as Mo
from ..train import train
from .option_values import _device
from .outputs import _output_paths, _write_json, plot_results


# ---------------------------------------------------------------------------------------------
#: Demo settings (MLP 784-256-10 on MNIST-5k: 3900 train / 100 clean / 1000 test rows).  Every
#: method gets the same 5 clean passes per epoch (SPEC §6 fairness).
DEMO = dict(epochs=30, batch_size=64, lr=0.05, momentum=0.9, weight_decay=5e-4, clean_passes=5, clean_size=100,
            rate=0.4)
DEMO_METHODS = [
    ("ERM", dict(method="erm")),
    ("L2R", dict(method="l2r")),
    ("meta", dict(method="meta")),
    ("FBR", dict(method="fbr", recipe="paper", skip_epochs=2, alpha_epochs=10)),
    ("FBR+w", dict(method="fbr", feature_whiten="auto")),
    ("relabel", dict(method="relabel")),  # the recommended method (docs/instance-noise.md)
]


def run_demo(args) -> int:
    device = _device(args.device)
    cfg = dict(DEMO)
    if args.quick:
        cfg.update(epochs=1, clean_passes=1)
    if args.epochs is not None:
        cfg["epochs"] = args.epochs
    paths = None
    if args.out:
        paths = _output_paths(args.out, ("demo", "demo"), ("json", "png"), args.rename)
    rows, runs = [], []
    t0 = time.perf_counter()
    for noise in ("sym", "asym"):  # asym on MNIST: pair flip c -> (c+1) % 10
        data = D.make_data("mnist5k", noise=noise, rate=cfg["rate"], clean_size=cfg["clean_size"], seed=args.seed)
        for name, mk in DEMO_METHODS:
            mk = dict(mk)
            if args.quick and mk.get("recipe") == "paper":
                mk["skip_epochs"] = -1  # reweight from the first epoch
            elif args.quick and mk["method"] == "fbr":
                mk["warmup"] = 0
            torch.manual_seed(args.seed)
            model = Mo.build_model("mlp", data.input_shape, data.num_classes)
            opt = torch.optim.SGD(model.parameters(), lr=cfg["lr"], momentum=cfg["momentum"],
                                  weight_decay=cfg["weight_decay"])
            r = train(model, opt, data, epochs=cfg["epochs"], batch_size=cfg["batch_size"], device=device,
                      seed=args.seed, clean_passes=cfg["clean_passes"], progress=not args.no_progress,
                      desc=f"{name} {noise}", **mk)
            mc, mn = r.mean_weights()
            label = f"{name} {noise}"
            rows.append((label, r.best_acc, r.last_acc, mc, mn, r.seconds_per_epoch))
            runs.append((label, r))
    total = time.perf_counter() - t0
    print(f"MNIST-5k, 40% noise, {cfg['clean_size']} clean labels, {cfg['epochs']} epochs, "
          f"{cfg['clean_passes']} clean passes/epoch for every method, device {device}")
    print(f"{'run':<12}{'best acc':>10}{'last acc':>10}{'w clean':>10}{'w noisy':>10}{'s/epoch':>10}")
    for label, b, l, mc, mn, sp in rows:
        print(f"{label:<12}{b:>10.4f}{l:>10.4f}{mc:>10.3f}{mn:>10.3f}{sp:>10.3f}")
    print("(FBR: the published recipe, SPEC §7; FBR+w: the stateful FBR with whitened clean features, "
          "feature_whiten='auto'; relabel: NeighbourRelabel, the recommended method)")
    print("(weights: mean over the last epoch's steps; L2R/meta weights are rescaled to mean 1 per batch)")
    print(f"total {total:.1f} s")
    if paths:
        _write_json(paths[0], {"command": "demo", "config": cfg, "quick": bool(args.quick), "device": device,
                               "wall_seconds": total, "runs": [dict(label=l, **r.to_dict()) for l, r in runs]})
        plot_results(runs, paths[1], "fastreweight demo: MNIST-5k, 40% noise")
        print(f"wrote {paths[0]} and {paths[1]}")
    return 0
