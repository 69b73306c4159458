"""Where a training step's target comes from: the one plug-in point of the training loop.

Teacher training, plain students, online KD and offline KD run the same loop
(`engine.run_training`); they differ only in their `TargetSource`:

    source              batches of                                target
    AugmentedShapes     training shapes, augmentation sampled now  none: labels only
    OnlineTeacher       training shapes, augmentation sampled now  teacher(augmented batch)
    RecordReplay        record rows, augmentation replayed         recorded teacher logits
                        (`pointkd.records.replay`)

A source yields `Batch`es (which shapes, with which augmentation); the loop augments the
clouds with `augment.apply(points, params, seeds, source.spec)`, asks `source.target` for the
teacher's logits on that augmented batch, and hands both to the student and the loss. An
optional self target (NWSD, `pointkd.self_target`) adds the student's own past logits.
A new source is one class with the four members of `TargetSource`.

Every source deals each epoch out over the processes of a torchrun job the same way
(`epoch_positions`), and all its randomness derives from (seed, epoch).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DistributedSampler

from pointkd import augment
from pointkd.config.run import RunConfig
from pointkd.data import PointCloudSet, load_split, stratified_split
from pointkd.device import autocast
from pointkd.distributed import Dist
from pointkd.errors import ConfigError, DataError
from pointkd.records.reader import RecordSet, check_made_for, open_records
from pointkd.teachers.inference import fit_to_data, teacher_logits
from pointkd.teachers.load import Teacher, load_teachers
from pointkd.training.losses import UNLABELLED

SINGLE = Dist()  # one process, no torch.distributed

RowsPerEpoch = Literal["one_per_shape", "all"]


@dataclass
class Batch:
    """One training step's clouds before augmentation, and a recorded target if any."""

    shapes: Tensor  # (B,) indices into the training split
    params: Tensor  # (B, 7) shape-level augmentation parameters
    seeds: Tensor  # (B,) int64 seeds for point-level augmentation
    rows: Tensor  # (B,) record row ids (replay) or shape ids: the keys of a per-row self table
    teacher_logits: Tensor | None = None  # (B, C) recorded logits (replay)
    # mixed views (`augment.mix`): each cloud's partner (an index like `shapes`; -1 for a
    # cloud left unmixed) and the share of its points the partner's replace
    mix_shapes: Tensor | None = None  # (B,) int64
    mix_lams: Tensor | None = None  # (B,) float32


class TargetSource(Protocol):
    """What the training loop needs from a source of batches and targets."""

    spec: augment.AugmentSpec  # how `Batch.params`/`seeds` augment the clouds
    num_rows: int  # distinct `Batch.rows` keys
    distills: bool  # whether `target` gives teacher logits (the KD term is on)

    def __len__(self) -> int:
        """Clouds per epoch in this process."""
        ...

    def batches(self, epoch: int, batch_size: int) -> Iterator[Batch]:
        """This process's batches of epoch `epoch` (a pure function of seed and epoch)."""
        ...

    def target(self, batch: Batch, x: Tensor) -> Tensor | None:
        """Teacher logits (B, C) for the augmented clouds `x` of `batch`, or None."""
        ...


def epoch_positions(n: int, epoch: int, seed: int, dist: Dist) -> np.ndarray:
    """This process's share of epoch `epoch`: positions into a list of n items.

    A DistributedSampler (seeded, `set_epoch`) permutes the n positions identically in every
    process and deals them out rank-strided, padding by wrap-around so that every rank gets
    ceil(n / world) of them. One process is the same sampler with a single replica."""
    sampler = DistributedSampler(range(n), num_replicas=dist.world, rank=dist.rank,
                                 shuffle=True, seed=seed)
    sampler.set_epoch(epoch)
    return np.fromiter(iter(sampler), np.int64, count=sampler.num_samples)


def batch_slices(n: int, batch_size: int) -> list[slice]:
    """Consecutive batches; a trailing lone cloud is dropped (BatchNorm cannot train on it)."""
    slices = [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
    if len(slices) > 1 and slices[-1].stop - slices[-1].start == 1:
        slices.pop()
    return slices


class AugmentedShapes:
    """Plain training: every training shape once per epoch, fresh augmentation, no target."""

    distills = False

    def __init__(self, train_idx: np.ndarray, spec: augment.AugmentSpec, seed: int,
                 num_shapes: int, dist: Dist = SINGLE):
        self.train_idx, self.spec, self.seed, self.dist = train_idx, spec, seed, dist
        self.num_rows = num_shapes  # a "row" is a shape here

    def __len__(self) -> int:  # per process
        return math.ceil(len(self.train_idx) / self.dist.world)

    def batches(self, epoch: int, batch_size: int) -> Iterator[Batch]:
        # parameters per position of the canonical list: the same in every process
        gen = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        keys = augment.sample_keys(len(self.train_idx), gen)
        params, seeds = augment.keyed_params(keys, self.spec)
        pos = torch.from_numpy(epoch_positions(len(self.train_idx), epoch, self.seed, self.dist))
        train_idx = torch.as_tensor(self.train_idx)
        shapes, params, seeds = train_idx[pos], params[pos], seeds[pos]
        mix_shapes = mix_lams = None
        if self.spec.mix != "none":  # partners among the training shapes only
            partners, lams = augment.keyed_mix(keys, self.spec, torch.arange(len(keys)),
                                               len(keys))
            partners = torch.where(partners >= 0, train_idx[partners.clamp(min=0)], -1)
            mix_shapes, mix_lams = partners[pos], lams[pos]
        for s in batch_slices(len(pos), batch_size):
            yield Batch(shapes[s], params[s], seeds[s], shapes[s],
                        mix_shapes=None if mix_shapes is None else mix_shapes[s],
                        mix_lams=None if mix_lams is None else mix_lams[s])

    def target(self, batch: Batch, x: Tensor) -> Tensor | None:
        return None


class OnlineTeacher(AugmentedShapes):
    """Online KD: the batches of `AugmentedShapes`, the teacher run on each augmented batch.
    The teachers run as `record` runs them (bfloat16 on CUDA whatever train.amp says, float32
    on the CPU), so online and offline KD from the same teachers get the same targets."""

    distills = True

    def __init__(self, shapes: AugmentedShapes, teachers: Teacher | list[Teacher],
                 votes: int = 0):
        super().__init__(shapes.train_idx, shapes.spec, shapes.seed, shapes.num_rows,
                         shapes.dist)
        self.teachers = teachers if isinstance(teachers, list) else [teachers]
        self.votes = votes

    def target(self, batch: Batch, x: Tensor) -> Tensor:
        """The teachers' mean logits (one teacher: its own), what `record` stores by default."""
        with torch.no_grad(), autocast(x.device):
            return teacher_logits(self.teachers, x, batch.shapes, batch.seeds,
                                  self.votes).mean(dim=1)


class RecordReplay:
    """Offline KD: rows of a record set, restricted to the training (not validation) shapes.

    `one_per_shape`: each epoch visits every training shape once, through row
    k = (epoch + offset[shape]) mod K with a random per-shape offset, so K epochs visit every
    row exactly once. `all`: every row of every training shape each epoch. `use_k` > 0 uses
    only copies k < use_k: the very rows a recording with K = use_k and the same seed holds.

    With mixed views, a row whose partner is not a training shape (one of the student's
    validation shapes) is never used, so validation stays unseen; `one_per_shape` then cycles
    over each shape's other rows."""

    distills = True

    def __init__(self, records: RecordSet, train_idx: np.ndarray, seed: int,
                 rows_per_epoch: RowsPerEpoch, dist: Dist = SINGLE, use_k: int = 0):
        if use_k > records.k:
            raise ConfigError(f"distill.use_k = {use_k} but the record set has K = {records.k}")
        self.records, self.train_idx, self.seed, self.dist = records, train_idx, seed, dist
        self.k = use_k or records.k  # copies k < self.k are used
        self.spec = records.spec
        self.rows_per_epoch = rows_per_epoch
        self.num_rows = len(records)
        self.offsets = np.random.default_rng(seed).integers(0, self.k, len(train_idx))
        self.usable = _usable_rows(records, train_idx, self.k)  # (shapes, k) bool, or None

    def __len__(self) -> int:  # per process
        return math.ceil(self.rows_per_epoch_count() / self.dist.world)

    def rows_per_epoch_count(self) -> int:
        """Rows an epoch visits, in all processes together."""
        if self.usable is None:
            per_shape = 1 if self.rows_per_epoch == "one_per_shape" else self.k
            return len(self.train_idx) * per_shape
        if self.rows_per_epoch == "one_per_shape":
            return int(self.usable.any(axis=1).sum())
        return int(self.usable.sum())

    def _epoch_rows(self, epoch: int) -> np.ndarray:
        if self.usable is not None:
            return self._usable_epoch_rows(epoch)
        if self.rows_per_epoch == "one_per_shape":
            ks = (epoch + self.offsets) % self.k
            return self.records.row_index(self.train_idx, ks)
        ks = np.repeat(np.arange(self.k), len(self.train_idx))
        return self.records.row_index(np.tile(self.train_idx, self.k), ks)

    def _usable_epoch_rows(self, epoch: int) -> np.ndarray:
        """`_epoch_rows` over the usable rows only: `one_per_shape` takes each shape's j-th
        usable copy, j = (epoch + offset) mod (its usable copies)."""
        if self.rows_per_epoch == "all":
            shape_pos, ks = np.nonzero(self.usable.T)[::-1]  # k-major, as without mixing
            return self.records.row_index(self.train_idx[shape_pos], ks)
        counts = self.usable.sum(axis=1)
        has = counts > 0
        j = (epoch + self.offsets[has]) % counts[has]
        seen = np.cumsum(self.usable[has], axis=1)
        ks = np.argmax(seen > j[:, None], axis=1)
        return self.records.row_index(self.train_idx[has], ks)

    def batches(self, epoch: int, batch_size: int) -> Iterator[Batch]:
        rows = self._epoch_rows(epoch)
        rows = rows[epoch_positions(len(rows), epoch, self.seed, self.dist)]
        for s in batch_slices(len(rows), batch_size):
            rb = self.records.rows(rows[s])
            yield Batch(torch.as_tensor(rb.sample), rb.params, rb.seeds, torch.as_tensor(rows[s]),
                        rb.logits, rb.mix_shapes, rb.mix_lams)

    def target(self, batch: Batch, x: Tensor) -> Tensor | None:
        return batch.teacher_logits


class PooledReplay:
    """Offline KD from several record sets at once: the first one's training shapes (its
    validation shapes stay out, as in `RecordReplay`) and every shape of each further set's
    own pool, all in one shuffled epoch.

    Each part visits its shapes as `RecordReplay` does; batches mix the parts. Shape indices
    are offset into the concatenation of the parts' clouds (`shape_offsets`) and row keys
    into the concatenation of their rows, so NWSD's self table keeps one entry per row and
    per shape across all sets. Which rows get CE is decided by their labels
    (`losses.UNLABELLED` for a set recorded with `--unlabelled`), not here."""

    distills = True

    def __init__(self, parts: list[RecordReplay], shape_offsets: list[int], seed: int,
                 dist: Dist = SINGLE):
        first = parts[0]
        for part in parts[1:]:
            if part.spec != first.spec:
                raise ConfigError(f"{part.records.root}: its augmentation spec differs from "
                                  f"{first.records.root}'s; record sets distilled together "
                                  "must replay one spec")
            if part.records.num_classes != first.records.num_classes:
                raise ConfigError(f"{part.records.root}: {part.records.num_classes} classes, "
                                  f"{first.records.root}: {first.records.num_classes}")
        self.parts, self.shape_offsets, self.seed, self.dist = parts, shape_offsets, seed, dist
        self.row_offsets = np.cumsum([0] + [p.num_rows for p in parts[:-1]]).tolist()
        self.spec = first.spec
        self.num_rows = sum(p.num_rows for p in parts)

    def __len__(self) -> int:  # per process
        return math.ceil(sum(p.rows_per_epoch_count() for p in self.parts) / self.dist.world)

    def batches(self, epoch: int, batch_size: int) -> Iterator[Batch]:
        rows = [p._epoch_rows(epoch) for p in self.parts]
        part = np.concatenate([np.full(len(r), i) for i, r in enumerate(rows)])
        row = np.concatenate(rows)
        order = epoch_positions(len(row), epoch, self.seed, self.dist)
        part, row = part[order], row[order]
        for s in batch_slices(len(row), batch_size):
            yield self._batch(part[s], row[s])

    def _batch(self, part: np.ndarray, row: np.ndarray) -> Batch:
        """The rows of one batch, read part by part (each part's rows in batch order)."""
        shapes, params, seeds, keys, logits, partners, lams = [], [], [], [], [], [], []
        for i in np.unique(part):
            mine = row[part == i]
            rb = self.parts[i].records.rows(mine)
            shapes.append(torch.as_tensor(rb.sample) + self.shape_offsets[i])
            if rb.mix_shapes is not None:  # every part replays one spec: all or none mix
                partners.append(torch.where(rb.mix_shapes >= 0,
                                            rb.mix_shapes + self.shape_offsets[i], -1))
                lams.append(rb.mix_lams)
            params.append(rb.params)
            seeds.append(rb.seeds)
            keys.append(torch.as_tensor(mine) + self.row_offsets[i])
            logits.append(rb.logits)
        return Batch(torch.cat(shapes), torch.cat(params), torch.cat(seeds), torch.cat(keys),
                     torch.cat(logits), torch.cat(partners) if partners else None,
                     torch.cat(lams) if lams else None)

    def target(self, batch: Batch, x: Tensor) -> Tensor | None:
        return batch.teacher_logits


def _usable_rows(records: RecordSet, train_idx: np.ndarray, k: int) -> np.ndarray | None:
    """(len(train_idx), k) bool: which copies of each training shape may train, i.e. are
    unmixed or mixed with another training shape; None for a set without mixed views."""
    if "mix_shape" not in (records.dtype.names or ()):
        return None
    ks = np.repeat(np.arange(k), len(train_idx))
    rows = records.row_index(np.tile(train_idx, k), ks)
    partners = records.raw_rows(rows)["mix_shape"].astype(np.int64).reshape(k, -1).T
    training = np.zeros(records.num_shapes, bool)
    training[train_idx] = True
    return (partners < 0) | training[partners.clip(min=0)]


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
    if not data.labelled:
        raise DataError(f"{cfg.data.path}: shapes without labels cannot be a run's training "
                        "set (its classes name the student's outputs); record them as a pool "
                        "and distill from it beside labelled records: --records A --records B")
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
        source = OnlineTeacher(source, _load_teachers(cfg, data, device),
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
        if not extra.labelled:  # a pool without classes: the ones its records were made with
            extra.class_names = list(d["class_names"])
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


def _load_teachers(cfg: RunConfig, data: PointCloudSet, device: torch.device
                   ) -> list[Teacher]:
    """The online teacher(s), loaded and fitted to the data as `record` does it."""
    teachers = load_teachers([cfg.distill.teacher, *cfg.distill.extra_teachers], device)
    fit_to_data(teachers, data, cfg.data.path, cfg.data.num_points, cfg.data.normalize)
    return teachers
