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
from typing import Protocol

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DistributedSampler

from pointkd import augment
from pointkd.device import autocast
from pointkd.distributed import Dist
from pointkd.teacher import Teacher
from pointkd.teacher_inference import teacher_logits

SINGLE = Dist()  # one process, no torch.distributed


@dataclass
class Batch:
    """One training step's clouds before augmentation, and a recorded target if any."""

    shapes: Tensor  # (B,) indices into the training split
    params: Tensor  # (B, 7) shape-level augmentation parameters
    seeds: Tensor  # (B,) int64 seeds for point-level augmentation
    rows: Tensor  # (B,) record row ids (replay) or shape ids: the keys of a per-row self table
    teacher_logits: Tensor | None = None  # (B, C) recorded logits (replay)


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
        params, seeds = augment.sample_params(len(self.train_idx), gen, self.spec)
        pos = torch.from_numpy(epoch_positions(len(self.train_idx), epoch, self.seed, self.dist))
        shapes, params, seeds = torch.as_tensor(self.train_idx)[pos], params[pos], seeds[pos]
        for s in batch_slices(len(pos), batch_size):
            yield Batch(shapes[s], params[s], seeds[s], shapes[s])

    def target(self, batch: Batch, x: Tensor) -> Tensor | None:
        return None


class OnlineTeacher(AugmentedShapes):
    """Online KD: the batches of `AugmentedShapes`, the teacher run on each augmented batch."""

    distills = True

    def __init__(self, shapes: AugmentedShapes, teacher: Teacher, amp: bool, votes: int = 0):
        super().__init__(shapes.train_idx, shapes.spec, shapes.seed, shapes.num_rows,
                         shapes.dist)
        self.teacher, self.amp, self.votes = teacher, amp, votes

    def target(self, batch: Batch, x: Tensor) -> Tensor:
        with torch.no_grad(), autocast(x.device, self.amp):
            return teacher_logits([self.teacher], x, batch.shapes, batch.seeds,
                                  self.votes)[:, 0]
