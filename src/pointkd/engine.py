"""The one training loop: teacher training, plain students, online KD and offline KD.

They differ only in where the distillation target comes from, the run's `TargetSource`
(`pointkd.targets`):

    plain    AugmentedShapes  augmentation sampled now,           no target (alpha = beta = 0)
    online   OnlineTeacher    augmentation sampled now,           teacher(augmented batch)
    offline  RecordReplay     augmentation replayed from records, recorded logits (the
                              teacher is never loaded; `pointkd.records.replay`)

`run_training` builds the source (`training_source`) and the student (`build_trainer`), then
each epoch `Trainer.train_epoch` augments every batch (`augment.apply`), asks the source for
its target and, with NWSD, the self target (`pointkd.self_target`) for z_self, runs the
student and `losses.total_loss`. Per-epoch randomness derives from (seed, epoch) only, so
`--resume` needs no RNG state.

Under torchrun (docs/distributed.md) each process takes a DistributedSampler share of every
epoch, the model is wrapped in DistributedDataParallel, the NWSD self table is kept identical
on every rank, metrics are summed over ranks, and rank 0 alone writes the run directory.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from pointkd import augment, distributed, rundir, safe_io
from pointkd.checkpoint import (
    check_resume_state,
    checkpoint_writer,
    load_model,
    read_checkpoint,
)
from pointkd.config import EvalConfig, RunConfig, save_config, to_dict, validate
from pointkd.data import PointCloudSet, load_split, stratified_split
from pointkd.device import autocast, resolve_device
from pointkd.distributed import Dist
from pointkd.errors import ConfigError, DataError
from pointkd.evaluate import (
    classification_metrics,
    count_flops,
    evaluate_checkpoint,
    predict_logits,
)
from pointkd.losses import UNLABELLED, total_loss
from pointkd.models import count_parameters, create_model
from pointkd.progress import track
from pointkd.records.manifest import read_manifest
from pointkd.records.reader import check_made_for, open_records
from pointkd.records.replay import PooledReplay, RecordReplay
from pointkd.self_target import SelfTarget, make_self_target
from pointkd.targets import (
    SINGLE,
    AugmentedShapes,
    Batch,
    OnlineTeacher,
    TargetSource,
    batch_slices,
)
from pointkd.teacher import Teacher, load_teachers
from pointkd.teacher_inference import fit_to_data


def lr_lambda(cfg: RunConfig, steps_per_epoch: int, world: int = 1):
    """Linear warm-up for `warmup_epochs`, then cosine decay to `min_lr` (per step)."""
    total = cfg.train.epochs * steps_per_epoch
    warm = cfg.optim.warmup_epochs * steps_per_epoch
    floor = min(1.0, cfg.optim.min_lr / scaled_lr(cfg, world))

    def fn(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = (step - warm) / max(1, total - warm)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    return fn


def scaled_lr(cfg: RunConfig, world: int = 1) -> float:
    """optim.lr, scaled for a `world` times larger effective batch as optim.lr_scaling says."""
    factor = {"none": 1.0, "linear": float(world), "sqrt": math.sqrt(world)}
    return cfg.optim.lr * factor[cfg.optim.lr_scaling]


def make_optimizer(cfg: RunConfig, model: nn.Module, world: int = 1) -> torch.optim.Optimizer:
    lr = scaled_lr(cfg, world)
    if cfg.optim.name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=cfg.optim.momentum,
                               weight_decay=cfg.optim.weight_decay, nesterov=True)
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=cfg.optim.weight_decay)


def prepare_run_dir(out: Path, resume: bool, overwrite: bool,
                    inputs: tuple[str, ...] = ()) -> None:
    """Lock the run directory, then: never silently overwrite (an existing run needs --resume
    or --overwrite, which deletes only pointkd's own run files: see `pointkd.rundir`)."""
    rundir.open_output(out, "run", resume=resume, overwrite=overwrite, inputs=inputs,
                       resume_needs="last.pt")


def run_inputs(cfg: RunConfig) -> tuple[str, ...]:
    """The paths a run reads, which its output directory must never overlap."""
    return (cfg.data.path, cfg.distill.records, cfg.distill.teacher)


def check_resume(state: dict, cfg: RunConfig, data: PointCloudSet, path: Path) -> None:
    """--resume continues the same run: the same model and optimizer on the same data and
    classes, in the same distillation mode; last.pt must hold everything resume reads
    (`checkpoint.check_resume_state`). Anything else is a one-line error saying what
    differs, before anything in the run directory changes."""
    check_resume_state(state, path)
    old_config = state.get("config") if isinstance(state.get("config"), dict) else {}
    old_optim = (old_config.get("optim") or {}).get("name", cfg.optim.name)
    old = (state["model"], state.get("model_kwargs", {}), state["num_classes"], old_optim)
    new = (cfg.model.name, cfg.model.kwargs, data.num_classes, cfg.optim.name)
    if old != new:
        def run(m: tuple) -> str:
            return f"model {m[0]} {m[1]}, {m[2]} classes, optimizer {m[3]}"

        raise ConfigError(f"--resume: {path} is a run of {run(old)}, not {run(new)}; "
                          f"{_START_OVER}")
    old_data = (old_config.get("data") or {}).get("path", "?")
    if state["data_fingerprint"] != data.fingerprint():
        raise ConfigError(f"--resume: {path} was trained on other data ({old_data}, "
                          f"{state['data_fingerprint'][:19]}) than this run's "
                          f"{cfg.data.path} ({data.fingerprint()[:19]}); {_START_OVER}")
    if list(state["class_names"]) != list(data.class_names):
        raise ConfigError(f"--resume: {path} was trained with other class names than "
                          f"{cfg.data.path}'s; {_START_OVER}")
    old_mode = _config_mode(old_config.get("distill") or {})
    if old_mode != cfg.distill.mode:
        raise ConfigError(f"--resume: {path} is a {old_mode} run, this one {cfg.distill.mode} "
                          f"(distillation settings differ); {_START_OVER}")


_START_OVER = "continue it as it was, or start a new run in another --out"


def _config_mode(distill: dict) -> str:
    """The distillation mode of a saved config (`DistillConfig.mode` on its dict)."""
    if distill.get("online"):
        return "online"
    return "offline" if distill.get("records") else "plain"


def _fit_problem(saved: object, live: dict[str, Tensor], what: str) -> str | None:
    """Why the saved state dict `saved` cannot load into one shaped like `live`, or None."""
    if not isinstance(saved, dict) or not all(torch.is_tensor(v) for v in saved.values()):
        return f"its {what} is not a mapping of names to tensors"
    missing = [k for k in live if k not in saved]
    extra = [k for k in saved if k not in live]
    shapes = [k for k in live if k in saved and saved[k].shape != live[k].shape]
    parts = ([f"missing {', '.join(missing[:3])}"] if missing else []) + (
        [f"unexpected {', '.join(extra[:3])}"] if extra else []) + (
        [f"other shapes for {', '.join(shapes[:3])}"] if shapes else [])
    return f"its {what} does not fit ({'; '.join(parts)})" if parts else None


def _optimizer_fit_problem(saved: dict, optimizer: torch.optim.Optimizer) -> str | None:
    """Whether the saved optimizer state (schema-checked) belongs to these parameters: the
    same groups, as many parameters in each, every buffer of its parameter's shape (a
    mismatch would load and then fail in the first step)."""
    groups = optimizer.param_groups
    if [len(g["params"]) for g in saved["param_groups"]] != [len(g["params"]) for g in groups]:
        return "its optimizer state is for other parameters (group sizes differ)"
    if not saved["state"] and any(g.get("betas") or g.get("momentum", 0) for g in groups):
        # AdamW and SGD with momentum keep a buffer per parameter from the first step on:
        # without them the run would go on from reset moments, not where it stopped
        return "its optimizer state is empty (the optimizer's moments were lost)"
    params = [p for g in groups for p in g["params"]]
    order = [i for g in saved["param_groups"] for i in g["params"]]
    for index, entry in saved["state"].items():
        param = params[order.index(index)]
        for name, value in entry.items():
            if torch.is_tensor(value) and value.ndim > 0 and value.shape != param.shape:
                return (f"its optimizer state '{name}' has shape {tuple(value.shape)} for a "
                        f"parameter of shape {tuple(param.shape)}")
    return None


def check_run(cfg: RunConfig) -> None:
    """A run needs valid settings (`config.validate`, also for a RunConfig built in code:
    ranges, choices, the distillation mode and its inputs) and a dataset."""
    validate(cfg)
    if not cfg.data.path and cfg.distill.mode == "offline":
        # the dataset the records were made for (open_records checks its fingerprint)
        cfg.data.path = read_manifest(cfg.distill.records)["data"]["path"]
    if not cfg.data.path:
        raise ConfigError("no dataset given: pass --data PATH (an HDF5 folder, a class-folder "
                          "dataset, or 'synthetic'), or set data.path in the config")


@dataclass
class TrainingPool:
    """The clouds a run's batches index (`Batch.shapes`): the train split, then the pools of
    any extra record sets; labels `UNLABELLED` where a record set withholds them."""

    points: Tensor  # (N, P, 3) on the CPU
    labels: Tensor  # (N,) int64


def training_source(cfg: RunConfig, dist: Dist, device: torch.device
                    ) -> tuple[PointCloudSet, np.ndarray, TargetSource, TrainingPool]:
    """The train split, its validation shapes, where batches and targets come from, and the
    clouds the batches index."""
    mode = cfg.distill.mode
    records = open_records(cfg.distill.records) if mode == "offline" else None
    # offline KD replays the clouds the teacher saw: at the record set's point count
    num_points = (records.manifest["data"].get("num_points") if records is not None
                  else cfg.data.num_points)
    data = load_split(cfg.data.path, "train", num_points=num_points,
                      normalize=cfg.data.normalize)
    if records is not None:
        check_made_for(records, data, cfg.distill.records)
    split_seed = cfg.train.seed if cfg.data.split_seed is None else cfg.data.split_seed
    train_idx, val_idx = stratified_split(data.labels, cfg.data.val_fraction, split_seed)
    source: TargetSource
    if records is not None:
        source = RecordReplay(records, train_idx, cfg.train.seed, cfg.distill.rows_per_epoch,
                              dist, cfg.distill.use_k)
    else:
        source = AugmentedShapes(train_idx, cfg.augment, cfg.train.seed, len(data), dist)
    source.spec.check_points(data.points.shape[1])
    if mode == "online":
        source = OnlineTeacher(source, _load_teacher(cfg, data, device), cfg.train.amp,
                               cfg.distill.teacher_votes)
    pool = TrainingPool(torch.from_numpy(data.points), torch.from_numpy(data.labels))
    if records is not None:
        labelled = records.manifest["data"].get("labels", True)
        if not labelled:  # the first set's labels were withheld at recording: honour it
            pool.labels = torch.full_like(pool.labels, UNLABELLED)
    if cfg.distill.extra_records:
        source, pool = _pooled_source(cfg, source, pool, data, dist)
    return data, val_idx, source, pool


def _pooled_source(cfg: RunConfig, first: RecordReplay, pool: TrainingPool,
                   data: PointCloudSet, dist: Dist) -> tuple[PooledReplay, TrainingPool]:
    """Offline KD from --records and every extra record set, each replaying its own pool (the
    dataset its manifest names, fingerprint-checked), all shapes of it in training."""
    parts, offsets = [first], [0]
    points, labels = [pool.points], [pool.labels]
    seen = {data.fingerprint(): cfg.distill.records}
    for i, root in enumerate(cfg.distill.extra_records, start=1):
        records = open_records(root)
        d = records.manifest["data"]
        if d["fingerprint"] in seen:
            raise ConfigError(f"{root}: made for the same shapes as {seen[d['fingerprint']]}; "
                              "an extra record set must cover other shapes (more copies of "
                              "the same shapes: record a larger K instead)")
        seen[d["fingerprint"]] = root
        if not d["path"].startswith("synthetic") and not Path(d["path"]).exists():
            raise ConfigError(f"{root}: made for the dataset at {d['path']}, which is not "
                              "there from here")
        if int(d.get("num_points", 0)) != int(data.points.shape[1]):
            raise ConfigError(f"{root}: {d.get('num_points')} points per cloud, "
                              f"{cfg.distill.records}: {data.points.shape[1]}")
        extra = load_split(d["path"], "train", num_points=d.get("num_points"),
                           normalize=cfg.data.normalize)
        check_made_for(records, extra, root)
        if extra.class_names != data.class_names:
            raise ConfigError(f"{root}: its classes differ from {cfg.distill.records}'s "
                              "(the same class names in the same order are needed)")
        offsets.append(sum(len(p) for p in points))
        parts.append(RecordReplay(records, np.arange(len(extra)), cfg.train.seed + i,
                                  cfg.distill.rows_per_epoch, dist, cfg.distill.use_k))
        points.append(torch.from_numpy(extra.points))
        labels.append(torch.from_numpy(extra.labels) if d.get("labels", True)
                      else torch.full((len(extra),), UNLABELLED, dtype=torch.long))
    return (PooledReplay(parts, offsets, cfg.train.seed, dist),
            TrainingPool(torch.cat(points), torch.cat(labels)))


def _load_teacher(cfg: RunConfig, data: PointCloudSet, device: torch.device) -> Teacher:
    """The online teacher, loaded and fitted to the data as `record` does it."""
    teacher = load_teachers([cfg.distill.teacher], device)[0]
    fit_to_data([teacher], data, cfg.data.path, cfg.data.num_points, cfg.data.normalize)
    return teacher


@dataclass
class Trainer:
    """The student, its optimizer, and where targets come from: `train_epoch` is the loop."""

    cfg: RunConfig
    model: nn.Module  # the student
    net: nn.Module  # what a step calls: the student, or its DistributedDataParallel wrapper
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    source: TargetSource
    self_target: SelfTarget | None  # NWSD's z_self (None: beta = 0 or no distillation)
    points: Tensor  # the training split's clouds (N, P, 3), on the CPU
    labels: Tensor
    device: torch.device
    dist: Dist
    steps: int  # per epoch and process

    def train_epoch(self, epoch: int) -> dict:
        """One epoch; returns its metrics row (summed over processes)."""
        cfg = self.cfg
        # dropout etc.; its own stream per process
        torch.manual_seed(cfg.train.seed * 1_000_003 + epoch + 7919 * self.dist.rank)
        beta = cfg.distill.beta if epoch >= cfg.distill.nwsd_warmup_epochs else 0.0
        self.model.train()
        t0, seen, seen_labelled, correct = time.perf_counter(), 0, 0, 0
        sums = {"loss": 0.0}
        batches = self.source.batches(epoch, cfg.train.batch_size)
        bar = _progress(batches, self.steps, f"epoch {epoch + 1}/{cfg.train.epochs}", cfg,
                        self.dist)
        for step, batch in enumerate(bar):
            if step >= self.steps:
                break
            loss, parts, logits, y = self.step(batch, beta, f"epoch {epoch + 1}, step {step}")
            n = len(y)
            labelled = y != UNLABELLED  # train_acc is over the clouds with a label
            seen += n
            seen_labelled += int(labelled.sum())
            correct += int((logits.argmax(1) == y)[labelled].sum())
            sums["loss"] += float(loss.detach()) * n
            for key, value in parts.items():
                sums[key] = sums.get(key, 0.0) + value * n
        seconds = time.perf_counter() - t0
        keys = sorted(sums)
        seen, seen_labelled, correct, *totals = self.dist.sum(
            [seen, seen_labelled, correct, *(sums[k] for k in keys)])
        sums = dict(zip(keys, totals, strict=True))
        return {"epoch": epoch + 1, "lr": self.optimizer.param_groups[0]["lr"],
                **{f"train_{k}": v / max(seen, 1) for k, v in sums.items()},
                "train_acc": correct / max(seen_labelled, 1), "epoch_seconds": seconds,
                "samples_per_s": seen / max(seconds, 1e-9), "beta": beta}

    def step(self, batch: Batch, beta: float, where: str
             ) -> tuple[Tensor, dict[str, float], Tensor, Tensor]:
        """One optimizer step: augment, target, student, loss. (loss, parts, logits, y)."""
        cfg, device = self.cfg, self.device
        x = augment.apply(self.points[batch.shapes].to(device), batch.params.to(device),
                          batch.seeds.to(device), self.source.spec)
        y = self.labels[batch.shapes].to(device)
        target = self.source.target(batch, x)
        self_logits = self_mask = None
        if beta != 0 and self.self_target is not None:
            self_logits, self_mask = self.self_target.lookup(batch, x)
        with autocast(device, cfg.train.amp):
            logits = self.net(x)
        loss, parts = total_loss(
            logits, y, None if target is None else target.to(device), self_logits,
            alpha=cfg.distill.alpha if self.source.distills else 0.0, beta=beta,
            tau=cfg.distill.tau, label_smoothing=cfg.train.label_smoothing, self_mask=self_mask)
        if not torch.isfinite(loss):
            raise DataError(f"loss became {float(loss)} at {where}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.train.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), cfg.train.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        if self.self_target is not None:
            self.self_target.update(batch, logits)
        return loss, parts, logits, y

    def resume(self, path: Path, data: PointCloudSet) -> tuple[int, dict, list[dict]]:
        """Load last.pt (every process reads the one rank 0 wrote): (first epoch, best,
        history). Everything it reads is checked first (`check_resume`, `_resume_fit`)."""
        state = read_checkpoint(path)
        check_resume(state, self.cfg, data, path)
        self._resume_fit(state, path)
        try:
            self.model.load_state_dict(state["state_dict"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            if self.self_target is not None:
                self.self_target.load(state[self.self_target.checkpoint_key])
        except (RuntimeError, ValueError, KeyError, TypeError) as exc:  # what checks missed
            text = " ".join(str(exc).split())[:160]
            raise ConfigError(f"--resume: {path} does not load into this run "
                              f"({type(exc).__name__}: {text})") from None
        return state["epoch"] + 1, state["best"], state["history"]

    def _resume_fit(self, state: dict, path: Path) -> None:
        """last.pt's tensors fit this run's student, optimizer and self target."""
        problem = (_fit_problem(state["state_dict"], self.model.state_dict(), "state_dict")
                   or _optimizer_fit_problem(state["optimizer"], self.optimizer))
        if problem is None and len(state["scheduler"]["base_lrs"]) != len(
                self.optimizer.param_groups):
            problem = "its scheduler is for another number of parameter groups"
        if problem is None and self.self_target is not None:
            key = self.self_target.checkpoint_key
            problem = (f"it lacks the NWSD self target '{key}' this run needs" if key not in
                       state else _fit_problem(state[key], self.self_target.state(),
                                               f"self target '{key}'"))
        if problem:  # a damaged last.pt, or one written by another version of the model
            raise ConfigError(f"--resume: {path} does not fit this run: {problem}")

    def resume_state(self, best: dict, history: list[dict]) -> dict:
        """What last.pt adds to best.pt: optimizer, scheduler, history, self target."""
        extra = ({self.self_target.checkpoint_key: self.self_target.state()}
                 if self.self_target is not None else {})
        return {"optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "best": best, "history": history,
                **extra}


def build_trainer(cfg: RunConfig, data: PointCloudSet, source: TargetSource,
                  device: torch.device, dist: Dist, out: Path,
                  pool: TrainingPool | None = None) -> Trainer:
    """The student (the same initial weights in every process), optimizer, schedule, and
    NWSD's self target when the run distills with beta != 0."""
    torch.manual_seed(cfg.train.seed)
    model = create_model(cfg.model.name, data.num_classes, **cfg.model.kwargs)
    if dist.active and cfg.train.sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(device)
    net = _wrap_ddp(model, device) if dist.active else model
    optimizer = make_optimizer(cfg, model, dist.world)
    steps = len(batch_slices(len(source), cfg.train.batch_size))
    if cfg.train.max_steps_per_epoch:
        steps = min(steps, cfg.train.max_steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, steps, dist.world))
    if pool is None:
        pool = TrainingPool(torch.from_numpy(data.points), torch.from_numpy(data.labels))
    self_target = None
    if source.distills and cfg.distill.beta != 0:
        self_target = make_self_target(cfg.distill.self_target, model, source.num_rows,
                                       len(pool.points), data.num_classes, out,
                                       cfg.distill.ema_decay, cfg.train.amp, dist)
    return Trainer(cfg, model, net, optimizer, scheduler, source, self_target, pool.points,
                   pool.labels, device, dist, steps)


@rundir.releases_locks
def run_training(cfg: RunConfig, resume: bool = False, overwrite: bool = False,
                 on_epoch: Callable[[dict], None] | None = None) -> dict:
    """Train `cfg.model` as configured; returns the final results dict (also results.json).
    `on_epoch(row)` is called with each epoch's metrics once they are saved (in rank 0)."""
    check_run(cfg)
    out = Path(cfg.out)
    dist = distributed.init(cfg.train.device)
    dist.on_main(prepare_run_dir, out, resume, overwrite, run_inputs(cfg))
    device = _compute_device(cfg, dist)
    data, val_idx, source, pool = training_source(cfg, dist, device)
    trainer = build_trainer(cfg, data, source, device, dist, out, pool)
    start_epoch, best, history = 0, {"val_oa": -1.0, "epoch": -1}, []
    if resume:  # checked before config.yaml is rewritten: a refused resume changes nothing
        start_epoch, best, history = trainer.resume(out / "last.pt", data)
    if dist.main:
        save_config(cfg, out / "config.yaml")
    meta = _checkpoint_meta(cfg, data)
    for epoch in range(start_epoch, cfg.train.epochs):
        row = trainer.train_epoch(epoch)
        if len(val_idx):
            val = _validate(trainer.model, trainer.points, data, val_idx, cfg, device, dist)
            row.update(val_oa=val["oa"], val_macc=val["macc"])
        history.append(row)
        best = _save_epoch(trainer, meta, out, epoch, row, best, history)
        if on_epoch is not None and dist.main:
            on_epoch(row)
    return dist.on_main(finish_run, cfg, out, data, device, best, history, start_epoch)


def _compute_device(cfg: RunConfig, dist: Dist) -> torch.device:
    """torch threads as train.threads says, and this process's device."""
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    device = dist.device(resolve_device(cfg.train.device))
    if cfg.train.sync_bn and device.type != "cuda":
        raise ConfigError("train.sync_bn needs CUDA: PyTorch's SyncBatchNorm does not run on "
                          f"{device.type}")
    return device


def _checkpoint_meta(cfg: RunConfig, data: PointCloudSet) -> dict:
    """What every checkpoint of the run says about its model and data."""
    return {"model": cfg.model.name, "model_kwargs": cfg.model.kwargs,
            "num_classes": data.num_classes, "class_names": data.class_names,
            "num_points": int(data.points.shape[1]), "data_fingerprint": data.fingerprint(),
            "config": to_dict(cfg)}


def _save_epoch(trainer: Trainer, meta: dict, out: Path, epoch: int, row: dict, best: dict,
                history: list[dict]) -> dict:
    """best.pt when validation OA did not drop (no validation split: every epoch), last.pt,
    and the metrics files (rank 0); returns the best epoch so far."""
    score = row.get("val_oa", epoch)  # no validation split: keep the last epoch
    state = {**meta, "state_dict": trainer.model.state_dict(), "epoch": epoch, "metrics": row}
    improved = score >= best["val_oa"]
    if improved:
        best = {"val_oa": score, "epoch": epoch + 1}
    if trainer.dist.main:
        # one group (`safe_io.replace_files`): every file is written whole before any is
        # moved into place, so a full disk leaves the previous epoch's files as they were,
        # never a torn last.pt or a best.pt of this epoch beside a last.pt of the one before
        files = {out / "last.pt": checkpoint_writer({**state, **trainer.resume_state(
            best, history)}), **history_writers(history, out)}
        if improved:
            files = {out / "best.pt": checkpoint_writer(state), **files}
        safe_io.replace_files(files)
    trainer.dist.barrier()  # last.pt is complete before any process may stop or resume
    return best


def _wrap_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def _validate(model: nn.Module, points: Tensor, data: PointCloudSet, val_idx: np.ndarray,
              cfg: RunConfig, device: torch.device, dist: Dist) -> dict:
    """OA/mAcc on the validation split; each process predicts a rank-strided share."""
    mine = val_idx[dist.rank::dist.world]  # may be empty: more processes than shapes
    pred = (predict_logits(model, points[mine], cfg.train.eval_batch_size, device)
            .argmax(1).numpy() if len(mine) else np.empty(0, np.int64))
    shares = dist.gather_objects((mine, pred))
    idx = np.concatenate([s[0] for s in shares])
    pred_all = torch.from_numpy(np.concatenate([s[1] for s in shares]))
    return classification_metrics(pred_all, data.labels[idx], data.num_classes)


def finish_run(cfg: RunConfig, out: Path, data: PointCloudSet, device: torch.device,
               best: dict, history: list[dict], start_epoch: int = 0) -> dict:
    """Evaluate the best checkpoint on the test split (reporting only, `evaluate_checkpoint`)
    and write results.json.

    Training time counts the epochs' training loops (`epoch_seconds`), in this session (the
    epochs from `start_epoch` on) and in all. Distillation settings are written only for a
    run that distilled."""
    try:
        test = evaluate_checkpoint(EvalConfig(
            checkpoints=[str(out / "best.pt")], data=cfg.data.path, split="test",
            device=str(device), batch_size=cfg.train.eval_batch_size, latency=False,
            normalize=cfg.data.normalize, progress=False)).report
    except DataError as exc:  # no test split: the cost of the model all the same
        model, meta = load_model(out / "best.pt", device)
        cost = {"params": count_parameters(model),
                "flops": count_flops(model, meta["num_points"], device)}
        scores = {"test_note": f"no test split evaluated: {exc}"}
    else:
        cost = {"params": test["params"], "flops": test["flops"]}
        m = test["single_view"]
        scores = {"test_oa": m["oa"], "test_macc": m["macc"], "test_per_class": m["per_class"]}
    mode = {"plain": "plain", "online": "online-kd", "offline": "offline-kd"}[cfg.distill.mode]
    results = {"model": cfg.model.name, **cost, "best_epoch": best["epoch"],
               "val_oa": best["val_oa"] if "val_oa" in history[-1] else None,
               "epochs": len(history),
               "train_seconds_this_session": sum(h["epoch_seconds"]
                                                 for h in history[start_epoch:]),
               "train_seconds_total": sum(h["epoch_seconds"] for h in history),
               "seed": cfg.train.seed, "device": str(device), "data": cfg.data.path,
               "mode": mode}
    if mode != "plain":
        results.update(alpha=cfg.distill.alpha, beta=cfg.distill.beta, tau=cfg.distill.tau)
    results.update(scores)
    safe_io.write_text(out / "results.json", json.dumps(results, indent=1))
    return results


def result_line(results: dict, out: str | Path) -> str:
    """The one line a finished run ends with (printed by the CLI whatever train.progress)."""
    val = (f"best val OA {100 * results['val_oa']:.2f}% (epoch {results['best_epoch']})"
           if results.get("val_oa") is not None else f"last epoch {results['best_epoch']}")
    test = (f", test OA {100 * results['test_oa']:.2f}% mAcc {100 * results['test_macc']:.2f}%"
            if "test_oa" in results else "")
    return f"done: {val}{test} -> {out}"


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


def _progress(it, total: int, desc: str, cfg: RunConfig, dist: Dist = SINGLE):
    """A transient live bar per epoch on a terminal; nothing in a log (the epoch line is)."""
    return track(it, total, desc, unit="batch", enabled=cfg.train.progress and dist.main)


def epoch_line(row: dict, epochs: int) -> str:
    """The line the CLI prints after each epoch (with train.progress)."""
    val = (f" val OA {100 * row['val_oa']:.2f}% mAcc {100 * row['val_macc']:.2f}%"
           if "val_oa" in row else "")
    return (f"epoch {row['epoch']:3d}/{epochs} loss {row['train_loss']:.4f} "
            f"acc {100 * row['train_acc']:.2f}%{val} ({row['epoch_seconds']:.1f}s, "
            f"{row['samples_per_s']:.0f} samples/s)")
