"""The command line's up-front checks: a resumed run's data identity, checkpoints under --rename,
options the method ignores, an unusable --device, bad ``score`` inputs and output paths, numeric
options; each refused with ``fastreweight: error:`` (exit 2) before any training or scoring."""
import json
import os

import numpy as np
import pytest
import torch

from fastreweight import cli
from fastreweight.cli import train_command, train_settings
from fastreweight import label_issues

TRAIN = ["train", "--dataset", "digits", "--method", "erm", "--epochs", "2", "--no-progress"]


@pytest.fixture
def no_training(monkeypatch):
    """Training must not start."""
    def boom(*a, **k):
        raise AssertionError("training started")
    monkeypatch.setattr(train_command, "train", boom)


@pytest.fixture
def no_scoring(monkeypatch):
    """Scoring must not start."""
    def boom(*a, **k):
        raise AssertionError("scoring started")
    monkeypatch.setattr(label_issues, "find_label_issues", boom)
    monkeypatch.setattr(label_issues, "score_dataset", boom)


# ---------------------------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------------------------
def test_resume_refuses_a_checkpoint_of_other_data(tmp_path, capsys):
    """Defect 1: --resume with another --seed/--rate/--noise/--dataset/--clean-size is an error."""
    assert cli.main(TRAIN + ["--out", str(tmp_path / "run"), "--checkpoint-every", "1"]) == 0
    ck_dir = tmp_path / "run" / "checkpoints" / "seed-0"
    run = json.loads((ck_dir / "run.json").read_text())
    assert run["identity"]["seed"] == 0 and run["identity"]["rate"] == 0.4 and run["labels"]
    ck = str(ck_dir / "epoch-0001.pt")
    capsys.readouterr()
    for extra, what in ((["--seed", "5"], "seed 0 (this run: 5)"), (["--rate", "0.2"], "rate 0.4"),
                        (["--noise", "asym"], "noise 'sym'"), (["--dataset", "mnist5k"], "dataset 'digits'"),
                        (["--clean-size", "40"], "clean_size 50")):
        out = tmp_path / f"bad{extra[0]}"
        assert cli.main(TRAIN + ["--out", str(out), "--resume", ck, *extra]) == 2
        err = capsys.readouterr().err
        assert "fastreweight: error:" in err and "other data" in err and what in err, err
        assert not out.exists()
    # another noisy label set under the same settings (e.g. another --data-dir): the label hash differs
    (tmp_path / "tampered").mkdir()
    os.link(ck, tmp_path / "tampered" / "epoch-0001.pt")
    (tmp_path / "tampered" / "run.json").write_text(json.dumps({**run, "labels": "0" * 64}))
    assert cli.main(TRAIN + ["--out", str(tmp_path / "t"), "--resume", str(tmp_path / "tampered" / "epoch-0001.pt")]) == 2
    assert "training labels or clean subset differ" in capsys.readouterr().err
    # a checkpoint without a run file: its seed-S directory still names the seed
    (tmp_path / "old" / "seed-0").mkdir(parents=True)
    os.link(ck, tmp_path / "old" / "seed-0" / "epoch-0001.pt")
    assert cli.main(TRAIN + ["--out", str(tmp_path / "o"), "--seed", "5",
                             "--resume", str(tmp_path / "old" / "seed-0" / "epoch-0001.pt")]) == 2
    assert "checkpoint of seed 0" in capsys.readouterr().err
    # the same data resumes
    assert cli.main(TRAIN + ["--out", str(tmp_path / "ok"), "--resume", ck]) == 0
    res = json.loads((tmp_path / "ok" / "results.json").read_text())
    assert res["resumed_from"] == os.path.abspath(ck)


def test_rename_covers_checkpoints(tmp_path, capsys, monkeypatch):
    """Defect 2: existing checkpoints are found before training; --rename writes checkpoints-2/."""
    out = tmp_path / "run"
    args = TRAIN + ["--out", str(out), "--checkpoint-every", "1"]
    assert cli.main(args) == 0
    assert cli.main(args + ["--rename"]) == 0
    assert sorted(os.listdir(out / "checkpoints-2" / "seed-0")) == ["epoch-0001.pt", "epoch-0002.pt", "run.json"]
    assert json.loads((out / "results-2.json").read_text())["checkpoints"] == [str(out / "checkpoints-2" / "seed-0")]
    # checkpoints left without results (an interrupted run) are refused before any training
    for f in ("results.json", "plot.png", "results-2.json", "plot-2.png"):
        os.remove(out / f)
    capsys.readouterr()

    def boom(*a, **k):
        raise AssertionError("training started")
    monkeypatch.setattr(train_command, "train", boom)
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "refusing to overwrite" in err and os.path.join("checkpoints", "seed-0") in err
    assert not (out / "results.json").exists()


@pytest.mark.parametrize("argv, flag", [
    (["--method", "erm", "--feature-whiten", "auto"], "--feature-whiten"),
    (["--method", "erm", "--reweight-lr", "0.5"], "--reweight-lr"),
    (["--method", "meta", "--recipe", "paper"], "--recipe"),
    (["--method", "relabel", "--shift", "mean"], "--shift"),
    (["--method", "l2r", "--clean-features", "batch"], "--clean-features"),
    (["--method", "erm", "--warmup", "2"], "--warmup"),
    (["--method", "fbr", "--recipe", "paper", "--warmup", "2"], "--warmup"),
    (["--method", "fbr", "--skip-epochs", "2"], "--skip-epochs"),
    (["--method", "fbr", "--feature-whiten-every", "2"], "--feature-whiten-every"),
    (["--method", "meta", "--clean-mix", "2"], "--clean-mix"),
])
def test_options_the_method_ignores_are_refused(tmp_path, capsys, no_training, argv, flag):
    """Defect 3: FBR-only options with another method are an error, as --relabel-* with fbr."""
    out = tmp_path / "o"
    assert cli.main(["train", "--dataset", "digits", "--epochs", "1", "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastreweight: error:") and flag in err, err
    assert not out.exists()


def test_fbr_options_still_accepted(tmp_path):
    s, kw = train_settings._resolve(cli.build_parser().parse_args(
        ["train", "--method", "fbr", "--recipe", "paper", "--skip-epochs", "1", "--feature-whiten", "auto"]))
    assert s["method"] == "fbr" and kw["recipe"] == "paper" and kw["feature_whiten"] == "auto"
    s, kw = train_settings._resolve(cli.build_parser().parse_args(["train", "--method", "l2r", "--warmup", "1"]))
    assert s["method"] == "l2r" and kw["warmup"] == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unusable_device_is_an_error(tmp_path, capsys, no_training, no_scoring):
    """Defect 4: --device cuda on a CPU-only build: an error naming the flag, no traceback."""
    np.save(tmp_path / "x.npy", np.eye(4, dtype=np.float32))
    np.save(tmp_path / "y.npy", np.arange(4) % 2)
    np.save(tmp_path / "ci.npy", np.arange(4))
    score = ["score", "--features", str(tmp_path / "x.npy"), "--labels", str(tmp_path / "y.npy"),
             "--clean-idx", str(tmp_path / "ci.npy"), "--out", str(tmp_path / "a.csv"), "--no-progress"]
    devices = ["cuda", "cuda:1"]
    mps = getattr(torch.backends, "mps", None)
    if mps is None or not mps.is_available():
        devices.append("mps")
    for dev in devices:
        assert cli.main(TRAIN + ["--out", str(tmp_path / "t"), "--device", dev]) == 2
        assert capsys.readouterr().err.startswith(f"fastreweight: error: --device {dev}: ")
        assert cli.main(score + ["--device", dev]) == 2
        assert capsys.readouterr().err.startswith(f"fastreweight: error: --device {dev}: ")
    assert cli.main(["demo", "--quick", "--device", "gpu"]) == 2
    assert capsys.readouterr().err.startswith("fastreweight: error: --device gpu: ")
    assert not (tmp_path / "t").exists() and not (tmp_path / "a.csv").exists()


def test_train_numeric_options_checked_before_training(tmp_path, capsys, no_training):
    """Defect 7 (train side): --report-samples -1 is refused before training, not after it."""
    for argv, msg in ((["--report", "--report-samples", "-1"], "--report-samples"),
                      (["--checkpoint-every", "0"], "--checkpoint-every"),
                      (["--report", "--report-scorer", "nope"], "--report-scorer")):
        assert cli.main(TRAIN + ["--out", str(tmp_path / "o"), *argv]) == 2
        assert msg in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------------------------
# score
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def files(tmp_path):
    g = np.random.default_rng(0)
    y = g.integers(0, 3, 60)
    x = (np.eye(3)[y] * 4 + g.standard_normal((60, 3))).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    np.save(tmp_path / "ci.npy", np.arange(30))
    return tmp_path


def _score(files, *extra, out="a.csv"):
    return ["score", "--features", str(files / "x.npy"), "--labels", str(files / "y.npy"),
            "--clean-idx", str(files / "ci.npy"), "--out", str(files / out), "--no-progress", *extra]


def _error(capsys) -> str:
    cap = capsys.readouterr()
    assert cap.err.startswith("fastreweight: error: ") and "Traceback" not in cap.err, cap.err
    return cap.err


def test_score_bad_label_files_are_errors(files, capsys, no_scoring):
    """Defect 5: string labels and a .pt holding a dict are input errors, not tracebacks."""
    y = np.load(files / "y.npy")
    np.save(files / "ystr.npy", np.array(["a", "b", "c"])[y])
    torch.save({"labels": torch.from_numpy(y)}, files / "ydict.pt")
    torch.save({"x": torch.zeros(3)}, files / "xdict.pt")
    np.save(files / "y2d.npy", y[:, None])
    np.save(files / "xc.npy", np.load(files / "x.npy").astype(np.complex64))
    for argv, msg in ((["--labels", str(files / "ystr.npy")], "labels must be integers"),
                      (["--labels", str(files / "ydict.pt")], "--labels"),
                      (["--labels", str(files / "y2d.npy")], "labels must be 1-D"),
                      (["--features", str(files / "xdict.pt")], "--features"),
                      (["--features", str(files / "xc.npy")], "features must hold real numbers"),
                      (["--clean-labels", str(files / "ystr.npy")], "clean_labels")):
        assert cli.main(_score(files, *argv)) == 2
        assert msg in _error(capsys)
    assert not (files / "a.csv").exists()


def test_score_outputs_checked_before_scoring(files, capsys, no_scoring):
    """Defect 6: a report in a missing directory, --report equal to --out, --out in a missing directory."""
    for argv, msg in ((["--report", str(files / "nodir" / "r.html")], "does not exist"),
                      (["--report", str(files / "a.csv")], "same file")):
        assert cli.main(_score(files, *argv)) == 2
        assert msg in _error(capsys)
    assert cli.main(_score(files, out=os.path.join("nodir", "x.csv"))) == 2
    assert "does not exist" in _error(capsys)
    assert sorted(os.listdir(files)) == ["ci.npy", "x.npy", "y.npy"]


def test_score_report_failure_leaves_no_csv(files, capsys, monkeypatch):
    """Defect 6: if the report cannot be written after all, the CSV is removed (a rerun is not blocked)."""
    write_csv = label_issues.LabelIssues.write_csv

    def racing_write_csv(self, path):  # the report's path appears between the checks and the write
        n = write_csv(self, path)
        (files / "r.html").write_text("someone else's")
        return n
    monkeypatch.setattr(label_issues.LabelIssues, "write_csv", racing_write_csv)
    assert cli.main(_score(files, "--report", str(files / "r.html"))) == 2
    assert "refusing to overwrite" in _error(capsys)
    assert not (files / "a.csv").exists() and (files / "r.html").read_text() == "someone else's"
    monkeypatch.undo()
    assert cli.main(_score(files, "--report", str(files / "r2.html"))) == 0
    assert (files / "a.csv").exists() and (files / "r2.html").read_text().startswith("<!DOCTYPE html>")


def test_score_numeric_options_checked_before_scoring(files, capsys, no_scoring):
    """Defect 7: --num-classes 0/-1, --report-samples -1 and non-image --images are refused up front."""
    np.save(files / "img_bad.npy", np.zeros((60, 5)))
    for argv, msg in ((["--num-classes", "0"], "--num-classes must be >= 1"),
                      (["--num-classes", "-1"], "--num-classes must be >= 1"),
                      (["--num-classes", "2"], "[0, 2)"),
                      (["--report", str(files / "r.html"), "--report-samples", "-1"], "--report-samples"),
                      (["--report", str(files / "r.html"), "--images", str(files / "img_bad.npy")], "not images"),
                      (["--chunk-rows", "0"], "--chunk-rows")):
        assert cli.main(_score(files, *argv)) == 2
        cap = capsys.readouterr()
        assert msg in cap.err and "classes" not in cap.out and "memory bound" not in cap.out, (argv, cap)
    assert sorted(os.listdir(files)) == ["ci.npy", "img_bad.npy", "x.npy", "y.npy"]


def test_score_fbr_options_refuse_a_class_without_clean_rows_in_the_cli_terms(files, capsys, no_scoring):
    """The FBR options path (score_dataset) needs a clean row of every labelled class; its own message
    offers on_missing_class, which the command line does not have."""
    y = np.load(files / "y.npy")
    np.save(files / "ci_no2.npy", np.flatnonzero(y != 2)[:20])
    argv = _score(files, "--shift", "second")
    argv[argv.index(str(files / "ci.npy"))] = str(files / "ci_no2.npy")
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "class(es) 2 have rows but no clean row (absent from the --clean-idx rows)" in err
    assert "on_missing_class" not in err
    assert not os.path.exists(files / "a.csv")
