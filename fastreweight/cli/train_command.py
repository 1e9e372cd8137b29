"""``fastreweight train``: one method on one dataset, for one or several seeds; writes ``results.json`` and
``plot.png`` (``--checkpoint-every``: checkpoints and their ``run.json``; ``--report``: the label audit)."""
from __future__ import annotations

import math
import os
import time

import torch

from .. import data as D
from .. import models as Mo
from ..train import TrainResult, train
from .label_audit import audit_training_labels
from .option_values import _class_names, _device
from .outputs import _output_paths, _write_json, plot_results
from .run_identity import _RUN_FORMAT, RUN_FILE, _check_resume, _fingerprint, _identity
from .train_settings import _resolve


def _run_one(s: dict, kw: dict, seed: int, device: str, progress: bool, desc: str, data_dir=None,
             cifar_n_file=None, checkpoints: dict | None = None, after=None, resumed: dict | None = None) -> TrainResult:
    """One training run; ``after(model, data)`` runs on the trained model (the ``--report`` audit).
    With a ``checkpoint_dir``, the run's data identity is written there first (``run.json``);
    ``resumed``: the run file of the checkpoint resumed, whose labels must be this run's."""
    data = D.make_data(s["dataset"], noise=s["noise"], rate=s["rate"], clean_size=s["clean_size"],
                       data_dir=data_dir, cifar_n_file=cifar_n_file, seed=seed)
    checkpoints = dict(checkpoints or {})
    fp = _fingerprint(data) if checkpoints else None
    if resumed is not None and resumed.get("labels") not in (None, fp):
        raise ValueError(f"--resume {checkpoints['resume']} is a checkpoint of a run on other data: its training "
                         "labels or clean subset differ from this run's (another --data-dir or --cifar-n-file?)")
    run_file = None
    if checkpoints.get("checkpoint_dir"):
        os.makedirs(checkpoints["checkpoint_dir"], exist_ok=True)
        run_file = os.path.join(checkpoints["checkpoint_dir"], RUN_FILE)
        _write_json(run_file, {"format": _RUN_FORMAT, "identity": _identity(s, seed), "labels": fp,
                               "method": s["method"], "model": s["model"],
                               **({"resumed_from": os.path.abspath(checkpoints["resume"])}
                                  if checkpoints.get("resume") else {})})
    torch.manual_seed(seed)
    model = Mo.build_model(s["model"], data.input_shape, data.num_classes)
    opt = torch.optim.SGD(model.parameters(), lr=s["lr"], momentum=s["momentum"], weight_decay=s["weight_decay"])
    aug = D.cifar_augment if s.get("augment") else None
    try:
        r = train(model, opt, data, method=s["method"], epochs=s["epochs"], batch_size=s["batch_size"],
                  device=device, seed=seed, lr_milestones=s["lr_milestones"], augment=aug, progress=progress,
                  desc=desc, **checkpoints, **kw)
    except BaseException:
        if run_file is not None and os.listdir(checkpoints["checkpoint_dir"]) == [RUN_FILE]:
            os.remove(run_file)  # no checkpoint was written: leave no directory that blocks a rerun
            os.rmdir(checkpoints["checkpoint_dir"])
        raise
    if after is not None:
        after(model, data)
    return r


def _check_train_args(args, s: dict) -> None:
    """The numeric options of ``train`` that would otherwise fail only after training (or silently)."""
    if args.checkpoint_every is not None and args.checkpoint_every < 1:
        raise ValueError(f"--checkpoint-every must be >= 1, got {args.checkpoint_every}")
    if args.report_samples < 0:
        raise ValueError(f"--report-samples must be >= 0, got {args.report_samples}")
    if args.report:
        from ..label_issues import SCORERS

        if args.report_scorer not in SCORERS:
            raise ValueError(f"--report-scorer must be one of {', '.join(SCORERS)}, got {args.report_scorer!r}")
    if s["epochs"] < 0:
        raise ValueError(f"--epochs must be >= 0, got {s['epochs']}")
    if s["batch_size"] < 1:
        raise ValueError(f"--batch-size must be >= 1, got {s['batch_size']}")
    if len(set(s["seeds"])) != len(s["seeds"]):
        raise ValueError(f"--seeds repeats a seed: {' '.join(map(str, s['seeds']))}")


def run_train(args) -> int:
    s, kw = _resolve(args)
    device = _device(args.device)
    names = _class_names(args.class_names)
    _check_train_args(args, s)
    resumed = None
    if args.resume:
        if len(s["seeds"]) > 1:
            raise ValueError("--resume continues one run: give one --seed")
        resumed = _check_resume(args.resume, s, s["seeds"][0])
    stems, exts = ("results", "plot"), ("json", "png")
    if args.report:
        stems += ("report",) if len(s["seeds"]) == 1 else tuple(f"report-seed{seed}" for seed in s["seeds"])
        exts += ("html",) * (len(stems) - 2)
    ck_dirs = tuple(f"checkpoints/seed-{seed}" for seed in s["seeds"]) if args.checkpoint_every else ()
    paths = _output_paths(args.out, stems, exts, args.rename, dirs=ck_dirs)
    json_path, png_path, *report_paths = paths[:len(stems)]
    ck_paths = dict(zip(s["seeds"], paths[len(stems):]))
    runs = []
    t0 = time.perf_counter()

    def audit(path, seed):
        def after(model, data):
            issues = audit_training_labels(
                model, data, path, dataset=s["dataset"], noise=s["noise"], scorer=args.report_scorer,
                class_names=names, max_samples=args.report_samples,
                title=f"Label issues: {s['method']} on {s['dataset']} ({s['noise']} {s['rate']}), seed {seed}")
            print(f"seed {seed}: label audit: {issues.summary()}; report: {path}")
        return after

    for k, seed in enumerate(s["seeds"]):
        after = audit(report_paths[k], seed) if args.report else None
        ck = {}
        if args.checkpoint_every:
            ck = dict(checkpoint_dir=ck_paths[seed], checkpoint_every=args.checkpoint_every)
            print(f"seed {seed}: checkpoints in {ck_paths[seed]}")
        if args.resume:
            ck["resume"] = args.resume
        r = _run_one(s, kw, seed, device, not args.no_progress, f"{s['method']} seed {seed}",
                     args.data_dir, args.cifar_n_file, ck, after=after, resumed=resumed)
        mc, mn = r.mean_weights()
        print(f"seed {seed}: best {r.best_acc:.4f} last {r.last_acc:.4f} weight clean {mc:.3f} "
              f"mislabelled {mn:.3f} {r.seconds_per_epoch:.2f} s/epoch")
        runs.append((f"seed {seed}", r))
    lasts = [r.last_acc for _, r in runs]
    bests = [r.best_acc for _, r in runs]

    def ms(v):
        m = sum(v) / len(v)
        sd = math.sqrt(sum((a - m) ** 2 for a in v) / (len(v) - 1)) if len(v) > 1 else 0.0
        return {"mean": m, "std": sd}

    out = {"command": "train", "settings": {k: v for k, v in s.items()}, "train_kwargs": {k: str(v) if not isinstance(v, (int, float, str, bool, type(None), list)) else v for k, v in kw.items()},
           "device": device, "torch": torch.__version__, "wall_seconds": time.perf_counter() - t0,
           "summary": {"best_acc": ms(bests), "last_acc": ms(lasts)},
           "runs": [dict(seed=seed, **r.to_dict()) for seed, (_, r) in zip(s["seeds"], runs)],
           **({"reports": report_paths} if report_paths else {}),
           **({"checkpoints": [ck_paths[seed] for seed in s["seeds"]]} if ck_paths else {}),
           **({"resumed_from": os.path.abspath(args.resume)} if args.resume else {})}
    _write_json(json_path, out)
    plot_results(runs, png_path, f"{s['method']} on {s['dataset']} ({s['noise']} {s['rate']})")
    print(f"wrote {json_path} and {png_path}")
    return 0
