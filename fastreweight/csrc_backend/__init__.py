"""Loading of the compiled kernels (``csrc/``) and their ``torch.library`` registration.

The ops live in the namespace ``fastreweight::`` (see ``csrc/fbr_common.h`` for the schemas):

* ``torch.ops.fastreweight.class_similarity(xs, zs, mus, es, fs, clean_y, class_weight, cosine)``
  -> ``S`` (B×C, float64 for float64 inputs, float32 otherwise);
* ``torch.ops.fastreweight.fbr_scores(..., y, shift, alpha)`` -> ``d`` (B);
* ``torch.ops.fastreweight.class_similarity_prototype(xs, mus, es, protos, cosine)`` and
  ``fbr_scores_prototype(xs, mus, es, protos, class_weight, cosine, y, shift, alpha)``: the prototype
  strategy on precomputed class prototypes (CPU);
* ``torch.ops.fastreweight.reweighter_step(weights, idx, scores, lr, normalize_update, eps)``: the
  Reweighter update, in place on ``weights`` (CPU);
* ``torch.ops.fastreweight.fbr_reweight_prototype(..., weights, idx, lr, normalize_update, eps, loss_eps)``:
  the prototype scores, the Reweighter update and the loss coefficients ``w / max(Σw, loss_eps)`` in
  one op, returning (scores, new batch weights, coefficients) (CPU);
* ``torch.ops.fastreweight.threshold_weights(scores)``: the published per-batch weight rule (CPU);

How a library is found, in order:

1. a prebuilt library (``fastreweight/_C_cpu*.so`` / ``fastreweight/_C_cuda*.so``, built by ``setup.py``
   at install time), loaded by path with ``torch.ops.load_library``;
2. otherwise a just-in-time build with ``torch.utils.cpp_extension.load`` from the ``csrc/`` sources
   (cached under ``TORCH_EXTENSIONS_DIR``, by default ``~/.cache/torch_extensions``); set
   ``FASTREWEIGHT_NO_JIT=1`` to forbid it.

Nothing here raises at import time: ``load_cpu()`` / ``load_cuda()`` return ``None`` when the ops
are usable or a string saying why not, which the backends report as their unavailability reason.
Fake (meta) implementations are registered in Python so that ``torch.compile`` traces through the ops.
"""
from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import pathlib
import threading

import torch

log = logging.getLogger("fastreweight")

CSRC_DIR = pathlib.Path(__file__).resolve().parents[2] / "csrc"
CPU_SOURCES = ("fbr_cpu.cpp",)
CUDA_SOURCES = ("fbr_cuda.cu",)
CPU_CFLAGS = ["-O3", "-fopenmp"]
CPU_LDFLAGS = ["-fopenmp"]
CUDA_CFLAGS = [
    "-O3",
    "-gencode=arch=compute_80,code=sm_80",
    "-gencode=arch=compute_90a,code=sm_90a",
]

_lock = threading.RLock()
_state: dict[str, str | None] = {}


def _jit_disabled() -> bool:
    return os.environ.get("FASTREWEIGHT_NO_JIT", "") not in ("", "0")


def _jit_build(name: str, sources, cuda: bool) -> None:
    from torch.utils import cpp_extension

    paths = [str(CSRC_DIR / s) for s in sources]
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        raise FileNotFoundError(f"sources not found (is this a source checkout?): {missing}")
    log.info("fastreweight: building the %s extension just in time (first use; cached afterwards)", name)
    kwargs = dict(
        name=f"fastreweight_{name}",
        sources=paths,
        extra_include_paths=[str(CSRC_DIR)],
        extra_cflags=CPU_CFLAGS,
        extra_ldflags=CPU_LDFLAGS,
        is_python_module=False,
        verbose=os.environ.get("FASTREWEIGHT_VERBOSE_BUILD", "") not in ("", "0"),
    )
    if cuda:
        kwargs["extra_cuda_cflags"] = CUDA_CFLAGS
    cpp_extension.load(**kwargs)


def _load_prebuilt(module: str) -> None:
    """Load a setup.py-built library by path with ``torch.ops.load_library`` (its static initialisers
    register the ops); it needs no Python module init function."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin:
        raise ImportError(f"no module named {module!r}")
    torch.ops.load_library(spec.origin)


def _load(name: str, module: str, sources, cuda: bool) -> str | None:
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
    with _lock:
        if "cpu" not in _state:
            reason = _load("C_cpu", "fastreweight._C_cpu", CPU_SOURCES, cuda=False)
            if reason is None:
                _register_fakes()
            else:
                log.info("fastreweight: C++ CPU kernels unavailable: %s", reason)
            _state["cpu"] = reason
        return _state["cpu"]


def load_cuda() -> str | None:
    """Make the CUDA kernels available; ``None`` on success, else the reason."""
    with _lock:
        if "cuda" not in _state:
            reason = load_cpu()  # the schemas are defined by the CPU library
            if reason is not None:
                reason = f"the CPU library that defines the ops is unavailable: {reason}"
            elif torch.version.cuda is None:
                reason = f"this PyTorch build ({torch.__version__}) has no CUDA support"
            elif not torch.cuda.is_available():
                reason = "no CUDA device is available"
            else:
                reason = _load("C_cuda", "fastreweight._C_cuda", CUDA_SOURCES, cuda=True)
            if reason is not None:
                log.info("fastreweight: CUDA kernels unavailable: %s", reason)
            _state["cuda"] = reason
        return _state["cuda"]


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


_fakes_registered = False


def _register_fakes() -> None:
    global _fakes_registered
    if _fakes_registered:
        return

    def check_devices(op, xs, zs, mus, es, fs, clean_y, class_weight, y=None):
        # the kernels' device check (fbr_common.h), also under FakeTensorMode / on meta tensors
        if not xs:
            raise RuntimeError(f"fastreweight::{op}: xs must hold at least one layer, got an empty list")
        dev = xs[0].device
        named = [(f"{n}[{i}]", t) for n, lst in (("xs", xs), ("zs", zs), ("mus", mus), ("es", es), ("fs", fs))
                 for i, t in enumerate(lst)]
        named += [("clean_y", clean_y), ("class_weight", class_weight)] + ([("y", y)] if y is not None else [])
        for name, t in named:
            if t.device != dev:
                raise RuntimeError(
                    f"fastreweight::{op}: {name} is on {t.device} but xs[0] is on {dev}; all inputs must be on one device"
                )

    @torch.library.register_fake("fastreweight::class_similarity")
    def _class_similarity_fake(xs, zs, mus, es, fs, clean_y, class_weight, cosine):
        check_devices("class_similarity", xs, zs, mus, es, fs, clean_y, class_weight)
        x0 = xs[0]
        return x0.new_empty((x0.shape[0], class_weight.shape[0]), dtype=_acc_dtype(x0.dtype))

    @torch.library.register_fake("fastreweight::fbr_scores")
    def _fbr_scores_fake(xs, zs, mus, es, fs, clean_y, class_weight, cosine, y, shift, alpha):
        check_devices("fbr_scores", xs, zs, mus, es, fs, clean_y, class_weight, y)
        x0 = xs[0]
        return x0.new_empty((x0.shape[0],), dtype=_acc_dtype(x0.dtype))

    @torch.library.register_fake("fastreweight::class_similarity_prototype")
    def _class_similarity_prototype_fake(xs, mus, es, protos, cosine):
        check_devices("class_similarity_prototype", xs, protos, mus, es, [], protos[0], protos[0])
        x0 = xs[0]
        return x0.new_empty((x0.shape[0], protos[0].shape[0]), dtype=_acc_dtype(x0.dtype))

    @torch.library.register_fake("fastreweight::fbr_scores_prototype")
    def _fbr_scores_prototype_fake(xs, mus, es, protos, class_weight, cosine, y, shift, alpha):
        check_devices("fbr_scores_prototype", xs, protos, mus, es, [], protos[0], class_weight, y)
        x0 = xs[0]
        return x0.new_empty((x0.shape[0],), dtype=_acc_dtype(x0.dtype))

    @torch.library.register_fake("fastreweight::reweighter_step")
    def _reweighter_step_fake(weights, idx, scores, lr, normalize_update, eps):
        return weights.new_empty((idx.shape[0],))

    @torch.library.register_fake("fastreweight::fbr_reweight_prototype")
    def _fbr_reweight_prototype_fake(xs, mus, es, protos, class_weight, cosine, y, shift, alpha, weights, idx, lr,
                                     normalize_update, eps, loss_eps):
        check_devices("fbr_reweight_prototype", xs, protos, mus, es, [], protos[0], class_weight, y)
        x0 = xs[0]
        return (x0.new_empty((x0.shape[0],), dtype=_acc_dtype(x0.dtype)), weights.new_empty((idx.shape[0],)),
                weights.new_empty((idx.shape[0],)))

    @torch.library.register_fake("fastreweight::threshold_weights")
    def _threshold_weights_fake(scores):
        return scores.new_empty(scores.shape)

    _fakes_registered = True


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
