"""README.md's results table is the one benchmarks/render.py renders from the committed result files; the generated
docs are up to date, and some classes of figures in the narrative docs (docs/gpu.md's GPU figures, the
cleanlab comparison's lead and flag-rule tables in docs/label-issues.md) match the committed files."""
from __future__ import annotations

import os
import re
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_readme_results_table_is_rendered_from_the_result_files():
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        from render_instance import headline_relabel
    finally:
        sys.path.pop(0)
    table = headline_relabel()
    assert table is not None and "| `relabel` (recommended) |" in table
    with open(os.path.join(ROOT, "README.md")) as fh:
        readme = fh.read()
    with open(os.path.join(ROOT, "docs", "headline.md")) as fh:
        headline = fh.read()
    assert table in headline, "docs/headline.md is stale: run python benchmarks/render.py"
    assert table in readme, "README.md's results table differs from docs/headline.md's first table"


# --- the generated docs and the narrative docs' figures against the committed result files -------------------------


def _render():
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        import render
    finally:
        sys.path.pop(0)
    return render


def _read(*parts):
    with open(os.path.join(ROOT, *parts), encoding="utf-8") as fh:
        return fh.read()


def test_generated_docs_are_up_to_date():
    """docs/results.md, docs/headline.md and docs/noise.md's generated block are what render.py makes of the
    committed result files now (a result file changed without a re-render leaves them stale)."""
    render = _render()
    assert _read("docs", "results.md") == render.results_md(), "docs/results.md is stale: run python benchmarks/render.py"
    noise = _read("docs", "noise.md")
    assert render.noise_md(noise) == noise, "docs/noise.md's generated table is stale: run python benchmarks/render.py"
    parts = [p for p in (render.headline_relabel(), render.headline()) if p is not None]
    assert "\n\n".join(parts) + "\n" in _read("docs", "headline.md"), "docs/headline.md is stale"


def _section(text, anchor, end_marker="<a id="):
    start = text.index(f'<a id="{anchor}"></a>')
    end = text.find(end_marker, start + 1)
    return text[start:end if end >= 0 else len(text)]


#: units of docs/gpu.md's figures -> the results.md sections (anchors) whose numbers may back them
_GPU_POOLS = {
    "×": ("gpu-ratios", "e2e-gpu", "e2e-gpu-same-passes"),
    "ms": ("gpu-targets", "gpu-grid"),
    "µs": ("gpu-floors",),
}
_NUMBER = re.compile(r"(?<![\w.§/])(\d+(?:\.\d+)?(?:e-\d+)?)(\s*(?:ms|µs|%|×))?")


def _numbers(text, percent_only=False):
    if percent_only:
        return [float(m.group(1)) for m in re.finditer(r"(?<![\w.])(\d+(?:\.\d+)?)%", text)]
    return [float(m.group(1)) for m in re.finditer(r"(?<![\w])(\d+(?:\.\d+)?(?:e[-+]?\d+)?)", text)]


def _backed(s, pool):
    """``s`` (a figure as written) equals some number of ``pool`` rounded to the figure's precision."""
    v = float(s)
    mant, _, exp = s.partition("e")
    places = len(mant.split(".")[1]) if "." in mant else 0
    if exp:
        return any(abs(r - v) <= 0.5 * 10 ** (int(exp) - places) * (1 + 1e-9) for r in pool)
    return any(abs(round(r, places) - v) < 1e-9 for r in pool)


def test_gpu_md_quotes_only_committed_gpu_figures():
    """Every figure of docs/gpu.md's account of the measured session (a number with a decimal point or a unit:
    %, ×, ms, µs) is one of results.md's GPU tables, which render.py makes from the committed session files
    (device, versions, commit and date in their headers): a ratio from the ratio / step-cost tables, a time in
    ms from the kernel tables, a share in % from a share. Targets (after "≥" or "target") are not figures."""
    results = _read("docs", "results.md")
    gpu_part = results[results.index('<a id="gpu-env"></a>'):results.index("\n## Examples")]
    pools = {u: _numbers("".join(_section(results, a) for a in anchors)) for u, anchors in _GPU_POOLS.items()}
    pools["%"] = _numbers(gpu_part, percent_only=True)
    everything = _numbers(gpu_part)
    gpu = _read("docs", "gpu.md")
    measured = gpu[:gpu.index("## Changes since the measurement")]
    unbacked = []
    for m in _NUMBER.finditer(measured):
        s, unit = m.group(1), (m.group(2) or "").strip()
        if "." not in s and "e" not in s and not unit:
            continue  # shapes, counts and dates are checked by eye
        before = measured[max(0, m.start() - 30):m.start()]
        if before.rstrip().endswith("≥") or "target" in before:
            continue
        if not _backed(s, pools.get(unit, everything)):
            unbacked.append(f"{s}{unit} (…{before.strip()[-30:]})")
    assert not unbacked, "docs/gpu.md quotes GPU figures that results.md's GPU tables lack: " + "; ".join(unbacked)


def _li_means():
    """(features, noise, tool) -> (mean AUROC, mean precision@k, mean precision, mean recall) over seeds 0-2
    of the MNIST-5k same-features comparison, each tool from the file render.py takes it from."""
    render = _render()
    out = {}
    for tool, (_, recs) in render._li_selected().items():
        by = {}
        for r in recs:
            by.setdefault((r["features"], r["noise"]), []).append(r)
        for (f, n), rs in by.items():
            out[(f, n, tool)] = tuple(statistics.mean(r[k] for r in rs)
                                      for k in ("auroc", "precision_at_k", "precision", "recall"))
    return out


def _md_table(text, header_start):
    """The rows (lists of stripped cells) of the Markdown table whose header line starts with ``header_start``."""
    start = text.index(header_start)
    rows = []
    for line in text[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows


def test_label_issues_lead_table_matches_the_result_files():
    """docs/label-issues.md's "Where fastreweight leads" table (AUROC / precision@k, means over seeds 0-2) is
    what the committed files hold."""
    means = _li_means()
    rows = _md_table(_read("docs", "label-issues.md"), "| features | noise | best cleanlab |")
    assert len(rows) == 10
    tools = ("fastreweight:knn", "fastreweight:knn/margin", "fastreweight:fbr", "fastreweight:fbr-whiten")
    for features, noise, best, *ours in rows:
        cl = [means[(features, noise, t)] for t in ("cleanlab:datalab-knn", "cleanlab:lr")]
        want = [f"{max(c[0] for c in cl):.3f} / {max(c[1] for c in cl):.3f}"]
        want += [f"{means[(features, noise, t)][0]:.3f} / {means[(features, noise, t)][1]:.3f}" for t in tools]
        assert [best, *ours] == want, (features, noise)


def _wins_in(results, anchor):
    """tool -> wins, from the "Flagged set at or above both cleanlab variants" line of a results.md section."""
    line = next(ln for ln in _section(results, anchor).splitlines() if ln.startswith("Flagged set at or above"))
    return {t: (int(a), int(b)) for t, a, b in re.findall(r"`([^`]+)` in (\d+) of (\d+) cells", line)}


def test_label_issues_flag_rule_wins_match_the_results():
    """docs/label-issues.md's "How they compare" table: the cells each flag rule wins against both cleanlab
    variants (precision and recall at or above each), recomputed for seeds 0-2 and read from results.md's
    held-out, 10% and digits tables."""
    means = _li_means()
    cells = {(f, n) for f, n, _ in means}
    seeds_0_2 = {}
    for tool in ("fastreweight:auto", "fastreweight:knn/posterior", "fastreweight:knn/margin"):
        won = sum(all(means[(f, n, tool)][2] >= means[(f, n, c)][2] and means[(f, n, tool)][3] >= means[(f, n, c)][3]
                      for c in ("cleanlab:datalab-knn", "cleanlab:lr")) for f, n in cells)
        seeds_0_2[tool] = (won, len(cells))
    results = _read("docs", "results.md")
    expected = [seeds_0_2] + [_wins_in(results, a) for a in ("label-issues-heldout", "label-issues-low-noise",
                                                              "label-issues-digits")]
    rows = _md_table(_read("docs", "label-issues.md"), "| cells | `confident` wins |")
    assert len(rows) == len(expected)
    for (name, *cols), want in zip(rows, expected):
        confident = want.get("fastreweight:auto", want.get("fastreweight:knn/confident"))
        got = [tuple(int(x) for x in re.fullmatch(r"(\d+) of (\d+)", c).groups()) for c in cols]
        assert got == [confident, want["fastreweight:knn/posterior"], want["fastreweight:knn/margin"]], name
