"""``write_report``: one self-contained HTML page to look at a ``LabelIssues`` result.

The page holds, top to bottom:

* a header: the title, ``issues.summary()`` (flagged rows, the estimated noise rate, issues per class)
  and the settings;
* the most suspicious rows as a grid: a thumbnail (when ``images`` is given), the rank, the row index,
  given label → suggested label, the label score (and, for demo data with synthetic noise, the true
  label);
* a given-vs-suggested class matrix over the flagged rows (an HTML table, cells shaded by count);
* the histogram of ``score`` with the threshold marked (inline SVG);
* the issue counts per given class.

Everything is inline: CSS in a ``<style>`` element, thumbnails as ``data:image/png;base64`` URIs from a
small PNG encoder (numpy + zlib), the histogram as SVG.  The page loads nothing and runs no script.
Every string that comes from the caller (title, class names, settings keys and values) goes through
``html.escape``.  The file is created exclusively: an existing file is never overwritten
(``FileExistsError``).
"""
from __future__ import annotations

import base64
import html
import json
import math
import numbers
import os
import struct
import zlib
from typing import Mapping, Sequence

import numpy as np

from .histogram import histogram_svg
from .result import LabelIssues

__all__ = ["write_report", "render_report", "image_shape", "encode_png", "given_vs_suggested"]

#: classes above which the matrix keeps only the classes involved in the most flagged rows
MAX_MATRIX_CLASSES = 40
#: above ``MAX_MATRIX_CLASSES`` classes, the matrix section first lists this many most frequent pairs
TOP_PAIRS = 20
#: thumbnails larger than this (pixels, either side) are subsampled
MAX_THUMB_SIDE = 128

_SYNTHETIC_NOTE = ("true labels are known here only because the label noise of this dataset is synthetic "
                   "(injected by the demo); a real dataset has none")


def _esc(s) -> str:
    return html.escape(str(s), quote=True)


# ---------------------------------------------------------------------------------------------
# images
# ---------------------------------------------------------------------------------------------
def image_shape(shape: Sequence[int]) -> tuple[str, int, int, int] | None:
    """How the rows of an array of ``shape`` are shown as images, or ``None`` when they are not images.

    Returns ``(layout, H, W, channels)``; layouts: ``"flat"`` N×(H·W) with H = W, ``"flat-chw"``
    N×(3·H·W) with H = W (CIFAR's python-pickle rows), ``"hw"`` N×H×W, ``"chw"`` N×C×H×W and ``"hwc"``
    N×H×W×C with C in 1, 3, 4."""
    shape = tuple(int(s) for s in shape)
    if len(shape) == 2:
        d = shape[1]
        s = math.isqrt(d)
        if d > 1 and s * s == d:
            return ("flat", s, s, 1)
        if d % 3 == 0:
            s = math.isqrt(d // 3)
            if s > 1 and 3 * s * s == d:
                return ("flat-chw", s, s, 3)
        return None
    if len(shape) == 3:
        return ("hw", shape[1], shape[2], 1)
    if len(shape) == 4:
        if shape[1] in (1, 3, 4):
            return ("chw", shape[2], shape[3], shape[1])
        if shape[3] in (1, 3, 4):
            return ("hwc", shape[1], shape[2], shape[3])
    return None


def _to_numpy(a):
    if hasattr(a, "detach"):  # a torch tensor, without importing torch here
        a = a.detach().cpu()
        if str(a.dtype) == "torch.bfloat16":  # numpy has no bfloat16; float32 holds every value exactly
            a = a.float()
        return a.numpy()
    return np.asarray(a)


def _row_image(images, i: int, layout) -> np.ndarray:
    """Row ``i`` as an H×W or H×W×C array (C in 3, 4)."""
    kind, h, w, c = layout
    a = _to_numpy(images[i])
    if kind == "flat":
        a = a.reshape(h, w)
    elif kind == "flat-chw":
        a = a.reshape(c, h, w).transpose(1, 2, 0)
    elif kind == "chw":
        a = a.transpose(1, 2, 0)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    return a


def _display_uint8(a: np.ndarray) -> np.ndarray:
    """uint8 images as they are; anything else scaled by its own minimum and maximum to 0..255."""
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    a = a.astype(np.float64)
    finite = np.isfinite(a)
    if not finite.any():
        return np.zeros(a.shape, np.uint8)
    lo, hi = float(a[finite].min()), float(a[finite].max())
    a = np.where(finite, a, lo)
    a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    return np.ascontiguousarray(np.round(a * 255).astype(np.uint8))


def encode_png(img: np.ndarray) -> bytes:
    """A PNG file of a uint8 H×W (grey), H×W×3 (RGB) or H×W×4 (RGBA) array: numpy and zlib only."""
    img = np.ascontiguousarray(img, dtype=np.uint8)
    if img.ndim == 2:
        color = 0
    elif img.ndim == 3 and img.shape[2] in (3, 4):
        color = 2 if img.shape[2] == 3 else 6
    else:
        raise ValueError(f"encode_png takes H×W, H×W×3 or H×W×4, got shape {img.shape}")
    h, w = img.shape[:2]
    rows = img.reshape(h, -1)
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rows], axis=1).tobytes()  # filter type 0 per row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def _thumb_uri(images, i: int, layout) -> str:
    a = _row_image(images, i, layout)
    step = max(1, math.ceil(max(a.shape[0], a.shape[1]) / MAX_THUMB_SIDE))
    if step > 1:
        a = a[::step, ::step]
    return "data:image/png;base64," + base64.b64encode(encode_png(_display_uint8(a))).decode("ascii")


# ---------------------------------------------------------------------------------------------
# tables
# ---------------------------------------------------------------------------------------------
def _num_classes(issues: LabelIssues) -> int:
    return int(issues.num_classes or int(max(np.max(issues.given_label, initial=-1),
                                             np.max(issues.predicted_label, initial=-1))) + 1)


def given_vs_suggested(issues: LabelIssues) -> np.ndarray:
    """C×C counts over the flagged rows: ``[given label, suggested label]``."""
    C = _num_classes(issues)
    f = np.asarray(issues.is_label_issue, bool)
    m = np.zeros((C, C), np.int64)
    np.add.at(m, (np.asarray(issues.given_label)[f].astype(np.int64),
                  np.asarray(issues.predicted_label)[f].astype(np.int64)), 1)
    return m


class _Names:
    """Class ``c``'s display name: ``class_names[c]`` (a sequence of at least C names, or a mapping
    ``{class index: name}``, where a class without a name shows its number), else the number."""

    def __init__(self, class_names, C: int):
        self.names: dict[int, str] = {}
        if class_names is None:
            return
        if isinstance(class_names, Mapping):
            self.names = _names_from_mapping(class_names)
            return
        if isinstance(class_names, np.ndarray) and class_names.ndim == 1:  # e.g. np.load("classes.npy")
            class_names = class_names.tolist()
        elif not isinstance(class_names, (str, bytes, Sequence, set, frozenset)) and hasattr(class_names, "__iter__"):
            class_names = list(class_names)  # an ordered collection of another kind (e.g. a pandas Index)
        if isinstance(class_names, (str, bytes)) or not isinstance(class_names, Sequence):
            # a string is a sequence of characters, and a set has no order: neither names classes by index
            raise TypeError("class_names must be a list of names (one per class, in class order) or a mapping "
                            f"{{class index: name}}, got {type(class_names).__name__}")
        if len(class_names) < C:
            raise ValueError(f"class_names has {len(class_names)} names for {C} classes")
        self.names = {c: str(v) for c, v in enumerate(class_names)}

    def raw(self, c: int) -> str:
        c = int(c)
        return str(self.names.get(c, c))

    def __call__(self, c: int) -> str:
        return _esc(self.raw(c))


def _names_from_mapping(class_names: Mapping) -> dict[int, str]:
    """``{class index: name}`` with every key a class index (an int >= 0): a key that is no index would
    otherwise never be shown, silently."""
    names = {}
    for k, v in class_names.items():
        if isinstance(k, (bool, np.bool_)) or not isinstance(k, numbers.Integral):
            raise TypeError(f"class_names as a mapping must be keyed by class index (int), got key {k!r}")
        if k < 0:
            raise ValueError(f"class_names as a mapping must be keyed by class index (>= 0), got key {k!r}")
        names[int(k)] = str(v)
    return names


#: a list setting longer than this (e.g. transition_diagonal of 1000 classes) is folded, with its range shown
MAX_LIST_SHOWN = 20


def _summary(issues: LabelIssues) -> str:
    """``issues.summary()``, escaped; where it names only the classes with the most issues (many classes),
    it points to the page's per-class table for the rest."""
    return _esc(issues.summary().replace("issues_per_class() has all", "all in Issues per class below"))


def _settings_value(v) -> str:
    """A setting's value as HTML: a long list folded (``<details>``), its length and range in the summary."""
    if isinstance(v, (list, tuple, np.ndarray)) and len(v) > MAX_LIST_SHOWN:
        head = f"{len(v)} values"
        try:
            a = np.asarray(v, np.float64)
            if a.ndim == 1 and np.isfinite(a).all():
                head += f": min {a.min():.4g}, median {np.median(a):.4g}, max {a.max():.4g}"
        except (TypeError, ValueError):
            pass
        return f"<details><summary>{_esc(head)}</summary>{_esc(_fmt(list(v)))}</details>"
    return _esc(_fmt(v))


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (dict, list, tuple)):
        return json.dumps(v, sort_keys=True, default=str)
    return str(v)


def _by_posterior(issues: LabelIssues) -> bool:
    """True when the flagged set came from the noise model (``flag="posterior"`` or ``"confident"``: no score
    threshold)."""
    return not math.isfinite(float(issues.threshold)) and issues.settings.get("flag") in ("posterior", "confident")


def _flag_note(issues: LabelIssues) -> str:
    """How the flagged set relates to the histogram: a threshold (dashed line), or the posterior rule."""
    if not _by_posterior(issues):
        if issues.settings.get("flag") == "audit":
            return ("Rows with score ≤ the threshold (dashed line) are flagged: there the probability of a wrong "
                    "label, fitted on the audited rows, reaches one half (flag='audit').")
        return "Rows with score ≤ the threshold (dashed line) are flagged."
    flagged = np.asarray(issues.score)[np.asarray(issues.is_label_issue, bool)]
    span = f" Their scores span {flagged.min():.3g} to {flagged.max():.3g}." if flagged.size else ""
    if issues.settings.get("flag") == "confident":
        return ("No threshold on the score: the flagged set has the size of the confident count (at most), the rows "
                "the fitted noise model finds more likely wrong than right first (the surest first), then the rows "
                "whose calibrated probability of their own label is lowest among those with another label to "
                "suggest (flag='confident')." + span)
    return ("No threshold on the score: a row is flagged when the fitted noise model finds its given label more "
            "likely wrong than right (flag='posterior')." + span)


def _audit_text(a: dict) -> str:
    """``settings["audit"]`` (audit.py) in words."""
    lo, hi = a["interval"]
    slo, shi = a["share_interval"]
    return (f"{a['wrong']} of {a['rows']} audited labels wrong (share {a['share']:.1%}, {a['coverage']:.0%} interval "
            f"{slo:.1%}-{shi:.1%}); noise rate estimated {a['rate']:.1%} ({a['estimate']}, {a['coverage']:.0%} interval "
            f"{lo:.1%}-{hi:.1%})" + (f"; P(wrong | score) = 1 / (1 + exp(-({a['intercept']:.4g} + {a['slope']:.4g}·score)))"
                                      if "slope" in a else ""))


def _settings_table(issues: LabelIssues) -> str:
    level = issues.settings.get("level")
    rule = ((("how flagged", f"the confident count, {issues.settings.get('confident_count')} rows: those with "
                         f"P(given label right) < {level} under the fitted noise model first, then those of lowest "
                         "own-label probability that suggest another label")
             if issues.settings.get("flag") == "confident" else
             ("flagged when", f"P(given label right) < {level} under the fitted noise model"))
            if _by_posterior(issues) else ("threshold (flagged: score ≤ it)", float(issues.threshold)))
    rows = [("rows", len(issues)), ("flagged", int(np.sum(issues.is_label_issue))), rule,
            ("classes", _num_classes(issues))]
    rows += [(k, _audit_text(v) if k == "audit" else v) for k, v in issues.settings.items() if k != "threshold"]
    body = "".join(f"<tr><th>{_esc(k)}</th><td>{_settings_value(v)}</td></tr>" for k, v in rows)
    return f'<table class="settings">{body}</table>'


def _grid(issues: LabelIssues, order: np.ndarray, images, layout, name: _Names, true_labels) -> str:
    cards = []
    for rank, i in enumerate(order):
        i = int(i)
        g, p = int(issues.given_label[i]), int(issues.predicted_label[i])
        flagged = bool(issues.is_label_issue[i])
        thumb = ""
        if images is not None:
            thumb = f'<img class="thumb" alt="row {i}" src="{_thumb_uri(images, i, layout)}">'
        true = ""
        if true_labels is not None:
            t = int(true_labels[i])
            cls = "noisy" if t != g else "same"  # noisy: the given label is wrong
            true = (f'<div class="true {cls}" title="true label {name(t)}: known only because the noise is synthetic">'
                    f'true<sup>*</sup>: {name(t)}</div>')
        cards.append(
            f'<div class="card{" flagged" if flagged else ""}" data-index="{i}">{thumb}'
            f'<div class="meta"><div class="head"><span class="rank">#{rank + 1}</span>'
            f'<span class="idx">row {i}</span></div>'
            f'<div class="labels" title="given: {name(g)} → suggested: {name(p)}"><div class="given">{name(g)}</div>'
            f'<div class="sugg">→ {name(p)}</div></div>'
            f'<div class="ls" title="label score {float(issues.label_score[i]):.6g}, score {float(issues.score[i]):.6g}">'
            f'label score <b>{float(issues.label_score[i]):.3f}</b></div>{true}</div></div>')
    return f'<div class="grid">{"".join(cards)}</div>'


def _matrix(issues: LabelIssues, name: _Names) -> str:
    m = given_vs_suggested(issues)
    C = m.shape[0]
    total = int(m.sum())
    if total == 0:
        return '<p class="note">No row is flagged.</p>'
    keep = np.arange(C)
    note = ""
    if C > MAX_MATRIX_CLASSES:
        involved = m.sum(1) + m.sum(0)
        keep = np.sort(np.argsort(-involved, kind="stable")[:MAX_MATRIX_CLASSES])
        keep = keep[involved[keep] > 0]
        note = (_top_pairs(m, name) +
                f'<p class="note">{C} classes: showing the {len(keep)} involved in the most flagged rows '
                f'({int(m[np.ix_(keep, keep)].sum())} of {total} flagged rows).</p>')
    mx = max(int(m[np.ix_(keep, keep)].max()), 1)
    head = "".join(f'<th class="col" title="{int(c)}: {name(c)}"><div class="cn">{name(c)}</div></th>' for c in keep)
    vert = " vert" if any(len(name.raw(c)) > 4 for c in keep) else ""  # long names: the column heads stand upright
    rows = []
    for g in keep:
        cells = []
        for p in keep:
            v = int(m[g, p])
            alpha = 0.08 + 0.82 * v / mx if v else 0.0
            style = f' style="background: rgba(200, 60, 40, {alpha:.3f});{" color: #fff;" if alpha > 0.5 else ""}"' if v else ""
            cells.append(f'<td data-given="{int(g)}" data-suggested="{int(p)}"{style}>{v if v else ""}</td>')
        rows.append(f'<tr><th class="row" title="{int(g)}: {name(g)}"><div class="cn">{name(g)}</div></th>'
                    f'{"".join(cells)}<td class="rowsum">{int(m[g].sum())}</td></tr>')
    foot = "".join(f'<td class="colsum">{int(m[:, p].sum())}</td>' for p in keep)
    return (f'{note}<table class="matrix{vert}"><thead><tr><th class="corner">given ↓ / suggested →</th>{head}'
            f'<th>flagged</th></tr></thead><tbody>{"".join(rows)}</tbody>'
            f'<tfoot><tr><th>flagged</th>{foot}<td class="colsum">{total}</td></tr></tfoot></table>')


def _top_pairs(m: np.ndarray, name: _Names, k: int = TOP_PAIRS) -> str:
    """The ``k`` most frequent (given, suggested) pairs of the flagged rows: with many classes the matrix
    shows a corner of the confusions, and these are where a relabelling pass pays most."""
    g, p = np.nonzero(m)
    order = np.lexsort((p, g, -m[g, p]))[:k]  # most rows first, then by class
    total = int(m.sum())
    covered = int(m[g[order], p[order]].sum())
    rows = "".join(f'<tr data-given="{int(g[i])}" data-suggested="{int(p[i])}"><td><div class="cn" '
                   f'title="{int(g[i])}: {name(g[i])}">{name(g[i])}</div></td><td>→</td><td><div class="cn" '
                   f'title="{int(p[i])}: {name(p[i])}">{name(p[i])}</div></td><td class="count">{int(m[g[i], p[i]])}</td></tr>'
                   for i in order)
    return (f'<p class="note">The {len(order)} most frequent given → suggested pairs ({covered} of {total} '
            f'flagged rows):</p><table class="pairs"><thead><tr><th>given</th><th></th><th>suggested</th>'
            f'<th>rows</th></tr></thead><tbody>{rows}</tbody></table>')


def _per_class(issues: LabelIssues, name: _Names) -> str:
    C = _num_classes(issues)
    per = issues.issues_per_class()
    n_rows = np.bincount(np.asarray(issues.given_label, np.int64), minlength=C)
    mx = max(max(per.values(), default=0), 1)
    rows = []
    for c in range(C):
        k, n = int(per.get(c, 0)), int(n_rows[c]) if c < len(n_rows) else 0
        share = f"{k / n:.1%}" if n else "–"
        rows.append(f'<tr data-class="{c}"><th title="{c}: {name(c)}"><div class="cn">{name(c)}</div></th><td>{n}</td><td class="count">{k}</td><td>{share}</td>'
                    f'<td class="barcell"><div class="bar" style="width: {100 * k / mx:.1f}%"></div></td></tr>')
    table = ('<table class="perclass"><thead><tr><th>given class</th><th>rows</th><th>flagged</th><th>share</th>'
             f'<th class="barcell"></th></tr></thead><tbody>{"".join(rows)}</tbody></table>')
    if C > MAX_MATRIX_CLASSES:  # a long table scrolls in its own box
        return (f'<p class="note">{C} classes (the table scrolls); most flagged: '
                f'{_esc(_most_flagged(per, name))}.</p><div class="scroll">{table}</div>')
    return table


def _most_flagged(per: Mapping[int, int], name, k: int = 10) -> str:
    top = sorted((c for c, v in per.items() if v), key=lambda c: (-per[c], c))[:k]
    short = lambda t: t if len(t) <= 40 else t[:39] + "…"  # noqa: E731
    return ", ".join(f"{short(name.raw(c))}: {per[c]}" for c in top) or "none"


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0; color: #1d1d1f;
       background: #f4f5f7; }
main { max-width: 1150px; margin: 0 auto; padding: 20px 24px 40px; }
h1 { font-size: 1.6em; margin: 0.2em 0 0.3em; }
h2 { font-size: 1.2em; margin: 1.6em 0 0.5em; border-bottom: 1px solid #d5d7dc; padding-bottom: 4px; }
section { background: #fff; border-radius: 8px; padding: 4px 18px 16px; margin-top: 16px;
          box-shadow: 0 1px 2px rgba(0,0,0,0.06); }
.summary { font-size: 1.05em; background: #fff7e6; border-left: 4px solid #e0a030; padding: 8px 12px; }
.note { color: #666; font-size: 0.9em; }
.synthetic { background: #eef6ee; border-left: 4px solid #4a9a4a; padding: 6px 12px; font-size: 0.92em; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { padding: 3px 8px; text-align: left; }
table.settings th { color: #555; font-weight: 600; padding-right: 18px; vertical-align: top; }
table.settings td { font-family: ui-monospace, Menlo, Consolas, monospace; overflow-wrap: anywhere; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(124px, 1fr)); gap: 10px; }
.card { border: 1px solid #d5d7dc; border-radius: 6px; padding: 8px; background: #fff; font-size: 0.82em;
        text-align: center; }
.card.flagged { border-color: #c83c28; box-shadow: inset 0 3px 0 #c83c28; }
.thumb { display: block; margin: 2px auto 6px; width: 84px; height: 84px; object-fit: contain;
         image-rendering: pixelated; background: #000; border-radius: 3px; }
.meta { line-height: 1.4; }
.head { display: flex; justify-content: space-between; }
.rank { font-weight: 700; }
.idx { color: #666; }
.labels { font-size: 1.1em; line-height: 1.25; margin: 2px 0; }
.labels > div, .true { display: -webkit-box; -webkit-box-orient: vertical; -webkit-line-clamp: 2; overflow: hidden;
                       overflow-wrap: anywhere; }
.overview { display: flex; flex-wrap: wrap; gap: 16px; align-items: stretch; margin-top: 16px; }
.overview > section { flex: 1 1 360px; margin-top: 0; overflow-x: auto; }
.overview > section#matrix { flex: 0 1 auto; }
details summary { cursor: pointer; color: #555; }
.given { color: #c83c28; font-weight: 600; }
.sugg { color: #2a7a2a; font-weight: 600; }
.ls { color: #555; white-space: nowrap; }
.true { font-weight: 600; }
.true.noisy { color: #2a7a2a; }
.true.same { color: #8a6d00; }
table.matrix td, table.matrix th { border: 1px solid #e1e3e8; text-align: center; min-width: 2.2em; }
table.matrix .cn, table.perclass .cn { max-width: 14em; overflow: hidden; text-overflow: ellipsis;
                                       white-space: nowrap; }
table.perclass .cn { max-width: 24em; }
table.matrix th.row .cn { text-align: right; }
table.matrix.vert thead th.col { vertical-align: bottom; }
table.matrix.vert thead th.col .cn { writing-mode: vertical-rl; transform: rotate(180deg); max-height: 10em;
                                     max-width: none; margin: 0 auto; }
.scroll { max-height: 34em; overflow-y: auto; }
table.matrix th.corner { font-weight: 400; color: #666; font-size: 0.85em; white-space: nowrap; }
table.matrix .rowsum, table.matrix .colsum { color: #555; background: #f4f5f7; }
table.perclass td, table.perclass th, table.pairs td, table.pairs th { border-bottom: 1px solid #eceef1; }
table.pairs .cn { max-width: 18em; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
table.pairs td.count { font-weight: 700; text-align: right; }
table.pairs { margin-bottom: 10px; }
table.perclass td.count { font-weight: 700; }
.barcell { width: 160px; }
.bar { height: 12px; background: #c83c28; border-radius: 2px; }
svg.hist { max-width: 100%; height: auto; font-size: 12px; }
svg.hist text { fill: #333; }
svg.hist text.on-bar { fill: #fff; }
"""


def _check_images(images):
    """``images`` with a shape: an array, memory map or tensor as given (only the rows shown are read),
    a nested list as a numpy array."""
    if images is None or hasattr(images, "shape"):
        return images
    try:
        a = np.asarray(images)
    except ValueError:  # ragged
        a = None
    if a is None or not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
        raise TypeError("images must be an array, memory map or tensor of N images (or a list of equally shaped "
                        f"numeric images), got {type(images).__name__}")
    return a


def _check_true_labels(true_labels, n: int) -> np.ndarray:
    """``true_labels`` as int64: integers, or floats holding whole numbers (a float that is not would be
    truncated into another class, silently)."""
    t = _to_numpy(true_labels).reshape(-1)
    if t.shape[0] != n:
        raise ValueError(f"true_labels has {t.shape[0]} entries, the result {n}")
    if np.issubdtype(t.dtype, np.floating):
        bad = np.flatnonzero(~np.isfinite(t) | (t != np.round(t)))
        if bad.size:
            raise ValueError(f"true_labels must be integer class labels, got {float(t[bad[0]])!r} at row {int(bad[0])}")
    elif not np.issubdtype(t.dtype, np.integer):
        raise TypeError(f"true_labels must be integer class labels, got dtype {t.dtype}")
    return t.astype(np.int64)


def _check_max_samples(max_samples) -> int:
    if isinstance(max_samples, (bool, np.bool_)) or not isinstance(max_samples, numbers.Integral):
        raise TypeError(f"max_samples must be an int >= 0 (rows shown in the grid), got {max_samples!r}")
    if max_samples < 0:
        raise ValueError(f"max_samples must be >= 0, got {max_samples}")
    return int(max_samples)


def render_report(issues: LabelIssues, *, images=None, class_names=None, title: str = "Label issues",
                  max_samples: int = 100, true_labels=None, true_label_note: str = _SYNTHETIC_NOTE) -> str:
    """The page ``write_report`` writes, as a string (see the module doc)."""
    n = len(issues)
    C = _num_classes(issues)
    name = _Names(class_names, C)
    images = _check_images(images)
    layout = None
    if images is not None:
        layout = image_shape(images.shape)
        if layout is None:
            raise ValueError(f"images of shape {tuple(images.shape)} are not N×H×W, N×C×H×W, N×H×W×C or "
                             "N×(H·W) with H = W")
        if int(images.shape[0]) != n:
            raise ValueError(f"images has {images.shape[0]} rows, the result {n}")
    if true_labels is not None:
        true_labels = _check_true_labels(true_labels, n)
    max_samples = _check_max_samples(max_samples)
    order = issues.ranking()[:max_samples]
    flagged = int(np.sum(issues.is_label_issue))
    shown_flagged = int(np.sum(np.asarray(issues.is_label_issue)[order]))

    synthetic = ""
    if true_labels is not None:
        wrong = true_labels != np.asarray(issues.given_label)
        f = np.asarray(issues.is_label_issue, bool)
        prec = f"{(wrong & f).sum() / f.sum():.1%}" if f.sum() else "–"
        rec = f"{(wrong & f).sum() / wrong.sum():.1%}" if wrong.sum() else "–"
        synthetic = (f'<p class="synthetic">* {_esc(true_label_note)}. Against them: {int(wrong.sum())} of {n} given '
                     f'labels are wrong ({wrong.mean():.1%}); precision of the flagged set {prec}, recall {rec}.</p>')

    grid_note = (f"The {len(order)} rows with the lowest score, most suspicious first ({shown_flagged} of them "
                 f"flagged, outlined in red). Given label in red → the label the clean subset suggests in green. "
                 "Label score in [0, 1]: lower is more suspicious (hover it for the exact value and the raw score).")
    if true_labels is not None:
        grid_note += " true*: the true label (synthetic noise only)."
    hist, hist_note = histogram_svg(issues, true_labels)
    hist_note = f'<p class="note">{_esc(hist_note)}</p>' if hist_note else ""
    body = [
        f"<header><h1>{_esc(title)}</h1>",
        f'<p class="summary">{_summary(issues)}</p>{synthetic}</header>',
        f'<section id="settings"><h2>Settings</h2>{_settings_table(issues)}</section>',
        f'<section id="histogram"><h2>Score histogram</h2><p class="note">{_esc(_flag_note(issues))}</p>'
        f"{hist}{hist_note}</section>",
        '<div class="overview">',
        f'<section id="matrix"><h2>Given vs suggested label, flagged rows</h2>'
        f'<p class="note">{flagged} flagged rows by given label (rows) and suggested label (columns).</p>'
        f"{_matrix(issues, name)}</section>",
        f'<section id="per-class"><h2>Issues per class</h2>{_per_class(issues, name)}</section>',
        "</div>",
        f'<section id="samples"><h2>Most suspicious samples</h2><p class="note">{_esc(grid_note)}</p>'
        f"{_grid(issues, order, images, layout, name, true_labels)}</section>",
    ]
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_esc(title)}</title><style>{_CSS}</style></head>\n<body><main>\n"
            + "\n".join(body) + "\n</main></body></html>\n")


def write_report(issues: LabelIssues, path, *, images=None, class_names=None, title: str = "Label issues",
                 max_samples: int = 100, true_labels=None, true_label_note: str = _SYNTHETIC_NOTE) -> str:
    """Write one self-contained HTML report of ``issues`` to ``path`` (created: ``FileExistsError`` if it
    exists) and return the path.

    ``images``: the dataset's rows as images for thumbnails (N×H×W, N×C×H×W, N×H×W×C, or N×(H·W)
    square; numpy, memory map or tensor; only the shown rows are read; each is scaled by its own range
    for display; a nested list is read as an array).  ``class_names``: one name per class, in class order,
    or a mapping ``{class index: name}`` (a class without a name shows its number; default: the class
    numbers).  ``max_samples``:
    rows shown in the grid.  ``true_labels``: the true labels where the noise is synthetic (a demo);
    shown as an extra, marked line per sample and a precision/recall line, under ``true_label_note``
    (default: known only because the noise is synthetic)."""
    page = render_report(issues, images=images, class_names=class_names, title=title, max_samples=max_samples,
                         true_labels=true_labels, true_label_note=true_label_note)
    path = os.fspath(path)
    with open(path, "x", encoding="utf-8") as fh:
        fh.write(page)
    return path
