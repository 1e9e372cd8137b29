"""Render the committed result files into docs/results.md, docs/headline.md and PNG plots — never typed by hand.

    python benchmarks/render.py              # writes docs/results.md, docs/headline.md and the PNGs
    python benchmarks/render.py --no-plots   # the markdown only

It also fills the generated block of docs/noise.md (the noise-kinds table, between its two marker
comments).  Every table names the file it came from and the commit and date recorded in that file.  A table whose
result file is missing is left out.  The output depends on the result files only (no clock, no
environment), so running it twice gives the same files.  README.md is not touched: its results table
is docs/headline.md's first table, pasted by hand (tests/test_readme_results.py checks that they agree).
"""
from __future__ import annotations

import json
import os
import re
import statistics
from collections import defaultdict

import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from render_instance import headline_relabel, instance_table, read_jsonl  # noqa: E402


HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
ROOT = os.path.normpath(os.path.join(HERE, ".."))
DOCS = os.path.join(ROOT, "docs")


def _jsonl(name):
    return read_jsonl(name, RESULTS)  # RESULTS read at call time: tests point it elsewhere


def _ms(values, fmt="{:.3f}"):
    if len(values) == 1:
        return fmt.format(values[0])
    return (fmt + " ± " + fmt).format(statistics.mean(values), statistics.stdev(values))


def cleanlab_table(name="cleanlab_comparison.jsonl"):
    recs = _jsonl(name)
    if not recs:
        return None
    groups = defaultdict(list)
    for r in recs:
        groups[(r.get("dataset", "mnist5k"), r["rate"], r["method"])].append(r)
    seeds = sorted({r["seed"] for r in recs})
    env = recs[-1]
    commits = sorted({r["commit"] for r in recs})
    lines = [
        f"Source: `benchmarks/results/{name}` (seeds {seeds}, {env['date']}, commit {', '.join(commits)}, "
        f"{env['cores']}-core CPU, cleanlab {env['cleanlab']}); mean ± std over seeds; "
        + "; ".join(desc for ds, desc in (("mnist5k", "MNIST-5k: 4500 scored rows, clean pool 500"),
                                          ("digits", "digits: 1497 scored rows, clean pool 300"))
                    if any(k[0] == ds for k in groups)) + ".",
        "",
        "| data | noise | method | AUROC | precision | recall | seconds |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    order = {"mnist5k": 0, "digits": 1}
    for (ds, rate, method), rs in sorted(groups.items(), key=lambda kv: (order.get(kv[0][0], 9), kv[0][1], kv[0][2])):
        lines.append(
            f"| {ds} | {rate:.0%} | {method} | {_ms([r['auroc'] for r in rs])} | {_ms([r['precision'] for r in rs])} | "
            f"{_ms([r['recall'] for r in rs])} | {_ms([r['seconds'] for r in rs], '{:.2f}')} |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# label issues: every tool given the same features (benchmarks/compare_label_issues.py)
# ---------------------------------------------------------------------------------------------
_LI_NOISE_ORDER = ("sym", "pair", "confusion", "boundary", "cluster")
_LI_FEATURES = {"pca": "PCA-64 of the pixels (unsupervised)",
                "learned": "penultimate features of an MLP trained on the noisy labels (5-fold cross-fitted)"}
_LI_METRICS = (("auroc", "AUROC"), ("precision_at_k", "precision@k"))


def _li_files():
    if not os.path.isdir(RESULTS):
        return []
    return sorted(f for f in os.listdir(RESULTS) if f.startswith("label_issues_") and f.endswith(".jsonl"))


def _li_selected():
    """tool -> (file, records): each tool's records from the file with its latest recorded date (ties: the
    later file name), so a rerun of some tools into a new file replaces only those tools' rows."""
    best = {}
    for f in _li_files():
        by_tool = defaultdict(list)
        for r in _jsonl(f) or []:
            if not r.get("quick") and r.get("dataset", "mnist5k") == "mnist5k":
                by_tool[r["tool"]].append(r)
        for tool, rs in by_tool.items():
            key = (max(r["env"]["date"] for r in rs), f)
            if tool not in best or key > best[tool][0]:
                best[tool] = (key, f, rs)
    return {tool: (f, rs) for tool, (_, f, rs) in best.items()}


def _li_noise_key(n):
    base = n.split("-")[0]  # "sym-10": the kind "sym" at another rate, beside it
    return (_LI_NOISE_ORDER.index(base) if base in _LI_NOISE_ORDER else len(_LI_NOISE_ORDER), n)


_LI_TOOL_ORDER = ("cleanlab:datalab-knn", "cleanlab:lr", "cleanlab:datalab-lr")


def _li_tool_key(t):
    """cleanlab's tools first; fastreweight's scorers by name, its "auto" (an alias of one of them) last."""
    if t in _LI_TOOL_ORDER:
        return (0, _LI_TOOL_ORDER.index(t), t)
    return (1 if t.startswith("cleanlab:") else 2, t.endswith(":auto"), t)


def _li_same(a, b):
    """True when two tools gave the same metrics on every common (seed, features, noise)."""
    ka = {(r["seed"], r["features"], r["noise"]): r for r in a}
    common = [(ka[k], r) for r in b for k in [(r["seed"], r["features"], r["noise"])] if k in ka]
    fields = ("auroc", "precision_at_k", "precision", "recall", "flagged")
    return bool(common) and all(all(x[f] == y[f] for f in fields) for x, y in common)


def _li_shown():
    """(selected, tools shown, notes): a tool whose metrics equal those of a tool shown before it (same family) in
    every cell, e.g. an alias such as fastreweight's "auto", or Datalab given the same pred_probs, is left out,
    said so."""
    sel = _li_selected()
    notes, shown = [], []
    for tool in sorted(sel, key=_li_tool_key):
        rs = sel[tool][1]
        twin = next((t for t in shown if t.split(":")[0] == tool.split(":")[0] and _li_same(sel[t][1], rs)), None)
        if twin is not None:
            notes.append(f"`{tool}` gave exactly the metrics of `{twin}` in every cell (not shown)")
            continue
        shown.append(tool)
    return sel, shown, notes


def label_issues_source():
    sel, shown, notes = _li_shown()
    if not sel:
        return None
    recs = [r for _, rs in sel.values() for r in rs]
    files = defaultdict(list)
    for tool in sorted(sel, key=_li_tool_key):
        files[sel[tool][0]].append(tool)
    envs = [r["env"] for r in recs]
    seeds = sorted({r["seed"] for r in recs})
    skipped = {}
    for r in recs:
        skipped.update(r.get("skipped_noise") or {})
    ran = {r["noise"] for r in recs}
    src = "; ".join(
        f"`benchmarks/results/{f}` ({', '.join(f'`{t}`' for t in tools)}: "
        f"{', '.join(sorted({r['env']['date'][:10] for t in tools for r in sel[t][1]}))}, commit "
        f"{', '.join(sorted({r['env']['commit'] for t in tools for r in sel[t][1]}))})"
        for f, tools in files.items())
    lines = [
        f"Source: {src}. Seeds {seeds}; {', '.join(sorted({e['device_name'] for e in envs}))}, "
        f"{', '.join(sorted({str(e['threads']) for e in envs}))} thread; torch {', '.join(sorted({e['torch'] for e in envs}))}, "
        f"cleanlab {', '.join(sorted({e['cleanlab'] for e in envs}))}, scikit-learn {', '.join(sorted({e['sklearn'] for e in envs}))}. "
        f"{recs[0]['n']} rows, {recs[0]['trusted']} trusted (10 per class, given to fastreweight only), "
        f"metrics on the other {recs[0]['scored']}; mean ± std over seeds.",
    ]
    missing = {k: v for k, v in skipped.items() if k not in ran}
    if missing:
        lines += ["", "Noise kinds not run: " + "; ".join(f"`{k}` ({v})" for k, v in sorted(missing.items())) + "."]
    # the same inputs for every tool: one inputs hash per (seed, features, noise) across the selected files
    hashes = defaultdict(set)
    for r in recs:
        hashes[(r["seed"], r["features"], r["noise"])].add(r.get("inputs_hash"))
    differ = sorted(k for k, h in hashes.items() if len(h) > 1)
    lines += ["", "Inputs (noisy labels, trusted rows, features) identical for every tool in every cell." if not differ else
              "**Inputs differ between the files** (labels, trusted rows or features) in: "
              + ", ".join(f"seed {s} {fk} {n}" for s, fk, n in differ) + "; those cells do not compare like with like."]
    if notes:
        lines += [""] + [f"* {n}." for n in notes]
    return "\n".join(lines)


def _li_cell(rs, field, fmt="{:.3f}"):
    vals = [r[field] for r in rs if r.get(field) is not None]
    return _ms(vals, fmt) if vals else "—"


#: fastreweight tools whose flagged set is checked against cleanlab's: the default, and each named flag rule
_LI_FLAG_TOOLS = ("fastreweight:auto", "fastreweight:knn/posterior", "fastreweight:knn/margin")


def _li_flagged_vs_cleanlab(sel, features, noise):
    """Whether each flag rule's flagged set (``_LI_FLAG_TOOLS``: mean precision and recall over seeds) has
    precision and recall at or above each cleanlab variant's in this cell."""
    def pr(tool):
        rs = [r for r in sel.get(tool, (None, []))[1] if r["features"] == features and r["noise"] == noise]
        return (statistics.mean(r["precision"] for r in rs), statistics.mean(r["recall"] for r in rs)) if rs else None

    out = []
    for ours_tool in _LI_FLAG_TOOLS:
        ours = pr(ours_tool)
        if ours is None:
            continue
        verdicts = []
        for tool in _LI_TOOL_ORDER:
            theirs = pr(tool)
            if theirs is None or (tool == "cleanlab:datalab-lr" and theirs == pr("cleanlab:lr")):
                continue
            ok = ours[0] >= theirs[0] and ours[1] >= theirs[1]
            verdicts.append(f"{'at or above' if ok else '**not** at or above'} `{tool}` ({theirs[0]:.3f} / {theirs[1]:.3f})")
        if verdicts:
            rs = sel[ours_tool][1]
            rules = sorted({(r.get("settings") or {}).get("flag", "?") for r in rs})
            commits = sorted({r["env"]["commit"] for r in rs})
            out.append(f"flagged set (precision / recall) of `{ours_tool}` (flag {', '.join(rules)}, commit "
                       f"{', '.join(commits)}) {ours[0]:.3f} / {ours[1]:.3f}: " + ", ".join(verdicts))
    return "; ".join(out) or None


def label_issues_table(features):
    sel, shown, _ = _li_shown()
    groups = defaultdict(list)
    for tool in shown:
        for r in sel[tool][1]:
            if r["features"] == features:
                groups[(r["noise"], tool)].append(r)
    if not groups:
        return None
    noises = sorted({n for n, _ in groups}, key=_li_noise_key)
    lines = [
        "| noise | tool | AUROC | precision@k | precision | recall | flagged | est. noise rate (true) | seconds |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    leads = []
    for noise in noises:
        tools = sorted((t for n, t in groups if n == noise), key=_li_tool_key)
        for tool in tools:
            rs = sorted(groups[(noise, tool)], key=lambda r: r["seed"])
            est = "—"
            if any(r.get("estimated_noise_rate") is not None for r in rs):
                est = (f"{_ms([r['estimated_noise_rate'] * 100 for r in rs], '{:.1f}')}% "
                       f"({statistics.mean(r['true_noise_all'] for r in rs) * 100:.1f}%)")
            lines.append(
                f"| {noise} {rs[0]['rate']:.0%} ({statistics.mean(r['true_noise_scored'] for r in rs) * 100:.1f}% wrong) | "
                f"`{tool}` | {_li_cell(rs, 'auroc')} | {_li_cell(rs, 'precision_at_k')} | {_li_cell(rs, 'precision')} | "
                f"{_li_cell(rs, 'recall')} | {_li_cell(rs, 'flagged', '{:.0f}')} | {est} | {_li_cell(rs, 'seconds', '{:.2f}')} |")
        parts = []
        for field, title in _LI_METRICS:
            fam = {}
            for tool in tools:
                vals = [r[field] for r in groups[(noise, tool)]]
                m, s = statistics.mean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)
                f = tool.split(":")[0]
                if f not in fam or m > fam[f][1]:
                    fam[f] = (tool, m, s)
            if len(fam) < 2:
                continue
            (ta, ma, sa), (tb, mb, sb) = sorted(fam.values(), key=lambda v: -v[1])
            close = " (within the seeds' std)" if ma - mb <= max(sa, sb) else ""
            parts.append(f"{title}: `{ta}` {ma:.3f} ahead of `{tb}` {mb:.3f} by {ma - mb:.3f}{close}")
        flagged = _li_flagged_vs_cleanlab(sel, features, noise)
        if flagged:
            parts.append(flagged)
        if parts:
            leads.append(f"* **{noise}**: " + "; ".join(parts) + ".")
    if leads:
        lines += ["", "Who leads (best of each family, mean over seeds):", ""] + leads
    return "\n".join(lines)


def label_issues_vs_cleanlab_table(names=("heldout_label_issues_count_2026-12-08.jsonl", "heldout_label_issues_cosine.jsonl"),
                                   note="seeds 3–5, held out for the settings chosen up to 639e876; the cosine "
                                        "geometry, the neighbourhood-size choice and the count rule (88033e5, 793a1ab) "
                                        "were measured on them as well, on a scratch harness, so they are no longer "
                                        "held out for those", exclude=()):
    """fastreweight's flag rules against both cleanlab variants, from the records of ``names`` together
    (the first record of each (seed, features, noise, tool) counts; tools in ``exclude`` left out)."""
    recs, seen, used = [], set(), []
    for name in names:
        got = [r for r in (_jsonl(name) or []) if "tool" in r and r["tool"] not in exclude]
        if got:
            used.append(name)
        for r in got:
            key = (r["seed"], r["features"], r["noise"], r["tool"])
            if key not in seen:
                seen.add(key)
                recs.append(r)
    ours_all = sorted({r["tool"] for r in recs if r["tool"].startswith("fastreweight:")})
    if not recs or not ours_all:
        return None
    by = defaultdict(list)
    for r in recs:
        by[(r["features"], r["noise"], r["tool"])].append(r)
    cells = sorted({(r["features"], r["noise"]) for r in recs}, key=lambda c: (c[0] != "pca", _li_noise_key(c[1])))
    mean = lambda c, t, f: statistics.mean(r[f] for r in by[c + (t,)])  # noqa: E731
    seeds = sorted({r["seed"] for r in recs})
    lines = [f"Source: {', '.join(f'`benchmarks/results/{n}`' for n in used)} (`python "
             f"benchmarks/compare_label_issues.py --seeds {' '.join(map(str, seeds))} ...`; commits "
             f"{', '.join(sorted({r['env']['commit'] for r in recs}))}, {min(r['env']['date'] for r in recs)[:10]} to "
             f"{max(r['env']['date'] for r in recs)[:10]}); {note}; mean over seeds. Ranking: AUROC / precision@k "
             "against the better cleanlab variant of each metric; flagged set: precision / recall; a verdict says "
             "whether the flagged set is at or above both cleanlab variants on both.",
             "",
             "| features | noise | seeds | " + " | ".join(f"`{t}` ranking | `{t}` flagged | verdict" for t in ours_all)
             + " | best cleanlab ranking | Datalab kNN flagged | 5-fold LR flagged |",
             "| --- | --- | --- | " + " | ".join("--- | --- | ---" for _ in ours_all) + " | --- | --- | --- |"]
    wins = defaultdict(int)
    shown = 0
    skipped_inputs = []
    for c in cells:
        cl = [t for t in ("cleanlab:datalab-knn", "cleanlab:lr") if by[c + (t,)]]
        if len(cl) < 2 or not all(by[c + (t,)] for t in ours_all):
            continue
        cl_seeds = {r["seed"] for t in cl for r in by[c + (t,)]}
        if any({r["seed"] for r in by[c + (t,)]} != cl_seeds for t in ours_all + cl):
            continue  # a cell compares like with like: every tool on the same seeds
        per_seed = defaultdict(set)
        for t in ours_all + cl:
            for r in by[c + (t,)]:
                per_seed[r["seed"]].add(r.get("inputs_hash"))
        if any(len(h) > 1 for h in per_seed.values()):
            skipped_inputs.append(f"{c[0]} / {c[1]}")
            continue  # ... and on the same labels, trusted rows and features
        shown += 1
        pr = {t: (mean(c, t, "precision"), mean(c, t, "recall")) for t in cl + ours_all}
        best = (max(mean(c, t, "auroc") for t in cl), max(mean(c, t, "precision_at_k") for t in cl))
        cols = []
        for t in ours_all:
            ok = all(pr[t][0] >= pr[u][0] and pr[t][1] >= pr[u][1] for u in cl)
            wins[t] += ok
            cols.append(f"{mean(c, t, 'auroc'):.3f} / {mean(c, t, 'precision_at_k'):.3f} | "
                        f"{pr[t][0]:.3f} / {pr[t][1]:.3f} | {'yes' if ok else '**no**'}")
        lines.append(f"| {c[0]} | {c[1]} | {len(cl_seeds)} | " + " | ".join(cols) + f" | {best[0]:.3f} / {best[1]:.3f} | "
                     f"{pr[cl[0]][0]:.3f} / {pr[cl[0]][1]:.3f} | {pr[cl[1]][0]:.3f} / {pr[cl[1]][1]:.3f} |")
    rule_of = {t: sorted({(r.get("settings") or {}).get("flag", "?") for r in recs if r["tool"] == t}) for t in ours_all}
    lines += ["", "Flag rule of each column: " + "; ".join(f"`{t}`: `{'`, `'.join(rule_of[t])}`" for t in ours_all)
              + " (the default of its commit where the tool names none)."]
    if skipped_inputs:
        lines += ["", "Left out, the tools' inputs (labels, trusted rows or features) differing: "
                  + ", ".join(skipped_inputs) + "."]
    lines += ["", "Flagged set at or above both cleanlab variants: "
              + "; ".join(f"`{t}` in {wins[t]} of {shown} cells" for t in ours_all)
              + " (every tool on the same seeds and the same inputs in each cell shown)."]
    return "\n".join(lines)


#: the columns of the noise-kinds table: (record field, header, format)
_NOISE_COLUMNS = [
    ("realised_rate", "wrong labels", "{:.3f}"),
    ("second_lr", "2nd of LR", "{:.2f}"),
    ("second_knn", "2nd of kNN", "{:.2f}"),
    ("other_knn", "top other of kNN", "{:.2f}"),
    ("p_new_lr", "LR p(new label)", "{:.2f}"),
    ("class_rate_min", "class rate min", "{:.2f}"),
    ("class_rate_max", "class rate max", "{:.2f}"),
    ("pairs_80", "pairs for 80%", "{:.0f}"),
    ("nn_same", "NN flipped alike", "{:.2f}"),
    ("cleanlab_precision", "cleanlab precision", "{:.2f}"),
    ("cleanlab_recall", "cleanlab recall", "{:.2f}"),
    ("cleanlab_auroc", "cleanlab AUROC", "{:.3f}"),
]


def many_classes_table(name="many_classes_label_issues.jsonl"):
    """``many_classes_label_issues.py``: per cell, tool and commit, the mean over seeds of the flagged set's
    precision and recall, the rows flagged with their own label suggested, and the estimated noise rate."""
    recs = _jsonl(name)
    if not recs:
        return None
    by = defaultdict(list)
    for r in recs:
        by[(r["n"], r["classes"], r["tool"], r["env"]["commit"])].append(r)
    first = {}  # commits in the order the file holds them (the run before a change, then after)
    for r in recs:
        first.setdefault(r["env"]["commit"], len(first))
    order = sorted(by, key=lambda k: (k[1], k[0], k[2], first[k[3]]))
    lines = [f"Source: `benchmarks/results/{name}` ({min(r['env']['date'] for r in recs)[:10]}); mean over seeds "
             f"{', '.join(str(s) for s in sorted({r['seed'] for r in recs}))}; the rows other than the trusted ones. "
             "Own label: flagged rows whose suggested label is their given one. Estimate: fastreweight's estimated "
             "noise rate (cleanlab's call gives none).",
             "",
             "| rows | classes | rows per class | tool | commit | precision | recall | flagged | own label | "
             "estimate | true |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    def mean_of(rs, field):  # None where a run had nothing to measure (nothing flagged: no precision)
        vals = [r[field] for r in rs if r[field] is not None]
        return f"{statistics.mean(vals):.3f}" if vals else "–"

    for k in order:
        rs = by[k]
        lines.append(f"| {k[0]} | {k[1]} | {k[0] // k[1]} | `{k[2]}` | {k[3]} | {mean_of(rs, 'precision')} | "
                     f"{mean_of(rs, 'recall')} | {statistics.mean(r['flagged'] for r in rs):.0f} | "
                     f"{statistics.mean(r['flagged_same'] for r in rs):.0f} | {mean_of(rs, 'estimated_noise_rate')} | "
                     f"{statistics.mean(r['true_noise_scored'] for r in rs):.3f} |")
    return "\n".join(lines)


def audit_noise_rate_table(names=("audit_label_issues_mnist5k.jsonl",), tool="fastreweight:knn/confident"):
    """The noise rate estimated with an audit (``compare_label_issues.py --audit``: the trusted rows keep
    their noisy labels and fastreweight is told their verified ones) against the true rate of the scored
    rows: the score-assisted estimate (``estimated_noise_rate``), how often its interval held the truth
    (each call's), the audit's own share, and the confident count's share (``rule_noise_rate``)."""
    recs = [r for n in names for r in (_jsonl(n) or []) if r.get("tool") == tool and r.get("audits")]
    if not recs:
        return None
    by = defaultdict(list)
    for r in recs:
        by[(r.get("dataset", "mnist5k"), r["features"], r["noise"])].append(r)
    cells = sorted(by, key=lambda c: (c[0] != "mnist5k", c[0], c[1] != "pca", _li_noise_key(c[2])))
    lines = [f"Source: {', '.join(f'`benchmarks/results/{n}`' for n in names)}, the records of `{tool}` (commits "
             f"{', '.join(sorted({r['env']['commit'] for r in recs}))}, {min(r['env']['date'] for r in recs)[:10]}); "
             "mean over seeds. True: the share of wrong labels among the scored rows. Estimate: the score-assisted "
             "estimate of `label_issues/audit.py` (mean over a seed's calls: 5 for learned features). Held: how many "
             "calls' intervals (nominal coverage in the header) held the true rate. Share: the audit's own share of "
             "wrong labels. Count: the confident count's share, the estimate without an audit (the last call's).",
             "",
             "| dataset | features | noise | seeds | true | estimate | mean abs. error | held | share | count |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    held_all = calls_all = 0
    errs = {"estimate": [], "share": [], "count": []}
    coverage = sorted({a["coverage"] for r in recs for a in r["audits"]})
    for c in cells:
        rs = by[c]
        held = sum(a["interval"][0] <= r["true_noise_scored"] <= a["interval"][1] for r in rs for a in r["audits"])
        calls = sum(len(r["audits"]) for r in rs)
        held_all, calls_all = held_all + held, calls_all + calls
        share = [statistics.mean(a["share"] for a in r["audits"]) for r in rs]
        count = [r["settings"]["rule_noise_rate"] for r in rs]
        for name, vals in (("estimate", [r["estimated_noise_rate"] for r in rs]), ("share", share), ("count", count)):
            errs[name] += [abs(v - r["true_noise_scored"]) for v, r in zip(vals, rs)]
        lines.append(f"| {c[0]} | {c[1]} | {c[2]} | {len(rs)} | {statistics.mean(r['true_noise_scored'] for r in rs):.3f} | "
                     f"{statistics.mean(r['estimated_noise_rate'] for r in rs):.3f} | "
                     f"{statistics.mean(abs(r['estimated_noise_rate'] - r['true_noise_scored']) for r in rs):.3f} | "
                     f"{held} of {calls} | {statistics.mean(share):.3f} | {statistics.mean(count):.3f} |")
    lines += ["", f"Intervals of nominal coverage {', '.join(f'{v:.0%}' for v in coverage)} held the true rate in "
              f"{held_all} of {calls_all} calls. Mean absolute error over every seed and cell: estimate "
              f"{statistics.mean(errs['estimate']):.3f}, share {statistics.mean(errs['share']):.3f}, count "
              f"{statistics.mean(errs['count']):.3f}."]
    return "\n".join(lines)


def noise_kinds_table(name="noise_kinds.jsonl"):
    """The label-noise kinds of ``fastreweight.noise`` described by ``benchmarks/describe_noise.py``."""
    recs = _jsonl(name)
    if not recs:
        return None
    kinds = list(dict.fromkeys(r["kind"] for r in recs))  # the script's order
    seeds = sorted({r["seed"] for r in recs})
    rates = sorted({r["rate"] for r in recs})
    env = recs[-1]["env"]
    commits = sorted({r["env"]["commit"] for r in recs})
    lines = [
        f"Source: `benchmarks/results/{name}` (`python benchmarks/describe_noise.py`; MNIST-5k training rows, "
        f"n = {recs[-1]['n']}, rate {', '.join(str(r) for r in rates)}, seeds {seeds}, {env['date']}, commit "
        f"{', '.join(commits)}, {env['device_name']}, cleanlab {recs[-1]['cleanlab']}); mean ± std over seeds. "
        "2nd of LR / kNN: fraction of the flipped samples whose new label is the class a clean-trained reference "
        "(out-of-fold logistic regression on PCA-50 / distance-weighted 20-NN on pixels) ranks second; top other: "
        "its most probable class other than the true one; class rate: flip rate of the least / most flipped true "
        "class; pairs for 80%: (true, noisy) class pairs holding 80% of the flips, of 90; NN flipped alike: "
        "flipped samples whose nearest neighbour is flipped to the same label; cleanlab: `find_label_issues` on "
        "5-fold logistic-regression probabilities of the noisy labels.",
        "",
        "| kind | " + " | ".join(h for _, h, _ in _NOISE_COLUMNS) + " |",
        "| --- | " + " | ".join("---" for _ in _NOISE_COLUMNS) + " |",
    ]
    for kind in kinds:
        rs = sorted((r for r in recs if r["kind"] == kind), key=lambda r: r["seed"])
        opts = rs[0].get("options") or {}
        label = f"`{rs[0]['make_noise']}`" + (" " + ", ".join(f"{k}={v}" for k, v in sorted(opts.items())) if opts else "")
        cells = [_ms([float(r[f]) for r in rs], fmt) for f, _, fmt in _NOISE_COLUMNS]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def score_table():
    """One row per setting, one time column per run of bench_score.py (oldest first)."""
    recs = _jsonl("score_cpu.jsonl")
    if not recs:
        return None
    env = recs[-1]["env"]
    r0 = recs[-1]
    runs = list(dict.fromkeys((r["env"]["date"], r["env"]["commit"]) for r in recs))
    settings = list(dict.fromkeys(r["setting"] for r in recs))
    secs = {(r["env"]["date"], r["env"]["commit"], r["setting"]): r["seconds"] for r in recs}
    mem = {r["setting"]: r["memory_bound_mib"] for r in recs}
    lines = [
        f"Source: `benchmarks/results/score_cpu.jsonl` ({env['date'][:10]}, {r0['threads']} threads; "
        f"synthetic Gaussian-mixture features, N = {r0['n']}, d = {r0['d']}, C = {r0['classes']}, M = {r0['clean']} clean rows, "
        f"chunks of {r0['chunk_rows']} rows read from a memory-mapped .npy; best of {len(r0['seconds_all'])} runs; "
        "one column per run of the script, by commit).",
        "",
        "| setting | " + " | ".join(f"seconds, commit {c}" for _, c in runs) + " | memory bound (MiB) |",
        "| --- " * (len(runs) + 2) + "|",
    ]
    for st in settings:
        cells = [f"{secs[(d, c, st)]:.2f}" if (d, c, st) in secs else "" for d, c in runs]
        lines.append(f"| {st} | " + " | ".join(cells) + f" | {mem[st]:.0f} |")
    return "\n".join(lines)


def _mib(v):
    return "" if v is None else f"{v:.0f}"


def _vs_one(v):
    if not v:
        return ""
    if v.get("identical"):
        return "identical (scores and suggestions, bit for bit)"
    return f"max abs score diff {v['max_abs_diff']:.2g}, {v['suggested_differ']} suggestions differ"


def score_scale_table(name="score_scale_cpu.jsonl"):
    """One row per record of ``bench_score.py --scale`` (single process, or sharded over ``torchrun`` ranks)."""
    recs = _jsonl(name)
    if not recs:
        return None
    shapes = sorted({(r["d"], r["classes"], r["clean"], r["chunk_rows"]) for r in recs})
    shape = "; ".join(f"d = {d}, C = {c}, M = {m} clean rows, chunks of {k} rows" for d, c, m, k in shapes)
    lines = [
        f"Source: `benchmarks/results/{name}` ({shape}; synthetic Gaussian-mixture features written block by block "
        "to a memory-mapped float32 `.npy` and scored by `score_dataset`; one run per row). *read floor*: one pass "
        "that only reads and reduces every chunk of the file; *GEMM rate*: fp32 `torch.mm` of the pass's shapes "
        "(chunk×d @ d×C scoring, d×chunk @ chunk×d covariance) in the same process just before and after the row "
        "(median of the two medians; in brackets the best single GEMM; summed over the ranks of a sharded row, "
        "measured concurrently); *sharded vs one process*: the gathered result of a `torchrun` row against the "
        "single-process run's saved scores; *% of GEMM*: the time those GEMMs alone take at that rate over the time taken; "
        "*RSS growth*: the peak growth of the process's anonymous resident memory (the memory map's page cache "
        "excluded) against `memory_bound_bytes`; *load*: `os.getloadavg()` 1-min, before / after, on cores "
        "shared with other work.",
        "",
        "| date (UTC) | commit | setting | N | ranks | threads | seconds | rows/s | read floor (s) | GFLOP/s | "
        "GEMM rate, score / gram (GFLOP/s) | % of GEMM (of best) | AUROC | memory bound (MiB) | RSS growth (MiB) | "
        "load | sharded vs one process |",
        "| --- " * 17 + "|",
    ]
    for r in recs:
        env = r.get("env", {})
        g = r.get("gemm", {})
        used, best = g.get("used", {}), g.get("best", {})
        rate = " / ".join(f"{used[k]:.1f}" + (f" ({best[k]:.1f})" if k in best else "")
                          for k in ("score", "gram") if k in used)
        rss = r.get("rss") or {}
        lb, la = r.get("loadavg_before"), r.get("loadavg")
        load = " / ".join(f"{x[0]:.1f}" for x in (lb, la) if x)
        read = r.get("read_seconds")
        pct = f"{r['pct_of_gemm']:.0f}" + (f" ({r['pct_of_gemm_best']:.0f})" if "pct_of_gemm_best" in r else "")
        lines.append(
            f"| {env.get('date', '')[:16].replace('T', ' ')} | {env.get('commit', '')} | {r['setting']} | {r['n']} | "
            f"{r.get('ranks', 1)} | {r.get('threads', env.get('threads', ''))} | {r['seconds']:.1f} | "
            f"{r['n'] / r['seconds']:,.0f} | {'' if read is None else f'{read:.1f}'} | {r['gflops']:.1f} | {rate} | "
            f"{pct} | {r['auroc']:.4f} | {_mib(r.get('memory_bound_mib'))} | {_mib(rss.get('anon_peak_growth_mib'))} | "
            f"{load} | {_vs_one(r.get('vs_one_process'))} |")
    env = recs[-1].get("env", {})
    lines += ["", f"CPU: {env.get('device_name')}; torch {env.get('torch')}."]
    return "\n".join(lines)


def _vs_cpu(v):
    if not v:
        return ""
    return (f"{v['rows']} rows: max abs diff {v['max_abs_diff']:.2g} (scores up to {v['max_abs_score']:.2g}), "
            f"{v['suggested_differ']} suggestions differ")


def score_scale_gpu_table(name="score_scale_gpu.jsonl"):
    """One row per record of ``bench_score.py --scale --device cuda``: the rows read from the memory-mapped
    file (through the read-ahead of ``Execution.prefetch``) or first loaded into the GPU's memory."""
    recs = _jsonl(name)
    if not recs:
        return None
    env = recs[-1].get("env", {})
    copy = next((r["copy"] for r in recs if r.get("copy")), {})
    lines = [
        f"Source: `benchmarks/results/{name}` (`bash benchmarks/gpu_scale.sh`: the features of the CPU run above, "
        "drawn on the GPU and written to a memory-mapped float32 `.npy` left in the page cache; best of the runs "
        "in `seconds_all`). *inputs*: `mapped`, the rows streamed from the file, read ahead by `prefetch` chunks "
        "(0: each chunk read and copied when it is scored); `resident`, the rows first loaded into device memory "
        "(the load is not timed in *seconds*). *read floor*: one pass that only moves every chunk of the file to "
        "the device through the same reader and reduces it. *GEMM rate*: fp32 `torch.mm` of the pass's shapes "
        "(chunk×d @ d×C, d×chunk @ chunk×d) on the GPU, timed by CUDA events just before and after the row; "
        "*% of GEMM* as above. *memory*: host anonymous growth plus device peak-allocation growth, against "
        "`memory_bound_bytes` (which bounds both together). *vs CPU*: the plain scores of the first rows against "
        "the CPU's.",
        "",
        f"Host to device, measured in the same run: {copy.get('pinned_gib_per_s', float('nan')):.1f} GiB/s from pinned "
        f"memory, {copy.get('pageable_gib_per_s', float('nan')):.1f} GiB/s from pageable memory.",
        "",
        "| date (UTC) | commit | setting | inputs | chunk | prefetch | seconds | rows/s | read floor (s) | GFLOP/s | "
        "GEMM rate, score / gram (GFLOP/s) | % of GEMM | AUROC | plan | memory bound (MiB) | host + device growth (MiB) | "
        "vs CPU |",
        "| --- " * 17 + "|",
    ]
    for r in recs:
        e = r.get("env", {})
        used = r.get("gemm", {}).get("used", {})
        rate = " / ".join(f"{used[k]:,.0f}" for k in ("score", "gram") if k in used)
        read = r.get("read_seconds") if r.get("inputs") == "mapped" else None
        grown = (r.get("rss") or {}).get("anon_peak_growth_mib", 0.0) + (r.get("device_peak_growth_mib") or 0.0)
        plan = r.get("plan") or {}
        lines.append(
            f"| {e.get('date', '')[:16].replace('T', ' ')} | {e.get('commit', '')} | {r['setting']} | {r['inputs']} | "
            f"{r['chunk_rows']} | {r['prefetch']} | {r['seconds']:.2f} | {r['n'] / r['seconds']:,.0f} | "
            f"{'' if read is None else f'{read:.2f}'} | {r['gflops']:,.0f} | {rate} | {r['pct_of_gemm']:.0f} | "
            f"{r['auroc']:.4f} | {plan.get('strategy', '')} / {plan.get('backend', '')} | "
            f"{_mib(r.get('memory_bound_mib'))} | {_mib(grown)} | {_vs_cpu(r.get('vs_cpu'))} |")
    lines += ["", f"GPU: {env.get('device_name')}; torch {env.get('torch')}, CUDA {env.get('cuda')}, "
              f"triton {env.get('triton')}; {recs[-1].get('cpus')} CPU cores."]
    return "\n".join(lines)


def knn_scale_table(name="knn_scale_cpu.jsonl"):
    """One row per record of ``bench_knn.py``: ``find_label_issues``' default at up to ``KNN_MAX_ROWS`` rows."""
    recs = _jsonl(name)
    if not recs:
        return None
    lines = [
        f"Source: `benchmarks/results/{name}` (`python benchmarks/bench_knn.py`: `find_label_issues(x, labels, "
        "clean_idx=...)` with its defaults, on `bench_score.make_features`' Gaussian mixture held in memory, 10 "
        "trusted rows per class with their true labels, 30% of the other labels resampled; one run per row). "
        "*nuisance*: the scale of 8 random directions, standard-normal multiples of which are added to every row "
        "(0: the class clusters alone, standard-normal class means and within-class noise of standard deviation 2; "
        "6: the mixture of the scale runs above). *scorer*: what "
        "`scorer=\"auto\"` ran (or the scorer asked for). *probe*: the AUROC of knn's (and, where it was low, fbr-whiten's) label scores on "
        "the trusted rows given random wrong labels (`probe.py`). *memory*: the peak growth of anonymous resident "
        "memory during the call against `knn_memory_bytes`. Quality on the rows other than the trusted: AUROC of "
        "`label_score` for the wrong labels, precision and recall of the flagged set, estimated / true noise rate.",
        "",
        "| date (UTC) | commit | N | d | C | nuisance | scorer | seconds | memory bound (MiB) | RSS growth (MiB) | "
        "probe AUROC knn / fbr-whiten | AUROC | precision | recall | noise est. / true | load |",
        "| --- " * 16 + "|",
    ]
    for r in recs:
        env, st = r.get("env", {}), r.get("settings", {})
        knn_probe = st.get("probe_auroc", st.get("knn_probe_auroc"))
        probe = " / ".join(f"{v:.3f}" for v in (knn_probe, st.get("fbr_whiten_probe_auroc")) if v is not None)
        load = " / ".join(f"{x[0]:.1f}" for x in (r.get("loadavg_before"), r.get("loadavg")) if x)
        lines.append(
            f"| {env.get('date', '')[:16].replace('T', ' ')} | {env.get('commit', '')} | {r['n']} | {r['d']} | "
            f"{r['classes']} | {r.get('nuisance', 0):g} | {r['scorer']}"
            f"{' (asked for)' if r.get('scorer_requested', 'auto') != 'auto' else ''} | {r['seconds']:.1f} | "
            f"{_mib(r.get('memory_bound_mib'))} | {_mib((r.get('rss') or {}).get('anon_peak_growth_mib'))} | {probe} | "
            f"{r['auroc']:.4f} | {r['precision']:.3f} | {r['recall']:.3f} | "
            f"{r['estimated_noise_rate']:.3f} / {r['true_noise']:.3f} | {load} |")
    env = recs[-1].get("env", {})
    lines += ["", f"CPU: {env.get('device_name')}; torch {env.get('torch')}; {recs[-1].get('threads')} threads."]
    return "\n".join(lines)


def probe_cells_table(name="probe_cells.jsonl"):
    """``probe_cells.py``: the probe of ``find_label_issues`` on the benchmark's cells, per (dataset, noise)."""
    recs = _jsonl(name)
    if not recs:
        return None
    groups: dict = {}
    for r in recs:
        groups.setdefault((r["dataset"], r["noise"]), []).append(r)
    seeds = sorted({r["seed"] for r in recs})
    env = recs[-1].get("env", {})
    lines = [
        f"Source: `benchmarks/results/{name}` (`python benchmarks/probe_cells.py`, commit {env.get('commit')}, "
        f"{env.get('date', '')[:10]}; PCA features, 10 trusted rows per class, seeds {', '.join(map(str, seeds))}; "
        "min–max over the seeds). *probe*: the AUROC of each scorer's label scores on the trusted rows given "
        "random wrong labels (`probe.py`); *AUROC*: how each ranks the wrong labels of the other rows; "
        "*auto*: the scorer `scorer=\"auto\"` ran.",
        "",
        "| dataset | noise | probe, knn | probe, fbr-whiten | AUROC, knn | AUROC, fbr-whiten | auto |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]

    def span(rs, key, fmt="{:.3f}"):
        lo, hi = min(r[key] for r in rs), max(r[key] for r in rs)
        return fmt.format(lo) if lo == hi else f"{fmt.format(lo)}–{fmt.format(hi)}"

    for (ds, noise), rs in groups.items():
        autos = sorted({r["auto_scorer"] for r in rs})
        lines.append(f"| {ds} | {noise} | {span(rs, 'probe_knn')} | {span(rs, 'probe_fbr_whiten')} | "
                     f"{span(rs, 'auroc_knn', '{:.4f}')} | {span(rs, 'auroc_fbr-whiten', '{:.4f}')} | {', '.join(autos)} |")
    knn_min = min(r["probe_knn"] for r in recs)
    switched = sum(r["auto_scorer"] != "knn" for r in recs)
    lines += ["", f"knn's probe AUROC: {knn_min:.3f} at the lowest over {len(recs)} runs; `auto` gave up knn in "
              f"{switched} of them."]
    return "\n".join(lines)


def micro_table():
    path = os.path.join(RESULTS, "micro_cpu.json")
    if not os.path.exists(path):
        return None
    data = json.load(open(path))
    rows = []
    for b in data["benchmarks"]:
        med = b["stats"]["median"] * 1e3
        fl = b.get("extra_info", {}).get("flops")
        rows.append((b["name"], med, fl / med / 1e6 if fl else None))
    mi = data["machine_info"]
    lines = [
        f"Source: `benchmarks/results/micro_cpu.json` (pytest-benchmark, {data['datetime'][:10]}, commit "
        f"{data.get('commit_info', {}).get('id', 'unknown')[:8]}, {mi.get('cpu', {}).get('brand_raw', mi.get('processor'))}, "
        f"{mi.get('cpu', {}).get('count', '?')} cores); median ms.",
        "",
        "| benchmark | median ms | GFLOP/s |",
        "| --- | --- | --- |",
    ]
    for name, med, gf in sorted(rows):
        lines.append(f"| `{name}` | {med:.2f} | {'' if gf is None else f'{gf:.1f}'} |")
    return "\n".join(lines)


def _acc_cell(rs):
    vals = [r["last_acc"] for r in rs]
    if not vals:
        return ""
    if len(vals) == 1:
        return f"{vals[0]:.3f}"
    return f"{statistics.mean(vals):.3f} ± {statistics.stdev(vals):.3f}"


def _time_ratio(recs, run, erm_run="erm"):
    """Median over (cell, seed) of this run's epoch time / ERM's in the same cell and seed — ERM of the
    same invocation of run_experiments.py where the records say (``invocation``), since a later
    invocation met another state of the machine."""
    key = lambda r: (r["dataset"], r["noise"], r["rate"], r["seed"])  # noqa: E731
    base = {}
    for r in recs:
        if r["run"] == erm_run:
            base.setdefault(key(r), r["epoch_s_median"])
            base[key(r) + (r.get("invocation"),)] = r["epoch_s_median"]
    ratios = []
    for r in recs:
        if r["run"] != run:
            continue
        b = base.get(key(r) + (r.get("invocation"),), base.get(key(r)))
        if b is not None:
            ratios.append(r["epoch_s_median"] / b)
    return statistics.median(ratios) if ratios else float("nan")


def _first_per_run(recs):
    """One record per (run, cell, seed): the first (a run repeated in a later invocation only to
    pair the timings of that invocation is not counted twice in the accuracies)."""
    seen, out = set(), []
    for r in recs:
        k = (r["run"], r["dataset"], r["noise"], r["rate"], r["seed"])
        if k not in seen:
            seen.add(k)
            out.append(r)
    return out


def _accuracy_by_cell(recs, source, note):
    """Rows: runs; columns: (dataset, noise, rate) cells, then the epoch time over ERM's per dataset."""
    cells = sorted({(r["dataset"], r["noise"], r["rate"]) for r in recs}, key=lambda c: (c[0] != "mnist5k", c[1], c[2]))
    datasets = list(dict.fromkeys(c[0] for c in cells))
    runs = list(dict.fromkeys(r["run"] for r in recs))
    seeds = sorted({r["seed"] for r in recs})
    # one clause per invocation of the script that wrote records (older files carry no invocation id:
    # they count as one), naming the runs whose accuracies come from it
    invocations: dict = {}
    for r in recs:
        invocations.setdefault(r.get("invocation"), []).append(r)
    first_runs = {}
    for r in _first_per_run(recs):
        first_runs.setdefault(r.get("invocation"), set()).add(r["run"])
    clauses = []
    for inv, rs in invocations.items():
        env = rs[-1]["env"]
        concurrent = rs[-1].get("concurrent_runs", 2)  # files older than the field: two runs in parallel
        how = "one run at a time" if concurrent == 1 else f"{concurrent} runs in parallel"
        own = [run for run in dict.fromkeys(x["run"] for x in rs) if run in first_runs.get(inv, ())]
        again = [run for run in dict.fromkeys(x["run"] for x in rs) if run not in own]
        what = ""
        if len(invocations) > 1:
            what = (f": accuracies of {', '.join(own)}" if own else ": no new accuracies") + (
                f"; {', '.join(again)} again, for its time ratios" if again else "")
        clauses.append(f"{env['date'][:10]}, commit {env['commit']}, {how}{what}")
    env = recs[-1]["env"]
    lines = [
        f"Source: `benchmarks/results/{source}` (seeds {seeds}, {env['device_name']}, 1 thread per run; "
        + "; ".join(f"[{c}]" if len(clauses) > 1 else c for c in clauses) + f"); {note}",
        "",
        "| run | " + " | ".join(f"{d} {n} {int(rt * 100)}%" for d, n, rt in cells) + " | "
        + " | ".join(f"epoch time / ERM, {d}" for d in datasets) + " |",
        "| --- " * (len(cells) + len(datasets) + 1) + "|",
    ]
    first = _first_per_run(recs)
    for run in runs:
        row = [_acc_cell([r for r in first if r["run"] == run and (r["dataset"], r["noise"], r["rate"]) == c]) for c in cells]
        times = [f"{_time_ratio([r for r in recs if r['dataset'] == d], run):.2f}" for d in datasets]
        lines.append(f"| {run} | " + " | ".join(row) + " | " + " | ".join(times) + " |")
    return "\n".join(lines)


_SAME_TIME = "time ratio as in the variants table."
_ACC = "test accuracy after the last epoch, mean ± std over seeds"

#: README sections rendered by ``_accuracy_by_cell``: section -> (results file, what the table holds)
CELL_TABLES = {
    "variants": ("variants.jsonl", f"{_ACC}; time ratio = median over the dataset's cells and seeds of the run's "
                                   "median epoch time over ERM's in the same cell and seed."),
    "cleanpasses": ("cleanpasses.jsonl", f"{_ACC}; {_SAME_TIME}"),
    "whiten": ("whiten.jsonl", f"{_ACC}; {_SAME_TIME}"),
    "whiten-size": ("whiten-size.jsonl", f"MNIST-5k with M clean samples; {_ACC}; {_SAME_TIME}"),
    "whiten-cnn": ("whiten-cnn.jsonl", f"MNIST-5k, the small CNN of `fastreweight.models`, 20 epochs; {_ACC}; {_SAME_TIME}"),
    "refresh": ("refresh.jsonl", "stateful FBR with the clean-feature cache refreshed every R reweighting steps "
                                 "(`fbr-default`: every ceil(4·M/B) steps, the default when this was run; `R=epoch`: "
                                 f"every ceil(N/B) steps); {_ACC}; {_SAME_TIME}"),
}


def _cell_table(name: str, note: str):
    recs = _jsonl(name)
    return _accuracy_by_cell(recs, name, note) if recs else None


def ablation_table():
    recs = _jsonl("ablation.jsonl")
    if not recs:
        return None
    cells = sorted({(r["noise"], r["rate"]) for r in recs})
    runs = list(dict.fromkeys(r["run"] for r in recs))
    seeds = sorted({r["seed"] for r in recs})
    env = recs[-1]["env"]
    lines = [
        f"Source: `benchmarks/results/ablation.jsonl` (MNIST-5k, stateful FBR, one setting changed at a time from the trainer defaults, seeds {seeds}, "
        f"{env['date'][:10]}, commit {env['commit']}); test accuracy after the last epoch, mean ± std.",
        "",
        "| setting | " + " | ".join(f"{n} {int(rt * 100)}%" for n, rt in cells) + " | epoch time / ERM |",
        "| --- " * (len(cells) + 2) + "|",
    ]
    for run in runs:
        row = [_acc_cell([r for r in recs if r["run"] == run and (r["noise"], r["rate"]) == c]) for c in cells]
        lines.append(f"| {run} | " + " | ".join(row) + f" | {_time_ratio(recs, run):.2f} |")
    return "\n".join(lines)


def e2e_table(name="e2e_cpu.jsonl", preset="demo-mnist"):
    recs = _jsonl(name)
    if not recs:
        return None
    last_date = recs[-1]["env"]["date"]
    recs = [r for r in recs if r["env"]["date"] == last_date]  # the latest run only
    env = recs[-1]["env"]
    extra = "ratio_to_erm_paired" in recs[-1]
    gap = "step_gap_ms" in recs[-1]
    lines = [
        f"Source: `benchmarks/results/{name}` ({env['date'][:10]}, commit {env['commit']}, {env['device_name']}, "
        f"{recs[-1]['threads']} thread, MLP of `{preset}`, batch {recs[-1]['batch_size']}, "
        f"{recs[-1]['steps_per_epoch']} training steps per epoch, median of {recs[-1]['rounds']} interleaved rounds"
        + ("; × ERM three ways: ratio of the medians, median of the within-round ratios, ratio of the minima" if extra else "")
        + ("; step alone: median time between consecutive training steps, and its within-round ratio to ERM's" if gap else "")
        + ").",
        "",
        "| method | ms per training step (epoch / steps) | × ERM |" + (" × ERM (paired) | × ERM (min) |" if extra else "")
        + (" step alone, ms | step alone × ERM |" if gap else ""),
        "| --- | --- | --- |" + (" --- | --- |" if extra else "") + (" --- | --- |" if gap else ""),
    ]
    for r in recs:
        row = f"| {r['method']} | {r['ms_per_step']:.2f} | {r['ratio_to_erm']:.2f} |"
        if extra:
            row += f" {r['ratio_to_erm_paired']:.2f} | {r['ratio_to_erm_min']:.2f} |"
        if gap:
            row += f" {r['step_gap_ms']:.2f} | {r['step_gap_ratio_paired']:.2f} |"
        lines.append(row)
    return "\n".join(lines)


#: the FBR rows of the repeated runs, in column order: (method name in bench_e2e.py, column title)
_REPEAT_COLUMNS = (
    ("fbr (default: stateful, cache)", "default FBR"),
    ("fbr feature_whiten=auto (cache)", "whitened FBR"),
    ("fbr feature_whiten=auto, refit every 5th refresh", "whitened FBR, refit every 5th refresh"),
    ("fbr feature_whiten=auto, refit every 10th refresh", "whitened FBR, refit every 10th refresh"),
)


def e2e_repeats_table(name="e2e_cpu_repeats.jsonl", preset="demo-mnist"):
    """Repeated short runs of bench_e2e.py (ERM and FBR rows): one row per run; a column for every FBR
    row that some run holds ("—" where a run did not have it)."""
    recs = _jsonl(name)
    if not recs:
        return None
    by_run: dict = {}
    for r in recs:
        by_run.setdefault(r["env"]["date"], {})[r["method"]] = r
    cols = [(m, t) for m, t in _REPEAT_COLUMNS if any(m in ms for ms in by_run.values())]
    r0 = recs[-1]
    lines = [
        f"Source: `benchmarks/results/{name}` ({r0['env']['date'][:10]}, {r0['env']['device_name']}, "
        f"1 thread, MLP of `{preset}`, batch {r0['batch_size']}, {r0['rounds']} interleaved rounds per run; "
        "× ERM as ratio of the medians / median of the within-round ratios / ratio of the minima; step alone: "
        "within-round ratio of the median time between consecutive training steps).",
        "",
        "| run (start, commit) | ERM ms per step | " + " | ".join(f"{t} × ERM | step alone" for _, t in cols) + " |",
        "| --- | --- |" + " --- | --- |" * len(cols),
    ]

    def three(r):
        return f"{r['ratio_to_erm']:.2f} / {r['ratio_to_erm_paired']:.2f} / {r['ratio_to_erm_min']:.2f}"

    for date, ms in by_run.items():
        if "erm" not in ms or not any(m in ms for m, _ in cols):
            continue
        cells = [f"{three(ms[m])} | {ms[m]['step_gap_ratio_paired']:.2f}" if m in ms else "— | —" for m, _ in cols]
        lines.append(f"| {date[11:16]}, {ms['erm']['env']['commit']} | {ms['erm']['ms_per_step']:.2f} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def step_paths_table(name="step_paths_ab.jsonl"):
    """bench_step_paths.py: the stateful FBR step with each per-step path switched back, paired."""
    recs = _jsonl(name)
    if not recs:
        return None
    r0 = recs[-1]
    lines = [
        f"Source: `benchmarks/results/{name}` (`python benchmarks/bench_step_paths.py`; {r0['env']['date'][:10]}, "
        f"{r0['env']['device_name']}, 1 thread, {r0['rounds']} interleaved rounds of {r0['epochs']} epochs per "
        "dataset; medians of the within-round ratios; step alone: the median time between consecutive "
        "training steps of a run's last epoch).",
        "",
        "| dataset (commit) | ERM ms per step | path | epoch × ERM | epoch × `fbr` | step alone × ERM | "
        "step alone × `fbr` | step alone − `fbr`, µs |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in recs:
        for path, p in r["paths"].items():
            if path == "erm":
                continue
            lines.append(f"| {r['dataset']} ({r['env']['commit']}) | {r['erm_step_ms']:.3f} | {path} | "
                         f"{p['over_erm_paired']:.3f} | {p['over_fbr_paired']:.3f} | {p['step_over_erm_paired']:.3f} | "
                         f"{p['step_over_fbr_paired']:.3f} | {p['step_us_minus_fbr']:+.1f} |")
    return "\n".join(lines)


def _gpu_runs():
    """Every GPU kernel-benchmark record under results/gpu_*/ (header + timings), newest directory last."""
    import glob

    files = sorted(glob.glob(os.path.join(RESULTS, "gpu_*", "run*", "gpu_kernels*.jsonl")))
    out = []
    for path in files:
        with open(path) as fh:
            recs = [json.loads(line) for line in fh if line.strip()]
        header = next((r for r in recs if r.get("kind") == "header"), None)
        if header is not None:
            out.append((os.path.relpath(path, os.path.join(HERE, "..")), header, [r for r in recs if r.get("kind") == "timing"]))
    return out


def _key(c):
    return (c["B"], c["M"], c["d"], c["C"], c["k"], c["dtype"])


def _by_shape(recs, keep=lambda k: True):
    """{shape key: {implementation: record}}, shapes in first-seen order."""
    by = defaultdict(dict)
    for r in recs:
        k = _key(r["case"])
        if keep(k):
            by[k][r["impl"]] = r
    return by


def _gpu_cell(r, impl):
    """Milliseconds, with the share of the same-FLOP GEMM for pairwise implementations (the prototype
    strategy does fewer FLOPs, so the share is not shown for it)."""
    if r is None:
        return "–"
    if impl == "triton-prototype":
        return f"{r['ms']:.3f}"
    return f"{r['ms']:.3f} ({r['pct_of_same_gemm']:.0f}%)"


GPU_IMPLS = ["eager-reference", "compile-reference", "triton-pairwise", "triton-pairwise[agg tf32]", "cuda-pairwise",
             "triton-prototype"]


def gpu_targets_table():
    runs = _gpu_runs()
    if not runs:
        return None
    lines = []
    for path, header, recs in runs:
        env, ceil = header["env"], header["ceilings"]
        lines += [
            f"Source: `{path}` ({env['date'][:10]}, commit {env['commit']}, {env['device_name']}, torch {env['torch']}, "
            f"triton {env['triton']}, CUDA {env['cuda']}; bf16 GEMM ceiling {ceil['bf16_gemm_tflops']:.0f} TFLOP/s, "
            f"copy {ceil['copy_gbs']:.0f} GB/s, both measured in the run; float32 matmul precision "
            f"`{header['float32_matmul_precision']}`). Milliseconds (median, `do_bench`); in brackets the pairwise "
            "FLOPs over the time as a share of a cuBLAS GEMM of the same FLOPs and dtype timed next to it.",
            "",
            "| B | M | d | C | k | dtype | " + " | ".join(GPU_IMPLS) + " |",
            "| --- " * (6 + len(GPU_IMPLS)) + "|",
        ]
        by = _by_shape(recs)
        targets = [k for k in by if k[:5] in ((1024, 16384, 512, 100, 0), (8192, 65536, 1024, 100, 0),
                                               (1024, 16384, 512, 100, 10))]
        for k in targets:
            cells = [_gpu_cell(by[k].get(impl), impl) for impl in GPU_IMPLS]
            lines.append("| " + " | ".join(str(v) for v in k) + " | " + " | ".join(cells) + " |")
        meta = [(k, by[k]) for k in targets if k[4] > 0]
        for k, v in meta:
            parts = [f"{impl} {v[impl]['ms']:.3f} ms" for impl in v if impl.endswith("meta")]
            if parts:
                lines.append("")
                lines.append(f"Meta direction at {k[:5]} {k[5]}: " + ", ".join(parts) + ".")
        lines.append("")
    return "\n".join(lines).rstrip()


def gpu_grid_table():
    runs = [r for r in _gpu_runs() if len(r[2]) > 60]
    if not runs:
        return None
    path, header, recs = runs[-1]
    by = _by_shape(recs, lambda k: k[4] == 0 and k[5] == "bfloat16")
    impls = ["eager-reference", "compile-reference", "triton-pairwise", "triton-prototype"]
    lines = [
        f"Source: `{path}` (bf16, feature kernel; same run and columns as above; extra memory = peak allocation "
        "above the inputs, MiB, of the Triton pairwise kernel; B×M fp32 would be the last column).",
        "",
        "| B | M | d | C | " + " | ".join(impls) + " | Triton pairwise extra MiB | B×M fp32 MiB |",
        "| --- " * (4 + len(impls) + 2) + "|",
    ]
    for k in sorted(by):
        cells = [_gpu_cell(by[k].get(impl), impl) for impl in impls]
        tp = by[k].get("triton-pairwise")
        extra = f"{tp['extra_bytes'] / 2**20:.1f}" if tp else "–"
        bxm = f"{k[0] * k[1] * 4 / 2**20:.0f}"
        lines.append(f"| {k[0]} | {k[1]} | {k[2]} | {k[3]} | " + " | ".join(cells) + f" | {extra} | {bxm} |")
    return "\n".join(lines)


def e2e_gpu_table():
    import glob

    files = sorted(glob.glob(os.path.join(RESULTS, "gpu_*", "run*", "e2e_gpu.jsonl")))
    if not files:
        return None
    lines = []
    for path in files:
        with open(path) as fh:
            recs = [json.loads(line) for line in fh if line.strip()]
        for suite in dict.fromkeys(r["suite"] for r in recs):
            rs = [r for r in recs if r["suite"] == suite]
            env = rs[-1]["env"]
            r0 = rs[0]
            lines += [
                f"Source: `{os.path.relpath(path, os.path.join(HERE, '..'))}`, suite `{suite}` ({env['date'][:10]}, commit "
                f"{env['commit']}, {env['device_name']}, {r0['model']}, batch {r0['batch_size']}, {r0['train_samples']} "
                f"training / {r0['clean_samples']} clean samples, fp32, median of {r0['rounds']} interleaved rounds).",
                "",
                "| method | ms per training step | × ERM |",
                "| --- | --- | --- |",
            ]
            for r in rs:
                lines.append(f"| {r['method']} | {r['ms_per_step']:.2f} | {r['ratio_to_erm']:.2f} |")
            lines.append("")
    return "\n".join(lines).rstrip()


def plots():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    recs = [r for r in (_jsonl("cleanlab_comparison.jsonl") or []) if r.get("dataset", "mnist5k") == "mnist5k"]
    if recs:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        methods = sorted({r["method"] for r in recs})
        rates = sorted({r["rate"] for r in recs})
        width = 0.8 / len(methods)
        for i, m in enumerate(methods):
            vals = [statistics.mean([r["auroc"] for r in recs if r["method"] == m and r["rate"] == rt]) for rt in rates]
            ax.bar([j + i * width for j in range(len(rates))], vals, width, label=m)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(rates))], [f"{r:.0%} noise" for r in rates])
        ax.set_ylim(0.85, 1.0)
        ax.set_ylabel("AUROC (flag mislabelled)")
        ax.set_title("MNIST-5k", fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(os.path.join(RESULTS, "cleanlab_comparison.png"), dpi=120)
        plt.close(fig)
    gpu_plots(plt)


def gpu_plots(plt):
    runs = [r for r in _gpu_runs() if len(r[2]) > 60]
    if runs:
        path, header, recs = runs[-1]
        by = _by_shape(recs, lambda k: k[4] == 0 and k[5] == "bfloat16")
        shapes = sorted(by, key=lambda k: 2 * k[0] * k[1] * k[2])
        fig, ax = plt.subplots(figsize=(10, 4))
        for impl in ("eager-reference", "compile-reference", "triton-pairwise", "triton-prototype"):
            ax.plot(range(len(shapes)), [by[k][impl]["ms"] if impl in by[k] else float("nan") for k in shapes],
                    marker=".", label=impl)
        ax.set_yscale("log")
        ax.set_xticks(range(len(shapes)), [f"{k[0]}/{k[1]}/{k[2]}/{k[3]}" for k in shapes], rotation=90, fontsize=5)
        ax.set_xlabel("B / M / d / C (sorted by pairwise FLOPs)")
        ax.set_ylabel("ms per fbr_scores call")
        ax.set_title(f"{header['env']['device_name']}, bf16, {header['env']['date'][:10]} (from {os.path.basename(path)})",
                     fontsize=8)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(os.path.join(os.path.dirname(os.path.join(HERE, "..", path)), "gpu_kernels.png"), dpi=130)
        plt.close(fig)
    import glob

    for path in sorted(glob.glob(os.path.join(RESULTS, "gpu_*", "run*", "e2e_gpu.jsonl"))):
        with open(path) as fh:
            recs = [json.loads(line) for line in fh if line.strip()]
        suites = list(dict.fromkeys(r["suite"] for r in recs))
        fig, axes = plt.subplots(1, len(suites), figsize=(5 * len(suites), 3.8))
        axes = axes if len(suites) > 1 else [axes]
        for ax, suite in zip(axes, suites):
            rs = [r for r in recs if r["suite"] == suite]
            ax.barh([r["method"] for r in rs], [r["ratio_to_erm"] for r in rs])
            ax.axvline(1.0, color="k", lw=0.8)
            ax.set_xlabel("training step time / ERM")
            ax.set_title(f"{suite}: {rs[0]['model']}", fontsize=7)
            ax.tick_params(axis="y", labelsize=6)
        fig.tight_layout()
        fig.savefig(os.path.join(os.path.dirname(path), "e2e_gpu.png"), dpi=130)
        plt.close(fig)




# --------------------------------------------------------------------------------------------------
# Tables that the README used to state by hand, now computed from the files
# --------------------------------------------------------------------------------------------------

def _rel(path):
    return os.path.relpath(path, ROOT).replace(os.sep, "/")


def _text(name):
    path = os.path.join(RESULTS, name)
    if not os.path.exists(path):
        return None
    with open(path) as fh:
        return fh.read()


def _runs_of(recs):
    """{(date, commit): [records]} in file order: one entry per run of bench_e2e.py."""
    runs: dict = {}
    for r in recs:
        runs.setdefault((r["env"]["date"], r["env"]["commit"]), []).append(r)
    return runs


#: the rows of the full interleaved runs compared across runs: (method name in bench_e2e.py, column title)
_RUN_COLUMNS = (
    ("fbr (default: stateful, cache)", "default FBR"),
    ("fbr feature_whiten=auto (cache)", "`fbr+whiten`"),
    ("fbr feature_whiten=auto, refit every 5th refresh", "`fbr+whiten/5`"),
    ("fbr feature_whiten=auto, refit every 10th refresh", "`fbr+whiten/10`"),
    ("fbr recipe=paper, train features, whitened (a+w)", "(a+w)"),
    ("fbr recipe=paper (eval forward, 5 clean passes)", "the recipe"),
    ("fbr recipe=paper, train features", "(a)"),
    ("erm + 5 clean passes", "ERM + 5 clean passes"),
)


def e2e_runs_table(name="e2e_cpu.jsonl", preset="demo-mnist"):
    """Every full interleaved run of a bench_e2e.py file with the three ratios (41 rounds or more)."""
    recs = _jsonl(name)
    if not recs:
        return None
    runs = [(k, rs) for k, rs in _runs_of(recs).items()
            if "ratio_to_erm_paired" in rs[-1] and rs[-1]["rounds"] >= 41]
    if not runs:
        return None
    cols = [(m, t) for m, t in _RUN_COLUMNS if any(any(r["method"] == m for r in rs) for _, rs in runs)]
    lines = [
        f"Source: `benchmarks/results/{name}` (every run of 41 or more interleaved rounds, one row per run: start time "
        f"and commit as recorded in the file; MLP of `{preset}`, 1 thread); each entry: × ERM as ratio of the medians / "
        "median of the within-round ratios / ratio of the minima; — where the run had no such row.",
        "",
        "| run (start, commit) | epochs per round | ERM ms per step | " + " | ".join(t for _, t in cols) + " |",
        "| --- | --- | --- |" + " --- |" * len(cols),
    ]
    for (date, commit), rs in runs:
        by = {r["method"]: r for r in rs}
        cells = [(f"{by[m]['ratio_to_erm']:.2f} / {by[m]['ratio_to_erm_paired']:.2f} / {by[m]['ratio_to_erm_min']:.2f}"
                  if m in by else "—") for m, _ in cols]
        lines.append(f"| {date[:10]} {date[11:16]}, {commit} | {rs[-1]['epochs']} | {by['erm']['ms_per_step']:.2f} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def _range(vals, fmt="{:.2f}"):
    lo, hi = fmt.format(min(vals)), fmt.format(max(vals))
    return lo if lo == hi else f"{lo}–{hi}"


def repeats_summary_table(name="e2e_cpu_repeats.jsonl"):
    """Per commit and FBR row of the repeated runs: the three whole-epoch estimates of every run pooled."""
    recs = _jsonl(name)
    if not recs:
        return None
    by_commit: dict = {}
    for (date, commit), rs in _runs_of(recs).items():
        by_commit.setdefault(commit, []).append({r["method"]: r for r in rs})
    lines = [
        f"Source: `benchmarks/results/{name}` (the runs of the table above, pooled by the commit recorded in each): "
        "for every FBR row, the three whole-epoch estimates × ERM of each run (ratio of the medians, paired, "
        "minima) together; counts use the unrounded values.",
        "",
        "| commit | runs | row | estimates | range | median | at or below 1.10 | at or below 1.15 | step alone × ERM (median) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for commit, runs in by_commit.items():
        for m, title in _REPEAT_COLUMNS:
            rs = [run[m] for run in runs if m in run]
            if not rs:
                continue
            est = [v for r in rs for v in (r["ratio_to_erm"], r["ratio_to_erm_paired"], r["ratio_to_erm_min"])]
            gaps = [r["step_gap_ratio_paired"] for r in rs]
            lines.append(
                f"| {commit} | {len(rs)} | {title} | {len(est)} | {_range(est)} | {statistics.median(est):.2f} | "
                f"{sum(v <= 1.10 for v in est)} of {len(est)} | {sum(v <= 1.15 for v in est)} of {len(est)} | "
                f"{_range(gaps)} ({statistics.median(gaps):.2f}) |")
    return "\n".join(lines)


def recheck_table(name="variants_recheck.jsonl"):
    """recheck_variants.py: the accuracies of some variants rows re-run at later commits."""
    recs = _jsonl(name)
    if not recs:
        return None
    groups: dict = {}
    for r in recs:
        groups.setdefault((r["env"]["commit"], r["env"]["date"]), {}).setdefault(r["run"], []).append(r)
    lines = [
        f"Source: `benchmarks/results/{name}` (`python benchmarks/recheck_variants.py`: runs of the variants table "
        "re-run on every cell and seed; the committed accuracies are those of the commit named in each record). "
        "Change = new minus committed last-epoch accuracy.",
        "",
        "| re-run at (commit, date) | run | committed at | runs | identical | largest change of one run | "
        "largest change of a cell's mean over seeds |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for (commit, date), by_run in groups.items():
        for run, rs in by_run.items():
            same = sum(r["new_acc"] == r["committed_acc"] for r in rs)
            one = max(abs(r["new_acc"] - r["committed_acc"]) for r in rs)
            cells: dict = {}
            for r in rs:
                cells.setdefault((r["dataset"], r["noise"], r["rate"]), []).append(r["new_acc"] - r["committed_acc"])
            cell = max(abs(statistics.mean(v)) for v in cells.values())
            committed = ", ".join(sorted({r["committed_commit"] for r in rs}))
            lines.append(f"| {commit}, {date[:10]} | {run} | {committed} | {len(rs)} | {same} of {len(rs)} | "
                         f"{one:.4f} | {cell:.4f} |")
    return "\n".join(lines)


def redesign_recheck_table(before="variants_recheck_session_start.jsonl", after="variants_recheck_redesign.jsonl"):
    """The trainer redesign: the same runs at the code before it and after it, in one environment."""
    a, b = _jsonl(before), _jsonl(after)
    if not a or not b:
        return None
    key = lambda r: (r["run"], r["dataset"], r["noise"], r["rate"], r["seed"])  # noqa: E731
    old = {key(r): r for r in a}
    lines = [
        f"Sources: `benchmarks/results/{before}` (the code before, commit {a[0]['env']['commit']}, "
        f"{a[0]['env']['date'][:10]}) and `benchmarks/results/{after}` (after, commit {b[0]['env']['commit']}, "
        f"{b[0]['env']['date'][:10]}), both `python benchmarks/recheck_variants.py` on one machine "
        f"({b[0]['env']['device_name']}), and both compared with the committed `variants.jsonl` (commit "
        f"{b[0]['committed_commit']}, made on another processor: the earlier rechecks ran on "
        f"{_jsonl('variants_recheck.jsonl')[0]['env']['device_name']}). The before/after columns isolate the code "
        "change; the change against the committed accuracies also holds the processor's different float "
        "rounding, which the code before the redesign shows just the same.",
        "",
        "| run | runs | identical before/after | largest change of a cell's mean before -> after | "
        "largest change of a cell's mean, committed -> after |",
        "| --- | --- | --- | --- | --- |",
    ]
    for run in dict.fromkeys(r["run"] for r in b):
        rs = [r for r in b if r["run"] == run and key(r) in old]
        same = sum(r["new_acc"] == old[key(r)]["new_acc"] for r in rs)
        cells: dict = {}
        for r in rs:
            cells.setdefault(key(r)[1:4], []).append((r["new_acc"] - old[key(r)]["new_acc"],
                                                      r["new_acc"] - r["committed_acc"]))
        code = max(abs(statistics.mean(d for d, _ in v)) for v in cells.values())
        drift = max(abs(statistics.mean(e for _, e in v)) for v in cells.values())
        lines.append(f"| {run} | {len(rs)} | {same} of {len(rs)} | {code:.4f} | {drift:.4f} |")
    return "\n".join(lines)


def fused_loss_table(name="fused_loss_ab.jsonl"):
    recs = _jsonl(name)
    if not recs:
        return None
    lines = [
        f"Source: `benchmarks/results/{name}` (written by `benchmarks/bench_fused_loss.py`, deleted with the op in d17cba4; one row per dataset and run, "
        "commit and date as recorded; medians of the within-round ratios over the recorded rounds). "
        "`fused`: the stateful FBR step's loss inside the C++ op (`fbr_weighted_ce_prototype`); `coef`: the op "
        "returning loss coefficients, then `cross_entropy` and `dot` — what the stateful step does since d17cba4; "
        "`weighted_loss`: scores and update, then `weighted_loss`; — where a record predates a path.",
        "",
        "| dataset (commit, date) | rounds × epochs | ERM ms per epoch | `fused` × `coef` | `coef` × `weighted_loss` | "
        "`fused` × ERM | `coef` × ERM | `weighted_loss` × ERM |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in recs:
        f = lambda k: f"{r[k]:.3f}" if k in r else "—"  # noqa: E731
        lines.append(f"| {r['dataset']} ({r['env']['commit']}, {r['env']['date'][:10]}) | {r['rounds']} × {r['epochs']} | "
                     f"{r['erm_ms_per_epoch']:.2f} | {f('fused_over_on_paired')} | {f('on_over_off_paired')} | "
                     f"{f('fused_over_erm_paired')} | {f('on_over_erm_paired')} | {f('off_over_erm_paired')} |")
    return "\n".join(lines)


def criterion_table(name="criterion_cpu.jsonl"):
    recs = _jsonl(name)
    if not recs:
        return None
    env = recs[-1]["env"]
    lines = [
        f"Source: `benchmarks/results/{name}` (written by `benchmarks/bench_criterion.py`, which goes with the op; {env['date'][:10]}, commit "
        f"{env['commit']}, {env['device_name']}, {recs[-1]['threads']} thread): the leave-one-out criterion of "
        "`whiten=\"auto\"` as a C++ op against the batched torch code, and the whole whitened class means "
        "(`shrunk_class_means`, M×256 clean features) with either; M clean rows in r coordinates, C classes.",
        "",
        "| M | r | C | candidates | criterion, C++ ms | criterion, torch ms | speed-up | max abs diff | "
        "class means, C++ ms | class means, torch ms | speed-up |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in recs:
        a, b = r.get("shrunk_class_means_cpp_ms"), r.get("shrunk_class_means_reference_ms")
        sm = f"{a:.2f} | {b:.2f} | {b / a:.2f}×" if a and b else "— | — | —"
        lines.append(f"| {r['M']} | {r['r']} | {r['C']} | {r['candidates']} | {r['cpp_ms']:.2f} | {r['reference_ms']:.2f} | "
                     f"{r['reference_ms'] / r['cpp_ms']:.2f}× | {r['max_abs_diff']:g} | {sm} |")
    return "\n".join(lines)


_CPP_ROW = re.compile(r"^\s*(\d+)\s+(feature|gradient)\s+(api|op|auto)\s+([\d.]+)\s+\(\s*([\d.]+)\)\s+([\d.]+)\s+\(\s*([\d.]+)\)\s+([\d.]+)x")


def cpp_cpu_tables():
    """benchmarks/results/cpp_cpu_*.txt (bench_cpp_cpu.py output): one table per run in the files, the files'
    own notes quoted where they stand."""
    import glob

    files = sorted(glob.glob(os.path.join(RESULTS, "cpp_cpu_*.txt")))
    if not files:
        return None
    out = []
    for path in files:
        with open(path) as fh:
            lines = fh.read().splitlines()
        out += [f"Source: `{_rel(path)}` (output of `python benchmarks/bench_cpp_cpu.py`, B=256, M=2048, d=512, "
                "float32; median (min) over the repetitions named in each run's header, ms; speed-up = reference / cpp "
                "on medians; the run headers record start time and thread count, not the commit). api: "
                "`fbr_scores(backend='cpp'|'reference', strategy='pairwise')`; op: the scoring op alone; auto: "
                "`fbr_scores(backend='auto', strategy='auto')` with a recurring clean side (the C++ prototype op), "
                "against the api reference.", ""]
        note, in_table = [], False

        def flush_note():
            nonlocal note
            if note:
                out.extend(["> " + n for n in note] + [""])
                note = []

        for ln in lines:
            m = _CPP_ROW.match(ln)
            if ln.startswith("# bench_cpp_cpu"):
                flush_note()
                start = ln.split(None, 2)[2].strip()
            elif ln.startswith("# python"):
                f = ln[2:].split()
                meta = dict(zip(f[0::2], f[1::2]))
                out += [f"Run started {start}, {meta.get('threads', '?')} thread(s):", "",
                        "| C | kernel | path | cpp ms (min) | reference ms (min) | speed-up |",
                        "| --- | --- | --- | --- | --- | --- |"]
                in_table = True
            elif m:
                c, k, p, cm, cmin, rm, rmin, sp = m.groups()
                out.append(f"| {c} | {k} | {p} | {cm} ({cmin}) | {rm} ({rmin}) | {sp}× |")
            elif ln.startswith("#") and not ln.startswith(("# cpu", "# loadavg", "# median", "# api:")):
                if in_table:
                    out.append("")
                    in_table = False
                note.append(ln[1:].strip())
            elif in_table and not ln.startswith("#"):
                out.append("")
                in_table = False
        if in_table:
            out.append("")
        flush_note()
    return "\n".join(out).rstrip()


def _verbatim(name, describe):
    text = _text(name)
    if text is None:
        return None
    return f"Source: `benchmarks/results/{name}` ({describe}), verbatim:\n\n```\n{text.rstrip()}\n```"


def demo_section():
    text = _text("demo_cpu.txt")
    if text is None:
        return None
    first = text.splitlines()[0]
    rec = first.split("#", 1)[1].strip() if "#" in first else "no header"
    return _verbatim("demo_cpu.txt", f"`fastreweight demo`; its first line records: {rec}")


def digits_example_section():
    text = _text("digits_example.txt")
    if text is None:
        return None
    hdr = [ln[1:].strip() for ln in text.splitlines() if ln.startswith("#")]
    date = next((h for h in hdr if h.startswith("date:")), "date: not recorded")
    return _verbatim("digits_example.txt", f"`python -m fastreweight.examples.digits --seed S`; the file records {date}")


# --------------------------------------------------------------------------------------------------
# GPU session files
# --------------------------------------------------------------------------------------------------

def _gpu_dirs():
    import glob

    return sorted(glob.glob(os.path.join(RESULTS, "gpu_*")))


def _run_header(run_dir):
    """The first header record of the run directory's kernel benchmark (its env names the commit)."""
    import glob

    for path in sorted(glob.glob(os.path.join(run_dir, "gpu_kernels*.jsonl"))):
        with open(path) as fh:
            for line in fh:
                if line.strip():
                    r = json.loads(line)
                    if r.get("kind") == "header":
                        return _rel(path), r
    return None, None


def gpu_env_table():
    out = []
    for gdir in _gpu_dirs():
        env_path = os.path.join(gdir, "run1", "env.txt")
        if not os.path.exists(env_path):
            continue
        with open(env_path) as fh:
            env = fh.read().splitlines()
        drv = next((re.search(r"Driver Version: (\S+)", ln).group(1) for ln in env if "Driver Version" in ln), "?")
        sw = next((ln for ln in env if ln.startswith("python ")), "?")
        dev = next((ln for ln in env if " SMs " in ln), "?")
        nvcc = next((ln for ln in env if ln.startswith("Cuda compilation tools")), "?")
        out += [f"Source: `{_rel(env_path)}` (recorded at the start of the session).", "",
                "| | |", "| --- | --- |",
                f"| device | {dev} |", f"| driver | {drv} |", f"| software | {sw} |", f"| nvcc | {nvcc} |", ""]
        for run in sorted(os.listdir(gdir)):
            path, h = _run_header(os.path.join(gdir, run))
            if h:
                out.append(f"`{run}`: commit {h['env']['commit']}, started {h['env']['date']} (from the header of `{path}`).")
                out.append("")
    return "\n".join(out).rstrip() or None


_PYTEST = re.compile(r"^=*\s*((?:\d+ (?:failed|passed|skipped|error|errors|xfailed|xpassed|warnings?)(?:, )?)+) in [\d.]+s")


def gpu_tests_table():
    rows = []
    for gdir in _gpu_dirs():
        for run in sorted(os.listdir(gdir)):
            rdir = os.path.join(gdir, run)
            _, h = _run_header(rdir)
            commit = h["env"]["commit"] if h else "?"
            for log in ("pytest_triton.log", "pytest_cuda.log"):
                path = os.path.join(rdir, log)
                if os.path.exists(path):
                    with open(path) as fh:
                        text = fh.read().splitlines()
                    summ = next((m.group(1) for ln in reversed(text) if (m := _PYTEST.match(ln.strip()))), "no summary line")
                    skip = [ln.split("] ", 1)[-1] for ln in text if ln.startswith("SKIPPED")]
                    rows.append((f"`{_rel(path)}`", commit, "pytest", summ + (f" ({'; '.join(skip)})" if skip else "")))
            path = os.path.join(rdir, "sanitizer.log")
            if os.path.exists(path):
                with open(path) as fh:
                    text = fh.read().splitlines()
                tool = None
                for ln in text:
                    if ln.startswith("=== compute-sanitizer"):
                        tool = ln[4:].strip()
                        res = []
                    elif tool and ("cases" in ln or "SUMMARY" in ln or "BackendUnavailable: " in ln):
                        res.append(ln.strip("= ").strip() if "BackendUnavailable: " not in ln else
                                   "BackendUnavailable: " + ln.split("BackendUnavailable: ", 1)[1])
                    elif tool and ln.startswith("=== rc="):
                        rows.append((f"`{_rel(path)}`", commit, tool, "; ".join(res) + f"; exit status {ln[7:]}"))
                        tool = None
    if not rows:
        return None
    lines = ["Source: the logs named in the first column (commit from the run's kernel-benchmark header).", "",
             "| log | commit | what | result |", "| --- | --- | --- | --- |"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(lines)


def gpu_floors_table():
    """Compute and memory floors of the two target shapes from the ceilings measured in the run, next to the
    measured cuBLAS GEMM of the same FLOPs."""
    runs = _gpu_runs()
    if not runs:
        return None
    path, header, recs = runs[0]
    ceil = header["ceilings"]
    by = _by_shape(recs)
    lines = [
        f"Source: `{path}` (ceilings measured in the run: bf16 GEMM {ceil['bf16_gemm_tflops']:.0f} TFLOP/s, copy "
        f"{ceil['copy_gbs']:.0f} GB/s). Pairwise FLOPs `2·B·M·d`; bytes = both inputs read once (bf16); floors = "
        "FLOPs / GEMM ceiling and bytes / copy rate; the last column is the cuBLAS GEMM of the same FLOPs timed "
        "next to each case.",
        "",
        "| shape (bf16, feature kernel) | pairwise FLOPs | compute floor, µs | bytes | memory floor, µs | cuBLAS GEMM, same FLOPs, µs |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for k in ((1024, 16384, 512, 100, 0, "bfloat16"), (8192, 65536, 1024, 100, 0, "bfloat16")):
        if k not in by:
            continue
        B, M, d, C = k[:4]
        flops = 2 * B * M * d
        nbytes = (B + M) * d * 2
        gemm = next(iter(by[k].values()))["same_gemm_ms"]
        fl = f"{flops / 1e12:.2f} TFLOP" if flops >= 1e12 else f"{flops / 1e9:.1f} GFLOP"
        lines.append(f"| B={B}, M={M}, d={d}, C={C} | {fl} | {flops / ceil['bf16_gemm_tflops'] / 1e6:.0f} | "
                     f"{nbytes / 1e6:.1f} MB | {nbytes / ceil['copy_gbs'] / 1e3:.0f} | {gemm * 1e3:.0f} |")
    return "\n".join(lines)


def gpu_ratios_table():
    """Ratios read off the target-shape tables: how much faster the Triton pairwise kernel is than eager and
    compiled eager, its share of the same-FLOP cuBLAS GEMM, and the CUDA extension and the prototype strategy
    against it."""
    runs = _gpu_runs()
    if not runs:
        return None
    lines = ["Ratios of the medians in the tables above (per run; – where the run lacks a column).", "",
             "| run (commit) | B | M | d | C | k | dtype | eager / Triton pairwise | compiled / Triton pairwise | "
             "Triton pairwise share of cuBLAS | CUDA pairwise / Triton pairwise | Triton pairwise / Triton prototype |",
             "| --- " * 12 + "|"]
    for path, header, recs in runs:
        by = _by_shape(recs)
        for k in by:
            if k[:5] not in ((1024, 16384, 512, 100, 0), (8192, 65536, 1024, 100, 0), (1024, 16384, 512, 100, 10)):
                continue
            v = by[k]
            tp = v.get("triton-pairwise")
            if tp is None:
                continue
            ratio = lambda a, b: f"{a['ms'] / b['ms']:.2f}" if a is not None and b is not None else "–"  # noqa: E731
            lines.append(f"| `{path.split('/')[-2]}` ({header['env']['commit']}) | " + " | ".join(str(x) for x in k) + " | "
                         f"{ratio(v.get('eager-reference'), tp)} | {ratio(v.get('compile-reference'), tp)} | "
                         f"{tp['pct_of_same_gemm']:.0f}% | {ratio(v.get('cuda-pairwise'), tp)} | "
                         f"{ratio(tp, v.get('triton-prototype'))} |")
    return "\n".join(lines)


def gpu_correctness_table():
    runs = _gpu_runs()
    if not runs:
        return None
    lines = ["Every timed output is compared with the eager reference (`rel_err_vs_eager`). Largest relative error per "
             "implementation and input dtype; the Triton pairwise kernel's B = 8192, C = 1000 cases separately.", ""]
    for path, header, recs in runs:
        mx: dict = {}
        bad = []
        for r in recs:
            e = r.get("rel_err_vs_eager")
            if e is None:
                continue
            c = r["case"]
            big = r["impl"] == "triton-pairwise" and c["B"] == 8192 and c["C"] == 1000
            key = (r["impl"] + (" at B = 8192, C = 1000" if big else ""), c["dtype"])
            mx[key] = max(mx.get(key, 0.0), e)
            if big:
                bad.append((c["M"], c["d"], e))
        lines += [f"Source: `{path}` (commit {header['env']['commit']}, {header['env']['date'][:10]}).", "",
                  "| implementation | dtype | shapes | largest rel. error |", "| --- | --- | --- | --- |"]
        for (impl, dt), e in sorted(mx.items()):
            n = sum(1 for r in recs if r.get("rel_err_vs_eager") is not None and r["case"]["dtype"] == dt and
                    (r["impl"] + (" at B = 8192, C = 1000" if r["impl"] == "triton-pairwise" and r["case"]["B"] == 8192
                                  and r["case"]["C"] == 1000 else "")) == impl)
            lines.append(f"| {impl} | {dt} | {n} | {e:.2g} |")
        if bad:
            lines += ["", "Triton pairwise at B = 8192, C = 1000: " + ", ".join(
                f"M={m}, d={d}: {e:.1%}" for m, d, e in sorted(bad)) + "."]
        lines.append("")
    return "\n".join(lines).rstrip()


def e2e_gpu_same_passes_table():
    """The GPU step costs of the methods with clean passes against ERM given the same clean passes."""
    import glob

    lines = []
    for path in sorted(glob.glob(os.path.join(RESULTS, "gpu_*", "run*", "e2e_gpu.jsonl"))):
        with open(path) as fh:
            recs = [json.loads(line) for line in fh if line.strip()]
        rows = []
        for suite in dict.fromkeys(r["suite"] for r in recs):
            rs = [r for r in recs if r["suite"] == suite]
            erm_cp = {r["settings"].get("clean_passes"): r for r in rs
                      if r["settings"].get("method") == "erm" and r["settings"].get("clean_passes")}
            for r in rs:
                cp = r["settings"].get("clean_passes")
                if r["settings"].get("method") != "erm" and cp in erm_cp:
                    rows.append(f"| {suite} | {r['method']} | {cp} | {r['ms_per_step'] / erm_cp[cp]['ms_per_step']:.2f} |")
        if rows:
            lines += [f"Source: `{_rel(path)}` (as above): step time over that of ERM given the same number of clean "
                      "passes per epoch (SPEC §6's fair baseline).", "",
                      "| suite | method | clean passes | × ERM with the same clean passes |", "| --- | --- | --- | --- |"]
            lines += rows + [""]
    return "\n".join(lines).rstrip() or None


# --------------------------------------------------------------------------------------------------
# The headline table (docs/headline.md)
# --------------------------------------------------------------------------------------------------

#: runs of variants.jsonl the headline may pick as "the library's best variant": the stateful FBR of the
#: library without clean passes
_BEST_CANDIDATES = ("fbr-default", "fbr+whiten", "fbr+whiten/5", "fbr+whiten/10")
#: variants.jsonl run -> bench_e2e.py method (for the epoch-time row)
_E2E_METHOD = {
    "erm": "erm",
    "paper": "fbr recipe=paper (eval forward, 5 clean passes)",
    "fbr-default": "fbr (default: stateful, cache)",
    "fbr+whiten": "fbr feature_whiten=auto (cache)",
    "fbr+whiten/5": "fbr feature_whiten=auto, refit every 5th refresh",
    "fbr+whiten/10": "fbr feature_whiten=auto, refit every 10th refresh",
}
_TITLE = {
    "erm": "ERM",
    "paper": "published recipe",
    "fbr-default": "FBR, library default",
    "fbr+whiten": "FBR + whitened clean features",
    "fbr+whiten/5": "FBR + whitening, refit every 5th epoch",
    "fbr+whiten/10": "FBR + whitening, refit every 10th epoch",
}
_DATASET = {"mnist5k": "MNIST-5k", "digits": "digits"}
_NOISE = {"sym": "symmetric", "asym": "asymmetric"}


def _headline_parts():
    recs = _jsonl("variants.jsonl")
    if not recs:
        return None
    first = _first_per_run(recs)
    cells = sorted({(r["dataset"], r["noise"], r["rate"]) for r in first}, key=lambda c: (c[0] != "mnist5k", c[1], c[2]))

    def mean(run, cell, field):
        vals = [r[field] for r in first if r["run"] == run and (r["dataset"], r["noise"], r["rate"]) == cell]
        return statistics.mean(vals) if vals else None

    overall = {run: statistics.mean(mean(run, c, "last_acc") for c in cells) for run in _BEST_CANDIDATES
               if all(mean(run, c, "last_acc") is not None for c in cells)}
    best = max(overall, key=lambda run: overall[run])
    runs = ["erm", "paper", "fbr-default"] + ([best] if best != "fbr-default" else [])
    seeds = sorted({r["seed"] for r in first})
    times = {}
    for name in ("e2e_cpu.jsonl", "e2e_cpu_digits.jsonl"):
        e = _jsonl(name)
        if e:
            last = list(_runs_of(e).values())[-1]
            times[name] = {r["method"]: r for r in last}
    return cells, runs, best, overall, seeds, mean, times


def headline():
    parts = _headline_parts()
    if parts is None:
        return None
    cells, runs, best, overall, seeds, mean, times = parts
    vrecs = _jsonl("variants.jsonl")
    clean = {}
    for r in vrecs:
        clean.setdefault(r["dataset"], r["clean_size"])
    lines = [
        "| noise cell (MLP; clean labels) | " + " | ".join(_TITLE[r] for r in runs) + " |",
        "| --- " * (len(runs) + 1) + "|",
    ]
    for c in cells:
        vals = [f"{mean(r, c, 'last_acc'):.3f} / {mean(r, c, 'best_acc'):.3f}" for r in runs]
        lines.append(f"| {_DATASET.get(c[0], c[0])}, {c[2]:.0%} {_NOISE.get(c[1], c[1])}; {clean[c[0]]} | " + " | ".join(vals) + " |")
    for name, ds in (("e2e_cpu.jsonl", "MNIST-5k"), ("e2e_cpu_digits.jsonl", "digits")):
        if name in times:
            t = times[name]
            vals = [f"{t[_E2E_METHOD[r]]['ratio_to_erm_paired']:.2f}×" if _E2E_METHOD[r] in t else "—" for r in runs]
            lines.append(f"| CPU time per epoch / ERM, {ds} | " + " | ".join(vals) + " |")
    dates = sorted({r["env"]["date"][:10] for r in vrecs})
    trecs = [r for t in times.values() for r in t.values()]
    tdates = sorted({r["env"]["date"][:10] for r in trecs})
    rounds = sorted({r["rounds"] for r in trecs})
    machine = sorted({f"{r['env']['device_name']}, {r['threads']} thread" for r in trecs})
    lines += [
        "",
        f"Test accuracy after the last epoch / at the best epoch (the best is picked on the test set, so it is "
        f"optimistic), mean over seeds {seeds[0]}–{seeds[-1]}, from `benchmarks/results/variants.jsonl` "
        f"({', '.join(dates)}); \"{_TITLE[best]}\" is the library variant without clean passes with the highest mean "
        f"last-epoch accuracy over the {len(cells)} cells. Time per epoch: median of the within-round ratios "
        f"to ERM over {'/'.join(map(str, rounds))} interleaved rounds, latest runs of `benchmarks/results/e2e_cpu.jsonl` "
        f"and `e2e_cpu_digits.jsonl` ({', '.join(tdates)}; {'; '.join(machine)}), timed with a fused C++ loss op "
        "that has since been removed, so the FBR times are to be re-measured. "
        "All tables: [docs/results.md](docs/results.md).",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# docs/results.md
# --------------------------------------------------------------------------------------------------

def _with_images(fn, *pngs):
    """The table of ``fn`` followed by the committed plots (paths relative to the repository root) that exist;
    render.py writes them from the same files."""
    def table():
        body = fn()
        if body is None:
            return None
        imgs = [f"![{os.path.basename(p)}](../{p})" for p in pngs if os.path.exists(os.path.join(ROOT, p))]
        return body + ("\n\n" + "\n\n".join(imgs) if imgs else "")
    return table


_HISTORICAL_OPS = (
    "Most of these runs timed code that has since been removed or is being removed: the C++ fused weighted "
    "cross-entropy op (`fbr_weighted_ce_prototype`, in the stateful FBR step from commit 2a95c64 on) and its direct "
    "CPython entry (from a90417e on), both deleted in d17cba4, and the C++ copies of the whitening ops (`loo_auroc` "
    "from 7e5200d on, then `shrunk_class_means` and `refold_class_means`). So the FBR rows at those commits are not "
    "timings of the current step. The two A/B tables at the end of this section measure what the removal of the "
    "fused op and of the direct entry changes; the step as it is now has not been timed end to end.")

_LI_TEXT = (
    "`python benchmarks/compare_label_issues.py` (`--tools fastreweight` to rerun only fastreweight's scorers into a "
    "new `label_issues_*.jsonl`; each tool's rows come from the newest file that has it). Every tool gets the same "
    "feature matrix and the same labels: symmetric noise (30% of the rows resampled uniformly, so about 27% wrong), "
    "pair flips c → c+1 (25% of every class) and the instance-dependent kinds of `fastreweight.noise.make_noise` "
    "where it has them. 100 trusted rows keep their true labels; only fastreweight is told which they are "
    "(`clean_idx`). Tools: `cleanlab:datalab-knn` is `Datalab.find_issues(features=...)` (cleanlab's kNN label "
    "check); `cleanlab:lr` is `filter.find_label_issues` and `rank.get_label_quality_scores` on 5-fold out-of-sample "
    "`pred_probs` of a converged logistic regression on standardised features (its seconds include the "
    "cross-validation); `fastreweight:NAME` is `find_label_issues(..., scorer=NAME)` for every name of `SCORERS` "
    "(with the default flag rule of the commit that wrote it), `fastreweight:NAME/FLAG` the same with `flag=FLAG`. "
    "AUROC of 1 − `label_score` for \"the label is wrong\"; precision@k: the k lowest-scored rows, k = the number "
    "of wrong labels; precision, recall and count of the flagged set; est. noise rate: fastreweight's "
    "`estimated_noise_rate` against the true rate of all rows; seconds: the tool's own calls, features given, one "
    "thread (learned features: 5 calls, one per cross-fitting fold, summed).")
_SUPERSEDED = ("Superseded by [the same-features comparison](#label-issues): the script that wrote these files "
               "(`benchmarks/compare_cleanlab.py`: symmetric noise only, raw pixels only, one cleanlab setting, "
               "logistic regression capped at 200 iterations) is deleted; its result files are kept for the record.")

#: (anchor, heading level, title, text before the table, table function); a None function is a heading only
DOC = [
    (None, 2, "Training on noisy labels (CPU, MLP)", None, None),
    ("variants", 3, "The published recipe and faster variants (SPEC §7)",
     "`paper` is `recipe=\"paper\"` (5 clean passes per epoch, eval-mode batch features, threshold weights, alpha "
     "schedule); `erm+cp` is ERM given the same clean passes, `erm+mix` ERM given the same clean samples mixed into "
     "its batches. Variants: (a) batch features from the training forward, (b) one clean pass, (c) the stateful "
     "`Reweighter` in place of `threshold_weights`, (d) running class prototypes, (e) (a) with the clean passes' "
     "samples mixed into the training batches (`clean_mix=5`), (a+b) (a) with two or three clean passes, (a+w) (a) "
     "with whitened clean features (`feature_whiten=\"auto\"`); `fbr-default` is `train(method=\"fbr\")` with the "
     "library's defaults (stateful, `shift=\"max\"`, no clean passes, cached clean features, `warmup=\"auto\"`); "
     "`fbr+whiten` that with `feature_whiten=\"auto\"`, `fbr+whiten/5` and `/10` with the whitening refitted at "
     "every 5th / 10th refresh only (`feature_whiten_every`). The time columns come from one run per cell and "
     "seed, minutes apart on a shared machine: use the interleaved step-cost tables below for cost.",
     lambda: _cell_table(*CELL_TABLES["variants"])),
    ("instance", 3, "Instance-dependent noise: every method",
     "`python benchmarks/run_experiments.py instance`: the runs of the grid above plus `l2r`, `meta` and `relabel` "
     "(`method=\"relabel\"`, `NeighbourRelabel` with its defaults) on the noise kinds of `fastreweight.noise` "
     "(definitions: [noise.md](noise.md); why FBR falls behind and how `relabel` works: "
     "[instance-noise.md](instance-noise.md)).",
     lambda: instance_table("instance")),
    ("instance-cc", 3, "`relabel` on the class-conditional cells",
     "`python benchmarks/run_experiments.py instance-cc`.", lambda: instance_table("instance-cc")),
    ("instance-heldout", 3, "Instance-dependent noise, held-out seeds 3–5",
     "`python benchmarks/run_experiments.py instance --seeds 3 4 5 --only erm paper fbr+whiten/10 relabel "
     "relabel/hard-target --out benchmarks/results/instance_grid_heldout.jsonl`, beside the next one "
     "(`relabel/hard-target`: `vote_target=0`).",
     lambda: instance_table("instance-heldout")),
    ("instance-cc-heldout", 3, "`relabel` on the class-conditional cells, held-out seeds 3–5",
     "`python benchmarks/run_experiments.py instance-cc --seeds 3 4 5 --out "
     "benchmarks/results/instance_cc_heldout.jsonl`.", lambda: instance_table("instance-cc-heldout")),
    ("instance-cnn", 3, "Instance-dependent noise on a small CNN",
     "`python benchmarks/run_experiments.py instance-cnn --only erm relabel --seeds S` and `--only paper fbr-default "
     "--seeds S`, one invocation per seed and pair (2026-12-04, morning); then `--only erm erm+cp l2r meta "
     "fbr+whiten/10`, `--only l2r/warmup2 meta/warmup2` and `--only erm relabel` (relabel with its clean vote; "
     "the earlier relabel rows are `relabel/no-clean-vote`), two invocations at a time; then `--only erm relabel` "
     "once more (2026-12-04, the next session, beside an MLP grid: relabel with its soft target, the earlier relabel "
     "rows are `relabel/hard-target`). A run without ERM in its "
     "invocation (`paper`, `fbr-default`, the `/warmup2` runs) is timed against an ERM run of another, under "
     "another load, so its × ERM is rough. `l2r` and `meta` start reweighting at the first step (their "
     "default) and collapse on most seeds; the `/warmup2` runs train with ERM for two epochs first, as the "
     "published recipe does.",
     lambda: instance_table("instance-cnn")),
    ("recheck", 3, "Recheck of the accuracy columns at later commits", None, recheck_table),
    ("redesign-recheck", 3, "Variants recheck across the trainer redesign",
     "ERM, the library's default FBR, the published recipe and `fbr+whiten/10` on every cell and seed, run by the "
     "code before the redesign of the trainer (`fastreweight.training`) and by the code after it.",
     redesign_recheck_table),
    ("cleanpasses", 3, "Clean passes for every method",
     "ERM, bi-level L2R and the default FBR, each without and with five clean passes per epoch "
     "(`python benchmarks/run_experiments.py cleanpasses`); `+mix`: the same clean samples mixed into the batches.",
     lambda: _cell_table(*CELL_TABLES["cleanpasses"])),
    ("whiten", 3, "Whitened clean features (`feature_whiten`)",
     "`python benchmarks/run_experiments.py whiten`; `+cp`: with five clean passes per epoch.",
     lambda: _cell_table(*CELL_TABLES["whiten"])),
    ("whiten-size", 3, "Whitening by clean-subset size", "`python benchmarks/run_experiments.py whiten-size`.",
     lambda: _cell_table(*CELL_TABLES["whiten-size"])),
    ("whiten-cnn", 3, "Whitening on a small CNN",
     "`python benchmarks/run_experiments.py whiten-cnn --cells sym:0.4 asym:0.4`.",
     lambda: _cell_table(*CELL_TABLES["whiten-cnn"])),
    ("ablation", 3, "Ablation of the stateful FBR", None, ablation_table),
    ("refresh", 3, "How often to refresh the clean features", "`python benchmarks/run_experiments.py refresh`.",
     lambda: _cell_table(*CELL_TABLES["refresh"])),
    (None, 2, "Cost of a training step (CPU, MLP)", _HISTORICAL_OPS, None),
    ("e2e-cpu", 3, "MNIST-5k: every method, latest run",
     "`python benchmarks/bench_e2e.py --suite cpu-mlp --rounds 41 --epochs 4` (40% symmetric noise).", e2e_table),
    ("e2e-cpu-digits", 3, "Digits: every method, latest run",
     "`python benchmarks/bench_e2e.py --suite cpu-mlp-digits --rounds 41 --epochs 4`.",
     lambda: e2e_table("e2e_cpu_digits.jsonl", "demo-digits")),
    ("e2e-cpu-runs", 3, "Every full run, MNIST-5k", None, e2e_runs_table),
    ("e2e-cpu-digits-runs", 3, "Every full run, digits", None,
     lambda: e2e_runs_table("e2e_cpu_digits.jsonl", "demo-digits")),
    ("e2e-cpu-repeats", 3, "Repeated short runs, MNIST-5k", "Five runs of the ERM and FBR rows alone, back to back, per commit.",
     e2e_repeats_table),
    ("e2e-cpu-repeats-summary", 3, "Repeated runs pooled by commit, MNIST-5k", None, repeats_summary_table),
    ("e2e-cpu-digits-repeats", 3, "Repeated short runs, digits", None,
     lambda: e2e_repeats_table("e2e_cpu_digits_repeats.jsonl", "demo-digits")),
    ("e2e-cpu-digits-repeats-summary", 3, "Repeated runs pooled by commit, digits", None,
     lambda: repeats_summary_table("e2e_cpu_digits_repeats.jsonl")),
    ("step-paths", 3, "Per-step paths switched back (A/B)",
     "The features by a forward hook instead of `features_and_logits`, and the C++ op called through "
     "`torch.ops` instead of the direct CPython entry. The direct entry was removed in d17cba4, so the "
     "`torch.ops` row is the call path the step has now (with the loss of the `coef` path of the next table).",
     step_paths_table),
    ("fused-loss", 3, "The fused loss op (A/B; the op was removed)", None, fused_loss_table),
    (None, 2, "Kernels on the CPU", None, None),
    ("micro-cpu", 3, "Microbenchmarks", None, micro_table),
    ("cpp-cpu", 3, "The C++ backend against the eager reference", None, cpp_cpu_tables),
    ("criterion", 3, "The whitening criterion as a C++ op (the op is being removed)", None, criterion_table),
    (None, 2, "Label issues at dataset scale", None, None),
    ("label-issues", 3, "Against cleanlab, every tool given the same features (MNIST-5k)", _LI_TEXT, label_issues_source),
    ("label-issues-pca", 4, "Features: " + _LI_FEATURES["pca"], None, lambda: label_issues_table("pca")),
    ("label-issues-learned", 4, "Features: " + _LI_FEATURES["learned"], None, lambda: label_issues_table("learned")),
    ("label-issues-heldout", 4, "Seeds 3–5: each flag rule against cleanlab", None,
     label_issues_vs_cleanlab_table),
    ("label-issues-low-noise", 4, "10% noise: each flag rule against cleanlab", None,
     lambda: label_issues_vs_cleanlab_table(("lownoise_label_issues_count_2026-12-08.jsonl", "lownoise_label_issues_cosine.jsonl"),
                                            "every kind at 10% instead of 25–30%; the neighbourhood-size choice and "
                                            "the count rule were measured at this rate too (docs/label-issues.md)")),
    ("label-issues-digits", 4, "A second dataset: scikit-learn's digits, each flag rule against cleanlab", None,
     lambda: label_issues_vs_cleanlab_table(("digits_label_issues_count_2026-12-08.jsonl", "digits_label_issues_cosine.jsonl"),
                                            "`--dataset digits`: 1797 rows × 64 pixels, 10 trusted rows per class, "
                                            "the same noise kinds at 25–30% and 10%; the neighbourhood-size choice "
                                            "and the count rule were measured on this dataset too "
                                            "(docs/label-issues.md)",
                                            exclude=("fastreweight:knn", "fastreweight:auto", "fastreweight:fbr",
                                                     "fastreweight:fbr-whiten"))),
    ("label-issues-audit", 4, "With an audit: each flag rule against cleanlab", None,
     lambda: label_issues_vs_cleanlab_table(("audit_label_issues_mnist5k.jsonl", "audit_label_issues_lownoise.jsonl"),
                                            "`--audit`: every tool sees the trusted rows' noisy labels, and "
                                            "fastreweight is also told their verified labels (`clean_labels`); "
                                            "seeds 0–2 of the 25–30% kinds and of the same kinds at 10%; not "
                                            "shown: `knn` and `knn/confident` (the default, as `auto`), `fbr` and "
                                            "`fbr-whiten` (their records are in the files)",
                                            exclude=("fastreweight:knn", "fastreweight:knn/confident",
                                                     "fastreweight:fbr", "fastreweight:fbr-whiten"))),
    ("label-issues-audit-digits", 4, "With an audit, digits", None,
     lambda: label_issues_vs_cleanlab_table(("audit_label_issues_digits.jsonl", "audit_label_issues_digits_lownoise.jsonl"),
                                            "`--audit --dataset digits`, seeds 0–2, 25–30% and 10%",
                                            exclude=("fastreweight:knn", "fastreweight:auto", "fastreweight:fbr",
                                                     "fastreweight:fbr-whiten"))),
    ("label-issues-audit-rate", 4, "The noise rate estimated with an audit", None,
     lambda: audit_noise_rate_table(("audit_label_issues_mnist5k.jsonl", "audit_label_issues_lownoise.jsonl",
                                     "audit_label_issues_digits.jsonl", "audit_label_issues_digits_lownoise.jsonl"))),
    ("cleanlab", 3, "Against cleanlab on raw pixels, seeds 0–2 (superseded)", _SUPERSEDED + " Setup: raw pixels, "
     "symmetric noise; cleanlab given 5-fold cross-validated logistic-regression probabilities on the noisy labels "
     "(capped at `max_iter=200`, warnings silenced), fastreweight `M` clean labels; flagged = score ≤ 0.",
     _with_images(cleanlab_table, "benchmarks/results/cleanlab_comparison.png")),
    ("cleanlab-heldout", 3, "Against cleanlab on raw pixels, held-out seeds 3–5 (superseded)", _SUPERSEDED,
     lambda: cleanlab_table("cleanlab_comparison_heldout.jsonl")),
    ("score-cpu", 3, "Scoring throughput", "`python benchmarks/bench_score.py`.", score_table),
    ("score-scale", 3, "Scoring at scale",
     "`python benchmarks/bench_score.py --scale` (single process) and its sharded run under `torchrun` "
     "(gloo ranks on the same machine).", score_scale_table),
    ("score-scale-gpu", 3, "Scoring at scale on a GPU", None, score_scale_gpu_table),
    ("knn-scale", 3, "The default scorer at its largest size", None, knn_scale_table),
    ("label-issues-many-classes", 3, "Many classes, few rows per class",
     "`python benchmarks/many_classes_label_issues.py`: Gaussian class means, 20–30% of the labels resampled "
     "uniformly, about 10% of the rows trusted; fastreweight's defaults against cleanlab's kNN label check on the "
     "same features. Two commits: before and after the confident rule stopped counting and flagging rows whose "
     "own label is their most probable class.", many_classes_table),
    ("probe-cells", 3, "The probe on the benchmark's cells", None, probe_cells_table),
    ("noise-kinds", 3, "Label-noise kinds on MNIST-5k",
     "What each generator of `fastreweight.noise` produces at 30% (definitions: [noise.md](noise.md)).",
     noise_kinds_table),
    (None, 2, "GPU (H100)", None, None),
    ("gpu-env", 3, "The session", None, gpu_env_table),
    ("gpu-tests", 3, "Tests and compute-sanitizer", None, gpu_tests_table),
    ("gpu-floors", 3, "Floors of the two target shapes", None, gpu_floors_table),
    ("gpu-targets", 3, "Scoring kernels at the target shapes",
     "`benchmarks/bench_gpu.py`: `fbr_scores` (`shift=\"max\"`, `check_values=False`) per backend against the eager "
     "reference, `torch.compile` of it and a cuBLAS GEMM of the same FLOPs; bf16 unless noted; `k = 10` is the "
     "gradient kernel.", gpu_targets_table),
    ("gpu-ratios", 3, "Ratios at the target shapes", None, gpu_ratios_table),
    ("gpu-correctness", 3, "Agreement with the eager reference", None, gpu_correctness_table),
    ("gpu-grid", 3, "The full grid", None,
     _with_images(gpu_grid_table, "benchmarks/results/gpu_h100_2026-11-26/run1/gpu_kernels.png")),
    ("e2e-gpu", 3, "Cost of a training step",
     "`benchmarks/bench_e2e.py --suite gpu-preact18` and `--suite gpu-resnet34-paper` (random 3×32×32 inputs, fp32).",
     _with_images(e2e_gpu_table, "benchmarks/results/gpu_h100_2026-11-26/run1/e2e_gpu.png")),
    ("e2e-gpu-same-passes", 3, "Against ERM with the same clean passes", None, e2e_gpu_same_passes_table),
    (None, 2, "Examples", None, None),
    ("demo", 3, "`fastreweight demo`", None, demo_section),
    ("digits-example", 3, "The training-loop example", None, digits_example_section),
]

HEADER = ("<!-- Generated file: written by `python benchmarks/render.py` from the committed files under "
          "benchmarks/results/. Do not edit by hand. -->")


def results_md():
    body, toc = [], []
    for anchor, level, title, text, fn in DOC:
        table = fn() if fn is not None else None
        if fn is not None and table is None:
            continue  # its result file is missing
        if level == 2:
            toc.append(f"* {title}")
        elif anchor:
            toc.append(f"  * [{title}](#{anchor})")
        body.append((f'<a id="{anchor}"></a>\n' if anchor else "") + "#" * level + " " + title)
        body.append("")
        if text:
            body += [text, ""]
        if table:
            body += [table, ""]
    intro = [
        HEADER,
        "",
        "# Results",
        "",
        "Every table here is rendered from a committed result file under `benchmarks/results/` and names it, "
        "with the commit and date recorded in that file. Regenerate with `python benchmarks/render.py` (it also "
        "writes `docs/headline.md`). Where the narrative docs quote a figure, it is one of these. CPU figures: "
        "the 2-core machine named in each file; training results: test accuracy, mean ± std over the seeds named.",
        "",
    ]
    return "\n".join(intro + toc + [""] + body).rstrip() + "\n"


NOISE_BEGIN = "<!-- noise-kinds table: generated by `python benchmarks/render.py` from benchmarks/results/noise_kinds.jsonl -->"
NOISE_END = "<!-- end of generated table -->"


def noise_md(current: str) -> str:
    """docs/noise.md with the block between ``NOISE_BEGIN`` and ``NOISE_END`` replaced by ``noise_kinds_table``."""
    table = noise_kinds_table()
    if table is None or NOISE_BEGIN not in current or NOISE_END not in current:
        return current
    head, rest = current.split(NOISE_BEGIN, 1)
    _, tail = rest.split(NOISE_END, 1)
    return head + NOISE_BEGIN + "\n" + table + "\n" + NOISE_END + tail


def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", newline="\n") as fh:
        fh.write(text)


def main(argv=None):
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-plots", action="store_true", help="write the markdown only")
    args = ap.parse_args(argv)
    _write(os.path.join(DOCS, "results.md"), results_md())
    noise_path = os.path.join(DOCS, "noise.md")
    if os.path.exists(noise_path):
        with open(noise_path) as fh:
            current = fh.read()
        updated = noise_md(current)
        if updated != current:
            _write(noise_path, updated)
    head, recommended = headline(), headline_relabel()
    if head is not None or recommended is not None:
        parts = [p for p in (recommended, head) if p is not None]
        _write(os.path.join(DOCS, "headline.md"),
               "<!-- Generated by `python benchmarks/render.py` from benchmarks/results/ (instance_cc.jsonl, "
               "instance_grid.jsonl, variants.jsonl, e2e_cpu.jsonl, e2e_cpu_digits.jsonl); do not edit by hand. -->\n"
               + "\n\n".join(parts) + "\n")
    if not args.no_plots:
        plots()


if __name__ == "__main__":
    main()
