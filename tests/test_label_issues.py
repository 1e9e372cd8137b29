"""Streamed dataset scoring and the ranked CSV."""
import csv
import pickle
import re

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


# ---------------------------------------------------------------------------------------------
# Option groups and bad input (label_issues/options.py, label_issues/validate.py)
# ---------------------------------------------------------------------------------------------
def test_option_groups_equal_the_keywords():
    from fastreweight.label_issues import Execution, Similarity

    x, y, cx, cy = _data()
    a = score_dataset(x, y, cx, cy, shift="second", alpha=0.2, chunk_rows=10, backend="reference")
    b = score_dataset(x, y, cx, cy, similarity=Similarity(shift="second", alpha=0.2),
                      execution=Execution(chunk_rows=10, backend="reference"))
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(a.suggested, b.suggested)
    with pytest.raises(TypeError, match=r"give shift either in similarity=Similarity\(...\) or as keywords"):
        score_dataset(x, y, cx, cy, similarity=Similarity(), shift="max")
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) chunk"):
        score_dataset(x, y, cx, cy, chunk=10)
    with pytest.raises(TypeError, match=r"execution must be a Execution"):
        score_dataset(x, y, cx, cy, execution=dict(chunk_rows=10))
    with pytest.raises(ValueError, match=r"shift must be one of"):
        Similarity(shift="largest")


@pytest.mark.parametrize("kw", [dict(), dict(whiten="auto"), dict(refine=1)], ids=["plain", "whiten", "refine"])
@pytest.mark.parametrize("row,value", [(0, np.nan), (41, np.inf), (96, -np.inf)])
def test_non_finite_feature_rows_are_named(tmp_path, kw, row, value):
    """Streamed: each chunk is checked as it is read; the error names the argument and the first bad row."""
    x, y, cx, cy = _data()
    x[row, 3] = value
    x[row + 1:, 0] = np.nan  # later bad rows too: the first is named
    np.save(tmp_path / "x.npy", x)
    xm = load_array(tmp_path / "x.npy", "features")
    for feats in (x, xm, torch.from_numpy(x)):
        with pytest.raises(ValueError, match=rf"^features contains NaN or Inf at row {row} \(the first such row\)"):
            score_dataset(feats, y, cx, cy, chunk_rows=10, **kw)


def test_non_finite_rows_found_late_on_an_accelerator_are_still_named():
    """FiniteRows reads its flags back every few chunks off the CPU; the row it names is the same."""
    from fastreweight.label_issues.validate import FiniteRows

    x = torch.randn(100, 4)
    x[57, 1] = float("nan")
    x[80, 0] = float("inf")
    check = FiniteRows(lambda s: int(torch.nonzero(~torch.isfinite(x[s:s + 10]).all(1))[0]), every=3)
    for s in range(0, 100, 10):
        if not check.add(s, x[s:s + 10]):
            break
    check.finish()
    assert check.bad_row == 57 and s == 50  # found when the third pending flag was read (chunks 30, 40, 50)


def test_non_finite_clean_features_are_named():
    x, y, cx, cy = _data()
    cx[5, 0] = np.nan
    with pytest.raises(ValueError, match=r"clean_features contains NaN or Inf at row 5"):
        score_dataset(x, y, cx, cy)


@pytest.mark.parametrize("at,value,num_classes,values", [(10, -1, None, "-1, 3"), (50, 9, 4, "0, 9")])
def test_labels_out_of_range(at, value, num_classes, values):
    x, y, cx, cy = _data()
    bad = y.copy()
    bad[at] = value
    with pytest.raises(ValueError, match=rf"^labels must hold class labels in \[0, 4\), got values in \[{values}\] "
                                         rf"\(the first out of range: {value} at row {at}\)"):
        score_dataset(x, bad, cx, cy, num_classes=num_classes)
    bad = cy.copy()
    bad[3] = value
    with pytest.raises(ValueError, match=rf"^clean_labels must hold class labels in \[0, 4\), .* {value} at row 3\)"):
        score_dataset(x, y, cx, bad, num_classes=4)


@pytest.mark.parametrize("bad,exc,msg", [
    (np.arange(97) * 1.0, TypeError, r"labels must be integers \(class indices\), got float64 \(cast them"),
    (np.ones(97, dtype=bool), TypeError, r"labels must be integers \(class indices\), got bool$"),
    (torch.zeros(97), TypeError, r"labels must be integers \(class indices\), got torch.float32"),
    (np.zeros((97, 1), dtype=np.int64), ValueError, r"labels must be 1-D of shape \[N\]"),
    (np.zeros(96, dtype=np.int64), ValueError, r"labels must have one entry per row of features \(97\), got 96"),
    ([0] * 97, TypeError, r"labels must be a torch.Tensor or numpy array, got list"),
])
def test_bad_labels(bad, exc, msg):
    from fastreweight.label_issues.validate import LabelDtypeError

    x, y, cx, cy = _data()
    with pytest.raises(exc, match=msg) as info:
        score_dataset(x, bad, cx, cy)
    if exc is TypeError and "integers" in msg:
        assert isinstance(info.value, LabelDtypeError) and isinstance(info.value, ValueError)  # the CLI reports it


@pytest.mark.parametrize("args,msg", [
    (lambda x, y, cx, cy: (x[:0], y[:0], cx, cy), r"features is empty \(0 rows\)"),
    (lambda x, y, cx, cy: (x[:, :0], y, cx[:, :0], cy), r"features has 0 columns"),
    (lambda x, y, cx, cy: (x, y, cx[:0], cy[:0]), r"clean_features is empty \(0 rows\)"),
    (lambda x, y, cx, cy: (x, y, cx, cy[:5]), r"clean_labels must have one entry per row of clean_features \(17\), got 5"),
    (lambda x, y, cx, cy: (x, y, cx[cy == 1], cy[cy == 1]), r"clean_labels hold only class\(es\) \[1\]"),
    (lambda x, y, cx, cy: (x.astype(np.complex64), y, cx, cy), r"features must hold real numbers"),
])
def test_empty_and_degenerate_inputs(args, msg):
    with pytest.raises((ValueError, TypeError), match=msg):
        score_dataset(*args(*_data()))


def test_a_class_absent_from_the_clean_subset_raises_by_default():
    x, y, cx, cy = _data()
    keep = cy != 2
    n2 = int((y == 2).sum())
    with pytest.raises(ValueError, match=rf"labels contain class\(es\) \[2\] \({n2} rows\) that are absent from the "
                                         r"clean subset .* or pass on_missing_class='skip'"):
        score_dataset(x, y, cx[keep], cy[keep], num_classes=4)
    res = score_dataset(x, y, cx[keep], cy[keep], num_classes=4, on_missing_class="skip")
    assert (res.scores[y == 2] == 0).all() and (res.suggested != 2).all()
    # a class no row is labelled with needs no clean row
    res = score_dataset(x[y != 2], y[y != 2], cx[keep], cy[keep], num_classes=4)
    assert res.scores.shape == (97 - n2,)


@pytest.mark.parametrize("idx,msg", [
    (np.array([3, 5, 3]), r"clean_idx must not repeat a row: 3 appears more than once"),
    (np.array([3, 97]), r"clean_idx must hold row indices in \[0, 97\), got 97 at position 1"),
    (np.array([-1, 4]), r"clean_idx must hold row indices in \[0, 97\), got -1 at position 0"),
    (np.array([], dtype=np.int64), r"clean_idx is empty"),
    (np.array([1.0, 2.0]), r"clean_idx must be a 1-D array of integer row indices, got float64"),
    (np.array([[1, 2]]), r"clean_idx must be a 1-D array of integer row indices"),
])
def test_clean_idx_is_checked(idx, msg):
    from fastreweight.label_issues.validate import clean_subset

    x, y, _, _ = _data()
    with pytest.raises(ValueError, match=msg):
        clean_subset(x, y, idx)
    cx, cy = clean_subset(x, y, np.array([5, 1, 9]))
    np.testing.assert_array_equal(cx, x[[5, 1, 9]])
    np.testing.assert_array_equal(cy, y[[5, 1, 9]])


def test_cli_refuses_non_finite_features_before_creating_its_output(tmp_path, capsys):
    from fastreweight.cli import main

    x, y, cx, cy = _data()
    x[33, 1] = np.nan
    for name, a in dict(x=x, y=y, cx=cx, cy=cy).items():
        np.save(tmp_path / f"{name}.npy", a)
    out = tmp_path / "issues.csv"
    for extra in ([], ["--whiten", "auto"]):
        rc = main(["score", "--features", str(tmp_path / "x.npy"), "--labels", str(tmp_path / "y.npy"),
                   "--clean-features", str(tmp_path / "cx.npy"), "--clean-labels", str(tmp_path / "cy.npy"),
                   "--out", str(out), "--chunk-rows", "10", "--no-progress", *extra])
        assert rc == 2
        assert re.search(r"features (contains|has) NaN or Inf.*row 33", capsys.readouterr().err)
        assert not out.exists()


def test_the_default_epilogue_is_the_reference_bit_for_bit():
    """stream._epilogue (shift="max", alpha=0) against fbr_from_similarity and the masked argmax,
    with ties and absent classes."""
    from fastreweight.label_issues.stream import _epilogue
    from fastreweight.scores import fbr_from_similarity

    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        S = torch.randint(-3, 4, (500, 7), generator=g).to(dtype) / 4  # many ties
        y = torch.randint(0, 7, (500,), generator=g)
        present = torch.tensor([True, True, False, True, True, False, True])
        d, best = _epilogue(S, y, present, torch.full((), float("-inf"), dtype=dtype), "max", 0.0)
        want = fbr_from_similarity(S, y, present, shift="max", alpha=0.0)
        assert torch.equal(d, want)
        assert torch.equal(best, torch.where(present, S, torch.tensor(float("-inf"), dtype=dtype)).argmax(1))
        assert (d[~present[y]] == 0).all()
