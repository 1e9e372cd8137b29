"""Checkpoint files: written without ever replacing an existing file, read with ``weights_only=True``.

A checkpoint is a dict of tensors and plain Python values (``Trainer.state_dict()``).  Reading it
never unpickles arbitrary objects: ``torch.load(weights_only=True)`` with an allow-list of the few
non-tensor types that optimiser and scheduler states hold.  A file that cannot be read, is not a
fastreweight checkpoint, or was written by another format version raises ``ValueError`` naming it.
"""
from __future__ import annotations

import collections
import os
import tempfile

import torch

__all__ = ["FORMAT", "VERSION", "save_checkpoint", "load_checkpoint"]

FORMAT = "fastreweight.Trainer"
VERSION = 1
#: the non-tensor types a checkpoint may hold beyond what weights_only allows by default
#: (``MultiStepLR`` keeps its milestones in a ``Counter``)
SAFE_GLOBALS = [collections.Counter]


def save_checkpoint(state: dict, path: str | os.PathLike) -> str:
    """Write ``state`` to ``path``, which must not exist (atomically: a temporary file in the same
    directory, then a rename that fails if ``path`` appeared meanwhile)."""
    path = os.fspath(path)
    if os.path.exists(path):
        raise FileExistsError(f"refusing to overwrite {path}: checkpoints never replace an existing file")
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".pt", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
        try:
            os.link(tmp, path)  # fails if path exists: never replaces a file
        except FileExistsError:
            raise FileExistsError(f"refusing to overwrite {path}: it appeared while the checkpoint was written") from None
        except OSError:  # a file system without hard links
            if os.path.exists(path):
                raise FileExistsError(f"refusing to overwrite {path}") from None
            os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_checkpoint(path: str | os.PathLike) -> dict:
    """The state dict in ``path`` (tensors on the CPU)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated zip, a foreign pickle, objects outside the allow-list
        raise ValueError(f"checkpoint {path} cannot be read ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                         "it is corrupt, or not a fastreweight checkpoint") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path} is not a fastreweight Trainer checkpoint (no format tag {FORMAT!r})")
    if state.get("version") != VERSION:
        raise ValueError(f"checkpoint {path} has format version {state.get('version')!r}; this fastreweight reads "
                         f"version {VERSION}")
    return state
