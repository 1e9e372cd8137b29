"""score_dataset at scale: rows sharded across two gloo ranks equal one process; the memory bound;
the streamed chunks never copy a float32 memory map."""
import os

import numpy as np
import pytest
import torch
import torch.distributed as dist

from fastreweight.label_issues import Execution, memory_bound_bytes, score_dataset

from dist_spawn import quiesce, spawn, spawn_within, value_error_text

SETTINGS = {"plain": {}, "whiten+refine": dict(whiten="auto", refine=1), "second+alpha": dict(shift="second", alpha=0.2)}


def _data(N=1003, d=24, C=5, M=60, seed=0):
    g = np.random.default_rng(seed)
    means = g.standard_normal((C, d)) * 2
    true = g.integers(0, C, N)
    x = (means[true] + g.standard_normal((N, d)) + 0.5).astype(np.float32)
    noisy = true.copy()
    noisy[:200] = g.integers(0, C, 200)
    ci = np.arange(0, N, N // M)[:M]
    return x, noisy, x[ci], true[ci]


def _worker(rank, world, port, out_dir):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        x, y, cx, cy = _data()
        np.save(os.path.join(out_dir, f"x{rank}.npy"), x)
        xm = np.load(os.path.join(out_dir, f"x{rank}.npy"), mmap_mode="r")  # each rank maps the file
        got = {}
        for name, kw in SETTINGS.items():
            # one process, in this very process (same thread count: same arithmetic), against the shards
            one = score_dataset(xm, y, cx, cy, chunk_rows=97, **kw)
            sharded = score_dataset(xm, y, cx, cy, execution=Execution(chunk_rows=97, process_group="world"), **kw)
            got[name] = dict(one=vars(one), sharded=vars(sharded))
        # the clean rows' out-of-sample scores (clean_rows): their pseudo-clean flags gathered over the ranks
        ci = np.arange(0, x.shape[0], x.shape[0] // 60)[:60]
        got["loo"] = {mode: vars(score_dataset(xm, y, cx, cy, whiten="auto", refine=1, clean_rows=ci, chunk_rows=97,
                                               **({"process_group": "world"} if mode == "sharded" else {})))
                      for mode in ("one", "sharded")}
        # fewer chunks than ranks: rank 0 scores nothing, and still returns every row
        small = score_dataset(x[:50], y[:50], cx, cy, whiten="auto", chunk_rows=97, process_group="world")
        got["small"] = dict(one=vars(score_dataset(x[:50], y[:50], cx, cy, whiten="auto", chunk_rows=97)),
                            sharded=vars(small))
        # a non-finite row in rank 1's shard: every rank raises the same error (none is left waiting)
        bad = x.copy()
        bad[700, 3] = np.inf
        got["error"] = value_error_text(lambda: score_dataset(bad, y, cx, cy, chunk_rows=97, process_group="world"))
        torch.save(got, os.path.join(out_dir, f"rank{rank}.pt"))
        quiesce()
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="torch.distributed with gloo is not available")
def test_two_ranks_equal_one_process(tmp_path):
    spawn(_worker, 2, str(tmp_path))
    x, y, cx, cy = _data()
    ref = {name: score_dataset(x, y, cx, cy, chunk_rows=97, **kw) for name, kw in SETTINGS.items()}
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        for name in SETTINGS:
            one, sh = got[name]["one"], got[name]["sharded"]
            assert sh["scores"].shape == (x.shape[0],)
            if name == "whiten+refine":
                # moments and class sums are added per rank, then across ranks: another float64
                # summation order than one process's, so the scores may move by rounding
                assert sh["whitening"]["strength"] == one["whitening"]["strength"]
                assert sh["refinement"] == one["refinement"]
                np.testing.assert_allclose(sh["scores"], one["scores"], rtol=1e-5, atol=1e-5)
                assert (sh["suggested"] == one["suggested"]).mean() > 0.999
            else:  # the same chunks, the same arithmetic: bit for bit
                np.testing.assert_array_equal(sh["scores"], one["scores"])
                np.testing.assert_array_equal(sh["suggested"], one["suggested"])
            np.testing.assert_array_equal(sh["labels"], y)
            # the test process's own run (its thread count may differ from the workers')
            np.testing.assert_allclose(sh["scores"], ref[name].scores, rtol=1e-5, atol=1e-5)
        loo = got["loo"]
        assert loo["one"]["clean_scores"].shape == (60,) and np.isfinite(loo["one"]["clean_scores"]).all()
        np.testing.assert_allclose(loo["sharded"]["clean_scores"], loo["one"]["clean_scores"], rtol=1e-6, atol=1e-6)
        small = got["small"]
        np.testing.assert_allclose(small["sharded"]["scores"], small["one"]["scores"], rtol=1e-5, atol=1e-5)
        assert small["sharded"]["whitening"]["strength"] == small["one"]["whitening"]["strength"]
        assert got["error"] == "features contains NaN or Inf at row 700 (the first such row); every feature must be finite"


def _mismatch_worker(rank, world, port, out_dir):
    """Each case calls score_dataset on rank 1 with other arguments than on rank 0; every rank records
    the message of the ValueError it raised (None: it returned)."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        x, y, cx, cy = _data()
        ci = np.arange(0, x.shape[0], x.shape[0] // 60)[:60]
        permuted = y.copy()  # two rows of different classes trade labels: the same label counts and sum
        j = int(np.flatnonzero(y != y[0])[0])
        permuted[0], permuted[j] = y[j], y[0]
        other = int(np.flatnonzero((y == cy[0]) & ~np.isin(np.arange(len(y)), ci))[0])
        other_cx = cx.copy()  # one clean row traded for another row of its class (the same clean labels)
        other_cx[0] = x[other]
        other_ci = ci.copy()
        other_ci[0] = other
        cases = {  # name: (rank 0's keywords, rank 1's)
            "labels": (dict(labels=y), dict(labels=permuted)),
            "clean row": (dict(), dict(clean_features=other_cx)),
            "clean_rows": (dict(clean_rows=ci, clean_features=x[ci]), dict(clean_rows=other_ci, clean_features=x[other_ci])),
            "shift": (dict(shift="max"), dict(shift="second")),
            "whiten": (dict(whiten=0.01), dict(whiten=1.0)),
            "refused on rank 1": (dict(), dict(clean_labels=np.where(cy == 0, 1, cy))),  # no clean row of class 0
            "refused on rank 0": (dict(labels=np.full_like(y, 7)), dict()),  # labels beyond num_classes=5
            "same": (dict(), dict()),
        }
        got = {}
        for name, kws in cases.items():
            kw = dict(features=x, labels=y, clean_features=cx, clean_labels=cy, num_classes=5) | kws[rank]
            got[name] = value_error_text(
                lambda: score_dataset(**kw, execution=Execution(chunk_rows=97, process_group="world")))
        torch.save(got, os.path.join(out_dir, f"rank{rank}.pt"))
        quiesce()
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="torch.distributed with gloo is not available")
def test_ranks_called_with_other_arguments_raise_on_every_rank(tmp_path):
    """Different labels of the same sum, a different clean row, different clean_rows, shift or whiten
    strength on rank 1: every rank raises the ValueError naming what differs.  Inputs refused on one rank
    only: that rank raises its own error, the other that another rank rejected its inputs.  None hangs,
    and the group is still usable afterwards."""
    spawn_within(_mismatch_worker, 2, str(tmp_path))
    got = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=False) for rank in range(2)]
    same = "every rank must call score_dataset with the same inputs and options; these differ between ranks: "
    differ = {"labels": "the labels", "clean row": "the clean features", "shift": "the similarity options",
              "whiten": "whiten", "clean_rows": "the clean features, clean_rows"}
    for rank in range(2):
        for name, what in differ.items():
            assert got[rank][name] == same + what, (rank, name)
        assert got[rank]["same"] is None
    assert "clean_labels" in got[1]["refused on rank 1"] and "another rank" not in got[1]["refused on rank 1"]
    assert got[0]["refused on rank 1"].startswith("another rank rejected its inputs to score_dataset (rank 1 of 2")
    assert "labels" in got[0]["refused on rank 0"] and "another rank" not in got[0]["refused on rank 0"]
    assert got[1]["refused on rank 0"].startswith("another rank rejected its inputs to score_dataset (rank 0 of 2")


def test_process_group_needs_an_initialised_group():
    x, y, cx, cy = _data()
    with pytest.raises(ValueError, match=r"torch.distributed is not initialised"):
        score_dataset(x, y, cx, cy, process_group="world")
    with pytest.raises(ValueError, match=r"process_group must be None, 'world'"):
        score_dataset(x, y, cx, cy, process_group="all")


def test_memory_mapped_float32_chunks_are_not_copied(tmp_path, monkeypatch):
    """A float32 memory map's chunk reaches the scorer as a view of the map (no per-chunk copy)."""
    from fastreweight.label_issues import stream

    x, y, cx, cy = _data()
    np.save(tmp_path / "x.npy", x)
    xm = np.load(tmp_path / "x.npy", mmap_mode="r")
    seen = []
    real = stream.CleanScorer.class_similarity

    def spy(self, xc, **kw):
        seen.append(xc.data_ptr())
        return real(self, xc, **kw)

    monkeypatch.setattr(stream.CleanScorer, "class_similarity", spy)
    score_dataset(xm, y, cx, cy, chunk_rows=100)
    base = xm.ctypes.data
    assert seen == [base + s * x.shape[1] * 4 for s in range(0, x.shape[0], 100)]


def test_memory_bound_covers_the_measured_growth():
    """The bound of stream.py's doc against the peak of the process's anonymous memory (sampled),
    on a problem big enough for the chunk buffers to dominate."""
    import gc
    import threading
    import time

    def anon_kib():
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("RssAnon"))

    if not os.path.exists("/proc/self/status"):
        pytest.skip("needs /proc")
    g = np.random.default_rng(0)
    N, d, C, M, chunk = 60_000, 256, 50, 500, 4096
    x = g.standard_normal((N, d), dtype=np.float32)
    y = g.integers(0, C, N)
    cx, cy = x[:M].copy(), np.arange(M) % C
    for kw in (dict(), dict(whiten="auto", refine=1)):
        gc.collect()
        base, peak, stop = anon_kib(), [0], threading.Event()

        def sample():
            while not stop.is_set():
                peak[0] = max(peak[0], anon_kib())
                time.sleep(0.001)

        t = threading.Thread(target=sample)
        t.start()
        score_dataset(x, y, cx, cy, num_classes=C, chunk_rows=chunk, **kw)
        stop.set()
        t.join()
        growth = (max(peak[0], anon_kib()) - base) * 1024
        bound = memory_bound_bytes(N, d, M, C, chunk, whiten="whiten" in kw, refine="refine" in kw)
        assert growth <= bound, (kw, growth, bound)
