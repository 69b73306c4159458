"""Measuring a model: logits over clouds, OA/mAcc/per-class/confusion, multi-view voting,
FLOPs, latency, the confusion PNG and the text report. Used by the `evaluate` stage and by
training's validation."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pointkd import augment, safe_io
from pointkd.device import autocast
from pointkd.errors import ModelError


@torch.inference_mode()
def predict_logits(
    model: nn.Module, points: np.ndarray | torch.Tensor, batch_size: int = 64,
    device: torch.device | str = "cpu", progress: str = "",
) -> torch.Tensor:
    """Logits (N, C) on CPU for clouds (N, P, 3), in eval mode, batched. `progress`: a label
    for a live bar on a terminal (none elsewhere)."""
    from pointkd.progress import track

    model.eval()
    device = torch.device(device)
    pts = torch.as_tensor(points)
    out = []
    starts = range(0, len(pts), batch_size)
    for start in track(starts, len(starts), progress, unit="batch", enabled=bool(progress)):
        batch = pts[start : start + batch_size].to(device, non_blocking=True)
        with autocast(device):
            out.append(model(batch).float().cpu())
    return torch.cat(out) if out else torch.empty(0)


def require_finite(logits: torch.Tensor | np.ndarray, source: str,
                   files: list | None = None) -> None:
    """Refuse to report NaN/Inf outputs: a one-line ModelError naming `source` (and the
    first input file that produced one)."""
    bad = ~np.isfinite(np.asarray(logits)).reshape(len(logits), -1).all(axis=1)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        where = f" for {files[first]}" if files else f" (input {first})"
        raise ModelError(f"{source} produced non-finite outputs (NaN/Inf){where}; nothing "
                         "reported")


def classification_metrics(
    predictions: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor, num_classes: int
) -> dict:
    """OA, mAcc (mean over classes present in `labels`), per-class accuracy, confusion."""
    pred = np.asarray(predictions, dtype=np.int64)
    true = np.asarray(labels, dtype=np.int64)
    confusion = np.bincount(true * num_classes + pred, minlength=num_classes**2)
    confusion = confusion.reshape(num_classes, num_classes)
    support = confusion.sum(axis=1)
    present = support > 0
    per_class = np.where(present, np.diag(confusion) / np.maximum(support, 1), np.nan)
    return {
        "oa": float((pred == true).mean()) if len(true) else float("nan"),
        "macc": float(np.nanmean(per_class)) if present.any() else float("nan"),
        "per_class": [None if np.isnan(a) else float(a) for a in per_class],
        "confusion": confusion.tolist(),
        "count": int(len(true)),
    }


def vote_logits(
    model: nn.Module, points: np.ndarray, votes: int, batch_size: int, device: torch.device,
    seed: int = 0,
) -> torch.Tensor:
    """Average of logits over the original cloud and `votes` randomly scaled copies."""
    gen = torch.Generator().manual_seed(seed)
    pts = torch.as_tensor(points)
    total = predict_logits(model, pts, batch_size, device)
    for _ in range(votes):
        scale = torch.empty(len(pts), 1, 3).uniform_(*augment.VOTE_SCALE, generator=gen)
        # out of place: predict_logits returns inference-mode tensors, which refuse `+=` here
        total = total + predict_logits(model, pts * scale, batch_size, device)
    return total / (votes + 1)


def count_flops(model: nn.Module, num_points: int, device: torch.device | str = "cpu") -> int:
    """Forward FLOPs for one cloud (multiply-add = 2 FLOPs), via torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    x = torch.rand(1, num_points, 3, device=device) * 2 - 1
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(x)
    return int(counter.get_total_flops())


@torch.inference_mode()
def measure_latency(
    model: nn.Module, num_points: int, batch_size: int, device: torch.device | str = "cpu",
    warmup: int = 3, iters: int = 10, max_seconds: float = 20.0,
) -> dict:
    """Median seconds per forward at `batch_size`, and clouds/s."""
    model.eval()
    device = torch.device(device)
    x = torch.rand(batch_size, num_points, 3, device=device) * 2 - 1
    for _ in range(warmup):
        model(x)
    times: list[float] = []
    budget = time.perf_counter() + max_seconds
    while len(times) < iters and (not times or time.perf_counter() < budget):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        model(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    median = float(np.median(times))
    return {"batch_size": batch_size, "seconds_per_batch": median,
            "ms_per_cloud": 1000 * median / batch_size, "clouds_per_s": batch_size / median,
            "iters": len(times)}


def save_confusion_png(confusion: np.ndarray, class_names: list[str], path: str | Path) -> None:
    """The row-normalised confusion matrix as a PNG, replaced atomically (`pointkd.safe_io`)."""
    safe_io.replace_files({path: confusion_png(confusion, class_names)})


def confusion_png(confusion: np.ndarray, class_names: list[str]) -> safe_io.Writer:
    """A `safe_io` writer of the confusion PNG (drawn when the file is written)."""
    return lambda f: _draw_confusion(confusion, class_names, f)


def _draw_confusion(confusion: np.ndarray, class_names: list[str], file) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(confusion, dtype=float)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    n = len(class_names)
    size = max(5.0, 0.22 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), class_names, rotation=90, fontsize=7)
    ax.set_yticks(range(n), class_names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("confusion (row-normalised)")
    fig.tight_layout()
    try:
        fig.savefig(file, dpi=110, format="png")
    finally:
        plt.close(fig)


def format_report(report: dict, class_names: list[str]) -> str:
    sv = report["single_view"]
    lines = [
        f"model {report['model']}  data {report['data']} ({report['split']}, {sv['count']} shapes)",
        f"params {report['params'] / 1e6:.3f}M  FLOPs {report['flops'] / 1e9:.3f}G per cloud",
        f"single-view  OA {100 * sv['oa']:.2f}%  mAcc {100 * sv['macc']:.2f}%",
    ]
    for m in report.get("members", []):
        lines.append(f"  member {m['model']} ({m['checkpoint']}): OA {100 * m['oa']:.2f}%  "
                     f"mAcc {100 * m['macc']:.2f}%")
    if "voting" in report:
        v = report["voting"]
        lines.append(f"voting x{v['votes']}  OA {100 * v['oa']:.2f}%  mAcc {100 * v['macc']:.2f}%")
    for lat in report.get("latency", []):
        lines.append(f"latency b={lat['batch_size']}: {lat['ms_per_cloud']:.2f} ms/cloud, "
                     f"{lat['clouds_per_s']:.1f} clouds/s ({report['device']})")
    worst = sorted((a, n) for a, n in zip(sv["per_class"], class_names, strict=True)
                   if a is not None)[:5]
    lines.append("weakest classes: " + ", ".join(f"{n} {100 * a:.0f}%" for a, n in worst))
    return "\n".join(lines)
