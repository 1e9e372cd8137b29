"""Chunks read ahead by a background thread (``Execution(prefetch=k)``, ``label_issues/prefetch.py``):
the same results bit for bit as reading each chunk when it is scored, errors raised where the chunk was
due, and no thread left behind.  The CUDA path (pinned buffers, a copy stream, events) runs on a GPU only."""
import threading
import time

import numpy as np
import pytest
import torch

from fastreweight.label_issues import Execution, memory_bound_bytes, score_dataset
from fastreweight.label_issues.prefetch import read_ahead, staged_bytes

THREAD = "fastreweight-read-ahead"
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="the CUDA read-ahead path needs a GPU")


def _threads() -> int:
    return sum(t.name == THREAD for t in threading.enumerate())


def _data(n, d=13, C=4, seed=0):
    g = np.random.default_rng(seed)
    means = g.standard_normal((C, d)) * 2
    true = g.integers(0, C, n)
    x = (means[true] + g.standard_normal((n, d)) + 0.3).astype(np.float32)
    noisy = np.where(g.random(n) < 0.3, g.integers(0, C, n), true)
    clean_y = np.tile(np.arange(C), 3)
    clean_x = (means[clean_y] + g.standard_normal((3 * C, d)) + 0.3).astype(np.float32)
    return x, noisy, clean_x, clean_y


def _same(a, b):
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(a.suggested, b.suggested)
    assert a.whitening == b.whitening and a.refinement == b.refinement


@pytest.mark.parametrize("n", [1, 2, 17, 97, 1025])
@pytest.mark.parametrize("prefetch", [1, 3])
def test_prefetch_equals_reading_in_turn(tmp_path, n, prefetch):
    x, y, cx, cy = _data(n, seed=n)
    path = tmp_path / "x.npy"
    np.save(path, x)
    mm = np.load(path, mmap_mode="r")
    for chunk in (1, 7, 4096):
        if chunk == 1 and n > 97:
            continue
        ref = score_dataset(mm, y, cx, cy, num_classes=4, chunk_rows=chunk, prefetch=0)
        got = score_dataset(mm, y, cx, cy, num_classes=4, chunk_rows=chunk, prefetch=prefetch)
        _same(got, ref)
    assert _threads() == 0


@pytest.mark.parametrize("kind", ["float16", "tensor", "strided"])
def test_prefetch_equals_reading_in_turn_other_inputs(kind):
    x, y, cx, cy = _data(1025, seed=5)
    feats = {"float16": x.astype(np.float16), "tensor": torch.from_numpy(x),
             "strided": torch.from_numpy(np.ascontiguousarray(x.T)).T}[kind]
    kw = dict(num_classes=4, chunk_rows=97, whiten="auto", refine=1)
    _same(score_dataset(feats, y, cx, cy, prefetch=2, **kw), score_dataset(feats, y, cx, cy, prefetch=0, **kw))


def test_nonfinite_row_found_with_prefetch_and_thread_stopped():
    x, y, cx, cy = _data(1025, seed=1)
    x[611, 4] = np.nan
    with pytest.raises(ValueError, match=r"features.*611"):
        score_dataset(x, y, cx, cy, num_classes=4, chunk_rows=7, prefetch=4)
    assert _threads() == 0


def test_read_error_raised_at_its_chunk_and_thread_stopped():
    seen = []

    def rows(a, b):
        if a == 30:
            raise OSError("the file went away")
        return torch.full((b - a, 3), float(a))

    got = []
    with pytest.raises(OSError, match="went away"):
        for start, stop, x in read_ahead(rows, [(s, s + 10) for s in range(0, 100, 10)], torch.device("cpu"), 2):
            got.append(start)
            seen.append(float(x[0, 0]))
    assert got == [0, 10, 20] and seen == [0.0, 10.0, 20.0]
    assert _threads() == 0


def test_closing_early_stops_the_thread_without_reading_on():
    calls = []

    def rows(a, b):
        calls.append(a)
        return torch.ones(b - a, 2)

    it = read_ahead(rows, [(s, s + 1) for s in range(10_000)], torch.device("cpu"), 3)
    start, stop, x = next(it)
    assert (start, stop) == (0, 1) and x.dtype == torch.float32
    assert _threads() == 1
    it.close()
    assert _threads() == 0
    assert len(calls) <= 1 + 3 + 1  # the chunk given, the queue's, the one the thread was reading


def test_slow_consumer_and_slow_reader_give_every_chunk_in_order():
    def rows(a, b):
        if a % 7 == 0:
            time.sleep(0.002)
        return torch.arange(a, b, dtype=torch.float64)[:, None].repeat(1, 2)

    out = []
    for start, stop, x in read_ahead(rows, [(s, min(s + 3, 200)) for s in range(0, 200, 3)], torch.device("cpu"), 2):
        if start % 5 == 0:
            time.sleep(0.002)
        assert x.dtype == torch.float32 and torch.equal(x[:, 0], torch.arange(start, stop, dtype=torch.float32))
        out.append(start)
    assert out == list(range(0, 200, 3))
    assert _threads() == 0


def test_the_thread_copies_so_the_caller_may_not_see_the_source_change():
    # the CPU stage's copy is the thread's own: a later change of the source does not reach it
    src = torch.zeros(4, 2)
    it = read_ahead(lambda a, b: src[a:b], [(0, 2), (2, 4)], torch.device("cpu"), 1)
    _, _, x = next(it)
    src.fill_(5.0)
    assert torch.equal(x, torch.zeros(2, 2))
    it.close()


@pytest.mark.parametrize("bad,err", [(-1, ValueError), (1.5, TypeError), (True, TypeError), ("2", TypeError)])
def test_prefetch_option_checked(bad, err):
    with pytest.raises(err, match="prefetch"):
        Execution(prefetch=bad)


def test_prefetch_default_follows_the_device():
    assert Execution(device="cpu").prefetch == 0
    assert Execution(device="cuda").prefetch == 2  # a device object needs no GPU to exist
    assert Execution(device="cuda", prefetch=0).prefetch == 0


def test_memory_bound_counts_the_chunks_read_ahead():
    base = memory_bound_bytes(10_000, 64, 100, 10, 512)
    assert memory_bound_bytes(10_000, 64, 100, 10, 512, prefetch=0) == base
    assert memory_bound_bytes(10_000, 64, 100, 10, 512, prefetch=2) == base + staged_bytes(2, 512, 64, 4) == base + 5 * 512 * 64 * 4
    # on an accelerator the labels have a device copy too
    assert memory_bound_bytes(10_000, 64, 100, 10, 512, device="cuda") - base == 10_000 * 8
    # a float64 file is staged as it is stored on a GPU: 8 bytes an entry
    assert (memory_bound_bytes(10_000, 64, 100, 10, 512, itemsize=8, prefetch=2)
            - memory_bound_bytes(10_000, 64, 100, 10, 512, itemsize=8)) == 5 * 512 * 64 * 8


@CUDA
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("n,chunk", [(1, 7), (2, 1), (97, 1), (1025, 7), (20_011, 4096)])
def test_cuda_prefetch_equals_reading_in_turn(tmp_path, dtype, n, chunk):
    x, y, cx, cy = _data(n, seed=n)
    path = tmp_path / "x.npy"
    np.save(path, x.astype(dtype))
    mm = np.load(path, mmap_mode="r")
    kw = dict(num_classes=4, chunk_rows=chunk, device="cuda")
    ref = score_dataset(mm, y, cx, cy, prefetch=0, **kw)
    for k in (1, 2, 8):
        _same(score_dataset(mm, y, cx, cy, prefetch=k, **kw), ref)
    if n >= 97:
        kw_w = dict(kw, whiten="auto", refine=1)
        _same(score_dataset(mm, y, cx, cy, prefetch=2, **kw_w), score_dataset(mm, y, cx, cy, prefetch=0, **kw_w))
    # against the CPU's float32 scores: the same rows reached the GPU
    cpu = score_dataset(mm, y, cx, cy, num_classes=4, chunk_rows=chunk)
    np.testing.assert_allclose(ref.scores, cpu.scores, rtol=1e-4, atol=1e-4 * float(np.abs(cpu.scores).max() + 1))
    assert _threads() == 0


@CUDA
def test_cuda_reader_under_a_busy_scoring_stream():
    # the scoring stream is kept busy, so a chunk used before its copy finished would show stale rows
    n, d = 64 * 257, 96
    src = torch.arange(n * d, dtype=torch.float32).reshape(n, d)
    big = torch.randn(4096, 4096, device="cuda")
    for start, stop, x in read_ahead(lambda a, b: src[a:b], [(s, min(n, s + 257)) for s in range(0, n, 257)],
                                     torch.device("cuda"), 2):
        big = big @ big * 1e-3  # queued ahead of the check on the scoring stream
        assert torch.equal(x.cpu(), src[start:stop])
    assert _threads() == 0


@CUDA
def test_cuda_resident_features_are_not_staged():
    x, y, cx, cy = _data(1025, seed=3)
    xt = torch.from_numpy(x).cuda()
    a = score_dataset(xt, y, cx, cy, num_classes=4, chunk_rows=97, device="cuda")
    b = score_dataset(x, y, cx, cy, num_classes=4, chunk_rows=97, device="cuda", prefetch=0)
    _same(a, b)
    assert _threads() == 0


def test_an_error_while_scoring_stops_the_thread(monkeypatch):
    import gc

    from fastreweight.label_issues import stream

    real, calls = stream.CleanScorer.class_similarity, []

    def failing(self, *a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("scoring failed")
        return real(self, *a, **k)

    monkeypatch.setattr(stream.CleanScorer, "class_similarity", failing)
    x, y, cx, cy = _data(1025, seed=2)
    with pytest.raises(RuntimeError, match="scoring failed"):
        score_dataset(x, y, cx, cy, num_classes=4, chunk_rows=7, prefetch=3)
    gc.collect()
    assert _threads() == 0


@pytest.mark.parametrize("prefetch", [0, 2])
def test_big_endian_and_read_only_files_without_warnings(tmp_path, prefetch):
    import warnings

    x, y, cx, cy = _data(1025, seed=4)
    ref = score_dataset(x, y, cx, cy, num_classes=4, chunk_rows=97)
    for name, arr in (("native", x), ("big", x.astype(">f4"))):
        np.save(tmp_path / f"{name}.npy", arr)
        mm = np.load(tmp_path / f"{name}.npy", mmap_mode="r")
        assert not mm.flags.writeable
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a warning here, or in the read-ahead thread, fails the call
            got = score_dataset(mm, y, cx, cy, num_classes=4, chunk_rows=97, prefetch=prefetch)
        _same(got, ref)


def test_rows_that_require_grad_are_read_ahead_as_plain_values():
    x, y, cx, cy = _data(300, seed=6)
    xt = torch.from_numpy(x).requires_grad_()
    seen = []
    for _, _, chunk in read_ahead(lambda a, b: xt[a:b], [(0, 100), (100, 300)], torch.device("cpu"), 2):
        seen.append(chunk.requires_grad)
    assert seen == [False, False]


@pytest.mark.parametrize("kind", ["float32", "float16", "big-endian", "tensor", "tensor-float64"])
def test_row_copier_splits_large_chunks_exactly(kind):
    from fastreweight.label_issues.prefetch import RowCopier

    g = np.random.default_rng(7)
    src = g.standard_normal((3001, 1024))  # 24 MB as float64: split into parts of >= 4 MB
    rows = {"float32": src.astype(np.float32), "float16": src.astype(np.float16), "big-endian": src.astype(">f4"),
            "tensor": torch.from_numpy(src.astype(np.float32)), "tensor-float64": torch.from_numpy(src)}[kind]
    copier = RowCopier(4)
    dst = torch.full((3001, 1024), float("nan"), dtype=torch.float32)  # poisoned
    copier.copy(dst, rows)
    want = torch.as_tensor(np.asarray(rows, dtype=np.float32)) if not isinstance(rows, torch.Tensor) else rows.float()
    assert torch.equal(dst, want)
    copier.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("fastreweight-copy")]


def test_prefetch_with_chunks_split_across_threads_equals_reading_in_turn(tmp_path):
    x, y, cx, cy = _data(60_001, d=96, seed=8)  # chunks of 30000 × 96 float32: 11 MB, copied in parts
    np.save(tmp_path / "x.npy", x)
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    kw = dict(num_classes=4, chunk_rows=30_000)
    _same(score_dataset(mm, y, cx, cy, prefetch=2, **kw), score_dataset(mm, y, cx, cy, prefetch=0, **kw))
    assert _threads() == 0 and not [t for t in threading.enumerate() if t.name.startswith("fastreweight-copy")]
