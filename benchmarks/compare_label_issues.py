"""Label-issue finding on MNIST-5k: fastreweight's scorers against cleanlab, every tool given the SAME features.

    python benchmarks/compare_label_issues.py                      # 3 seeds, pca + learned, every noise kind, every tool
    python benchmarks/compare_label_issues.py --tools fastreweight --out benchmarks/results/label_issues_NEW.jsonl
    python benchmarks/compare_label_issues.py --quick --out /tmp/q.jsonl   # 1 seed, 1200 rows, pca, sym + pair (the test)
    python benchmarks/compare_label_issues.py --dataset digits --out benchmarks/results/digits_label_issues.jsonl

Setup, per seed:
* **Data.** ``fastreweight.data.load_mnist5k()``: 5000 × 784 pixels in [0, 1], 10 classes (``--quick``:
  a class-stratified random 1200 of them).  ``--dataset digits``: scikit-learn's ``load_digits``, 1797 ×
  64 pixels scaled to [0, 1], 10 classes, a dataset no setting was chosen on (its records say
  ``dataset="digits"``; write them to a file render.py does not read as MNIST-5k, i.e. not
  ``label_issues_*.jsonl``).  PCA keeps ``min(64, d)`` components (for digits a rotation of the pixels).
* **Trusted subset.** 100 rows, 10 per class by their true label (seeded).  Their labels are the true
  ones in the label array every tool sees; only fastreweight is told which rows they are (``clean_idx``).
  Every tool scores all N rows; the metrics are computed on the N − 100 rows outside the trusted subset.
  ``--audit``: the trusted rows are an audit instead: every tool sees their noisy labels, like every
  other row's, and fastreweight is also given their verified (true) labels (``clean_labels``), so it
  knows which of the audited labels were wrong (records say ``audit: true``).  The learned features are
  trained on the labels every tool sees, the audited rows' given labels included: to the features an
  audited row must look like any other row, or the audit would see its wrong labels more clearly than
  the dataset's (a network pulls a row's features towards the label it was trained with; trained with
  the verified labels, the score-assisted estimate fell 2-6 points short on boundary and confusion
  noise in a first run, not committed).  Tools add ``AUDIT_FLAG_VARIANTS``.  Write these records to
  ``audit_label_issues_*.jsonl``.
* **Noise** (``NOISE``, data-driven): ``sym`` 30% (``fastreweight.data.symmetric_noise``: 30% of the rows
  resampled uniformly over the 10 classes, so about 27% end up wrong), ``pair`` 25% (``asymmetric_noise``
  with the pair-flip map c → c+1: exactly 25% of every class), and the instance-dependent kinds of
  ``fastreweight.noise.make_noise(kind, pixels, labels, 0.3, num_classes=10, seed=...)`` (``confusion``,
  ``boundary``, ``cluster``); a kind that module does not know (or a missing module) is skipped with a
  note.  Instance-dependent noise is drawn from the pixels, so both feature kinds see the same labels.
  ``LOW_NOISE`` (``--noise sym-10 pair-10 ...``, not in the default run): every kind at 10%.
* **Features** (every tool gets the same matrix):
  * ``pca``: PCA-64 of the pixels, fitted on all N rows, no labels (one call per tool);
  * ``learned``: the 256-d penultimate layer (``features_and_logits``) of
    ``build_model("mlp", (784,), 10)`` trained with plain cross-entropy on the NOISY labels (Adam 1e-3,
    batch 128, 10 epochs).  Out of sample by cross-fitting: 5 folds; the model of fold k is trained on
    the other 4/5 of the rows, every tool is run on the features of ALL N rows from that model (one
    common space: features of five different networks are not comparable with each other, so the
    held-out folds cannot simply be concatenated), and only the scores, flags and estimates of the rows
    held out from it are kept.  So each row's score comes from features of a network that never saw its
    label; a tool is called 5 times per seed and noise kind, and its seconds are the sum of the 5 calls.
    The 5 models are trained once per (seed, noise kind) and shared by all tools.
* **Tools** (``TOOLS``), each with its recommended settings:
  * ``cleanlab:datalab-knn``: ``Datalab(...).find_issues(features=X, issue_types={"label": {}})``
    (cleanlab's kNN label check from features alone); ``get_issues("label")``;
  * ``cleanlab:lr``: ``cleanlab.filter.find_label_issues(labels, pred_probs)`` (default ``filter_by``) and
    ``cleanlab.rank.get_label_quality_scores(labels, pred_probs)`` on 5-fold out-of-sample
    ``pred_probs`` of ``LogisticRegression`` on standardised features (``cross_val_predict``), its
    ``max_iter`` doubled from 100 until no ``ConvergenceWarning`` (recorded);
  * ``cleanlab:datalab-lr``: ``Datalab(...).find_issues(pred_probs=..., issue_types={"label": {}})`` on the
    same ``pred_probs``;
  * ``fastreweight:NAME`` for every NAME of ``fastreweight.label_issues.SCORERS`` (read at run time):
    ``find_label_issues(X, labels, clean_idx=trusted, scorer=NAME)``; ``fastreweight:NAME/FLAG`` (``FLAG_VARIANTS``)
    the same with ``flag=FLAG``.
  cleanlab gets no trusted labels.
* **Metrics** (rows outside the trusted subset): AUROC of ``1 − label_score`` for "the label is wrong"
  (every tool's ``label_score``: lower = more suspicious; fastreweight's raw ``−score`` AUROC is recorded
  too), precision@k (the k lowest ``label_score`` rows, k = the number of wrong labels among the scored
  rows), precision / recall / count of the flagged set, fastreweight's ``estimated_noise_rate`` (mean over
  the calls) against the true rate of all N rows, and the seconds of the tool's own calls (features
  given; the logistic regression's cross-validation is part of both LR tools' seconds, its
  ``max_iter`` search is not: only the converged run is timed).  One thread (torch and BLAS).

One JSON record per (seed, feature kind, noise kind, tool), written as it is produced, with
``benchmarks/harness.py``'s ``environment()``.  The output file must not exist unless ``--append``.
``python benchmarks/render.py`` renders every ``benchmarks/results/label_issues_*.jsonl``.
"""
from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse
import hashlib
import json
import sys
import time
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)

NUM_CLASSES = 10
TRUSTED_PER_CLASS = 10
PCA_DIM = 64
FOLDS = 5
MLP = dict(hidden=(256,), epochs=10, lr=1e-3, batch=128)
QUICK_ROWS = 1200

#: noise kind -> (rate, source); "data": fastreweight.data, "noise": fastreweight.noise.make_noise
NOISE = {
    "sym": (0.30, "data"),
    "pair": (0.25, "data"),
    "confusion": (0.30, "noise"),
    "boundary": (0.30, "noise"),
    "cluster": (0.30, "noise"),
}
#: the same kinds at 10% (``--noise sym-10 ...``; not in the default run): how each tool's flagged set holds up
#: when wrong labels are rare
LOW_NOISE = {f"{kind}-10": (0.10, src) for kind, (_, src) in NOISE.items()}
ALL_NOISE = {**NOISE, **LOW_NOISE}
CLEANLAB_TOOLS = ("cleanlab:datalab-knn", "cleanlab:lr", "cleanlab:datalab-lr")
FEATURES = ("pca", "learned")


#: fastreweight tools that name a flagging rule beside the scorer (``fastreweight:SCORER/FLAG``)
FLAG_VARIANTS = ("knn/margin", "knn/posterior", "knn/confident")
#: with ``--audit`` also (a rule that needs the verified labels of the audited rows)
AUDIT_FLAG_VARIANTS = ("knn/audit",)


def fastreweight_tools(audit: bool = False) -> list[str]:
    from fastreweight.label_issues import SCORERS  # a dict or a tuple of names: read at run time

    variants = FLAG_VARIANTS + (AUDIT_FLAG_VARIANTS if audit else ())
    return [f"fastreweight:{name}" for name in SCORERS] + [f"fastreweight:{v}" for v in variants]


def all_tools(audit: bool = False) -> list[str]:
    return list(CLEANLAB_TOOLS) + fastreweight_tools(audit)


def resolve_tools(names, audit: bool = False) -> list[str]:
    """Family names (``cleanlab``, ``fastreweight``, ``all``), full names, or a scorer name alone."""
    known, out = all_tools(audit), []
    for n in names:
        if n == "all":
            picked = known
        elif n in ("cleanlab", "fastreweight"):
            picked = [t for t in known if t.startswith(n + ":")]
        elif n in known:
            picked = [n]
        elif f"fastreweight:{n}" in known:
            picked = [f"fastreweight:{n}"]
        elif f"cleanlab:{n}" in known:
            picked = [f"cleanlab:{n}"]
        else:
            raise SystemExit(f"unknown tool {n!r}; known: all, cleanlab, fastreweight, {', '.join(known)}")
        out += [t for t in picked if t not in out]
    return out


# ------------------------------------------------------------------------------------------------ data
DATASETS = ("mnist5k", "digits")


def load_data(quick: bool, seed: int, dataset: str = "mnist5k"):
    if dataset == "digits":
        from sklearn.datasets import load_digits

        x, y = load_digits(return_X_y=True)
        x = x / 16.0
    else:
        from fastreweight.data import load_mnist5k

        x, y = load_mnist5k()
        x, y = x.numpy(), y.numpy()
    if quick:
        rng = np.random.default_rng(10_000 + seed)
        per = QUICK_ROWS // NUM_CLASSES
        rows = np.sort(np.concatenate([rng.permutation(np.flatnonzero(y == c))[:per] for c in range(NUM_CLASSES)]))
        x, y = x[rows], y[rows]
    return np.ascontiguousarray(x, dtype=np.float32), y.astype(np.int64)


def trusted_rows(y: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(20_000 + seed)
    return np.sort(np.concatenate([rng.permutation(np.flatnonzero(y == c))[:TRUSTED_PER_CLASS]
                                   for c in range(NUM_CLASSES)]))


def noise_source(kind: str):
    """A function ``(pixels, labels, seed) -> noisy labels``, or a string saying why the kind is skipped."""
    rate, src = ALL_NOISE[kind]
    kind = kind.split("-")[0]  # "sym-10": the kind "sym" at its own rate
    if src == "data":
        from fastreweight.data import asymmetric_noise, pair_flip_map, symmetric_noise

        if kind == "sym":
            return lambda x, y, seed: symmetric_noise(y, rate, NUM_CLASSES, seed)
        return lambda x, y, seed: asymmetric_noise(y, rate, NUM_CLASSES, seed, pair_flip_map(NUM_CLASSES))
    try:
        from fastreweight.noise import make_noise
    except ImportError as e:
        return f"fastreweight.noise.make_noise is not importable ({e})"

    def gen(x, y, seed):
        out = make_noise(kind, x, y, rate, num_classes=NUM_CLASSES, seed=seed)
        out = out.detach().cpu().numpy() if hasattr(out, "detach") else np.asarray(out)
        return out.astype(np.int64)

    from fastreweight import noise as noise_mod

    kinds = getattr(noise_mod, "NOISE_KINDS", None)
    if kinds is not None:
        return gen if kind in kinds else f"make_noise does not know {kind!r} (NOISE_KINDS: {', '.join(kinds)})"
    try:  # no list of kinds: does make_noise know the kind?  (a tiny draw: 50 rows, 10 classes, 4 features)
        rng = np.random.default_rng(0)
        gen(rng.random((50, 4), dtype=np.float32), np.arange(50) % NUM_CLASSES, 0)
    except (ValueError, KeyError, NotImplementedError) as e:
        if isinstance(e, KeyError) or "unknown" in str(e).lower() or "expected" in str(e).lower():
            return f"make_noise does not know {kind!r} ({e})"
        raise
    return gen


def available_noise(kinds) -> tuple[dict, dict]:
    gens, skipped = {}, {}
    for k in kinds:
        g = noise_source(k)
        if isinstance(g, str):
            skipped[k] = g
        else:
            gens[k] = g
    return gens, skipped


# -------------------------------------------------------------------------------------------- features
def pca_features(x: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.decomposition import PCA

    return PCA(min(PCA_DIM, x.shape[1]), svd_solver="full", random_state=seed).fit_transform(x).astype(np.float32)


def learned_views(x: np.ndarray, noisy: np.ndarray, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Cross-fitting: per fold, (features of all rows from the model trained without that fold, fold rows)."""
    import torch
    import torch.nn.functional as F

    from fastreweight.models import build_model

    n = len(noisy)
    folds = np.array_split(np.random.default_rng(30_000 + seed).permutation(n), FOLDS)
    xt, yt = torch.from_numpy(x), torch.from_numpy(noisy)
    views = []
    for k, held in enumerate(folds):
        train = torch.from_numpy(np.setdiff1d(np.arange(n), held))
        torch.manual_seed(1000 * seed + k)
        model = build_model("mlp", (x.shape[1],), NUM_CLASSES, hidden=MLP["hidden"])
        opt = torch.optim.Adam(model.parameters(), lr=MLP["lr"])
        g = torch.Generator().manual_seed(1000 * seed + k)
        model.train()
        for _ in range(MLP["epochs"]):
            for b in train[torch.randperm(len(train), generator=g)].split(MLP["batch"]):
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(model(xt[b]), yt[b]).backward()
                opt.step()
        model.eval()
        with torch.no_grad():
            feats = torch.cat([model.features_and_logits(c)[0] for c in xt.split(1024)])
        views.append((np.ascontiguousarray(feats.numpy(), dtype=np.float32), np.sort(held)))
    return views


# ----------------------------------------------------------------------------------------------- tools
def lr_pred_probs(z: np.ndarray, labels: np.ndarray, seed: int):
    """5-fold out-of-sample probabilities of a converged logistic regression on standardised features."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.preprocessing import StandardScaler

    max_iter = 100
    while True:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            t0 = time.perf_counter()
            zs = StandardScaler().fit_transform(z)
            probs = cross_val_predict(LogisticRegression(max_iter=max_iter), zs, labels,
                                      cv=StratifiedKFold(5, shuffle=True, random_state=seed), method="predict_proba")
            dt = time.perf_counter() - t0
        if not any(issubclass(w.category, ConvergenceWarning) for w in caught):
            return probs, dt, max_iter
        max_iter *= 2
        if max_iter > 102_400:
            raise RuntimeError("LogisticRegression did not converge within 102400 iterations")


def _datalab(labels, **find_kw):
    from cleanlab import Datalab

    lab = Datalab(data={"label": labels}, label_name="label", verbosity=0)
    lab.find_issues(issue_types={"label": {}}, **find_kw)
    iss = lab.get_issues("label")
    return iss["label_score"].to_numpy(np.float64), iss["is_label_issue"].to_numpy(bool)


def run_tool(tool: str, z: np.ndarray, labels: np.ndarray, trusted: np.ndarray, seed: int, cache: dict,
             verified=None) -> dict:
    """One call of ``tool`` on features ``z`` (all rows): per-row label_score, flags (and raw score), seconds.
    ``verified``: the true labels of the ``trusted`` rows when they are an audit (``--audit``; fastreweight
    gets them as ``clean_labels``), else ``None`` (``labels`` holds them)."""
    out = {}
    if tool == "cleanlab:datalab-knn":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            ls, flag = _datalab(labels, features=z)
            out["seconds"] = time.perf_counter() - t0
    elif tool in ("cleanlab:lr", "cleanlab:datalab-lr"):
        if "probs" not in cache:
            cache["probs"] = lr_pred_probs(z, labels, seed)
        probs, t_probs, max_iter = cache["probs"]
        out.update(seconds_pred_probs=t_probs, lr_max_iter=max_iter)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            if tool == "cleanlab:lr":
                from cleanlab.filter import find_label_issues
                from cleanlab.rank import get_label_quality_scores

                flag = np.asarray(find_label_issues(labels, probs), bool)
                ls = np.asarray(get_label_quality_scores(labels, probs), np.float64)
            else:
                ls, flag = _datalab(labels, pred_probs=probs)
            out["seconds"] = t_probs + time.perf_counter() - t0
    elif tool.startswith("fastreweight:"):
        from fastreweight.label_issues import find_label_issues

        t0 = time.perf_counter()
        scorer, _, flag = tool.split(":", 1)[1].partition("/")
        res = find_label_issues(z, labels, clean_idx=trusted, clean_labels=verified, scorer=scorer,
                                flag=flag or "auto", num_classes=NUM_CLASSES)
        out["seconds"] = time.perf_counter() - t0
        ls, flag = np.asarray(res.label_score, np.float64), np.asarray(res.is_label_issue, bool)
        out["score"] = np.asarray(res.score, np.float64)
        out["estimated_noise_rate"] = res.estimated_noise_rate
        out["settings"] = {k: v for k, v in res.settings.items() if k != "scorer"}
    else:
        raise ValueError(tool)
    out["label_score"], out["is_label_issue"] = ls, flag
    return out


# --------------------------------------------------------------------------------------------- metrics
def metrics(label_score, flag, wrong, score=None) -> dict:
    from sklearn.metrics import roc_auc_score

    k = int(wrong.sum())
    top = np.argsort(label_score, kind="stable")[:k]
    m = dict(auroc=float(roc_auc_score(wrong, 1.0 - label_score)),
             precision_at_k=float(wrong[top].mean()) if k else None, k=k,
             precision=float(wrong[flag].mean()) if flag.any() else 0.0,
             recall=float(flag[wrong].mean()) if k else None, flagged=int(flag.sum()))
    if score is not None:
        m["auroc_raw_score"] = float(roc_auc_score(wrong, -score))
    return m


def warm_up(tools, audit: bool = False) -> None:
    """One untimed call of every tool on a tiny random problem: imports and first-call set-up are not timed."""
    rng = np.random.default_rng(0)
    labels = np.arange(200) % NUM_CLASSES
    z = (rng.standard_normal((200, 8)) + labels[:, None]).astype(np.float32)
    trusted = np.arange(2 * NUM_CLASSES)
    cache: dict = {}
    for tool in tools:
        run_tool(tool, z, labels, trusted, 0, cache, labels[trusted] if audit else None)


def _hash(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="default 0 1 2 (--quick: 0)")
    ap.add_argument("--features", nargs="+", choices=FEATURES, default=None, help="default pca learned (--quick: pca)")
    ap.add_argument("--noise", nargs="+", choices=sorted(ALL_NOISE), default=None,
                    help="default every kind of NOISE available (--quick: sym pair); KIND-10: the kind at 10%%")
    ap.add_argument("--tools", nargs="+", default=["all"],
                    help="all, cleanlab, fastreweight, or names: " + ", ".join(CLEANLAB_TOOLS) + ", fastreweight:SCORER")
    ap.add_argument("--quick", action="store_true", help=f"{QUICK_ROWS} class-stratified rows; defaults 1 seed, pca, sym + pair")
    ap.add_argument("--dataset", choices=DATASETS, default="mnist5k",
                    help="mnist5k (default) or digits (scikit-learn's, a second dataset; write it to its own --out)")
    ap.add_argument("--out", default=None,
                    help="default results/label_issues_mnist5k.jsonl (mnist5k) or results/digits_label_issues.jsonl")
    ap.add_argument("--append", action="store_true", help="append to an existing --out (default: refuse)")
    ap.add_argument("--audit", action="store_true",
                    help="the trusted rows keep their noisy labels; fastreweight also gets their verified ones "
                         "(write to audit_label_issues_*.jsonl)")
    args = ap.parse_args(argv)
    if args.out is None:
        args.out = os.path.join(HERE, "results", "label_issues_mnist5k.jsonl" if args.dataset == "mnist5k"
                                else f"{args.dataset}_label_issues.jsonl")
    seeds = args.seeds if args.seeds is not None else ([0] if args.quick else [0, 1, 2])
    feature_kinds = args.features or (["pca"] if args.quick else list(FEATURES))
    noise_kinds = args.noise or (["sym", "pair"] if args.quick else list(NOISE))
    if os.path.exists(args.out) and not args.append:
        raise SystemExit(f"{args.out} exists; give a new --out or --append")

    import torch

    torch.set_num_threads(1)
    import sklearn

    try:
        import cleanlab

        cleanlab_version = cleanlab.__version__
    except ImportError:  # fastreweight's tools alone need no cleanlab
        cleanlab_version = None

    from harness import environment

    tools = resolve_tools(args.tools, args.audit)
    if cleanlab_version is None and any(t.startswith("cleanlab:") for t in tools):
        raise SystemExit("the cleanlab tools need cleanlab (pip install 'cleanlab[datalab]'); or give --tools fastreweight")
    gens, skipped = available_noise(noise_kinds)
    for k, why in skipped.items():
        print(f"skipping noise kind {k}: {why}", flush=True)
    warm_up(tools, args.audit)
    env = environment(torch.device("cpu"))
    env.update(cleanlab=cleanlab_version, sklearn=sklearn.__version__, numpy=np.__version__)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    t_start = time.perf_counter()
    with open(args.out, "a" if args.append else "x") as fh:
        for seed in seeds:
            x, y = load_data(args.quick, seed, args.dataset)
            trusted = trusted_rows(y, seed)
            scored = np.ones(len(y), bool)
            scored[trusted] = False
            t0 = time.perf_counter()
            pca = pca_features(x, seed) if "pca" in feature_kinds else None
            t_pca = time.perf_counter() - t0
            for noise, gen in gens.items():
                noisy = gen(x, y, seed)
                if not args.audit:  # --audit: every tool, and the learned features, see the given labels
                    noisy[trusted] = y[trusted]
                verified = y[trusted] if args.audit else None
                wrong = noisy != y
                for fk in feature_kinds:
                    if fk == "pca":
                        views, t_feat = [(pca, np.arange(len(y)))], t_pca
                    else:  # trained once per (seed, noise kind), shared by every tool
                        t0 = time.perf_counter()
                        views = learned_views(x, noisy, seed)
                        t_feat = time.perf_counter() - t0
                    caches = [dict() for _ in views]
                    for tool in tools:
                        ls, flag = np.zeros(len(y)), np.zeros(len(y), bool)
                        raw, est, secs, extra = np.zeros(len(y)), [], 0.0, {}
                        for (z, held), cache in zip(views, caches):
                            r = run_tool(tool, z, noisy, trusted, seed, cache, verified)
                            ls[held], flag[held] = r["label_score"][held], r["is_label_issue"][held]
                            if "score" in r:
                                raw[held] = r["score"][held]
                                est.append(r["estimated_noise_rate"])
                                extra["settings"] = r["settings"]
                                if "audit" in r["settings"]:  # every call's (the settings kept are the last call's)
                                    extra.setdefault("audits", []).append(r["settings"]["audit"])
                            secs += r["seconds"]
                            if "lr_max_iter" in r:
                                extra["lr_max_iter"] = max(extra.get("lr_max_iter", 0), r["lr_max_iter"])
                                extra["seconds_pred_probs"] = extra.get("seconds_pred_probs", 0.0) + r["seconds_pred_probs"]
                        m = metrics(ls[scored], flag[scored], wrong[scored],
                                    raw[scored] if tool.startswith("fastreweight:") else None)
                        rec = dict(dataset=args.dataset, quick=args.quick, audit=args.audit, n=len(y), scored=int(scored.sum()),
                                   trusted=len(trusted), seed=seed, features=fk, feature_dim=int(views[0][0].shape[1]),
                                   calls=len(views), noise=noise, rate=ALL_NOISE[noise][0],
                                   true_noise_all=float(wrong.mean()), true_noise_scored=float(wrong[scored].mean()),
                                   **({"audit_wrong": int(wrong[trusted].sum())} if args.audit else {}),
                                   tool=tool, family=tool.split(":")[0], **m, seconds=secs, **extra)
                        if tool.startswith("fastreweight:"):
                            rec["estimated_noise_rate"] = float(np.mean(est)) if all(e is not None for e in est) else None
                        rec.update(inputs_hash=_hash(noisy, trusted, *[v[0] for v in views]),
                                   feature_seconds=t_feat,
                                   setup=dict(pca_dim=PCA_DIM, folds=FOLDS if fk == "learned" else None,
                                              mlp=MLP if fk == "learned" else None,
                                              trusted_per_class=TRUSTED_PER_CLASS),
                                   skipped_noise=skipped, env=env)
                        fh.write(json.dumps(rec) + "\n")
                        fh.flush()
                        print(f"seed {seed} {fk:>7} {noise:>9} {tool:>26}: AUROC {m['auroc']:.4f}  P@k {m['precision_at_k']:.3f}  "
                              f"precision {m['precision']:.3f}  recall {m['recall']:.3f}  flagged {m['flagged']:>4}  "
                              f"{secs:.2f} s", flush=True)
    print(f"done in {time.perf_counter() - t_start:.0f} s -> {args.out}", flush=True)


if __name__ == "__main__":
    main()
