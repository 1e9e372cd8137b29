"""Restoring a ``Trainer`` from a checkpoint, with a clear error for one of another run."""
from __future__ import annotations

from .rng import own_rng_state, set_rng_state

__all__ = ["restore", "plain_options"]

_KEYS = ("epoch", "step", "method", "num_samples", "world", "model", "optimizers", "scheduler", "method_state",
         "precision", "rng", "history")


def plain_options(options: dict) -> dict:
    """``method.options()`` as plain values a ``weights_only`` checkpoint holds (others as their repr)."""
    def plain(v):
        if v is None or isinstance(v, (bool, int, float, str)):
            return v
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return repr(v)

    return {str(k): plain(v) for k, v in options.items()}


def _check_options(trainer, state: dict) -> None:
    """The method's options must be the checkpoint's: its state (a whitening fit, a clean cache) is only
    meaningful for them.  Checkpoints written before the options were stored are not checked."""
    saved = state.get("method_options")
    if saved is None:
        return
    mine = plain_options(trainer.method.options())
    diff = [f"{k}={saved.get(k, '(absent)')!r} in the checkpoint, {mine.get(k, '(absent)')!r} in this run"
            for k in sorted(set(saved) | set(mine)) if saved.get(k, "(absent)") != mine.get(k, "(absent)")]
    if diff:
        raise ValueError(f"checkpoint's {type(trainer.method).__name__} options differ from this run's: "
                         f"{'; '.join(diff)}; build the method with the checkpoint's options to resume it")


def _check_optimizers(trainer, state: dict) -> None:
    saved = state.get("optimizer_types")  # absent from checkpoints written before it was stored
    mine = [type(opt).__name__ for opt in trainer.method.optimizers()]
    if saved is not None and list(saved) != mine:
        raise ValueError(f"checkpoint's optimizer is {', '.join(saved)}, this run's is {', '.join(mine)}; an "
                         "optimizer state only loads into an optimizer of the same class")


def _check_run(trainer, state: dict, epochs: int | None) -> None:
    missing = [k for k in _KEYS if k not in state]
    if missing:
        raise ValueError(f"checkpoint lacks {', '.join(missing)}: it is incomplete or corrupt")
    if state["method"] != trainer.method.name:
        raise ValueError(f"checkpoint is of method {state['method']!r}, this run's is {trainer.method.name!r}")
    _check_options(trainer, state)
    if state["num_samples"] != trainer.num_samples:
        raise ValueError(f"checkpoint is of a training set of {state['num_samples']} samples, this run's has "
                         f"{trainer.num_samples}")
    if state["world"] != trainer.parallel.world:
        raise ValueError(f"checkpoint was written by {state['world']} process(es), this run has {trainer.parallel.world}")
    if epochs is not None and state["epoch"] > epochs:
        raise ValueError(f"checkpoint is at epoch {state['epoch']}, past this run's epochs={epochs}")
    opts = trainer.method.optimizers()
    if len(state["optimizers"]) != len(opts):
        raise ValueError(f"checkpoint holds {len(state['optimizers'])} optimizer states, this run has {len(opts)}")
    _check_optimizers(trainer, state)
    if (state["scheduler"] is None) != (trainer.scheduler is None):
        raise ValueError("checkpoint and run disagree on having a learning-rate scheduler")


def restore(trainer, state: dict, epochs: int | None) -> None:
    """Load ``state`` (``Trainer.state_dict()``) into ``trainer``, attached to its run."""
    _check_run(trainer, state, epochs)
    try:
        trainer.model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise ValueError(f"checkpoint's model does not fit this model: {str(e).splitlines()[0]}") from None
    try:
        for opt, s in zip(trainer.method.optimizers(), state["optimizers"]):
            opt.load_state_dict(s)
        if trainer.scheduler is not None:
            trainer.scheduler.load_state_dict(state["scheduler"])
        trainer.method.load_state_dict(state["method_state"])
    except (KeyError, TypeError, RuntimeError) as e:
        raise ValueError(f"checkpoint's optimizer, scheduler or method state does not fit this run "
                         f"({type(e).__name__}: {e})") from None
    trainer.precision.load_state_dict(state["precision"])
    par = trainer.parallel
    set_rng_state(own_rng_state(state["rng"], par.rank, par.world), trainer._generators)
    trainer.epoch, trainer.step = int(state["epoch"]), int(state["step"])
    trainer.history = {k: list(v) for k, v in state["history"].items()}
