"""Invariances SPEC §3 implies, checked by hypothesis on the float64 reference."""
import torch
from hypothesis import given, settings, strategies as st

import fastreweight as fr

f64 = torch.float64
SETTINGS = settings(max_examples=25, deadline=None)


@st.composite
def problems(draw, gradient=None):
    B = draw(st.integers(1, 9))
    M = draw(st.integers(2, 12))
    d = draw(st.integers(1, 6))
    C = draw(st.integers(2, 5))
    seed = draw(st.integers(0, 2**31 - 1))
    grad_kernel = draw(st.booleans()) if gradient is None else gradient
    g = torch.Generator().manual_seed(seed)
    u = torch.cat([torch.tensor([0, 1]), torch.randint(0, C, (M - 2,), generator=g)])
    present = torch.unique(u)
    y = present[torch.randint(0, len(present), (B,), generator=g)]
    x = torch.randn(B, d, generator=g, dtype=f64)
    z = torch.randn(M, d, generator=g, dtype=f64)
    e = f = None
    if grad_kernel:
        k = draw(st.integers(1, 4))
        e = torch.randn(B, k, generator=g, dtype=f64)
        f = torch.randn(M, k, generator=g, dtype=f64)
    return dict(x=x, y=y, z=z, u=u, e=e, f=f, C=C, g=g)


def _fbr(p, **kw):
    return fr.fbr_scores(p["x"], p["y"], p["z"], p["u"], num_classes=p["C"], x2=p["e"], clean_x2=p["f"], **kw)


def _sim(p, **kw):
    return fr.class_similarity(p["x"], p["y"], p["z"], p["u"], num_classes=p["C"], x2=p["e"], clean_x2=p["f"], **kw)


@SETTINGS
@given(problems(), st.sampled_from(["second", "max", "mean", "none"]), st.sampled_from([0.0, 0.25]))
def test_clean_permutation_invariance(p, shift, alpha):
    perm = torch.randperm(p["u"].shape[0], generator=p["g"])
    q = dict(p, z=p["z"][perm], u=p["u"][perm], f=None if p["f"] is None else p["f"][perm])
    torch.testing.assert_close(_fbr(p, shift=shift, alpha=alpha), _fbr(q, shift=shift, alpha=alpha), rtol=1e-9, atol=1e-9)


@SETTINGS
@given(problems(), st.floats(-50, 50))
def test_translation_invariance_with_clean_centering(p, c):
    v = torch.randn(p["x"].shape[1], generator=p["g"], dtype=f64) * c
    q = dict(p, x=p["x"] + v, z=p["z"] + v)
    torch.testing.assert_close(_sim(p), _sim(q), rtol=1e-7, atol=1e-7 * (1 + abs(c)) ** 2)


@SETTINGS
@given(problems(), st.sampled_from(["second", "max", "mean", "none"]), st.sampled_from([0.0, 0.25]))
def test_class_relabelling_equivariance(p, shift, alpha):
    C = p["C"]
    pi = torch.randperm(C, generator=p["g"])
    q = dict(p, y=pi[p["y"]], u=pi[p["u"]])
    S_p, S_q = _sim(p), _sim(q)
    torch.testing.assert_close(S_q[:, pi], S_p, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(_fbr(q, shift=shift, alpha=alpha), _fbr(p, shift=shift, alpha=alpha), rtol=1e-9, atol=1e-9)


@SETTINGS
@given(problems(), st.floats(0.01, 100.0))
def test_positive_scaling_leaves_normalised_update_unchanged(p, a):
    # scaling the features by a scales the feature-kernel scores by a^2 (a^2 per factor pair)
    q = dict(p, x=p["x"] * a, z=p["z"] * a)
    d_p, d_q = _fbr(p, shift="max"), _fbr(q, shift="max")
    torch.testing.assert_close(d_q, d_p * a * a, rtol=1e-9, atol=1e-9 * (1 + a * a))
    B = d_p.shape[0]
    idx = torch.arange(B)
    # the update's eps (default 1e-12) breaks exact invariance for scores of that size; use a tiny one
    rw_p = fr.Reweighter(B, dtype=f64, eps=1e-200)
    rw_q = fr.Reweighter(B, dtype=f64, eps=1e-200)
    torch.testing.assert_close(rw_p.step(idx, d_p), rw_q.step(idx, d_q), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(fr.threshold_weights(d_p), fr.threshold_weights(d_q), rtol=1e-9, atol=1e-9)


@SETTINGS
@given(problems(), st.sampled_from([None, "cosine"]), st.sampled_from(["clean", "none"]))
def test_pairwise_equals_prototype(p, normalize, center):
    a = _sim(p, strategy="pairwise", normalize=normalize, center=center)
    b = _sim(p, strategy="prototype", normalize=normalize, center=center)
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
