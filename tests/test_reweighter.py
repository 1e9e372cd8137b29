"""Reweighter, stateless_weights: clipping, state round-trip, all-zero case."""
import pytest
import torch

import fastreweight as fr

f64 = torch.float64


def test_step_is_clipped_normalised_update():
    rw = fr.Reweighter(10, lr=0.5, init=0.8, dtype=f64)
    idx = torch.tensor([3, 7, 1, 9])
    r = torch.tensor([2.0, -4.0, 0.5, -0.1], dtype=f64)
    w = rw.step(idx, r)
    rhat = r / (r.abs().mean() + 1e-12)
    want = (0.8 + 0.5 * rhat).clamp(0, 1)
    torch.testing.assert_close(w, want)
    torch.testing.assert_close(rw.weights[idx], want)
    untouched = torch.tensor([0, 2, 4, 5, 6, 8])
    assert torch.all(rw.weights[untouched] == 0.8)
    assert w.max() == 1.0 and w.min() == 0.0  # both clips hit


def test_no_normalisation_and_repeated_steps_stay_in_unit_interval():
    rw = fr.Reweighter(5, lr=0.3, normalize_update="none", dtype=f64)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        idx = torch.randperm(5, generator=g)[:3]
        before = rw.weights[idx].clone()
        r = torch.randn(3, generator=g, dtype=f64) * 5
        w = rw.step(idx, r)
        torch.testing.assert_close(w, (before + 0.3 * r).clamp(0, 1))
        assert torch.all((rw.weights >= 0) & (rw.weights <= 1))


def test_state_round_trip():
    rw = fr.Reweighter(8, lr=0.25, init=0.6)
    rw.step(torch.tensor([0, 5]), torch.tensor([1.0, -1.0]))
    state = rw.state_dict()
    other = fr.Reweighter(8)
    other.load_state_dict(state)
    assert torch.equal(other.weights, rw.weights)
    assert (other.lr, other.init, other.normalize_update) == (0.25, 0.6, "mean_abs")
    # the state is a copy: stepping one does not move the other
    rw.step(torch.tensor([1]), torch.tensor([-3.0]))
    assert not torch.equal(other.weights, rw.weights)
    with pytest.raises(ValueError, match=r"state\['weights'\] must have length 8"):
        fr.Reweighter(8).load_state_dict({"weights": torch.ones(3)})
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        fr.Reweighter(3).load_state_dict({"weights": torch.tensor([0.5, 2.0, 0.1])})


def test_stateless_weights():
    r = torch.tensor([1.0, -2.0, 3.0, 0.0], dtype=f64)
    torch.testing.assert_close(fr.stateless_weights(r), torch.tensor([1.0, 0.0, 3.0, 0.0], dtype=f64))  # mean(max(r,0)) = 1
    z = fr.stateless_weights(torch.tensor([-1.0, -0.5, 0.0]))
    assert torch.equal(z, torch.zeros(3))
