"""flag="posterior": the calibration of the votes on the clean rows and the EM noise model of
label_issues/posterior.py against literal computations, and find_label_issues' use of them."""
import numpy as np
import pytest

from fastreweight.label_issues import find_label_issues
from fastreweight.label_issues.posterior import EPS, LEVEL, calibrated_class_probs, noise_posterior


def _votes(n, C, seed):
    """Random vote shares (rows on the simplex, some exact zeros as knn gives) and labels."""
    rng = np.random.default_rng(seed)
    P = rng.dirichlet(np.full(C, 0.3), n)
    P[rng.random((n, C)) < 0.2] = 0.0
    P[np.arange(n), rng.integers(0, C, n)] += 0.05  # no all-zero row
    P /= P.sum(1, keepdims=True)
    Q = rng.dirichlet(np.full(C, 0.5), n)
    y = np.array([rng.choice(C, p=0.5 * p + 0.5 / C) for p in P])
    return P, Q, y


def _nll(a, b, P, Q, y, mask):
    z = a * np.log(P + EPS) + b * np.log(Q + EPS)
    z = z - z.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    return -logp[mask][np.arange(mask.sum()), y[mask]].mean()


@pytest.mark.parametrize("n,C", [(17, 2), (97, 3), (1025, 10)])
def test_calibration_minimises_the_clean_rows_nll(n, C):
    P, Q, y = _votes(n, C, seed=n)
    mask = np.zeros(n, bool)
    mask[np.random.default_rng(1).choice(n, max(n // 3, 2), replace=False)] = True
    pi, (a, b) = calibrated_class_probs(P, Q, y, mask)
    assert a >= 0 and b >= 0
    z = a * np.log(P + EPS) + b * np.log(Q + EPS)
    want = np.exp(z - z.max(1, keepdims=True))
    np.testing.assert_allclose(pi, want / want.sum(1, keepdims=True), rtol=1e-12, atol=1e-15)
    best = _nll(a, b, P, Q, y, mask)
    # no point of a grid around it (inside the bounds) does better: the fit is convex, its minimum is global
    for da in np.linspace(-0.5, 0.5, 11):
        for db in np.linspace(-0.5, 0.5, 11):
            if a + da >= 0 and b + db >= 0:
                assert _nll(a + da, b + db, P, Q, y, mask) >= best - 1e-6


def _literal_em(pi, y, clean, iters):
    C = pi.shape[1]
    T = np.full((C, C), 0.1 / (C - 1))
    np.fill_diagonal(T, 0.9)
    for _ in range(iters):
        counts = np.full((C, C), 1e-3)
        for i in np.flatnonzero(~clean):
            post = np.array([pi[i, c] * T[c, y[i]] for c in range(C)])
            counts[:, y[i]] += post / post.sum()
        T = counts / counts.sum(1, keepdims=True)
    post = np.array([[pi[i, c] * T[c, y[i]] for c in range(C)] for i in range(len(y))])
    return (post / post.sum(1, keepdims=True))[np.arange(len(y)), y], T


@pytest.mark.parametrize("n,C", [(2, 2), (17, 3), (97, 4)])
def test_noise_posterior_is_the_em_fixed_point(n, C):
    rng = np.random.default_rng(n)
    pi = rng.dirichlet(np.ones(C), n)
    y = rng.integers(0, C, n)
    clean = np.zeros(n, bool)
    clean[0] = True
    post, T, rate, iters = noise_posterior(pi, y, clean)
    want_post, want_T = _literal_em(pi, y, clean, iters)
    np.testing.assert_allclose(T, want_T, rtol=1e-9, atol=1e-12)
    want_post[clean] = 1.0
    np.testing.assert_allclose(post, want_post, rtol=1e-9, atol=1e-12)
    assert rate == pytest.approx(np.mean(1 - want_post[~clean]))


def test_em_recovers_a_known_transition_and_noise_rate():
    """Labels drawn from known class probabilities through a known pair-flip matrix: EM finds both."""
    rng = np.random.default_rng(0)
    n, C, flip = 20000, 4, 0.25
    true = rng.integers(0, C, n)
    pi = np.full((n, C), 0.02 / (C - 1))
    pi[np.arange(n), true] = 0.98  # what a calibrated classifier of the true class says
    T = np.eye(C) * (1 - flip)
    T[np.arange(C), (np.arange(C) + 1) % C] = flip
    y = np.array([rng.choice(C, p=T[t]) for t in true])
    post, T_hat, rate, _ = noise_posterior(pi, y, np.zeros(n, bool))
    np.testing.assert_allclose(T_hat, T, atol=0.02)
    assert rate == pytest.approx((y != true).mean(), abs=0.01)
    flagged = post < LEVEL
    assert (y != true)[flagged].mean() > 0.97 and flagged[y != true].mean() > 0.97


def _blobs(n, C, rate, seed, kind="sym", clean_per_class=20):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, C, n)
    x = rng.normal(size=(n, 8)) + 3.0 * np.eye(C, 8)[y]
    noisy = y.copy()
    flip = rng.random(n) < rate
    noisy[flip] = (y[flip] + (1 if kind == "pair" else rng.integers(1, C, n)[flip])) % C
    clean = np.concatenate([np.flatnonzero(y == c)[:clean_per_class] for c in range(C)])
    noisy[clean] = y[clean]
    return x.astype(np.float32), y, noisy, clean


@pytest.mark.parametrize("kind,rate", [("sym", 0.1), ("sym", 0.3), ("pair", 0.25)])
def test_posterior_flag_estimates_class_conditional_noise(kind, rate):
    x, y, noisy, clean = _blobs(3000, 5, rate, seed=3, kind=kind)
    r = find_label_issues(x, noisy, clean_idx=clean, flag="posterior")
    others = np.setdiff1d(np.arange(len(y)), clean)
    wrong = noisy != y
    assert r.settings["flag"] == "posterior" and r.settings["level"] == LEVEL
    assert np.isnan(r.threshold) and not r.is_label_issue[clean].any()
    assert r.estimated_noise_rate == pytest.approx(wrong[others].mean(), abs=0.03)
    assert wrong[r.is_label_issue].mean() > 0.9 and r.is_label_issue[wrong].mean() > 0.8
    # the flagged set is the rows whose posterior is below the level, recomputed from the settings' weights
    diag = np.array(r.settings["transition_diagonal"])
    assert diag.shape == (5,) and np.all((diag > 0) & (diag <= 1))
    # the same trusted rows given as separate features flag as well
    r2 = find_label_issues(x[others], noisy[others], clean_features=x[clean], clean_labels=y[clean], flag="posterior")
    assert r2.is_label_issue.shape == (others.size,)
    assert wrong[others][r2.is_label_issue].mean() > 0.9
    assert r2.estimated_noise_rate == pytest.approx(wrong[others].mean(), abs=0.03)


def test_posterior_flag_adapts_to_the_noise_rate_where_the_margin_does_not():
    """At 5% noise a fixed vote margin flags hard correct rows in proportion to the data; the posterior,
    whose prior is the estimated noise rate, stays precise."""
    x, y, noisy, clean = _blobs(3000, 5, 0.05, seed=4)
    wrong = noisy != y
    post = find_label_issues(x, noisy, clean_idx=clean, flag="posterior").is_label_issue
    margin = find_label_issues(x, noisy, clean_idx=clean, flag="margin").is_label_issue
    assert wrong[post].mean() > wrong[margin].mean()


@pytest.mark.parametrize("flag", ["posterior", "confident"])
def test_noise_model_flags_need_knn(flag):
    x, y, noisy, clean = _blobs(200, 3, 0.2, seed=5)
    for scorer in ("fbr", "fbr-whiten"):
        with pytest.raises(ValueError, match=f"flag='{flag}' needs the class votes of scorer='knn'"):
            find_label_issues(x, noisy, clean_idx=clean, scorer=scorer, flag=flag)


def test_report_of_a_posterior_flagged_set_says_how_it_was_flagged(tmp_path):
    from fastreweight.label_issues.report import write_report

    x, y, noisy, clean = _blobs(400, 3, 0.2, seed=6)
    r = find_label_issues(x, noisy, clean_idx=clean, flag="posterior")
    path = tmp_path / "report.html"
    write_report(r, str(path))
    page = path.read_text()
    assert "No threshold on the score" in page and "P(given label right) &lt; 0.5" in page
    assert 'class="threshold"' not in page and "nan" not in page.lower().split("<body")[1]
    with pytest.raises(FileExistsError):
        write_report(r, str(path))


def test_knn_memory_bytes_covers_the_numpy_arrays_of_every_flag():
    """The arrays numpy allocates (traced; torch's are not) stay within what knn_memory_bytes counts for
    each flag rule, less the similarity chunk (torch's): the neighbourhood choice's calibration for every
    rule, the noise model's arrays for the model flags."""
    import tracemalloc

    from fastreweight.label_issues import knn_memory_bytes

    n, d, c = 3000, 8, 20
    x, y, noisy, clean = _blobs(n, c, 0.2, seed=7, clean_per_class=5)
    find_label_issues(x, noisy, clean_idx=clean, flag="posterior", num_classes=c)  # imports (scipy) untraced
    audit = dict(clean_labels=y[clean])  # an audit: the clean rows keep their noisy labels in `labels`
    given = noisy.copy()
    given[clean] = (y[clean] + 1) % c
    find_label_issues(x, given, clean_idx=clean, flag="audit", num_classes=c, **audit)  # scipy.stats, untraced
    for flag, kw in (("margin", {}), ("posterior", {}), ("confident", {}), ("confident", audit), ("audit", audit)):
        tracemalloc.start()
        find_label_issues(x, given if kw else noisy, clean_idx=clean, flag=flag, num_classes=c, **kw)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        chunk = min(8192, n)  # knn_memory_bytes' default chunk_rows, capped at the rows
        sims = 4 * 2 * min(chunk, 4096) * n
        bound = knn_memory_bytes(n, d, c, posterior=flag != "margin", audited=clean.size if kw else 0)
        assert 0 < peak <= bound - sims, (flag, kw.keys())