"""Where models run and in which precision: one policy for training, recording, evaluation.

`resolve_device("auto")` is CUDA when there is one, else the CPU. `autocast(device, amp)`
runs CUDA work in bfloat16 (`amp=False`: float32); on the CPU it is a no-op, so CPU results
are float32 everywhere. The student's training passes `train.amp`; teachers (recording and
online KD alike) and evaluation always use bfloat16 on CUDA.
"""

from __future__ import annotations

import torch

from pointkd.errors import ModelError


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ModelError(f"unknown device '{name}'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelError("device 'cuda' requested but CUDA is not available")
    return device


def autocast(device: torch.device, amp: bool = True) -> torch.autocast:
    """bfloat16 autocast on CUDA when `amp`; disabled (float32) otherwise and on the CPU."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda" and amp)
