"""Render the committed result files into README tables and PNG plots — never typed by hand.

    python benchmarks/render.py            # rewrites README.md's generated sections, writes PNGs

Each README section lives between ``<!-- generated:NAME -->`` and ``<!-- /generated:NAME -->`` and
names the file it came from.  A section whose result file is missing is left as it is.
"""
from __future__ import annotations

import json
import os
import re
import statistics
from collections import defaultdict

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
README = os.path.join(HERE, "..", "README.md")


def _jsonl(name):
    path = os.path.join(RESULTS, name)
    if not os.path.exists(path):
        return None
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _ms(values, fmt="{:.3f}"):
    if len(values) == 1:
        return fmt.format(values[0])
    return (fmt + " ± " + fmt).format(statistics.mean(values), statistics.stdev(values))


def cleanlab_table():
    recs = _jsonl("cleanlab_comparison.jsonl")
    if not recs:
        return None
    groups = defaultdict(list)
    for r in recs:
        groups[(r["rate"], r["method"])].append(r)
    seeds = sorted({r["seed"] for r in recs})
    env = recs[-1]
    lines = [
        f"Source: `benchmarks/results/cleanlab_comparison.jsonl` (seeds {seeds}, {env['date']}, commit {env['commit']}, "
        f"{env['cores']}-core CPU, cleanlab {env['cleanlab']}); mean ± std over seeds.",
        "",
        "| noise | method | AUROC | precision | recall | seconds |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for (rate, method), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        lines.append(
            f"| {rate:.0%} | {method} | {_ms([r['auroc'] for r in rs])} | {_ms([r['precision'] for r in rs])} | "
            f"{_ms([r['recall'] for r in rs])} | {_ms([r['seconds'] for r in rs], '{:.2f}')} |"
        )
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
    """Median over (cell, seed) of this run's epoch time / ERM's in the same cell and seed."""
    base = {(r["dataset"], r["noise"], r["rate"], r["seed"]): r["epoch_s_median"] for r in recs if r["run"] == erm_run}
    ratios = [r["epoch_s_median"] / base[k] for r in recs if r["run"] == run
              for k in [(r["dataset"], r["noise"], r["rate"], r["seed"])] if k in base]
    return statistics.median(ratios) if ratios else float("nan")


def variants_table():
    recs = _jsonl("variants.jsonl")
    if not recs:
        return None
    cells = sorted({(r["dataset"], r["noise"], r["rate"]) for r in recs}, key=lambda c: (c[0] != "mnist5k", c[1], c[2]))
    runs = list(dict.fromkeys(r["run"] for r in recs))
    seeds = sorted({r["seed"] for r in recs})
    env = recs[-1]["env"]
    head = "| run | " + " | ".join(f"{d} {n} {int(rt * 100)}%" for d, n, rt in cells) + " | epoch time / ERM |"
    lines = [
        f"Source: `benchmarks/results/variants.jsonl` (seeds {seeds}, {env['date'][:10]}, commit {env['commit']}, "
        f"{env['device_name']}, 1 thread per run, two runs in parallel); test accuracy after the last epoch, "
        "mean ± std over seeds; time ratio = median over cells and seeds of the run's median epoch time over ERM's.",
        "",
        head,
        "| --- " * (len(cells) + 2) + "|",
    ]
    for run in runs:
        row = [_acc_cell([r for r in recs if r["run"] == run and (r["dataset"], r["noise"], r["rate"]) == c]) for c in cells]
        lines.append(f"| {run} | " + " | ".join(row) + f" | {_time_ratio(recs, run):.2f} |")
    return "\n".join(lines)


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


def e2e_table():
    recs = _jsonl("e2e_cpu.jsonl")
    if not recs:
        return None
    last_date = recs[-1]["env"]["date"]
    recs = [r for r in recs if r["env"]["date"] == last_date]  # the latest run only
    env = recs[-1]["env"]
    lines = [
        f"Source: `benchmarks/results/e2e_cpu.jsonl` ({env['date'][:10]}, commit {env['commit']}, {env['device_name']}, "
        f"{recs[-1]['threads']} thread, MLP of `demo-mnist`, batch {recs[-1]['batch_size']}, median of {recs[-1]['rounds']} interleaved rounds).",
        "",
        "| method | ms per training step | × ERM |",
        "| --- | --- | --- |",
    ]
    for r in recs:
        lines.append(f"| {r['method']} | {r['ms_per_step']:.2f} | {r['ratio_to_erm']:.2f} |")
    return "\n".join(lines)


def _replace_section(text, name, body):
    pat = re.compile(rf"(<!-- generated:{name} -->\n)(.*?)(<!-- /generated:{name} -->)", re.S)
    if not pat.search(text):
        return text
    return pat.sub(lambda m: m.group(1) + body + "\n" + m.group(3), text)


def plots():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    recs = _jsonl("cleanlab_comparison.jsonl")
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
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(os.path.join(RESULTS, "cleanlab_comparison.png"), dpi=120)
        plt.close(fig)


SECTIONS = {"cleanlab": cleanlab_table, "micro-cpu": micro_table, "variants": variants_table,
            "ablation": ablation_table, "e2e-cpu": e2e_table}


def main():
    text = open(README).read()
    for name, fn in SECTIONS.items():
        body = fn()
        if body is not None:
            text = _replace_section(text, name, body)
    with open(README, "w") as fh:
        fh.write(text)
    plots()


if __name__ == "__main__":
    main()
