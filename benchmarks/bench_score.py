"""Cost of ``fastreweight score`` at scale on this machine: plain, ``whiten="auto"`` and
``whiten="auto", refine=1``.

    python benchmarks/bench_score.py [--n 100000] [--d 512] [--classes 100] [--clean 2000] [--chunk 8192]

The features are a synthetic Gaussian mixture written once to a memory-mapped ``.npy`` file in a
temporary directory (deleted afterwards): class means with a few shared high-variance directions
added to every row (the structure whitening is for), 30% of the labels resampled.  Each setting is
timed end to end through ``score_dataset`` (reading the memory map included), best of ``--repeat``
runs, with the AUROC of flagging the resampled labels and ``memory_bound_bytes`` for the setting.
Appends one JSON record per setting to ``benchmarks/results/score_cpu.jsonl``.
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

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from harness import environment  # noqa: E402
from fastreweight.label_issues import load_array, memory_bound_bytes, score_dataset  # noqa: E402

SETTINGS = {"plain": {}, "whiten": {"whiten": "auto"}, "whiten+refine": {"whiten": "auto", "refine": 1}}


def make_features(path: str, n: int, d: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Write n rows to ``path`` a block at a time; returns (true labels, noisy labels)."""
    g = np.random.default_rng(seed)
    means = g.standard_normal((classes, d)).astype(np.float32)
    shared = g.standard_normal((8, d)).astype(np.float32) * 6.0  # shared nuisance directions
    y = g.integers(0, classes, n)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d))
    for s in range(0, n, 65536):
        e = min(n, s + 65536)
        rows = means[y[s:e]] + g.standard_normal((e - s, d)).astype(np.float32) * 2.0
        rows += g.standard_normal((e - s, 8)).astype(np.float32) @ shared
        out[s:e] = rows
    out.flush()
    del out
    noisy = y.copy()
    flip = g.random(n) < 0.3
    noisy[flip] = g.integers(0, classes, int(flip.sum()))
    return y, noisy


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--clean", type=int, default=2000)
    ap.add_argument("--chunk", type=int, default=8192)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "score_cpu.jsonl"))
    args = ap.parse_args(argv)
    from sklearn.metrics import roc_auc_score

    env = environment(torch.device("cpu"))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "features.npy")
        y_true, noisy = make_features(path, args.n, args.d, args.classes, args.seed)
        feats = load_array(path, "features")
        g = np.random.default_rng(args.seed + 1)
        clean_idx = g.choice(args.n, args.clean, replace=False)
        cx, cy = np.asarray(feats[np.sort(clean_idx)]), y_true[np.sort(clean_idx)]
        wrong = noisy != y_true
        for name, kw in SETTINGS.items():
            times = []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                res = score_dataset(feats, noisy, cx, cy, num_classes=args.classes, chunk_rows=args.chunk, **kw)
                times.append(time.perf_counter() - t0)
            rec = dict(setting=name, n=args.n, d=args.d, classes=args.classes, clean=args.clean, chunk_rows=args.chunk,
                       seconds=min(times), seconds_all=times, auroc=float(roc_auc_score(wrong, -res.scores)),
                       memory_bound_mib=memory_bound_bytes(args.n, args.d, args.clean, args.classes, args.chunk,
                                                           whiten="whiten" in kw, refine=bool(kw.get("refine")))
                       / 2**20,
                       whitening=res.whitening, refinement=res.refinement, threads=torch.get_num_threads(), env=env)
            with open(args.out, "a") as fh:
                fh.write(json.dumps(rec) + "\n")
            print(f"{name:>14}: {rec['seconds']:.2f} s  AUROC {rec['auroc']:.4f}  memory bound "
                  f"{rec['memory_bound_mib']:.0f} MiB  strength {(res.whitening or {}).get('strength')}", flush=True)


if __name__ == "__main__":
    main()
