"""An audit (clean_idx with clean_labels): label_issues/audit.py's estimates against their definitions,
find_label_issues' use of them, flag="audit", and the CLI's --clean-idx with --clean-labels."""
import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.stats import binomtest

from fastreweight.label_issues import find_label_issues
from fastreweight.label_issues.audit import INTERVAL, LEVEL, RIDGE, _logistic, audit_share, fit_audit

from test_label_posterior import _blobs


def _audit_data(m, seed, slope=-1.2, offset=-1.0):
    rng = np.random.default_rng(seed)
    s = rng.normal(1.0, 2.0, m)
    wrong = rng.random(m) < 1.0 / (1.0 + np.exp(-(offset + slope * s)))
    return s, wrong


def _penalised_fit(s, wrong):
    """The module doc's fit by a generic minimiser (standardised score, ridge on the slope only)."""
    mu, sd = s.mean(), s.std()
    z, w = (s - mu) / sd, wrong.astype(np.float64)

    def f(th):
        t = th[0] + th[1] * z
        return np.sum(np.logaddexp(0.0, t) - w * t) + RIDGE * s.size * th[1] ** 2

    th = minimize(f, np.zeros(2), method="Nelder-Mead", options=dict(xatol=1e-11, fatol=1e-13, maxiter=20000)).x
    return th[0] - th[1] * mu / sd, th[1] / sd


@pytest.mark.parametrize("m", [17, 97, 1025])
def test_logistic_fit_matches_a_generic_minimiser(m):
    s, wrong = _audit_data(m, seed=m)
    assert 0 < wrong.sum() < m
    b = _logistic(s, wrong)[0]
    np.testing.assert_allclose(b, _penalised_fit(s, wrong), rtol=1e-6, atol=1e-7)
    # the intercept is not penalised: the audited rows' fitted probabilities sum to the wrong labels found
    p = 1.0 / (1.0 + np.exp(-(b[0] + b[1] * s)))
    assert p.sum() == pytest.approx(wrong.sum(), rel=1e-8)


def test_logistic_fits_many_audits_at_once_as_one_by_one():
    rng = np.random.default_rng(5)
    s, wrong = _audit_data(97, seed=1)
    rows = rng.integers(0, 97, (7, 97))
    together = _logistic(s[rows], wrong[rows])
    for r, b in zip(rows, together):
        np.testing.assert_allclose(b, _logistic(s[r], wrong[r])[0], rtol=1e-12, atol=1e-12)


def test_logistic_stays_finite_when_the_score_separates_the_audit():
    s = np.r_[np.linspace(-5, -3, 9), np.linspace(2, 4, 88)]
    wrong = np.r_[np.ones(9, bool), np.zeros(88, bool)]
    b = _logistic(s, wrong)[0]
    assert np.isfinite(b).all() and b[1] < 0


@pytest.mark.parametrize("w", [0, 1, 16, 17])
def test_share_and_its_exact_interval(w):
    wrong = np.zeros(17, bool)
    wrong[:w] = True
    a = audit_share(wrong)
    ci = binomtest(w, 17).proportion_ci(confidence_level=INTERVAL, method="exact")
    assert a.share == a.rate == w / 17 and not a.fitted
    np.testing.assert_allclose(a.share_interval, (ci.low, ci.high), atol=1e-9)
    assert a.threshold() == float("-inf")


def test_degenerate_audit_gives_the_share():
    s = np.random.default_rng(0).normal(size=40)
    a = fit_audit(s, np.zeros(40, bool), np.random.default_rng(1).normal(size=500))
    assert not a.fitted and a.rate == 0.0 and a.threshold() == float("-inf")


def test_score_assisted_rate_is_the_mean_fitted_probability_and_its_interval_holds_it():
    s, wrong = _audit_data(97, seed=3)
    other = np.random.default_rng(4).normal(1.0, 2.0, 2001)
    a = fit_audit(s, wrong, other)
    assert a.fitted
    want = np.mean(1.0 / (1.0 + np.exp(-(a.intercept + a.slope * other))))
    assert a.rate == pytest.approx(want, rel=1e-12)
    assert a.interval[0] < a.rate < a.interval[1]
    # the threshold is where the fitted probability is LEVEL
    t = a.threshold()
    assert 1.0 / (1.0 + np.exp(-(a.intercept + a.slope * t))) == pytest.approx(LEVEL, abs=1e-12)
    assert fit_audit(s, wrong, other) == a  # seeded: the same interval every call


def _audited_blobs(n, C, rate, seed, kind="sym"):
    """Blobs whose clean rows keep their noisy labels in ``noisy`` (an audit), with ``y`` the truth."""
    rng = np.random.default_rng(seed)
    x, y, _, clean = _blobs(n, C, 0.0, seed, kind)
    noisy = y.copy()
    flip = rng.random(n) < rate
    noisy[flip] = (y[flip] + (1 if kind == "pair" else rng.integers(1, C, n)[flip])) % C
    return x, y, noisy, clean


def test_find_label_issues_with_an_audit_estimates_the_noise_rate():
    x, y, noisy, clean = _audited_blobs(3000, 5, 0.3, seed=7)
    others = np.setdiff1d(np.arange(len(y)), clean)
    true_rate = (noisy != y)[others].mean()
    r = find_label_issues(x, noisy, clean_idx=clean, clean_labels=y[clean])
    a = r.settings["audit"]
    assert a["rows"] == clean.size and a["wrong"] == int((noisy != y)[clean].sum())
    assert a["estimate"] == "score-assisted" and r.estimated_noise_rate == pytest.approx(a["rate"], abs=1e-4)
    assert r.estimated_noise_rate == pytest.approx(true_rate, abs=0.03)
    assert "rule_noise_rate" in r.settings and r.settings["flag"] == "confident"
    assert f"the audit of {clean.size} rows found {a['wrong']} wrong" in r.summary()


def test_audited_rows_vote_with_their_verified_labels():
    """The ranking and the flagged set are those of the same call with the verified labels written into
    ``labels``; the audit changes the estimate only."""
    x, y, noisy, clean = _audited_blobs(1025, 4, 0.25, seed=2)
    audited = find_label_issues(x, noisy, clean_idx=clean, clean_labels=y[clean])
    fixed = noisy.copy()
    fixed[clean] = y[clean]
    plain = find_label_issues(x, fixed, clean_idx=clean)
    np.testing.assert_array_equal(audited.score, plain.score)
    np.testing.assert_array_equal(audited.is_label_issue, plain.is_label_issue)
    np.testing.assert_array_equal(audited.given_label, plain.given_label)  # the clean rows: their verified labels
    assert audited.settings["rule_noise_rate"] == pytest.approx(plain.estimated_noise_rate)
    assert "audit" not in plain.settings


def test_flag_audit_flags_the_scores_at_or_below_its_threshold():
    x, y, noisy, clean = _audited_blobs(1025, 4, 0.3, seed=4, kind="pair")
    r = find_label_issues(x, noisy, clean_idx=clean, clean_labels=y[clean], flag="audit")
    a = r.settings["audit"]
    assert r.settings["flag"] == "audit" and r.threshold == r.settings["threshold"]
    assert r.threshold == pytest.approx((np.log(LEVEL / (1 - LEVEL)) - a["intercept"]) / a["slope"], rel=1e-3)
    others = np.setdiff1d(np.arange(len(y)), clean)
    want = np.zeros(len(y), bool)
    want[others] = r.score[others] <= r.threshold
    np.testing.assert_array_equal(r.is_label_issue, want)
    wrong = noisy != y
    assert wrong[r.is_label_issue].mean() > 0.8 and r.is_label_issue[wrong].mean() > 0.6


def test_fbr_scorers_report_the_audit_share():
    x, y, noisy, clean = _audited_blobs(1025, 4, 0.3, seed=6)
    r = find_label_issues(x, noisy, clean_idx=clean, clean_labels=y[clean], scorer="fbr")
    a = r.settings["audit"]
    assert a["estimate"] == "share" and r.estimated_noise_rate == pytest.approx(a["share"], abs=1e-4)
    assert a["share"] == pytest.approx((noisy != y)[clean].mean(), abs=1e-4)


@pytest.mark.parametrize("kw,exc,words", [
    (dict(flag="audit"), ValueError, "flag='audit' needs an audit"),
    (dict(flag="audit", scorer="fbr", audit=True), ValueError, "needs the class votes of scorer='knn'"),
    (dict(audit=True, short=True), ValueError, "clean_labels must have one entry per row of clean_idx"),
    (dict(audit=True, out_of_range=True), ValueError, "clean_labels must hold class labels"),
    (dict(audit=True, floats=True), TypeError, "clean_labels must be integers"),
    (dict(audit=True, with_features=True), ValueError, "not both"),
])
def test_bad_audits_are_refused_naming_the_argument(kw, exc, words):
    x, y, noisy, clean = _audited_blobs(200, 3, 0.2, seed=1)
    verified = y[clean].copy()
    extra = {}
    if kw.pop("audit", False):
        extra["clean_labels"] = verified
    if kw.pop("short", False):
        extra["clean_labels"] = verified[:-1]
    if kw.pop("out_of_range", False):
        verified[0] = 7
        extra["clean_labels"] = verified
    if kw.pop("floats", False):
        extra["clean_labels"] = verified.astype(np.float32)
    if kw.pop("with_features", False):
        extra["clean_features"] = x[clean]
    with pytest.raises(exc, match=words):
        find_label_issues(x, noisy, clean_idx=clean, num_classes=3, **extra, **kw)


def test_cli_score_with_an_audit(tmp_path, capsys):
    from fastreweight.cli import main

    x, y, noisy, clean = _audited_blobs(600, 3, 0.25, seed=8)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", noisy)
    np.save(tmp_path / "idx.npy", clean)
    np.save(tmp_path / "verified.npy", y[clean])
    base = ["score", "--features", str(tmp_path / "x.npy"), "--labels", str(tmp_path / "y.npy"),
            "--clean-idx", str(tmp_path / "idx.npy"), "--clean-labels", str(tmp_path / "verified.npy")]
    assert main(base + ["--out", str(tmp_path / "a.csv"), "--flag", "audit", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"the audit of {clean.size} rows found {int((noisy != y)[clean].sum())} wrong" in out
    assert (tmp_path / "a.csv").exists()
    assert main(base + ["--out", str(tmp_path / "b.csv"), "--shift", "second"]) != 0
    assert "an audit (--clean-idx with --clean-labels) needs a scorer" in capsys.readouterr().err
    assert not (tmp_path / "b.csv").exists()


def test_report_states_the_audit_in_words(tmp_path):
    from fastreweight.label_issues import write_report

    x, y, noisy, clean = _audited_blobs(400, 3, 0.25, seed=9)
    r = find_label_issues(x, noisy, clean_idx=clean, clean_labels=y[clean])
    write_report(r, str(tmp_path / "r.html"))
    page = (tmp_path / "r.html").read_text()
    a = r.settings["audit"]
    assert f"{a['wrong']} of {a['rows']} audited labels wrong" in page and "P(wrong | score)" in page


def test_an_audit_that_finds_nothing_wrong_warns():
    """clean_labels equal to labels on the audited rows is what passing the verified labels twice looks
    like: the caller is told, and the share is reported as it is (0)."""
    x, y, noisy, clean = _audited_blobs(400, 3, 0.25, seed=10)
    noisy[clean] = y[clean]
    with pytest.warns(UserWarning, match="the audit found no wrong label"):
        r = find_label_issues(x, noisy, clean_idx=clean, clean_labels=y[clean])
    assert r.estimated_noise_rate == 0.0 and r.settings["audit"]["estimate"] == "share"
