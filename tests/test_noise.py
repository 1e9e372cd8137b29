"""fastreweight.noise: class-conditional and instance-dependent label-noise generators."""
from collections import Counter

import numpy as np
import pytest
import torch

from fastreweight import data as D
from fastreweight import noise as N

KINDS = tuple(N.NOISE_KINDS)
C = 10


@pytest.fixture(scope="module")
def mnist600():
    """600 MNIST-5k rows drawn at random (the file is sorted by class)."""
    x, y = D.load_mnist5k()
    idx = np.sort(np.random.default_rng(0).choice(len(y), 600, replace=False))
    return x[idx].numpy(), y[idx].numpy()


@pytest.fixture(scope="module")
def digits():
    x, y = D.load_digits()
    return x.numpy(), y.numpy()


def _noise(kind, x, y, rate, seed=0, **kw):
    return N.make_noise(kind, x, y, rate, num_classes=C, seed=seed, **kw)


# ------------------------------------------------------------------------------------------------
# contract shared by every kind
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_exact_rate_range_and_never_same_class(kind, mnist600):
    x, y = mnist600[0][:300], mnist600[1][:300]
    y_before = y.copy()
    for rate in (0.0, 0.011, 0.3, 0.95):
        out = _noise(kind, x, y, rate)
        assert isinstance(out, np.ndarray) and out.dtype == np.int64 and out.shape == y.shape
        assert out is not y and not np.shares_memory(out, y)
        # exactly round(rate·N) labels differ: every chosen sample moved to ANOTHER class
        assert (out != y).sum() == N.noise_count(rate, len(y)) == round(rate * len(y))
        assert out.min() >= 0 and out.max() < C
    assert np.array_equal(y, y_before)  # input untouched


@pytest.mark.parametrize("kind", KINDS)
def test_deterministic_and_seed_dependent(kind, mnist600):
    x, y = mnist600
    a, b, c = _noise(kind, x, y, 0.3, seed=3), _noise(kind, x, y, 0.3, seed=3), _noise(kind, x, y, 0.3, seed=4)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("kind", KINDS)
def test_numpy_and_torch_inputs_agree(kind, digits):
    x, y = digits[0][:400], digits[1][:400]
    ref = _noise(kind, x, y, 0.2)
    # torch tensors, other dtypes, image-shaped rows (flattened)
    assert np.array_equal(ref, _noise(kind, torch.from_numpy(x).view(-1, 1, 8, 8), torch.from_numpy(y).int(), 0.2))


# ------------------------------------------------------------------------------------------------
# class-conditional kinds
# ------------------------------------------------------------------------------------------------
def test_symmetric_spreads_over_other_classes():
    y = np.arange(5000) % C
    out = N.symmetric_noise(y, 0.4, num_classes=C, seed=1)
    f = out != y
    shift = (out[f] - y[f]) % C
    assert set(np.unique(shift)) == set(range(1, C))
    assert np.bincount(shift, minlength=C)[1:].min() > 0.7 * f.sum() / (C - 1)


def test_pair_noise_map_and_class_quotas():
    y = np.repeat(np.arange(C), [50, 60, 70, 80, 90, 100, 110, 120, 130, 141])
    out = N.pair_noise(y, 0.37, num_classes=C, seed=0)
    f = out != y
    assert np.all(out[f] == (y[f] + 1) % C)
    for c in range(C):  # apportioned by class size: within one sample of rate·n_c
        n_c = (y == c).sum()
        assert abs(f[y == c].sum() - 0.37 * n_c) < 1 + 1e-9
    # classes mapped to themselves never move; the rate stays a fraction of all samples
    out = N.pair_noise(y, 0.2, num_classes=C, class_map={9: 1, 2: 0, 3: 5, 5: 3, 4: 7}, seed=0)
    assert (out != y).sum() == round(0.2 * len(y))
    assert set(np.unique(y[out != y])) <= {9, 2, 3, 5, 4}
    with pytest.raises(ValueError, match="class_map"):
        N.pair_noise(y, 0.9, num_classes=C, class_map={0: 1})
    with pytest.raises(ValueError, match="class_map"):
        N.pair_noise(y, 0.1, num_classes=C, class_map={0: 10})
    assert np.array_equal(N.make_noise("asym", None, y, 0.3, num_classes=C),
                          N.make_noise("pair", None, y, 0.3, num_classes=C))


# ------------------------------------------------------------------------------------------------
# instance-dependent kinds
# ------------------------------------------------------------------------------------------------
def _other(p, y):
    q = p.copy()
    q[np.arange(len(y)), y] = -np.inf
    return q.argmax(1), q.max(1)


@pytest.mark.parametrize("model", ["logistic", "ncm"])
def test_confusion_targets_are_out_of_fold_most_probable_other_class(model, mnist600):
    x, y = mnist600
    p = N.out_of_fold_proba(x, y, num_classes=C, model=model, seed=0)
    assert p.shape == (len(y), C) and np.allclose(p.sum(1), 1)
    assert (p.argmax(1) == y).mean() > 0.7  # a real classifier of the true labels
    target, q = _other(p, y)
    out = N.confusion_noise(x, y, 0.3, num_classes=C, seed=0, model=model)
    f = out != y
    assert np.array_equal(out[f], target[f])
    assert q[f].mean() > 2 * q[~f].mean()


def test_confusion_temperature_orders_the_choice(mnist600):
    x, y = mnist600
    _, q = _other(N.out_of_fold_proba(x, y, num_classes=C, seed=0), y)
    means = [q[N.confusion_noise(x, y, 0.3, num_classes=C, seed=0, temperature=t) != y].mean()
             for t in (0.05, 1.0, 4.0, float("inf"))]
    assert means[0] > means[1] > means[2] > means[3]
    # T -> 0: the k largest other-class probabilities
    top = np.sort(np.argsort(-q, kind="stable")[: round(0.3 * len(y))])
    low_t = np.flatnonzero(N.confusion_noise(x, y, 0.3, num_classes=C, seed=0, temperature=1e-6) != y)
    assert len(np.intersect1d(top, low_t)) >= 0.97 * len(top)


def test_out_of_fold_is_not_its_own_teacher():
    # pure-noise features: a model fitted on the sample itself would memorise (in-sample accuracy high),
    # out-of-fold probabilities are at chance
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(150, 100)), rng.integers(0, 3, 150)
    p = N.out_of_fold_proba(x, y, num_classes=3, seed=0)
    assert (p.argmax(1) == y).mean() < 0.5
    from sklearn.linear_model import LogisticRegression

    assert (LogisticRegression(max_iter=300).fit(x, y).predict(x) == y).mean() > 0.9


def test_boundary_flips_small_margins_to_nearest_class(mnist600):
    x, y = mnist600
    margin, nearest = N.class_margins(x, y, num_classes=C)
    assert np.all(nearest != y)
    flipped_means = []
    for s in (0.0, 1.0, 2.0, 8.0, float("inf")):
        out = N.boundary_noise(x, y, 0.3, num_classes=C, seed=0, sharpness=s)
        f = out != y
        assert np.array_equal(out[f], nearest[f])
        flipped_means.append(margin[f].mean())
        if s > 0:
            assert margin[f].mean() < margin[~f].mean()
    assert all(a > b for a, b in zip(flipped_means, flipped_means[1:]))
    # sharpness = inf: exactly the k smallest margins
    f = N.boundary_noise(x, y, 0.3, num_classes=C, sharpness=float("inf")) != y
    assert margin[f].max() <= margin[~f].min()


def test_cluster_flips_come_in_groups(mnist600):
    x, y = mnist600
    cluster, target, margin = N.class_clusters(x, y, num_classes=C, clusters_per_class=3, seed=0)
    assert cluster.min() == 0 and len(target) == cluster.max() + 1 == len(margin)
    for g in range(len(target)):  # a cluster holds one class; its target is another
        assert len(np.unique(y[cluster == g])) == 1 and target[g] != y[cluster == g][0]
    out = N.cluster_noise(x, y, 0.3, num_classes=C, clusters_per_class=3, seed=0)
    f = out != y
    assert np.array_equal(out[f], target[cluster[f]])
    groups = Counter(cluster[f])
    assert np.mean([groups[g] >= 10 for g in cluster[f]]) > 0.8  # most flips share their cluster with >= 9 others
    partial = [g for g, n in groups.items() if n < (cluster == g).sum()]
    assert len(partial) <= 1  # whole clusters, the last one partially
    # whole clusters go in increasing margin
    whole = [g for g in groups if g not in partial]
    untouched = [g for g in range(len(target)) if g not in groups]
    assert max(margin[whole]) <= min(margin[untouched])


# ------------------------------------------------------------------------------------------------
# dispatcher and errors
# ------------------------------------------------------------------------------------------------
def test_make_noise_dispatches_to_each_generator(digits):
    x, y = digits
    assert np.array_equal(N.make_noise("sym", x, y, 0.2, num_classes=C, seed=2),
                          N.symmetric_noise(y, 0.2, num_classes=C, seed=2))
    assert np.array_equal(N.make_noise("boundary", x, y, 0.2, num_classes=C, seed=2, sharpness=5.0),
                          N.boundary_noise(x, y, 0.2, num_classes=C, seed=2, sharpness=5.0))
    assert np.array_equal(N.make_noise("cluster", x, y, 0.2, num_classes=C, clusters_per_class=4),
                          N.cluster_noise(x, y, 0.2, num_classes=C, clusters_per_class=4))
    assert set(N.INSTANCE_KINDS) == {"confusion", "boundary", "cluster"}
    with pytest.raises(ValueError, match="unknown noise kind 'gaussian'.*sym.*confusion.*cluster"):
        N.make_noise("gaussian", x, y, 0.2, num_classes=C)
    with pytest.raises(TypeError, match="no option 'sharpness'.*temperature"):
        N.make_noise("confusion", x, y, 0.2, num_classes=C, sharpness=1.0)
    with pytest.raises(ValueError, match="needs features"):
        N.make_noise("boundary", None, y, 0.2, num_classes=C)
    with pytest.raises(ValueError, match="rows"):
        N.make_noise("sym", x[:10], y, 0.2, num_classes=C)


_X = np.random.default_rng(0).normal(size=(40, 5))
_Y = np.arange(40) % 4
_NAN = _X.copy()
_NAN[3, 2] = np.nan


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("args, exc, match", [
    (dict(rate=1.0), ValueError, r"rate must lie in \[0, 1\)"),
    (dict(rate=-0.1), ValueError, "rate"),
    (dict(rate=float("nan")), ValueError, "rate"),
    (dict(rate="0.3"), TypeError, "rate"),
    (dict(rate=True), TypeError, "rate"),
    (dict(labels=np.where(_Y == 3, 4, _Y)), ValueError, r"labels must lie in \[0, num_classes=4\)"),
    (dict(labels=_Y - 1), ValueError, "labels must lie"),
    (dict(labels=_Y.astype(float)), TypeError, "labels must be integers"),
    (dict(labels=_Y.reshape(4, 10)), ValueError, "labels must be 1-D"),
    (dict(num_classes=1), ValueError, "num_classes must be >= 2"),
    (dict(num_classes=4.0), TypeError, "num_classes must be an integer"),
    (dict(seed=-1), ValueError, "seed"),
    (dict(seed=0.5), TypeError, "seed"),
])
def test_bad_common_arguments(kind, args, exc, match):
    kw = dict(features=_X, labels=_Y, rate=0.3, num_classes=4, seed=0, **{})
    kw.update(args)
    with pytest.raises(exc, match=match):
        N.make_noise(kind, kw.pop("features"), kw.pop("labels"), kw.pop("rate"), **kw)


@pytest.mark.parametrize("kind", N.INSTANCE_KINDS)
@pytest.mark.parametrize("features, exc, match", [
    (_NAN, ValueError, r"features must be finite; 1 row"),
    (np.where(_X > 2, np.inf, _X), ValueError, "features must be finite"),
    (_X[:, 0], ValueError, "features must have one row per sample"),
    (_X[:30], ValueError, "features has 30 rows but labels has 40"),
    (_X.astype(complex), TypeError, "features must be a real numeric array"),
    (np.zeros((40, 0)), ValueError, "at least one column"),
])
def test_bad_features(kind, features, exc, match):
    with pytest.raises(exc, match=match):
        N.make_noise(kind, features, _Y, 0.3, num_classes=4)


@pytest.mark.parametrize("call, exc, match", [
    (lambda: N.confusion_noise(_X, _Y, 0.3, num_classes=4, temperature=0.0), ValueError, "temperature must be > 0"),
    (lambda: N.confusion_noise(_X, _Y, 0.3, num_classes=4, model="svm"), ValueError, "model must be one of"),
    (lambda: N.confusion_noise(_X, _Y, 0.3, num_classes=4, n_folds=1), ValueError, "n_folds"),
    (lambda: N.boundary_noise(_X, _Y, 0.3, num_classes=4, sharpness=-1.0), ValueError, "sharpness"),
    (lambda: N.boundary_noise(_X, _Y, 0.3, num_classes=4, pca_dim=0), ValueError, "pca_dim"),
    (lambda: N.boundary_noise(_X, _Y, 0.3, num_classes=4, shrinkage=1.5), ValueError, "shrinkage"),
    (lambda: N.cluster_noise(_X, _Y, 0.3, num_classes=4, clusters_per_class=0), ValueError, "clusters_per_class"),
    (lambda: N.cluster_noise(_X, np.zeros(40, np.int64), 0.3, num_classes=4), ValueError, "two distinct classes"),
    (lambda: N.pair_noise(_Y, 0.3, num_classes=4, class_map=[1, 2]), TypeError, "class_map must be a mapping"),
])
def test_bad_kind_options(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# ------------------------------------------------------------------------------------------------
# through fastreweight.data
# ------------------------------------------------------------------------------------------------
def test_inject_noise_and_make_split_take_instance_kinds(digits):
    x, y = digits[0][:500], digits[1][:500]
    for kind in N.INSTANCE_KINDS:
        assert np.array_equal(D.inject_noise(y, kind, 0.25, C, seed=5, features=x),
                              N.make_noise(kind, x, y, 0.25, num_classes=C, seed=5))
    with pytest.raises(ValueError, match="needs features"):
        D.inject_noise(y, "cluster", 0.25, C)
    with pytest.raises(ValueError, match="takes none"):
        D.inject_noise(y, "sym", 0.25, C, options={"sharpness": 1.0})
    with pytest.raises(ValueError, match="unknown noise kind.*boundary"):
        D.inject_noise(y, "weird", 0.25, C)
    d = D.make_split(torch.from_numpy(x), torch.from_numpy(y), num_classes=C, noise="cluster", rate=0.3,
                     clean_size=50, seed=2, dataset="digits", noise_options={"clusters_per_class": 5})
    # the noise is computed from the training rows and their true labels (seed + 1, as for every kind)
    ref = N.cluster_noise(d.x_train, d.y_train_true, 0.3, num_classes=C, seed=3, clusters_per_class=5)
    assert np.array_equal(d.y_train.numpy(), ref)
    assert (d.y_train != d.y_train_true).sum() == round(0.3 * len(d.y_train))
    assert torch.equal(d.y_train_true, torch.from_numpy(y)[d.idx_train])
    assert d.info["noise"] == "cluster" and d.info["noise_options"] == {"clusters_per_class": 5}
