"""The identity of a run's data, kept beside its checkpoints (``run.json``) and checked by ``--resume``:
a checkpoint of a run on other data is refused."""
from __future__ import annotations

import json
import os
import sys

import numpy as np


#: ``OUT/checkpoints/seed-S/run.json``: the data identity of the run whose checkpoints the directory holds
RUN_FILE = "run.json"
_RUN_FORMAT = "fastreweight.cli-run"
#: the settings that make a run's data (its noisy labels, clean subset, inputs), and their flags
_IDENTITY_FLAGS = dict(dataset="--dataset", noise="--noise", rate="--rate", clean_size="--clean-size",
                       seed="--seed", augment="--no-augment")


def _identity(s: dict, seed: int) -> dict:
    return dict(dataset=s["dataset"], noise=s["noise"], rate=float(s["rate"]), clean_size=int(s["clean_size"]),
                seed=int(seed), augment=bool(s.get("augment")))


def _fingerprint(data) -> str:
    """A hash of the training labels (given and true), the training rows' source positions and the clean
    subset: equal for the same data, different for another noisy label set."""
    import hashlib

    h = hashlib.sha256()
    for t in (data.y_train, data.y_train_true, data.idx_train, data.y_clean, data.x_clean):
        a = np.ascontiguousarray(t.detach().cpu().numpy())
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _read_run_file(resume: str) -> dict | None:
    """The run file beside the checkpoint ``resume``, or ``None`` where there is none."""
    path = os.path.join(os.path.dirname(os.path.abspath(resume)), RUN_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            run = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"--resume {resume}: its run file {path} cannot be read ({e})") from None
    if not isinstance(run, dict) or run.get("format") != _RUN_FORMAT or not isinstance(run.get("identity"), dict):
        raise ValueError(f"--resume {resume}: {path} is not a fastreweight run file")
    return run


def _check_resume(resume: str, s: dict, seed: int) -> dict | None:
    """Refuse a checkpoint of a run on other data (another dataset, noise, rate, clean subset size, seed or
    augmentation); returns its run file (``None`` for a checkpoint written without one, checked by its
    ``seed-S`` directory only, with a warning)."""
    if not os.path.isfile(resume):
        raise FileNotFoundError(f"--resume: checkpoint {resume} does not exist")
    run = _read_run_file(resume)
    ours = _identity(s, seed)
    if run is None:
        d = os.path.basename(os.path.dirname(os.path.abspath(resume)))
        if d.startswith("seed-") and d[5:].lstrip("-").isdigit() and int(d[5:]) != seed:
            raise ValueError(f"--resume {resume} is a checkpoint of seed {int(d[5:])} (its directory {d}), this run's "
                             f"seed is {seed}: resume with --seed {int(d[5:])}")
        print(f"fastreweight: warning: --resume {resume} has no {RUN_FILE} beside it: cannot check that it is a "
              "checkpoint of this run's data (dataset, noise, rate, clean size, seed)", file=sys.stderr)
        return None
    theirs = run["identity"]
    diff = []
    for k, flag in _IDENTITY_FLAGS.items():
        a, b = theirs.get(k), ours[k]
        if k == "rate" and theirs.get("noise") == ours["noise"] == "none":
            continue  # no noise: the rate is not used
        if a != b and not (isinstance(a, (int, float)) and isinstance(b, (int, float)) and float(a) == float(b)):
            diff.append(f"{k} {a!r} (this run: {b!r})" if k != "augment" else
                        f"augment {a!r} (this run: {b!r}; {flag})")
    if diff:
        raise ValueError(f"--resume {resume} is a checkpoint of a run on other data: its {'; '.join(diff)}. "
                         "Resume with the checkpoint's --dataset, --noise, --rate, --clean-size, --seed "
                         "(and augmentation), or start a new run")
    return run
