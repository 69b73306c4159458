"""NWSD's self target z_self: the student's own logits, as `distill.self_target` says.

    shape   the student's logits at its previous visit of the same training shape (any row)
    row     its logits at its previous visit of the same record row
    ema     an EMA copy of the student, run on the current batch

The training loop asks `lookup` before the student's forward pass (only once NWSD's warm-up is
over) and calls `update` after every optimizer step. Both kinds save into `last.pt` under
`checkpoint_key`, so `--resume` continues them. Under torchrun every process keeps the whole
table (updated with every process's batch), and every EMA copy sees the same averaged weights.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import Tensor, nn

from pointkd.device import autocast
from pointkd.distributed import Dist
from pointkd.records.format import HALF_SAFE
from pointkd.training.sources import Batch


class SelfTarget(Protocol):
    checkpoint_key: str

    def lookup(self, batch: Batch, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """(z_self (B, C) on x's device, mask of the batch's clouds that have one, or None)."""
        ...

    def update(self, batch: Batch, logits: Tensor) -> None:
        """After an optimizer step whose student logits on `batch` were `logits`."""
        ...

    def state(self) -> dict:
        ...

    def load(self, state: dict) -> None:
        ...


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


class PastLogits:
    """`shape` and `row`: a `SelfTable` keyed by the batch's shapes or record rows."""

    checkpoint_key = "self_table"

    def __init__(self, table: SelfTable, by_row: bool, dist: Dist):
        self.table, self.by_row, self.dist = table, by_row, dist

    def _keys(self, batch: Batch) -> Tensor:
        return batch.rows if self.by_row else batch.shapes

    def lookup(self, batch: Batch, x: Tensor) -> tuple[Tensor, Tensor]:
        logits, seen = self.table.lookup(self._keys(batch))
        return logits.to(x.device), seen.to(x.device)

    def update(self, batch: Batch, logits: Tensor) -> None:
        gather = self.dist.gather_cat  # every process keeps the whole table
        self.table.update(gather(self._keys(batch)).cpu(), gather(logits.detach().float()).cpu())

    def state(self) -> dict:
        return self.table.state()

    def load(self, state: dict) -> None:
        self.table.load(state)


class EmaStudent:
    """`ema`: an exponential moving average of the student's weights, run on the batch."""

    checkpoint_key = "ema"

    def __init__(self, model: nn.Module, decay: float, amp: bool):
        self.model, self.decay, self.amp = model, decay, amp
        self.ema = copy.deepcopy(model).eval()

    def lookup(self, batch: Batch, x: Tensor) -> tuple[Tensor, None]:
        with torch.no_grad(), autocast(x.device, self.amp):
            return self.ema(x).float(), None

    def update(self, batch: Batch, logits: Tensor) -> None:
        with torch.no_grad():
            for e, m in zip(self.ema.state_dict().values(), self.model.state_dict().values(),
                            strict=True):
                if e.dtype.is_floating_point:
                    e.mul_(self.decay).add_(m.detach(), alpha=1 - self.decay)
                else:
                    e.copy_(m)

    def state(self) -> dict:
        return self.ema.state_dict()

    def load(self, state: dict) -> None:
        self.ema.load_state_dict(state)


def make_self_target(kind: str, model: nn.Module, num_rows: int, num_shapes: int,
                     num_classes: int, run_dir: Path, ema_decay: float, amp: bool,
                     dist: Dist) -> SelfTarget:
    """The self target of `distill.self_target` (`kind`) for a run whose source has
    `num_rows` row keys over `num_shapes` training-split shapes."""
    if kind == "ema":
        return EmaStudent(model, ema_decay, amp)
    by_row = kind == "row"
    table = SelfTable(num_rows if by_row else num_shapes, num_classes,
                      run_dir / "self_table.npy")
    return PastLogits(table, by_row, dist)
