"""The training loop over the user's data pipeline (see ``Trainer``)."""
from __future__ import annotations

import os
import time

import torch
import torch.nn as nn

from .batches import labels_as_int64, unpack_batch
from .checkpoint import FORMAT, VERSION, load_checkpoint, save_checkpoint
from .clean import CleanSet
from .methods.base import Method, make_context
from .parallel import SingleProcess
from .precision import Precision
from .records import TrainResult, WeightLog, accuracy, to_device
from .resume import plain_options
from .rng import find_generators, run_rng_state

__all__ = ["Trainer"]


def _param_dtype(model: nn.Module) -> torch.dtype:
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def _check_callbacks(callbacks) -> list:
    if callable(callbacks) or not isinstance(callbacks, (list, tuple)):
        raise TypeError(f"callbacks must be a list of callables, got {type(callbacks).__name__}"
                        + ("; wrap it: callbacks=[fn]" if callable(callbacks) else ""))
    for i, cb in enumerate(callbacks):
        if not callable(cb):
            raise TypeError(f"callbacks[{i}] must be callable (called with each step's event dict), got "
                            f"{type(cb).__name__}")
    return list(callbacks)


def _check_scheduler(scheduler) -> None:
    """The loop calls ``scheduler.step()`` once per epoch, with no argument."""
    if scheduler is None:
        return
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        raise ValueError("scheduler: ReduceLROnPlateau needs a metric at each step(metrics), which the loop does not "
                         "have; Trainer steps its scheduler once per epoch with step() (StepLR, MultiStepLR, "
                         "CosineAnnealingLR, LambdaLR, ExponentialLR, ...). Step ReduceLROnPlateau yourself, e.g. "
                         "from a callback")
    if not callable(getattr(scheduler, "step", None)):
        raise TypeError(f"scheduler must be a learning-rate scheduler with a step() method, got "
                        f"{type(scheduler).__name__}")


def _first_existing_checkpoint(directory, every: int, start: int, epochs: int) -> int:
    """The first epoch in ``start+1 .. epochs`` whose checkpoint this fit would write and that exists (0: none)."""
    for epoch in range(start + 1, epochs + 1):
        if epoch % every == 0 and os.path.exists(os.path.join(directory, f"epoch-{epoch:04d}.pt")):
            return epoch
    return 0


def _check_checkpoint_paths(directory, every: int, start: int, epochs: int, parallel=None, device=None) -> None:
    """None of the checkpoints this fit will write (after epochs ``start+1 .. epochs``) may exist.

    Under ``Distributed()`` the ranks agree (a collective): a rank that sees no clash would otherwise train
    on and hang in its first collective while the rank that saw one raises."""
    clash = _first_existing_checkpoint(directory, every, start, epochs)
    if parallel is not None and parallel.distributed:
        clash = int(parallel.all_max(torch.tensor([clash], device=device)).item())
    if clash:
        path = os.path.join(directory, f"epoch-{clash:04d}.pt")
        raise FileExistsError(f"checkpoint_dir: {path} exists and this run would write it after epoch {clash}; "
                              "checkpoints never replace a file: use another checkpoint_dir or move the files")


def _check_same_num_samples(num_samples: int, parallel, device) -> None:
    """Every rank must index the same training set: the ranks share the per-sample state (weights, labels)
    and exchange sample indices, so a rank with fewer samples would fail later on another rank's index."""
    if not parallel.distributed:
        return
    hi, neg_lo = parallel.all_max(torch.tensor([num_samples, -num_samples], device=device)).tolist()
    if hi != -neg_lo:
        raise ValueError(f"num_samples differs across ranks: from {-neg_lo} to {hi} (this rank, {parallel.rank}, has "
                         f"{num_samples}); every rank's loader must cover the same training set (len(loader.dataset), "
                         "or fit(num_samples=...)), sharded with a DistributedSampler or TensorLoader(shard=(rank, world))")


class Trainer:
    """Trains ``model`` with ``method`` over any loader of ``(x, y, idx)`` batches.

    ``clean``: a ``CleanSet`` (or ``(x, y)`` tensors) — the trusted subset, with its ``passes`` per
    epoch (ordinary training before the epoch's reweighted steps, for every method).  ``scheduler``:
    stepped once per epoch with ``step()`` (``ReduceLROnPlateau``, which needs a metric, is refused;
    step a per-batch schedule such as ``OneCycleLR`` from a callback).  ``precision`` (``Precision``)
    and ``parallel`` (``SingleProcess`` or ``Distributed``) say how the steps run.  ``callbacks``: a
    list of callables, called after every optimiser step with a dict (``phase`` "clean" or "train",
    ``epoch``, ``step``, ``idx``, ``weights``, ``sample_weights``, ``model``).  ``check_values=True``
    adds the scoring calls' data-dependent checks (one host synchronisation each).  ``progress``: a
    tqdm bar per run (a string names it).

    ``fit(loader, epochs)`` (once per ``Trainer``) returns a ``TrainResult``; ``state_dict()`` /
    ``save(path)`` and ``fit(..., resume=path)`` checkpoint and resume a run (bit-identical on the CPU).
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, method: Method, clean, *,
                 scheduler=None, precision: Precision | None = None, parallel: SingleProcess | None = None,
                 callbacks=(), device=None, check_values: bool = False, progress: bool | str = False) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        if not isinstance(method, Method):
            raise TypeError(f"method must be a fastreweight.training method (ERM(), FBR(), ...), got {type(method).__name__}")
        self.clean = clean if isinstance(clean, CleanSet) else CleanSet(*clean)
        self.method, self.optimizer, self.scheduler = method, optimizer, scheduler
        self.precision = precision if precision is not None else Precision()
        self.parallel = parallel if parallel is not None else SingleProcess()
        self.callbacks = _check_callbacks(callbacks)
        _check_scheduler(scheduler)
        self.check_values, self.progress = check_values, progress
        self.parallel.setup()
        plain = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
        self.device = torch.device(device) if device is not None else next(
            (p.device for p in plain.parameters()), torch.device("cpu"))
        plain.to(self.device)
        self.net, self.model = self.parallel.wrap(model, self.device)
        self.dtype = _param_dtype(self.model)
        self.precision.setup(self.device)
        self.epoch, self.step, self.num_classes = 0, 0, None
        self._fitted = False  # fit() runs once per Trainer (see _check_fresh)
        self.history = {"test_acc": [], "clean_weight": [], "noisy_weight": [], "epoch_seconds": []}

    # -- setup ----------------------------------------------------------------------------------
    def _attach(self, loader, epochs: int, num_samples: int | None) -> None:
        if num_samples is None:
            if not hasattr(getattr(loader, "dataset", None), "__len__"):
                raise ValueError("num_samples is required when the loader has no sized .dataset")
            num_samples = len(loader.dataset)
        _check_same_num_samples(num_samples, self.parallel, self.device)
        self.num_samples = num_samples
        self.ctx = make_context(self.model, self.optimizer, self.clean, num_samples=num_samples, epochs=epochs,
                                num_classes=self.num_classes, precision=self.precision, parallel=self.parallel,
                                net=self.net, device=self.device, check_values=self.check_values)
        self.method.attach(self.ctx)
        self._generators = find_generators(loader, self.clean)

    def _check_fresh(self) -> None:
        # a second fit would re-attach the method (fresh per-sample weights) but keep the epoch count
        # and history, so it would train nothing and report the reset weights
        if self._fitted:
            raise ValueError("this Trainer has already run fit(); a Trainer runs one fit. Build a new Trainer (with a "
                             "fresh model and optimizer) for a new run, or continue a run with a new Trainer and "
                             "fit(..., resume=<checkpoint file>) (fit(checkpoint_dir=...) writes them)")

    def _load_agreed(self, resume: str | None) -> dict | None:
        """``load_checkpoint(resume)`` (``None`` without one), the ranks agreeing on the outcome first: a rank
        that cannot read the file (missing on its node, corrupt) raises its error, and the others raise
        too instead of waiting in the next collective."""
        error, state = None, None
        try:
            state = load_checkpoint(resume) if resume is not None else None
        except Exception as exc:  # noqa: BLE001 - raised again below, on this rank
            error = exc
        failed = self.parallel.all_max(torch.tensor([int(error is not None)], device=self.device))
        try:
            if error is not None:
                raise error
            if int(failed[0]):
                raise ValueError(f"another rank could not read resume={resume!r}, so this rank stops too")
        finally:
            error = None  # the traceback holds this frame: no cycle keeping the process group alive
        return state

    # -- the loop -------------------------------------------------------------------------------
    def fit(self, loader, epochs: int, *, num_classes: int | None = None, eval_loader=None, true_labels=None,
            num_samples: int | None = None, checkpoint_dir: str | None = None, checkpoint_every: int = 1,
            resume: str | None = None) -> TrainResult:
        """Train for ``epochs`` epochs (in all, counting those of a resumed checkpoint).

        ``num_classes`` defaults to the model's output width (one forward of a clean row, eval mode),
        which it must equal when given.  ``eval_loader``: ``(x, y[, idx])`` batches whose accuracy is
        recorded after every epoch.  ``true_labels`` (N, optional): the training set's true labels, for
        the clean / mislabelled mean-weight records only.
        ``checkpoint_dir``: a checkpoint ``epoch-XXXX.pt`` after every ``checkpoint_every`` epochs
        (never over an existing file: one that exists raises ``FileExistsError`` before training).  Under
        ``Distributed()`` the ranks share ``checkpoint_dir``: rank 0 writes each file once, holding every
        rank's random state, and each rank resumes its own.
        ``resume``: a checkpoint file to continue from.  A ``Trainer`` runs ``fit`` once: a second call
        raises ``ValueError`` (build a new ``Trainer``, or resume from a checkpoint)."""
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
            raise ValueError(f"epochs must be an int >= 0, got {epochs!r}")
        if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int) or checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be an int >= 1, got {checkpoint_every!r}")
        self._check_fresh()
        state = self._load_agreed(resume)
        if checkpoint_dir is not None:  # before any work: a clash would otherwise surface an epoch later
            start = state.get("epoch") if state is not None else self.epoch
            if isinstance(start, int):  # else restore() names what the checkpoint lacks
                _check_checkpoint_paths(checkpoint_dir, checkpoint_every, start, epochs, self.parallel, self.device)
        self.num_classes = num_classes
        self._attach(loader, epochs, num_samples)
        self.log = WeightLog(self._true_labels(true_labels))
        if state is not None:
            self.load_state_dict(state, epochs=epochs)
        self._fitted = True
        bar = self._progress_bar(epochs)
        try:
            for epoch in range(self.epoch, epochs):
                self._run_epoch(loader, epoch)
                self.history["test_acc"].append(accuracy(self.model, eval_loader, self.device, self.dtype)
                                                if eval_loader is not None else float("nan"))
                self.epoch = epoch + 1
                if bar is not None:
                    self._update_bar(bar)
                if checkpoint_dir is not None and self.epoch % checkpoint_every == 0:
                    self.save(os.path.join(checkpoint_dir, f"epoch-{self.epoch:04d}.pt"))
        finally:
            self.method.close()
            if bar is not None:
                bar.close()
        return self.result()

    def _run_epoch(self, loader, epoch: int) -> None:
        t0 = time.perf_counter()
        method = self.method
        for m in method.models():
            m.train()
        for _ in range(self.ctx.clean.passes):
            self._clean_pass(epoch)
        method.begin_epoch(epoch)
        for sampler in (getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None)):
            if hasattr(sampler, "set_epoch"):  # DistributedSampler: a new shuffle per epoch
                sampler.set_epoch(epoch)
        for batch in loader:
            x, y, idx = unpack_batch(batch)
            # a Dataset's labels may be int32 etc.: cross-entropy and the label stores take int64
            x, y, idx = to_device(x, self.device, self.dtype), labels_as_int64(y).to(self.device), idx.to(self.device)
            loss, w = method.loss(x, y, idx)
            self.precision.backward_step(loss, method.optimizers())
            self.step += 1
            self.log.add(idx, y, w)
            if self.callbacks:
                self._emit("train", epoch, idx, torch.ones(len(idx), device=self.device) if w is None else w)
        method.end_epoch(epoch)
        if self.scheduler is not None:
            self.scheduler.step()
        if self.device.type == "cuda":  # the epoch's kernels are queued asynchronously: wait once per epoch
            torch.cuda.synchronize(self.device)
        self.history["epoch_seconds"].append(time.perf_counter() - t0)
        self._record_weights()

    def _clean_pass(self, epoch: int) -> None:
        clean, method = self.ctx.clean, self.method
        for m in method.models():
            m.train()
        for x, y, idx in clean.passes_loader(self.parallel):
            self.precision.backward_step(method.clean_loss(x, y), method.optimizers())
            self.step += 1
            if self.callbacks:
                self._emit("clean", epoch, idx, None)

    def _record_weights(self) -> None:
        sums = self.log.step_sums()
        if sums is None:
            return
        sums = self.parallel.all_reduce(sums)  # one all-reduce per epoch: the global batches' sums
        means = torch.stack([sums[:, 0] / sums[:, 1], sums[:, 2] / sums[:, 3]], 1).float()
        for mc, mn in means.tolist():  # one read-back per epoch
            self.history["clean_weight"].append(mc)
            self.history["noisy_weight"].append(mn)

    def _emit(self, phase, epoch, idx, w) -> None:
        event = {"phase": phase, "epoch": epoch, "step": self.step, "idx": idx, "weights": w,
                 "sample_weights": self.method.sample_weights, "model": self.model}
        for cb in self.callbacks:
            cb(event)

    def _true_labels(self, true_labels):
        if true_labels is None:
            return None
        t = torch.as_tensor(true_labels)
        if t.dim() != 1 or t.shape[0] != self.num_samples or t.dtype.is_floating_point:
            raise ValueError(f"true_labels must be {self.num_samples} integer labels (one per training sample), got "
                             f"{t.dtype} {tuple(t.shape)}")
        return t.to(self.device, torch.int64)

    def _progress_bar(self, epochs):
        if not self.progress:
            return None
        from tqdm.auto import tqdm

        desc = self.progress if isinstance(self.progress, str) else self.method.name
        return tqdm(total=epochs, initial=self.epoch, desc=desc, leave=False)

    def _update_bar(self, bar) -> None:
        h = self.history
        last = lambda k: h[k][-1] if h[k] else float("nan")  # noqa: E731
        bar.set_postfix(acc=f"{last('test_acc'):.3f}", w_clean=f"{last('clean_weight'):.2f}",
                        w_noisy=f"{last('noisy_weight'):.2f}")
        bar.update(1)

    # -- results and checkpoints ----------------------------------------------------------------
    def result(self) -> TrainResult:
        h, m = self.history, self.method
        finite = [a for a in h["test_acc"] if a == a]
        w = m.sample_weights
        return TrainResult(
            method=m.name, test_acc=list(h["test_acc"]), best_acc=max(finite) if finite else float("nan"),
            last_acc=h["test_acc"][-1] if h["test_acc"] else float("nan"), clean_weight=list(h["clean_weight"]),
            noisy_weight=list(h["noisy_weight"]), epoch_seconds=list(h["epoch_seconds"]),
            config={"method": m.name, **m.options(), **m.summary(), "clean_passes": self.ctx.clean.passes},
            reweight_start_epoch=m.reweight_start_epoch, probe=list(getattr(getattr(m, "warmup", None), "probes", [])),
            final_weights=None if w is None else w.detach().cpu())

    def state_dict(self) -> dict:
        """Everything a resumed run needs, as tensors and plain values.

        Under ``Distributed()`` this is a collective (it gathers every rank's random state into ``"rng"``,
        a list in rank order): call it on every rank."""
        if not hasattr(self, "num_samples"):  # set when fit attaches the method to a training set
            raise RuntimeError("Trainer.state_dict() describes a run: call fit(...) first (checkpoints are written "
                               "by fit(checkpoint_dir=...))")
        return {
            "format": FORMAT, "version": VERSION, "epoch": self.epoch, "step": self.step,
            "method": self.method.name, "num_samples": self.num_samples, "world": self.parallel.world,
            "method_options": plain_options(self.method.options()),
            "optimizer_types": [type(opt).__name__ for opt in self.method.optimizers()],
            "model": self.model.state_dict(),
            "optimizers": [opt.state_dict() for opt in self.method.optimizers()],
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "method_state": self.method.state_dict(), "precision": self.precision.state_dict(),
            "rng": run_rng_state(self._generators, self.parallel), "history": {k: list(v) for k, v in self.history.items()},
        }

    def save(self, path: str) -> str:
        """Write ``state_dict()`` to ``path`` (which must not exist).

        Under ``Distributed()`` call it on every rank with the same ``path``: every rank's random state goes
        into the one file, which rank 0 alone writes; every rank returns once it exists (and raises if
        rank 0 could not write it), so each may ``fit(resume=path)`` at once."""
        state = self.state_dict()  # on every rank: it gathers their random states
        return self.parallel.on_first_rank(lambda: save_checkpoint(state, path))

    def load_state_dict(self, state: dict, *, epochs: int | None = None) -> None:
        """Restore a run from ``state_dict()``; a checkpoint of another run raises ``ValueError``."""
        from .resume import restore

        restore(self, state, epochs)
