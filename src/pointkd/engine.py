"""The one training loop: teacher training, plain students, online KD and offline KD.

They differ only in where the distillation target comes from:

    plain    augmentation sampled now,           no target        (alpha = beta = 0)
    online   augmentation sampled now,           teacher(points)  (teacher in memory)
    offline  augmentation replayed from records, recorded logits  (teacher never loaded)

Every batch then goes through `augment.apply`, the student, and `losses.total_loss`.
Per-epoch randomness derives from (seed, epoch) only, so `--resume` needs no RNG state.

Under torchrun (docs/distributed.md) each process takes a DistributedSampler share of every
epoch, the model is wrapped in DistributedDataParallel, the NWSD self table is kept identical
on every rank, metrics are summed over ranks, and rank 0 alone writes the run directory.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

from pointkd import augment, distributed, rundir
from pointkd.checkpoint import load_model, read_checkpoint, resolve_device, save_checkpoint
from pointkd.config import RunConfig, save_config, to_dict
from pointkd.data import PointCloudSet, load_split, stratified_split
from pointkd.distributed import Dist
from pointkd.errors import ConfigError, DataError
from pointkd.evaluate import classification_metrics, count_flops, predict_logits
from pointkd.losses import total_loss
from pointkd.models import count_parameters, create_model
from pointkd.progress import track
from pointkd.records.format import HALF_SAFE
from pointkd.teacher import Teacher, attach_frames, load_teachers, match_classes

SINGLE = Dist()  # one process, no torch.distributed


@dataclass
class Batch:
    shapes: Tensor  # (B,) indices into the training set
    params: Tensor  # (B, 7) shape-level augmentation parameters
    seeds: Tensor  # (B,) int64 seeds for point-level augmentation
    teacher_logits: Tensor | None  # recorded logits (offline KD) or None
    rows: Tensor  # (B,) record row ids (offline) or shape ids (plain / online)


def epoch_positions(n: int, epoch: int, seed: int, dist: Dist) -> np.ndarray:
    """This process's share of epoch `epoch`: positions into a list of n items.

    A DistributedSampler (seeded, `set_epoch`) permutes the n positions identically in every
    process and deals them out rank-strided, padding by wrap-around so that every rank gets
    ceil(n / world) of them. One process is the same sampler with a single replica."""
    sampler = DistributedSampler(range(n), num_replicas=dist.world, rank=dist.rank,
                                 shuffle=True, seed=seed)
    sampler.set_epoch(epoch)
    return np.fromiter(iter(sampler), np.int64, count=sampler.num_samples)


class AugmentedShapes:
    """Plain and online training: every training shape once per epoch, fresh augmentation."""

    def __init__(self, train_idx: np.ndarray, spec: augment.AugmentSpec, seed: int,
                 num_shapes: int, dist: Dist = SINGLE):
        self.train_idx, self.spec, self.seed, self.dist = train_idx, spec, seed, dist
        self.num_rows = num_shapes  # a "row" is a shape here

    def __len__(self) -> int:  # per process
        return math.ceil(len(self.train_idx) / self.dist.world)

    def batches(self, epoch: int, batch_size: int) -> Iterator[Batch]:
        # parameters per position of the canonical list: the same in every process
        gen = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        params, seeds = augment.sample_params(len(self.train_idx), gen, self.spec)
        pos = torch.from_numpy(epoch_positions(len(self.train_idx), epoch, self.seed, self.dist))
        shapes, params, seeds = torch.as_tensor(self.train_idx)[pos], params[pos], seeds[pos]
        for s in _batch_slices(len(pos), batch_size):
            yield Batch(shapes[s], params[s], seeds[s], None, shapes[s])


class RecordedShapes:
    """Offline KD: rows of a record set, restricted to the training (not validation) shapes.

    `one_per_shape`: each epoch visits every training shape once, through row
    k = (epoch + offset[shape]) mod K with a random per-shape offset, so K epochs visit every
    row exactly once. `all`: every row of every training shape each epoch."""

    def __init__(self, records, train_idx: np.ndarray, seed: int, rows_per_epoch: str,
                 dist: Dist = SINGLE, use_k: int = 0):
        if use_k > records.k:
            raise ConfigError(f"distill.use_k = {use_k} but the record set has K = {records.k}")
        self.records, self.train_idx, self.seed, self.dist = records, train_idx, seed, dist
        self.k = use_k or records.k  # copies k < self.k are used
        self.spec = records.spec
        self.rows_per_epoch = rows_per_epoch
        self.num_rows = len(records)
        offsets = np.random.default_rng(seed).integers(0, self.k, len(train_idx))
        self.offsets = offsets

    def __len__(self) -> int:  # per process
        per_shape = 1 if self.rows_per_epoch == "one_per_shape" else self.k
        return math.ceil(len(self.train_idx) * per_shape / self.dist.world)

    def _epoch_rows(self, epoch: int) -> np.ndarray:
        if self.rows_per_epoch == "one_per_shape":
            ks = (epoch + self.offsets) % self.k
            return self.records.row_index(self.train_idx, ks)
        ks = np.repeat(np.arange(self.k), len(self.train_idx))
        return self.records.row_index(np.tile(self.train_idx, self.k), ks)

    def batches(self, epoch: int, batch_size: int) -> Iterator[Batch]:
        rows = self._epoch_rows(epoch)
        rows = rows[epoch_positions(len(rows), epoch, self.seed, self.dist)]
        for s in _batch_slices(len(rows), batch_size):
            rb = self.records.rows(rows[s])
            yield Batch(torch.as_tensor(rb.sample), rb.params, rb.seeds, rb.logits,
                        torch.as_tensor(rows[s]))


def _batch_slices(n: int, batch_size: int) -> list[slice]:
    """Consecutive batches; a trailing lone cloud is dropped (BatchNorm cannot train on it)."""
    slices = [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
    if len(slices) > 1 and slices[-1].stop - slices[-1].start == 1:
        slices.pop()
    return slices


class SelfTable:
    """The student's own logits at its previous visit of each key (row or shape), fp16.

    A memory-mapped file backs tables above `mmap_bytes` so a large K stays cheap."""

    def __init__(self, num_keys: int, num_classes: int, path: Path, mmap_bytes: int = 1 << 28):
        shape = (num_keys, num_classes)
        if num_keys * num_classes * 2 > mmap_bytes:
            self.logits = np.lib.format.open_memmap(path, "w+", np.float16, shape)
        else:
            self.logits = np.zeros(shape, np.float16)
        self.seen = np.zeros(num_keys, bool)

    def lookup(self, keys: Tensor) -> tuple[Tensor, Tensor]:
        k = keys.numpy()
        return torch.from_numpy(self.logits[k].astype(np.float32)), torch.from_numpy(self.seen[k])

    def update(self, keys: Tensor, logits: Tensor) -> None:
        k = keys.numpy()
        safe = logits.detach().float().cpu().clamp(-HALF_SAFE, HALF_SAFE)
        self.logits[k] = safe.numpy().astype(np.float16)
        self.seen[k] = True

    def state(self) -> dict[str, Tensor]:
        return {"logits": torch.from_numpy(np.asarray(self.logits)), "seen": torch.from_numpy(
            self.seen)}

    def load(self, state: dict[str, Tensor]) -> None:
        self.logits[:] = state["logits"].numpy()
        self.seen[:] = state["seen"].numpy()


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


def check_resume(state: dict, cfg: RunConfig, num_classes: int, path: Path) -> None:
    """--resume continues the same run: the same model on the same classes."""
    old_optim = state.get("config", {}).get("optim", {}).get("name", cfg.optim.name)
    old = (state["model"], state.get("model_kwargs", {}), state["num_classes"], old_optim)
    new = (cfg.model.name, cfg.model.kwargs, num_classes, cfg.optim.name)
    if old != new:
        def run(m: tuple) -> str:
            return f"model {m[0]} {m[1]}, {m[2]} classes, optimizer {m[3]}"

        raise ConfigError(f"--resume: {path} is a run of {run(old)}, not {run(new)}; "
                          "continue it as it was, or start a new run in another --out")
    missing = [k for k in ("optimizer", "scheduler", "epoch", "best", "history")
               if k not in state]
    if missing:
        raise ConfigError(f"--resume: {path} lacks {', '.join(missing)} (not a last.pt)")


def _training_data(cfg: RunConfig) -> tuple[PointCloudSet, object | None]:
    """The train split and, for offline KD, the record set checked against it."""
    if cfg.distill.records and not cfg.distill.online:
        from pointkd.records import open_records, read_manifest

        num_points = read_manifest(cfg.distill.records)["data"].get("num_points")
        data = load_split(cfg.data.path, "train", num_points=num_points,
                          normalize=cfg.data.normalize)
        return data, open_records(cfg.distill.records, data=data)
    data = load_split(cfg.data.path, "train", num_points=cfg.data.num_points,
                      normalize=cfg.data.normalize)
    return data, None


def _load_teacher(cfg: RunConfig, data: PointCloudSet, device: torch.device) -> Teacher:
    """The online teacher, loaded as `record` loads one (a checkpoint or an ONNX file)."""
    teacher = load_teachers([cfg.distill.teacher], device)[0]
    match_classes([teacher], data.class_names, cfg.data.path)
    if teacher.normalization == "none":  # it takes the data's own units
        raw = load_split(cfg.data.path, "train", num_points=cfg.data.num_points,
                         normalize=False).points if cfg.data.normalize else None
        attach_frames([teacher], raw)
    return teacher


@rundir.releases_locks
def run_training(cfg: RunConfig, resume: bool = False, overwrite: bool = False) -> dict:
    """Train `cfg.model` as configured; returns the final results dict (also results.json)."""
    if cfg.distill.online and not cfg.distill.teacher:
        raise ConfigError("online KD needs a teacher checkpoint (--teacher)")
    if cfg.distill.online and cfg.distill.records:
        raise ConfigError("choose either --records (offline) or --online --teacher, not both")
    if cfg.distill.teacher and not cfg.distill.online:
        raise ConfigError("--teacher is for online KD: add --online (offline KD uses --records)")
    if not cfg.data.path:
        raise ConfigError("no dataset given: pass --data PATH (an HDF5 folder, a class-folder "
                          "dataset, or 'synthetic'), or set data.path in the config")
    out = Path(cfg.out)
    dist = distributed.init(cfg.train.device)
    dist.on_main(prepare_run_dir, out, resume, overwrite, run_inputs(cfg))
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    device = dist.device(resolve_device(cfg.train.device))
    if cfg.train.sync_bn and device.type != "cuda":
        raise ConfigError("train.sync_bn needs CUDA: PyTorch's SyncBatchNorm does not run on "
                          f"{device.type}")
    data, records = _training_data(cfg)
    train_idx, val_idx = stratified_split(data.labels, cfg.data.val_fraction, cfg.train.seed)
    if records is not None:
        source = RecordedShapes(records, train_idx, cfg.train.seed, cfg.distill.rows_per_epoch,
                                dist, cfg.distill.use_k)
    else:
        spec = augment.AugmentSpec.from_config(cfg.augment)
        source = AugmentedShapes(train_idx, spec, cfg.train.seed, len(data), dist)
    source.spec.check_points(data.points.shape[1])
    distilling = records is not None or cfg.distill.online
    teacher = _load_teacher(cfg, data, device) if cfg.distill.online else None
    if dist.main:
        save_config(cfg, out / "config.yaml")

    torch.manual_seed(cfg.train.seed)  # the same initial weights in every process
    model = create_model(cfg.model.name, data.num_classes, **cfg.model.kwargs)
    if dist.active and cfg.train.sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(device)
    net = _wrap_ddp(model, device) if dist.active else model  # what the training step calls
    optimizer = make_optimizer(cfg, model, dist.world)
    steps = len(_batch_slices(len(source), cfg.train.batch_size))
    if cfg.train.max_steps_per_epoch:
        steps = min(steps, cfg.train.max_steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, steps, dist.world))
    use_self = distilling and cfg.distill.beta != 0
    ema = copy.deepcopy(model).eval() if use_self and cfg.distill.self_target == "ema" else None
    num_keys = source.num_rows if cfg.distill.self_target == "row" else len(data)
    table = (SelfTable(num_keys, data.num_classes, out / "self_table.npy")
             if use_self and ema is None else None)

    start_epoch, best, history = 0, {"val_oa": -1.0, "epoch": -1}, []
    if resume:  # every process reads the same last.pt (written by rank 0)
        state = read_checkpoint(out / "last.pt")
        check_resume(state, cfg, data.num_classes, out / "last.pt")
        model.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, best, history = state["epoch"] + 1, state["best"], state["history"]
        if ema is not None:
            ema.load_state_dict(state["ema"])
        if table is not None:
            table.load(state["self_table"])

    points = torch.from_numpy(data.points)
    labels = torch.from_numpy(data.labels)
    meta = {"model": cfg.model.name, "model_kwargs": cfg.model.kwargs,
            "num_classes": data.num_classes, "class_names": data.class_names,
            "num_points": int(data.points.shape[1]), "data_fingerprint": data.fingerprint(),
            "config": to_dict(cfg)}
    for epoch in range(start_epoch, cfg.train.epochs):
        # dropout etc.; its own stream per process
        torch.manual_seed(cfg.train.seed * 1_000_003 + epoch + 7919 * dist.rank)
        beta = cfg.distill.beta if epoch >= cfg.distill.nwsd_warmup_epochs else 0.0
        model.train()
        t0, seen, correct, sums = time.perf_counter(), 0, 0, {"loss": 0.0}
        batches = source.batches(epoch, cfg.train.batch_size)
        bar = _progress(batches, steps, f"epoch {epoch + 1}/{cfg.train.epochs}", cfg, dist)
        for step, batch in enumerate(bar):
            if step >= steps:
                break
            x = augment.apply(points[batch.shapes].to(device), batch.params.to(device),
                              batch.seeds.to(device), source.spec)
            y = labels[batch.shapes].to(device)
            target = batch.teacher_logits
            if teacher is not None:
                with torch.no_grad(), _autocast(device, cfg):
                    target = teacher(x, batch.shapes)
            self_logits = self_mask = None
            if beta != 0 and ema is not None:
                with torch.no_grad(), _autocast(device, cfg):
                    self_logits = ema(x).float()
            elif beta != 0 and table is not None:
                keys = batch.rows if cfg.distill.self_target == "row" else batch.shapes
                self_logits, self_mask = (t.to(device) for t in table.lookup(keys))
            with _autocast(device, cfg):
                logits = net(x)
            loss, parts = total_loss(
                logits, y, None if target is None else target.to(device), self_logits,
                alpha=cfg.distill.alpha if distilling else 0.0, beta=beta, tau=cfg.distill.tau,
                label_smoothing=cfg.train.label_smoothing, self_mask=self_mask)
            if not torch.isfinite(loss):
                raise DataError(f"loss became {float(loss)} at epoch {epoch + 1}, step {step}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.train.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
            optimizer.step()
            scheduler.step()
            if table is not None:  # every process keeps the whole table
                keys = batch.rows if cfg.distill.self_target == "row" else batch.shapes
                table.update(dist.gather_cat(keys).cpu(),
                             dist.gather_cat(logits.detach().float()).cpu())
            if ema is not None:
                _ema_update(ema, model, cfg.distill.ema_decay)
            n = len(y)
            seen += n
            correct += int((logits.argmax(1) == y).sum())
            sums["loss"] += float(loss.detach()) * n
            for key, value in parts.items():
                sums[key] = sums.get(key, 0.0) + value * n
        seconds = time.perf_counter() - t0
        keys = sorted(sums)
        seen, correct, *totals = dist.sum([seen, correct, *(sums[k] for k in keys)])
        sums = dict(zip(keys, totals, strict=True))
        row = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"],
               **{f"train_{k}": v / max(seen, 1) for k, v in sums.items()},
               "train_acc": correct / max(seen, 1), "epoch_seconds": seconds,
               "samples_per_s": seen / max(seconds, 1e-9), "beta": beta}
        if len(val_idx):
            val = _validate(model, points, data, val_idx, cfg, device, dist)
            row.update(val_oa=val["oa"], val_macc=val["macc"])
        history.append(row)
        score = row.get("val_oa", epoch)  # no validation split: keep the last epoch
        state = {**meta, "state_dict": model.state_dict(), "epoch": epoch, "metrics": row}
        improved = score >= best["val_oa"]
        if improved:
            best = {"val_oa": score, "epoch": epoch + 1}
        if dist.main:
            if improved:
                save_checkpoint(state, out / "best.pt")
            save_checkpoint({**state, "optimizer": optimizer.state_dict(),
                             "scheduler": scheduler.state_dict(), "best": best,
                             "history": history,
                             **({"ema": ema.state_dict()} if ema is not None else {}),
                             **({"self_table": table.state()} if table is not None else {})},
                            out / "last.pt")
            write_history(history, out)
            _log_epoch(row, cfg)
        dist.barrier()  # last.pt is complete before any process may stop or resume

    return dist.on_main(finish_run, cfg, out, data, device, best, history, start_epoch)


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
    """Evaluate the best checkpoint on the test split (reporting only) and write results.

    Training time counts the epochs' training loops (`epoch_seconds`), in this session (the
    epochs from `start_epoch` on) and in all. Distillation settings are written only for a
    run that distilled."""
    model, meta = load_model(out / "best.pt", device)
    results = {"model": cfg.model.name, "params": count_parameters(model),
               "flops": count_flops(model, meta["num_points"], device),
               "best_epoch": best["epoch"],
               "val_oa": best["val_oa"] if "val_oa" in history[-1] else None,
               "epochs": len(history),
               "train_seconds_this_session": sum(h["epoch_seconds"]
                                                 for h in history[start_epoch:]),
               "train_seconds_total": sum(h["epoch_seconds"] for h in history),
               "seed": cfg.train.seed, "device": str(device), "data": cfg.data.path,
               "mode": "offline-kd" if cfg.distill.records else
                       "online-kd" if cfg.distill.online else "plain"}
    if results["mode"] != "plain":
        results.update(alpha=cfg.distill.alpha, beta=cfg.distill.beta, tau=cfg.distill.tau)
    try:
        test = load_split(cfg.data.path, "test", num_points=meta["num_points"],
                          normalize=cfg.data.normalize)
    except DataError as exc:
        results["test_note"] = f"no test split evaluated: {exc}"
    else:
        logits = predict_logits(model, test.points, cfg.train.eval_batch_size, device)
        m = classification_metrics(logits.argmax(1), test.labels, test.num_classes)
        results.update(test_oa=m["oa"], test_macc=m["macc"], test_per_class=m["per_class"])
    (out / "results.json").write_text(json.dumps(results, indent=1))
    return results


def result_line(results: dict, out: str | Path) -> str:
    """The one line a finished run ends with (printed by the CLI whatever train.progress)."""
    val = (f"best val OA {100 * results['val_oa']:.2f}% (epoch {results['best_epoch']})"
           if results.get("val_oa") is not None else f"last epoch {results['best_epoch']}")
    test = (f", test OA {100 * results['test_oa']:.2f}% mAcc {100 * results['test_macc']:.2f}%"
            if "test_oa" in results else "")
    return f"done: {val}{test} -> {out}"


def write_history(history: list[dict], out: Path) -> None:
    """metrics.json, metrics.csv and curves.png in the run directory."""
    (out / "metrics.json").write_text(json.dumps(history, indent=1))
    keys = list(dict.fromkeys(k for row in history for k in row))
    with open(out / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys, restval="")
        writer.writeheader()
        writer.writerows(history)
    plot_curves(history, out / "curves.png")


def plot_curves(history: list[dict], path: Path) -> None:
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
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    with torch.no_grad():
        for e, m in zip(ema.state_dict().values(), model.state_dict().values(), strict=True):
            if e.dtype.is_floating_point:
                e.mul_(decay).add_(m.detach(), alpha=1 - decay)
            else:
                e.copy_(m)


def _autocast(device: torch.device, cfg: RunConfig):
    return torch.autocast("cuda", dtype=torch.bfloat16,
                          enabled=device.type == "cuda" and cfg.train.amp)


def _progress(it, total: int, desc: str, cfg: RunConfig, dist: Dist = SINGLE):
    """A transient live bar per epoch on a terminal; nothing in a log (the epoch line is)."""
    return track(it, total, desc, unit="batch", enabled=cfg.train.progress and dist.main)


def _log_epoch(row: dict, cfg: RunConfig) -> None:
    if not cfg.train.progress:
        return
    val = (f" val OA {100 * row['val_oa']:.2f}% mAcc {100 * row['val_macc']:.2f}%"
           if "val_oa" in row else "")
    print(f"epoch {row['epoch']:3d}/{cfg.train.epochs} loss {row['train_loss']:.4f} "
          f"acc {100 * row['train_acc']:.2f}%{val} ({row['epoch_seconds']:.1f}s, "
          f"{row['samples_per_s']:.0f} samples/s)", flush=True)
