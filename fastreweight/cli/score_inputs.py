"""``score``'s inputs (features, labels, images, the clean subset), loaded and checked before any row is
scored, so that the ranks of a ``--distributed`` run can agree on the outcome before any collective."""
from __future__ import annotations

import dataclasses

import numpy as np
import torch


def _load_input(path: str, flag: str):
    """``load_array`` with a file of the wrong kind (e.g. a ``.pt`` holding a dict) reported as bad input."""
    from .. import label_issues

    try:
        return label_issues.load_array(path, flag)
    except TypeError as e:
        raise ValueError(str(e)) from None


def _is_numeric(a) -> bool:
    if isinstance(a, torch.Tensor):
        return not a.is_complex()
    return np.issubdtype(a.dtype, np.number) and not np.issubdtype(a.dtype, np.complexfloating) or a.dtype == np.bool_


@dataclasses.dataclass
class _ScoreInputs:
    """``fastreweight score``'s inputs, loaded and checked: the rows and labels (``yt``: as a tensor), the
    report's ``images``, the clean subset (``ci`` rows of the dataset, with ``verified`` labels for an
    audit; or ``cx``/``cy`` of its own) and the number of classes ``C``."""
    x: object
    y: object
    yt: torch.Tensor
    images: object
    ci: object
    verified: object
    cx: object
    cy: object
    cyt: torch.Tensor
    C: int = 0


def _check_find_inputs(inp: _ScoreInputs) -> None:
    """The checks ``find_label_issues`` runs on the inputs before it scores anything (its clean subset's
    classes, and the finiteness of the clean rows): run in ``_score``'s checks, so that the ranks of a
    ``--distributed`` run agree on them before any collective."""
    from ..label_issues import validate as LV

    if inp.ci is not None:
        LV.check_find_inputs(inp.x, inp.y, inp.ci, None, inp.verified, inp.C)
        LV.check_finite_rows("features", torch.as_tensor(LV.float32_array(inp.cx)), inp.cx, row_names=inp.ci,
                             where="a clean_idx row")
    else:
        LV.check_find_inputs(inp.x, inp.y, None, inp.cx, inp.cy, inp.C)


def _load_score_inputs(args) -> _ScoreInputs:
    """The inputs' kinds, shapes and dtypes, checked before any row is scored (a ``TypeError`` here is
    bad input, not a bug, and becomes a ``ValueError``)."""
    from ..label_issues.validate import check_clean_idx, check_features, labels_tensor

    try:
        x = _load_input(args.features, "--features")
        check_features("features", x)
        y = _load_input(args.labels, "--labels")
        yt = labels_tensor("labels", y, x.shape[0], "features")
        images = _load_score_images(args, x.shape[0])
        ci, verified = None, None
        if args.clean_idx is not None:
            ci = check_clean_idx(_load_input(args.clean_idx, "--clean-idx"), x.shape[0], "--clean-idx")
            cx, cy = np.asarray(x[ci]), np.asarray(y[ci])
            cyt = yt[torch.from_numpy(ci)]
            if args.clean_labels:  # an audit: the verified labels of the --clean-idx rows
                cy = verified = np.asarray(_load_input(args.clean_labels, "--clean-labels"))
                cyt = labels_tensor("clean_labels", cy, ci.size, "clean_idx")
        else:
            cx = _load_input(args.clean_features, "--clean-features")
            m, dc = check_features("clean_features", cx)
            if dc != x.shape[1]:
                raise ValueError(f"clean_features must have {x.shape[1]} columns like features, got shape {tuple(cx.shape)}")
            cy = _load_input(args.clean_labels, "--clean-labels")
            cyt = labels_tensor("clean_labels", cy, m, "clean_features")
    except TypeError as e:
        raise ValueError(str(e)) from None
    return _ScoreInputs(x, y, yt, images, ci, verified, cx, cy, cyt)


def _load_score_images(args, rows: int):
    """``--images`` (``None`` without it), checked to be one numeric image per row."""
    from ..label_issues.report import image_shape

    if not args.images:
        return None
    images = _load_input(args.images, "--images")
    if image_shape(images.shape) is None:
        raise ValueError(f"--images of shape {tuple(images.shape)} are not images: N×H×W, N×C×H×W, "
                         "N×H×W×C (C in 1, 3, 4) or N×(H·W) with H = W")
    if images.shape[0] != rows:
        raise ValueError(f"--images has {images.shape[0]} rows, --features {rows}: one image per row")
    if not _is_numeric(images):
        raise ValueError(f"--images must hold numbers, got {images.dtype}")
    return images


def _score_classes(args, inp: _ScoreInputs) -> int:
    """``--num-classes``, else one more than the largest label; every label checked to lie below it."""
    C = args.num_classes
    if C is None:
        C = max(int(inp.yt.max()) if inp.yt.numel() else 0, int(inp.cyt.max()) if inp.cyt.numel() else 0) + 1
    clean_name = "clean_labels" if inp.ci is None or inp.verified is not None else "labels"
    for flag_name, t in (("labels", inp.yt), (clean_name, inp.cyt)):
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= C):
            raise ValueError(f"{flag_name} must hold class labels in [0, {C}), got values in "
                             f"[{int(t.min())}, {int(t.max())}]" + (" (--num-classes)" if args.num_classes else ""))
    return C


def _check_clean_classes(inp: _ScoreInputs) -> None:
    """The FBR options path (``score_dataset``) scores a row against its class's clean rows: a class with
    rows but no clean row is refused here, in the command line's own terms (``score_dataset``'s message
    offers an option the command line does not have)."""
    missing = sorted(set(torch.unique(inp.yt).tolist()) - set(torch.unique(inp.cyt).tolist()))
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (", ..." if len(missing) > 10 else "")
        where = "the --clean-idx rows" if inp.ci is not None else "clean_labels (--clean-labels)"
        raise ValueError(f"class(es) {shown} have rows but no clean row (absent from {where}): add clean rows of "
                         "those classes (--clean-idx, or --clean-features/--clean-labels)")
