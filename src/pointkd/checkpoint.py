"""Checkpoints: a plain dict of tensors and metadata, loadable with `weights_only=True`.

Layout: {"format": 1, "model": name, "model_kwargs": {...}, "num_classes": C,
"class_names": [...], "num_points": P, "data_fingerprint": "sha256:...", "epoch": e,
"metrics": {...}, "config": {...}, "state_dict": {...}, optional "optimizer"/"scheduler"/"rng"}.
`read_checkpoint` checks the schema: a model name, num_classes >= 2 with as many distinct
class_names, num_points in 1..2^20, model_kwargs without num_classes, a state_dict of finite
tensors; anything else is a one-line ModelError naming the file. `check_resume_state` adds
the schema of what `--resume` reads from a last.pt (epoch, best, history, optimizer,
scheduler, data fingerprint).
Writes go through `pointkd.safe_io`: serialised in memory, written to `<name>.tmp`, fsynced
and renamed into place, so a killed run or a full disk never leaves a half checkpoint that
looks complete, and a full or read-only disk is a one-line error naming the path.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pointkd import safe_io
from pointkd.errors import ModelError
from pointkd.models import create_model

FORMAT = 1


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write one checkpoint atomically (module docstring); a group that must change together
    (an epoch's best.pt and last.pt) goes to `safe_io.replace_files` with `checkpoint_writer`s."""
    safe_io.replace_files({path: checkpoint_writer(state)})


def checkpoint_writer(state: dict[str, Any]) -> safe_io.Writer:
    """A `safe_io.replace_files` writer of checkpoint `state`, serialised now, in memory:
    torch's zip writer, writing to the file itself, would turn a full disk's OSError into a
    RuntimeError that no longer says why."""
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buffer)
    return lambda f: f.write(buffer.getbuffer())


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
    from pointkd.config.limits import MAX_POINTS

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


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


RESUME_KEYS = ("optimizer", "scheduler", "epoch", "best", "history", "data_fingerprint")
HISTORY_NUMBERS = ("train_loss", "train_acc", "epoch_seconds")  # what a resumed run reads


def check_resume_state(ckpt: dict[str, Any], path: str | Path) -> None:
    """The schema of what `--resume` reads beyond a model checkpoint: every field by type
    and range, so a damaged or hand-edited last.pt is a one-line error, never a traceback
    from deep inside torch or a run that continues from made-up numbers. (Whether it fits
    *this* run's model and optimizer is the engine's check.)"""
    missing = [k for k in RESUME_KEYS if k not in ckpt]
    if missing:
        raise ModelError(f"--resume: {path} lacks {', '.join(missing)} (not a last.pt)")
    problem = (_progress_problem(ckpt) or _optimizer_problem(ckpt["optimizer"])
               or _scheduler_problem(ckpt["scheduler"]))
    if problem:
        raise ModelError(f"--resume: {path}: bad last.pt: {problem}")


def _progress_problem(ckpt: dict[str, Any]) -> str | None:
    """epoch, history (one row per epoch done), best, data fingerprint."""
    epoch, history, best = ckpt["epoch"], ckpt["history"], ckpt["best"]
    if not _is_int(epoch) or epoch < 0:
        return f"'epoch' must be an integer >= 0, got {epoch!r}"
    if not isinstance(history, list) or len(history) != epoch + 1:
        return f"'history' must be a list of {epoch + 1} epoch rows (epoch {epoch} is done)"
    for i, row in enumerate(history):
        if not isinstance(row, dict) or row.get("epoch") != i + 1 or not all(
                _is_number(row.get(k)) for k in HISTORY_NUMBERS):
            return (f"'history' row {i} must be a mapping with epoch {i + 1} and finite "
                    f"{', '.join(HISTORY_NUMBERS)}")
    if (not isinstance(best, dict) or not _is_number(best.get("val_oa"))
            or not _is_int(best.get("epoch"))):
        return "'best' must be a mapping with a finite val_oa and an integer epoch"
    fingerprint = ckpt["data_fingerprint"]
    if not isinstance(fingerprint, str) or not fingerprint.startswith("sha256:"):
        return f"'data_fingerprint' must be 'sha256:...', got {fingerprint!r}"
    return None


def _optimizer_problem(opt: Any) -> str | None:
    """torch's optimizer state dict: {"state": {index: {name: tensor | number}},
    "param_groups": [{"params": [index, ...], "lr": ..., ...}, ...]}, finite throughout."""
    if not isinstance(opt, dict) or not isinstance(opt.get("state"), dict) or not isinstance(
            opt.get("param_groups"), list) or not opt["param_groups"]:
        return "'optimizer' must hold a 'state' mapping and a non-empty 'param_groups' list"
    indices = []
    for group in opt["param_groups"]:
        if (not isinstance(group, dict) or not isinstance(group.get("params"), list)
                or not all(_is_int(i) for i in group["params"])
                or not _is_number(group.get("lr"))):
            return "'optimizer' param_groups must each hold integer 'params' and a finite 'lr'"
        indices += group["params"]
    if len(set(indices)) != len(indices):
        return "'optimizer' param_groups list a parameter twice"
    for index, entry in opt["state"].items():
        if index not in indices or not isinstance(entry, dict):
            return f"'optimizer' state {index!r} belongs to no parameter of its groups"
        for name, value in entry.items():
            if torch.is_tensor(value):
                if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                    return f"'optimizer' state '{name}' of parameter {index} is not finite"
            elif value is not None and not _is_number(value):
                return f"'optimizer' state '{name}' of parameter {index} is {value!r}"
    return None


def _scheduler_problem(sched: Any) -> str | None:
    """LambdaLR's state dict: the step it is at and one base lr per parameter group."""
    if not isinstance(sched, dict):
        return "'scheduler' must be a mapping"
    if not _is_int(sched.get("last_epoch")) or sched["last_epoch"] < 0 or not _is_int(
            sched.get("_step_count")):
        return "'scheduler' must hold integer 'last_epoch' (>= 0) and '_step_count'"
    lrs = sched.get("base_lrs")
    if not isinstance(lrs, list) or not lrs or not all(_is_number(v) for v in lrs):
        return "'scheduler' must hold a list of finite 'base_lrs'"
    return None


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
