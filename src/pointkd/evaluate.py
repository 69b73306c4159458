"""Evaluation: OA, mAcc, per-class accuracy, confusion matrix, params, FLOPs, latency.

Single-view accuracy is the headline; multi-view voting (`votes > 0`: average logits over
extra scaled copies, as in PointNet++/PointMLP's evaluation) is reported separately.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from pointkd import augment, rundir, safe_io
from pointkd.checkpoint import load_model
from pointkd.config import EvalConfig
from pointkd.device import autocast, resolve_device
from pointkd.errors import DataError, ModelError, OutputError


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


class Evaluation(NamedTuple):
    """What `evaluate_checkpoint` found: the report (as `eval_<split>.json` holds it) and the
    data's class names, which its text form names the weakest classes by."""

    report: dict
    class_names: list[str]

    def text(self) -> str:
        return format_report(self.report, self.class_names)


@rundir.releases_locks
def evaluate_checkpoint(cfg: EvalConfig) -> Evaluation:
    """`pointkd eval`: the full report for one checkpoint, saved under `cfg.out` if given.

    Several checkpoints are evaluated as an ensemble whose logits are the members' mean — the
    same combination `pointkd record --teacher A --teacher B` stores — so a multi-teacher
    record set's teacher can be measured before recording it.
    """
    from pointkd.data import load_split

    cfg.check()
    paths, data, split = [str(p) for p in cfg.checkpoints], cfg.data, cfg.split
    if cfg.out is not None:  # refuse a bad --out before any work; locked until we return
        rundir.open_eval_output(cfg.out, inputs=[data])
        refuse_earlier_report(Path(cfg.out), split, cfg.overwrite)
    dev = resolve_device(cfg.device)
    loaded = [load_model(p, dev) for p in paths]
    meta = loaded[0][1]
    for path, (_, m) in zip(paths[1:], loaded[1:], strict=True):
        if (m["num_classes"], m.get("num_points")) != (meta["num_classes"], meta.get("num_points")):
            raise DataError(
                f"{path} predicts {m['num_classes']} classes from {m.get('num_points')} points "
                f"but {paths[0]} {meta['num_classes']} from {meta.get('num_points')}: "
                "ensemble members must agree"
            )
    ds = load_split(data, split, num_points=meta.get("num_points"), normalize=cfg.normalize)
    loaded = [(fit_classes(model, m, path, ds.class_names, data), m)
              for path, (model, m) in zip(paths, loaded, strict=True)]
    members = [predict_logits(model, ds.points, cfg.batch_size, dev,
                              progress=f"eval {m['model']}" if cfg.progress else "")
               for model, m in loaded]
    for path, z in zip(paths, members, strict=True):
        require_finite(z, f"checkpoint {path}", ds.shape_ids)
    logits = torch.stack(members).mean(0)
    report = {"checkpoint": paths[0] if len(paths) == 1 else paths,
              "model": "+".join(m["model"] for _, m in loaded), "data": ds.name,
              "split": split, "device": str(dev),
              "params": sum(p.numel() for model, _ in loaded for p in model.parameters()),
              "flops": sum(count_flops(model, ds.points.shape[1], dev) for model, _ in loaded)}
    report["single_view"] = classification_metrics(logits.argmax(1), ds.labels, ds.num_classes)
    if len(paths) > 1:
        report["members"] = [
            {"checkpoint": path, "model": m["model"], **{
                k: v for k, v in classification_metrics(
                    z.argmax(1), ds.labels, ds.num_classes).items() if k in ("oa", "macc")}}
            for path, (_, m), z in zip(paths, loaded, members, strict=True)]
    if cfg.votes > 0:
        voted = torch.stack([vote_logits(model, ds.points, cfg.votes, cfg.batch_size, dev)
                             for model, _ in loaded]).mean(0)
        require_finite(voted, "multi-view voting of " + " + ".join(paths))
        report["voting"] = {"votes": cfg.votes, **classification_metrics(
            voted.argmax(1), ds.labels, ds.num_classes)}
    if cfg.latency:
        report["latency"] = [_sum_latency([measure_latency(model, ds.points.shape[1], b, dev)
                                           for model, _ in loaded]) for b in (1, 32)]
    if cfg.out is not None:
        save_report(Path(cfg.out), split, report, ds.class_names)
    return Evaluation(report, list(ds.class_names))


class ClassSubset(nn.Module):
    """A classifier's logits of some of its classes, in a given order (a ModelNet40 model
    evaluated on ModelNet10: its softmax and argmax are then over the data's classes)."""

    def __init__(self, model: nn.Module, order: list[int]):
        super().__init__()
        self.model = model
        self.register_buffer("order", torch.tensor(order), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)[:, self.order]


def fit_classes(model: nn.Module, meta: dict, path: str, data_names: list[str],
                data: str) -> nn.Module:
    """`model` with its outputs mapped to the data's classes by name, as `pointkd record`
    maps a teacher's (`pointkd.teacher.class_map`); a DataError if that cannot be done.
    Checkpoints without names, or of the data's class count whose names are not all the
    data's, are taken in the data's order (as before names were compared)."""
    from pointkd.teacher import class_map

    names, count = list(meta.get("class_names") or []), int(meta["num_classes"])
    if names == list(data_names):
        return model
    if len(names) != count or (count == len(data_names) and not set(data_names) <= set(names)):
        if count != len(data_names):
            raise DataError(f"{data} has {len(data_names)} classes but the checkpoint was "
                            f"trained on {count}"
                            + ("" if names else " (and carries no class names to map by)"))
        return model
    try:
        order = class_map(path, names, list(data_names), data)
    except ModelError as exc:
        raise DataError(str(exc)) from None
    return model if order == list(range(count)) else ClassSubset(model, order)


def report_files(out: Path, split: str) -> tuple[Path, Path]:
    """What `eval --out` writes: the report and its confusion matrix."""
    return out / f"eval_{split}.json", out / f"confusion_{split}.png"


def refuse_earlier_report(out: Path, split: str, overwrite: bool) -> None:
    """An earlier evaluation's report (another checkpoint, perhaps) is a result: replaced
    only with --overwrite, checked before any work."""
    if "/" in split or "\0" in split:  # the split names a file in `out`, nowhere else
        raise OutputError(f"--split {split!r}: a split name cannot contain '/'")
    if overwrite:
        return
    for path in report_files(out, split):
        if path.exists() or path.is_symlink():
            raise OutputError(f"{path} exists (an earlier evaluation); pass --overwrite to "
                              "replace it, or choose another --out")


def save_report(out: Path, split: str, report: dict, class_names: list[str]) -> None:
    """Both files at once: a full disk leaves the earlier pair (or nothing), never a report
    without its matrix or a torn file. The JSON last, as it says the evaluation is done."""
    json_path, png_path = report_files(out, split)
    safe_io.replace_files({
        png_path: confusion_png(np.array(report["single_view"]["confusion"]), class_names),
        json_path: lambda f: f.write(json.dumps(report, indent=1).encode())})


def _sum_latency(parts: list[dict]) -> dict:
    """An ensemble's latency: its members run one after another."""
    seconds = sum(p["seconds_per_batch"] for p in parts)
    batch = parts[0]["batch_size"]
    return {"batch_size": batch, "seconds_per_batch": seconds,
            "ms_per_cloud": 1000 * seconds / batch, "clouds_per_s": batch / seconds,
            "iters": min(p["iters"] for p in parts)}


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
