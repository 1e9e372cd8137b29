"""The probe of ``find_label_issues`` (``label_issues/probe.py``) on the label-issue benchmark's cells.

    python benchmarks/probe_cells.py [--seeds 0 1] [--out benchmarks/results/probe_cells.jsonl]

For each cell (MNIST-5k and scikit-learn's digits; PCA features as in ``compare_label_issues.py``; its
noise kinds at 25-30% and at 10%; its 10 trusted rows per class given their true labels), one record:
the probe AUROC of ``knn`` (what ``scorer="auto"`` checks) and of ``fbr-whiten`` (its fallback), the
scorer ``auto`` ran, and the AUROC with which each scorer ranks the wrong labels of the other rows.  It
shows where the guard would act and whether the probe's order of the two scorers is the dataset's.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import warnings

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, ".."))
import compare_label_issues as cl  # noqa: E402
from harness import environment  # noqa: E402
from fastreweight.label_issues import find_label_issues  # noqa: E402
from fastreweight.label_issues import find as F  # noqa: E402
from fastreweight.label_issues.probe import auroc  # noqa: E402

KINDS = ("sym", "pair", "confusion", "boundary", "cluster", "sym-10", "pair-10", "confusion-10", "boundary-10",
         "cluster-10")


def cell(ds: str, seed: int, kind: str, x, y, trusted, pca) -> dict:
    noisy = cl.noise_source(kind)(x, y, seed)
    labels = noisy.copy()
    labels[trusted] = y[trusted]
    others = np.ones(len(y), bool)
    others[trusted] = False
    wrong = (labels != y)[others]
    rec = dict(dataset=ds, seed=seed, features="pca", noise=kind)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the guard's warnings: what they say is recorded below
        auto = find_label_issues(pca, labels, clean_idx=trusted, num_classes=10)
        for scorer in ("knn", "fbr-whiten"):
            got = auto if scorer == auto.settings["scorer"] else find_label_issues(
                pca, labels, clean_idx=trusted, num_classes=10, scorer=scorer)
            q = got.label_score[others]
            rec[f"auroc_{scorer}"] = auroc(q[~wrong], q[wrong])
            if scorer == "knn":
                rec["probe_knn"] = got.settings["probe_auroc"]
    rec["probe_fbr_whiten"] = F._fbr_probe(pca, labels, trusted, None, None, 10, "cpu", 8192)
    rec["auto_scorer"] = auto.settings["scorer"]
    return rec


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--out", default=os.path.join(HERE, "results", "probe_cells.jsonl"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    env = environment(torch.device("cpu"))
    with open(args.out, "a") as fh:
        for ds in ("mnist5k", "digits"):
            for seed in args.seeds:
                x, y = cl.load_data(False, seed, ds)
                trusted = np.sort(cl.trusted_rows(y, seed))
                pca = cl.pca_features(x, seed).astype(np.float32)
                for kind in KINDS:
                    rec = cell(ds, seed, kind, x, y, trusted, pca)
                    rec["env"] = env
                    fh.write(json.dumps(rec) + "\n")
                    fh.flush()
                    print(f"{ds} s{seed} {kind:13s} probe knn {rec['probe_knn']:.3f} fbr-whiten "
                          f"{rec['probe_fbr_whiten']:.3f} | AUROC knn {rec['auroc_knn']:.4f} fbr-whiten "
                          f"{rec['auroc_fbr-whiten']:.4f} | auto: {rec['auto_scorer']}", flush=True)


if __name__ == "__main__":
    main()
