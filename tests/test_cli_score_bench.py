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


def _base(files, out):
    return ["score", "--features", str(files / "x.npy"), "--labels", str(files / "y.pt"),
            "--clean-features", str(files / "cx.npy"), "--clean-labels", str(files / "cy.npy"),
            "--out", str(out), "--no-progress"]


def test_score_csv_columns_summary_and_report(files, capsys):
    import re

    g = np.random.default_rng(1)
    np.save(files / "img.npy", g.random((301, 3, 4, 4)).astype(np.float32))
    out, report = files / "issues.csv", files / "report.html"
    rc = main(_base(files, out) + ["--report", str(report), "--images", str(files / "img.npy"),
                                   "--class-names", "ant,<b>bee</b>,cat,dog", "--report-samples", "25"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "rows flagged" in text and "estimated noise rate" in text and f"report: {report}" in text
    rows = list(csv.DictReader(open(out)))
    assert list(rows[0]) == ["rank", "index", "given_label", "predicted_label", "score", "label_score", "is_label_issue"]
    page = report.read_text()
    assert len(re.findall(r'src="data:image/png;base64,', page)) == 25
    assert "&lt;b&gt;bee&lt;/b&gt;" in page and "<b>bee" not in page and "http" not in page
    flagged = sum(r["is_label_issue"] == "1" for r in rows)
    assert f"{flagged} flagged rows by given label" in page
    # both outputs are checked before anything is scored: an existing report keeps the CSV from being written
    out2 = files / "again.csv"
    assert main(_base(files, out2) + ["--report", str(report)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err and not out2.exists()
    assert main(_base(files, out2) + ["--images", str(files / "img.npy")]) == 2  # --images without --report
    assert "give --report too" in capsys.readouterr().err


def test_score_options_map_onto_find_label_issues_or_score_dataset(files, capsys):
    from fastreweight.label_issues import find_label_issues, score_dataset

    x, y = np.load(files / "x.npy"), torch.load(files / "y.pt").numpy()
    cx, cy = np.load(files / "cx.npy"), np.load(files / "cy.npy")

    def flags(out):
        rows = sorted(csv.DictReader(open(out)), key=lambda r: int(r["index"]))
        return np.array([r["is_label_issue"] == "1" for r in rows]), np.array([float(r["score"]) for r in rows])

    # no option: find_label_issues' default (auto: knn for these few rows, the memory map loaded);
    # --whiten auto --refine 1: its fbr-whiten scorer
    for extra, scorer in (([], "knn"), (["--whiten", "auto", "--refine", "1"], "fbr-whiten"), (["--scorer", "knn"], "knn"),
                          (["--scorer", "fbr"], "fbr")):
        out = files / f"{scorer}-{len(extra)}.csv"
        assert main(_base(files, out) + extra) == 0
        assert f"scorer={scorer}" in capsys.readouterr().out
        want = find_label_issues(x, y, clean_features=cx, clean_labels=cy, num_classes=4, scorer=scorer)
        got, score = flags(out)
        np.testing.assert_array_equal(got, want.is_label_issue)
        np.testing.assert_allclose(score, want.score, rtol=1e-5, atol=1e-6)
    # an FBR option find_label_issues does not take: score_dataset, flagged at --threshold
    out = files / "second.csv"
    assert main(_base(files, out) + ["--shift", "second", "--threshold", "0.5"]) == 0
    assert "scorer=score_dataset" in capsys.readouterr().out
    res = score_dataset(x, y, cx, cy, num_classes=4, shift="second")
    got, score = flags(out)
    np.testing.assert_allclose(score, res.scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got, res.scores <= 0.5)
    # --threshold with a named scorer: find_label_issues' "score" rule
    out = files / "thr.csv"
    assert main(_base(files, out) + ["--threshold", "-0.25"]) == 0
    got, score = flags(out)
    np.testing.assert_array_equal(got, score <= -0.25)
    # --margin: knn's vote-lead rule
    out = files / "margin.csv"
    assert main(_base(files, out) + ["--scorer", "knn", "--margin", "0.6"]) == 0
    got, score = flags(out)
    np.testing.assert_array_equal(got, score <= -0.6)
    # contradictions are refused before anything is written
    for extra, msg in ((["--scorer", "knn", "--shift", "second"], "drop --shift"),
                       (["--flag", "fdr", "--threshold", "0"], "--threshold goes with --flag score"),
                       (["--scorer", "knn", "--flag", "fdr", "--margin", "0.3"], "--margin is the vote lead"),
                       (["--scorer", "fbr", "--margin", "0.3"], "flag='margin' needs"),
                       (["--shift", "mean", "--flag", "fdr"], "needs find_label_issues")):
        bad = files / "bad.csv"
        assert main(_base(files, bad) + extra) == 2
        assert msg in capsys.readouterr().err and not bad.exists()


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