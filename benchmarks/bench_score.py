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
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import threading
import time
import warnings

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from harness import environment  # noqa: E402
from fastreweight.label_issues import load_array, memory_bound_bytes, score_dataset  # noqa: E402

SETTINGS = {"plain": {}, "whiten": {"whiten": "auto"}, "whiten+refine": {"whiten": "auto", "refine": 1}}
RESULTS = os.path.join(os.path.dirname(__file__), "results")


def make_features(path: str, n: int, d: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Write n rows to ``path`` a block at a time; returns (true labels, noisy labels)."""
    g = np.random.default_rng(seed)
    means = g.standard_normal((classes, d)).astype(np.float32)
    shared = g.standard_normal((8, d)).astype(np.float32) * 6.0  # shared nuisance directions
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


def _status_kib() -> dict:
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, val = line.partition(":")
            if key in ("RssAnon", "RssFile", "VmHWM", "VmRSS"):
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
                        "anon_peak_growth_mib": (self.peak["RssAnon"] - self.base["RssAnon"]) / 1024,
                        "file_peak_mib": self.peak["RssFile"] / 1024, "vmhwm_mib": end["VmHWM"] / 1024,
                        "vmhwm_growth_mib": (end["VmHWM"] - self.base["VmRSS"]) / 1024}
        return False


def gemm_rates(d: int, classes: int, chunk: int, reps: int = 20) -> dict:
    """fp32 GFLOP/s (median of ``reps``) of the two GEMM shapes of a streamed pass."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(chunk, d, generator=g)
    b = torch.randn(d, classes, generator=g)
    out = {}
    for name, f, flops in (("score", lambda: torch.mm(a, b), 2 * chunk * d * classes),
                           ("gram", lambda: torch.mm(a.T, a), 2 * chunk * d * d)):
        f()
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            f()
            ts.append(time.perf_counter() - t0)
        out[name] = flops / float(np.median(ts)) / 1e9
        out[name + "_best"] = flops / float(min(ts)) / 1e9
    return out


def read_pass(feats, chunk: int) -> float:
    """Seconds to read every chunk of ``feats`` once and reduce it (no scoring)."""
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        for s in range(0, feats.shape[0], chunk):
            torch.aminmax(torch.from_numpy(feats[s:s + chunk]))
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


def run_setting(name, kw, feats, noisy, cx, cy, wrong, args, env) -> tuple[dict, object]:
    import resource

    from sklearn.metrics import roc_auc_score

    from fastreweight import plan

    world = getattr(args, "world", 1)
    exe = dict(process_group="world") if world > 1 else {}
    load_before = list(os.getloadavg())  # the cores are shared: the load next to every measurement
    before = _ranks_sum(gemm_rates(args.d, args.classes, args.chunk), world)
    times, rss = [], None
    for _ in range(args.repeat):
        with RssSampler() as sampler:
            t0 = time.perf_counter()
            res = score_dataset(feats, noisy, cx, cy, num_classes=args.classes, chunk_rows=args.chunk, **kw, **exe)
            times.append(time.perf_counter() - t0)
        if rss is None or times[-1] == min(times):
            rss = sampler.summary
    last = plan.last()
    after = _ranks_sum(gemm_rates(args.d, args.classes, args.chunk), world)
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
    bound = memory_bound_bytes(args.n, args.d, args.clean, args.classes, args.chunk, whiten="whiten" in kw,
                               refine=bool(kw.get("refine")), ranks=world)
    rec = dict(setting=name, n=args.n, d=args.d, classes=args.classes, clean=args.clean, chunk_rows=args.chunk,
               ranks=world, seconds=secs, seconds_all=times, rows_per_s=args.n / secs,
               auroc=float(roc_auc_score(wrong, -res.scores)),
               plan=None if last is None else {"strategy": last.strategy, "backend": last.backend},
               memory_bound_mib=bound / 2**20, rss=rss,
               within_bound=bool(rss["anon_peak_growth_mib"] <= bound / 2**20),
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
        y_true, noisy = make_features(path, args.n, args.d, args.classes, args.seed)
        np.save(side["true"], y_true)
        np.save(side["noisy"], noisy)
        with open(side["seconds"], "w") as fh:
            fh.write(f"{time.perf_counter() - t0}\n")
    gen = float(open(side["seconds"]).read()) if os.path.exists(side["seconds"]) else None
    return np.load(side["true"]), np.load(side["noisy"]), gen


def _compare(res, path: str) -> dict:
    """The gathered result against one process's, saved by ``--save-scores``."""
    ref = np.load(path)
    same = bool(np.array_equal(res.scores, ref["scores"]) and np.array_equal(res.suggested, ref["suggested"]))
    return {"identical": same, "max_abs_diff": float(np.max(np.abs(res.scores - ref["scores"]))),
            "suggested_differ": int((res.suggested != ref["suggested"]).sum()), "against": os.path.basename(path)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", "--n", dest="n", type=int, default=100_000)
    ap.add_argument("--dim", "--d", dest="d", type=int, default=512)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--clean", type=int, default=2000)
    ap.add_argument("--chunk", type=int, default=8192)
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
    args.world, rank = 1, 0
    if args.dist:
        import torch.distributed as dist

        dist.init_process_group("gloo")
        args.world, rank = dist.get_world_size(), dist.get_rank()
    settings = (args.settings.split(",") if args.settings else ["plain", "whiten"] if args.scale else list(SETTINGS))
    args.repeat = args.repeat or (1 if args.scale else 2)
    out = args.out or os.path.join(RESULTS, "score_scale_cpu.jsonl" if args.scale else "score_cpu.jsonl")

    env = environment(torch.device("cpu"))
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
        score_dataset(feats[:args.chunk], noisy[:args.chunk], cx, cy, num_classes=args.classes, chunk_rows=args.chunk)
        extra = {}
        if args.scale:
            if args.dist:  # each rank reads its own shard, at the same time; the slowest rank's time
                from fastreweight.label_issues.shard import Shard

                sh = Shard(args.n, args.chunk, dist.group.WORLD)
                secs = read_pass(feats[sh.lo:sh.hi], args.chunk)
                t = torch.tensor([secs], dtype=torch.float64)
                dist.all_reduce(t, op=dist.ReduceOp.MAX)
                read_secs = float(t)
            else:
                read_secs = read_pass(feats, args.chunk)
            extra = dict(read_seconds=read_secs, read_gib_per_s=os.path.getsize(path) / 2**30 / read_secs,
                         generate_seconds=gen, file_gib=os.path.getsize(path) / 2**30)
            if rank == 0:
                print(f"read pass: {extra['read_seconds']:.1f} s", flush=True)
        for name in settings:
            rec, res = run_setting(name, SETTINGS[name], feats, noisy, cx, cy, wrong, args, env)
            rec.update(extra)
            if name == "plain" and args.compare:
                rec["vs_one_process"] = _compare(res, args.compare)
            if name == "plain" and args.save_scores and rank == 0:
                np.savez(args.save_scores, scores=res.scores, suggested=res.suggested)
            if rank == 0:
                with open(out, "a") as fh:
                    fh.write(json.dumps(rec) + "\n")
                print(f"{name:>14}: {rec['seconds']:.2f} s  {rec['rows_per_s']:.0f} rows/s  AUROC {rec['auroc']:.4f}  "
                      f"{rec['gflops']:.1f} GFLOP/s = {rec['pct_of_gemm_best']:.0f}% of best GEMM ({rec['plan']})  "
                      f"memory bound {rec['memory_bound_mib']:.0f} MiB, measured "
                      f"{rec['rss']['anon_peak_growth_mib']:.0f} MiB  strength {(rec['whitening'] or {}).get('strength')}"
                      f"  {rec.get('vs_one_process', '')}", flush=True)
        del feats
    if args.dist:
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
