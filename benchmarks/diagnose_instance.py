"""Why FBR fails under instance-dependent noise: per epoch of one default-FBR run (MNIST-5k, demo-mnist
preset, 30 epochs), how well each signal ranks the wrong labels, and where the flipped rows sit.

    python benchmarks/diagnose_instance.py [--noise confusion boundary cluster] [--seed 0] [--rate 0.3]

Per recorded epoch (penultimate features of every training row, eval mode, end of the epoch):

* ``auroc_weight``: AUROC of ``-w`` (FBR's Reweighter weight) for "label is wrong";
* ``auroc_fbr_score``: AUROC of ``-score`` of ``fbr_scores(shift="max")`` against the clean subset;
* ``flip_closer_new_mean``: share of flipped rows whose feature is closer (Euclidean) to the clean
  mean of their NEW (given) class than to that of their true class;
* ``flip_nn_clean_new``: share of flipped rows whose nearest clean row has the new class;
* ``auroc_knn`` / ``knn_fix_flipped`` / ``knn_keep_correct``: neighour agreement with trust
  (``fastreweight.label_issues.neighbours``, clean rows trusted) on the same features: AUROC, share of
  flipped rows whose suggested label is the true one, share of correct rows whose suggestion is their label.

The same for input-space PCA-64 features once (``epoch = -1``).  Output: one JSON line per
(noise, epoch) appended to benchmarks/results/diagnose_instance.jsonl.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.metrics import roc_auc_score

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from fastreweight import data as D  # noqa: E402
from fastreweight import models as Mo  # noqa: E402
from fastreweight import presets as P  # noqa: E402
from fastreweight.label_issues.neighbours import neighbour_agreement  # noqa: E402
from fastreweight.scores import fbr_scores  # noqa: E402
from fastreweight.train import auto_warmup_probe, train  # noqa: E402  (auto_warmup_probe: import check)
from fastreweight.training.features import FeatureSource  # noqa: E402

RESULTS = os.path.join(os.path.dirname(__file__), "results")


def signals(Ft, Fc, y, yt, yc, C, w=None):
    wrong = (y != yt)
    out = {}
    if w is not None:
        out["auroc_weight"] = float(roc_auc_score(wrong, -w))
    s = fbr_scores(torch.as_tensor(Ft), torch.as_tensor(y), torch.as_tensor(Fc), torch.as_tensor(yc),
                   num_classes=C, shift="max").numpy()
    out["auroc_fbr_score"] = float(roc_auc_score(wrong, -s))
    means = np.stack([Fc[yc == c].mean(0) for c in range(C)])
    fi = np.where(wrong)[0]
    d_new = ((Ft[fi] - means[y[fi]]) ** 2).sum(1)
    d_true = ((Ft[fi] - means[yt[fi]]) ** 2).sum(1)
    out["flip_closer_new_mean"] = float((d_new < d_true).mean())
    d = ((Ft[fi, None, :] - Fc[None, :, :]) ** 2).sum(2)
    out["flip_nn_clean_new"] = float((yc[d.argmin(1)] == y[fi]).mean())
    out["flip_nn_clean_true"] = float((yc[d.argmin(1)] == yt[fi]).mean())
    Z = np.concatenate([Ft, Fc])
    L = np.concatenate([y, yc])
    mask = np.r_[np.zeros(len(y), bool), np.ones(len(yc), bool)]
    score, _, sug = neighbour_agreement(Z, L, mask, num_classes=C)
    score, sug = score[:len(y)], sug[:len(y)]
    out["auroc_knn"] = float(roc_auc_score(wrong, -score))
    out["knn_fix_flipped"] = float((sug[wrong] == yt[wrong]).mean())
    out["knn_keep_correct"] = float((sug[~wrong] == y[~wrong]).mean())
    return out


def run(noise, rate, seed, epochs_rec, out):
    preset = P.get_preset("demo-mnist")
    data = D.make_data("mnist5k", noise=noise, rate=rate, clean_size=preset.clean_size, seed=seed)
    y, yt, yc = (t.numpy() for t in (data.y_train, data.y_train_true, data.y_clean))
    C = data.num_classes
    Xt = data.x_train.reshape(len(y), -1).numpy()
    Xc = data.x_clean.reshape(len(yc), -1).numpy()
    pca = PCA(64, random_state=0).fit(np.concatenate([Xt, Xc]))
    rec = dict(noise=noise, rate=rate, seed=seed, epoch=-1, features="input-pca64",
               **signals(pca.transform(Xt), pca.transform(Xc), y, yt, yc, C))
    print(json.dumps(rec), flush=True)
    with open(out, "a") as fh:
        fh.write(json.dumps(rec) + "\n")
    torch.manual_seed(seed)
    model = Mo.build_model(preset.model, tuple(data.x_train.shape[1:]), C)
    opt = P.build_optimizer(preset, model.parameters())
    steps_per_epoch = -(-len(y) // preset.batch_size)
    state = {"step": 0}

    def cb(ev):
        if ev["phase"] != "train":
            return
        state["step"] += 1
        if state["step"] % steps_per_epoch:
            return
        epoch = state["step"] // steps_per_epoch
        if epoch not in epochs_rec:
            return
        src = FeatureSource(ev["model"], from_training_forward=False, distributed=False)
        Ft = src.eval_features(data.x_train, 1024).numpy()
        Fc = src.eval_features(data.x_clean, 1024).numpy()
        src.close()
        w = ev["sample_weights"].detach().cpu().numpy()
        r = dict(noise=noise, rate=rate, seed=seed, epoch=epoch, features="model-penultimate",
                 **signals(Ft, Fc, y, yt, yc, C, w=w if np.ptp(w) > 0 else None))
        print(json.dumps(r), flush=True)
        with open(out, "a") as fh:
            fh.write(json.dumps(r) + "\n")

    res = train(model, opt, data, method="fbr", seed=seed, epochs=preset.epochs, batch_size=preset.batch_size,
                callback=cb)
    r = dict(noise=noise, rate=rate, seed=seed, epoch="final", last_acc=res.last_acc,
             reweight_start_epoch=res.reweight_start_epoch)
    print(json.dumps(r), flush=True)
    with open(out, "a") as fh:
        fh.write(json.dumps(r) + "\n")


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--noise", nargs="+", default=["confusion"])
    ap.add_argument("--rate", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, nargs="+", default=[1, 3, 5, 10, 20, 30])
    ap.add_argument("--out", default=os.path.join(RESULTS, "diagnose_instance.jsonl"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    for noise in args.noise:
        run(noise, args.rate, args.seed, set(args.epochs), args.out)


if __name__ == "__main__":
    main()
