"""label_issues.find_label_issues: the neighbour-agreement scorer against a literal computation, the
clean-subset flagging rules, the cleanlab-style columns, and bad input."""
import numpy as np
import pytest

from fastreweight.label_issues import find_label_issues
from fastreweight.label_issues.flag import estimate_noise_rate, fdr_threshold
import torch

from fastreweight.label_issues.neighbours import clean_votes, neighbour_agreement, standardised, trusted_votes


def _blobs(n=300, C=3, d=5, rate=0.3, seed=0, clean_per_class=5):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, C, n)
    x = rng.normal(size=(n, d)) + 4.0 * np.eye(C, d)[y]
    noisy = y.copy()
    flip = rng.choice(n, int(rate * n), replace=False)
    noisy[flip] = (y[flip] + rng.integers(1, C, flip.size)) % C
    clean = np.concatenate([np.flatnonzero(y == c)[:clean_per_class] for c in range(C)])
    noisy[clean] = y[clean]
    return x.astype(np.float32), y, noisy, clean


def _literal_clean_votes(z, y, clean, C, k, temperature):
    Q = np.zeros((len(y), C))
    ci = np.flatnonzero(clean)
    for i in range(len(y)):
        s = z[ci] @ z[i]
        s[ci == i] = -np.inf
        for j in np.argsort(-s, kind="stable")[:min(k, ci.size - 1)]:
            Q[i, y[ci[j]]] += np.exp((s[j] - 1) / temperature)
        Q[i] /= Q[i].sum()
    return Q


def _literal(x, y, clean, C, k, temperature, clean_weight, rounds, clean_vote=0.0, clean_k=10, clean_temperature=0.1,
             votes=False, scale_columns=False, centre=True):
    z = x - x.mean(0) if centre else x
    if scale_columns:
        z = z / x.std(0, ddof=1)
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    trust = np.where(clean, clean_weight, 1.0)
    Q = _literal_clean_votes(z, y, clean, C, clean_k, clean_temperature)
    for _ in range(rounds):
        P = np.zeros((len(y), C))
        for i in range(len(y)):
            s = z @ z[i]
            s[i] = -np.inf
            nb = np.argsort(-s, kind="stable")[:k]
            for j in nb:
                P[i, y[j]] += np.exp((s[j] - 1) / temperature) * trust[j]
            P[i] /= P[i].sum()
        own = ((1 - clean_vote) * P + clean_vote * Q)[np.arange(len(y)), y]
        trust = np.where(clean, clean_weight, own)
    if votes:
        return P
    other = np.where(np.eye(C, dtype=bool)[y], -1.0, P).max(1)
    return own - other, own, P.argmax(1)


@pytest.mark.parametrize("geometry", ["cosine", "centred", "standardised"])
@pytest.mark.parametrize("n,chunk", [(17, 5), (97, 97), (130, 33)])
def test_neighbour_agreement_matches_a_literal_computation(n, chunk, geometry):
    x, _, noisy, clean = _blobs(n=max(n, 30))
    x, noisy = x[:n], noisy[:n]
    mask = np.zeros(n, bool)
    mask[clean[clean < n]] = True
    # unequal column scales (scaling them matters) and an offset (centring them matters)
    x = x * np.linspace(0.2, 3.0, x.shape[1], dtype=np.float32) + np.linspace(-1.0, 2.0, x.shape[1], dtype=np.float32)
    got = neighbour_agreement(x, noisy, mask, num_classes=3, k=7, temperature=0.3, clean_weight=2.0, rounds=2,
                              chunk_rows=chunk, geometry=geometry)
    want = _literal(x.astype(np.float64), noisy, mask, 3, 7, 0.3, 2.0, 2, scale_columns=geometry == "standardised",
                    centre=geometry != "cosine")
    np.testing.assert_allclose(got[0], want[0], rtol=0, atol=2e-5)
    np.testing.assert_allclose(got[1], want[1], rtol=0, atol=2e-5)
    assert (got[2] == want[2]).mean() > 0.97  # argmax ties may break differently in float32


@pytest.mark.parametrize("n,chunk", [(17, 5), (97, 97), (130, 33)])
def test_clean_vote_matches_a_literal_computation(n, chunk):
    """The trust that mixes in the vote of the clean rows alone (NeighbourRelabel's ``clean_vote``)."""
    x, _, noisy, clean = _blobs(n=max(n, 30), seed=n)
    x, noisy = x[:n], noisy[:n]
    mask = np.zeros(n, bool)
    mask[clean[clean < n]] = True
    if mask.sum() < 2:
        mask[:3] = True
    z = standardised(x, "cpu")
    y, m = torch.as_tensor(noisy), torch.as_tensor(mask)
    zl = z.double().numpy()
    Q = clean_votes(z, y, m, 3, 4, 0.15, chunk_rows=chunk)
    np.testing.assert_allclose(Q.numpy(), _literal_clean_votes(zl, noisy, mask, 3, 4, 0.15), rtol=0, atol=2e-5)
    got = trusted_votes(z, y, m, num_classes=3, k=7, temperature=0.3, clean_weight=2.0, rounds=3, clean_vote=0.6,
                        clean_k=4, clean_temperature=0.15, chunk_rows=chunk)
    want = _literal(x.astype(np.float64), noisy, mask, 3, 7, 0.3, 2.0, 3, clean_vote=0.6, clean_k=4,
                    clean_temperature=0.15, votes=True, scale_columns=True)  # standardised() scales by default
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=5e-5)


def test_clean_vote_breaks_a_cluster_flipped_together():
    """A tight cluster of class-0 rows labelled 1 vouches for itself in the neighbour vote; the clean
    rows of class 0 beside it do not, so with the clean vote in the trust the cluster loses."""
    rng = np.random.default_rng(3)
    modes = np.repeat([0, 1, 2], [160, 40, 200])  # class 0 has two modes; the second is the cluster
    y = np.array([0, 0, 1])[modes]
    x = 4.0 * np.eye(3, 6)[modes] + rng.normal(size=(400, 6))
    noisy = y.copy()
    noisy[160:200] = 1
    mask = np.zeros(400, bool)
    mask[np.r_[0:8, 160:163, 200:210]] = True  # 3 clean rows inside the cluster
    noisy[mask] = y[mask]
    cluster = np.arange(163, 200)
    z = standardised(x.astype(np.float32), "cpu")
    kw = dict(num_classes=2, k=30, temperature=0.2, clean_weight=3.0, rounds=3)

    def suggested(clean_vote):
        return trusted_votes(z, torch.as_tensor(noisy), torch.as_tensor(mask), clean_vote=clean_vote, **kw).argmax(1)

    before, after = suggested(0.0).numpy(), suggested(0.8).numpy()
    assert (before[cluster] == 0).mean() < 0.25 and (after[cluster] == 0).mean() > 0.75
    rest = np.setdiff1d(np.arange(400), cluster)
    assert (after[rest] == y[rest]).mean() > 0.98


def test_flagging_rules_on_known_mixtures():
    rng = np.random.default_rng(0)
    good, bad = rng.normal(1, 0.3, 7000), rng.normal(-1, 0.3, 3000)
    scores, clean = np.concatenate([good, bad]), rng.normal(1, 0.3, 400)
    assert abs(estimate_noise_rate(scores, clean) - 0.3) < 0.03
    t = fdr_threshold(scores, clean, 0.3, 0.05)
    flagged = scores <= t
    assert (np.arange(scores.size)[flagged] >= 7000).mean() >= 0.95 and flagged.sum() > 2500
    assert (good <= fdr_threshold(good, clean, 0.0, 0.01)).mean() < 0.01  # nothing to find: (almost) nothing flagged
    with pytest.raises(ValueError, match="alpha"):
        fdr_threshold(scores, clean, 0.3, 1.5)


def test_too_few_clean_rows_for_the_fdr_target_fall_back_to_the_noise_rate():
    x, y, noisy, clean = _blobs(n=300, clean_per_class=5)
    r = find_label_issues(x, noisy, clean_idx=clean, flag="fdr")
    assert r.settings["flag"] == "rate" and "fallback" in r.settings
    others = np.setdiff1d(np.arange(len(y)), clean)
    k = int(round(r.estimated_noise_rate * others.size))
    assert 0 < k == r.is_label_issue.sum()  # the estimated number of wrong labels, the lowest scores
    assert r.score[r.is_label_issue].max() <= np.sort(r.score[others])[k - 1]
    wrong = noisy != y
    assert wrong[r.is_label_issue].mean() > 0.7  # a random set would get about 0.29


@pytest.mark.parametrize("scorer", ["knn", "fbr", "fbr-whiten"])
@pytest.mark.parametrize("flag", ["auto", "confident", "margin", "posterior", "fdr", "rate", "score"])
def test_find_label_issues_columns_and_quality(scorer, flag):
    if flag in ("confident", "margin", "posterior") and scorer != "knn":
        pytest.skip(f"flag={flag!r} is knn's rule (tested to raise in test_margin_flag_is_the_vote_lead and "
                    "test_label_posterior.py / test_label_confident.py)")
    x, y, noisy, clean = _blobs(n=600, clean_per_class=30)
    r = find_label_issues(x, noisy, clean_idx=clean, scorer=scorer, flag=flag)
    wrong = noisy != y
    assert r.score.shape == r.label_score.shape == r.is_label_issue.shape == (len(y),)
    assert ((r.label_score >= 0) & (r.label_score <= 1)).all()
    assert not r.is_label_issue[clean].any()  # trusted rows are never flagged
    # precision well above the 30% base rate; the knn scorer's FDR-controlled set near 1 - alpha
    assert r.is_label_issue.any() and wrong[r.is_label_issue].mean() > (0.85 if (scorer, flag) in
                                                                        (("knn", "auto"), ("knn", "confident"), ("knn", "margin"), ("knn", "posterior"),
                                                                         ("knn", "fdr")) else 0.6)
    assert (r.predicted_label[wrong] == y[wrong]).mean() > 0.8  # the suggestion is the true label
    df = r.to_dataframe()
    assert list(df.columns)[:4] == ["is_label_issue", "label_score", "given_label", "predicted_label"]
    assert "estimated noise rate" in r.summary()
    if scorer == "knn":
        assert abs(r.estimated_noise_rate - wrong.mean()) < 0.15
    # the same clean subset given as separate rows gives a ranking as good
    others = np.setdiff1d(np.arange(len(y)), clean)
    r2 = find_label_issues(x[others], noisy[others], clean_features=x[clean], clean_labels=y[clean], scorer=scorer,
                           flag=flag)
    assert r2.score.shape == (others.size,) and wrong[others][r2.is_label_issue].mean() > 0.6


def test_find_label_issues_rejects_bad_input():
    x, y, noisy, clean = _blobs(n=60)
    with pytest.raises(ValueError, match="clean_idx must not repeat a row"):
        find_label_issues(x, noisy, clean_idx=np.array([1, 1, 2]))
    with pytest.raises(ValueError, match=r"clean_idx must hold row indices in \[0, 60\)"):
        find_label_issues(x, noisy, clean_idx=np.array([0, 60]))
    with pytest.raises(ValueError, match="the clean subset is missing"):
        find_label_issues(x, noisy)
    with pytest.raises(ValueError, match="labels must have one entry per row of features"):
        find_label_issues(x, noisy[:-1], clean_idx=clean)
    with pytest.raises(ValueError, match=r"labels must hold class labels in \[0, 3\)"):
        find_label_issues(x, np.where(np.arange(60) == 4, 7, noisy), clean_idx=clean, num_classes=3)
    with pytest.raises(TypeError, match="labels must be integers"):
        find_label_issues(x, noisy.astype(float), clean_idx=clean)
    bad = x.copy()
    bad[9, 2] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf.*row 9"):
        find_label_issues(bad, noisy, clean_idx=clean)
    with pytest.raises(ValueError, match="unknown scorer"):
        find_label_issues(x, noisy, clean_idx=clean, scorer="magic")
    with pytest.raises(ValueError, match="2-D"):
        find_label_issues(x[:, 0], noisy, clean_idx=clean)


def test_margin_flag_is_the_vote_lead():
    """flag='margin' flags exactly the non-clean rows with score <= -margin; a larger
    margin flags a subset; bad margins and FBR scorers raise naming the argument."""
    x, y, noisy, clean = _blobs(n=400, clean_per_class=20)
    sets = []
    for m in (0.1, 0.35, 0.8):
        r = find_label_issues(x, noisy, clean_idx=clean, flag="margin", margin=m)
        want = r.score <= -m
        want[clean] = False
        np.testing.assert_array_equal(r.is_label_issue, want)
        assert r.threshold == -m and r.settings["margin"] == m and r.settings["flag"] == "margin"
        sets.append(r.is_label_issue)
    assert (sets[1] <= sets[0]).all() and (sets[2] <= sets[1]).all() and sets[0].sum() > sets[2].sum()
    auto = find_label_issues(x, noisy, clean_idx=clean)  # knn's default rule is the confident one
    assert auto.settings["flag"] == "confident" and "margin" not in auto.settings
    for bad in (-0.1, 2.0, "0.3", True, float("nan")):
        with pytest.raises(ValueError, match="margin must be"):
            find_label_issues(x, noisy, clean_idx=clean, flag="margin", margin=bad)
    with pytest.raises(ValueError, match="flag='margin' needs .*knn"):
        find_label_issues(x, noisy, clean_idx=clean, scorer="fbr", flag="margin")


def test_votes_of_several_neighbourhoods_come_from_one_search():
    """neighbour_votes_by_k's votes of each k equal neighbour_votes' own search at that k."""
    from fastreweight.label_issues.neighbours import neighbour_votes, neighbour_votes_by_k

    x, _, noisy, clean = _blobs(n=97, seed=4)
    mask = np.zeros(97, bool)
    mask[clean] = True
    by_k, Q = neighbour_votes_by_k(x, noisy, mask, num_classes=3, ks=(2, 7, 17), clean_k=4, chunk_rows=33)
    for k, P in by_k.items():
        want, want_q = neighbour_votes(x, noisy, mask, num_classes=3, k=k, clean_k=4, chunk_rows=33)
        np.testing.assert_allclose(P, want, rtol=0, atol=1e-6)
        np.testing.assert_allclose(Q, want_q, rtol=0, atol=1e-6)


@pytest.mark.parametrize("ks", [(), (0, 10), (2.5,), (True,)])
def test_neighbourhood_sizes_must_be_positive_integers(ks):
    from fastreweight.label_issues.neighbours import neighbour_votes_by_k

    x, _, noisy, clean = _blobs(n=30)
    mask = np.zeros(30, bool)
    mask[clean] = True
    with pytest.raises(ValueError, match="ks must be a non-empty sequence of positive integers"):
        neighbour_votes_by_k(x, noisy, mask, num_classes=3, ks=ks)


def test_unknown_geometry_is_refused():
    x, _, noisy, clean = _blobs(n=30)
    mask = np.zeros(30, bool)
    mask[clean] = True
    with pytest.raises(ValueError, match="geometry must be one of cosine, centred, standardised"):
        neighbour_agreement(x, noisy, mask, num_classes=3, geometry="euclid")


def test_the_neighbourhood_whose_calibration_fits_the_clean_rows_best_is_chosen():
    """choose_neighbourhood against the clean rows' NLL recomputed here; votes that give the clean rows'
    labels more weight win, and a tie goes to the smaller size."""
    from fastreweight.label_issues.posterior import calibrated_class_probs, choose_neighbourhood

    rng = np.random.default_rng(5)
    n, C = 97, 4
    y = rng.integers(0, C, n)
    mask = np.zeros(n, bool)
    mask[rng.choice(n, 30, replace=False)] = True
    noise = rng.dirichlet(np.ones(C), n)
    sharp = 0.7 * np.eye(C)[y] + 0.3 * noise  # votes that mostly agree with the labels
    vague = 0.2 * np.eye(C)[y] + 0.8 * noise
    Q = rng.dirichlet(np.ones(C), n)
    k, nll, (pi_k, weights_k) = choose_neighbourhood({10: vague, 30: sharp}, Q, y, mask)
    for j, P in ((10, vague), (30, sharp)):
        pi, weights = calibrated_class_probs(P, Q, y, mask)
        assert nll[j] == pytest.approx(-np.mean(np.log(pi[mask, y[mask]])), rel=1e-12)
        if j == k:  # the chosen size's calibration comes back with it
            np.testing.assert_array_equal(pi_k, pi)
            assert weights_k == weights
    assert k == 30 and nll[30] < nll[10]
    assert choose_neighbourhood({30: sharp, 10: sharp.copy()}, Q, y, mask)[0] == 10


@pytest.mark.parametrize("flag", ["auto", "posterior", "margin"])
def test_knn_ignores_classes_no_row_holds(flag):
    # labels {0, 2, 5} of num_classes=7 against the same labels as {0, 1, 2} of 3: an empty class has no
    # evidence, so its column must not move the calibration, the neighbourhood or any score
    x, _, y, clean_idx = _blobs(n=240, C=3, rate=0.25, seed=4, clean_per_class=8)
    names = np.array([0, 2, 5])
    ref = find_label_issues(x, y, clean_idx=clean_idx, num_classes=3, scorer="knn", flag=flag)
    wide = find_label_issues(x, names[y], clean_idx=clean_idx, num_classes=7, scorer="knn", flag=flag)
    assert wide.settings["neighbours"] == ref.settings["neighbours"]
    np.testing.assert_array_equal(wide.is_label_issue, ref.is_label_issue)
    np.testing.assert_array_equal(wide.predicted_label, names[ref.predicted_label])
    np.testing.assert_allclose(wide.label_score, ref.label_score, rtol=1e-12, atol=0)
    assert wide.estimated_noise_rate == pytest.approx(ref.estimated_noise_rate, rel=1e-12)
    assert wide.issues_per_class()[1] == 0 and wide.issues_per_class()[5] == ref.issues_per_class()[2]
    if "transition_diagonal" in ref.settings:  # an absent class reads as "no flip", not "every label wrong"
        diag = wide.settings["transition_diagonal"]
        assert [diag[c] for c in (1, 3, 4, 6)] == [1.0] * 4 and [diag[c] for c in names] == ref.settings["transition_diagonal"]


def test_summary_stays_one_short_line_with_many_classes():
    from fastreweight.label_issues import LabelIssues

    rng = np.random.default_rng(0)
    C, n = 1000, 5000
    given = rng.integers(0, C, n)
    given[:50] = 7
    flagged = rng.random(n) < 0.2
    flagged[:50] = True  # class 7: the most issues
    r = LabelIssues(given_label=given, predicted_label=(given + 1) % C, score=rng.normal(size=n),
                    label_score=rng.random(n), is_label_issue=flagged, threshold=0.0, num_classes=C)
    text = r.summary()
    assert len(text) < 300, len(text)
    assert "issues per given class (the 10 most of 1000; issues_per_class() has all): 7: " in text
    assert len(r.issues_per_class()) == C
    few = LabelIssues(given_label=given % 5, predicted_label=given % 5, score=rng.normal(size=n),
                      label_score=rng.random(n), is_label_issue=flagged, threshold=0.0, num_classes=5)
    assert few.summary().endswith("issues per given class: " + ", ".join(f"{c}: {v}" for c, v in few.issues_per_class().items()))
