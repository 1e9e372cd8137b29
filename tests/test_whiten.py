"""Spectral-shrinkage whitening for dataset scoring (``fastreweight.whiten``), checked against
brute-force transcriptions of its docstring: leave-one-out by actually leaving rows out, AUROC by
counting pairs, the transform by numpy's eigendecomposition in float64."""
import numpy as np
import pytest
import torch

import fastreweight as fr
from fastreweight import whiten as W
from fastreweight.cli import main
from fastreweight.label_issues import score_dataset
from fastreweight.scores import fbr_from_similarity


def _clean(M=17, d=6, C=4, seed=0, singleton=False):
    g = np.random.default_rng(seed)
    centers = g.standard_normal((C, d)) * 2
    y = np.arange(M) % C
    if singleton:  # class C-1 keeps one row only
        y[y == C - 1] = 0
        y[-1] = C - 1
    z = centers[y] + g.standard_normal((M, d)) + 3.0
    return torch.from_numpy(z), torch.from_numpy(y)


@pytest.mark.parametrize("center", ["clean", "none"])
@pytest.mark.parametrize("singleton", [False, True])
def test_loo_similarity_equals_leaving_each_row_out(center, singleton):
    z, y = _clean(singleton=singleton)
    S, keep, present = W.loo_similarity(z, y, 4, center)
    assert present.all()
    for i in range(len(y)):
        others = torch.arange(len(y)) != i
        if int((y[others] == y[i]).sum()) == 0:
            assert not keep[i]
            continue
        assert keep[i]
        want = fr.class_similarity(z[i:i + 1], y[i:i + 1], z[others], y[others], num_classes=4, center=center,
                                   backend="reference")
        torch.testing.assert_close(S[i], want[0], rtol=1e-10, atol=1e-10)


def _auroc_by_pairs(pos, neg):
    pos, neg = np.asarray(pos)[:, None], np.asarray(neg)[None, :]
    return float(((pos > neg) + 0.5 * (pos == neg)).mean())


@pytest.mark.parametrize("n", [(23, 31), (1, 1), (2100, 2100)])  # the last takes the ranking path
def test_auroc_counts_pairs_with_ties_half(n):
    g = np.random.default_rng(1)
    pos = g.integers(0, 5, n[0]).astype(float)  # many ties on purpose
    neg = g.integers(0, 4, n[1]).astype(float)
    assert W._auroc(torch.from_numpy(pos), torch.from_numpy(neg)) == pytest.approx(_auroc_by_pairs(pos, neg), abs=1e-12)
    both = W._auroc(torch.from_numpy(np.stack([pos, -pos])), torch.from_numpy(np.stack([neg, -neg])))
    assert both == pytest.approx([_auroc_by_pairs(pos, neg), _auroc_by_pairs(-pos, -neg)], abs=1e-12)


@pytest.mark.parametrize("shift", ["max", "second", "mean", "none"])
def test_loo_auroc_is_true_against_every_wrong_label(shift):
    z, y = _clean(M=19, C=5, seed=2, singleton=True)
    S, keep, present = W.loo_similarity(z, y, 5, "clean")
    pos, neg = [], []
    for i in torch.nonzero(keep).flatten().tolist():
        for c in range(5):
            d = fbr_from_similarity(S[i:i + 1], torch.tensor([c]), present, shift=shift, alpha=0.1)
            (pos if c == int(y[i]) else neg).append(float(d))
    got = W.loo_auroc(z, y, 5, center="clean", shift=shift, alpha=0.1)
    assert got == pytest.approx(_auroc_by_pairs(pos, neg), abs=1e-12)


@pytest.mark.parametrize("chunk", [1, 7, 97, 1025])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-6)])
def test_streaming_moments_match_numpy(chunk, dtype, tol):
    """float64 rows: exact to rounding; float32 rows (float32 chunk Grams, summed in float64): within
    1e-6 of the largest eigenvalue, far below the smallest shrinkage (0.01·λ₁)."""
    g = np.random.default_rng(3)
    x = g.standard_normal((97, 5)) * [1, 2, 3, 0.1, 5] + 1000.0  # far from the origin
    xt = torch.from_numpy(x).to(dtype)
    m = W.StreamingMoments()
    for s in range(0, 97, chunk):
        m.update(xt[s:s + chunk])
    mean, cov = m.finalize()
    xf = xt.double().numpy()
    want = np.cov(xf, rowvar=False, bias=True)
    lam1 = np.linalg.eigvalsh(want).max()
    np.testing.assert_allclose(mean.numpy(), xf.mean(0), rtol=1e-12)
    assert np.abs(cov.numpy() - want).max() <= tol * lam1


def _data(N=97, M=17, d=6, C=4, seed=0):
    g = np.random.default_rng(seed)
    centers = g.standard_normal((C, d)) * 2
    y = g.integers(0, C, N)
    cy = np.arange(M) % C
    x = (centers[y] + g.standard_normal((N, d)) * [3, 1, 1, 0.3, 0.3, 0.1]).astype(np.float32)
    cx = (centers[cy] + g.standard_normal((M, d)) * [3, 1, 1, 0.3, 0.3, 0.1]).astype(np.float32)
    noisy = y.copy()
    noisy[:20] = (noisy[:20] + 1) % C
    return x, noisy, cx, cy


def _whiten_by_numpy(x, cx, t):
    x64 = x.astype(np.float64)
    mu = x64.mean(0)
    lam, vec = np.linalg.eigh(np.cov(x64, rowvar=False, bias=True))
    lam = np.clip(lam, 0, None)
    Wm = vec / np.sqrt(lam + t * lam.max())
    return (x64 - mu) @ Wm, (cx.astype(np.float64) - mu) @ Wm


@pytest.mark.parametrize("t", [0.01, 0.3, 3.0])
@pytest.mark.parametrize("shift", ["max", "second"])
def test_whitened_scores_equal_scoring_the_transformed_features(t, shift):
    x, y, cx, cy = _data()
    got = score_dataset(x, y, cx, cy, num_classes=4, chunk_rows=13, shift=shift, whiten=t)
    xw, cxw = _whiten_by_numpy(x, cx, t)
    want = fr.fbr_scores(torch.from_numpy(xw), torch.from_numpy(y), torch.from_numpy(cxw), torch.from_numpy(cy),
                         num_classes=4, shift=shift)
    scale = float(want.abs().max())
    np.testing.assert_allclose(got.scores, want.numpy(), rtol=1e-4, atol=1e-5 * scale)
    assert got.whitening == {"strength": t, "criterion": {}}


def test_auto_picks_the_best_leave_one_out_candidate_and_scores_with_it():
    x, y, cx, cy = _data(N=1025, M=97, seed=4)
    res = score_dataset(x, y, cx, cy, num_classes=4, chunk_rows=100, whiten="auto")
    crit = res.whitening["criterion"]
    assert set(crit) == {"plain"} | {f"t={t:g}" for t in W.AUTO_STRENGTHS}
    # the criterion itself, recomputed from the transformed clean rows
    for t in (0.01, 1.0):
        _, cxw = _whiten_by_numpy(x, cx, t)
        assert crit[f"t={t:g}"] == pytest.approx(
            W.loo_auroc(torch.from_numpy(cxw), torch.from_numpy(cy), 4, center="clean", shift="max", alpha=0.0), abs=1e-4)
    best = max(crit.values())
    order = ["plain"] + [f"t={t:g}" for t in W.AUTO_STRENGTHS]
    first_best = next(k for k in order if crit[k] == best)
    chosen = "plain" if res.whitening["strength"] is None else f"t={res.whitening['strength']:g}"
    assert chosen == first_best
    again = score_dataset(x, y, cx, cy, num_classes=4, chunk_rows=1025,
                          whiten=res.whitening["strength"] if res.whitening["strength"] else None)
    np.testing.assert_allclose(res.scores, again.scores, rtol=1e-4, atol=1e-4)


def test_auto_is_chunk_invariant_and_repeatable():
    x, y, cx, cy = _data(N=301, M=41, seed=5)
    a = score_dataset(x, y, cx, cy, num_classes=4, chunk_rows=7, whiten="auto")
    b = score_dataset(x, y, cx, cy, num_classes=4, chunk_rows=301, whiten="auto")
    c = score_dataset(x, y, cx, cy, num_classes=4, chunk_rows=7, whiten="auto")
    assert a.whitening["strength"] == b.whitening["strength"]
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(a.scores, c.scores)


def test_whitening_helps_when_one_shared_direction_dominates():
    """One huge-variance direction shared by all classes hides the class signal from the plain inner
    product; whitening damps it, and "auto" finds that on the clean rows alone."""
    g = np.random.default_rng(6)
    N, M, d, C = 2000, 60, 8, 3
    centers = g.standard_normal((C, d))
    centers[:, 0] = 0
    y = g.integers(0, C, N)
    cy = np.arange(M) % C
    scale = np.r_[50.0, np.ones(d - 1)]
    x = (centers[y] + g.standard_normal((N, d)) * scale).astype(np.float32)
    cx = (centers[cy] + g.standard_normal((M, d)) * scale).astype(np.float32)
    noisy = y.copy()
    wrong = g.random(N) < 0.3
    noisy[wrong] = (noisy[wrong] + g.integers(1, C, wrong.sum())) % C
    from sklearn.metrics import roc_auc_score

    plain = score_dataset(x, noisy, cx, cy, num_classes=C)
    auto = score_dataset(x, noisy, cx, cy, num_classes=C, whiten="auto")
    assert auto.whitening["strength"] is not None
    assert roc_auc_score(wrong, -auto.scores) > roc_auc_score(wrong, -plain.scores) + 0.05


def test_constant_features_fall_back_to_plain():
    x = np.ones((11, 3), dtype=np.float32)
    res = score_dataset(x, np.arange(11) % 2, x[:4], np.array([0, 1, 0, 1]), whiten="auto")
    assert res.whitening["strength"] is None
    np.testing.assert_array_equal(res.scores, np.zeros(11, dtype=np.float32))


@pytest.mark.parametrize("value", ["x", -1, 0, float("nan"), float("inf"), True, [0.1]])
def test_bad_whiten_values_are_refused(value):
    x, y, cx, cy = _data()
    with pytest.raises(ValueError, match=r"whiten must be None, 'none', 'auto' or a positive number"):
        score_dataset(x, y, cx, cy, whiten=value)


def test_whiten_rejects_bad_features_and_labels():
    x, y, cx, cy = _data()
    bad = x.copy()
    bad[5, 2] = np.nan
    with pytest.raises(ValueError, match=r"features contains NaN or Inf at row 5 \(the first such row\)"):
        score_dataset(bad, y, cx, cy, whiten="auto")
    badc = cx.copy()
    badc[0, 0] = np.inf
    with pytest.raises(ValueError, match=r"clean_features contains NaN or Inf"):
        score_dataset(x, y, badc, cy, whiten=0.1)
    with pytest.raises(ValueError, match=r"clean_labels must hold class labels in \[0, 4\), got values in \[0, 7\]"):
        score_dataset(x, y, cx, np.r_[cy[:-1], 7], num_classes=4, whiten="auto")
    with pytest.raises(ValueError, match=r"shift must be one of"):
        score_dataset(x, y, cx, cy, shift="largest", whiten="auto")


def test_cli_whiten(tmp_path, capsys):
    x, y, cx, cy = _data(N=301, M=41, seed=7)
    for name, a in dict(x=x, y=y, cx=cx, cy=cy).items():
        np.save(tmp_path / f"{name}.npy", a)
    base = ["score", "--features", str(tmp_path / "x.npy"), "--labels", str(tmp_path / "y.npy"),
            "--clean-features", str(tmp_path / "cx.npy"), "--clean-labels", str(tmp_path / "cy.npy"), "--no-progress"]
    assert main(base + ["--out", str(tmp_path / "a.csv"), "--whiten", "auto"]) == 0
    assert "whitening:" in capsys.readouterr().out
    assert main(base + ["--out", str(tmp_path / "b.csv"), "--whiten", "-2"]) == 2
    assert "--whiten must be none, auto or a positive number" in capsys.readouterr().err


# ---- refine: re-scoring against class means of the clean rows and the rows scored > 0 -------------
def _refine_by_hand(x, y, cx, cy, C, shift):
    """Two passes in float64 with the public reference API, from the docstring of ``refine``."""
    xt, yt = torch.from_numpy(x).double(), torch.from_numpy(y)
    cxt, cyt = torch.from_numpy(cx).double(), torch.from_numpy(cy)
    d1 = fr.fbr_scores(xt, yt, cxt, cyt, num_classes=C, shift=shift, backend="reference")
    # no row near the fence, so float32 and float64 agree on which are kept (exact zeros are rows whose
    # own class is the second largest under shift="second": 0 in every precision)
    assert float(d1[d1 != 0].abs().min()) > 1e-4
    keep = d1 > 0
    means, labels = [], []
    for c in range(C):
        rows = torch.cat([cxt[cyt == c], xt[keep & (yt == c)]])
        if (cyt == c).any():
            means.append(rows.mean(0))
            labels.append(c)
    d2 = fr.fbr_scores(xt, yt, torch.stack(means), torch.tensor(labels), num_classes=C, shift=shift, backend="reference")
    return d2.numpy(), int(keep.sum())


@pytest.mark.parametrize("shift", ["max", "second"])
@pytest.mark.parametrize("chunk", [13, 97])
def test_refine_equals_two_passes_by_hand(shift, chunk):
    x, y, cx, cy = _data(seed=8)
    res = score_dataset(x, y, cx, cy, num_classes=4, chunk_rows=chunk, shift=shift, refine=1)
    want, kept = _refine_by_hand(x, y, cx, cy, 4, shift)
    scale = float(np.abs(want).max())
    np.testing.assert_allclose(res.scores, want, rtol=1e-4, atol=1e-5 * scale)
    assert res.refinement == {"rounds": 1, "pseudo_clean_rows": kept}


def test_refine_after_whitening_equals_refining_the_transformed_features():
    x, y, cx, cy = _data(N=301, M=41, seed=9)
    res = score_dataset(x, y, cx, cy, num_classes=4, chunk_rows=50, whiten=0.3, refine=1)
    xw, cxw = _whiten_by_numpy(x, cx, 0.3)
    want, kept = _refine_by_hand(xw, y, cxw, cy, 4, "max")
    np.testing.assert_allclose(res.scores, want, rtol=1e-4, atol=1e-5 * float(np.abs(want).max()))
    assert res.refinement["pseudo_clean_rows"] == kept


def test_refine_keeps_classes_absent_from_the_clean_subset_absent():
    x, y, cx, cy = _data(seed=10)
    only = cy != 3  # class 3 has no clean row: its rows stay unscored (0) after refining too
    res = score_dataset(x, y, cx[only], cy[only], num_classes=4, refine=2, on_missing_class="skip")
    assert (res.scores[y == 3] == 0).all()
    assert (res.suggested != 3).all()
    assert res.refinement["rounds"] == 2


@pytest.mark.parametrize("kw,msg", [
    (dict(refine=-1), r"refine must be an int >= 0"),
    (dict(refine=True), r"refine must be an int >= 0"),
    (dict(refine=1.0), r"refine must be an int >= 0"),
    (dict(refine=1, normalize="cosine"), r"refine needs normalize=None"),
])
def test_bad_refine_is_refused(kw, msg):
    x, y, cx, cy = _data()
    with pytest.raises(ValueError, match=msg):
        score_dataset(x, y, cx, cy, **kw)


def test_cli_refine(tmp_path, capsys):
    x, y, cx, cy = _data(N=301, M=41, seed=7)
    for name, a in dict(x=x, y=y, cx=cx, cy=cy).items():
        np.save(tmp_path / f"{name}.npy", a)
    assert main(["score", "--features", str(tmp_path / "x.npy"), "--labels", str(tmp_path / "y.npy"),
                 "--clean-features", str(tmp_path / "cx.npy"), "--clean-labels", str(tmp_path / "cy.npy"),
                 "--no-progress", "--out", str(tmp_path / "a.csv"), "--whiten", "0.1", "--refine", "1"]) == 0
    assert "refined 1×" in capsys.readouterr().out


@pytest.mark.parametrize("shift", ["max", "second", "mean", "none"])
@pytest.mark.parametrize("alpha", [0.0, 0.3])
def test_all_label_scores_equal_scoring_each_label(shift, alpha):
    g = np.random.default_rng(12)
    S = torch.from_numpy(g.integers(-3, 4, (41, 6)).astype(np.float64))  # small integers: many ties
    present = torch.tensor([True, True, False, True, True, True])
    D = W.all_label_scores(S, present, shift, alpha)
    assert D[:, 2].isnan().all()
    for c in (0, 1, 3, 4, 5):
        want = fbr_from_similarity(S, torch.full((41,), c), present, shift=shift, alpha=alpha)
        torch.testing.assert_close(D[:, c], want, rtol=0, atol=1e-12)


# ---- whitening folded into the class means (training loops) ----------------------------------
@pytest.mark.parametrize("M,d", [(17, 33), (41, 6), (2, 5)])
@pytest.mark.parametrize("shift", ["max", "second"])
def test_shrunk_class_means_score_like_whitened_features(M, d, shift):
    """Plain scores against the shrunk means = τ × scores of features whitened by the clean rows'
    covariance (numpy, float64, full d×d), for batch rows in and outside the clean rows' span."""
    g = np.random.default_rng(M * d)
    C = 4 if M > 2 else 2
    z = g.standard_normal((M, d)) * np.linspace(3, 0.1, d) + 2
    y = np.arange(M) % C
    x = g.standard_normal((97, d)) * 3 + 1
    yb = g.integers(0, C, 97)
    t = 0.3
    sm = W.shrunk_class_means(torch.from_numpy(z), torch.from_numpy(y), C, whiten=t, shift=shift)
    got = fr.fbr_scores(torch.from_numpy(x), torch.from_numpy(yb), sm.rows, sm.labels, num_classes=C, shift=shift,
                        alpha=0.1)
    lam, vec = np.linalg.eigh(np.cov(z, rowvar=False, bias=True))
    lam = np.clip(lam, 0, None)
    tau = t * lam.max()
    Wm = vec / np.sqrt(lam + tau)
    mu = z.mean(0)
    want = tau * fr.fbr_scores(torch.from_numpy((x - mu) @ Wm), torch.from_numpy(yb), torch.from_numpy((z - mu) @ Wm),
                               torch.from_numpy(y), num_classes=C, shift=shift, alpha=0.1)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9 * float(want.abs().max()))
    assert sm.strength == t and sm.rows.dtype == torch.float64


def test_shrunk_class_means_auto_uses_the_leave_one_out_criterion():
    z, y = _clean(M=41, d=6, C=4, seed=13)
    sm = W.shrunk_class_means(z.float(), y, 4, whiten="auto")
    assert set(sm.criterion) == {"plain"} | {f"t={t:g}" for t in W.AUTO_STRENGTHS}
    zn = z.float().double().numpy()
    lam, vec = np.linalg.eigh(np.cov(zn, rowvar=False, bias=True))
    lam = np.clip(lam, 0, None)
    for t in (0.01, 1.0):
        zw = (zn - zn.mean(0)) @ (vec / np.sqrt(lam + t * lam.max()))
        assert sm.criterion[f"t={t:g}"] == pytest.approx(
            W.loo_auroc(torch.from_numpy(zw), y, 4, center="clean", shift="max", alpha=0.0), abs=1e-9)
    assert sm.criterion["plain"] == pytest.approx(
        W.loo_auroc(z.float().double(), y, 4, center="clean", shift="max", alpha=0.0), abs=1e-6)
    order = ["plain"] + [f"t={t:g}" for t in W.AUTO_STRENGTHS]
    best = max(sm.criterion.values())
    chosen = "plain" if sm.strength is None else f"t={sm.strength:g}"
    assert chosen == next(k for k in order if sm.criterion[k] == best)
    assert sm.rows.dtype == torch.float32


def test_shrunk_class_means_with_an_absent_class_and_constant_rows():
    z, y = _clean(M=17, d=5, C=4, seed=14)
    keep = y != 2
    sm = W.shrunk_class_means(z[keep], y[keep], 4, whiten=0.1)
    assert sm.labels.tolist() == [0, 1, 3]
    const = W.shrunk_class_means(torch.ones(6, 3), torch.tensor([0, 1, 0, 1, 0, 1]), 2, whiten="auto")
    assert const.strength is None
    torch.testing.assert_close(const.rows, torch.ones(2, 3))


def test_batched_criterion_equals_one_candidate_at_a_time():
    z, y = _clean(M=29, d=7, C=4, seed=15, singleton=True)
    scales = torch.from_numpy(np.random.default_rng(16).uniform(0.2, 3.0, (5, 7)))
    batched = W.loo_auroc(z[None] * scales[:, None, :], y, 4, center="clean", shift="max", alpha=0.2)
    single = [W.loo_auroc(z * s, y, 4, center="clean", shift="max", alpha=0.2) for s in scales]
    assert batched == pytest.approx(single, abs=1e-12)
    S_b, keep_b, _ = W.loo_similarity(z[None] * scales[:, None, :], y, 4, "none")
    for k in range(5):
        S_k, keep_k, _ = W.loo_similarity(z * scales[k], y, 4, "none")
        torch.testing.assert_close(S_b[k], S_k)
        assert torch.equal(keep_b, keep_k)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_whitening_on_cuda_matches_the_cpu():
    """Both users on a CUDA device: the folded class means (training) and the streamed scorer's map
    choose the same strength as on the CPU and give the same numbers."""
    z, y = _clean(M=97, d=33, C=5, seed=18)
    cpu = W.shrunk_class_means(z.float(), y, 5, whiten="auto")
    gpu = W.shrunk_class_means(z.float().cuda(), y.cuda(), 5, whiten="auto")
    assert gpu.strength == cpu.strength and gpu.rows.device.type == "cuda"
    torch.testing.assert_close(gpu.rows.cpu(), cpu.rows, rtol=1e-4, atol=1e-4)
    x, yy, cx, cy = _data(N=1025, M=97, seed=19)
    a = score_dataset(x, yy, cx, cy, num_classes=4, chunk_rows=100, whiten="auto", refine=1)
    b = score_dataset(x, yy, cx, cy, num_classes=4, chunk_rows=100, whiten="auto", refine=1, device="cuda")
    assert a.whitening["strength"] == b.whitening["strength"]
    np.testing.assert_allclose(b.scores, a.scores, rtol=1e-3, atol=1e-4 * float(np.abs(a.scores).max()))


def test_candidates_one_at_a_time_equal_the_batch(monkeypatch):
    """Past the working-set bound the reference evaluates the candidates one by one: same criterion,
    same pick."""
    x, y, cx, cy = _data(N=301, M=41, seed=20)
    batched = score_dataset(x, y, cx, cy, num_classes=4, whiten="auto")
    sm_b = W.shrunk_class_means(torch.from_numpy(cx), torch.from_numpy(cy), 4, whiten="auto")
    monkeypatch.setattr(W, "_BATCH_ELEMS", 1)
    single = score_dataset(x, y, cx, cy, num_classes=4, whiten="auto")
    sm_s = W.shrunk_class_means(torch.from_numpy(cx), torch.from_numpy(cy), 4, whiten="auto")
    assert single.whitening["criterion"] == pytest.approx(batched.whitening["criterion"], abs=1e-12)
    assert sm_s.criterion == pytest.approx(sm_b.criterion, abs=1e-12) and sm_s.strength == sm_b.strength
    np.testing.assert_array_equal(single.scores, batched.scores)


@pytest.mark.parametrize("kw", [dict(center="none"), dict(normalize="cosine")], ids=["center-none", "cosine"])
def test_whitening_without_folding_transforms_the_rows(kw):
    """Where the map cannot be folded into the class means (no class-balanced centre, or cosine
    normalisation) every row is mapped: the scores of the numpy-mapped features."""
    x, y, cx, cy = _data(seed=21)
    got = score_dataset(x, y, cx, cy, num_classes=4, chunk_rows=13, whiten=0.3, **kw)
    xw, cxw = _whiten_by_numpy(x, cx, 0.3)
    want = fr.fbr_scores(torch.from_numpy(xw), torch.from_numpy(y), torch.from_numpy(cxw), torch.from_numpy(cy),
                         num_classes=4, **kw)
    np.testing.assert_allclose(got.scores, want.numpy(), rtol=1e-4, atol=1e-5 * float(want.abs().max()))


def test_folded_means_equal_mapping_every_row():
    x, y, cx, cy = _data(N=301, M=41, seed=22)
    w = W.Whitening(mean=torch.from_numpy(x.astype(np.float64).mean(0)),
                    matrix=torch.from_numpy(np.random.default_rng(23).standard_normal((6, 6))), strength=0.5)
    rows, labels = w.folded_means(torch.from_numpy(cx).double(), torch.from_numpy(cy), 4)
    got = fr.fbr_scores(torch.from_numpy(x).double(), torch.from_numpy(y), rows, labels, num_classes=4)
    want = fr.fbr_scores(w.apply(torch.from_numpy(x).double()), torch.from_numpy(y),
                         w.apply(torch.from_numpy(cx).double()), torch.from_numpy(cy), num_classes=4)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9 * float(want.abs().max()))


@pytest.mark.parametrize("args,kw,exc,msg", [
    ((torch.ones(5), torch.zeros(5, dtype=torch.long), 2), {}, ValueError, r"clean_features must be a 2-D tensor"),
    ((torch.ones(5, 3, dtype=torch.long), torch.zeros(5, dtype=torch.long), 2), {}, TypeError,
     r"clean_features must have a floating dtype"),
    ((torch.ones(5, 3), torch.zeros(4, dtype=torch.long), 2), {}, ValueError, r"clean_labels must have length 5"),
    ((torch.ones(5, 3), torch.zeros(5), 2), {}, TypeError, r"clean_labels must be an integer tensor"),
    ((torch.ones(0, 3), torch.zeros(0, dtype=torch.long), 2), {}, ValueError, r"clean_features is empty"),
    ((torch.ones(5, 3), torch.tensor([0, 1, 0, 1, 2]), 2), {}, ValueError,
     r"clean_labels must hold class labels in \[0, 2\), got values in \[0, 2\]"),
    ((torch.tensor([[0.0, 1.0]] * 3 + [[float("nan"), 1.0]]), torch.tensor([0, 1, 0, 1]), 2), {}, ValueError,
     r"clean_features contains NaN or Inf"),
    ((torch.ones(5, 3), torch.zeros(5, dtype=torch.long), 0), {}, ValueError, r"num_classes must be a positive int"),
    ((torch.ones(5, 3), torch.zeros(5, dtype=torch.long), 2), dict(whiten=None), ValueError,
     r"whiten must be 'auto' or a positive number here"),
    ((torch.ones(5, 3), torch.zeros(5, dtype=torch.long), 2), dict(whiten=-1), ValueError,
     r"whiten must be None, 'none', 'auto' or a positive number"),
    ((torch.ones(5, 3), torch.zeros(5, dtype=torch.long), 2), dict(shift="top"), ValueError, r"shift must be one of"),
])
def test_shrunk_class_means_rejects_bad_input(args, kw, exc, msg):
    kw = {"whiten": "auto", **kw}
    with pytest.raises(exc, match=msg):
        W.shrunk_class_means(*args, **kw)


# ---------------------------------------------------------------------------------------------
# ShrunkMeans.refold: new class means shrunk by an earlier fit
# ---------------------------------------------------------------------------------------------
def _shrunk_inputs(M, d, C, seed, dtype, case):
    g = torch.Generator().manual_seed(seed)
    scale = torch.rand(d, generator=g, dtype=torch.float64) * 3
    z = (torch.randn(M, d, generator=g, dtype=torch.float64) * scale + 1.5).to(dtype)
    y = torch.randint(0, C, (M,), generator=g)
    y[:min(M, C)] = torch.arange(min(M, C))
    if case == "absent" and C > 2:
        y[y == 1] = 0
    if case == "singleton" and M > C:
        y[y == C - 1] = 0
        y[-1] = C - 1
    # class structure along a few low-variance directions, under high-variance shared ones: where
    # whitening helps, so "auto" picks a strength for some inputs and the plain means for others
    z = z + (torch.randn(C, d, generator=g, dtype=torch.float64) * 0.7)[y].to(dtype)
    if case == "aligned":  # class structure along the high-variance directions: the plain means win
        z = z + (torch.randn(C, d, generator=g, dtype=torch.float64) * scale * 4)[y].to(dtype)
    if case == "constant":
        z = torch.full((M, d), 0.75, dtype=dtype)
    return z, y


@pytest.mark.parametrize("whiten", ["auto", 0.1])
def test_refold_shrinks_new_means_by_the_old_fit(whiten):
    """``refold`` on the fitted features gives the fitted rows back; on new features it equals the
    fold of the docstring computed by hand with the old basis and shrink factors (not a new fit)."""
    z, y = _shrunk_inputs(60, 12, 4, seed=8, dtype=torch.float64, case="plain")
    fit = W.shrunk_class_means(z, y, 4, whiten=whiten)
    assert fit.basis is not None and fit.strength is not None
    torch.testing.assert_close(fit.refold(z, y, 4).rows, fit.rows, rtol=0, atol=0)
    z2 = z * 1.3 + torch.randn_like(z)
    got = fit.refold(z2, y, 4)
    means = torch.stack([z2[y == c].mean(0) for c in range(4)])
    cen = means.mean(0)
    want = means - (fit.basis @ (fit.shrink[:, None] * (fit.basis.T @ (means - cen).T))).T
    torch.testing.assert_close(got.rows, want, rtol=1e-12, atol=1e-12)
    assert got.strength == fit.strength and torch.equal(got.labels, fit.labels)
    refit = W.shrunk_class_means(z2, y, 4, whiten=whiten)
    assert not torch.allclose(refit.rows, got.rows)  # a new fit differs: refold really reuses the old one
    plain = W.ShrunkMeans(rows=means, labels=torch.arange(4), strength=None)
    torch.testing.assert_close(plain.refold(z2, y, 4).rows, means, rtol=1e-12, atol=1e-12)


def test_refold_rejects_other_classes_or_sizes():
    z, y = _shrunk_inputs(30, 6, 3, seed=4, dtype=torch.float64, case="plain")
    fit = W.shrunk_class_means(z, y, 3, whiten=0.1)
    with pytest.raises(ValueError, match="must hold the 3 classes"):
        fit.refold(z[y != 2], y[y != 2], 3)
    with pytest.raises(ValueError, match="must have 6 columns"):
        fit.refold(z[:, :5], y, 3)
    with pytest.raises(ValueError, match=r"clean_labels must have length 30 \(one label per row\), got 29"):
        fit.refold(z, y[:29], 3)
    with pytest.raises(TypeError, match="clean_features"):
        fit.refold(z.long(), y, 3)
