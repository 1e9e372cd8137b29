"""``Trainer(parallel=Distributed())`` over DataLoaders with a ``DistributedSampler``: two CPU ranks
(gloo) reproduce one process whose batches are the union of the ranks' batches."""
import os

import pytest
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

from fastreweight import data as D
from fastreweight import models as Mo
from fastreweight.training import ERM, FBR, CleanSet, Distributed, NeighbourRelabel, Trainer, with_index

from dist_spawn import quiesce, spawn

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
