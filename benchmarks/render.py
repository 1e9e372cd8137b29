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


_SAME_TIME = "time ratio as in the tables above."
_ACC = "test accuracy after the last epoch, mean ± std over seeds"

#: README sections rendered by ``_accuracy_by_cell``: section -> (results file, what the table holds)
CELL_TABLES = {
    "variants": ("variants.jsonl", f"{_ACC}; time ratio = median over the dataset's cells and seeds of the run's "
                                   "median epoch time over ERM's in the same cell and seed."),
    "cleanpasses": ("cleanpasses.jsonl", f"{_ACC}; time ratio as in the table above."),
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


SECTIONS = {"cleanlab": cleanlab_table, "score-cpu": score_table,
            "cleanlab-heldout": lambda: cleanlab_table("cleanlab_comparison_heldout.jsonl"), "micro-cpu": micro_table,
            "ablation": ablation_table, "e2e-cpu": e2e_table,
            "e2e-cpu-digits": lambda: e2e_table("e2e_cpu_digits.jsonl", "demo-digits"),
            "e2e-cpu-repeats": e2e_repeats_table,
            "e2e-cpu-digits-repeats": lambda: e2e_repeats_table("e2e_cpu_digits_repeats.jsonl", "demo-digits"),
            "step-paths": step_paths_table,
            "gpu-targets": gpu_targets_table,
            "gpu-grid": gpu_grid_table, "e2e-gpu": e2e_gpu_table,
            **{sec: (lambda name=name, note=note: _cell_table(name, note)) for sec, (name, note) in CELL_TABLES.items()}}


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
