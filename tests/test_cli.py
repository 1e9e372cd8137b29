"""The command line: demo --quick, train into a directory, refusal to overwrite, the paper-cifar
preset on a tiny CIFAR fixture, presets."""
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from fastreweight import cli
from fastreweight.cli import train_settings
from fastreweight import presets as P

PNG = b"\x89PNG\r\n\x1a\n"


def _read(p):
    with open(p, "rb") as f:
        return f.read()


def test_presets_hold_published_settings():
    pc = P.get_preset("paper-cifar")
    assert (pc.model, pc.epochs, pc.batch_size, pc.lr, pc.momentum, pc.weight_decay) == ("resnet34", 150, 256, 0.02, 0.9, 1e-3)
    assert pc.lr_milestones == [40, 80, 100] and pc.lr_gamma == 0.1 and pc.clean_size == 2000
    assert pc.method_kwargs == dict(recipe="paper", skip_epochs=10, clean_passes=30, alpha_epochs=40, clean_batch_size=128)
    cm = P.get_preset("paper-clothing1m")
    assert (cm.epochs, cm.steps_per_epoch, cm.batch_size, cm.lr, cm.weight_decay, cm.lr_milestones) == (10, 2000, 64, 0.01, 5e-4, [5, 7, 9])
    assert not cm.runnable
    assert {"demo-mnist", "demo-digits"} <= set(P.PRESETS)
    kw = P.train_kwargs(pc)
    assert kw["lr_milestones"] == [40, 80, 100] and kw["recipe"] == "paper"
    with pytest.raises(ValueError):
        P.get_preset("nope")


def test_demo_quick(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli.main(["demo", "--quick", "--no-progress", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    for label in ("ERM sym", "L2R sym", "meta sym", "FBR sym", "FBR+w sym", "relabel sym", "ERM asym", "FBR asym",
                  "FBR+w asym", "relabel asym"):
        assert label in text
    assert "best acc" in text and "s/epoch" in text
    res = json.loads((out / "demo.json").read_text())
    assert len(res["runs"]) == 12 and res["quick"] is True
    whitened = [r for r in res["runs"] if r["label"].startswith("FBR+w")]
    assert all(len(r["config"]["whiten_strengths"]) == 1 for r in whitened)  # reweighted in the one epoch
    assert _read(out / "demo.png").startswith(PNG)


def test_train_digits_and_refuse_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--dataset", "digits", "--method", "fbr", "--epochs", "1", "--no-progress", "--out", str(out)]
    assert cli.main(args) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["settings"]["dataset"] == "digits" and len(res["runs"]) == 1
    run = res["runs"][0]
    assert len(run["test_acc"]) == 1 and 0 <= run["test_acc"][0] <= 1 and len(run["clean_weight"]) > 0
    before = (_read(out / "results.json"), _read(out / "plot.png"))
    assert before[1].startswith(PNG)
    # a second run refuses, leaving the files untouched
    assert cli.main(args) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert (_read(out / "results.json"), _read(out / "plot.png")) == before
    # --rename picks new names
    assert cli.main(args + ["--rename", "--seeds", "0", "1", "--method", "erm"]) == 0
    res2 = json.loads((out / "results-2.json").read_text())
    assert len(res2["runs"]) == 2 and "std" in res2["summary"]["last_acc"]
    assert (_read(out / "results.json"), _read(out / "plot.png")) == before
    # --clean-mix reaches the trainer (recorded in the run's config)
    assert cli.main(["train", "--dataset", "digits", "--method", "fbr", "--epochs", "1", "--no-progress",
                     "--clean-mix", "2", "--out", str(tmp_path / "mix")]) == 0
    res3 = json.loads((tmp_path / "mix" / "results.json").read_text())
    assert res3["runs"][0]["config"]["clean_mix"] == 2
    # --feature-whiten reaches the trainer, which records the strength of each refresh
    assert cli.main(["train", "--dataset", "digits", "--method", "fbr", "--epochs", "2", "--warmup", "0",
                     "--no-progress", "--feature-whiten", "auto", "--feature-whiten-every", "3",
                     "--out", str(tmp_path / "wh")]) == 0
    cfg = json.loads((tmp_path / "wh" / "results.json").read_text())["runs"][0]["config"]
    assert cfg["feature_whiten"] == "auto" and len(cfg["whiten_strengths"]) == 2
    assert cfg["feature_whiten_every"] == 3
    # --out naming an existing file is refused
    f = tmp_path / "afile"
    f.write_text("keep")
    assert cli.main(["train", "--dataset", "digits", "--epochs", "1", "--no-progress", "--out", str(f)]) == 2
    assert f.read_text() == "keep"


def _cifar_fixture(root, n_per=5, n_test=8):
    d = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(d)
    rng = np.random.default_rng(0)
    k = 0
    for i in range(1, 6):
        with open(os.path.join(d, f"data_batch_{i}"), "wb") as f:
            labels = [int(v) for v in (np.arange(k, k + n_per) % 10)]
            k += n_per
            pickle.dump({b"data": rng.integers(0, 256, (n_per, 3072), dtype=np.uint8), b"labels": labels}, f)
    with open(os.path.join(d, "test_batch"), "wb") as f:
        pickle.dump({b"data": rng.integers(0, 256, (n_test, 3072), dtype=np.uint8),
                     b"labels": [int(v) for v in np.arange(n_test) % 10]}, f)
    n = 5 * n_per
    torch.save({"clean_label": np.arange(n) % 10, "worse_label": rng.integers(0, 10, n)},
               os.path.join(root, "CIFAR-10_human.pt"))


def test_train_paper_cifar_preset_on_fixture(tmp_path):
    _cifar_fixture(str(tmp_path))
    out = tmp_path / "out"
    rc = cli.main(["train", "--preset", "paper-cifar", "--dataset", "cifar10", "--data-dir", str(tmp_path),
                   "--noise", "cifar-n:worse_label", "--epochs", "1", "--model", "resnet34", "--clean-size", "6",
                   "--clean-passes", "1", "--skip-epochs=-1", "--batch-size", "32", "--no-progress", "--out", str(out)])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    s = res["settings"]
    assert s["model"] == "resnet34" and s["lr"] == 0.02 and s["lr_milestones"] == [40, 80, 100] and s["augment"]
    run = res["runs"][0]
    assert run["config"]["recipe"] == "paper" and run["config"]["clean_passes"] == 1
    assert run["config"]["data"]["n_clean"] == 6 and run["config"]["data"]["protocol"] == "FINE"
    assert len(run["test_acc"]) == 1 and len(run["clean_weight"]) == 1  # 15 training rows, batch 32
    assert run["config"]["data"]["n_train"] == 15


def test_unrunnable_preset_and_bad_pickle(tmp_path, capsys):
    with pytest.raises(SystemExit, match="cannot run"):
        cli.main(["train", "--preset", "paper-clothing1m", "--out", str(tmp_path / "o")])
    _cifar_fixture(str(tmp_path))
    marker = tmp_path / "executed"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": []}, f)
    rc = cli.main(["train", "--dataset", "cifar10", "--data-dir", str(tmp_path), "--epochs", "1", "--clean-size", "5",
                   "--no-progress", "--out", str(tmp_path / "o2")])
    assert rc == 2 and "refusing to load global" in capsys.readouterr().err
    assert not marker.exists()


def test_python_dash_m_entry_point():
    r = subprocess.run([sys.executable, "-m", "fastreweight", "train", "--help"], capture_output=True, text=True,
                       timeout=120, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert r.returncode == 0 and "--dataset" in r.stdout and "--preset" in r.stdout


def test_train_checkpoints_and_resumes(tmp_path, capsys):
    """``--checkpoint-every`` writes checkpoints; ``--resume`` continues one to the same result."""
    base = ["train", "--dataset", "digits", "--method", "fbr", "--epochs", "3", "--warmup", "1", "--no-progress"]
    assert cli.main(base + ["--out", str(tmp_path / "full"), "--checkpoint-every", "1"]) == 0
    ckpts = sorted(os.listdir(tmp_path / "full" / "checkpoints" / "seed-0"))
    assert ckpts == ["epoch-0001.pt", "epoch-0002.pt", "epoch-0003.pt", "run.json"]  # run.json: the data identity
    resume = str(tmp_path / "full" / "checkpoints" / "seed-0" / "epoch-0001.pt")
    assert cli.main(base + ["--out", str(tmp_path / "resumed"), "--resume", resume]) == 0
    full = json.loads((tmp_path / "full" / "results.json").read_text())["runs"][0]
    resumed = json.loads((tmp_path / "resumed" / "results.json").read_text())["runs"][0]
    assert full["test_acc"] == resumed["test_acc"] and full["clean_weight"] == resumed["clean_weight"]
    capsys.readouterr()
    assert cli.main(base + ["--out", str(tmp_path / "bad"), "--resume", str(tmp_path / "nope.pt")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli.main(base + ["--out", str(tmp_path / "bad2"), "--resume", resume, "--seeds", "0", "1"]) == 2
    assert "one --seed" in capsys.readouterr().err


def test_train_default_method_is_relabel_and_fbr_options_keep_fbr():
    """relabel is the recommended method; an FBR option without --method still selects FBR, presets keep theirs."""
    def resolved(*argv):
        return train_settings._resolve(cli.build_parser().parse_args(["train", *argv]))

    s, kw = resolved("--dataset", "digits")
    assert s["method"] == "relabel" and "feature_whiten" not in kw
    s, kw = resolved("--dataset", "digits", "--feature-whiten", "auto", "--feature-whiten-every", "10")
    assert s["method"] == "fbr" and kw["feature_whiten"] == "auto" and kw["feature_whiten_every"] == 10
    s, kw = resolved("--recipe", "paper")
    assert s["method"] == "fbr" and kw["recipe"] == "paper"
    s, kw = resolved("--preset", "demo-mnist")
    assert s["method"] == "fbr" and kw["recipe"] == "paper" and kw["skip_epochs"] == 2
    s, _ = resolved("--dataset", "digits", "--method", "meta", "--warmup", "2")
    assert s["method"] == "meta"  # an explicit method wins (--warmup configures meta too)


def test_train_relabel_options(tmp_path, capsys):
    """--relabel-* reach NeighbourRelabel; a bad value or another method is refused naming the flag."""
    def resolved(*argv):
        return train_settings._resolve(cli.build_parser().parse_args(["train", *argv]))

    s, kw = resolved("--dataset", "digits", "--relabel-margin", "0.3", "--relabel-clean-vote", "0",
                     "--relabel-every", "2", "--relabel-features", "input", "--relabel-vote-target", "0")
    assert s["method"] == "relabel"
    assert kw["relabel_options"] == dict(margin=0.3, clean_vote=0.0, every=2, features="input", vote_target=0.0)
    _, kw = resolved("--dataset", "digits")
    assert "relabel_options" not in kw
    for argv, flag in ((["--relabel-margin", "1.5"], "--relabel-margin"),
                       (["--relabel-clean-vote", "-0.5"], "--relabel-clean-vote"),
                       (["--relabel-every", "0"], "--relabel-every"),
                       (["--relabel-vote-target", "2"], "--relabel-vote-target"),
                       (["--method", "erm", "--relabel-margin", "0.2"], "method is erm"),
                       (["--feature-whiten", "auto", "--relabel-every", "2"], "method is fbr")):
        out = tmp_path / f"bad{len(argv)}{argv[1]}"
        assert cli.main(["train", "--dataset", "digits", "--epochs", "1", "--out", str(out), *argv]) == 2
        err = capsys.readouterr().err
        assert flag in err, err
        assert not out.exists()
    out = tmp_path / "ok"
    assert cli.main(["train", "--dataset", "digits", "--epochs", "2", "--relabel-every", "1", "--relabel-clean-vote",
                     "0.5", "--no-progress", "--out", str(out)]) == 0
    cfg = json.loads((out / "results.json").read_text())
    text = json.dumps(cfg)
    assert '"clean_vote": 0.5' in text and '"every": 1' in text
