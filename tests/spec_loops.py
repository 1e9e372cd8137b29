"""Literal transcriptions of SPEC §3, written from the text with plain Python loops.

They share no code with the library (no torch ops beyond reading values out) and are slow by
design: they exist to pin down what the SPEC says, for small inputs.
"""
import math


def _rows(t):
    return [[float(v) for v in row] for row in t.tolist()]


def _dot(a, b):
    return math.fsum(p * q for p, q in zip(a, b))


def spec_class_mean_center(Z, u):
    """mu = (1/C') Σ_{c present} mean_{j: u_j = c} Z_j  (SPEC §3.1)."""
    classes = sorted(set(u))
    d = len(Z[0])
    mu = [0.0] * d
    for c in classes:
        members = [Z[j] for j in range(len(Z)) if u[j] == c]
        for t in range(d):
            mu[t] += math.fsum(m[t] for m in members) / len(members) / len(classes)
    return mu


def spec_similarity(X, y, Z, u, C, *, center="clean", cosine=False, E=None, F=None):
    """S_ic for one layer (lists of rows), SPEC §3.1–3.3.  Absent classes -> None."""
    X, Z = _rows(X), _rows(Z)
    y = [int(v) for v in y.tolist()]
    u = [int(v) for v in u.tolist()]
    if E is not None:
        E, F = _rows(E), _rows(F)
    if center == "clean":
        mu = spec_class_mean_center(Z, u)
        X = [[a - m for a, m in zip(row, mu)] for row in X]
        Z = [[a - m for a, m in zip(row, mu)] for row in Z]

    def norm(r):
        return math.sqrt(_dot(r, r))

    def kernel(i, j):
        k = _dot(X[i], Z[j])
        if cosine:
            nx, nz = norm(X[i]), norm(Z[j])
            k = k / (nx * nz) if nx > 0 and nz > 0 else 0.0
        if E is not None:
            g = _dot(E[i], F[j])
            if cosine:
                ne, nf = norm(E[i]), norm(F[j])
                g = g / (ne * nf) if ne > 0 and nf > 0 else 0.0
            k *= g
        return k

    S = []
    for i in range(len(X)):
        row = []
        for c in range(C):
            members = [j for j in range(len(Z)) if u[j] == c]
            row.append(math.fsum(kernel(i, j) for j in members) / len(members) if members else None)
        S.append(row)
    return S


def spec_fbr(S, y, shift, alpha):
    """d_i of SPEC §3.4 from a similarity table with None for absent classes."""
    y = [int(v) for v in y.tolist()]
    out = []
    for i, row in enumerate(S):
        present = [c for c in range(len(row)) if row[c] is not None]
        own = row[y[i]]
        others = [row[c] for c in present if c != y[i]]
        if shift == "second":
            b = sorted((row[c] for c in present), reverse=True)[1]
        elif shift == "max":
            b = max(others)
        elif shift == "mean":
            b = math.fsum(others) / len(others)
        else:
            b = 0.0
        out.append((own - b) - alpha * math.fsum(s - b for s in others))
    return out


def spec_threshold_weights(r):
    """SPEC §3.6, the published rule."""
    r = [float(v) for v in r]
    negs = [abs(v) for v in r if v < 0]
    if not negs:
        return [1.0] * len(r)
    eta = 0.5 / min(negs)
    w = [min(1.0, max(0.0, 0.5 + eta * v)) for v in r]
    return [0.0 if v <= 0.5 else v for v in w]
