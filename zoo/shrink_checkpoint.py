"""Write the zoo copy of a pointkd checkpoint: weights only (no optimizer, scheduler or RNG
state), floating-point tensors stored as float16, metadata unchanged.

A float16 copy halves the file; `load_state_dict` casts it back to the model's float32, so
every pointkd command takes the copy as it is. The rounding moves logits by ~1e-3, so the
copy is a (very slightly) different teacher: evaluate and record from the copy, never from
the original, so that `pointkd records verify --teacher COPY` accepts the records.

    python zoo/shrink_checkpoint.py runs/teacher_l/best.pt zoo/student_l_modelnet40_cpu.pt
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from pointkd.checkpoint import build_model, read_checkpoint, save_checkpoint
from pointkd.errors import PointKDError
from pointkd.safe_io import file_sha256

DROPPED = ("optimizer", "scheduler", "rng", "scaler")


def shrink(src: Path, dst: Path) -> dict:
    ckpt = read_checkpoint(src)
    state = {k: v.half() if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()}
    small = {k: v for k, v in ckpt.items() if k not in DROPPED and k != "format"}
    small["state_dict"] = state
    small["weights_dtype"] = "float16"
    save_checkpoint(small, dst)
    build_model(read_checkpoint(dst))  # the copy must load into the model as it is
    return {"src": str(src), "dst": str(dst), "bytes": dst.stat().st_size,
            "sha256": file_sha256(dst)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    args = ap.parse_args()
    if args.dst.exists():
        print(f"shrink_checkpoint: error: {args.dst} exists; remove it first", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    try:
        r = shrink(args.src, args.dst)
    except PointKDError as exc:  # a missing or bad checkpoint: one line, not a traceback
        print(f"shrink_checkpoint: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {r['dst']} ({r['bytes'] / 1e6:.2f} MB), sha256 {r['sha256']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
