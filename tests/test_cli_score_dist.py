"""``fastreweight score --distributed``: two gloo ranks launched as torchrun launches them (the
environment variables) give the CSV one process gives, and only rank 0 writes it; without a launch
the flag is refused with a message."""
import os

import numpy as np
import pytest
import torch.distributed as dist

from fastreweight import cli
from fastreweight.cli import score_command

from dist_spawn import spawn, spawn_within
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

    joined = []

    def one_rank(args):
        joined.append(args.distributed)
        return "world", 0, False

    monkeypatch.setattr(score_command, "_join_ranks", one_rank)
    assert cli.main(_argv(paths, out, "--scorer", "knn", "--distributed")) == 2
    assert joined == [True]  # the refusal came from the scoring, past the (patched) launch check
    assert "knn" in capsys.readouterr().err and not os.path.exists(out)


def _refusing_worker(rank, world, port, d):
    """``fastreweight score --distributed`` runs that are refused: on every rank (an --out in a directory
    that does not exist), on rank 1 only (an --clean-idx that repeats a row), and by score_dataset's
    comparison of the ranks' inputs (rank 1's labels permuted: the same counts, so the same sum).  Each
    rank records its exit codes and what it printed to stderr."""
    import contextlib
    import io

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    paths = _paths(d)
    theirs = dict(paths)
    if rank == 1:
        y = np.load(paths["labels"])
        ci = np.load(paths["clean_idx"])
        free = np.flatnonzero(~np.isin(np.arange(len(y)), ci))
        i, j = int(free[0]), int(free[y[free] != y[free[0]]][0])
        y[i], y[j] = y[j], y[i]
        theirs["labels"] = os.path.join(d, "labels-rank1.npy")
        np.save(theirs["labels"], y)
        theirs["clean_idx"] = os.path.join(d, "clean_idx-rank1.npy")
        np.save(theirs["clean_idx"], np.concatenate([ci, ci[:1]]))
    runs = {
        "no directory": _argv(paths, os.path.join(d, "nodir", "out.csv"), "--scorer", "fbr"),
        "clean_idx on rank 1": _argv(dict(paths, clean_idx=theirs["clean_idx"]), os.path.join(d, "a.csv"), "--scorer", "fbr"),
        "labels on rank 1": _argv(dict(paths, labels=theirs["labels"]), os.path.join(d, "b.csv"), "--shift", "second"),
    }
    got = {}
    for name, argv in runs.items():
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = cli.main(argv + ["--distributed"])
        got[name] = (code, err.getvalue())
    with open(os.path.join(d, f"refused{rank}.txt"), "w") as fh:
        fh.write(repr(got))


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="torch.distributed with gloo is not available")
def test_refused_runs_exit_2_on_every_rank(tmp_path):
    """Every rank runs the same checks of the outputs and inputs and the ranks agree on them before any
    collective: an --out in a missing directory is an error on both ranks (it hung: rank 0 checked the
    directory, rank 1 did not and waited in a collective); a rank 1 that rejects its --clean-idx reports
    its error and rank 0 that another rank rejected its inputs; labels that differ between the ranks
    are named by every rank.  Each rank exits with status 2, none hangs, nothing is written."""
    _inputs(str(tmp_path))
    spawn_within(_refusing_worker, 2, str(tmp_path))
    got = [eval((tmp_path / f"refused{rank}.txt").read_text()) for rank in range(2)]
    missing = f"fastreweight: error: --out {tmp_path / 'nodir' / 'out.csv'}: the directory {tmp_path / 'nodir'} does not exist"
    for rank in range(2):
        assert got[rank]["no directory"] == (2, missing + "\n")
        code, err = got[rank]["labels on rank 1"]
        assert code == 2 and err == ("fastreweight: error: every rank must call score_dataset with the same inputs and "
                                     "options; these differ between ranks: the labels\n")
    code, err = got[1]["clean_idx on rank 1"]
    assert code == 2 and err.startswith("fastreweight: error: --clean-idx must not repeat a row")
    code, err = got[0]["clean_idx on rank 1"]
    assert code == 2 and err.startswith("fastreweight: error: another rank rejected its inputs (rank 1 of 2")
    assert not list(tmp_path.glob("*.csv")) and not (tmp_path / "nodir").exists()
