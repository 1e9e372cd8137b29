"""``Trainer(parallel=Distributed())`` over DataLoaders with a ``DistributedSampler``: two CPU ranks
(gloo) reproduce one process whose batches are the union of the ranks' batches."""
import os

import pytest
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

from fastreweight import data as D
from fastreweight import models as Mo
from fastreweight.training import ERM, FBR, CleanSet, Distributed, NeighbourRelabel, TensorLoader, Trainer, with_index

from dist_spawn import quiesce, spawn, spawn_within

WORLD, EPOCHS, BATCH = 2, 3, 8
f64 = torch.float64
CASES = {"erm": lambda: ERM(), "fbr": lambda: FBR(warmup=1, whiten="auto", whiten_every=2),
         "fbr-batch-reduction": lambda: FBR(warmup=0, reduction="batch", refresh_every=3),
         "relabel": lambda: NeighbourRelabel(every=1, k=10, margin=0.5)}


def _data():
    x, y = D.make_synthetic(120, 3, 6, sep=3.0, seed=3)
    return D.make_split(x.to(f64), y, num_classes=3, noise="sym", rate=0.4, clean_size=12, test_size=0.25,
                        seed=3, dataset="synthetic")


class UnionBatches:
    """One process's batches: step i holds every rank's i-th DistributedSampler batch, in rank order."""

    def __init__(self, n):
        self.samplers = [DistributedSampler(range(n), num_replicas=WORLD, rank=r, shuffle=True, seed=7)
                         for r in range(WORLD)]

    def set_epoch(self, epoch):
        for s in self.samplers:
            s.set_epoch(epoch)

    def __len__(self):
        return -(-len(self.samplers[0]) // BATCH)

    def __iter__(self):
        per_rank = [list(s) for s in self.samplers]
        for i in range(0, len(per_rank[0]), BATCH):
            yield [j for r in per_rank for j in r[i:i + BATCH]]


def _run(name, *, rank=None, seed=0):
    d = _data()
    torch.manual_seed(seed)
    model = Mo.MLP(d.input_shape[0], d.num_classes, (10,)).to(f64)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    ds = with_index(list(zip(d.x_train, d.y_train.tolist())))
    if rank is None:
        loader, parallel = DataLoader(ds, batch_sampler=UnionBatches(len(ds))), None
    else:
        sampler = DistributedSampler(ds, num_replicas=WORLD, rank=rank, shuffle=True, seed=7)
        loader, parallel = DataLoader(ds, batch_size=BATCH, sampler=sampler), Distributed()
    clean = CleanSet(d.x_clean, d.y_clean, passes=1, batch_size=5)
    trainer = Trainer(model, opt, CASES[name](), clean, parallel=parallel)
    r = trainer.fit(loader, EPOCHS, true_labels=d.y_train_true, eval_loader=[(d.x_test, d.y_test)])
    return {"weights": r.final_weights, "params": [p.detach().clone() for p in model.parameters()],
            "clean_weight": torch.tensor(r.clean_weight, dtype=f64), "test_acc": torch.tensor(r.test_acc, dtype=f64)}


def _worker(rank, world, port, out_dir):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        for name in CASES:  # rank 1 starts from another initialisation: DDP broadcasts rank 0's
            torch.save(_run(name, rank=rank, seed=rank), os.path.join(out_dir, f"{name}-rank{rank}.pt"))
        quiesce()
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="gloo is not available")
def test_distributed_sampler_ranks_equal_one_process_on_the_union_of_their_batches(tmp_path):
    spawn(_worker, WORLD, str(tmp_path))
    for name in CASES:
        ref = _run(name)
        for rank in range(WORLD):
            got = torch.load(tmp_path / f"{name}-rank{rank}.pt", weights_only=True)
            msg = lambda m: f"{name}, rank {rank}: {m}"  # noqa: E731
            if ref["weights"] is None:
                assert got["weights"] is None
            else:
                torch.testing.assert_close(got["weights"], ref["weights"], rtol=1e-12, atol=1e-12, msg=msg)
            for a, b in zip(got["params"], ref["params"]):
                torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=msg)
            for k in ("clean_weight", "test_acc"):
                torch.testing.assert_close(got[k], ref[k], rtol=1e-6, atol=1e-6, equal_nan=True, msg=msg)
        if ref["weights"] is not None:
            assert (ref["weights"] < 1).any()


# -- checkpoints: one shared file per epoch, each rank's random state inside it -----------------------------------
RESUME_CASES = {"fbr": lambda: FBR(warmup=0, refresh_every=3), "relabel": lambda: NeighbourRelabel(every=2, k=10)}


def _noisy_collate(batch):
    """Default collation plus a jitter drawn from the global torch generator, which each rank seeds
    differently: a rank that resumed another rank's random state would train on other inputs."""
    x, y, idx = torch.utils.data.default_collate(batch)
    return x + 0.01 * torch.randn_like(x), y, idx


def _ckpt_trainer(name, rank, seed):
    d = _data()
    torch.manual_seed(seed)
    model = Mo.MLP(d.input_shape[0], d.num_classes, (10,)).to(f64)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    ds = with_index(list(zip(d.x_train, d.y_train.tolist())))
    sampler = DistributedSampler(ds, num_replicas=WORLD, rank=rank, shuffle=True, seed=7)
    loader = DataLoader(ds, batch_size=BATCH, sampler=sampler, collate_fn=_noisy_collate)
    clean = CleanSet(d.x_clean, d.y_clean, passes=1, batch_size=5)
    return Trainer(model, opt, RESUME_CASES[name](), clean, parallel=Distributed()), loader


def _ckpt_fit(name, rank, **kw):
    trainer, loader = _ckpt_trainer(name, rank, seed=rank)
    torch.manual_seed(100 + rank)  # per-rank global random state (the jitter)
    r = trainer.fit(loader, EPOCHS, **kw)
    return trainer, {"weights": r.final_weights, "params": [p.detach().clone() for p in trainer.model.parameters()]}


def _expect_error(cls, fn) -> str:
    try:
        fn()
    except cls as e:
        return str(e)
    raise AssertionError(f"{cls.__name__} not raised")


def _ckpt_worker(rank, world, port, out_dir):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        out = {}
        for name in RESUME_CASES:
            ck = os.path.join(out_dir, name)
            trainer, out[f"{name}-full"] = _ckpt_fit(name, rank, checkpoint_dir=ck)
            # every rank raises on an existing file, rank 0 (which writes) and the others (told by it)
            out[f"{name}-save-error"] = _expect_error(FileExistsError,
                                                      lambda: trainer.save(os.path.join(ck, "epoch-0003.pt")))
            out[f"{name}-dir-error"] = _expect_error(FileExistsError, lambda: _ckpt_fit(name, rank, checkpoint_dir=ck))
            # resume from the shared file, from a fresh initialisation and another global random state
            _, out[f"{name}-resumed"] = _ckpt_fit(name, rank, resume=os.path.join(ck, "epoch-0001.pt"),
                                                  checkpoint_dir=os.path.join(out_dir, f"{name}-resumed"))
            # a checkpoint of the old layout (one file per rank, one random-state dict) still resumes
            state = torch.load(os.path.join(ck, "epoch-0001.pt"), weights_only=True)
            state["rng"] = state["rng"][rank]
            old = os.path.join(out_dir, f"{name}-old-rank{rank}.pt")
            torch.save(state, old)
            _, out[f"{name}-old"] = _ckpt_fit(name, rank, resume=old)
        torch.save(out, os.path.join(out_dir, f"ckpt-rank{rank}.pt"))
        quiesce()
    finally:
        dist.destroy_process_group()


def _assert_same_run(a, b, msg):
    assert (a["weights"] is None) == (b["weights"] is None), msg
    if a["weights"] is not None:
        assert torch.equal(a["weights"], b["weights"]), msg
    assert all(torch.equal(p, q) for p, q in zip(a["params"], b["params"])), msg


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="gloo is not available")
def test_distributed_checkpoint_dir_is_shared_and_resumes_each_ranks_random_state(tmp_path):
    spawn(_ckpt_worker, WORLD, str(tmp_path))
    outs = [torch.load(tmp_path / f"ckpt-rank{r}.pt", weights_only=True) for r in range(WORLD)]
    for name in RESUME_CASES:
        # one file per epoch, written once (no leftover temporary files)
        assert sorted(os.listdir(tmp_path / name)) == [f"epoch-{e:04d}.pt" for e in range(1, EPOCHS + 1)]
        assert sorted(os.listdir(tmp_path / f"{name}-resumed")) == ["epoch-0002.pt", "epoch-0003.pt"]
        state = torch.load(tmp_path / name / "epoch-0001.pt", weights_only=True)
        assert isinstance(state["rng"], list) and len(state["rng"]) == WORLD
        assert not torch.equal(state["rng"][0]["torch"], state["rng"][1]["torch"])  # the ranks' own states
        for rank, out in enumerate(outs):
            msg = f"{name}, rank {rank}"
            _assert_same_run(out[f"{name}-resumed"], out[f"{name}-full"], msg)
            _assert_same_run(out[f"{name}-old"], out[f"{name}-full"], msg + " (old per-rank checkpoint)")
            assert "refusing to overwrite" in out[f"{name}-save-error"], msg
            assert "epoch-0001.pt exists" in out[f"{name}-dir-error"], msg
        assert "on rank 0" in outs[1][f"{name}-save-error"]


def _num_samples_worker(rank, world, port, out_dir):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        d = _data()
        n = d.y_train.shape[0] - 5 * rank  # rank 1 indexes a shorter training set
        loader = TensorLoader(d.x_train[:n], d.y_train[:n], BATCH, shard=(rank, world))
        model = Mo.MLP(d.input_shape[0], d.num_classes, (10,)).to(f64)
        trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), FBR(warmup=0),
                          CleanSet(d.x_clean, d.y_clean, passes=1, batch_size=5), parallel=Distributed())
        msg = _expect_error(ValueError, lambda: trainer.fit(loader, 1))
        with open(os.path.join(out_dir, f"error-rank{rank}.txt"), "w") as f:
            f.write(msg)
        quiesce()
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="gloo is not available")
def test_distributed_training_sets_of_different_sizes_raise_on_every_rank(tmp_path):
    spawn(_num_samples_worker, WORLD, str(tmp_path))
    n = _data().y_train.shape[0]
    for rank in range(WORLD):
        msg = (tmp_path / f"error-rank{rank}.txt").read_text()
        assert f"num_samples differs across ranks: from {n - 5} to {n}" in msg, msg


def _resume_missing_worker(rank, world, port, out_dir):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        d = _data()
        loader = TensorLoader(d.x_train, d.y_train, BATCH, shard=(rank, world))
        model = Mo.MLP(d.input_shape[0], d.num_classes, (10,)).to(f64)
        trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), FBR(warmup=0),
                          CleanSet(d.x_clean, d.y_clean, passes=1, batch_size=5), parallel=Distributed())
        resume = os.path.join(out_dir, "missing.pt") if rank == 1 else None  # only rank 1 cannot read its file
        exc = (FileNotFoundError, ValueError) if rank == 1 else ValueError
        msg = _expect_error(exc, lambda: trainer.fit(loader, 1, resume=resume))
        with open(os.path.join(out_dir, f"resume-rank{rank}.txt"), "w") as f:
            f.write(msg)
        quiesce()
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="gloo is not available")
def test_a_resume_one_rank_cannot_read_raises_on_every_rank(tmp_path):
    spawn_within(_resume_missing_worker, WORLD, str(tmp_path))
    assert "another rank could not read resume=None" in (tmp_path / "resume-rank0.txt").read_text()
    assert "missing.pt" in (tmp_path / "resume-rank1.txt").read_text()
