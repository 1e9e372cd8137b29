"""Chunks of rows read ahead of their use by a background thread (``Execution(prefetch=k)``).

A streamed pass spends each chunk's time on three things: reading it (page cache or disk, through a
memory map), moving it to the scoring device, and scoring it.  Only the last needs the device.  With
``prefetch=k`` a thread reads up to ``k`` chunks ahead of the one being scored:

* **CUDA.** The thread copies each chunk, in the dtype it is stored in, into one of two pinned host
  buffers and from there to the device on a copy stream of its own (``non_blocking``).  The scoring
  stream waits on that copy's event before it touches the chunk, and a pinned buffer is refilled only
  after its previous copy has finished.  So the host read of chunk ``i+1``, the transfer of chunk ``i``
  and the scoring of chunk ``i−1`` overlap.  A float16 file crosses the bus as float16 and is widened
  on the device.
* **CPU.** The thread copies each chunk into a float32 tensor of its own, so the page faults of a
  memory map that is not in the page cache are taken off the scoring thread.

Either way a large chunk is copied by up to 8 threads at once (``RowCopier``), one block of rows each:
one thread reading a memory map out of the page cache is far from the memory's bandwidth.

What is read is the same either way: prefetching changes when a chunk is read, never its values
(``tests/test_label_issues_prefetch.py`` checks results bit for bit against ``prefetch=0``).

Memory: ``k`` chunks waiting (on the device for CUDA, as stored; float32 on the CPU), one more being
read, and on CUDA the two pinned buffers: ``memory_bound_bytes(..., prefetch=k)`` counts
``(k + 3)·chunk_rows·d·itemsize``.

Errors raised while reading (a file that vanished, a bad slice) are raised again in the caller, at the
chunk where they happened; closing the iterator early (the caller stops at a bad row) stops the thread.
"""
from __future__ import annotations

import os
import queue
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator

import numpy as np
import torch

__all__ = ["read_ahead", "staged_bytes", "as_tensor", "RowCopier"]

_DONE = object()
_POLL_S = 0.05  # how often a blocked thread looks whether the reader was closed
_COPY_THREADS = 8  # at most this many threads copy one chunk (see RowCopier)
_SPLIT_BYTES = 4 << 20  # a chunk is split into parts of at least this many bytes


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


def staged_bytes(prefetch: int, chunk_rows: int, d: int, itemsize: int) -> int:
    """Bytes held by a reader with ``prefetch`` chunks ahead: the chunks waiting, the one being read and,
    on CUDA, two pinned buffers (the bound of the module doc; 0 without prefetching)."""
    return 0 if prefetch == 0 else (prefetch + 3) * chunk_rows * d * itemsize


def read_ahead(host_rows: Callable[[int, int], "np.ndarray | torch.Tensor"], ranges: Iterable[tuple[int, int]],
               device: torch.device, prefetch: int) -> Iterator[tuple[int, int, torch.Tensor]]:
    """``(start, stop, x)`` for each ``(start, stop)`` of ``ranges``: ``x`` the rows ``host_rows(start, stop)``
    returns (a numpy array or a CPU tensor, e.g. a memory map's rows read in place), as float32 on
    ``device``, read up to ``prefetch`` chunks ahead by a background thread (``prefetch=0``: read when
    asked, no thread).  The rows are only read, never written.  Every chunk comes contiguous (a strided
    input is copied), so its arithmetic, down to the rounding, is the same with and without read-ahead.

    Use it closed (``contextlib.closing``) or run it to the end: closing it stops the thread."""
    if prefetch == 0:
        for start, stop in ranges:
            yield start, stop, as_tensor(host_rows(start, stop)).to(device=device, dtype=torch.float32).contiguous()
        return
    copier = RowCopier(min(_COPY_THREADS, os.cpu_count() or 1))
    stage = _CudaStage(device, copier) if device.type == "cuda" else _HostStage(copier)
    waiting: queue.Queue = queue.Queue(maxsize=prefetch)
    closed = threading.Event()
    thread = threading.Thread(target=_produce, args=(host_rows, ranges, stage, waiting, closed),
                              name="fastreweight-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item = waiting.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.error
            start, stop, staged = item
            yield start, stop, stage.receive(staged)
    finally:
        closed.set()
        while thread.is_alive():  # unblock a thread waiting for room, then let it see `closed`
            try:
                waiting.get(timeout=_POLL_S)
            except queue.Empty:
                pass
        thread.join()
        copier.close()


def _produce(host_rows, ranges, stage, waiting: queue.Queue, closed: threading.Event) -> None:
    torch.set_grad_enabled(False)  # grad mode is per thread: rows that require grad are copied, not recorded
    try:
        for start, stop in ranges:
            if closed.is_set():
                return
            if not _put(waiting, (start, stop, stage.send(host_rows(start, stop))), closed):
                return
        _put(waiting, _DONE, closed)
    except BaseException as e:  # handed to the caller, which raises it where the chunk was due
        _put(waiting, _Failure(e), closed)


def _put(waiting: queue.Queue, item, closed: threading.Event) -> bool:
    while not closed.is_set():
        try:
            waiting.put(item, timeout=_POLL_S)
            return True
        except queue.Full:
            pass
    return False


def as_tensor(rows) -> torch.Tensor:
    """Rows of an array or tensor as a tensor, without a copy where possible (a memory map's rows are
    read in place; nothing downstream writes to them)."""
    if isinstance(rows, torch.Tensor):
        return rows
    if rows.dtype.isnative and rows.flags.writeable:
        return torch.from_numpy(rows)
    if not rows.dtype.isnative:  # e.g. a big-endian file: torch has no such dtypes
        return torch.from_numpy(rows.astype(rows.dtype.newbyteorder("=")))
    # a read-only memory map: torch warns that writing through the tensor would be undefined, and
    # nothing here writes.  The filter is set only in the thread that scores (catch_warnings is
    # process-wide, so the read-ahead thread never calls this).
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(rows)


def _torch_dtype(rows) -> torch.dtype:
    return rows.dtype if isinstance(rows, torch.Tensor) else torch.from_numpy(np.empty(0, rows.dtype.newbyteorder("="))).dtype


class RowCopier:
    """``copy(dst, rows)``: ``dst[:] = rows`` (a numpy array or a tensor, converted to ``dst``'s dtype),
    split by rows across up to ``workers`` threads when the chunk is large.  numpy and torch release the
    GIL while they copy, and one thread reading a memory map out of the page cache falls well short of
    the memory's bandwidth."""

    def __init__(self, workers: int):
        self.workers = max(1, workers)
        self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="fastreweight-copy") if self.workers > 1 else None

    def copy(self, dst: torch.Tensor, rows) -> None:
        n = dst.shape[0]
        if isinstance(rows, torch.Tensor):
            rows = rows.detach()

        def part(a: int, b: int) -> None:
            if isinstance(rows, torch.Tensor):
                dst[a:b].copy_(rows[a:b])
            else:
                np.copyto(dst[a:b].numpy(), rows[a:b], casting="same_kind")

        parts = min(self.workers, max(1, dst.numel() * dst.element_size() // _SPLIT_BYTES), max(n, 1))
        if self.pool is None or parts == 1:
            part(0, n)
            return
        bounds = np.linspace(0, n, parts + 1).astype(np.int64).tolist()
        for f in [self.pool.submit(part, a, b) for a, b in zip(bounds[:-1], bounds[1:])]:
            f.result()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)


class _HostStage:
    """CPU: the thread makes the float32 copy, and so takes the memory map's page faults."""

    def __init__(self, copier: RowCopier):
        self.copier = copier

    def send(self, rows) -> torch.Tensor:
        out = torch.empty(tuple(rows.shape), dtype=torch.float32)  # a copy of its own
        self.copier.copy(out, rows)
        return out

    @staticmethod
    def receive(staged: torch.Tensor) -> torch.Tensor:
        return staged


class _CudaStage:
    """CUDA: two pinned host buffers, a copy stream, and an event per copy (see the module doc)."""

    def __init__(self, device: torch.device, copier: RowCopier):
        self.copier = copier
        self.device = device if device.index is not None else torch.device("cuda", torch.cuda.current_device())
        self.copy_stream = torch.cuda.Stream(self.device)
        self.buffers: list[torch.Tensor | None] = [None, None]
        self.copied: list[torch.cuda.Event | None] = [None, None]
        self.turn = 0
        self.pinned = True

    def _buffer(self, k: int, rows) -> torch.Tensor:
        buf, dtype, shape = self.buffers[k], _torch_dtype(rows), tuple(rows.shape)
        if buf is None or buf.dtype != dtype or tuple(buf.shape[1:]) != shape[1:] or buf.shape[0] < shape[0]:
            try:
                buf = torch.empty(shape, dtype=dtype, pin_memory=self.pinned)
            except RuntimeError as e:  # no page-locked memory to be had: pageable copies, still correct
                warnings.warn(f"prefetch: pinned host memory unavailable ({e}); copying from pageable memory")
                self.pinned = False
                buf = torch.empty(shape, dtype=dtype)
            self.buffers[k] = buf
        return buf[:shape[0]]

    def send(self, rows):
        k, self.turn = self.turn, 1 - self.turn
        if self.copied[k] is not None:
            self.copied[k].synchronize()  # the buffer's last copy to the device has finished
        host = self._buffer(k, rows)
        self.copier.copy(host, rows)  # numpy writes into the pinned buffer: no tensor over a read-only map
        with torch.cuda.device(self.device), torch.cuda.stream(self.copy_stream):
            x = host.to(self.device, non_blocking=True)
            done = torch.cuda.Event()
            done.record(self.copy_stream)
        self.copied[k] = done
        return x, done

    def receive(self, staged) -> torch.Tensor:
        x, done = staged
        scoring = torch.cuda.current_stream(self.device)
        scoring.wait_event(done)
        x.record_stream(scoring)  # the allocator must not hand x's memory out before scoring is done with it
        return x.to(torch.float32)
