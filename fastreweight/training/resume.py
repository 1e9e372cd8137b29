"""Restoring a ``Trainer`` from a checkpoint, with a clear error for one of another run."""
from __future__ import annotations

from .rng import set_rng_state

__all__ = ["restore"]

_KEYS = ("epoch", "step", "method", "num_samples", "world", "model", "optimizers", "scheduler", "method_state",
         "precision", "rng", "history")


def _check_run(trainer, state: dict, epochs: int | None) -> None:
    missing = [k for k in _KEYS if k not in state]
    if missing:
        raise ValueError(f"checkpoint lacks {', '.join(missing)}: it is incomplete or corrupt")
    if state["method"] != trainer.method.name:
        raise ValueError(f"checkpoint is of method {state['method']!r}, this run's is {trainer.method.name!r}")
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
    set_rng_state(state["rng"], trainer._generators)
    trainer.epoch, trainer.step = int(state["epoch"]), int(state["step"])
    trainer.history = {k: list(v) for k, v in state["history"].items()}
