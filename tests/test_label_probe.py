"""probe.py: the check of a scorer on the trusted rows (half of them given random wrong labels), and
find_label_issues' guard that gives up knn for fbr-whiten when the features' neighbours carry nothing."""
import warnings

import numpy as np
import pytest

from fastreweight.label_issues import find_label_issues
from fastreweight.label_issues.probe import GUARD_AUROC, auroc, probe_folds


def _nuisance(n=3000, d=64, C=10, seed=0, nuisance=6.0):
    """Class means under a few shared directions of far larger variance (bench_score's mixture)."""
    g = np.random.default_rng(seed)
    means = g.standard_normal((C, d))
    shared = g.standard_normal((8, d)) * nuisance
    y = g.integers(0, C, n)
    x = (means[y] + g.standard_normal((n, d)) * 2.0 + g.standard_normal((n, 8)) @ shared).astype(np.float32)
    noisy = np.where(g.random(n) < 0.3, g.integers(0, C, n), y)
    clean = np.sort(np.concatenate([g.choice(np.flatnonzero(y == c), 10, replace=False) for c in range(C)]))
    noisy[clean] = y[clean]
    return x, y, noisy, clean


def _auroc_of(issues, y, noisy, clean):
    others = np.ones(len(y), bool)
    others[clean] = False
    wrong = (noisy != y)[others]
    return auroc(issues.label_score[others][~wrong], issues.label_score[others][wrong])


def test_auroc_is_mann_whitney_with_ties():
    from sklearn.metrics import roc_auc_score

    g = np.random.default_rng(1)
    for n_pos, n_neg in ((1, 1), (2, 17), (97, 5)):
        a, b = g.integers(0, 4, n_pos).astype(float), g.integers(0, 4, n_neg).astype(float)
        want = roc_auc_score(np.r_[np.ones(n_pos), np.zeros(n_neg)], np.r_[a, b])
        assert auroc(a, b) == pytest.approx(want, abs=1e-12)
    assert np.isnan(auroc(np.array([]), np.array([1.0])))


def test_probe_folds_split_each_class_and_change_half_the_labels():
    labels = np.repeat(np.arange(4), 5)
    labels[19] = 3
    clean = np.r_[np.arange(15), 19]  # class 3 has a single trusted row: it stays trusted
    folds = probe_folds(clean, labels)
    assert len(folds) == 2
    probed = np.concatenate([f.rows for f in folds])
    assert sorted(probed.tolist()) == list(range(15))  # every row of a class with >= 2 trusted rows, once
    for f in folds:
        assert set(f.trusted.tolist()) == set(clean.tolist()) - set(f.rows.tolist())
        assert f.wrong.sum() == f.rows.size // 2
        assert (f.given[f.wrong] != labels[f.rows][f.wrong]).all() and (f.given[~f.wrong] == labels[f.rows][~f.wrong]).all()
        assert ((0 <= f.given) & (f.given < 4)).all()
        for c in range(3):  # both halves keep every class trusted
            assert (labels[f.trusted] == c).any()
    again = probe_folds(clean, labels)
    assert all((a.given == b.given).all() for a, b in zip(folds, again))  # a fixed seed


def test_auto_gives_up_knn_where_the_neighbours_carry_nothing():
    x, y, noisy, clean = _nuisance()
    with pytest.warns(UserWarning, match="scoring with fbr-whiten"):
        auto = find_label_issues(x, noisy, clean_idx=clean, num_classes=10)
    assert auto.settings["scorer"] == "fbr-whiten" and "AUROC" in auto.settings["scorer_reason"]
    assert auto.settings["knn_probe_auroc"] < GUARD_AUROC
    assert auto.settings["fbr_whiten_probe_auroc"] >= auto.settings["knn_probe_auroc"] + 0.1
    with pytest.warns(UserWarning, match="may carry little"):
        knn = find_label_issues(x, noisy, clean_idx=clean, num_classes=10, scorer="knn")  # asked for: kept, warned
    assert knn.settings["scorer"] == "knn"
    assert _auroc_of(auto, y, noisy, clean) > _auroc_of(knn, y, noisy, clean) + 0.1
    # a flag rule that needs knn's votes keeps knn, with the warning
    with pytest.warns(UserWarning, match="may carry little"):
        post = find_label_issues(x, noisy, clean_idx=clean, num_classes=10, flag="posterior")
    assert post.settings["scorer"] == "knn"


def test_auto_guard_with_separate_trusted_rows():
    x, y, noisy, clean = _nuisance(seed=2)
    rest = np.setdiff1d(np.arange(len(y)), clean)
    with pytest.warns(UserWarning, match="scoring with fbr-whiten"):
        got = find_label_issues(x[rest], noisy[rest], clean_features=x[clean], clean_labels=y[clean], num_classes=10)
    assert got.settings["scorer"] == "fbr-whiten"


def test_where_the_neighbours_follow_the_classes_knn_stays_quietly():
    x, y, noisy, clean = _nuisance(nuisance=0.0, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = find_label_issues(x, noisy, clean_idx=clean, num_classes=10)
    assert got.settings["scorer"] == "knn" and got.settings["probe_auroc"] >= 0.95


def test_a_wider_num_classes_leaves_both_probes_unchanged():
    # knn's probe draws its wrong labels among the classes some label names (find._knn compacts them); the
    # fbr-whiten probe it is compared with must draw the same ones, else classes without rows (num_classes
    # larger than the labels' range) move its AUROC, and with it the guard's choice of scorer
    x, y, noisy, clean = _nuisance(n=1500)
    names = np.arange(10) * 2  # the same labels as classes 0, 2, ..., 18 of 20
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = find_label_issues(x, noisy, clean_idx=clean, num_classes=10)
        wide = find_label_issues(x, names[noisy], clean_idx=clean, num_classes=20)
    for key in ("knn_probe_auroc", "fbr_whiten_probe_auroc"):
        assert wide.settings[key] == ref.settings[key], key
    assert wide.settings["scorer"] == ref.settings["scorer"]
    np.testing.assert_array_equal(wide.is_label_issue, ref.is_label_issue)
