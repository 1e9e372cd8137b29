"""The report's score histogram: an inline SVG whose axis stays readable where the scores pile up.

``knn``'s score is a log-odds clipped at ±27.6, so most rows of a clean-cut dataset sit on one of two
values and a plain histogram is two spikes with nothing readable between.  The axis therefore covers
the rows between (``score_axis``): a pile tied at the lowest or highest score (``PILE_SHARE``) and a few
far outliers (``FENCE_IQR``) get their own labelled bar beside it.  The bins are closed on the right,
``(e_i, e_i+1]``, as the flag rule ``score <= threshold`` is, and the threshold sits on a bin edge, so
every bar lies wholly on one side of the dashed line.
"""
from __future__ import annotations

import html
import math
from typing import NamedTuple

import numpy as np

from .result import LabelIssues

__all__ = ["histogram_svg", "score_axis", "PILE_SHARE", "FENCE_IQR"]

#: a pile of rows tied at the lowest or the highest score (``knn``'s log-odds clipped at ±27.6) is drawn as
#: its own bar beside the axis when it holds at least this share of the rows (and at least 3)
PILE_SHARE = 0.02
#: rows beyond this many interquartile ranges outside the quartiles of the other scores go to the end bars
FENCE_IQR = 3.0

RED, BLUE = "#c83c28", "#6f8fb8"
# the plot's geometry in SVG units: size, margins (left, right, top, bottom), end bar width and its gap
W, H, L, R, T, B = 1060, 300, 56, 16, 46, 44
PW, PH = W - L - R, H - T - B
EB, GAP = 44, 18


def _esc(s) -> str:
    return html.escape(str(s), quote=True)


def nice_step(lo: float, hi: float, most: int) -> float:
    """The round step (1, 2 or 5 × a power of ten) that puts at most ``most`` ticks on ``[lo, hi]``."""
    raw = (hi - lo) / max(most - 1, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def nice_ticks(lo: float, hi: float, most: int = 9) -> np.ndarray:
    """At most ``most`` round tick values (steps of 1, 2 or 5 × a power of ten) within ``[lo, hi]``."""
    step = nice_step(lo, hi, most)
    ticks = np.arange(math.ceil(lo / step) * step, hi + 1e-9 * step, step)
    return np.where(np.abs(ticks) < 1e-9 * step, 0.0, ticks)  # no "-0"


def tick_text(v: float, step: float) -> str:
    """A tick label with as many decimals as the step needs (``.3g`` would print 13.95 and 14.0 both as 14)."""
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    return f"{v:.{decimals}f}"


def _core_rows(sf: np.ndarray) -> np.ndarray:
    """The rows the axis is fitted to: all but the piles tied at the extremes (when they are piles)."""
    lo_v, hi_v = float(sf.min()), float(sf.max())
    core = np.ones(sf.size, bool)
    if hi_v > lo_v:
        need = max(3, PILE_SHARE * sf.size)
        at_lo = sf <= lo_v + 1e-6 * max(1.0, abs(lo_v))
        at_hi = sf >= hi_v - 1e-6 * max(1.0, abs(hi_v))
        if at_lo.sum() >= need:
            core &= ~at_lo
        if at_hi.sum() >= need:
            core &= ~at_hi
        if not core.any():  # nothing but the piles: plot them on one axis
            core[:] = True
    return core


def _threshold_marker(sf: np.ndarray, thr: float, lo: float, hi: float) -> tuple[float, float, str]:
    """``(lo, hi, marker)`` with the threshold ``thr`` placed (``score_axis``' doc): the axis widens to take
    it unless it falls between an end bar and the axis or beyond an end bar."""
    if thr < lo:
        left = sf[sf < lo]
        if left.size and thr >= left.max():
            return lo, hi, "left-gap"  # every row of the left bar is flagged, none on the axis
        if left.size and thr < left.min():
            return lo, hi, "left-edge"  # nothing is flagged
        return thr, hi, "axis"
    if thr > hi:
        right = sf[sf > hi]
        if right.size and thr < right.min():
            return lo, hi, "right-gap"  # every row on the axis is flagged, none of the right bar
        if right.size and thr >= right.max():
            return lo, hi, "right-edge"  # everything is flagged
        return lo, thr, "axis"
    return lo, hi, "axis"


def score_axis(sf: np.ndarray, thr: float):
    """``(lo, hi, marker)``: the histogram's axis covers ``[lo, hi]``; the scores below ``lo`` and above ``hi``
    are drawn as end bars beside it.  The axis leaves out the piles tied at the extremes (a clipped score)
    and far outliers (``FENCE_IQR``), so that the rows between are readable.  ``marker``: where the
    threshold goes: ``"axis"`` (at its value), ``"left-gap"`` / ``"right-gap"`` (between an end bar and the
    axis), ``"left-edge"`` / ``"right-edge"`` (beyond an end bar), or ``None`` (no finite threshold)."""
    c = sf[_core_rows(sf)]
    lo, hi = float(c.min()), float(c.max())
    q1, q3 = np.percentile(c, [25, 75])
    if q3 > q1:  # a few far outliers aside, where they would squeeze the other rows into half the axis or less
        flo, fhi = max(lo, float(q1 - FENCE_IQR * (q3 - q1))), min(hi, float(q3 + FENCE_IQR * (q3 - q1)))
        few = int(((c < flo) | (c > fhi)).sum()) <= max(1, 0.01 * c.size)  # outliers, not a population
        if few and hi - lo > 2 * (fhi - flo):
            lo, hi = flo, fhi
    if not math.isfinite(thr):
        return lo, hi, None
    return _threshold_marker(sf, thr, lo, hi)


class EndBar(NamedTuple):
    """The rows beside the axis on one side: counts by colour, its label, and whether they are a tie."""
    red: int
    blue: int
    text: str
    pile: bool
    vmin: float
    vmax: float


class Bins(NamedTuple):
    """The histogram's content: bin ``edges`` on the axis, the counts ``red``/``blue`` per bin, the end
    bars by side, and where the threshold marker goes (``score_axis``)."""
    edges: np.ndarray
    red: np.ndarray
    blue: np.ndarray
    ends: dict
    marker: str | None


def _edges(lo: float, hi: float, rows: int, thr: float, marker) -> np.ndarray:
    """Bin edges over ``[lo, hi]`` (``lo < hi``) (10 to 60 bins by the rows on the axis), padded a quarter bin each side;
    with the threshold on the axis, shifted so that it falls on an edge."""
    nb = int(min(60, max(10, math.ceil(2 * math.sqrt(max(rows, 1))))))
    w = (hi - lo) / nb
    lo_ax, hi_ax = lo - 0.25 * w, hi + 0.25 * w
    if marker != "axis":
        return np.linspace(lo_ax, hi_ax, nb + 1)
    start = thr - math.ceil((thr - lo_ax) / w - 1e-9) * w
    nb = int(math.ceil((hi_ax - start) / w - 1e-9))
    edges = start + w * np.arange(nb + 1)
    # start + w·m may miss thr by an ulp, and a row scored exactly thr (flagged) would fall right of the line
    edges[int(round((thr - start) / w))] = thr
    return edges


def _end_bar(v: np.ndarray, red: np.ndarray, side: str, lo: float, hi: float) -> EndBar:
    """The end bar of the scores ``v`` (colours ``red``) beyond the axis ``[lo, hi]`` on ``side``."""
    pile = v.size >= 2 and v.max() - v.min() <= 1e-6 * max(1.0, abs(float(v.min())))
    if pile:
        text = f"= {float(v.mean()):.4g}"
    else:
        fine = nice_step(lo, hi, 9) / 10
        text = f"< {tick_text(lo, fine)}" if side == "left" else f"> {tick_text(hi, fine)}"
    return EndBar(int(red.sum()), int((~red).sum()), text, pile, float(v.min()), float(v.max()))


def bin_scores(sf: np.ndarray, red: np.ndarray, thr: float) -> Bins:
    """The ``Bins`` of the finite scores ``sf`` coloured by ``red`` (bool), with threshold ``thr``."""
    lo, hi, marker = score_axis(sf, thr)
    left, right = sf < lo, sf > hi
    inner = ~left & ~right
    if hi <= lo:  # one value on the axis: a unit-wide axis around it (wider where ±0.5 is lost to rounding)
        half = max(0.5, 1e-9 * abs(lo))
        lo, hi = lo - half, hi + half
    edges = _edges(lo, hi, int(inner.sum()), thr, marker)
    nb = len(edges) - 1
    # bins closed on the right, (e_i, e_i+1], as the flagging rule score <= threshold
    idx = np.clip(np.searchsorted(edges, sf[inner], side="left") - 1, 0, nb - 1)
    counts = [np.bincount(idx[colour], minlength=nb) for colour in (red[inner], ~red[inner])]
    ends = {side: _end_bar(sf[mask], red[mask], side, lo, hi)
            for side, mask in (("left", left), ("right", right)) if mask.any()}
    return Bins(edges, counts[0], counts[1], ends, marker)


class _Frame:
    """Maps scores and counts to SVG coordinates: the axis between the end bars, counts up to ``ytop``."""

    def __init__(self, bins: Bins):
        self.ax0 = L + (4 + EB + GAP if "left" in bins.ends else 0)
        self.ax1 = L + PW - (4 + EB + GAP if "right" in bins.ends else 0)
        inner = bins.red + bins.blue
        ymax = int(inner.max()) if inner.sum() else max(e.red + e.blue for e in bins.ends.values())
        ymax = max(ymax, 1)
        self.ystep = max(1, int(nice_step(0, ymax, 5)))
        self.ytop = int(math.ceil(ymax / self.ystep) * self.ystep)
        self.e0, self.e1 = float(bins.edges[0]), float(bins.edges[-1])

    def x(self, v: float) -> float:
        return self.ax0 + (v - self.e0) / (self.e1 - self.e0) * (self.ax1 - self.ax0)

    def y(self, c: float) -> float:
        return T + PH - min(c, self.ytop) / self.ytop * PH


def _svg_frame(f: _Frame) -> list[str]:
    parts = [f'<rect x="{L}" y="{T}" width="{PW}" height="{PH}" fill="#ffffff" stroke="#ccc"/>',
             f'<rect x="{f.ax0}" y="{T}" width="{f.ax1 - f.ax0}" height="{PH}" fill="#fafafa"/>']
    for c in range(0, f.ytop + 1, f.ystep):
        parts.append(f'<line x1="{L}" y1="{f.y(c):.1f}" x2="{L + PW}" y2="{f.y(c):.1f}" stroke="#e6e6e6"/>'
                     f'<text x="{L - 6}" y="{f.y(c) + 4:.1f}" text-anchor="end">{c}</text>')
    return parts


def _svg_bins(f: _Frame, bins: Bins) -> list[str]:
    parts = []
    for j in range(len(bins.edges) - 1):
        x0, x1 = f.x(bins.edges[j]), f.x(bins.edges[j + 1])
        wbar = max(x1 - x0 - 1, 0.5)
        a, b = bins.red[j], bins.blue[j]
        if a:
            parts.append(f'<rect class="hbar" x="{x0:.2f}" y="{f.y(a):.1f}" width="{wbar:.2f}" '
                         f'height="{f.y(0) - f.y(a):.1f}" fill="{RED}"/>')
        if b:
            parts.append(f'<rect class="hbar" x="{x0:.2f}" y="{f.y(a + b):.1f}" width="{wbar:.2f}" '
                         f'height="{f.y(a) - f.y(a + b):.1f}" fill="{BLUE}"/>')
    return parts


def _svg_end_bar(f: _Frame, side: str, e: EndBar, legend) -> list[str]:
    """One end bar: stacked as the axis' bars; taller than the axis, it is cut and its count written on it."""
    k = e.red + e.blue
    xb = L + 4 if side == "left" else L + PW - 4 - EB
    top = f.y(k)
    ya = top + (f.y(0) - top) * e.blue / k  # the red share at the bottom, as on the axis
    what = (f"at the {'lowest' if side == 'left' else 'highest'} score {e.vmin:.6g}" if e.pile else
            f"{'below' if side == 'left' else 'above'} the axis, {e.vmin:.6g} to {e.vmax:.6g}")
    tip = f"{k} rows {what}: {e.red} {legend[0][1]}, {e.blue} {legend[1][1]}"
    parts = [f'<g class="end-bar" data-side="{side}" data-count="{k}"><title>{_esc(tip)}</title>']
    if e.red:
        parts.append(f'<rect x="{xb}" y="{ya:.1f}" width="{EB}" height="{f.y(0) - ya:.1f}" fill="{RED}"/>')
    if e.blue:
        parts.append(f'<rect x="{xb}" y="{top:.1f}" width="{EB}" height="{ya - top:.1f}" fill="{BLUE}"/>')
    if k > f.ytop:
        for dy in (10, 16):
            parts.append(f'<line x1="{xb - 3}" y1="{T + dy + 5}" x2="{xb + EB + 3}" y2="{T + dy - 5}" '
                         f'stroke="#fff" stroke-width="3"/>')
        parts.append(f'<text x="{xb + EB / 2}" y="{T + 40}" text-anchor="middle" font-weight="bold" '
                     f'class="count on-bar">{k}</text>')
    else:
        parts.append(f'<text x="{xb + EB / 2}" y="{top - 4:.1f}" text-anchor="middle" font-weight="bold" '
                     f'class="count">{k}</text>')
    parts.append(f'<text x="{xb + EB / 2}" y="{T + PH + 18}" text-anchor="middle">{_esc(e.text)}</text></g>')
    return parts


def _svg_ticks(f: _Frame) -> list[str]:
    step = nice_step(f.e0, f.e1, 9)
    parts = [f'<line x1="{f.x(v):.1f}" y1="{T + PH}" x2="{f.x(v):.1f}" y2="{T + PH + 5}" stroke="#555"/>'
             f'<text class="tick" x="{f.x(v):.1f}" y="{T + PH + 18}" text-anchor="middle">{tick_text(v, step)}</text>'
             for v in nice_ticks(f.e0, f.e1)]
    parts.append(f'<text x="{L + PW / 2:.0f}" y="{H - 6}" text-anchor="middle">score (lower: more suspicious)</text>')
    return parts


def _svg_threshold(f: _Frame, marker: str, thr: float) -> list[str]:
    xt = {"axis": f.x(thr) if marker == "axis" else 0, "left-gap": f.ax0 - GAP / 2, "right-gap": f.ax1 + GAP / 2,
          "left-edge": L + 2, "right-edge": L + PW - 2}[marker]
    anchor = "start" if xt < L + 70 else "end" if xt > L + PW - 70 else "middle"
    return [f'<line class="threshold" data-where="{marker}" x1="{xt:.2f}" y1="{T}" x2="{xt:.2f}" '
            f'y2="{T + PH}" stroke="#111" stroke-width="2" stroke-dasharray="5,3"/>'
            f'<text x="{xt:.1f}" y="{T - 8}" text-anchor="{anchor}" font-weight="bold">threshold {thr:.4g}</text>']


def _svg_legend(legend) -> list[str]:
    parts, lx = [], L
    for color, label in legend:
        parts.append(f'<rect x="{lx}" y="6" width="12" height="12" fill="{color}"/>'
                     f'<text x="{lx + 18}" y="16">{_esc(label)}</text>')
        lx += 18 + 7 * len(label) + 24
    return parts


def end_bar_note(ends: dict) -> str:
    """The sentence under the plot that says what the end bars hold (``""`` without end bars)."""
    if not ends:
        return ""
    said = []
    for side, e in ends.items():
        where = ("tied at the lowest score" if side == "left" else "tied at the highest score") if e.pile else \
            ("below the axis" if side == "left" else "above the axis")
        k = e.red + e.blue
        said.append(f"{k} {'row' if k == 1 else 'rows'} {where} ({e.text.lstrip('= ')})")
    return (f"The bars beside the axis hold the rows outside it: {' and '.join(said)}. The axis spans the "
            "other rows, so that the threshold region stays readable; a bar taller than the axis is cut, its "
            "count written on it (hover a bar for its breakdown).")


def histogram_svg(issues: LabelIssues, true_labels) -> tuple[str, str]:
    """The SVG of the score histogram, and a note on its end bars (``""`` when it has none).  Bars are
    split by the true labels where given (demo data), else by the flagged set."""
    s = np.asarray(issues.score, np.float64)
    finite = np.isfinite(s)
    sf = s[finite]
    if sf.size == 0:
        return '<p class="note">No finite score to plot.</p>', ""
    if true_labels is not None:
        red = (np.asarray(true_labels) != np.asarray(issues.given_label))[finite]
        legend = [(RED, "given label wrong (known: synthetic noise)"), (BLUE, "given label right")]
    else:
        red = np.asarray(issues.is_label_issue, bool)[finite]
        legend = [(RED, "flagged"), (BLUE, "not flagged")]
    thr = float(issues.threshold)
    bins = bin_scores(sf, red, thr)
    f = _Frame(bins)
    parts = [f'<svg class="hist" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" '
             f'aria-label="histogram of scores">', *_svg_frame(f), *_svg_bins(f, bins)]
    for side, e in bins.ends.items():
        parts += _svg_end_bar(f, side, e, legend)
    parts += _svg_ticks(f)
    if bins.marker is not None:
        parts += _svg_threshold(f, bins.marker, thr)
    parts += [*_svg_legend(legend), "</svg>"]
    if not finite.all():
        parts.append(f'<p class="note">{int((~finite).sum())} rows with a non-finite score are not plotted.</p>')
    return "".join(parts), end_bar_note(bins.ends)
