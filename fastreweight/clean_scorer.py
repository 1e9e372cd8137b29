"""A clean subset prepared once, for scoring batch after batch against it (SPEC §3–5).

``fbr_scores`` / ``class_similarity`` validate and plan every call from scratch: both sides' shapes,
dtypes and devices, the clean-side memo lookup, the backend and strategy choice.  A training loop
scores every batch against the *same* clean features (a cache refreshed once per epoch, SPEC §5), so
all of that except the batch side is repeated work — and for a small model on the CPU it is a
noticeable share of the step (tens of microseconds of Python per call, more once the training step
has evicted the interpreter's caches).  ``CleanScorer`` does the clean side's part once:

    scorer = CleanScorer(clean_feats, clean_y, num_classes=C)      # validated, centred, memoised
    for xb, yb, idx in loader:
        feats, logits = capture.penultimate(model, xb)
        d = scorer.fbr_scores(feats.detach(), yb, shift="max")      # batch-side checks only
        w = reweighter.step(idx, d)

Per call it checks the batch side's metadata (always) and, with ``check_values=True``, its values
(finite features, labels in range, labels whose class the clean subset lacks), then dispatches to the
backend planned for that batch size and dtype (cached).  Because the clean side is reused by
construction, the planner counts the prototypes' clean-side work as amortised from the first call.
The results are those of ``fbr_scores`` / ``class_similarity`` with the same arguments (the same
``Problem`` reaches the same backend code).

The clean tensors must not be modified in place while the scorer is in use: the centering mean,
class weights and prototypes were computed from their values at construction.
"""
from __future__ import annotations

import dataclasses

import torch

from . import backends, plan as plan_mod, reference
from . import validate as V
from .problem import Layer, Problem, build_problem, class_balanced_row_weights
from .weights import Reweighter

#: clean-memo entries that depend on the clean labels only (kept by ``CleanScorer.refresh``)
_LABEL_ONLY_MEMO = ("counts", "class_weight", "reuses", "class_matrix", "row_weight",
                    ("triton", "class_sort"))




class CleanScorer:
    """Scores batches against one clean subset (see the module doc).

    Arguments as for ``fbr_scores`` (``clean_x`` / ``clean_x2`` a tensor or per-layer lists);
    ``num_classes`` is required (inferring it would read the labels back).  ``strategy`` and
    ``backend`` apply to every call; ``check_values`` is the default of the calls' own
    ``check_values``.
    """

    def __init__(
        self,
        clean_x,
        clean_y,
        *,
        num_classes: int,
        center: str = "clean",
        normalize: str | None = None,
        clean_x2=None,
        strategy: str = "auto",
        backend: str = "auto",
        check_values: bool = True,
    ) -> None:
        V.check_option("strategy", strategy, V.STRATEGY_OPTIONS)
        V.check_option("backend", backend, V.BACKEND_OPTIONS)
        if V.check_num_classes(num_classes) is None:
            raise TypeError("num_classes must be a positive int, got None")
        if clean_y is None:
            raise TypeError("clean_y must be an integer tensor of clean labels, got None")
        zs = V.as_factor_list("clean_x", clean_x)
        fs = V.as_factor_list("clean_x2", clean_x2) if clean_x2 is not None else None
        # the full validation of the clean side, on an empty batch of the same layout
        empty_x = [z[:0] for z in zs]
        empty_e = [f[:0] for f in fs] if fs is not None else None
        self._template: Problem = build_problem(
            empty_x if isinstance(clean_x, (list, tuple)) else empty_x[0], clean_x,
            y=torch.zeros(0, dtype=torch.int64, device=zs[0].device), clean_y=clean_y,
            x2=(empty_e if isinstance(clean_x2, (list, tuple)) else empty_e[0]) if fs is not None else None,
            clean_x2=clean_x2, num_classes=num_classes, center=center, normalize=normalize,
            check_values=check_values, on_missing_class="skip",
        )
        memo = self._template.clean_memo
        memo["reuses"] = max(memo.get("reuses", 0), 1)  # reused by construction (see plan.py)
        self.num_classes = num_classes
        self.strategy = strategy
        self.backend = backend
        self.check_values = check_values
        self.device = self._template.device
        self.dtype = zs[0].dtype
        self._dims = [z.shape[1] for z in zs]
        self._kdims = [f.shape[1] for f in fs] if fs is not None else None
        self.center = center
        self._plans: dict = {}
        self._two_classes_checked = False

    # ------------------------------------------------------------------------------------------
    def refresh(self, clean_x, clean_x2=None) -> "CleanScorer":
        """New values of the clean features for the same clean labels, in place; returns ``self``.

        ``clean_x`` (and ``clean_x2`` exactly when the scorer was built with it) must have the layout,
        shapes, dtype and device of the features the scorer was built with; with the scorer's
        ``check_values`` they must be finite.  A training loop that refreshes its clean-feature cache
        (SPEC §5) calls this instead of building a new scorer: what depends on the labels only (class
        counts and weights, the checks of the labels, the plans chosen per batch size) is kept, and
        only what depends on the values is recomputed — the centering mean and each cached plan's
        prepared clean side (e.g. the class prototypes).  Scores afterwards equal those of a scorer
        built from scratch on the new features (tests)."""
        if (clean_x2 is None) != (self._kdims is None):
            raise ValueError("clean_x2 must be given exactly when the scorer was built with clean_x2 (gradient kernel)")
        t = self._template
        M = t.num_clean
        zs = self._factors("clean_x", clean_x, self._dims)
        fs = self._factors("clean_x2", clean_x2, self._kdims) if clean_x2 is not None else [None] * len(zs)
        for i, (z, f) in enumerate(zip(zs, fs)):
            for name, u in (("clean_x", z), ("clean_x2", f)):
                if u is not None and u.shape[0] != M:
                    nm = f"{name}[{i}]" if len(zs) > 1 else name
                    raise ValueError(f"{nm} must have {M} rows (the clean subset's size), got {u.shape[0]}")
        if self.check_values:
            vc = V.ValueChecks()
            for i, (z, f) in enumerate(zip(zs, fs)):
                sfx = f"[{i}]" if len(zs) > 1 else ""
                vc.finite(f"clean_x{sfx}", z)
                if f is not None:
                    vc.finite(f"clean_x2{sfx}", f)
            vc.run()
        acc = t.acc_dtype
        # a fresh memo: the label-only entries carried over, the value-dependent ones (the backends'
        # prepared clean side) recomputed on demand
        memo = {k: v for k, v in t.clean_memo.items() if k in _LABEL_ONLY_MEMO}
        mus = [None] * len(zs)
        if self.center == "clean":  # class_balanced_mean, its label-only row weights kept
            row_w = memo.get("row_weight")
            if row_w is None:
                row_w = memo["row_weight"] = class_balanced_row_weights(t.clean_y, t.class_counts, acc)
            mus = [row_w @ z.to(acc) for z in zs]
        memo["mus"] = mus
        memo["reuses"] = max(memo.get("reuses", 0), 1)
        # labels and values checked: the labels earlier, the new values just now (with check_values)
        memo["values_checked"] = bool(self.check_values and t.clean_memo.get("values_checked"))
        self._template = dataclasses.replace(
            t, layers=[Layer(x=L.x, z=z, mu=mu, e=L.e, f=f) for L, z, mu, f in zip(t.layers, zs, mus, fs)],
            clean_memo=memo)
        for key, (p, mod, *_) in list(self._plans.items()):
            self._plans[key] = self._prepare(p, mod)
        return self

    def _prepare(self, p, mod):
        """(plan, backend module, and the backend's prepared runners or None: scores, and scores with
        the Reweighter update)."""
        runners = [getattr(mod, name, None) for name in ("prepare_fbr_scores", "prepare_fbr_reweight")]
        return (p, mod, *(prep(self._template, p.strategy) if prep is not None else None for prep in runners))

    @property
    def num_clean(self) -> int:
        return self._template.num_clean

    @property
    def present(self) -> torch.Tensor:
        """(C, bool) the classes that the clean subset holds."""
        return self._template.present

    def _factors(self, name: str, x, dims) -> list[torch.Tensor]:
        if isinstance(x, torch.Tensor) and len(dims) == 1:  # the common case, checked inline
            if x.dtype != self.dtype or x.dim() != 2 or x.shape[1] != dims[0] or x.device != self.device:
                V.check_float_matrix(name, x)
                if x.shape[1] != dims[0]:
                    raise ValueError(f"{name} must have {dims[0]} columns (the clean side's feature size), "
                                     f"got shape {tuple(x.shape)}")
                if x.dtype != self.dtype:
                    raise TypeError(f"{name} has dtype {x.dtype} but the clean features have {self.dtype}; "
                                    "all feature tensors must share one dtype")
                raise ValueError(f"all inputs must be on one device: the clean features are on {self.device} "
                                 f"but {name} is on {x.device}")
            return [x]
        xs = V.as_factor_list(name, x)
        if len(xs) != len(dims):
            raise ValueError(f"{name} must hold {len(dims)} layer(s) like the clean side, got {len(xs)}")
        B = xs[0].shape[0]
        for i, (t, d) in enumerate(zip(xs, dims)):
            nm = f"{name}[{i}]" if len(dims) > 1 else name
            if t.shape[1] != d:
                raise ValueError(f"{nm} must have {d} columns (the clean side's feature size), got shape {tuple(t.shape)}")
            if t.shape[0] != B:
                raise ValueError(f"{nm} must have {B} rows like {name}[0], got {t.shape[0]}")
            if t.dtype != self.dtype:
                raise TypeError(f"{nm} has dtype {t.dtype} but the clean features have {self.dtype}; "
                                "all feature tensors must share one dtype")
            if t.device != self.device:
                raise ValueError(f"all inputs must be on one device: the clean features are on {self.device} "
                                 f"but {nm} is on {t.device}")
        return xs

    def _batch(self, x, y, x2, check_values: bool, on_missing_class: str, two_classes: bool):
        """The checked batch side: (per-layer x, per-layer x2 or None, int64 labels or None)."""
        xs = self._factors("x", x, self._dims)
        B = xs[0].shape[0]
        if (x2 is None) != (self._kdims is None):
            raise ValueError("x2 must be given exactly when the scorer was built with clean_x2 (gradient kernel)")
        es = None
        if x2 is not None:
            es = self._factors("x2", x2, self._kdims)
            if es[0].shape[0] != B:
                raise ValueError(f"x2 must have {B} rows like x, got {es[0].shape[0]}")
        y64 = None
        if y is not None:
            if not (isinstance(y, torch.Tensor) and y.dtype == torch.int64 and y.dim() == 1 and y.shape[0] == B):
                V.check_label_vector("y", y, B)
            if y.device != self.device:
                raise ValueError(f"all inputs must be on one device: the clean features are on {self.device} "
                                 f"but y is on {y.device}")
            y64 = y if y.dtype == torch.int64 else y.to(torch.int64)
        if check_values:
            self._check_values(xs, es, y64, B, on_missing_class, two_classes)
        return xs, es, y64

    def _check_values(self, xs, es, y64, B, on_missing_class, two_classes) -> None:
        t = self._template
        vc = V.ValueChecks()
        for i, xl in enumerate(xs):
            vc.finite(f"x[{i}]" if len(xs) > 1 else "x", xl)
        for i, el in enumerate(es or []):
            vc.finite(f"x2[{i}]" if len(es) > 1 else "x2", el)
        if y64 is not None and B > 0:
            vc.labels_in_range("y", y64, self.num_classes)
            if on_missing_class == "raise":
                missing = t.class_counts[y64.clamp(0, self.num_classes - 1)] == 0

                def miss_msg():
                    cls = sorted(set(y64[missing].tolist()))
                    return (f"y contains class(es) {cls[:10]} that are absent from the clean subset (clean_y); "
                            "every batch label needs at least one clean sample of its class, or pass "
                            "on_missing_class='skip'")

                vc.add(~missing.any(), miss_msg)
        if two_classes and not self._two_classes_checked:
            counts = t.class_counts

            def two_msg():
                return ("clean_y must contain at least two classes for label-signed scores (SPEC §3.4); "
                        f"the clean subset holds only class(es) {torch.nonzero(counts > 0).flatten().tolist()}")

            vc.add((counts > 0).sum() >= 2, two_msg)
        vc.run()
        if two_classes:
            self._two_classes_checked = True

    def _problem(self, xs, es, y64) -> Problem:
        t = self._template
        es = es if es is not None else [None] * len(xs)
        layers = [Layer(x=xl, z=L.z, mu=L.mu, e=el, f=L.f) for xl, el, L in zip(xs, es, t.layers)]
        return dataclasses.replace(t, layers=layers, y=y64)

    def _prepared(self, xs, es, y64):
        """(plan, backend module, prepared runners or None) for this batch size and dtype, made once."""
        # only the reference differentiates (plan.needs_autograd): a batch that needs a backward plans apart
        grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (
            *xs, *(es or ()), *(L.z for L in self._template.layers), *(L.f for L in self._template.layers)))
        key = (xs[0].shape[0], xs[0].dtype, grad)
        entry = self._plans.get(key)
        if entry is None:
            problem = self._problem(xs, es, y64)
            p = plan_mod.make_plan(problem, self.strategy, self.backend)
            entry = self._prepare(p, backends.load(p.backend))
            self._plans[key] = entry
        plan_mod.record(entry[0])
        return entry

    # ------------------------------------------------------------------------------------------
    def class_similarity(self, x, *, x2=None, check_values: bool | None = None) -> torch.Tensor:
        """S (B×C) of the batch ``x`` against the clean subset, as ``weights.class_similarity``."""
        cv = self.check_values if check_values is None else check_values
        xs, es, _ = self._batch(x, None, x2, cv, "skip", False)
        p, mod, *_ = self._prepared(xs, es, None)
        return mod.class_similarity(self._problem(xs, es, None), p.strategy)

    def _score_args(self, x, y, x2, shift, alpha, on_missing_class, check_values):
        if shift not in V.SHIFT_OPTIONS:
            V.check_option("shift", shift, V.SHIFT_OPTIONS)
        if on_missing_class not in V.MISSING_OPTIONS:
            V.check_option("on_missing_class", on_missing_class, V.MISSING_OPTIONS)
        if not (type(alpha) is float and 0.0 <= alpha < float("inf")):
            alpha = V.check_alpha(alpha)
        if y is None:
            raise TypeError("y must be an integer tensor of batch labels, got None")
        cv = self.check_values if check_values is None else check_values
        xs, es, y64 = self._batch(x, y, x2, cv, on_missing_class, True)
        return xs, es, y64, alpha, cv

    def fbr_scores(self, x, y, *, x2=None, shift: str = "max", alpha: float = 0.0,
                   on_missing_class: str = "raise", check_values: bool | None = None) -> torch.Tensor:
        """The FBR score of every batch row (SPEC §3.4), as ``weights.fbr_scores``."""
        xs, es, y64, alpha, _ = self._score_args(x, y, x2, shift, alpha, on_missing_class, check_values)
        return self._scores(xs, es, y64, shift, alpha)

    def _scores(self, xs, es, y64, shift, alpha) -> torch.Tensor:
        p, mod, run, *_ = self._prepared(xs, es, y64)
        if run is not None:  # the backend's fused path with the clean-side arguments bound once
            return run(xs, es, y64, shift, alpha)
        problem = self._problem(xs, es, y64)
        fused = getattr(mod, "fbr_scores", None)
        if fused is not None:
            return fused(problem, p.strategy, shift, alpha)
        S = mod.class_similarity(problem, p.strategy)
        return reference.fbr_from_similarity(S, problem.y, problem.present, shift, alpha)

    def reweight(self, reweighter, idx, x, y, *, x2=None, shift: str = "max", alpha: float = 0.0,
                 on_missing_class: str = "raise", check_values: bool | None = None, loss_eps: float | None = None):
        """Score the batch and apply ``reweighter``'s update at the dataset indices ``idx``; returns
        ``(scores, new batch weights)`` — ``fbr_scores`` followed by ``reweighter.step(idx, scores)``,
        in one op where the scoring backend fuses them (its ``prepare_fbr_reweight``: the C++ prototype
        path, with a ``Reweighter`` on the same backend).

        With ``loss_eps`` (a float > 0) it returns ``(scores, w, coef)`` with ``coef = w / max(Σw,
        loss_eps)``, the coefficients of ``weighted_loss(losses, w, reduction="weight_sum",
        eps=loss_eps)``: that loss is then ``torch.dot(losses, coef)``.  The fused op forms them in
        the same call; otherwise they take the three tensor ops ``weighted_loss`` would."""
        if loss_eps is not None and not (type(loss_eps) is float and 0.0 < loss_eps < float("inf")):
            raise ValueError(f"loss_eps must be a finite float > 0 or None, got {loss_eps!r}")
        xs, es, y64, alpha, cv = self._score_args(x, y, x2, shift, alpha, on_missing_class, check_values)
        plan, _, _, fused = self._prepared(xs, es, y64)
        # fused only where the scoring backend also runs this Reweighter's update, the update is the
        # plain class's (a subclass such as DistributedReweighter has its own rule), idx needs no
        # conversion and no value checks are asked for (they need the scores before the update)
        if not (fused is not None and type(reweighter) is Reweighter and reweighter.backend == plan.backend
                and not cv and isinstance(idx, torch.Tensor) and idx.dtype == torch.int64 and idx.dim() == 1
                and idx.shape[0] == xs[0].shape[0] and idx.device == self.device == reweighter.weights.device):
            fused = None
        if fused is None:
            d = self._scores(xs, es, y64, shift, alpha)
            w = reweighter.step(idx, d, check_values=cv)
            return (d, w) if loss_eps is None else (d, w, w / w.sum().clamp_min(loss_eps))
        d, w, coef = fused(xs, es, y64, shift, alpha, reweighter.weights, idx, reweighter.lr,
                           reweighter.normalize_update, reweighter.eps, 1e-12 if loss_eps is None else loss_eps)
        return (d, w) if loss_eps is None else (d, w, coef)
