"""benchmarks/bench_score.py: its --scale run writes sound records (the chunk-size and read-ahead sweep of
a GPU session, run here on the CPU) and the GPU table renders them."""
import importlib.util
import json
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    return _load("fastreweight_bench_score", ROOT / "benchmarks" / "bench_score.py")


def test_scale_sweep_writes_one_record_per_run_and_renders(bench, tmp_path, monkeypatch, capsys):
    out = tmp_path / "score_scale_gpu.jsonl"
    bench.main(["--rows", "3001", "--dim", "16", "--classes", "5", "--clean", "50", "--chunk", "512", "--scale",
                "--chunks", "512,97", "--prefetch", "default,2", "--tmpdir", str(tmp_path), "--out", str(out)])
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["setting"], r["chunk_rows"], r["prefetch"]) for r in recs] == [
        (s, c, p) for s in ("plain", "whiten") for c in (512, 97) for p in (0, 2)]
    for r in recs:
        assert r["inputs"] == "mapped" and r["device"] == "cpu" and r["n"] == 3001
        assert r["within_bound"] and r["seconds"] > 0 and 0 < r["pct_of_gemm"]
        assert r["read_seconds"] > 0 and 0.5 < r["auroc"] <= 1.0
        assert r["gemm_flops"]["score"] == 2 * 3001 * 16 * 5
    # the same features whatever the chunk and read-ahead: the same AUROC
    assert len({round(r["auroc"], 6) for r in recs if r["setting"] == "plain"}) == 1
    monkeypatch.setattr(bench, "RESULTS", str(tmp_path))
    render = _load("fastreweight_render_for_scale", ROOT / "benchmarks" / "render.py")
    monkeypatch.setattr(render, "RESULTS", str(tmp_path))
    table = render.score_scale_gpu_table()
    assert table.count("| plain | mapped |") == 4 and table.count("| whiten | mapped |") == 4
    assert "| 97 | 2 |" in table


def test_resident_inputs_need_an_accelerator(bench, tmp_path):
    with pytest.raises(SystemExit, match="resident"):
        bench.main(["--rows", "100", "--dim", "4", "--scale", "--inputs", "resident", "--out", str(tmp_path / "o")])


def test_backends_sweep_records_the_backend_asked_for_and_run(bench, tmp_path):
    out = tmp_path / "s.jsonl"
    bench.main(["--rows", "2000", "--dim", "8", "--classes", "4", "--clean", "40", "--chunk", "256", "--scale",
                "--settings", "plain", "--backends", "auto,reference", "--tmpdir", str(tmp_path), "--out", str(out)])
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["backend_requested"] for r in recs] == ["auto", "reference"]
    assert recs[1]["plan"]["backend"] == "reference"
    assert recs[0]["auroc"] == pytest.approx(recs[1]["auroc"], abs=1e-4)


def test_bench_knn_records_the_scorer_auto_ran_and_renders(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    knn = _load("fastreweight_bench_knn", ROOT / "benchmarks" / "bench_knn.py")
    out = tmp_path / "knn_scale_cpu.jsonl"
    for nuisance in ("0", "6"):
        knn.main(["--rows", "3000", "--dim", "64", "--classes", "10", "--nuisance", nuisance, "--tmpdir", str(tmp_path),
                  "--out", str(out)])
    clusters, nuisance = [json.loads(line) for line in out.read_text().splitlines()]
    assert clusters["scorer"] == "knn" and clusters["within_bound"] and clusters["auroc"] > 0.95
    assert nuisance["scorer"] == "fbr-whiten" and nuisance["settings"]["knn_probe_auroc"] < 0.8
    render = _load("fastreweight_render_for_knn", ROOT / "benchmarks" / "render.py")
    monkeypatch.setattr(render, "RESULTS", str(tmp_path))
    table = render.knn_scale_table()
    assert "| 3000 | 64 | 10 | 0 | knn |" in table and "| 3000 | 64 | 10 | 6 | fbr-whiten |" in table


def test_probe_cells_table_spans_the_seeds_and_counts_the_switches(tmp_path, monkeypatch):
    rows = [dict(dataset="digits", seed=s, features="pca", noise="sym", probe_knn=pk, probe_fbr_whiten=0.95,
                 **{"auroc_knn": 0.99, "auroc_fbr-whiten": 0.97}, auto_scorer=a, env={"commit": "abc", "date": "2026-12-07"})
            for s, pk, a in ((0, 0.99, "knn"), (1, 0.62, "fbr-whiten"))]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    render = _load("fastreweight_render_for_probe", ROOT / "benchmarks" / "render.py")
    monkeypatch.setattr(render, "RESULTS", str(tmp_path))
    table = render.probe_cells_table("p.jsonl")
    assert "| digits | sym | 0.620–0.990 | 0.950 | 0.9900 | 0.9700 | fbr-whiten, knn |" in table
    assert "0.620 at the lowest over 2 runs; `auto` gave up knn in 1 of them." in table
