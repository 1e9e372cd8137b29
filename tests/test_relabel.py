"""NeighbourRelabel (method="relabel"): options, relabelling on planted noise, resume, own loop, train()."""
from __future__ import annotations

import pytest
import torch

from fastreweight import data as D
from fastreweight import models as Mo
from fastreweight.train import train
from fastreweight.training import CleanSet, NeighbourRelabel, TensorLoader, Trainer, make_method

from own_loop import fit_by_hand


def _planted(seed=0, n=300, C=3, dim=8, rate=0.3):
    """Well-separated blobs with ``rate`` of the training labels moved to the next class."""
    x, y = D.make_synthetic(n, C, dim, sep=5.0, seed=seed)
    return D.make_split(x, y, num_classes=C, noise="asym", rate=rate, clean_size=15, test_size=0.2, seed=seed,
                        dataset="synthetic")


def _mlp(d, seed=0):
    torch.manual_seed(seed)
    return Mo.MLP(d.input_shape[0], d.num_classes, (16,))


def _params(m):
    return torch.cat([p.detach().flatten() for p in m.parameters()])


@pytest.mark.parametrize("features", ["input", "model", "both"])
def test_relabels_planted_flips_and_keeps_correct_labels(features):
    d = _planted()
    m = _mlp(d)
    method = NeighbourRelabel(features=features, start=1, every=1, k=10)
    loader = TensorLoader(d.x_train, d.y_train, 32, generator=torch.Generator().manual_seed(1))
    Trainer(m, torch.optim.SGD(m.parameters(), lr=0.1), method, CleanSet(d.x_clean, d.y_clean)).fit(loader, 3)
    wrong = d.y_train != d.y_train_true
    assert wrong.float().mean() > 0.2
    cur = method.current_labels
    assert (cur[wrong] == d.y_train_true[wrong]).float().mean() > 0.8  # most flips relabelled to the truth
    assert (cur[~wrong] == d.y_train[~wrong]).float().mean() > 0.95  # correct labels kept
    assert method.relabelled and method.relabelled[-1] > 0
    w = method.sample_weights
    assert w.min() >= 0 and w.max() <= 1
    # 30% planted noise is down to under 10% after relabelling.  The few rows still wrong are the ones the vote
    # is confidently wrong about, so they keep weight 1; down-weighting of doubtful rows is
    # test_downweights_doubtful_rows's job.
    still = cur != d.y_train_true
    assert still.float().mean() < 0.1


@pytest.mark.parametrize("share", [0.0, 0.5, 1.0])
def test_relabelled_rows_train_on_the_soft_target(share):
    """The loss is the literal Σ w·CE(target) / Σ w, a relabelled row's target (1 − share)·onehot(s) + share·P."""
    d = _planted(seed=2, n=97)
    m = _mlp(d)
    method = NeighbourRelabel(features="input", every=1, k=10, vote_target=share)
    loader = TensorLoader(d.x_train, d.y_train, 17, generator=torch.Generator().manual_seed(1))
    Trainer(m, torch.optim.SGD(m.parameters(), lr=0.1), method, CleanSet(d.x_clean, d.y_clean)).fit(loader, 2)
    flipped = method.labels >= 0
    assert flipped.sum() > 0
    if share == 0:
        assert method.vote_slot is None
    else:
        assert torch.equal(method.vote_slot >= 0, flipped)
        votes = method.vote_of_flips
        assert votes.min() >= 0 and torch.allclose(votes.sum(1), torch.ones(len(votes)))
        assert torch.equal(votes.argmax(1), method.labels[flipped])  # the vote's winner is the new label
    idx = torch.arange(len(d.y_train))
    x, y = d.x_train, d.y_train
    loss, w = method.loss(x, y, idx)
    with torch.no_grad():
        logp = torch.log_softmax(m(x).double(), 1)
        target = torch.nn.functional.one_hot(method.current_labels, d.num_classes).double()
        if share > 0:
            target[flipped] = (1 - share) * target[flipped] + share * votes[method.vote_slot[flipped]].double()
        want = (w.double() * -(target * logp).sum(1)).sum() / w.double().sum()
    assert torch.allclose(loss.double(), want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="vote_target"):
        NeighbourRelabel(vote_target=1.5)


def test_downweights_doubtful_rows():
    """Two overlapping classes: rows whose label loses the vote narrowly are down-weighted, not relabelled."""
    d = _planted(rate=0.3)
    m = _mlp(d)
    method = NeighbourRelabel(features="input", margin=1.0, every=1)  # a lead of 1 is never reached
    loader = TensorLoader(d.x_train, d.y_train, 32, generator=torch.Generator().manual_seed(1))
    Trainer(m, torch.optim.SGD(m.parameters(), lr=0.1), method, CleanSet(d.x_clean, d.y_clean)).fit(loader, 2)
    wrong = d.y_train != d.y_train_true
    assert method.relabelled == [0, 0]
    assert method.sample_weights[wrong].mean() < 0.5 < method.sample_weights[~wrong].mean()


def test_options_are_checked():
    for kw, name in ((dict(features="pixels"), "features"), (dict(start=0), "start"), (dict(every=0), "every"),
                     (dict(margin=0), "margin"), (dict(margin=1.5), "margin"), (dict(k=0), "k"),
                     (dict(temperature=-1), "temperature"), (dict(clean_weight=0), "clean_weight"),
                     (dict(rounds=True), "rounds"), (dict(pca_dim=0), "pca_dim"),
                     (dict(clean_vote=1.5), "clean_vote"), (dict(clean_vote=-0.1), "clean_vote"),
                     (dict(clean_vote="0.8"), "clean_vote"), (dict(clean_k=0), "clean_k"),
                     (dict(clean_temperature=0), "clean_temperature"), (dict(vote_target=-0.1), "vote_target"),
                     (dict(vote_target=True), "vote_target")):
        with pytest.raises(ValueError, match=name):
            NeighbourRelabel(**kw)
    assert isinstance(make_method("relabel", margin=0.2), NeighbourRelabel)
    with pytest.raises(TypeError, match="NeighbourRelabel"):
        make_method("relabel", lr=0.1)


def _resumable(d, tmp, *, stop=None, resume=None):
    m = _mlp(d)
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    loader = TensorLoader(d.x_train, d.y_train, 32, generator=torch.Generator().manual_seed(3),
                          transform=lambda x, g: x + 0.01 * torch.randn(x.shape, generator=g))
    clean = CleanSet(d.x_clean, d.y_clean, passes=1, batch_size=8)
    clean.generator.manual_seed(5)
    method = NeighbourRelabel(start=1, every=2, k=10)
    r = Trainer(m, opt, method, clean).fit(loader, stop or 4, true_labels=d.y_train_true, checkpoint_dir=tmp,
                                           resume=resume)
    return m, r, method


@pytest.mark.parametrize("at", [1, 2])
def test_resume_is_bit_identical(tmp_path, at):
    d = _planted()
    full_m, full, full_method = _resumable(d, tmp_path / "full")
    _resumable(d, tmp_path / "part", stop=at)
    torch.manual_seed(7)
    res_m, res, res_method = _resumable(d, tmp_path / "res", resume=tmp_path / "part" / f"epoch-{at:04d}.pt")
    assert torch.equal(_params(full_m), _params(res_m))
    assert full.test_acc == res.test_acc or all(a != a for a in full.test_acc)
    assert torch.equal(full.final_weights, res.final_weights)
    assert torch.equal(full_method.current_labels, res_method.current_labels)


def test_own_loop_with_bind_is_the_trainers_step():
    d = _planted()
    runs = []
    for own in (False, True):
        m = _mlp(d)
        opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
        method = NeighbourRelabel(every=1, k=10)
        loader = TensorLoader(d.x_train, d.y_train, 32, generator=torch.Generator().manual_seed(1))
        clean = CleanSet(d.x_clean, d.y_clean)
        if own:
            fit_by_hand(method, m, opt, clean, loader, 3, num_samples=len(d.y_train))
        else:
            Trainer(m, opt, method, clean).fit(loader, 3)
        runs.append((_params(m), method.sample_weights, method.current_labels))
    for a, b in zip(*runs):
        assert torch.equal(a, b)


def test_train_adapter_and_wide_inputs():
    """train(method="relabel", relabel_options=...) reaches the method; inputs wider than 1024 are projected."""
    x, y = D.make_synthetic(200, 3, 1100, sep=5.0, seed=0)
    d = D.make_split(x, y, num_classes=3, noise="sym", rate=0.3, clean_size=15, test_size=0.2, seed=0,
                     dataset="synthetic")
    torch.manual_seed(0)
    m = Mo.MLP(1100, 3, (8,))
    r = train(m, torch.optim.SGD(m.parameters(), lr=0.1), d, method="relabel", epochs=2, batch_size=32,
              relabel_options=dict(features="input", pca_dim=16, k=5))
    assert r.config["relabelled"] and r.final_weights.shape == (len(d.y_train),)
    with pytest.raises(ValueError, match="margin"):
        train(m, torch.optim.SGD(m.parameters(), lr=0.1), d, method="relabel", epochs=1,
              relabel_options=dict(margin=2))


class _Images(torch.utils.data.Dataset):
    """Blob images (1×8×8) with a random-noise transform, items (image, noisy label)."""

    def __init__(self, x, y, seed=0):
        self.x, self.y, self.g = x.reshape(-1, 1, 8, 8), y, torch.Generator().manual_seed(seed)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i] + 0.05 * torch.randn(self.x[i].shape, generator=self.g), self.y[i]


def _image_run(method, d, loader=None):
    from torch.utils.data import DataLoader

    from fastreweight.training import with_index

    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                            torch.nn.Linear(4 * 64, 16), torch.nn.ReLU(), torch.nn.Linear(16, d.num_classes))
    loader = loader or DataLoader(with_index(_Images(d.x_train, d.y_train)), batch_size=32, shuffle=True,
                                  generator=torch.Generator().manual_seed(1))
    clean = CleanSet(d.x_clean.reshape(-1, 1, 8, 8), d.y_clean)
    return Trainer(m, torch.optim.SGD(m.parameters(), lr=0.1), method, clean).fit(loader, 3)


def _planted64():
    x, y = D.make_synthetic(300, 3, 64, sep=5.0, seed=0)
    return D.make_split(x, y, num_classes=3, noise="asym", rate=0.3, clean_size=15, test_size=0.2, seed=0,
                        dataset="synthetic")


def test_images_over_a_dataloader_with_transforms():
    """The default (input PCA + model features) over a user's DataLoader of (image, label, idx) batches."""
    import warnings

    d = _planted64()
    method = NeighbourRelabel(every=1, k=10)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # the input space is used, nothing is given up
        _image_run(method, d)
    assert method.input_off is None and method.embedding is not None
    wrong = d.y_train != d.y_train_true
    assert (method.current_labels[wrong] == d.y_train_true[wrong]).float().mean() > 0.8


def test_input_space_degrades_to_model_features_with_a_message():
    """Over the input budget: "both" warns once and relabels with the model's features; "input" raises."""
    d = _planted64()
    method = NeighbourRelabel(every=1, k=10, input_budget_mb=0.01)  # 240 rows × 64 floats > 10 KiB
    with pytest.warns(RuntimeWarning, match="input_budget_mb.*model's penultimate features only"):
        _image_run(method, d)
    assert "input_budget_mb" in method.input_off and method.embedding is None and method.relabelled[-1] > 0
    assert method.summary()["input_off"] == method.input_off
    with pytest.raises(ValueError, match="features='input'.*input_budget_mb"):
        _image_run(NeighbourRelabel(features="input", input_budget_mb=0.01), d)
    with pytest.raises(ValueError, match="input_budget_mb"):
        NeighbourRelabel(input_budget_mb=0)

