"""What each label-noise kind of ``fastreweight.noise`` looks like on MNIST-5k at 30%.

    python benchmarks/describe_noise.py [--seeds 0 1 2] [--rate 0.3]

Per seed: the training rows of ``make_data("mnist5k", noise="none", seed=s)`` (3900 digits, true
labels), then ``make_noise(kind, x, y, rate, num_classes=10, seed=s + 1)`` for every kind -- the
labels ``make_data("mnist5k", noise=kind, rate=rate, seed=s)`` gives its training set.  Two
reference classifiers are fitted on the TRUE labels, out of fold (5 folds, folds other than the
generators'): logistic regression on PCA-50 (``out_of_fold_proba``, the model ``confusion`` uses)
and a distance-weighted 20-nearest-neighbour vote on raw pixels (a model none of the kinds uses).
Per kind and seed the record holds:

* ``flips``, ``realised_rate``: wrong labels and their fraction;
* ``second_lr`` / ``second_knn``: the fraction of flipped samples whose new label is the class the
  reference ranks second for that sample (``1/9`` for a uniformly random wrong label would be the
  chance level only if the reference's top class were always right);
* ``other_lr`` / ``other_knn``: the fraction of flipped samples whose new label is the reference's most
  probable class other than the TRUE one (the second-ranked class when the reference is right);
* ``p_new_lr``: the mean LR-reference probability of the new label over the flipped samples;
* ``class_rate_min`` / ``class_rate_max``: the smallest and largest flip rate over true classes;
* ``pairs_80``: how many of the 90 (true -> noisy) class pairs hold 80% of the flips;
* ``nn_same``: the fraction of flipped samples whose nearest training neighbour (raw pixels) is also
  flipped, to the same label (spatially correlated noise);
* ``cleanlab_precision`` / ``cleanlab_recall`` / ``cleanlab_auroc``: ``cleanlab.filter.find_label_issues``
  and ``get_label_quality_scores`` given 5-fold logistic-regression probabilities on the NOISY labels
  (how visible the noise is to a standard detector);
* ``seconds``: the generator's wall time.

Writes (replaces) ``benchmarks/results/noise_kinds.jsonl``, one record per kind and seed, each with
the environment of ``benchmarks/harness.py``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))
from harness import environment  # noqa: E402

from fastreweight import data as D  # noqa: E402
from fastreweight import noise as N  # noqa: E402

#: (row name, make_noise kind, options)
KINDS = [
    ("sym", "sym", {}),
    ("pair", "pair", {}),
    ("confusion", "confusion", {}),
    ("confusion (ncm)", "confusion", {"model": "ncm"}),
    ("boundary", "boundary", {}),
    ("cluster", "cluster", {}),
]
C = 10


def _second(p: np.ndarray) -> np.ndarray:
    order = np.argsort(-p, axis=1, kind="stable")
    return order[:, 1]


def _top_other(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    q = p.copy()
    q[np.arange(len(y)), y] = -np.inf
    return q.argmax(axis=1)


def _knn_oof(x: np.ndarray, y: np.ndarray, seed: int, k: int = 20, folds: int = 5) -> np.ndarray:
    from sklearn.neighbors import KNeighborsClassifier

    fold = np.random.default_rng(seed).permutation(len(y)) % folds
    p = np.zeros((len(y), C))
    for f in range(folds):
        te = fold == f
        clf = KNeighborsClassifier(n_neighbors=k, weights="distance").fit(x[~te], y[~te])
        p[np.ix_(te, clf.classes_)] = clf.predict_proba(x[te])
    return p


def _auroc(score: np.ndarray, positive: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(positive, score)) if 0 < positive.sum() < len(positive) else float("nan")


def describe(seed: int, rate: float, env: dict) -> list[dict]:
    import cleanlab
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores
    from sklearn.neighbors import NearestNeighbors

    split = D.make_data("mnist5k", noise="none", rate=0.0, seed=seed)
    x = split.x_train.numpy()
    y = split.y_train_true.numpy()
    p_lr = N.out_of_fold_proba(x, y, num_classes=C, seed=seed + 100)
    p_knn = _knn_oof(x, y, seed + 100)
    second_lr, second_knn = _second(p_lr), _second(p_knn)
    other_lr, other_knn = _top_other(p_lr, y), _top_other(p_knn, y)
    nn = NearestNeighbors(n_neighbors=2).fit(x).kneighbors(x, return_distance=False)[:, 1]
    out = []
    for name, kind, options in KINDS:
        t0 = time.perf_counter()
        noisy = N.make_noise(kind, x, y, rate, num_classes=C, seed=seed + 1, **options)
        seconds = time.perf_counter() - t0
        f = noisy != y
        pairs = np.bincount(y[f] * C + noisy[f], minlength=C * C)
        cum = np.cumsum(np.sort(pairs)[::-1])
        probs_noisy = N.out_of_fold_proba(x, noisy, num_classes=C, seed=seed + 200)
        issues = find_label_issues(noisy, probs_noisy)
        quality = get_label_quality_scores(noisy, probs_noisy)
        class_rates = [float(f[y == c].mean()) for c in range(C)]
        out.append({
            "kind": name, "make_noise": kind, "options": options, "dataset": "mnist5k", "rate": rate, "seed": seed,
            "n": int(len(y)), "flips": int(f.sum()), "realised_rate": float(f.mean()),
            "second_lr": float((noisy[f] == second_lr[f]).mean()),
            "second_knn": float((noisy[f] == second_knn[f]).mean()),
            "other_lr": float((noisy[f] == other_lr[f]).mean()),
            "other_knn": float((noisy[f] == other_knn[f]).mean()),
            "p_new_lr": float(p_lr[np.flatnonzero(f), noisy[f]].mean()),
            "class_rate_min": min(class_rates), "class_rate_max": max(class_rates),
            "pairs_80": int(np.searchsorted(cum, 0.8 * f.sum()) + 1),
            "nn_same": float((f[nn] & (noisy[nn] == noisy))[f].mean()),
            "cleanlab_precision": float(f[issues].mean()) if issues.any() else 0.0,
            "cleanlab_recall": float(issues[f].mean()),
            "cleanlab_auroc": _auroc(-quality, f),
            "seconds": seconds, "cleanlab": cleanlab.__version__, "env": env,
        })
        print(f"seed {seed} {name:16s} flips {f.sum()} second(lr) {out[-1]['second_lr']:.3f} "
              f"second(knn) {out[-1]['second_knn']:.3f} cleanlab recall {out[-1]['cleanlab_recall']:.3f} "
              f"({seconds:.1f} s)", flush=True)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--rate", type=float, default=0.3)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "noise_kinds.jsonl"))
    args = ap.parse_args(argv)
    env = environment(torch.device("cpu"))
    records = []
    for seed in args.seeds:
        records += describe(seed, args.rate, env)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        for r in records:
            fh.write(json.dumps(r) + "\n")
    print(f"wrote {len(records)} records to {args.out}")


if __name__ == "__main__":
    main()
