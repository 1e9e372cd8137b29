"""Loading of the compiled kernels (``csrc/``) of the ops ``torch.ops.fastreweight.*``.

The op schemas and their fake (meta) kernels are defined in Python, in ``csrc_backend/ops.py`` (the
list of ops is there); the compiled libraries only register CPU / CUDA kernels for them
(``TORCH_LIBRARY_IMPL``).  ``load_cpu()`` / ``load_cuda()`` import ``ops`` first, so the schemas exist
before a library's kernels register.

How a library is found, in order:

1. a prebuilt library (``fastreweight/_C_cpu*.so`` / ``fastreweight/_C_cuda*.so``, built by ``setup.py``
   at install time), loaded by path with ``torch.ops.load_library``;
2. otherwise a just-in-time build with ``torch.utils.cpp_extension.load`` from the ``csrc/`` sources
   (``CSRC_DIR``: the copy an installed wheel carries as ``fastreweight/_csrc/``, else the source
   checkout's ``csrc/``; cached under ``TORCH_EXTENSIONS_DIR``, by default ``~/.cache/torch_extensions``); set
   ``FASTREWEIGHT_NO_JIT=1`` to forbid it.

Both builds take their sources and flags from ``build_config.py``.  Nothing here raises at import
time: ``load_cpu()`` / ``load_cuda()`` return ``None`` when the ops are usable or a string saying why
not, which the backends report as their unavailability reason.
"""
from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import pathlib
import threading

import torch

from . import build_config

log = logging.getLogger("fastreweight")


def _csrc_dir() -> pathlib.Path:
    """The ``csrc/`` sources: the copy shipped in the package (``fastreweight/_csrc/``, written by
    setup.py's ``BuildPy`` into every wheel), else the source checkout's ``csrc/`` (editable install)."""
    package = pathlib.Path(__file__).resolve().parents[1]
    packaged = package / "_csrc"
    if packaged.is_dir():
        return packaged
    return package.parent / "csrc"


CSRC_DIR = _csrc_dir()

_lock = threading.RLock()
_state: dict[str, str | None] = {}


def _jit_disabled() -> bool:
    return os.environ.get("FASTREWEIGHT_NO_JIT", "") not in ("", "0")


def _jit_build(name: str, sources, cuda: bool) -> None:
    from torch.utils import cpp_extension

    paths = [str(CSRC_DIR / s) for s in sources]
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        raise FileNotFoundError(f"the C++ sources are not installed (neither fastreweight/_csrc/ nor a source "
                                f"checkout's csrc/): {missing}")
    # a warning, not info: the first call then pauses for a minute or more, and the user should know why
    log.warning("fastreweight: building the %s extension just in time (first use, a minute or more; cached "
                "afterwards; FASTREWEIGHT_NO_JIT=1 skips it)", name)
    kwargs = dict(
        name=f"fastreweight_{name}",
        sources=paths,
        extra_include_paths=[str(CSRC_DIR / d) for d in build_config.INCLUDE_DIRS],
        extra_cflags=list(build_config.CUDA_HOST_CFLAGS if cuda else build_config.CPU_CFLAGS),
        extra_ldflags=[] if cuda else list(build_config.CPU_LDFLAGS),
        is_python_module=False,
        verbose=os.environ.get("FASTREWEIGHT_VERBOSE_BUILD", "") not in ("", "0"),
    )
    if cuda:
        kwargs["extra_cuda_cflags"] = build_config.nvcc_flags()
    cpp_extension.load(**kwargs)


def _load_prebuilt(module: str) -> None:
    """Load a setup.py-built library by path with ``torch.ops.load_library`` (its static initialisers
    register the kernels)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin:
        raise ImportError(f"no module named {module!r}")
    torch.ops.load_library(spec.origin)


def _load(name: str, module: str, sources, cuda: bool) -> str | None:
    from . import ops  # noqa: F401  (the schemas and fake kernels: defined before the kernels register)

    try:
        _load_prebuilt(module)
        return None
    except (ImportError, OSError) as exc:
        prebuilt_error = f"{type(exc).__name__}: {exc}"
    if _jit_disabled():
        return f"no prebuilt {module} ({prebuilt_error}) and FASTREWEIGHT_NO_JIT is set"
    try:
        _jit_build(name, sources, cuda)
        return None
    except Exception as exc:  # no compiler, failed build, ...
        msg = str(exc).strip().splitlines()
        tail = " | ".join(msg[-3:]) if msg else ""
        return f"no prebuilt {module} ({prebuilt_error}) and the just-in-time build failed: {type(exc).__name__}: {tail}"


def load_cpu() -> str | None:
    """Make the ops and their CPU kernels available; ``None`` on success, else the reason."""
    if "cpu" in _state:  # loaded (or refused) once: no lock, so torch.compile can trace a scoring call
        return _state["cpu"]
    with _lock:
        if "cpu" not in _state:
            reason = _load("C_cpu", "fastreweight._C_cpu", build_config.CPU_SOURCES, cuda=False)
            if reason is not None:
                log.info("fastreweight: C++ CPU kernels unavailable: %s", reason)
            _state["cpu"] = reason
        return _state["cpu"]


def load_cuda() -> str | None:
    """Make the ops and their CUDA kernels available; ``None`` on success, else the reason."""
    if "cuda" in _state:  # loaded (or refused) once: no lock, so torch.compile can trace a scoring call
        return _state["cuda"]
    with _lock:
        if "cuda" not in _state:
            if torch.version.cuda is None:
                reason = f"this PyTorch build ({torch.__version__}) has no CUDA support"
            elif not torch.cuda.is_available():
                reason = "no CUDA device is available"
            else:
                reason = _load("C_cuda", "fastreweight._C_cuda", build_config.CUDA_SOURCES, cuda=True)
            if reason is not None:
                log.info("fastreweight: CUDA kernels unavailable: %s", reason)
            _state["cuda"] = reason
        return _state["cuda"]


def problem_args(problem):
    """The op arguments (xs, zs, mus, es, fs, clean_y, class_weight, cosine) of a ``Problem``."""
    layers = problem.layers
    xs = [l.x for l in layers]
    zs = [l.z for l in layers]
    mus = [l.mu for l in layers] if layers[0].mu is not None else []
    es = [l.e for l in layers] if layers[0].e is not None else []
    fs = [l.f for l in layers] if layers[0].f is not None else []
    return xs, zs, mus, es, fs, problem.clean_y, problem.class_weight, bool(problem.cosine)


def unsupported_strategy(name: str, strategy: str) -> str | None:
    if strategy != "pairwise":
        return (
            f"the {name} backend implements the pairwise (streamed) strategy only, not strategy={strategy!r}; "
            "use strategy='pairwise' or another backend"
        )
    return None
