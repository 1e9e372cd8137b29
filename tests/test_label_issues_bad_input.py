"""Bad input to label-issue finding: every case a ValueError / TypeError naming the argument, from
``find_label_issues`` (scorers knn and fbr-whiten), ``score_dataset`` and ``fastreweight score``; the
command line creates no output for any of them and never overwrites an existing file."""
import re

import numpy as np
import pytest
import torch

from fastreweight.cli import main
from fastreweight.label_issues import find_label_issues, score_dataset
from fastreweight.label_issues.validate import clean_subset

N, D, C = 53, 7, 3
BAD = (ValueError, TypeError)


def _data(seed):
    g = np.random.default_rng(seed)
    y = g.integers(0, C, N)
    x = (g.standard_normal((C, D))[y] * 3 + g.standard_normal((N, D))).astype(np.float32)
    clean_idx = np.concatenate([np.flatnonzero(y == c)[:4] for c in range(C)])
    return x, y, np.sort(clean_idx)


def _outside_clean(clean_idx):
    return int(np.setdiff1d(np.arange(N), clean_idx)[0])


def _cases(seed):
    """(name, features, labels, clean_idx, clean_features, clean_labels, num_classes, match)."""
    x, y, ci = _data(seed)
    r = _outside_clean(ci)
    cx, cy = x[ci], y[ci]
    out = []

    def add(name, match, xs=x, ys=y, idx=ci, cxs=cx, cys=cy, k=None):
        out.append((name, xs, ys, idx, cxs, cys, k, match))

    for bad in (np.nan, np.inf, -np.inf):
        xb = x.copy()
        xb[r, 2] = bad
        add(f"features {bad}", rf"features.*row {r}", xs=xb)
        cxb = cx.copy()
        cxb[1, 0] = bad
        add(f"clean_features {bad}", r"clean_features.*row 1", cxs=cxb, idx=None)
    for v, k in ((-1, None), (-1, C), (C, C), (C + 2, C)):
        yb = y.copy()
        yb[r] = v
        add(f"labels {v} of {k}", r"labels", ys=yb, k=k)
    cyb = cy.copy()
    cyb[0] = C
    add("clean_labels out of range", r"clean_labels", cys=cyb, k=C, idx=None)
    add("float labels", r"labels", ys=y.astype(np.float64))
    add("float clean_labels", r"clean_labels", cys=cy.astype(np.float32), idx=None)
    add("duplicated clean_idx", r"clean_idx", idx=np.concatenate([ci, ci[:1]]))
    add("clean_idx >= N", r"clean_idx", idx=np.concatenate([ci, [N]]))
    add("negative clean_idx", r"clean_idx", idx=np.concatenate([ci, [-1]]))
    add("float clean_idx", r"clean_idx", idx=ci.astype(np.float64))
    # class 2 is in labels but has no clean row
    keep = ci[y[ci] != 2]
    add("class absent from clean_idx", r"clean_idx", idx=keep)
    add("class absent from clean_labels", r"clean_labels", idx=None, cxs=x[keep], cys=y[keep])
    add("labels rows", r"labels", ys=y[:-1])
    add("clean_labels rows", r"clean_labels", idx=None, cys=cy[:-2])
    add("clean_features columns", r"clean_features", idx=None, cxs=cx[:, :-1])
    return out


CASES = _cases(0)
IDS = [c[0] for c in CASES]


@pytest.mark.parametrize("scorer", ["knn", "fbr-whiten"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_find_label_issues_names_the_argument(case, scorer):
    name, x, y, ci, cx, cy, k, match = case
    clean = dict(clean_idx=ci) if ci is not None else dict(clean_features=cx, clean_labels=cy)
    with pytest.raises(BAD, match=match):
        find_label_issues(x, y, **clean, num_classes=k, scorer=scorer, chunk_rows=16)


@pytest.mark.parametrize("as_tensor", [False, True])
@pytest.mark.parametrize("case", [c for c in CASES if c[3] is None or "clean_idx" not in c[0]],
                         ids=[c[0] for c in CASES if c[3] is None or "clean_idx" not in c[0]])
def test_score_dataset_names_the_argument(case, as_tensor):
    name, x, y, ci, cx, cy, k, match = case
    if ci is not None:  # score_dataset takes the clean rows themselves
        cx, cy = x[ci], y[ci]
    if as_tensor:
        x, y, cx, cy = (torch.from_numpy(np.ascontiguousarray(a)) for a in (x, y, cx, cy))
    for whiten in (None, "auto"):
        with pytest.raises(BAD, match=match):
            score_dataset(x, y, cx, cy, num_classes=k, chunk_rows=16, whiten=whiten)


@pytest.mark.parametrize("case", [c for c in CASES if "clean_idx" in c[0] and "absent" not in c[0]],
                         ids=[c[0] for c in CASES if "clean_idx" in c[0] and "absent" not in c[0]])
def test_clean_subset_names_clean_idx(case):
    _, x, y, ci, *_ = case
    with pytest.raises(BAD, match="clean_idx"):
        clean_subset(x, y, ci)


def _save(tmp_path, name, a):
    p = tmp_path / f"{name}.npy"
    np.save(p, np.asarray(a))
    return str(p)


CLI_MATCH = {  # the command line's own names for the clean-index checks
    "duplicated clean_idx": "clean-idx", "clean_idx >= N": "clean-idx", "negative clean_idx": "clean-idx",
    "float clean_idx": "clean-idx", "class absent from clean_idx": "clean",
}


@pytest.mark.parametrize("extra", [[], ["--scorer", "knn"], ["--shift", "second"]], ids=["fbr", "knn", "score_dataset"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_cli_fails_clearly_and_writes_nothing(case, extra, tmp_path, capsys):
    name, x, y, ci, cx, cy, k, match = case
    args = ["score", "--features", _save(tmp_path, "x", x), "--labels", _save(tmp_path, "y", y), "--no-progress"]
    if ci is not None:
        args += ["--clean-idx", _save(tmp_path, "ci", ci)]
    else:
        args += ["--clean-features", _save(tmp_path, "cx", cx), "--clean-labels", _save(tmp_path, "cy", cy)]
    if k is not None:
        args += ["--num-classes", str(k)]
    before = set(tmp_path.iterdir())
    out, report = tmp_path / "out" / "issues.csv", tmp_path / "out" / "report.html"
    out.parent.mkdir()
    assert main(args + extra + ["--out", str(out), "--report", str(report)]) == 2
    err = capsys.readouterr().err
    assert "fastreweight: error:" in err
    assert re.search(CLI_MATCH.get(name, match), err), err
    assert not out.exists() and not report.exists()
    assert set(tmp_path.iterdir()) == before | {out.parent}
    assert list(out.parent.iterdir()) == []


def test_cli_never_overwrites(tmp_path, capsys):
    x, y, ci = _data(1)
    base = ["score", "--features", _save(tmp_path, "x", x), "--labels", _save(tmp_path, "y", y),
            "--clean-idx", _save(tmp_path, "ci", ci), "--no-progress"]
    out, report = tmp_path / "issues.csv", tmp_path / "report.html"
    out.write_text("keep me\n")
    report.write_text("<p>keep me too</p>\n")
    for extra in ([], ["--scorer", "knn"], ["--shift", "second"]):
        # an existing --out, or an existing --report, refuses the run: neither file changes, nothing is created
        assert main(base + extra + ["--out", str(out)]) == 2
        assert "refusing to overwrite" in capsys.readouterr().err
        fresh = tmp_path / "fresh.csv"
        assert main(base + extra + ["--out", str(fresh), "--report", str(report)]) == 2
        assert "refusing to overwrite" in capsys.readouterr().err and not fresh.exists()
        # bad input with existing outputs: still refused, still untouched
        yb = y.copy()
        yb[0] = -3
        bad = base[:4] + [_save(tmp_path, "yb", yb)] + base[5:]
        assert main(bad + extra + ["--out", str(out), "--report", str(report)]) == 2
        capsys.readouterr()
    assert out.read_text() == "keep me\n" and report.read_text() == "<p>keep me too</p>\n"
    # a report that cannot be rendered (images of the wrong row count, too few class names) fails before the CSV
    imgs = _save(tmp_path, "img", np.zeros((N - 1, 4, 4), np.float32))
    for extra in (["--images", imgs], ["--class-names", "a,b"]):
        o, r = tmp_path / "o.csv", tmp_path / "r.html"
        assert main(base + extra + ["--out", str(o), "--report", str(r)]) == 2
        assert re.search("images|class.names", capsys.readouterr().err)
        assert not o.exists() and not r.exists()

