"""Tables of the instance-dependent-noise grids for docs/results.md (called by benchmarks/render.py).

Rows: the runs of ``benchmarks/run_experiments.py instance`` / ``instance-cc`` / ``instance-cnn``; columns: the
(dataset, noise, rate) cells, each as mean ± std over seeds of the test accuracy after the last epoch with the
margin over ERM's mean in the same cell (points), then the worst margin over the cells, then per dataset the
median epoch seconds of the run (median over that dataset's cells and seeds of each run's median epoch) and its
ratio to ERM's (paired by cell, seed and invocation, as the class-conditional tables do).  Numbers come from the
committed result files only.
"""
from __future__ import annotations

import json
import os
import statistics

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")

_ACC = ("test accuracy after the last epoch, mean ± std over seeds, and in brackets the margin over ERM's mean in "
        "the same cell (points); worst margin: the smallest of those over the table's cells; s/epoch: median over "
        "the dataset's cells and seeds of the run's median epoch time; × ERM: median over cells and seeds of that "
        "over ERM's epoch time in the same cell, seed and invocation")

#: section -> (results file, what the table holds)
INSTANCE_TABLES = {
    "instance": ("instance_grid.jsonl", "instance-dependent noise at 30% (`fastreweight.noise`), MLP, "
                                        "`demo-mnist` / `demo-digits` presets; " + _ACC + "."),
    "instance-cc": ("instance_cc.jsonl", "the class-conditional cells of [the variants grid](#variants), rerun "
                                         "with `relabel` and `fbr+whiten/10` beside ERM in one invocation; "
                                         + _ACC + "."),
    "instance-heldout": ("instance_grid_heldout.jsonl", "seeds 3–5, never used to choose an option: the "
                         "instance grid rerun after relabel's defaults were fixed on seeds 0–2; " + _ACC + "."),
    "instance-cc-heldout": ("instance_cc_heldout.jsonl", "seeds 3–5, never used to choose an option: the "
                            "class-conditional cells rerun after relabel's defaults were fixed on seeds 0–2; "
                            + _ACC + "."),
    "instance-cnn": ("instance_cnn.jsonl", "MNIST-5k as 1×28×28 images on the small CNN of `fastreweight.models` "
                                           "(10 epochs), instance-dependent noise at 30%; " + _ACC + "."),
}


def read_jsonl(name, results=None):
    """The records of ``NAME`` in ``results`` (default ``benchmarks/results``; ``None`` when the file is
    absent); render.py reads with it too."""
    path = os.path.join(results or RESULTS, name)
    if not os.path.exists(path):
        return None
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _cell_key(r):
    return (r["dataset"], r["noise"], r["rate"])


def _first(recs):
    seen, out = set(), []
    for r in recs:
        k = (r["run"],) + _cell_key(r) + (r["seed"],)
        if k not in seen:
            seen.add(k)
            out.append(r)
    return out


def _ratio(recs, run):
    base = {}
    for r in recs:
        if r["run"] == "erm":
            base.setdefault(_cell_key(r) + (r["seed"],), r["epoch_s_median"])
            base[_cell_key(r) + (r["seed"], r.get("invocation"))] = r["epoch_s_median"]
    ratios = []
    for r in recs:
        if r["run"] == run:
            b = base.get(_cell_key(r) + (r["seed"], r.get("invocation")), base.get(_cell_key(r) + (r["seed"],)))
            if b:
                ratios.append(r["epoch_s_median"] / b)
    return statistics.median(ratios) if ratios else float("nan")


def summary(recs):
    """{run: {cell: (mean, std, n, margin_points)}} with the cells in table order; margin None without ERM."""
    first = _first(recs)
    cells = sorted({_cell_key(r) for r in first}, key=lambda c: (c[0] != "mnist5k", c[1], c[2]))
    runs = list(dict.fromkeys(r["run"] for r in first))
    acc = {(run, c): [r["last_acc"] for r in first if r["run"] == run and _cell_key(r) == c] for run in runs for c in cells}
    out = {}
    for run in runs:
        out[run] = {}
        for c in cells:
            v = acc[(run, c)]
            if not v:
                continue
            m = statistics.mean(v)
            s = statistics.stdev(v) if len(v) > 1 else 0.0
            erm = acc.get(("erm", c))
            out[run][c] = (m, s, len(v), None if not erm else 100 * (m - statistics.mean(erm)))
    return cells, out


def table(name, note):
    recs = read_jsonl(name)
    if not recs:
        return None
    cells, summ = summary(recs)
    datasets = list(dict.fromkeys(c[0] for c in cells))
    seeds = sorted({r["seed"] for r in recs})
    commits = sorted({r["env"]["commit"] for r in recs})
    dates = sorted({r["env"]["date"][:10] for r in recs})
    conc = sorted({r.get("concurrent_runs", 1) for r in recs})
    missing = []
    for run, per in summ.items():
        for c in cells:
            n = per.get(c, (0, 0, 0, 0))[2]
            if n < len(seeds):
                missing.append(f"{run} {c[0]} {c[1]} {n}/{len(seeds)} seeds")
    lines = [
        f"Source: `benchmarks/results/{name}` (seeds {seeds}, {recs[-1]['env']['device_name']}, "
        f"{recs[-1].get('threads', 1)} thread per run, {' / '.join(map(str, conc))} runs sharing the machine; "
        f"commit {', '.join(commits)}, {', '.join(dates)}); {note}"
        + (" Incomplete: " + "; ".join(missing) + "." if missing else ""),
        "",
        "| run | " + " | ".join(f"{d} {n} {int(round(rt * 100))}%" for d, n, rt in cells) + " | worst margin | "
        + " | ".join(f"s/epoch {d} (× ERM)" for d in datasets) + " |",
        "| --- " * (len(cells) + len(datasets) + 2) + "|",
    ]
    for run, per in summ.items():
        row = []
        for c in cells:
            if c not in per:
                row.append("")
                continue
            m, s, n, mg = per[c]
            txt = f"{m:.3f} ± {s:.3f}" if n > 1 else f"{m:.3f}"
            if mg is not None and run != "erm":
                txt += f" ({mg:+.1f})"
            row.append(txt)
        margins = [v[3] for v in per.values() if v[3] is not None]
        worst = "" if run == "erm" or not margins else f"{min(margins):+.1f}"
        times = []
        for d in datasets:
            rs = [r for r in recs if r["dataset"] == d]
            ts = [r["epoch_s_median"] for r in rs if r["run"] == run]
            times.append("" if not ts else f"{statistics.median(ts):.3f}"
                         + ("" if run == "erm" else f" (×{_ratio(rs, run):.2f})"))
        lines.append(f"| {run} | " + " | ".join(row) + f" | {worst} | " + " | ".join(times) + " |")
    return "\n".join(lines)


def instance_table(section):
    return table(*INSTANCE_TABLES[section])


if __name__ == "__main__":
    for s in INSTANCE_TABLES:
        t = instance_table(s)
        if t:
            print(t, "\n")


_NOISE_NAME = {"sym": "symmetric", "asym": "pair flips", "confusion": "confusion", "boundary": "boundary",
               "cluster": "cluster"}
_DATA_NAME = {"mnist5k": "MNIST-5k", "digits": "digits"}


def headline_relabel(results=None):
    """The recommended method against ERM, the published recipe and FBR + whitening on every MLP cell:
    the README's headline table (``docs/headline.md``).  ``None`` without the grids."""
    inst, cc = read_jsonl("instance_grid.jsonl", results), read_jsonl("instance_cc.jsonl", results)
    variants = read_jsonl("variants.jsonl", results)
    if not inst or not cc:
        return None
    rows = []
    for recs, paper_recs in ((cc, variants or []), (inst, inst)):
        cells, summ = summary(recs)
        _, paper = summary([r for r in paper_recs if r["run"] in ("erm", "paper")]) if paper_recs else ([], {})
        for c in cells:
            means = [None if (v := per.get(run, {}).get(c)) is None else v[0]
                     for per, run in ((summ, "erm"), (paper, "paper"), (summ, "fbr+whiten/10"), (summ, "relabel"))]
            top = max(m for m in means if m is not None)
            txt = ["—" if m is None else (f"**{m:.3f}**" if f"{m:.3f}" == f"{top:.3f}" else f"{m:.3f}") for m in means]
            rel = summ.get("relabel", {}).get(c)
            gain = "—" if rel is None or rel[3] is None else f"{rel[3]:+.1f}"
            rows.append(f"| {_DATA_NAME.get(c[0], c[0])}, {c[2]:.0%} {_NOISE_NAME.get(c[1], c[1])} | "
                        + " | ".join(txt) + f" | {gain} |")
    ratios = []
    for d in ("mnist5k", "digits"):
        rs = [r for r in inst + cc if r["dataset"] == d]
        ratios.append(f"×{_ratio(rs, 'relabel'):.2f} ({_DATA_NAME[d]})")
    seeds = sorted({r["seed"] for r in inst + cc})
    lines = ["| noise cell (MLP, 100 / 50 clean labels) | ERM | published recipe | FBR + whitening, refit every "
             "10th | `relabel` (recommended) | relabel − ERM (points) |", "| --- " * 6 + "|", *rows, "",
             f"Test accuracy after the last epoch, mean over seeds {seeds[0]}–{seeds[-1]} (bold: the best of the "
             "row; the last column from unrounded means): the class-conditional "
             "cells from `benchmarks/results/instance_cc.jsonl` (published recipe: `variants.jsonl`), the "
             "instance-dependent ones (30%, `fastreweight.noise`) from `instance_grid.jsonl`. relabel's epoch "
             f"costs {' and '.join(ratios)} ERM's (median ratio within an invocation, 2 shared CPU cores)."]
    return "\n".join(lines)
