"""Option values that more than one command reads, parsed and checked so that an error names the flag:
``--device`` and ``--class-names``."""
from __future__ import annotations

import torch


def _class_names(value):
    if value is None:
        return None
    names = [n.strip() for n in value.split(",")]
    if not all(names):
        raise ValueError(f"--class-names must be comma-separated non-empty names, got {value!r}")
    return names


#: the devices ``_device`` has found usable: checked once per process, not on every call
_CHECKED_DEVICES: set[str] = set()


def _device(s: str) -> str:
    """The device of ``--device`` (``auto``: cuda where available, else cpu), checked to be usable by
    this PyTorch build (``ValueError`` naming the flag, not a CUDA assertion or a RuntimeError)."""
    if s == "auto":
        s = "cuda" if torch.cuda.is_available() else "cpu"
    if s in _CHECKED_DEVICES:
        return s
    try:
        dev = torch.device(s)
    except (RuntimeError, ValueError, TypeError) as e:
        raise ValueError(f"--device {s}: not a device ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                         "use cpu, cuda, cuda:N, mps or auto") from None
    from ..validate import device_problem

    why = device_problem(dev)
    if why is not None:
        raise ValueError(f"--device {s}: {why}; use --device cpu")
    _CHECKED_DEVICES.add(s)
    return s
