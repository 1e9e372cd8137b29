"""find_label_issues: the choice of ``scorer="auto"`` and its recorded reason; the FBR scorers sharded
across two gloo ranks (``process_group``) equal one process; ``knn`` refuses a process group."""
import os

import numpy as np
import pytest
import torch
import torch.distributed as dist

from fastreweight.label_issues import find
from fastreweight.label_issues import find_label_issues

from dist_spawn import quiesce, spawn, spawn_within, value_error_text

FIELDS = ("given_label", "predicted_label", "score", "label_score", "is_label_issue")


def _data(N=611, d=13, C=4, seed=3):
    """Odd shapes, so the chunks of 89 rows split unevenly over the ranks."""
    g = np.random.default_rng(seed)
    true = g.integers(0, C, N)
    x = (g.standard_normal((C, d))[true] * 2.5 + g.standard_normal((N, d))).astype(np.float32)
    noisy = true.copy()
    flip = g.random(N) < 0.25
    noisy[flip] = g.integers(0, C, int(flip.sum()))
    ci = np.sort(np.concatenate([np.flatnonzero(true == c)[:7] for c in range(C)]))
    noisy[ci] = true[ci]
    return x, noisy, ci


def _calls(x, y, ci):
    """(name, kwargs) of the sharded calls: both FBR scorers, both forms of the clean subset, auto."""
    others = np.setdiff1d(np.arange(len(y)), ci)
    by_idx = dict(features=x, labels=y, clean_idx=ci)
    separate = dict(features=x[others], labels=y[others], clean_features=x[ci], clean_labels=y[ci])
    given = y.copy()  # an audit: three of the clean rows' given labels were wrong
    given[ci[:3]] = (y[ci[:3]] + 1) % (y.max() + 1)
    audit = dict(features=x, labels=given, clean_idx=ci, clean_labels=y[ci])
    return [("fbr idx", dict(by_idx, scorer="fbr")), ("fbr-whiten idx", dict(by_idx, scorer="fbr-whiten")),
            ("fbr-whiten separate", dict(separate, scorer="fbr-whiten")), ("auto idx", dict(by_idx, scorer="auto")),
            ("fbr audit idx", dict(audit, scorer="fbr"))]


def _worker(rank, world, port, out_dir):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        x, y, ci = _data()
        got = {}
        for name, kw in _calls(x, y, ci):
            # auto with a process group is fbr-whiten, so that is what one process is compared with
            one = find_label_issues(**(kw | {"scorer": "fbr-whiten"} if kw["scorer"] == "auto" else kw), chunk_rows=89)
            sharded = find_label_issues(**kw, chunk_rows=89, process_group="world")
            got[name] = {"one": {f: getattr(one, f) for f in FIELDS} | {"settings": one.settings},
                         "sharded": {f: getattr(sharded, f) for f in FIELDS} | {"settings": sharded.settings}}
        got["auto one process"] = find_label_issues(x, y, clean_idx=ci, chunk_rows=89).settings
        got["knn"] = value_error_text(lambda: find_label_issues(x, y, clean_idx=ci, scorer="knn", process_group="world"))
        torch.save(got, os.path.join(out_dir, f"rank{rank}.pt"))
        quiesce()
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="torch.distributed with gloo is not available")
def test_two_ranks_equal_one_process(tmp_path):
    spawn(_worker, 2, str(tmp_path))
    x, y, ci = _data()
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        for name, _ in _calls(x, y, ci):
            one, sh = got[name]["one"], got[name]["sharded"]
            assert sh["score"].shape == (y.shape[0] - (0 if "idx" in name else ci.size),)
            if name.startswith("fbr "):  # plain scoring: the same chunks, the same arithmetic, bit for bit
                for f in FIELDS:
                    np.testing.assert_array_equal(sh[f], one[f], err_msg=f"{name}: {f}")
            else:
                # whitening moments and refine's class sums are added per rank, then across ranks: the
                # scores may move by float rounding only, and no row's flag or suggestion changes here
                np.testing.assert_allclose(sh["score"], one["score"], rtol=1e-5, atol=1e-5, err_msg=name)
                for f in ("given_label", "predicted_label", "is_label_issue"):
                    np.testing.assert_array_equal(sh[f], one[f], err_msg=f"{name}: {f}")
            assert sh["settings"]["scorer"] == ("fbr" if name.startswith("fbr ") else "fbr-whiten")
            if "audit" in name:  # every rank reports the audit's share, as one process does
                assert sh["settings"]["audit"] == one["settings"]["audit"]
                assert sh["settings"]["audit"]["wrong"] == 3 and sh["settings"]["audit"]["estimate"] == "share"
        # one process's auto picks knn (small, in memory); with a process group it is fbr-whiten
        auto = got["auto idx"]
        assert got["auto one process"]["scorer"] == "knn"
        assert auto["sharded"]["settings"]["scorer"] == "fbr-whiten"
        assert "process_group" in auto["sharded"]["settings"]["scorer_reason"]
        assert got["knn"] is not None and "process_group" in got["knn"] and "one process" in got["knn"]


def test_auto_choice_and_reason(tmp_path, monkeypatch):
    x, y, ci = _data(N=97, d=5, C=3)
    r = find_label_issues(x, y, clean_idx=ci)
    assert r.settings["scorer"] == "knn" and "KNN_MAX_ROWS" in r.settings["scorer_reason"]
    # a small memory map is loaded for knn (same result as the array); a large one is streamed
    np.save(tmp_path / "x.npy", x)
    xm = np.load(tmp_path / "x.npy", mmap_mode="r")
    r_map = find_label_issues(xm, y, clean_idx=ci)
    assert r_map.settings["scorer"] == "knn" and "memory map loaded" in r_map.settings["scorer_reason"]
    np.testing.assert_array_equal(r_map.score, r.score)
    monkeypatch.setattr(find, "KNN_MAX_MAPPED_BYTES", 97 * 5 * 4 - 1)
    r = find_label_issues(xm, y, clean_idx=ci)
    assert r.settings["scorer"] == "fbr-whiten" and "memory map" in r.settings["scorer_reason"]
    monkeypatch.undo()
    # more rows than KNN_MAX_ROWS (the dataset's plus the separate clean rows): streamed
    monkeypatch.setattr(find, "KNN_MAX_ROWS", 96)
    others = np.setdiff1d(np.arange(97), ci)
    r = find_label_issues(x[others], y[others], clean_features=x[ci], clean_labels=y[ci])
    assert r.settings["scorer"] == "fbr-whiten" and f"{97} rows > KNN_MAX_ROWS = 96" in r.settings["scorer_reason"]
    # a named scorer is kept, and says so
    r = find_label_issues(x, y, clean_idx=ci, scorer="fbr")
    assert r.settings["scorer"] == "fbr" and r.settings["scorer_reason"] == "named by the caller"


def test_knn_refuses_a_process_group_before_anything_runs():
    x, y, ci = _data(N=97, d=5, C=3)
    with pytest.raises(ValueError, match=r"process_group.*one process"):
        find_label_issues(x, y, clean_idx=ci, scorer="knn", process_group="world")
    # auto with a process group goes to score_dataset, which needs an initialised group
    with pytest.raises(ValueError, match=r"torch.distributed is not initialised"):
        find_label_issues(x, y, clean_idx=ci, process_group="world")


def _mismatch_worker(rank, world, port, out_dir):
    """Each case gives rank 1 other arguments than rank 0; every rank records what it raised."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        x, y, ci = _data()
        swapped = y.copy()  # two rows (not clean) of different classes trade labels: the same label counts and sum
        free = ~np.isin(np.arange(len(y)), ci)
        i = int(np.flatnonzero(free)[0])
        j = int(np.flatnonzero(free & (y != y[i]))[0])
        swapped[i], swapped[j] = y[j], y[i]
        other_ci = ci.copy()  # one clean row traded for another row of its class
        alt = int(np.flatnonzero((y == y[ci[0]]) & ~np.isin(np.arange(len(y)), ci))[0])
        other_ci[0] = alt
        other_ci = np.sort(other_ci)
        lacking = ci[y[ci] != y[ci[0]]]  # rank 1's clean subset lacks a class: refused there before any collective
        cases = {"labels": dict(labels=swapped), "clean_idx": dict(clean_idx=other_ci),
                 "refused": dict(clean_idx=lacking)}
        got = {}
        for name, theirs in cases.items():
            kw = dict(features=x, labels=y, clean_idx=ci, scorer="fbr", chunk_rows=89, process_group="world")
            got[name] = value_error_text(lambda: find_label_issues(**(kw | theirs if rank == 1 else kw)))
        torch.save(got, os.path.join(out_dir, f"rank{rank}.pt"))
        quiesce()
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="torch.distributed with gloo is not available")
def test_ranks_given_other_arguments_raise_on_every_rank(tmp_path):
    """Labels permuted, a clean row traded for another of its class: every rank raises the ValueError
    naming what differs, none returns a result scored from inputs that differ by rank, none hangs."""
    spawn_within(_mismatch_worker, 2, str(tmp_path))
    got = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=False) for rank in range(2)]
    same = "every rank must call score_dataset with the same inputs and options; these differ between ranks: "
    for rank in range(2):
        assert got[rank]["labels"] == same + "the labels"
        assert got[rank]["clean_idx"] is not None and got[rank]["clean_idx"].startswith(same)
        assert "the clean features" in got[rank]["clean_idx"] and "clean_rows" in got[rank]["clean_idx"]
    assert got[0]["refused"].startswith("another rank rejected its arguments (rank 1 of 2")
    assert "class" in got[1]["refused"]
