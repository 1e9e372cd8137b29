"""score_dataset(clean_rows=...): the clean rows' scores out of sample, each against the last pass's class
means with its own share taken out, against a brute-force recomputation; and what they fix, the
noise-rate estimate of the FBR scorers."""
import numpy as np
import pytest
import torch

from fastreweight.label_issues import find_label_issues, score_dataset


def _data(n=1025, d=17, C=5, per_class=4, seed=0, flip=0.0):
    g = np.random.default_rng(seed)
    means = g.standard_normal((C, d)) * 2
    y = g.integers(0, C, n)
    x = (means[y] + g.standard_normal((n, d)) + 0.5).astype(np.float32)
    ci = np.sort(np.concatenate([g.choice(np.flatnonzero(y == c), per_class, replace=False) for c in range(C)]))
    noisy = np.where(g.random(n) < flip, g.integers(0, C, n), y)
    noisy[ci] = y[ci]
    return x, y, noisy, ci


def _score_against(xi, yi, sums, counts):
    """The FBR score (shift max) of one row against the class means sums/counts, centred on their mean."""
    present = np.flatnonzero(counts > 0)
    m = sums[present] / counts[present, None]
    cen = m.mean(0)
    S = (xi - cen) @ (m - cen).T
    p = int(np.searchsorted(present, yi))
    own, S[p] = S[p], -np.inf
    return own - S.max()


@pytest.mark.parametrize("kw", [{}, {"whiten": 0.05}])
def test_loo_equals_scoring_without_the_row(kw):
    x, y, _, ci = _data()
    res = score_dataset(x, y, x[ci], y[ci], num_classes=5, clean_rows=ci, **kw)
    for j, i in enumerate(ci):
        keep = np.delete(ci, j)
        # the whitening is fitted on every row's moments whichever clean rows there are: score all rows
        want = score_dataset(x, y, x[keep], y[keep], num_classes=5, **kw).scores[i]
        assert res.clean_scores[j] == pytest.approx(float(want), rel=1e-5, abs=1e-4)
    # in sample, each clean row helped make its class mean: it scored higher
    assert (res.scores[ci] > res.clean_scores).mean() > 0.9


@pytest.mark.parametrize("d,scale", [(17, 2.0), (128, 0.3)])
def test_loo_with_refine_is_the_row_scored_as_if_it_had_not_been_trusted(d, scale):
    """Out of sample, row i is in no clean sum, and in the pseudo-clean sum only if the first pass, scored
    against the other clean rows, would have given it a score > 0 (as for any row of the dataset)."""
    x, y, noisy, ci = _data(d=d, flip=0.3, seed=1)
    if scale != 2.0:  # classes barely apart in many dimensions: in sample, nearly every trusted row scores > 0
        g = np.random.default_rng(3)
        x = ((g.standard_normal((5, d)) * scale)[y] + g.standard_normal((len(y), d)) * 2).astype(np.float32)
    first = score_dataset(x, noisy, x[ci], y[ci], num_classes=5).scores
    res = score_dataset(x, noisy, x[ci], y[ci], num_classes=5, refine=1, clean_rows=ci)
    X = x.astype(np.float64)
    changed = 0
    for j, i in enumerate(ci):
        keep = np.delete(ci, j)
        first_out = score_dataset(x[i:i + 1], y[i:i + 1], x[keep], y[keep], num_classes=5).scores[0]
        pseudo = np.flatnonzero((first > 0) & (np.arange(len(y)) != i))
        if first_out > 0:
            pseudo = np.append(pseudo, i)
        changed += (first_out > 0) != (first[i] > 0)
        sums, counts = np.zeros((5, d)), np.zeros(5)
        for rows in (keep, pseudo):
            np.add.at(sums, noisy[rows], X[rows])
            np.add.at(counts, noisy[rows], 1)
        assert res.clean_scores[j] == pytest.approx(_score_against(X[i], y[i], sums, counts), rel=1e-6, abs=1e-6)
    if scale != 2.0:
        assert changed > 0  # the case this handles: in sample > 0, out of sample not


def test_a_class_left_without_rows_gets_nan_and_other_settings_none():
    x, y, _, ci = _data(per_class=1)
    res = score_dataset(x, y, x[ci], y[ci], num_classes=5, clean_rows=ci)
    assert np.isnan(res.clean_scores).all()  # one clean row a class: out of sample, its class is gone
    assert score_dataset(x, y, x[ci], y[ci], num_classes=5, clean_rows=ci, shift="second").clean_scores is None
    assert score_dataset(x, y, x[ci], y[ci], num_classes=5).clean_scores is None


@pytest.mark.parametrize("bad,err", [(np.array([0, 1]), "one row of features per clean row"),
                                     ("rows", "clean_rows"), (np.array([[0]]), "clean_rows")])
def test_clean_rows_checked(bad, err):
    x, y, _, ci = _data()
    with pytest.raises(ValueError, match=err):
        score_dataset(x, y, x[ci], y[ci], num_classes=5, clean_rows=bad)
    with pytest.raises(ValueError, match="differs from clean_features"):
        score_dataset(x, y, x[ci], y[ci], num_classes=5, clean_rows=np.roll(ci, 1))


def test_fbr_noise_rate_estimates_move_towards_the_truth():
    """High-dimensional class means from 10 rows a class: in sample, a trusted row is a tenth of its own
    class mean and scores far above the dataset's correctly labelled rows, which made the estimate read
    about 99% here where 27% of the labels are wrong."""
    from fastreweight.label_issues.flag import estimate_noise_rate

    g = np.random.default_rng(2)
    n, d, C = 3000, 128, 10
    means = g.standard_normal((C, d)) * 0.5
    y = g.integers(0, C, n)
    x = (means[y] + g.standard_normal((n, d)) * 2 + 0.5).astype(np.float32)
    ci = np.sort(np.concatenate([g.choice(np.flatnonzero(y == c), 10, replace=False) for c in range(C)]))
    noisy = np.where(g.random(n) < 0.3, g.integers(0, C, n), y)
    noisy[ci] = y[ci]
    others = np.ones(n, bool)
    others[ci] = False
    true = (noisy != y)[others].mean()
    got = find_label_issues(x, noisy, clean_idx=ci, num_classes=C, scorer="fbr")
    assert abs(got.estimated_noise_rate - true) < 0.05, (got.estimated_noise_rate, true)
    res = score_dataset(x, noisy, x[ci], y[ci], num_classes=C, clean_rows=ci)
    assert estimate_noise_rate(res.scores[others], res.scores[ci]) > 0.9  # in sample, as before
    # fbr-whiten: nearer the truth than in sample (its whitening, chosen on the same rows, still leans high)
    got_w = find_label_issues(x, noisy, clean_idx=ci, num_classes=C, scorer="fbr-whiten")
    res_w = score_dataset(x, noisy, x[ci], y[ci], num_classes=C, whiten="auto", refine=1, clean_rows=ci)
    in_sample = estimate_noise_rate(res_w.scores[others], res_w.scores[ci])
    assert abs(got_w.estimated_noise_rate - true) < abs(in_sample - true) - 0.05
    # the separate trusted rows' path too
    sep = find_label_issues(x[others], noisy[others], clean_features=x[ci], clean_labels=y[ci], num_classes=C,
                            scorer="fbr")
    assert abs(sep.estimated_noise_rate - true) < 0.05, (sep.estimated_noise_rate, true)
