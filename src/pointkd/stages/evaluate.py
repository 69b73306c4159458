"""Evaluation: OA, mAcc, per-class accuracy, confusion matrix, params, FLOPs, latency.

Single-view accuracy is the headline; multi-view voting (`votes > 0`: average logits over
extra scaled copies, as in PointNet++/PointMLP's evaluation) is reported separately.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from pointkd import rundir, safe_io
from pointkd.checkpoint import load_model
from pointkd.config.stages import EvalConfig
from pointkd.data import PointCloudSet, load_split, stratified_split
from pointkd.device import resolve_device
from pointkd.errors import DataError, ModelError, OutputError
from pointkd.metrics import (
    classification_metrics,
    confusion_png,
    count_flops,
    format_report,
    measure_latency,
    predict_logits,
    require_finite,
    vote_logits,
)


class Evaluation(NamedTuple):
    """What `run` found: the report (as `eval_<split>.json` holds it) and the
    data's class names, which its text form names the weakest classes by."""

    report: dict
    class_names: list[str]

    def text(self) -> str:
        return format_report(self.report, self.class_names)


@rundir.releases_locks
def run(cfg: EvalConfig) -> Evaluation:
    """`pointkd eval`: the full report for one checkpoint, saved under `cfg.out` if given.

    Several checkpoints are evaluated as an ensemble whose logits are the members' mean — the
    same combination `pointkd record --teacher A --teacher B` stores — so a multi-teacher
    record set's teacher can be measured before recording it.
    """
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
    ds = _evaluated_shapes(cfg, meta.get("num_points"))
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


def _evaluated_shapes(cfg: EvalConfig, num_points: int | None) -> PointCloudSet:
    """The split to evaluate; "val" is the validation part a run carved from train (the same
    stratified draw: `data.stratified_split` with the run's fraction and seed), so ensemble
    members and voting can be chosen on shapes the members did not train on."""
    if cfg.split != "val":
        return load_split(cfg.data, cfg.split, num_points=num_points, normalize=cfg.normalize)
    train = load_split(cfg.data, "train", num_points=num_points, normalize=cfg.normalize)
    _, val_idx = stratified_split(train.labels, cfg.val_fraction, cfg.val_seed)
    ds = train.subset(val_idx)
    ds.name = f"{train.name.rsplit('/', 1)[0]}/val (seed {cfg.val_seed})"
    return ds


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
    from pointkd.teachers.load import class_map

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
