"""Checkpoints: a plain dict of tensors and metadata, loadable with `weights_only=True`.

Layout: {"format": 1, "model": name, "model_kwargs": {...}, "num_classes": C,
"class_names": [...], "num_points": P, "data_fingerprint": "sha256:...", "epoch": e,
"metrics": {...}, "config": {...}, "state_dict": {...}, optional "optimizer"/"scheduler"/"rng"}.
`read_checkpoint` checks the schema: a model name, num_classes >= 2 with as many distinct
class_names, num_points in 1..2^20, model_kwargs without num_classes, a state_dict of finite
tensors; anything else is a one-line ModelError naming the file.
Writes are atomic (temp file + rename) so a killed run never leaves a half checkpoint.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pointkd.errors import ModelError
from pointkd.models import create_model

FORMAT = 1


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"format": FORMAT, **state}, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint dict safely (no pickle code execution)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise ModelError(f"checkpoint is empty: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt zip, pickle, truncated file ...
        raise ModelError(f"cannot read checkpoint {path}: {type(exc).__name__}") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "model" not in ckpt:
        raise ModelError(f"{path} is not a pointkd checkpoint")
    check_checkpoint(ckpt, path)
    return ckpt


def check_checkpoint(ckpt: dict[str, Any], path: str | Path) -> None:
    """The checkpoint schema (module docstring): types, ranges, finite weights."""
    problem = _schema_problem(ckpt)
    if problem:
        raise ModelError(f"{path}: bad checkpoint: {problem}")


def _schema_problem(ckpt: dict[str, Any]) -> str | None:
    from pointkd.limits import MAX_POINTS

    name, classes, names = ckpt["model"], ckpt.get("num_classes"), ckpt.get("class_names")
    if not isinstance(name, str) or not name:
        return "'model' must be a model name"
    if not _is_int(classes) or classes < 2:
        return f"'num_classes' must be an integer >= 2, got {classes!r}"
    if (not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names)
            or len(names) != classes):
        return f"'class_names' must be a list of {classes} names"
    if len(set(names)) != len(names):
        return "'class_names' has duplicates"
    points = ckpt.get("num_points", 1024)
    if not _is_int(points) or not 1 <= points <= MAX_POINTS:
        return f"'num_points' must be an integer in 1..{MAX_POINTS}, got {points!r}"
    kwargs = ckpt.get("model_kwargs", {})
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        return "'model_kwargs' must be a mapping of argument names"
    if "num_classes" in kwargs:
        return "'model_kwargs' repeats num_classes"
    state = ckpt["state_dict"]
    if not isinstance(state, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        return "'state_dict' must map parameter names to tensors"
    for key, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return f"weights '{key}' are not finite (NaN/Inf): the model would predict NaN"
    return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def build_model(ckpt: dict[str, Any]) -> nn.Module:
    """Instantiate the checkpoint's model and load its weights."""
    model = create_model(ckpt["model"], ckpt["num_classes"], **ckpt.get("model_kwargs", {}))
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        name = ckpt["model"]
        raise ModelError(f"checkpoint weights do not fit model '{name}': {first}") from None
    return model


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """(model in eval mode on `device`, checkpoint metadata without weights)."""
    ckpt = read_checkpoint(path)
    model = build_model(ckpt).to(device).eval()
    meta = {k: v for k, v in ckpt.items() if k not in ("state_dict", "optimizer", "scheduler")}
    return model, meta
