"""What a run writes and says: checkpoint metadata, metrics.json/csv, curves.png, and the
line printed after each epoch."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import BinaryIO

import numpy as np

from pointkd import safe_io
from pointkd.config.merge import to_dict
from pointkd.config.run import RunConfig
from pointkd.data import PointCloudSet


def checkpoint_meta(cfg: RunConfig, data: PointCloudSet) -> dict:
    """What every checkpoint of the run says about its model and data."""
    return {"model": cfg.model.name, "model_kwargs": cfg.model.kwargs,
            "num_classes": data.num_classes, "class_names": data.class_names,
            "num_points": int(data.points.shape[1]), "data_fingerprint": data.fingerprint(),
            "config": to_dict(cfg)}


def write_history(history: list[dict], out: Path) -> None:
    """metrics.json, metrics.csv and curves.png in the run directory (atomically)."""
    safe_io.replace_files(history_writers(history, out))


def history_writers(history: list[dict], out: Path) -> dict[Path, safe_io.Writer]:
    """`safe_io.replace_files` writers of metrics.json, metrics.csv and curves.png."""
    keys = list(dict.fromkeys(k for row in history for k in row))
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=keys, restval="")
    writer.writeheader()
    writer.writerows(history)
    png = io.BytesIO()
    plot_curves(history, png)
    return {out / "metrics.json": lambda f: f.write(json.dumps(history, indent=1).encode()),
            out / "metrics.csv": lambda f: f.write(table.getvalue().encode()),
            out / "curves.png": lambda f: f.write(png.getbuffer())}


def plot_curves(history: list[dict], path: Path | BinaryIO) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax1.plot(epochs, [h["train_loss"] for h in history], label="train loss")
    if "train_ce" in history[-1]:
        ax1.plot(epochs, [h.get("train_ce", np.nan) for h in history], label="train CE")
    ax1.set_xlabel("epoch")
    ax1.legend()
    ax2.plot(epochs, [h["train_acc"] for h in history], label="train acc")
    if "val_oa" in history[-1]:
        ax2.plot(epochs, [h.get("val_oa", np.nan) for h in history], label="val OA")
        ax2.plot(epochs, [h.get("val_macc", np.nan) for h in history], label="val mAcc")
    ax2.set_xlabel("epoch")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)


def epoch_line(row: dict, epochs: int) -> str:
    """The line the CLI prints after each epoch (with train.progress)."""
    val = (f" val OA {100 * row['val_oa']:.2f}% mAcc {100 * row['val_macc']:.2f}%"
           if "val_oa" in row else "")
    return (f"epoch {row['epoch']:3d}/{epochs} loss {row['train_loss']:.4f} "
            f"acc {100 * row['train_acc']:.2f}%{val} ({row['epoch_seconds']:.1f}s, "
            f"{row['samples_per_s']:.0f} samples/s)")
