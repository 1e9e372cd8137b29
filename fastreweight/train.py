"""``train(model, optimizer, data, method=..., **options)``: the in-memory entry point of the CLI and
the experiments, a thin adapter over ``fastreweight.training``.

``data`` is a ``fastreweight.data.NoisyData``; its tensors are moved to ``device`` once and batched by
``TensorLoader`` with one ``torch.Generator`` seeded with ``seed`` that drives, per epoch and in this
order, one ``randperm(M)`` per clean pass, ``randperm(N)`` for the training set (then any
``clean_mix`` permutations, clean mini-batch draws and ``augment(x, generator)`` draws of the epoch's
steps).  ``method`` names a method of ``fastreweight.training.METHODS`` (``"fbr"`` with
``recipe="paper"`` is ``FBRPaper``); ``options`` are the loop's (``LOOP_OPTIONS``) and the method's
(``METHOD_OPTIONS``), under the names this function has always taken.  Every option is documented on
the class it reaches: ``Trainer``, ``CleanSet``, ``ERM``, ``FBR``, ``FBRPaper``, ``MetaDirection``,
``L2R``, ``Warmup`` and the experimental ``CoTeaching``, ``RunningPrototypeFBR`` (``clean_features=
"prototype"``) and ``CleanMixLoader`` (``clean_mix=k``).

``distributed=True`` (``process_group``): ERM, relabel and FBR (``clean_features="cache"``) on every rank of an
initialised process group with the same arguments; every rank draws the same permutations and takes
its contiguous shard ``[r·b//R, (r+1)·b//R)`` of every global batch, so R ranks reproduce one process
up to summation order (``fastreweight.training.parallel``).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .data import NoisyData
from .experimental import CleanMixLoader, CoTeaching, RunningPrototypeFBR
from .training import (ERM, FBR, L2R, CleanSet, Distributed, FBRPaper, MetaDirection, NeighbourRelabel, Precision,
                       TensorLoader, Trainer, TrainResult, Warmup)
from .training.features import FeatureSource
from .training.records import accuracy
from .training.warmup import prototype_probe
from .whiten import check_whiten

__all__ = ["train", "TrainResult", "METHODS", "LOOP_OPTIONS", "METHOD_OPTIONS", "evaluate", "auto_warmup_probe"]

METHODS = ("erm", "fbr", "meta", "l2r", "coteaching", "relabel")

LOOP_OPTIONS = dict(epochs=10, device="cpu", batch_size=128, seed=0, scheduler=None, lr_milestones=None, lr_gamma=0.1,
                    clean_passes=0, clean_batch_size=128, clean_mix=0, amp=None, augment=None, eval_batch_size=1024,
                    callback=None, check_values=False, progress=False, desc=None, distributed=False,
                    process_group=None, checkpoint_dir=None, checkpoint_every=1, resume=None)
METHOD_OPTIONS = dict(
    warmup=None, auto_tol=0.005, auto_patience=2, max_warmup=None,  # reweighting methods
    recipe="stateful", shift="max", alpha=0.0, lr=0.1, reduction="weight_sum", clean_features="cache",  # fbr
    refresh_every="auto", feature_whiten=None, feature_whiten_every=1, prototype_momentum=0.9,
    batch_features=None, skip_epochs=10, alpha_epochs=40,
    meta_layers="head", inner_lr=None,  # meta / l2r
    model2=None, optimizer2=None, forget_rate=None, num_gradual=10, exponent=1.0,  # coteaching
    relabel_options=None,  # relabel: NeighbourRelabel's keywords (a dict)
)


def _options(method: str, options: dict) -> dict:
    unknown = sorted(set(options) - set(LOOP_OPTIONS) - set(METHOD_OPTIONS))
    if unknown:
        raise TypeError(f"train() got unknown option(s) {', '.join(unknown)}; see LOOP_OPTIONS and METHOD_OPTIONS")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    o = {**LOOP_OPTIONS, **METHOD_OPTIONS, **options}
    if o["recipe"] not in ("stateful", "paper"):
        raise ValueError(f"recipe must be 'stateful' or 'paper', got {o['recipe']!r}")
    if o["clean_features"] not in ("cache", "batch", "prototype"):
        raise ValueError(f"clean_features must be cache, batch or prototype, got {o['clean_features']!r}")
    try:
        check_whiten(o["feature_whiten"])
    except ValueError:
        raise ValueError(f"feature_whiten must be None, 'auto' or a positive number, got {o['feature_whiten']!r}") from None
    fwe = o["feature_whiten_every"]
    if isinstance(fwe, bool) or not isinstance(fwe, int) or fwe < 1:
        raise ValueError(f"feature_whiten_every must be an int >= 1, got {fwe!r}")
    if o["amp"] not in (None, "bf16", "fp16"):
        raise ValueError(f"amp must be None, 'bf16' or 'fp16', got {o['amp']!r}")
    paper = method == "fbr" and o["recipe"] == "paper"
    if o["feature_whiten"] is not None and not (method == "fbr" and (paper or o["clean_features"] == "cache")):
        raise ValueError("feature_whiten applies to method='fbr' with recipe='paper', or recipe='stateful' and "
                         f"clean_features='cache'; got method={method!r}, recipe={o['recipe']!r}, "
                         f"clean_features={o['clean_features']!r}")
    if o["epochs"] < 0 or o["batch_size"] < 1 or o["clean_batch_size"] < 1 or o["clean_passes"] < 0:
        raise ValueError("epochs and clean_passes must be >= 0, batch sizes >= 1")
    k = o["clean_mix"]
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"clean_mix must be an int >= 0, got {k!r}")
    if k and (method not in ("erm", "fbr") or o["distributed"]):
        raise ValueError(f"clean_mix is supported for method='erm' and method='fbr' without distributed=True; "
                         f"got method={method!r}, distributed={o['distributed']}")
    if o["batch_features"] is None:
        o["batch_features"] = "eval" if paper else "train"
    if o["distributed"] and not (method in ("erm", "relabel")
                                 or (method == "fbr" and not paper and o["clean_features"] == "cache")):
        raise ValueError("distributed=True supports method='erm', method='relabel' and method='fbr' with "
                         f"recipe='stateful' and clean_features='cache'; got method={method!r}, "
                         f"recipe={o['recipe']!r}, clean_features={o['clean_features']!r}")
    if not o["distributed"] and o["process_group"] is not None:
        raise ValueError("process_group is only used with distributed=True")
    return o


def _warmup(o: dict, default) -> Warmup:
    w = o["warmup"] if o["warmup"] is not None else default
    return Warmup(w, tol=o["auto_tol"], patience=o["auto_patience"], max_epochs=o["max_warmup"])


def _method(method: str, o: dict, data: NoisyData):
    if method == "erm":
        return ERM()
    if method == "fbr" and o["recipe"] == "paper":  # the authors' skip_epochs=k: reweighting from epoch k + 1
        skip = o["skip_epochs"]
        warm = Warmup("auto" if skip == "auto" else int(skip) + 1, tol=o["auto_tol"], patience=o["auto_patience"],
                      max_epochs=o["max_warmup"])
        return FBRPaper(warmup=warm, alpha_epochs=o["alpha_epochs"], batch_features=o["batch_features"],
                        whiten=o["feature_whiten"], whiten_every=o["feature_whiten_every"])
    if method == "fbr":
        kw = dict(step_size=o["lr"], shift=o["shift"], alpha=o["alpha"], warmup=_warmup(o, "auto"),
                  refresh_every=o["refresh_every"], whiten=o["feature_whiten"], whiten_every=o["feature_whiten_every"],
                  batch_features=o["batch_features"], reduction=o["reduction"])
        if o["clean_features"] == "prototype":
            return RunningPrototypeFBR(momentum=o["prototype_momentum"], **kw)
        return FBR(clean_features=o["clean_features"], **kw)
    if method == "meta":
        return MetaDirection(layers=o["meta_layers"], warmup=_warmup(o, 0))
    if method == "l2r":
        return L2R(inner_lr=o["inner_lr"], warmup=_warmup(o, 0))
    if method == "relabel":
        return NeighbourRelabel(**(o["relabel_options"] or {}))
    rate = o["forget_rate"]
    if rate is None:
        r = data.info.get("rate") if data.info.get("noise") not in ("user", "none") else None
        rate = float(r) if r else 0.2
    milestones = o["lr_milestones"] if o["scheduler"] is None else None
    make_s2 = (lambda opt: torch.optim.lr_scheduler.MultiStepLR(opt, list(milestones), o["lr_gamma"])) if milestones else None
    return CoTeaching(forget_rate=rate, num_gradual=o["num_gradual"], exponent=o["exponent"], model2=o["model2"],
                      optimizer2=o["optimizer2"], make_scheduler2=make_s2, seed2=o["seed"] + 7919)


def _param_dtype(model: nn.Module) -> torch.dtype:
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def _config(method: str, o: dict, data: NoisyData) -> dict:
    skip = ("model2", "optimizer2", "scheduler", "callback", "augment", "progress", "process_group", "checkpoint_dir",
            "resume")
    config = {"method": method, **{k: v for k, v in o.items() if k not in skip}}
    config["device"], config["data"] = str(o["device"]), data.summary()
    return config


def train(model: nn.Module, optimizer: torch.optim.Optimizer, data: NoisyData, *, method: str = "erm",
          **options) -> TrainResult:
    """Train ``model`` on ``data`` with ``method`` (see the module doc); returns a ``TrainResult``."""
    o = _options(method, options)
    dev = torch.device(o["device"])
    parallel = Distributed(o["process_group"]) if o["distributed"] else None
    trainer_model = model
    plain = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    plain.to(dev)
    dtype = _param_dtype(plain)

    def to(t):
        t = t.to(dev)
        return t.to(dtype) if t.is_floating_point() else t

    clean = CleanSet(to(data.x_clean), to(data.y_clean), passes=o["clean_passes"], batch_size=o["clean_batch_size"],
                     feature_batch_size=o["eval_batch_size"])
    g = torch.Generator().manual_seed(o["seed"])
    clean.generator = g
    trainer = Trainer(trainer_model, optimizer, _method(method, o, data), clean, scheduler=_scheduler(optimizer, o),
                      precision=Precision(o["amp"]), parallel=parallel, device=dev,
                      callbacks=[o["callback"]] if o["callback"] is not None else (), check_values=o["check_values"],
                      progress=(o["desc"] or method) if o["progress"] else False)
    shard = (trainer.parallel.rank, trainer.parallel.world) if o["distributed"] else None
    loader = TensorLoader(to(data.x_train), to(data.y_train), o["batch_size"], generator=g, transform=o["augment"],
                          shard=shard)
    if o["clean_mix"]:
        loader = CleanMixLoader(loader, clean, o["clean_mix"])
    test = TensorLoader(to(data.x_test), to(data.y_test), o["eval_batch_size"], shuffle=False) if len(data.y_test) else None
    result = trainer.fit(loader, o["epochs"], num_classes=data.num_classes, eval_loader=test,
                         true_labels=data.y_train_true, num_samples=len(data.y_train),
                         checkpoint_dir=o["checkpoint_dir"], checkpoint_every=o["checkpoint_every"], resume=o["resume"])
    config = _config(method, o, data)
    if o["distributed"]:
        config["world_size"] = trainer.parallel.world
    config.update({k: v for k, v in trainer.method.summary().items() if k != "refresh_every"})
    if method == "coteaching":
        config["forget_rate"] = trainer.method.forget_rate
    result.config = config
    if method == "fbr":
        result.method = f"fbr-{o['recipe']}"
    return result


def _scheduler(optimizer, o: dict):
    if o["scheduler"] is not None:
        return o["scheduler"]
    if o["lr_milestones"]:
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, list(o["lr_milestones"]), o["lr_gamma"])
    return None


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> float:
    """Accuracy of ``model`` on ``(x, y)`` in eval mode (the model's mode is restored)."""
    p = next(model.parameters())
    return accuracy(model, TensorLoader(x, y, batch_size, shuffle=False), p.device, _param_dtype(model))


@torch.no_grad()
def auto_warmup_probe(model: nn.Module, x_clean: torch.Tensor, y_clean: torch.Tensor, num_classes: int,
                      batch_size: int = 1024) -> float:
    """The auto warm-up's probe (``fastreweight.training.warmup``): cross-half prototype accuracy."""
    src = FeatureSource(model, from_training_forward=False, distributed=False)
    return prototype_probe(src.eval_features(x_clean, batch_size), y_clean, num_classes)
