"""Human-facing views of a dataset: `describe` (for `pointkd data info`) and a PNG preview."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pointkd.errors import DataError


def describe(path: str | Path, splits: list[str] | tuple[str, ...] = ("train", "test"),
             num_points: int | None = None) -> str:
    """Per split: shapes, per-class counts, points per shape, bounds, fingerprint."""
    from pointkd.data import load_split

    sets, notes = {}, []
    for split in splits:
        try:
            sets[split] = load_split(path, split, num_points=num_points)
        except DataError as exc:
            if "no HDF5 file for split" in str(exc) or "no files for split" in str(exc):
                notes.append(f"(no '{split}' split)")
                continue
            raise
    if not sets:
        raise DataError(f"{path}: none of the splits {', '.join(splits)} exist")
    first = next(iter(sets.values()))
    lines = [f"dataset {path}: {first.num_classes} classes"]
    header = f"{'class':>20s} " + " ".join(f"{s:>7s}" for s in sets)
    lines += ["", header]
    counts = {s: np.bincount(d.labels, minlength=d.num_classes) for s, d in sets.items()}
    for c, name in enumerate(first.class_names):
        lines.append(f"{name:>20s} " + " ".join(f"{counts[s][c]:7d}" for s in sets))
    lines.append(f"{'total':>20s} " + " ".join(f"{len(d):7d}" for d in sets.values()))
    lines.append("")
    for split, d in sets.items():
        lo, hi = d.points.min(axis=(0, 1)), d.points.max(axis=(0, 1))
        lines.append(f"{split}: {len(d)} shapes x {d.points.shape[1]} points, bounds "
                     f"x[{lo[0]:.3f}, {hi[0]:.3f}] y[{lo[1]:.3f}, {hi[1]:.3f}] "
                     f"z[{lo[2]:.3f}, {hi[2]:.3f}] (unit-sphere normalised), "
                     f"fingerprint {d.fingerprint()}")
    return "\n".join(lines + notes)


def save_preview(ds, out: str | Path, per_class: int = 3, max_classes: int = 12) -> None:
    """A grid of sample clouds: one row per class (first `max_classes`), `per_class` each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = list(range(min(ds.num_classes, max_classes)))
    fig = plt.figure(figsize=(2.0 * per_class, 2.0 * len(classes)))
    for row, c in enumerate(classes):
        idx = np.flatnonzero(ds.labels == c)[:per_class]
        for col, i in enumerate(idx):
            ax = fig.add_subplot(len(classes), per_class, row * per_class + col + 1,
                                 projection="3d")
            p = ds.points[i]
            ax.scatter(p[:, 0], p[:, 2], p[:, 1], s=0.5, c=p[:, 1], cmap="viridis")
            ax.set_axis_off()
            lim = np.abs(p).max()
            ax.set(xlim=(-lim, lim), ylim=(-lim, lim), zlim=(-lim, lim))
            if col == 0:
                ax.set_title(ds.class_names[c], fontsize=8)
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
