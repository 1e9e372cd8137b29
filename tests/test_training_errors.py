"""fastreweight.training: clear errors for misuse, caught before training, and no state carried between runs.

Each test is a defect from the QA pass of the trainer (a tiny MLP, 200 rows, a few epochs)."""
import os
import warnings

import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset, RandomSampler

from fastreweight.training import (ERM, FBR, CleanSet, FBRPaper, MetaDirection, NeighbourRelabel, TensorLoader,
                                   Trainer, Warmup, with_index)
from fastreweight.training.batches import unpack_batch

N, D, C, M = 200, 8, 3, 30


def _data(seed=0):
    g = torch.Generator().manual_seed(seed)
    x, cx = torch.randn(N, D, generator=g), torch.randn(M, D, generator=g)
    label = lambda t: (t[:, 0] > 0).long() + (t[:, 1] > 0.5).long()  # noqa: E731
    return x, label(x), cx, label(cx)


X, Y, CX, CY = _data()


def _mlp(c=C, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(D, 16), nn.ReLU(), nn.Linear(16, c))


class Pairs(Dataset):
    def __init__(self, x, y, label=int):
        self.x, self.y, self.label = x, y, label

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.label(self.y[i])


def _loader(**kw):
    return DataLoader(with_index(Pairs(X, Y)), batch_size=32, **kw)


def _trainer(method, model=None, clean=(CX, CY), **kw):
    model = model if model is not None else _mlp()
    return Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), method, CleanSet(*clean), **kw)


# -- 1: a method object attached again starts its warm-up from scratch ----------------------------------------
@pytest.mark.parametrize("make", [FBR, lambda: FBRPaper(warmup="auto")], ids=["fbr", "paper"])
def test_reused_method_starts_its_warmup_afresh(make):
    method = make()
    first = _trainer(method).fit(_loader(), 3)
    assert first.reweight_start_epoch == 1  # the cap of a 3-epoch run
    torch.manual_seed(1)
    again = _trainer(method).fit(_loader(), 12)
    torch.manual_seed(1)
    fresh = _trainer(make()).fit(_loader(), 12)
    assert again.probe == fresh.probe and len(again.probe) >= 2
    assert again.reweight_start_epoch == fresh.reweight_start_epoch > 1


def test_warmup_setup_resets_the_probe_state():
    w = Warmup("auto", patience=1)
    w.setup(9)
    w.update(0, 0.5)
    w.update(1, 0.5)
    assert w.start == 2
    w.setup(9)
    assert (w.start, w.best, w.since, w.probes) == (None, -1.0, 0, [])


# -- 2: fit once per Trainer ---------------------------------------------------------------------------------
def test_second_fit_on_one_trainer_raises():
    t = _trainer(FBR(warmup=1))
    r = t.fit(_loader(), 2)
    weights = r.final_weights.clone()
    with pytest.raises(ValueError, match="already run fit.*new Trainer.*resume"):
        t.fit(_loader(), 3)
    assert torch.equal(t.method.sample_weights.cpu(), weights)  # the refused call reset nothing


def test_fit_refused_by_a_check_can_be_called_again(tmp_path):
    (tmp_path / "epoch-0001.pt").write_bytes(b"x")
    t = _trainer(ERM())
    with pytest.raises(FileExistsError):
        t.fit(_loader(), 1, checkpoint_dir=tmp_path)
    assert len(t.fit(_loader(), 1).epoch_seconds) == 1


# -- 3: existing checkpoint files are found before training ---------------------------------------------------
def test_existing_checkpoint_file_raises_before_training(tmp_path):
    (tmp_path / "epoch-0002.pt").write_bytes(b"mine")
    model = _mlp()
    before = [p.detach().clone() for p in model.parameters()]
    calls = []
    t = _trainer(ERM(), model=model, callbacks=[calls.append])
    with pytest.raises(FileExistsError, match="epoch-0002.pt"):
        t.fit(_loader(), 3, checkpoint_dir=tmp_path)
    assert not calls and all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert sorted(os.listdir(tmp_path)) == ["epoch-0002.pt"]
    # checkpoint_every=2 over 1 epoch writes no epoch-0002.pt: no clash
    _trainer(ERM()).fit(_loader(), 1, checkpoint_dir=tmp_path, checkpoint_every=2)


def test_resume_into_its_own_directory_checks_only_the_later_epochs(tmp_path):
    _trainer(ERM()).fit(_loader(), 2, checkpoint_dir=tmp_path)
    _trainer(ERM()).fit(_loader(), 3, resume=tmp_path / "epoch-0002.pt", checkpoint_dir=tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["epoch-0001.pt", "epoch-0002.pt", "epoch-0003.pt"]
    with pytest.raises(FileExistsError, match="epoch-0003.pt"):
        _trainer(ERM()).fit(_loader(), 4, resume=tmp_path / "epoch-0002.pt", checkpoint_dir=tmp_path)


# -- 4: labels ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [ERM, lambda: FBR(warmup=0), lambda: NeighbourRelabel(every=1, k=5)],
                         ids=["erm", "fbr", "relabel"])
def test_int32_labels_from_a_dataset_train(make):
    loader = _loader()
    loader.dataset.dataset.label = lambda v: v.to(torch.int32)
    r = _trainer(make()).fit(loader, 2)
    assert len(r.epoch_seconds) == 2


def test_float_labels_raise_type_error_naming_y():
    loader = DataLoader(with_index(Pairs(X, Y, label=float)), batch_size=32)
    with pytest.raises(TypeError, match=r"y \(a batch's labels\).*float"):
        _trainer(ERM()).fit(loader, 1)
    with pytest.raises(TypeError, match="y must hold integer class labels"):
        TensorLoader(X, Y.float(), 32)
    with pytest.raises(TypeError, match="y must hold integer class labels"):
        TensorLoader(X, Y.bool(), 32)


# -- 5: dict batches ------------------------------------------------------------------------------------------
def test_dict_batch_without_idx_names_the_keys():
    with pytest.raises(ValueError, match="keys 'x', 'y' and 'idx'.*\\['x', 'y'\\]"):
        unpack_batch({"x": X[:2], "y": Y[:2]})
    assert unpack_batch({"x": 1, "y": 2}, need_index=False) == (1, 2, None)
    loader = [{"x": X[:32], "y": Y[:32]}]
    with pytest.raises(ValueError, match="keys 'x', 'y' and 'idx'"):
        _trainer(ERM()).fit(loader, 1, num_samples=N)


# -- 6: schedulers --------------------------------------------------------------------------------------------
def test_plateau_scheduler_is_rejected_at_construction():
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="ReduceLROnPlateau.*once per epoch"):
        Trainer(model, opt, ERM(), (CX, CY), scheduler=torch.optim.lr_scheduler.ReduceLROnPlateau(opt))
    with pytest.raises(TypeError, match="scheduler must be"):
        Trainer(model, opt, ERM(), (CX, CY), scheduler="step")


# -- 7: resuming with another optimiser or other method options ----------------------------------------------
def test_resume_with_another_optimizer_class_names_both(tmp_path):
    _trainer(FBR(warmup=1)).fit(_loader(), 1, checkpoint_dir=tmp_path)
    model = _mlp()
    t = Trainer(model, torch.optim.Adam(model.parameters()), FBR(warmup=1), (CX, CY))
    with pytest.raises(ValueError, match="optimizer is SGD, this run's is Adam"):
        t.fit(_loader(), 2, resume=tmp_path / "epoch-0001.pt")


def test_resume_with_other_method_options_says_what_differs(tmp_path):
    _trainer(FBR(warmup=1)).fit(_loader(), 1, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="whiten=None in the checkpoint, 'auto' in this run"):
        _trainer(FBR(warmup=1, whiten="auto")).fit(_loader(), 2, resume=tmp_path / "epoch-0001.pt")
    # a checkpoint written before the options were stored: the whitening state itself is compared
    state = torch.load(tmp_path / "epoch-0001.pt", weights_only=True)
    del state["method_options"], state["optimizer_types"]
    torch.save(state, tmp_path / "old.pt")
    with pytest.raises(ValueError, match="without whitening.*whiten='auto'"):
        _trainer(FBR(warmup=1, whiten="auto")).fit(_loader(), 2, resume=tmp_path / "old.pt")
    _trainer(FBR(warmup=1)).fit(_loader(), 2, resume=tmp_path / "old.pt")  # still resumes


# -- 8: FBRPaper and classes without clean rows --------------------------------------------------------------
def test_fbr_paper_warns_about_classes_without_clean_rows():
    keep = CY != 2
    with pytest.warns(UserWarning, match=r"no row of class\(es\) \[2\].*weight 0"):
        r = _trainer(FBRPaper(warmup=0), clean=(CX[keep], CY[keep])).fit(_loader(), 1)
    assert (r.final_weights[Y == 2] == 0).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _trainer(FBRPaper(warmup=0)).fit(_loader(), 1)


# -- 9: models the methods cannot use -------------------------------------------------------------------------
class TupleNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.body, self.fc = nn.Sequential(nn.Linear(D, 16), nn.ReLU()), nn.Linear(16, C)

    def forward(self, x):
        h = self.body(x)
        return self.fc(h), h


class ConvHead(nn.Module):  # no nn.Linear
    def __init__(self):
        super().__init__()
        self.c = nn.Conv1d(1, C, D)

    def forward(self, x):
        return self.c(x[:, None]).flatten(1)


class ConvHeadWithFeatures(ConvHead):
    def features_and_logits(self, x):
        return x, self(x)


@pytest.mark.parametrize("make", [ERM, lambda: FBR(warmup=0)], ids=["erm", "fbr"])
def test_model_returning_a_tuple_raises_type_error(make):
    with pytest.raises(TypeError, match=r"model must return a logits tensor.*got tuple"):
        _trainer(make(), model=TupleNet()).fit(_loader(), 1)


@pytest.mark.parametrize("make", [lambda: FBR(warmup=0), FBR, lambda: NeighbourRelabel(every=1, k=5),
                                  lambda: FBRPaper(warmup=0)], ids=["fbr", "fbr-auto", "relabel", "paper"])
def test_model_without_linear_head_says_what_is_needed(make):
    with pytest.raises(ValueError, match="no nn.Linear layer.*features_and_logits") as e:
        _trainer(make(), model=ConvHead()).fit(_loader(), 2)
    assert "head=" not in str(e.value)


def test_model_with_features_and_logits_needs_no_linear_head():
    r = _trainer(FBR(warmup=0), model=ConvHeadWithFeatures()).fit(_loader(), 1)
    assert r.final_weights.shape == (N,)
    with pytest.raises(ValueError, match=r"MetaDirection\(layers='head'\) needs a model with an nn.Linear"):
        _trainer(MetaDirection(), model=ConvHead()).fit(_loader(), 1)


# -- 10: num_classes -----------------------------------------------------------------------------------------
def test_num_classes_must_match_the_model_output():
    with pytest.raises(ValueError, match="num_classes=5 but the model returns 3 logits"):
        _trainer(ERM()).fit(_loader(), 1, num_classes=5)
    with pytest.raises(ValueError, match="clean labels reach class 2 but the model returns 2 logits"):
        _trainer(ERM(), model=_mlp(c=2)).fit(_loader(), 1)


@pytest.mark.parametrize("make", [lambda: NeighbourRelabel(every=1, k=5), lambda: FBR(warmup=0)],
                         ids=["relabel", "fbr"])
def test_clean_subset_without_the_top_class_uses_the_model_width(make):
    keep = CY != 2
    method = make()
    _trainer(method, clean=(CX[keep], CY[keep])).fit(_loader(), 2)
    assert method.ctx.num_classes == C


# -- 11: non-finite inputs to NeighbourRelabel ----------------------------------------------------------------
@pytest.mark.parametrize("features, what", [("both", "training inputs"), ("model", "penultimate features")])
def test_relabel_non_finite_inputs_raise_value_error(features, what):
    xn = X.clone()
    xn[5] = float("nan")
    loader = DataLoader(with_index(Pairs(xn, Y)), batch_size=32)
    with pytest.raises(ValueError, match=f"{what}.*NaN or Inf.*e.g. \\[5"):
        _trainer(NeighbourRelabel(every=1, k=5, features=features), check_values=True).fit(loader, 1)


# -- 12: NeighbourRelabel needs every row each epoch ----------------------------------------------------------
@pytest.mark.parametrize("kw", [dict(drop_last=True), dict(sampler=RandomSampler(range(193), replacement=True))],
                         ids=["drop_last", "replacement"])
def test_relabel_names_the_loader_settings_that_skip_rows(kw):
    with pytest.raises(ValueError, match="were not in any batch of epoch 0.*drop_last=True.*replacement"):
        _trainer(NeighbourRelabel(every=1, k=5)).fit(DataLoader(with_index(Pairs(X[:193], Y[:193])), batch_size=32,
                                                                **kw), 1)


# -- 13: option checks ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("make, match", [
    (lambda: Warmup(-1), "warmup epochs"), (lambda: FBR(warmup=-5), "warmup epochs"),
    (lambda: Warmup(tol=-1), "warmup tol"), (lambda: Warmup(tol="a"), "warmup tol"),
    (lambda: Warmup(tol=float("nan")), "warmup tol"), (lambda: Warmup(max_epochs=0), "warmup max_epochs"),
    (lambda: Warmup(patience=True), "warmup patience"), (lambda: Warmup(patience=0), "warmup patience")])
def test_warmup_options_are_checked(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_callbacks_are_checked_at_construction():
    with pytest.raises(TypeError, match=r"callbacks must be a list of callables.*callbacks=\[fn\]"):
        _trainer(ERM(), callbacks=print)
    with pytest.raises(TypeError, match=r"callbacks\[1\] must be callable.*int"):
        _trainer(ERM(), callbacks=[print, 3])
    events = []
    _trainer(ERM(), callbacks=(events.append,)).fit(_loader(), 1)
    assert len(events) == 7 and events[0]["phase"] == "train"


def test_a_model_normalising_over_the_batch_in_eval_mode_still_trains():
    """The output-width probe runs two rows: a layer with batch statistics in eval mode cannot run one."""
    torch.manual_seed(0)
    x, y = torch.randn(60, 4), torch.randint(0, 3, (60,))
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8, track_running_stats=False),
                                torch.nn.ReLU(), torch.nn.Linear(8, 3))
    Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), FBR(warmup=0), CleanSet(x[:12], y[:12])).fit(
        TensorLoader(x, y, 16), epochs=1)


def test_state_dict_before_fit_says_to_fit_first():
    model = torch.nn.Linear(4, 3)
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), ERM(),
                      CleanSet(torch.randn(6, 4), torch.arange(6) % 3))
    with pytest.raises(RuntimeError, match=r"call fit\(...\) first"):
        trainer.state_dict()
