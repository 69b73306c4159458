"""Replay: record rows -> the teacher's augmented input and its recorded logits.

Offline KD's `TargetSource` (see `pointkd.targets`). A record row stores the augmentation
parameters and point seed the teacher saw (`pointkd.records.reader` decodes them);
`augment.apply(points[row.sample], row.params, row.seeds, records.spec)` rebuilds that very
input, bit for bit, and the recorded logits are the target. The teacher is never loaded.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from pointkd.distributed import Dist
from pointkd.errors import ConfigError
from pointkd.records.reader import RecordSet
from pointkd.targets import SINGLE, Batch, batch_slices, epoch_positions

RowsPerEpoch = Literal["one_per_shape", "all"]


class RecordReplay:
    """Offline KD: rows of a record set, restricted to the training (not validation) shapes.

    `one_per_shape`: each epoch visits every training shape once, through row
    k = (epoch + offset[shape]) mod K with a random per-shape offset, so K epochs visit every
    row exactly once. `all`: every row of every training shape each epoch. `use_k` > 0 uses
    only copies k < use_k: the very rows a recording with K = use_k and the same seed holds."""

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
        for s in batch_slices(len(rows), batch_size):
            rb = self.records.rows(rows[s])
            yield Batch(torch.as_tensor(rb.sample), rb.params, rb.seeds, torch.as_tensor(rows[s]),
                        rb.logits)

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
        total = sum(len(p.train_idx) * (1 if p.rows_per_epoch == "one_per_shape" else p.k)
                    for p in self.parts)
        return math.ceil(total / self.dist.world)

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
        shapes, params, seeds, keys, logits = [], [], [], [], []
        for i in np.unique(part):
            mine = row[part == i]
            rb = self.parts[i].records.rows(mine)
            shapes.append(torch.as_tensor(rb.sample) + self.shape_offsets[i])
            params.append(rb.params)
            seeds.append(rb.seeds)
            keys.append(torch.as_tensor(mine) + self.row_offsets[i])
            logits.append(rb.logits)
        return Batch(torch.cat(shapes), torch.cat(params), torch.cat(seeds), torch.cat(keys),
                     torch.cat(logits))

    def target(self, batch: Batch, x: Tensor) -> Tensor | None:
        return batch.teacher_logits
