"""A thin trainer for noisy labels with a small clean subset (SPEC §5–§7).

``train(model, optimizer, data, method=...)`` trains ``model`` on a ``fastreweight.data.NoisyData``
and returns a ``TrainResult``.  Methods (SPEC §6, same data, model and budget):

* ``"erm"`` — plain cross-entropy (one ``cross_entropy`` call with its mean reduction in a single
  process; the warm-up steps and clean passes of every method use the same).
* ``"fbr"`` — feature-based reweighting with the public API only (``fbr_scores``,
  ``Reweighter``/``threshold_weights``, ``weighted_loss``):

  - ``recipe="stateful"`` (default): a ``Reweighter`` (one weight per sample, init 1, clipped
    steps of size ``lr``, default 0.1: the best of 0.1/0.5/1.0 in the committed ablation,
    ``benchmarks/results/ablation.jsonl``; the ``Reweighter`` class itself keeps SPEC §3.6's 0.5) fed by ``fbr_scores(shift=shift, alpha=alpha)`` after a warm-up of uniform
    weights.  Batch features come from the training forward (free, ``batch_features="train"``) or an
    extra eval-mode forward (``"eval"``).  In a single process the step's loss is
    ``weighted_loss(cross_entropy(logits, y, "none"), w)`` computed with the scores and the update in
    one call (``CleanScorer.bind_weighted_loss``: one fused op with its own backward on the C++
    prototype path, else ``cross_entropy`` and a ``dot`` with the weights' coefficients).  Clean
    features follow ``clean_features`` (SPEC §5):
    ``"cache"`` (default) all clean features, eval mode, no_grad, refreshed every ``refresh_every``
    reweighting steps (``"auto"``: ``ceil(N/B)``, once per epoch, so refreshing costs ``M/N`` of an
    epoch's forward passes; the committed experiment ``benchmarks/results/refresh.jsonl`` found the
    same accuracy as refreshing every ``ceil(4·M/B)`` steps, the earlier default, on every cell); ``"batch"``: a fresh clean mini-batch per step; ``"prototype"``: running class
    means (EMA with ``prototype_momentum``) of the clean features, updated from one clean mini-batch
    per step and used as a C-row clean set (exact for the feature kernel, SPEC §4).
    ``feature_whiten`` (``"cache"`` only here, and ``recipe="paper"``; ``None`` by default): ``"auto"``
    or a strength ``t > 0`` scores against the cached clean features whitened by their own covariance
    (``fastreweight.whiten.shrunk_class_means``: the whitening is folded into the C class means at
    each refresh, so a step costs what it costs without it; ``"auto"`` picks ``t`` or the plain means
    by leave-one-out on the clean subset at every refresh).  ``TrainResult.config["whiten_strengths"]``
    lists the strength used at each refresh (``None``: plain means).  ``feature_whiten_every=k`` (default
    1) refits the whitening (the covariance's spectrum and, for ``"auto"``, the strength) at every k-th
    refresh only; the refreshes between shrink the new class means by the last fit
    (``ShrunkMeans.refold``: no eigendecomposition, no criterion), which divides the whitening's cost
    per epoch by about k.
  - ``recipe="paper"``: SPEC §7 step by step — every epoch starts with ``clean_passes`` passes over
    the clean subset (batch ``clean_batch_size`` = 128, mean CE, same optimiser); then, if
    ``epoch > skip_epochs``, the clean features (eval mode, no_grad) once; each training batch gets
    an eval-mode no_grad forward for its penultimate features, ``fbr_scores(center="clean",
    shift="second", alpha=1/(C−1) if epoch < alpha_epochs else 0)``, ``threshold_weights``, stored
    per sample (initial value 0.5, so the loss during ``epoch <= skip_epochs`` is 0.5·mean CE), and
    the loss ``weighted_loss(reduction="batch")``.  ``feature_whiten`` (not part of the recipe; off by
    default) whitens the epoch's clean features as for the cache policy, the criterion using the
    recipe's shift and that epoch's ``alpha``.

* ``"meta"`` — SPEC §3.5: ``capture.linear_factors`` of the head (``meta_layers="all"``: every
  ``nn.Linear``) for the batch and for a clean mini-batch, ``meta_scores``, ``stateless_weights``.
* ``"l2r"`` — Learning to Reweight (Ren et al. 2018): one look-ahead SGD step through
  ``torch.func.functional_call`` with per-sample weights ``eps = 0`` that require grad; weights are the
  normalised positive part of ``−∂L_clean/∂eps``.
* ``"coteaching"`` — two networks; each trains on the small-loss fraction ``1 − forget_rate(t)``
  chosen by the other, ``forget_rate(t) = forget_rate · min(1, t/num_gradual)^exponent``.

Every method accepts ``clean_passes`` (ERM included, so comparisons do not confound reweighting with
extra clean data, SPEC §6).  ``clean_mix=k`` (methods ``"erm"`` and ``"fbr"``) gives the clean subset the
same number of visits as ``k`` clean passes without the extra steps: each epoch the clean subset,
repeated ``k`` times and shuffled, is split evenly over the epoch's training batches and appended to
them with weight 1 (never scored, never reweighted; in the loss's normaliser like any row).

Warm-up (``warmup``, reweighting methods): an int number of epochs of uniform weights, or ``"auto"``:
at the end of every epoch the clean subset is split in two class-stratified halves and each half is
classified by nearest class mean (centred inner product, the FBR similarity) of the other half's
penultimate features (eval mode).  Reweighting starts with the epoch after this cross-half
prototype accuracy has not improved on its best by more than ``auto_tol`` (0.005) for
``auto_patience`` (2) epochs — the features stopped getting better — and at the latest after
``max(1, epochs // 3)`` epochs.  It needs no per-dataset threshold.  For ``recipe="paper"`` the
same rule is ``skip_epochs="auto"``.

Shuffling is reproducible: one ``torch.Generator`` seeded with ``seed`` drives, per epoch and in this
order, one ``randperm(M)`` per clean pass, then ``randperm(N)`` for the training set (then any
clean mini-batch draws and augmentation of that epoch's steps); ``clean_mix=k`` adds ``k`` draws of
``randperm(M)`` right after ``randperm(N)``.  ``callback(event)`` is called after
every optimiser step with a dict (``phase``: "clean" or "train", ``epoch``, ``step``, ``idx``,
``weights``, ``sample_weights``, ``model``).  The scoring calls skip their data-dependent checks
(host synchronisation) unless ``check_values=True``; the trainer builds labels in range itself.

Data parallelism (``distributed=True``, ``torch.distributed``/DDP; ``fastreweight.distributed``).
Supported: ``method="erm"`` and ``method="fbr"`` with ``recipe="stateful"`` and
``clean_features="cache"`` (any warm-up, ``batch_features``, ``clean_passes``, ``augment``); any
other combination raises ``ValueError``.  Call ``train`` on every rank of an initialised process
group (``process_group``, default the world group; ``RuntimeError`` if none is initialised) with the
same arguments, data and ``seed``.  R ranks reproduce the single-process run up to floating-point
summation order:

* **model**: pass the plain module (``train`` wraps it in ``DistributedDataParallel``, whose
  construction broadcasts rank 0's parameters and buffers; ``device_ids=[device]`` on CUDA) or an
  already wrapped ``DistributedDataParallel`` (used as is).  The optimiser is built on the plain
  module's parameters (they are the wrapper's).  Only training forwards go through the wrapper;
  no-grad feature and accuracy passes use the plain module (no collectives).
* **data order**: every rank draws the same permutations from its own generator seeded with
  ``seed`` (so the generators stay in lockstep), and every global batch ``perm[i:i+B]`` (clean-pass
  batches likewise) is split into R contiguous shards, rank r taking rows
  ``[r·b//R, (r+1)·b//R)`` of the b rows.  Sizes need not divide: shards may be unequal, or empty
  when b < R; an empty rank still runs the step (forward on zero rows, every collective, an
  all-zero gradient contribution), so collectives line up.  ``augment`` is applied to the global
  batch on every rank before sharding (same generator draws as one process).
* **clean features** (``"cache"``): every rank computes the features of the whole clean subset
  with its local copy of the model.  This is exact without a gather: DDP keeps the parameters
  bitwise identical on all ranks (same broadcast start, same all-reduced gradients, same optimiser
  step), so all ranks compute the same features, at the same steps (``refresh_every`` counts the
  global reweighting steps, which every rank takes).  It costs R× the (small) clean forward.
* **weights**: a ``DistributedReweighter`` — each step all-gathers the global batch's
  ``(idx, scores)`` (scores are per row, so local scoring equals global scoring) and applies the
  global update on every rank; ``TrainResult.final_weights`` is identical on all ranks.
* **loss**: ``distributed_weighted_loss`` (ERM, warm-up and clean passes: weights 1 with
  ``reduction="batch"``, i.e. the global mean), so DDP's gradient average is the gradient of the
  global batch loss.
* **records**: the per-step clean/noisy mean weights are all-reduced over ranks once per epoch (the
  global batch's means); test accuracy and the auto warm-up probe run on every rank on identical
  models.  ``callback`` sees the local shard (``idx``, ``weights``) and the plain module.
"""
from __future__ import annotations

import copy
import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from . import capture
from .data import NoisyData
from .whiten import check_whiten, shrunk_class_means
from .clean_scorer import CleanScorer
from .scores import fbr_scores, meta_scores
from .weights import WEIGHTED_LOSS_EPS as LOSS_EPS, Reweighter, stateless_weights, threshold_weights, weighted_loss

__all__ = ["train", "TrainResult", "METHODS", "evaluate", "auto_warmup_probe"]

METHODS = ("erm", "fbr", "meta", "l2r", "coteaching")


@dataclass
class TrainResult:
    """What ``train`` measured.  Per-step lists cover the training steps (not the clean passes);
    a step whose batch holds no clean (or no mislabelled) sample records NaN for that group."""

    method: str
    test_acc: list[float]
    best_acc: float
    last_acc: float
    clean_weight: list[float]
    noisy_weight: list[float]
    epoch_seconds: list[float]
    config: dict
    reweight_start_epoch: int | None = None
    probe: list[float] = field(default_factory=list)
    final_weights: torch.Tensor | None = field(default=None, repr=False)

    @property
    def seconds_per_epoch(self) -> float:
        return sum(self.epoch_seconds) / max(len(self.epoch_seconds), 1)

    def _tail_mean(self, xs: list[float], steps: int | None) -> float:
        tail = xs[-steps:] if steps else xs
        vals = [v for v in tail if v == v]
        return sum(vals) / len(vals) if vals else float("nan")

    def mean_weights(self, last_steps: int | None = None) -> tuple[float, float]:
        """(mean weight of clean samples, of mislabelled samples) over the last ``last_steps`` steps
        (default: the last epoch)."""
        if last_steps is None:
            last_steps = max(1, len(self.clean_weight) // max(len(self.test_acc), 1))
        return self._tail_mean(self.clean_weight, last_steps), self._tail_mean(self.noisy_weight, last_steps)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("final_weights")
        mc, mn = self.mean_weights()
        d["seconds_per_epoch"] = self.seconds_per_epoch
        d["last_epoch_clean_weight"], d["last_epoch_noisy_weight"] = mc, mn

        def clean(v):
            if isinstance(v, float) and not math.isfinite(v):
                return None
            if isinstance(v, dict):
                return {str(k): clean(x) for k, x in v.items()}
            if isinstance(v, (list, tuple)):
                return [clean(x) for x in v]
            if isinstance(v, (str, int, float, bool)) or v is None:
                return v
            return str(v)

        return clean(d)


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def _param_dtype(model: nn.Module) -> torch.dtype:
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> float:
    """Accuracy in eval mode (the model's mode is restored)."""
    was = model.training
    model.eval()
    correct = 0
    for i in range(0, len(y), batch_size):
        correct += (model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum().item()
    model.train(was)
    return correct / max(len(y), 1)


@torch.no_grad()
def _eval_features(model: nn.Module, x: torch.Tensor, batch_size: int = 1024,
                   tap: capture.FeatureTap | None = None, split=None) -> torch.Tensor:
    """Penultimate features in eval mode, no_grad (the model's mode is restored): from ``split`` (the
    model's ``features_and_logits``, ``capture.split_forward``) or through ``tap`` (a ``FeatureTap``
    already on the head) where given, else a hook per call (``capture.penultimate``)."""
    was = model.training
    model.eval()
    if split is not None:
        feats = [split(x[i:i + batch_size])[0] for i in range(0, len(x), batch_size)]
    elif tap is not None:
        feats = []
        for i in range(0, len(x), batch_size):
            model(x[i:i + batch_size])
            feats.append(tap.take())
    else:
        feats = [capture.penultimate(model, x[i:i + batch_size])[0] for i in range(0, len(x), batch_size)]
    model.train(was)
    out = feats[0] if len(feats) == 1 else torch.cat(feats)  # one chunk (the usual clean subset): no copy
    return out.float() if out.dtype in (torch.float16, torch.bfloat16) else out


@torch.no_grad()
def auto_warmup_probe(model: nn.Module, x_clean: torch.Tensor, y_clean: torch.Tensor, num_classes: int,
                      batch_size: int = 1024) -> float:
    """Cross-half prototype accuracy of the clean subset (see the module docstring)."""
    feats = _eval_features(model, x_clean, batch_size)
    half = torch.zeros(len(y_clean), dtype=torch.bool, device=y_clean.device)
    for c in range(num_classes):  # class-stratified alternation
        members = (y_clean == c).nonzero().flatten()
        half[members[::2]] = True
    correct, total = 0, 0
    for a, b in ((half, ~half), (~half, half)):
        if a.sum() == 0 or b.sum() == 0 or torch.unique(y_clean[b]).numel() < 2:
            continue
        d = fbr_scores(feats[a], y_clean[a], feats[b], y_clean[b], num_classes=num_classes,
                       shift="max", on_missing_class="skip")
        correct += (d > 0).sum().item()
        total += int(a.sum())
    return correct / max(total, 1)


class _AutoWarmup:
    def __init__(self, epochs: int, tol: float, patience: int, max_warmup: int | None):
        self.best = -1.0
        self.since = 0
        self.tol = tol
        self.patience = patience
        self.cap = max(1, epochs // 3) if max_warmup is None else int(max_warmup)

    def ready(self, epoch: int, value: float) -> bool:
        """Called at the end of ``epoch`` with the probe value; True: reweight from ``epoch + 1``."""
        if value > self.best + self.tol:
            self.best, self.since = max(value, self.best), 0
        else:
            self.best = max(self.best, value)
            self.since += 1
        return self.since >= self.patience or epoch + 1 >= self.cap


class _WeightLog:
    """The mean weight of each training step's clean rows and of its mislabelled rows, computed once
    per epoch rather than per step: a step only hands over its weight tensor (no tensor op; ERM, whose
    weights are all 1, hands over nothing) and the rows it covered, a contiguous range of the epoch's
    permutation.  At the end of the epoch one concatenation and one ``index_add_`` give every step's
    [Σ w·clean, #clean, Σ w·noisy, #noisy] (float64), which ranks all-reduce when distributed; a group
    absent from a step's batch gives NaN.  No host synchronisation until the single read-back.

    The weight tensors are kept by reference until the epoch ends: every method returns a fresh
    tensor per step (never a view of state it updates later)."""

    def __init__(self) -> None:
        self.ranges: list[tuple[int, int]] = []  # (first row, number of rows) of the permutation
        self.weights: list[torch.Tensor] = []

    def add(self, start: int, rows: int, w: torch.Tensor | None) -> None:
        self.ranges.append((start, rows))
        if w is not None:
            self.weights.append(w.detach() if w.requires_grad else w)

    def step_sums(self, perm: torch.Tensor, is_clean: torch.Tensor) -> torch.Tensor | None:
        """(steps × 4) float64 sums of the epoch's steps; ``None`` if no step was logged."""
        if not self.ranges:
            return None
        dev = perm.device
        starts, sizes = torch.tensor(self.ranges, device=dev).unbind(1)
        total = sum(n for _, n in self.ranges)
        step = torch.repeat_interleave(torch.arange(len(self.ranges), device=dev), sizes, output_size=total)
        # row r of the log is row starts[s] + (r − first row of step s) of the permutation
        pos = (starts - (torch.cumsum(sizes, 0) - sizes))[step] + torch.arange(total, device=dev)
        m = is_clean[perm[pos]].to(torch.float64)
        w = (torch.cat(self.weights).to(torch.float64) if self.weights
             else torch.ones(total, dtype=torch.float64, device=dev))
        cols = torch.stack([w * m, m, w * (1 - m), 1 - m], dim=1)
        self.ranges.clear()
        self.weights.clear()
        return torch.zeros(len(sizes), 4, dtype=torch.float64, device=dev).index_add_(0, step, cols)


def _shard_start(rows: int, rank: int, world: int) -> int:
    """The first row of ``_shard``'s part of ``rows`` rows."""
    return rank * rows // world


def _shard(t: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """Rows ``[rank·b//world, (rank+1)·b//world)`` of the ``b`` rows of ``t`` (possibly empty)."""
    b = t.shape[0]
    return t[rank * b // world:(rank + 1) * b // world]


# ---------------------------------------------------------------------------------------------
# the trainer
# ---------------------------------------------------------------------------------------------
def train(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: NoisyData,
    *,
    method: str = "erm",
    epochs: int = 10,
    device: str | torch.device = "cpu",
    batch_size: int = 128,
    seed: int = 0,
    scheduler=None,
    lr_milestones: list[int] | None = None,
    lr_gamma: float = 0.1,
    clean_passes: int = 0,
    clean_batch_size: int = 128,
    clean_mix: int = 0,
    warmup: int | str | None = None,
    auto_tol: float = 0.005,
    auto_patience: int = 2,
    max_warmup: int | None = None,
    # fbr
    recipe: str = "stateful",
    shift: str = "max",
    alpha: float = 0.0,
    lr: float = 0.1,
    reduction: str = "weight_sum",
    clean_features: str = "cache",
    refresh_every: int | str = "auto",
    feature_whiten: str | float | None = None,
    feature_whiten_every: int = 1,
    prototype_momentum: float = 0.9,
    batch_features: str | None = None,
    skip_epochs: int | str = 10,
    alpha_epochs: int = 40,
    # meta / l2r
    meta_layers: str | list = "head",
    inner_lr: float | None = None,
    # coteaching
    model2: nn.Module | None = None,
    optimizer2: torch.optim.Optimizer | None = None,
    forget_rate: float | None = None,
    num_gradual: int = 10,
    exponent: float = 1.0,
    # misc
    amp: str | None = None,
    augment: Callable | None = None,
    eval_batch_size: int = 1024,
    callback: Callable[[dict], None] | None = None,
    check_values: bool = False,
    progress: bool = False,
    desc: str | None = None,
    # data parallelism (see the module docstring)
    distributed: bool = False,
    process_group=None,
) -> TrainResult:
    """Train ``model`` on ``data`` with ``method``; see the module docstring for every option."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    if recipe not in ("stateful", "paper"):
        raise ValueError(f"recipe must be 'stateful' or 'paper', got {recipe!r}")
    if clean_features not in ("cache", "batch", "prototype"):
        raise ValueError(f"clean_features must be cache, batch or prototype, got {clean_features!r}")
    try:
        feature_whiten = check_whiten(feature_whiten)
    except ValueError:
        raise ValueError(f"feature_whiten must be None, 'auto' or a positive number, got {feature_whiten!r}") from None
    if feature_whiten is not None and not (method == "fbr" and (recipe == "paper" or clean_features == "cache")):
        raise ValueError("feature_whiten applies to method='fbr' with recipe='paper', or recipe='stateful' and "
                         f"clean_features='cache'; got method={method!r}, recipe={recipe!r}, "
                         f"clean_features={clean_features!r}")
    if isinstance(feature_whiten_every, bool) or not isinstance(feature_whiten_every, int) or feature_whiten_every < 1:
        raise ValueError(f"feature_whiten_every must be an int >= 1, got {feature_whiten_every!r}")
    if amp not in (None, "bf16", "fp16"):
        raise ValueError(f"amp must be None, 'bf16' or 'fp16', got {amp!r}")
    if epochs < 0 or batch_size < 1 or clean_batch_size < 1 or clean_passes < 0:
        raise ValueError("epochs and clean_passes must be >= 0, batch sizes >= 1")
    if isinstance(clean_mix, bool) or not isinstance(clean_mix, int) or clean_mix < 0:
        raise ValueError(f"clean_mix must be an int >= 0, got {clean_mix!r}")
    if clean_mix and (method not in ("erm", "fbr") or distributed):
        raise ValueError(f"clean_mix is supported for method='erm' and method='fbr' without distributed=True; "
                         f"got method={method!r}, distributed={distributed}")
    paper = method == "fbr" and recipe == "paper"
    if batch_features is None:
        batch_features = "eval" if paper else "train"
    if batch_features not in ("train", "eval"):
        raise ValueError(f"batch_features must be 'train' or 'eval', got {batch_features!r}")
    if distributed:
        if not (method == "erm" or (method == "fbr" and recipe == "stateful" and clean_features == "cache")):
            raise ValueError(
                "distributed=True supports method='erm' and method='fbr' with recipe='stateful' and "
                f"clean_features='cache'; got method={method!r}, recipe={recipe!r}, clean_features={clean_features!r}")
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError("distributed=True needs an initialised torch.distributed process group "
                               "(call torch.distributed.init_process_group on every rank first)")
    elif process_group is not None:
        raise ValueError("process_group is only used with distributed=True")

    config = {k: v for k, v in locals().items()
              if k not in ("model", "optimizer", "data", "model2", "optimizer2", "scheduler", "callback",
                           "augment", "progress", "process_group")}
    config["device"] = str(device)
    config["data"] = data.summary()

    dev = torch.device(device)
    # ``net``: the module the training forwards go through (the DDP wrapper when distributed)
    ddp_cls = nn.parallel.DistributedDataParallel
    if distributed and isinstance(model, ddp_cls):
        net, model = model, model.module
        model.to(dev)
    else:
        model.to(dev)
        net = model
    rank, world = 0, 1
    if distributed:
        rank, world = dist.get_rank(process_group), dist.get_world_size(process_group)
        config["world_size"] = world
        if net is model:
            net = ddp_cls(model, device_ids=[dev] if dev.type == "cuda" else None, process_group=process_group)
    dtype = _param_dtype(model)
    wdtype = torch.float64 if dtype == torch.float64 else torch.float32
    C = data.num_classes

    def to(t, float_=True):
        t = t.to(dev)
        return t.to(dtype) if float_ and t.is_floating_point() else t

    x, y, y_true = to(data.x_train), to(data.y_train), to(data.y_train_true)
    xc, yc = to(data.x_clean), to(data.y_clean)
    xt, yt = to(data.x_test), to(data.y_test)
    N, M = len(y), len(yc)
    is_clean_all = y == y_true
    g = torch.Generator().manual_seed(seed)

    # ---- schedules, second network --------------------------------------------------------
    schedulers = []
    if scheduler is not None:
        schedulers.append(scheduler)
    elif lr_milestones:
        schedulers.append(torch.optim.lr_scheduler.MultiStepLR(optimizer, list(lr_milestones), lr_gamma))
    models = [model]
    optimizers = [optimizer]
    if method == "coteaching":
        if model2 is None:
            model2 = copy.deepcopy(model)
            with torch.no_grad():
                gen_state = torch.random.get_rng_state()
                torch.manual_seed(seed + 7919)
                for m in model2.modules():
                    if hasattr(m, "reset_parameters") and m is not model2:
                        m.reset_parameters()
                torch.random.set_rng_state(gen_state)
        model2.to(dev)
        if optimizer2 is None:
            optimizer2 = type(optimizer)(model2.parameters(), **optimizer.defaults)
            for pg2, pg in zip(optimizer2.param_groups, optimizer.param_groups):
                pg2["lr"] = pg["lr"]
        models.append(model2)
        optimizers.append(optimizer2)
        if scheduler is None and lr_milestones:
            schedulers.append(torch.optim.lr_scheduler.MultiStepLR(optimizer2, list(lr_milestones), lr_gamma))
        if forget_rate is None:
            r = data.info.get("rate") if data.info.get("noise") not in ("user", "none") else None
            forget_rate = float(r) if r else 0.2
        config["forget_rate"] = forget_rate

    # ---- mixed precision ------------------------------------------------------------------
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    scaler = torch.amp.GradScaler(dev.type) if (amp == "fp16" and dev.type == "cuda") else None

    no_autocast = nullcontext()  # reusable: one object for every step without mixed precision

    def autocast():
        return torch.autocast(dev.type, dtype=amp_dtype) if amp_dtype is not None else no_autocast

    def backward_step(loss, opt):
        opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()

    # ---- warm-up ---------------------------------------------------------------------------
    reweighting = method in ("fbr", "meta", "l2r")
    auto = None
    if paper:
        if skip_epochs == "auto":
            auto = _AutoWarmup(epochs, auto_tol, auto_patience, max_warmup)
            start_epoch = None  # reweight when epoch > skip; unknown yet
        else:
            start_epoch = int(skip_epochs) + 1
    elif reweighting:
        w_ = warmup if warmup is not None else ("auto" if method == "fbr" else 0)
        if w_ == "auto":
            auto = _AutoWarmup(epochs, auto_tol, auto_patience, max_warmup)
            start_epoch = None
        else:
            start_epoch = int(w_)
    else:
        start_epoch = None

    # ---- per-sample state ------------------------------------------------------------------
    sample_weights = None
    rw = None
    if paper:
        sample_weights = torch.full((N,), 0.5, dtype=wdtype, device=dev)
    elif method == "fbr":
        if distributed:
            from .distributed import DistributedReweighter

            rw = DistributedReweighter(N, lr=lr, init=1.0, device=dev, dtype=wdtype, group=process_group)
        else:
            rw = Reweighter(N, lr=lr, init=1.0, device=dev, dtype=wdtype)
        sample_weights = rw.weights
    if refresh_every == "auto":  # once per epoch: as accurate as every ceil(4·M/B) steps, cheaper
        refresh_every = max(1, math.ceil(N / batch_size))
    refresh_every = int(refresh_every)
    config["refresh_every"] = refresh_every

    layers = None
    if method == "meta":
        if meta_layers == "head":
            layers = [capture.find_head(model)]
        elif meta_layers == "all":
            layers = [m for m in model.modules() if isinstance(m, nn.Linear)]
        else:
            layers = list(meta_layers)

    clean_w, noisy_w, test_acc, epoch_secs, probes = [], [], [], [], []
    weight_log = _WeightLog()
    state = {"step": 0, "rw_step": 0, "Z": None, "proto": None, "proto_seen": None, "clean_new": False,
             "whiten_refreshes": 0}
    whiten_strengths: list = []  # feature_whiten: the strength used at each refresh
    head = capture.find_head(model) if method == "fbr" else None  # found once, not every step

    def emit(phase, epoch, idx=None, w=None):
        if callback is not None:
            callback({"phase": phase, "epoch": epoch, "step": state["step"], "idx": idx, "weights": w,
                      "sample_weights": sample_weights if rw is None else rw.weights, "model": model})

    def clean_minibatch():
        if M <= clean_batch_size:
            return xc, yc
        sel = torch.randperm(M, generator=g)[:clean_batch_size].to(dev)
        return xc[sel], yc[sel]

    def ce(logits, t):
        return F.cross_entropy(logits.float() if amp_dtype is not None else logits, t, reduction="none")

    def mean_ce(logits, t):
        """Mean cross-entropy over the (global) batch: one ``cross_entropy`` call in a single process
        (its own mean reduction: one op and node fewer than the per-row losses and ``mean``, which
        costs ERM's step measurably on a small model), the per-row losses' global mean when
        distributed."""
        if not distributed:
            return F.cross_entropy(logits.float() if amp_dtype is not None else logits, t)
        return mean_loss(ce(logits, t))

    def mean_loss(losses):
        """The mean of the losses over the (global) batch."""
        if not distributed:
            return losses.mean()
        from .distributed import distributed_weighted_loss

        return distributed_weighted_loss(losses, torch.ones_like(losses), reduction="batch", group=process_group)

    def reweighted_loss(losses, w):
        if not distributed:
            return weighted_loss(losses, w, reduction=reduction)
        from .distributed import distributed_weighted_loss

        return distributed_weighted_loss(losses, w, reduction=reduction, group=process_group)

    # ---- clean passes (SPEC §7): ordinary training on the clean subset ------------------------
    def clean_pass(epoch):
        for m in models:
            m.train()
        perm = torch.randperm(M, generator=g).to(dev)
        fwd = [net] if distributed else models
        for i in range(0, M, clean_batch_size):
            b = perm[i:i + clean_batch_size]
            if distributed:
                b = _shard(b, rank, world)
            for m, opt in zip(fwd, optimizers):
                with autocast():
                    loss = mean_ce(m(xc[b]), yc[b])
                backward_step(loss, opt)
            state["step"] += 1
            emit("clean", epoch, b, None)

    # ---- stateful FBR clean features (SPEC §5) ---------------------------------------------
    def whitened_clean(shift_, alpha_):
        """Replace the fresh clean features ``state["Z"]`` by the C whitened class means: a new fit at
        every ``feature_whiten_every``-th refresh, the last fit's fold of the new means in between."""
        fit = state.get("whiten_fit")
        if fit is None or state["whiten_refreshes"] % feature_whiten_every == 0:
            fit = shrunk_class_means(state["Z"], yc, C, whiten=feature_whiten, shift=shift_, alpha=alpha_,
                                     check_values=check_values)
        else:
            fit = fit.refold(state["Z"], yc, C)
        state["whiten_fit"] = fit
        state["whiten_refreshes"] += 1
        state["Z"], state["Zy"] = fit.rows, fit.labels
        whiten_strengths.append(fit.strength)

    def stateful_clean_feats():
        if clean_features == "cache":
            if state["Z"] is None or state["rw_step"] % refresh_every == 0:
                state["Z"], state["Zy"] = _eval_features(model, xc, eval_batch_size, tap, split_eval), yc
                state["clean_new"] = True  # the scorer takes them on first use, in the batch features' dtype
                if feature_whiten is not None:  # C rows standing for the whitened clean side
                    whitened_clean(shift, alpha)
            return state["Z"], state["Zy"]
        if clean_features == "batch":
            xb_c, yb_c = clean_minibatch()
            return _eval_features(model, xb_c, eval_batch_size, tap, split_eval), yb_c
        # prototype (no host synchronisation per step: class counts by index_add_, masked updates by
        # torch.where; the list of present classes is read back only until every class has been seen)
        def class_sums(Z, labels):
            S = torch.zeros(C, Z.shape[1], dtype=Z.dtype, device=dev).index_add_(0, labels, Z)
            cnt = torch.zeros(C, dtype=Z.dtype, device=dev).index_add_(0, labels, torch.ones_like(labels, dtype=Z.dtype))
            return S, cnt

        if state["proto"] is None:
            Z = _eval_features(model, xc, eval_batch_size, tap, split_eval)
            S, cnt = class_sums(Z, yc)
            state["proto"] = S / cnt.clamp_min(1)[:, None]
            state["proto_seen"] = cnt > 0
        else:
            xb_c, yb_c = clean_minibatch()
            S, cnt = class_sums(_eval_features(model, xb_c, eval_batch_size, tap, split_eval), yb_c)
            has = (cnt > 0)[:, None]
            P = state["proto"]
            P.copy_(torch.where(has, prototype_momentum * P + (1 - prototype_momentum) * (S / cnt.clamp_min(1)[:, None]), P))
            state["proto_seen"] |= has[:, 0]
        if state.get("proto_all_seen") is None:
            present = state["proto_seen"].nonzero().flatten()
            if len(present) < C:
                return state["proto"][present], present
            state["proto_all_seen"] = torch.arange(C, device=dev)
        return state["proto"], state["proto_all_seen"]

    # ---- one training step per method --------------------------------------------------------
    # the stateful step's loss from the weights' own coefficients (one dot): a single process and the
    # "weight_sum" reduction, whose eps is weighted_loss's default
    coef_loss = not distributed and reduction == "weight_sum"

    def with_mixed(w, n_rows):
        """The batch's weights followed by weight 1 for its mixed-in clean rows (``clean_mix``)."""
        extra = n_rows - w.shape[0]
        return w if extra == 0 else torch.cat([w, torch.ones(extra, dtype=w.dtype, device=w.device)])

    def current_scorer(Z, u, dtype, center):
        """``state["scorer"]`` for the clean features ``Z`` (labels ``u``): built on first use (or for a
        new dtype), afterwards refreshed in place when the cache holds new features — the labels are
        the same at every refresh (``yc``, or under whitening the classes present in ``yc``), so only
        what depends on the values is recomputed (``CleanScorer.refresh``)."""
        sc = state.get("scorer")
        if sc is None or sc.dtype != dtype:
            sc = state["scorer"] = CleanScorer(Z.to(dtype), u, num_classes=C, center=center, check_values=check_values)
        elif state["clean_new"]:
            sc.refresh(Z.to(dtype))
        state["clean_new"] = False
        return sc

    def step_fbr_stateful(xb, yb, idx, active):
        # rows [0, nb) are the training batch; rows past nb are mixed-in clean rows (clean_mix)
        nb = idx.shape[0]
        if not active:
            with autocast():
                logits = net(xb)
            loss = mean_ce(logits, yb)
            return loss, rw.weights[idx]
        if batch_features == "eval":
            feats = _eval_features(model, xb[:nb], eval_batch_size, tap, split_eval) if nb else None
            with autocast():
                logits = net(xb)
        elif split is not None:  # the model returns its head's input with the logits: no hook
            with autocast():
                feats, logits = split(xb)
            if feats.shape[0] != nb:
                feats = feats[:nb]
            feats = feats.detach().float() if amp_dtype is not None else feats.detach()
        else:
            with autocast():
                logits = net(xb)
            feats = tap.take()  # the head's input in this forward (hook registered once per call)
            if feats.shape[0] != nb:
                feats = feats[:nb]
            feats = feats.detach().float() if amp_dtype is not None else feats.detach()
        yb_all = yb
        if yb.shape[0] != nb:
            yb = yb[:nb]
        coef = None
        Z, u = stateful_clean_feats()
        if len(yb) and clean_features == "cache":
            # the cached clean side is scored against many batches: prepared once per refresh; the
            # scores and the Reweighter update run as one op where the backend fuses them
            sc = current_scorer(Z, u, feats.dtype, "clean")
            if coef_loss and yb_all.shape[0] == nb:
                # the loss's normalisation Σ w_i l_i / max(Σ w_i, eps) comes with the weights (the fused
                # op forms w / max(Σw, eps) in the same call): the loss is one dot product
                d, w, coef = sc.reweight(rw, idx, feats, yb, shift=shift, alpha=alpha, on_missing_class="skip",
                                         loss_eps=LOSS_EPS)
            else:
                d, w = sc.reweight(rw, idx, feats, yb, shift=shift, alpha=alpha, on_missing_class="skip")
        else:
            if len(yb):
                d = fbr_scores(feats, yb, Z.to(feats.dtype), u, num_classes=C, shift=shift, alpha=alpha,
                               on_missing_class="skip", check_values=check_values)
            else:  # an empty shard (distributed): nothing to score, but rw.step's collectives still run
                d = torch.zeros(0, dtype=wdtype, device=dev)
            w = rw.step(idx, d, check_values=check_values)
        state["rw_step"] += 1
        losses, loss_dtype = ce(logits, yb_all), torch.float32 if amp_dtype else logits.dtype
        if coef is not None:
            return torch.dot(losses, coef.to(loss_dtype)), w
        return reweighted_loss(losses, with_mixed(w.to(loss_dtype), yb_all.shape[0])), w

    def step_fbr_paper(xb, yb, idx, active, epoch):
        nb = idx.shape[0]  # rows past nb: mixed-in clean rows (clean_mix), weight 1
        if active:
            a = 1.0 / (C - 1) if epoch < alpha_epochs else 0.0
            if batch_features == "eval":
                model.eval()
                with torch.no_grad(), autocast():
                    feats = (split_eval(xb[:nb])[0] if split_eval is not None
                             else capture.penultimate(model, xb[:nb], head=head)[0])
                model.train()
                with autocast():
                    logits = model(xb)
            elif split is not None:
                with autocast():
                    feats, logits = split(xb)
                feats = feats[:nb]
            else:
                with autocast():
                    logits = model(xb)
                feats = tap.take()[:nb]
            feats = feats.detach()
            if amp_dtype is not None:
                feats = feats.float()
            current_scorer(state["Z"], state["Zy"], feats.dtype, "clean")
            d = state["scorer"].fbr_scores(feats, yb[:nb], shift="second", alpha=a, on_missing_class="skip")
            w = threshold_weights(d, check_values=check_values).to(wdtype)
            sample_weights[idx] = w  # idx holds no repeats: w is what sample_weights[idx] now reads
        else:
            with autocast():
                logits = model(xb)
            w = sample_weights[idx]
        losses = ce(logits, yb)
        loss = weighted_loss(losses, with_mixed(w.to(losses.dtype), losses.shape[0]), reduction="batch")
        return loss, w

    def step_meta(xb, yb, active):
        if not active:
            with autocast():
                logits = model(xb)
            return mean_ce(logits, yb), torch.ones(len(yb), device=dev)
        A, D, _ = capture.linear_factors(model, layers, xb, yb)
        xb_c, yb_c = clean_minibatch()
        Ac, Dc, _ = capture.linear_factors(model, layers, xb_c, yb_c)
        r = meta_scores(A, D, Ac, Dc, check_values=check_values)
        w = stateless_weights(r, check_values=check_values)
        with autocast():
            logits = model(xb)
        losses = ce(logits, yb)
        return weighted_loss(losses, w.to(losses.dtype), reduction="batch"), w

    def step_l2r(xb, yb, active, opt):
        if not active:
            with autocast():
                logits = model(xb)
            return mean_ce(logits, yb), torch.ones(len(yb), device=dev)
        params = {k: v for k, v in model.named_parameters()}
        buffers = {k: v.clone() for k, v in model.named_buffers()}  # the look-ahead must not move BN stats
        a_lr = inner_lr if inner_lr is not None else opt.param_groups[0]["lr"]
        eps = torch.zeros(len(yb), dtype=dtype, device=dev, requires_grad=True)
        out = torch.func.functional_call(model, (params, buffers), (xb,))
        l_inner = (eps * F.cross_entropy(out, yb, reduction="none")).sum()
        names = [k for k, v in params.items() if v.requires_grad]
        grads = torch.autograd.grad(l_inner, [params[k] for k in names], create_graph=True, allow_unused=True)
        new = dict(params)
        for k, gk in zip(names, grads):
            if gk is not None:
                new[k] = params[k] - a_lr * gk
        xb_c, yb_c = clean_minibatch()
        out_c = torch.func.functional_call(model, (new, buffers), (xb_c,))
        l_clean = F.cross_entropy(out_c, yb_c)
        grad_eps = torch.autograd.grad(l_clean, eps)[0]
        w = (-grad_eps).clamp_min(0).detach()
        s = w.sum()
        w = w / s if s > 0 else w
        with autocast():
            logits = model(xb)
        losses = ce(logits, yb)
        # Σ w_i l_i with Σ w = 1; the recorded weights are rescaled to mean 1 for comparability
        return (w.to(losses.dtype) * losses).sum(), w * len(w)

    # ---- the loop ----------------------------------------------------------------------------
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs, desc=desc or method, leave=False)
    reweight_start = start_epoch
    # the batch features of the training forward: from the model's features_and_logits where it has one
    # (a single process: DDP's forward must run for its gradient hooks), else through a hook on the head;
    # the eval-mode clean features from it too
    split_eval = capture.split_forward(model) if method == "fbr" else None
    split = split_eval if (batch_features == "train" and not distributed) else None
    tap = capture.FeatureTap(head) if (method == "fbr" and batch_features == "train" and split is None) else None
    try:
        for epoch in range(epochs):
            t0 = time.perf_counter()
            for m in models:
                m.train()
            for _ in range(clean_passes):
                clean_pass(epoch)
            active = reweight_start is not None and epoch >= reweight_start
            if paper and active:
                state["Z"], state["Zy"] = _eval_features(model, xc, eval_batch_size, tap, split_eval), yc
                state["clean_new"] = True  # the scorer takes them on first use
                if feature_whiten is not None:  # C rows standing for the whitened clean side
                    whitened_clean("second", 1.0 / (C - 1) if epoch < alpha_epochs else 0.0)
            if method == "coteaching":
                rate_t = forget_rate * min(1.0, epoch / max(num_gradual, 1)) ** exponent
            perm = torch.randperm(N, generator=g).to(dev)
            mixed = None
            if clean_mix:  # the clean subset clean_mix times, shuffled, spread evenly over the batches
                mix = torch.cat([torch.randperm(M, generator=g) for _ in range(clean_mix)]).to(dev)
                mixed = torch.tensor_split(mix, math.ceil(N / batch_size))
            for i in range(0, N, batch_size):
                idx = perm[i:i + batch_size]
                xb, yb = x[idx], y[idx]
                if augment is not None:
                    xb = augment(xb, g)
                if mixed is not None:  # appended after the training rows, never augmented (as clean passes)
                    cidx = mixed[i // batch_size]
                    xb, yb = torch.cat([xb, xc[cidx]]), torch.cat([yb, yc[cidx]])
                first = i  # the rows of perm this step covers: [first, first + len(idx))
                if distributed:  # this rank's contiguous shard of the global batch
                    first += _shard_start(len(idx), rank, world)
                    idx, xb, yb = (_shard(t, rank, world) for t in (idx, xb, yb))
                if method == "erm":
                    with autocast():
                        logits = net(xb)
                    loss, w = mean_ce(logits, yb), None
                    backward_step(loss, optimizer)
                elif method == "fbr":
                    loss, w = (step_fbr_paper(xb, yb, idx, active, epoch) if paper
                               else step_fbr_stateful(xb, yb, idx, active))
                    backward_step(loss, optimizer)
                elif method == "meta":
                    loss, w = step_meta(xb, yb, active)
                    backward_step(loss, optimizer)
                elif method == "l2r":
                    loss, w = step_l2r(xb, yb, active, optimizer)
                    backward_step(loss, optimizer)
                else:  # coteaching
                    with autocast():
                        l1 = ce(model(xb), yb)
                        l2 = ce(model2(xb), yb)
                    keep = max(1, int(round((1 - rate_t) * len(yb))))
                    s1 = torch.argsort(l1.detach())[:keep]
                    s2 = torch.argsort(l2.detach())[:keep]
                    backward_step(l1[s2].mean(), optimizer)
                    backward_step(l2[s1].mean(), optimizer2)
                    w = torch.zeros(len(yb), device=dev)
                    w[s2] = 1.0
                state["step"] += 1
                weight_log.add(first, len(idx), w)
                if callback is not None:
                    emit("train", epoch, idx, torch.ones(len(idx), device=dev) if w is None else w)
            if auto is not None and reweight_start is None:
                v = auto_warmup_probe(model, xc, yc, C, eval_batch_size)
                probes.append(v)
                if auto.ready(epoch, v):
                    reweight_start = epoch + 1
            for s in schedulers:
                s.step()
            if dev.type == "cuda":  # the epoch's kernels are queued asynchronously: wait once per epoch
                torch.cuda.synchronize(dev)
            epoch_secs.append(time.perf_counter() - t0)
            sums = weight_log.step_sums(perm, is_clean_all)
            if sums is not None:
                if distributed:  # one all-reduce per epoch: the global batches' sums
                    dist.all_reduce(sums, group=process_group)
                means = torch.stack([sums[:, 0] / sums[:, 1], sums[:, 2] / sums[:, 3]], 1).float()
                for mc, mn in means.tolist():  # one read-back per epoch
                    clean_w.append(mc)
                    noisy_w.append(mn)
            acc = evaluate(model, xt, yt, eval_batch_size) if len(yt) else float("nan")
            test_acc.append(acc)
            if bar is not None:
                bar.set_postfix(acc=f"{acc:.3f}", w_clean=f"{clean_w[-1] if clean_w else float('nan'):.2f}",
                                w_noisy=f"{noisy_w[-1] if noisy_w else float('nan'):.2f}")
                bar.update(1)
        if bar is not None:
            bar.close()
    finally:
        if tap is not None:  # the hook must not outlive the call
            tap.close()

    final = None
    if sample_weights is not None:
        final = (rw.weights if rw is not None else sample_weights).detach().cpu()
    finite = [a for a in test_acc if a == a]
    if paper and reweight_start is not None:
        config["skip_epochs_used"] = reweight_start - 1
    if feature_whiten is not None:
        config["whiten_strengths"] = whiten_strengths
    return TrainResult(
        method=method if not (method == "fbr") else f"fbr-{recipe}",
        test_acc=test_acc,
        best_acc=max(finite) if finite else float("nan"),
        last_acc=test_acc[-1] if test_acc else float("nan"),
        clean_weight=clean_w,
        noisy_weight=noisy_w,
        epoch_seconds=epoch_secs,
        config=config,
        reweight_start_epoch=reweight_start if reweighting else None,
        probe=probes,
        final_weights=final,
    )
