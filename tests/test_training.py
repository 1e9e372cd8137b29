"""fastreweight.training: the loop over user DataLoaders (transforms, no true labels), methods as
objects, a user's own loop equal to the Trainer's, checkpoints and bit-identical resumption."""
import copy
import pickle

import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from fastreweight import data as D
from fastreweight import models as Mo
from fastreweight.experimental import CoTeaching, RunningPrototypeFBR
from fastreweight.train import train
from fastreweight.training import (ERM, FBR, L2R, CleanSet, FBRPaper, MetaDirection, TensorLoader, Trainer,
                                   make_method, with_index)

from own_loop import fit_by_hand


def _split(seed=0, n=240, C=3, dim=8, dtype=torch.float32):
    x, y = D.make_synthetic(n, C, dim, sep=4.0, seed=seed)
    return D.make_split(x.to(dtype), y, num_classes=C, noise="sym", rate=0.4, clean_size=12, test_size=0.25,
                        seed=seed, dataset="synthetic")


def _mlp(d, seed=0):
    torch.manual_seed(seed)
    return Mo.MLP(d.input_shape[0], d.num_classes, (16,)).to(d.x_train.dtype)


def _params(m):
    return torch.cat([p.detach().flatten() for p in m.parameters()])


class Images(Dataset):
    """1×6×6 "images" with a transform per item, as a torchvision dataset would have."""

    def __init__(self, x, y, transform=None):
        self.x, self.y, self.transform, self.calls = x.reshape(-1, 1, 6, 6), y, transform, 0

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        img = self.x[i]
        if self.transform is not None:
            self.calls += 1
            img = self.transform(img)
        return img, int(self.y[i])


def _shift(img):  # a random one-pixel translation (what RandomCrop(6, padding=1) does)
    dx, dy = torch.randint(-1, 2, (2,)).tolist()
    return torch.roll(img, shifts=(dy, dx), dims=(1, 2))


class Flat(nn.Module):
    def __init__(self, C):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(36, 16), nn.ReLU())
        self.head = nn.Linear(16, C)

    def forward(self, x):
        return self.head(self.body(x))


# ------------------------------------------------------------------------------------------------
# training over a DataLoader
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", [ERM(), FBR(warmup=0), FBR(warmup=1, whiten="auto"), FBRPaper(warmup=1),
                                    MetaDirection(), L2R()], ids=lambda m: type(m).__name__)
def test_dataloader_with_transforms_and_no_true_labels(method):
    d = _split(n=300, dim=36)
    train_set = Images(d.x_train, d.y_train, transform=_shift)  # noisy labels only
    loader = DataLoader(with_index(train_set), batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0))
    test_loader = DataLoader(Images(d.x_test, d.y_test), batch_size=64)
    clean = CleanSet.from_dataset(Images(d.x_clean, d.y_clean), passes=1, batch_size=8)
    torch.manual_seed(0)
    model = Flat(d.num_classes)
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), method, clean)
    r = trainer.fit(loader, epochs=3, eval_loader=test_loader)
    assert train_set.calls == 3 * len(train_set)  # the user's transform ran on every item, every epoch
    assert r.clean_weight == [] and r.noisy_weight == []  # no true labels: no weight-separation records
    assert len(r.test_acc) == 3 and all(0 <= a <= 1 for a in r.test_acc) and r.best_acc > 0.5
    if method.sample_weights is not None:
        assert r.final_weights.shape == (len(train_set),)
        if isinstance(method, FBR):
            assert (r.final_weights < 1).any()  # it reweighted


def test_batches_must_carry_the_index():
    d = _split()
    loader = DataLoader(list(zip(d.x_train, d.y_train)), batch_size=16)  # (x, y): no idx
    m = _mlp(d)
    t = Trainer(m, torch.optim.SGD(m.parameters(), lr=0.1), FBR(warmup=0), (d.x_clean, d.y_clean))
    with pytest.raises(ValueError, match="with_index"):
        t.fit(loader, epochs=1)
    with pytest.raises(ValueError, match=r"must be a pair \(x, y\)"):
        with_index([(1, 2, 3)])[0]
    with pytest.raises(TypeError, match="map-style Dataset"):
        with_index(iter([]))


def test_trainer_equals_the_train_adapter():
    """``train()`` is a thin adapter: the same run through Trainer + TensorLoader gives the same numbers."""
    d = _split()
    m1, m2 = _mlp(d), _mlp(d)
    opt1 = torch.optim.SGD(m1.parameters(), lr=0.1, momentum=0.9)
    r1 = train(m1, opt1, d, method="fbr", epochs=3, batch_size=32, seed=4, warmup=1, clean_passes=1,
               clean_batch_size=8)
    g = torch.Generator().manual_seed(4)
    clean = CleanSet(d.x_clean, d.y_clean, passes=1, batch_size=8)
    clean.generator = g
    loader = TensorLoader(d.x_train, d.y_train, 32, generator=g)
    t = Trainer(m2, torch.optim.SGD(m2.parameters(), lr=0.1, momentum=0.9), FBR(warmup=1), clean)
    r2 = t.fit(loader, 3, num_classes=d.num_classes, true_labels=d.y_train_true)
    assert torch.equal(_params(m1), _params(m2)) and torch.equal(r1.final_weights, r2.final_weights)
    for k in ("clean_weight", "noisy_weight"):
        torch.testing.assert_close(torch.tensor(getattr(r1, k)), torch.tensor(getattr(r2, k)), rtol=0, atol=0,
                                   equal_nan=True)


@pytest.mark.parametrize("make", [lambda: FBR(warmup=1, whiten="auto", whiten_every=2), lambda: FBRPaper(warmup=1),
                                  lambda: MetaDirection(warmup=1)], ids=["fbr", "paper", "meta"])
def test_own_loop_with_bind_is_the_trainers_step(make):
    """The drop-in loop of the README (method.bind, begin_epoch, loss, end_epoch) is the Trainer's code."""
    d = _split()
    runs = []
    for own in (False, True):
        m = _mlp(d)
        opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
        method = make()
        loader = TensorLoader(d.x_train, d.y_train, 32, generator=torch.Generator().manual_seed(1))
        clean = CleanSet(d.x_clean, d.y_clean, batch_size=8)
        clean.generator.manual_seed(2)
        if own:
            fit_by_hand(method, m, opt, clean, loader, 3, num_samples=len(d.y_train))
        else:
            Trainer(m, opt, method, clean).fit(loader, 3)
        runs.append((_params(m), method.sample_weights))
    assert torch.equal(runs[0][0], runs[1][0])
    if runs[0][1] is not None:
        assert torch.equal(runs[0][1], runs[1][1])


def test_method_options_are_checked():
    with pytest.raises(ValueError, match="step_size"):
        FBR(step_size=0)
    with pytest.raises(ValueError, match="whiten"):
        FBR(whiten="sometimes")
    with pytest.raises(ValueError, match="whiten needs clean_features='cache'"):
        FBR(whiten="auto", clean_features="batch")
    with pytest.raises(ValueError, match="clean_features"):
        FBR(clean_features="prototype")  # experimental: RunningPrototypeFBR
    with pytest.raises(ValueError, match="warmup"):
        FBRPaper(warmup=1.5)
    with pytest.raises(ValueError, match="layers"):
        MetaDirection(layers="some")
    with pytest.raises(ValueError, match="unknown method"):
        make_method("nope")
    with pytest.raises(TypeError, match="FBR"):
        make_method("fbr", lr=0.1)  # the step size is step_size
    assert isinstance(make_method("coteaching", forget_rate=0.3), CoTeaching)
    assert make_method("fbr", step_size=0.5).step_size == 0.5
    with pytest.raises(ValueError, match="clean x must have one row per label"):
        CleanSet(torch.zeros(3, 2), torch.zeros(4, dtype=torch.int64))
    with pytest.raises(TypeError, match="clean labels must be integers"):
        CleanSet(torch.zeros(3, 2), torch.zeros(3))
    with pytest.raises(TypeError, match="method must be"):
        Trainer(nn.Linear(2, 2), torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1), "fbr",
                (torch.zeros(2, 2), torch.tensor([0, 1])))


# ------------------------------------------------------------------------------------------------
# checkpoint and resume
# ------------------------------------------------------------------------------------------------
def _resumable_run(d, make, tmp, *, stop=None, resume=None, dataloader=False):
    """4 epochs with a checkpoint per epoch (``stop``: only that many epochs)."""
    m = _mlp(d)
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [2], 0.5)
    if dataloader:  # a DataLoader without a generator: its shuffle draws from the global RNG
        loader = DataLoader(with_index(list(zip(d.x_train, d.y_train))), batch_size=32, shuffle=True)
    else:
        loader = TensorLoader(d.x_train, d.y_train, 32, generator=torch.Generator().manual_seed(3),
                              transform=lambda x, g: x + 0.01 * torch.randn(x.shape, generator=g))
    clean = CleanSet(d.x_clean, d.y_clean, passes=1, batch_size=8)
    clean.generator.manual_seed(5)
    t = Trainer(m, opt, make(), clean, scheduler=sched)
    r = t.fit(loader, stop or 4, true_labels=d.y_train_true, checkpoint_dir=tmp, resume=resume)
    return m, r


@pytest.mark.parametrize("make", [ERM, lambda: FBR(warmup="auto", whiten="auto", whiten_every=2),
                                  lambda: FBR(warmup=1, refresh_every=5), lambda: FBRPaper(warmup=1),
                                  lambda: MetaDirection(warmup=1), lambda: L2R(warmup=1),
                                  lambda: CoTeaching(forget_rate=0.3, num_gradual=2),
                                  lambda: RunningPrototypeFBR(warmup=1)],
                         ids=["erm", "fbr-auto-whiten", "fbr-refresh5", "paper", "meta", "l2r", "coteaching",
                              "prototypes"])
@pytest.mark.parametrize("dataloader", [False, True], ids=["tensors", "dataloader"])
def test_resume_is_bit_identical(tmp_path, make, dataloader):
    d = _split()
    torch.manual_seed(123)
    full_m, full = _resumable_run(d, make, tmp_path / "full", dataloader=dataloader)
    torch.manual_seed(999)  # the global RNG of the resumed process differs: the checkpoint restores it
    torch.manual_seed(123)
    _resumable_run(d, make, tmp_path / "part", stop=2, dataloader=dataloader)
    torch.manual_seed(7)
    res_m, res = _resumable_run(d, make, tmp_path / "resumed", resume=tmp_path / "part" / "epoch-0002.pt",
                                dataloader=dataloader)
    assert torch.equal(_params(full_m), _params(res_m))
    for k in ("test_acc", "clean_weight", "noisy_weight"):
        torch.testing.assert_close(torch.tensor(getattr(full, k)), torch.tensor(getattr(res, k)), rtol=0, atol=0,
                                   equal_nan=True)
    if full.final_weights is not None:
        assert torch.equal(full.final_weights, res.final_weights)
    assert sorted(p.name for p in (tmp_path / "resumed").iterdir()) == ["epoch-0003.pt", "epoch-0004.pt"]


def test_bad_checkpoints_raise_clear_errors(tmp_path):
    d = _split()
    _resumable_run(d, lambda: FBR(warmup=0), tmp_path / "run", stop=1)
    good = tmp_path / "run" / "epoch-0001.pt"

    def resume(path, make=lambda: FBR(warmup=0), data=d):
        _resumable_run(data, make, tmp_path / "out", resume=path)

    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(ValueError, match="cannot be read.*corrupt"):
        resume(truncated)
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps(eval, protocol=2))  # an arbitrary global: never unpickled
    with pytest.raises(ValueError, match="cannot be read"):
        resume(evil)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.ones(3)}, other)
    with pytest.raises(ValueError, match="not a fastreweight Trainer checkpoint"):
        resume(other)
    with pytest.raises(ValueError, match="method 'fbr-stateful'.*'erm'"):
        resume(good, make=ERM)
    with pytest.raises(ValueError, match="training set of"):
        resume(good, data=_split(n=300))
    with pytest.raises(FileNotFoundError):
        resume(tmp_path / "missing.pt")
    state = torch.load(good, weights_only=True)
    del state["rng"]
    torch.save(state, tmp_path / "incomplete.pt")
    with pytest.raises(ValueError, match="lacks rng"):
        resume(tmp_path / "incomplete.pt")
    # a model of another shape
    m = Mo.MLP(d.input_shape[0], d.num_classes, (7,))
    t = Trainer(m, torch.optim.SGD(m.parameters(), lr=0.1), FBR(warmup=0),
                CleanSet(d.x_clean, d.y_clean, passes=1, batch_size=8),
                scheduler=torch.optim.lr_scheduler.MultiStepLR(torch.optim.SGD(m.parameters(), lr=0.1), [2]))
    with pytest.raises(ValueError, match="does not fit this model"):
        t.fit(TensorLoader(d.x_train, d.y_train, 32), 4, resume=good)


def test_checkpoints_never_overwrite(tmp_path):
    d = _split()
    m = _mlp(d)
    t = Trainer(m, torch.optim.SGD(m.parameters(), lr=0.1), ERM(), (d.x_clean, d.y_clean))
    t.fit(TensorLoader(d.x_train, d.y_train, 32), 1)
    target = tmp_path / "mine.pt"
    target.write_bytes(b"user data")
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        t.save(target)
    assert target.read_bytes() == b"user data"
    with pytest.raises(FileExistsError):
        t2 = Trainer(copy.deepcopy(m), torch.optim.SGD(m.parameters(), lr=0.1), ERM(), (d.x_clean, d.y_clean))
        (tmp_path / "ck").mkdir()
        (tmp_path / "ck" / "epoch-0001.pt").write_bytes(b"x")
        t2.fit(TensorLoader(d.x_train, d.y_train, 32), 1, checkpoint_dir=tmp_path / "ck")
    assert (tmp_path / "ck" / "epoch-0001.pt").read_bytes() == b"x"
    assert not [p for p in tmp_path.rglob(".tmp-*")]  # no temporary file left behind
