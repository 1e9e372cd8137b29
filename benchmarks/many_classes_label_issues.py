"""Label issues with many classes and few rows per class: fastreweight's default against cleanlab's kNN check.

    python benchmarks/many_classes_label_issues.py [--seeds 0 1 2] [--out results/many_classes_label_issues.jsonl]

The comparison in ``compare_label_issues.py`` has 10 classes and hundreds of rows per class.  Here a
dataset has 50 to 1000 classes and 6 to 100 rows per class, where the votes of a row's neighbours
are spread over many classes.  Each cell: ``n`` rows of a Gaussian mixture (class means of scale
``spread`` in ``d`` dimensions, unit noise; every class has a row), ``rate`` of the labels resampled
uniformly (a resampled label can stay right), trusted rows: each row with probability 0.1 plus the first row of every class,
with their true labels.  Every tool gets the same features and labels:

* ``fastreweight:auto``: ``find_label_issues(x, labels, clean_idx=trusted)``, the defaults;
* ``cleanlab:datalab-knn``: ``Datalab(...).find_issues(features=x, issue_types={"label": {}})``, its
  recommended call (cleanlab never sees which rows are trusted; their labels are right).

Metrics over the rows other than the trusted ones: precision and recall of the flagged set, the
number flagged, the estimated noise rate (fastreweight) against the true share of wrong labels, and
``flagged_same``: flagged rows whose suggested label is their given label (an issue without a better
label to offer).  One record per tool, cell and seed, appended to ``--out``, with the environment.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import time
import warnings

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from harness import environment  # noqa: E402
from fastreweight.label_issues import find_label_issues  # noqa: E402

RESULTS = os.path.join(os.path.dirname(__file__), "results")
#: (rows, classes, dimensions, spread of the class means, noise rate)
CELLS = ((6000, 1000, 64, 1.5, 0.2), (20000, 1000, 64, 1.5, 0.2), (3000, 100, 32, 1.5, 0.2), (5000, 50, 16, 1.5, 0.3))
TOOLS = ("fastreweight:auto", "cleanlab:datalab-knn")


def make_cell(n: int, C: int, d: int, spread: float, rate: float, seed: int):
    """``(x, labels, truth, trusted)``: the features, the given labels (trusted rows' right), the true
    labels and the trusted rows' indices."""
    g = np.random.default_rng(seed)
    truth = g.permutation(np.concatenate([np.arange(C), g.integers(0, C, n - C)]))  # every class has a row
    x = (g.standard_normal((C, d)) * spread)[truth] + g.standard_normal((n, d))
    labels = truth.copy()
    resampled = g.random(n) < rate
    labels[resampled] = g.integers(0, C, int(resampled.sum()))
    first = [np.flatnonzero(truth == c)[0] for c in range(C)]
    trusted = np.unique(np.concatenate([np.flatnonzero(g.random(n) < 0.1), first]))
    labels[trusted] = truth[trusted]
    return x.astype(np.float32), labels, truth, trusted


def run_tool(tool: str, x, labels, trusted, C: int):
    """``(flagged, suggested, estimated noise rate or None, seconds)`` of one call."""
    t0 = time.perf_counter()
    if tool == "fastreweight:auto":
        issues = find_label_issues(x, labels, clean_idx=trusted, num_classes=C)
        return issues.is_label_issue, issues.predicted_label, issues.estimated_noise_rate, time.perf_counter() - t0
    from cleanlab import Datalab

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        lab = Datalab(data={"label": labels}, label_name="label", verbosity=0)
        lab.find_issues(features=x, issue_types={"label": {}})
    found = lab.get_issues("label")
    return (found["is_label_issue"].to_numpy(bool), found["predicted_label"].to_numpy(np.int64), None,
            time.perf_counter() - t0)


def record(cell, seed: int, tool: str, env: dict) -> dict:
    n, C, d, spread, rate = cell
    x, labels, truth, trusted = make_cell(n, C, d, spread, rate, seed)
    flagged, suggested, estimate, seconds = run_tool(tool, x, labels, trusted, C)
    others = np.ones(n, bool)
    others[trusted] = False
    flagged = np.asarray(flagged, bool) & others
    wrong = (labels != truth) & others
    return {"n": n, "classes": C, "dim": d, "spread": spread, "rate": rate, "seed": seed, "tool": tool,
            "trusted": int(trusted.size), "true_noise_scored": float(wrong.sum() / others.sum()),
            "estimated_noise_rate": estimate, "flagged": int(flagged.sum()),
            "precision": float(wrong[flagged].mean()) if flagged.any() else None,
            "recall": float(flagged[wrong].mean()) if wrong.any() else None,
            "flagged_same": int((flagged & (np.asarray(suggested) == labels)).sum()),
            "seconds": seconds, "env": env}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--tools", nargs="+", default=list(TOOLS), choices=TOOLS)
    p.add_argument("--out", default=os.path.join(RESULTS, "many_classes_label_issues.jsonl"))
    args = p.parse_args(argv)
    env = environment(torch.device("cpu"))
    with open(args.out, "a") as f:
        for cell in CELLS:
            for seed in args.seeds:
                for tool in args.tools:
                    r = record(cell, seed, tool, env)
                    f.write(json.dumps(r) + "\n")
                    f.flush()
                    print(f"{tool:22s} n={cell[0]} C={cell[1]} seed={seed}: precision {r['precision']} "
                          f"recall {r['recall']} flagged {r['flagged']} (suggestion = given: "
                          f"{r['flagged_same']}) estimate {r['estimated_noise_rate']} truth "
                          f"{r['true_noise_scored']:.3f} {r['seconds']:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
