"""The one training loop: teacher training, plain students, online KD and offline KD.

They differ only in where the distillation target comes from, the run's `TargetSource`
(`pointkd.training.sources`):

    plain    AugmentedShapes  augmentation sampled now,           no target (alpha = beta = 0)
    online   OnlineTeacher    augmentation sampled now,           teacher(augmented batch)
    offline  RecordReplay     augmentation replayed from records, recorded logits (the
                              teacher is never loaded; `RecordReplay`)

`fit` builds the source (`training_source`) and the student (`build_trainer`), then
each epoch `Trainer.train_epoch` augments every batch (`augment.apply`), asks the source for
its target and, with NWSD, the self target (`pointkd.training.self_target`) for z_self, runs the
student and `losses.total_loss`. Per-epoch randomness derives from (seed, epoch) only, so
`--resume` needs no RNG state.

Under torchrun (docs/distributed.md) each process takes a DistributedSampler share of every
epoch, the model is wrapped in DistributedDataParallel, the NWSD self table is kept identical
on every rank, metrics are summed over ranks, and rank 0 alone writes the run directory.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from pointkd import augment, distributed, rundir, safe_io
from pointkd.checkpoint import checkpoint_writer, read_checkpoint
from pointkd.config.merge import save_config
from pointkd.config.run import RunConfig
from pointkd.data import PointCloudSet
from pointkd.device import autocast, resolve_device
from pointkd.distributed import Dist
from pointkd.errors import ConfigError, DataError
from pointkd.metrics import classification_metrics, predict_logits
from pointkd.models import create_model
from pointkd.progress import track
from pointkd.training.losses import UNLABELLED, total_loss
from pointkd.training.outputs import checkpoint_meta, history_writers
from pointkd.training.resume import _fit_problem, _optimizer_fit_problem, check_resume
from pointkd.training.self_target import SelfTarget, make_self_target
from pointkd.training.sources import (
    SINGLE,
    Batch,
    TargetSource,
    TrainingPool,
    batch_slices,
    training_source,
)


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
    return (cfg.data.path, cfg.distill.records, *cfg.distill.extra_records,
            cfg.distill.teacher, *cfg.distill.extra_teachers)


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
        clouds, mixed = self._clouds(batch)
        x = augment.apply(clouds.to(device), batch.params.to(device), batch.seeds.to(device),
                          self.source.spec)
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
            tau=cfg.distill.tau, label_smoothing=cfg.train.label_smoothing, self_mask=self_mask,
            mixed=mixed)
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

    def _clouds(self, batch: Batch) -> tuple[Tensor, tuple[Tensor, Tensor] | None]:
        """The batch's clouds before augmentation, and for mixed views the partners' labels
        and the share of each cloud they replaced (the weight of their label in CE)."""
        clouds = self.points[batch.shapes]
        if batch.mix_shapes is None:
            return clouds, None
        partners = batch.mix_shapes.clamp(min=0)  # unmixed clouds: share 0, any partner
        clouds = augment.mix(clouds, self.points[partners], batch.mix_lams, batch.seeds,
                             self.source.spec)
        share = augment.mixed_count(batch.mix_lams, clouds.shape[1]) / clouds.shape[1]
        return clouds, (self.labels[partners].to(self.device),
                        share.float().to(self.device))

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


class Fitted(NamedTuple):
    """What `fit` leaves for the caller's final test: the train split, the device, the best
    epoch, every epoch's metrics, the first epoch of this session, the process group."""

    data: PointCloudSet
    device: torch.device
    best: dict
    history: list[dict]
    start_epoch: int
    dist: Dist


def fit(cfg: RunConfig, resume: bool = False, overwrite: bool = False,
        on_epoch: Callable[[dict], None] | None = None) -> Fitted:
    """Train `cfg.model` in `cfg.out` (checked by the caller: `pointkd.stages.train.run`),
    saving last.pt and, when validation OA did not drop, best.pt every epoch. `on_epoch(row)`
    is called with each epoch's metrics once they are saved (in rank 0)."""
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
    meta = checkpoint_meta(cfg, data)
    for epoch in range(start_epoch, cfg.train.epochs):
        row = trainer.train_epoch(epoch)
        if len(val_idx):
            val = _validate(trainer.model, trainer.points, data, val_idx, cfg, device, dist)
            row.update(val_oa=val["oa"], val_macc=val["macc"])
        history.append(row)
        best = _save_epoch(trainer, meta, out, epoch, row, best, history)
        if on_epoch is not None and dist.main:
            on_epoch(row)
    return Fitted(data, device, best, history, start_epoch, dist)


def _compute_device(cfg: RunConfig, dist: Dist) -> torch.device:
    """torch threads as train.threads says, and this process's device."""
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    device = dist.device(resolve_device(cfg.train.device))
    if cfg.train.sync_bn and device.type != "cuda":
        raise ConfigError("train.sync_bn needs CUDA: PyTorch's SyncBatchNorm does not run on "
                          f"{device.type}")
    return device


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


def _progress(it, total: int, desc: str, cfg: RunConfig, dist: Dist = SINGLE):
    """A transient live bar per epoch on a terminal; nothing in a log (the epoch line is)."""
    return track(it, total, desc, unit="batch", enabled=cfg.train.progress and dist.main)


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
