"""``train``'s settings: the defaults, a ``--preset``, and the explicit options over them; options the
chosen method (or FBR recipe) would ignore are refused."""
from __future__ import annotations

from .. import presets as P


_DEFAULTS = dict(dataset="digits", noise="sym", rate=0.4, clean_size=50, method="relabel", model="mlp", epochs=20,
                 batch_size=64, lr=0.05, momentum=0.9, weight_decay=5e-4, lr_milestones=None)


#: options that only FBR reads: given without --method (and without --preset), they select method fbr
_FBR_OPTIONS = ("recipe", "warmup", "skip_epochs", "alpha_epochs", "shift", "clean_features", "reweight_lr",
                "feature_whiten", "feature_whiten_every")


#: --relabel-* options and the NeighbourRelabel keywords they set
_RELABEL_OPTIONS = dict(relabel_margin="margin", relabel_every="every", relabel_clean_vote="clean_vote",
                        relabel_vote_target="vote_target", relabel_features="features")


#: options of ``train`` read by some methods (or FBR recipes) only: given explicitly with another
#: method they would be ignored, so they are refused (as --relabel-* with a method other than relabel)
_WARMUP_METHODS = ("fbr", "meta", "l2r")
_STATEFUL_ONLY = ("warmup", "shift", "clean_features", "reweight_lr")
_PAPER_ONLY = ("skip_epochs", "alpha_epochs")


def _flags(names) -> str:
    return ", ".join("--" + n.replace("_", "-") for n in names)


def _check_method_options(args, method: str, recipe: str | None) -> None:
    """Refuse options that ``method`` (and, for fbr, ``recipe``) would ignore."""
    given = [a for a in _FBR_OPTIONS if getattr(args, a) is not None]
    if method != "fbr":
        fbr_only = [a for a in given if a != "warmup"]
        if fbr_only:
            raise ValueError(f"{_flags(fbr_only)} configure method fbr, but the method is {method}")
        if args.warmup is not None and method not in _WARMUP_METHODS:
            raise ValueError(f"--warmup configures methods {', '.join(_WARMUP_METHODS)}, but the method is {method}")
    elif recipe == "paper":
        bad = [a for a in given if a in _STATEFUL_ONLY]
        if bad:
            raise ValueError(f"{_flags(bad)} configure FBR's stateful recipe, but the recipe is paper "
                             "(it reweights after --skip-epochs)")
    else:
        bad = [a for a in given if a in _PAPER_ONLY]
        if bad:
            raise ValueError(f"{_flags(bad)} configure FBR's paper recipe, but the recipe is {recipe} "
                             "(give --recipe paper)")
    if args.feature_whiten_every is not None and args.feature_whiten is None:
        raise ValueError("--feature-whiten-every goes with --feature-whiten")
    if args.clean_mix and method not in ("erm", "fbr"):
        raise ValueError(f"--clean-mix is for methods erm and fbr, but the method is {method}")


def _relabel_options(args, method: str) -> dict | None:
    """NeighbourRelabel's keywords from the --relabel-* options, checked here so that an error names the
    flag; ``None`` when none is given."""
    given = {flag: getattr(args, flag) for flag in _RELABEL_OPTIONS if getattr(args, flag) is not None}
    if not given:
        return None
    flags = ", ".join("--" + f.replace("_", "-") for f in given)
    if method != "relabel":
        raise ValueError(f"{flags} configure method relabel, but the method is {method}")
    from ..training import NeighbourRelabel

    opts = {_RELABEL_OPTIONS[f]: v for f, v in given.items()}
    for flag, v in given.items():
        try:
            NeighbourRelabel(**{_RELABEL_OPTIONS[flag]: v})
        except ValueError as exc:
            raise ValueError(f"--{flag.replace('_', '-')}: {exc}") from None
    return opts


def _resolve(args) -> tuple[dict, dict]:
    """(settings, train keyword arguments) from preset + explicit options."""
    s = dict(_DEFAULTS)
    kw: dict = {}
    augment = False
    if args.preset:
        pr = P.get_preset(args.preset)
        if not pr.runnable:
            raise SystemExit(f"fastreweight: preset {pr.name} is recorded for reference and cannot run here "
                             f"({pr.description})")
        s.update(dataset=pr.dataset, noise=pr.noise, rate=pr.rate, clean_size=pr.clean_size, method=pr.method,
                 model=pr.model, epochs=pr.epochs, batch_size=pr.batch_size, lr=pr.lr, momentum=pr.momentum,
                 weight_decay=pr.weight_decay, lr_milestones=list(pr.lr_milestones) or None)
        kw.update(pr.method_kwargs)
        kw["lr_gamma"] = pr.lr_gamma
        augment = pr.augment
    for k in ("dataset", "noise", "rate", "clean_size", "method", "model", "epochs", "batch_size", "lr",
              "momentum", "weight_decay", "lr_milestones"):
        v = getattr(args, k)
        if v is not None:
            s[k] = v
    if args.method is None and not args.preset and any(getattr(args, a) is not None for a in _FBR_OPTIONS):
        s["method"] = "fbr"  # an FBR option without --method: FBR, as before relabel became the default
    if args.dataset in ("cifar10", "cifar100") and not args.preset and args.model is None:
        s["model"] = "preact-resnet18"
    if args.dataset in ("cifar10", "cifar100") and args.clean_size is None and not args.preset:
        s["clean_size"] = 2000
    if s["dataset"] in ("cifar10", "cifar100") and not args.preset:
        augment = True
    if args.no_augment:
        augment = False
    s["augment"] = augment and s["dataset"] in ("cifar10", "cifar100")
    opt_map = dict(recipe="recipe", clean_passes="clean_passes", clean_mix="clean_mix", warmup="warmup",
                   skip_epochs="skip_epochs",
                   alpha_epochs="alpha_epochs", shift="shift", clean_features="clean_features",
                   reweight_lr="lr", amp="amp", feature_whiten="feature_whiten",
                   feature_whiten_every="feature_whiten_every")
    for a, k in opt_map.items():
        v = getattr(args, a)
        if v is not None:
            kw[k] = v
    _check_method_options(args, s["method"], kw.get("recipe", "stateful") if s["method"] == "fbr" else None)
    if s["method"] != "fbr":
        for k in ("recipe", "skip_epochs", "alpha_epochs", "shift", "clean_features", "lr", "feature_whiten",
                  "feature_whiten_every"):
            kw.pop(k, None)
    if kw.get("recipe") == "paper":
        for k in ("warmup", "shift"):
            kw.pop(k, None)
    relabel = _relabel_options(args, s["method"])
    if relabel is not None:
        kw["relabel_options"] = {**(kw.get("relabel_options") or {}), **relabel}
    s["seeds"] = args.seeds if args.seeds else [args.seed if args.seed is not None else 0]
    return s, kw
