"""Inputs that are valid but unusual (tensors that require grad, bfloat16, big-endian arrays, numpy
scalars, flat features) and the arguments around them: each one either works, with the results of the
plain input, or fails up front with a ValueError / TypeError naming the argument."""
import inspect
import os
import re
import warnings

import numpy as np
import pytest
import torch

from fastreweight.label_issues import LabelIssues, find_label_issues, score_dataset, write_ranked_csv
from fastreweight.label_issues.report import render_report

N, D, C = 100, 8, 3
FBR = ("fbr", "fbr-whiten")
DOCS = os.path.join(os.path.dirname(__file__), "..", "docs", "label-issues.md")


def _data(seed=0):
    g = np.random.default_rng(seed)
    y = g.integers(0, C, N)
    x = g.normal(0, 3, (C, D))[y] + g.normal(0, 1, (N, D))
    noisy = y.copy()
    flip = g.random(N) < 0.2
    noisy[flip] = (y[flip] + 1) % C
    clean = np.concatenate([np.flatnonzero(y == c)[:5] for c in range(C)])
    noisy[clean] = y[clean]
    return x, noisy, clean


def _same(a, b):
    np.testing.assert_array_equal(a.score, b.score)
    np.testing.assert_array_equal(a.is_label_issue, b.is_label_issue)
    np.testing.assert_array_equal(a.predicted_label, b.predicted_label)


def _quiet(**kw):  # knn's probe may warn on 100 rows; not what these tests look at
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return find_label_issues(**kw)


# 1 ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scorer", ("knn",) + FBR)
def test_tensors_that_require_grad_or_are_bfloat16_are_read_as_data(scorer):
    x, y, clean = _data()
    plain = _quiet(features=torch.tensor(x), labels=y, clean_idx=clean, scorer=scorer)
    _same(_quiet(features=torch.tensor(x, requires_grad=True), labels=y, clean_idx=clean, scorer=scorer), plain)
    bf = torch.tensor(x).bfloat16()
    as_f32 = _quiet(features=bf.float().numpy(), labels=y, clean_idx=clean, scorer=scorer)
    _same(_quiet(features=bf, labels=y, clean_idx=clean, scorer=scorer), as_f32)
    # a separate clean subset, as tensors of both kinds
    sep = dict(clean_features=bf[clean], clean_labels=y[clean])
    _same(_quiet(features=bf, labels=y, scorer=scorer, **sep),
          _quiet(features=bf.float().numpy(), labels=y, scorer=scorer, clean_features=bf[clean].float().numpy(),
                 clean_labels=y[clean]))


def test_score_dataset_detaches_features_that_require_grad():
    x, y, clean = _data()
    want = score_dataset(x, y, x[clean], y[clean], clean_rows=clean)
    got = score_dataset(torch.tensor(x, requires_grad=True), y, torch.tensor(x[clean], requires_grad=True), y[clean],
                        clean_rows=clean)
    np.testing.assert_array_equal(got.scores, want.scores)
    np.testing.assert_array_equal(got.clean_scores, want.clean_scores)
    bf = torch.tensor(x).bfloat16()
    np.testing.assert_array_equal(score_dataset(bf, y, bf[clean], y[clean], clean_rows=clean).scores,
                                  score_dataset(bf.float().numpy(), y, bf[clean].float().numpy(), y[clean]).scores)


def test_report_reads_images_that_require_grad_or_are_bfloat16():
    x, y, clean = _data()
    issues = _quiet(features=x, labels=y, clean_idx=clean)
    img = torch.rand(N, 1, 4, 4)
    want = render_report(issues, images=img)
    assert render_report(issues, images=img.clone().requires_grad_(True)) == want
    bf = img.bfloat16()
    assert render_report(issues, images=bf) == render_report(issues, images=bf.float())


# 2 ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scorer", FBR)
def test_big_endian_features_score_as_native_ones(scorer):
    x, y, clean = _data()
    _same(find_label_issues(x.astype(">f4"), y, clean_idx=clean, scorer=scorer),
          find_label_issues(x.astype("<f4"), y, clean_idx=clean, scorer=scorer))


def test_score_dataset_takes_big_endian_clean_features():
    x, y, clean = _data()
    np.testing.assert_array_equal(score_dataset(x, y, x[clean].astype(">f8"), y[clean]).scores,
                                  score_dataset(x, y, x[clean], y[clean]).scores)


# 3 ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scorer", FBR)
def test_a_bad_trusted_row_is_named_as_a_row_of_features(scorer):
    x, y, clean = _data()
    x[clean[3], 2] = np.nan
    with pytest.raises(ValueError, match=rf"^features contains NaN or Inf at row {clean[3]} \(a clean_idx row\)"):
        find_label_issues(x, y, clean_idx=clean, scorer=scorer)


# 4 ---------------------------------------------------------------------------------------------
def test_a_missing_class_error_offers_what_each_entry_accepts():
    x, y, clean = _data()
    keep = clean[y[clean] != 2]
    for kw, where in ((dict(clean_idx=keep), "clean_idx"),
                      (dict(clean_features=x[keep], clean_labels=y[keep]), "clean_features and clean_labels")):
        with pytest.raises(ValueError, match=rf"class\(es\) \[2\].*add trusted rows of those classes to {where}$") as e:
            find_label_issues(x, y, **kw)
        assert "on_missing_class" not in str(e.value)  # find_label_issues has no such option
    with pytest.raises(ValueError, match=r"class\(es\) \[2\].*or pass on_missing_class='skip'"):
        score_dataset(x, y, x[keep], y[keep])


def test_docs_state_score_datasets_default_for_a_missing_class():
    default = inspect.signature(score_dataset).parameters["on_missing_class"].default
    text = open(DOCS, encoding="utf-8").read()
    assert f'`score_dataset` defaults to `on_missing_class="{default}"`' in text
    assert not re.search(r'score_dataset` defaults to `on_missing_class="(?!%s)' % default, text)


# 5 ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["mask", [-1], [N], [1, 1]], ids=["bool mask", "negative", "out of range", "repeat"])
def test_from_score_result_checks_clean_idx(bad):
    x, y, clean = _data()
    res = score_dataset(x, y, x[clean], y[clean])
    if isinstance(bad, str):
        bad = np.isin(np.arange(N), clean)
    with pytest.raises(ValueError, match="clean_idx"):
        LabelIssues.from_score_result(res, clean_idx=bad)
    got = LabelIssues.from_score_result(res, clean_idx=list(clean))
    assert not got.is_label_issue[clean].any()


# 6 ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scorer", ["knn", "fbr"])
def test_chunk_rows_is_checked_up_front(scorer):
    x, y, clean = _data()
    for bad, exc in ((-1, ValueError), (0, ValueError), (2.5, TypeError), (True, TypeError), ("8", TypeError)):
        with pytest.raises(exc, match=r"^chunk_rows must be a positive int"):
            find_label_issues(x, y, clean_idx=clean, scorer=scorer, chunk_rows=bad)
    _same(_quiet(features=x, labels=y, clean_idx=clean, scorer=scorer, chunk_rows=np.int64(16)),
          _quiet(features=x, labels=y, clean_idx=clean, scorer=scorer, chunk_rows=16))


# 7 ---------------------------------------------------------------------------------------------
def test_numpy_scalars_are_numbers():
    x, y, clean = _data()
    _same(_quiet(features=x, labels=y, clean_idx=clean, num_classes=y.max() + 1, scorer="fbr"),
          _quiet(features=x, labels=y, clean_idx=clean, num_classes=C, scorer="fbr"))
    np.testing.assert_array_equal(score_dataset(x, y, x[clean], y[clean], num_classes=np.int64(C)).scores,
                                  score_dataset(x, y, x[clean], y[clean], num_classes=C).scores)
    _same(_quiet(features=x, labels=y, clean_idx=clean, flag="margin", margin=np.float32(0.25)),
          _quiet(features=x, labels=y, clean_idx=clean, flag="margin", margin=0.25))
    _same(_quiet(features=x, labels=y, clean_idx=clean, scorer="fbr", flag="score", threshold=np.float64(1.5)),
          _quiet(features=x, labels=y, clean_idx=clean, scorer="fbr", flag="score", threshold=1.5))


def test_threshold_must_be_a_number_and_not_nan():
    x, y, clean = _data()
    with pytest.raises(ValueError, match=r"^threshold must be a real number .* got nan"):
        find_label_issues(x, y, clean_idx=clean, scorer="fbr", flag="score", threshold=float("nan"))
    for bad in ("0", None, True):
        with pytest.raises(TypeError, match=r"^threshold must be a real number"):
            find_label_issues(x, y, clean_idx=clean, scorer="fbr", flag="score", threshold=bad)
    res = score_dataset(x, y, x[clean], y[clean])
    with pytest.raises(TypeError, match=r"^threshold"):
        LabelIssues.from_score_result(res, threshold=None)


# 8 ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scorer", ("knn",) + FBR)
def test_finite_features_beyond_float32_are_said_to_overflow(scorer):
    x, y, clean = _data()
    with pytest.raises(ValueError, match=r"^features at row \d+ .*beyond float32's range") as e:
        find_label_issues(x * 1e39, y, clean_idx=clean, scorer=scorer)
    assert "NaN" not in str(e.value)
    x[7, 0] = np.inf  # a real Inf is still called so
    with pytest.raises(ValueError, match=r"^features contains NaN or Inf"):
        find_label_issues(x, y, clean_idx=clean, scorer=scorer)


def test_score_dataset_says_overflow_for_streamed_and_clean_rows():
    x, y, clean = _data()
    big = x.copy()
    big[50] *= 1e39
    with pytest.raises(ValueError, match=r"^features at row 50 .*beyond float32's range"):
        score_dataset(big, y, x[clean], y[clean], chunk_rows=16)
    with pytest.raises(ValueError, match=r"^clean_features at row 1 .*beyond float32's range"):
        score_dataset(x, y, x[clean] * np.r_[1, 1e39, np.ones(len(clean) - 2)][:, None], y[clean])


# 9 ---------------------------------------------------------------------------------------------
def test_docs_give_each_csv_writer_its_own_columns(tmp_path):
    x, y, clean = _data()
    res = score_dataset(x, y, x[clean], y[clean])
    write_ranked_csv(res, str(tmp_path / "a.csv"))
    LabelIssues.from_score_result(res, clean_idx=clean).write_csv(str(tmp_path / "b.csv"))
    ranked = open(tmp_path / "a.csv").readline().strip()
    issues = open(tmp_path / "b.csv").readline().strip()
    text = open(DOCS, encoding="utf-8").read()
    assert "`write_ranked_csv` writes `score_dataset`'s own columns" in text
    assert re.search(rf"write_ranked_csv[^\n]*\n# columns: {ranked}\n", text)
    assert f"columns\n  `{issues}`" in text  # the command line's CSV (LabelIssues.write_csv)


# 10 --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scorer", FBR)
@pytest.mark.parametrize("fill", [0.0, 1.0])
def test_fbr_warns_when_the_features_carry_nothing(scorer, fill):
    _, y, clean = _data()
    with pytest.warns(UserWarning, match=rf"scorer='{scorer}': every row scored .* rank nothing"):
        find_label_issues(np.full((N, D), fill), y, clean_idx=clean, scorer=scorer)
    x, _, _ = _data()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # informative features: no warning
        find_label_issues(x, y, clean_idx=clean, scorer=scorer)


# 11 --------------------------------------------------------------------------------------------
def _issues():
    x, y, clean = _data()
    return _quiet(features=x, labels=y, clean_idx=clean)


def test_report_class_names_as_a_mapping():
    issues = _issues()
    page = render_report(issues, class_names={0: "cat", 1: "dog", 2: "emu"})
    assert page == render_report(issues, class_names=["cat", "dog", "emu"])
    partial = render_report(issues, class_names={1: "dog"})  # the others keep their numbers
    assert ">dog<" in partial and ">cat<" not in partial
    with pytest.raises(TypeError, match="class_names"):
        render_report(issues, class_names={"0": "cat"})
    with pytest.raises(ValueError, match="class_names"):
        render_report(issues, class_names={-1: "cat"})
    with pytest.raises(TypeError, match="class_names"):
        render_report(issues, class_names="abc")


def test_report_refuses_true_labels_that_are_not_whole_numbers():
    issues = _issues()
    t = issues.given_label.astype(np.float64)
    assert render_report(issues, true_labels=t) == render_report(issues, true_labels=issues.given_label)
    t[4] += 0.5
    with pytest.raises(ValueError, match=r"true_labels must be integer class labels, got .* at row 4"):
        render_report(issues, true_labels=t)
    with pytest.raises(TypeError, match="true_labels"):
        render_report(issues, true_labels=issues.given_label.astype(str))


@pytest.mark.parametrize("bad", [None, 5.0, "5", True])
def test_report_max_samples_must_be_an_int(bad):
    with pytest.raises(TypeError, match=r"^max_samples must be an int"):
        render_report(_issues(), max_samples=bad)


def test_report_images_as_a_list():
    issues = _issues()
    img = np.random.default_rng(0).random((N, 4, 4))
    assert render_report(issues, images=img.tolist()) == render_report(issues, images=img)
    with pytest.raises(TypeError, match="images"):
        render_report(issues, images=[np.zeros((4, 4))] * (N - 1) + [np.zeros((3, 3))])  # ragged


# 12 --------------------------------------------------------------------------------------------
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without CUDA")
def test_cuda_without_cuda_is_a_value_error_naming_device():
    x, y, clean = _data()
    for scorer in ("knn", "fbr"):
        with pytest.raises(ValueError, match=r"^device='cuda' but CUDA is not available"):
            find_label_issues(x, y, clean_idx=clean, scorer=scorer, device="cuda")
    with pytest.raises(ValueError, match=r"^device='cuda:0' but CUDA is not available"):
        score_dataset(x, y, x[clean], y[clean], device="cuda:0")


def test_an_unknown_device_is_a_value_error_naming_device():
    x, y, clean = _data()
    with pytest.raises(ValueError, match=r"^device must be a torch device"):
        find_label_issues(x, y, clean_idx=clean, device="gpu")
    with pytest.raises(ValueError, match=r"^device must be a torch device"):
        score_dataset(x, y, x[clean], y[clean], device="gpu")
