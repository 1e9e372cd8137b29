"""Launching the multi-process (gloo) tests: ``mp.spawn`` on a free local TCP port."""
import socket

import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(worker, world: int, out_dir: str, tries: int = 3) -> None:
    """``worker(rank, world, port, out_dir)`` on ``world`` processes.  Another process can take the
    probed port before the group binds it, so an "address already in use" failure is retried on a new
    port (any other failure is raised)."""
    for attempt in range(tries):
        try:
            mp.spawn(worker, args=(world, free_port(), out_dir), nprocs=world, join=True)
            return
        except mp.ProcessRaisedException as exc:
            if "address already in use" not in str(exc).lower() or attempt == tries - 1:
                raise


def spawn_within(worker, world: int, out_dir: str, seconds: float = 120, tries: int = 3) -> None:
    """``dist_spawn.spawn`` that fails the test, killing the ranks, where they have not all finished within
    ``seconds``: a rank left waiting in a collective is reported as a hang, not waited on."""
    import time

    import pytest

    for attempt in range(tries):
        ctx = mp.start_processes(worker, args=(world, free_port(), out_dir), nprocs=world, join=False,
                                 start_method="spawn")
        deadline = time.monotonic() + seconds
        try:
            while not ctx.join(timeout=max(0.1, deadline - time.monotonic())):
                if time.monotonic() >= deadline:
                    for p in ctx.processes:
                        if p.is_alive():
                            p.kill()
                    pytest.fail(f"the {world} ranks did not finish within {seconds:g} s: a rank hangs")
            return
        except mp.ProcessRaisedException as exc:
            if "address already in use" not in str(exc).lower() or attempt == tries - 1:
                raise


def value_error_text(fn) -> str | None:
    """The message of the ``ValueError`` that ``fn()`` raises, or ``None`` when it returns: a rank's outcome,
    saved for the parent process to compare across ranks."""
    try:
        fn()
    except ValueError as exc:
        return str(exc)
    return None


def quiesce() -> None:
    """Call on every rank before ``destroy_process_group`` once the work is done: free the DDP objects
    (their reducers hold the group; reference cycles keep them until a collection) and wait until every
    rank is done, so no rank tears down connections another still uses.  A worker torn down otherwise
    aborted once in a CI run ("terminate called without an active exception")."""
    import gc

    import torch.distributed as dist

    gc.collect()
    dist.barrier()
