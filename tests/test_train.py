"""fastreweight.models / fastreweight.train: every method runs; the published recipe matches an
independent step-by-step transcription of SPEC §7."""
import copy
import json
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from fastreweight import capture
from fastreweight import data as D
from fastreweight import models as Mo
from fastreweight.train import TrainResult, auto_warmup_probe, train


def _tiny(seed=0, n=240, C=3, dim=8, rate=0.4, noise="sym", clean_size=12, dtype=torch.float32, sep=5.0):
    x, y = D.make_synthetic(n, C, dim, sep=sep, seed=seed)
    d = D.make_split(x.to(dtype), y, num_classes=C, noise=noise, rate=rate, clean_size=clean_size, test_size=0.25,
                     seed=seed, dataset="synthetic")
    return d


def _mlp(d, seed=0, hidden=(16,), dtype=torch.float32):
    torch.manual_seed(seed)
    return Mo.MLP(d.input_shape[0], d.num_classes, hidden).to(dtype)


def _fbr_weights_and_params(d, **kw):
    """FBR for 4 epochs on ``d`` from a fixed MLP: (final weights, all parameters flattened)."""
    m = _mlp(d)
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    r = train(m, opt, d, method="fbr", epochs=4, batch_size=32, warmup=0, seed=2, lr=0.5, **kw)
    return r.final_weights, torch.cat([p.detach().flatten() for p in m.parameters()])


# ------------------------------------------------------------------------------------------------
# models
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,shape", [("mlp", (64,)), ("cnn", (784,)), ("cnn", (3, 32, 32)),
                                        ("preact-resnet18", (3, 32, 32)), ("resnet34", (3, 32, 32))])
def test_models_forward_and_linear_head(name, shape):
    m = Mo.build_model(name, shape, 7)
    m.eval()
    out = m(torch.randn(2, *shape))
    assert out.shape == (2, 7)
    head = capture.find_head(m)
    assert isinstance(head, nn.Linear) and head.out_features == 7
    feats, logits = capture.penultimate(m, torch.randn(2, *shape))
    assert feats.shape == (2, head.in_features)


@pytest.mark.parametrize("name,shape", [("mlp", (64,)), ("cnn", (3, 32, 32)), ("preact-resnet18", (3, 32, 32)),
                                        ("resnet34", (3, 32, 32))])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_models_features_and_logits_are_the_head_input_and_the_forward(name, shape, mode):
    """The split-forward protocol (``capture.split_forward``): the head's input and ``model(x)``, equal
    bit for bit to what a hook on the head and the plain forward give."""
    torch.manual_seed(3)
    m = Mo.build_model(name, shape, 7)
    m2 = copy.deepcopy(m)  # batch-norm running statistics move in train mode: one copy per forward
    m.train(mode == "train")
    m2.train(mode == "train")
    x = torch.randn(3, *shape)
    assert capture.split_forward(m) == m.features_and_logits
    feats, logits = m.features_and_logits(x)
    hooked, out = capture.penultimate(m2, x)
    assert torch.equal(feats, hooked) and torch.equal(logits, out)


def test_split_forward_needs_the_method_and_skips_compiled_models():
    seq = Mo.build_model("cnn", (784,), 5)  # an nn.Sequential: no features_and_logits
    assert capture.split_forward(seq) is None
    assert capture.split_forward(nn.Linear(3, 2)) is None
    m = Mo.MLP(4, 3)
    assert capture.split_forward(torch.compile(m)) is None  # its method would run uncompiled


def test_resnet34_block_count():
    m = Mo.ResNet34(10)
    assert len(m.layers) == 3 + 4 + 6 + 3
    assert len(Mo.PreActResNet18(10).layers) == 8
    with pytest.raises(ValueError):
        Mo.build_model("resnet34", (64,), 10)


# ------------------------------------------------------------------------------------------------
# every method runs and returns a sane result
# ------------------------------------------------------------------------------------------------
METHOD_CASES = [
    ("erm", {}),
    ("erm", {"clean_passes": 1}),
    ("fbr", {"warmup": 1}),
    ("fbr", {"warmup": 0, "clean_features": "batch", "clean_batch_size": 6}),
    ("fbr", {"warmup": 0, "clean_features": "prototype", "clean_batch_size": 6}),
    ("fbr", {"warmup": "auto"}),
    ("fbr", {"recipe": "paper", "skip_epochs": 0, "clean_passes": 1, "alpha_epochs": 1}),
    ("fbr", {"recipe": "paper", "skip_epochs": "auto", "batch_features": "train"}),
    ("meta", {}),
    ("meta", {"meta_layers": "all", "warmup": 1}),
    ("l2r", {}),
    ("coteaching", {"num_gradual": 1}),
]


@pytest.mark.parametrize("method,kw", METHOD_CASES)
def test_methods_run(method, kw):
    d = _tiny()
    m = _mlp(d)
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    epochs = 3
    r = train(m, opt, d, method=method, epochs=epochs, batch_size=32, seed=1, **kw)
    assert isinstance(r, TrainResult)
    steps = epochs * math.ceil(len(d.y_train) / 32)
    assert len(r.test_acc) == epochs and len(r.epoch_seconds) == epochs
    assert len(r.clean_weight) == steps and len(r.noisy_weight) == steps
    assert all(0.0 <= a <= 1.0 for a in r.test_acc)
    assert r.best_acc == max(r.test_acc) and r.last_acc == r.test_acc[-1]
    assert r.best_acc > 0.6  # well separated mixture, 3 classes
    ws = [w for w in r.clean_weight + r.noisy_weight if w == w]
    assert ws and all(w >= 0 and math.isfinite(w) for w in ws)
    json.dumps(r.to_dict())  # JSON-safe
    assert r.config["method"] == method


@pytest.mark.parametrize("method,kw", METHOD_CASES + [("fbr", {"warmup": 0, "clean_mix": 2}),
                                                      ("erm", {"clean_mix": 1})])
def test_logged_group_means_equal_each_steps_weights(method, kw):
    """``clean_weight`` / ``noisy_weight`` (computed once per epoch from the steps' weight tensors) equal
    each training step's mean weight over its clean and its mislabelled rows, computed here from the
    callback's (idx, weights) of that step; NaN where the batch holds no row of the group."""
    d = _tiny(n=130)  # 97 training rows: batches of 32, 32, 32, 1 (the last one holds a single group)
    m = _mlp(d)
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    seen = []

    def cb(ev):
        if ev["phase"] == "train":
            seen.append((ev["idx"].clone(), ev["weights"].detach().double().clone()))

    r = train(m, opt, d, method=method, epochs=2, batch_size=32, seed=3, callback=cb, **kw)
    clean = d.y_train == d.y_train_true
    assert len(seen) == len(r.clean_weight) == len(r.noisy_weight)
    for (idx, w), mc, mn in zip(seen, r.clean_weight, r.noisy_weight):
        assert len(w) == len(idx)
        for got, mask in ((mc, clean[idx]), (mn, ~clean[idx])):
            if mask.any():
                assert got == pytest.approx(float(w[mask].mean()), rel=1e-6, abs=1e-7)
            else:
                assert math.isnan(got)


def test_fbr_downweights_mislabelled_samples():
    d = _tiny(n=600, rate=0.4, noise="pair", clean_size=30)
    m = _mlp(d)
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    # lr=0.5 (SPEC §3.6's Reweighter default; the trainer's default is 0.1) moves weights within 4 epochs
    r = train(m, opt, d, method="fbr", epochs=6, batch_size=32, warmup=2, seed=0, lr=0.5)
    mc, mn = r.mean_weights()
    assert mc > 0.6 and mn < 0.3, (mc, mn)
    w = r.final_weights
    assert w[d.is_clean].mean() > w[~d.is_clean].mean() + 0.3


def test_feature_hook_is_removed_after_training_and_after_an_error():
    """A model without ``features_and_logits`` (here an ``nn.Sequential``) gets its batch features through
    a hook on the head, which must not outlive the call; a model with it gets no hook at all."""
    d = _tiny(n=120)
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(d.input_shape[0], 16), nn.ReLU(), nn.Linear(16, d.num_classes))
    head = m[2]
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    for kw in (dict(), dict(recipe="paper", skip_epochs=0, batch_features="train")):
        hooked = []
        train(m, opt, d, method="fbr", epochs=2, batch_size=32, warmup=0,
              callback=lambda info: hooked.append(len(head._forward_pre_hooks)), **kw)
        assert max(hooked) == 1  # the hook was there while training
        assert not head._forward_pre_hooks
    mlp = _mlp(d)
    hooked = []
    train(mlp, torch.optim.SGD(mlp.parameters(), lr=0.1), d, method="fbr", epochs=2, batch_size=32, warmup=0,
          callback=lambda info: hooked.append(len(mlp.head._forward_pre_hooks)))
    assert max(hooked) == 0  # features_and_logits: no hook

    def boom(info):
        if info["phase"] == "train":
            raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        train(m, opt, d, method="fbr", epochs=2, batch_size=32, warmup=0, callback=boom)
    assert not head._forward_pre_hooks


@pytest.mark.parametrize("kw", [dict(), dict(feature_whiten="auto", feature_whiten_every=2),
                                dict(recipe="paper", skip_epochs=0, clean_passes=1, alpha_epochs=2),
                                dict(recipe="paper", skip_epochs=0, clean_passes=1, batch_features="eval")],
                         ids=["stateful", "stateful-whitened", "paper-train-features", "paper-eval-features"])
def test_split_forward_changes_no_number(monkeypatch, kw):
    """The features from ``features_and_logits`` and from a hook on the head are the same tensors: the
    weights and parameters after training are identical either way."""
    d = _tiny(n=300, rate=0.4, noise="pair", clean_size=30)

    def run():
        return _fbr_weights_and_params(d, **kw)

    split = run()
    monkeypatch.setattr(capture, "split_forward", lambda model: None)
    hooked = run()
    assert not torch.equal(split[0], torch.full_like(split[0], split[0][0]))
    assert torch.equal(split[0], hooked[0]) and torch.equal(split[1], hooked[1])


@pytest.mark.parametrize("kw", [dict(method="erm"), dict(method="fbr", warmup=0),
                                dict(method="fbr", recipe="paper", skip_epochs=0, batch_features="train"),
                                dict(method="fbr", recipe="paper", skip_epochs=0, batch_features="eval")],
                         ids=["erm", "fbr", "paper-train-features", "paper-eval-features"])
def test_clean_mix_visits_every_clean_sample_k_times_per_epoch(kw):
    d = _tiny(n=150, clean_size=12)
    N = len(d.y_train)
    # tag every row with a unique id in feature 0 so that the model's inputs can be traced back
    d.x_train[:, 0] = torch.arange(len(d.y_train), dtype=d.x_train.dtype) + 1000
    d.x_clean[:, 0] = -torch.arange(len(d.y_clean), dtype=d.x_clean.dtype) - 1
    m = _mlp(d)
    opt = torch.optim.SGD(m.parameters(), lr=0.0)  # lr 0: the tags stay meaningful, nothing diverges
    seen = []
    first = m.body[0] if hasattr(m, "body") else next(mod for mod in m.modules() if isinstance(mod, nn.Linear))
    h = first.register_forward_pre_hook(lambda mod, args: seen.append(args[0][:, 0].detach().clone())
                                        if torch.is_grad_enabled() else None)
    steps = []
    try:
        r = train(m, opt, d, epochs=2, batch_size=32, clean_mix=3, seed=1,
                  callback=lambda ev: steps.append(ev["weights"].shape[0]), **kw)
    finally:
        h.remove()
    assert len(r.test_acc) == 2
    train_forwards = [t for t in seen if (t >= 1000).any()]
    per_epoch = len(train_forwards) // 2
    for ep in range(2):
        rows = torch.cat(train_forwards[ep * per_epoch:(ep + 1) * per_epoch])
        clean_ids = (-rows[rows < 0] - 1).long()
        assert torch.equal(torch.bincount(clean_ids, minlength=12), torch.full((12,), 3))  # each 3 times
        assert torch.equal(torch.sort(rows[rows >= 1000]).values, torch.arange(float(N)) + 1000)
    share = 3 * 12 // math.ceil(N / 32)  # the clean rows per batch: an even split of 3 x 12
    for t in train_forwards:  # training rows first, then the batch's share of clean rows
        n_train = int((t >= 1000).sum())
        assert (t[:n_train] >= 1000).all() and (t[n_train:] < 0).all() and len(t) - n_train in (share, share + 1)
    assert all(n <= 32 for n in steps)  # recorded weights cover the training rows only


def test_clean_mix_rejects_unsupported_settings():
    d = _tiny(n=60)
    m = _mlp(d)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"clean_mix must be an int >= 0, got -1"):
        train(m, opt, d, method="erm", epochs=1, clean_mix=-1)
    with pytest.raises(ValueError, match=r"clean_mix is supported for method='erm' and method='fbr'"):
        train(m, opt, d, method="l2r", epochs=1, clean_mix=2)


def test_auto_warmup_probe_and_start():
    d = _tiny()
    m = _mlp(d)
    v = auto_warmup_probe(m, d.x_clean, d.y_clean, d.num_classes)
    assert 0.0 <= v <= 1.0
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    r = train(m, opt, d, method="fbr", epochs=6, batch_size=32, warmup="auto", seed=0)
    assert r.reweight_start_epoch is not None and 1 <= r.reweight_start_epoch <= 3  # cap: epochs // 3 = 2
    assert len(r.probe) == r.reweight_start_epoch
    # uniform weights before the start
    steps = math.ceil(len(d.y_train) / 32)
    assert all(w == 1.0 for w in r.clean_weight[: steps * r.reweight_start_epoch] if w == w)


def test_coteaching_keeps_small_loss_fraction():
    d = _tiny()
    m = _mlp(d)
    seen = []
    r = train(m, torch.optim.SGD(m.parameters(), lr=0.1), d, method="coteaching", epochs=3, batch_size=40,
              forget_rate=0.5, num_gradual=2, callback=lambda e: seen.append((e["epoch"], e["weights"].clone())))
    for epoch, w in seen:
        assert set(w.unique().tolist()) <= {0.0, 1.0}
        expect = 1 - 0.5 * min(1.0, epoch / 2)
        assert abs(w.mean().item() - expect) < 1.0 / len(w) + 1e-9
    assert r.config["forget_rate"] == 0.5


def test_l2r_equals_meta_on_a_linear_model():
    """For a single nn.Linear, L2R's look-ahead derivative is -lr·<g_i, mean clean gradient> over all
    parameters, i.e. the meta direction with the bias column; both normalise to the same loss."""
    d = _tiny(dtype=torch.float64, clean_size=9)
    torch.manual_seed(0)
    lin = nn.Linear(d.input_shape[0], d.num_classes).double()
    results = {}
    for method in ("l2r", "meta"):
        m = copy.deepcopy(lin)
        ws = []
        train(m, torch.optim.SGD(m.parameters(), lr=0.05), d, method=method, epochs=2, batch_size=32, seed=3,
              clean_batch_size=64, callback=lambda e: ws.append(e["weights"].clone()))
        results[method] = (m, ws)
    (m1, w1), (m2, w2) = results["l2r"], results["meta"]
    for a, b in zip(w1, w2):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9)
    for p, q in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-11)


def test_amp_bf16_and_lr_milestones_run():
    d = _tiny()
    m = _mlp(d)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    r = train(m, opt, d, method="fbr", epochs=2, batch_size=32, warmup=0, amp="bf16", lr_milestones=[1])
    assert len(r.test_acc) == 2 and opt.param_groups[0]["lr"] == pytest.approx(0.01)


def test_bad_options():
    d = _tiny()
    m = _mlp(d)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="method"):
        train(m, opt, d, method="nope")
    with pytest.raises(ValueError, match="clean_features"):
        train(m, opt, d, method="fbr", clean_features="x")


# ------------------------------------------------------------------------------------------------
# recipe="paper" against a literal transcription of SPEC §7
# ------------------------------------------------------------------------------------------------
def _spec_scores(X, y, Z, u, C, alpha):
    """SPEC §3.1–3.4 written out: class-balanced clean mean, feature kernel, class means,
    shift = second-largest S over present classes, label-signed modulation."""
    present = [c for c in range(C) if (u == c).any()]
    class_means = [Z[u == c].mean(0) for c in present]
    mu = torch.stack(class_means).mean(0)
    Xt, Zt = X - mu, Z - mu
    K = Xt @ Zt.T  # B×M pair similarities
    S = torch.zeros(X.shape[0], C, dtype=X.dtype)
    for c in present:
        S[:, c] = K[:, u == c].mean(1)
    d = torch.empty(X.shape[0], dtype=X.dtype)
    for i in range(X.shape[0]):
        vals = sorted((S[i, c].item() for c in present), reverse=True)
        b = vals[1]
        own = S[i, y[i]].item() - b
        comp = sum(S[i, c].item() - b for c in present if c != y[i])
        d[i] = own - alpha * comp
    return d


def _spec_threshold(r):
    if not (r < 0).any():
        return torch.ones_like(r)
    eta = 0.5 / r[r < 0].abs().min()
    w = (0.5 + eta * r).clamp(0, 1)
    w[w <= 0.5] = 0.0
    return w


def test_paper_recipe_matches_spec_transcription():
    torch.set_default_dtype(torch.float64)
    try:
        d = _tiny(n=160, C=3, dim=6, dtype=torch.float64, clean_size=12, rate=0.4, sep=2.0)
        torch.manual_seed(5)
        model = Mo.MLP(6, 3, (10,)).double()
        ref = copy.deepcopy(model)
        cfg = dict(epochs=4, batch_size=32, clean_passes=2, clean_batch_size=5, skip_epochs=1, alpha_epochs=3, seed=11)
        opt_args = dict(lr=0.05, momentum=0.9, weight_decay=1e-3)

        events = []

        def record(e):
            events.append({
                "phase": e["phase"], "epoch": e["epoch"],
                "idx": None if e["idx"] is None else e["idx"].clone(),
                "params": [p.detach().clone() for p in e["model"].parameters()],
                "store": e["sample_weights"].clone(),
            })

        train(model, torch.optim.SGD(model.parameters(), **opt_args), d, method="fbr", recipe="paper",
              callback=record, **cfg)

        # ---- the transcription ----
        opt = torch.optim.SGD(ref.parameters(), **opt_args)
        x, y = d.x_train, d.y_train
        xc, yc = d.x_clean, d.y_clean
        N, M, C = len(y), len(yc), d.num_classes
        g = torch.Generator().manual_seed(cfg["seed"])
        store = torch.full((N,), 0.5, dtype=torch.float64)  # every weight starts at 0.5
        k = 0
        n_checked_weights = 0
        saw_partial = False
        for epoch in range(cfg["epochs"]):
            ref.train()
            # clean passes: ordinary training, batch clean_batch_size, mean CE
            for _ in range(cfg["clean_passes"]):
                perm = torch.randperm(M, generator=g)
                for i in range(0, M, cfg["clean_batch_size"]):
                    b = perm[i:i + cfg["clean_batch_size"]]
                    loss = F.cross_entropy(ref(xc[b]), yc[b])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    ev = events[k]
                    k += 1
                    assert ev["phase"] == "clean" and ev["epoch"] == epoch
                    for p, q in zip(ev["params"], ref.parameters()):
                        torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-12)
            reweight = epoch > cfg["skip_epochs"]
            if reweight:  # clean features once per epoch, after the clean passes, eval mode, no_grad
                ref.eval()
                with torch.no_grad():
                    Z = ref.body(xc)  # input of the final nn.Linear
                ref.train()
            alpha = 1.0 / (C - 1) if epoch < cfg["alpha_epochs"] else 0.0
            perm = torch.randperm(N, generator=g)
            for i in range(0, N, cfg["batch_size"]):
                idx = perm[i:i + cfg["batch_size"]]
                xb, yb = x[idx], y[idx]
                if reweight:
                    ref.eval()
                    with torch.no_grad():
                        X = ref.body(xb)
                    ref.train()
                    store[idx] = _spec_threshold(_spec_scores(X, yb, Z, yc, C, alpha))
                w = store[idx]
                losses = F.cross_entropy(ref(xb), yb, reduction="none")
                loss = (w * losses).sum() / len(yb)  # reduction="batch"
                if not reweight:
                    torch.testing.assert_close(loss, 0.5 * losses.mean())
                opt.zero_grad()
                loss.backward()
                opt.step()
                ev = events[k]
                k += 1
                assert ev["phase"] == "train" and ev["epoch"] == epoch
                assert torch.equal(ev["idx"], idx)
                torch.testing.assert_close(ev["store"], store, rtol=1e-9, atol=1e-12)
                for p, q in zip(ev["params"], ref.parameters()):
                    torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-12)
                if reweight:
                    n_checked_weights += 1
                    saw_partial |= bool(((w > 0.5) & (w < 1)).any())
        assert k == len(events)
        assert n_checked_weights >= 4 and saw_partial
        assert (store == 0).any() and (store > 0.5).any()
    finally:
        torch.set_default_dtype(torch.float32)


# ------------------------------------------------------------------------------------------------
# feature_whiten (stateful FBR, cache policy)
# ------------------------------------------------------------------------------------------------
def _fbr_run(d, **kw):
    m = _mlp(d)
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    return train(m, opt, d, method="fbr", epochs=4, batch_size=32, warmup=1, seed=0, lr=0.5, **kw)


def test_feature_whiten_with_a_huge_strength_is_plain_fbr():
    """τ(Σ + τI)⁻¹ → I as t → ∞: the shrunk means become the plain class means."""
    d = _tiny(n=300, rate=0.4, noise="pair", clean_size=30)
    plain = _fbr_run(d)
    huge = _fbr_run(d, feature_whiten=1e12)
    torch.testing.assert_close(huge.final_weights, plain.final_weights, rtol=0, atol=1e-5)
    assert huge.config["whiten_strengths"] == [1e12] * len(huge.config["whiten_strengths"])
    assert len(huge.config["whiten_strengths"]) == 3  # one refresh per reweighting epoch


def test_feature_whiten_auto_is_repeatable_and_records_its_choices():
    from fastreweight.whiten import AUTO_STRENGTHS

    d = _tiny(n=300, rate=0.4, noise="pair", clean_size=30)
    a = _fbr_run(d, feature_whiten="auto")
    b = _fbr_run(d, feature_whiten="auto")
    assert torch.equal(a.final_weights, b.final_weights)
    assert a.config["whiten_strengths"] == b.config["whiten_strengths"]
    assert all(t is None or t in AUTO_STRENGTHS for t in a.config["whiten_strengths"])
    mc, mn = a.mean_weights()
    assert mc > mn + 0.3, (mc, mn)


@pytest.mark.parametrize("kw,msg", [
    (dict(feature_whiten="x"), r"feature_whiten must be None, 'auto' or a positive number"),
    (dict(feature_whiten=-1.0), r"feature_whiten must be None, 'auto' or a positive number"),
    (dict(feature_whiten="auto", recipe="stateful", clean_features="prototype"),
     r"feature_whiten applies to method='fbr' with recipe='paper', or recipe='stateful'"),
    (dict(feature_whiten="auto", clean_features="batch"), r"feature_whiten applies to .* clean_features='cache'"),
])
def test_feature_whiten_rejects_unsupported_settings(kw, msg):
    d = _tiny(n=60)
    m = _mlp(d)
    with pytest.raises(ValueError, match=msg):
        train(m, torch.optim.SGD(m.parameters(), lr=0.1), d, method="fbr", epochs=1, **kw)
    with pytest.raises(ValueError, match=r"feature_whiten applies to method='fbr'"):
        train(m, torch.optim.SGD(m.parameters(), lr=0.1), d, method="erm", epochs=1, feature_whiten=0.1)


def test_feature_whiten_in_the_paper_recipe():
    """One whitening per reweighted epoch; a huge strength is the recipe itself."""
    d = _tiny(n=300, rate=0.4, noise="pair", clean_size=30)
    kw = dict(recipe="paper", skip_epochs=1, clean_passes=1, alpha_epochs=2)
    plain = _fbr_run(d, **kw)
    huge = _fbr_run(d, feature_whiten=1e12, **kw)
    auto = _fbr_run(d, feature_whiten="auto", **kw)
    torch.testing.assert_close(huge.final_weights, plain.final_weights, rtol=0, atol=1e-5)
    assert len(auto.config["whiten_strengths"]) == 2  # epochs 2 and 3 are reweighted


@pytest.mark.parametrize("recipe_kw", [dict(), dict(recipe="paper", skip_epochs=-1, clean_passes=1, alpha_epochs=2)],
                         ids=["stateful", "paper"])
@pytest.mark.parametrize("every", [1, 2, 5])
def test_feature_whiten_every_refits_every_kth_refresh(monkeypatch, recipe_kw, every):
    """``feature_whiten_every=k``: a new fit (``shrunk_class_means``) at refreshes 0, k, 2k, ...; at the
    others the last fit's ``refold`` of the new features — whose rows are what the scorer gets."""
    import fastreweight.training.methods.fbr as T
    from fastreweight.whiten import ShrunkMeans

    fits, refolds, handed = [], [], []
    real_fit, real_refold, real_scorer = T.shrunk_class_means, ShrunkMeans.refold, T.CleanScorer

    def fit(*a, **k):
        fits.append(len(fits) + len(refolds))
        return real_fit(*a, **k)

    def refold(self, z, y, C):
        refolds.append(len(fits) + len(refolds))
        out = real_refold(self, z, y, C)
        handed.append(out.rows)
        return out

    monkeypatch.setattr(T, "shrunk_class_means", fit)
    monkeypatch.setattr(ShrunkMeans, "refold", refold)
    given = []

    class SpyScorer(real_scorer):
        def refresh(self, clean_x, clean_x2=None):
            given.append(clean_x)
            return super().refresh(clean_x, clean_x2)

    monkeypatch.setattr(T, "CleanScorer", SpyScorer)
    d = _tiny(n=300, rate=0.4, noise="pair", clean_size=30)
    m = _mlp(d)
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    r = train(m, opt, d, method="fbr", epochs=6, batch_size=32, warmup=0, seed=0, lr=0.5, feature_whiten="auto",
              feature_whiten_every=every, **recipe_kw)
    n = len(fits) + len(refolds)
    assert n == 6 and len(r.config["whiten_strengths"]) == 6  # one refresh per epoch
    assert fits == [i for i in range(n) if i % every == 0]
    assert refolds == [i for i in range(n) if i % every != 0]
    assert r.config["feature_whiten_every"] == every
    # each refold's rows reached the scorer (the refresh after it)
    assert all(any(torch.equal(h, g) for g in given) for h in handed)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_feature_whiten_every_rejects_bad_values(bad):
    d = _tiny(n=60)
    m = _mlp(d)
    with pytest.raises(ValueError, match="feature_whiten_every must be an int >= 1"):
        train(m, torch.optim.SGD(m.parameters(), lr=0.1), d, method="fbr", epochs=1, feature_whiten="auto",
              feature_whiten_every=bad)


@pytest.mark.parametrize("kw", [dict(), dict(feature_whiten="auto"),
                                dict(recipe="paper", skip_epochs=0, clean_passes=1, alpha_epochs=2)],
                         ids=["stateful", "stateful-whitened", "paper"])
def test_scorer_refresh_changes_no_number(monkeypatch, kw):
    """The trainer refreshes one CleanScorer in place; against a new scorer at every refresh the
    weights and parameters are identical."""
    from fastreweight.clean_scorer import CleanScorer

    d = _tiny(n=300, rate=0.4, noise="pair", clean_size=30)

    def run():
        return _fbr_weights_and_params(d, **kw)

    calls = []

    def rebuild(self, clean_x, clean_x2=None):  # what the trainer did before: a scorer from scratch
        calls.append(1)
        fresh = CleanScorer(clean_x, self._template.clean_y, num_classes=self.num_classes, center=self.center,
                            check_values=self.check_values)
        self.__dict__.update(fresh.__dict__)
        return self

    fast = run()
    monkeypatch.setattr(CleanScorer, "refresh", rebuild)
    slow = run()
    assert not torch.equal(fast[0], torch.ones_like(fast[0]))
    assert torch.equal(fast[0], slow[0]) and torch.equal(fast[1], slow[1])
    assert 1 in calls
