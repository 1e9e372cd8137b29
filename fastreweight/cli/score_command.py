"""``fastreweight score``: rank the rows of a features file by ``find_label_issues`` (or ``score_dataset``
with the FBR options) and write a CSV, with ``--report`` also an HTML page; ``--distributed`` shards the
rows over the ranks of a torchrun launch."""
from __future__ import annotations

import os
import time

from .option_values import _class_names, _device
from .outputs import OutputExists
from .score_inputs import (_check_clean_classes, _check_find_inputs, _load_score_inputs, _score_classes,
                           _ScoreInputs)
from .score_plan import _SCORE_DEFAULTS, _check_score_combination, _implied_by


def _join_ranks(args):
    """``(process_group, rank, we_initialised)`` for ``--distributed``: the default group of a torchrun
    launch, initialised here from its environment unless the caller already did; ``(None, 0, False)``
    without the flag."""
    if not args.distributed:
        return None, 0, False
    import torch.distributed as dist

    if not dist.is_available():
        raise ValueError("--distributed: this PyTorch build has no torch.distributed")
    if dist.is_initialized():
        return "world", dist.get_rank(), False
    missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise ValueError(f"--distributed needs a torchrun launch (e.g. torchrun --nproc-per-node 2 -m fastreweight "
                         f"score ... --distributed); {', '.join(missing)} not set")
    backend = "nccl" if _device(args.device).startswith("cuda") else "gloo"
    dist.init_process_group(backend)
    return "world", dist.get_rank(), True


def _check_score_outputs(out: str, report: str | None) -> None:
    """Before any work: ``--out`` (and ``--report``) are new files, in existing directories, and two."""
    named = [("--out", out)] + ([("--report", report)] if report is not None else [])
    for flag, path in named:
        if os.path.exists(path) or os.path.islink(path):
            raise OutputExists(f"refusing to overwrite {path}; choose another file name")
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            raise ValueError(f"{flag} {path}: the directory {os.path.dirname(path) or parent} does not exist")
        if not os.path.basename(path):
            raise ValueError(f"{flag} {path} names a directory; give a file name")
    if report is not None and os.path.realpath(out) == os.path.realpath(report):
        raise ValueError(f"--out and --report name the same file {out}: give two file names")


def _check_score_args(args) -> None:
    """The numeric options of ``score``, before any input is read."""
    if args.num_classes is not None and args.num_classes < 1:
        raise ValueError(f"--num-classes must be >= 1, got {args.num_classes}")
    if args.chunk_rows < 1:
        raise ValueError(f"--chunk-rows must be >= 1, got {args.chunk_rows}")
    if args.report_samples < 0:
        raise ValueError(f"--report-samples must be >= 0, got {args.report_samples}")
    if args.refine < 0:
        raise ValueError(f"--refine must be >= 0, got {args.refine}")


def run_score(args) -> int:
    """``fastreweight score``.  Under ``--distributed`` every rank runs the same checks of the options,
    the outputs and the inputs, and the ranks agree on their outcome before any collective
    (``label_issues.shard.agree``): a rank that rejects its inputs reports its own error, every other
    rank that another rank rejected its inputs, and all exit with status 2, none left waiting."""
    import contextlib
    import io

    _device(args.device)  # before anything: an unusable --device is an error, not a traceback
    _check_score_args(args)
    group, rank, ours = _join_ranks(args)
    # "checks": the checks before any collective; "collectives": scoring (every rank in the same
    # collectives); "done": every collective run (only rank 0 writes)
    phase = ["checks"]
    ok = False
    try:
        if rank == 0:
            code = _score(args, group, phase=phase)
        else:
            with contextlib.redirect_stdout(io.StringIO()):  # one rank reports; the others only score
                code = _score(args, group, write=False, phase=phase)
        ok = True
        return code
    finally:
        if ours:
            import torch.distributed as dist

            # the closing barrier only where this rank is where every other rank is: it finished, or
            # failed in a phase the ranks agreed on (the checks), or after the last collective (writing).
            # A rank that failed amid the scoring's collectives may have left the others inside one: a
            # barrier here could be paired with that collective and wait for ever, so it leaves at once
            if ok or phase[0] != "collectives":
                dist.barrier()
            dist.destroy_process_group()


def _score(args, group, write: bool = True, phase: list | None = None) -> int:
    from ..label_issues.shard import agree

    phase = ["checks"] if phase is None else phase
    error = None
    try:  # every rank: the same checks, nothing written and no collective; then the ranks agree on them
        _check_score_outputs(args.out, args.report)
        names = _class_names(args.class_names)
        scorer, flag, whiten = _check_score_combination(args)
        inp = _load_score_inputs(args)
        inp.C = _score_classes(args, inp)
        if scorer is None:
            _check_clean_classes(inp)
        if names is not None and len(names) < inp.C:
            raise ValueError(f"--class-names has {len(names)} names for {inp.C} classes")
        if scorer is not None:
            _check_find_inputs(inp)
    except Exception as exc:  # noqa: BLE001 - re-raised by agree, on this rank
        error = exc
    try:
        agree(group, error, "its inputs", args.device)
    finally:
        error = None  # see agree: no cycle through the traceback
    phase[0] = "collectives"
    _print_score_bound(args, inp, scorer, flag, whiten, group)
    t0 = time.perf_counter()
    issues = _run_score(args, inp, scorer, flag, whiten, group, progress=not args.no_progress and write)
    dt = time.perf_counter() - t0
    phase[0] = "done"
    if not write:
        return 0
    print("settings: " + ", ".join(f"{k}={v}" for k, v in issues.settings.items()))
    print(issues.summary())
    _write_score_outputs(args, issues, inp.images, names)
    print(f"ranked CSV: {args.out} ({dt:.2f} s)")
    if args.report:
        print(f"report: {args.report}")
    return 0


def _print_score_bound(args, inp: _ScoreInputs, scorer, flag, whiten, group) -> None:
    """Print the scorer that will run and the memory bound it implies."""
    from .. import label_issues

    x, cx, C = inp.x, inp.cx, inp.C
    shown = scorer
    if scorer not in (None, "auto") and args.scorer is None:
        print(f"scorer {scorer} ({_implied_by(args)})")
    if scorer == "auto":  # resolved here as find_label_issues resolves it, to print the bound it implies
        from ..label_issues.find import _choose_scorer

        shown, why = _choose_scorer("auto", x, None if inp.ci is not None else cx, group)
        print(f"scorer auto: {shown} ({why})")
    head = f"scoring {x.shape[0]} rows × {x.shape[1]} features against {cx.shape[0]} clean rows, {C} classes"
    if shown in (None, "fbr", "fbr-whiten"):
        device = _device(args.device)
        bound = label_issues.memory_bound_bytes(
            x.shape[0], x.shape[1], cx.shape[0], C, args.chunk_rows, itemsize=x.itemsize,
            whiten=whiten is not None or shown == "fbr-whiten", refine=args.refine > 0 or shown == "fbr-whiten",
            prefetch=label_issues.Execution(device=device).prefetch, device=device)
        print(f"{head}; memory bound ≈ {bound / 2**20:.0f} MiB beyond the memory-mapped input")
        return
    n = x.shape[0] + (cx.shape[0] if inp.ci is None else 0)
    bound = label_issues.knn_memory_bytes(n, x.shape[1], C, args.chunk_rows,
                                          posterior=flag.get("flag", "auto") in ("auto", "audit") + label_issues.MODEL_FLAGS,
                                          audited=0 if inp.verified is None else int(inp.ci.size))
    print(f"{head}; memory bound ≈ {bound / 2**20:.0f} MiB (scorer {shown}: all rows in memory)")


def _run_score(args, inp: _ScoreInputs, scorer, flag, whiten, group, progress: bool):
    """The ``LabelIssues`` of ``find_label_issues`` (a ``--scorer``), or of ``score_dataset`` with the FBR
    options."""
    from .. import label_issues

    if scorer is not None:
        clean = (dict(clean_idx=inp.ci, clean_labels=inp.verified) if inp.ci is not None
                 else dict(clean_features=inp.cx, clean_labels=inp.cy))
        issues = label_issues.find_label_issues(inp.x, inp.y, **clean, num_classes=inp.C, scorer=scorer,
                                                device=_device(args.device), chunk_rows=args.chunk_rows,
                                                progress=progress, process_group=group, **flag)
        if scorer != "auto" and args.scorer is None:  # not named by the user: say what chose it
            issues.settings["scorer_reason"] = _implied_by(args)
        return issues
    res = label_issues.score_dataset(
        inp.x, inp.y, inp.cx, inp.cy, num_classes=inp.C, chunk_rows=args.chunk_rows, shift=args.shift,
        alpha=args.alpha, center=args.center, normalize=None if args.normalize == "none" else args.normalize,
        device=_device(args.device), backend=args.backend, whiten=whiten, refine=args.refine,
        progress=progress, process_group=group,
    )
    if res.whitening is not None:
        t = res.whitening["strength"]
        print("whitening: " + ("none chosen (plain features scored best on the clean subset)" if t is None else f"strength t = {t:g}"))
    if res.refinement is not None:
        print(f"refined {res.refinement['rounds']}×: {res.refinement['pseudo_clean_rows']} rows scored > 0 joined the clean class means")
    threshold = flag.get("threshold", 0.0)
    settings = {"scorer": "score_dataset", "flag": "score", "threshold": threshold,
                **{k: getattr(args, k) for k in _SCORE_DEFAULTS}, "whiten": args.whiten, "refine": args.refine}
    return label_issues.LabelIssues.from_score_result(res, threshold=threshold, num_classes=inp.C, clean_idx=inp.ci,
                                                      settings=settings)


def _write_score_outputs(args, issues, images, names) -> None:
    """The ranked CSV and, with ``--report``, the page: rendered before the CSV is written, and the CSV
    removed again if the page cannot be written, so a failed report leaves no file behind."""
    page = None
    if args.report:
        from ..label_issues.report import render_report

        page = render_report(issues, images=images, class_names=names, max_samples=args.report_samples,
                             title=f"Label issues: {os.path.basename(args.features)}")
    try:
        issues.write_csv(args.out)
    except FileExistsError:
        raise OutputExists(f"refusing to overwrite {args.out}") from None
    if page is None:
        return
    created = False
    try:
        with open(args.report, "x", encoding="utf-8") as fh:
            created = True
            fh.write(page)
    except BaseException as e:  # the report cannot be written: remove what was written, so a rerun is not blocked
        os.remove(args.out)
        if created and os.path.exists(args.report):
            os.remove(args.report)
        if isinstance(e, FileExistsError):
            raise OutputExists(f"refusing to overwrite {args.report}") from None
        if isinstance(e, OSError):
            raise ValueError(f"--report {args.report} cannot be written ({e}); nothing was written") from None
        raise
