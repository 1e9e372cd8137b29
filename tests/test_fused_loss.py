"""The stateful FBR step's whole loss as one op (``fastreweight::fbr_weighted_ce_prototype``): the
scores, the Reweighter update and ``weighted_loss(cross_entropy(logits, y, "none"), w)`` in one call
with its own backward.  Checked against the ops it replaces (``fbr_reweight_prototype``,
``cross_entropy``, ``dot``) in float64 on odd shapes, its gradient against autograd of those and by
``gradcheck``, its contract (poisoned outputs, errors before any write, opcheck), and in the trainer."""
import pytest
import torch
import torch.nn.functional as F

import fastreweight as fr
from fastreweight import csrc_backend

REASON = csrc_backend.load_cpu()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"C++ CPU extension unavailable: {REASON}")
ops = torch.ops.fastreweight if REASON is None else None


def _case(B, C, d=13, M=29, fdtype=torch.float64, ldtype=torch.float64, wdtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(B, d, generator=g, dtype=torch.float64) + 0.3).to(fdtype)
    z = (torch.randn(M, d, generator=g, dtype=torch.float64) + 0.3).to(fdtype)
    u = torch.arange(M) % C
    y = torch.randint(0, C, (B,), generator=g)
    logits = (torch.randn(B, C, generator=g, dtype=torch.float64) * 3).to(ldtype)
    idx = torch.randperm(3 * B + 5, generator=g)[:B]
    w = torch.rand(3 * B + 5, generator=g, dtype=torch.float64).to(wdtype)
    scorer = fr.CleanScorer(z, u, num_classes=C, check_values=False)
    scorer.reweight(fr.Reweighter(w.shape[0], dtype=wdtype), idx, x, y, check_values=False)  # plan + prepare
    return scorer, x, y, logits, idx, w


def _runners(scorer, x):
    entry = scorer._plans[(x.shape[0], x.dtype)]
    return entry[3], entry[4]  # (fbr_reweight_prototype runner, fbr_weighted_ce_prototype runner)


@pytest.mark.parametrize("B", [1, 2, 17, 97])
@pytest.mark.parametrize("C", [2, 10, 17])
@pytest.mark.parametrize("dtypes", [(torch.float64,) * 3, (torch.float32,) * 3,
                                    (torch.float32, torch.float32, torch.float64),
                                    (torch.float64, torch.float32, torch.float32)],
                         ids=["f64", "f32", "f32-logits64", "f64-features-f32-logits"])
@pytest.mark.parametrize("shift,alpha", [("max", 0.0), ("second", 0.2)])
def test_fused_loss_equals_the_ops_it_replaces(B, C, dtypes, shift, alpha):
    fdtype, ldtype, wdtype = dtypes
    scorer, x, y, logits, idx, w = _case(B, C, fdtype=fdtype, ldtype=ldtype, wdtype=wdtype, seed=B * 7 + C)
    reweight, fused = _runners(scorer, x)
    w_ref = w.clone()
    d_ref, new_ref, coef_ref = reweight([x], None, y, shift, alpha, w_ref, idx, 0.3, "mean_abs", 1e-12, 1e-12)
    loss_ref = torch.dot(F.cross_entropy(logits, y, reduction="none"), coef_ref.to(ldtype))
    old = csrc_backend.set_poison_outputs(True)  # every element of every output must be written
    try:
        loss, d, new, coef, probs = fused(logits, [x], None, y, shift, alpha, w, idx, 0.3, "mean_abs", 1e-12, 1e-12)
    finally:
        csrc_backend.set_poison_outputs(old)
    # the scores and the update are the same code as fbr_reweight_prototype's: equal bit for bit
    assert torch.equal(d, d_ref) and torch.equal(new, new_ref) and torch.equal(w, w_ref)
    assert torch.equal(coef, coef_ref.to(ldtype)) and coef.dtype == ldtype
    # the softmax saved for the backward, against float64 ground truth
    assert probs.dtype == ldtype and probs.shape == logits.shape
    torch.testing.assert_close(probs.double(), torch.softmax(logits.double(), 1), rtol=0,
                               atol=1e-14 if ldtype == torch.float64 else 2e-7)
    assert loss.dim() == 0 and loss.dtype == ldtype
    # the loss: within a few times float rounding of cross_entropy + dot (float64 ground truth)
    truth = torch.dot(F.cross_entropy(logits.double(), y, reduction="none"), coef_ref.double())
    err_ref = float((loss_ref.double() - truth).abs())
    err = float((loss.double() - truth).abs())
    assert err <= 4 * err_ref + (1e-13 if ldtype == torch.float64 else 1e-6) * max(1.0, float(truth.abs())), (err, err_ref)


@pytest.mark.parametrize("B,C", [(1, 2), (17, 10), (97, 17)])
@pytest.mark.parametrize("ldtype", [torch.float64, torch.float32])
def test_fused_loss_gradient_equals_autograd_of_cross_entropy_and_dot(B, C, ldtype):
    scorer, x, y, logits, idx, w = _case(B, C, ldtype=ldtype, seed=B + C)
    reweight, fused = _runners(scorer, x)
    a = logits.clone().requires_grad_(True)
    b = logits.clone().requires_grad_(True)
    w2 = w.clone()
    loss, d, new, coef, probs = fused(a, [x], None, y, "max", 0.0, w, idx, 0.3, "mean_abs", 1e-12, 1e-12)
    _, _, coef_ref = reweight([x], None, y, "max", 0.0, w2, idx, 0.3, "mean_abs", 1e-12, 1e-12)
    ref = torch.dot(F.cross_entropy(b, y, reduction="none"), coef_ref.to(ldtype))
    (loss * 1.7).backward()
    (ref * 1.7).backward()
    tol = dict(rtol=1e-12, atol=1e-14) if ldtype == torch.float64 else dict(rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(a.grad, b.grad, **tol)
    for t in (d, new, coef, probs):  # constants of the loss
        assert not t.requires_grad
    assert loss.requires_grad and loss.grad_fn is not None


def test_fused_loss_gradcheck():
    """With lr = 0 the weights stay put, so repeated calls are one function of the logits."""
    scorer, x, y, logits, idx, w = _case(5, 4, seed=3)
    _, fused = _runners(scorer, x)

    def f(lg):
        return fused(lg, [x], None, y, "second", 0.1, w, idx, 0.0, "mean_abs", 1e-12, 1e-12)[0]

    assert torch.autograd.gradcheck(f, (logits.clone().requires_grad_(True),), eps=1e-6, atol=1e-8)


def test_fused_loss_is_deterministic():
    scorer, x, y, logits, idx, w = _case(97, 10, ldtype=torch.float32, wdtype=torch.float32, seed=5)
    _, fused = _runners(scorer, x)
    outs = []
    for _ in range(2):
        lg = logits.clone().requires_grad_(True)
        loss, *_ = fused(lg, [x], None, y, "max", 0.0, w.clone(), idx, 0.3, "mean_abs", 1e-12, 1e-12)
        loss.backward()
        outs.append((loss.detach(), lg.grad))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])


@pytest.mark.parametrize("case,msg", [
    ("logits_rows", r"logits must have 6 rows \(one per batch row\) and at least one column, got shape \[5, 4\]"),
    ("logits_int", r"logits must be a 2-D float32 or float64 tensor \(B x classes\), got Long"),
    ("label_past_logits", r"y holds 3 at position 0; labels must lie in \[0, 3\) \(the logits' columns\)"),
    ("features_grad", r"the features \(xs, es\) must not require grad"),
    ("loss_eps", r"loss_eps must be a finite float > 0, got 0"),
    ("idx", r"idx holds 40 at position 2"),
])
def test_fused_loss_checks_its_inputs_before_any_write(case, msg):
    scorer, x, y, logits, idx, w = _case(6, 4, seed=9)
    _, fused = _runners(scorer, x)
    y = y.clone()
    y[0] = 3
    args = dict(logits=logits, x=x, y=y, w=torch.rand(40, dtype=torch.float64), idx=torch.tensor([3, 7, 1, 0, 11, 5]),
                loss_eps=1e-12)
    if case == "logits_rows":
        args["logits"] = logits[:5]
    elif case == "logits_int":
        args["logits"] = logits.long()
    elif case == "label_past_logits":
        args["logits"] = logits[:, :3]
    elif case == "features_grad":
        args["x"] = x.clone().requires_grad_(True)
    elif case == "loss_eps":
        args["loss_eps"] = 0.0
    else:
        args["idx"] = torch.tensor([3, 7, 40, 0, 11, 5])
    before = args["w"].clone()
    with pytest.raises(RuntimeError, match="fastreweight::fbr_weighted_ce_prototype: " + msg):
        fused(args["logits"], [args["x"]], None, args["y"], "max", 0.0, args["w"], args["idx"], 0.3, "mean_abs",
              1e-12, args["loss_eps"])
    assert torch.equal(args["w"], before)


def test_fused_loss_opcheck_and_backward_op_messages():
    scorer, x, y, logits, idx, w = _case(6, 4, seed=2)
    t = scorer._template
    protos = t.clean_memo[("reference-prototypes", False)]
    args = (logits.clone().requires_grad_(True), [x], [t.layers[0].mu], [], protos, t.class_weight, False, y, "max",
            0.0, w, idx, 0.3, "mean_abs", 1e-12, 1e-12)
    torch.library.opcheck(ops.fbr_weighted_ce_prototype.default, args,
                          test_utils=("test_schema", "test_autograd_registration", "test_faketensor"))
    probs, coef = torch.softmax(logits, 1), torch.rand(6, dtype=torch.float64)
    g = torch.tensor(1.0, dtype=torch.float64)
    torch.library.opcheck(ops.fbr_weighted_ce_backward.default, (g, probs, coef, y))
    with pytest.raises(RuntimeError, match=r"fastreweight::fbr_weighted_ce_backward: grad must be a 0-dim tensor"):
        ops.fbr_weighted_ce_backward(g.float(), probs, coef, y)
    with pytest.raises(RuntimeError, match=r"fastreweight::fbr_weighted_ce_backward: coef must be a 1-D tensor of length 6"):
        ops.fbr_weighted_ce_backward(g, probs, coef[:5], y)
    with pytest.raises(RuntimeError, match=r"fastreweight::fbr_weighted_ce_backward: probs must be a 2-D"):
        ops.fbr_weighted_ce_backward(g, probs[0], coef, y)
    with pytest.raises(RuntimeError, match=r"fastreweight::fbr_weighted_ce_backward: y holds 3 at position"):
        ops.fbr_weighted_ce_backward(g, probs[:, :3], coef, torch.full_like(y, 3))


@pytest.mark.parametrize("check_values", [False, True], ids=["fused", "general"])
@pytest.mark.parametrize("B", [1, 17, 97])
def test_bind_weighted_loss_equals_reweight_cross_entropy_and_dot(check_values, B):
    """The bound loss — fused op, or bind_reweight + cross_entropy + dot where the op does not apply —
    gives the loss, scores, weights and logits gradient of the separate calls."""
    scorer, x, y, logits, idx, w = _case(B, 10, seed=B, fdtype=torch.float32, ldtype=torch.float32,
                                         wdtype=torch.float32)
    if check_values:
        scorer = fr.CleanScorer(scorer._template.layers[0].z, scorer._template.clean_y, num_classes=10)
    twin = fr.CleanScorer(scorer._template.layers[0].z, scorer._template.clean_y, num_classes=10, check_values=False)
    rw = fr.Reweighter(w.shape[0], lr=0.3)
    rw2 = fr.Reweighter(w.shape[0], lr=0.3)
    bound = scorer.bind_weighted_loss(rw, shift="second", alpha=0.1, on_missing_class="skip", loss_eps=1e-12)
    for step in range(3):
        a = logits.clone().requires_grad_(True)
        b = logits.clone().requires_grad_(True)
        loss, d, w_new = bound(idx, x, y, a)
        d2, w2, coef = twin.reweight(rw2, idx, x, y, shift="second", alpha=0.1, on_missing_class="skip",
                                     loss_eps=1e-12)
        ref = torch.dot(F.cross_entropy(b, y, reduction="none"), coef)
        loss.backward()
        ref.backward()
        assert torch.equal(d, d2) and torch.equal(w_new, w2) and torch.equal(rw.weights, rw2.weights)
        torch.testing.assert_close(loss, ref, rtol=2e-6, atol=1e-7)
        torch.testing.assert_close(a.grad, b.grad, rtol=2e-6, atol=1e-8)
        x, logits = x.flip(0) * 1.1, logits.flip(0)


def test_trainer_fused_loss_equals_cross_entropy_and_dot(monkeypatch):
    """The trainer's stateful step with the fused loss against the same training through
    cross_entropy + dot (module switch off): weights and parameters agree to float32 rounding after
    three epochs, and the fused op did run."""
    import fastreweight.train as T
    from fastreweight import data as D, models as Mo

    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 12, generator=g)
    yt = (x[:, :3].sum(1) > 0).long() + 2 * (x[:, 3] > 0).long()
    d = D.make_split(x, yt, num_classes=4, noise="sym", rate=0.4, clean_size=40, test_size=60, dataset="tiny", seed=0)
    calls = []
    real = T.CleanScorer.bind_weighted_loss

    def spy(self, *a, **k):
        fn = real(self, *a, **k)
        return lambda *args: (calls.append(1), fn(*args))[1]

    monkeypatch.setattr(T.CleanScorer, "bind_weighted_loss", spy)
    out = []
    for fused in (True, False):
        monkeypatch.setattr(T, "_FUSED_WEIGHTED_CE", fused)
        torch.manual_seed(0)
        m = Mo.build_model("mlp", (12,), 4)
        opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
        r = T.train(m, opt, d, method="fbr", warmup=0, epochs=3, batch_size=32, seed=1)
        out.append((r.final_weights, torch.cat([p.detach().flatten() for p in m.parameters()])))
        if fused:
            assert len(calls) > 0
            n = len(calls)
    assert len(calls) == n  # the switch off never calls it
    assert not torch.equal(out[0][0], torch.ones_like(out[0][0]))
    torch.testing.assert_close(out[0][0], out[1][0], rtol=0, atol=1e-5)
    torch.testing.assert_close(out[0][1], out[1][1], rtol=0, atol=1e-5)


def test_bind_weighted_loss_checks_logits_before_any_write():
    """Logits of the wrong dtype, row count or device reach the general path and raise a TypeError /
    ValueError naming ``logits`` before the weights change."""
    scorer, x, y, logits, idx, w = _case(6, 4, seed=4, fdtype=torch.float32, ldtype=torch.float32,
                                         wdtype=torch.float32)
    rw = fr.Reweighter(w.shape[0])
    bound = scorer.bind_weighted_loss(rw)
    before = rw.weights.clone()
    with pytest.raises(TypeError, match="logits must have a floating dtype"):
        bound(idx, x, y, logits.long())
    with pytest.raises(ValueError, match=r"logits must have 6 rows \(one per batch row of x\), got shape \(5, 4\)"):
        bound(idx, x, y, logits[:5])
    with pytest.raises(ValueError, match="logits must be a 2-D tensor"):
        bound(idx, x, y, logits[:, 0])
    assert torch.equal(rw.weights, before)
    loss, d, w_new = bound(idx, x, y, logits.to(torch.bfloat16))  # low precision: the general path, any float
    assert loss.dtype == torch.bfloat16 and not torch.equal(rw.weights, before)


DIRECT = None if REASON is not None else __import__("fastreweight.csrc_backend.cpp", fromlist=["x"]).direct_entry(
    "fbr_weighted_ce_prototype")
needs_direct = pytest.mark.skipif(DIRECT is None, reason="the extension was loaded without its Python module "
                                                          "(a just-in-time build): no direct entry")


def _op_args(scorer, x, y, logits, idx, w):
    t = scorer._template
    protos = t.clean_memo[("reference-prototypes", False)]
    return [logits, [x], [t.layers[0].mu], [], protos, t.class_weight, False, y, "second", 0.2, w, idx, 0.3,
            "mean_abs", 1e-12, 1e-12]


@needs_direct
@pytest.mark.parametrize("B,C", [(1, 2), (17, 10), (97, 17)])
@pytest.mark.parametrize("ldtype", [torch.float64, torch.float32])
def test_direct_entry_equals_the_op_through_torch_ops(B, C, ldtype):
    """The module's direct entry is the same dispatcher call as ``torch.ops``: equal outputs, state
    update and gradient, bit for bit."""
    scorer, x, y, logits, idx, w = _case(B, C, ldtype=ldtype, seed=B * 3 + C)
    outs = []
    for call in (DIRECT, ops.fbr_weighted_ce_prototype.default):
        a = _op_args(scorer, x, y, logits.clone().requires_grad_(True), idx, w.clone())
        res = call(*a)
        (res[0] * 1.3).backward()
        outs.append((res, a[10], a[0].grad))
    (r1, w1, g1), (r2, w2, g2) = outs
    assert all(torch.equal(p, q) for p, q in zip(r1, r2))
    assert torch.equal(w1, w2) and not torch.equal(w1, w) and torch.equal(g1, g2)
    assert r1[0].grad_fn is not None and not r1[1].requires_grad


@needs_direct
def test_direct_entry_errors():
    scorer, x, y, logits, idx, w = _case(6, 4, seed=9)
    a = _op_args(scorer, x, y, logits[:, :2], idx, w)  # labels past the logits' columns: the op's own message
    if int(y.max()) < 2:
        a[7] = torch.full_like(y, 3)
    with pytest.raises(RuntimeError, match=r"fastreweight::fbr_weighted_ce_prototype: y holds \d at position"):
        DIRECT(*a)
    for pos, name, bad in [(0, "logits", logits.tolist()), (1, r"xs\[0\]", [x.tolist()]), (1, "xs", x),
                           (10, "weights", None)]:
        b = list(_op_args(scorer, x, y, logits, idx, w))
        b[pos] = bad
        with pytest.raises(TypeError, match=f"fbr_weighted_ce_prototype: {name} must be a"):
            DIRECT(*b)
    with pytest.raises(TypeError):
        DIRECT(*_op_args(scorer, x, y, logits, idx, w)[:-1])  # an argument short


def test_direct_entry_only_from_the_prebuilt_module_and_switchable(monkeypatch):
    """A just-in-time build is a library without a Python module to import (importing the setup.py
    build as well would register the ops twice): no direct entry then, and none when switched off —
    the runner calls torch.ops instead, with the same results (test above)."""
    from fastreweight.csrc_backend import cpp

    monkeypatch.setattr(cpp, "_direct_entries", {})
    monkeypatch.setitem(csrc_backend._loaded_from, "fastreweight._C_cpu", "jit")
    assert cpp.direct_entry("fbr_weighted_ce_prototype") is None
    monkeypatch.setattr(cpp, "_direct_entries", {})
    monkeypatch.setattr(cpp, "_USE_DIRECT_ENTRIES", False)
    monkeypatch.setitem(csrc_backend._loaded_from, "fastreweight._C_cpu", "prebuilt")
    assert cpp.direct_entry("fbr_weighted_ce_prototype") is None
    scorer, x, y, logits, idx, w = _case(5, 3, seed=1)
    scorer.refresh(scorer._template.layers[0].z)  # re-prepares the runners: torch.ops this time
    _, fused = _runners(scorer, x)
    a = _op_args(scorer, x, y, logits, idx, w.clone())
    ref = ops.fbr_weighted_ce_prototype.default(*a[:10], w.clone(), *a[11:])
    got = fused(logits, [x], None, y, "second", 0.2, w.clone(), idx, 0.3, "mean_abs", 1e-12, 1e-12)
    assert all(torch.equal(p, q) for p, q in zip(got, ref))
