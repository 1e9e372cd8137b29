"""``fastreweight score --distributed``: two gloo ranks launched as torchrun launches them (the
environment variables) give the CSV one process gives, and only rank 0 writes it; without a launch
the flag is refused with a message."""
import os

import numpy as np
import pytest
import torch.distributed as dist

from fastreweight import cli

from dist_spawn import spawn
from test_find_label_issues_dist import _data


def _paths(d):
    return {k: os.path.join(d, f"{k}.npy") for k in ("features", "labels", "clean_idx")}


def _inputs(d):
    """test_find_label_issues_dist's data (odd shapes: chunks of 89 split unevenly over the ranks) as
    the .npy files the command reads."""
    x, noisy, ci = _data()
    paths = _paths(d)
    for key, arr in zip(("features", "labels", "clean_idx"), (x, noisy, ci)):
        np.save(paths[key], arr)
    return paths


def _argv(paths, out, *extra):
    return ["score", "--features", paths["features"], "--labels", paths["labels"], "--clean-idx", paths["clean_idx"],
            "--chunk-rows", "89", "--no-progress", "--out", out, *extra]


RUNS = {"fbr": ["--scorer", "fbr"], "auto": []}  # auto with a process group: fbr-whiten


def _worker(rank, world, port, d):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    codes = [cli.main(_argv(_paths(d), os.path.join(d, f"{name}-sharded.csv"), *extra, "--distributed"))
             for name, extra in RUNS.items()]
    with open(os.path.join(d, f"codes{rank}.txt"), "w") as fh:
        fh.write(" ".join(map(str, codes)))


def _rows(path):
    with open(path) as fh:
        head, *rows = [line.rstrip("\n").split(",") for line in fh]
    return head, rows


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="torch.distributed with gloo is not available")
def test_two_ranks_write_the_csv_of_one_process(tmp_path):
    paths = _inputs(str(tmp_path))
    spawn(_worker, 2, str(tmp_path))
    for rank in range(2):
        assert (tmp_path / f"codes{rank}.txt").read_text() == "0 0"
    extra = {"fbr": ["--scorer", "fbr"], "auto": ["--scorer", "fbr-whiten"]}
    for name in RUNS:
        assert cli.main(_argv(paths, str(tmp_path / f"{name}-one.csv"), *extra[name])) == 0
        one, sharded = tmp_path / f"{name}-one.csv", tmp_path / f"{name}-sharded.csv"
        if name == "fbr":  # the same chunks and arithmetic: byte for byte
            assert sharded.read_bytes() == one.read_bytes()
        else:  # whitening moments summed per rank then across ranks: rounding only
            h1, r1 = _rows(one)
            h2, r2 = _rows(sharded)
            assert h1 == h2 and len(r1) == len(r2) == 611
            score = h1.index("score")
            np.testing.assert_allclose([float(r[score]) for r in r2], [float(r[score]) for r in r1], rtol=1e-5,
                                       atol=1e-5)
            for col in ("given_label", "predicted_label", "is_label_issue"):
                i = h1.index(col)
                assert [r[i] for r in r2] == [r[i] for r in r1], col
    assert sorted(p.name for p in tmp_path.glob("*.csv")) == ["auto-one.csv", "auto-sharded.csv", "fbr-one.csv",
                                                             "fbr-sharded.csv"]


def test_distributed_without_a_launch_is_refused(tmp_path, capsys, monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    paths = _inputs(str(tmp_path))
    out = str(tmp_path / "x.csv")
    assert cli.main(_argv(paths, out, "--distributed")) == 2
    assert "torchrun" in capsys.readouterr().err and not os.path.exists(out)


def test_knn_is_refused_with_distributed(tmp_path, capsys, monkeypatch):
    """knn compares every row with every row in one process: asked for under --distributed, a clear error."""
    paths = _inputs(str(tmp_path))
    out = str(tmp_path / "x.csv")

    def one_rank(args):
        return "world", 0, False

    monkeypatch.setattr(cli, "_join_ranks", one_rank)
    assert cli.main(_argv(paths, out, "--scorer", "knn", "--distributed")) == 2
    assert "knn" in capsys.readouterr().err and not os.path.exists(out)
