"""Human-facing views of a dataset: `describe` (for `pointkd data info`) and a PNG preview."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from pointkd.data._core import MissingSplitError, PointCloudSet, normalize_unit_sphere
from pointkd.data._load import load_split
from pointkd.errors import DataError


def describe(path: str | Path, splits: list[str] | tuple[str, ...] = ("train", "test"),
             num_points: int | None = None) -> str:
    """Text for `pointkd data info`: number of classes; per split the number of shapes,
    points per shape, raw coordinate bounds and the fingerprint (of the unit-sphere
    normalised data, i.e. what training sees and record manifests compare); a per-class
    count table. Missing splits are noted; if none exists it is a DataError. A single .h5
    file is described once, whatever `splits` says."""
    sets: dict[str, PointCloudSet] = {}
    bounds: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    notes, missing = [], []
    from pointkd.data.scanobjectnn import is_scanobjectnn_file

    one_file = str(path) != "synthetic" and Path(path).is_file()
    if one_file and not is_scanobjectnn_file(Path(path)):  # one .h5 file is one split
        splits = [Path(path).stem]
    for split in dict.fromkeys(splits):  # de-duplicated, order kept
        try:
            ds = load_split(path, split, num_points=num_points, normalize=False)
        except MissingSplitError as exc:
            notes.append(f"(no '{split}' split: skipped)")
            missing.append(str(exc))
            continue
        bounds[split] = ds.points.min(axis=(0, 1)), ds.points.max(axis=(0, 1))
        ds.points = normalize_unit_sphere(ds.points)
        sets[split] = ds
    if not sets:
        raise DataError(f"none of the splits {', '.join(splits)} exist: {missing[0]}")
    names = max((d.class_names for d in sets.values()), key=len)
    unlabelled = not any(d.labelled for d in sets.values())
    lines = [f"dataset {path}: " + ("shapes without labels (a pool for `pointkd record`; "
                                    "its rows get the KD terms only)" if unlabelled
                                    else f"{len(names)} classes")]
    for split, d in sets.items():
        lo, hi = bounds[split]
        box = " ".join(f"{a}[{lo[i]:.4g}, {hi[i]:.4g}]" for i, a in enumerate("xyz"))
        lines += [f"{split}: {len(d)} shapes x {d.points.shape[1]} points per shape",
                  f"  raw bounds {box}",
                  f"  fingerprint {d.fingerprint()} (unit-sphere normalised)"]
    if unlabelled:
        return "\n".join(lines + notes)
    width = max(12, *(len(n) for n in names))
    counts = {s: np.bincount(d.labels, minlength=len(names)) for s, d in sets.items()}
    cols = {s: max(7, len(s)) for s in sets}
    lines += ["", f"{'class':<{width}s} " + " ".join(f"{s:>{cols[s]}s}" for s in sets)]
    for c, name in enumerate(names):
        lines.append(f"{name:<{width}s} " + " ".join(f"{counts[s][c]:{cols[s]}d}" for s in sets))
    lines.append(f"{'total':<{width}s} " + " ".join(f"{len(d):{cols[s]}d}"
                                                     for s, d in sets.items()))
    return "\n".join(lines + notes)


def save_preview(ds: PointCloudSet, out: str | Path, per_class: int = 3,
                 max_classes: int = 40) -> None:
    """A PNG grid of the first `per_class` clouds of each class (first `max_classes`
    classes), each a 3D scatter (z up) titled by its class name, coloured by height."""
    # the Figure API with an Agg canvas: no pyplot global state, no display needed
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if per_class < 1:
        raise DataError(f"per_class must be >= 1, got {per_class}")
    picks = [(c, i) for c in range(min(ds.num_classes, max_classes))
             for i in np.flatnonzero(ds.labels == c)[:per_class]]
    if not picks:
        raise DataError(f"{ds.name}: nothing to preview")
    # wrap classes into blocks side by side so that 40 classes do not make one long strip
    class_cols = max(1, round(math.sqrt(min(ds.num_classes, max_classes) / per_class)))
    cols = class_cols * per_class
    rows = math.ceil(len(picks) / cols)
    fig = Figure(figsize=(1.6 * cols, 1.7 * rows + 0.3))
    FigureCanvasAgg(fig)
    for k, (c, i) in enumerate(picks):
        ax = fig.add_subplot(rows, cols, k + 1, projection="3d")
        p = ds.points[i]
        # z is up, as in the shared ModelNet40 and the synthetic set
        ax.scatter(p[:, 0], p[:, 1], p[:, 2], s=0.3, c=p[:, 2], cmap="viridis")
        lim = float(np.abs(p).max()) or 1.0
        ax.set(xlim=(-lim, lim), ylim=(-lim, lim), zlim=(-lim, lim))
        ax.set_axis_off()
        ax.set_title(ds.class_names[c], fontsize=7, pad=0)
    height = 1.7 * rows  # inches; leave ~0.5 in at the top for the overall title
    fig.subplots_adjust(left=0, right=1, bottom=0, top=1 - 0.5 / height, wspace=0, hspace=0.15)
    fig.suptitle(f"{ds.name}: {ds.num_classes} classes", fontsize=9, y=1 - 0.08 / height,
                 va="top")
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=80, format="png")
    except OSError as exc:
        raise DataError(f"{out}: cannot write preview ({exc.strerror or exc})") from None
