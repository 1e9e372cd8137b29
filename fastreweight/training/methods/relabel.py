"""Neighbour relabelling: relabel the confident flips, down-weight the doubtful rows (``docs/instance-noise.md``).

Every ``every`` epochs from epoch ``start`` the training rows are scored by neighbour agreement with
trust (``fastreweight.label_issues.neighbours``: each row's label against the labels of its ``k``
nearest rows, the clean subset's rows counting ``clean_weight``, every other row as much as its own
label is believed after the previous round) in a feature space ``features``.  The belief mixes the
neighbour vote with the vote of the row's ``clean_k`` nearest clean rows alone, the latter with share
``clean_vote`` (default 0.8): rows flipped together as a cluster agree with each other but not with
the clean rows near them, so they stop vouching for each other (on MLP cluster noise 0.737 → 0.785
MNIST-5k and 0.803 → 0.868 digits, about one point lost on symmetric noise; docs/instance-noise.md).
The spaces:

* ``"input"``: a fixed embedding of the inputs — the rows flattened (a seeded Gaussian projection to
  ``1024`` dimensions first when wider), centred and projected on their top ``pca_dim`` principal
  directions (the covariance's eigenvectors, deterministic).  The training inputs are read from the
  batches of the first epoch, so nothing beyond ``(x, y, idx)`` batches is needed;
* ``"model"``: the model's penultimate features of the training rows, taken from the training forwards
  of the epoch just ended (free), and of the clean rows (eval mode);
* ``"both"`` (default): the two spaces' class votes averaged (the input space alone before ``start``'s
  model features exist).

The input space needs every batch's ``x`` to flatten to the same width as the clean subset's, and the
stored training inputs (N × min(D, 1024) float32, plus the D × 1024 projection when D > 1024) to fit in
``input_budget_mb``.  When that fails — inputs of varying shape, a clean subset of another shape, a dataset
too large for the budget — ``"both"`` warns once (``RuntimeWarning``, naming the reason) and continues with
the model's features alone; ``features="input"`` raises ``ValueError`` instead.

Under ``Distributed()`` each rank stores the rows of its own batches; at a scoring the ranks all-reduce
the epoch's given labels, features and stored inputs (``_share_rows``), and every rank scores all N rows,
so the labels and weights stay identical on every rank.

With the class votes ``P`` of a row with given label ``y`` and suggestion ``s = argmax P``: the row is
**relabelled** to ``s`` when ``P_s − P_y ≥ margin``; otherwise its weight is
``clip(1 + (P_y − max_{c≠y} P_c) / margin, 0, 1)`` (1 when its label wins the vote).  Each scoring starts
from the given labels (a relabelling is never compounded).  The loss is ``Σ w_i·CE(x_i, t_i) / Σ w_i``: for a
row kept at its label ``t_i`` is that label; for a relabelled row it is the soft target
``(1 − vote_target)·onehot(s) + vote_target·P`` (default ``vote_target=0.3``), so a row relabelled on a
narrow vote keeps part of its mass on its given label and the runner-up classes.  Why: on symmetric
noise most wrong relabellings are correct labels at a class boundary (about 200 rows per MNIST-5k run at
20%), and a hard target spends the model on each of them in full; the soft target took MNIST-5k
symmetric 20% from 0.906 to 0.919 and pair flips from 0.905 to 0.915, moving the instance-dependent
cells by −0.5 to +0.4 points (docs/instance-noise.md).  ``vote_target=0`` is the hard relabel.  Before
the first scoring it is ERM.
"""
from __future__ import annotations

import warnings

import torch

from ...label_issues.neighbours import standardised, trusted_votes
from ..features import FeatureSource
from .base import Method
from .fbr import with_trusted_rows

__all__ = ["NeighbourRelabel"]

_FEATURES = ("input", "model", "both")
_PROJECT_ABOVE = 1024


def _check_int(name, v, lo):
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ValueError(f"{name} must be an int >= {lo}, got {v!r}")
    return v


def _check_share(name, v):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
        raise ValueError(f"{name} must be a number in [0, 1], got {v!r}")
    return float(v)


def _check_pos(name, v, hi=None):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 or (hi is not None and v > hi):
        what = f"a number in (0, {hi}]" if hi is not None else "a positive number"
        raise ValueError(f"{name} must be {what}, got {v!r}")
    return float(v)


def _check_finite(what: str, t: torch.Tensor) -> None:
    """Non-finite rows would fail deep inside ``eigh`` or the neighbour search; a scoring reads the
    device back anyway (the relabelled count), so the check is always on, not only with check_values."""
    bad = ~torch.isfinite(t.reshape(t.shape[0], -1)).all(1)
    if bool(bad.any()):
        rows = bad.nonzero().flatten()
        raise ValueError(f"NeighbourRelabel: {what} contain NaN or Inf values ({rows.numel()} rows, e.g. "
                         f"{rows[:5].tolist()}); they must be finite to be scored")


class NeighbourRelabel(Method):
    """See the module doc.  ``margin`` (default 0.15): the vote lead a suggestion needs to replace the
    given label, and the scale of the down-weighting below it.  ``clean_vote`` in [0, 1] (0: trust from
    the neighbour vote alone, the scorer of ``find_label_issues``), ``clean_k`` >= 1, and
    ``clean_temperature`` > 0 the clean vote's kernel temperature; ``vote_target`` in [0, 1] the share of
    the vote in a relabelled row's target (0: the suggestion alone)."""

    name = "relabel"
    supports_distributed = True

    def __init__(self, *, features: str = "both", start: int = 1, every: int = 5, margin: float = 0.15, k: int = 30,
                 temperature: float = 0.2, clean_weight: float = 3.0, rounds: int = 3, clean_vote: float = 0.8,
                 clean_k: int = 10, clean_temperature: float = 0.1, vote_target: float = 0.3, pca_dim: int = 64,
                 input_budget_mb: float = 1024.0) -> None:
        super().__init__()
        if features not in _FEATURES:
            raise ValueError(f"features must be one of {', '.join(_FEATURES)}, got {features!r}")
        self.features = features
        self.start, self.every = _check_int("start", start, 1), _check_int("every", every, 1)
        self.margin = _check_pos("margin", margin, 1.0)
        self.k, self.rounds, self.pca_dim = _check_int("k", k, 1), _check_int("rounds", rounds, 1), _check_int(
            "pca_dim", pca_dim, 1)
        self.temperature, self.clean_weight = _check_pos("temperature", temperature), _check_pos("clean_weight",
                                                                                                 clean_weight)
        self.input_budget_mb = _check_pos("input_budget_mb", input_budget_mb)
        self.clean_vote, self.vote_target = _check_share("clean_vote", clean_vote), _check_share("vote_target",
                                                                                                 vote_target)
        self.clean_k = _check_int("clean_k", clean_k, 1)
        self.clean_temperature = _check_pos("clean_temperature", clean_temperature)

    def options(self) -> dict:
        return dict(features=self.features, start=self.start, every=self.every, margin=self.margin, k=self.k,
                    temperature=self.temperature, clean_weight=self.clean_weight, rounds=self.rounds,
                    clean_vote=self.clean_vote, clean_k=self.clean_k, clean_temperature=self.clean_temperature,
                    vote_target=self.vote_target, pca_dim=self.pca_dim, input_budget_mb=self.input_budget_mb)

    def attach(self, ctx) -> None:
        super().attach(ctx)
        N, dev = ctx.num_samples, ctx.device
        self.given = torch.full((N,), -1, dtype=torch.int64, device=dev)  # the labels as the batches give them
        self.labels = torch.full((N,), -1, dtype=torch.int64, device=dev)  # the current labels (-1: the given one)
        self.weights = torch.ones(N, dtype=ctx.weight_dtype, device=dev)
        self.vote_slot = None  # N: the row of vote_of_flips holding a relabelled row's vote, -1 elsewhere
        self.vote_of_flips = None  # F×C: the class votes of the relabelled rows (vote_target > 0 only)
        self.inputs = None  # N×D flattened (projected) training inputs, filled during the first epoch
        self.embedding = None  # (N + M)×pca_dim input embedding, training rows then clean rows
        self.model_feats = None  # N×d penultimate features of the last epoch's training forwards
        self.scorings = 0
        self.relabelled = []  # rows relabelled at each scoring
        self.input_off = None  # why the input space was given up ("both" only), None while it is used
        self._seen = torch.zeros(N, dtype=torch.int64, device=dev)  # this epoch's batches on this rank, per row
        self._src = FeatureSource(ctx.model, from_training_forward=self.features != "input",
                                  distributed=ctx.parallel.distributed)
        self._proj = None

    def close(self) -> None:
        self._src.close()

    # -- one step -------------------------------------------------------------------------------
    def _projection(self, D: int):
        if D <= _PROJECT_ABOVE:
            return None
        if self._proj is None:
            g = torch.Generator().manual_seed(0)
            self._proj = (torch.randn(D, _PROJECT_ABOVE, generator=g) / _PROJECT_ABOVE ** 0.5).to(self.ctx.device)
        return self._proj

    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        f = x.detach().reshape(x.shape[0], -1).float()
        p = self._projection(f.shape[1])
        return f if p is None else f @ p

    def _give_up_input(self, reason: str) -> None:
        """The input space cannot be used: ``"input"`` raises, ``"both"`` warns and keeps the model's."""
        if self.features == "input":
            raise ValueError(f"NeighbourRelabel(features='input'): {reason}")
        warnings.warn(f"NeighbourRelabel: input-space votes off ({reason}); using the model's penultimate "
                      f"features only", RuntimeWarning, stacklevel=3)
        self.input_off, self.inputs, self.embedding, self._proj = reason, None, None, None

    def _input_bytes(self, D: int) -> int:
        width = min(D, _PROJECT_ABOVE)
        return 4 * (self.ctx.num_samples * width + (D * _PROJECT_ABOVE if D > _PROJECT_ABOVE else 0))

    def _store_inputs(self, x, idx) -> None:
        D = x[0].numel() if x.dim() > 0 and x.shape[0] else 0
        if self.inputs is None:
            need = self._input_bytes(D)
            if need > self.input_budget_mb * 2 ** 20:
                return self._give_up_input(f"storing the training inputs needs {need / 2 ** 20:.0f} MiB, over "
                                           f"input_budget_mb={self.input_budget_mb:g}")
            self._width = D
        elif D != self._width:
            return self._give_up_input(f"a batch's inputs flatten to {D} values, earlier ones to {self._width}")
        f = self._flat(x)
        if self.inputs is None:
            self.inputs = torch.zeros(self.ctx.num_samples, f.shape[1], dtype=torch.float32, device=self.ctx.device)
        self.inputs[idx] = f

    def loss(self, x, y, idx):
        ctx = self.ctx
        rows = idx.shape[0]
        y_rows = y[:rows]
        self.given[idx] = y_rows
        self._seen[idx] += 1
        if rows and self.features != "model" and self.embedding is None and self.input_off is None:
            self._store_inputs(x[:rows], idx)
        if self.features != "input":
            feats, logits = self._src.train_forward(ctx.net, x, rows, ctx.precision)
            if self.model_feats is None:
                self.model_feats = torch.zeros(ctx.num_samples, feats.shape[1], dtype=torch.float32,
                                               device=ctx.device)
            self.model_feats[idx] = feats.float()
        else:
            logits = ctx.forward(x)
        if self.scorings == 0:
            return ctx.mean_ce(logits, y), None
        cur = self.labels[idx]
        y_eff = torch.cat([torch.where(cur >= 0, cur, y_rows), y[rows:]])
        w = self.weights[idx]
        losses = self._soft_relabelled(ctx.per_sample_ce(logits, y_eff), logits, idx)
        return ctx.parallel.weighted_loss(losses, with_trusted_rows(w.to(losses.dtype), y.shape[0]),
                                          "weight_sum"), w

    def _soft_relabelled(self, losses, logits, idx):
        """``losses`` with each relabelled row's hard CE mixed with its CE against its vote (module doc).
        Dense over the batch's scored rows, so no step waits on the device for a count of relabelled rows."""
        if self.vote_slot is None:
            return losses
        rows = idx.shape[0]
        slot = self.vote_slot[idx]
        logp = torch.log_softmax(self.ctx.precision.loss_input(logits[:rows]), 1)
        vote_ce = -(self.vote_of_flips[slot.clamp_min(0)].to(logp.dtype) * logp).sum(1).to(losses.dtype)
        hard = losses[:rows]
        head = torch.where(slot >= 0, (1 - self.vote_target) * hard + self.vote_target * vote_ce, hard)
        return head if losses.shape[0] == rows else torch.cat([head, losses[rows:]])

    # -- scoring --------------------------------------------------------------------------------
    def _input_embedding(self) -> torch.Tensor:
        ctx = self.ctx
        clean = self._flat(ctx.clean.x)
        _check_finite("the training inputs", self.inputs)
        _check_finite("the clean inputs", clean)
        X = torch.cat([self.inputs, clean])
        X = X - X.mean(0)
        cov = (X.T @ X).double() / max(X.shape[0] - 1, 1)
        _, vecs = torch.linalg.eigh(cov)
        basis = vecs[:, -min(self.pca_dim, X.shape[1]):].float()
        return X @ basis

    @torch.no_grad()
    def _score(self) -> None:
        ctx = self.ctx
        M = len(ctx.clean)
        labels = torch.cat([self.given, ctx.clean.y])
        mask = torch.cat([torch.zeros_like(self.given, dtype=torch.bool),
                          torch.ones(M, dtype=torch.bool, device=ctx.device)])
        opts = dict(num_classes=ctx.num_classes, k=self.k, temperature=self.temperature,
                    clean_weight=self.clean_weight, rounds=self.rounds, clean_vote=self.clean_vote,
                    clean_k=self.clean_k, clean_temperature=self.clean_temperature)
        votes = []
        if self.features != "model" and self.input_off is None and self.embedding is None:
            cw = ctx.clean.x[0].numel() if len(ctx.clean) else self._width
            if cw != self._width:
                self._give_up_input(f"the clean inputs flatten to {cw} values, the training inputs to "
                                    f"{self._width}")
            else:
                self.embedding = self._input_embedding()
                self.inputs = None
        if self.features != "model" and self.input_off is None:
            votes.append(trusted_votes(standardised(self.embedding, ctx.device), labels, mask, **opts))
        if self.features != "input":
            Fc = self._src.eval_features(ctx.clean.x, ctx.eval_batch_size).float()
            _check_finite("the model's penultimate features of the training rows", self.model_feats)
            _check_finite("the model's penultimate features of the clean rows", Fc)
            votes.append(trusted_votes(standardised(torch.cat([self.model_feats, Fc]), ctx.device), labels, mask,
                                       **opts))
        P = (votes[0] if len(votes) == 1 else (votes[0] + votes[1]) / 2)[:ctx.num_samples]
        own = P.gather(1, self.given[:, None])[:, 0]
        top, sug = P.max(1)
        lead = P.scatter(1, self.given[:, None], -1.0).max(1).values
        flip = (sug != self.given) & (top - own >= self.margin)
        self.labels = torch.where(flip, sug, torch.full_like(sug, -1))
        self._keep_votes(P, flip)
        w = (1 + (own - lead) / self.margin).clamp(0, 1)
        self.weights = torch.where(flip, torch.ones_like(w), w).to(ctx.weight_dtype)
        self.scorings += 1
        self.relabelled.append(int(flip.sum()))

    def _keep_votes(self, P, flip) -> None:
        if self.vote_target == 0 or not bool(flip.any()):
            self.vote_slot = self.vote_of_flips = None
            return
        rows = flip.nonzero()[:, 0]
        self.vote_slot = torch.full_like(self.given, -1)
        self.vote_slot[rows] = torch.arange(rows.numel(), device=rows.device)
        v = P[rows].float().clamp_min(0)
        self.vote_of_flips = v / v.sum(1, keepdim=True)

    def begin_epoch(self, epoch: int) -> None:
        self._seen.zero_()

    def _share_rows(self) -> bool:
        """Under ``Distributed()``: every rank gets every row's given label, training features and (before
        the embedding exists) stored input, each written by the rank whose shard held the row this epoch
        (averaged where a sampler's padding gave a row to two ranks).  Then every rank scores the same
        rows and reaches the same labels and weights.  Returns whether every row was seen this epoch."""
        par = self.ctx.parallel
        count = par.all_reduce(self._seen.clone())
        seen = count > 0
        self.given = torch.where(seen, par.all_reduce(torch.where(self._seen > 0, self.given, 0)) // count.clamp_min(1),
                                 self.given)
        share = count.clamp_min(1).to(torch.float32)[:, None]
        mine = (self._seen > 0)[:, None]
        if self.model_feats is not None:
            self.model_feats = par.all_reduce(torch.where(mine, self.model_feats, 0.0)) / share
        if self.inputs is not None:
            self.inputs = par.all_reduce(torch.where(mine, self.inputs, 0.0)) / share
        return bool(seen.all())

    def end_epoch(self, epoch: int) -> None:
        done = epoch + 1
        if done >= self.start and (done - self.start) % self.every == 0:
            complete = self._share_rows() if self.ctx.parallel.distributed else not bool((self._seen == 0).any())
            if not complete:
                self._raise_unseen(epoch)
            self._score()

    def _raise_unseen(self, epoch: int) -> None:
        seen = self.ctx.parallel.all_reduce(self._seen.clone()) if self.ctx.parallel.distributed else self._seen
        unseen = (seen == 0).nonzero().flatten()
        raise ValueError(f"NeighbourRelabel: {unseen.numel()} of {self.ctx.num_samples} training rows (e.g. "
                         f"{unseen[:5].tolist()}) were not in any batch of epoch {epoch}, a scoring epoch; it scores "
                         "every row from that epoch's batches, so every idx in 0..num_samples-1 must appear in each "
                         "epoch. A DataLoader with drop_last=True, a sampler with replacement "
                         "(RandomSampler(replacement=True), WeightedRandomSampler) or over a subset "
                         "(SubsetRandomSampler, num_samples < N) skips rows: use shuffle=True without drop_last, a "
                         "DistributedSampler, or TensorLoader")

    # -- state ----------------------------------------------------------------------------------
    @property
    def sample_weights(self):
        return self.weights

    @property
    def current_labels(self) -> torch.Tensor:
        """The labels the loss uses now (the given label where not relabelled)."""
        return torch.where(self.labels >= 0, self.labels, self.given)

    def summary(self) -> dict:
        out = {"relabelled": list(self.relabelled)}
        if self.input_off is not None:
            out["input_off"] = self.input_off
        return out

    def state_dict(self) -> dict:
        return {"given": self.given, "labels": self.labels, "weights": self.weights, "inputs": self.inputs,
                "embedding": self.embedding, "model_feats": self.model_feats, "scorings": self.scorings,
                "vote_slot": self.vote_slot, "vote_of_flips": self.vote_of_flips,
                "relabelled": list(self.relabelled), "input_off": self.input_off,
                "width": getattr(self, "_width", None)}

    def load_state_dict(self, state: dict) -> None:
        for k in ("given", "labels", "weights", "inputs", "embedding", "model_feats"):
            v = state[k]
            setattr(self, k, None if v is None else v.to(self.ctx.device))
        for k in ("vote_slot", "vote_of_flips"):  # absent from checkpoints written before vote_target
            v = state.get(k)
            setattr(self, k, None if v is None else v.to(self.ctx.device))
        self.scorings, self.relabelled = int(state["scorings"]), list(state["relabelled"])
        self.input_off = state.get("input_off")
        if state.get("width") is not None:
            self._width = int(state["width"])
