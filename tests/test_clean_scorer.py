"""CleanScorer: the clean side prepared once gives the scores of fbr_scores / class_similarity, with
the batch side validated on every call."""
import pytest
import torch

import fastreweight as fr
from fastreweight import backends

f64 = torch.float64
CPU = torch.device("cpu")
AVAILABLE = [b for b in ("reference", "cpp", "triton") if backends.unavailable_reason(b, CPU) is None]


def data(B, M, d=13, k=0, C=4, layers=1, dtype=f64, seed=0):
    g = torch.Generator().manual_seed(seed)
    mk = lambda n, m: (torch.randn(n, m, generator=g, dtype=f64) + 0.5).to(dtype)  # noqa: E731
    xs = [mk(B, d + l) for l in range(layers)]
    zs = [mk(M, d + l) for l in range(layers)]
    es = [mk(B, k + l) for l in range(layers)] if k else None
    fs = [mk(M, k + l) for l in range(layers)] if k else None
    one = lambda t: t if t is None or layers > 1 else t[0]  # noqa: E731
    u = torch.arange(M) % C
    y = torch.randint(0, C, (B,), generator=g)
    return one(xs), one(zs), one(es), one(fs), y, u


@pytest.mark.parametrize("backend", AVAILABLE)
@pytest.mark.parametrize("strategy", ["pairwise", "prototype"])
@pytest.mark.parametrize("kernel", [dict(), dict(k=5), dict(layers=2), dict(k=3, layers=2)],
                         ids=["feature", "gradient", "feature-2layers", "gradient-2layers"])
@pytest.mark.parametrize("B", [1, 2, 17, 97])
def test_matches_the_one_shot_functions(backend, strategy, kernel, B):
    if backend == "triton" and B in (2, 97):
        pytest.skip("kept small under the interpreter")
    dtype = torch.float32 if backend == "triton" else f64  # Triton accumulates in fp32 only
    x, z, e, f, y, u = data(B, 37, C=4, dtype=dtype, **kernel)
    for center, normalize in (("clean", None), ("none", "cosine")):
        kw = dict(num_classes=4, center=center, normalize=normalize, strategy=strategy, backend=backend)
        scorer = fr.CleanScorer(z, u, clean_x2=f, **kw)
        for shift, alpha in (("max", 0.0), ("second", 0.25)):
            got = scorer.fbr_scores(x, y, x2=e, shift=shift, alpha=alpha)
            want = fr.fbr_scores(x, y, z, u, x2=e, clean_x2=f, shift=shift, alpha=alpha, **kw)
            assert torch.equal(got, want)
            assert (fr.last_plan().backend, fr.last_plan().strategy) == (backend, strategy)
        S = scorer.class_similarity(x, x2=e)
        torch.testing.assert_close(S, fr.class_similarity(x, y, z, u, x2=e, clean_x2=f, **kw), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_lower_precision_and_auto_plan(dtype):
    x, z, _, _, y, u = data(33, 50, d=24, dtype=dtype)
    scorer = fr.CleanScorer(z, u, num_classes=4)
    a = scorer.fbr_scores(x, y)
    assert a.dtype == torch.float32
    # the clean side counts as reused from the first call: the one-shot function plans the same way
    # once it has seen these clean tensors before
    fr.fbr_scores(x, y, z, u, num_classes=4)
    b = fr.fbr_scores(x, y, z, u, num_classes=4)
    assert torch.equal(a, b)
    assert "clean side reused" in fr.last_plan().reason or fr.last_plan().strategy == "pairwise"


def test_a_new_batch_size_gets_its_own_plan():
    x, z, _, _, y, u = data(97, 40)
    scorer = fr.CleanScorer(z, u, num_classes=4)
    scorer.fbr_scores(x, y)
    scorer.fbr_scores(x[:5], y[:5])
    assert sorted(k[0] for k in scorer._plans) == [5, 97]


def test_batch_side_errors():
    x, z, e, f, y, u = data(6, 20, k=3)
    s = fr.CleanScorer(z, u, clean_x2=f, num_classes=4)
    with pytest.raises(ValueError, match=r"x must have 13 columns \(the clean side's feature size\), got shape \(6, 5\)"):
        s.fbr_scores(x[:, :5], y, x2=e)
    with pytest.raises(TypeError, match=r"x has dtype torch.float32 but the clean features have torch.float64"):
        s.fbr_scores(x.float(), y, x2=e)
    with pytest.raises(ValueError, match=r"the clean features are on cpu but x is on meta"):
        s.fbr_scores(x.to("meta"), y, x2=e)
    with pytest.raises(ValueError, match=r"x2 must be given exactly when the scorer was built with clean_x2"):
        s.fbr_scores(x, y)
    with pytest.raises(ValueError, match=r"x2 must have 6 rows like x, got 2"):
        s.fbr_scores(x, y, x2=e[:2])
    with pytest.raises(ValueError, match=r"y must have length 6 \(one label per row\), got 5"):
        s.fbr_scores(x, y[:5], x2=e)
    with pytest.raises(TypeError, match=r"y must be an integer tensor"):
        s.fbr_scores(x, y.float(), x2=e)
    with pytest.raises(ValueError, match=r"y must hold class labels in \[0, 4\), got values in \[0, 9\]"):
        s.fbr_scores(x, torch.tensor([0, 1, 2, 3, 9, 0]), x2=e)
    bad = x.clone()
    bad[2, 3] = float("nan")
    with pytest.raises(ValueError, match=r"x contains NaN or Inf"):
        s.fbr_scores(bad, y, x2=e)
    with pytest.raises(ValueError, match="shift must be one of"):
        s.fbr_scores(x, y, x2=e, shift="median")
    with pytest.raises(ValueError, match="alpha must be a finite float >= 0"):
        s.fbr_scores(x, y, x2=e, alpha=-1.0)
    # unchecked, bad values still never read out of bounds: labels outside [0, C) score 0
    d = s.fbr_scores(x, torch.tensor([0, 1, 2, 3, 9, -1]), x2=e, check_values=False)
    assert d[4] == 0 and d[5] == 0


def test_clean_side_errors_and_missing_classes():
    x, z, _, _, y, u = data(6, 20)
    with pytest.raises(TypeError, match="num_classes must be a positive int, got None"):
        fr.CleanScorer(z, u, num_classes=None)
    with pytest.raises(ValueError, match="clean_x is empty"):
        fr.CleanScorer(z[:0], u[:0], num_classes=4)
    with pytest.raises(ValueError, match=r"clean_y must hold class labels in \[0, 4\)"):
        fr.CleanScorer(z, u + 1, num_classes=4)
    nan = z.clone()
    nan[0, 0] = float("inf")
    with pytest.raises(ValueError, match="clean_x contains NaN or Inf"):
        fr.CleanScorer(nan, u, num_classes=4)
    u2 = u.clone()
    u2[u2 == 3] = 2  # class 3 absent from the clean subset
    s = fr.CleanScorer(z, u2, num_classes=4)
    y3 = torch.tensor([0, 1, 3, 2, 3, 0])
    with pytest.raises(ValueError, match=r"y contains class\(es\) \[3\] that are absent from the clean subset"):
        s.fbr_scores(x, y3)
    d = s.fbr_scores(x, y3, on_missing_class="skip")
    assert (d[y3 == 3] == 0).all() and (d[y3 != 3] != 0).all()
    assert s.present.tolist() == [True, True, True, False]
    one = fr.CleanScorer(z, torch.zeros_like(u), num_classes=4)
    with pytest.raises(ValueError, match="clean_y must contain at least two classes"):
        one.fbr_scores(x, torch.zeros(6, dtype=torch.int64))
    one.class_similarity(x)  # similarities need no second class


@pytest.mark.parametrize("wdtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("fdtype", [torch.float32, f64])
@pytest.mark.parametrize("B", [1, 17, 97])
def test_reweight_equals_scores_then_step(wdtype, fdtype, B):
    N = 300
    x, z, _, _, y, u = data(B, 40, dtype=fdtype, seed=B)
    idx = torch.randperm(N, generator=torch.Generator().manual_seed(B))[:B]
    scorer = fr.CleanScorer(z, u, num_classes=4)
    fused_rw = fr.Reweighter(N, lr=0.3, init=0.6, dtype=wdtype)  # "cpp" where the extension is built
    plain_rw = fr.Reweighter(N, lr=0.3, init=0.6, dtype=wdtype, backend="reference")
    for step in range(3):
        d1, w1 = scorer.reweight(fused_rw, idx, x, y, shift="second", alpha=0.1, check_values=False)
        d2 = scorer.fbr_scores(x, y, shift="second", alpha=0.1)
        w2 = plain_rw.step(idx, d2)
        assert torch.equal(d1, d2)
        tol = dict(rtol=1e-12, atol=1e-12) if wdtype == f64 else dict(rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(w1, w2, **tol)
        torch.testing.assert_close(fused_rw.weights, plain_rw.weights, **tol)
        x = x.flip(0) * 1.1
    # with value checks the scores and the update run separately (the checks need both), same result
    d3, w3 = scorer.reweight(plain_rw, idx, x, y)
    assert torch.equal(d3, scorer.fbr_scores(x, y))


@pytest.mark.parametrize("wdtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("B", [1, 17, 97])
@pytest.mark.parametrize("check_values", [False, True], ids=["fused", "separate"])
def test_reweight_loss_coefficients_give_the_weighted_loss(wdtype, B, check_values):
    """``reweight(..., loss_eps=eps)`` also returns ``coef = w / max(Σw, eps)``: ``dot(losses, coef)`` is
    ``weighted_loss(losses, w, reduction="weight_sum", eps=eps)``, whether the fused op forms them
    (check_values=False, the C++ prototype path where built) or three tensor ops do (value checks on)."""
    N = 300
    x, z, _, _, y, u = data(B, 40, dtype=wdtype, seed=B + 1)
    idx = torch.randperm(N, generator=torch.Generator().manual_seed(B))[:B]
    scorer = fr.CleanScorer(z, u, num_classes=4)
    rw = fr.Reweighter(N, lr=0.3, init=0.6, dtype=wdtype)
    twin = fr.Reweighter(N, lr=0.3, init=0.6, dtype=wdtype, backend="reference")
    losses = torch.rand(B, dtype=wdtype, generator=torch.Generator().manual_seed(7)) + 0.1
    for step in range(3):
        d, w, coef = scorer.reweight(rw, idx, x, y, shift="max", check_values=check_values, loss_eps=1e-12)
        d2, w2 = scorer.reweight(twin, idx, x, y, shift="max", check_values=True)
        tol = dict(rtol=1e-12, atol=1e-12) if wdtype == f64 else dict(rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(w, w2, **tol)
        assert coef.dtype == w.dtype and coef.shape == (B,)
        want = w.double() / w.double().sum().clamp_min(1e-12)
        torch.testing.assert_close(coef.double(), want, **tol)
        torch.testing.assert_close(torch.dot(losses, coef), fr.weighted_loss(losses, w), **tol)
        x = x.flip(0) * 1.1
    # every weight 0: the floor divides, coefficients 0 (never NaN)
    zero = fr.Reweighter(N, lr=0.0, init=0.0, dtype=wdtype)
    _, w0, c0 = scorer.reweight(zero, idx, x, y, check_values=check_values, loss_eps=0.5)
    assert torch.equal(w0, torch.zeros(B, dtype=wdtype)) and torch.equal(c0, torch.zeros(B, dtype=wdtype))


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf"), 1, "1e-12"])
def test_reweight_refuses_a_bad_loss_eps(bad):
    x, z, _, _, y, u = data(6, 20)
    scorer = fr.CleanScorer(z, u, num_classes=4)
    rw = fr.Reweighter(10)
    before = rw.weights.clone()
    with pytest.raises(ValueError, match="loss_eps must be a finite float > 0 or None"):
        scorer.reweight(rw, torch.arange(6), x, y, loss_eps=bad)
    assert torch.equal(rw.weights, before)


def test_reweight_checks_its_arguments():
    x, z, _, _, y, u = data(6, 20)
    scorer = fr.CleanScorer(z, u, num_classes=4)
    rw = fr.Reweighter(10)
    with pytest.raises(ValueError, match=r"idx must have length 6"):
        scorer.reweight(rw, torch.arange(5), x, y)
    with pytest.raises(ValueError, match=r"idx must hold dataset indices in \[0, 10\)"):
        scorer.reweight(rw, torch.arange(6) + 5, x, y)
    before = rw.weights.clone()
    with pytest.raises((ValueError, RuntimeError), match=r"idx"):
        scorer.reweight(rw, torch.arange(6) + 5, x, y, check_values=False)  # still bounds-checked
    assert torch.equal(rw.weights, before)


@pytest.mark.parametrize("backend", AVAILABLE)
@pytest.mark.parametrize("strategy", ["pairwise", "prototype"])
@pytest.mark.parametrize("kernel", [dict(), dict(k=5), dict(layers=2)], ids=["feature", "gradient", "feature-2layers"])
@pytest.mark.parametrize("center,normalize", [("clean", None), ("none", "cosine")])
def test_refresh_equals_a_scorer_built_on_the_new_features(backend, strategy, kernel, center, normalize):
    """After ``refresh(new)`` every call gives what a scorer built from scratch on ``new`` gives, bit for
    bit, for batch sizes planned before the refresh and after it; the old values are gone."""
    dtype = torch.float32 if backend == "triton" else f64
    x, z, e, f, y, u = data(17, 37, C=4, dtype=dtype, **kernel)
    _, z2, _, f2, _, _ = data(17, 37, C=4, dtype=dtype, seed=5, **kernel)
    kw = dict(num_classes=4, center=center, normalize=normalize, strategy=strategy, backend=backend)
    scorer = fr.CleanScorer(z, u, clean_x2=f, **kw)
    before = scorer.fbr_scores(x, y, x2=e, shift="second", alpha=0.25)  # a plan for B = 17 exists now
    assert scorer.refresh(z2, clean_x2=f2) is scorer
    fresh = fr.CleanScorer(z2, u, clean_x2=f2, **kw)
    for rows in (slice(None), slice(0, 2)):  # B = 17 (planned before the refresh) and B = 2 (after)
        xb = [t[rows] for t in x] if isinstance(x, list) else x[rows]
        eb = None if e is None else ([t[rows] for t in e] if isinstance(e, list) else e[rows])
        got = scorer.fbr_scores(xb, y[rows], x2=eb, shift="second", alpha=0.25)
        assert torch.equal(got, fresh.fbr_scores(xb, y[rows], x2=eb, shift="second", alpha=0.25))
        assert torch.equal(scorer.class_similarity(xb, x2=eb), fresh.class_similarity(xb, x2=eb))
    assert not torch.equal(before, scorer.fbr_scores(x, y, x2=e, shift="second", alpha=0.25))


def test_refresh_reweight_follows_the_new_features():
    x, z, _, _, y, u = data(17, 40, dtype=torch.float32, seed=2)
    _, z2, _, _, _, _ = data(17, 40, dtype=torch.float32, seed=3)
    idx = torch.arange(17)
    scorer, fresh = fr.CleanScorer(z, u, num_classes=4), fr.CleanScorer(z2, u, num_classes=4)
    rw_a, rw_b = fr.Reweighter(30, lr=0.3, init=0.6), fr.Reweighter(30, lr=0.3, init=0.6)
    scorer.reweight(rw_a, idx, x, y, check_values=False)  # the fused runner prepared for the old features
    fresh.reweight(rw_b, idx, x, y, check_values=False)
    rw_a.weights.copy_(rw_b.weights)
    scorer.refresh(z2)
    got = scorer.reweight(rw_a, idx, x * 1.2, y, check_values=False, loss_eps=1e-12)
    want = fresh.reweight(rw_b, idx, x * 1.2, y, check_values=False, loss_eps=1e-12)
    assert all(torch.equal(a, b) for a, b in zip(got, want))


def test_refresh_checks_the_new_features():
    x, z, _, f, y, u = data(6, 20, k=3)
    scorer = fr.CleanScorer(z, u, clean_x2=f, num_classes=4)
    with pytest.raises(ValueError, match="clean_x2 must be given exactly when"):
        scorer.refresh(z)
    with pytest.raises(ValueError, match=r"clean_x must have 20 rows \(the clean subset's size\), got 19"):
        scorer.refresh(z[:19], clean_x2=f[:19])
    with pytest.raises(ValueError, match="clean_x must have 13 columns"):
        scorer.refresh(z[:, :12], clean_x2=f)
    with pytest.raises(TypeError, match="clean_x has dtype torch.float32 but the clean features have torch.float64"):
        scorer.refresh(z.float(), clean_x2=f)
    bad = z.clone()
    bad[3, 2] = float("nan")
    with pytest.raises(ValueError, match="clean_x"):
        scorer.refresh(bad, clean_x2=f)  # the scorer's check_values (default True): finite values


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("strategy", ["pairwise", "prototype"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_scorer_matches_one_shot_and_reweights(strategy, dtype):
    dev = torch.device("cuda")
    x, z, _, _, y, u = data(97, 1025, d=65, C=10, dtype=torch.float32, seed=7)
    x, z, y, u = x.to(dev, dtype), z.to(dev, dtype), y.to(dev), u.to(dev)
    kw = dict(num_classes=10, strategy=strategy)
    scorer = fr.CleanScorer(z, u, **kw)
    got = scorer.fbr_scores(x, y, shift="second", alpha=0.1)
    plan = fr.last_plan()
    want = fr.fbr_scores(x, y, z, u, shift="second", alpha=0.1, backend=plan.backend, **kw)
    assert plan.backend in ("triton", "cuda") and torch.equal(got, want)
    rw = fr.Reweighter(500, lr=0.3, device=dev)
    ref = fr.Reweighter(500, lr=0.3, backend="reference")
    idx = torch.randperm(500, generator=torch.Generator().manual_seed(1))[:97]
    d, w = scorer.reweight(rw, idx.to(dev), x, y, shift="second", alpha=0.1)
    torch.testing.assert_close(w.cpu(), ref.step(idx, d.cpu()), rtol=1e-6, atol=1e-6)
