"""benchmarks/compare_label_issues.py: its smallest configuration (--quick) runs, writes one sound record per
(seed, feature kind, noise kind, tool), refuses to overwrite, and renders."""
import importlib.util
import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "compare_label_issues.py"


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _cleanlab_usable() -> bool:
    try:
        import cleanlab  # noqa: F401
        from cleanlab.datalab.datalab import Datalab  # noqa: F401  (needs the 'datasets' package)
    except Exception:  # noqa: BLE001
        return False
    return True


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("li") / "label_issues_quick.jsonl"
    tools = ["all"] if _cleanlab_usable() else ["fastreweight"]
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--tools", *tools, "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out, [json.loads(line) for line in out.read_text().splitlines()], proc


def test_quick_records(quick_run):
    out, recs, _ = quick_run
    from fastreweight.label_issues import SCORERS

    tools = {r["tool"] for r in recs}
    assert {f"fastreweight:{n}" for n in SCORERS} <= tools
    if _cleanlab_usable():
        assert {"cleanlab:datalab-knn", "cleanlab:lr", "cleanlab:datalab-lr"} <= tools
    assert {(r["noise"], r["features"], r["seed"]) for r in recs} == {("sym", "pca", 0), ("pair", "pca", 0)}
    assert len(recs) == 2 * len(tools)
    for r in recs:
        assert r["quick"] and r["n"] == 1200 and r["trusted"] == 100 and r["scored"] == 1100
        assert 0.5 < r["auroc"] <= 1 and 0 <= r["precision_at_k"] <= 1 and 0 <= r["recall"] <= 1
        assert r["k"] == round(r["true_noise_scored"] * r["scored"]) and 0 <= r["flagged"] <= r["scored"]
        assert r["seconds"] >= 0 and r["env"]["threads"] == 1 and r["env"]["commit"]
        if r["tool"].startswith("fastreweight:"):
            assert 0 <= r["estimated_noise_rate"] <= 1
            assert 0.5 < r["auroc_raw_score"] <= 1  # of -score (the table's AUROC is of 1 - label_score)
        if r["tool"] == "cleanlab:lr":
            assert r["lr_max_iter"] >= 100
    # every tool of a cell saw the same inputs
    for noise in ("sym", "pair"):
        assert len({r["inputs_hash"] for r in recs if r["noise"] == noise}) == 1
    assert recs[0]["true_noise_scored"] > 0.2  # sym 30%: about 27% wrong
    assert abs(next(r for r in recs if r["noise"] == "pair")["true_noise_scored"] - 0.25) < 0.02


def test_refuses_existing_out(quick_run):
    out, _, _ = quick_run
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--tools", "fastreweight:fbr", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "exists" in proc.stderr


def test_render_section(quick_run, tmp_path, monkeypatch):
    _, recs, _ = quick_run
    render = _load("fastreweight_render_for_test", ROOT / "benchmarks" / "render.py")
    for seed in (0, 1):  # two seeds, written as a full run, so mean ± std appears
        with open(tmp_path / "label_issues_a.jsonl", "a") as fh:
            for r in recs:
                fh.write(json.dumps(dict(r, quick=False, seed=seed)) + "\n")
    monkeypatch.setattr(render, "RESULTS", str(tmp_path))
    table = render.label_issues_table("pca")
    assert "| sym 30%" in table and "| pair 25%" in table and " ± " in table and "Who leads" in table
    assert render.label_issues_table("learned") is None
    src = render.label_issues_source()
    assert "label_issues_a.jsonl" in src and "identical for every tool" in src
    # a rerun of one tool into a newer file replaces that tool's rows only
    with open(tmp_path / "label_issues_b.jsonl", "w") as fh:
        for r in recs:
            if r["tool"] == "fastreweight:fbr":
                fh.write(json.dumps(dict(r, quick=False, env=dict(r["env"], date="2999-01-01"))) + "\n")
    sel = render._li_selected()
    assert sel["fastreweight:fbr"][0] == "label_issues_b.jsonl"
    assert all(f == "label_issues_a.jsonl" for t, (f, _) in sel.items() if t != "fastreweight:fbr")
    # records of another dataset in a label_issues_*.jsonl never reach the MNIST-5k tables
    with open(tmp_path / "label_issues_c.jsonl", "w") as fh:
        for r in recs:
            fh.write(json.dumps(dict(r, quick=False, dataset="digits", env=dict(r["env"], date="2999-02-01"))) + "\n")
    assert all(f != "label_issues_c.jsonl" for f, _ in render._li_selected().values())


def test_digits_dataset_loads_as_documented():
    mod = _load("fastreweight_compare_li_for_test", SCRIPT)
    x, y = mod.load_data(False, 0, "digits")
    assert x.shape == (1797, 64) and x.dtype.name == "float32" and 0 <= x.min() and x.max() <= 1
    assert y.dtype.name == "int64" and set(y.tolist()) == set(range(10))
    assert mod.pca_features(x, 0).shape == (1797, 64)  # min(PCA_DIM, d) components


def test_flag_rule_table_compares_only_cells_with_the_same_inputs(tmp_path, monkeypatch):
    """render.py's per-rule table (held-out, 10%, digits) counts a cell only when every tool ran on the same
    seeds and the same inputs; a cell whose inputs hash differs between tools is named and left out."""
    render = _load("fastreweight_render_for_vs_table", ROOT / "benchmarks" / "render.py")
    env = {"commit": "abc1234", "date": "2026-12-07T00:00:00"}

    def rec(tool, noise, seed, p, r, h="h0"):
        return dict(tool=tool, seed=seed, features="pca", noise=noise, precision=p, recall=r, auroc=0.9,
                    precision_at_k=0.8, settings={"flag": "confident"}, env=env, inputs_hash=f"{h}-{seed}")

    rows = []
    for seed in (0, 1):
        for noise, ours_hash in (("sym", "h0"), ("pair", "other")):
            rows += [rec("cleanlab:datalab-knn", noise, seed, 0.8, 0.7), rec("cleanlab:lr", noise, seed, 0.7, 0.8),
                     rec("fastreweight:auto", noise, seed, 0.9, 0.9, h=ours_hash)]
    with open(tmp_path / "t.jsonl", "w") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)
    monkeypatch.setattr(render, "RESULTS", str(tmp_path))
    table = render.label_issues_vs_cleanlab_table(("t.jsonl",), "a test")
    assert "| pca | sym | 2 |" in table and "| pca | pair |" not in table
    assert "inputs (labels, trusted rows or features) differing: pca / pair" in table
    assert "`fastreweight:auto` in 1 of 1 cells" in table


def test_audit_noise_rate_table_counts_the_intervals_that_held_the_truth(tmp_path, monkeypatch):
    render = _load("fastreweight_render_for_audit_table", ROOT / "benchmarks" / "render.py")
    env = {"commit": "abc1234", "date": "2026-12-07T00:00:00"}

    def audit(lo, hi, share):
        return {"interval": [lo, hi], "share": share, "coverage": 0.9, "rate": (lo + hi) / 2}

    rows = [dict(tool="fastreweight:knn/confident", seed=s, features="pca", noise="sym", dataset="mnist5k", env=env,
                 true_noise_scored=0.3, estimated_noise_rate=est, audits=[audit(*iv, share)],
                 settings={"rule_noise_rate": count})
            for s, est, iv, share, count in ((0, 0.28, (0.25, 0.31), 0.27, 0.2), (1, 0.36, (0.33, 0.39), 0.4, 0.1))]
    rows.append(dict(rows[0], tool="fastreweight:auto"))  # another tool's record is not counted
    with open(tmp_path / "a.jsonl", "w") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)
    monkeypatch.setattr(render, "RESULTS", str(tmp_path))
    table = render.audit_noise_rate_table(("a.jsonl",))
    assert "| mnist5k | pca | sym | 2 | 0.300 | 0.320 | 0.040 | 1 of 2 | 0.335 | 0.150 |" in table
    assert "held the true rate in 1 of 2 calls" in table and "estimate 0.040, share 0.065, count 0.150" in table
    assert render.audit_noise_rate_table(("missing.jsonl",)) is None
