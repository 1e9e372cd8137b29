"""Re-run some runs of the committed ``variants.jsonl`` at the current commit and compare the
accuracies run for run (same cell, seed and settings).

    python benchmarks/recheck_variants.py [--runs fbr-default fbr+whiten] [--seeds 0 1 2]

Training on the CPU is deterministic, so a difference means the code's arithmetic changed since
the commit that produced the file.  Writes one JSON record per run to
``benchmarks/results/variants_recheck.jsonl``: the key, the committed and the new last-epoch test
accuracy, and both commits.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
import run_experiments as R  # noqa: E402
from harness import environment  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", nargs="+", default=["fbr-default", "fbr+whiten"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", default=os.path.join(R.RESULTS, "variants_recheck.jsonl"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    env = environment(torch.device("cpu"))
    committed = {}
    for line in open(os.path.join(R.RESULTS, "variants.jsonl")):
        r = json.loads(line)
        committed.setdefault((r["run"], r["dataset"], r["noise"], r["rate"], r["seed"]), r)
    with open(args.out, "a") as fh:
        for dataset, preset in (("mnist5k", "demo-mnist"), ("digits", "demo-digits")):
            settings = R.variants(preset)
            for noise, rate in R.NOISE_CELLS:
                for seed in args.seeds:
                    for name in args.runs:
                        old = committed[(name, dataset, noise, rate, seed)]
                        rec = R.run_one(preset, dataset, noise, rate, seed, name, settings[name])
                        out = dict(run=name, dataset=dataset, noise=noise, rate=rate, seed=seed,
                                   committed_acc=old["last_acc"], committed_commit=old["env"]["commit"],
                                   new_acc=rec["last_acc"], env=env)
                        fh.write(json.dumps(out) + "\n")
                        fh.flush()
                        print(f"{dataset} {noise}{rate} s{seed} {name}: {old['last_acc']:.3f} -> {rec['last_acc']:.3f}",
                              flush=True)


if __name__ == "__main__":
    main()
