"""Neighbour agreement with trust: each row's label against the labels of its nearest rows, where the
clean subset's rows count more and every other row counts as much as its own label is believed.

For a row ``i`` with unit-norm features ``z_i`` (the rows as given by default; ``geometry``) and given
label ``y_i``, its ``k`` nearest rows ``j`` of the reference set (cosine similarity ``s_ij``, the row
itself excluded) vote with weight

    w_ij = exp((s_ij − 1) / temperature) · t_j,

where the trust ``t_j`` is ``clean_weight`` for a clean row (label trusted) and, for any other row,
its own label's vote share of the previous round (1 in the first).  The class votes
``P_ic = Σ_j w_ij [y_j = c] / Σ_j w_ij`` give the score ``P_{i,y_i} − max_{c ≠ y_i} P_ic`` (in
[−1, 1], lower: more suspicious), the label quality ``P_{i,y_i}`` and the suggested label
``argmax_c P_ic``.  ``rounds`` re-weights by the new trust: a mislabelled row stops lending its
label to its neighbours.  The reference set is every row (the clean rows included), searched once
(``nearest``: ``chunk_rows`` rows at a time against all of them, O(N·R·d) multiply-adds,
``chunk_rows × R`` similarities held at once); the ``k`` nearest rows found are kept (N×k) for every
round, and ``neighbour_votes_by_k`` gives the votes of several ``k`` from one search of the largest.

``clean_vote`` (β, default 0: the scorer of ``find_label_issues``) lets the clean rows speak for
themselves in the trust: each row also gets a vote from its ``clean_k`` nearest clean rows alone,
``Q_ic = Σ_{j clean} w_ij [y_j = c] / Σ_{j clean} w_ij`` (the same kernel at ``clean_temperature``, no
trust factor), and the trust of the next round is the own label's share of ``(1 − β)·P + β·Q``.  The
returned votes are still ``P``.  A cluster of similar rows flipped together vouches for its own wrong
label in ``P`` (every neighbour agrees); ``Q`` does not, so the cluster loses its trust and the clean
rows among its neighbours decide the next round.  ``NeighbourRelabel`` uses β = 0.8; for
``find_label_issues`` it raised the ranking on cluster noise but lowered it on the other kinds (a
scratch run on the label-issue benchmark's cached features, not a committed result), so its scorer
keeps β = 0.

**Geometry** (``GEOMETRIES``; ``find_label_issues`` uses ``"cosine"``, the rows as given).  Centring
the columns first (``"centred"``, the default before) made no difference on PCA features (already
centred) and lost on the penultimate features of a network (non-negative activations, whose shared
direction is part of what makes two samples alike): on MNIST-5k at 10% noise, seeds 0–5, the
cross-fitted MLP features' AUROC rose from 0.883 to 0.912 on boundary noise and from 0.926 to 0.941
on confusion noise with the plain cosine, and fell from 0.885 to 0.868 on cluster noise (still above
cleanlab's 0.796; a scratch run on this machine's features, k = 30; docs/label-issues.md has the
committed rerun).  Scaling each column to unit variance (``"standardised"``) gave near-constant columns
(the border pixels of scikit-learn's digits, the trailing components of a PCA) as much say as the
informative ones.  ``NeighbourRelabel`` (the trainer) keeps the standardised columns it was tuned with.

**Neighbourhood size.**  ``k = 10`` ranked the wrong labels better than 30 where they sit where
another class begins (MNIST-5k, 10% noise: boundary noise's precision@k 0.664 → 0.700 on PCA
features, 0.598 → 0.634 on learned ones), ``k = 30`` where classes overlap smoothly (Gaussian blobs:
precision of the posterior's flagged set 0.904 against 0.850 at 10% symmetric noise) and on class-pair
flips of learned features (precision@k 0.890 against 0.817).  So ``find_label_issues`` computes both
from one search and keeps the one whose calibrated votes give the clean rows' trusted labels the
higher likelihood (``posterior.choose_neighbourhood``).

``temperature=0.1`` (was 0.2): on the same-features comparison (docs/label-issues.md; MNIST-5k, PCA-64
and cross-fitted MLP features, five noise kinds, 3 seeds) it is the setting whose label quality ranks
the wrong labels at or above cleanlab's best variant in every cell, on AUROC and precision@k; 0.2 was
0.001 below on precision@k with PCA features and symmetric noise.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["neighbour_agreement", "neighbour_votes", "agreement_from_votes", "trusted_votes", "clean_votes",
           "standardised", "GEOMETRIES", "nearest", "neighbour_votes_by_k", "neighbour_search", "votes_by_k", "Search"]


#: the geometries of ``neighbour_votes``: name -> (centre the columns, scale them to unit variance)
GEOMETRIES = {"cosine": (False, False), "centred": (True, False), "standardised": (True, True)}


def standardised(features, device, scale_columns: bool = True, centre: bool = True) -> torch.Tensor:
    """Each column centred (with ``centre``) and scaled to unit variance (with ``scale_columns``), then
    each row to unit norm (float32)."""
    z = torch.as_tensor(np.asarray(features) if not isinstance(features, torch.Tensor) else features)
    z = z.to(device=device, dtype=torch.float32)
    if centre:
        z = z - z.mean(0)
    if scale_columns:
        z = z / z.std(0).clamp_min(1e-8)
    return F.normalize(z, dim=1)


def _geometry(name: str) -> tuple[bool, bool]:
    if name not in GEOMETRIES:
        raise ValueError(f"geometry must be one of {', '.join(GEOMETRIES)}, got {name!r}")
    return GEOMETRIES[name]


def nearest(z: torch.Tensor, k: int, chunk_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(similarity, index)`` (N×k, most similar first) of each row's ``k`` nearest rows of ``z``, the
    row itself excluded: one pass of ``chunk_rows × N`` similarities at a time, kept for every round."""
    N = z.shape[0]
    k = min(k, N - 1)
    vals = torch.empty(N, k, dtype=z.dtype, device=z.device)
    idx = torch.empty(N, k, dtype=torch.int64, device=z.device)
    for s in range(0, N, chunk_rows):
        sim = z[s:s + chunk_rows] @ z.T
        rows = torch.arange(sim.shape[0], device=z.device)
        sim[rows, rows + s] = -3.0  # never its own neighbour
        vals[s:s + chunk_rows], idx[s:s + chunk_rows] = sim.topk(k, dim=1)
    return vals, idx


def _votes(vals, idx, labels, trust, num_classes: int, temperature: float) -> torch.Tensor:
    """The trusted class votes of the neighbours ``idx`` at similarities ``vals`` (module doc)."""
    w = torch.exp((vals - 1) / temperature) * trust[idx]
    v = torch.zeros(idx.shape[0], num_classes, dtype=vals.dtype, device=vals.device)
    v.scatter_add_(1, labels[idx], w)
    return v / v.sum(1, keepdim=True).clamp_min(1e-30)


def clean_votes(z: torch.Tensor, labels: torch.Tensor, clean_mask: torch.Tensor, num_classes: int, k: int,
                temperature: float, chunk_rows: int = 4096) -> torch.Tensor:
    """``Q`` (N×C): the class votes of each row's ``k`` nearest clean rows (itself excluded) on the
    standardised features ``z``; ``chunk_rows × M`` similarities held at once."""
    zc, yc = z[clean_mask], labels[clean_mask].to(torch.int64)
    N, M = z.shape[0], zc.shape[0]
    k = min(k, M - 1 if M > 1 else M)
    if k < 1:
        return torch.full((N, num_classes), 1.0 / num_classes, dtype=z.dtype, device=z.device)
    clean_pos = torch.full((N,), -1, dtype=torch.int64, device=z.device)
    clean_pos[clean_mask] = torch.arange(M, device=z.device)
    votes = torch.empty(N, num_classes, dtype=z.dtype, device=z.device)
    for s in range(0, N, chunk_rows):
        sim = z[s:s + chunk_rows] @ zc.T
        pos = clean_pos[s:s + chunk_rows]
        own = torch.nonzero(pos >= 0)[:, 0]
        sim[own, pos[own]] = -3.0  # a clean row is not its own neighbour
        val, nb = sim.topk(k, dim=1)
        w = torch.exp((val - 1) / temperature)
        v = torch.zeros(sim.shape[0], num_classes, dtype=z.dtype, device=z.device).scatter_add_(1, yc[nb], w)
        votes[s:s + chunk_rows] = v / v.sum(1, keepdim=True).clamp_min(1e-30)
    return votes


def trusted_votes(z: torch.Tensor, labels: torch.Tensor, clean_mask: torch.Tensor, *, num_classes: int, k: int,
                  temperature: float, clean_weight: float, rounds: int, clean_vote: float = 0.0, clean_k: int = 10,
                  clean_temperature: float = 0.1, chunk_rows: int = 4096, neighbours=None) -> torch.Tensor:
    """The class votes ``P`` (N×C) after ``rounds`` rounds on standardised features ``z``
    (``standardised``), ``labels`` (integer) and ``clean_mask`` (bool) on ``z``'s device (module doc).
    ``neighbours``: ``nearest(z, k', ...)`` for some ``k' >= k``, when the caller already has it."""
    labels = labels.to(torch.int64)
    vals, idx = nearest(z, k, chunk_rows) if neighbours is None else neighbours
    vals, idx = vals[:, :k], idx[:, :k]
    trust = torch.ones(z.shape[0], dtype=z.dtype, device=z.device)
    trust[clean_mask] = clean_weight
    Q = (clean_votes(z, labels, clean_mask, num_classes, clean_k, clean_temperature, chunk_rows) if clean_vote > 0
         else None)
    P = None
    for _ in range(rounds):
        P = _votes(vals, idx, labels, trust, num_classes, temperature)
        belief = P if Q is None else (1 - clean_vote) * P + clean_vote * Q
        own = belief.gather(1, labels[:, None])[:, 0]
        trust = torch.where(clean_mask, torch.full_like(own, clean_weight), own)
    return P


def neighbour_votes(features, labels, clean_mask, *, num_classes: int, k: int = 10, temperature: float = 0.1,
                    clean_weight: float = 3.0, rounds: int = 3, clean_k: int | None = None,
                    clean_temperature: float = 0.1, chunk_rows: int = 4096, device="cpu",
                    geometry: str = "cosine"):
    """``(P, Q)``: the trusted votes ``P`` (N×C numpy) of the module doc and, when ``clean_k`` is given,
    the clean rows' own votes ``Q`` (``clean_votes``; else ``None``).  Both exclude each row itself.
    ``geometry`` (``GEOMETRIES``): the cosine of the rows as given, of centred columns, or of centred
    columns scaled to unit variance (module doc)."""
    by_k, Q = neighbour_votes_by_k(features, labels, clean_mask, num_classes=num_classes, ks=(k,),
                                   temperature=temperature, clean_weight=clean_weight, rounds=rounds, clean_k=clean_k,
                                   clean_temperature=clean_temperature, chunk_rows=chunk_rows, device=device,
                                   geometry=geometry)
    return by_k[k], Q


def neighbour_votes_by_k(features, labels, clean_mask, *, num_classes: int, ks=(10, 30), temperature: float = 0.1,
                         clean_weight: float = 3.0, rounds: int = 3, clean_k: int | None = None,
                         clean_temperature: float = 0.1, chunk_rows: int = 4096, device="cpu",
                         geometry: str = "cosine"):
    """``({k: P}, Q)``: ``neighbour_votes``' ``P`` for every neighbourhood size of ``ks``, from one
    neighbour search (the ``max(ks)`` nearest rows, kept for every round and every ``k``)."""
    if not ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ks):
        raise ValueError(f"ks must be a non-empty sequence of positive integers (neighbourhood sizes), got {ks!r}")
    found = neighbour_search(features, max(ks), chunk_rows=chunk_rows, device=device, geometry=geometry)
    return votes_by_k(found, labels, clean_mask, num_classes=num_classes, ks=ks, temperature=temperature,
                      clean_weight=clean_weight, rounds=rounds, clean_k=clean_k,
                      clean_temperature=clean_temperature, chunk_rows=chunk_rows)


class Search(NamedTuple):
    """The rows in the search's geometry (``z``) and each row's ``k`` nearest rows (``vals``, ``idx``)."""
    z: torch.Tensor
    vals: torch.Tensor
    idx: torch.Tensor


def neighbour_search(features, k: int, *, chunk_rows: int = 4096, device="cpu", geometry: str = "cosine") -> Search:
    """The ``k`` nearest rows of every row (itself excluded), searched once: the part of
    ``neighbour_votes_by_k`` that does not depend on the labels, so votes under other labels reuse it."""
    centre, scale = _geometry(geometry)
    z = standardised(features, device, scale, centre)
    return Search(z, *nearest(z, k, chunk_rows))


def votes_by_k(found: Search, labels, clean_mask, *, num_classes: int, ks=(10, 30), temperature: float = 0.1,
               clean_weight: float = 3.0, rounds: int = 3, clean_k: int | None = None, clean_temperature: float = 0.1,
               chunk_rows: int = 4096):
    """``neighbour_votes_by_k``' ``({k: P}, Q)`` from a ``neighbour_search`` of at least ``max(ks)`` rows."""
    z = found.z
    y = torch.as_tensor(np.asarray(labels), dtype=torch.int64, device=z.device)
    clean = torch.as_tensor(np.asarray(clean_mask), dtype=torch.bool, device=z.device)
    by_k = {k: trusted_votes(z, y, clean, num_classes=num_classes, k=k, temperature=temperature,
                             clean_weight=clean_weight, rounds=rounds, chunk_rows=chunk_rows,
                             neighbours=(found.vals, found.idx)).cpu().numpy() for k in ks}
    Q = (None if clean_k is None else
         clean_votes(z, y, clean, num_classes, clean_k, clean_temperature, chunk_rows).cpu().numpy())
    return by_k, Q


def agreement_from_votes(P: np.ndarray, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(score, label_quality, suggested)`` from the votes ``P`` (N×C): ``P_{i,y_i} − max_{c≠y_i} P_ic``,
    ``P_{i,y_i}`` and ``argmax_c P_ic``."""
    y = np.asarray(labels, np.int64)
    rows = np.arange(y.size)
    own = P[rows, y]
    other = P.copy()
    other[rows, y] = -1.0
    return own - other.max(1), own, P.argmax(1)


def neighbour_agreement(features, labels, clean_mask, *, num_classes: int, k: int = 10, temperature: float = 0.1,
                        clean_weight: float = 3.0, rounds: int = 3, chunk_rows: int = 4096, device="cpu",
                        geometry: str = "cosine"):
    """``(score, label_quality, suggested)`` of every row (numpy arrays; see the module doc).

    ``features`` N×d, ``labels`` N (the trusted label on clean rows), ``clean_mask`` N bool."""
    P, _ = neighbour_votes(features, labels, clean_mask, num_classes=num_classes, k=k, temperature=temperature,
                           clean_weight=clean_weight, rounds=rounds, chunk_rows=chunk_rows, device=device,
                           geometry=geometry)
    return agreement_from_votes(P, labels)
