"""Two CPU ranks (gloo), launched by the test, reproduce a single-process FBR run exactly."""
import os

import pytest
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from fastreweight import capture
from fastreweight.scores import fbr_scores
from fastreweight.weights import Reweighter, weighted_loss

from dist_spawn import quiesce, spawn

N, D, C, STEPS, LOCAL_B = 24, 5, 3, 6, 4
f64 = torch.float64


def _data():
    g = torch.Generator().manual_seed(123)
    x = torch.randn(N, D, generator=g, dtype=f64)
    y = torch.randint(0, C, (N,), generator=g)
    cx = torch.randn(9, D, generator=g, dtype=f64)
    cy = torch.arange(9) % C
    order = [torch.randperm(N, generator=g)[: 2 * LOCAL_B] for _ in range(STEPS)]
    return x, y, cx, cy, order


def _model():
    torch.manual_seed(7)
    return nn.Sequential(nn.Linear(D, 8), nn.Tanh(), nn.Linear(8, C)).double()


def _step_scores(model, head, xb, yb, cx, cy):
    feats, logits = capture.penultimate(model, xb, head=head)
    with torch.no_grad():
        cf, _ = capture.penultimate(model, cx, head=head)
        d = fbr_scores(feats.detach(), yb, cf, cy, num_classes=C, shift="second", alpha=0.25)
    return d, F.cross_entropy(logits, yb, reduction="none")


def single_process():
    x, y, cx, cy, order = _data()
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    rw = Reweighter(N, dtype=f64)
    for idx in order:
        d, losses = _step_scores(model, model[2], x[idx], y[idx], cx, cy)
        w = rw.step(idx, d)
        loss = weighted_loss(losses, w)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return rw.weights, [p.detach().clone() for p in model.parameters()]


def _worker(rank, world, port, out_dir):
    from fastreweight.distributed import DistributedReweighter, distributed_weighted_loss, gather_rows

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        x, y, cx, cy, order = _data()
        shard = slice(0, 5) if rank == 0 else slice(5, 9)  # unequal clean shards
        model = _model()
        ddp = nn.parallel.DistributedDataParallel(model)
        opt = torch.optim.SGD(ddp.parameters(), lr=0.2, momentum=0.9)
        rw = DistributedReweighter(N, dtype=f64)
        for idx in order:
            local = idx[rank * LOCAL_B:(rank + 1) * LOCAL_B]
            clean_x = gather_rows(cx[shard])
            clean_y = gather_rows(cy[shard])
            d, losses = _step_scores(ddp, model[2], x[local], y[local], clean_x, clean_y)
            w = rw.step(local, d)
            loss = distributed_weighted_loss(losses, w)
            opt.zero_grad()
            loss.backward()
            opt.step()
        torch.save({"weights": rw.weights, "params": [p.detach() for p in model.parameters()]},
                   os.path.join(out_dir, f"rank{rank}.pt"))
        del ddp, opt
        quiesce()
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="torch.distributed with gloo is not available")
def test_two_ranks_equal_single_process(tmp_path):
    spawn(_worker, 2, str(tmp_path))
    w_ref, p_ref = single_process()
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        torch.testing.assert_close(got["weights"], w_ref, rtol=1e-12, atol=1e-12)
        for a, b in zip(got["params"], p_ref):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    # the run is not trivial: weights moved away from their initial value both ways
    assert (w_ref < 1).any() and (w_ref == 1).any()
