"""Cost of ``find_label_issues``' default scorer at its largest size: ``knn`` up to ``KNN_MAX_ROWS`` rows.

    python benchmarks/bench_knn.py [--rows 200000] [--dim 512] [--classes 100] [--clean-per-class 10]

``scorer="auto"`` picks ``knn`` for up to ``KNN_MAX_ROWS`` = 200000 rows (and then holds every row in
memory); above it, the streamed FBR scorer.  This times one ``find_label_issues`` call with the default
flag rule on ``bench_score.make_features``' Gaussian mixture (class means, with ``--nuisance`` scaling 8
shared directions added to every row: 0 by default, 6 in ``bench_score``; 30% of the labels resampled), ``clean-per-class`` trusted rows per class with their true
labels (``--scorer knn`` keeps knn where ``auto`` would give it up), and records:

* ``seconds`` of the call, and the load average before and after (the cores may be shared);
* ``rss``: the peak growth of the process's anonymous resident memory during the call (sampled every
  2 ms), against ``knn_memory_bytes`` for the same shape where knn ran, else ``memory_bound_bytes``
  (``within_bound``);
* the quality on the synthetic noise: AUROC of ``label_score`` for the wrong labels, precision and
  recall of the flagged set, the estimated against the true noise rate (rows other than the trusted).

Appends one record per ``--rows`` value to ``benchmarks/results/knn_scale_cpu.jsonl`` (``--out``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from bench_score import RssSampler, make_features  # noqa: E402
from harness import environment  # noqa: E402
from fastreweight.label_issues import find_label_issues, knn_memory_bytes, memory_bound_bytes  # noqa: E402
from fastreweight.label_issues import find as F  # noqa: E402

RESULTS = os.path.join(os.path.dirname(__file__), "results")


def run(n: int, args, env: dict) -> dict:
    from sklearn.metrics import roc_auc_score

    with tempfile.TemporaryDirectory(dir=args.tmpdir) as tmp:
        path = os.path.join(tmp, "features.npy")
        y_true, noisy = make_features(path, n, args.d, args.classes, args.seed, nuisance=args.nuisance)
        x = np.load(path)  # in memory, as the knn scorer holds it anyway
    g = np.random.default_rng(args.seed + 1)
    clean_idx = np.sort(np.concatenate([g.choice(np.flatnonzero(y_true == c), args.clean_per_class, replace=False)
                                        for c in range(args.classes)]))
    labels = noisy.copy()
    labels[clean_idx] = y_true[clean_idx]
    wrong = labels != y_true
    others = np.ones(n, bool)
    others[clean_idx] = False
    load_before = list(os.getloadavg())
    with RssSampler() as sampler:
        t0 = time.perf_counter()
        issues = find_label_issues(x, labels, clean_idx=clean_idx, num_classes=args.classes, scorer=args.scorer)
        secs = time.perf_counter() - t0
    ran = issues.settings.get("scorer")
    if ran == "knn" or "knn_probe_auroc" in issues.settings:  # knn ran (and perhaps gave way to fbr-whiten)
        bound = knn_memory_bytes(n, args.d, args.classes)
    else:  # the streamed scorer alone: score_dataset's bound (8192-row chunks, find_label_issues' default)
        bound = memory_bound_bytes(n, args.d, int(clean_idx.size), args.classes, 8192, whiten=ran == "fbr-whiten",
                                   refine=ran == "fbr-whiten")
    flagged = issues.is_label_issue[others]
    w = wrong[others]
    tp = int((flagged & w).sum())
    kept = ("scorer", "scorer_reason", "flag", "neighbours", "probe_auroc", "knn_probe_auroc", "fbr_whiten_probe_auroc")
    return dict(n=n, d=args.d, classes=args.classes, nuisance=args.nuisance, clean=int(clean_idx.size),
                scorer_requested=args.scorer,
                scorer=issues.settings.get("scorer"), flag=issues.settings.get("flag"),
                settings={k: issues.settings[k] for k in kept if k in issues.settings}, seconds=secs, threads=torch.get_num_threads(),
                rss=sampler.summary, memory_bound_mib=bound / 2**20,
                within_bound=bool(sampler.summary["anon_peak_growth_mib"] <= bound / 2**20),
                auroc=float(roc_auc_score(w, -issues.label_score[others])),
                precision=tp / max(int(flagged.sum()), 1), recall=tp / max(int(w.sum()), 1),
                flagged=int(flagged.sum()), true_noise=float(w.mean()),
                estimated_noise_rate=float(issues.estimated_noise_rate),
                knn_max_rows=F.KNN_MAX_ROWS, loadavg_before=load_before, loadavg=list(os.getloadavg()),
                cpus=os.cpu_count(), env=env)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", default="200000", help="comma-separated row counts, each one record")
    ap.add_argument("--dim", dest="d", type=int, default=512)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--clean-per-class", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--nuisance", type=float, default=0.0,
                    help="scale of the 8 shared directions added to every row (bench_score uses 6; 0: clusters alone)")
    ap.add_argument("--scorer", default="auto", choices=("auto", "knn", "fbr", "fbr-whiten"),
                    help="auto (the default, with its probe and fallback), or a scorer kept whatever the probe finds")
    ap.add_argument("--tmpdir", default=None)
    ap.add_argument("--out", default=os.path.join(RESULTS, "knn_scale_cpu.jsonl"))
    args = ap.parse_args(argv)
    env = environment(torch.device("cpu"))
    for n in (int(v) for v in args.rows.split(",")):
        if n > F.KNN_MAX_ROWS:
            raise SystemExit(f"--rows {n} is above KNN_MAX_ROWS = {F.KNN_MAX_ROWS}: scorer='auto' streams FBR there")
        rec = run(n, args, env)
        with open(args.out, "a") as fh:
            fh.write(json.dumps(rec) + "\n")
        print(f"n {n} nuisance {args.nuisance:g}: {rec['scorer']}, {rec['seconds']:.1f} s, memory {rec['rss']['anon_peak_growth_mib']:.0f} MiB of "
              f"{rec['memory_bound_mib']:.0f} MiB bound; AUROC {rec['auroc']:.4f}, precision {rec['precision']:.3f}, "
              f"recall {rec['recall']:.3f}, noise {rec['estimated_noise_rate']:.3f} (true {rec['true_noise']:.3f})",
              flush=True)


if __name__ == "__main__":
    main()
