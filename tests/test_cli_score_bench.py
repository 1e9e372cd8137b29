"""`fastreweight score` from the command line; the benchmark harness."""
import csv

import numpy as np
import pytest
import torch

from fastreweight.cli import main


@pytest.fixture
def files(tmp_path):
    g = np.random.default_rng(0)
    centers = g.standard_normal((4, 9)) * 3
    true = g.integers(0, 4, 301)
    x = (centers[true] + g.standard_normal((301, 9))).astype(np.float32)
    noisy = true.copy()
    noisy[:60] = (noisy[:60] + 1) % 4  # the first 60 rows are mislabelled
    np.save(tmp_path / "x.npy", x)
    torch.save(torch.from_numpy(noisy), tmp_path / "y.pt")
    clean = np.arange(200, 240)
    np.save(tmp_path / "clean_idx.npy", clean)
    np.save(tmp_path / "cx.npy", x[clean])
    np.save(tmp_path / "cy.npy", true[clean])
    return tmp_path


def test_score_ranks_mislabelled_first(files, capsys):
    out = files / "issues.csv"
    rc = main(["score", "--features", str(files / "x.npy"), "--labels", str(files / "y.pt"),
               "--clean-features", str(files / "cx.npy"), "--clean-labels", str(files / "cy.npy"),
               "--out", str(out), "--chunk-rows", "17", "--no-progress"])
    assert rc == 0
    rows = list(csv.DictReader(open(out)))
    top = {int(r["index"]) for r in rows[:60]}
    assert len(top & set(range(60))) >= 55  # well-separated blobs: nearly all issues ranked first
    assert "memory bound" in capsys.readouterr().out


def test_score_with_clean_idx_and_refusals(files, capsys):
    out = files / "a.csv"
    args = ["score", "--features", str(files / "x.npy"), "--labels", str(files / "y.pt"),
            "--clean-idx", str(files / "clean_idx.npy"), "--out", str(out), "--no-progress"]
    assert main(args) == 0
    before = out.read_bytes()
    assert main(args) == 2  # never overwrites
    assert out.read_bytes() == before
    assert "refusing to overwrite" in capsys.readouterr().err
    assert main(args[:5] + ["--out", str(files / "b.csv")]) == 2
    assert "the clean subset is missing" in capsys.readouterr().err


def test_benchmark_harness_prints_a_table(capsys, tmp_path):
    """The quick sweep lives with the benchmarks (benchmarks/harness.py), not in the package."""
    import importlib.util
    import pathlib
    import sys

    path = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "harness.py"
    spec = importlib.util.spec_from_file_location("fastreweight_bench_harness", path)
    harness = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = harness  # its dataclasses look their module up
    spec.loader.exec_module(harness)
    out = tmp_path / "bench.jsonl"
    assert harness.main(["--device", "cpu", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "reference" in text and "GFLOP/s" in text
    assert len(out.read_text().splitlines()) >= 6