"""``train(..., distributed=True)``: two CPU ranks (gloo), launched by the test, reproduce a
single-process ``train()`` run (same data, seed and initial model) for ERM, stateful FBR and relabel."""
import os

import pytest
import torch
import torch.distributed as dist

from fastreweight import data as D
from fastreweight import models as Mo
from fastreweight.train import train

from dist_spawn import quiesce, spawn

WORLD = 2
f64 = torch.float64

# (name, train keywords).  Training set: N = 78 rows.
CASES = [
    # batch 8: shards of 4 (last batch 6: shards of 3)
    ("erm", dict(method="erm", batch_size=8)),
    ("fbr", dict(method="fbr", warmup=0, batch_size=8, refresh_every=3)),
    # batch 7: unequal shards (3/4), last batch of 1 row leaves rank 0 an empty shard; warm-up epoch,
    # a clean pass (clean batches 5 -> shards 2/3, last clean batch 2 -> 1/1), eval-mode batch features
    ("fbr-uneven", dict(method="fbr", warmup=1, batch_size=7, clean_passes=1, clean_batch_size=5,
                        batch_features="eval", reduction="batch", shift="second", alpha=0.25)),
    # whitened clean features: every rank folds the same whitening into the same class means
    ("fbr-whiten", dict(method="fbr", warmup=0, batch_size=8, refresh_every=3, feature_whiten="auto")),
    # relabel scores after each epoch on the rows every rank saw: the same votes, labels and weights on every
    # rank; uneven shards and an empty one, with a clean pass
    ("relabel", dict(method="relabel", batch_size=8, relabel_options=dict(every=1, k=10))),
    ("relabel-uneven", dict(method="relabel", batch_size=7, clean_passes=1, clean_batch_size=5,
                            relabel_options=dict(every=1, k=10, features="model", margin=0.5))),
]
EPOCHS = 2


def _data():
    x, y = D.make_synthetic(120, 3, 6, sep=3.0, seed=3)
    return D.make_split(x.to(f64), y, num_classes=3, noise="sym", rate=0.4, clean_size=12, test_size=0.25,
                        seed=3, dataset="synthetic")


def _model(d, seed=0):
    torch.manual_seed(seed)
    return Mo.MLP(d.input_shape[0], d.num_classes, (10,)).to(f64)


def _run(kw, seed=0, **extra):
    d = _data()
    m = _model(d, seed)
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    r = train(m, opt, d, epochs=EPOCHS, seed=5, **kw, **extra)
    return {"weights": r.final_weights, "params": [p.detach().clone() for p in m.parameters()],
            "clean_weight": torch.tensor(r.clean_weight, dtype=f64),
            "noisy_weight": torch.tensor(r.noisy_weight, dtype=f64),
            "test_acc": torch.tensor(r.test_acc, dtype=f64),
            "relabelled": torch.tensor(r.config.get("relabelled", []), dtype=torch.int64)}


def _worker(rank, world, port, out_dir):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        for name, kw in CASES:
            # rank 1 starts from a different initialisation: DDP must broadcast rank 0's parameters
            out = _run(kw, seed=rank, distributed=True)
            torch.save(out, os.path.join(out_dir, f"{name}-rank{rank}.pt"))
        quiesce()
    finally:
        dist.destroy_process_group()


needs_gloo = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")


@needs_gloo
def test_train_two_ranks_equal_single_process(tmp_path):
    spawn(_worker, WORLD, str(tmp_path))
    for name, kw in CASES:
        ref = _run(kw, seed=0)
        for rank in range(WORLD):
            got = torch.load(tmp_path / f"{name}-rank{rank}.pt", weights_only=True)
            if ref["weights"] is None:
                assert got["weights"] is None
            else:
                torch.testing.assert_close(got["weights"], ref["weights"], rtol=1e-12, atol=1e-12,
                                           msg=lambda m: f"{name}, rank {rank}: {m}")
            for a, b in zip(got["params"], ref["params"]):
                torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=lambda m: f"{name}, rank {rank}: {m}")
            # per-step records are the global batch's (float32 on the way)
            assert torch.equal(got["relabelled"], ref["relabelled"]), (name, rank)
            for k in ("clean_weight", "noisy_weight", "test_acc"):
                torch.testing.assert_close(got[k], ref[k], rtol=1e-6, atol=1e-6, equal_nan=True,
                                           msg=lambda m: f"{name}, rank {rank}, {k}: {m}")
        # not trivial: the parameters moved, and FBR moved weights away from 1 (and left some at 1)
        init = [p.detach() for p in _model(_data(), 0).parameters()]
        assert any((a - b).abs().max() > 1e-3 for a, b in zip(ref["params"], init))
        if name.startswith("relabel"):  # relabel relabelled rows at both scorings (and down-weighted some)
            assert (ref["relabelled"] > 0).all() and len(ref["relabelled"]) == EPOCHS
            if name == "relabel-uneven":
                assert (ref["weights"] < 1).any()
        elif ref["weights"] is not None:
            assert (ref["weights"] < 1).any() and (ref["weights"] == 1).any()


def test_distributed_needs_initialised_group():
    d = _data()
    m = _model(d)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    if dist.is_available() and dist.is_initialized():  # pragma: no cover - not under pytest
        pytest.skip("a process group is already initialised")
    with pytest.raises(RuntimeError, match="init_process_group"):
        train(m, opt, d, method="erm", epochs=1, distributed=True)


@pytest.mark.parametrize("kw", [dict(method="meta"), dict(method="l2r"), dict(method="coteaching"),
                                dict(method="fbr", recipe="paper"),
                                dict(method="fbr", clean_features="batch"),
                                dict(method="fbr", clean_features="prototype")])
def test_distributed_unsupported_combinations(kw):
    d = _data()
    m = _model(d)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="distributed=True supports"):
        train(m, opt, d, epochs=1, distributed=True, **kw)


def test_process_group_without_distributed():
    d = _data()
    m = _model(d)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="process_group"):
        train(m, opt, d, method="erm", epochs=1, process_group=object())
