"""``fastreweight.label_issues.report.write_report``: the self-contained HTML report, and ``train --report``."""
import base64
import io
import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
import torch

from fastreweight.label_issues import LabelIssues
from fastreweight.label_issues.report import encode_png, given_vs_suggested, image_shape, render_report, write_report

XSS = "<script>alert(1)</script>"


def _issues(n=240, C=5, seed=0, settings=None) -> LabelIssues:
    g = np.random.default_rng(seed)
    given = g.integers(0, C, n)
    pred = np.where(g.random(n) < 0.7, given, g.integers(0, C, n))
    score = g.standard_normal(n) + 1.5 * (pred == given) - 0.5
    return LabelIssues(given_label=given, predicted_label=pred, score=score.astype(np.float32),
                       label_score=1 / (1 + np.exp(-score)), is_label_issue=score <= 0.0, threshold=0.0,
                       estimated_noise_rate=0.25, num_classes=C, settings=settings or {"scorer": "test"})


def _images(n, h=8, w=8, seed=1):
    return np.random.default_rng(seed).random((n, h, w)).astype(np.float32)


def _thumbs(page):
    return re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)


def _decode_png(b64):
    import matplotlib.image as mpimg

    return mpimg.imread(io.BytesIO(base64.b64decode(b64)), format="png")


def test_sections_thumbnails_and_no_external_resources(tmp_path):
    iss = _issues()
    imgs = _images(len(iss))
    path = write_report(iss, tmp_path / "r.html", images=imgs, max_samples=30)
    page = open(path, encoding="utf-8").read()
    for section in ('id="settings"', 'id="samples"', 'id="matrix"', 'id="histogram"', 'id="per-class"', "<svg"):
        assert section in page
    assert iss.summary() in page  # no character of the summary needs escaping
    assert "http" not in page.lower()  # loads nothing: no URL at all (inline SVG needs no xmlns)
    assert "<script" not in page.lower() and "<link" not in page.lower()
    srcs = re.findall(r'src="([^"]*)"', page)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    thumbs = _thumbs(page)
    assert len(thumbs) == 30
    # the first card is the most suspicious row, its thumbnail that row scaled to [0, 1]
    first = int(iss.ranking()[0])
    assert re.search(r'data-index="(\d+)"', page).group(1) == str(first)
    got = _decode_png(thumbs[0])
    a = imgs[first]
    want = np.round((a - a.min()) / (a.max() - a.min()) * 255) / 255
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert page.count('class="card flagged"') == int(iss.is_label_issue[iss.ranking()[:30]].sum())


def test_matrix_and_per_class_counts_equal_numpy(tmp_path):
    iss = _issues(n=500, C=6, seed=3)
    page = render_report(iss)
    f = iss.is_label_issue
    want = np.zeros((6, 6), int)
    for g, p in zip(iss.given_label[f], iss.predicted_label[f]):
        want[g, p] += 1
    np.testing.assert_array_equal(given_vs_suggested(iss), want)
    got = np.zeros((6, 6), int)
    cells = re.findall(r'<td data-given="(\d+)" data-suggested="(\d+)"[^>]*>(\d*)</td>', page)
    assert len(cells) == 36
    for g, p, v in cells:
        got[int(g), int(p)] = int(v or 0)
    np.testing.assert_array_equal(got, want)
    per = dict(re.findall(r'<tr data-class="(\d+)">.*?<td class="count">(\d+)</td>', page))
    assert {int(k): int(v) for k, v in per.items()} == {c: int((iss.given_label[f] == c).sum()) for c in range(6)}


def test_every_user_string_is_escaped():
    names = [XSS, 'quo"te', "amp&ersand", "<b>bold</b>"]
    settings = {XSS: 'x" onmouseover="alert(2)', "note": "a & b <img src=x onerror=alert(3)>", "nested": {"k": XSS}}
    iss = _issues(C=4, settings=settings)
    page = render_report(iss, images=_images(len(iss)), class_names=names, title=f'{XSS} "title" & more',
                         true_labels=iss.given_label)
    low = page.lower()
    assert "<script" not in low and "<b>bold" not in low and "<img src=x" not in low
    assert "alert(1)</script>" not in page
    assert 'quo"te' not in page and "amp&ersand" not in page and "a & b" not in page
    assert '" onmouseover' not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "quo&quot;te" in page and "amp&amp;ersand" in page and "&lt;b&gt;bold&lt;/b&gt;" in page
    assert f"<title>{'&lt;script&gt;alert(1)&lt;/script&gt; &quot;title&quot; &amp; more'}</title>" in page
    assert "x&quot; onmouseover=&quot;alert(2)" in page
    # every tag in the page is one the report itself writes
    tags = set(re.findall(r"<\s*([a-zA-Z][a-zA-Z0-9]*)", page))
    assert tags <= {"html", "head", "meta", "title", "style", "body", "main", "header", "h1", "h2", "p", "section",
                    "table", "thead", "tbody", "tfoot", "tr", "th", "td", "div", "span", "img", "b", "sup", "svg",
                    "rect", "line", "text", "g", "details", "summary"}, tags


def test_never_overwrites(tmp_path):
    path = tmp_path / "r.html"
    path.write_text("mine")
    with pytest.raises(FileExistsError):
        write_report(_issues(), path)
    assert path.read_text() == "mine"
    new = tmp_path / "new.html"
    write_report(_issues(), new)
    before = new.read_bytes()
    with pytest.raises(FileExistsError):
        write_report(_issues(seed=5), new)
    assert new.read_bytes() == before


def test_image_layouts_and_png_encoder():
    assert image_shape((10, 784)) == ("flat", 28, 28, 1)
    assert image_shape((10, 3072)) == ("flat-chw", 32, 32, 3)
    assert image_shape((10, 3, 32, 32)) == ("chw", 32, 32, 3)
    assert image_shape((10, 32, 32, 3)) == ("hwc", 32, 32, 3)
    assert image_shape((10, 28, 28)) == ("hw", 28, 28, 1)
    assert image_shape((10, 20)) is None and image_shape((10,)) is None
    g = np.random.default_rng(0)
    for shape in ((5, 7), (6, 4, 3), (3, 9, 4)):
        a = g.integers(0, 256, shape).astype(np.uint8)
        import matplotlib.image as mpimg

        got = mpimg.imread(io.BytesIO(encode_png(a)), format="png")
        np.testing.assert_allclose(got, a / 255.0, atol=1e-6)
    iss = _issues(n=12)
    for imgs in (g.random((12, 64)), g.random((12, 3, 6, 6)), g.random((12, 6, 6, 3)), torch.rand(12, 1, 5, 5),
                 g.random((12, 3 * 16)).reshape(12, 48)):
        page = render_report(iss, images=imgs, max_samples=4)
        assert len(_thumbs(page)) == 4
    c = _decode_png(_thumbs(render_report(iss, images=g.random((12, 3, 6, 6)), max_samples=1))[0])
    assert c.shape == (6, 6, 3)
    with pytest.raises(ValueError, match="are not"):
        render_report(iss, images=g.random((12, 20)))
    with pytest.raises(ValueError, match="rows"):
        render_report(iss, images=g.random((11, 64)))
    with pytest.raises(ValueError, match="class_names"):
        render_report(iss, class_names=["a"])


def test_true_labels_only_when_given_and_marked():
    iss = _issues()
    assert "true<sup>" not in render_report(iss)
    true = iss.predicted_label  # pretend the suggestion is the truth
    page = render_report(iss, true_labels=true, max_samples=10)
    assert page.count("true<sup>*</sup>") == 10
    assert "known here only because the label noise of this dataset is synthetic" in page
    wrong, f = true != iss.given_label, iss.is_label_issue
    assert f"precision of the flagged set {(wrong & f).sum() / f.sum():.1%}" in page


def test_edge_cases_render():
    iss = _issues(n=20)
    iss.is_label_issue[:] = False
    assert "No row is flagged" in render_report(iss)
    iss.score[:3] = np.nan
    assert "3 rows with a non-finite score" in render_report(iss)
    iss = _issues(n=50, C=60)  # more classes than the matrix shows
    page = render_report(iss)
    assert "60 classes: showing the" in page


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def test_renders_in_headless_chromium(tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install -y chromium); the headless rendering check needs it")
    iss = _issues(n=400, C=10)
    page = write_report(iss, tmp_path / "report.html", images=_images(len(iss), 28, 28), title="render check",
                        class_names=[f"class {c}" for c in range(10)], true_labels=iss.predicted_label)
    shot = tmp_path / "out.png"
    env = dict(os.environ, HOME=str(tmp_path))
    proc = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1200,2000",
                           f"file://{os.path.abspath(page)}"], capture_output=True, text=True, timeout=180, env=env)
    assert shot.exists(), proc.stderr[-2000:]
    import matplotlib.image as mpimg

    img = mpimg.imread(str(shot))[..., :3]
    assert img.shape[:2] == (2000, 1200)
    assert img.std() > 0.05  # not blank
    # the page's own colours are drawn: the red of flagged rows and bars, the blue of the histogram
    red = (np.abs(img - np.array([200, 60, 40]) / 255).max(-1) < 0.06).mean()
    blue = (np.abs(img - np.array([111, 143, 184]) / 255).max(-1) < 0.06).mean()
    assert red > 1e-3 and blue > 1e-4, (red, blue)


def test_train_report(tmp_path, capsys):
    from fastreweight import cli

    out = tmp_path / "o"
    args = ["train", "--dataset", "digits", "--method", "fbr", "--epochs", "1", "--warmup", "0", "--no-progress",
            "--report", "--report-samples", "12", "--out", str(out)]
    assert cli.main(args + ["--seeds", "0", "1"]) == 0
    text = capsys.readouterr().out
    assert "label audit:" in text
    for seed in (0, 1):
        page = (out / f"report-seed{seed}.html").read_text()
        assert len(_thumbs(page)) == 12  # digits: 64 pixels a row, 8×8 thumbnails
        assert _decode_png(_thumbs(page)[0]).shape == (8, 8)
        assert page.count("true<sup>*</sup>") == 12 and "synthetic" in page
        assert f"seed {seed}" in page
    results = json.loads((out / "results.json").read_text())
    assert results["reports"] == [str(out / "report-seed0.html"), str(out / "report-seed1.html")]
    # a single seed: report.html; an existing report is never overwritten, and nothing is trained
    one = tmp_path / "one"
    one.mkdir()
    (one / "report.html").write_text("mine")
    assert cli.main(args[:-1] + [str(one)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert (one / "report.html").read_text() == "mine" and not (one / "results.json").exists()
    assert cli.main(args[:-1] + [str(one), "--rename"]) == 0
    assert (one / "report-2.html").exists() and (one / "results-2.json").exists()


def test_penultimate_features_eval_mode():
    from fastreweight import cli
    from fastreweight.models import build_model

    torch.manual_seed(0)
    model = build_model("mlp", (64,), 10)
    model.train()
    x = torch.rand(37, 64)
    f = cli.penultimate_features(model, x, batch_size=10)
    assert model.training and f.shape[0] == 37
    model.eval()
    with torch.no_grad():
        np.testing.assert_allclose(f, model.features_and_logits(x)[0].numpy(), rtol=1e-5, atol=1e-6)


def test_class_names_as_a_numpy_array_or_other_ordered_collection():
    from fastreweight.label_issues.report import _Names

    assert _Names(np.array(["cat", "dog", "bird"]), 3)(1) == "dog"
    assert _Names(("cat", "dog", "bird"), 3)(2) == "bird"
    with pytest.raises(TypeError, match="class_names must be a list"):
        _Names({"cat", "dog", "bird"}, 3)


# ---------------------------------------------------------------------------------------------
# legibility: the histogram, long class names, many classes
# ---------------------------------------------------------------------------------------------
def _saturated(n=2000, threshold=-2.0, seed=0) -> LabelIssues:
    """knn-like scores: most rows tied at the clip of the log-odds (±27.63), a few between."""
    g = np.random.default_rng(seed)
    clip = 27.631021
    kind = g.choice(3, n, p=[0.3, 0.6, 0.1])
    score = np.where(kind == 0, -clip, np.where(kind == 1, clip, g.normal(0, 8, n).clip(-25, 25)))
    given = g.integers(0, 10, n)
    pred = np.where(score < 0, (given + 1) % 10, given)
    return LabelIssues(given_label=given, predicted_label=pred, score=score, label_score=1 / (1 + np.exp(-score)),
                       is_label_issue=score <= threshold, threshold=threshold, estimated_noise_rate=0.3,
                       num_classes=10, settings={"scorer": "knn", "flag": "score"})


def _svg_rects(page, cls):
    return [dict(re.findall(r'(\w[\w-]*)="([^"]*)"', r)) for r in re.findall(rf'<rect class="{cls}"[^>]*>', page)]


def test_histogram_clip_piles_are_end_bars_and_the_rows_between_readable():
    iss = _saturated()
    page = render_report(iss)
    s = iss.score
    ends = dict(re.findall(r'<g class="end-bar" data-side="(\w+)" data-count="(\d+)">', page))
    assert ends == {"left": str(int((s == s.min()).sum())), "right": str(int((s == s.max()).sum()))}
    assert "tied at the lowest score" in page
    bars = _svg_rects(page, "hbar")
    # the axis is scaled to the rows between the piles: its tallest bar (stacked) fills most of the plot (210 px)
    tops = {}
    for b in bars:
        tops[b["x"]] = tops.get(b["x"], 0) + float(b["height"])
    assert max(tops.values()) > 150, max(tops.values())
    # the threshold lies on a bin edge: every flagged (red) bar left of the dashed line, every other right of it
    xt = float(re.search(r'<line class="threshold" data-where="axis" x1="([\d.]+)"', page).group(1))
    for b in bars:
        x0, x1 = float(b["x"]), float(b["x"]) + float(b["width"])
        assert (x1 <= xt + 0.02) if b["fill"] == "#c83c28" else (x0 >= xt - 0.02), (b, xt)


def test_histogram_threshold_at_a_pile_is_drawn_beside_its_end_bar():
    iss = _saturated(threshold=-27.631021)  # flags exactly the rows tied at the lower clip
    page = render_report(iss)
    assert '<line class="threshold" data-where="left-gap"' in page
    iss = _saturated(threshold=-30.0)  # flags nothing
    assert '<line class="threshold" data-where="left-edge"' in render_report(iss)


def test_histogram_unbounded_scores_and_distinct_tick_labels():
    g = np.random.default_rng(1)
    for score, thr in ((g.normal(0, 40, 3000), 0.0), (14.0 + 0.05 * g.standard_normal(500), 14.0)):  # fbr; narrow
        iss = LabelIssues(given_label=np.zeros(score.size, int), predicted_label=np.zeros(score.size, int),
                          score=score, label_score=1 / (1 + np.exp(-score)), is_label_issue=score <= thr,
                          threshold=thr, num_classes=2, settings={"scorer": "fbr"})
        page = render_report(iss)
        ticks = re.findall(r'stroke="#555"/><text[^>]*>([^<]*)</text>', page)  # the text after each tick mark
        assert len(ticks) >= 3 and len(set(ticks)) == len(ticks), ticks  # not "14", "14", "14.1"
        assert 'class="end-bar"' not in page  # no pile, no far outlier: one axis for all rows


def _long_names(C):
    return [(f"class {c}: a very long descriptive category name that goes on and on and on (#{c})" if c % 2 else
             f'<b>c{c}</b> & "q" ünï 猫 {c}') for c in range(C)]


def test_long_class_names_keep_the_suggestion_and_compact_matrix():
    iss = _issues(n=300, C=30, seed=2)
    names = _long_names(30)
    page = render_report(iss, class_names=names, max_samples=20)
    # each card: the given and the suggested label on lines of their own, the full names in a tooltip
    cards = re.findall(r'<div class="labels" title="([^"]*)"><div class="given">([^<]*)</div>'
                       r'<div class="sugg">→ ([^<]*)</div></div>', page)
    assert len(cards) == 20
    for title, g, p in cards:
        assert title == f"given: {g} → suggested: {p}"
    assert "white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }" not in page.split(".labels {")[1][:120]
    # the matrix heads hold the names in a box of bounded width (full name in the title), upright columns
    assert '<table class="matrix vert">' in page
    assert re.search(r'<th class="row" title="1: class 1: a very long[^"]*"><div class="cn">', page)


def test_many_classes_fold_the_summary_and_long_settings():
    C = 1000
    iss = _issues(n=3000, C=C, seed=4, settings={"scorer": "knn", "transition_diagonal": [0.5] * C})
    page = render_report(iss)
    summary = re.search(r'<p class="summary">(.*?)</p>', page).group(1)
    assert len(summary) < 400, len(summary)  # not one entry per class
    assert "the 10 most of 1000" in summary
    assert re.search(r"<th>transition_diagonal</th><td><details><summary>1000 values: min 0.5, median 0.5, "
                     r"max 0.5</summary>\[0.5, ", page)
    assert '<div class="scroll"><table class="perclass">' in page
    assert page.count('<tr data-class="') == C  # every class is still listed
    # few classes: the summary as it is
    small = _issues()
    assert f'<p class="summary">{small.summary()}</p>' in render_report(small)


_PROBE = """<script>
addEventListener("load", () => {
  const out = {hidden: 0, cards: 0, rowMax: 0, pageOver: 0};
  for (const c of document.querySelectorAll(".card")) {
    out.cards++;
    const card = c.getBoundingClientRect(), s = c.querySelector(".sugg").getBoundingClientRect();
    if (s.width < 10 || s.height < 5 || s.left < card.left - 1 || s.right > card.right + 1) out.hidden++;
  }
  for (const r of document.querySelectorAll("table.matrix tbody tr"))
    out.rowMax = Math.max(out.rowMax, r.getBoundingClientRect().height);
  out.pageOver = document.documentElement.scrollWidth - innerWidth;
  const p = document.createElement("pre"); p.id = "probe"; p.textContent = JSON.stringify(out);
  document.body.appendChild(p);
});
</script>"""


def test_long_names_layout_in_headless_chromium(tmp_path):
    """The layout as chromium lays it out (a probing script added to a copy of the page; the report has none)."""
    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install -y chromium); the headless layout check needs it")
    iss = _issues(n=400, C=30, seed=6)
    page = render_report(iss, class_names=_long_names(30), max_samples=24, true_labels=iss.predicted_label,
                         images=np.random.default_rng(0).integers(0, 256, (400, 32, 32, 3), dtype=np.uint8))
    path = tmp_path / "probe.html"
    path.write_text(page.replace("</body>", _PROBE + "</body>"), encoding="utf-8")
    env = dict(os.environ, HOME=str(tmp_path))
    proc = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,2000", "--dump-dom",
                           f"file://{path}"], capture_output=True, text=True, timeout=180, env=env)
    m = re.search(r'<pre id="probe">(.*?)</pre>', proc.stdout)
    assert m, proc.stderr[-2000:]
    out = json.loads(m.group(1).replace("&quot;", '"'))
    assert out["cards"] == 24 and out["hidden"] == 0, out  # the suggested label is on every card
    assert 0 < out["rowMax"] < 40, out  # a long name does not make a matrix row tall
    assert out["pageOver"] <= 0, out  # nothing wider than the window (the matrix scrolls in its own box)


def test_many_classes_list_the_most_frequent_pairs():
    C, n = 300, 4000
    rng = np.random.default_rng(7)
    given = rng.integers(0, C, n)
    suggested = given.copy()
    flagged = rng.random(n) < 0.3
    suggested[flagged] = rng.integers(0, C, int(flagged.sum()))
    heavy = np.flatnonzero(flagged)[:60]  # one pair far ahead of the rest
    given[heavy], suggested[heavy] = 17, 203
    flagged &= given != suggested
    iss = LabelIssues(given_label=given, predicted_label=suggested, score=rng.normal(size=n), label_score=rng.random(n),
                      is_label_issue=flagged, threshold=0.0, num_classes=C)
    m = given_vs_suggested(iss)
    page = render_report(iss, class_names=[f"c{c}<&>" for c in range(C)])
    pairs = re.findall(r'<tr data-given="(\d+)" data-suggested="(\d+)">.*?<td class="count">(\d+)</td></tr>',
                       page.split('<table class="pairs">')[1].split("</table>")[0])
    counts = [int(k) for _, _, k in pairs]
    assert len(pairs) == 20 and pairs[0] == ("17", "203", str(m[17, 203]))
    assert counts == sorted(counts, reverse=True) and counts[-1] >= np.sort(m.ravel())[-20]
    assert all(m[int(g), int(p)] == int(k) for g, p, k in pairs)
    assert "c17&lt;&amp;&gt;" in page and "c17<&>" not in page
    assert '<table class="pairs">' not in render_report(_issues())  # few classes: the matrix shows them all


def test_histogram_rows_at_the_threshold_stay_left_of_its_line():
    # vote margins at the margin rule's threshold: start + w·m can miss -0.35 by an ulp, which put the rows
    # scored exactly -0.35 (flagged) in the bin right of the dashed line
    from fastreweight.label_issues.histogram import bin_scores

    for seed in range(8):
        s = np.round(np.random.default_rng(seed).normal(size=300) * 0.5, 2) - 0.35
        b = bin_scores(s, s <= -0.35, -0.35)
        assert b.marker == "axis" and (b.edges == -0.35).any(), seed
        idx = np.searchsorted(b.edges, s, side="left") - 1  # the bins are (e_i, e_i+1]
        for j in np.unique(idx):
            assert (s[idx == j] <= -0.35).all() or (s[idx == j] > -0.35).all(), (seed, j)


def test_histogram_of_one_huge_tied_score_renders():
    # ±0.5 around a single value of 1e17 is lost to rounding: a zero-width axis divided by zero
    for v in (1e17, -3e20):
        score = np.full(4, v)
        iss = LabelIssues(given_label=np.zeros(4, int), predicted_label=np.zeros(4, int), score=score,
                          label_score=np.full(4, 0.5), is_label_issue=score <= v, threshold=v, num_classes=2,
                          settings={"scorer": "fbr"})
        page = render_report(iss)
        assert 'class="threshold"' in page and "nan" not in page.split('<svg class="hist"')[1].split("</svg>")[0]
