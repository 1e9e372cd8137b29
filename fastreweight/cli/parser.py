"""The argument parser of the commands (``demo``, ``train``, ``score``): their options and help text."""
from __future__ import annotations

import argparse

from .. import data as D
from .. import models as Mo
from .. import presets as P
from ..train import METHODS


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
