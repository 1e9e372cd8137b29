"""flag="confident" (the default for knn): the confident count of label_issues/posterior.py against a
literal count, the top-up of flag.py, and find_label_issues' use of both."""
import numpy as np
import pytest

from fastreweight.label_issues import find_label_issues
from fastreweight.label_issues.flag import flag_rows
from fastreweight.label_issues.posterior import LEVEL, THRESHOLD_RTOL, NoiseModel, confident_count

from test_label_posterior import _blobs


def _probs(n, C, seed):
    rng = np.random.default_rng(seed)
    pi = rng.dirichlet(np.full(C, 0.4), n)
    y = np.array([rng.choice(C, p=0.6 * p + 0.4 / C) for p in pi])
    clean = np.zeros(n, bool)
    for c in range(C):  # every class has a clean row (validate.py refuses a class without one)
        y[c] = c
        clean[c] = True
    clean[rng.random(n) < 0.2] = True
    return pi, y, clean


def _literal_count(pi, y, clean):
    n, C = pi.shape
    thresholds = [np.mean([pi[i, c] for i in range(n) if clean[i] and y[i] == c]) for c in range(C)]
    joint = np.zeros((C, C))
    for i in range(n):
        if clean[i]:
            continue
        above = [j for j in range(C) if pi[i, j] >= thresholds[j] * (1 - THRESHOLD_RTOL)]
        if above:
            joint[y[i], max(above, key=lambda j: (pi[i, j], -j))] += 1
    for a in range(C):
        given = sum(1 for i in range(n) if not clean[i] and y[i] == a)
        if joint[a].sum():
            joint[a] *= given / joint[a].sum()
    return round(sum(joint[a, j] for a in range(C) for j in range(C) if a != j)), joint


@pytest.mark.parametrize("n,C", [(2, 2), (17, 3), (97, 5), (1025, 10)])
def test_confident_count_matches_a_literal_count(n, C):
    pi, y, clean = _probs(n, C, seed=n + C)
    count, joint = confident_count(pi, y, clean)
    want_count, want_joint = _literal_count(pi, y, clean)
    np.testing.assert_allclose(joint, want_joint, rtol=1e-12, atol=1e-12)
    assert count == want_count
    # each label's row of the joint holds that label's rows (or none, when no row of it is confident)
    given = np.bincount(y[~clean], minlength=C)
    sums = joint.sum(1)
    assert np.all(np.isclose(sums, given) | (sums == 0))


def test_confident_count_counts_rows_at_a_saturated_probability_as_their_class():
    """Unanimous votes give many rows the same π; the mean of 11 copies of this value rounds one ulp
    above it, and without a tolerance no such row would reach its own class's threshold (a count that
    then jumped with float rounding: 159 or 451 wrong labels on one digits cell)."""
    x = 0.6066357757671799
    assert np.full(11, x).mean() > x  # the rounding this test is about
    C, per = 2, 11
    pi = np.zeros((4 * per + 2, C))
    y = np.repeat([0, 1, 0, 1], per)
    y = np.concatenate([y, [1, 0]])
    pi[y == 0] = [x, 1 - x]
    pi[y == 1] = [1 - x, x]
    pi[-2:] = [[x, 1 - x], [1 - x, x]]  # two rows given the other class's label, at its saturated value
    clean = np.zeros(len(y), bool)
    clean[:2 * per] = True
    count, joint = confident_count(pi, y, clean)
    assert count == 2
    np.testing.assert_allclose(joint, [[per, 1], [1, per]])


def _model(n, seed, count):
    rng = np.random.default_rng(seed)
    return NoiseModel(post_given=rng.random(n), pi_given=rng.random(n), pi_argmax=rng.integers(0, 3, n), transition=np.eye(3) * 0.9 + 0.1 / 3,
                      rate=0.2, iterations=7, weights=(1.0, 0.5), count=count)


@pytest.mark.parametrize("count", [0, 5, 40, 96])
def test_confident_flag_is_the_count_of_rows_the_posterior_set_first(count):
    """The set has the count's size: the posterior's rows (lowest posterior first), then the rows of lowest
    pi_given whose suggested label differs from the given one; with the random model here the posterior
    flags about half the rows, so counts of 0, 5 and 40 trim its set and 96 (more than the 94 rows
    scored) tops it up to every row that has another label to suggest."""
    n = 97
    model = _model(n, seed=count, count=count)
    clean_idx = np.array([0, 1, 2])
    others = np.ones(n, bool)
    others[clean_idx] = False
    rng = np.random.default_rng(count + 100)
    y = rng.integers(0, 3, n)
    suggested = np.where(rng.random(n) < 0.3, y, (y + 1) % 3)  # about 30% suggest their own label
    args = (np.linspace(-1, 1, n), np.linspace(0, 1, n), suggested, y, clean_idx, np.zeros(3), 3)
    post = flag_rows(*args, "posterior", 0.1, 0.0, model, None, {}).is_label_issue
    r = flag_rows(*args, "confident", 0.1, 0.0, model, None, {})
    flagged = r.is_label_issue
    eligible = others & (post | (suggested != y))
    assert np.array_equal(post, (model.post_given < LEVEL) & others)
    assert not flagged[clean_idx].any() and flagged.sum() == min(count, eligible.sum())
    if count <= post.sum():  # trimmed: the posterior's rows of lowest posterior
        assert (flagged <= post).all()
        assert model.post_given[flagged].max(initial=-np.inf) <= model.post_given[post & ~flagged].min(initial=np.inf)
    else:  # topped up: every posterior row, then the unflagged rows of lowest pi_given with another suggestion
        assert (flagged >= post).all()
        added, rest = flagged & ~post, eligible & ~post & ~flagged
        assert (suggested[added] != y[added]).all() and added.any()
        assert model.pi_given[added].max() <= model.pi_given[rest].min(initial=np.inf)
        assert not (flagged & ~post & (suggested == y)).any()
    assert r.settings["confident_count"] == count and r.settings["posterior_flagged"] == post.sum()
    assert np.isnan(r.threshold)
    assert r.estimated_noise_rate == pytest.approx(count / others.sum())


def _instance_blobs(n, C, rate, seed, clean_per_class=10):
    """Labels flipped to the nearest other class's centre, the more often the closer the sample lies to it."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, C, n)
    centres = 3.0 * np.eye(C, 8)
    x = rng.normal(size=(n, 8)) + centres[y]
    d = ((x[:, None, :] - centres[None]) ** 2).sum(-1)
    own = d[np.arange(n), y].copy()
    d[np.arange(n), y] = np.inf
    nearest = d.argmin(1)
    ambiguity = own - d[np.arange(n), nearest]
    flip = rng.random(n) < 1 / (1 + np.exp(-(ambiguity - np.quantile(ambiguity, 1 - rate))))
    noisy = np.where(flip, nearest, y)
    clean = np.concatenate([np.flatnonzero(y == c)[:clean_per_class] for c in range(C)])
    noisy[clean] = y[clean]
    return x.astype(np.float32), y, noisy, clean


def test_confident_flag_finds_flips_the_class_conditional_posterior_misses():
    """Where labels flip towards the class a sample resembles, the class-conditional posterior takes most
    flips for ambiguity; the confident count is not bound to that model and the set grows, precisely."""
    x, y, noisy, clean = _instance_blobs(3000, 5, 0.2, seed=2)
    wrong = noisy != y
    post = find_label_issues(x, noisy, clean_idx=clean, flag="posterior")
    conf = find_label_issues(x, noisy, clean_idx=clean)
    assert conf.settings["flag"] == "confident"
    assert (conf.is_label_issue >= post.is_label_issue).all()
    assert conf.is_label_issue[wrong].mean() > post.is_label_issue[wrong].mean() + 0.1
    assert wrong[conf.is_label_issue].mean() > 0.9
    assert conf.estimated_noise_rate > post.estimated_noise_rate


@pytest.mark.parametrize("kind,rate", [("sym", 0.3), ("pair", 0.25)])
def test_confident_flag_is_precise_where_noise_depends_on_the_class(kind, rate):
    x, y, noisy, clean = _blobs(3000, 5, rate, seed=3, kind=kind)
    others = np.setdiff1d(np.arange(len(y)), clean)
    wrong = noisy != y
    r = find_label_issues(x, noisy, clean_idx=clean, flag="confident")
    assert r.estimated_noise_rate == pytest.approx(wrong[others].mean(), abs=0.03)
    assert wrong[r.is_label_issue].mean() > 0.9 and r.is_label_issue[wrong].mean() > 0.8
    # the same trusted rows given as separate features
    r2 = find_label_issues(x[others], noisy[others], clean_features=x[clean], clean_labels=y[clean])
    assert r2.settings["flag"] == "confident" and r2.is_label_issue.shape == (others.size,)
    assert wrong[others][r2.is_label_issue].mean() > 0.9


def test_report_of_a_confident_flagged_set_says_how_it_was_flagged(tmp_path):
    from fastreweight.label_issues.report import write_report

    x, y, noisy, clean = _instance_blobs(600, 3, 0.2, seed=6)
    r = find_label_issues(x, noisy, clean_idx=clean)
    path = tmp_path / "report.html"
    write_report(r, str(path))
    page = path.read_text()
    assert "the flagged set has the size of the confident count" in page
    assert f"the confident count, {r.settings['confident_count']} rows: those with P(given label right)" in page
    assert int(r.is_label_issue.sum()) == r.settings["confident_count"]
    assert 'class="threshold"' not in page


def test_knn_with_a_noise_model_ranks_by_the_calibrated_probability():
    """With a noise-model flag the knn columns come from the calibrated probabilities π of posterior.py
    (recomputed here from the votes of the neighbourhood size whose calibration fits the clean rows
    best); with the margin rule they stay the raw vote's."""
    from fastreweight.label_issues.find import KNN_NEIGHBOURS, POSTERIOR_CLEAN_K, calibrated_log_odds
    from fastreweight.label_issues.neighbours import agreement_from_votes, neighbour_votes
    from fastreweight.label_issues.posterior import calibrated_class_probs, fit_noise_model

    x, y, noisy, clean = _instance_blobs(1025, 4, 0.2, seed=8)
    mask = np.zeros(len(y), bool)
    mask[clean] = True
    votes = {k: neighbour_votes(x, noisy, mask, num_classes=4, k=k, clean_k=POSTERIOR_CLEAN_K) for k in KNN_NEIGHBOURS}
    nll = {}
    for k, (P, Q) in votes.items():
        pi, _ = calibrated_class_probs(P.astype(np.float64), Q.astype(np.float64), noisy, mask)
        nll[k] = -np.mean(np.log(pi[clean, noisy[clean]]))
    k = min(nll, key=nll.get)
    assert len(set(np.round(list(nll.values()), 6))) == len(nll)  # a choice, not a tie
    P, Q = votes[k]
    model = fit_noise_model(P, Q, noisy, mask)
    for flag in ("confident", "posterior"):
        r = find_label_issues(x, noisy, clean_idx=clean, flag=flag)
        assert r.settings["neighbours"] == k
        assert r.settings["neighbour_nll"] == {str(j): pytest.approx(v, abs=1e-4) for j, v in nll.items()}
        np.testing.assert_allclose(r.label_score, model.pi_given, rtol=1e-12)
        np.testing.assert_array_equal(r.predicted_label, model.pi_argmax)
        np.testing.assert_allclose(r.score, calibrated_log_odds(model.pi_given), rtol=1e-12)
        # the ranked rows and label_score agree (up to ties of the clipped log-odds)
        np.testing.assert_array_equal(r.score[r.ranking()], r.score[np.argsort(r.label_score, kind="stable")])
    score, share, argmax = agreement_from_votes(P, noisy)
    r = find_label_issues(x, noisy, clean_idx=clean, flag="margin")
    np.testing.assert_allclose(r.label_score, share)
    np.testing.assert_allclose(r.score, score)
    np.testing.assert_array_equal(r.predicted_label, argmax)


def test_calibrated_log_odds_is_finite_and_monotone():
    from fastreweight.label_issues.find import calibrated_log_odds

    p = np.array([0.0, 1e-15, 0.2, 0.5, 0.8, 1 - 1e-15, 1.0])
    s = calibrated_log_odds(p)
    assert np.isfinite(s).all() and np.all(np.diff(s) >= 0) and s[3] == 0.0
    np.testing.assert_allclose(s[2], np.log(0.25))


def test_label_log_odds_are_exact_where_the_clipped_ones_saturate():
    from fastreweight.label_issues.find import calibrated_log_odds
    from fastreweight.label_issues.posterior import calibrated_class_probs, label_log_odds

    rng = np.random.default_rng(3)
    P = rng.dirichlet(np.full(4, 0.3), size=97)
    Q = rng.dirichlet(np.full(4, 0.3), size=97)
    labels = rng.integers(0, 4, 97)
    mask = np.zeros(97, bool)
    mask[:20] = True
    pi, w = calibrated_class_probs(P, Q, labels, mask)
    exact = label_log_odds(P, Q, w, labels)
    clipped = calibrated_log_odds(pi[np.arange(97), labels])
    inside = np.abs(clipped) < 25
    np.testing.assert_allclose(exact[inside], clipped[inside], rtol=1e-9, atol=1e-9)
    # far past the clip: a sharper calibration (larger weights) keeps the order the clipped values lose
    sharp = label_log_odds(P, Q, (60.0, 60.0), labels)
    assert np.isfinite(sharp).all() and (np.abs(sharp) > 27.7).any()
    z = 60.0 * np.log(P + 1e-3) + 60.0 * np.log(Q + 1e-3)
    own = z[np.arange(97), labels]
    others = np.array([np.logaddexp.reduce(np.delete(z[i], labels[i])) for i in range(97)])
    np.testing.assert_allclose(sharp, own - others, rtol=1e-12, atol=1e-9)


def test_ranking_breaks_score_ties_by_tie_break():
    from fastreweight.label_issues import LabelIssues

    s = np.array([-27.6, 0.5, -27.6, -27.6, 1.0])
    r = LabelIssues(given_label=np.zeros(5, np.int64), predicted_label=np.zeros(5, np.int64), score=s,
                    label_score=s, is_label_issue=np.zeros(5, bool), threshold=0.0,
                    tie_break=np.array([-30.0, 0.5, -90.0, -30.0, 1.0]))
    np.testing.assert_array_equal(r.ranking(), [2, 0, 3, 1, 4])
    r.tie_break = None
    np.testing.assert_array_equal(r.ranking(), [0, 2, 3, 1, 4])


def test_confident_flag_offers_another_label_on_every_row_it_tops_up():
    # many classes, few rows each: votes spread, and the lowest pi_given rows include right labels whose
    # own class is still the most probable; the top-up must not take them
    rng = np.random.default_rng(3)
    n, C, d = 3000, 500, 32
    truth = rng.permutation(np.concatenate([np.arange(C), rng.integers(0, C, n - C)]))
    x = ((rng.standard_normal((C, d)) * 1.5)[truth] + rng.standard_normal((n, d))).astype(np.float32)
    labels = truth.copy()
    resampled = rng.random(n) < 0.2
    labels[resampled] = rng.integers(0, C, int(resampled.sum()))
    trusted = np.unique(np.concatenate([np.flatnonzero(rng.random(n) < 0.1), [np.flatnonzero(truth == c)[0] for c in range(C)]]))
    labels[trusted] = truth[trusted]
    r = find_label_issues(x, labels, clean_idx=trusted, num_classes=C)
    assert r.settings["flag"] == "confident"
    f = r.is_label_issue
    assert not (f & (r.predicted_label == labels)).any()  # 197 such rows, every one a right label, before
    assert (labels[f] != truth[f]).mean() >= 0.9  # 0.645 before
