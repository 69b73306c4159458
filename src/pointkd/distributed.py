"""Scale-out with PyTorch's own engine: `torchrun ... -m pointkd train|distill|record`.

torchrun starts one process per device and describes the job in the environment (RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT). `init` joins it through the env://
rendezvous with NCCL on CUDA and gloo on CPU. Without WORLD_SIZE > 1 nothing here touches
torch.distributed: single-process runs take no distributed code path.

Conventions (docs/distributed.md): rank 0 alone writes run files (checkpoints, logs, plots,
manifests); a PointKDError raised in a step that rank 0 runs for everyone (`on_main`) is
raised on every rank, so all of them exit with the same one-line error.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist

from pointkd.errors import ConfigError, PointKDError

T = TypeVar("T")


@dataclass(frozen=True)
class Dist:
    """This process's place in the job (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def on_main(self, fn: Callable[..., T], *args, **kwargs) -> T:
        """Run `fn` on rank 0 only and hand its result (or its PointKDError) to every rank."""
        if not self.active:
            return fn(*args, **kwargs)
        box: list[object] = [None]
        if self.main:
            try:
                box[0] = ("ok", fn(*args, **kwargs))
            except PointKDError as exc:
                box[0] = ("error", exc)
        dist.broadcast_object_list(box, src=0)
        status, value = box[0]  # type: ignore[misc]
        if status == "error":
            raise value  # type: ignore[misc]
        return value  # type: ignore[return-value]

    def sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sum over ranks (float64)."""
        if not self.active:
            return [float(v) for v in values]
        t = torch.tensor(list(values), dtype=torch.float64, device=self.comm_device())
        dist.all_reduce(t)
        return t.tolist()

    def gather_cat(self, t: torch.Tensor) -> torch.Tensor:
        """Concatenate an equally shaped tensor from every rank along dim 0 (rank order)."""
        if not self.active:
            return t
        t = t.contiguous().to(self.comm_device())
        parts = [torch.empty_like(t) for _ in range(self.world)]
        dist.all_gather(parts, t)
        return torch.cat(parts)

    def gather_objects(self, value: object) -> list[object]:
        """Any picklable value from every rank, in rank order."""
        if not self.active:
            return [value]
        out: list[object] = [None] * self.world
        dist.all_gather_object(out, value)
        return out

    def comm_device(self) -> torch.device:
        if self.active and dist.get_backend() == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def device(self, dev: torch.device) -> torch.device:
        """Each process takes its own GPU (LOCAL_RANK) when `dev` names CUDA without index."""
        if self.active and dev.type == "cuda" and dev.index is None:
            return torch.device("cuda", self.local_rank)
        return dev


_STATE = Dist()


def init(device: str = "auto") -> Dist:
    """Join the torchrun job described by the environment, once; a no-op without one.

    `device` picks the backend: NCCL when this process will run on CUDA, gloo otherwise."""
    global _STATE
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1 or _STATE.active:
        return _STATE
    try:
        rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    except (KeyError, ValueError):
        raise ConfigError("WORLD_SIZE > 1 but RANK is not set: launch with torchrun") from None
    cuda = device != "cpu" and not device.startswith("cpu") and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local)
    minutes = float(os.environ.get("POINTKD_DIST_TIMEOUT_MIN", "30"))
    dist.init_process_group("nccl" if cuda else "gloo", init_method="env://",
                            timeout=timedelta(minutes=minutes))
    _STATE = Dist(rank, world, local)
    return _STATE


def shutdown(code: int = 0) -> None:
    """End this process of a torchrun job with exit code `code`, together with the others.

    After a final barrier the process exits at once (streams flushed): tearing gloo's
    connections down while a peer does the same can abort a process (SIGABRT) after its work
    is done, so the process group is never destroyed piecemeal. A no-op outside a job."""
    global _STATE
    if not (_STATE.active and dist.is_initialized()):
        _STATE = Dist()
        return
    if code == 0:
        dist.barrier()  # a failed rank is not waited for: torchrun stops the job
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def launch(nproc: int, argv: Sequence[str]) -> int:
    """`--nproc N`: rerun this command under `torchrun --standalone --nproc-per-node N`."""
    if nproc < 1:
        raise ConfigError("--nproc must be >= 1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc-per-node={nproc}", "-m", "pointkd", *argv]
    return subprocess.call(cmd)


def strip_nproc(argv: Sequence[str]) -> list[str]:
    """argv without its `--nproc N` / `--nproc=N` option."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out
