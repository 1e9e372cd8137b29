"""The reference path against literal SPEC loops and against explicit per-sample gradients."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

import fastreweight as fr
from fastreweight import capture

from spec_loops import spec_fbr, spec_similarity, spec_threshold_weights

f64 = torch.float64


def _data(B, M, d, C, k=None, seed=0, offset=0.0, missing=()):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, d, generator=g, dtype=f64) + offset
    z = torch.randn(M, d, generator=g, dtype=f64) + offset
    present = [c for c in range(C) if c not in missing]
    u = torch.tensor([present[j % len(present)] for j in range(M)])
    u = u[torch.randperm(M, generator=g)]
    y = torch.tensor(present)[torch.randint(0, len(present), (B,), generator=g)]
    e = f = None
    if k is not None:
        e = torch.randn(B, k, generator=g, dtype=f64)
        f = torch.randn(M, k, generator=g, dtype=f64)
    return x, y, z, u, e, f


@pytest.mark.parametrize("shift", ["second", "max", "mean", "none"])
@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5])
@pytest.mark.parametrize("center", ["clean", "none"])
@pytest.mark.parametrize("kernel", ["feature", "gradient", "cosine", "gradient-cosine"])
def test_fbr_scores_equal_spec_loop(shift, alpha, center, kernel):
    k = 3 if "gradient" in kernel else None
    cosine = "cosine" in kernel
    # imbalanced clean subset (M=11 over 4 present classes) and one class absent (class 2 of 5)
    x, y, z, u, e, f = _data(7, 11, 5, 5, k=k, seed=1, offset=0.7, missing=(2,))
    S_loop = spec_similarity(x, y, z, u, 5, center=center, cosine=cosine, E=e, F=f)
    want = spec_fbr(S_loop, y, shift, alpha)
    for strategy in ("pairwise", "prototype"):
        got = fr.fbr_scores(x, y, z, u, num_classes=5, center=center, x2=e, clean_x2=f,
                            normalize="cosine" if cosine else None, shift=shift, alpha=alpha,
                            strategy=strategy, backend="reference")
        assert got.dtype == f64
        torch.testing.assert_close(got, torch.tensor(want, dtype=f64), rtol=1e-10, atol=1e-10)
        S = fr.class_similarity(x, y, z, u, num_classes=5, center=center, x2=e, clean_x2=f,
                                normalize="cosine" if cosine else None, strategy=strategy, backend="reference")
        S_want = torch.tensor([[0.0 if v is None else v for v in row] for row in S_loop], dtype=f64)
        torch.testing.assert_close(S, S_want, rtol=1e-10, atol=1e-10)


def test_ties_and_alpha_cancels_shift():
    # with alpha = 1/(C'-1) every shift gives the same score (SPEC §3.4)
    x, y, z, u, _, _ = _data(9, 13, 4, 4, seed=3)
    outs = [fr.fbr_scores(x, y, z, u, num_classes=4, shift=s, alpha=1 / 3) for s in ("second", "max", "mean", "none")]
    for o in outs[1:]:
        torch.testing.assert_close(o, outs[0], rtol=1e-12, atol=1e-12)
    # exact ties between classes: duplicated clean rows under two labels
    z2 = torch.cat([z[:3], z[:3]])
    u2 = torch.tensor([0, 0, 0, 1, 1, 1])
    y2 = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1, 0])
    for s in ("second", "max"):
        d = fr.fbr_scores(x, y2, z2, u2, num_classes=2, shift=s)
        torch.testing.assert_close(d, torch.zeros(9, dtype=f64), atol=1e-12, rtol=0)


def test_output_dtypes_and_empty_batch():
    x, y, z, u, _, _ = _data(5, 6, 3, 2)
    assert fr.fbr_scores(x.float(), y, z.float(), u).dtype == torch.float32
    assert fr.fbr_scores(x.half(), y, z.half(), u).dtype == torch.float32
    assert fr.fbr_scores(x.bfloat16(), y, z.bfloat16(), u).dtype == torch.float32
    assert fr.fbr_scores(x, y, z, u).dtype == f64
    d = fr.fbr_scores(x[:0], y[:0], z, u, num_classes=2)
    assert d.shape == (0,)


def test_half_inputs_accumulate_in_fp32():
    x, y, z, u, _, _ = _data(17, 97, 33, 3, seed=4)
    ref = fr.class_similarity(x, y, z, u)
    for dt in (torch.float16, torch.bfloat16):
        got = fr.class_similarity(x.to(dt), y, z.to(dt), u)
        rounding = fr.class_similarity(x.to(dt).double(), y, z.to(dt).double(), u)
        # the only error beyond the inputs' rounding is fp32 accumulation
        torch.testing.assert_close(got.double(), rounding, rtol=1e-5, atol=1e-5)
        assert (got.double() - ref).abs().max() < 0.2


def test_pairwise_chunking_matches_one_shot(monkeypatch):
    from fastreweight import reference

    x, y, z, u, e, f = _data(17, 97, 5, 3, k=4, seed=5)
    want = fr.class_similarity(x, y, z, u, x2=e, clean_x2=f, strategy="pairwise")
    monkeypatch.setattr(reference, "_PAIR_CHUNK_ELEMS", 17 * 10)  # 10 columns at a time, ragged tail
    got = fr.class_similarity(x, y, z, u, x2=e, clean_x2=f, strategy="pairwise")
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_threshold_weights_equal_spec_loop():
    g = torch.Generator().manual_seed(7)
    for r in (torch.randn(97, generator=g, dtype=f64), torch.rand(17, generator=g, dtype=f64),
              -torch.rand(17, generator=g, dtype=f64), torch.tensor([0.0, 0.0, 1.0], dtype=f64),
              torch.tensor([-2.0, 1.0, 3.0, 0.0, -2.0], dtype=f64)):
        got = fr.threshold_weights(r)
        torch.testing.assert_close(got, torch.tensor(spec_threshold_weights(r.tolist()), dtype=f64))


def test_weighted_loss_reductions():
    losses = torch.tensor([1.0, 2.0, 4.0], dtype=f64)
    w = torch.tensor([1.0, 0.5, 0.0], dtype=f64)
    assert fr.weighted_loss(losses, w).item() == pytest.approx(2.0 / 1.5)
    assert fr.weighted_loss(losses, w, reduction="batch").item() == pytest.approx(2.0 / 3)
    assert fr.weighted_loss(losses, torch.zeros(3, dtype=f64)).item() == 0.0


# ---------------------------------------------------------------------------------------------
# the gradient kernel against explicit per-sample gradients (torch.func.vmap(grad))
# ---------------------------------------------------------------------------------------------
class MLP(nn.Module):
    def __init__(self, d=6, h=7, C=4):
        super().__init__()
        self.fc1 = nn.Linear(d, h)
        self.fc2 = nn.Linear(h, h, bias=False)
        self.head = nn.Linear(h, C)

    def forward(self, x):
        return self.head(torch.tanh(self.fc2(torch.tanh(self.fc1(x)))))


def _per_sample_grads(model, names, x, y):
    params = {n: p.detach() for n, p in model.named_parameters()}

    def loss(p, xi, yi):
        out = functional_call(model, p, (xi[None],))
        return F.cross_entropy(out, yi[None])

    g = vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)
    return torch.cat([g[n].reshape(x.shape[0], -1) for n in names], dim=1)


@pytest.mark.parametrize("layers", ["head", "all"])
def test_gradient_kernel_equals_per_sample_gradient_products(layers):
    torch.manual_seed(11)
    model = MLP().double()
    x, y = torch.randn(9, 6, dtype=f64), torch.randint(0, 4, (9,))
    cx, cy = torch.randn(13, 6, dtype=f64), torch.arange(13) % 4
    if layers == "head":
        mods, names = [model.head], ["head.weight", "head.bias"]
    else:
        mods = [model.fc1, model.fc2, model.head]
        names = ["fc1.weight", "fc1.bias", "fc2.weight", "head.weight", "head.bias"]
    A, D, _ = capture.linear_factors(model, mods, x, y)
    cA, cD, _ = capture.linear_factors(model, mods, cx, cy)
    G = _per_sample_grads(model, names, x, y)
    cG = _per_sample_grads(model, names, cx, cy)
    K = G @ cG.T
    # meta direction: mean inner product with the clean per-sample gradients
    r = fr.meta_scores(A, D, cA, cD)
    torch.testing.assert_close(r, K.mean(dim=1), rtol=1e-10, atol=1e-12)
    r_proto = fr.meta_scores(A, D, cA, cD, strategy="prototype")
    torch.testing.assert_close(r_proto, K.mean(dim=1), rtol=1e-10, atol=1e-12)
    # class similarity with the gradient kernel, no centering
    S = fr.class_similarity(A, y, cA, cy, x2=D, clean_x2=cD, center="none")
    want = torch.stack([K[:, cy == c].mean(dim=1) for c in range(4)], dim=1)
    torch.testing.assert_close(S, want, rtol=1e-10, atol=1e-12)


def test_head_residual_is_head_output_gradient():
    torch.manual_seed(12)
    model = MLP().double()
    x, y = torch.randn(5, 6, dtype=f64), torch.randint(0, 4, (5,))
    feats, logits = capture.penultimate(model, x)
    E = capture.head_residual(logits, y)
    A, D, _ = capture.linear_factors(model, [model.head], x, y, include_bias=False)
    torch.testing.assert_close(E, D[0])
    torch.testing.assert_close(feats, A[0])


def test_feature_tap_gives_penultimate_features_and_removes_its_hook():
    torch.manual_seed(13)
    model = MLP().double()
    x = torch.randn(5, 6, dtype=f64)
    want, logits = capture.penultimate(model, x)
    with capture.FeatureTap(model.head) as tap:
        for _ in range(2):  # the hook stays registered across forwards
            out = model(x)
            torch.testing.assert_close(tap.take(), want)
            torch.testing.assert_close(out, logits)
        with pytest.raises(ValueError, match=r"head was not called since the last take\(\)"):
            tap.take()  # taken already: a stale batch is never returned twice
    assert not model.head._forward_pre_hooks
    with pytest.raises(TypeError, match=r"head must be an nn.Linear module"):
        capture.FeatureTap(model)


def test_capture_leaves_param_grads_untouched():
    model = MLP().double()
    x, y = torch.randn(5, 6, dtype=f64), torch.randint(0, 4, (5,))
    capture.linear_factors(model, [model.fc1, model.head], x, y)
    assert all(p.grad is None for p in model.parameters())


def test_clean_side_memo_is_invalidated_by_any_change():
    from fastreweight.problem import clean_cache

    clean_cache.clear()
    x, y, z, u, e, f = _data(17, 23, 5, 3, k=4, seed=21)
    for strategy in ("prototype", "pairwise"):
        first = fr.fbr_scores(x, y, z, u, x2=e, clean_x2=f, strategy=strategy)
        again = fr.fbr_scores(x, y, z, u, x2=e, clean_x2=f, strategy=strategy)  # memo hit
        assert torch.equal(first, again)
        # a different second factor with the same Z must not reuse the gradient prototypes
        f2 = f * 2.0 + 1.0
        torch.testing.assert_close(fr.fbr_scores(x, y, z, u, x2=e, clean_x2=f2, strategy=strategy),
                                   fr.fbr_scores(x, y, z.clone(), u.clone(), x2=e, clean_x2=f2.clone(), strategy=strategy))
        # in-place edits of the clean features or labels are seen (version counter)
        z_edit, u_edit = z.clone(), u.clone()
        before = fr.fbr_scores(x, y, z_edit, u_edit, strategy=strategy)
        z_edit.mul_(-1.0).add_(0.5)
        u_edit[:3] = u_edit[:3].flip(0)
        after = fr.fbr_scores(x, y, z_edit, u_edit, strategy=strategy)
        fresh = fr.fbr_scores(x, y, z_edit.clone(), u_edit.clone(), strategy=strategy)
        assert not torch.equal(before, after)
        torch.testing.assert_close(after, fresh, rtol=0, atol=0)
