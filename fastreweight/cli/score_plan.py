"""How ``score``'s options choose the scoring: a scorer of ``find_label_issues`` (``--scorer``, or the one
that ``--whiten``/``--refine`` stand for) with its flag rule, or ``score_dataset`` with the FBR options;
combinations that cannot run are refused before any input is read."""
from __future__ import annotations


def _whiten_arg(value: str):
    from ..whiten import check_whiten

    try:
        return check_whiten(value)
    except ValueError:
        raise ValueError(f"--whiten must be none, auto or a positive number, got {value!r}") from None


#: the FBR options of ``fastreweight score`` at their defaults, and the named scorers they select
_SCORE_DEFAULTS = dict(shift="max", alpha=0.0, center="clean", normalize="none", backend="auto")
#: the scorer of find_label_issues that --whiten/--refine name: none (the default) is "auto", the
#: library's default (knn for data that fits, else fbr-whiten)
_FBR_SCORERS = {(None, 0): "auto", ("auto", 1): "fbr-whiten"}


def _score_plan(args):
    """(scorer name or None, find_label_issues' flagging keywords): None scores through score_dataset
    (the FBR options find_label_issues does not take: --shift, --alpha, --center, --normalize,
    --backend, other --whiten/--refine values)."""
    whiten = _whiten_arg(args.whiten)
    low = [f"--{k}" for k, v in _SCORE_DEFAULTS.items() if getattr(args, k) != v]
    fbr = _FBR_SCORERS.get((whiten, args.refine))
    if args.scorer is not None:
        drop = low + (["--whiten/--refine"] if (whiten, args.refine) != (None, 0) else [])
        if drop:
            raise ValueError(f"--scorer {args.scorer} chooses the scoring itself: drop {', '.join(drop)}")
        scorer = args.scorer
    else:
        scorer = fbr if not low else None
    flag = {}
    if args.flag is not None:
        flag["flag"] = args.flag
    if args.fdr is not None:
        if args.flag not in (None, "fdr"):
            raise ValueError("--fdr is the target of --flag fdr")
        flag.update(flag="fdr", alpha=args.fdr)
    if args.margin is not None:
        if args.flag not in (None, "margin"):
            raise ValueError("--margin is the vote lead of --flag margin")
        flag.update(flag="margin", margin=args.margin)
    if args.threshold is not None:
        if flag.get("flag", "score") != "score":
            raise ValueError("--threshold goes with --flag score")
        flag.update(flag="score", threshold=args.threshold)
    if scorer is None and flag.get("flag", "score") != "score":
        raise ValueError(f"--flag {flag['flag']} needs find_label_issues: drop {', '.join(low)} or use --scorer")
    return scorer, flag, whiten


def _check_score_combination(args):
    """``_score_plan``'s ``(scorer, flag, whiten)`` after the checks of how the options combine."""
    if args.images and args.report is None:
        raise ValueError("--images is for the report: give --report too")
    if args.clean_idx is not None and args.clean_features:
        raise ValueError("give either --clean-idx (with --clean-labels for an audit) or --clean-features with "
                         "--clean-labels, not both")
    if args.clean_idx is None and not (args.clean_features and args.clean_labels):
        raise ValueError("the clean subset is missing: give --clean-idx, or --clean-features and --clean-labels")
    scorer, flag, whiten = _score_plan(args)
    if args.clean_idx is not None and args.clean_labels and scorer is None:
        raise ValueError("an audit (--clean-idx with --clean-labels) needs a scorer of find_label_issues (--scorer); "
                         "the FBR options --shift/--alpha/--center/--normalize/--backend score without one")
    return scorer, flag, whiten


def _implied_by(args) -> str:
    """Why a scorer runs that ``--scorer`` did not name: the ``--whiten`` / ``--refine`` values it stands for."""
    return f"the scorer that --whiten {args.whiten} --refine {args.refine} stand for"
