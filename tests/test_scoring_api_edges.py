"""The public scoring API where a user steps off the common path: inputs that require grad (only the
reference differentiates), ``torch.inference_mode``, ``torch.compile``, clean tensors written behind the
version counter, the lazy subpackages, and the checks of ``Reweighter`` / ``weighted_loss`` options."""
import numpy as np
import pytest
import torch

import fastreweight
from fastreweight import BackendUnavailable, CleanScorer, Reweighter, fbr_scores, weighted_loss
from fastreweight import backends

C = 3
CPP = backends.unavailable_reason("cpp", torch.device("cpu")) is None


def _data(seed=0, B=17, M=12, d=5):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, d, generator=g)
    z = torch.randn(M, d, generator=g)
    cy = torch.arange(M) % C
    y = torch.randint(0, C, (B,), generator=g)
    return x, y, z, cy


def _grad_through(fn, backend):
    torch.manual_seed(1)
    lin = torch.nn.Linear(5, 5).double()
    x, y, z, cy = _data()
    fn(lin(x.double()), y, z.double(), cy, num_classes=C, backend=backend).square().sum().backward()
    return lin.weight.grad


@pytest.mark.parametrize("fn", [fastreweight.fbr_scores, fastreweight.class_similarity])
def test_auto_differentiates_like_the_reference(fn):
    ref = _grad_through(fn, "reference")
    auto = _grad_through(fn, "auto")
    assert ref is not None and auto is not None
    torch.testing.assert_close(auto, ref)
    assert fastreweight.last_plan().backend == "reference"
    assert "requires grad" in fastreweight.last_plan().reason


@pytest.mark.skipif(not CPP, reason="the C++ CPU extension is not built")
def test_a_named_fast_backend_refuses_inputs_that_need_a_backward():
    x, y, z, cy = _data()
    with pytest.raises(BackendUnavailable, match="x requires grad"):
        fbr_scores(x.requires_grad_(), y, z, cy, num_classes=C, backend="cpp")
    with torch.no_grad():  # no backward asked for: the fast backend runs
        fbr_scores(x, y, z, cy, num_classes=C, backend="cpp")
    assert fastreweight.last_plan().backend == "cpp"


@pytest.mark.skipif(not CPP, reason="the C++ CPU extension is not built")
def test_clean_scorer_plans_a_batch_that_needs_a_backward_apart():
    x, y, z, cy = _data()
    scorer = CleanScorer(z, cy, num_classes=C)
    plain = scorer.fbr_scores(x, y)
    assert fastreweight.last_plan().backend == "cpp"
    xg = x.clone().requires_grad_()
    out = scorer.fbr_scores(xg, y)
    assert fastreweight.last_plan().backend == "reference"
    out.sum().backward()
    assert xg.grad is not None and xg.grad.abs().sum() > 0
    torch.testing.assert_close(out.detach(), plain)
    scorer.fbr_scores(x, y)
    assert fastreweight.last_plan().backend == "cpp"


def test_inference_mode_scores_like_grad_mode():
    x, y, z, cy = _data(2)
    want = fbr_scores(x, y, z, cy, num_classes=C)
    with torch.inference_mode():
        zi, xi = z.clone(), x.clone()  # inference tensors: no version counter
        got = fbr_scores(xi, y, zi, cy, num_classes=C)
        again = fbr_scores(xi, y, zi, cy, num_classes=C)
        scorer_out = CleanScorer(zi, cy, num_classes=C).fbr_scores(xi, y)
    for t in (got, again, scorer_out):
        torch.testing.assert_close(t, want)


def test_compile_fullgraph_traces_a_scoring_call():
    x, y, z, cy = _data(3)
    want = fbr_scores(x, y, z, cy, num_classes=C, backend="reference")  # an eager call loads the backend

    def f(x, y, z, cy):
        return fbr_scores(x, y, z, cy, num_classes=C, check_values=False, backend="reference")

    torch._dynamo.reset()
    got = torch.compile(f, backend="aot_eager", fullgraph=True)(x, y, z, cy)
    torch.testing.assert_close(got, want)


def test_clear_clean_cache_after_a_write_behind_the_version_counter():
    x, y, z, cy = _data(4)
    fbr_scores(x, y, z, cy, num_classes=C)
    z.numpy()[:] = np.random.default_rng(0).normal(3.0, 5.0, z.shape)  # not seen by the version counter
    fastreweight.clear_clean_cache()
    torch.testing.assert_close(fbr_scores(x, y, z, cy, num_classes=C), fbr_scores(x, y, z.clone(), cy, num_classes=C))


def test_subpackages_are_reachable_from_a_bare_import():
    assert callable(fastreweight.whiten.shrunk_class_means)
    assert callable(fastreweight.label_issues.find_label_issues)
    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        fastreweight.nonsense


def test_num_classes_accepts_a_numpy_integer():
    x, y, z, cy = _data(5)
    torch.testing.assert_close(fbr_scores(x, y, z, cy, num_classes=np.int64(C)), fbr_scores(x, y, z, cy, num_classes=C))


@pytest.mark.parametrize("key,value,match", [
    ("lr", -5.0, r"state\['lr'\] must be >= 0"),
    ("lr", "abc", r"state\['lr'\] must be a finite float"),
    ("init", 7.0, r"state\['init'\] must lie in \[0, 1\]"),
    ("eps", 0.0, r"state\['eps'\] must be > 0"),
    ("eps", float("nan"), r"state\['eps'\] must be a finite float"),
])
def test_reweighter_load_state_dict_checks_what_the_constructor_checks(key, value, match):
    rw = Reweighter(4, backend="reference", init=0.5)
    state = {**rw.state_dict(), key: value}
    with pytest.raises(ValueError, match=match):
        rw.load_state_dict(state)
    assert rw.lr == 0.5 and rw.init == 0.5  # unchanged by the refused state


def test_reference_step_with_unchecked_out_of_range_indices_touches_no_other_sample():
    rw = Reweighter(10, backend="reference", init=0.5)
    out = rw.step(torch.tensor([0, -1, 10]), torch.tensor([-1.0, -1.0, -1.0]), check_values=False)
    assert out[1] == 0 and out[2] == 0
    torch.testing.assert_close(rw.weights[1:], torch.full((9,), 0.5))
    assert rw.weights[0] < 0.5


def test_reweighter_index_errors_speak_of_indices():
    rw = Reweighter(10, backend="reference")
    with pytest.raises(TypeError, match="idx must be an integer tensor of dataset indices"):
        rw.step(torch.tensor([0.0, 1.0]), torch.tensor([1.0, 1.0]))
    with pytest.raises(ValueError, match=r"idx must have length 2 \(one index per row\)"):
        rw.step(torch.tensor([0, 1, 2]), torch.tensor([1.0, 1.0]))


@pytest.mark.parametrize("eps", [None, "a", -1.0, 0.0, float("nan"), float("inf"), True])
def test_weighted_loss_checks_eps(eps):
    with pytest.raises(ValueError, match="eps must be a finite float > 0"):
        weighted_loss(torch.rand(5), torch.zeros(5), eps=eps)


def test_weighted_loss_of_all_zero_weights_is_zero():
    assert weighted_loss(torch.rand(5), torch.zeros(5)).item() == 0.0
    assert weighted_loss(torch.rand(5), torch.zeros(5), eps=1e-6).item() == 0.0
