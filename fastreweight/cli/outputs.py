"""The files ``train`` and ``demo`` write: output paths that are never an existing file (``--rename``
picks ``results-2.json`` and so on), writes that never replace a file, JSON, and the plot."""
from __future__ import annotations

import json
import os

from ..train import TrainResult


class OutputExists(RuntimeError):
    pass


def _dir_taken(path: str) -> bool:
    """A directory that a run cannot write into: a file, or a directory that holds anything."""
    return os.path.exists(path) and (not os.path.isdir(path) or bool(os.listdir(path)))


def _output_paths(out_dir: str, stems: tuple[str, ...], exts: tuple[str, ...], rename: bool,
                  dirs: tuple[str, ...] = ()) -> list[str]:
    """Paths ``out_dir/stem.ext`` that do not exist yet; never an existing file.  ``dirs``: directories
    ``out_dir/DIR`` (e.g. ``checkpoints/seed-0``, renamed with the files: ``checkpoints-2/seed-0``; the
    first component takes the suffix) that must be absent or empty; their paths follow the files'."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise OutputExists(f"--out {out_dir} exists and is not a directory")
    os.makedirs(out_dir, exist_ok=True)
    for k in range(1, 10_000):
        suffix = "" if k == 1 else f"-{k}"
        paths = [os.path.join(out_dir, f"{s}{suffix}.{e}") for s, e in zip(stems, exts)]
        dir_paths = []
        for d in dirs:
            head, _, tail = d.partition("/")
            dir_paths.append(os.path.join(out_dir, head + suffix, *([tail] if tail else [])))
        taken = [p for p in paths if os.path.exists(p)]
        for d in dir_paths:
            parent = os.path.dirname(d)
            if os.path.exists(parent) and not os.path.isdir(parent):
                taken.append(parent)
            elif _dir_taken(d):
                taken.append(d)
        if not taken:
            return paths + dir_paths
        if not rename:
            raise OutputExists(
                f"refusing to overwrite {', '.join(taken)}; choose another --out or pass --rename")
    raise OutputExists(f"no free file name in {out_dir}")


def _write_new(path: str, writer) -> None:
    """Write through a temporary file and an exclusive link, so an existing file is never replaced."""
    tmp = f"{path}.tmp-{os.getpid()}"
    writer(tmp)
    try:
        os.link(tmp, path)  # fails if path exists
    except FileExistsError:
        raise OutputExists(f"refusing to overwrite {path}") from None
    except OSError:  # filesystems without hard links
        if os.path.exists(path):
            raise OutputExists(f"refusing to overwrite {path}") from None
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _smooth(v: list[float], k: int) -> list[float]:
    out, buf = [], []
    for x in v:
        buf.append(x)
        if len(buf) > k:
            buf.pop(0)
        vals = [b for b in buf if b == b]
        out.append(sum(vals) / len(vals) if vals else float("nan"))
    return out


def plot_results(runs: list[tuple[str, TrainResult]], path: str, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, r) in enumerate(runs):
        c = colors[i % len(colors)]
        k = max(1, len(r.clean_weight) // 100)
        ax1.plot(_smooth(r.clean_weight, k), color=c, label=f"{label}: clean")
        ax1.plot(_smooth(r.noisy_weight, k), color=c, linestyle="--", label=f"{label}: mislabelled")
        ax2.plot(range(1, len(r.test_acc) + 1), r.test_acc, color=c, marker=".", label=label)
    ax1.set_xlabel("training step")
    ax1.set_ylabel("mean sample weight in batch")
    ax1.set_title("weights: clean (solid) vs mislabelled (dashed)")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("test accuracy")
    ax2.set_title("test accuracy")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    _write_new(path, lambda p: fig.savefig(p, format="png", dpi=100))
    plt.close(fig)


def _write_json(path: str, obj) -> None:
    def w(p):
        with open(p, "w") as f:
            json.dump(obj, f, indent=1)
    _write_new(path, w)
