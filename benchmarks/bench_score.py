"""Cost of ``fastreweight score`` on this machine: plain, ``whiten="auto"`` and ``whiten="auto", refine=1``.

    python benchmarks/bench_score.py [--rows 100000] [--dim 512] [--classes 100] [--clean 2000] [--chunk 8192]
    python benchmarks/bench_score.py --scale --rows 10000000 --dim 512 --classes 100 --clean 2000

The features are a synthetic Gaussian mixture written a block at a time to a memory-mapped ``.npy``
file in a temporary directory (never the whole array in memory; deleted afterwards): class means with
a few shared high-variance directions added to every row (the structure whitening is for), 30% of the
labels resampled.  Each setting is timed end to end through ``score_dataset`` (reading the memory map
included), best of ``--repeat`` runs, with the AUROC of flagging the resampled labels and
``memory_bound_bytes`` for the setting.  Every record also holds, measured in the same process:

* ``gemm``: the fp32 ``torch.mm`` rates (GFLOP/s, median of 20) of the pass's two GEMM shapes,
  ``chunk×d @ d×C`` (the scoring) and ``d×chunk @ chunk×d`` (the covariance), taken before and after
  the setting; ``gemm_flops`` the GEMM work of the setting (``2·N·d·C`` a scoring pass, ``2·N·d²`` the
  covariance pass); ``gflops`` that over the seconds; ``pct_of_gemm`` the time those GEMMs alone take
  at the measured rates over the seconds taken;
* ``rss``: the growth of the process's anonymous resident memory (``RssAnon`` of /proc/self/status,
  sampled every 2 ms by a thread: the memory the process allocates, beyond the page cache) at its
  peak over the baseline taken just before the call, next to ``memory_bound_mib``; also the peak of
  the memory-mapped input pages the process had resident (``RssFile``: page cache, reclaimable) and
  the kernel's ``VmHWM`` (both kinds; reset before each setting through /proc/self/clear_refs);
* ``read_seconds`` (``--scale``): one pass that only reads every chunk of the file and reduces it
  (``aminmax``), the floor the disk and the page cache set for a streamed pass.

Default: appends to ``benchmarks/results/score_cpu.jsonl``.  ``--scale``: the settings plain and
whiten, one run each, the file under ``--tmpdir`` (default /tmp), results to
``benchmarks/results/score_scale_cpu.jsonl``.  ``--scale`` records also hold ``rows_per_s``, the
``plan`` the scoring ran (strategy, backend: the scoring GEMM is ``2·N·C·d`` FLOPs for the prototype
strategy, ``2·N·M·d`` for pairwise, and that is what ``gemm_flops`` counts), the best-of-20 GEMM rate
and ``pct_of_gemm_best`` against it, ``ru_maxrss_mib`` (the kernel's lifetime peak RSS, which counts
resident pages of the memory map too), ``within_bound`` (the anonymous-memory growth against
``memory_bound_mib``) and the load average before and after (the machine is shared).  A warm-up
call on the first chunk comes first, so the C++ extension's one-time load is not timed.

``--file PATH`` keeps the features at PATH (generated there if missing, with ``PATH.true.npy`` and
``PATH.noisy.npy``; never deleted), so a second invocation can reuse it; ``--save-scores F.npz``
stores the plain setting's scores and suggestions; under ``torchrun --nproc_per_node R
benchmarks/bench_score.py --scale --dist --file PATH --compare F.npz`` every rank scores its shard
(gloo, ``process_group="world"``), rank 0 writes the record (``ranks``; GEMM rates summed over the
ranks, measured concurrently) and compares the gathered result with the single-process one.

On a GPU (``--device cuda``; ``benchmarks/gpu_scale.sh``): the features are drawn on the GPU
(``make_features_on``), ``--chunks`` and ``--prefetch`` sweep the chunk size and ``Execution.prefetch``
(comma-separated; ``default`` is the device's), and ``--inputs mapped,resident`` also scores the rows
loaded into device memory first.  GEMMs are timed by CUDA events; each record adds the device's peak
allocation growth, the host-to-device copy rates (``copy``) and a read-only pass through the scoring's
own reader (``read_seconds``).  Results go to ``score_scale_gpu.jsonl``.
"""
from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import sys
import tempfile
import threading
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from harness import environment  # noqa: E402
from fastreweight.label_issues import load_array, memory_bound_bytes, score_dataset  # noqa: E402
from fastreweight.label_issues.prefetch import as_tensor  # noqa: E402

SETTINGS = {"plain": {}, "whiten": {"whiten": "auto"}, "whiten+refine": {"whiten": "auto", "refine": 1}}
RESULTS = os.path.join(os.path.dirname(__file__), "results")


def make_features(path: str, n: int, d: int, classes: int, seed: int, nuisance: float = 6.0) -> tuple[np.ndarray, np.ndarray]:
    """Write n rows to ``path`` a block at a time; returns (true labels, noisy labels).  ``nuisance``
    scales the 8 shared directions (0: class clusters alone)."""
    g = np.random.default_rng(seed)
    means = g.standard_normal((classes, d)).astype(np.float32)
    shared = g.standard_normal((8, d)).astype(np.float32) * nuisance  # shared nuisance directions
    y = g.integers(0, classes, n)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d))
    for s in range(0, n, 65536):
        e = min(n, s + 65536)
        rows = means[y[s:e]] + g.standard_normal((e - s, d)).astype(np.float32) * 2.0
        rows += g.standard_normal((e - s, 8)).astype(np.float32) @ shared
        out[s:e] = rows
        if (s // 65536) % 16 == 15:
            out.flush()  # keep the dirty pages written out as we go
    out.flush()
    del out
    noisy = y.copy()
    flip = g.random(n) < 0.3
    noisy[flip] = g.integers(0, classes, int(flip.sum()))
    return y, noisy


def make_features_on(device: torch.device, path: str, n: int, d: int, classes: int, seed: int):
    """``make_features``' mixture drawn on ``device`` (a GPU draws 10^7 × 512 rows in seconds, where numpy
    takes minutes) and written to ``path``; the dirty pages are left to the kernel to write back (no
    flush), so the file is then read from the page cache.  Returns (true labels, noisy labels)."""
    g = torch.Generator(device=device).manual_seed(seed)
    means = torch.randn(classes, d, generator=g, device=device)
    shared = torch.randn(8, d, generator=g, device=device) * 6.0
    y = torch.randint(0, classes, (n,), generator=g, device=device)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d))
    block = 1 << 17
    for s in range(0, n, block):
        e = min(n, s + block)
        rows = means[y[s:e]] + torch.randn(e - s, d, generator=g, device=device) * 2.0
        rows += torch.randn(e - s, 8, generator=g, device=device) @ shared
        out[s:e] = rows.cpu().numpy()
    del out
    noisy = y.clone()
    flip = torch.rand(n, generator=g, device=device) < 0.3
    noisy[flip] = torch.randint(0, classes, (int(flip.sum()),), generator=g, device=device)
    return y.cpu().numpy(), noisy.cpu().numpy()


def _status_kib() -> dict:
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, val = line.partition(":")
            if key in ("RssAnon", "RssFile", "RssShmem", "VmHWM", "VmRSS"):
                out[key] = int(val.split()[0])
    return out


class RssSampler:
    """Peak ``RssAnon`` / ``RssFile`` of this process while a block runs (a thread, every ``period`` s)."""

    def __init__(self, period: float = 0.002):
        self.period = period

    def __enter__(self):
        gc.collect()
        try:  # reset the kernel's peak (VmHWM) to the current RSS
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
        except OSError:
            pass
        self.base = _status_kib()
        self.peak = dict(self.base)
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            s = _status_kib()
            for k in ("RssAnon", "RssFile"):
                self.peak[k] = max(self.peak[k], s[k])
            time.sleep(self.period)

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        end = _status_kib()
        for k in ("RssAnon", "RssFile"):
            self.peak[k] = max(self.peak[k], end[k])
        self.summary = {"anon_base_mib": self.base["RssAnon"] / 1024,
                        "shmem_growth_mib": (end.get("RssShmem", 0) - self.base.get("RssShmem", 0)) / 1024,
                        "anon_peak_growth_mib": (self.peak["RssAnon"] - self.base["RssAnon"]) / 1024,
                        "file_peak_mib": self.peak["RssFile"] / 1024, "vmhwm_mib": end["VmHWM"] / 1024,
                        "vmhwm_growth_mib": (end["VmHWM"] - self.base["VmRSS"]) / 1024}
        return False


def gemm_rates(d: int, classes: int, chunk: int, reps: int = 20, device=torch.device("cpu")) -> dict:
    """fp32 GFLOP/s (median of ``reps``) of the two GEMM shapes of a streamed pass (on a GPU each GEMM is
    timed by CUDA events, with torch's default fp32 matmul precision, as the scoring runs)."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(chunk, d, generator=g).to(device)
    b = torch.randn(d, classes, generator=g).to(device)
    out = {}
    for name, f, flops in (("score", lambda: torch.mm(a, b), 2 * chunk * d * classes),
                           ("gram", lambda: torch.mm(a.T, a), 2 * chunk * d * d)):
        ts = _timings(f, reps, device)
        out[name] = flops / float(np.median(ts)) / 1e9
        out[name + "_best"] = flops / float(min(ts)) / 1e9
    return out


def _timings(f, reps: int, device: torch.device) -> list[float]:
    """Seconds of each of ``reps`` calls of ``f`` after a warm-up (CUDA events on a GPU)."""
    f()
    if device.type != "cuda":
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            f()
            ts.append(time.perf_counter() - t0)
        return ts
    torch.cuda.synchronize(device)
    ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
    for a, b in ev:
        a.record()
        f()
        b.record()
    torch.cuda.synchronize(device)
    return [a.elapsed_time(b) / 1e3 for a, b in ev]


def copy_rates(device: torch.device, mib: int = 1024) -> dict:
    """Host-to-device GiB/s (best of 5) from pinned and from pageable memory: the bus's ceiling for a
    streamed pass on a GPU."""
    out = {}
    for kind in ("pinned", "pageable"):
        host = torch.empty(mib << 18, dtype=torch.float32, pin_memory=kind == "pinned").fill_(1.0)
        dev = torch.empty_like(host, device=device)
        ts = _timings(lambda: dev.copy_(host, non_blocking=True), 5, device)
        out[kind + "_gib_per_s"] = mib / 1024 / min(ts)
        del host, dev
    return out


def read_pass(feats, chunk: int, device=torch.device("cpu"), prefetch: int = 0) -> float:
    """Seconds to read every chunk of ``feats`` once and reduce it (no scoring).  On a GPU each chunk is
    moved to the device by the scoring's own reader (``prefetch.read_ahead``), so this is the floor the
    page cache, the bus and the reader set for a streamed pass."""
    from fastreweight.label_issues.prefetch import read_ahead

    t0 = time.perf_counter()
    if device.type == "cpu":
        for s in range(0, feats.shape[0], chunk):
            torch.aminmax(as_tensor(feats[s:s + chunk]))
    else:
        ranges = [(s, min(feats.shape[0], s + chunk)) for s in range(0, feats.shape[0], chunk)]
        for _, _, x in read_ahead(lambda a, b: feats[a:b], ranges, device, prefetch):
            torch.aminmax(x)
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def gemm_work(n: int, d: int, classes: int, kw: dict, strategy: str = "prototype", clean: int = 0) -> dict:
    """GEMM FLOPs of a setting, by shape: one scoring pass (+ one per refine round), the covariance pass.
    The scoring GEMM is ``chunk×d @ d×C`` for the prototype strategy and ``chunk×d @ d×M`` for pairwise
    (whitening folds the map into the C class means: M = C then)."""
    m = classes if (strategy == "prototype" or "whiten" in kw) else clean
    return {"score": 2 * n * d * m * (1 + kw.get("refine", 0)), "gram": 2 * n * d * d if "whiten" in kw else 0}


def _ranks_sum(rates: dict, world: int) -> dict:
    """Each rate summed over the ranks of a ``--dist`` run (the ranks measured at the same time)."""
    if world == 1:
        return rates
    import torch.distributed as dist

    t = torch.tensor([rates[k] for k in sorted(rates)], dtype=torch.float64)
    dist.all_reduce(t)
    return dict(zip(sorted(rates), t.tolist()))


def run_setting(name, kw, feats, noisy, cx, cy, wrong, args, env, *, chunk=None, prefetch=None,
                inputs="mapped", backend="auto") -> tuple[dict, object]:
    """One setting timed end to end (best of ``args.repeat``) with its GEMM rates, memory and AUROC.
    ``inputs``: ``"mapped"`` (``feats`` a memory map, read as the scoring streams it) or ``"resident"``
    (``feats`` already in device memory)."""
    import resource

    from sklearn.metrics import roc_auc_score

    from fastreweight import plan
    from fastreweight.label_issues import Execution

    chunk = chunk or args.chunk
    device = torch.device(args.device)
    world = getattr(args, "world", 1)
    exe = Execution(device=device, chunk_rows=chunk, prefetch=prefetch, backend=backend,
                    process_group="world" if world > 1 else None)
    load_before = list(os.getloadavg())  # the cores are shared: the load next to every measurement
    before = _ranks_sum(gemm_rates(args.d, args.classes, chunk, device=device), world)
    times, rss, dev_growth = [], None, None
    for _ in range(args.repeat):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            dev_base = torch.cuda.memory_allocated(device)
        with RssSampler() as sampler:
            t0 = time.perf_counter()
            res = score_dataset(feats, noisy, cx, cy, num_classes=args.classes, execution=exe, **kw)
            times.append(time.perf_counter() - t0)
        if rss is None or times[-1] == min(times):
            rss = sampler.summary
            if device.type == "cuda":
                dev_growth = (torch.cuda.max_memory_allocated(device) - dev_base) / 2**20
    last = plan.last()
    after = _ranks_sum(gemm_rates(args.d, args.classes, chunk, device=device), world)
    strategy = last.strategy if last is not None else "prototype"
    work = gemm_work(args.n, args.d, args.classes, kw, strategy, args.clean)
    rate = {k: float(np.median([before[k], after[k]])) for k in before}
    best = {k: max(before[k + "_best"], after[k + "_best"]) for k in ("score", "gram")}
    secs = min(times)
    if world > 1:  # the slowest rank's time is the run's
        import torch.distributed as dist

        t = torch.tensor([secs], dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        secs = float(t)
    gemm_only = sum(work[k] / (rate[k] * 1e9) for k in work)
    gemm_best = sum(work[k] / (best[k] * 1e9) for k in work)
    staged = exe.prefetch if inputs == "mapped" else 0
    bound = memory_bound_bytes(args.n, args.d, args.clean, args.classes, chunk, whiten="whiten" in kw,
                               refine=bool(kw.get("refine")), ranks=world, prefetch=staged, device=device)
    # host and device together against the bound (the pinned buffers of a GPU run are host memory)
    measured = rss["anon_peak_growth_mib"] + max(0.0, rss.get("shmem_growth_mib", 0.0)) + (dev_growth or 0.0)
    rec = dict(setting=name, inputs=inputs, device=str(device), backend_requested=backend, n=args.n, d=args.d, classes=args.classes,
               clean=args.clean, chunk_rows=chunk, prefetch=staged, ranks=world, seconds=secs, seconds_all=times,
               rows_per_s=args.n / secs, auroc=float(roc_auc_score(wrong, -res.scores)),
               plan=None if last is None else {"strategy": last.strategy, "backend": last.backend},
               memory_bound_mib=bound / 2**20, rss=rss, device_peak_growth_mib=dev_growth,
               within_bound=bool(measured <= bound / 2**20),
               ru_maxrss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
               gemm={"before": before, "after": after, "used": rate, "best": best},
               gemm_flops=work, gflops=sum(work.values()) / secs / 1e9, pct_of_gemm=100.0 * gemm_only / secs,
               pct_of_gemm_best=100.0 * gemm_best / secs,
               whitening=res.whitening, refinement=res.refinement, threads=torch.get_num_threads(),
               loadavg_before=load_before, loadavg=list(os.getloadavg()), cpus=os.cpu_count(), env=env)
    return rec, res


def _sidecars(path: str) -> dict:
    stem = os.path.splitext(path)[0]
    return {k: f"{stem}.{k}.npy" for k in ("true", "noisy")} | {"seconds": f"{stem}.gen_seconds.txt"}


def _features(path: str, args) -> tuple[np.ndarray, np.ndarray, float | None]:
    """(true labels, noisy labels, generation seconds) of the features at ``path``, generating them there
    first unless they exist (``--file``: kept for the next invocation, e.g. the torchrun one)."""
    side = _sidecars(path)
    if not os.path.exists(path):
        t0 = time.perf_counter()
        if args.device.startswith("cuda"):
            y_true, noisy = make_features_on(torch.device(args.device), path, args.n, args.d, args.classes, args.seed)
        else:
            y_true, noisy = make_features(path, args.n, args.d, args.classes, args.seed)
        np.save(side["true"], y_true)
        np.save(side["noisy"], noisy)
        with open(side["seconds"], "w") as fh:
            fh.write(f"{time.perf_counter() - t0}\n")
    gen = None
    if os.path.exists(side["seconds"]):
        with open(side["seconds"]) as fh:
            gen = float(fh.read())
    return np.load(side["true"]), np.load(side["noisy"]), gen


def _vs_cpu(res, feats, noisy, cx, cy, classes: int, rows: int = 65536) -> dict:
    """A GPU run's plain scores of the first ``rows`` rows against the CPU's (a plain score depends on
    its own row and the clean subset only): the largest difference, relative to the largest score, and
    the suggestions that differ."""
    ref = score_dataset(feats[:rows], noisy[:rows], cx, cy, num_classes=classes)
    got = res.scores[:rows]
    return {"rows": int(min(rows, len(got))), "max_abs_diff": float(np.max(np.abs(got - ref.scores))),
            "max_abs_score": float(np.max(np.abs(ref.scores))),
            "suggested_differ": int((res.suggested[:rows] != ref.suggested).sum())}


def _compare(res, path: str) -> dict:
    """The gathered result against one process's, saved by ``--save-scores``."""
    ref = np.load(path)
    same = bool(np.array_equal(res.scores, ref["scores"]) and np.array_equal(res.suggested, ref["suggested"]))
    return {"identical": same, "max_abs_diff": float(np.max(np.abs(res.scores - ref["scores"]))),
            "suggested_differ": int((res.suggested != ref["suggested"]).sum()), "against": os.path.basename(path)}


def _ints(text: str | None, default):
    return [default] if text is None else [None if v == "default" else int(v) for v in text.split(",")]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", "--n", dest="n", type=int, default=100_000)
    ap.add_argument("--dim", "--d", dest="d", type=int, default=512)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--clean", type=int, default=2000)
    ap.add_argument("--chunk", type=int, default=8192)
    ap.add_argument("--chunks", default=None, help="comma-separated chunk sizes to run each setting with (default: --chunk)")
    ap.add_argument("--prefetch", default=None,
                    help="comma-separated Execution.prefetch values for the mapped input ('default': the device's)")
    ap.add_argument("--inputs", default="mapped", help="mapped, resident or both (comma-separated): the features read "
                    "from the memory-mapped file, or first loaded into the device's memory")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--backends", default="auto", help="comma-separated Execution.backend values to run each setting with")
    ap.add_argument("--repeat", type=int, default=None, help="runs per setting (default 2; 1 with --scale)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--scale", action="store_true", help="plain and whiten once each, to score_scale_cpu.jsonl")
    ap.add_argument("--settings", default=None, help="comma-separated subset of " + ", ".join(SETTINGS))
    ap.add_argument("--tmpdir", default=None, help="where the features file goes (default: the system's, /tmp)")
    ap.add_argument("--file", default=None, help="keep the features at this .npy path (generated if missing)")
    ap.add_argument("--save-scores", default=None, help="store the plain setting's result here (.npz)")
    ap.add_argument("--compare", default=None, help="compare the plain setting's result with this .npz")
    ap.add_argument("--dist", action="store_true", help="under torchrun: shard the rows over the ranks (gloo)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    args.world, rank = 1, 0
    if args.dist:
        import torch.distributed as dist

        dist.init_process_group("gloo")
        args.world, rank = dist.get_world_size(), dist.get_rank()
    settings = (args.settings.split(",") if args.settings else ["plain", "whiten"] if args.scale else list(SETTINGS))
    chunks, prefetches = _ints(args.chunks, args.chunk), _ints(args.prefetch, None)
    inputs, backends = args.inputs.split(","), args.backends.split(",")
    if not set(inputs) <= {"mapped", "resident"} or (device.type == "cpu" and "resident" in inputs):
        raise SystemExit(f"--inputs takes mapped and resident (resident on an accelerator only), got {args.inputs!r}")
    args.repeat = args.repeat or (1 if args.scale else 2)
    where = "cpu" if device.type == "cpu" else "gpu"
    out = args.out or os.path.join(RESULTS, f"score_scale_{where}.jsonl" if args.scale else f"score_{where}.jsonl")

    env = environment(device)
    with tempfile.TemporaryDirectory(dir=args.tmpdir) as tmp:
        path = args.file or os.path.join(tmp, "features.npy")
        if args.dist and not os.path.exists(path):
            raise SystemExit("--dist needs an existing --file (generate it with one process first)")
        y_true, noisy, gen = _features(path, args)
        if rank == 0:
            print(f"{args.n} x {args.d} float32 rows ({os.path.getsize(path) / 2**30:.1f} GiB), generated in {gen} s",
                  flush=True)
        feats = load_array(path, "features")
        if feats.shape != (args.n, args.d):
            raise SystemExit(f"{path} holds {feats.shape}, not --rows {args.n} x --dim {args.d}")
        g = np.random.default_rng(args.seed + 1)
        clean_idx = np.sort(g.choice(args.n, args.clean, replace=False))
        cx, cy = np.asarray(feats[clean_idx]), y_true[clean_idx]
        wrong = noisy != y_true
        del y_true
        # warm-up on one chunk: the first call loads the C++ extension (a minute on a loaded machine)
        score_dataset(feats[:args.chunk], noisy[:args.chunk], cx, cy, num_classes=args.classes, chunk_rows=args.chunk,
                      device=device)
        extra = dict(generate_seconds=gen, file_gib=os.path.getsize(path) / 2**30) if args.scale else {}
        if args.scale and device.type == "cuda":
            extra["copy"] = copy_rates(device)
            print(f"host to device: {extra['copy']}", flush=True)
        reads = {}
        for chunk in chunks:
            if not args.scale or "mapped" not in inputs:
                continue
            if args.dist:  # each rank reads its own shard, at the same time; the slowest rank's time
                from fastreweight.label_issues.shard import Shard

                sh = Shard(args.n, chunk, dist.group.WORLD)
                secs = read_pass(feats[sh.lo:sh.hi], chunk)
                t = torch.tensor([secs], dtype=torch.float64)
                dist.all_reduce(t, op=dist.ReduceOp.MAX)
                reads[chunk] = float(t)
            else:
                from fastreweight.label_issues import Execution

                reads[chunk] = read_pass(feats, chunk, device, Execution(device=device).prefetch)
            if rank == 0:
                print(f"read pass, chunks of {chunk}: {reads[chunk]:.2f} s", flush=True)
        resident, load_secs = None, None
        for kind in inputs:
            if kind == "resident":  # loaded only now: the mapped runs before it do not wait for it
                t0 = time.perf_counter()
                resident = as_tensor(feats).to(device)
                torch.cuda.synchronize(device)
                load_secs = time.perf_counter() - t0
                print(f"loaded into {device} memory in {load_secs:.1f} s", flush=True)
            for name in settings:
                for chunk in chunks:
                    for prefetch, backend in itertools.product(prefetches if kind == "mapped" else [0], backends):
                        x_in = feats if kind == "mapped" else resident
                        rec, res = run_setting(name, SETTINGS[name], x_in, noisy, cx, cy, wrong, args, env,
                                               chunk=chunk, prefetch=prefetch, inputs=kind, backend=backend)
                        rec.update(extra)
                        if chunk in reads:
                            rec.update(read_seconds=reads[chunk], read_gib_per_s=os.path.getsize(path) / 2**30 / reads[chunk])
                        if kind == "resident":
                            rec["load_seconds"] = load_secs
                        if name == "plain" and device.type != "cpu":
                            rec["vs_cpu"] = _vs_cpu(res, feats, noisy, cx, cy, args.classes)
                        if name == "plain" and args.compare:
                            rec["vs_one_process"] = _compare(res, args.compare)
                        if name == "plain" and args.save_scores and rank == 0:
                            np.savez(args.save_scores, scores=res.scores, suggested=res.suggested)
                        if rank == 0:
                            with open(out, "a") as fh:
                                fh.write(json.dumps(rec) + "\n")
                            _print(rec)
        del feats, resident
    if args.dist:
        dist.barrier()
        dist.destroy_process_group()


def _print(rec: dict) -> None:
    print(f"{rec['setting']:>14} {rec['inputs']:>8} chunk {rec['chunk_rows']:>6} prefetch {rec['prefetch']} "
          f"backend {rec['backend_requested']}: "
          f"{rec['seconds']:.2f} s  {rec['rows_per_s']:.0f} rows/s  AUROC {rec['auroc']:.4f}  "
          f"{rec['gflops']:.1f} GFLOP/s = {rec['pct_of_gemm']:.0f}% of GEMM ({rec['pct_of_gemm_best']:.0f}% of best; "
          f"{rec['plan']})  memory bound {rec['memory_bound_mib']:.0f} MiB, measured host "
          f"{rec['rss']['anon_peak_growth_mib']:.0f} MiB + device {rec['device_peak_growth_mib'] or 0:.0f} MiB  "
          f"strength {(rec['whitening'] or {}).get('strength')}  {rec.get('vs_one_process', '')}", flush=True)


if __name__ == "__main__":
    main()
