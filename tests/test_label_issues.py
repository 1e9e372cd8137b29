"""Streamed dataset scoring and the ranked CSV."""
import csv
import pickle

import numpy as np
import pytest
import torch

import fastreweight as fr
from fastreweight.label_issues import load_array, score_dataset, write_ranked_csv


def _data(N=97, M=17, d=6, C=4, seed=0):
    g = np.random.default_rng(seed)
    return (g.standard_normal((N, d)).astype(np.float32), g.integers(0, C, N),
            g.standard_normal((M, d)).astype(np.float32), np.arange(M) % C)


@pytest.mark.parametrize("chunk_rows", [1, 10, 96, 97, 1000])
def test_chunked_scores_equal_one_call(chunk_rows):
    x, y, cx, cy = _data()
    res = score_dataset(x, y, cx, cy, num_classes=4, chunk_rows=chunk_rows, shift="second", alpha=0.2)
    want = fr.fbr_scores(torch.from_numpy(x).double(), torch.from_numpy(y), torch.from_numpy(cx).double(),
                         torch.from_numpy(cy), num_classes=4, shift="second", alpha=0.2)
    np.testing.assert_allclose(res.scores, want.numpy(), rtol=1e-4, atol=1e-4)
    S = fr.class_similarity(torch.from_numpy(x).double(), torch.from_numpy(y), torch.from_numpy(cx).double(), torch.from_numpy(cy))
    np.testing.assert_array_equal(res.suggested, S.argmax(1).numpy())


def test_memory_mapped_npy_and_pt(tmp_path):
    x, y, cx, cy = _data()
    np.save(tmp_path / "x.npy", x)
    torch.save(torch.from_numpy(y), tmp_path / "y.pt")
    xm = load_array(tmp_path / "x.npy", "features")
    assert isinstance(xm, np.memmap)
    ym = load_array(tmp_path / "y.pt", "labels")
    res = score_dataset(xm, ym, cx, cy, chunk_rows=13)
    ref = score_dataset(x, y, cx, cy, chunk_rows=97)
    np.testing.assert_allclose(res.scores, ref.scores, rtol=1e-5, atol=1e-5)


def test_untrusted_files_are_refused(tmp_path):
    obj = np.array([{"a": 1}], dtype=object)
    np.save(tmp_path / "obj.npy", obj, allow_pickle=True)
    with pytest.raises(ValueError, match=r"features: .* is not a plain numeric .npy array"):
        load_array(tmp_path / "obj.npy", "features")

    class Evil:
        def __reduce__(self):
            return (print, ("executed",))

    with open(tmp_path / "evil.pt", "wb") as fh:
        pickle.dump(Evil(), fh)
    with pytest.raises(ValueError, match=r"labels: .* could not be loaded as a tensor with weights_only=True"):
        load_array(tmp_path / "evil.pt", "labels")
    torch.save({"x": torch.ones(2)}, tmp_path / "dict.pt")
    with pytest.raises(TypeError, match=r"must hold a single tensor, got dict"):
        load_array(tmp_path / "dict.pt", "features")
    (tmp_path / "x.txt").write_text("1 2 3")
    with pytest.raises(ValueError, match=r"must be a .npy or .pt file"):
        load_array(tmp_path / "x.txt", "features")


def test_ranked_csv_and_never_overwrite(tmp_path):
    x, y, cx, cy = _data()
    res = score_dataset(x, y, cx, cy)
    out = tmp_path / "issues.csv"
    flagged = write_ranked_csv(res, str(out))
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == 97
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores)
    assert flagged == sum(r["suspected"] == "1" for r in rows) == int((res.scores <= 0).sum())
    before = out.read_bytes()
    with pytest.raises(FileExistsError):
        write_ranked_csv(res, str(out))
    assert out.read_bytes() == before


@pytest.mark.parametrize("kw,exc,msg", [
    (dict(features=np.ones(5)), ValueError, r"features must be 2-D of shape \[N, d\]"),
    (dict(labels=np.zeros(3, dtype=np.int64)), ValueError, r"labels must have one entry per row of features \(97\)"),
    (dict(labels=np.zeros(97)), TypeError, r"labels must be integers"),
    (dict(clean_features=np.ones((17, 2), dtype=np.float32)), ValueError, r"clean_features must have 6 columns"),
    (dict(chunk_rows=0), ValueError, r"chunk_rows must be a positive int"),
])
def test_score_dataset_rejects_bad_input(kw, exc, msg):
    x, y, cx, cy = _data()
    args = dict(features=x, labels=y, clean_features=cx, clean_labels=cy)
    args.update(kw)
    with pytest.raises(exc, match=msg):
        score_dataset(**args)


def _offset_data(N, M, d, C, seed):
    """Like ``_data``, with features offset from the origin (centering matters) and every class clean."""
    g = np.random.default_rng(seed)
    return ((g.standard_normal((N, d)) + 0.5).astype(np.float32), g.integers(0, C, N),
            (g.standard_normal((M, d)) + 0.5).astype(np.float32), np.arange(M) % C)


def _gpu_backends():
    if not torch.cuda.is_available():
        return [pytest.param("triton", marks=pytest.mark.skip(reason="no CUDA device"))]
    from fastreweight import backends

    return [pytest.param(b, marks=pytest.mark.skipif(backends.unavailable_reason(b, torch.device("cuda")) is not None,
                                                     reason=f"{b} unavailable on CUDA"))
            for b in ("triton", "cuda")]


@pytest.mark.parametrize("backend", _gpu_backends())
def test_score_dataset_on_the_gpu_matches_the_cpu_reference(backend):
    """Streamed scoring on a CUDA device (odd chunk size, features handed over as a host array) gives
    the CPU reference's scores and suggested labels."""
    C = 7
    feats, labels, clean, clean_labels = _offset_data(N=1025, M=97, d=33, C=C, seed=11)
    ref = score_dataset(feats, labels, clean, clean_labels, num_classes=C, chunk_rows=97, backend="reference")
    got = score_dataset(feats, labels, clean, clean_labels, num_classes=C, chunk_rows=97, device="cuda",
                        backend=backend)
    scale = float(np.abs(ref.scores).max())
    np.testing.assert_allclose(got.scores, ref.scores, rtol=1e-4, atol=1e-5 * scale)
    assert (got.suggested == ref.suggested).mean() > 0.99  # ties between near-equal classes may flip
    # whitening: covariance pass, eigendecomposition and leave-one-out choice on the device
    ref_w = score_dataset(feats, labels, clean, clean_labels, num_classes=C, chunk_rows=97, backend="reference",
                          whiten="auto")
    got_w = score_dataset(feats, labels, clean, clean_labels, num_classes=C, chunk_rows=97, device="cuda",
                          backend=backend, whiten="auto")
    assert got_w.whitening["strength"] == ref_w.whitening["strength"]
    scale = float(np.abs(ref_w.scores).max())
    np.testing.assert_allclose(got_w.scores, ref_w.scores, rtol=1e-4, atol=1e-4 * scale)


def _cpu_backends():
    from fastreweight import backends

    out = []
    for b in ("cpp", "triton"):  # triton on the CPU: through the interpreter (conftest)
        reason = backends.unavailable_reason(b, torch.device("cpu"))
        out.append(pytest.param(b, marks=pytest.mark.skipif(reason is not None, reason=str(reason))))
    return out


@pytest.mark.parametrize("backend", _cpu_backends())
@pytest.mark.parametrize("kw", [dict(), dict(whiten="auto", refine=1)], ids=["plain", "whiten-refine"])
def test_score_dataset_backends_on_the_cpu_match_the_reference(backend, kw):
    """The streamed scorer through each fast backend the CPU has (the Triton kernels through the
    interpreter): the reference backend's scores and suggestions, odd sizes, a ragged last chunk."""
    C = 5
    feats, labels, clean, clean_labels = _offset_data(N=97, M=41, d=17, C=C, seed=17)
    ref = score_dataset(feats, labels, clean, clean_labels, num_classes=C, chunk_rows=13, backend="reference", **kw)
    got = score_dataset(feats, labels, clean, clean_labels, num_classes=C, chunk_rows=13, backend=backend, **kw)
    scale = float(np.abs(ref.scores).max())
    np.testing.assert_allclose(got.scores, ref.scores, rtol=1e-4, atol=1e-5 * scale)
    np.testing.assert_array_equal(got.suggested, ref.suggested)
    assert got.whitening == ref.whitening and got.refinement == ref.refinement
