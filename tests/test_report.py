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
                    "rect", "line", "text"}, tags


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
