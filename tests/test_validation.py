"""One test per validation error: the right exception type, naming the argument."""
import pytest
import torch

import fastreweight as fr

f64 = torch.float64


@pytest.fixture
def inp():
    g = torch.Generator().manual_seed(0)
    return dict(
        x=torch.randn(5, 4, generator=g, dtype=f64),
        y=torch.tensor([0, 1, 2, 1, 0]),
        clean_x=torch.randn(6, 4, generator=g, dtype=f64),
        clean_y=torch.tensor([0, 1, 2, 0, 1, 2]),
    )


def call(inp, fn=fr.fbr_scores, **over):
    kw = dict(inp)
    kw.update(over)
    return fn(kw.pop("x"), kw.pop("y"), kw.pop("clean_x"), kw.pop("clean_y"), **kw)


CASES = [
    (dict(x=3.0), TypeError, r"x must be a torch.Tensor or a list of per-layer tensors, got float"),
    (dict(x=[[1.0]]), TypeError, r"x\[0\] must be a torch.Tensor, got list"),
    (dict(x=torch.ones(5, 4, dtype=torch.int64)), TypeError, r"x must have a floating dtype"),
    (dict(x=torch.randn(5)), ValueError, r"x must be a 2-D tensor of shape \[rows, features\], got shape \(5,\)"),
    (dict(x=[]), ValueError, r"x must be a tensor or a non-empty list"),
    (dict(clean_x=torch.randn(6, 3, dtype=f64)), ValueError, r"clean_x must have the same feature size as x \(4\)"),
    (dict(clean_x=torch.randn(6, 4)), TypeError, r"clean_x has dtype torch.float32 but x has torch.float64"),
    (dict(y=torch.tensor([0.0, 1, 2, 1, 0])), TypeError, r"y must be an integer tensor"),
    (dict(y=torch.tensor([0, 1])), ValueError, r"y must have length 5"),
    (dict(clean_y=torch.tensor([0, 1, 2])), ValueError, r"clean_y must have length 6"),
    (dict(y=torch.tensor([0, 1, 7, 1, 0]), num_classes=3), ValueError, r"y must hold class labels in \[0, 3\), got values in \[0, 7\]"),
    (dict(clean_y=torch.tensor([0, 1, 2, 0, 1, -1]), num_classes=3), ValueError, r"clean_y must hold class labels in \[0, 3\)"),
    (dict(clean_x=torch.zeros(0, 4, dtype=f64), clean_y=torch.zeros(0, dtype=torch.int64)), ValueError, r"clean_x is empty"),
    (dict(y=torch.tensor([0, 1, 3, 1, 0]), num_classes=4), ValueError, r"y contains class\(es\) \[3\] that are absent from the clean subset"),
    (dict(clean_y=torch.tensor([1, 1, 1, 1, 1, 1]), y=torch.ones(5, dtype=torch.int64)), ValueError, r"clean_y must contain at least two classes"),
    (dict(num_classes=0), ValueError, r"num_classes must be a positive int"),
    (dict(num_classes=2.5), TypeError, r"num_classes must be a positive int"),
    (dict(shift="top"), ValueError, r"shift must be one of \['second', 'max', 'mean', 'none'\]"),
    (dict(alpha=-0.1), ValueError, r"alpha must be a finite float >= 0"),
    (dict(center="batch"), ValueError, r"center must be one of"),
    (dict(normalize="l2"), ValueError, r"normalize must be one of"),
    (dict(strategy="dense"), ValueError, r"strategy must be one of"),
    (dict(backend="numba"), ValueError, r"backend must be one of"),
    (dict(x2=torch.randn(5, 2, dtype=f64)), ValueError, r"x2 and clean_x2 must be given together"),
    (dict(x2=torch.randn(5, 2, dtype=f64), clean_x2=torch.randn(6, 3, dtype=f64)), ValueError, r"clean_x2 must have the same feature size as x2 \(2\)"),
    (dict(x2=torch.randn(4, 2, dtype=f64), clean_x2=torch.randn(6, 2, dtype=f64)), ValueError, r"x2 must have 5 rows like x"),
    (dict(clean_x=[torch.randn(6, 4, dtype=f64)] * 2), ValueError, r"x and clean_x must have the same number of layers, got 1 and 2"),
    (dict(clean_x=torch.randn(6, 4, dtype=f64, device="meta")), ValueError, r"all inputs must be on one device: x is on cpu but clean_x is on meta"),
]


@pytest.mark.parametrize("over,exc,msg", CASES, ids=[c[2][:40] for c in CASES])
def test_rejects_bad_input(inp, over, exc, msg):
    with pytest.raises(exc, match=msg):
        call(inp, **over)


@pytest.mark.parametrize("where", ["x", "clean_x"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_rejects_non_finite_features(inp, where, bad):
    t = inp[where].clone()
    t[1, 2] = bad
    with pytest.raises(ValueError, match=rf"{where} contains NaN or Inf"):
        call(inp, **{where: t})


def test_non_finite_second_factor(inp):
    e = torch.randn(5, 2, dtype=f64)
    f = torch.randn(6, 2, dtype=f64)
    f[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"clean_x2 contains NaN or Inf"):
        call(inp, x2=e, clean_x2=f)


def test_missing_class_can_be_skipped(inp):
    y = torch.tensor([0, 1, 3, 1, 0])
    d = call(inp, y=y, num_classes=4, on_missing_class="skip")
    assert d[2] == 0 and torch.isfinite(d).all()
    with pytest.raises(ValueError, match=r"on_missing_class must be one of"):
        call(inp, on_missing_class="ignore")


def test_class_similarity_validates_the_same(inp):
    with pytest.raises(ValueError, match=r"clean_x is empty"):
        call(inp, fn=fr.class_similarity, clean_x=torch.zeros(0, 4, dtype=f64), clean_y=torch.zeros(0, dtype=torch.int64))


def test_meta_scores_needs_second_factor(inp):
    with pytest.raises(ValueError, match=r"x2 and clean_x2 are required"):
        fr.meta_scores(inp["x"], None, inp["clean_x"], None)


def test_explicit_unavailable_backend_raises(inp):
    with pytest.raises(fr.BackendUnavailable, match=r"backend='cuda' cannot run this call"):
        call(inp, backend="cuda")


def test_auto_backend_falls_back_and_says_which(inp, caplog):
    import logging

    from fastreweight import plan

    plan._logged.clear()
    with caplog.at_level(logging.INFO, logger="fastreweight"):
        call(inp)
    p = fr.last_plan()
    assert p.backend in ("reference", "cpp")
    assert f"backend={p.backend}" in caplog.text


# --- weight rules -------------------------------------------------------------------------------
def test_reweighter_rejects_bad_steps():
    rw = fr.Reweighter(6)
    with pytest.raises(ValueError, match=r"idx must hold dataset indices in \[0, 6\), got values in \[0, 9\]"):
        rw.step(torch.tensor([0, 9]), torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match=r"idx must not repeat an index within a batch; 2 appears more than once"):
        rw.step(torch.tensor([2, 1, 2]), torch.tensor([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match=r"scores contains NaN or Inf"):
        rw.step(torch.tensor([0, 1]), torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match=r"idx must have length 2"):
        rw.step(torch.tensor([0, 1, 2]), torch.tensor([1.0, 2.0]))
    with pytest.raises(TypeError, match=r"idx must be an integer tensor"):
        rw.step(torch.tensor([0.0, 1.0]), torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match=r"scores must be a 1-D tensor"):
        rw.step(torch.tensor([0, 1]), torch.ones(2, 1))


@pytest.mark.parametrize("kw,exc,msg", [
    (dict(num_samples=0), ValueError, r"num_samples must be a positive int"),
    (dict(num_samples=3, lr=-1.0), ValueError, r"lr must be >= 0"),
    (dict(num_samples=3, init=1.5), ValueError, r"init must lie in \[0, 1\]"),
    (dict(num_samples=3, normalize_update="max"), ValueError, r"normalize_update must be one of"),
    (dict(num_samples=3, dtype=torch.float16), TypeError, r"dtype must be torch.float32 or torch.float64"),
])
def test_reweighter_rejects_bad_config(kw, exc, msg):
    n = kw.pop("num_samples")
    with pytest.raises(exc, match=msg):
        fr.Reweighter(n, **kw)


def test_weight_rules_reject_bad_scores():
    with pytest.raises(ValueError, match=r"scores contains NaN or Inf"):
        fr.threshold_weights(torch.tensor([1.0, float("inf")]))
    with pytest.raises(TypeError, match=r"scores must have a floating dtype"):
        fr.stateless_weights(torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=r"w must have length 3"):
        fr.weighted_loss(torch.ones(3), torch.ones(2))
    with pytest.raises(ValueError, match=r"reduction must be one of"):
        fr.weighted_loss(torch.ones(3), torch.ones(3), reduction="sum")


# --- capture -------------------------------------------------------------------------------------
def test_capture_rejects_bad_models_and_inputs():
    import torch.nn as nn
    import torch.nn.functional as F

    from fastreweight import capture

    mlp = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3))
    x, y = torch.randn(6, 4), torch.randint(0, 3, (6,))
    with pytest.raises(TypeError, match=r"head must be an nn.Linear module, got ReLU"):
        capture.penultimate(mlp, x, head=mlp[1])
    with pytest.raises(ValueError, match=r"model has no nn.Linear layer"):
        capture.penultimate(nn.Sequential(nn.ReLU()), x)
    with pytest.raises(TypeError, match=r"layers\[1\] must be an nn.Linear module"):
        capture.linear_factors(mlp, [mlp[0], mlp[1]], x, y)
    with pytest.raises(ValueError, match=r"layers must name at least one nn.Linear layer"):
        capture.linear_factors(mlp, [], x, y)
    with pytest.raises(ValueError, match=r"loss_fn must return one loss per sample"):
        capture.linear_factors(mlp, [mlp[2]], x, y, loss_fn=lambda o, t: F.cross_entropy(o, t))
    seq = nn.Sequential(nn.Linear(4, 3))
    with pytest.raises(ValueError, match=r"per-sample factors need a 2-D input"):
        capture.linear_factors(seq, [seq[0]], torch.randn(2, 5, 4), torch.randint(0, 3, (2, 5)),
                               loss_fn=lambda o, t: o.sum(dim=(1, 2)))
    with pytest.raises(ValueError, match=r"y must hold class labels in \[0, 3\)"):
        capture.head_residual(torch.randn(6, 3), torch.tensor([0, 1, 2, 3, 0, 1]))
    unused = nn.Linear(4, 4)
    with pytest.raises(ValueError, match=r"were not called during model\(inputs\)"):
        capture.linear_factors(mlp, [unused], x, y)


def test_clean_values_are_rechecked_after_an_in_place_change():
    """Clean-side value checks are skipped on a memo hit (the clean tensors are unchanged since they were
    checked); an in-place change bumps the version counter, so NaN written into the clean features, or
    an out-of-range clean label, is still caught, and the batch side is checked on every call."""
    from fastreweight.problem import clean_cache

    clean_cache.clear()
    g = torch.Generator().manual_seed(5)
    x, z = torch.randn(7, 4, generator=g), torch.randn(12, 4, generator=g)
    y, u = torch.arange(7) % 3, torch.arange(12) % 3
    fr.fbr_scores(x, y, z, u, num_classes=3)  # checks pass, memo entry made
    fr.fbr_scores(x, y, z, u, num_classes=3)  # memo hit
    bad_x = x.clone()
    bad_x[2, 1] = float("nan")
    with pytest.raises(ValueError, match="x contains NaN or Inf"):
        fr.fbr_scores(bad_x, y, z, u, num_classes=3)
    z[5, 0] = float("inf")  # in place
    with pytest.raises(ValueError, match="clean_x contains NaN or Inf"):
        fr.fbr_scores(x, y, z, u, num_classes=3)
    z[5, 0] = 0.0
    u[3] = 7  # in place: out of range for num_classes=3
    with pytest.raises(ValueError, match="clean_y must hold class labels in"):
        fr.fbr_scores(x, y, z, u, num_classes=3)
    clean_cache.clear()
